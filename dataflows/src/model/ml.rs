//! Records of ML tracking: what the join hands to the per-model tracker, and the
//! snapshots, drift reports and retraining triggers that leave the dataflow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::{Id, OutcomeEvent, PredictionEvent};
use crate::operators::track_models::stats::{ClassScores, ReliabilityBin};

/// The version reported for predictions that carry none.
pub const UNVERSIONED: &str = "unversioned";

/// A prediction or an outcome, as routed to the join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MlEvent {
    /// A prediction.
    Prediction(PredictionEvent),
    /// A true label for an earlier (or later) prediction.
    Outcome(OutcomeEvent),
}

impl MlEvent {
    /// The prediction id the event joins on.
    pub fn prediction_id(&self) -> &Id {
        match self {
            Self::Prediction(prediction) => &prediction.prediction_id,
            Self::Outcome(outcome) => &outcome.prediction_id,
        }
    }
}

/// A model version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelKey {
    /// The model.
    pub model_id: Id,
    /// The version ([`UNVERSIONED`] when predictions carry none).
    pub model_version: Id,
}

impl ModelKey {
    /// The key of a prediction.
    pub fn of(prediction: &PredictionEvent) -> Self {
        Self {
            model_id: prediction.model_id.clone(),
            model_version: prediction
                .model_version
                .clone()
                .unwrap_or_else(|| UNVERSIONED.into()),
        }
    }
}

/// What the join hands to the per-model tracker (exchanged by [`ModelKey`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelInput {
    /// A prediction was recorded.
    Predicted {
        /// The model version.
        key: ModelKey,
        /// Event time, ms.
        ts: u64,
        /// The predicted label.
        predicted: Id,
        /// Its confidence.
        confidence: f64,
        /// Prediction latency, ms.
        latency_ms: f64,
    },
    /// A prediction id was seen again while its first prediction was pending; ignored.
    Duplicate {
        /// The model version of the ignored prediction.
        key: ModelKey,
    },
    /// A prediction met its outcome.
    Matched(Box<MatchedPair>),
    /// A prediction saw no outcome within the horizon.
    Expired {
        /// The model version.
        key: ModelKey,
    },
    /// An outcome saw no prediction within the horizon. `model_id` is the outcome's
    /// hint (empty when it had none).
    OrphanExpired {
        /// The hinted model.
        model_id: Id,
    },
}

/// A prediction joined with its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedPair {
    /// The model version.
    pub key: ModelKey,
    /// When the pair became complete: the later of the two event times, ms.
    pub ts: u64,
    /// The prediction id (orders pairs of equal `ts`).
    pub prediction_id: Id,
    /// The predicted label.
    pub predicted: Id,
    /// The true label.
    pub actual: Id,
    /// The prediction's confidence.
    pub confidence: f64,
    /// The prediction's features.
    pub features: Vec<(Id, f64)>,
}

/// Classification performance over a set of matched pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Performance {
    /// Matched pairs counted.
    pub matched: u64,
    /// Correct / matched.
    pub accuracy: Option<f64>,
    /// 95% Wilson interval of the accuracy.
    pub accuracy_interval: Option<(f64, f64)>,
    /// Labels of the matrix, sorted (union of predicted and actual).
    pub labels: Vec<Id>,
    /// Confusion matrix: rows are actual labels, columns predicted labels.
    pub confusion: Vec<Vec<u64>>,
    /// Precision, recall, F1 and support per label (in `labels` order).
    pub per_class: Vec<ClassScores>,
    /// Unweighted mean over labels.
    pub macro_avg: ClassScores,
    /// Mean weighted by support.
    pub weighted_avg: ClassScores,
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
    /// Maximum.
    pub max: f64,
}

/// Confidence distribution and calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfidenceSummary {
    /// Mean confidence over all predictions.
    pub mean: Option<f64>,
    /// Counts of all predictions per equal-width bin over `[0, 1]`.
    pub histogram: Vec<u64>,
    /// Reliability bins over matched predictions.
    pub reliability: Vec<ReliabilityBin>,
    /// Expected calibration error over matched predictions.
    pub expected_calibration_error: Option<f64>,
}

