//! A timely cluster of two `megamind replay` processes on loopback computes exactly what
//! one process computes.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    assert_same_lines, free_ports, generate_p1, megamind, p1_config, run, sorted_lines, spawn,
};

/// Events of P1 replayed.
const N: usize = 30_000;
/// Longest a replay (or the whole cluster) may take.
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn two_processes_equal_one_process() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let events = generate_p1(dir.path(), N);
    let config = p1_config(dir.path());
    let (port0, port1) = free_ports();
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{port0}\n127.0.0.1:{port1}\n")).expect("hostfile");

    let out = |name: &str| dir.path().join(name);
    let member = |process: usize| {
        let mut command = megamind();
        command
            .arg("replay")
            .arg(&events)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(out(&format!("process-{process}.jsonl")))
            .args(["--workers", "1", "--processes", "2"])
            .args(["--process-id", &process.to_string()])
            .arg("--hostfile")
            .arg(&hosts);
        command
    };
    // Process 0 listens; process 1 connects (and retries until process 0 listens).
    let first = spawn("cluster process 0", &mut member(0));
    let second = spawn("cluster process 1", &mut member(1));
    // If process 0 fails, dropping `second` kills it and prints its stderr too.
    let first = first.wait(TIMEOUT);
    first.assert_success("cluster process 0");
    let second = second.wait(TIMEOUT);
    second.assert_success("cluster process 1");
    let (summary0, summary1) = (first.stdout_final_json(), second.stdout_final_json());
    let events_in_cluster =
        summary0["events"].as_u64().unwrap_or(0) + summary1["events"].as_u64().unwrap_or(0);
    assert_eq!(
        events_in_cluster, N as u64,
        "each event is decoded by exactly one process: {summary0:#} {summary1:#}"
    );

    let single = run(
        "single-process replay",
        megamind()
            .arg("replay")
            .arg(&events)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(out("single.jsonl"))
            .args(["--workers", "1"]),
        TIMEOUT,
    );
    single.assert_success("single-process replay");
    let summary = single.stdout_json();
    assert_eq!(summary["events"], json!(N), "{summary:#}");

    let part0 = sorted_lines(&out("process-0.jsonl"));
    let part1 = sorted_lines(&out("process-1.jsonl"));
    assert!(
        !part0.is_empty() && !part1.is_empty(),
        "both processes own some keys: {} and {} lines",
        part0.len(),
        part1.len()
    );
    let mut union = part0;
    union.extend(part1);
    union.sort_unstable();
    let expected = sorted_lines(&out("single.jsonl"));
    assert_eq!(
        summary["windows"].as_u64(),
        Some(
            expected
                .iter()
                .filter(|line| line.starts_with(r#"{"kind":"window""#))
                .count() as u64
        ),
        "{summary:#}"
    );
    assert_same_lines(
        "union of the two processes' outputs vs one process",
        &union,
        &expected,
    );
}
