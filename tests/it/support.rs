//! Shared helpers: the `megamind` binary as a child process (server and one-shot runs),
//! bounded waiting, HTTP calls, and the Python reference of workload P1.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use megamind_dataflows::time::{pace, Clock, Stopwatch, SystemClock};
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub(crate) const MEGAMIND: &str = env!("CARGO_BIN_EXE_megamind");

/// How often a bounded wait re-checks an external process or HTTP state.
const POLL: Duration = Duration::from_millis(25);

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// A `megamind` command that does not inherit the caller's `MEGAMIND*` variables, so a
/// developer's environment cannot change what the tests see.
pub(crate) fn megamind() -> Command {
    let mut command = Command::new(MEGAMIND);
    clean_env(&mut command);
    // Tests run in parallel: every server takes ephemeral WebSocket ports.
    command
        .env("MEGAMIND__WEBSOCKET__ANALYTICS_LISTEN", "127.0.0.1:0")
        .env("MEGAMIND__WEBSOCKET__SESSIONS_LISTEN", "127.0.0.1:0")
        // Self-monitoring samples (wall-clock metrics) would add series to outputs that
        // tests compare exactly; tests that want them turn them back on.
        .env("MEGAMIND__INSIGHTS__SELF_MONITORING", "false");
    command.stdin(Stdio::null());
    command
}

/// Removes the caller's `MEGAMIND*` variables from `command`'s environment (a tool that
/// starts `megamind` itself passes them on).
pub(crate) fn clean_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEGAMIND") {
            command.env_remove(name);
        }
    }
    command
}

/// Calls `probe` until it returns `Ok`, at most for `timeout`; panics with the last `Err`
/// (the state last observed) when the deadline passes. Only for waiting on an external
/// process or its HTTP state.
pub(crate) fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let clock = Stopwatch::start();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if clock.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => pace(POLL),
        }
    }
}

/// A child process whose stdout and stderr go to anonymous temporary files; killed when
/// dropped before it was waited for.
pub(crate) struct Running {
    what: String,
    child: Option<Child>,
    stdout: File,
    stderr: File,
}

/// A finished child process.
#[derive(Debug)]
pub(crate) struct Finished {
    /// How it ended.
    pub(crate) status: ExitStatus,
    /// Everything it wrote to stdout.
    pub(crate) stdout: String,
    /// Everything it wrote to stderr.
    pub(crate) stderr: String,
}

impl Finished {
    /// Panics unless the process exited with status 0.
    pub(crate) fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            excerpt(&self.stderr)
        );
        self
    }

    /// Stdout parsed as one JSON document.
    pub(crate) fn stdout_json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not one JSON document ({error}):\n{}\n--- stderr ---\n{}",
                self.stdout,
                excerpt(&self.stderr)
            )
        })
    }

    /// The JSON document that ends stdout, ignoring lines printed before it. In a
    /// cluster, timely's networking prints progress lines ("awaiting connections") to
    /// stdout ahead of megamind's summary.
    pub(crate) fn stdout_final_json(&self) -> Value {
        let start = if self.stdout.starts_with('{') {
            Some(0)
        } else {
            self.stdout.find("\n{").map(|position| position + 1)
        };
        let document = start.map_or("", |start| &self.stdout[start..]);
        serde_json::from_str(document).unwrap_or_else(|error| {
            panic!(
                "stdout does not end with a JSON document ({error}):\n{}\n--- stderr ---\n{}",
                self.stdout,
                excerpt(&self.stderr)
            )
        })
    }
}

/// Spawns `command` with its output captured.
pub(crate) fn spawn(what: &str, command: &mut Command) -> Running {
    let stdout = tempfile::tempfile().expect("temporary file for stdout");
    let stderr = tempfile::tempfile().expect("temporary file for stderr");
    let child = command
        .stdout(stdout.try_clone().expect("clone stdout file"))
        .stderr(stderr.try_clone().expect("clone stderr file"))
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
    Running {
        what: what.to_owned(),
        child: Some(child),
        stdout,
        stderr,
    }
}

