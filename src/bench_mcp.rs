//! `megamind bench --mode mcp`: `realtime_add_event` over MCP Streamable HTTP.
//!
//! Starts the full server in-process (engine, write-ahead store in a temporary directory,
//! HTTP with `/mcp`), then `clients` concurrent HTTP clients call the tool back to back
//! for `duration`, each call carrying `batch` metric events. Calls use the stateless
//! 2026-07-28 generation (no handshake; method and tool named in headers), which is what
//! a high-rate client would use. Client and server share the machine, so the numbers are
//! a lower bound for the server alone.

use hdrhistogram::Histogram;
use megamind_dataflows::time::{Clock, Stopwatch, SystemClock};
use std::fmt::Write as _;

use serde_json::Value;

use crate::app::{RunOptions, Server, ServerOptions};
use crate::bench::{
    cpus, latency_histogram, BenchError, BenchOptions, BenchReport, LatencyReport, McpCallsReport,
};
use crate::config::Config;
use crate::metrics::peak_rss_bytes;
use crate::runtime::EngineConfig;

const PROTOCOL: &str = "2026-07-28";
/// A call that takes longer than this counts as failed.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the MCP load and reports.
///
/// # Errors
/// The server cannot start.
pub fn run(
    config: &Config,
    engine_config: EngineConfig,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    let mut config = config.clone();
    let directory = std::env::temp_dir().join(format!("megamind-bench-mcp-{}", std::process::id()));
    config.store.path = directory.join("events.db");
    config.server.http_listen = ([127, 0, 0, 1], 0).into();
    config.mcp.auth_token = None;
    let run = RunOptions {
        workers: engine_config.workers,
        cluster: None,
        config_path: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| BenchError::Engine(error.to_string()))?;
    let report = runtime.block_on(async move {
        let server = Server::start(
            config,
            run,
            ServerOptions {
                demo: false,
                http: true,
            },
        )
        .await
        .map_err(|error| BenchError::Engine(error.to_string()))?;
        let address = server
            .http_address
            .ok_or_else(|| BenchError::Engine("no HTTP address".to_owned()))?;
        let url = format!("http://{address}/mcp");
        let stopwatch = Stopwatch::start();
        let mut clients = Vec::new();
        for client in 0..options.clients.max(1) {
            let url = url.clone();
            let batch = options.batch.max(1);
            let duration = options.duration;
            let keys = options.keys.max(1);
            clients.push(tokio::spawn(async move {
                client_loop(client, &url, batch, keys, duration).await
            }));
        }
        let mut histogram = latency_histogram();
        let (mut calls, mut failed) = (0u64, 0u64);
        for client in clients {
            if let Ok((client_histogram, ok, errors)) = client.await {
                let _ = histogram.add(&client_histogram);
                calls += ok;
                failed += errors;
            }
        }
        let elapsed = stopwatch.elapsed().as_secs_f64();
        let accepted = server
            .metrics
            .events_accepted
            .load(std::sync::atomic::Ordering::Relaxed);
        server.stop().await.map_err(BenchError::Engine)?;
        Ok::<_, BenchError>(BenchReport {
            mode: "mcp",
            workers: engine_config.workers,
            offered_rate: 0,
            events_sent: calls * options.batch.max(1) as u64,
            events_processed: accepted,
            elapsed_seconds: elapsed,
            events_per_second: accepted as f64 / elapsed.max(f64::EPSILON),
            window_results: 0,
            window_close_to_sink: None,
            mcp_calls: Some(McpCallsReport {
                clients: options.clients.max(1),
                batch: options.batch.max(1),
                calls,
                failed,
                calls_per_second: calls as f64 / elapsed.max(f64::EPSILON),
                events_per_second: (calls * options.batch.max(1) as u64) as f64
                    / elapsed.max(f64::EPSILON),
                latency: LatencyReport::from(&histogram),
            }),
            websocket: None,
            kafka: None,
            ml: None,
            alerts: None,
            insights: None,
            anomaly: None,
            peak_rss_bytes: peak_rss_bytes(),
            cpus: cpus(),
        })
    });
    let _ = std::fs::remove_dir_all(&directory);
    report
}

