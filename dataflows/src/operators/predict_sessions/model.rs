//! The pure core of session success prediction: features of a session snapshot, the
//! logistic model (fitted with linfa-logistic), its training schedule and drift check, and
//! the completion-time estimate. No timely types, no clock.

use std::collections::VecDeque;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};

use crate::model::{CompletionEstimate, Id, SessionState, SessionStatus, TrainReason};

/// Names of the features, in vector order.
pub const FEATURES: [&str; 7] = [
    "operations",
    "errors",
    "error_rate",
    "duration_mean_ms",
    "duration_p95_ms",
    "tokens",
    "elapsed_s",
];

/// The feature vector of a session snapshot. Counts, durations and tokens enter as
/// `ln(1 + x)` so a few long sessions do not dominate; the error rate enters as is.
pub fn features(state: &SessionState) -> [f64; 7] {
    let log = |value: f64| value.max(0.0).ln_1p();
    [
        log(state.operations as f64),
        log(state.errors as f64),
        state.error_rate,
        log(state.duration_mean_ms.unwrap_or(0.0)),
        log(state.duration_p95_ms.unwrap_or(0.0)),
        log(state.tokens as f64),
        log(state.last_activity.saturating_sub(state.started_at) as f64 / 1_000.0),
    ]
}

/// A fitted success model: standardisation plus logistic weights, all plain numbers so
/// scoring is a dot product.
#[derive(Debug, Clone, PartialEq)]
pub struct SuccessModel {
    /// Version number (1, 2, ...).
    pub version: u64,
    /// Feature means of the training set.
    pub means: [f64; 7],
    /// Feature standard deviations of the training set (1 where constant).
    pub scales: [f64; 7],
    /// Intercept of the log-odds of success.
    pub intercept: f64,
    /// Weights of the log-odds of success, on standardised features.
    pub weights: [f64; 7],
    /// Accuracy on its training set.
    pub training_accuracy: f64,
    /// Share of successes in the training set.
    pub base_rate: f64,
    /// Training set size.
    pub trained_on: u64,
}

impl SuccessModel {
    /// Probability that a session with these features succeeds.
    pub fn probability(&self, features: &[f64; 7]) -> f64 {
        let mut log_odds = self.intercept;
        for (index, value) in features.iter().enumerate() {
            log_odds += self.weights[index] * (value - self.means[index]) / self.scales[index];
        }
        1.0 / (1.0 + (-log_odds).exp())
    }

    /// Fits a model on `(features, succeeded)` samples. `None` when both outcomes are not
    /// present or the optimiser fails.
    pub fn fit(version: u64, samples: &[([f64; 7], bool)], max_iterations: u64) -> Option<Self> {
        let successes = samples.iter().filter(|(_, success)| *success).count();
        if successes == 0 || successes == samples.len() {
            return None;
        }
        let count = samples.len() as f64;
        let mut means = [0.0; 7];
        let mut scales = [0.0; 7];
        for (row, _) in samples {
            for index in 0..7 {
                means[index] += row[index] / count;
            }
        }
        for (row, _) in samples {
            for index in 0..7 {
                scales[index] += (row[index] - means[index]).powi(2) / count;
            }
        }
        for scale in &mut scales {
            *scale = if *scale > 1e-12 { scale.sqrt() } else { 1.0 };
        }
        let records = Array2::from_shape_fn((samples.len(), 7), |(row, column)| {
            (samples[row].0[column] - means[column]) / scales[column]
        });
        let targets: Array1<bool> = samples.iter().map(|(_, success)| *success).collect();
        let dataset = Dataset::new(records, targets);
        let fitted = LogisticRegression::default()
            .alpha(1.0)
            .max_iterations(max_iterations)
            .fit(&dataset)
            .ok()?;
        // linfa's probability is for its "positive" class (the larger one).
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let mut weights = [0.0; 7];
        for (index, weight) in fitted.params().iter().enumerate().take(7) {
            weights[index] = sign * weight;
        }
        let mut model = Self {
            version,
            means,
            scales,
            intercept: sign * fitted.intercept(),
            weights,
            training_accuracy: 0.0,
            base_rate: successes as f64 / count,
            trained_on: samples.len() as u64,
        };
        if !model.intercept.is_finite() || model.weights.iter().any(|weight| !weight.is_finite()) {
            return None;
        }
        let correct = samples
            .iter()
            .filter(|(row, success)| (model.probability(row) >= 0.5) == *success)
            .count();
        model.training_accuracy = correct as f64 / count;
        Some(model)
    }
}

/// A completed session as remembered for training and completion estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// Its final features.
    pub features: [f64; 7],
    /// Whether it completed (true) or failed.
    pub success: bool,
    /// Operations it ran.
    pub operations: u64,
    /// Its total duration, ms.
    pub duration_ms: u64,
}

impl Completed {
    /// The record of an ended session (`None` while active).
    pub fn of(state: &SessionState) -> Option<Self> {
        let success = match state.status {
            SessionStatus::Completed => true,
            SessionStatus::Failed => false,
            SessionStatus::Active => return None,
        };
        let end = state.ended_at.unwrap_or(state.last_activity);
        Some(Self {
            features: features(state),
            success,
            operations: state.operations,
            duration_ms: end.saturating_sub(state.started_at),
        })
    }
}

