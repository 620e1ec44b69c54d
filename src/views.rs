//! Latest results per key, read concurrently by the HTTP API, MCP tools and WebSocket
//! snapshots, and a broadcast of every update batch for live subscribers.
//!
//! Workers apply their update batches directly (one short write lock per map per batch);
//! readers take read locks and copy out what they need. Every map is bounded: series leave
//! when they go idle, sessions and alerts are capped with oldest-first eviction, and
//! anything refused because of a bound is counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use megamind_dataflows::model::{
    AlertState, AlertTransition, Breach, HistorySample, Id, SeriesKey, SessionState, SessionStatus,
    Update, WindowStats,
};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::ViewsConfig;
use crate::metrics::EngineMetrics;

/// How many update batches a slow live subscriber may fall behind before it lags.
const BROADCAST_CAPACITY: usize = 4096;

/// A session with its recent performance history.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// Latest state.
    pub state: SessionState,
    /// Recent history points, oldest first.
    pub history: VecDeque<HistorySample>,
}

/// The current state of one breach-based alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// Rule plus series fingerprint.
    pub fingerprint: String,
    /// The rule.
    pub rule_id: Id,
    /// The series.
    pub key: SeriesKey,
    /// Firing or resolved.
    pub state: AlertState,
    /// When the current state began (event time, ms).
    pub since: u64,
    /// Latest breaching value.
    pub value: Option<f64>,
    /// The rule's threshold.
    pub threshold: f64,
    /// Severity.
    pub severity: megamind_dataflows::model::Severity,
    /// How many times this alert has fired.
    pub fired: u64,
}

/// Filters for [`Views::series`].
#[derive(Debug, Clone, Default)]
pub struct SeriesFilter {
    /// Exact metric name.
    pub name: Option<String>,
    /// Metric name prefix.
    pub prefix: Option<String>,
    /// Session id.
    pub session_id: Option<String>,
    /// Labels that must all be present.
    pub labels: Vec<(String, String)>,
    /// Most results.
    pub limit: usize,
}

/// Query views over the pipeline's output.
#[derive(Debug)]
pub struct Views {
    config: ViewsConfig,
    history_length: usize,
    metrics: Arc<EngineMetrics>,
    series: RwLock<HashMap<SeriesKey, WindowStats>>,
    sessions: RwLock<HashMap<Id, SessionView>>,
    breaches: RwLock<VecDeque<Breach>>,
    alerts: RwLock<BTreeMap<String, AlertView>>,
    live: broadcast::Sender<Arc<Vec<Update>>>,
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Views {
    /// Empty views.
    pub fn new(config: ViewsConfig, history_length: usize, metrics: Arc<EngineMetrics>) -> Self {
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            config,
            history_length,
            metrics,
            series: RwLock::new(HashMap::new()),
            sessions: RwLock::new(HashMap::new()),
            breaches: RwLock::new(VecDeque::new()),
            alerts: RwLock::new(BTreeMap::new()),
            live,
        }
    }

