//! `megamind bench --mode kafka`: workload P1 (or any JSON-lines file) through Kafka.
//!
//! The file is first written to a topic of `--partitions` partitions (keyed by session, the
//! event's `ts` as timestamp), then the engine consumes it through the real Kafka source
//! (consumer threads, per-partition event time, results store, rewind commits) while the
//! harness samples lag. Without `--brokers` the broker is librdkafka's in-process mock
//! cluster, which is fast enough to show what megamind itself sustains; with `--brokers`
//! the numbers are those of that broker and megamind together.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use megamind_connectors::kafka::producer::{producer, send_waiting};
use megamind_connectors::kafka::KafkaConfig;
use megamind_dataflows::model::decode::{decode_event, DecodeLimits};
use megamind_dataflows::model::Update;
use megamind_dataflows::time::{pace, Clock, Stopwatch, SystemClock};
use rdkafka::client::ClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde::Serialize;

use crate::bench::{cpus, BenchError, BenchOptions, BenchReport};
use crate::config::Config;
use crate::kafka::KafkaRuntime;
use crate::metrics::EngineMetrics;
use crate::runtime::{CountingSink, Engine, EngineConfig, SinkFactory, UpdateSink};

/// What the Kafka mode measured.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaBenchReport {
    /// `librdkafka mock cluster (in-process)` or the brokers given.
    pub broker: String,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Messages written.
    pub messages: u64,
    /// Producer rate (acknowledged messages per second).
    pub produce_per_second: f64,
    /// Consumed, decoded and aggregated events per second, from the first applied message
    /// to the last.
    pub consumed_per_second: f64,
    /// Largest total lag sampled while consuming (messages).
    pub max_total_lag: i64,
    /// Whether results went to the results store (exactly-once path).
    pub results_store: bool,
    /// Events rejected, by reason (late: behind their partition's newest time).
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    /// Times a worker waited for the results store writer.
    pub results_store_waits: u64,
    /// CPU seconds this process used while consuming (consumer threads, workers, results
    /// store, and the in-process mock broker when there is no `--brokers`).
    pub consume_cpu_seconds: Option<f64>,
    /// Events consumed per CPU second: what the consuming side costs, independent of how
    /// busy the machine was.
    pub events_per_cpu_second: Option<f64>,
}

struct NullSink;

impl UpdateSink for NullSink {
    fn deliver(&mut self, _updates: &[Update]) {}
}

#[derive(Default)]
struct Acks(AtomicU64, AtomicU64);

struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => self.0 .0.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0 .1.fetch_add(1, Ordering::Relaxed),
        };
    }
}

const TOPIC: &str = "megamind-bench";

