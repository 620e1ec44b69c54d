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
