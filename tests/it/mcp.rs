//! The MCP server through the official clients: the Python SDK (`mcp`, driven by
//! `tests/mcp/check_mcp.py`) over stdio and Streamable HTTP for both protocol generations,
//! the MCP Inspector CLI, the bearer-token and Host checks of `/mcp` seen by a plain HTTP
//! client, and events added over MCP surviving `kill -9`.
//!
//! Peers: a Python interpreter that imports `mcp` (`MEGAMIND_TEST_PYTHON`, else `python3`)
//! and the MCP Inspector (`MEGAMIND_TEST_INSPECTOR`, the installed `mcp-inspector`, else
//! `npx`). `bash .ci/run` installs both; a missing peer fails the test and says how to
//! install it. Every server runs on a store in its test's temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    clean_env, eventually, excerpt, megamind, now_ms, run, store_path, Finished, Server, MEGAMIND,
    SHORT_WINDOWS,
};

/// An escalation policy the check script sees work: critical alerts escalate after 1 s
/// unacknowledged (event time, advanced by the idle wall-clock tick).
const ESCALATION: (&str, &str) = (
    "MEGAMIND__ALERTS__ESCALATIONS",
    r#"[{severity = ["critical"], steps = [{after = "1s"}]}]"#,
);

/// The bearer token of the HTTP servers under test.
pub(crate) const TOKEN: &str = "mcp-test-token";
/// The two protocol generations megamind serves.
const LEGACY: &str = "2025-11-25";
pub(crate) const MODERN: &str = "2026-07-28";
/// Longest run of the whole check script (it takes about 10 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest single Inspector run (`npx` may have to download it first).
const INSPECTOR_TIMEOUT: Duration = Duration::from_secs(240);
/// The Inspector version the project tests against (also pinned in .ci/run).
const INSPECTOR_PACKAGE: &str = "@modelcontextprotocol/inspector@0.15.0";
/// Longest wait for a window after a restart.
const WAIT: Duration = Duration::from_secs(30);

/// The 16 tools, sorted.
const TOOLS: [&str; 16] = [
    "alerts_acknowledge",
    "alerts_create_custom",
    "alerts_get_active",
    "alerts_resolve",
    "dashboard_realtime",
    "ml_get_performance_metrics",
    "ml_performance_status",
    "ml_record_outcome",
    "ml_record_prediction",
    "realtime_add_event",
    "realtime_get_analytics",
    "realtime_get_metrics",
    "realtime_get_status",
    "realtime_start_monitoring",
    "realtime_stop_monitoring",
    "realtime_subscribe_session",
];

const INSTALL_PYTHON: &str = "`bash .ci/run` installs it (a venv in .ci/.venv with mcp==2.3.0, \
     exported as MEGAMIND_TEST_PYTHON); by hand: `python3 -m venv .ci/.venv && \
     .ci/.venv/bin/pip install mcp==2.3.0`, then run the tests with \
     MEGAMIND_TEST_PYTHON=$PWD/.ci/.venv/bin/python";

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("mcp")
        .join("check_mcp.py")
}

/// The Python interpreter with the official MCP client (checked once per test binary);
/// panics with how to install it when it is missing.
fn mcp_python() -> &'static str {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    match PYTHON.get_or_init(find_mcp_python) {
        Ok(python) => python,
        Err(problem) => panic!("{problem}"),
    }
}

fn find_mcp_python() -> Result<String, String> {
    let python = std::env::var("MEGAMIND_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args([
            "-c",
            "import mcp, importlib.metadata as m; print(m.version('mcp'))",
        ])
        .output();
    let output = match probe {
        Ok(output) => output,
        Err(error) => {
            return Err(format!(
                "cannot run the Python interpreter {python:?} ({error}). The MCP tests drive \
                 megamind through the official Python MCP client (package `mcp` 2.3): \
                 {INSTALL_PYTHON}"
            ))
        }
    };
    if !output.status.success() {
        return Err(format!(
            "{python:?} cannot `import mcp` ({}). The MCP tests drive megamind through the \
             official Python MCP client (package `mcp` 2.3): {INSTALL_PYTHON}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 3) {
        return Err(format!(
            "{python:?} has mcp {version}; the MCP tests need mcp 2.3 or later (both protocol \
             generations): {INSTALL_PYTHON}"
        ));
    }
    Ok(python)
}

/// A command running `check_mcp.py` with the MCP client's Python, without the caller's
/// `MEGAMIND*` variables.
fn check_command() -> Command {
    let mut command = Command::new(mcp_python());
    clean_env(&mut command).arg(check_script());
    command
}

/// What the check script reported on stderr: its section lines and its failures (the
/// stdio server's own log goes there too; it is left out unless nothing else is there).
fn check_report(stderr: &str) -> String {
    let sections: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("check_mcp: "))
        .collect();
    match stderr.find("check_mcp FAILED") {
        Some(start) => format!("{}\n{}", sections.join("\n"), &stderr[start..]),
        None => excerpt(stderr),
    }
}