/// Waits for `child` to exit, at most `timeout`, on a channel fed by a waiting thread.
/// On timeout the child is killed (SIGKILL, by its id: it is not reaped yet, so the id is
/// still ours) and `Err` carries its final status.
fn wait_at_most(child: Child, timeout: Duration) -> Result<ExitStatus, ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    let reaped = |result: Result<std::io::Result<ExitStatus>, _>| match result {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => panic!("cannot wait for process {pid}: {error}"),
        Err(error) => panic!("the waiting thread of process {pid} vanished: {error}"),
    };
    match rx.recv_timeout(timeout) {
        Ok(result) => Ok(reaped(Ok(result))),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            Err(reaped(rx.recv()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the waiting thread of process {pid} vanished")
        }
    }
}

impl Running {
    /// Everything the running process wrote to stdout so far.
    pub(crate) fn stdout_so_far(&mut self) -> String {
        read_all(&mut self.stdout)
    }

    /// Waits for the process to exit, at most `timeout` (then kills it and panics).
    pub(crate) fn wait(mut self, timeout: Duration) -> Finished {
        let child = self.child.take().expect("not waited for yet");
        let status = match wait_at_most(child, timeout) {
            Ok(status) => status,
            Err(killed) => panic!(
                "{} did not finish within {timeout:?} (killed: {killed})\n--- stdout ---\n{}\n\
                 --- stderr ---\n{}",
                self.what,
                read_all(&mut self.stdout),
                excerpt(&read_all(&mut self.stderr))
            ),
        };
        Finished {
            status,
            stdout: read_all(&mut self.stdout),
            stderr: read_all(&mut self.stderr),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- stderr of {} (not waited for: killed) ---\n{}",
                    self.what,
                    excerpt(&read_all(&mut self.stderr))
                );
            }
        }
    }
}

/// Runs `command` to completion, at most for `timeout`.
pub(crate) fn run(what: &str, command: &mut Command, timeout: Duration) -> Finished {
    spawn(what, command).wait(timeout)
}

fn read_all(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// The panic and error lines of a log (each with the line after it, the message), then
/// its last 3000 bytes: backtraces make the tail alone useless.
pub(crate) fn excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut first_problems = Vec::new();
    for (position, line) in lines.iter().enumerate() {
        if line.contains(" panicked at ") || line.starts_with("Error: ") {
            first_problems.push(*line);
            if let Some(next) = lines.get(position + 1) {
                first_problems.push(next);
            }
        }
        if first_problems.len() >= 16 {
            break;
        }
    }
    format!(
        "first problems:\n{}\n--- last lines ---\n{}",
        first_problems.join("\n"),
        tail(log, 3000)
    )
}

/// The last `max` bytes of `text` (logs can be long).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Sends SIGTERM to `child` (the graceful stop megamind handles).
fn terminate(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(
        matches!(sent, Ok(status) if status.success()),
        "cannot send SIGTERM to process {}: {sent:?}",
        child.id()
    );
}

/// Window settings that make windows of events stamped with the current time close
/// within about two seconds: 1 minute windows sliding by 1 second, no lateness, and the
/// wall clock advancing the watermark after 200 ms without events.
pub(crate) const SHORT_WINDOWS: [(&str, &str); 4] = [
    ("MEGAMIND__WINDOWS__LENGTH", "1m"),
    ("MEGAMIND__WINDOWS__SLIDE", "1s"),
    ("MEGAMIND__INGEST__ALLOWED_LATENESS", "0s"),
    ("MEGAMIND__INGEST__IDLE_ADVANCE_AFTER", "200ms"),
];

/// The embedded store's file inside a test's temporary directory: every test points
/// `MEGAMIND__STORE__PATH` there, so no run ever touches a store outside it.
pub(crate) fn store_path(dir: &Path) -> PathBuf {
    dir.join("megamind-data").join("megamind.db")
}

