use super::detectors::*;
use super::*;
use crate::testing::{run_with_workers, Epoch};

/// A deterministic noisy series: sum of uniforms (roughly normal, sd about 1) around `level`.
fn noise(rng: &mut SplitMix64, level: f64) -> f64 {
    let sum: f64 = (0..4).map(|_| rng.next_f64()).sum();
    level + (sum - 2.0) * 1.7
}

#[test]
fn forest_scores_an_obvious_outlier_above_inliers() {
    let mut rng = SplitMix64::new(7);
    let points: Vec<[f64; FEATURES]> = (0..512).map(|_| [noise(&mut rng, 10.0), 0.0]).collect();
    let forest = IsolationForest::fit(ndarray::aview2(&points), 100, 256, 42);
    let inlier = forest.score(&[10.0, 0.0]);
    let outlier = forest.score(&[60.0, 0.0]);
    assert!(outlier > 0.7, "outlier scored {outlier}");
    assert!(inlier < 0.5, "inlier scored {inlier}");
    // 99 % of the training points score below the outlier. (The most extreme training
    // points share the outlier's leaf in trees whose split never fell between them: an
    // isolation forest cannot rank points beyond the sample's range by distance.)
    let mut scores: Vec<f64> = points.iter().map(|p| forest.score(p)).collect();
    scores.sort_by(f64::total_cmp);
    let p99 = scores[scores.len() * 99 / 100];
    assert!(p99 < outlier, "p99 {p99} vs {outlier}");
}

#[test]
fn forest_is_deterministic_for_a_seed() {
    let mut rng = SplitMix64::new(1);
    let points: Vec<[f64; FEATURES]> = (0..300)
        .map(|_| [noise(&mut rng, 0.0), rng.next_f64()])
        .collect();
    let a = IsolationForest::fit(ndarray::aview2(&points), 50, 128, 9);
    let b = IsolationForest::fit(ndarray::aview2(&points), 50, 128, 9);
    let c = IsolationForest::fit(ndarray::aview2(&points), 50, 128, 10);
    let probe = [3.0, 0.5];
    assert_eq!(a.score(&probe).to_bits(), b.score(&probe).to_bits());
    assert_ne!(a.score(&probe).to_bits(), c.score(&probe).to_bits());
}

#[test]
fn average_path_length_matches_the_paper() {
    // c(256) from Liu et al.: 2 H(255) - 2*255/256, with H(i) ≈ ln(i) + γ.
    assert!((average_path_length(256) - 10.2447).abs() < 1e-3);
    assert_eq!(average_path_length(1), 0.0);
    assert_eq!(average_path_length(2), 1.0);
}

#[test]
fn cold_start_is_explicit_and_never_alarms() {
    let config = DetectorConfig::default();
    let mut detector = SeriesDetector::new(&config, 1);
    for i in 0..config.min_history {
        // Wild values during cold start: still no verdict.
        let value = if i % 7 == 0 { 1e6 } else { 1.0 };
        let scores = detector.observe(value, i as u64 * 1_000, &config);
        assert_eq!(scores.verdict, Verdict::ColdStart);
    }
    let scores = detector.observe(1.0, config.min_history as u64 * 1_000, &config);
    assert_ne!(scores.verdict, Verdict::ColdStart);
}

struct Run {
    alarms: Vec<usize>,
}

fn run(series: &[f64], config: &DetectorConfig) -> Run {
    let mut detector = SeriesDetector::new(config, 99);
    let alarms = series
        .iter()
        .enumerate()
        .filter(|&(i, &v)| {
            detector.observe(v, i as u64 * 1_000, config).verdict == Verdict::Anomalous
        })
        .map(|(i, _)| i)
        .collect();
    Run { alarms }
}

fn base(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| noise(&mut rng, 100.0)).collect()
}

// Bounds stated here: on 5,000 points of stationary noise, at most 0.2 % false alarms; a
// spike of 15 sd is flagged at the spike itself (delay 0); a level shift of 12 sd is flagged
// within 3 points; a slow drift (0.002 sd per point) raises no more than 0.5 % alarms.

