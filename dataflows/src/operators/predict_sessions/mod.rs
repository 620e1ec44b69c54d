//! `predict_sessions`: session success probability (logistic regression, linfa) and
//! completion-time estimates, with the predictions and outcomes recorded into the ML
//! tracker as model [`MODEL_ID`].
//!
//! ```text
//!   (ts, SessionEvent) ─exchange(all → worker 0)─► PredictSessions ─► SessionPrediction,
//!                                                        │            SuccessModel updates
//!                                                        └──► (ts, MlEvent) prediction/outcome
//!                                                             (into TrackModels' input)
//! ```
//!
//! **Why one worker.** Training needs every completed session, and determinism needs the
//! same sessions in the same order however many workers run. All session events go to
//! worker 0, which buffers them per timestamp and handles a timestamp only once the
//! frontier has passed it: it applies them to its own session trackers (the pure core of
//! `track_sessions`, so the features equal the tracked state), then, in a fixed order,
//! scores the running sessions that changed (sorted by id) with the current model,
//! records the ended ones (sorted by id), and retrains if due. Same events → same model →
//! same predictions, on 1 or N workers. (The tracker's own snapshots are not used: which
//! snapshot leaves at which time depends on arrival order across workers.) Session events
//! are a small share of the traffic and scoring is a dot product over seven numbers, so
//! one worker keeps up; a (re)training (a few ms on 2,000 sessions) lands on worker 0.
//!
//! **Cold start.** Until `min_training` sessions have ended with both outcomes present,
//! predictions carry `status: cold_start` and no probability, and nothing is recorded in
//! the ML tracker.
//!
//! **Tracked predictions.** Each running session gets at most one tracked prediction
//! (id `session-success:<session id>`), made at its first snapshot with at least
//! `min_operations` operations while a model exists; its outcome follows when the session
//! completes (`success`) or fails (`failure`). The live prediction (topic `sessions/{id}`)
//! is emitted when what it shows changes: status, probability (to 1%) or remaining time
//! (to 1 s) — not for every session event.
//!
//! **Retraining.** Initially, then every `retrain_every` completions, on drift (live
//! accuracy of the last `drift_window` tracked outcomes below the training accuracy by
//! `drift_drop`, relative), and on request (a retrain request in the event log, handled at
//! its timestamp after that timestamp's sessions). All in event time, so replays retrain at
//! the same points.
//!
//! Errors: none leave this operator; a fit that fails (one outcome only) keeps the old
//! model.

pub mod model;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use rustc_hash::FxBuildHasher;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use crate::model::{
    Id, MlEvent, OutcomeEvent, PredictionEvent, PredictionStatus, SessionEvent, SessionPrediction,
    SessionState, SessionStatus, SuccessModelReport, TrainReason, Update,
};
use crate::operators::track_sessions::SessionTracker;
use crate::Time;

use self::model::{features, label};
pub use self::model::{Completed, SuccessModel, Trainer, TrainerConfig, FEATURES};

/// The model id under which megamind tracks its own session success model.
pub const MODEL_ID: &str = "session-success";

/// How sessions are predicted.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictConfig {
    /// Training schedule and estimates.
    pub trainer: TrainerConfig,
    /// A running session gets its tracked prediction once it has this many operations.
    pub min_operations: u64,
    /// Tracked predictions awaiting an outcome; beyond it the oldest is forgotten (the ML
    /// tracker then expires it as unanswered).
    pub max_tracked: usize,
    /// Running sessions followed; beyond it the least recently active tenth is forgotten.
    pub max_sessions: usize,
}

impl Default for PredictConfig {
    fn default() -> Self {
        Self {
            trainer: TrainerConfig::default(),
            min_operations: 3,
            max_tracked: 10_000,
            max_sessions: 50_000,
        }
    }
}

/// The pure core: scores snapshots of one timestamp, records outcomes, retrains.
#[derive(Debug, Default)]
pub struct Predictor {
    trainer: Trainer,
    /// Session → (event time of its tracked prediction, predicted success).
    tracked: HashMap<Id, (u64, bool), FxBuildHasher>,
    /// Features of each running session at its first snapshot with `min_operations`
    /// operations: the point where its tracked prediction is made, so the model is
    /// trained on what it is asked to score rather than on final states.
    /// With the event time it was taken, for eviction.
    at_decision: HashMap<Id, (u64, [f64; 7]), FxBuildHasher>,
    /// Recently ended sessions (so a late snapshot of an ended session is not learnt twice).
    ended: HashSet<Id, FxBuildHasher>,
    ended_order: VecDeque<Id>,
    /// What was last emitted per running session (status, probability in hundredths,
    /// remaining seconds, event time): a snapshot that would show the same is not emitted
    /// again, so a busy session does not double its topic's traffic.
    emitted: HashMap<Id, Shown, FxBuildHasher>,
}

