//! `megamind bench --mode ml`: predictions at a fixed offered rate (or flat out with
//! `--rate 0`) for 5 models, each followed by its outcome after a random lag of 0–1 s,
//! written as NDJSON into the engine's worker queues (decode, route, join, track: the
//! whole pipeline). Reports:
//!
//! - predictions per second sustained, with the per-model metrics updated by every batch
//!   (the report checks that the final matched count equals the outcomes sent);
//! - outcome → updated accuracy latency: for every batch of outcomes, the time from
//!   handing the batch to the engine to the sink receiving a model snapshot whose
//!   `matched` count includes it;
//! - bytes per pending prediction: RSS growth of a join state holding 1,000,000 pending
//!   predictions (ids like `pred-000123456`, no features), measured in-process.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use megamind_dataflows::model::{Id, MlEvent, PredictionEvent, Update};
use megamind_dataflows::operators::track_models::join::JoinState;
use megamind_dataflows::time::{pace, Clock, Stopwatch, SystemClock};
use serde::Serialize;

use crate::bench::{cpus, latency_histogram, BenchError, BenchOptions, BenchReport, LatencyReport};
use crate::metrics::EngineMetrics;
use crate::runtime::{CountingSink, Engine, EngineConfig, SinkFactory, UpdateSink, WorkerMsg};

/// Models the generator predicts for (the seed's "real-time accuracy for 5 models").
const MODELS: usize = 5;
/// Outcomes follow their prediction after a uniform lag below this.
const MAX_LAG: Duration = Duration::from_secs(1);
/// Pending predictions held for the memory measurement.
const MEMORY_PENDING: u64 = 1_000_000;

/// What the ML mode measured.
#[derive(Debug, Clone, Serialize)]
pub struct MlReport {
    /// Models predicted for.
    pub models: usize,
    /// Predictions sent.
    pub predictions: u64,
    /// Outcomes sent.
    pub outcomes: u64,
    /// Predictions per second over the run (until the engine drained).
    pub predictions_per_second: f64,
    /// Matched pairs in the final snapshots (equals `outcomes` when metrics kept up).
    pub matched: u64,
    /// Outcome batch handed to the engine → snapshot including it at the sink.
    pub outcome_to_accuracy: LatencyReport,
    /// RSS growth per pending prediction in a join state holding 1,000,000 (includes
    /// what the allocator kept of the hash table's earlier, smaller copies).
    pub bytes_per_pending_prediction: Option<f64>,
    /// Heap bytes per pending prediction that the join state holds at 1,000,000 (hash
    /// table buckets, expiry bucket counts; see `JoinState::pending_heap_bytes`).
    pub heap_bytes_per_pending_prediction: f64,
    /// CPU time of the whole process from engine start to shutdown (workers, ingest,
    /// sinks and this generator), seconds.
    pub cpu_seconds: Option<f64>,
    /// CPU time of the generator thread (formatting NDJSON), seconds: not megamind's work.
    pub generator_cpu_seconds: Option<f64>,
    /// Predictions (each with its outcome) per CPU-second of everything but the
    /// generator: the rate two dedicated cores would give, halved.
    pub predictions_per_cpu_second: Option<f64>,
}

