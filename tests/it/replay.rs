//! `megamind replay` on workload P1, checked window by window against the independent
//! Python reference (tests/reference/p1_reference.py), from a file and from stdin.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    assert_same_lines, close, generate_p1, megamind, p1_config, p1_reference, reference_windows,
    replay_output, run, sorted_lines, ReferenceTotals,
};

/// Events of P1 replayed.
const N: usize = 100_000;
/// Longest a replay may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// `megamind replay INPUT --config CONFIG --out OUT --workers 2`, with `stdin` as input
/// when given; returns the printed summary.
fn replay(input: &str, stdin: Option<&Path>, config: &Path, out: &Path) -> Value {
    let mut command = megamind();
    command
        .arg("replay")
        .arg(input)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(["--workers", "2"]);
    if let Some(path) = stdin {
        command.stdin(File::open(path).expect("open the input for stdin"));
    }
    let finished = run("megamind replay", &mut command, REPLAY_TIMEOUT);
    finished.assert_success("megamind replay");
    finished.stdout_json()
}

#[test]
fn p1_matches_the_python_reference() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let events = generate_p1(dir.path(), N);
    let config = p1_config(dir.path());

    let reference_file = dir.path().join("reference-windows.jsonl");
    let reference = p1_reference(&events, &reference_file);
    // The published totals of P1 at this size: the generator and the reference agree
    // with the benchmark definition.
    assert_eq!(
        reference,
        ReferenceTotals {
            windows: 131_254,
            count_sum: 3_000_000,
            breaches: 2095
        },
        "the Python reference's totals for P1 with N={N}"
    );

    let out = dir.path().join("out.jsonl");
    let summary = replay(&events.to_string_lossy(), None, &config, &out);
    assert_eq!(summary["events"], json!(N), "{summary:#}");
    assert_eq!(summary["rejected"], json!({}), "{summary:#}");
    assert_eq!(summary["windows"], json!(reference.windows), "{summary:#}");
    assert_eq!(
        summary["window_count_sum"],
        json!(reference.count_sum),
        "{summary:#}"
    );
    assert_eq!(
        summary["breaches"],
        json!(reference.breaches),
        "{summary:#}"
    );
    assert_eq!(summary["workers"], json!(2), "{summary:#}");

    let output = replay_output(&out);
    assert!(
        output.duplicate_windows.is_empty(),
        "windows reported twice, e.g. {:?}",
        &output.duplicate_windows[..output.duplicate_windows.len().min(5)]
    );
    assert_eq!(
        output.kinds.get("window").copied(),
        Some(reference.windows),
        "window lines in {}: {:?}",
        out.display(),
        output.kinds
    );
    assert_eq!(
        output.kinds.get("session").copied(),
        None,
        "replay never writes session snapshots"
    );

    // Window by window: same keys, exact counts, mean and max within 1e-9 relative.
    let expected = reference_windows(&reference_file);
    assert_eq!(expected.len() as u64, reference.windows);
    let missing: Vec<_> = expected
        .keys()
        .filter(|key| !output.windows.contains_key(*key))
        .take(5)
        .collect();
    let extra: Vec<_> = output
        .windows
        .keys()
        .filter(|key| !expected.contains_key(*key))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "window keys differ: missing from megamind {missing:?}, not in the reference {extra:?}"
    );
    let mut wrong = Vec::new();
    for (key, want) in &expected {
        let got = output.windows[key];
        if got.count != want.count || !close(got.mean, want.mean) || !close(got.max, want.max) {
            wrong.push((key.clone(), got, *want));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} windows differ from the reference (key, megamind, reference), first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    // Breaches: exactly the latency_ms windows whose mean exceeds 70.
    assert_eq!(output.breaches.len() as u64, reference.breaches);
    let breached: BTreeSet<(String, u64)> = output
        .breaches
        .iter()
        .map(|(rule, session, name, end)| {
            assert_eq!(
                (rule.as_str(), name.as_str()),
                ("latency_mean_high", "latency_ms")
            );
            (session.clone(), *end)
        })
        .collect();
    assert_eq!(
        breached.len(),
        output.breaches.len(),
        "a window breached twice"
    );
    let should_breach: BTreeSet<(String, u64)> = expected
        .iter()
        .filter(|((_, name, _), values)| name == "latency_ms" && values.mean > 70.0)
        .map(|((session, _, end), _)| (session.clone(), *end))
        .collect();
    assert_eq!(
        breached
            .symmetric_difference(&should_breach)
            .take(5)
            .collect::<Vec<_>>(),
        Vec::<&(String, u64)>::new(),
        "breaching windows differ from the reference"
    );
}

#[test]
fn stdin_replay_equals_file_replay() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let events = generate_p1(dir.path(), N);
    let config = p1_config(dir.path());

    let from_file = dir.path().join("from-file.jsonl");
    let file_summary = replay(&events.to_string_lossy(), None, &config, &from_file);
    let from_stdin = dir.path().join("from-stdin.jsonl");
    let stdin_summary = replay("-", Some(&events), &config, &from_stdin);

    for field in [
        "events",
        "rejected",
        "windows",
        "window_count_sum",
        "breaches",
        "alert_transitions",
    ] {
        assert_eq!(
            stdin_summary[field], file_summary[field],
            "`{field}`: stdin {stdin_summary:#} vs file {file_summary:#}"
        );
    }
    assert_eq!(stdin_summary["events"], json!(N), "{stdin_summary:#}");
    assert_eq!(
        stdin_summary["windows"],
        json!(131_254),
        "{stdin_summary:#}"
    );
    let file_lines = sorted_lines(&from_file);
    assert!(!file_lines.is_empty());
    assert_same_lines(
        "replay output from stdin vs from the file",
        &sorted_lines(&from_stdin),
        &file_lines,
    );
}

/// With at most one event in flight per worker, the sources stop reading whenever the
/// dataflow is behind (the gate engages) and the replay still finishes with exactly the
/// output of an unbounded run: the gate neither loses nor deadlocks.
#[test]
fn a_tiny_in_flight_bound_pauses_the_sources_and_changes_no_result() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let events = generate_p1(dir.path(), N);
    let config = p1_config(dir.path());
    let mut bounded = std::fs::read_to_string(&config).expect("read the P1 configuration");
    bounded.push_str("\n[ingest]\nmax_in_flight_events = 1\n");
    let bounded_config = dir.path().join("p1-bounded.toml");
    std::fs::write(&bounded_config, bounded).expect("write the bounded configuration");

    let free_out = dir.path().join("free.jsonl");
    let free = replay(&events.to_string_lossy(), None, &config, &free_out);
    let bounded_out = dir.path().join("bounded.jsonl");
    let gated = replay(
        &events.to_string_lossy(),
        None,
        &bounded_config,
        &bounded_out,
    );

    assert!(
        gated["backpressure_pauses"].as_u64().unwrap_or(0) > 0,
        "the gate never engaged: {gated:#}"
    );
    for field in ["events", "windows", "window_count_sum", "breaches"] {
        assert_eq!(
            gated[field], free[field],
            "`{field}`: {gated:#} vs {free:#}"
        );
    }
    assert_eq!(gated["windows"], json!(131_254), "{gated:#}");
    assert_same_lines(
        "replay output with one event in flight vs unbounded",
        &sorted_lines(&bounded_out),
        &sorted_lines(&free_out),
    );
}