/// What a live prediction showed: status, probability in hundredths, remaining seconds,
/// and the event time it was shown at.
type Shown = (PredictionStatus, Option<i64>, Option<i64>, u64);

/// What the core produces for one timestamp.
#[derive(Debug, Default, PartialEq)]
pub struct Predicted {
    /// Updates (session predictions, model reports).
    pub updates: Vec<Update>,
    /// Events for the ML tracker.
    pub ml: Vec<(u64, MlEvent)>,
}

impl Predictor {
    /// The trainer (model and remembered sessions).
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// Handles the session snapshots of one timestamp (any order; sorted here); with
    /// `requested`, retrains afterwards even when no schedule or drift asks for it.
    pub fn step(
        &mut self,
        mut states: Vec<SessionState>,
        at: Time,
        requested: bool,
        config: &PredictConfig,
    ) -> Predicted {
        states.sort_by(|left, right| {
            (&left.session_id, left.events, left.last_activity).cmp(&(
                &right.session_id,
                right.events,
                right.last_activity,
            ))
        });
        // Keep the latest snapshot per session.
        let mut latest: Vec<SessionState> = Vec::with_capacity(states.len());
        for state in states {
            match latest.last_mut() {
                Some(last) if last.session_id == state.session_id => *last = state,
                _ => latest.push(state),
            }
        }
        let mut out = Predicted::default();
        let (running, ended): (Vec<_>, Vec<_>) = latest
            .into_iter()
            .partition(|state| state.status == SessionStatus::Active);
        for state in running {
            self.score(&state, config, &mut out);
        }
        for state in ended {
            self.finish(&state, config, &mut out);
        }
        let reason = if requested {
            Some(TrainReason::Requested)
        } else {
            self.trainer.due(&config.trainer)
        };
        if let Some(reason) = reason {
            if let Some(model) = self.trainer.train(&config.trainer) {
                out.updates
                    .push(Update::SuccessModel(Box::new(SuccessModelReport {
                        version: format!("v{}", model.version).into(),
                        at,
                        reason,
                        trained_on: model.trained_on,
                        base_rate: model.base_rate,
                        training_accuracy: model.training_accuracy,
                        intercept: model.intercept,
                        coefficients: FEATURES
                            .iter()
                            .zip(model.weights)
                            .map(|(name, weight)| (Id::from(*name), weight))
                            .collect(),
                    })));
            }
        }
        out
    }

    fn score(&mut self, state: &SessionState, config: &PredictConfig, out: &mut Predicted) {
        if self.ended.contains(&state.session_id) {
            return;
        }
        let row = features(state);
        if state.operations >= config.min_operations
            && !self.at_decision.contains_key(&state.session_id)
        {
            self.at_decision
                .insert(state.session_id.clone(), (state.last_activity, row));
            forget_oldest(&mut self.at_decision, config.max_sessions, |entry| entry.0);
        }
        let model = self.trainer.model();
        let probability = model.map(|model| model.probability(&row));
        let predicted_success = probability.map(|probability| probability >= 0.5);
        let confidence = probability.map(|probability| probability.max(1.0 - probability));
        let version: Option<Id> = model.map(|model| format!("v{}", model.version).into());
        let named: Vec<(Id, f64)> = FEATURES
            .iter()
            .zip(row)
            .map(|(name, value)| (Id::from(*name), value))
            .collect();
        if let (Some(success), Some(confidence), Some(version)) =
            (predicted_success, confidence, version.clone())
        {
            if state.operations >= config.min_operations
                && !self.tracked.contains_key(&state.session_id)
            {
                self.tracked
                    .insert(state.session_id.clone(), (state.last_activity, success));
                out.ml.push((
                    state.last_activity,
                    MlEvent::Prediction(PredictionEvent {
                        model_id: MODEL_ID.into(),
                        model_version: Some(version),
                        prediction_id: prediction_id(&state.session_id),
                        predicted: label(success),
                        confidence,
                        // Scoring runs inside the dataflow; wall-clock latency would make
                        // outputs differ between replays. `megamind bench --mode insights`
                        // measures it instead.
                        latency_ms: 0.0,
                        features: named.clone(),
                        session_id: Some(state.session_id.clone()),
                    }),
                ));
                forget_oldest(&mut self.tracked, config.max_tracked, |entry| entry.0);
            }
        }
        let status = if probability.is_some() {
            PredictionStatus::Predicted
        } else {
            PredictionStatus::ColdStart
        };
        let completion = self.trainer.completion(state, &config.trainer);
        let shown = (
            status,
            probability.map(|probability| (probability * 100.0).round() as i64),
            completion
                .as_ref()
                .map(|estimate| (estimate.remaining_ms / 1000.0).round() as i64),
            state.last_activity,
        );
        let unchanged = self
            .emitted
            .get(&state.session_id)
            .is_some_and(|last| (last.0, last.1, last.2) == (shown.0, shown.1, shown.2));
        if unchanged {
            return;
        }
        self.emitted.insert(state.session_id.clone(), shown);
        forget_oldest(&mut self.emitted, config.max_sessions, |last| last.3);
        out.updates
            .push(Update::SessionPrediction(Box::new(SessionPrediction {
                session_id: state.session_id.clone(),
                at: state.last_activity,
                status,
                success_probability: probability,
                predicted: predicted_success.map(label),
                confidence,
                model_version: version,
                completion,
                outcome: None,
                features: named,
            })));
    }

