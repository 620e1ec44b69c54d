//! Threshold rules over window statistics, the breaches they find, and the alert
//! transitions that follow.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alerts::AlertAct;
use super::event::{Id, Labels, Severity};
use super::labels::labels_as_map;
use super::series::{SeriesKey, WindowStats};
use super::template::{RuleTemplates, Template, TemplateError};

/// Which window statistic a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Sample count.
    Count,
    /// Sum of values.
    Sum,
    /// Mean value.
    Mean,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Samples per second.
    Rate,
    /// Median.
    P50,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
}

impl Aggregate {
    /// The statistic's value in `stats`.
    pub fn apply(self, stats: &WindowStats) -> f64 {
        match self {
            Self::Count => stats.count as f64,
            Self::Sum => stats.sum,
            Self::Mean => stats.mean,
            Self::Min => stats.min,
            Self::Max => stats.max,
            Self::Rate => stats.rate,
            Self::P50 => stats.p50,
            Self::P95 => stats.p95,
            Self::P99 => stats.p99,
        }
    }
}

/// How a value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Comparison {
    /// value > threshold
    #[serde(rename = ">")]
    Above,
    /// value >= threshold
    #[serde(rename = ">=")]
    AtLeast,
    /// value < threshold
    #[serde(rename = "<")]
    Below,
    /// value <= threshold
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparison {
    /// Whether `value` breaches `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Above => value > threshold,
            Self::AtLeast => value >= threshold,
            Self::Below => value < threshold,
            Self::AtMost => value <= threshold,
        }
    }

    /// The operator symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Above => ">",
            Self::AtLeast => ">=",
            Self::Below => "<",
            Self::AtMost => "<=",
        }
    }
}

/// A rule that fails validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The id is empty.
    #[error("rule id must not be empty")]
    EmptyId,
    /// The metric pattern is empty.
    #[error("rule {rule:?}: metric must not be empty")]
    EmptyMetric {
        /// The rule.
        rule: String,
    },
    /// The threshold is NaN or infinite.
    #[error("rule {rule:?}: threshold must be a finite number")]
    NonFiniteThreshold {
        /// The rule.
        rule: String,
    },
    /// A summary or annotation template does not parse.
    #[error("rule {rule:?}: {field}: {error}")]
    Template {
        /// The rule.
        rule: String,
        /// `summary` or `annotations.<name>`.
        field: String,
        /// What is wrong.
        error: TemplateError,
    },
    /// The predictive horizon is zero or too long.
    #[error("rule {rule:?}: forecast must be between 1s and {max} (got {got})")]
    Forecast {
        /// The rule.
        rule: String,
        /// The horizon given, as written.
        got: String,
        /// The longest horizon, as written.
        max: &'static str,
    },
    /// The id ends in `.forecast`, the suffix of predictive alerts' rule ids.
    #[error("rule {rule:?}: id must not end in `.forecast` (predictive alerts use that suffix)")]
    ForecastSuffix {
        /// The rule.
        rule: String,
    },
    /// Two rules share an id.
    #[error("rule id {rule:?} is used more than once")]
    DuplicateId {
        /// The rule.
        rule: String,
    },
}

fn default_min_count() -> u64 {
    1
}

/// A threshold rule over window statistics: "the window `mean` of `latency_ms` is `>` 70".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreachRule {
    /// Unique id, used in fingerprints and metric labels.
    pub id: Id,
    /// The metric name to watch; `*` watches every series.
    pub metric: Id,
    /// Only series carrying all these labels.
    #[serde(default, with = "labels_as_map")]
    pub labels: Labels,
    /// The statistic compared.
    pub aggregate: Aggregate,
    /// The comparison.
    pub op: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// Severity of the breach.
    pub severity: Severity,
    /// Windows with fewer samples are ignored.
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// How long (event time, between window ends) the condition must hold before the
    /// alert fires; until then it is pending. `0s`: fire on the first breaching window.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_duration: Duration,
    /// How long the alert keeps firing after the condition stops holding (anti-flap): a
    /// breach within this time continues the same firing streak. `0s`: resolve on the
    /// first clear window.
    #[serde(default, with = "humantime_serde")]
    pub keep_firing_for: Duration,
    /// After the alert resolves, a new firing streak starting within this time is held
    /// back (counted on the alert as suppressed, reason `cooldown`, not notified); if the
    /// condition still holds when the cooldown ends, the alert fires then. `0s`: no
    /// cooldown.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Duration,
    /// Predictive horizon: when set, the rule also fires a *predictive* alert (rule id
    /// `<id>.forecast`) while the series' Holt forecast crosses the threshold within this
    /// time and the latest window does not breach yet.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub forecast: Option<Duration>,
    /// The alert's title, a template (`{{ $value }}`, `{{ $labels.team }}`, ...; see
    /// `model::template`); default `<rule> on <series>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Further texts on the alert (for example `description`, `runbook`), templates too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The longest predictive horizon a rule may ask for (`forecast`): a Holt forecast over a