/// The JSON object on the last line of `finished`'s stdout.
fn last_json_line(what: &str, finished: &Finished) -> Value {
    let line = finished.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| {
        panic!(
            "{what} printed no JSON summary ({error}; exit {})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            finished.status,
            finished.stdout,
            check_report(&finished.stderr)
        )
    })
}

/// Runs the whole check script; panics with its report unless every check passed.
fn run_checks(what: &str, command: &mut Command, generation: &str) -> Value {
    let finished = run(what, command, CHECK_TIMEOUT);
    let summary = last_json_line(what, &finished);
    assert!(
        finished.status.success() && summary["ok"] == json!(true),
        "{what} failed ({}): {summary}\n{}",
        finished.status,
        check_report(&finished.stderr)
    );
    assert_eq!(summary["protocol_version"], json!(generation), "{summary}");
    assert_eq!(
        summary["server"]
            .as_str()
            .map(|s| s.starts_with("megamind ")),
        Some(true)
    );
    // The script asserts a few hundred things; a run that checked almost nothing is broken.
    let passed = summary["checks_passed"].as_u64().unwrap_or(0);
    assert!(
        passed >= 200,
        "{what} passed only {passed} checks: {summary}"
    );
    eprintln!("{what}: {summary}");
    summary
}

/// One tool call through the official client over HTTP (the script's `--call` mode):
/// returns `{protocol_version, isError, structuredContent, text}`.
pub(crate) fn mcp_call(url: &str, generation: &str, tool: &str, arguments: &Value) -> Value {
    let what = format!("{tool} over MCP ({generation})");
    let finished = run(
        &what,
        check_command().args([
            "--transport",
            "http",
            "--url",
            url,
            "--token",
            TOKEN,
            "--generation",
            generation,
            "--call",
            tool,
            "--arguments",
            &arguments.to_string(),
        ]),
        Duration::from_secs(60),
    );
    finished.assert_success(&what);
    let answer = last_json_line(&what, &finished);
    assert_eq!(answer["protocol_version"], json!(generation), "{answer}");
    assert_eq!(answer["isError"], json!(false), "{what}: {answer}");
    answer
}

fn stdio_checks(generation: &str) {
    let dir = tempfile::tempdir().expect("temporary directory");
    run_checks(
        &format!("check_mcp.py over stdio ({generation})"),
        check_command()
            .args(["--transport", "stdio", "--binary", MEGAMIND])
            .args(["--generation", generation])
            .current_dir(dir.path())
            .env("MEGAMIND__STORE__PATH", store_path(dir.path()))
            .env("MEGAMIND_LOG", "warn")
            .envs(SHORT_WINDOWS)
            .env(ESCALATION.0, ESCALATION.1),
        generation,
    );
}

fn http_checks(generation: &str) {
    let server = Server::start(&[("MEGAMIND__MCP__AUTH_TOKEN", TOKEN), ESCALATION]);
    let url = server.mcp_url();
    assert_eq!(url, format!("{}/mcp", server.base()), "announced MCP URL");
    run_checks(
        &format!("check_mcp.py over Streamable HTTP ({generation})"),
        check_command().args([
            "--transport",
            "http",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--generation",
            generation,
        ]),
        generation,
    );
    // Open MCP sessions and `subscriptions/listen` streams must not hold up a graceful stop.
    let status = server.stop();
    assert!(status.success(), "the server exited with {status}");
}

#[test]
fn official_client_over_stdio_2025_11_25() {
    stdio_checks(LEGACY);
}

#[test]
fn official_client_over_stdio_2026_07_28() {
    stdio_checks(MODERN);
}

#[test]
fn official_client_over_http_2025_11_25() {
    http_checks(LEGACY);
}

#[test]
fn official_client_over_http_2026_07_28() {
    http_checks(MODERN);
}

