//! `megamind bench`: the load harness. Drives the real pipeline and prints a JSON report
//! with hdrhistogram percentiles.
//!
//! Modes:
//! - `pipeline`: an in-process generator writes NDJSON metric events (stamped with the
//!   wall clock) at a fixed offered rate (or flat out with `--rate 0`) into the engine's
//!   worker queues — the same path as `replay` — and measures, for every window result,
//!   the time from the moment the watermark of every worker passed the window's end (the
//!   generator sent the event that moved the last worker's watermark past it) to the
//!   moment the result reached the sink.
//! - `replay`: replays a JSON-lines file (for example workload P1) flat out and reports
//!   throughput and peak memory.
//! - `ml`: predictions with delayed outcomes (see [`crate::bench_ml`]).
//! - `kafka`: a file through a topic and the Kafka source (see [`crate::bench_kafka`]).
//! - `insights`: per-session success prediction latency and update throughput with the
//!   insight operators on (see [`crate::bench_insights`]).
//! - `alerts`: like `pipeline`, with N rules over the M keys and breaches injected; measures
//!   window close → alert notification handed to its channel (see `bench_alerts`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use megamind_dataflows::model::Update;
use megamind_dataflows::time::{duration_ms, pace, Clock, Stopwatch, SystemClock};
use serde::Serialize;

use crate::config::Config;
use crate::metrics::EngineMetrics;
use crate::replay::{ReplayError, ReplayOptions};
use crate::runtime::{CountingSink, Engine, EngineConfig, SinkFactory, UpdateSink, WorkerMsg};

/// Options of `megamind bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `pipeline` or `replay`.
    pub mode: BenchMode,
    /// Offered events per second (0: flat out).
    pub rate: u64,
    /// How long to offer load.
    pub duration: Duration,
    /// Distinct series.
    pub keys: usize,
    /// Input file for `replay`.
    pub file: Option<PathBuf>,
    /// Concurrent clients (`mcp`).
    pub clients: usize,
    /// Events per call (`mcp`).
    pub batch: usize,
    /// Partitions of the topic (`kafka`).
    pub partitions: usize,
    /// Brokers (`kafka`; default: librdkafka's in-process mock cluster).
    pub brokers: Option<String>,
    /// Rules (`alerts`).
    pub rules: usize,
}

/// What the harness measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// In-process generator at a fixed rate; window-close → sink latency.
    Pipeline,
    /// Replay a file flat out.
    Replay,
    /// `realtime_add_event` over MCP Streamable HTTP from concurrent clients.
    Mcp,
    /// WebSocket clients subscribed to session topics: delivery latency, connections held.
    Websocket,
    /// A JSON-lines file written to a topic, then consumed through the Kafka source.
    Kafka,
    /// Predictions for 5 models with outcomes 0–1 s later: predictions/s, outcome →
    /// updated accuracy latency, bytes per pending prediction.
    Ml,
    /// N rules over M keys with injected breaches: window close → notification handed to
    /// its channel.
    Alerts,
    /// Session success prediction: per-session prediction latency, update throughput.
    Insights,
    /// The anomaly detectors' cores: scored events/s (robust z + isolation forest) on one
    /// thread per worker, per-event scoring latency, message novelty check latency.
    Anomaly,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// What the MCP clients saw.
#[derive(Debug, Clone, Serialize)]
pub struct McpCallsReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Events per call.
    pub batch: usize,
    /// Calls answered successfully.
    pub calls: u64,
    /// Calls that failed (transport error or `isError`).
    pub failed: u64,
    /// Successful calls per second.
    pub calls_per_second: f64,
    /// Events accepted per second.
    pub events_per_second: f64,
    /// Call latency, request sent → answer read.
    pub latency: LatencyReport,
}

