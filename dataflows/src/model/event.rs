//! The events that enter megamind, in their validated in-memory form.
//!
//! The JSON wire form is handled by [`crate::model::decode`] (bytes → [`Event`], with
//! validation) and [`Event::to_json`] (the reverse). The serde derives on these types are
//! the *internal* representation used between timely workers; they are not the wire format.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::ml::{ModelRegistration, PinBaseline};
use super::silence::{matchers_text, Matcher};

/// Identifiers and short names: inline up to 24 bytes, no allocation for typical ids.
pub type Id = CompactString;

/// A canonical label set: sorted by key, keys unique.
pub type Labels = Vec<(Id, Id)>;

/// One event: when it happened, what it says, and the fields megamind does not interpret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The typed payload.
    pub body: EventBody,
    /// Unknown fields, kept as (name, raw JSON text), in arrival order.
    pub attrs: Vec<(Id, String)>,
}

/// The payload of an event, selected by its `type` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    /// `type: "session"`.
    Session(SessionEvent),
    /// `type: "metric"`.
    Metric(MetricEvent),
    /// `type: "prediction"`.
    Prediction(PredictionEvent),
    /// `type: "outcome"`.
    Outcome(OutcomeEvent),
    /// `type: "alert_command"` (boxed: the largest payload by far, and every event is
    /// moved through several exchanges).
    AlertCommand(Box<AlertCommand>),
    /// `type: "model"`: a model (version) registration.
    Model(Box<ModelRegistration>),
    /// `type: "retrain"`: a request to retrain megamind's own session success model.
    Retrain(RetrainRequest),
    /// `type: "model_baseline"`: "pin now", a model version's current drift window
    /// becomes its reference.
    ModelBaseline(PinBaseline),
}

/// A request to retrain the session success model, in the event log so a replay retrains
/// at the same point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainRequest {
    /// The model: only megamind's own `session-success` is retrained by megamind.
    pub model_id: Id,
    /// Who asked.
    #[serde(default)]
    pub actor: Option<Id>,
    /// Why.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventBody {
    /// The wire name of this variant.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Session(_) => "session",
            Self::Metric(_) => "metric",
            Self::Prediction(_) => "prediction",
            Self::Outcome(_) => "outcome",
            Self::AlertCommand(_) => "alert_command",
            Self::Model(_) => "model",
            Self::Retrain(_) => "retrain",
            Self::ModelBaseline(_) => "model_baseline",
        }
    }
}

/// What happened in a work session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// The session began.
    Started,
    /// One operation ran (optionally with its duration, tokens, success).
    Operation,
    /// A free-form status change.
    Status,
    /// An error occurred.
    Error,
    /// The session ended successfully.
    Completed,
    /// The session ended in failure.
    Failed,
}

impl SessionKind {
    /// Every kind, with its wire name.
    pub const NAMES: [(&'static str, SessionKind); 6] = [
        ("started", Self::Started),
        ("operation", Self::Operation),
        ("status", Self::Status),
        ("error", Self::Error),
        ("completed", Self::Completed),
        ("failed", Self::Failed),
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Operation => "operation",
            Self::Status => "status",
            Self::Error => "error",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// An event about a work session (operations, errors, durations, tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// The session this event belongs to.
    pub session_id: Id,
    /// Who runs the session.
    pub user_id: Option<Id>,
    /// What happened.
    pub kind: SessionKind,
    /// The operation's name (for `operation` and `error` events).
    pub operation: Option<Id>,
    /// How long the operation took, in milliseconds (finite, non-negative).
    pub duration_ms: Option<f64>,
    /// Tokens consumed.
    pub tokens: Option<u64>,
    /// Whether the operation succeeded.
    pub success: Option<bool>,
    /// A human-readable message (error text, status text).
    pub message: Option<String>,
}

impl SessionEvent {
    /// Whether this event counts as an error: an `error` event, or an operation that
    /// explicitly failed.
    pub fn is_error(&self) -> bool {
        self.kind == SessionKind::Error
            || (self.kind == SessionKind::Operation && self.success == Some(false))
    }
}

/// A numeric measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    /// Metric name, such as `latency_ms`.
    pub name: Id,
    /// The measured value (finite).
    pub value: f64,
    /// Dimensions, canonical (sorted, unique keys).
    pub labels: Labels,
    /// The session the measurement belongs to, if any.
    pub session_id: Option<Id>,
}

/// A prediction made by an ML model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionEvent {
    /// The model.
    pub model_id: Id,
    /// The model's version, if known.
    pub model_version: Option<Id>,
    /// Unique id that the outcome will refer to.
    pub prediction_id: Id,
    /// The predicted label.
    pub predicted: Id,
    /// The model's confidence in `predicted`, in `[0, 1]`.
    pub confidence: f64,
    /// How long the prediction took, in milliseconds.
    pub latency_ms: f64,
    /// Input features (name → finite value), for drift detection.
    pub features: Vec<(Id, f64)>,
    /// The session the prediction was made for, if any.
    pub session_id: Option<Id>,
}

