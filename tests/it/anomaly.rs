//! Anomaly detection through the real interfaces: a server, the Python `websockets` client
//! on topic `anomalies` plus HTTP (`tests/anomaly/check_anomaly_ws.py`), and the
//! `anomaly_score` contract (derived samples become windows that threshold rules can use).
//!
//! Then `realtime_get_analytics` through the official Python MCP client
//! (`tests/mcp/check_mcp.py --call`) must list the same anomaly and families.
//!
//! Peers: a Python interpreter that imports `websockets` and `mcp` (`MEGAMIND_TEST_PYTHON`,
//! else `python3`); a missing peer fails the test and says how to install it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::mcp::{mcp_call, MODERN, TOKEN};
use crate::support::{clean_env, eventually, run, websockets_python, Server};

#[test]
fn spike_and_novel_error_reach_websocket_and_http() {
    let server = Server::start(&[("MEGAMIND__MCP__AUTH_TOKEN", TOKEN)]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("anomaly")
        .join("check_anomaly_ws.py");
    let urls = server.websocket();
    let mut command = Command::new(websockets_python());
    clean_env(&mut command).arg(script).args([
        "--analytics",
        &urls.analytics,
        "--http",
        server.base(),
    ]);
    let finished = run(
        "check_anomaly_ws.py",
        &mut command,
        Duration::from_secs(180),
    );
    let line = finished.stdout.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(line).unwrap_or_else(|error| {
        panic!(
            "check_anomaly_ws.py printed no JSON ({error}); exit {}\n{}\n{}\nserver log:\n{}",
            finished.status,
            finished.stdout,
            finished.stderr,
            server.log()
        )
    });
    assert!(
        finished.status.success() && summary["ok"] == json!(true),
        "check_anomaly_ws.py failed: {summary}\n{}",
        finished.stderr
    );
    assert!(
        summary["checks_passed"].as_u64().unwrap_or(0) >= 15,
        "{summary}"
    );

    // The anomaly_score contract: each scored point became a sample of `anomaly_score`
    // labelled with the original name and labels; its windows are served like any series.
    let window = eventually("an anomaly_score window", Duration::from_secs(60), || {
        let (status, answer) =
            server.get("/v1/metrics?name=anomaly_score&label=metric:it_anomaly_latency");
        if status != 200 {
            return Err(format!("{status} {answer}"));
        }
        answer["series"]
            .as_array()
            .and_then(|series| series.first().cloned())
            .ok_or_else(|| answer.to_string())
    });
    assert_eq!(window["key"]["labels"]["host"], json!("h1"), "{window}");
    assert!(
        window["max"].as_f64().unwrap_or(0.0) >= 0.5,
        "the spike's score is in the window: {window}"
    );
    assert!(window["count"].as_u64().unwrap_or(0) >= 100, "{window}");

    // MCP: the official Python client sees the same anomaly and families.
    let answer = mcp_call(
        &server.mcp_url(),
        MODERN,
        "realtime_get_analytics",
        &json!({"limit": 50}),
    );
    let analytics = &answer["structuredContent"];
    let spike_ts = summary["spike"]["ts"].as_u64().expect("spike ts");
    let anomalies = analytics["anomalies"].as_array().expect("anomalies");
    assert!(
        anomalies.iter().any(|a| a["ts"] == json!(spike_ts)
            && a["series"] == json!("it_anomaly_latency{host=h1}")
            && a["detector"].is_string()),
        "realtime_get_analytics anomalies: {analytics}"
    );
    let families = analytics["error_families"].as_array().expect("families");
    assert_eq!(families.len(), 3, "{analytics}");
    assert!(
        analytics["novel_errors"]
            .as_array()
            .expect("novel errors")
            .iter()
            .any(|n| n["session_id"] == json!("it-s9")),
        "{analytics}"
    );

    // Prometheus counters.
    let (status, text) = server.get_text("/metrics");
    assert_eq!(status, 200);
    let counter = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(counter("megamind_anomaly_points_scored_total") >= 150);
    assert!(counter("megamind_anomaly_points_anomalous_total") >= 1);
    assert!(counter("megamind_anomaly_novel_errors_total") >= 1);
    assert!(counter("megamind_anomaly_forest_refits_total") >= 1);
    assert!(counter("megamind_anomaly_family_refits_total") >= 1);
    let status = server.stop();
    assert!(status.success(), "the server exited with {status}");
}

/// The interpreter with scikit-learn; panics with how to install it.
fn sklearn_python() -> String {
    let python = std::env::var("MEGAMIND_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import sklearn, numpy"])
        .output();
    match probe {
        Ok(output) if output.status.success() => python,
        other => panic!(
            "{python:?} cannot import scikit-learn ({other:?}): the anomaly reference test \
             needs it. `bash .ci/run` installs it in .ci/.venv; then set \
             MEGAMIND_TEST_PYTHON=$PWD/.ci/.venv/bin/python"
        ),
    }
}