    fn finish(&mut self, state: &SessionState, config: &PredictConfig, out: &mut Predicted) {
        let Some(mut completed) = Completed::of(state) else {
            return;
        };
        if !self.ended.insert(state.session_id.clone()) {
            return;
        }
        let final_features = completed.features;
        if let Some((_, row)) = self.at_decision.remove(&state.session_id) {
            completed.features = row;
        }
        self.emitted.remove(&state.session_id);
        self.ended_order.push_back(state.session_id.clone());
        while self.ended_order.len() > config.trainer.training_window.max(1) * 2 {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
        let at = state.ended_at.unwrap_or(state.last_activity);
        if let Some((_, predicted)) = self.tracked.remove(&state.session_id) {
            self.trainer
                .record_live(predicted == completed.success, &config.trainer);
            out.ml.push((
                at,
                MlEvent::Outcome(OutcomeEvent {
                    prediction_id: prediction_id(&state.session_id),
                    actual: label(completed.success),
                    model_id: Some(MODEL_ID.into()),
                }),
            ));
        }
        let model = self.trainer.model();
        let probability = model.map(|model| model.probability(&final_features));
        out.updates
            .push(Update::SessionPrediction(Box::new(SessionPrediction {
                session_id: state.session_id.clone(),
                at,
                status: PredictionStatus::Ended,
                success_probability: probability,
                predicted: probability.map(|probability| label(probability >= 0.5)),
                confidence: probability.map(|probability| probability.max(1.0 - probability)),
                model_version: model.map(|model| format!("v{}", model.version).into()),
                completion: None,
                outcome: Some(label(completed.success)),
                features: FEATURES
                    .iter()
                    .zip(final_features)
                    .map(|(name, value)| (Id::from(*name), value))
                    .collect(),
            })));
        self.trainer.add(completed, &config.trainer);
    }
}

/// Keeps `map` at most `max` entries: beyond it, forgets the oldest by `age` (at least a
/// tenth of `max` at once, so the sort is amortised over many inserts).
fn forget_oldest<V>(
    map: &mut HashMap<Id, V, FxBuildHasher>,
    max: usize,
    mut age: impl FnMut(&mut V) -> u64,
) {
    let max = max.max(1);
    if map.len() <= max {
        return;
    }
    let mut by_age: Vec<(u64, Id)> = map
        .iter_mut()
        .map(|(id, value)| (age(value), id.clone()))
        .collect();
    by_age.sort();
    let drop = (map.len() - max).max(max / 10);
    for (_, id) in by_age.into_iter().take(drop) {
        map.remove(&id);
    }
}

/// The prediction id of a session's tracked prediction.
pub fn prediction_id(session_id: &str) -> Id {
    format!("{MODEL_ID}:{session_id}").into()
}

/// Session success prediction.
pub trait PredictSessions<'scope> {
    /// Scores running sessions with the success model, estimates their remaining time,
    /// trains the model on ended sessions, and records tracked predictions and their
    /// outcomes for the ML tracker (see the module docs for the design).
    ///
    /// # Inputs and outputs
    /// `self`: session events with their event time; `requests`: retrain requests (who
    /// asked) with theirs. Returns
    /// `(SessionPrediction and SuccessModel updates, (ts, MlEvent) for TrackModels)`.
    ///
    /// # Frontier behaviour
    /// Events are held until the frontier passes their timestamp, then handled in a
    /// fixed order; outputs carry that timestamp.
    ///
    /// # State
    /// At most `max_sessions` running-session trackers (least recently active forgotten
    /// first; an ended session's tracker is dropped at once), `training_window` ended
    /// sessions, `max_tracked` pending tracked predictions (oldest forgotten first) and
    /// `2 × training_window` ended ids, and one last-emitted record per running session
    /// (at most `max_sessions`, oldest tenth dropped first).
    fn predict_sessions(
        self,
        name: &str,
        config: &PredictConfig,
        requests: StreamVec<'scope, Time, (Time, Id)>,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, (Time, MlEvent)>,
    );
}