/// `megamind serve --workers 2` on an ephemeral loopback port, in its own temporary
/// working directory holding the embedded store (which starts empty unless the directory
/// is reused, see [`Server::start_in`]). Stopped with SIGTERM on drop.
pub(crate) struct Server {
    child: Option<Child>,
    base: String,
    client: reqwest::blocking::Client,
    log: Arc<Mutex<String>>,
    stdout: File,
    /// The working directory (holds the embedded store); removed on drop unless taken
    /// by [`Server::kill`].
    dir: Option<TempDir>,
}

/// A `megamind` process that was started but has not announced its address yet.
pub(crate) struct StartingServer {
    subcommand: String,
    /// `None` once handed to the [`Server`]; killed on drop otherwise.
    child: Option<Child>,
    port_rx: mpsc::Receiver<u16>,
    log: Arc<Mutex<String>>,
    stdout: File,
    dir: Option<TempDir>,
}

impl StartingServer {
    /// Waits (at most 30 s) for the HTTP address in the banner; panics with the stderr
    /// excerpt when none comes.
    pub(crate) fn ready(mut self) -> Server {
        let mut child = self.child.take().expect("not started twice");
        let port = match self.port_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(port) => port,
            Err(error) => {
                let _ = child.kill();
                let status = child.wait();
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                panic!(
                    "`megamind {}` did not announce its address ({error}); exit: \
                     {status:?}\n--- stderr ---\n{}",
                    self.subcommand,
                    excerpt(&log)
                );
            }
        };
        // A fresh connection per request: a kept-alive connection the server decides to
        // close (after refusing a body it did not read, say) cannot fail the next request.
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(0)
            .build()
            .expect("HTTP client");
        let log = Arc::clone(&self.log);
        let stdout = self.stdout.try_clone().expect("clone stdout file");
        let dir = self.dir.take();
        Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            client,
            log,
            stdout,
            dir,
        }
    }
}

impl Drop for StartingServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "--- `megamind {}` stopped before it was ready ---\n{}",
                self.subcommand,
                excerpt(&self.log.lock().unwrap_or_else(|e| e.into_inner()))
            );
        }
    }
}

impl Server {
    /// Starts a server with [`SHORT_WINDOWS`] and then `overrides` in its environment;
    /// returns once it announced its HTTP address.
    pub(crate) fn start(overrides: &[(&str, &str)]) -> Server {
        Self::start_in(tempfile::tempdir().expect("temporary directory"), overrides)
    }

    /// Like [`Server::start`], in `dir`: a directory a previous server ran in starts the
    /// new one on that server's store.
    pub(crate) fn start_in(dir: TempDir, overrides: &[(&str, &str)]) -> Server {
        Self::launch("serve", dir, overrides)
    }

    /// Like [`Server::start`], with `--workers workers` instead of 2.
    pub(crate) fn start_with_workers(workers: usize, overrides: &[(&str, &str)]) -> Server {
        let workers = workers.to_string();
        let dir = tempfile::tempdir().expect("temporary directory");
        Self::spawn("serve", dir, &["--workers", &workers], overrides).ready()
    }

