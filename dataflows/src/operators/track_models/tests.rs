//! Operator tests of `track_models` through the epoch harness (1 and 4 workers must
//! agree), and an oracle test against a from-scratch recomputation of the join.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::model::{MatchedPair, OutcomeEvent, PredictionEvent, VersionCounts};
use crate::testing::{run_epochs, Epoch, Output};

const SECOND: u64 = 1000;

fn config(horizon_seconds: u64) -> TrackModelsConfig {
    TrackModelsConfig {
        horizon: Duration::from_secs(horizon_seconds),
        reference_size: 20,
        window_size: 20,
        evaluate_every: 5,
        ..TrackModelsConfig::default()
    }
}

fn prediction(id: &str, model: &str, predicted: &str, confidence: f64) -> MlEvent {
    MlEvent::Prediction(PredictionEvent {
        model_id: model.into(),
        model_version: Some("v1".into()),
        prediction_id: id.into(),
        predicted: predicted.into(),
        confidence,
        latency_ms: 10.0,
        features: vec![("x".into(), confidence * 2.0)],
        session_id: None,
    })
}

fn outcome(id: &str, actual: &str, model: Option<&str>) -> MlEvent {
    MlEvent::Outcome(OutcomeEvent {
        prediction_id: id.into(),
        actual: actual.into(),
        model_id: model.map(Into::into),
    })
}

fn run(config: TrackModelsConfig, epochs: Vec<Epoch<(Time, MlEvent)>>) -> Output {
    run_epochs(move |events| events.track_models("test", &config).0, epochs)
}

fn model(out: &Output, id: &str) -> serde_json::Value {
    out.of_kind("model_metrics")
        .into_iter()
        .find(|snapshot| snapshot["model_id"] == id)
        .expect("a snapshot of the model")
}

#[test]
fn joins_in_either_order_and_expires_at_the_horizon() {
    let out = run(
        config(10),
        vec![
            Epoch::new(
                0,
                vec![
                    (0, prediction("p1", "m", "a", 0.9)),
                    (0, outcome("p2", "b", Some("m"))), // before its prediction
                    (0, prediction("p3", "m", "a", 0.6)), // never gets an outcome
                    (0, outcome("zz", "a", None)),      // orphan without model
                ],
            ),
            Epoch::new(
                2 * SECOND,
                vec![(2 * SECOND, prediction("p2", "m", "a", 0.7))],
            ),
            Epoch::new(5 * SECOND, vec![(5 * SECOND, outcome("p1", "a", None))]), // late
            Epoch::new(
                20 * SECOND,
                vec![
                    (20 * SECOND, prediction("p4", "m", "b", 0.8)),
                    (20 * SECOND, outcome("p3", "a", None)), // too late: an orphan
                ],
            ),
            Epoch::new(40 * SECOND, vec![]),
        ],
    );
    let snapshot = model(&out, "m");
    assert_eq!(snapshot["predictions"], 4);
    assert_eq!(snapshot["duplicates"], 0);
    assert_eq!(snapshot["matched"], 2);
    // p3 expired at 11 s; p4 expired when the input closed.
    assert_eq!(snapshot["expired"], 2);
    assert_eq!(snapshot["pending"], 0);
    assert_eq!(snapshot["cumulative"]["accuracy"], 0.5);
    assert_eq!(
        snapshot["cumulative"]["labels"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(
        snapshot["cumulative"]["confusion"],
        serde_json::json!([[1, 0], [1, 0]])
    );
    assert_eq!(
        snapshot["actual_labels"],
        serde_json::json!({"a": 1, "b": 1})
    );
    assert_eq!(
        snapshot["predicted_labels"],
        serde_json::json!({"a": 3, "b": 1})
    );
    let orphans = out.of_kind("unattributed_orphans");
    let most = orphans
        .iter()
        .filter_map(|update| update["expired"].as_u64())
        .max();
    // "zz" and the too-late outcome of p3.
    assert_eq!(most, Some(2));
}

/// A deterministic pseudo-random source (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        ((self.next() * n as f64) as u64).min(n - 1)
    }
}

