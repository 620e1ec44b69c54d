//! The anomaly detectors' pure cores: one series' robust z + isolation forest scoring per
//! point (including scheduled refits), a forest fit, and one message novelty check against
//! fitted error families.
//!
//! Run: `cargo bench --bench anomaly` (or `-- novelty` for one group).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use megamind_dataflows::operators::detect_novel_errors::{NoveltyConfig, NoveltyDetector};
use megamind_dataflows::operators::score_anomalies::detectors::{
    DetectorConfig, IsolationForest, SeriesDetector, SplitMix64, FEATURES,
};

/// Noise around 50 with a rare spike, from a fixed seed.
fn series(n: usize) -> Vec<f64> {
    let mut rng = SplitMix64::new(17);
    (0..n)
        .map(|_| {
            let noise: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
            let spike = if rng.below(1000) == 0 { 40.0 } else { 0.0 };
            50.0 + 5.0 * noise + spike
        })
        .collect()
}

fn score_series(c: &mut Criterion) {
    let config = DetectorConfig::default();
    let values = series(16_384);
    let mut group = c.benchmark_group("score_anomalies");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("series_detector_16k_points", |b| {
        b.iter(|| {
            let mut detector = SeriesDetector::new(&config, 1);
            let mut anomalous = 0u32;
            for (i, &value) in values.iter().enumerate() {
                let scores = detector.observe(value, i as u64 * 1_000, &config);
                anomalous += u32::from(scores.combined >= 0.5);
            }
            anomalous
        });
    });
    let points: Vec<[f64; FEATURES]> = values[..config.reference_size]
        .iter()
        .map(|&v| [v, 0.0])
        .collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("forest_fit", |b| {
        b.iter(|| IsolationForest::fit_rows(&points, config.trees, config.tree_sample, 5));
    });
    let forest = IsolationForest::fit_rows(&points, config.trees, config.tree_sample, 5);
    group.bench_function("forest_score_one_point", |b| {
        b.iter(|| forest.score(&[std::hint::black_box(71.0), 0.0]));
    });
    group.finish();
}

fn novelty(c: &mut Criterion) {
    let config = NoveltyConfig::default();
    let mut detector = NoveltyDetector::new();
    let templates = [
        "connection timeout after {} ms to db-{}",
        "rate limit exceeded for user {} on endpoint /v1/search",
        "token budget exhausted: used {} of 8000 tokens",
        "run_tests failed: exit status {}",
    ];
    for i in 0..config.sample_size {
        let message = templates[i % templates.len()].replace("{}", &i.to_string());
        detector.observe(&message, i as u64, &config);
    }
    detector.refit(&config);
    let mut group = c.benchmark_group("novelty");
    group.bench_function("check_known_message", |b| {
        b.iter(|| detector.check("connection timeout after 912 ms to db-3", &config));
    });
    group.bench_function("check_novel_message", |b| {
        b.iter(|| {
            detector.check(
                "unexpected kernel panic in driver gpu7 while mapping buffer",
                &config,
            )
        });
    });
    let long: String = (0..1024)
        .map(|w| format!("word{}x ", w * 7919))
        .collect::<String>()
        .repeat(8);
    group.bench_function("check_64k_message", |b| {
        b.iter(|| detector.check(&long, &config));
    });
    group.bench_function("refit_sample", |b| {
        b.iter(|| detector.refit(&config));
    });
    group.finish();
}

criterion_group!(benches, score_series, novelty);
criterion_main!(benches);
