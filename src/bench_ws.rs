//! `megamind bench --mode websocket`: delivery latency and connections held.
//!
//! Starts `megamind serve` as a child process (its own file-descriptor budget), opens
//! `clients` WebSocket connections from this process, each subscribed to one session's
//! topic (`sessions/bench-{k}`, `k = client % keys`), then posts one operation event per
//! session at the offered `rate` (events/s over all sessions) over HTTP. For every session
//! update a client receives, the latency is the time since the event that produced it was
//! posted (matched by the session's event count). Reports hdrhistogram percentiles, the
//! connections held, and the server's peak resident memory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use megamind_dataflows::time::{pace, Clock, Stopwatch, SystemClock};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{cpus, latency_histogram, BenchError, BenchOptions, BenchReport, LatencyReport};

/// What the WebSocket clients saw.
#[derive(Debug, Clone, Serialize)]
pub struct WebSocketReport {
    /// Clients asked for.
    pub clients: usize,
    /// Clients connected and subscribed.
    pub connected: usize,
    /// Session updates received over all clients.
    pub messages: u64,
    /// Event posted → update received.
    pub delivery: LatencyReport,
    /// Peak resident memory of the server process.
    pub server_peak_rss_bytes: Option<u64>,
    /// Resident memory of the server with every client connected, before traffic.
    pub server_rss_connected_bytes: Option<u64>,
}