    /// Like [`Server::start`], with `config` written to `megamind.toml` in the server's
    /// directory and passed as `--config` (the file can be rewritten, see
    /// [`Server::config_path`]).
    pub(crate) fn start_with_config(config: &str, overrides: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("megamind.toml"), config).expect("write the config file");
        Self::restart_with_config(dir, overrides)
    }

    /// Starts a server in `dir` (where a server started with [`Server::start_with_config`]
    /// ran, see [`Server::kill`]) on its store and its `megamind.toml`.
    pub(crate) fn restart_with_config(dir: TempDir, overrides: &[(&str, &str)]) -> Server {
        let path = dir.path().join("megamind.toml");
        let path = path.to_str().expect("config path").to_owned();
        Self::spawn(
            "serve",
            dir,
            &["--workers", "2", "--config", &path],
            overrides,
        )
        .ready()
    }

    /// The config file of a server started with [`Server::start_with_config`].
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir().join("megamind.toml")
    }

    /// The server's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Sends SIGHUP (megamind reloads its rules from the config file).
    pub(crate) fn signal_hangup(&self) {
        if let Some(child) = &self.child {
            let sent = Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status();
            assert!(
                matches!(sent, Ok(status) if status.success()),
                "cannot send SIGHUP to process {}: {sent:?}",
                child.id()
            );
        }
    }

    /// `megamind demo` (the server plus its synthetic traffic) like [`Server::start`].
    pub(crate) fn demo(overrides: &[(&str, &str)]) -> Server {
        Self::launch(
            "demo",
            tempfile::tempdir().expect("temporary directory"),
            overrides,
        )
    }

    /// Runs `megamind <subcommand>` (`serve` or `demo`) in `dir`.
    fn launch(subcommand: &str, dir: TempDir, overrides: &[(&str, &str)]) -> Server {
        Self::spawn(subcommand, dir, &["--workers", "2"], overrides).ready()
    }

    /// Process `process` of a two-process timely cluster (`--workers 1 --processes 2`)
    /// running `megamind serve` in `dir`. Returns before it announced its address: the
    /// members wait for each other, so start both, then call [`StartingServer::ready`].
    pub(crate) fn cluster_member(
        dir: TempDir,
        process: usize,
        hostfile: &Path,
        overrides: &[(&str, &str)],
    ) -> StartingServer {
        let process = process.to_string();
        let hostfile = hostfile.to_str().expect("hostfile path");
        let args = [
            "--workers",
            "1",
            "--processes",
            "2",
            "--process-id",
            &process,
            "--hostfile",
            hostfile,
        ];
        Self::spawn("serve", dir, &args, overrides)
    }

    /// Starts `megamind <subcommand> <args>` in `dir` without waiting for its address.
    fn spawn(
        subcommand: &str,
        dir: TempDir,
        args: &[&str],
        overrides: &[(&str, &str)],
    ) -> StartingServer {
        let stdout = tempfile::tempfile().expect("temporary file for stdout");
        let mut child = megamind()
            .arg(subcommand)
            .args(args)
            .args(["--http", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env("MEGAMIND__STORE__PATH", store_path(dir.path()))
            .envs(SHORT_WINDOWS)
            .envs(overrides.iter().copied())
            .stdout(stdout.try_clone().expect("clone stdout file"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start `megamind {subcommand}`: {error}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let stderr = child.stderr.take().expect("piped stderr");
        let thread_log = Arc::clone(&log);
        // Drains stderr for the whole life of the process (so it never blocks on a full
        // pipe) and reports the port from the banner line.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = banner_port(&line) {
                    let _ = port_tx.send(port);
                }
                let mut log = thread_log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        StartingServer {
            subcommand: subcommand.to_owned(),
            child: Some(child),
            port_rx,
            log,
            stdout,
            dir: Some(dir),
        }
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The MCP endpoint the server announced (`  mcp        http://…/mcp`); panics if it
    /// announced none within 10 s.
    pub(crate) fn mcp_url(&self) -> String {
        eventually("the `mcp` banner line", Duration::from_secs(10), || {
            let log = self.log();
            log.lines()
                .find_map(|line| banner_url(line, "mcp"))
                .ok_or_else(|| excerpt(&log))
        })
    }

    /// The WebSocket endpoints the server announced (`  websocket  ws://…/ (analytics)
    /// ws://…/ (sessions)`); panics if it announced none within 10 s.
    pub(crate) fn websocket(&self) -> WebSocketUrls {
        eventually(
            "the `websocket` banner line",
            Duration::from_secs(10),
            || {
                let log = self.log();
                log.lines()
                    .find_map(banner_websocket)
                    .ok_or_else(|| excerpt(&log))
            },
        )
    }

    /// Kills the server with SIGKILL (no graceful stop: nothing is flushed) and returns
    /// its working directory, so a new server can start on the same store.
    pub(crate) fn kill(mut self) -> TempDir {
        let child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        assert!(
            matches!(sent, Ok(status) if status.success()),
            "cannot send SIGKILL to process {}: {sent:?}",
            child.id()
        );
        let status = wait_at_most(child, Duration::from_secs(20))
            .unwrap_or_else(|status| panic!("SIGKILL did not end the server: {status}"));
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "the server ended with {status}, not by SIGKILL"
            );
        }
        self.dir.take().expect("the working directory")
    }

    /// The server's working directory (holds the embedded store).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the working directory").path()
    }

    /// Everything the server logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` → (status, JSON body).
    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .unwrap_or_else(|error| panic!("GET {path}: {error}\n{}", excerpt(&self.log())));
        json_of(&format!("GET {path}"), response)
    }

    /// `GET path` → (status, text body).
    pub(crate) fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .unwrap_or_else(|error| panic!("GET {path}: {error}\n{}", excerpt(&self.log())));
        let status = response.status().as_u16();
        (status, response.text().expect("text body"))
    }

    /// `DELETE path` → (status, JSON body).
    pub(crate) fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(path))
            .send()
            .unwrap_or_else(|error| panic!("DELETE {path}: {error}\n{}", excerpt(&self.log())));
        json_of(&format!("DELETE {path}"), response)
    }

    /// `POST path` with `body` → (status, text body).
    pub(crate) fn post_raw(&self, path: &str, body: impl Into<String>) -> (u16, String) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .unwrap_or_else(|error| panic!("POST {path}: {error}\n{}", excerpt(&self.log())));
        let status = response.status().as_u16();
        (status, response.text().expect("text body"))
    }

    /// `POST path` with `body` → (status, JSON body).
    pub(crate) fn post(&self, path: &str, body: impl Into<String>) -> (u16, Value) {
        let (status, text) = self.post_raw(path, body);
        let value = serde_json::from_str(&text).unwrap_or_else(|error| {
            panic!("POST {path} answered {status} with non-JSON ({error}): {text:?}")
        });
        (status, value)
    }

    /// `POST /v1/events` that must accept every record: returns the answer.
    pub(crate) fn post_events_ok(&self, body: impl Into<String>, expected: usize) -> Value {
        let (status, answer) = self.post("/v1/events", body);
        assert_eq!(status, 200, "POST /v1/events answered {status}: {answer}");
        assert_eq!(
            answer,
            serde_json::json!({"accepted": expected, "rejected": []}),
            "POST /v1/events"
        );
        answer
    }

    /// Sends SIGTERM without waiting: members of a timely cluster finish their dataflow
    /// together, so all of them are signalled before any is waited for.
    pub(crate) fn signal_stop(&self) {
        if let Some(child) = &self.child {
            terminate(child);
        }
    }

    /// Stops the server with SIGTERM and returns how it exited; panics if it does not
    /// exit within 20 s or wrote anything to stdout.
    pub(crate) fn stop(mut self) -> ExitStatus {
        let child = self.child.take().expect("running");
        terminate(&child);
        let status = wait_at_most(child, Duration::from_secs(20)).unwrap_or_else(|killed| {
            panic!(
                "`megamind serve` did not exit within 20 s of SIGTERM (killed: {killed})\n{}",
                excerpt(&self.log())
            )
        });
        let stdout = read_all(&mut self.stdout);
        // timely's cluster setup prints its own progress lines to stdout (waiting for the
        // other processes, retrying a connection); nothing else may.
        let ours: Vec<&str> = stdout
            .lines()
            .filter(|line| {
                let timely = line.starts_with("awaiting connections")
                    || (line.starts_with("worker ") && line.ends_with("; retrying"));
                !timely
            })
            .collect();
        assert!(ours.is_empty(), "the server wrote to stdout: {stdout:?}");
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let stopped = wait_at_most(child, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!(
                "--- server stderr (stopped: {stopped:?}) ---\n{}",
                excerpt(&self.log())
            );
        }
    }
}

