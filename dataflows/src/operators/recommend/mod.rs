//! `recommend`: risks and recommendations over the predictive outputs, deduplicated while
//! they hold.
//!
//! ```text
//!   SessionPrediction / Forecast / ModelMetrics ─► candidates ─exchange(insight id)─►
//!       Recommend ─► Update::Insight (raised | updated | cleared)
//! ```
//!
//! The rules ([`candidates`]) are plain functions of one update: each names the insight
//! ids the update speaks for, and for each either a candidate (the condition holds) or
//! none (it does not). The [`Dedup`] core then emits `raised` the first time a condition
//! holds, `updated` only when its priority changes, and `cleared` once when it stops; a
//! repeat of the same condition emits nothing.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rustc_hash::FxBuildHasher;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

use crate::model::{
    Insight, InsightChange, ModelSnapshot, PredictionStatus, Priority, SeriesForecast,
    SessionPrediction, SubjectKind, Update,
};
use crate::Time;

/// Thresholds of the recommendation rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendConfig {
    /// A running session below this success probability is at risk.
    pub low_success_probability: f64,
    /// A threshold crossing forecast within this time is reported.
    pub time_to_threshold: std::time::Duration,
    /// Memory (RSS, bytes) whose forecast upper bound exceeds this is reported.
    pub memory_limit_bytes: f64,
    /// CPU percent whose forecast exceeds this is reported.
    pub cpu_limit_percent: f64,
    /// A model whose windowed accuracy falls below this (with enough outcomes) is reported.
    pub min_model_accuracy: f64,
    /// Outcomes a model's window needs before its accuracy is judged.
    pub min_model_outcomes: u64,
    /// Insights held per worker; beyond it the oldest is cleared.
    pub max_active: usize,
}

impl Default for RecommendConfig {
    fn default() -> Self {
        Self {
            low_success_probability: 0.3,
            time_to_threshold: std::time::Duration::from_secs(30 * 60),
            memory_limit_bytes: 2.0 * 1024.0 * 1024.0 * 1024.0,
            cpu_limit_percent: 90.0,
            min_model_accuracy: 0.7,
            min_model_outcomes: 20,
            max_active: 10_000,
        }
    }
}

/// A condition that holds, before deduplication.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// Insight kind.
    pub kind: String,
    /// Subject kind.
    pub subject_kind: SubjectKind,
    /// Subject id.
    pub subject: String,
    /// Priority.
    pub priority: Priority,
    /// Impact in `[0, 1]`.
    pub impact: f64,
    /// What was found.
    pub message: String,
    /// What to do.
    pub action: String,
}

/// One verdict: the insight `id` holds (`Some`) or does not (`None`), at `at`.
pub type Verdict = (String, Option<Candidate>, u64);

fn insight_id(kind: &str, subject: &str) -> String {
    format!("{kind}:{subject}")
}

fn minutes(ms: u64) -> String {
    let minutes = ms as f64 / 60_000.0;
    if minutes < 1.0 {
        format!("{}s", (ms as f64 / 1000.0).round())
    } else {
        format!("{}min", minutes.round())
    }
}

/// The verdicts one update gives (empty when it speaks for no insight).
pub fn candidates(update: &Update, config: &RecommendConfig) -> Vec<Verdict> {
    match update {
        Update::SessionPrediction(prediction) => session_verdicts(prediction, config),
        Update::Forecast(forecast) => forecast_verdicts(forecast, config),
        Update::ModelMetrics(snapshot) => model_verdicts(snapshot, config),
        _ => Vec::new(),
    }
}

fn session_verdicts(prediction: &SessionPrediction, config: &RecommendConfig) -> Vec<Verdict> {
    let id = insight_id("session_at_risk", &prediction.session_id);
    let holds = match (prediction.status, prediction.success_probability) {
        (PredictionStatus::Predicted, Some(probability))
            if probability < config.low_success_probability =>
        {
            let priority = if probability < 0.1 {
                Priority::Critical
            } else if probability < 0.2 {
                Priority::High
            } else {
                Priority::Medium
            };
            Some(Candidate {
                kind: "session_at_risk".into(),
                subject_kind: SubjectKind::Session,
                subject: prediction.session_id.to_string(),
                priority,
                impact: (1.0 - probability).clamp(0.0, 1.0),
                message: format!(
                    "session {} is likely to fail (success probability {:.0}%)",
                    prediction.session_id,
                    probability * 100.0
                ),
                action: format!(
                    "look at the session's recent errors (topic sessions/{}) and stop or restart it before it spends more",
                    prediction.session_id
                ),
            })
        }
        _ => None,
    };
    vec![(id, holds, prediction.at)]
}