#[test]
fn matches_a_from_scratch_recomputation_of_the_join() {
    let horizon = 30 * SECOND;
    let labels = ["cat", "dog", "eel"];
    let mut rng = Lcg(99);
    // (ts, event)
    let mut events: Vec<(u64, MlEvent)> = Vec::new();
    let mut truth: BTreeMap<String, (u64, String, String)> = BTreeMap::new();
    for index in 0..600u64 {
        let ts = index * 200;
        let id = format!("p{index}");
        let predicted = labels[rng.below(3) as usize];
        let actual = if rng.next() < 0.7 {
            predicted
        } else {
            labels[rng.below(3) as usize]
        };
        let model = if index % 3 == 0 { "m2" } else { "m1" };
        events.push((ts, prediction(&id, model, predicted, rng.next())));
        let roll = rng.next();
        if roll < 0.8 {
            // Outcome 0–50 s later: some beyond the horizon, some before the prediction.
            let lag = rng.below(50 * SECOND);
            let outcome_ts = if roll < 0.1 {
                ts.saturating_sub(lag / 10)
            } else {
                ts + lag
            };
            events.push((outcome_ts, outcome(&id, actual, None)));
            if outcome_ts.abs_diff(ts) < horizon {
                truth.insert(id, (ts, predicted.to_owned(), actual.to_owned()));
            }
        }
    }
    events.sort_by_key(|(ts, _)| *ts);
    // Epochs of 1 s: the watermark of each epoch is its start.
    let mut epochs: Vec<Epoch<(Time, MlEvent)>> = Vec::new();
    for (ts, event) in events {
        let time = ts / SECOND * SECOND;
        match epochs.last_mut() {
            Some(epoch) if epoch.time == time => epoch.data.push((ts, event)),
            _ => epochs.push(Epoch::new(time, vec![(ts, event)])),
        }
    }
    let out = run(config(30), epochs);
    for model_id in ["m1", "m2"] {
        let snapshot = model(&out, model_id);
        let mut confusion: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut predictions = 0;
        for (id, (_, predicted, actual)) in &truth {
            let index: u64 = id[1..].parse().unwrap();
            if (index % 3 == 0) == (model_id == "m2") {
                *confusion
                    .entry((actual.clone(), predicted.clone()))
                    .or_insert(0) += 1;
            }
        }
        for index in 0..600u64 {
            if (index % 3 == 0) == (model_id == "m2") {
                predictions += 1;
            }
        }
        let matched: u64 = confusion.values().sum();
        assert_eq!(snapshot["matched"], matched, "{model_id}");
        assert_eq!(snapshot["predictions"], predictions);
        assert_eq!(
            snapshot["expired"].as_u64().unwrap() + matched,
            predictions,
            "every prediction is matched or expired at the end"
        );
        let labels = snapshot["cumulative"]["labels"].as_array().unwrap().clone();
        for (row, actual) in labels.iter().enumerate() {
            for (column, predicted) in labels.iter().enumerate() {
                let want = confusion
                    .get(&(
                        actual.as_str().unwrap().to_owned(),
                        predicted.as_str().unwrap().to_owned(),
                    ))
                    .copied()
                    .unwrap_or(0);
                assert_eq!(snapshot["cumulative"]["confusion"][row][column], want);
            }
        }
        let correct: u64 = confusion
            .iter()
            .filter(|((a, p), _)| a == p)
            .map(|(_, count)| count)
            .sum();
        let accuracy = snapshot["cumulative"]["accuracy"].as_f64().unwrap();
        assert!((accuracy - correct as f64 / matched as f64).abs() < 1e-12);
        // The drift windows filled up, so every test ran.
        let drift = &snapshot["drift"];
        assert_eq!(drift["reference_size"], 20);
        assert!(drift["tests"].as_array().unwrap().len() >= 5, "{drift}");
    }
}

#[test]
fn an_accuracy_drop_raises_a_retraining_trigger_and_an_alert() {
    let mut epochs = Vec::new();
    for index in 0..200u64 {
        let ts = index * SECOND;
        let id = format!("q{index}");
        // Right for the first 100 pairs, then wrong 60% of the time.
        let wrong = index >= 100 && index % 5 < 3;
        epochs.push(Epoch::new(
            ts,
            vec![
                (ts, prediction(&id, "m", "yes", 0.9)),
                (ts, outcome(&id, if wrong { "no" } else { "yes" }, None)),
            ],
        ));
    }
    let out = run(config(60), epochs);
    let triggers = out.of_kind("retraining_trigger");
    assert!(!triggers.is_empty(), "no retraining trigger");
    let evidence: Vec<String> = triggers
        .iter()
        .flat_map(|trigger| trigger["evidence"].as_array().cloned().unwrap_or_default())
        .filter_map(|test| test["test"].as_str().map(str::to_owned))
        .collect();
    assert!(
        evidence.iter().any(|test| test == "accuracy_drop"),
        "{evidence:?}"
    );
    assert!(
        evidence.iter().any(|test| test == "adwin:errors"),
        "{evidence:?}"
    );
    let alerts = out.of_kind("alert");
    assert!(
        alerts
            .iter()
            .any(|alert| alert["rule_id"] == DRIFT_RULE && alert["state"] == "firing"),
        "{alerts:?}"
    );
    let snapshot = model(&out, "m");
    assert_eq!(snapshot["health"], "drifted");
}