/// The port of the `  dashboard  http://127.0.0.1:PORT/` banner line.
fn banner_port(line: &str) -> Option<u16> {
    let url = banner_url(line, "dashboard")?;
    let address = url.strip_prefix("http://")?.trim_end_matches('/');
    address.rsplit_once(':')?.1.parse().ok()
}

/// The two WebSocket servers of a running `megamind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebSocketUrls {
    /// `ws://127.0.0.1:PORT/` of the analytics stream (every topic).
    pub(crate) analytics: String,
    /// `ws://127.0.0.1:PORT/` of the session monitor (`sessions/*`).
    pub(crate) sessions: String,
}

impl WebSocketUrls {
    /// The port of a `ws://host:PORT/` URL.
    pub(crate) fn port(url: &str) -> u16 {
        url.trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {url:?}"))
    }
}

/// The URLs of the banner line
/// `  websocket  ws://127.0.0.1:P/ (analytics)  ws://127.0.0.1:Q/ (sessions)`.
fn banner_websocket(line: &str) -> Option<WebSocketUrls> {
    let rest = line.trim_start().strip_prefix("websocket")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let mut analytics = None;
    let mut sessions = None;
    for pair in words.windows(2) {
        if !pair[0].starts_with("ws://") {
            continue;
        }
        match pair[1] {
            "(analytics)" => analytics = Some(pair[0].to_owned()),
            "(sessions)" => sessions = Some(pair[0].to_owned()),
            _ => {}
        }
    }
    Some(WebSocketUrls {
        analytics: analytics?,
        sessions: sessions?,
    })
}

