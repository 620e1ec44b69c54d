//! Escalation policies: what happens to an alert nobody acknowledges.
//!
//! A policy matches alerts by severity and labels (like a route) and holds a chain of
//! steps, each `after` a delay since the alert started firing: notify more channels,
//! optionally raise the severity. After the last step, an optional `repeat` interval sends
//! reminders until someone acknowledges or the alert resolves. Delays are event time; the
//! timers live in the `ManageAlerts` operator (see `operators::manage_alerts`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alerts::AlertRecord;
use super::event::Severity;

/// One step of an escalation chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Delay since the alert started firing (event time).
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Channels notified from this step on (added to the alert's routing).
    #[serde(default)]
    pub channels: Vec<String>,
    /// The severity the alert is raised to (never lowered).
    #[serde(default)]
    pub raise_to: Option<Severity>,
}

/// An escalation chain for the alerts it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    /// Matches alerts of any of these severities (empty: any), at the time they fire.
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Matches alerts carrying all these labels (`rule` matches the rule id).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Steps, by increasing `after`.
    #[serde(default)]
    pub steps: Vec<EscalationStep>,
    /// After the last step, a reminder this often while nobody acknowledges.
    #[serde(default, with = "humantime_serde")]
    pub repeat: Option<Duration>,
}

impl EscalationPolicy {
    /// Problems the types cannot express, naming their fields under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.steps.is_empty() && self.repeat.is_none() {
            problems.push(format!("{prefix}: needs at least one of steps or repeat"));
        }
        for (position, pair) in self.steps.windows(2).enumerate() {
            if pair[1].after < pair[0].after {
                problems.push(format!(
                    "{prefix}.steps[{}].after: must not be shorter than the step before",
                    position + 1
                ));
            }
        }
        if self.repeat.is_some_and(|repeat| repeat.is_zero()) {
            problems.push(format!("{prefix}.repeat: must be positive"));
        }
        problems
    }

    /// Whether the policy applies to `alert`.
    pub fn matches(&self, alert: &AlertRecord) -> bool {
        (self.severity.is_empty() || self.severity.contains(&alert.severity))
            && self
                .labels
                .iter()
                .all(|(name, value)| alert.label(name) == Some(value.as_str()))
    }
}

/// The first policy of `policies` that applies to `alert`.
pub fn policy_for(policies: &[EscalationPolicy], alert: &AlertRecord) -> Option<usize> {
    policies.iter().position(|policy| policy.matches(alert))
}