/// Our isolation forest and our (linfa) DBSCAN against scikit-learn's on the same data.
///
/// The forest: both implement Liu et al. (random feature, uniform split between the node's
/// minimum and maximum, depth limit ⌈log₂ ψ⌉, leaf adjustment c(size), s = 2^(−E[h]/c(ψ))),
/// so with many trees both estimate the same expected score; each probe's score must agree
/// within 0.02 (the spread of a 400-tree average is about 0.004). DBSCAN with cosine
/// distance must give the same partition (clusters up to renumbering, the same noise).
#[test]
fn isolation_forest_and_dbscan_agree_with_scikit_learn() {
    use megamind_dataflows::operators::detect_novel_errors::families::dbscan_flat;
    use megamind_dataflows::operators::score_anomalies::detectors::{IsolationForest, SplitMix64};
    use std::io::Write;
    use std::process::Stdio;

    let python = sklearn_python();
    let mut rng = SplitMix64::new(31);
    let mut normal = || (0..6).map(|_| rng.next_f64()).sum::<f64>() - 3.0;
    // Two blobs and a sparse ring of points around them.
    let mut train: Vec<[f64; 2]> = Vec::new();
    for i in 0..600 {
        let (cx, cy) = if i % 3 == 0 { (8.0, 2.0) } else { (0.0, 0.0) };
        train.push([cx + normal(), cy + 0.5 * normal()]);
    }
    let probes: Vec<[f64; 2]> = (0..60)
        .map(|i| {
            let x = -6.0 + 0.3 * f64::from(i);
            [x, if i % 2 == 0 { 0.0 } else { 3.0 }]
        })
        .chain([[30.0, 0.0], [0.0, -12.0], [8.0, 2.0], [4.0, 1.0]])
        .collect();
    let (trees, sample) = (400, 256);
    let ours: Vec<f64> = {
        // Average over 4 seeds, as the reference does, so both sides estimate E[s].
        let forests: Vec<IsolationForest> = (0..4)
            .map(|seed| IsolationForest::fit_rows(&train, trees, sample, 1000 + seed))
            .collect();
        probes
            .iter()
            .map(|p| forests.iter().map(|f| f.score(p)).sum::<f64>() / 4.0)
            .collect()
    };

    // DBSCAN input: unit vectors in three tight directions plus scattered noise.
    let mut points: Vec<[f32; 3]> = Vec::new();
    let directions = [[1.0f32, 0.1, 0.0], [0.0, 1.0, 0.2], [0.3, 0.0, 1.0]];
    for (d, direction) in directions.iter().enumerate() {
        for k in 0..(5 + 2 * d) {
            let wobble = 0.02 * k as f32;
            points.push([
                direction[0] + wobble,
                direction[1],
                direction[2] + wobble / 2.0,
            ]);
        }
    }
    points.extend([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0], [-1.0, 0.5, 0.5]]);
    for point in points.iter_mut() {
        let norm = point.iter().map(|v| v * v).sum::<f32>().sqrt();
        point.iter_mut().for_each(|v| *v /= norm);
    }
    let (eps, min_samples) = (0.01, 3);
    let flat: Vec<f32> = points.iter().flatten().copied().collect();
    let our_labels = dbscan_flat(&flat, 3, eps, min_samples);

    let request = json!({
        "train": train, "probes": probes, "trees": trees, "sample": sample, "seeds": 4,
        "points": points, "eps": eps, "min_samples": min_samples,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/anomaly/reference_sklearn.py");
    let mut child = clean_env(&mut Command::new(&python))
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the scikit-learn reference");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write the request");
    let output = child.wait_with_output().expect("the reference finishes");
    assert!(
        output.status.success(),
        "reference_sklearn.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON from the reference");

    let reference: Vec<f64> = answer["forest"]
        .as_array()
        .expect("forest scores")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    assert_eq!(reference.len(), ours.len());
    let mut worst = (0.0f64, 0);
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        if (a - b).abs() > worst.0 {
            worst = ((a - b).abs(), i);
        }
    }
    assert!(
        worst.0 <= 0.02,
        "probe {:?}: megamind {} vs scikit-learn {} (all: {ours:?} vs {reference:?})",
        probes[worst.1],
        ours[worst.1],
        reference[worst.1]
    );
    eprintln!(
        "forest vs scikit-learn: largest difference {:.4} at {:?}",
        worst.0, probes[worst.1]
    );
    // The obvious outliers score far above the blob centres, on both sides.
    assert!(
        ours[60] > 0.6 && ours[61] > 0.55 && ours[62] < 0.5,
        "{:?}",
        &ours[60..]
    );

    let their_labels: Vec<i64> = answer["dbscan"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|v| v.as_i64().expect("a label"))
        .collect();
    let ours_as_sklearn: Vec<i64> = our_labels
        .iter()
        .map(|label| label.map_or(-1, |c| c as i64))
        .collect();
    assert_eq!(ours_as_sklearn, their_labels, "DBSCAN partitions differ");
    assert_eq!(their_labels.iter().filter(|&&l| l == -1).count(), 3);
    assert_eq!(their_labels.iter().max(), Some(&2));
}
