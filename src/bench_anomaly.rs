//! `megamind bench --mode anomaly`: the anomaly detectors' cores, in process.
//!
//! - **Throughput**: one thread per worker (`-w`), each owning an
//!   [`AnomalyScorer`] over its share of `--keys` series (as the dataflow's exchange by
//!   series key would give it), scores pre-generated samples (noise with rare spikes and a
//!   level shift) for `--duration`, with the robust z-score and the isolation forest on
//!   (refits included). Reports scored events per second over all threads.
//! - **Scoring latency**: every 64th event is timed alone (hdrhistogram, nanoseconds; the
//!   clock read itself costs some tens of ns and is included).
//! - **Novelty check**: a [`NoveltyDetector`] fitted on messages from eight families, then
//!   `check` timed per message on a mix of known and unseen messages; then the same with
//!   8 KB messages, `check` and `observe` (refits included).
//! - **Memory**: 10,000 fresh series fed until rings are full and forests fitted; counted
//!   heap per series and resident-set growth per series.
//! - **CPU-seconds** of the scoring phase, since the machine may be shared.
//!
//! The numbers are the cores' cost, not the whole server's: decoding, routing and the
//! window operator are measured by `--mode pipeline`.

use std::time::Duration;

use hdrhistogram::Histogram;
use megamind_dataflows::model::{Id, Sample, SeriesKey};
use megamind_dataflows::operators::detect_novel_errors::{NoveltyConfig, NoveltyDetector};
use megamind_dataflows::operators::score_anomalies::detectors::SplitMix64;
use megamind_dataflows::operators::score_anomalies::AnomalyScorer;
use megamind_dataflows::time::Stopwatch;
use serde::Serialize;

use crate::bench::{cpus, BenchOptions, BenchReport};
use crate::config::Config;

/// Percentiles in nanoseconds.
#[derive(Debug, Clone, Serialize)]
pub struct NanosReport {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

impl NanosReport {
    fn from(histogram: &Histogram<u64>) -> Self {
        Self {
            count: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
        }
    }
}

/// What `--mode anomaly` measured.
#[derive(Debug, Clone, Serialize)]
pub struct AnomalyBenchReport {
    /// Scoring threads.
    pub threads: usize,
    /// Series over all threads.
    pub series: usize,
    /// Trees per forest, points per tree (from `[anomaly]`).
    pub trees: usize,
    /// Points per tree.
    pub tree_sample: usize,
    /// Events scored (past cold start) over all threads.
    pub scored: u64,
    /// Events judged anomalous.
    pub anomalous: u64,
    /// Forest refits during the run.
    pub refits: u64,
    /// Scored events per second, all threads.
    pub scored_per_second: f64,
    /// Per-event scoring latency (every 64th event).
    pub scoring_latency: NanosReport,
    /// Families in the fitted message sample.
    pub families: usize,
    /// Per-message novelty check latency.
    pub novelty_check: NanosReport,
    /// Novelty check of 8 KB messages (only their first `max_message_bytes` are read).
    pub novelty_check_8kb: NanosReport,
    /// `observe` of 8 KB messages, one in ten of a new kind, refits included (the cost a
    /// message adds to ingest).
    pub novelty_observe_8kb: NanosReport,
    /// CPU-seconds the process used during the scoring phase (all threads), if known.
    pub cpu_seconds: Option<f64>,
    /// Scored events per CPU-second.
    pub scored_per_cpu_second: Option<f64>,
    /// State per series once every series' ring is full and its forest fitted.
    pub memory: MemoryReport,
}

/// Memory per series, measured on `series` series of a fresh scorer after
/// `points_per_series` points each.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Series measured.
    pub series: usize,
    /// Points fed to each.
    pub points_per_series: usize,
    /// Heap of rings and forests per series (counted, exact).
    pub detector_heap_bytes_per_series: f64,
    /// Resident-set growth per series (includes keys, map and allocator overhead).
    pub rss_bytes_per_series: Option<f64>,
}