/// CPU time (user + system) of the calling thread so far, seconds (Linux
/// `/proc/thread-self/stat`, USER_HZ = 100), if known.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// Appends the decimal digits of `value` (the generator formats millions of numbers;
/// `write!` through `fmt` cost more CPU than some of the engine's stages).
fn push_decimal(buffer: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut position = digits.len();
    loop {
        position -= 1;
        digits[position] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    buffer.extend_from_slice(&digits[position..]);
}

/// Outcomes waiting for their due time: a ring of one bucket per millisecond since the
/// start of the run (O(1) per outcome; a binary heap of `Instant`s, O(log n) comparisons
/// each over hundreds of thousands of waiting outcomes, was the generator's largest cost
/// when flat out). An outcome is sent in the first batch at or after its due millisecond.
#[derive(Debug, Default)]
struct DueOutcomes {
    /// `buckets[k]`: (prediction index, actual label index) due at millisecond `first + k`.
    buckets: VecDeque<Vec<(u64, u8)>>,
    first: u64,
    len: usize,
}

impl DueOutcomes {
    fn push(&mut self, due_ms: u64, index: u64, actual: u8) {
        let offset = usize::try_from(due_ms.saturating_sub(self.first)).unwrap_or(usize::MAX);
        while self.buckets.len() <= offset {
            self.buckets.push_back(Vec::new());
        }
        self.buckets[offset].push((index, actual));
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether an outcome is due at `now_ms`.
    fn any_due(&self, now_ms: u64) -> bool {
        let through = usize::try_from((now_ms + 1).saturating_sub(self.first)).unwrap_or(0);
        self.buckets
            .iter()
            .take(through)
            .any(|bucket| !bucket.is_empty())
    }

    /// Moves the outcomes due at `now_ms` into `out`.
    fn take_due(&mut self, now_ms: u64, out: &mut Vec<(u64, u8)>) {
        while self.first <= now_ms {
            let Some(bucket) = self.buckets.pop_front() else {
                self.first = now_ms + 1;
                break;
            };
            self.len -= bucket.len();
            out.extend(bucket);
            self.first += 1;
        }
    }
}

/// Per model: (outcomes sent through this batch, when the batch was handed over).
type Checkpoints = Arc<Mutex<Vec<VecDeque<(u64, Instant)>>>>;

struct MlSink {
    checkpoints: Checkpoints,
    matched: Arc<Mutex<Vec<u64>>>,
    histogram: Histogram<u64>,
    results: Arc<Mutex<Histogram<u64>>>,
}

fn model_index(model_id: &str) -> Option<usize> {
    model_id.strip_prefix("model-")?.parse().ok()
}

impl UpdateSink for MlSink {
    fn deliver(&mut self, updates: &[Update]) {
        let arrived = Stopwatch::start().started();
        for update in updates {
            let Update::ModelMetrics(snapshot) = update else {
                continue;
            };
            let Some(index) = model_index(&snapshot.model_id) else {
                continue;
            };
            {
                let mut matched = self
                    .matched
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(seen) = matched.get_mut(index) {
                    *seen = (*seen).max(snapshot.matched);
                }
            }
            let mut checkpoints = self
                .checkpoints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(queue) = checkpoints.get_mut(index) else {
                continue;
            };
            while queue
                .front()
                .is_some_and(|(through, _)| *through <= snapshot.matched)
            {
                if let Some((_, sent)) = queue.pop_front() {
                    let micros = arrived.saturating_duration_since(sent).as_micros();
                    let _ = self
                        .histogram
                        .record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
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

/// RSS growth and live heap bytes per pending prediction of a [`JoinState`] holding
/// [`MEMORY_PENDING`].
fn bytes_per_pending() -> (Option<f64>, f64) {
    let before = crate::metrics::rss_bytes();
    let mut join = JoinState::new(24 * 3_600_000, 10);
    let mut out = Vec::new();
    let labels: [Id; 3] = ["approve".into(), "review".into(), "reject".into()];
    for index in 0..MEMORY_PENDING {
        join.apply(
            1_700_000_000_000 + index,
            MlEvent::Prediction(PredictionEvent {
                model_id: "model-0".into(),
                model_version: Some("v1".into()),
                prediction_id: format!("pred-{index:09}").into(),
                predicted: labels[(index % 3) as usize].clone(),
                confidence: 0.5,
                latency_ms: 1.0,
                features: Vec::new(),
                session_id: None,
            }),
            &mut out,
        );
        join.flush(&mut out);
        out.clear();
    }
    let after = crate::metrics::rss_bytes();
    let pending = (join.pending() as f64).max(1.0);
    let heap = join.pending_heap_bytes() as f64 / pending;
    drop(join);
    let rss = before
        .zip(after)
        .map(|(before, after)| after.saturating_sub(before) as f64 / pending);
    (rss, heap)
}

/// Runs the ML mode.
///
/// # Errors
/// The engine failed.
pub fn run(engine_config: EngineConfig, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let (bytes_per_pending_prediction, heap_bytes_per_pending_prediction) = bytes_per_pending();
    let metrics = Arc::new(EngineMetrics::default());
    let checkpoints: Checkpoints = Arc::new(Mutex::new(vec![VecDeque::new(); MODELS]));
    let matched = Arc::new(Mutex::new(vec![0u64; MODELS]));
    let results = Arc::new(Mutex::new(latency_histogram()));
    let workers = engine_config.workers;
    let (sink_checkpoints, sink_matched, sink_results, sink_metrics) = (
        Arc::clone(&checkpoints),
        Arc::clone(&matched),
        Arc::clone(&results),
        Arc::clone(&metrics),
    );
    let factory: SinkFactory = Arc::new(move |_worker| {
        Box::new(CountingSink::new(
            MlSink {
                checkpoints: Arc::clone(&sink_checkpoints),
                matched: Arc::clone(&sink_matched),
                histogram: latency_histogram(),
                results: Arc::clone(&sink_results),
            },
            Arc::clone(&sink_metrics),
        ))
    });
    let cpu_before = crate::metrics::process_cpu_seconds();
    let generator_before = thread_cpu_seconds();
    let engine = Engine::start(engine_config, factory, Arc::clone(&metrics))
        .map_err(|e| BenchError::Engine(e.to_string()))?;
    let feeder = engine.feeder();
    let local = feeder.workers().max(1);
    let clock = SystemClock;
    let stopwatch = Stopwatch::start();
    let mut sent = 0u64;
    let mut outcomes = 0u64;
    let mut outcomes_per_model = [0u64; MODELS];
    let mut due_outcomes = DueOutcomes::default();
    let mut releasing: Vec<(u64, u8)> = Vec::new();
    let mut worker = 0usize;
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const LABELS: [&str; 3] = ["approve", "review", "reject"];
    // Confidence is 0.5 + k/1000 (k < 500): formatted once, as `{}` of the f64 would.
    let confidences: Vec<String> = (0..500u64)
        .map(|k| format!("{}", 0.5 + k as f64 / 1000.0))
        .collect();
    let mut now_text = Vec::new();
    let lag_micros = u64::try_from(MAX_LAG.as_micros())
        .unwrap_or(1_000_000)
        .max(1);
    let generating = |elapsed: Duration| elapsed < options.duration;
    loop {
        let elapsed = stopwatch.elapsed();
        let now_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        if !generating(elapsed) && due_outcomes.is_empty() {
            break;
        }
        let due = if !generating(elapsed) {
            sent
        } else if options.rate == 0 {
            sent + 4096
        } else {
            (elapsed.as_secs_f64() * options.rate as f64) as u64
        };
        let outcomes_due = due_outcomes.any_due(now_ms);
        if due <= sent && !outcomes_due {
            pace(Duration::from_micros(200));
            continue;
        }
        let now = clock.now_ms();
        now_text.clear();
        push_decimal(&mut now_text, now);
        buffer.clear();
        for index in sent..due {
            let random = next();
            let model = (index % MODELS as u64) as usize;
            let predicted = (random % 3) as usize;
            // 85% right.
            let actual = if (random >> 8) % 100 < 85 {
                predicted
            } else {
                ((random >> 16) % 3) as usize
            };
            let confidence = &confidences[((random >> 24) % 500) as usize];
            let latency = 1 + (random >> 40) % 50;
            // {"type":"prediction","ts":…,"model_id":"model-…","model_version":"v1",
            //  "prediction_id":"p…","predicted":"…","confidence":…,"latency_ms":…}
            buffer.extend_from_slice(br#"{"type":"prediction","ts":"#);
            buffer.extend_from_slice(&now_text);
            buffer.extend_from_slice(br#","model_id":"model-"#);
            push_decimal(&mut buffer, model as u64);
            buffer.extend_from_slice(br#"","model_version":"v1","prediction_id":"p"#);
            push_decimal(&mut buffer, index);
            buffer.extend_from_slice(br#"","predicted":""#);
            buffer.extend_from_slice(LABELS[predicted].as_bytes());
            buffer.extend_from_slice(br#"","confidence":"#);
            buffer.extend_from_slice(confidence.as_bytes());
            buffer.extend_from_slice(br#","latency_ms":"#);
            push_decimal(&mut buffer, latency);
            buffer.extend_from_slice(b"}\n");
            let lag_ms = ((random >> 4) % lag_micros).div_ceil(1000);
            due_outcomes.push(now_ms + lag_ms, index, actual as u8);
        }
        sent = sent.max(due);
        let mut touched = [false; MODELS];
        due_outcomes.take_due(now_ms, &mut releasing);
        for (index, actual) in releasing.drain(..) {
            let model = (index % MODELS as u64) as usize;
            buffer.extend_from_slice(br#"{"type":"outcome","ts":"#);
            buffer.extend_from_slice(&now_text);
            buffer.extend_from_slice(br#","prediction_id":"p"#);
            push_decimal(&mut buffer, index);
            buffer.extend_from_slice(br#"","actual":""#);
            buffer.extend_from_slice(LABELS[usize::from(actual)].as_bytes());
            buffer.extend_from_slice(b"\"}\n");
            outcomes += 1;
            outcomes_per_model[model] += 1;
            touched[model] = true;
        }
        // The next chunk starts with room for about this one's size: grown from 64 KiB by
        // doubling, each chunk was copied several times into fresh pages.
        let next_capacity = (buffer.len() + buffer.len() / 4).max(1 << 16);
        let chunk = std::mem::replace(&mut buffer, Vec::with_capacity(next_capacity));
        let handed = Stopwatch::start().started();
        {
            let mut checkpoints = checkpoints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (model, touched) in touched.iter().enumerate() {
                if *touched {
                    checkpoints[model].push_back((outcomes_per_model[model], handed));
                }
            }
        }
        feeder
            .blocking_send(
                worker,
                WorkerMsg::Lines {
                    chunk,
                    default_ts: now,
                },
            )
            .map_err(|e| BenchError::Engine(e.to_string()))?;
        worker = (worker + 1) % local;
    }
    drop(feeder);
    engine.shutdown().map_err(BenchError::Engine)?;
    let elapsed = stopwatch.elapsed().as_secs_f64();
    let cpu_seconds = crate::metrics::process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let generator_cpu_seconds = thread_cpu_seconds()
        .zip(generator_before)
        .map(|(after, before)| after - before);
    let predictions_per_cpu_second = cpu_seconds
        .zip(generator_cpu_seconds)
        .map(|(all, generator)| all - generator)
        .filter(|engine| *engine > 0.0)
        .map(|engine| sent as f64 / engine);
    let processed = metrics
        .events_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let histogram = results
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let matched_total: u64 = matched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .sum();
    let per_second = |count: u64| {
        if elapsed > 0.0 {
            count as f64 / elapsed
        } else {
            0.0
        }
    };
    Ok(BenchReport {
        alerts: None,
        insights: None,
        anomaly: None,
        kafka: None,
        mode: "ml",
        workers,
        offered_rate: options.rate,
        events_sent: sent + outcomes,
        events_processed: processed,
        elapsed_seconds: elapsed,
        events_per_second: per_second(processed),
        window_results: metrics.updates_of("window"),
        window_close_to_sink: None,
        mcp_calls: None,
        websocket: None,
        ml: Some(MlReport {
            models: MODELS,
            predictions: sent,
            outcomes,
            predictions_per_second: per_second(sent),
            matched: matched_total,
            outcome_to_accuracy: LatencyReport::from(&histogram),
            bytes_per_pending_prediction,
            heap_bytes_per_pending_prediction,
            cpu_seconds,
            generator_cpu_seconds,
            predictions_per_cpu_second,
        }),
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        cpus: cpus(),
    })
}

#[cfg(test)]
mod tests {
    use super::{push_decimal, DueOutcomes};

    #[test]
    fn due_outcomes_come_out_at_their_millisecond() {
        let mut due = DueOutcomes::default();
        due.push(3, 30, 0);
        due.push(1, 10, 1);
        due.push(3, 31, 2);
        let mut out = Vec::new();
        assert!(!due.any_due(0));
        due.take_due(0, &mut out);
        assert!(out.is_empty());
        assert!(due.any_due(2));
        due.take_due(2, &mut out);
        assert_eq!(out, vec![(10, 1)]);
        due.push(2, 20, 0); // already past: due at once
        due.take_due(5, &mut out);
        assert_eq!(out, vec![(10, 1), (30, 0), (31, 2), (20, 0)]);
        assert!(due.is_empty());
        due.take_due(9, &mut out);
        due.push(4, 40, 0);
        assert!(due.any_due(10));
    }

    #[test]
    fn push_decimal_writes_what_display_writes() {
        for value in [0u64, 7, 10, 1_700_000_000_123, u64::MAX] {
            let mut buffer = b"x".to_vec();
            push_decimal(&mut buffer, value);
            assert_eq!(buffer, format!("x{value}").into_bytes());
        }
    }
}