#[test]
fn of_two_pairs_with_one_id_and_time_the_later_arrival_is_ordered_across_versions() {
    // One worker, one activation: v2 is seen first, so the join hands over v2's batch
    // before v1's although v1's pair arrived first; the later arrival (v2's) must still
    // be the one the ordered analyses keep.
    let config = config(10);
    let version = |id: &str, version: &str| versioned(id, version, "a", 0.5);
    let out = crate::testing::run_with_workers(
        1,
        move |events| events.track_models("test", &config).0,
        vec![Epoch::new(
            0,
            vec![
                (0, version("q", "v2")),
                (0, version("p1", "v1")),
                (0, outcome("p1", "a", None)),
                (0, version("p1", "v2")),
                (0, outcome("p1", "b", None)),
            ],
        )],
    );
    let ordered = |wanted: &str| {
        out.iter()
            .filter_map(|(_, update)| match update {
                Update::ModelMetrics(snapshot) if snapshot.model_version == wanted => {
                    Some(snapshot.ordered)
                }
                _ => None,
            })
            .max()
    };
    assert_eq!(ordered("v1"), Some(0));
    assert_eq!(ordered("v2"), Some(1));
}

#[test]
fn a_duplicate_prediction_id_is_counted_and_ignored() {
    // One worker: which twin comes first is arrival order (documented).
    let config = config(10);
    let out = crate::testing::run_with_workers(
        1,
        move |events| events.track_models("test", &config).0,
        vec![
            Epoch::new(0, vec![(0, prediction("p1", "m", "a", 0.9))]),
            Epoch::new(SECOND, vec![(SECOND, prediction("p1", "m", "b", 0.5))]),
            Epoch::new(2 * SECOND, vec![(2 * SECOND, outcome("p1", "a", None))]),
        ],
    );
    let last = out
        .iter()
        .filter_map(|(_, update)| match update {
            Update::ModelMetrics(snapshot) => Some(snapshot.clone()),
            _ => None,
        })
        .max_by_key(|snapshot| (snapshot.events, snapshot.ordered))
        .unwrap();
    assert_eq!(last.duplicates, 1);
    assert_eq!(last.predictions, 1);
    assert_eq!(last.matched, 1);
    assert_eq!(last.cumulative.accuracy, Some(1.0));
}

#[test]
fn every_outcome_beyond_the_horizon_becomes_an_expired_orphan() {
    let horizon = 30 * SECOND;
    let mut join = join::JoinState::new(horizon, 10);
    let mut rng = Lcg(7);
    let mut events: Vec<(u64, MlEvent)> = Vec::new();
    let mut too_late = 0;
    for index in 0..2000u64 {
        let ts = index * 50;
        let id = format!("p{index}");
        events.push((ts, prediction(&id, "m", "a", 0.5)));
        let lag = rng.below(40 * SECOND);
        if lag >= horizon {
            too_late += 1;
        }
        events.push((ts + lag, outcome(&id, "a", None)));
    }
    events.sort_by_key(|(ts, _)| *ts);
    let mut out = Vec::new();
    for (ts, event) in events {
        join.expire(ts, &mut out);
        join.apply(ts, event, &mut out);
    }
    join.expire(u64::MAX, &mut out);
    assert_eq!(expiries(&out), (too_late, too_late));
    assert_eq!(join.pending() + join.orphans(), 0);
}

