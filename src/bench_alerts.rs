//! `megamind bench --mode alerts`: N rules over M keys with breaches injected.
//!
//! The generator is `pipeline`'s (NDJSON metric events stamped with the wall clock, offered
//! at `--rate` into the engine's worker queues), with one change: each key breaches in a
//! 2-second burst every 40 seconds (staggered by key), value 200 instead of 20–99. Rule
//! `i` watches key `i mod M` (`max > 150`), so every rule fires at its key's first burst.
//! With windows longer than the 40-second burst period (1 min) a key's window always holds
//! a burst after that, so its alert stays firing; with shorter ones it resolves when the
//! burst leaves the window and fires again at the next. The workers' sinks offer alert changes to
//! the real dispatcher (routing, grouping with `group_wait = 0`) and notifier (the `log`
//! channel, at tracing's default level for the bench: off unless `RUST_LOG` says otherwise).
//! Latency: from the moment the watermark of every worker passed the end of the deciding
//! window (the generator sent the event that moved it) to the moment the dispatcher handed
//! the firing notification to its channel.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use megamind_connectors::notify::route::{
    run_dispatcher, DispatchHandle, DispatchOptions, RoutingConfig,
};
use megamind_connectors::notify::{Notifier, NotifyConfig};
use megamind_dataflows::model::{Aggregate, AlertStatus, BreachRule, Comparison, Severity, Update};
use megamind_dataflows::operators::RuleSet;
use megamind_dataflows::time::{duration_ms, pace, Clock, Stopwatch, SystemClock};
use megamind_dataflows::Time;
use serde::Serialize;

use crate::bench::{
    cpus, latency_histogram, BenchError, BenchOptions, BenchReport, CloseTimes, LatencyReport,
};
use crate::metrics::EngineMetrics;
use crate::runtime::{CountingSink, Engine, EngineConfig, SinkFactory, UpdateSink, WorkerMsg};

/// What the alert path did.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsReport {
    /// Rules.
    pub rules: usize,
    /// Keys (series).
    pub keys: usize,
    /// Firing transitions that reached the sinks.
    pub alerts_fired: u64,
    /// Notifications handed to channels.
    pub notifications: u64,
    /// Alert changes dropped on the dispatcher's full queue.
    pub dispatch_dropped: u64,
    /// Rule checks per second (closed windows × rules watching their series).
    pub rule_evaluations_per_second: f64,
    /// Window close → firing notification handed to its channel.
    pub window_close_to_notification: LatencyReport,
    /// Per window close that raised alerts, its slowest notification: `count` is the
    /// closes, and since a close's alerts are a few percent of a run's samples, the
    /// overall p99 is about the worst of these.
    pub slowest_per_close: LatencyReport,
}

struct AlertSink {
    dispatch: DispatchHandle,
    fired: Arc<AtomicU64>,
}

impl UpdateSink for AlertSink {
    fn deliver(&mut self, _updates: &[Update]) {}

    fn deliver_at(&mut self, _time: Time, updates: &[Update]) {
        let records = updates.iter().filter_map(|update| match update {
            Update::AlertRecord(record) => Some(&**record),
            _ => None,
        });
        let firing = records
            .clone()
            .filter(|record| record.status == AlertStatus::Firing)
            .count();
        self.fired.fetch_add(firing as u64, Ordering::Relaxed);
        self.dispatch.offer_all(records);
    }
}

fn rules(count: usize, keys: usize) -> RuleSet {
    RuleSet::new(
        (0..count)
            .map(|position| BreachRule {
                id: format!("bench_{position}").into(),
                metric: "bench.latency_ms".into(),
                labels: vec![("key".into(), format!("k{}", position % keys).into())],
                aggregate: Aggregate::Max,
                op: Comparison::Above,
                threshold: 150.0,
                severity: Severity::High,
                min_count: 1,
                for_duration: Duration::ZERO,
                keep_firing_for: Duration::ZERO,
                cooldown: std::time::Duration::ZERO,
                forecast: None,
                summary: None,
                annotations: Default::default(),
            })
            .collect(),
    )
}

