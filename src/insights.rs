//! The latest predictive insights, as read by `/v1/insights`, `/v1/forecasts`, MCP
//! (`realtime_get_analytics`, `realtime_get_status`) and WebSocket snapshots.
//!
//! Bounded like the other views: session predictions are capped (oldest `at` first out),
//! forecasts leave with their series (`series_idle`) and are capped, active insights leave
//! when cleared and are capped, and only the latest changes and model versions are kept.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;

use megamind_dataflows::model::{
    Id, Insight, InsightChange, SeriesForecast, SeriesKey, SessionPrediction, SuccessModelReport,
    Update,
};
use serde::Serialize;

/// Recent insight changes remembered.
const RECENT_CHANGES: usize = 256;
/// Success-model versions remembered.
const RECENT_MODELS: usize = 20;

/// The names of megamind's own health series (fed back by the health sampler).
pub const HEALTH_SERIES: [&str; 3] = [
    "megamind.process.cpu_percent",
    "megamind.process.memory_bytes",
    "megamind.ingest.queue_depth",
];

#[derive(Debug, Default)]
struct State {
    predictions: HashMap<Id, SessionPrediction>,
    forecasts: HashMap<SeriesKey, SeriesForecast>,
    active: BTreeMap<String, Insight>,
    recent: VecDeque<Insight>,
    models: VecDeque<SuccessModelReport>,
}

/// Insights, forecasts and session predictions (see the module docs).
#[derive(Debug)]
pub struct InsightViews {
    max_sessions: usize,
    max_series: usize,
    state: RwLock<State>,
}

/// What `/v1/insights` and the analytics tool return.
#[derive(Debug, Clone, Serialize)]
pub struct InsightsSnapshot {
    /// Insights that hold now, highest priority first.
    pub active: Vec<Insight>,
    /// The latest changes (raised/updated/cleared), newest last.
    pub recent: Vec<Insight>,
    /// The session success model (latest version), if trained.
    pub success_model: Option<SuccessModelReport>,
    /// Running sessions with their success probability, lowest first.
    pub at_risk_sessions: Vec<SessionPrediction>,
}

impl InsightViews {
    /// Empty views holding at most `max_sessions` predictions and `max_series` forecasts.
    pub fn new(max_sessions: usize, max_series: usize) -> Self {
        Self {
            max_sessions: max_sessions.max(1),
            max_series: max_series.max(1),
            state: RwLock::new(State::default()),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies the insight-related updates of a batch; returns how many were refused
    /// because a bound was reached.
    pub fn apply(&self, updates: &[Update]) -> u64 {
        let relevant = updates.iter().any(|update| {
            matches!(
                update,
                Update::SessionPrediction(_)
                    | Update::Forecast(_)
                    | Update::Insight(_)
                    | Update::SuccessModel(_)
                    | Update::SeriesIdle { .. }
            )
        });
        if !relevant {
            return 0;
        }
        let mut dropped = 0;
        let mut state = self.write();
        for update in updates {
            match update {
                Update::SessionPrediction(prediction) => {
                    if !state.predictions.contains_key(&prediction.session_id)
                        && state.predictions.len() >= self.max_sessions
                    {
                        let oldest = state
                            .predictions
                            .values()
                            .min_by_key(|held| (held.at, held.session_id.clone()))
                            .map(|held| held.session_id.clone());
                        if let Some(oldest) = oldest {
                            state.predictions.remove(&oldest);
                        }
                    }
                    state
                        .predictions
                        .insert(prediction.session_id.clone(), (**prediction).clone());
                }
                Update::Forecast(forecast) => {
                    if !state.forecasts.contains_key(&forecast.key)
                        && state.forecasts.len() >= self.max_series
                    {
                        dropped += 1;
                        continue;
                    }
                    state
                        .forecasts
                        .insert(forecast.key.clone(), (**forecast).clone());
                }
                Update::SeriesIdle { key, .. } => {
                    state.forecasts.remove(key);
                }
                Update::Insight(insight) => {
                    match insight.change {
                        InsightChange::Cleared => {
                            state.active.remove(&insight.id);
                        }
                        InsightChange::Raised | InsightChange::Updated => {
                            if state.active.contains_key(&insight.id)
                                || state.active.len() < self.max_series
                            {
                                state.active.insert(insight.id.clone(), (**insight).clone());
                            } else {
                                dropped += 1;
                            }
                        }
                    }
                    state.recent.push_back((**insight).clone());
                    while state.recent.len() > RECENT_CHANGES {
                        state.recent.pop_front();
                    }
                }
                Update::SuccessModel(report) => {
                    state.models.push_back((**report).clone());
                    while state.models.len() > RECENT_MODELS {
                        state.models.pop_front();
                    }
                }
                _ => {}
            }
        }
        dropped
    }

    /// Active insights, recent changes, the success model and the riskiest sessions.
    pub fn snapshot(&self, limit: usize) -> InsightsSnapshot {
        let state = self.read();
        let mut active: Vec<Insight> = state.active.values().cloned().collect();
        active.sort_by(|left, right| {
            right
                .priority
                .cmp(&left.priority)
                .then(right.impact.total_cmp(&left.impact))
                .then(left.id.cmp(&right.id))
        });
        active.truncate(limit.max(1));
        let mut at_risk: Vec<SessionPrediction> = state
            .predictions
            .values()
            .filter(|prediction| {
                prediction.outcome.is_none() && prediction.success_probability.is_some()
            })
            .cloned()
            .collect();
        at_risk.sort_by(|left, right| {
            left.success_probability
                .unwrap_or(1.0)
                .total_cmp(&right.success_probability.unwrap_or(1.0))
                .then(left.session_id.cmp(&right.session_id))
        });
        at_risk.truncate(limit.clamp(1, 50));
        InsightsSnapshot {
            active,
            recent: state.recent.iter().cloned().collect(),
            success_model: state.models.back().cloned(),
            at_risk_sessions: at_risk,
        }
    }

    /// Latest forecasts of series whose name starts with `prefix` (all when empty),
    /// sorted by key.
    pub fn forecasts(&self, prefix: &str, limit: usize) -> Vec<SeriesForecast> {
        let state = self.read();
        let mut out: Vec<SeriesForecast> = state
            .forecasts
            .values()
            .filter(|forecast| forecast.key.name.starts_with(prefix))
            .cloned()
            .collect();
        out.sort_by(|left, right| left.key.cmp(&right.key));
        out.truncate(limit.max(1));
        out
    }

    /// The forecasts of megamind's own health series.
    pub fn health_forecast(&self) -> Vec<SeriesForecast> {
        let state = self.read();
        let mut out: Vec<SeriesForecast> = state
            .forecasts
            .values()
            .filter(|forecast| HEALTH_SERIES.contains(&forecast.key.name.as_str()))
            .cloned()
            .collect();
        out.sort_by(|left, right| left.key.cmp(&right.key));
        out
    }

    /// The latest prediction of one session.
    pub fn session_prediction(&self, session_id: &str) -> Option<SessionPrediction> {
        self.read().predictions.get(session_id).cloned()
    }

    /// Success-model versions, oldest first.
    pub fn success_models(&self) -> Vec<SuccessModelReport> {
        self.read().models.iter().cloned().collect()
    }
}
