//! The records that flow through megamind's dataflows.
//!
//! Inputs are [`Event`]s (decoded by [`decode`]); operators turn them into
//! [`Sample`]s, [`WindowStats`], [`SessionState`]s, [`Breach`]es and alert transitions,
//! all collected into the [`Update`] stream that leaves the dataflow. Bad records are
//! [`DataError`] values.

mod alerts;
pub mod decode;
mod error;
mod escalation;
mod event;
mod insights;
mod labels;
mod ml;
mod rules;
mod series;
mod session;
mod silence;
mod template;
mod update;

pub use alerts::{AlertAct, AlertRecord, AlertStatus, CommandRejection, PENDING_CLEARED};
pub use error::{DataError, ErrorReason};
pub use escalation::{policy_for, EscalationPolicy, EscalationStep};
pub use event::{
    AlertAction, AlertCommand, Event, EventBody, Id, Labels, MetricEvent, OutcomeEvent,
    PredictionEvent, RetrainRequest, SessionEvent, SessionKind, Severity,
};
pub use insights::{
    CompletionEstimate, Insight, InsightChange, PredictionStatus, Priority, SeriesForecast,
    SessionPrediction, SubjectKind, SuccessModelReport, ThresholdForecast, TrainReason,
};
pub use labels::labels_as_map;
pub use ml::{
    BaselinePin, ConfidenceSummary, DriftReport, DriftTest, LatencySummary, MatchedPair, MlEvent,
    ModelInput, ModelKey, ModelRegistration, ModelSnapshot, Performance, PinBaseline, PinRejection,
    PinnedReference, RetrainingTrigger, VersionCounts, MAX_REGISTRATION_CLASSES,
    MAX_REGISTRATION_TEXT, UNVERSIONED,
};
pub use rules::{
    Aggregate, AlertState, AlertTransition, Breach, BreachRule, Comparison, RuleChange, RuleError,
};
pub use series::{Sample, SeriesKey, WindowStats};
pub use session::{HistorySample, SessionState, SessionStatus};
pub use silence::{
    matchers_text, parse_matchers, CompiledSilence, MatchOp, Matcher, MatcherError, MatcherSet,
    Silence, MAX_MATCHERS,
};
pub use template::{format_value, RuleTemplates, Template, TemplateError};
pub use update::Update;