/// The URL of the banner line `  LABEL  http://…` (anything after the URL ignored).
fn banner_url(line: &str, label: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix(label)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let url = rest.split_whitespace().next()?;
    url.starts_with("http://").then(|| url.to_owned())
}

fn json_of(what: &str, response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().expect("response body");
    let value = serde_json::from_str(&text).unwrap_or_else(|error| {
        panic!("{what} answered {status} with non-JSON ({error}): {text:?}")
    });
    (status, value)
}

// ---------------------------------------------------------------------------------------
// Workload P1 and its Python reference.

/// `tests/reference/` in this package.
pub(crate) fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("reference")
}

/// A `python3` command; panics loudly when Python is missing (these tests never skip).
pub(crate) fn python3() -> Command {
    match Command::new("python3").arg("--version").output() {
        Ok(output) if output.status.success() => Command::new("python3"),
        Ok(output) => panic!(
            "`python3 --version` failed ({}): the integration tests need Python 3 to run the \
             reference implementation in tests/reference/",
            output.status
        ),
        Err(error) => panic!(
            "python3 not found ({error}): the integration tests need Python 3 on PATH to run \
             the reference implementation in tests/reference/ (CI installs it in .ci/run)"
        ),
    }
}

/// Writes `n` events of workload P1 to `dir/p1.jsonl` with the project's generator.
pub(crate) fn generate_p1(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("p1.jsonl");
    run(
        "p1_events.py",
        python3()
            .arg(reference_dir().join("p1_events.py"))
            .arg(&path)
            .arg(n.to_string()),
        Duration::from_secs(60),
    )
    .assert_success("tests/reference/p1_events.py");
    let text = std::fs::read_to_string(&path).expect("generated P1 file");
    assert_eq!(
        text.lines().count(),
        n,
        "P1 generator wrote the wrong number of events"
    );
    path
}

/// Totals of the Python reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct ReferenceTotals {
    pub(crate) windows: u64,
    pub(crate) count_sum: u64,
    pub(crate) breaches: u64,
}