#[test]
fn stdio_server_exits_cleanly_when_the_client_closes_stdin() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // The client's whole side of the conversation, then end of input.
    let input_path = dir.path().join("client.jsonl");
    let initialize = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "megamind-it", "version": "0"}
        }
    });
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    std::fs::write(&input_path, format!("{initialize}\n{initialized}\n"))
        .expect("write the client's input");
    let input = std::fs::File::open(&input_path).expect("open the client's input");
    let finished = run(
        "megamind mcp (stdin closed after the handshake)",
        megamind()
            .args(["mcp", "--workers", "2"])
            .current_dir(dir.path())
            .env("MEGAMIND__STORE__PATH", store_path(dir.path()))
            .envs(SHORT_WINDOWS)
            .stdin(Stdio::from(input)),
        Duration::from_secs(15),
    );
    finished.assert_success("megamind mcp");
    // stdout carries JSON-RPC only: the answer to initialize.
    let lines: Vec<Value> = finished
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("stdout line is not JSON-RPC ({error}): {line:?}"))
        })
        .collect();
    assert!(
        lines.iter().all(|line| line["jsonrpc"] == json!("2.0")),
        "stdout: {lines:?}"
    );
    let answer = lines
        .iter()
        .find(|line| line["id"] == json!(1))
        .unwrap_or_else(|| panic!("no answer to initialize on stdout: {lines:?}"));
    assert_eq!(
        answer["result"]["protocolVersion"],
        json!(LEGACY),
        "{answer}"
    );
    assert_eq!(
        answer["result"]["serverInfo"]["name"],
        json!("megamind"),
        "{answer}"
    );
}

#[test]
fn http_endpoint_requires_the_token_and_a_local_host() {
    let server = Server::start(&[("MEGAMIND__MCP__AUTH_TOKEN", TOKEN)]);
    let url = server.mcp_url();
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/mcp")
        .to_owned();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client");
    let initialize = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "megamind-it", "version": "0"}
        }
    });
    let post = |headers: &[(&str, &str)]| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .send()
            .unwrap_or_else(|error| panic!("POST {url} with {headers:?}: {error}"))
    };
    let bearer = format!("Bearer {TOKEN}");

    let response = post(&[]);
    assert_eq!(response.status().as_u16(), 401, "POST /mcp without a token");
    let response = post(&[("authorization", "Bearer not-the-token")]);
    assert_eq!(
        response.status().as_u16(),
        401,
        "POST /mcp with a wrong token"
    );
    let response = post(&[("authorization", TOKEN)]);
    assert_eq!(
        response.status().as_u16(),
        401,
        "POST /mcp with the token but no `Bearer`"
    );

    let foreign = format!("evil.example:{port}");
    let response = post(&[
        ("authorization", bearer.as_str()),
        ("host", foreign.as_str()),
    ]);
    assert_eq!(
        response.status().as_u16(),
        403,
        "POST /mcp with the token and Host: {foreign}"
    );
    let response = post(&[
        ("authorization", bearer.as_str()),
        ("origin", "http://evil.example"),
    ]);
    assert_eq!(
        response.status().as_u16(),
        403,
        "POST /mcp with the token and Origin: http://evil.example"
    );

    // The same request with the token and a loopback Host is served.
    let response = post(&[("authorization", bearer.as_str())]);
    assert_eq!(response.status().as_u16(), 200, "POST /mcp with the token");
    assert!(
        response.headers().contains_key("mcp-session-id"),
        "a 2025-11-25 initialize opens a session: {:?}",
        response.headers()
    );
    let body = response.text().expect("initialize answer");
    assert!(
        body.contains("\"megamind\"") && body.contains(LEGACY),
        "initialize answer: {body}"
    );
    // The token guards /mcp only.
    let (status, _) = server.get("/v1/status");
    assert_eq!(status, 200, "GET /v1/status without a token");
}

