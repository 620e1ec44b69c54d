//! The live WebSocket fan-out through an independent client: the Python `websockets`
//! library, driven by `tests/websocket/check_ws.py` (it shares no code with the server).
//! Each test starts a server with the settings its scenarios need and runs the script's
//! sections against it: tokens and roles, alert actions on a real alert, error codes, topic
//! filters on both servers, snapshots, history, resume across a forced disconnect, the gap
//! answer, lagged clients, malformed and oversized messages, and the rate limit.
//!
//! Peer: a Python interpreter that imports `websockets` (`MEGAMIND_TEST_PYTHON`, else
//! `python3`); `bash .ci/run` installs it. A missing peer fails the test and says how to
//! install it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{clean_env, excerpt, run, websockets_python, Server, WebSocketUrls};

/// The tokens of the servers that require them.
const ADMIN_TOKEN: &str = "ws-admin-token";
const DEVELOPER_TOKEN: &str = "ws-developer-token";
const DASHBOARD_TOKEN: &str = "ws-dashboard-token";
const TOKENS: [(&str, &str); 3] = [
    ("MEGAMIND__WEBSOCKET__ADMIN_TOKEN", ADMIN_TOKEN),
    ("MEGAMIND__WEBSOCKET__DEVELOPER_TOKEN", DEVELOPER_TOKEN),
    ("MEGAMIND__WEBSOCKET__DASHBOARD_TOKEN", DASHBOARD_TOKEN),
];
/// The script's options telling it the tokens.
const TOKEN_ARGS: [&str; 6] = [
    "--admin-token",
    ADMIN_TOKEN,
    "--developer-token",
    DEVELOPER_TOKEN,
    "--dashboard-token",
    DASHBOARD_TOKEN,
];
/// Longest run of the script (its sections have deadlines of their own; the slowest
/// scenario takes about 15 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("websocket")
        .join("check_ws.py")
}

/// What the script reported on stderr: its section lines and its failures.
fn check_report(stderr: &str) -> String {
    let sections: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("check_ws: "))
        .collect();
    match stderr.find("check_ws FAILED") {
        Some(start) => format!("{}\n{}", sections.join("\n"), &stderr[start..]),
        None => excerpt(stderr),
    }
}

