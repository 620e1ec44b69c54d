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
    /// A model (version) was registered; passes the join untouched.
    Register(Box<ModelRegistration>),
    /// "Pin now": freeze a version's current window as its reference; passes the join
    /// untouched.
    PinBaseline(PinBaseline),
}

impl MlEvent {
    /// The id the join is partitioned by: the prediction id (the model id for a
    /// registration, which only passes through).
    pub fn route_id(&self) -> &Id {
        match self {
            Self::Prediction(prediction) => &prediction.prediction_id,
            Self::Outcome(outcome) => &outcome.prediction_id,
            Self::Register(registration) => &registration.model_id,
            Self::PinBaseline(pin) => &pin.model_id,
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
    /// The order-independent counts of one model version's predictions and matched pairs
    /// over one join activation: the tracker is reached once per version and batch
    /// instead of once per prediction or pair.
    ///
    /// Counted on the join worker (balanced by prediction id) rather than on the tracker
    /// (one worker per model): the tracker only adds the sums.
    Counted {
        /// The model version.
        key: ModelKey,
        /// The counts.
        counts: Box<VersionCounts>,
    },
    /// A prediction id was seen again while its first prediction was pending; ignored.
    Duplicate {
        /// The model version of the ignored prediction.
        key: ModelKey,
    },
    /// The predictions of one model version that met their outcomes in one join
    /// activation.
    MatchedBatch {
        /// The model version.
        key: ModelKey,
        /// The pairs, in arrival order.
        pairs: Vec<MatchedPair>,
    },
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
    /// A registration event, applied in event-time order with the matched pairs.
    Registered {
        /// Its event time, ms.
        ts: u64,
        /// The registration.
        registration: Box<ModelRegistration>,
    },
    /// A "pin now" command, applied in event-time order with the matched pairs (like a
    /// registration).
    PinBaseline {
        /// Its event time, ms.
        ts: u64,
        /// The command.
        pin: PinBaseline,
    },
}

/// What one model version's predictions and matched pairs add to its order-independent
/// metrics (counts, latency classes, exact sums, label counts, confusion cells,
/// calibration bins). Every field is a sum, a minimum or a maximum, so the totals do not
/// depend on how the join split the stream into batches or workers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VersionCounts {
    /// Predictions.
    pub predictions: u64,
    /// Matched pairs.
    pub matched: u64,
    /// The earliest prediction's event time, ms.
    pub first_seen: Option<u64>,
    /// The latest event time of a prediction or pair, ms (0 when none).
    pub last_seen: u64,
    /// Latencies, µs, as `(lowest value of the latency histogram's equivalence class,
    /// predictions)`.
    pub latency: Vec<(u64, u64)>,
    /// Sum of the latencies, ms, in the fixed point of the confidence sums.
    pub latency_sum: u128,
    /// Sum of the confidences, fixed point.
    pub confidence_sum: u128,
    /// Predictions per confidence bin (empty when there were none).
    pub confidence_histogram: Vec<u64>,
    /// Predictions per predicted label.
    pub predicted_labels: Vec<(Id, u64)>,
    /// Matched pairs per `(actual, predicted)` label.
    pub confusion: Vec<(Id, Id, u64)>,
    /// Matched pairs per confidence bin: `(pairs, correct pairs, confidence sum in fixed
    /// point)` (empty when there were none).
    pub calibration: Vec<(u64, u64, u128)>,
}

/// A prediction joined with its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedPair {
    /// The join's arrival count of the event that completed the pair (on the join worker
    /// that holds its prediction id): among pairs with the same id and `ts`, the later
    /// arrival wins, as if it replaced the earlier.
    pub arrival: u64,
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
    /// Whose reference window the tests used: this version's own first matched pairs, or
    /// the pinned baseline version's (`baseline_version` of a registration).
    pub reference_version: Id,
    /// Set when that reference window was frozen by a "pin now" command
    /// (`type: "model_baseline"`) rather than filled with the first matched pairs.
    pub pinned: Option<PinnedReference>,
}

/// A reference window frozen by "pin now": when, by whom, why, and how large.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PinnedReference {
    /// Event time of the command, ms.
    pub at: u64,
    /// Who pinned it.
    pub actor: Option<Id>,
    /// Why.
    pub note: Option<String>,
    /// Matched pairs copied from the current window into the reference.
    pub size: u64,
}

/// "Pin now": the drift reference of a model version becomes a copy of its current
/// window (the latest matched pairs), and drift is measured against that from then on.
/// From a `type: "model_baseline"` event (HTTP `POST /v1/models/{id}/baseline`, Kafka,
/// MCP `realtime_add_event`), so it is written ahead and replayed like every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinBaseline {
    /// The model.
    pub model_id: Id,
    /// The version; without it every version of the model tracked at the command's time.
    #[serde(default)]
    pub model_version: Option<Id>,
    /// Who asked.
    #[serde(default)]
    pub actor: Option<Id>,
    /// Why.
    #[serde(default)]
    pub note: Option<String>,
}