#[test]
fn only_waiting_entries_hold_an_expiry_and_each_expires_once() {
    let horizon = 10 * SECOND;
    let mut join = join::JoinState::new(horizon, 10);
    let mut out = Vec::new();
    // p0..p9 at 0..9 s; the even ones meet their outcome 500 ms later; one orphan at 3 s.
    for index in 0..10u64 {
        let id = format!("p{index}");
        join.apply(index * SECOND, prediction(&id, "m", "a", 0.5), &mut out);
        if index % 2 == 0 {
            join.apply(index * SECOND + 500, outcome(&id, "a", None), &mut out);
        }
    }
    join.apply(3 * SECOND, outcome("lost", "a", Some("m")), &mut out);
    join.flush(&mut out);
    out.clear();
    // p0 matched: the first bucket with a waiting entry is p1's, ending at 2 s.
    assert_eq!(join.next_expiry(), Some(2 * SECOND + horizon));
    join.expire(2 * SECOND + horizon - 1, &mut out);
    assert!(out.is_empty());
    join.expire(2 * SECOND + horizon, &mut out);
    assert_eq!(expiries(&out), (1, 0));
    // The orphan's bucket ends at 4 s, with p3's.
    assert_eq!(join.next_expiry(), Some(4 * SECOND + horizon));
    out.clear();
    join.expire(4 * SECOND + horizon, &mut out);
    assert_eq!(expiries(&out), (1, 1));
    out.clear();
    join.expire(u64::MAX, &mut out);
    assert_eq!(expiries(&out), (3, 0));
    assert_eq!(join.pending() + join.orphans(), 0);
    assert_eq!(join.next_expiry(), None);
    out.clear();
    join.expire(u64::MAX, &mut out);
    assert!(out.is_empty(), "nothing expires twice");
}

fn versioned(id: &str, version: &str, predicted: &str, confidence: f64) -> MlEvent {
    let MlEvent::Prediction(mut event) = prediction(id, "m", predicted, confidence) else {
        unreachable!("prediction() builds a prediction")
    };
    event.model_version = Some(version.into());
    MlEvent::Prediction(event)
}

fn registration(version: Option<&str>) -> ModelRegistration {
    ModelRegistration {
        model_version: version.map(Into::into),
        ..ModelRegistration::new("m")
    }
}

/// 40 pairs of `v1`, all right, then 40 of `v2` with every other one wrong; `extra`
/// events go in at 45 s (between the two).
fn two_versions(extra: Vec<(Time, MlEvent)>) -> Vec<Epoch<(Time, MlEvent)>> {
    let mut epochs = Vec::new();
    for index in 0..40u64 {
        let ts = index * SECOND;
        let id = format!("a{index}");
        epochs.push(Epoch::new(
            ts,
            vec![
                (ts, versioned(&id, "v1", "yes", 0.9)),
                (ts, outcome(&id, "yes", None)),
            ],
        ));
    }
    epochs.push(Epoch::new(45 * SECOND, extra));
    for index in 0..40u64 {
        let ts = (50 + index) * SECOND;
        let id = format!("b{index}");
        let actual = if index % 2 == 0 { "yes" } else { "no" };
        epochs.push(Epoch::new(
            ts,
            vec![
                (ts, versioned(&id, "v2", "yes", 0.9)),
                (ts, outcome(&id, actual, None)),
            ],
        ));
    }
    epochs
}

fn version(out: &Output, version: &str) -> serde_json::Value {
    out.of_kind("model_metrics")
        .into_iter()
        .find(|snapshot| snapshot["model_version"] == version)
        .expect("a snapshot of the version")
}

#[test]
fn a_pinned_baseline_version_is_the_reference_of_a_newer_version() {
    // Without a baseline, v2 is compared with its own first 20 pairs (also 50% right):
    // no accuracy drop.
    let own = run(config(60), two_versions(Vec::new()));
    let drift = &version(&own, "v2")["drift"];
    assert_eq!(drift["reference_version"], "v2");
    let drop = drift["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|test| test["test"] == "accuracy_drop")
        .cloned()
        .expect("an accuracy_drop test");
    assert_eq!(drop["drifted"], false, "{drop}");

    // Registered with v1 as its baseline: v1's first 20 pairs (all right) are the
    // reference, so the drop is (1 - 0.5) / 1 = 0.5 and v2 drifts from its first window.
    let mut pinned = registration(Some("v2"));
    pinned.baseline_version = Some("v1".into());
    let out = run(
        config(60),
        two_versions(vec![(
            45 * SECOND,
            MlEvent::Register(Box::new(pinned.clone())),
        )]),
    );
    let snapshot = version(&out, "v2");
    let drift = &snapshot["drift"];
    assert_eq!(drift["reference_version"], "v1");
    assert_eq!(drift["reference_size"], 20);
    let drop = drift["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|test| test["test"] == "accuracy_drop")
        .cloned()
        .expect("an accuracy_drop test");
    assert_eq!(drop["drifted"], true, "{drop}");
    assert!(
        (drop["statistic"].as_f64().unwrap() - 0.5).abs() < 1e-12,
        "{drop}"
    );
    assert_eq!(snapshot["health"], "drifted");
    assert_eq!(snapshot["registration"]["baseline_version"], "v1");
    let triggers = out.of_kind("retraining_trigger");
    assert!(
        triggers
            .iter()
            .any(|trigger| trigger["model_version"] == "v2"
                && trigger["evidence"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|test| test["test"] == "accuracy_drop")),
        "{triggers:?}"
    );
    // v1 keeps its own reference.
    assert_eq!(version(&out, "v1")["drift"]["reference_version"], "v1");
    let registered = out.of_kind("model_registered");
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0]["model_version"], "v2");
}

