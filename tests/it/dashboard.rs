//! The live dashboard (`GET /`) in a real browser: headless Chromium against
//! `megamind demo`, driven over the DevTools protocol by `tests/dashboard/check_dashboard.py`
//! (its CDP client is the Python `websockets` library). The page must connect, show numbers
//! that move, show an alert that fired and acknowledge it with a click, and recover from a
//! dropped connection. A full-page screenshot goes to `target/dashboard.png` (and, with
//! `MEGAMIND_UPDATE_SCREENSHOT=1`, to `tests/dashboard/dashboard.png`, the README's).
//!
//! Peers: Debian's `chromium` (`MEGAMIND_TEST_CHROMIUM`, else `/usr/bin/chromium`) and a
//! Python interpreter that imports `websockets`; `bash .ci/run` installs both. A missing
//! peer fails the test and says how to install it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use megamind_dataflows::time::{pace, Stopwatch};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{clean_env, eventually, excerpt, run, websockets_python, Server};

/// Longest run of the check script (it takes about 10 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

const INSTALL_CHROMIUM: &str = "install Debian's package: `apt-get install -y chromium` \
     (`bash .ci/run` does), or point MEGAMIND_TEST_CHROMIUM at a Chromium or Chrome binary";

/// The Chromium binary; panics with how to install it when there is none that runs.
fn chromium() -> String {
    let binary =
        std::env::var("MEGAMIND_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    match Command::new(&binary).arg("--version").output() {
        Ok(output) if output.status.success() => binary,
        Ok(output) => panic!(
            "`{binary} --version` failed ({}): the dashboard test needs headless Chromium; \
             {INSTALL_CHROMIUM}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "cannot run {binary:?} ({error}): the dashboard test needs headless Chromium; \
             {INSTALL_CHROMIUM}"
        ),
    }
}

/// A headless Chromium in its own process group with a fresh profile; the group is
/// stopped (SIGTERM, then SIGKILL) when dropped.
struct Browser {
    child: Child,
    log: File,
    /// The profile directory (`--user-data-dir`), removed on drop.
    _profile: TempDir,
    /// The browser's DevTools WebSocket URL.
    devtools: String,
}

impl Browser {
    fn start() -> Browser {
        let binary = chromium();
        let profile = tempfile::tempdir().expect("temporary profile directory");
        let log = tempfile::tempfile().expect("temporary file for the browser's log");
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1440,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            // Port 0: the browser picks a free port and writes it to DevToolsActivePort.
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log.try_clone().expect("clone log file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error}; {INSTALL_CHROMIUM}"));
        let active_port = profile.path().join("DevToolsActivePort");
        let devtools = eventually(
            "Chromium's DevToolsActivePort file",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "Chromium exited with {status} before it listened for DevTools:\n{}",
                        read_log(&log)
                    );
                }
                let text = std::fs::read_to_string(&active_port)
                    .map_err(|error| format!("{}: {error}", active_port.display()))?;
                let mut lines = text.lines();
                match (lines.next(), lines.next()) {
                    (Some(port), Some(path)) if !port.is_empty() && path.starts_with('/') => {
                        Ok(format!("ws://127.0.0.1:{port}{path}"))
                    }
                    _ => Err(format!("incomplete DevToolsActivePort: {text:?}")),
                }
            },
        );
        Browser {
            child,
            log,
            _profile: profile,
            devtools,
        }
    }

    /// Signals the browser's process group (it and its renderers).
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .status();
    }
}