impl LatencyReport {
    /// Percentiles of `histogram` (microseconds).
    pub fn from(histogram: &Histogram<u64>) -> Self {
        Self {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// The JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The mode.
    pub mode: &'static str,
    /// Worker threads.
    pub workers: usize,
    /// Offered rate (0: flat out).
    pub offered_rate: u64,
    /// Events generated or read.
    pub events_sent: u64,
    /// Events the pipeline accepted.
    pub events_processed: u64,
    /// Wall seconds until the last result.
    pub elapsed_seconds: f64,
    /// Events per second.
    pub events_per_second: f64,
    /// Window results delivered.
    pub window_results: u64,
    /// Window-close → sink latency (pipeline mode).
    pub window_close_to_sink: Option<LatencyReport>,
    /// Tool calls (mcp mode).
    pub mcp_calls: Option<McpCallsReport>,
    /// WebSocket delivery (websocket mode).
    pub websocket: Option<crate::bench_ws::WebSocketReport>,
    /// Kafka produce and consume (kafka mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<crate::bench_kafka::KafkaBenchReport>,
    /// ML tracking (ml mode).
    pub ml: Option<crate::bench_ml::MlReport>,
    /// What the alert path did (`alerts` mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::bench_alerts::AlertsReport>,
    /// Session success prediction (`insights` mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insights: Option<crate::bench_insights::InsightsReport>,
    /// Anomaly scoring cores (`anomaly` mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<crate::bench_anomaly::AnomalyBenchReport>,
    /// Peak resident memory.
    pub peak_rss_bytes: Option<u64>,
    /// Logical CPUs of the machine.
    pub cpus: usize,
}

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `replay` mode without `--file`.
    #[error("--file is required in replay mode")]
    MissingFile,
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The engine failed.
    #[error("engine failed: {0}")]
    Engine(String),
}

/// Runs the harness and returns its report.
///
/// # Errors
/// A missing input file, or an engine failure.
pub fn run(
    config: &Config,
    engine_config: EngineConfig,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    match options.mode {
        BenchMode::Replay => {
            let file = options.file.clone().ok_or(BenchError::MissingFile)?;
            let workers = engine_config.workers;
            let summary = crate::replay::run(
                config,
                engine_config,
                &ReplayOptions {
                    input: file,
                    out: None,
                    realtime: false,
                    speed: 1.0,
                },
            )?;
            Ok(BenchReport {
                mode: "replay",
                workers,
                offered_rate: 0,
                events_sent: summary.events + summary.rejected.values().sum::<u64>(),
                events_processed: summary.events,
                elapsed_seconds: summary.elapsed_seconds,
                events_per_second: summary.events_per_second,
                window_results: summary.windows,
                window_close_to_sink: None,
                mcp_calls: None,
                websocket: None,
                kafka: None,
                ml: None,
                alerts: None,
                insights: None,
                anomaly: None,
                peak_rss_bytes: summary.peak_rss_bytes,
                cpus: cpus(),
            })
        }
        BenchMode::Pipeline => pipeline(engine_config, options),
        BenchMode::Mcp => crate::bench_mcp::run(config, engine_config, options),
        BenchMode::Websocket => crate::bench_ws::run(engine_config.workers, options),
        BenchMode::Kafka => crate::bench_kafka::run(config, engine_config, options),
        BenchMode::Ml => crate::bench_ml::run(engine_config, options),
        BenchMode::Alerts => crate::bench_alerts::run(engine_config, options),
        BenchMode::Insights => crate::bench_insights::run(engine_config, options),
        BenchMode::Anomaly => Ok(crate::bench_anomaly::run(
            config,
            engine_config.workers,
            options,
        )),
    }
}

/// Logical CPUs of this machine.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// When the watermark of every worker passed each window end.
pub(crate) type CloseTimes = Arc<Mutex<BTreeMap<u64, Instant>>>;

struct LatencySink {
    closes: CloseTimes,
    histogram: Histogram<u64>,
    results: Arc<Mutex<Histogram<u64>>>,
}

impl UpdateSink for LatencySink {
    fn deliver(&mut self, updates: &[Update]) {
        let arrived = Stopwatch::start().started();
        let closes = self
            .closes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for update in updates {
            if let Update::Window(stats) = update {
                if let Some(closed) = closes.get(&stats.end) {
                    let micros = arrived.saturating_duration_since(*closed).as_micros();
                    let _ = self
                        .histogram
                        .record(u64::try_from(micros).unwrap_or(u64::MAX));
                }
            }
        }
    }