/// Runs the alerts bench.
///
/// # Errors
/// The engine or the runtime failed to start.
pub fn run(
    mut engine_config: EngineConfig,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    let keys = options.keys.max(1);
    engine_config.analytics.rules = rules(options.rules, keys);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Engine(e.to_string()))?;
    let _entered = runtime.enter();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let notifier = Arc::new(Notifier::start(
        &NotifyConfig::default(),
        Arc::clone(&clock),
    ));
    let closes: CloseTimes = Arc::new(Mutex::new(BTreeMap::new()));
    // Every firing notification's latency, and per window end the slowest of its close
    // (microseconds).
    let latencies = Arc::new(Mutex::new((
        latency_histogram(),
        BTreeMap::<u64, u64>::new(),
    )));
    let hook_closes = Arc::clone(&closes);
    let hook_latencies = Arc::clone(&latencies);
    let routing = RoutingConfig {
        group_wait: Duration::ZERO,
        group_interval: Duration::ZERO,
        ..RoutingConfig::default()
    };
    let (dispatch, dispatcher) = run_dispatcher(
        routing,
        None,
        1 << 16,
        Arc::clone(&notifier),
        Arc::clone(&clock),
        DispatchOptions {
            on_handoff: Some(Arc::new(move |notification| {
                let handed = Stopwatch::start().started();
                let closes = hook_closes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut latencies = hook_latencies
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (histogram, slowest) = &mut *latencies;
                for alert in &notification.alerts {
                    if alert.status != AlertStatus::Firing {
                        continue;
                    }
                    if let Some(closed) = closes.get(&alert.updated_at) {
                        let micros = handed.saturating_duration_since(*closed).as_micros();
                        let micros = u64::try_from(micros).unwrap_or(u64::MAX);
                        let _ = histogram.record(micros);
                        let worst = slowest.entry(alert.updated_at).or_insert(0);
                        *worst = (*worst).max(micros);
                    }
                }
            })),
            ..DispatchOptions::default()
        },
    );
    let metrics = Arc::new(EngineMetrics::default());
    let fired = Arc::new(AtomicU64::new(0));
    let slide = duration_ms(engine_config.analytics.windows.slide).max(1);
    let lateness = duration_ms(engine_config.allowed_lateness);
    let workers = engine_config.workers;
    let sink_dispatch = dispatch.clone();
    let sink_fired = Arc::clone(&fired);
    let sink_metrics = Arc::clone(&metrics);
    let factory: SinkFactory = Arc::new(move |_worker| {
        Box::new(CountingSink::new(
            AlertSink {
                dispatch: sink_dispatch.clone(),
                fired: Arc::clone(&sink_fired),
            },
            Arc::clone(&sink_metrics),
        ))
    });
    let engine = Engine::start(engine_config, factory, Arc::clone(&metrics))
        .map_err(|e| BenchError::Engine(e.to_string()))?;
    let feeder = engine.feeder();
    let local = feeder.workers().max(1);
    let stopwatch = Stopwatch::start();
    let (mut sent, mut closed_through, mut worker) = (0u64, 0u64, 0usize);
    let mut max_sent = vec![0u64; local];
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while stopwatch.elapsed() < options.duration {
        let due = if options.rate == 0 {
            sent + 4096
        } else {
            (stopwatch.elapsed().as_secs_f64() * options.rate as f64) as u64
        };
        if due <= sent {
            pace(Duration::from_micros(200));
            continue;
        }
        let now = clock.now_ms();
        let second = now / 1000;
        buffer.clear();
        for _ in sent..due {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = state % keys as u64;
            let bursting = (second + key * 7) % 40 < 2;
            let value = if bursting {
                200
            } else {
                20 + (state >> 32) % 80
            };
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
    // Let the dispatcher hand over what the last windows raised.
    let settle = Stopwatch::start();
    while dispatch.metrics().received.load(Ordering::Relaxed)
        > dispatch.metrics().notifications.load(Ordering::Relaxed)
        && settle.elapsed() < Duration::from_secs(5)
    {
        pace(Duration::from_millis(10));
    }
    let notifications = dispatch.metrics().notifications.load(Ordering::Relaxed);
    let dispatch_dropped = dispatch.metrics().dropped.load(Ordering::Relaxed);
    drop(dispatch);
    dispatcher.abort();
    let processed = metrics.events_accepted.load(Ordering::Relaxed);
    let windows = metrics.updates_of("window");
    let rules_per_key = options.rules as f64 / keys as f64;
    let (histogram, slowest): (Histogram<u64>, BTreeMap<u64, u64>) = latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut per_close = latency_histogram();
    for worst in slowest.values() {
        let _ = per_close.record(*worst);
    }
    Ok(BenchReport {
        kafka: None,
        ml: None,
        mode: "alerts",
        workers,
        offered_rate: options.rate,
        events_sent: sent,
        events_processed: processed,
        elapsed_seconds: elapsed,
        events_per_second: processed as f64 / elapsed.max(f64::EPSILON),
        window_results: windows,
        window_close_to_sink: None,
        mcp_calls: None,
        websocket: None,
        insights: None,
        alerts: Some(AlertsReport {
            rules: options.rules,
            keys,
            alerts_fired: fired.load(Ordering::Relaxed),
            notifications,
            dispatch_dropped,
            rule_evaluations_per_second: windows as f64 * rules_per_key / elapsed.max(f64::EPSILON),
            window_close_to_notification: LatencyReport::from(&histogram),
            slowest_per_close: LatencyReport::from(&per_close),
        }),
        anomaly: None,
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        cpus: cpus(),
    })
}