/// Events held for one timestamp, with its capability, and whether a retrain was requested
/// at it.
type Held = (Capability<Time>, Vec<(Time, SessionEvent)>, bool);

#[derive(Clone)]
enum Output {
    Update(Update),
    Ml(Time, MlEvent),
}

impl<'scope> PredictSessions<'scope> for StreamVec<'scope, Time, (Time, SessionEvent)> {
    fn predict_sessions(
        self,
        name: &str,
        config: &PredictConfig,
        requests: StreamVec<'scope, Time, (Time, Id)>,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, (Time, MlEvent)>,
    ) {
        let config = config.clone();
        let exchange = Exchange::new(|_: &(Time, SessionEvent)| 0u64);
        let to_first = Exchange::new(|_: &(Time, Id)| 0u64);
        let results: StreamVec<'scope, Time, Output> = self.binary_frontier(
            requests,
            exchange,
            to_first,
            &format!("PredictSessions({name})"),
            move |_, _| {
                let mut predictor = Predictor::default();
                let mut trackers: HashMap<Id, SessionTracker, FxBuildHasher> = HashMap::default();
                let mut pending: BTreeMap<Time, Held> = BTreeMap::new();
                move |(input, input_frontier), (asks, asks_frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        let entry = pending.entry(time).or_insert_with(|| {
                            (cap.delayed(&time, output.output_index()), Vec::new(), false)
                        });
                        entry.1.append(data);
                    });
                    asks.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        let entry = pending.entry(time).or_insert_with(|| {
                            (cap.delayed(&time, output.output_index()), Vec::new(), false)
                        });
                        entry.2 |= !data.is_empty();
                        data.clear();
                    });
                    while let Some(entry) = pending.first_entry() {
                        let time = *entry.key();
                        if input_frontier.less_equal(&time) || asks_frontier.less_equal(&time) {
                            break;
                        }
                        let (cap, mut events, requested) = entry.remove();
                        // A session's state is a function of its events as a set, so the
                        // order within a session only needs to be fixed, not meaningful.
                        events.sort_by(|left, right| {
                            (&left.1.session_id, left.0).cmp(&(&right.1.session_id, right.0))
                        });
                        let mut states = Vec::new();
                        let mut changed: Option<Id> = None;
                        for (ts, event) in &events {
                            if changed.as_ref() != Some(&event.session_id) {
                                if let Some(id) = changed.take() {
                                    if let Some(tracker) = trackers.get_mut(&id) {
                                        states.push(tracker.snapshot());
                                    }
                                }
                                changed = Some(event.session_id.clone());
                            }
                            trackers
                                .entry(event.session_id.clone())
                                .or_insert_with(|| {
                                    SessionTracker::new(event.session_id.clone(), *ts)
                                })
                                .apply(*ts, event, 0, 1024);
                        }
                        if let Some(id) = changed.take() {
                            if let Some(tracker) = trackers.get_mut(&id) {
                                states.push(tracker.snapshot());
                            }
                        }
                        for state in &states {
                            if state.status != SessionStatus::Active {
                                trackers.remove(&state.session_id);
                            }
                        }
                        forget_oldest(&mut trackers, config.max_sessions, |tracker| {
                            tracker.snapshot().last_activity
                        });
                        let result = predictor.step(states, time, requested, &config);
                        let mut session = output.session(&cap);
                        for update in result.updates {
                            session.give(Output::Update(update));
                        }
                        for (ts, event) in result.ml {
                            session.give(Output::Ml(ts, event));
                        }
                    }
                }
            },
        );
        let updates = results.clone().unary(Pipeline, "PredictUpdates", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for item in data.drain(..) {
                        if let Output::Update(update) = item {
                            session.give(update);
                        }
                    }
                });
            }
        });
        let ml = results.unary(Pipeline, "PredictMl", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for item in data.drain(..) {
                        if let Output::Ml(ts, event) = item {
                            session.give((ts, event));
                        }
                    }
                });
            }
        });
        (updates, ml)
    }
}

#[cfg(test)]
mod tests;