    /// Subscribes to every update batch applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Update>>> {
        self.live.subscribe()
    }

    /// Applies one batch of updates from a worker.
    pub fn apply(&self, updates: Vec<Update>) {
        if updates.is_empty() {
            return;
        }
        let mut dropped = 0u64;
        let has = |f: fn(&Update) -> bool| updates.iter().any(f);
        if has(|u| matches!(u, Update::Window(_) | Update::SeriesIdle { .. })) {
            let mut series = write(&self.series);
            for update in &updates {
                match update {
                    Update::Window(stats) => {
                        if let Some(existing) = series.get_mut(&stats.key) {
                            if existing.end <= stats.end {
                                *existing = stats.clone();
                            }
                        } else if series.len() < self.config.max_series {
                            series.insert(stats.key.clone(), stats.clone());
                        } else {
                            dropped += 1;
                        }
                    }
                    Update::SeriesIdle { key, end }
                        if series.get(key).is_some_and(|existing| existing.end < *end) =>
                    {
                        series.remove(key);
                    }
                    _ => {}
                }
            }
        }
        if has(|u| matches!(u, Update::Session(_) | Update::SessionSample(_))) {
            let mut sessions = write(&self.sessions);
            for update in &updates {
                match update {
                    Update::Session(state) => match sessions.get_mut(&state.session_id) {
                        Some(view) => {
                            if state.events >= view.state.events {
                                view.state = state.clone();
                            }
                        }
                        None => {
                            if sessions.len() >= self.config.max_sessions {
                                evict_oldest_session(&mut sessions);
                                dropped += 1;
                            }
                            sessions.insert(
                                state.session_id.clone(),
                                SessionView {
                                    state: state.clone(),
                                    history: VecDeque::new(),
                                },
                            );
                        }
                    },
                    Update::SessionSample(sample) => {
                        if let Some(view) = sessions.get_mut(&sample.session_id) {
                            view.history.push_back(sample.clone());
                            while view.history.len() > self.history_length {
                                view.history.pop_front();
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if has(|u| matches!(u, Update::Breach(_))) {
            let mut breaches = write(&self.breaches);
            for update in &updates {
                if let Update::Breach(breach) = update {
                    breaches.push_back(breach.clone());
                    while breaches.len() > self.config.recent_breaches {
                        breaches.pop_front();
                    }
                }
            }
        }
        if has(|u| matches!(u, Update::Alert(_))) {
            let mut alerts = write(&self.alerts);
            for update in &updates {
                if let Update::Alert(transition) = update {
                    apply_transition(&mut alerts, transition, self.config.recent_breaches);
                }
            }
        }
        if dropped > 0 {
            self.metrics
                .views_dropped
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
        // Nobody listening is fine: the batch is simply not retained.
        let _ = self.live.send(Arc::new(updates));
    }

    /// Latest window of each series matching `filter`, sorted by key.
    pub fn series(&self, filter: &SeriesFilter) -> Vec<WindowStats> {
        let series = read(&self.series);
        let mut out: Vec<WindowStats> = series
            .values()
            .filter(|stats| {
                let key = &stats.key;
                filter.name.as_deref().is_none_or(|name| key.name == name)
                    && filter
                        .prefix
                        .as_deref()
                        .is_none_or(|prefix| key.name.starts_with(prefix))
                    && filter
                        .session_id
                        .as_deref()
                        .is_none_or(|session| key.session_id.as_deref() == Some(session))
                    && filter
                        .labels
                        .iter()
                        .all(|(k, v)| key.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        if filter.limit > 0 {
            out.truncate(filter.limit);
        }
        out
    }

    /// Number of series with a current window.
    pub fn series_count(&self) -> usize {
        read(&self.series).len()
    }

    /// One session with its history.
    pub fn session(&self, id: &str) -> Option<SessionView> {
        read(&self.sessions).get(id).cloned()
    }

    /// Sessions (without history), most recently active first, optionally by status.
    pub fn sessions(&self, status: Option<SessionStatus>, limit: usize) -> Vec<SessionState> {
        let sessions = read(&self.sessions);
        let mut out: Vec<SessionState> = sessions
            .values()
            .filter(|view| status.is_none_or(|status| view.state.status == status))
            .map(|view| view.state.clone())
            .collect();
        out.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then(a.session_id.cmp(&b.session_id))
        });
        if limit > 0 {
            out.truncate(limit);
        }
        out
    }

    /// Counts of sessions by status.
    pub fn session_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for view in read(&self.sessions).values() {
            *counts.entry(view.state.status.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// The most recent breaches, newest first.
    pub fn breaches(&self, limit: usize) -> Vec<Breach> {
        let breaches = read(&self.breaches);
        breaches.iter().rev().take(limit.max(1)).cloned().collect()
    }

    /// Alerts, firing first, then most recent.
    pub fn alerts(&self, only_firing: bool) -> Vec<AlertView> {
        let alerts = read(&self.alerts);
        let mut out: Vec<AlertView> = alerts
            .values()
            .filter(|alert| !only_firing || alert.state == AlertState::Firing)
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (b.state == AlertState::Firing)
                .cmp(&(a.state == AlertState::Firing))
                .then(b.since.cmp(&a.since))
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        out
    }
}

fn evict_oldest_session(sessions: &mut HashMap<Id, SessionView>) {
    let oldest = sessions
        .iter()
        .min_by_key(|(_, view)| {
            (
                view.state.status == SessionStatus::Active,
                view.state.last_activity,
            )
        })
        .map(|(id, _)| id.clone());
    if let Some(id) = oldest {
        sessions.remove(&id);
    }
}

fn apply_transition(
    alerts: &mut BTreeMap<String, AlertView>,
    transition: &AlertTransition,
    keep_resolved: usize,
) {
    let entry = alerts
        .entry(transition.fingerprint.clone())
        .or_insert_with(|| AlertView {
            fingerprint: transition.fingerprint.clone(),
            rule_id: transition.rule_id.clone(),
            key: transition.key.clone(),
            state: transition.state,
            since: transition.at,
            value: transition.value,
            threshold: transition.threshold,
            severity: transition.severity,
            fired: 0,
        });
    if transition.state == AlertState::Firing {
        entry.fired += 1;
        entry.value = transition.value;
    }
    entry.state = transition.state;
    entry.since = transition.at;
    let resolved = alerts
        .values()
        .filter(|alert| alert.state == AlertState::Resolved)
        .count();
    if resolved > keep_resolved {
        let oldest = alerts
            .values()
            .filter(|alert| alert.state == AlertState::Resolved)
            .min_by_key(|alert| alert.since)
            .map(|alert| alert.fingerprint.clone());
        if let Some(fingerprint) = oldest {
            alerts.remove(&fingerprint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use megamind_dataflows::model::Severity;

    fn views() -> Views {
        Views::new(
            ViewsConfig {
                max_series: 2,
                max_sessions: 2,
                recent_breaches: 2,
            },
            3,
            Arc::new(EngineMetrics::default()),
        )
    }

    fn window(name: &str, end: u64) -> WindowStats {
        WindowStats {
            key: SeriesKey::named(name),
            start: end - 10,
            end,
            count: 1,
            sum: 1.0,
            mean: 1.0,
            min: 1.0,
            max: 1.0,
            rate: 1.0,
            p50: 1.0,
            p95: 1.0,
            p99: 1.0,
            exact: true,
        }
    }

    #[test]
    fn series_keep_latest_and_leave_when_idle() {
        let views = views();
        let mut live = views.subscribe();
        views.apply(vec![
            Update::Window(window("a", 20)),
            Update::Window(window("a", 10)),
        ]);
        assert_eq!(views.series(&SeriesFilter::default())[0].end, 20);
        views.apply(vec![
            Update::Window(window("b", 20)),
            Update::Window(window("c", 20)),
        ]);
        assert_eq!(views.series_count(), 2, "bounded");
        assert_eq!(
            views
                .metrics
                .views_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        views.apply(vec![Update::SeriesIdle {
            key: SeriesKey::named("a"),
            end: 30,
        }]);
        let names: Vec<String> = views
            .series(&SeriesFilter::default())
            .iter()
            .map(|w| w.key.name.to_string())
            .collect();
        assert_eq!(names, ["b"]);
        assert_eq!(live.try_recv().unwrap().len(), 2);
    }

    #[test]
    fn alerts_follow_transitions() {
        let views = views();
        let transition = |state, at| {
            Update::Alert(AlertTransition {
                fingerprint: "f".into(),
                rule_id: "r".into(),
                key: SeriesKey::named("a"),
                state,
                at,
                value: Some(2.0),
                threshold: 1.0,
                severity: Severity::High,
            })
        };
        views.apply(vec![transition(AlertState::Firing, 10)]);
        assert_eq!(views.alerts(true).len(), 1);
        views.apply(vec![transition(AlertState::Resolved, 20)]);
        assert!(views.alerts(true).is_empty());
        let all = views.alerts(false);
        assert_eq!(
            (all[0].state, all[0].since, all[0].fired),
            (AlertState::Resolved, 20, 1)
        );
    }
}
