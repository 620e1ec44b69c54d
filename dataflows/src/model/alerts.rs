//! The alert lifecycle: what a person sees and acts on.
//!
//! Rule-based alerts are born from breach transitions (one per rule and series, keyed by
//! fingerprint); custom alerts from `create` commands. People acknowledge and resolve them
//! with `alert_command` events, so the lifecycle is a function of the event stream.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::event::{AlertAction, Id, Labels, Severity};
use super::labels::labels_as_map;
use super::series::SeriesKey;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds and nobody has taken it yet.
    Firing,
    /// Somebody is on it.
    Acknowledged,
    /// The rule's condition holds but not yet for its `for` duration: visible, never
    /// notified, not escalated.
    Pending,
    /// Over: the condition cleared or somebody resolved it.
    Resolved,
}

impl AlertStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Acknowledged => "acknowledged",
            Self::Pending => "pending",
            Self::Resolved => "resolved",
        }
    }

    /// Firing or acknowledged.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Firing | Self::Acknowledged)
    }

    /// Not resolved: firing, acknowledged or pending.
    pub fn is_open(self) -> bool {
        self != Self::Resolved
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resolution note of a pending alert whose condition cleared before it fired.
pub const PENDING_CLEARED: &str = "cleared while pending; never fired";

/// Who did what, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertAct {
    /// `rule` for automatic transitions, else the actor named in the command.
    pub by: Id,
    /// Event time, ms.
    pub at: u64,
    /// The reason given, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The state of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The fingerprint (rule-based) or the custom alert's id.
    pub id: String,
    /// The rule that raised it; none for custom alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<Id>,
    /// The series, for rule-based alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SeriesKey>,
    /// A one-line summary.
    pub title: String,
    /// Details (custom alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Labels (custom alerts).
    #[serde(default, with = "labels_as_map", skip_serializing_if = "Vec::is_empty")]
    pub labels: Labels,
    /// Annotations rendered from the rule's templates (see `model::template`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Severity.
    pub severity: Severity,
    /// Current status.
    pub status: AlertStatus,
    /// When the current firing streak began, ms.
    pub since: u64,
    /// Latest value of the watched statistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The rule's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How many times it fired.
    pub fired: u64,
    /// The acknowledgement of the current streak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<AlertAct>,
    /// The resolution, when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<AlertAct>,
    /// Event time of the latest change, ms.
    pub updated_at: u64,
    /// Escalation steps taken in the current streak.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalation_step: u32,
    /// Reminders sent in the current streak.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub reminders: u64,
    /// The latest escalation or reminder (`by` is `escalation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated: Option<AlertAct>,
    /// Channels escalation added to this alert's routing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalated_to: Vec<String>,
    /// Firings held back by noise control, over the alert's life.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub suppressed: u64,
    /// The latest suppression: `by` names the mechanism (`cooldown`), `note` says why.
    /// When its `at` equals `updated_at`, the latest change was that suppression, and it is
    /// not notified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression: Option<AlertAct>,
    /// Notifications held back, by mechanism: `cooldown` and `silence` (counted here, by
    /// the dataflow, like `suppressed`) and `rate_limit` (the dispatcher's global limit
    /// deferred a notification of this alert; added when the alert is read, see
    /// `megamind_connectors::notify::route::DispatchMetrics::annotate`). Never reset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub suppressed_by: BTreeMap<String, u64>,
    /// The alert whose inhibition rule mutes this one now (set when the alert is read,
    /// from the dispatcher, which applies inhibition; never by the dataflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inhibited_by: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

impl AlertRecord {
    /// A record in `status` since `at` with nothing else set: no rule, series, labels,
    /// values, people's acts, escalation or suppression. The one place that spells out
    /// every field; other constructors and tests start from it.
    pub fn new(
        id: String,
        title: String,
        severity: Severity,
        status: AlertStatus,
        at: u64,
    ) -> Self {
        Self {
            id,
            title,
            rule_id: None,
            key: None,
            message: None,
            labels: Vec::new(),
            annotations: BTreeMap::new(),
            severity,
            status,
            since: at,
            value: None,
            threshold: None,
            fired: 0,
            acknowledged: None,
            resolved: None,
            updated_at: at,
            escalation_step: 0,
            reminders: 0,
            escalated: None,
            escalated_to: Vec::new(),
            suppressed: 0,
            suppression: None,
            suppressed_by: BTreeMap::new(),
            inhibited_by: None,
        }
    }

    /// A new, resolved record for the alert of rule `rule_id` on series `key`: the state
    /// before its first streak.
    pub fn new_rule_alert(
        id: String,
        rule_id: Id,
        key: SeriesKey,
        severity: Severity,
        threshold: f64,
        at: u64,
    ) -> Self {
        Self {
            title: format!("{rule_id} on {key}"),
            rule_id: Some(rule_id),
            key: Some(key),
            threshold: Some(threshold),
            ..Self::new(id, String::new(), severity, AlertStatus::Resolved, at)
        }
    }

    /// Whether the latest change to this record is one that is shown but not notified:
    /// pending, a pending streak that cleared before it fired, or a suppression.
    pub fn is_quiet(&self) -> bool {
        self.status == AlertStatus::Pending
            || self.just_suppressed()
            || (self.status == AlertStatus::Resolved
                && self.resolved.as_ref().is_some_and(|act| {
                    act.at == self.updated_at && act.note.as_deref() == Some(PENDING_CLEARED)
                }))
    }

    /// Whether the latest change to this record was a suppression (nothing to notify).
    pub fn just_suppressed(&self) -> bool {
        self.suppression
            .as_ref()
            .is_some_and(|act| act.at == self.updated_at)
    }

    /// The value of label `name`: the alert's labels, then its series' labels, then the
    /// built-in `severity`, `rule` and `status`.
    pub fn label(&self, name: &str) -> Option<&str> {
        if let Some((_, value)) = self.labels.iter().find(|(key, _)| key == name) {
            return Some(value.as_str());
        }
        self.key
            .as_ref()
            .and_then(|key| key.labels.iter().find(|(k, _)| k == name))
            .map(|(_, value)| value.as_str())
            .or(match name {
                "severity" => Some(self.severity.as_str()),
                "rule" => self.rule_id.as_deref(),
                "status" => Some(self.status.as_str()),
                _ => None,
            })
    }
}

/// A command that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRejection {
    /// The alert named.
    pub alert_id: String,
    /// The command.
    pub command: AlertAction,
    /// Why, in words.
    pub reason: String,
    /// Event time of the command, ms.
    pub at: u64,
}