/// The true label for an earlier prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEvent {
    /// The prediction this outcome resolves.
    pub prediction_id: Id,
    /// The true label.
    pub actual: Id,
    /// The model, when the producer knows it (only a consistency hint).
    pub model_id: Option<Id>,
}

/// Alert severities, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    Low,
    /// Needs attention soon.
    Medium,
    /// Needs attention now.
    High,
    /// Wake someone up.
    Critical,
}

impl Severity {
    /// Every severity, with its wire name.
    pub const NAMES: [(&'static str, Severity); 4] = [
        ("low", Self::Low),
        ("medium", Self::Medium),
        ("high", Self::High),
        ("critical", Self::Critical),
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a person does to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// "I am on it": stops escalation.
    Acknowledge,
    /// "It is over".
    Resolve,
    /// Raise a custom alert by hand.
    Create,
    /// Mute the alerts that match `matchers` for `duration_ms` (`alert_id` names the
    /// silence; a silence with the same id is replaced).
    Silence,
    /// End the silence named by `alert_id` now.
    ExpireSilence,
    /// Add (or replace) the threshold rule in `rule` (its id is `alert_id`).
    CreateRule,
    /// Remove the threshold rule `alert_id`; its alerts resolve.
    DeleteRule,
}

impl AlertAction {
    /// Every action, with its wire name.
    pub const NAMES: [(&'static str, AlertAction); 7] = [
        ("acknowledge", Self::Acknowledge),
        ("resolve", Self::Resolve),
        ("create", Self::Create),
        ("silence", Self::Silence),
        ("expire_silence", Self::ExpireSilence),
        ("create_rule", Self::CreateRule),
        ("delete_rule", Self::DeleteRule),
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
            Self::Create => "create",
            Self::Silence => "silence",
            Self::ExpireSilence => "expire_silence",
            Self::CreateRule => "create_rule",
            Self::DeleteRule => "delete_rule",
        }
    }

    /// Whether it acts on rules (seen by every worker).
    pub fn is_rule(self) -> bool {
        matches!(self, Self::CreateRule | Self::DeleteRule)
    }

    /// Whether every worker must see it (silences and rules), rather than the worker
    /// owning one alert.
    pub fn is_broadcast(self) -> bool {
        self.is_silence() || self.is_rule()
    }

    /// Whether it acts on silences (seen by every worker) rather than on one alert.
    pub fn is_silence(self) -> bool {
        matches!(self, Self::Silence | Self::ExpireSilence)
    }
}

/// A human action on alerts, entering the same stream as every other event so alert
/// state is a function of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertCommand {
    /// What to do.
    pub command: AlertAction,
    /// The alert acted on (acknowledge, resolve; optional id for create).
    pub alert_id: Option<Id>,
    /// Who acted.
    pub actor: Option<Id>,
    /// Why.
    pub note: Option<String>,
    /// Title of a custom alert (create).
    pub title: Option<String>,
    /// Severity of a custom alert (create).
    pub severity: Option<Severity>,
    /// Labels of a custom alert (create).
    pub labels: Labels,
    /// Description of a custom alert (create).
    pub message: Option<String>,
    /// The matchers of a silence (silence).
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// How long a silence lasts from the command's event time, ms (silence).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The rule, as validated JSON (create_rule). Kept as text so the command's binary
    /// form between workers does not depend on the rule's optional fields.
    #[serde(default)]
    pub rule: Option<String>,
    /// When a silence starts, ms (silence; default: the command's event time). Lets a
    /// silence be scheduled ahead, or keep the fixed window a config file gave it.
    #[serde(default)]
    pub starts_at: Option<u64>,
    /// Where a silence comes from (silence): `config` for `[[alerts.silences]]`, which a
    /// reload may replace or expire; none for silences made by people.
    #[serde(default)]
    pub origin: Option<String>,
}

impl AlertCommand {
    /// A `command` with no alert id, actor, text, labels, matchers or rule; set what
    /// the command needs with struct update syntax.
    pub fn new(command: AlertAction) -> Self {
        Self {
            command,
            alert_id: None,
            actor: None,
            note: None,
            title: None,
            severity: None,
            labels: Vec::new(),
            message: None,
            matchers: Vec::new(),
            duration_ms: None,
            rule: None,
            starts_at: None,
            origin: None,
        }
    }
}

impl Event {
    /// The session this event concerns, if any.
    pub fn session_id(&self) -> Option<&Id> {
        match &self.body {
            EventBody::Session(event) => Some(&event.session_id),
            EventBody::Metric(event) => event.session_id.as_ref(),
            EventBody::Prediction(event) => event.session_id.as_ref(),
            EventBody::Outcome(_)
            | EventBody::AlertCommand(_)
            | EventBody::Model(_)
            | EventBody::Retrain(_)
            | EventBody::ModelBaseline(_) => None,
        }
    }

    /// The event in its JSON wire form (the inverse of [`crate::model::decode::decode_event`]).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value};