fn forecast_verdicts(forecast: &SeriesForecast, config: &RecommendConfig) -> Vec<Verdict> {
    let subject = forecast.key.to_string();
    let mut out = Vec::new();
    let reach = crate::time::duration_ms(config.time_to_threshold);
    for threshold in &forecast.thresholds {
        let id = insight_id(
            "time_to_threshold",
            &format!("{}|{subject}", threshold.rule_id),
        );
        let holds = threshold.crosses_in_ms.filter(|ms| *ms <= reach).map(|ms| {
            let priority = if ms <= 5 * 60_000 {
                Priority::Critical
            } else if ms <= 15 * 60_000 {
                Priority::High
            } else {
                Priority::Medium
            };
            Candidate {
                kind: "time_to_threshold".into(),
                subject_kind: SubjectKind::Series,
                subject: subject.clone(),
                priority,
                impact: (1.0 - ms as f64 / reach.max(1) as f64).clamp(0.0, 1.0),
                message: format!(
                    "{:?} of {subject} crosses {} {} in ~{} (rule {})",
                    threshold.aggregate,
                    threshold.op.symbol(),
                    threshold.threshold,
                    minutes(ms),
                    threshold.rule_id
                )
                .to_lowercase(),
                action: format!(
                    "act before rule {} fires: shed load or scale what feeds {}",
                    threshold.rule_id, forecast.key.name
                ),
            }
        });
        out.push((id, holds, forecast.at));
    }
    let name = forecast.key.name.as_str();
    if name.contains("error") {
        let id = insight_id("rising_error_rate", &subject);
        let holds = (forecast.trend == "rising").then(|| Candidate {
            kind: "rising_error_rate".into(),
            subject_kind: SubjectKind::Series,
            subject: subject.clone(),
            priority: if forecast.slope_p_value < 0.001 {
                Priority::High
            } else {
                Priority::Medium
            },
            impact: (1.0 - forecast.slope_p_value).clamp(0.0, 1.0) * 0.8,
            message: format!(
                "{subject} is rising ({:+.4}/min, p = {:.3})",
                forecast.slope_per_min, forecast.slope_p_value
            ),
            action: "check recent deployments and the newest error messages".into(),
        });
        out.push((id, holds, forecast.at));
    }
    if name == "megamind.process.memory_bytes" {
        let id = insight_id("memory_forecast_over_limit", &subject);
        // The point forecast, not the interval's upper end: Holt intervals many steps
        // ahead are wide (they grow with h³ through the trend term).
        let holds = (forecast.forecast > 0.9 * config.memory_limit_bytes).then(|| Candidate {
            kind: "memory_forecast_over_limit".into(),
            subject_kind: SubjectKind::Series,
            subject: subject.clone(),
            priority: if forecast.forecast > config.memory_limit_bytes {
                Priority::Critical
            } else {
                Priority::High
            },
            impact: (forecast.forecast / config.memory_limit_bytes).clamp(0.0, 1.0),
            message: format!(
                "megamind's memory is forecast at {:.0} MiB within {} (limit {:.0} MiB)",
                forecast.forecast / 1_048_576.0,
                minutes(forecast.horizon_ms),
                config.memory_limit_bytes / 1_048_576.0
            ),
            action: "lower window/session retention or max series, or give the process more memory"
                .into(),
        });
        out.push((id, holds, forecast.at));
    }
    if name == "megamind.process.cpu_percent" {
        let id = insight_id("cpu_forecast_high", &subject);
        let holds = (forecast.forecast > config.cpu_limit_percent).then(|| Candidate {
            kind: "cpu_forecast_high".into(),
            subject_kind: SubjectKind::Series,
            subject: subject.clone(),
            priority: Priority::Medium,
            impact: (forecast.forecast / 100.0).clamp(0.0, 1.0),
            message: format!(
                "megamind's CPU is forecast at {:.0}% within {}",
                forecast.forecast,
                minutes(forecast.horizon_ms)
            ),
            action: "add workers or processes, or reduce the ingest rate".into(),
        });
        out.push((id, holds, forecast.at));
    }
    out
}