#[test]
fn stationary_noise_has_few_false_alarms() {
    let config = DetectorConfig::default();
    for seed in 1..=3 {
        let series = base(5_000, seed);
        let alarms = run(&series, &config).alarms.len();
        assert!(
            alarms <= 10,
            "seed {seed}: {alarms} false alarms in 5000 points"
        );
    }
}

#[test]
fn spikes_are_flagged_where_they_are() {
    let config = DetectorConfig::default();
    let mut series = base(3_000, 4);
    let spikes = [700, 1_500, 2_300];
    for &at in &spikes {
        series[at] += 15.0;
    }
    let alarms = run(&series, &config).alarms;
    for at in spikes {
        assert!(
            alarms.contains(&at),
            "spike at {at} missed; alarms {alarms:?}"
        );
    }
    let false_alarms = alarms.iter().filter(|a| !spikes.contains(a)).count();
    assert!(false_alarms <= 6, "{false_alarms} false alarms: {alarms:?}");
}

#[test]
fn level_shift_is_flagged_quickly() {
    let config = DetectorConfig::default();
    let mut series = base(3_000, 5);
    for value in series.iter_mut().skip(2_000) {
        *value += 12.0;
    }
    let alarms = run(&series, &config).alarms;
    let first = alarms.iter().find(|&&a| a >= 2_000).copied();
    let delay = first.map(|a| a - 2_000);
    assert!(
        delay.is_some_and(|d| d <= 3),
        "delay {delay:?}; alarms {alarms:?}"
    );
    let before = alarms.iter().filter(|&&a| a < 2_000).count();
    assert!(before <= 4, "{before} false alarms before the shift");
    // After the shift the history restarts at the new level: the alarms stop after
    // `shift_run` points instead of running for half a window.
    let after = alarms.iter().filter(|&&a| a >= 2_000).count();
    assert!(
        after <= config.shift_run + 4,
        "{after} alarms after the shift: {alarms:?}"
    );
}

#[test]
fn slow_drift_is_not_an_anomaly() {
    let config = DetectorConfig::default();
    let series: Vec<f64> = base(5_000, 6)
        .into_iter()
        .enumerate()
        .map(|(i, v)| v + i as f64 * 0.002)
        .collect();
    let alarms = run(&series, &config).alarms.len();
    assert!(alarms <= 25, "{alarms} alarms on a slow drift");
}

#[test]
fn constant_series_then_change_is_flagged() {
    let config = DetectorConfig::default();
    let mut series = vec![5.0; 500];
    series[400] = 6.0;
    let alarms = run(&series, &config).alarms;
    assert_eq!(alarms, vec![400]);
}

fn sample(name: &str, ts: u64, value: f64) -> Sample {
    Sample {
        key: SeriesKey::named(name),
        ts,
        value,
    }
}

#[test]
fn anomaly_score_sample_keeps_name_and_labels() {
    let mut original = sample("latency", 5, 1.0);
    original.key.labels = vec![("region".into(), "eu".into())];
    let derived = score_sample(&original, 0.75);
    assert_eq!(derived.key.name, ANOMALY_SCORE);
    assert_eq!(
        derived.key.labels,
        vec![
            (Id::from("metric"), Id::from("latency")),
            (Id::from("region"), Id::from("eu"))
        ]
    );
    assert_eq!(derived.value, 0.75);
    assert_eq!(derived.ts, 5);
}

fn operator_output(workers: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(11);
    let mut epochs = Vec::new();
    for epoch in 0..20u64 {
        let mut data = Vec::new();
        for i in 0..50u64 {
            let ts = epoch * 1_000 + i * 20;
            for name in ["a", "b", "c"] {
                let spike = if epoch == 15 && i == 10 && name == "b" {
                    50.0
                } else {
                    0.0
                };
                data.push(sample(name, ts, noise(&mut rng, 10.0) + spike));
            }
        }
        epochs.push(Epoch::new(epoch * 1_000, data));
    }
    let config = AnomalyConfig::default();
    let mut out: Vec<String> = run_with_workers(
        workers,
        move |samples| samples.score_anomalies("t", &config),
        epochs,
    )
    .into_iter()
    .filter_map(|(time, scored)| match scored {
        Scored::Update(update) if matches!(*update, Update::AnomalyCounters(_)) => None,
        Scored::Update(update) => Some(format!(
            "{time} {}",
            serde_json::to_string(&update).unwrap()
        )),
        Scored::Sample(s) => Some(format!("{time} {:?} {} {}", s.key, s.ts, s.value.to_bits())),
    })
    .collect();
    out.sort();
    out
}

