use super::*;
use crate::model::{SessionEvent, SessionKind};
use crate::operators::TrackModels;
use crate::testing::{run_epochs, Epoch};

/// A deterministic pseudo-random source (64-bit LCG), so populations are fixed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Session `index` of the population: troubled sessions (30%) err on 60% of their
/// operations and fail 90% of the time; healthy ones err on 5% and fail 5% of the time.
/// Returns (events, succeeded, troubled).
fn session(index: u64, start: u64, rng: &mut Lcg) -> (Vec<(u64, SessionEvent)>, bool, bool) {
    let troubled = rng.next() < 0.3;
    let error_rate = if troubled { 0.6 } else { 0.05 };
    let operations = 4 + (rng.next() * 8.0) as u64;
    let id: Id = format!("s{index:04}").into();
    let event = |kind, success: Option<bool>| SessionEvent {
        session_id: id.clone(),
        user_id: None,
        kind,
        operation: matches!(kind, SessionKind::Operation).then(|| Id::from("edit")),
        duration_ms: matches!(kind, SessionKind::Operation).then_some(200.0),
        tokens: None,
        success,
        message: None,
    };
    let mut events = vec![(start, event(SessionKind::Started, None))];
    for op in 0..operations {
        let ok = rng.next() >= error_rate;
        events.push((
            start + 1_000 * (op + 1),
            event(SessionKind::Operation, Some(ok)),
        ));
    }
    let failed = if troubled {
        rng.next() < 0.9
    } else {
        rng.next() < 0.05
    };
    let kind = if failed {
        SessionKind::Failed
    } else {
        SessionKind::Completed
    };
    events.push((start + 1_000 * (operations + 1), event(kind, Some(!failed))));
    (events, !failed, troubled)
}

/// Epochs of 1 s holding the events of `count` overlapping sessions (one starts every 2 s).
fn population(count: u64, seed: u64) -> (Vec<Epoch<(u64, SessionEvent)>>, Vec<bool>) {
    let mut rng = Lcg(seed);
    let mut by_time: BTreeMap<u64, Vec<(u64, SessionEvent)>> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for index in 0..count {
        let (events, succeeded, _) = session(index, 1_000 + index * 2_000, &mut rng);
        outcomes.push(succeeded);
        for (ts, event) in events {
            by_time.entry(ts).or_default().push((ts, event));
        }
    }
    let epochs = by_time
        .into_iter()
        .map(|(time, data)| Epoch::new(time, data))
        .collect();
    (epochs, outcomes)
}

fn config() -> PredictConfig {
    PredictConfig {
        trainer: TrainerConfig {
            min_training: 30,
            retrain_every: 40,
            ..TrainerConfig::default()
        },
        min_operations: 3,
        ..PredictConfig::default()
    }
}

/// Session id of the marker events that stand for retrain requests in these tests.
const RETRAIN_MARKER: &str = "retrain-request";

fn build(
    events: timely::dataflow::StreamVec<'_, Time, (u64, SessionEvent)>,
) -> timely::dataflow::StreamVec<'_, Time, Update> {
    use timely::dataflow::operators::vec::{Filter, Map};
    // Marker events become retrain requests; the rest are the sessions.
    let requests = events
        .clone()
        .filter(|(_, event)| event.session_id == RETRAIN_MARKER)
        .map(|(ts, _)| (ts, Id::from("tester")));
    let sessions = events.filter(|(_, event)| event.session_id != RETRAIN_MARKER);
    let (predictions, ml) = sessions.predict_sessions("test", &config(), requests);
    // The tracked predictions and outcomes go to the real ML tracker.
    let (models, _) = ml.track_models("test", &crate::operators::TrackModelsConfig::default());
    use timely::dataflow::operators::Concatenate;
    predictions.scope().concatenate([predictions, models])
}

