//! Records of the predictive-insights operators: session success predictions with
//! completion-time estimates, series trends and forecasts, the success model's training
//! reports, and the deduplicated insights (risks and recommendations) built on them.

use serde::{Deserialize, Serialize};

use super::event::Id;
use super::rules::{Aggregate, Comparison};
use super::series::SeriesKey;

/// Where a session's prediction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionStatus {
    /// No success model has been trained yet: no probability, on purpose.
    ColdStart,
    /// The session is running and the model scored it.
    Predicted,
    /// The session ended; `outcome` holds what happened.
    Ended,
}

/// Remaining time of a running session, from comparable completed sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionEstimate {
    /// Median remaining time, ms.
    pub remaining_ms: f64,
    /// 10th percentile of the remaining time, ms (the interval's low end).
    pub remaining_low_ms: f64,
    /// 90th percentile of the remaining time, ms (the interval's high end).
    pub remaining_high_ms: f64,
    /// How many completed sessions the estimate rests on.
    pub comparable: u64,
}

/// The success model's view of one session, emitted whenever the session changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPrediction {
    /// The session.
    pub session_id: Id,
    /// Event time of the session snapshot scored, ms.
    pub at: u64,
    /// Cold start, predicted or ended.
    pub status: PredictionStatus,
    /// Probability that the session completes successfully (none in cold start).
    pub success_probability: Option<f64>,
    /// `success` or `failure` (none in cold start).
    pub predicted: Option<Id>,
    /// Probability of the predicted label.
    pub confidence: Option<f64>,
    /// Version of the model that scored (`v1`, `v2`, ...).
    pub model_version: Option<Id>,
    /// Remaining-time estimate for a running session.
    pub completion: Option<CompletionEstimate>,
    /// The real outcome (`success` or `failure`) once the session ended.
    pub outcome: Option<Id>,
    /// The features scored, by name.
    pub features: Vec<(Id, f64)>,
}

/// Why the success model was (re)trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainReason {
    /// First model once enough completed sessions of both outcomes were seen.
    Initial,
    /// Enough sessions completed since the last training.
    Schedule,
    /// The model's recent live accuracy fell well below its training accuracy.
    Drift,
    /// Somebody asked for it (a `model` event with `retrain: true` for `session-success`).
    Requested,
}

/// A new version of the session success model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessModelReport {
    /// The new version (`v1`, `v2`, ...).
    pub version: Id,
    /// Event time of the training, ms.
    pub at: u64,
    /// Why it was trained.
    pub reason: TrainReason,
    /// Completed sessions it was trained on.
    pub trained_on: u64,
    /// Share of successful sessions among them.
    pub base_rate: f64,
    /// Accuracy on its own training set.
    pub training_accuracy: f64,
    /// Intercept and coefficients (on standardised features), by feature name.
    pub intercept: f64,
    /// Coefficients by feature name.
    pub coefficients: Vec<(Id, f64)>,
}

/// When a rule's statistic is forecast to cross its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdForecast {
    /// The rule.
    pub rule_id: Id,
    /// The statistic the rule compares.
    pub aggregate: Aggregate,
    /// The comparison.
    pub op: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// The statistic in the latest window.
    pub value: f64,
    /// Whether the latest window already breaches.
    pub breaching: bool,
    /// Forecast time until the Holt line crosses the threshold, ms (none: not within the
    /// forecast reach, or already breaching).
    pub crosses_in_ms: Option<u64>,
    /// The rule's predictive horizon, if it has one.
    pub horizon_ms: Option<u64>,
}

/// Trend and forecast of one window series, after a window closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesForecast {
    /// The series.
    pub key: SeriesKey,
    /// End of the latest window, ms.
    pub at: u64,
    /// Statistic forecast (the window mean).
    pub statistic: Aggregate,
    /// Windows in the history used.
    pub windows: u64,
    /// Latest value.
    pub value: f64,
    /// OLS slope per minute over the history.
    pub slope_per_min: f64,
    /// Two-sided p-value of the slope's t-test (H0: slope = 0).
    pub slope_p_value: f64,
    /// `rising`, `falling` or `flat` (flat unless p < the significance level).
    pub trend: Id,
    /// Holt level.
    pub level: f64,
    /// Holt trend per step (one window slide).
    pub holt_trend: f64,
    /// Forecast horizon, ms.
    pub horizon_ms: u64,
    /// Holt point forecast at the horizon.
    pub forecast: f64,
    /// Lower end of the 95% prediction interval.
    pub lower: f64,
    /// Upper end of the 95% prediction interval.
    pub upper: f64,
    /// Time to threshold for each rule watching the series.
    pub thresholds: Vec<ThresholdForecast>,
}

/// Insight priorities, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Worth knowing.
    Low,
    /// Worth a look soon.
    Medium,
    /// Act soon.
    High,
    /// Act now.
    Critical,
}

/// What an insight is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A work session.
    Session,
    /// A metric series.
    Series,
    /// An ML model.
    Model,
}

/// How an insight changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsightChange {
    /// The condition started holding.
    Raised,
    /// It still holds, with a different priority.
    Updated,
    /// It stopped holding (or the subject went away).
    Cleared,
}

/// A risk or recommendation, emitted when it is raised, changes priority or clears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    /// Stable id: `category:subject`.
    pub id: String,
    /// What kind of insight (`session_at_risk`, `time_to_threshold`, `rising_error_rate`,
    /// `memory_forecast_over_limit`, `cpu_forecast_high`, `model_accuracy_low`); not
    /// named `kind`, which tags the update.
    pub category: Id,
    /// What the insight is about.
    pub subject_kind: SubjectKind,
    /// The subject's id (session id, series key, model id).
    pub subject: String,
    /// Raised, updated or cleared.
    pub change: InsightChange,
    /// Priority.
    pub priority: Priority,
    /// Impact score in `[0, 1]`.
    pub impact: f64,
    /// What was found.
    pub message: String,
    /// What to do about it.
    pub action: String,
    /// Event time of the change, ms.
    pub at: u64,
}