    fn finish(&mut self) {
        let mut results = self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = results.add(&self.histogram);
    }
}

/// An empty microsecond latency histogram (1 µs – 1 h, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 3_600_000_000, 3) {
        Ok(histogram) => histogram,
        Err(error) => panic!("invariant: constant histogram bounds are valid: {error:?}"),
    }
}

fn pipeline(
    engine_config: EngineConfig,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    let metrics = Arc::new(EngineMetrics::default());
    let closes: CloseTimes = Arc::new(Mutex::new(BTreeMap::new()));
    let results = Arc::new(Mutex::new(latency_histogram()));
    let slide = duration_ms(engine_config.analytics.windows.slide).max(1);
    let lateness = duration_ms(engine_config.allowed_lateness);
    let workers = engine_config.workers;
    let sink_closes = Arc::clone(&closes);
    let sink_results = Arc::clone(&results);
    let sink_metrics = Arc::clone(&metrics);
    let factory: SinkFactory = Arc::new(move |_worker| {
        Box::new(CountingSink::new(
            LatencySink {
                closes: Arc::clone(&sink_closes),
                histogram: latency_histogram(),
                results: Arc::clone(&sink_results),
            },
            Arc::clone(&sink_metrics),
        ))
    });
    let engine = Engine::start(engine_config, factory, Arc::clone(&metrics))
        .map_err(|e| BenchError::Engine(e.to_string()))?;
    let feeder = engine.feeder();
    let local = feeder.workers().max(1);
    let clock = SystemClock;
    let stopwatch = Stopwatch::start();
    let mut sent = 0u64;
    let mut max_sent = vec![0u64; local];
    let mut closed_through = 0u64;
    let mut worker = 0usize;
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
    let keys = options.keys.max(1);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while stopwatch.elapsed() < options.duration {
        let elapsed = stopwatch.elapsed();
        let due = if options.rate == 0 {
            sent + 4096
        } else {
            (elapsed.as_secs_f64() * options.rate as f64) as u64
        };
        if due <= sent {
            pace(Duration::from_micros(200));
            continue;
        }
        let now = clock.now_ms();
        buffer.clear();
        for _ in sent..due {
            // xorshift: cheap, deterministic key and value choice.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = state % keys as u64;
            let value = 20 + (state >> 32) % 80;
            let _ = writeln!(
                buffer,
                r#"{{"type":"metric","ts":{now},"name":"bench.latency_ms","labels":{{"key":"k{key}"}},"value":{value}}}"#
            );
        }
        sent = due;
        let chunk = std::mem::replace(&mut buffer, Vec::with_capacity(1 << 16));
        feeder
            .blocking_send(
                worker,
                WorkerMsg::Lines {
                    chunk,
                    default_ts: now,
                },
            )
            .map_err(|e| BenchError::Engine(e.to_string()))?;
        max_sent[worker] = max_sent[worker].max(now);
        worker = (worker + 1) % local;
        // The frontier can only be as far as the slowest worker's watermark.
        let frontier = max_sent
            .iter()
            .copied()
            .min()
            .unwrap_or(0)
            .saturating_sub(lateness);
        let frontier_end = frontier / slide * slide;
        if frontier_end > closed_through {
            let at = Stopwatch::start().started();
            let mut closes = closes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut end = if closed_through == 0 {
                frontier_end
            } else {
                closed_through + slide
            };
            while end <= frontier_end {
                closes.insert(end, at);
                end += slide;
            }
            closed_through = frontier_end;
        }
    }
    drop(feeder);
    engine.shutdown().map_err(BenchError::Engine)?;
    let elapsed = stopwatch.elapsed().as_secs_f64();
    let processed = metrics
        .events_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let histogram = results
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(BenchReport {
        mode: "pipeline",
        workers,
        offered_rate: options.rate,
        events_sent: sent,
        events_processed: processed,
        elapsed_seconds: elapsed,
        events_per_second: if elapsed > 0.0 {
            processed as f64 / elapsed
        } else {
            0.0
        },
        window_results: metrics.updates_of("window"),
        window_close_to_sink: Some(LatencyReport::from(&histogram)),
        mcp_calls: None,
        websocket: None,
        kafka: None,
        ml: None,
        alerts: None,
        insights: None,
        anomaly: None,
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        cpus: cpus(),
    })
}