#[test]
fn learns_a_known_rule_well_above_the_base_rate_identically_on_1_and_4_workers() {
    let (epochs, outcomes) = population(400, 7);
    let out = run_epochs(build, epochs);
    let base = outcomes.iter().filter(|success| **success).count() as f64 / outcomes.len() as f64;
    let majority = base.max(1.0 - base);

    let models = out.of_kind("success_model");
    assert!(!models.is_empty(), "a model was trained");
    assert_eq!(models[0]["reason"], "initial");
    assert!(models.len() >= 3, "retrained on schedule: {}", models.len());
    // Error rate pushes towards failure.
    let error_rate_weight = models[0]["coefficients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == "error_rate")
        .unwrap()[1]
        .as_f64()
        .unwrap();
    assert!(error_rate_weight < 0.0, "{error_rate_weight}");

    // Tracked predictions vs outcomes, as the ML tracker saw them: the last snapshot of
    // each version holds its cumulative matched pairs and accuracy.
    let mut last: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for snapshot in out.of_kind("model_metrics") {
        assert_eq!(snapshot["model_id"], MODEL_ID);
        let version = snapshot["model_version"].as_str().unwrap().to_owned();
        let events = snapshot["events"].as_u64().unwrap();
        if last
            .get(&version)
            .is_none_or(|held| held["events"].as_u64().unwrap() <= events)
        {
            last.insert(version, snapshot);
        }
    }
    let (mut matched, mut correct, mut predictions) = (0.0, 0.0, 0);
    for snapshot in last.values() {
        let performance = &snapshot["cumulative"];
        let pairs = performance["matched"].as_f64().unwrap();
        matched += pairs;
        correct += pairs * performance["accuracy"].as_f64().unwrap_or(0.0);
        predictions += snapshot["predictions"].as_u64().unwrap();
        assert_eq!(
            snapshot["pending"].as_u64().unwrap(),
            0,
            "every tracked session ended"
        );
    }
    assert!(predictions > 250, "{predictions} tracked predictions");
    assert_eq!(matched as u64, predictions);
    let accuracy = correct / matched;
    // Troubled sessions fail 90%, healthy succeed 95%: ~0.93 is reachable; the base rate
    // (majority class) is ~0.7.
    assert!(
        accuracy > majority + 0.1 && accuracy > 0.8,
        "accuracy {accuracy:.3} vs majority class {majority:.3}"
    );
}

#[test]
fn cold_start_is_explicit_and_tracks_nothing() {
    let (epochs, _) = population(10, 3);
    let out = run_epochs(build, epochs);
    assert!(out.of_kind("success_model").is_empty());
    assert!(
        out.of_kind("model_metrics").is_empty(),
        "no ML events before a model"
    );
    let predictions = out.of_kind("session_prediction");
    assert!(!predictions.is_empty());
    for prediction in predictions {
        if prediction["status"] != "ended" {
            assert_eq!(prediction["status"], "cold_start");
            assert!(prediction["success_probability"].is_null());
        }
    }
}

#[test]
fn completion_estimate_uses_comparable_sessions() {
    let mut trainer = Trainer::default();
    let config = TrainerConfig::default();
    for (operations, duration) in [
        (2, 5_000),
        (5, 10_000),
        (6, 20_000),
        (8, 30_000),
        (9, 40_000),
        (10, 50_000),
        (12, 60_000),
    ] {
        trainer.add(
            Completed {
                features: [0.0; 7],
                success: true,
                operations,
                duration_ms: duration,
            },
            &config,
        );
    }
    let state = SessionState {
        session_id: "s".into(),
        user_id: None,
        status: SessionStatus::Active,
        started_at: 0,
        last_activity: 10_000,
        ended_at: None,
        operations: 5,
        errors: 0,
        error_rate: 0.0,
        tokens: 0,
        duration_mean_ms: None,
        duration_p95_ms: None,
        last_operation: None,
        last_error: None,
        events: 6,
    };
    let estimate = trainer.completion(&state, &config).unwrap();
    // Comparable: durations 10k..60k (6 sessions) minus 10k elapsed: 0,10k,..,50k.
    assert_eq!(estimate.comparable, 6);
    assert_eq!(estimate.remaining_ms, 20_000.0);
    assert_eq!(estimate.remaining_low_ms, 0.0);
    assert_eq!(estimate.remaining_high_ms, 50_000.0);
    let far = SessionState {
        operations: 11,
        ..state
    };
    assert!(
        trainer.completion(&far, &config).is_none(),
        "too few comparable"
    );
}

/// The completion estimate read from the sorted index equals the definition (filter the
/// remembered sessions, sort, nearest rank) on random histories with evictions and ties.
#[test]
fn completion_estimate_equals_its_definition_after_evictions() {
    let config = TrainerConfig {
        training_window: 50,
        min_comparable: 3,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::default();
    let mut remembered: VecDeque<(u64, u64)> = VecDeque::new();
    let mut rng = Lcg(7);
    let mut checked = 0;
    for _ in 0..400 {
        let operations = (rng.next() * 12.0) as u64;
        let duration_ms = (rng.next() * 20.0) as u64 * 1_000;
        trainer.add(
            Completed {
                features: [0.0; 7],
                success: true,
                operations,
                duration_ms,
            },
            &config,
        );
        remembered.push_back((operations, duration_ms));
        if remembered.len() > config.training_window {
            remembered.pop_front();
        }
        let operations = (rng.next() * 12.0) as u64;
        let elapsed = (rng.next() * 20.0) as u64 * 1_000;
        let state = SessionState {
            session_id: "s".into(),
            user_id: None,
            status: SessionStatus::Active,
            started_at: 1_000,
            last_activity: 1_000 + elapsed,
            ended_at: None,
            operations,
            errors: 0,
            error_rate: 0.0,
            tokens: 0,
            duration_mean_ms: None,
            duration_p95_ms: None,
            last_operation: None,
            last_error: None,
            events: operations + 1,
        };
        let mut remaining: Vec<u64> = remembered
            .iter()
            .filter(|(ops, duration)| *ops >= operations && *duration >= elapsed)
            .map(|(_, duration)| duration - elapsed)
            .collect();
        remaining.sort_unstable();
        let estimate = trainer.completion(&state, &config);
        if remaining.len() < config.min_comparable {
            assert!(estimate.is_none(), "{remaining:?} {estimate:?}");
            continue;
        }
        let rank = |quantile: f64| {
            let position = ((quantile * remaining.len() as f64).ceil() as usize).max(1) - 1;
            remaining[position.min(remaining.len() - 1)] as f64
        };
        let estimate = estimate.expect("enough comparable sessions");
        assert_eq!(estimate.comparable, remaining.len() as u64);
        assert_eq!(
            (
                estimate.remaining_low_ms,
                estimate.remaining_ms,
                estimate.remaining_high_ms
            ),
            (rank(0.1), rank(0.5), rank(0.9))
        );
        checked += 1;
    }
    assert!(checked > 100, "only {checked} estimates compared");
}

/// An ended session is learnt from its features at the decision point (the first snapshot
/// with `min_operations` operations, where its tracked prediction is made), not from its
/// final state: the model is trained on what it is asked to score.
#[test]
fn ended_sessions_are_learnt_from_their_decision_point_features() {
    let config = PredictConfig::default();
    let snapshot = |operations: u64, errors: u64, at: u64, status| SessionState {
        session_id: "s1".into(),
        user_id: None,
        status,
        started_at: 0,
        last_activity: at,
        ended_at: (status != SessionStatus::Active).then_some(at),
        operations,
        errors,
        error_rate: errors as f64 / operations.max(1) as f64,
        tokens: 10 * operations,
        duration_mean_ms: Some(100.0),
        duration_p95_ms: Some(200.0),
        last_operation: None,
        last_error: None,
        events: operations + errors + 1,
    };
    let mut predictor = Predictor::default();
    let early = snapshot(2, 0, 1_000, SessionStatus::Active);
    let decision = snapshot(config.min_operations, 0, 2_000, SessionStatus::Active);
    let later = snapshot(8, 1, 5_000, SessionStatus::Active);
    let ended = snapshot(9, 6, 9_000, SessionStatus::Failed);
    for (at, state) in [
        (1_000, &early),
        (2_000, &decision),
        (5_000, &later),
        (9_000, &ended),
    ] {
        predictor.step(vec![state.clone()], at, false, &config);
    }
    let remembered: Vec<&Completed> = predictor.trainer().remembered().collect();
    assert_eq!(remembered.len(), 1);
    assert_eq!(remembered[0].features, features(&decision));
    assert_ne!(remembered[0].features, features(&ended));
    assert!(!remembered[0].success);
    // The completion estimate still learns the session's real length and operations.
    assert_eq!(
        (remembered[0].operations, remembered[0].duration_ms),
        (9, 9_000)
    );
}

/// A retrain request in the event log retrains the model at its timestamp, reported with
/// reason `requested`, the same on 1 and 4 workers; a request before any ended session
/// trains nothing (a fit needs both outcomes).
#[test]
fn a_retrain_request_trains_a_new_version_at_its_timestamp() {
    let (mut epochs, _) = population(120, 11);
    let marker = |ts: u64| {
        (
            ts,
            SessionEvent {
                session_id: RETRAIN_MARKER.into(),
                user_id: None,
                kind: SessionKind::Status,
                operation: None,
                duration_ms: None,
                tokens: None,
                success: None,
                message: None,
            },
        )
    };
    // One request at the very start (nothing to learn from yet), one late in the run.
    let last = epochs.last().map_or(0, |epoch| epoch.time);
    let late = last - 20_000;
    epochs.insert(0, Epoch::new(500, vec![marker(500)]));
    match epochs.iter_mut().find(|epoch| epoch.time == late) {
        Some(epoch) => epoch.data.push(marker(late)),
        None => {
            let at = epochs.partition_point(|epoch| epoch.time < late);
            epochs.insert(at, Epoch::new(late, vec![marker(late)]));
        }
    }
    let out = run_epochs(build, epochs);
    let models = out.of_kind("success_model");
    let requested: Vec<_> = models
        .iter()
        .filter(|model| model["reason"] == "requested")
        .collect();
    assert_eq!(requested.len(), 1, "{models:#?}");
    assert_eq!(requested[0]["at"], late);
    assert_eq!(
        models[0]["reason"], "initial",
        "the early request trained nothing"
    );
    let versions: Vec<_> = models
        .iter()
        .map(|model| model["version"].clone())
        .collect();
    let position = models
        .iter()
        .position(|model| model["reason"] == "requested")
        .unwrap_or(0);
    assert_eq!(versions[position], format!("v{}", position + 1));
}