fn read_log(file: &File) -> String {
    use std::io::{Read, Seek};
    let mut file = file.try_clone().expect("clone log file");
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    excerpt(&text)
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Stop the group, wait until the browser has exited (a zombie: not reaped yet, so
        // its id and its group's id cannot be reused), then kill what is left of its group
        // (renderers) and reap it.
        self.signal("-TERM");
        let clock = Stopwatch::start();
        let stat = format!("/proc/{}/stat", self.child.id());
        let mut killed = false;
        loop {
            let exited = std::fs::read_to_string(&stat).map_or(true, |text| {
                text.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            });
            if exited {
                break;
            }
            if clock.elapsed() >= Duration::from_secs(10) && !killed {
                self.signal("-KILL");
                killed = true;
            }
            if clock.elapsed() >= Duration::from_secs(20) {
                break;
            }
            pace(Duration::from_millis(25));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- Chromium's log ---\n{}", read_log(&self.log));
        }
    }
}

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("dashboard")
        .join("check_dashboard.py")
}

/// `target/` of this build (the parent of the integration tests' temporary directory).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

#[test]
fn dashboard_shows_live_data_and_acknowledges_an_alert_in_chromium() {
    let python = websockets_python();
    let browser = Browser::start();
    // Fast windows (support's SHORT_WINDOWS) with the default lateness of 2 s, so the
    // demo's outcomes, stamped when their predictions were made, are not counted late; a
    // few demo sessions, so the alerts table is not crowded out of view.
    let server = Server::demo(&[
        ("MEGAMIND__INGEST__ALLOWED_LATENESS", "2s"),
        ("MEGAMIND__DEMO__SESSIONS", "8"),
        ("MEGAMIND__DEMO__EVENTS_PER_SECOND", "200"),
    ]);
    let (status, page) = server.get_text("/");
    assert_eq!(status, 200, "GET /");
    assert!(
        page.contains(r#"id="connection-status""#) && page.contains(r#"id="alerts-table""#),
        "GET / is not the dashboard: {}",
        &page[..page.len().min(500)]
    );

    let screenshot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let failure_screenshot = target_dir().join("dashboard-failure.png");
    let mut command = Command::new(python);
    clean_env(&mut command)
        .arg(check_script())
        .args(["--devtools", &browser.devtools])
        .args(["--url", &format!("{}/", server.base())])
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--failure-screenshot")
        .arg(&failure_screenshot);
    if std::env::var("MEGAMIND_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("dashboard")
            .join("dashboard.png");
        command.arg("--screenshot").arg(committed);
    }
    let finished = run("check_dashboard.py", &mut command, CHECK_TIMEOUT);
    let line = finished.stdout.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(line).unwrap_or_else(|error| {
        panic!(
            "check_dashboard.py printed no JSON summary ({error}; exit {})\n--- stdout ---\n{}\n\
             --- stderr ---\n{}",
            finished.status,
            finished.stdout,
            excerpt(&finished.stderr)
        )
    });
    assert!(
        finished.status.success() && summary["ok"] == json!(true),
        "check_dashboard.py failed ({}): {summary}\n{}\n(the page at the failure: {})",
        finished.status,
        finished.stderr,
        failure_screenshot.display()
    );
    let passed = summary["checks_passed"].as_u64().unwrap_or(0);
    assert!(
        passed >= 20,
        "check_dashboard.py passed only {passed} checks: {summary}"
    );
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|error| panic!("no screenshot at {}: {error}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        screenshot.display()
    );
    eprintln!(
        "check_dashboard.py: {summary}\nscreenshot: {}",
        screenshot.display()
    );
    // The acknowledgement is in the server's state, by the dashboard.
    let alert_id = summary["observed"]["alert_id"]
        .as_str()
        .expect("the acknowledged alert's id");
    let (status, breaches) = server.get("/v1/breaches");
    assert_eq!(status, 200, "{breaches}");
    let alert = breaches["alerts"]
        .as_array()
        .and_then(|alerts| alerts.iter().find(|alert| alert["id"] == alert_id))
        .unwrap_or_else(|| panic!("alert {alert_id} not in /v1/breaches: {breaches}"));
    assert_eq!(alert["status"], json!("acknowledged"), "{alert}");
    assert_eq!(alert["acknowledged"]["by"], json!("dashboard"), "{alert}");
    drop(browser);
    let status = server.stop();
    assert!(status.success(), "the server exited with {status}");
}