/// Runs `tests/reference/p1_reference.py` over `events`, writing every window to
/// `windows_out`.
pub(crate) fn p1_reference(events: &Path, windows_out: &Path) -> ReferenceTotals {
    let finished = run(
        "p1_reference.py",
        python3()
            .arg(reference_dir().join("p1_reference.py"))
            .arg(events)
            .arg(windows_out),
        Duration::from_secs(120),
    );
    finished.assert_success("tests/reference/p1_reference.py");
    serde_json::from_str(finished.stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "reference printed unexpected output ({error}): {}",
            finished.stdout
        )
    })
}

/// A configuration file pinning the job workload P1 defines (the Python reference's
/// constants): 5 minute windows sliding by 10 s, and one rule, latency_ms mean > 70.
pub(crate) fn p1_config(dir: &Path) -> PathBuf {
    let path = dir.join("p1.toml");
    std::fs::write(
        &path,
        r#"# Workload P1's job, as tests/reference/p1_reference.py computes it.
[windows]
length = "5m"
slide = "10s"

[[rules]]
id = "latency_mean_high"
metric = "latency_ms"
aggregate = "mean"
op = ">"
threshold = 70.0
severity = "high"

# P1's job has no anomaly scoring (its anomaly_score windows are not in the reference).
[anomaly]
enabled = false
"#,
    )
    .expect("write the P1 configuration");
    path
}

/// One window, keyed for comparison: (session_id, name, end).
pub(crate) type WindowKey = (String, String, u64);

/// Count, mean and max of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowValues {
    pub(crate) count: u64,
    pub(crate) mean: f64,
    pub(crate) max: f64,
}

/// Reads the reference's windows file.
pub(crate) fn reference_windows(path: &Path) -> BTreeMap<WindowKey, WindowValues> {
    #[derive(Deserialize)]
    struct Line {
        session_id: String,
        name: String,
        end: u64,
        count: u64,
        mean: f64,
        max: f64,
    }
    let text = std::fs::read_to_string(path).expect("reference windows file");
    let mut windows = BTreeMap::new();
    for line in text.lines() {
        let line: Line = serde_json::from_str(line).expect("reference window line");
        let previous = windows.insert(
            (line.session_id, line.name, line.end),
            WindowValues {
                count: line.count,
                mean: line.mean,
                max: line.max,
            },
        );
        assert!(
            previous.is_none(),
            "duplicate window in the reference output"
        );
    }
    windows
}

/// What `megamind replay --out` wrote, parsed.
#[derive(Debug, Default)]
pub(crate) struct ReplayOutput {
    /// Lines per `kind`.
    pub(crate) kinds: BTreeMap<String, u64>,
    /// Every window.
    pub(crate) windows: BTreeMap<WindowKey, WindowValues>,
    /// (rule_id, session_id, name, end) of every breach.
    pub(crate) breaches: Vec<(String, String, String, u64)>,
    /// Windows reported more than once.
    pub(crate) duplicate_windows: Vec<WindowKey>,
}

/// Parses a `--out` file of megamind.
pub(crate) fn replay_output(path: &Path) -> ReplayOutput {
    #[derive(Deserialize)]
    struct Key {
        name: String,
        session_id: Option<String>,
    }
    #[derive(Deserialize)]
    struct Line {
        kind: String,
        key: Option<Key>,
        end: Option<u64>,
        count: Option<u64>,
        mean: Option<f64>,
        max: Option<f64>,
        rule_id: Option<String>,
    }
    let text = std::fs::read_to_string(path).expect("megamind output file");
    let mut out = ReplayOutput::default();
    for (number, raw) in text.lines().enumerate() {
        let line: Line = serde_json::from_str(raw).unwrap_or_else(|error| {
            panic!("output line {} is not JSON ({error}): {raw}", number + 1)
        });
        *out.kinds.entry(line.kind.clone()).or_insert(0) += 1;
        let located = || {
            let key = line.key.as_ref().unwrap_or_else(|| panic!("no key: {raw}"));
            let session = key.session_id.clone().unwrap_or_default();
            let end = line.end.unwrap_or_else(|| panic!("no end: {raw}"));
            (session, key.name.clone(), end)
        };
        match line.kind.as_str() {
            "window" => {
                let key = located();
                let values = WindowValues {
                    count: line.count.unwrap_or_else(|| panic!("no count: {raw}")),
                    mean: line.mean.unwrap_or_else(|| panic!("no mean: {raw}")),
                    max: line.max.unwrap_or_else(|| panic!("no max: {raw}")),
                };
                if out.windows.insert(key.clone(), values).is_some() {
                    out.duplicate_windows.push(key);
                }
            }
            "breach" => {
                let (session, name, end) = located();
                let rule = line
                    .rule_id
                    .clone()
                    .unwrap_or_else(|| panic!("no rule_id: {raw}"));
                out.breaches.push((rule, session, name, end));
            }
            _ => {}
        }
    }
    out
}