/// One client: calls back to back until `duration` has passed.
async fn client_loop(
    client: usize,
    url: &str,
    batch: usize,
    keys: usize,
    duration: std::time::Duration,
) -> (Histogram<u64>, u64, u64) {
    let http = match reqwest::Client::builder().timeout(CALL_TIMEOUT).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %error, "cannot build the HTTP client");
            return (latency_histogram(), 0, 1);
        }
    };
    let clock = SystemClock;
    let mut histogram = latency_histogram();
    let (mut ok, mut failed) = (0u64, 0u64);
    let started = Stopwatch::start();
    let mut sequence = 0u64;
    while started.elapsed() < duration {
        let now = clock.now_ms();
        // The request is written by hand: building `serde_json::Value` trees would cost the
        // client more than the server spends on the call, on the same two cores.
        let mut body = String::with_capacity(128 + batch * 96);
        let _ = write!(
            body,
            r#"{{"jsonrpc":"2.0","id":{sequence},"method":"tools/call","params":{{"name":"realtime_add_event","_meta":{{"io.modelcontextprotocol/protocolVersion":"{PROTOCOL}","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"megamind-bench","version":"1"}}}},"arguments":{{"#
        );
        body.push_str(if batch == 1 {
            r#""event":"#
        } else {
            r#""events":["#
        });
        for i in 0..batch {
            sequence += 1;
            let key = (client * 7919 + i) % keys;
            if i > 0 {
                body.push(',');
            }
            let _ = write!(
                body,
                r#"{{"type":"metric","ts":{now},"name":"bench.mcp","labels":{{"key":"k{key}"}},"value":{}}}"#,
                sequence % 100
            );
        }
        body.push_str(if batch == 1 { "}}}" } else { "]}}}" });
        let call = Stopwatch::start();
        let answer = http
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", PROTOCOL)
            .header("Mcp-Method", "tools/call")
            .header("Mcp-Name", "realtime_add_event")
            .body(body)
            .send()
            .await;
        let accepted = match answer {
            Ok(response) => match response.text().await {
                Ok(text) => {
                    let accepted = accepted_of(&text);
                    if accepted.is_none() && failed == 0 {
                        tracing::warn!(client, answer = %text.chars().take(300).collect::<String>(), "unexpected answer");
                    }
                    accepted
                }
                Err(error) => {
                    if failed == 0 {
                        tracing::warn!(client, error = %error, "reading the answer failed");
                    }
                    None
                }
            },
            Err(error) => {
                if failed == 0 {
                    tracing::warn!(client, error = %error, "call failed");
                }
                None
            }
        };
        match accepted {
            Some(count) if count == batch as u64 => {
                ok += 1;
                let micros = u64::try_from(call.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = histogram.record(micros.max(1));
            }
            _ => failed += 1,
        }
    }
    (histogram, ok, failed)
}

/// The `accepted` count of a `realtime_add_event` answer (JSON or one SSE event).
fn accepted_of(text: &str) -> Option<u64> {
    let payload = if text.trim_start().starts_with('{') {
        text.to_owned()
    } else {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim)
            .find(|data| data.starts_with('{'))?
            .to_owned()
    };
    let answer: Value = serde_json::from_str(&payload).ok()?;
    let result = answer.get("result")?;
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    result.get("structuredContent")?.get("accepted")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::accepted_of;

    #[test]
    fn reads_json_and_sse_answers() {
        let json = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"accepted":5,"rejected":[]}}}"#;
        assert_eq!(accepted_of(json), Some(5));
        let sse = format!("event: message\ndata: {json}\n\n");
        assert_eq!(accepted_of(&sse), Some(5));
        let error = r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[]}}"#;
        assert_eq!(accepted_of(error), None);
    }
}