/// few dozen windows says little about next week.
pub(crate) const MAX_FORECAST: Duration = Duration::from_secs(7 * 24 * 3600);

impl BreachRule {
    /// Checks the rule's own invariants.
    ///
    /// # Errors
    /// The first invariant violated.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.id.is_empty() {
            return Err(RuleError::EmptyId);
        }
        if self.metric.is_empty() {
            return Err(RuleError::EmptyMetric {
                rule: self.id.to_string(),
            });
        }
        if !self.threshold.is_finite() {
            return Err(RuleError::NonFiniteThreshold {
                rule: self.id.to_string(),
            });
        }
        if self.id.ends_with(".forecast") {
            return Err(RuleError::ForecastSuffix {
                rule: self.id.to_string(),
            });
        }
        if let Some(horizon) = self.forecast {
            if horizon < Duration::from_secs(1) || horizon > MAX_FORECAST {
                return Err(RuleError::Forecast {
                    rule: self.id.to_string(),
                    got: format!("{horizon:?}"),
                    max: "7days",
                });
            }
        }
        self.templates().map(|_| ())
    }

    /// The parsed `summary` and `annotations`.
    ///
    /// # Errors
    /// The first template that does not parse, with its field.
    pub fn templates(&self) -> Result<RuleTemplates, RuleError> {
        let parse = |field: String, source: &str| {
            Template::parse(source).map_err(|error| RuleError::Template {
                rule: self.id.to_string(),
                field,
                error,
            })
        };
        let summary = match &self.summary {
            Some(source) => Some(parse("summary".to_owned(), source)?),
            None => None,
        };
        let mut annotations = Vec::new();
        for (name, source) in &self.annotations {
            annotations.push((name.clone(), parse(format!("annotations.{name}"), source)?));
        }
        Ok(RuleTemplates {
            summary,
            annotations,
        })
    }

    /// Whether the rule watches this series.
    pub fn watches(&self, key: &SeriesKey) -> bool {
        (self.metric == "*" || self.metric == key.name) && key.has_labels(&self.labels)
    }

    /// The breaching value, if `stats` breaches the rule.
    pub fn check(&self, stats: &WindowStats) -> Option<f64> {
        if stats.count < self.min_count {
            return None;
        }
        let value = self.aggregate.apply(stats);
        self.op.holds(value, self.threshold).then_some(value)
    }

    /// The fingerprint of this rule's alert for `key`: stable across processes and runs.
    /// It ends in the series' routing hash ([`SeriesKey::route`]), so the alert lifecycle
    /// keeps the alert on the worker that owns the series and evaluates the rule: a window
    /// close's alerts go out without crossing to another worker.
    pub fn fingerprint(&self, key: &SeriesKey) -> String {
        format!("{}-{:016x}", self.id, key.route())
    }
}

/// One window in which a rule held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// The rule.
    pub rule_id: Id,
    /// The series.
    pub key: SeriesKey,
    /// Window start, ms.
    pub start: u64,
    /// Window end, ms.
    pub end: u64,
    /// The statistic compared.
    pub aggregate: Aggregate,
    /// The comparison.
    pub op: Comparison,
    /// The statistic's value.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The rule's severity.
    pub severity: Severity,
}

/// The state an alert moves into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, but not yet for the rule's `for` duration.
    Pending,
    /// The condition holds.
    Firing,
    /// The condition stopped holding (or the series went quiet).
    Resolved,
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        })
    }
}

/// An alert changing state: emitted on the first breaching window of a streak (`pending`
/// when the rule has a `for` duration, then `firing` once it elapsed) and on the first
/// window after it that does not breach (`resolved`, also for a pending streak).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertTransition {
    /// Rule id plus a hash of the series key.
    pub fingerprint: String,
    /// The rule.
    pub rule_id: Id,
    /// The series.
    pub key: SeriesKey,
    /// The new state.
    pub state: AlertState,
    /// Event time of the transition (the end of the deciding window), ms.
    pub at: u64,
    /// The statistic's value in the deciding window (none when the series went quiet).
    pub value: Option<f64>,
    /// The rule's threshold.
    pub threshold: f64,
    /// The rule's severity.
    pub severity: Severity,
}

/// A rule created, replaced or deleted at run time (`create_rule` / `delete_rule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleChange {
    /// The rule's id.
    pub rule_id: Id,
    /// The rule as it now is; none when deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<BreachRule>,
    /// Who, when (event time), why.
    pub by: AlertAct,
}