/// `|a - b|` within `1e-9` of the larger magnitude.
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The lines of a file, sorted (for order-insensitive comparison of outputs).
pub(crate) fn sorted_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort_unstable();
    lines
}

/// Panics with a short description of how two sorted line lists differ.
pub(crate) fn assert_same_lines(what: &str, left: &[String], right: &[String]) {
    if left == right {
        return;
    }
    let only_left: Vec<&String> = left
        .iter()
        .filter(|line| right.binary_search(line).is_err())
        .take(5)
        .collect();
    let only_right: Vec<&String> = right
        .iter()
        .filter(|line| left.binary_search(line).is_err())
        .take(5)
        .collect();
    panic!(
        "{what}: {} lines vs {} lines\nfirst lines only on the left: {only_left:#?}\n\
         first lines only on the right: {only_right:#?}",
        left.len(),
        right.len()
    );
}

/// Two distinct free TCP ports on loopback (bound together, then released).
pub(crate) fn free_ports() -> (u16, u16) {
    let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let second = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (
        first.local_addr().expect("address").port(),
        second.local_addr().expect("address").port(),
    )
}

// ---------------------------------------------------------------------------------------
// Python peers: the `websockets` client library (tests/websocket/, tests/dashboard/).

/// The pinned `websockets` version (also in .ci/run).
pub(crate) const WEBSOCKETS_VERSION: &str = "17.4";

const INSTALL_WEBSOCKETS: &str = "`bash .ci/run` installs it (a venv in .ci/.venv with \
     websockets==17.4, exported as MEGAMIND_TEST_PYTHON); by hand: `python3 -m venv .ci/.venv \
     && .ci/.venv/bin/pip install websockets==17.4`, then run the tests with \
     MEGAMIND_TEST_PYTHON=$PWD/.ci/.venv/bin/python";

/// The Python interpreter (`MEGAMIND_TEST_PYTHON`, else `python3`) with the independent
/// WebSocket client library `websockets` (14 or later), checked once per test binary;
/// panics with how to install it when it is missing (these tests never skip).
pub(crate) fn websockets_python() -> &'static str {
    static PYTHON: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    match PYTHON.get_or_init(find_websockets_python) {
        Ok(python) => python,
        Err(problem) => panic!("{problem}"),
    }
}

fn find_websockets_python() -> Result<String, String> {
    let python = std::env::var("MEGAMIND_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .args(["-c", "import websockets; print(websockets.__version__)"])
        .output()
        .map_err(|error| {
            format!(
                "cannot run the Python interpreter {python:?} ({error}). The WebSocket and \
                 dashboard tests use the Python client library `websockets`: {INSTALL_WEBSOCKETS}"
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "{python:?} cannot `import websockets` ({}). The WebSocket and dashboard tests use \
             the Python client library `websockets` (pinned {WEBSOCKETS_VERSION}): \
             {INSTALL_WEBSOCKETS}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    if major < 14 {
        return Err(format!(
            "{python:?} has websockets {version}; the tests need 14 or later (the asyncio \
             client): {INSTALL_WEBSOCKETS}"
        ));
    }
    Ok(python)
}