/// The Inspector: the installed CLI in `MEGAMIND_TEST_INSPECTOR`, else `npx`.
fn inspector() -> Command {
    if let Some(path) = std::env::var_os("MEGAMIND_TEST_INSPECTOR") {
        assert!(
            Path::new(&path).exists(),
            "MEGAMIND_TEST_INSPECTOR={} does not exist (`bash .ci/run` installs the Inspector \
             under .ci/node)",
            Path::new(&path).display()
        );
        return Command::new(path);
    }
    for tool in ["node", "npx"] {
        match Command::new(tool).arg("--version").output() {
            Ok(output) if output.status.success() => {}
            other => panic!(
                "`{tool} --version` failed ({other:?}): the MCP Inspector test needs Node.js \
                 with npm/npx (`apt-get install nodejs npm`; `bash .ci/run` installs them and \
                 the Inspector, and exports MEGAMIND_TEST_INSPECTOR)"
            ),
        }
    }
    let mut command = Command::new("npx");
    command.args(["--yes", INSPECTOR_PACKAGE]);
    command
}

/// Runs the Inspector CLI against `megamind mcp` (stdio) with `args`; returns its JSON.
fn inspect(dir: &Path, args: &[&str]) -> Value {
    let mut command = inspector();
    clean_env(&mut command)
        .args(["--cli", MEGAMIND, "mcp"])
        .args(args)
        .current_dir(dir)
        .env("MEGAMIND__STORE__PATH", store_path(dir))
        .env("MEGAMIND_LOG", "warn")
        .envs(SHORT_WINDOWS);
    let what = format!("MCP Inspector CLI {args:?}");
    let finished = run(&what, &mut command, INSPECTOR_TIMEOUT);
    finished.assert_success(&what);
    finished.stdout_json()
}

#[test]
fn inspector_cli_lists_the_tools_and_adds_an_event() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let listed = inspect(dir.path(), &["--method", "tools/list"]);
    let mut names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list answered {listed}"))
        .iter()
        .map(|tool| tool["name"].as_str().expect("tool name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, TOOLS, "tools/list through the Inspector");

    let called = inspect(
        dir.path(),
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "realtime_add_event",
            "--tool-arg",
            r#"event={"type":"metric","name":"inspector.x","value":1}"#,
        ],
    );
    assert_eq!(
        called.get("isError").cloned().unwrap_or(json!(false)),
        json!(false),
        "realtime_add_event through the Inspector answered an error: {called}"
    );
    assert_eq!(
        called["structuredContent"],
        json!({"accepted": 1, "rejected": []}),
        "realtime_add_event through the Inspector (`--tool-arg event=<JSON>`): {called}"
    );
}

#[test]
fn events_added_over_mcp_survive_kill_9() {
    let server = Server::start(&[("MEGAMIND__MCP__AUTH_TOKEN", TOKEN)]);
    let url = server.mcp_url();
    // A second ahead, as in the HTTP tests: the pane must not close before they arrive.
    let ts = now_ms() + 1000;
    let events: Vec<Value> = (1..=5)
        .map(|value| {
            json!({"type": "metric", "name": "durable.latency", "value": f64::from(value),
                   "labels": {"via": "mcp"}, "ts": ts})
        })
        .collect();
    let added = mcp_call(
        &url,
        LEGACY,
        "realtime_add_event",
        &json!({"events": events}),
    );
    assert_eq!(
        added["structuredContent"],
        json!({"accepted": 5, "rejected": []}),
        "{added}"
    );
    // At once, before any window closed: only the write-ahead log has the events.
    let dir = server.kill();
    let server = Server::start_in(dir, &[("MEGAMIND__MCP__AUTH_TOKEN", TOKEN)]);

    let window = eventually("the replayed window of durable.latency", WAIT, || {
        let (status, body) = server.get("/v1/metrics?name=durable.latency");
        match body["series"].as_array().map(Vec::as_slice) {
            Some([window]) if status == 200 && window["count"] == json!(5) => Ok(window.clone()),
            _ => Err(format!("{status} {body}")),
        }
    });
    assert_eq!(window["sum"], json!(15.0), "{window}");
    assert_eq!(window["min"], json!(1.0), "{window}");
    assert_eq!(window["max"], json!(5.0), "{window}");
    assert_eq!(window["key"]["labels"], json!({"via": "mcp"}), "{window}");

    let url = server.mcp_url();
    let read = mcp_call(
        &url,
        MODERN,
        "realtime_get_metrics",
        &json!({"name": "durable.latency"}),
    );
    let series = &read["structuredContent"]["series"];
    assert_eq!(
        series.as_array().map(Vec::len),
        Some(1),
        "realtime_get_metrics after the restart: {read}"
    );
    assert_eq!(series[0]["count"], json!(5), "{read}");
    assert_eq!(series[0]["sum"], json!(15.0), "{read}");
}