/// Training schedule settings of [`Trainer`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerConfig {
    /// Completed sessions needed (with both outcomes) before the first model.
    pub min_training: usize,
    /// Most recent completed sessions kept for training and estimates.
    pub training_window: usize,
    /// Retrain after this many completions since the last training.
    pub retrain_every: u64,
    /// Live outcomes in the drift check's window.
    pub drift_window: usize,
    /// Retrain when live accuracy falls below training accuracy by this relative share.
    pub drift_drop: f64,
    /// Optimiser iteration cap.
    pub max_iterations: u64,
    /// Comparable sessions needed for a completion estimate.
    pub min_comparable: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            min_training: 30,
            training_window: 2_000,
            retrain_every: 50,
            drift_window: 50,
            drift_drop: 0.15,
            max_iterations: 100,
            min_comparable: 5,
        }
    }
}

/// Completed sessions, the current model, and when to retrain.
#[derive(Debug, Clone, Default)]
pub struct Trainer {
    completed: VecDeque<Completed>,
    /// `(duration_ms, operations)` of the remembered sessions, sorted: the completion
    /// estimate reads the sessions that lasted at least as long from its tail instead of
    /// filtering and sorting all of them per score.
    by_duration: Vec<(u64, u64)>,
    model: Option<SuccessModel>,
    since_training: u64,
    live: VecDeque<bool>,
    versions: u64,
}

impl Trainer {
    /// The current model.
    pub fn model(&self) -> Option<&SuccessModel> {
        self.model.as_ref()
    }

    /// The remembered ended sessions, oldest first.
    pub fn remembered(&self) -> impl Iterator<Item = &Completed> {
        self.completed.iter()
    }

    /// Remembers an ended session (evicting the oldest beyond the training window).
    pub fn add(&mut self, completed: Completed, config: &TrainerConfig) {
        let key = (completed.duration_ms, completed.operations);
        let at = self.by_duration.partition_point(|probe| *probe < key);
        self.by_duration.insert(at, key);
        self.completed.push_back(completed);
        while self.completed.len() > config.training_window.max(1) {
            if let Some(old) = self.completed.pop_front() {
                let key = (old.duration_ms, old.operations);
                let at = self.by_duration.partition_point(|probe| *probe < key);
                if self.by_duration.get(at) == Some(&key) {
                    self.by_duration.remove(at);
                }
            }
        }
        self.since_training += 1;
    }

    /// Records whether a live (tracked) prediction turned out right.
    pub fn record_live(&mut self, correct: bool, config: &TrainerConfig) {
        self.live.push_back(correct);
        while self.live.len() > config.drift_window.max(1) {
            self.live.pop_front();
        }
    }

    /// Why the model should be trained now, if it should.
    pub fn due(&self, config: &TrainerConfig) -> Option<TrainReason> {
        match &self.model {
            None => (self.completed.len() >= config.min_training).then_some(TrainReason::Initial),
            Some(model) => {
                if self.live.len() >= config.drift_window.max(1) {
                    let live = self.live.iter().filter(|correct| **correct).count() as f64
                        / self.live.len() as f64;
                    if live < model.training_accuracy * (1.0 - config.drift_drop) {
                        return Some(TrainReason::Drift);
                    }
                }
                (self.since_training >= config.retrain_every).then_some(TrainReason::Schedule)
            }
        }
    }

    /// Fits a new model on the remembered sessions. Returns it when fitting worked (a
    /// single-outcome history keeps the old model and waits for the next completion).
    pub fn train(&mut self, config: &TrainerConfig) -> Option<&SuccessModel> {
        let samples: Vec<([f64; 7], bool)> = self
            .completed
            .iter()
            .map(|completed| (completed.features, completed.success))
            .collect();
        let model = SuccessModel::fit(self.versions + 1, &samples, config.max_iterations)?;
        self.versions += 1;
        self.since_training = 0;
        self.live.clear();
        self.model = Some(model);
        self.model.as_ref()
    }

    /// Remaining-time estimate for a running session: among remembered completed sessions
    /// that ran at least as many operations and lasted at least as long as this one so
    /// far, the 10th/50th/90th percentiles (nearest rank) of their total duration minus
    /// this session's elapsed time.
    pub fn completion(
        &self,
        state: &SessionState,
        config: &TrainerConfig,
    ) -> Option<CompletionEstimate> {
        let elapsed = state.last_activity.saturating_sub(state.started_at);
        let start = self
            .by_duration
            .partition_point(|(duration, _)| *duration < elapsed);
        let longer = &self.by_duration[start..];
        let comparable = |(_, operations): &&(u64, u64)| *operations >= state.operations;
        let count = longer.iter().filter(comparable).count();
        if count < config.min_comparable.max(1) {
            return None;
        }
        // Nearest-rank positions among the comparable sessions, which `longer` holds in
        // ascending duration order, so one more pass picks all three.
        let position = |quantile: f64| ((quantile * count as f64).ceil() as usize).max(1) - 1;
        let wanted = [position(0.1), position(0.5), position(0.9)];
        let mut picked = [0u64; 3];
        for (rank, (duration, _)) in longer.iter().filter(comparable).enumerate() {
            for (slot, want) in wanted.iter().enumerate() {
                if rank == (*want).min(count - 1) {
                    picked[slot] = duration - elapsed;
                }
            }
            if rank >= wanted[2] {
                break;
            }
        }
        Some(CompletionEstimate {
            remaining_ms: picked[1] as f64,
            remaining_low_ms: picked[0] as f64,
            remaining_high_ms: picked[2] as f64,
            comparable: count as u64,
        })
    }
}

/// The label names used in the ML tracker.
pub fn label(success: bool) -> Id {
    if success {
        "success".into()
    } else {
        "failure".into()
    }
}