fn model_verdicts(snapshot: &ModelSnapshot, config: &RecommendConfig) -> Vec<Verdict> {
    let subject = format!("{}@{}", snapshot.model_id, snapshot.model_version);
    let id = insight_id("model_accuracy_low", &subject);
    let window = &snapshot.window;
    let holds = window
        .accuracy
        .filter(|accuracy| {
            window.matched >= config.min_model_outcomes && *accuracy < config.min_model_accuracy
        })
        .map(|accuracy| Candidate {
            kind: "model_accuracy_low".into(),
            subject_kind: SubjectKind::Model,
            subject: subject.clone(),
            priority: if accuracy < config.min_model_accuracy / 2.0 {
                Priority::High
            } else {
                Priority::Medium
            },
            impact: (config.min_model_accuracy - accuracy).clamp(0.0, 1.0)
                / config.min_model_accuracy.max(f64::EPSILON),
            message: format!(
                "model {subject} is {:.0}% accurate over its window (floor {:.0}%)",
                accuracy * 100.0,
                config.min_model_accuracy * 100.0
            ),
            action: "retrain the model or roll back to the previous version".into(),
        });
    vec![(id, holds, snapshot.last_seen)]
}

/// Deduplication state of one worker's insights (the pure core).
#[derive(Debug, Default)]
pub struct Dedup {
    active: HashMap<String, (Candidate, u64), FxBuildHasher>,
}

impl Dedup {
    /// Insights currently held.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Applies one verdict; returns the change to emit, if any (plus a forced clear of the
    /// oldest insight when the bound is exceeded).
    pub fn apply(&mut self, verdict: Verdict, max_active: usize) -> Vec<Insight> {
        let (id, candidate, at) = verdict;
        let mut out = Vec::new();
        match (candidate, self.active.get(&id)) {
            (Some(candidate), None) => {
                out.push(insight(&id, &candidate, InsightChange::Raised, at));
                self.active.insert(id, (candidate, at));
                if self.active.len() > max_active.max(1) {
                    let oldest = self
                        .active
                        .iter()
                        .min_by(|left, right| (left.1 .1, left.0).cmp(&(right.1 .1, right.0)))
                        .map(|(id, _)| id.clone());
                    if let Some(oldest) = oldest {
                        if let Some((candidate, _)) = self.active.remove(&oldest) {
                            out.push(insight(&oldest, &candidate, InsightChange::Cleared, at));
                        }
                    }
                }
            }
            (Some(candidate), Some((held, _))) => {
                if held.priority != candidate.priority {
                    out.push(insight(&id, &candidate, InsightChange::Updated, at));
                    self.active.insert(id, (candidate, at));
                }
            }
            (None, Some(_)) => {
                if let Some((held, _)) = self.active.remove(&id) {
                    out.push(insight(&id, &held, InsightChange::Cleared, at));
                }
            }
            (None, None) => {}
        }
        out
    }
}

fn insight(id: &str, candidate: &Candidate, change: InsightChange, at: u64) -> Insight {
    Insight {
        id: id.to_string(),
        category: candidate.kind.as_str().into(),
        subject_kind: candidate.subject_kind,
        subject: candidate.subject.clone(),
        change,
        priority: candidate.priority,
        impact: candidate.impact,
        message: candidate.message.clone(),
        action: candidate.action.clone(),
        at,
    }
}

fn route(id: &str) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    id.hash(&mut hasher);
    hasher.finish()
}

/// Risks and recommendations.
pub trait Recommend<'scope> {
    /// Turns session predictions, forecasts and model snapshots into deduplicated
    /// insights with priority, impact, message and suggested action.
    ///
    /// # Inputs and outputs
    /// `self`: updates (session predictions, forecasts, model metrics are read). Returns
    /// `Update::Insight`s.
    ///
    /// # Frontier behaviour
    /// Stateless in time: a change leaves at the time of the update that caused it.
    /// Verdicts for one insight come from the one worker owning its subject, in order.
    ///
    /// # State
    /// One candidate per held insight, at most `max_active` per worker (beyond it the
    /// oldest is cleared).
    fn recommend(self, name: &str, config: &RecommendConfig) -> StreamVec<'scope, Time, Update>;
}

impl<'scope> Recommend<'scope> for StreamVec<'scope, Time, Update> {
    fn recommend(self, name: &str, config: &RecommendConfig) -> StreamVec<'scope, Time, Update> {
        let rules = config.clone();
        let verdicts = self.unary(Pipeline, &format!("Candidates({name})"), move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for update in data.iter() {
                        for verdict in candidates(update, &rules) {
                            session.give(verdict);
                        }
                    }
                });
            }
        });
        let max_active = config.max_active;
        let exchange = Exchange::new(|(id, _, _): &Verdict| route(id));
        verdicts.unary(exchange, &format!("Recommend({name})"), move |_, _| {
            let mut dedup = Dedup::default();
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for verdict in data.drain(..) {
                        for insight in dedup.apply(verdict, max_active) {
                            session.give(Update::Insight(Box::new(insight)));
                        }
                    }
                });
            }
        })
    }
}

#[cfg(test)]
mod tests;