#[test]
fn a_registration_applies_from_its_event_time_and_creates_its_version() {
    // A model-wide threshold registered at 45 s: v2's window accuracy (0.5) breaches it;
    // a version registered before any prediction shows up, waiting.
    let mut wide = registration(None);
    wide.min_accuracy = Some(0.9);
    wide.owner = Some("team-ml".into());
    let mut early = registration(Some("v3"));
    early.task = Some("classification".into());
    early.classes = vec!["no".into(), "yes".into()];
    let out = run(
        config(60),
        two_versions(vec![
            (45 * SECOND, MlEvent::Register(Box::new(wide))),
            (45 * SECOND, MlEvent::Register(Box::new(early))),
        ]),
    );
    let v2 = version(&out, "v2");
    assert_eq!(v2["registration"]["owner"], "team-ml");
    assert_eq!(v2["health"], "degraded"); // no baseline: v2 does not drift from itself
    let alerts = out.of_kind("alert");
    assert!(
        alerts.iter().any(|alert| alert["rule_id"] == THRESHOLD_RULE
            && alert["state"] == "firing"
            && alert["key"].to_string().contains("\"v2\"")),
        "{alerts:?}"
    );
    // v1's window accuracy stays 1.0: no threshold alert for it.
    assert!(!alerts
        .iter()
        .any(|alert| alert["rule_id"] == THRESHOLD_RULE
            && alert["key"].to_string().contains("\"v1\"")));
    let v3 = version(&out, "v3");
    assert_eq!(v3["health"], "waiting");
    assert_eq!(v3["predictions"], 0);
    assert_eq!(
        v3["registration"]["classes"],
        serde_json::json!(["no", "yes"])
    );
    assert_eq!(out.of_kind("model_registered").len(), 2);
}

#[test]
fn join_counts_predictions_and_pairs_per_version_and_passes_the_rest_at_once() {
    let key = |model: &str| ModelKey {
        model_id: model.into(),
        model_version: "v1".into(),
    };
    let mut join = join::JoinState::new(60 * SECOND, 10);
    let mut out = Vec::new();
    join.apply(1, prediction("p1", "m1", "a", 0.5), &mut out);
    join.apply(2, prediction("p2", "m2", "a", 0.5), &mut out);
    join.apply(3, prediction("p2", "m2", "b", 0.5), &mut out);
    join.apply(4, prediction("p3", "m1", "b", 0.75), &mut out);
    join.apply(5, outcome("p4", "a", Some("m1")), &mut out);
    join.apply(6, prediction("p4", "m1", "a", 0.25), &mut out);
    join.apply(7, outcome("p1", "b", None), &mut out);
    // Only the duplicate so far: predictions and pairs wait for the flush.
    assert_eq!(out, vec![ModelInput::Duplicate { key: key("m2") }]);
    out.clear();
    join.flush(&mut out);
    let fixed = stats::fixed;
    let pair = |arrival: u64, ts: u64, id: &str, predicted: &str, actual: &str, confidence: f64| {
        MatchedPair {
            arrival,
            ts,
            prediction_id: id.into(),
            predicted: predicted.into(),
            actual: actual.into(),
            confidence,
            features: vec![("x".into(), confidence * 2.0)],
        }
    };
    let mut histogram = vec![0u64; 10];
    histogram[2] = 1;
    histogram[5] = 1;
    histogram[7] = 1;
    let mut calibration = vec![(0u64, 0u64, 0u128); 10];
    calibration[2] = (1, 1, fixed(0.25));
    calibration[5] = (1, 0, fixed(0.5));
    let m1 = VersionCounts {
        predictions: 3,
        matched: 2,
        first_seen: Some(1),
        last_seen: 7,
        // 10 ms: 10,000 µs is the lowest value of its class.
        latency: vec![(10_000, 3)],
        latency_sum: 3 * fixed(10.0),
        confidence_sum: fixed(0.5) + fixed(0.75) + fixed(0.25),
        confidence_histogram: histogram,
        predicted_labels: vec![("a".into(), 2), ("b".into(), 1)],
        confusion: vec![("a".into(), "a".into(), 1), ("b".into(), "a".into(), 1)],
        calibration,
    };
    let one = |ts: u64| {
        let mut histogram = vec![0u64; 10];
        histogram[5] = 1;
        VersionCounts {
            predictions: 1,
            first_seen: Some(ts),
            last_seen: ts,
            latency: vec![(10_000, 1)],
            latency_sum: fixed(10.0),
            confidence_sum: fixed(0.5),
            confidence_histogram: histogram,
            predicted_labels: vec![("a".into(), 1)],
            ..VersionCounts::default()
        }
    };
    assert_eq!(
        out,
        vec![
            ModelInput::Counted {
                key: key("m1"),
                counts: Box::new(m1),
            },
            ModelInput::MatchedBatch {
                key: key("m1"),
                pairs: vec![
                    // The outcome waited (arrivals: p1, p2, p3, outcome p4, p4, outcome p1).
                    pair(5, 6, "p4", "a", "a", 0.25),
                    pair(6, 7, "p1", "a", "b", 0.5),
                ],
            },
            ModelInput::Counted {
                key: key("m2"),
                counts: Box::new(one(2)),
            },
        ]
    );
    out.clear();
    join.flush(&mut out);
    assert!(out.is_empty());
    join.apply(8, prediction("p5", "m2", "a", 0.5), &mut out);
    join.flush(&mut out);
    assert_eq!(
        out,
        vec![ModelInput::Counted {
            key: key("m2"),
            counts: Box::new(one(8)),
        }]
    );
}

