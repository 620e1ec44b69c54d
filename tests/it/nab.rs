//! `megamind nab` end to end: a small generated corpus in the NAB format (spikes and a level
//! shift inside labelled windows), scored by the binary and re-scored from its detections
//! by an independent Python implementation of NAB's sweep scoring
//! (`tests/anomaly/nab_score.py`). Scores must agree within 1e-9 (they are sums of a few
//! sigmoid values; only float summation order differs).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{megamind, python3, run};

/// Rows per generated file.
const ROWS: usize = 1500;

fn python() -> Command {
    match std::env::var("MEGAMIND_TEST_PYTHON") {
        Ok(path) if !path.is_empty() => Command::new(path),
        _ => python3(),
    }
}

/// `2014-01-01 00:00:00` plus `row` five-minute steps.
fn timestamp(row: usize) -> String {
    let minutes = row * 5;
    let (day, hour, minute) = (minutes / 1440, (minutes / 60) % 24, minutes % 60);
    format!("2014-01-{:02} {hour:02}:{minute:02}:00", 1 + day)
}

/// Deterministic noise in roughly [-1, 1] (sum of three uniforms from an LCG).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        let mut total = 0.0;
        for _ in 0..3 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            total += (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        }
        total / 1.5 - 1.0
    }
}

/// Writes one file; `spikes` are rows with +30 added, `shift` a row from which +25 holds.
/// Returns the labelled windows (10 rows either side of each event).
fn write_series(path: &Path, seed: u64, spikes: &[usize], shift: Option<usize>) -> Vec<Value> {
    let mut noise = Noise(seed);
    let mut text = String::from("timestamp,value\n");
    for row in 0..ROWS {
        let mut value = 50.0 + 2.0 * noise.next();
        if spikes.contains(&row) {
            value += 30.0;
        }
        if shift.is_some_and(|at| row >= at) {
            value += 25.0;
        }
        let _ = writeln!(text, "{},{value:.4}", timestamp(row));
    }
    std::fs::create_dir_all(path.parent().expect("parent")).expect("data directory");
    std::fs::write(path, text).expect("write series");
    spikes
        .iter()
        .copied()
        .chain(shift)
        .map(|row| {
            serde_json::json!([
                timestamp(row - 10),
                format!("{}.000000", timestamp(row + 10))
            ])
        })
        .collect()
}

#[test]
fn nab_scores_match_an_independent_python_scorer() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let mut labels = serde_json::Map::new();
    let files: [(&str, u64, &[usize], Option<usize>); 3] = [
        ("artificialWithAnomaly/spikes_a.csv", 1, &[400, 900], None),
        ("realKnownCause/spikes_b.csv", 2, &[700, 1200], None),
        ("realKnownCause/shift.csv", 3, &[], Some(1000)),
    ];
    for (name, seed, spikes, shift) in files {
        let windows = write_series(&data.join(name), seed, spikes, shift);
        labels.insert(name.to_owned(), Value::Array(windows));
    }
    let labels_path = dir.path().join("labels.json");
    std::fs::write(&labels_path, Value::Object(labels).to_string()).expect("labels");

    let finished = run(
        "megamind nab --json",
        megamind()
            .arg("nab")
            .arg("--data")
            .arg(&data)
            .arg("--labels")
            .arg(&labels_path)
            .arg("--json"),
        Duration::from_secs(120),
    );
    finished.assert_success("megamind nab --json");
    let report = finished.stdout_json();
    let report_path = dir.path().join("report.json");
    std::fs::write(&report_path, report.to_string()).expect("report");

    let oracle = run(
        "tests/anomaly/nab_score.py",
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/anomaly/nab_score.py"))
            .arg(&data)
            .arg(&labels_path)
            .arg(&report_path),
        Duration::from_secs(120),
    );
    oracle.assert_success("the Python NAB scorer");
    let expected = oracle.stdout_json();

    let files = report["files"].as_array().expect("files");
    assert_eq!(files.len(), 3, "{report}");
    for file in files {
        let name = file["file"].as_str().expect("file name");
        let ours = file["raw"].as_f64().expect("raw");
        let theirs = expected["files"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("no raw score for {name} from the oracle: {expected}"));
        assert!(
            (ours - theirs).abs() < 1e-9,
            "{name}: megamind {ours}, Python {theirs}"
        );
    }
    for field in ["raw", "null", "perfect", "normalised"] {
        let ours = report[field].as_f64().expect(field);
        let theirs = expected[field]
            .as_f64()
            .unwrap_or_else(|| panic!("no {field} from the oracle: {expected}"));
        assert!(
            (ours - theirs).abs() < 1e-9,
            "{field}: megamind {ours}, Python {theirs}"
        );
    }
    // The detectors themselves: five obvious events (30 and 25 noise widths), all found;
    // the null detector scores −5, the perfect one +5.
    assert!((report["null"].as_f64().expect("null") + 5.0).abs() < 1e-12);
    assert!((report["perfect"].as_f64().expect("perfect") - 5.0).abs() < 1e-12);
    let by_name = |name: &str| -> &Value {
        files
            .iter()
            .find(|f| f["file"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {report}"))
    };
    for name in [
        "artificialWithAnomaly/spikes_a.csv",
        "realKnownCause/spikes_b.csv",
    ] {
        let file = by_name(name);
        assert_eq!(file["tp"], 2, "both spikes of {name} detected: {file}");
        assert_eq!(file["fp"], 0, "no false positive on {name}: {file}");
    }
    // After a level shift the detectors raise about `shift_run` (8) alarms and then restart
    // from the new level; those alarms fall inside the labelled window (10 rows after the
    // shift), so at most 2 stray false positives are allowed on that file.
    let shift = by_name("realKnownCause/shift.csv");
    assert_eq!(shift["tp"], 1, "the level shift is detected: {shift}");
    let shift_fp = shift["fp"].as_u64().expect("fp");
    assert!(shift_fp <= 2, "adaptation after the shift: {shift}");
}

#[test]
fn nab_names_the_bad_field_and_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data directory");
    std::fs::write(
        data.join("bad.csv"),
        "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,oops\n",
    )
    .expect("write");
    let labels = dir.path().join("labels.json");
    std::fs::write(&labels, r#"{"bad.csv": []}"#).expect("labels");
    let finished = run(
        "megamind nab (bad row)",
        megamind()
            .arg("nab")
            .arg("--data")
            .arg(&data)
            .arg("--labels")
            .arg(&labels),
        Duration::from_secs(60),
    );
    assert!(
        !finished.status.success(),
        "a malformed row must fail the run"
    );
    assert!(
        finished.stderr.contains("bad.csv:3: field `value`"),
        "stderr names file, line and field: {}",
        finished.stderr
    );
}