/// Runs the `sections` of check_ws.py against `server` (`settings`: the options telling
/// the script how the server was configured); panics with the script's report unless
/// every section passed.
fn check(server: &Server, sections: &[&str], settings: &[&str]) -> Value {
    let urls = server.websocket();
    let what = format!("check_ws.py {}", sections.join(" "));
    let mut command = Command::new(websockets_python());
    clean_env(&mut command)
        .arg(check_script())
        .args(["--analytics", &urls.analytics, "--sessions", &urls.sessions])
        .args(["--http", server.base()])
        .args(settings)
        .arg("--only")
        .args(sections);
    let finished = run(&what, &mut command, CHECK_TIMEOUT);
    let line = finished.stdout.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(line).unwrap_or_else(|error| {
        panic!(
            "{what} printed no JSON summary ({error}; exit {})\n--- stdout ---\n{}\n\
             --- stderr ---\n{}",
            finished.status,
            finished.stdout,
            check_report(&finished.stderr)
        )
    });
    assert!(
        finished.status.success() && summary["ok"] == json!(true),
        "{what} failed ({}): {summary}\n{}",
        finished.status,
        check_report(&finished.stderr)
    );
    for section in sections {
        assert_eq!(
            summary["sections"][section],
            json!("ok"),
            "{what}: section {section} did not run: {summary}"
        );
    }
    // Each section asserts a handful of things at least; one that checked almost nothing
    // is broken.
    let passed = summary["checks_passed"].as_u64().unwrap_or(0);
    assert!(
        passed >= 5 * sections.len() as u64,
        "{what} passed only {passed} checks: {summary}"
    );
    eprintln!(
        "{what}: {summary}\n{}",
        finished
            .stderr
            .lines()
            .filter(|line| line.starts_with("check_ws: "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    summary
}

/// Stops `server` and asserts the graceful stop succeeded.
fn stop(server: Server) {
    let status = server.stop();
    assert!(status.success(), "the server exited with {status}");
}

#[test]
fn tokens_decide_what_a_client_may_do() {
    let server = Server::start(&TOKENS);
    // The dashboard learns the ports from /v1/live: the ones the banner announced.
    let urls = server.websocket();
    let (status, live) = server.get("/v1/live");
    assert_eq!(status, 200, "GET /v1/live: {live}");
    assert_eq!(
        live,
        json!({
            "analytics_port": WebSocketUrls::port(&urls.analytics),
            "sessions_port": WebSocketUrls::port(&urls.sessions),
        }),
        "GET /v1/live against the banner {urls:?}"
    );
    assert_ne!(urls.analytics, urls.sessions);
    check(&server, &["auth", "roles"], &TOKEN_ARGS);
    stop(server);
}

#[test]
fn error_codes_name_the_problem() {
    let server = Server::start(&TOKENS);
    check(&server, &["unknown_method", "unknown_alert"], &TOKEN_ARGS);
    stop(server);
}

#[test]
fn subscriptions_snapshots_history_and_resume_without_gaps() {
    let server = Server::start(&TOKENS);
    check(
        &server,
        &["filters", "snapshot", "history", "resume"],
        &TOKEN_ARGS,
    );
    stop(server);
}

#[test]
fn resume_past_the_replay_ring_answers_gap() {
    let server = Server::start(&[("MEGAMIND__WEBSOCKET__RING_CAPACITY", "3")]);
    check(&server, &["gap"], &["--ring-capacity", "3"]);
    stop(server);
}

#[test]
fn a_client_that_stops_reading_is_closed_as_lagged() {
    // Without anomaly scoring: its `anomaly_score` series add their own updates to the
    // session's topic, and with a 16-message queue the *reading* client, too, was closed
    // as lagged once on a loaded machine (the check needs it to keep up). The bounded cost
    // of 8 KB messages is covered by the detector's own tests and `bench --mode anomaly`.
    let server = Server::start(&[
        ("MEGAMIND__WEBSOCKET__CLIENT_QUEUE", "16"),
        ("MEGAMIND__ANOMALY__ENABLED", "false"),
    ]);
    check(&server, &["lagged"], &["--client-queue", "16"]);
    stop(server);
}

#[test]
fn a_client_that_never_reads_again_is_let_go() {
    let server = Server::start(&[
        ("MEGAMIND__WEBSOCKET__CLIENT_QUEUE", "16"),
        ("MEGAMIND__WEBSOCKET__IDLE_TIMEOUT", "3s"),
        ("MEGAMIND__WEBSOCKET__PING_INTERVAL", "1s"),
    ]);
    check(
        &server,
        &["abandoned"],
        &["--client-queue", "16", "--idle-timeout", "3"],
    );
    stop(server);
}

#[test]
fn a_client_reading_at_full_speed_is_not_closed_as_lagged() {
    // The demo's traffic (default rate), the smallest queue the configuration allows.
    let server = Server::demo(&[("MEGAMIND__WEBSOCKET__CLIENT_QUEUE", "16")]);
    check(&server, &["bursts"], &["--client-queue", "16"]);
    stop(server);
}

#[test]
fn malformed_and_oversized_messages_are_refused() {
    let server = Server::start(&[("MEGAMIND__WEBSOCKET__MAX_MESSAGE_BYTES", "4096")]);
    check(
        &server,
        &["malformed", "size"],
        &["--max-message-bytes", "4096"],
    );
    stop(server);
}

#[test]
fn a_client_closed_for_bad_requests_gets_every_answer_first() {
    let server = Server::start(&[]);
    check(&server, &["answers_before_close"], &[]);
    stop(server);
}

#[test]
fn a_client_that_keeps_sending_still_gets_the_close_frame() {
    let server = Server::start(&[]);
    check(&server, &["close_handshake"], &[]);
    stop(server);
}

#[test]
fn requests_beyond_the_burst_are_rate_limited() {
    let server = Server::start(&[
        ("MEGAMIND__WEBSOCKET__BURST", "5"),
        ("MEGAMIND__WEBSOCKET__REQUESTS_PER_SECOND", "1"),
    ]);
    check(
        &server,
        &["rate"],
        &["--burst", "5", "--requests-per-second", "1"],
    );
    stop(server);
}