/// One drift test: reference window against current window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftTest {
    /// What is tested: `psi:confidence`, `psi:feature:<name>`, `ks:confidence`,
    /// `chi2:predicted_labels`, `accuracy_drop`, `adwin:errors`.
    pub test: String,
    /// The statistic.
    pub statistic: f64,
    /// Its p-value, for tests that have one.
    pub p_value: Option<f64>,
    /// The threshold it is compared with (a p-value threshold for KS and chi-squared).
    pub threshold: f64,
    /// Whether the test says the model drifted.
    pub drifted: bool,
}

/// Drift of one model version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// Matched pairs in the reference window.
    pub reference_size: u64,
    /// Matched pairs in the current window.
    pub current_size: u64,
    /// Every test evaluated (tests need full windows; none before).
    pub tests: Vec<DriftTest>,
    /// Whether any test drifted.
    pub drifted: bool,
    /// Changes ADWIN detected so far on the 0/1 error stream.
    pub adwin_changes: u64,
    /// Ordinal (1-based position in the ordered matched stream) of each ADWIN change (the
    /// latest 1,000).
    pub adwin_change_points: Vec<u64>,
    /// Event time of the last ADWIN change, ms.
    pub adwin_last_change_at: Option<u64>,
}

/// A registered model's metadata and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRegistration {
    /// The model.
    pub model_id: Id,
    /// Task, such as `classification`.
    #[serde(default)]
    pub task: Option<String>,
    /// The classes it predicts.
    #[serde(default)]
    pub classes: Vec<Id>,
    /// Who owns it.
    #[serde(default)]
    pub owner: Option<String>,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Current-window accuracy below this raises an alert.
    #[serde(default)]
    pub min_accuracy: Option<f64>,
    /// Latency p99 (ms) above this raises an alert.
    #[serde(default)]
    pub max_latency_p99_ms: Option<f64>,
}

/// Everything tracked about one model version, as of the inputs applied so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSnapshot {
    /// The model.
    pub model_id: Id,
    /// The version.
    pub model_version: Id,
    /// Registry entry, when the model was registered in config.
    pub registration: Option<ModelRegistration>,
    /// Inputs applied to this state (orders snapshots of the same key).
    pub events: u64,
    /// Matched pairs fed to the ordered analyses (drift, windows) so far.
    pub ordered: u64,
    /// First prediction's event time, ms.
    pub first_seen: Option<u64>,
    /// Latest event time seen, ms.
    pub last_seen: u64,
    /// Predictions recorded.
    pub predictions: u64,
    /// Predictions joined with an outcome.
    pub matched: u64,
    /// Predictions waiting for an outcome.
    pub pending: u64,
    /// Predictions whose outcome never came within the horizon.
    pub expired: u64,
    /// Outcomes hinting this model that found no prediction within the horizon.
    pub orphans_expired: u64,
    /// Predictions ignored because their id was pending already.
    pub duplicates: u64,
    /// Cumulative performance over every matched pair.
    pub cumulative: Performance,
    /// Performance over the current window (the latest `window_size` matched pairs in
    /// event-time order).
    pub window: Performance,
    /// Prediction latency (all predictions).
    pub latency: Option<LatencySummary>,
    /// Confidence (all predictions) and calibration (matched).
    pub confidence: ConfidenceSummary,
    /// Predicted labels of all predictions.
    pub predicted_labels: BTreeMap<Id, u64>,
    /// True labels of matched pairs.
    pub actual_labels: BTreeMap<Id, u64>,
    /// Drift of the current window against the reference window.
    pub drift: Option<DriftReport>,
    /// `ok`, `degraded` (a registered threshold is breached), `drifted`, or `waiting`
    /// (no matched pair yet).
    pub health: String,
    /// Retraining triggers raised so far.
    pub retraining_triggers: u64,
}

/// A model should be retrained: its drift tests or ADWIN say its behaviour changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrainingTrigger {
    /// The model.
    pub model_id: Id,
    /// The version.
    pub model_version: Id,
    /// Event time of the decision, ms.
    pub at: u64,
    /// The tests that drifted.
    pub evidence: Vec<DriftTest>,
}