fn nanos_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000_000, 3) {
        Ok(histogram) => histogram,
        Err(error) => panic!("invariant: constant histogram bounds are valid: {error:?}"),
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Pre-generated samples for one thread: `rounds` points of each of its series, in time
/// order, with rare spikes and one level shift per series.
fn samples(thread: usize, series: usize, rounds: usize) -> Vec<Sample> {
    let mut rng = SplitMix64::new(0x5eed ^ thread as u64);
    let keys: Vec<SeriesKey> = (0..series)
        .map(|i| SeriesKey {
            name: Id::from("latency_ms"),
            session_id: None,
            labels: vec![(Id::from("series"), Id::from(format!("t{thread}-{i}")))],
        })
        .collect();
    let mut out = Vec::with_capacity(series * rounds);
    for round in 0..rounds {
        for key in &keys {
            let noise: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
            let mut value = 50.0 + 5.0 * noise;
            if round > rounds / 2 {
                value += 20.0;
            }
            if rng.below(1000) == 0 {
                value *= 4.0;
            }
            out.push(Sample {
                key: key.clone(),
                ts: round as u64 * 1000,
                value,
            });
        }
    }
    out
}

struct ThreadResult {
    scored: u64,
    anomalous: u64,
    refits: u64,
    histogram: Histogram<u64>,
}

fn score_thread(
    config: &megamind_dataflows::operators::AnomalyConfig,
    data: &[Sample],
    duration: Duration,
) -> ThreadResult {
    let mut scorer = AnomalyScorer::new(config.clone());
    let mut histogram = nanos_histogram();
    let watch = Stopwatch::start();
    let mut total = megamind_dataflows::operators::score_anomalies::AnomalyCounters::default();
    'outer: loop {
        // Each pass is a fresh history (new scorer) so the data's level shift repeats.
        for (index, sample) in data.iter().enumerate() {
            if index % 64 == 0 {
                let timer = Stopwatch::start();
                let scores = scorer.score(sample);
                let elapsed = timer.elapsed();
                std::hint::black_box(scores);
                let _ = histogram.record(nanos(elapsed));
                if watch.elapsed() >= duration {
                    break 'outer;
                }
            } else {
                std::hint::black_box(scorer.score(sample));
            }
        }
        let counters = scorer.take_counters();
        total.scored += counters.scored;
        total.anomalous += counters.anomalous;
        total.refits += counters.refits;
        scorer = AnomalyScorer::new(config.clone());
    }
    let counters = scorer.take_counters();
    ThreadResult {
        scored: total.scored + counters.scored,
        anomalous: total.anomalous + counters.anomalous,
        refits: total.refits + counters.refits,
        histogram,
    }
}

const FAMILIES: [&str; 8] = [
    "connection timeout after {} ms to db-{}",
    "rate limit exceeded for user {} on endpoint /v1/search",
    "token budget exhausted: used {} of 8000 tokens",
    "run_tests failed: exit status {}",
    "file not found: /workspace/src/module_{}.rs",
    "permission denied opening /var/run/socket-{}",
    "model returned malformed json at offset {}",
    "context window exceeded by {} tokens",
];

fn message(family: usize, number: u64) -> String {
    FAMILIES[family % FAMILIES.len()].replace("{}", &number.to_string())
}

/// Feeds `series` fresh series until every ring is full and every forest fitted, and
/// measures what they hold.
fn memory(config: &megamind_dataflows::operators::AnomalyConfig, series: usize) -> MemoryReport {
    let points_per_series = config
        .detectors
        .z_window
        .max(config.detectors.reference_size)
        .max(config.detectors.min_history)
        + 16;
    let keys: Vec<SeriesKey> = (0..series)
        .map(|i| SeriesKey {
            name: Id::from("memory_probe"),
            session_id: None,
            labels: vec![(Id::from("series"), Id::from(format!("m{i}")))],
        })
        .collect();
    let mut config = config.clone();
    config.max_series = config.max_series.max(series);
    let mut rng = SplitMix64::new(11);
    let before = crate::metrics::rss_bytes();
    let mut scorer = AnomalyScorer::new(config);
    for round in 0..points_per_series {
        for key in &keys {
            let sample = Sample {
                key: key.clone(),
                ts: round as u64 * 1000,
                value: 50.0 + 5.0 * rng.next_f64(),
            };
            std::hint::black_box(scorer.score(&sample));
        }
    }
    let after = crate::metrics::rss_bytes();
    let heap = scorer.detector_heap_bytes() as f64 / series.max(1) as f64;
    let rss = match (before, after) {
        (Some(before), Some(after)) => {
            Some(after.saturating_sub(before) as f64 / series.max(1) as f64)
        }
        _ => None,
    };
    drop(scorer);
    MemoryReport {
        series,
        points_per_series,
        detector_heap_bytes_per_series: heap,
        rss_bytes_per_series: rss,
    }
}

/// An 8 KB message: a known family's text followed by a long stack-trace-like tail, or
/// (every tenth) a new kind of message of the same length.
fn long_message(rng: &mut SplitMix64, i: u64) -> String {
    let mut out = if i % 10 == 0 {
        format!("unexpected kernel panic in driver gpu{i} while mapping buffer")
    } else {
        message(rng.below(FAMILIES.len()), i)
    };
    let mut frame = 0;
    while out.len() < 8 * 1024 {
        out.push_str(&format!(
            " at frame_{frame} module::function_{} ",
            rng.below(1000)
        ));
        frame += 1;
    }
    out
}

