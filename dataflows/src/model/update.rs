//! The typed results that leave the dataflow.

use serde::Serialize;

use super::alerts::{AlertRecord, CommandRejection};
use super::error::DataError;
use super::insights::{Insight, SeriesForecast, SessionPrediction, SuccessModelReport};
use super::ml::{BaselinePin, ModelRegistration, ModelSnapshot, RetrainingTrigger};
use super::rules::{AlertTransition, Breach, RuleChange};
use super::series::{SeriesKey, WindowStats};
use super::session::{HistorySample, SessionState};
use super::silence::Silence;

/// One result of the analytics pipeline, as delivered to views, WebSocket clients and the
/// `--out` file. Serialized as a JSON object tagged by `kind`.
///
/// Updates are produced by the worker that owns the key and handed to sinks on that
/// worker; they are never exchanged between workers, so they carry no bincode contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Update {
    /// A closed, non-empty window.
    Window(WindowStats),
    /// The series had no samples in the window ending at `end`; its state was evicted.
    SeriesIdle {
        /// The series.
        key: SeriesKey,
        /// End of the first empty window, ms.
        end: u64,
    },
    /// A session changed.
    Session(SessionState),
    /// A session's performance history grew by one point.
    SessionSample(HistorySample),
    /// A window breached a rule.
    Breach(Breach),
    /// A rule started or stopped breaching for a series.
    Alert(AlertTransition),
    /// An alert's lifecycle changed (the state people see and act on).
    AlertRecord(Box<AlertRecord>),
    /// An alert command could not be applied.
    CommandRejected(CommandRejection),
    /// A silence was created, replaced, expired or ran out.
    Silence(Box<Silence>),
    /// A rule was created, replaced or deleted at run time.
    RuleChange(Box<RuleChange>),
    /// A model version's tracked performance changed.
    ModelMetrics(Box<ModelSnapshot>),
    /// A model should be retrained (drift started or ADWIN detected a change).
    RetrainingTrigger(Box<RetrainingTrigger>),
    /// A model (version) registration took effect (from a `type: "model"` event).
    ModelRegistered(Box<ModelRegistration>),
    /// A "pin now" command (`type: "model_baseline"`) took effect on a model version, or
    /// was rejected.
    BaselinePin(Box<BaselinePin>),
    /// Outcomes that named no model expired without meeting their prediction.
    UnattributedOrphans {
        /// How many so far.
        expired: u64,
    },
    /// The success model scored a session (or the session ended).
    SessionPrediction(Box<SessionPrediction>),
    /// A new version of the session success model was trained.
    SuccessModel(Box<SuccessModelReport>),
    /// Trend and forecast of a window series.
    Forecast(Box<SeriesForecast>),
    /// A risk or recommendation was raised, updated or cleared.
    Insight(Box<Insight>),
    /// A numeric point judged anomalous.
    Anomaly(Box<crate::operators::score_anomalies::AnomalyReport>),
    /// Counter deltas of the numeric anomaly scorer (one per worker and batch: sum them).
    AnomalyCounters(crate::operators::score_anomalies::AnomalyCounters),
    /// A message that belongs to no error family.
    NovelError(Box<crate::operators::detect_novel_errors::NovelError>),
    /// The error families after a batch of messages.
    ErrorFamilies(Box<crate::operators::detect_novel_errors::ErrorFamilies>),
    /// A record was rejected inside the dataflow (for example: late).
    Rejected {
        /// Why.
        error: DataError,
        /// The record's event time, ms.
        ts: u64,
    },
}

impl Update {
    /// The `kind` tag of this update.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Window(_) => "window",
            Self::SeriesIdle { .. } => "series_idle",
            Self::Session(_) => "session",
            Self::SessionSample(_) => "session_sample",
            Self::Breach(_) => "breach",
            Self::Alert(_) => "alert",
            Self::AlertRecord(_) => "alert_record",
            Self::CommandRejected(_) => "command_rejected",
            Self::Silence(_) => "silence",
            Self::RuleChange(_) => "rule_change",
            Self::ModelMetrics(_) => "model_metrics",
            Self::RetrainingTrigger(_) => "retraining_trigger",
            Self::ModelRegistered(_) => "model_registered",
            Self::BaselinePin(_) => "baseline_pin",
            Self::UnattributedOrphans { .. } => "unattributed_orphans",
            Self::SessionPrediction(_) => "session_prediction",
            Self::SuccessModel(_) => "success_model",
            Self::Forecast(_) => "forecast",
            Self::Insight(_) => "insight",
            Self::Anomaly(_) => "anomaly",
            Self::AnomalyCounters(_) => "anomaly_counters",
            Self::NovelError(_) => "novel_error",
            Self::ErrorFamilies(_) => "error_families",
            Self::Rejected { .. } => "rejected",
        }
    }
}