fn pin(version: Option<&str>, actor: &str) -> MlEvent {
    MlEvent::PinBaseline(PinBaseline {
        model_id: "m".into(),
        model_version: version.map(Into::into),
        actor: Some(actor.into()),
        note: Some("accepted shift".into()),
    })
}

fn pins(out: &Output) -> Vec<serde_json::Value> {
    let mut pins = out.of_kind("baseline_pin");
    pins.sort_by_key(|pin| (pin["at"].as_u64(), pin["model_version"].to_string()));
    pins
}

fn test_named<'a>(drift: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    drift["tests"]
        .as_array()
        .and_then(|tests| tests.iter().find(|test| test["test"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn pin_now_freezes_the_current_window_as_the_reference() {
    // v1: 40 pairs all right, then 40 with every other one wrong: the current window
    // drifts from the reference (the first 20). At 85 s the shift is accepted: the
    // current window (20 pairs, half wrong) becomes the reference, and 40 more pairs that
    // behave the same do not drift. Too-early, unknown-version and unknown-model pins
    // change nothing and say why.
    let mut epochs = Vec::new();
    let pair = |index: u64| {
        let ts = index * SECOND;
        let id = format!("q{index}");
        let wrong = index >= 40 && index % 2 == 1;
        vec![
            (ts, prediction(&id, "m", "yes", 0.9)),
            (ts, outcome(&id, if wrong { "no" } else { "yes" }, None)),
        ]
    };
    for index in 0..80u64 {
        let mut data = pair(index);
        if index == 30 {
            // At 30 s the current window holds 10 pairs (pairs at 30 s come after).
            data.push((30 * SECOND, pin(Some("v1"), "early")));
        }
        epochs.push(Epoch::new(index * SECOND, data));
    }
    epochs.push(Epoch::new(
        85 * SECOND,
        vec![
            (85 * SECOND, pin(Some("v1"), "ana")),
            (85 * SECOND, pin(Some("v9"), "ana")),
            (
                85 * SECOND,
                MlEvent::PinBaseline(PinBaseline {
                    model_id: "nope".into(),
                    model_version: None,
                    actor: None,
                    note: None,
                }),
            ),
        ],
    ));
    for index in 90..130u64 {
        epochs.push(Epoch::new(index * SECOND, pair(index)));
    }
    let out = run(config(60), epochs);

    let pins = pins(&out);
    assert_eq!(pins.len(), 4, "{pins:?}");
    let early = &pins[0];
    assert_eq!(early["at"], 30 * SECOND);
    assert_eq!(early["pinned"], false);
    assert_eq!(early["reason"], "window_too_small");
    assert_eq!(early["size"], 10);
    let by_version = |version: serde_json::Value| {
        pins.iter()
            .find(|pin| pin["at"] == 85 * SECOND && pin["model_version"] == version)
            .cloned()
            .unwrap_or_else(|| panic!("a pin of {version}: {pins:?}"))
    };
    let pinned = by_version("v1".into());
    assert_eq!(pinned["pinned"], true, "{pinned}");
    assert_eq!(pinned["size"], 20);
    assert_eq!(pinned["previous_reference"], "v1");
    assert_eq!(pinned["actor"], "ana");
    assert_eq!(pinned["note"], "accepted shift");
    assert_eq!(by_version("v9".into())["reason"], "no_matched_pairs");
    let nope = by_version(serde_json::Value::Null);
    assert_eq!(
        (&nope["model_id"], &nope["reason"]),
        (&"nope".into(), &"no_matched_pairs".into())
    );

    // The drift before the pin fired and resolved at the pin.
    let mut alerts: Vec<(String, u64)> = out
        .of_kind("alert")
        .iter()
        .filter(|alert| alert["rule_id"] == DRIFT_RULE)
        .map(|alert| {
            (
                alert["state"].as_str().unwrap().to_owned(),
                alert["at"].as_u64().unwrap(),
            )
        })
        .collect();
    alerts.sort_by_key(|(_, at)| *at);
    assert_eq!(alerts.len(), 2, "one drift, none after the pin: {alerts:?}");
    assert_eq!(alerts[0].0, "firing", "{alerts:?}");
    assert!(alerts[0].1 < 85 * SECOND, "{alerts:?}");
    assert_eq!(alerts[1], ("resolved".to_owned(), 85 * SECOND));

    let snapshot = model(&out, "m");
    assert_eq!(snapshot["health"], "ok", "{snapshot}");
    assert_eq!(snapshot["baseline_pins"], 1);
    assert_eq!(snapshot["baseline_pins_rejected"], 1);
    let drift = &snapshot["drift"];
    assert_eq!(drift["drifted"], false, "{drift}");
    assert_eq!(drift["reference_version"], "v1");
    assert_eq!(drift["reference_size"], 20);
    assert_eq!(drift["current_size"], 20);
    assert_eq!(
        drift["pinned"],
        serde_json::json!({"at": 85 * SECOND, "actor": "ana", "note": "accepted shift", "size": 20})
    );
    // Half right before and after: no accuracy drop against the pinned reference.
    let drop = test_named(drift, "accuracy_drop");
    assert_eq!(drop["drifted"], false, "{drop}");
    assert!(drop["statistic"].as_f64().unwrap().abs() < 0.3, "{drop}");
    // The current window restarted at the pin: it holds only pairs after it.
    assert_eq!(snapshot["window"]["matched"], 20);
}

#[test]
fn pin_now_replaces_a_registered_baseline_until_the_registry_changes_it() {
    // v2 is registered with v1 as its baseline and drifts from it; pinned now at 95 s it
    // becomes its own reference, and a later registration of another version (which
    // re-applies the registry to every version of the model) does not undo the pin.
    let mut pinned = registration(Some("v2"));
    pinned.baseline_version = Some("v1".into());
    let mut epochs = two_versions(vec![(45 * SECOND, MlEvent::Register(Box::new(pinned)))]);
    epochs.push(Epoch::new(
        95 * SECOND,
        vec![(95 * SECOND, pin(Some("v2"), "ops"))],
    ));
    for index in 40..80u64 {
        let ts = (60 + index) * SECOND;
        let id = format!("b{index}");
        let actual = if index % 2 == 0 { "yes" } else { "no" };
        let mut data = vec![
            (ts, versioned(&id, "v2", "yes", 0.9)),
            (ts, outcome(&id, actual, None)),
        ];
        if index == 50 {
            let mut other = registration(Some("v3"));
            other.owner = Some("someone".into());
            data.push((ts, MlEvent::Register(Box::new(other))));
        }
        epochs.push(Epoch::new(ts, data));
    }
    let out = run(config(60), epochs);
    let pins = pins(&out);
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert_eq!(pins[0]["pinned"], true);
    assert_eq!(pins[0]["previous_reference"], "v1");
    assert_eq!(pins[0]["size"], 20);
    let v2 = version(&out, "v2");
    let drift = &v2["drift"];
    assert_eq!(drift["reference_version"], "v2", "{drift}");
    assert_eq!(drift["pinned"]["at"], 95 * SECOND);
    assert_eq!(drift["pinned"]["actor"], "ops");
    assert_eq!(drift["drifted"], false, "{drift}");
    assert_eq!(test_named(drift, "accuracy_drop")["drifted"], false);
    assert_eq!(v2["health"], "ok");
    // The registration still names v1; the pin is what is in force.
    assert_eq!(v2["registration"]["baseline_version"], "v1");
    assert_eq!(out.of_kind("model_registered").len(), 2);
    // v2 drifted from v1 before the pin, and the alert resolved at it.
    let resolved = out.of_kind("alert").into_iter().any(|alert| {
        alert["rule_id"] == DRIFT_RULE
            && alert["state"] == "resolved"
            && alert["at"] == 95 * SECOND
            && alert["key"].to_string().contains("\"v2\"")
    });
    assert!(resolved, "{:?}", out.of_kind("alert"));
}

#[test]
fn order_key_prefixes_agree_with_the_full_order() {
    let ids = [
        "",
        "a",
        "a\0",
        "a\0\0b",
        "ab",
        "b",
        "p1",
        "p10",
        "p2",
        "p100000000000000",
        "p1000000000000000",
        "p1000000000000001",
        "p100000000000000\0",
        "ü",
        "z\u{7f}",
    ];
    let keys: Vec<OrderKey> = ids
        .iter()
        .map(|id| OrderKey::Pair((*id).into()))
        .chain([OrderKey::Command(0), OrderKey::Command(7)])
        .collect();
    for a in &keys {
        for b in &keys {
            let (pa, pb) = (a.prefix(), b.prefix());
            if pa != pb {
                assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} vs {b:?}");
            }
            if a == b {
                assert_eq!(pa, pb);
            }
        }
    }
}

#[test]
fn counts_summed_by_the_join_equal_recording_each_prediction_and_pair() {
    // Latencies over six orders of magnitude and confidences all over [0, 1], flushed in
    // batches of uneven size: the tracker's sums give the latency summary, confidence
    // histogram and calibration bins that recording every prediction and pair gives.
    let config = config(60);
    let bins = config.bins;
    let mut join = join::JoinState::new(60 * SECOND, bins);
    let key = ModelKey {
        model_id: "m1".into(),
        model_version: "v1".into(),
    };
    let mut state = ModelState::new(key.clone(), &config);
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let mut latency_sum = 0u128;
    let mut confidence_bins = vec![0u64; bins];
    let mut calibration = stats::Calibration::new(bins);
    let labels = ["a", "b", "c"];
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    for index in 0..3000u64 {
        let latency_ms = rng.next() * 10f64.powi((index % 7) as i32 - 2);
        let confidence = if index % 11 == 0 { 1.0 } else { rng.next() };
        let predicted = labels[rng.below(3) as usize];
        let actual = labels[rng.below(3) as usize];
        let id = format!("p{index}");
        join.apply(
            index,
            MlEvent::Prediction(PredictionEvent {
                model_id: "m1".into(),
                model_version: Some("v1".into()),
                prediction_id: id.as_str().into(),
                predicted: predicted.into(),
                confidence,
                latency_ms,
                features: Vec::new(),
                session_id: None,
            }),
            &mut out,
        );
        let micros = ((latency_ms * 1000.0).round().max(1.0) as u64).min(histogram.high());
        histogram.saturating_record(micros);
        latency_sum += stats::fixed(latency_ms);
        confidence_bins[((confidence * bins as f64) as usize).min(bins - 1)] += 1;
        if index % 3 != 0 {
            join.apply(index + 1, outcome(&id, actual, None), &mut out);
            calibration.record(confidence, predicted == actual);
        }
        if rng.below(17) == 0 {
            join.flush(&mut out);
        }
    }
    join.flush(&mut out);
    for input in &out {
        if let ModelInput::Counted { counts, .. } = input {
            state.add_counts(counts);
        }
    }
    let snapshot = state.snapshot(None);
    let latency = snapshot.latency.unwrap();
    let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    assert_eq!(latency.p50, at(0.5));
    assert_eq!(latency.p95, at(0.95));
    assert_eq!(latency.p99, at(0.99));
    assert_eq!(latency.max, histogram.max() as f64 / 1000.0);
    assert_eq!(latency.mean, stats::unfixed(latency_sum) / 3000.0);
    assert_eq!(snapshot.predictions, 3000);
    assert_eq!(snapshot.matched, 2000);
    assert_eq!(snapshot.confidence.histogram, confidence_bins);
    assert_eq!(snapshot.confidence.reliability, calibration.bins());
    assert_eq!(
        snapshot.confidence.expected_calibration_error,
        calibration.expected_calibration_error()
    );
}

/// How many predictions expired unmatched and how many orphan outcomes expired, in `out`.
fn expiries(out: &[ModelInput]) -> (usize, usize) {
    let expired = out
        .iter()
        .filter(|input| matches!(input, ModelInput::Expired { .. }))
        .count();
    let orphans = out
        .iter()
        .filter(|input| matches!(input, ModelInput::OrphanExpired { .. }))
        .count();
    (expired, orphans)
}