/// The session index and event count of a session-state update, read by scanning.
fn session_marker(text: &str) -> Option<(usize, u64)> {
    if !text.contains(r#""kind":"session","#) {
        return None;
    }
    let after = |field: &str| {
        text.find(field)
            .map(|position| &text[position + field.len()..])
    };
    let index = after(r#""session_id":"bench-"#)?;
    let index: usize = index[..index.find('"')?].parse().ok()?;
    let events = after(r#""events":"#)?;
    let digits = events
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(events.len());
    Some((index, events[..digits].parse().ok()?))
}

/// Posted events: (session, event count) → when it was posted.
type Sent = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

struct ServerProcess {
    child: Child,
    http: String,
    analytics: String,
    _directory: std::path::PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._directory);
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

fn start_server(workers: usize, client_queue: usize) -> Result<ServerProcess, BenchError> {
    let fail = |message: String| BenchError::Engine(message);
    let executable = std::env::current_exe().map_err(|error| fail(error.to_string()))?;
    let directory = std::env::temp_dir().join(format!("megamind-bench-ws-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&directory);
    let mut child = Command::new(executable)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--workers",
            &workers.to_string(),
        ])
        .current_dir(&directory)
        .env("MEGAMIND__STORE__ENABLED", "false")
        .env("MEGAMIND__WEBSOCKET__ANALYTICS_LISTEN", "127.0.0.1:0")
        .env("MEGAMIND__WEBSOCKET__SESSIONS_LISTEN", "127.0.0.1:0")
        .env(
            "MEGAMIND__WEBSOCKET__CLIENT_QUEUE",
            client_queue.to_string(),
        )
        .env("MEGAMIND__INGEST__ALLOWED_LATENESS", "0s")
        .env("MEGAMIND_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| fail(format!("cannot start the server: {error}")))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| fail("no stderr".to_owned()))?;
    let mut reader = BufReader::new(stderr);
    let (mut http, mut analytics) = (None, None);
    let mut line = String::new();
    while http.is_none() || analytics.is_none() {
        line.clear();
        if reader
            .read_line(&mut line)
            .map_err(|error| fail(error.to_string()))?
            == 0
        {
            return Err(fail(
                "the server exited before announcing its ports".to_owned(),
            ));
        }
        if let Some(rest) = line.trim().strip_prefix("dashboard") {
            http = Some(rest.trim().trim_end_matches('/').to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("websocket") {
            analytics = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|read| read > 0) {
            sink.clear();
        }
    });
    Ok(ServerProcess {
        child,
        http: http.unwrap_or_default(),
        analytics: analytics.unwrap_or_default(),
        _directory: directory,
    })
}

/// Runs the WebSocket load and reports.
///
/// # Errors
/// The server cannot start.
pub fn run(workers: usize, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let keys = options.keys.clamp(1, 10_000);
    let clients = options.clients.max(1);
    let server = start_server(workers, 4096)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| BenchError::Engine(error.to_string()))?;
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let results: Arc<Mutex<(Histogram<u64>, u64)>> = Arc::new(Mutex::new((latency_histogram(), 0)));
    let (connected_tx, connected_rx) = std::sync::mpsc::channel::<bool>();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let url = server.analytics.clone();
        let sent = Arc::clone(&sent);
        let results = Arc::clone(&results);
        let connected = connected_tx.clone();
        let stop = stop.clone();
        tasks.push(runtime.spawn(async move {
            let topic = format!("sessions/bench-{}", client % keys);
            let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                let _ = connected.send(false);
                return;
            };
            let request = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{{"topics":["{topic}"]}}}}"#);
            if socket.send(Message::text(request)).await.is_err() {
                let _ = connected.send(false);
                return;
            }
            let _ = connected.send(true);
            let mut histogram = latency_histogram();
            let mut messages = 0u64;
            loop {
                let next = tokio::select! {
                    next = socket.next() => next,
                    () = stop.cancelled() => break,
                };
                let Some(Ok(Message::Text(text))) = next else {
                    if matches!(next, Some(Ok(_))) {
                        continue;
                    }
                    break;
                };
                let arrived = Stopwatch::start().started();
                // Only session states matter; read the two fields without building a JSON
                // tree, so the client (sharing the machine) costs the server little.
                let Some((index, events)) = session_marker(text.as_str()) else { continue };
                let posted = sent.lock().map(|sent| sent.get(&(index, events)).copied()).ok().flatten();
                if let Some(posted) = posted {
                    messages += 1;
                    let micros = u64::try_from(arrived.saturating_duration_since(posted).as_micros()).unwrap_or(u64::MAX);
                    let _ = histogram.record(micros.max(1));
                }
            }
            if let Ok(mut results) = results.lock() {
                let _ = results.0.add(&histogram);
                results.1 += messages;
            }
        }));
    }
    drop(connected_tx);
    let mut connected = 0usize;
    for _ in 0..clients {
        match connected_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(true) => connected += 1,
            Ok(false) => {}
            Err(_) => break,
        }
    }
    // Let the last subscriptions land before measuring memory and starting traffic.
    pace(Duration::from_millis(500));
    let rss_connected = proc_status_kib(server.child.id(), "VmRSS:");

    // Offered load: one operation event per session per round, `rate` events/s overall.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| BenchError::Engine(error.to_string()))?;
    let url = format!("{}/v1/events", server.http);
    let rounds_per_second = (options.rate as f64 / keys as f64).max(0.1);
    let round = Duration::from_secs_f64(1.0 / rounds_per_second);
    let clock = SystemClock;
    let stopwatch = Stopwatch::start();
    let mut counts = vec![0u64; keys];
    let mut next = Duration::ZERO;
    while stopwatch.elapsed() < options.duration {
        let now = clock.now_ms();
        let mut body = String::with_capacity(keys * 120);
        for (index, count) in counts.iter_mut().enumerate() {
            *count += 1;
            body.push_str(&format!(
                r#"{{"type":"session","ts":{now},"session_id":"bench-{index}","kind":"operation","operation":"step","duration_ms":1,"success":true}}"#
            ));
            body.push('\n');
        }
        {
            let posted = Stopwatch::start().started();
            if let Ok(mut sent) = sent.lock() {
                for (index, count) in counts.iter().enumerate() {
                    sent.insert((index, *count), posted);
                }
            }
        }
        let _ = http.post(&url).body(body).send();
        next += round;
        if let Some(wait) = next.checked_sub(stopwatch.elapsed()) {
            pace(wait);
        }
    }
    pace(Duration::from_millis(500));
    stop.cancel();
    // Every client records its histogram on the way out: wait for all of them.
    runtime.block_on(async {
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let elapsed = stopwatch.elapsed().as_secs_f64();
    let peak = proc_status_kib(server.child.id(), "VmHWM:");
    let (histogram, messages) = results
        .lock()
        .map(|results| (results.0.clone(), results.1))
        .unwrap_or_else(|_| (latency_histogram(), 0));
    let events = counts.iter().sum::<u64>();
    Ok(BenchReport {
        mode: "websocket",
        workers,
        offered_rate: options.rate,
        events_sent: events,
        events_processed: events,
        elapsed_seconds: elapsed,
        events_per_second: events as f64 / elapsed.max(f64::EPSILON),
        window_results: 0,
        window_close_to_sink: None,
        mcp_calls: None,
        kafka: None,
        ml: None,
        alerts: None,
        insights: None,
        anomaly: None,
        websocket: Some(WebSocketReport {
            clients,
            connected,
            messages,
            delivery: LatencyReport::from(&histogram),
            server_peak_rss_bytes: peak,
            server_rss_connected_bytes: rss_connected,
        }),
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        cpus: cpus(),
    })
}

#[cfg(test)]
mod tests {
    use super::session_marker;

    #[test]
    fn reads_the_marker_of_session_updates_only() {
        let state = r#"{"jsonrpc":"2.0","method":"update","params":{"topic":"sessions/bench-7","seq":3,"data":{"kind":"session","session_id":"bench-7","status":"active","events":42,"tokens":0}}}"#;
        assert_eq!(session_marker(state), Some((7, 42)));
        let window =
            r#"{"params":{"data":{"kind":"window","key":{"session_id":"bench-7"},"count":1}}}"#;
        assert_eq!(session_marker(window), None);
    }
}
