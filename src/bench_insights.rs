//! `megamind bench --mode insights`: the session success model under load.
//!
//! Two measurements:
//!
//! - **Prediction latency** (in-process, no I/O): a success model is trained on 2,000
//!   generated sessions (the same known rule as the tests: troubled sessions err often and
//!   mostly fail), then each of `--keys` running sessions is scored one at a time through
//!   the operator's pure core (`Predictor::step` with one snapshot: feature extraction,
//!   the logistic model, the completion estimate over the remembered sessions, the
//!   tracked-prediction record). Each call is timed into an hdrhistogram. Also reported:
//!   the time of one (re)training on 2,000 sessions.
//! - **Update throughput** (the whole engine): session events at the offered rate (or
//!   flat out with `--rate 0`) as NDJSON into the worker queues, with every insight
//!   operator on; reports events/s accepted and session predictions delivered per second.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use megamind_dataflows::model::{SessionState, SessionStatus, Update};
use megamind_dataflows::operators::predict_sessions::{PredictConfig, Predictor};
use megamind_dataflows::time::{pace, Clock, Stopwatch, SystemClock};
use serde::Serialize;

use crate::bench::{cpus, latency_histogram, BenchError, BenchOptions, BenchReport, LatencyReport};
use crate::metrics::EngineMetrics;
use crate::runtime::{CountingSink, Engine, EngineConfig, SinkFactory, UpdateSink, WorkerMsg};

/// Ended sessions the model is trained on before scoring.
const TRAINING_SESSIONS: u64 = 2_000;

/// What the insights mode measured.
#[derive(Debug, Clone, Serialize)]
pub struct InsightsReport {
    /// Sessions scored one at a time.
    pub scored: u64,
    /// Per-session prediction latency (one snapshot through the predictor core).
    pub prediction_latency: LatencyReport,
    /// One training of the model on the remembered sessions, microseconds.
    pub training_us: u64,
    /// Training accuracy of that model.
    pub training_accuracy: f64,
    /// Session predictions delivered by the engine run.
    pub session_predictions: u64,
    /// Session predictions per second in the engine run.
    pub session_predictions_per_second: f64,
    /// Success-model versions trained during the engine run.
    pub models_trained: u64,
}

/// A deterministic xorshift source.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A generated session snapshot: `(state, succeeded)`.
fn snapshot(index: u64, rng: &mut Xorshift, ended: bool) -> (SessionState, bool) {
    let troubled = rng.unit() < 0.3;
    let error_rate = if troubled { 0.6 } else { 0.05 };
    let operations = 4 + rng.next() % 8;
    let errors = (0..operations).filter(|_| rng.unit() < error_rate).count() as u64;
    let failed = if troubled {
        rng.unit() < 0.9
    } else {
        rng.unit() < 0.05
    };
    let status = match (ended, failed) {
        (false, _) => SessionStatus::Active,
        (true, true) => SessionStatus::Failed,
        (true, false) => SessionStatus::Completed,
    };
    let started = 1_700_000_000_000 + index * 1_000;
    let state = SessionState {
        session_id: format!("bench-{index}").into(),
        user_id: None,
        status,
        started_at: started,
        last_activity: started + operations * 1_000,
        ended_at: ended.then_some(started + operations * 1_000),
        operations,
        errors,
        error_rate: errors as f64 / operations as f64,
        tokens: 100 * operations,
        duration_mean_ms: Some(250.0),
        duration_p95_ms: Some(400.0),
        last_operation: None,
        last_error: None,
        events: operations + 2,
    };
    (state, !failed)
}

struct CountSink {
    predictions: Arc<AtomicU64>,
    models: Arc<AtomicU64>,
}