#[test]
fn operator_flags_the_spike_and_agrees_across_worker_counts() {
    let one = operator_output(1);
    let four = operator_output(4);
    assert_eq!(one, four);
    let anomalies: Vec<&String> = one
        .iter()
        .filter(|l| l.contains("\"kind\":\"anomaly\""))
        .collect();
    assert!(
        anomalies
            .iter()
            .any(|l| l.contains("\"ts\":15200") && l.contains("\"name\":\"b\"")),
        "{anomalies:?}"
    );
    assert!(anomalies.len() <= 3, "{anomalies:?}");
    // Every point past cold start (3 series × (1000 − 64)) has an anomaly_score sample.
    let scores = one.iter().filter(|l| l.contains("anomaly_score")).count();
    assert_eq!(scores, 3 * (1_000 - 64));
}

#[test]
fn a_sustained_deviation_is_one_alarm_then_ongoing() {
    let config = DetectorConfig::default();
    let mut series = base(1_000, 8);
    for value in series.iter_mut().skip(600).take(5) {
        *value += 30.0;
    }
    let mut detector = SeriesDetector::new(&config, 3);
    let verdicts: Vec<Verdict> = series
        .iter()
        .enumerate()
        .map(|(i, &v)| detector.observe(v, i as u64 * 1_000, &config).verdict)
        .collect();
    let alarms: Vec<usize> = (0..verdicts.len())
        .filter(|&i| verdicts[i] == Verdict::Anomalous)
        .collect();
    assert!(alarms.contains(&600), "{alarms:?}");
    assert!(
        !alarms.iter().any(|&i| (601..605).contains(&i)),
        "one alarm per episode: {alarms:?}"
    );
    assert!(
        (601..605).all(|i| verdicts[i] == Verdict::Ongoing),
        "{:?}",
        &verdicts[598..610]
    );
}

#[test]
fn a_series_holds_a_few_kilobytes_and_nothing_before_its_points() {
    let config = DetectorConfig::default();
    let mut detector = SeriesDetector::new(&config, 5);
    assert_eq!(detector.heap_bytes(), 0);
    detector.observe(1.0, 0, &config);
    assert!(detector.heap_bytes() <= 64, "{}", detector.heap_bytes());
    let mut rng = SplitMix64::new(4);
    for i in 1..5_000u64 {
        detector.observe(noise(&mut rng, 20.0), i * 1_000, &config);
    }
    assert!(detector.refits() >= 4);
    // Ring of 256 values (2 KB) plus 32 trees of at most 2^7 nodes of 8 bytes (32 KB).
    let ring = config.z_window.max(config.reference_size);
    let bound = ring * 8 + config.trees * 128 * 8 + config.trees * 4;
    assert!(
        detector.heap_bytes() <= bound,
        "{} > {bound}",
        detector.heap_bytes()
    );
}

#[test]
fn a_slow_series_is_refitted_on_the_event_time_schedule() {
    let config = DetectorConfig {
        refit_interval: std::time::Duration::from_secs(3600),
        ..DetectorConfig::default()
    };
    let mut rng = SplitMix64::new(6);
    // One point every 5 minutes: 12 an hour, far fewer than refit_every (1024).
    let step = 5 * 60_000;
    let mut slow = SeriesDetector::new(&config, 7);
    for i in 0..400u64 {
        slow.observe(noise(&mut rng, 20.0), i * step, &config);
    }
    // First fit at min_history; afterwards every max(1 h, z_recompute_every points) =
    // every 16 points: (400 - 64) / 16 = 21 refits.
    assert_eq!(slow.refits(), 1 + (400 - 64) / 16, "{}", slow.refits());
    // The same points one second apart: only the count schedule applies (none yet).
    let mut fast = SeriesDetector::new(&config, 7);
    let mut rng = SplitMix64::new(6);
    for i in 0..400u64 {
        fast.observe(noise(&mut rng, 20.0), i * 1_000, &config);
    }
    assert_eq!(fast.refits(), 1);
}