/// Check and observe latency of 8 KB messages.
fn novelty_long(duration: Duration) -> (Histogram<u64>, Histogram<u64>) {
    let config = NoveltyConfig::default();
    let mut detector = NoveltyDetector::new();
    let mut rng = SplitMix64::new(5);
    let probes: Vec<String> = (0..1024u64).map(|i| long_message(&mut rng, i)).collect();
    for (i, probe) in probes.iter().enumerate().take(config.sample_size) {
        detector.observe(probe, i as u64, &config);
    }
    let mut check = nanos_histogram();
    let mut observe = nanos_histogram();
    let watch = Stopwatch::start();
    let mut ts = config.sample_size as u64;
    while watch.elapsed() < duration {
        for probe in &probes {
            let timer = Stopwatch::start();
            std::hint::black_box(detector.check(probe, &config));
            let _ = check.record(nanos(timer.elapsed()));
            let timer = Stopwatch::start();
            std::hint::black_box(detector.observe(probe, ts, &config));
            let _ = observe.record(nanos(timer.elapsed()));
            ts += 1;
        }
    }
    (check, observe)
}

fn novelty(duration: Duration) -> (usize, Histogram<u64>) {
    let config = NoveltyConfig::default();
    let mut detector = NoveltyDetector::new();
    let mut rng = SplitMix64::new(3);
    for i in 0..config.sample_size as u64 {
        detector.observe(&message(rng.below(FAMILIES.len()), i), i, &config);
    }
    detector.refit(&config);
    let families = detector.families().len();
    let probes: Vec<String> = (0..4096u64)
        .map(|i| {
            if i % 10 == 0 {
                format!("unexpected kernel panic in driver gpu{i} while mapping buffer")
            } else {
                message(rng.below(FAMILIES.len()), i)
            }
        })
        .collect();
    let mut histogram = nanos_histogram();
    let watch = Stopwatch::start();
    'outer: loop {
        for probe in &probes {
            let timer = Stopwatch::start();
            let verdict = detector.check(probe, &config);
            let elapsed = timer.elapsed();
            std::hint::black_box(verdict);
            let _ = histogram.record(nanos(elapsed));
        }
        if watch.elapsed() >= duration {
            break 'outer;
        }
    }
    (families, histogram)
}

/// Runs the anomaly benchmark with `threads` scoring threads.
pub fn run(config: &Config, threads: usize, options: &BenchOptions) -> BenchReport {
    let threads = threads.max(1);
    let scorer_config = config.anomaly.scorer();
    let per_thread = options.keys.max(threads) / threads;
    // Enough rounds for cold start, several refits and the level shift.
    let rounds = (4 * scorer_config.detectors.refit_every).max(2_048);
    let duration = options.duration;
    let data: Vec<Vec<Sample>> = (0..threads)
        .map(|thread| samples(thread, per_thread, rounds))
        .collect();
    let cpu_before = crate::metrics::process_cpu_seconds();
    let watch = Stopwatch::start();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .iter()
            .map(|data| {
                let config = scorer_config.clone();
                scope.spawn(move || score_thread(&config, data, duration))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(result) => result,
                Err(_) => panic!("invariant: a scoring thread does not panic"),
            })
            .collect()
    });
    let elapsed = watch.elapsed().as_secs_f64();
    let cpu_seconds = match (cpu_before, crate::metrics::process_cpu_seconds()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let mut histogram = nanos_histogram();
    let (mut scored, mut anomalous, mut refits) = (0, 0, 0);
    for result in &results {
        let _ = histogram.add(&result.histogram);
        scored += result.scored;
        anomalous += result.anomalous;
        refits += result.refits;
    }
    let (families, novelty_histogram) = novelty(duration.min(Duration::from_secs(5)));
    let (long_check, long_observe) = novelty_long(duration.min(Duration::from_secs(5)));
    drop(data);
    let memory = memory(&scorer_config, 10_000);
    let scored_per_second = scored as f64 / elapsed.max(f64::EPSILON);
    BenchReport {
        insights: None,
        mode: "anomaly",
        workers: threads,
        offered_rate: 0,
        events_sent: scored,
        events_processed: scored,
        elapsed_seconds: elapsed,
        events_per_second: scored_per_second,
        window_results: 0,
        window_close_to_sink: None,
        mcp_calls: None,
        websocket: None,
        kafka: None,
        ml: None,
        alerts: None,
        anomaly: Some(AnomalyBenchReport {
            threads,
            series: per_thread * threads,
            trees: scorer_config.detectors.trees,
            tree_sample: scorer_config.detectors.tree_sample,
            scored,
            anomalous,
            refits,
            scored_per_second,
            scoring_latency: NanosReport::from(&histogram),
            families,
            novelty_check: NanosReport::from(&novelty_histogram),
            novelty_check_8kb: NanosReport::from(&long_check),
            novelty_observe_8kb: NanosReport::from(&long_observe),
            cpu_seconds,
            scored_per_cpu_second: cpu_seconds
                .filter(|&seconds| seconds > 0.0)
                .map(|seconds| scored as f64 / seconds),
            memory,
        }),
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        cpus: cpus(),
    }
}