/// Runs the Kafka mode.
///
/// # Errors
/// No `--file`, the broker or topic cannot be set up, the engine fails.
pub fn run(
    config: &Config,
    mut engine_config: EngineConfig,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    let file = options.file.clone().ok_or(BenchError::MissingFile)?;
    let engine_error = |error: String| BenchError::Engine(error);
    // librdkafka's mock broker keeps about 100,000 messages per partition and drops older
    // ones: spread a large file over enough partitions that nothing is dropped.
    let lines = std::fs::read(&file)
        .map_err(|error| engine_error(format!("{}: {error}", file.display())))?
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .count();
    let wanted = if options.brokers.is_some() {
        options.partitions
    } else {
        options.partitions.max(lines.div_ceil(80_000))
    };
    let partitions = i32::try_from(wanted.max(1)).unwrap_or(4);
    let mock = match &options.brokers {
        Some(_) => None,
        None => {
            let mock = MockCluster::new(1).map_err(|error| engine_error(error.to_string()))?;
            mock.create_topic(TOPIC, partitions, 1)
                .map_err(|error| engine_error(error.to_string()))?;
            Some(mock)
        }
    };
    let brokers = match (&options.brokers, &mock) {
        (Some(brokers), _) => brokers.clone(),
        (None, Some(mock)) => mock.bootstrap_servers(),
        (None, None) => return Err(engine_error("no broker".into())),
    };
    let kafka = KafkaConfig {
        enabled: true,
        brokers: brokers.clone(),
        topics: vec![TOPIC.to_owned()],
        group_id: format!("megamind-bench-{}", std::process::id()),
        ..config.kafka.clone()
    };

    // Produce the file.
    let acks = Arc::new(Acks::default());
    let sender = producer(&kafka, AckContext(Arc::clone(&acks)))
        .map_err(|error| engine_error(error.to_string()))?;
    let reader = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(&file)
            .map_err(|error| engine_error(format!("{}: {error}", file.display())))?,
    );
    let limits = DecodeLimits::default();
    let produce_clock = Stopwatch::start();
    let mut messages = 0u64;
    for line in reader.split(b'\n') {
        let line = line.map_err(|error| engine_error(error.to_string()))?;
        if line.is_empty() {
            continue;
        }
        let event = decode_event(&line, &limits, 0).ok();
        let key = event
            .as_ref()
            .and_then(|event| event.session_id())
            .map(|id| id.to_string())
            .unwrap_or_default();
        let timestamp = event.as_ref().map_or(0, |event| event.ts);
        let record = BaseRecord::to(TOPIC)
            .key(key.as_bytes())
            .payload(&line[..])
            .timestamp(i64::try_from(timestamp).unwrap_or(0));
        send_waiting(&sender, record).map_err(|error| engine_error(error.to_string()))?;
        messages += 1;
    }
    sender
        .flush(Duration::from_secs(120))
        .map_err(|error| engine_error(error.to_string()))?;
    let produce_seconds = produce_clock.elapsed().as_secs_f64();
    drop(sender);

    // Consume it.
    let directory =
        std::env::temp_dir().join(format!("megamind-bench-kafka-{}", std::process::id()));
    let mut job = config.clone();
    job.kafka = kafka;
    job.kafka.idle_after = Duration::from_secs(3600);
    // The results store (exact results after a crash) is on unless the configuration
    // turns the store off (`MEGAMIND__STORE__ENABLED=false`: consume and aggregate only).
    let results_store = job.store.enabled;
    job.store.path = directory.join("megamind.db");
    let workers = engine_config.workers;
    let (mut runtime, inputs) =
        KafkaRuntime::prepare(&job, 0, workers, workers, None).map_err(engine_error)?;
    engine_config.kafka = Some(inputs);
    let metrics = Arc::new(EngineMetrics::default());
    let sink_metrics = Arc::clone(&metrics);
    let parts = runtime.sink_parts();
    let factory: SinkFactory = Arc::new(move |worker| {
        parts.wrap(
            worker,
            Box::new(CountingSink::new(NullSink, Arc::clone(&sink_metrics))),
        )
    });
    let engine = Engine::start(engine_config, factory, Arc::clone(&metrics))
        .map_err(|error| engine_error(error.to_string()))?;
    runtime
        .start_source(&job, engine.feeder(), Arc::new(SystemClock))
        .map_err(engine_error)?;
    let clock = SystemClock;
    let deadline = clock.now_ms() + 600_000;
    let cpu_before = crate::metrics::process_cpu_seconds();
    let mut first: Option<(Stopwatch, i64)> = None;
    let mut max_lag = 0i64;
    let consumed_seconds;
    let applied_total;
    loop {
        let status = runtime.status();
        let applied: i64 = status.partitions.iter().map(|p| p.processed_offset).sum();
        max_lag = max_lag.max(status.total_lag);
        if first.is_none() && applied > 0 {
            first = Some((Stopwatch::start(), applied));
        }
        if applied >= i64::try_from(messages).unwrap_or(i64::MAX) {
            let (started, at) = first.unwrap_or((Stopwatch::start(), 0));
            consumed_seconds = started.elapsed().as_secs_f64();
            applied_total = applied - at;
            break;
        }
        if clock.now_ms() > deadline {
            return Err(engine_error(format!(
                "consumed {applied} of {messages} in 10 minutes"
            )));
        }
        pace(Duration::from_millis(5));
    }
    let consume_cpu_seconds = crate::metrics::process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let results_store_waits = runtime.results_store_waits();
    let consumed: u64 = runtime
        .status()
        .partitions
        .iter()
        .map(|partition| partition.consumed)
        .sum();
    runtime.stop_source();
    engine.shutdown().map_err(engine_error)?;
    runtime.close();
    let _ = std::fs::remove_dir_all(&directory);
    if consumed != messages {
        return Err(engine_error(format!(
            "read {consumed} of {messages} messages (the broker dropped the rest: retention)"
        )));
    }
    let consumed_per_second = if consumed_seconds > 0.0 {
        applied_total as f64 / consumed_seconds
    } else {
        0.0
    };
    Ok(BenchReport {
        alerts: None,
        insights: None,
        anomaly: None,
        ml: None,
        mode: "kafka",
        workers,
        offered_rate: 0,
        events_sent: messages,
        events_processed: metrics.events_accepted.load(Ordering::Relaxed),
        elapsed_seconds: consumed_seconds,
        events_per_second: consumed_per_second,
        window_results: metrics.updates_of("window"),
        window_close_to_sink: None,
        mcp_calls: None,
        websocket: None,
        kafka: Some(KafkaBenchReport {
            broker: match &options.brokers {
                Some(brokers) => brokers.clone(),
                None => "librdkafka mock cluster (in-process)".to_owned(),
            },
            partitions,
            messages,
            produce_per_second: acks.0.load(Ordering::Relaxed) as f64 / produce_seconds.max(1e-9),
            consumed_per_second,
            max_total_lag: max_lag,
            results_store,
            rejected: metrics.rejected_by_reason(),
            results_store_waits,
            consume_cpu_seconds,
            events_per_cpu_second: consume_cpu_seconds
                .filter(|seconds| *seconds > 0.0)
                .map(|seconds| messages as f64 / seconds),
        }),
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        cpus: cpus(),
    })
}
