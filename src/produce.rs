//! `megamind produce`: writes events to a Kafka topic, from a JSON-lines file or the demo
//! generator, at a fixed rate or flat out, and reports what was acknowledged.
//!
//! Each value is one event JSON line as given (malformed lines are sent as they are, so
//! dead-letter handling can be exercised). Events are keyed by `session_id` when they have
//! one (a session's events then share a partition and stay in order) and stamped with their
//! `ts` as the Kafka timestamp (`--timestamp event`) or with the wall clock.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use megamind_connectors::kafka::producer::{producer, send_waiting};
use megamind_connectors::kafka::KafkaConfig;
use megamind_dataflows::model::decode::{decode_event, DecodeLimits};
use megamind_dataflows::time::{pace, Clock, Stopwatch, SystemClock};
use rdkafka::client::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde::Serialize;

use crate::config::DemoConfig;
use crate::demo::DemoTraffic;

/// Where the events come from.
#[derive(Debug, Clone)]
pub enum ProduceInput {
    /// A JSON-lines file (`-`: stdin).
    File(PathBuf),
    /// The demo generator.
    Demo(DemoConfig),
}

/// Which Kafka timestamp each message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimestampSource {
    /// The event's `ts` (the wall clock when it has none or does not decode).
    Event,
    /// The wall clock at sending.
    Now,
}

/// `megamind produce` settings.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Brokers, topic and client settings (`kafka.brokers`, `kafka.client`).
    pub kafka: KafkaConfig,
    /// The topic to write.
    pub topic: String,
    /// The events.
    pub input: ProduceInput,
    /// Events per second; `0` is flat out.
    pub rate: f64,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Kafka timestamps.
    pub timestamp: TimestampSource,
}

/// What `megamind produce` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    /// The topic.
    pub topic: String,
    /// Messages handed to the client.
    pub sent: u64,
    /// Messages acknowledged by the brokers.
    pub acknowledged: u64,
    /// Messages the client gave up on.
    pub failed: u64,
    /// Value bytes sent.
    pub bytes: u64,
    /// Wall time, seconds (until every message was acknowledged).
    pub seconds: f64,
    /// Acknowledged messages per second.
    pub events_per_second: f64,
}

#[derive(Default)]
struct Acks {
    acknowledged: AtomicU64,
    failed: AtomicU64,
}

struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => self.0.acknowledged.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Runs the producer to the end of the input (or the count / duration).
///
/// # Errors
/// The input cannot be read, the producer cannot be created, or a message is refused
/// outright (for example: unknown topic).
pub fn run(options: &ProduceOptions) -> anyhow::Result<ProduceReport> {
    let acks = Arc::new(Acks::default());
    let mut kafka = options.kafka.clone();
    kafka
        .client
        .entry("linger.ms".to_owned())
        .or_insert_with(|| "20".to_owned());
    kafka
        .client
        .entry("batch.size".to_owned())
        .or_insert_with(|| "1000000".to_owned());
    let producer = producer(&kafka, AckContext(Arc::clone(&acks)))?;
    let limits = DecodeLimits::default();
    let clock = SystemClock;
    let stopwatch = Stopwatch::start();
    let mut sent = 0u64;
    let mut bytes = 0u64;
    let limit = options.count.unwrap_or(u64::MAX);
    let mut send = |line: &[u8]| -> anyhow::Result<bool> {
        if sent >= limit || options.duration.is_some_and(|d| stopwatch.elapsed() >= d) {
            return Ok(false);
        }
        let now = clock.now_ms();
        let decoded = decode_event(line, &limits, now).ok();
        let key = decoded
            .as_ref()
            .and_then(|event| event.session_id())
            .map(|id| id.to_string());
        let timestamp = match (options.timestamp, &decoded) {
            (TimestampSource::Event, Some(event)) => event.ts,
            _ => now,
        };
        let mut record = BaseRecord::to(&options.topic)
            .payload(line)
            .timestamp(i64::try_from(timestamp).unwrap_or(i64::MAX));
        if let Some(key) = &key {
            record = record.key(key.as_bytes());
        }
        send_waiting(&producer, record)?;
        sent += 1;
        bytes += line.len() as u64;
        if options.rate > 0.0 {
            // Pace in steps of about 1 ms worth of events.
            let due = Duration::from_secs_f64(sent as f64 / options.rate);
            let elapsed = stopwatch.elapsed();
            if due > elapsed + Duration::from_millis(1) {
                pace(due - elapsed);
            }
        }
        if sent % 8192 == 0 {
            producer.poll(Duration::ZERO);
        }
        Ok(true)
    };
    match &options.input {
        ProduceInput::File(path) => {
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::BufReader::new(std::io::stdin()))
            } else {
                Box::new(std::io::BufReader::with_capacity(
                    1 << 20,
                    std::fs::File::open(path).map_err(|error| {
                        anyhow::anyhow!("cannot open {}: {error}", path.display())
                    })?,
                ))
            };
            for line in reader.split(b'\n') {
                let line = line?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if !send(&line)? {
                    break;
                }
            }
        }
        ProduceInput::Demo(config) => {
            let mut traffic = DemoTraffic::new(config.clone(), clock.now_ms());
            'outer: loop {
                for event in traffic.tick(clock.now_ms(), 1000) {
                    let line = serde_json::to_vec(&event.to_json())?;
                    if !send(&line)? {
                        break 'outer;
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let seconds = stopwatch.elapsed().as_secs_f64();
    let acknowledged = acks.acknowledged.load(Ordering::Relaxed);
    Ok(ProduceReport {
        topic: options.topic.clone(),
        sent,
        acknowledged,
        failed: acks.failed.load(Ordering::Relaxed),
        bytes,
        seconds,
        events_per_second: if seconds > 0.0 {
            acknowledged as f64 / seconds
        } else {
            0.0
        },
    })
}