/// Why a "pin now" command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PinRejection {
    /// No matched pair of the version was ordered before the command's time (an unknown
    /// version, a misspelt one, or one whose outcomes have not come yet).
    NoMatchedPairs,
    /// The current window held fewer matched pairs than a reference needs
    /// (`ml.reference_size`), or none.
    WindowTooSmall,
}

/// What a "pin now" command did to one model version: published on `models/{id}` as a
/// `baseline_pin` update, listed by `ml_performance_status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselinePin {
    /// The model.
    pub model_id: Id,
    /// The version (absent only when a command for every version found none).
    pub model_version: Option<Id>,
    /// Event time of the command, ms.
    pub at: u64,
    /// Who asked.
    pub actor: Option<Id>,
    /// Why.
    pub note: Option<String>,
    /// Whether the reference was replaced.
    pub pinned: bool,
    /// Matched pairs in the new reference (when pinned), else in the current window.
    pub size: u64,
    /// Whose reference was in use before: the version itself or its `baseline_version`
    /// (when pinned).
    pub previous_reference: Option<Id>,
    /// Why nothing changed (when not pinned).
    pub reason: Option<PinRejection>,
    /// The reason in words.
    pub message: Option<String>,
}

/// A registered model's metadata and thresholds: from `[[ml.models]]` in the config, or
/// from a `type: "model"` event (HTTP `POST /v1/models`, Kafka, MCP `realtime_add_event`),
/// so registrations are part of the event log and replay the same way.
///
/// Without `model_version` it applies to every version of the model (a version-specific
/// registration takes precedence); a later registration of the same key replaces the
/// earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRegistration {
    /// The model.
    pub model_id: Id,
    /// The version registered (every version when absent).
    #[serde(default)]
    pub model_version: Option<Id>,
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
    /// The pinned baseline: drift of the registered version(s) is measured against the
    /// reference window of this version instead of their own first matched pairs.
    #[serde(default)]
    pub baseline_version: Option<Id>,
}

/// Longest `task`, `owner` or `description` of a registration, bytes.
pub const MAX_REGISTRATION_TEXT: usize = 8192;

/// Most `classes` of a registration.
pub const MAX_REGISTRATION_CLASSES: usize = 1024;

impl ModelRegistration {
    /// A registration of `model_id` with nothing else set.
    pub fn new(model_id: impl Into<Id>) -> Self {
        Self {
            model_id: model_id.into(),
            model_version: None,
            task: None,
            classes: Vec::new(),
            owner: None,
            description: None,
            min_accuracy: None,
            max_latency_p99_ms: None,
            baseline_version: None,
        }
    }

    /// Every problem of this registration as `(field, reason)`; empty when it is valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.model_id.is_empty() {
            problems.push(("model_id", "must not be empty".to_owned()));
        }
        if self.model_version.as_ref().is_some_and(|v| v.is_empty()) {
            problems.push(("model_version", "must not be empty".to_owned()));
        }
        if let Some(minimum) = self.min_accuracy {
            if !(minimum.is_finite() && (0.0..=1.0).contains(&minimum)) {
                problems.push(("min_accuracy", "must be between 0 and 1".to_owned()));
            }
        }
        if let Some(maximum) = self.max_latency_p99_ms {
            if !(maximum.is_finite() && maximum > 0.0) {
                problems.push((
                    "max_latency_p99_ms",
                    "must be a positive finite number of milliseconds".to_owned(),
                ));
            }
        }
        for (field, text) in [
            ("task", &self.task),
            ("owner", &self.owner),
            ("description", &self.description),
        ] {
            if text
                .as_ref()
                .is_some_and(|t| t.len() > MAX_REGISTRATION_TEXT)
            {
                problems.push((
                    field,
                    format!("is longer than {MAX_REGISTRATION_TEXT} bytes"),
                ));
            }
        }
        if self.classes.len() > MAX_REGISTRATION_CLASSES {
            problems.push((
                "classes",
                format!("has more than {MAX_REGISTRATION_CLASSES} entries"),
            ));
        }
        if self.classes.iter().any(|class| class.is_empty()) {
            problems.push(("classes", "must not contain an empty label".to_owned()));
        }
        let mut sorted: Vec<&Id> = self.classes.iter().collect();
        sorted.sort();
        if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
            problems.push(("classes", "must not repeat a label".to_owned()));
        }
        match &self.baseline_version {
            Some(baseline) if baseline.is_empty() => {
                problems.push(("baseline_version", "must not be empty".to_owned()));
            }
            Some(baseline) if self.model_version.as_ref() == Some(baseline) => problems.push((
                "baseline_version",
                "must differ from model_version (a version is its own reference by default)"
                    .to_owned(),
            )),
            _ => {}
        }
        problems
    }
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
    /// "Pin now" commands that replaced this version's reference.
    pub baseline_pins: u64,
    /// "Pin now" commands for this version that were rejected (see [`BaselinePin`]).
    pub baseline_pins_rejected: u64,
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