impl UpdateSink for CountSink {
    fn deliver(&mut self, updates: &[Update]) {
        for update in updates {
            match update {
                Update::SessionPrediction(_) => {
                    self.predictions.fetch_add(1, Ordering::Relaxed);
                }
                Update::SuccessModel(_) => {
                    self.models.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    fn finish(&mut self) {}
}

/// Runs the insights mode.
///
/// # Errors
/// The engine failed.
pub fn run(engine_config: EngineConfig, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    // 1. The predictor core, one session at a time.
    let config = PredictConfig::default();
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let mut predictor = Predictor::default();
    let training: Vec<SessionState> = (0..TRAINING_SESSIONS)
        .map(|index| snapshot(index, &mut rng, true).0)
        .collect();
    let trained = Stopwatch::start();
    // Ended sessions are recorded, then the first training runs (initial), in one step.
    let first = predictor.step(training, 1, false, &config);
    let training_us = u64::try_from(trained.elapsed().as_micros()).unwrap_or(u64::MAX);
    let training_accuracy = first
        .updates
        .iter()
        .find_map(|update| match update {
            Update::SuccessModel(report) => Some(report.training_accuracy),
            _ => None,
        })
        .unwrap_or(0.0);
    let scored = options.keys.max(1) as u64;
    let mut histogram = latency_histogram();
    for index in 0..scored {
        let (state, _) = snapshot(TRAINING_SESSIONS + index, &mut rng, false);
        let call = Stopwatch::start();
        let out = predictor.step(vec![state], 2 + index, false, &config);
        let micros = u64::try_from(call.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = histogram.record(micros.max(1));
        std::hint::black_box(out);
    }

    // 2. The engine, session events at the offered rate.
    let metrics = Arc::new(EngineMetrics::default());
    let predictions = Arc::new(AtomicU64::new(0));
    let models = Arc::new(AtomicU64::new(0));
    let workers = engine_config.workers;
    let (sink_predictions, sink_models, sink_metrics) = (
        Arc::clone(&predictions),
        Arc::clone(&models),
        Arc::clone(&metrics),
    );
    let factory: SinkFactory = Arc::new(move |_worker| {
        Box::new(CountingSink::new(
            CountSink {
                predictions: Arc::clone(&sink_predictions),
                models: Arc::clone(&sink_models),
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
    let mut worker = 0usize;
    // Sessions in flight: (id, operations left, error rate, fails).
    let mut live: Vec<(u64, u64, f64, bool)> = Vec::new();
    let mut next_session = 0u64;
    loop {
        let elapsed = stopwatch.elapsed();
        if elapsed >= options.duration {
            break;
        }
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
        let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
        for _ in sent..due {
            while live.len() < 200 {
                let troubled = rng.unit() < 0.3;
                let fails = if troubled {
                    rng.unit() < 0.9
                } else {
                    rng.unit() < 0.05
                };
                live.push((
                    next_session,
                    4 + rng.next() % 8,
                    if troubled { 0.6 } else { 0.05 },
                    fails,
                ));
                let _ = writeln!(
                    buffer,
                    r#"{{"type":"session","ts":{now},"session_id":"b{next_session}","kind":"started"}}"#
                );
                next_session += 1;
            }
            let position = (rng.next() % live.len() as u64) as usize;
            let (id, left, error_rate, fails) = live[position];
            if left == 0 {
                let kind = if fails { "failed" } else { "completed" };
                let _ = writeln!(
                    buffer,
                    r#"{{"type":"session","ts":{now},"session_id":"b{id}","kind":"{kind}"}}"#
                );
                live.swap_remove(position);
            } else {
                let ok = rng.unit() >= error_rate;
                let _ = writeln!(
                    buffer,
                    r#"{{"type":"session","ts":{now},"session_id":"b{id}","kind":"operation","operation":"edit","duration_ms":250,"tokens":100,"success":{ok}}}"#
                );
                live[position].1 -= 1;
            }
        }
        sent = due;
        feeder
            .blocking_send(
                worker,
                WorkerMsg::Lines {
                    chunk: buffer,
                    default_ts: now,
                },
            )
            .map_err(|e| BenchError::Engine(e.to_string()))?;
        worker = (worker + 1) % local;
    }
    drop(feeder);
    engine.shutdown().map_err(BenchError::Engine)?;
    let elapsed = stopwatch.elapsed().as_secs_f64();
    let processed = metrics.events_accepted.load(Ordering::Relaxed);
    let delivered = predictions.load(Ordering::Relaxed);
    let per_second = |count: u64| {
        if elapsed > 0.0 {
            count as f64 / elapsed
        } else {
            0.0
        }
    };
    Ok(BenchReport {
        alerts: None,
        anomaly: None,
        kafka: None,
        mode: "insights",
        workers,
        offered_rate: options.rate,
        events_sent: sent,
        events_processed: processed,
        elapsed_seconds: elapsed,
        events_per_second: per_second(processed),
        window_results: metrics.updates_of("window"),
        window_close_to_sink: None,
        mcp_calls: None,
        websocket: None,
        ml: None,
        insights: Some(InsightsReport {
            scored,
            prediction_latency: LatencyReport::from(&histogram),
            training_us,
            training_accuracy,
            session_predictions: delivered,
            session_predictions_per_second: per_second(delivered),
            models_trained: models.load(Ordering::Relaxed),
        }),
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        cpus: cpus(),
    })
}