        fn put<T: Serialize>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
            if let Some(value) = value {
                if let Ok(value) = serde_json::to_value(value) {
                    map.insert(key.to_owned(), value);
                }
            }
        }
        fn labels_json(labels: &Labels) -> Value {
            Value::Object(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
                    .collect(),
            )
        }

        let mut map = Map::new();
        map.insert("type".into(), json!(self.body.type_name()));
        map.insert("ts".into(), json!(self.ts));
        match &self.body {
            EventBody::Session(event) => {
                map.insert("session_id".into(), json!(event.session_id.as_str()));
                put(&mut map, "user_id", event.user_id.as_deref());
                map.insert("kind".into(), json!(event.kind.as_str()));
                put(&mut map, "operation", event.operation.as_deref());
                put(&mut map, "duration_ms", event.duration_ms);
                put(&mut map, "tokens", event.tokens);
                put(&mut map, "success", event.success);
                put(&mut map, "message", event.message.as_deref());
            }
            EventBody::Metric(event) => {
                map.insert("name".into(), json!(event.name.as_str()));
                map.insert("value".into(), json!(event.value));
                if !event.labels.is_empty() {
                    map.insert("labels".into(), labels_json(&event.labels));
                }
                put(&mut map, "session_id", event.session_id.as_deref());
            }
            EventBody::Prediction(event) => {
                map.insert("model_id".into(), json!(event.model_id.as_str()));
                put(&mut map, "model_version", event.model_version.as_deref());
                map.insert("prediction_id".into(), json!(event.prediction_id.as_str()));
                map.insert("predicted".into(), json!(event.predicted.as_str()));
                map.insert("confidence".into(), json!(event.confidence));
                map.insert("latency_ms".into(), json!(event.latency_ms));
                if !event.features.is_empty() {
                    let features: Map<String, Value> = event
                        .features
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect();
                    map.insert("features".into(), Value::Object(features));
                }
                put(&mut map, "session_id", event.session_id.as_deref());
            }
            EventBody::Outcome(event) => {
                map.insert("prediction_id".into(), json!(event.prediction_id.as_str()));
                map.insert("actual".into(), json!(event.actual.as_str()));
                put(&mut map, "model_id", event.model_id.as_deref());
            }
            EventBody::AlertCommand(command) => {
                map.insert("command".into(), json!(command.command.as_str()));
                put(&mut map, "alert_id", command.alert_id.as_deref());
                put(&mut map, "actor", command.actor.as_deref());
                put(&mut map, "note", command.note.as_deref());
                put(&mut map, "title", command.title.as_deref());
                put(&mut map, "severity", command.severity.map(Severity::as_str));
                if !command.labels.is_empty() {
                    map.insert("labels".into(), labels_json(&command.labels));
                }
                put(&mut map, "message", command.message.as_deref());
                if !command.matchers.is_empty() {
                    map.insert("matchers".into(), json!(matchers_text(&command.matchers)));
                }
                put(&mut map, "duration_ms", command.duration_ms);
                put(&mut map, "starts_at", command.starts_at);
                put(&mut map, "origin", command.origin.as_deref());
                if let Some(rule) = &command.rule {
                    map.insert(
                        "rule".into(),
                        serde_json::from_str(rule).unwrap_or(Value::Null),
                    );
                }
            }
            EventBody::Retrain(request) => {
                map.insert("model_id".into(), json!(request.model_id.as_str()));
                put(&mut map, "actor", request.actor.as_deref());
                put(&mut map, "note", request.note.as_deref());
            }
            EventBody::ModelBaseline(pin) => {
                map.insert("model_id".into(), json!(pin.model_id.as_str()));
                put(&mut map, "model_version", pin.model_version.as_deref());
                put(&mut map, "actor", pin.actor.as_deref());
                put(&mut map, "note", pin.note.as_deref());
            }
            EventBody::Model(registration) => {
                map.insert("model_id".into(), json!(registration.model_id.as_str()));
                put(
                    &mut map,
                    "model_version",
                    registration.model_version.as_deref(),
                );
                put(&mut map, "task", registration.task.as_deref());
                if !registration.classes.is_empty() {
                    let classes: Vec<&str> =
                        registration.classes.iter().map(|c| c.as_str()).collect();
                    map.insert("classes".into(), json!(classes));
                }
                put(&mut map, "owner", registration.owner.as_deref());
                put(&mut map, "description", registration.description.as_deref());
                put(&mut map, "min_accuracy", registration.min_accuracy);
                put(
                    &mut map,
                    "max_latency_p99_ms",
                    registration.max_latency_p99_ms,
                );
                put(
                    &mut map,
                    "baseline_version",
                    registration.baseline_version.as_deref(),
                );
            }
        }
        for (key, raw) in &self.attrs {
            let value = serde_json::from_str(raw).unwrap_or(Value::Null);
            map.insert(key.to_string(), value);
        }
        Value::Object(map)
    }
}
