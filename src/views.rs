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
    AlertRecord, BaselinePin, Breach, BreachRule, CommandRejection, HistorySample, Id, ModelKey,
    ModelRegistration, ModelSnapshot, RetrainingTrigger, SeriesKey, SessionState, SessionStatus,
    Silence, Update, WindowStats,
};
use megamind_dataflows::operators::detect_novel_errors::{ErrorFamily, NovelError};
use megamind_dataflows::operators::score_anomalies::AnomalyReport;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::ViewsConfig;
use crate::metrics::EngineMetrics;

/// Ended silences remembered.
const RECENT_SILENCES: usize = 100;

/// Command rejections remembered (for answering the person who sent the command).
const RECENT_REJECTIONS: usize = 256;
/// Retraining triggers remembered.
const RECENT_TRIGGERS: usize = 256;
/// "Pin now" outcomes remembered.
const RECENT_PINS: usize = 256;
/// Model versions held (each is one snapshot; more are refused and counted).
const MAX_MODELS: usize = 10_000;
/// Anomalous points remembered (newest kept).
const RECENT_ANOMALIES: usize = 512;
/// Novel error messages remembered (newest kept).
const RECENT_NOVEL_ERRORS: usize = 256;
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

/// The latest window of a series and the mean of the one before it (for trends).
#[derive(Debug, Clone)]
struct SeriesEntry {
    latest: WindowStats,
    previous_mean: Option<f64>,
}

/// A series' latest window with the change of its mean since the previous window.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesTrend {
    /// The latest window.
    pub window: WindowStats,
    /// Mean of the previous window of the same series, when there was one.
    pub previous_mean: Option<f64>,
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
    series: RwLock<HashMap<SeriesKey, SeriesEntry>>,
    sessions: RwLock<HashMap<Id, SessionView>>,
    breaches: RwLock<VecDeque<Breach>>,
    alerts: RwLock<BTreeMap<String, AlertRecord>>,
    rejections: RwLock<VecDeque<CommandRejection>>,
    /// Silences by id: those in force, and the most recent that ended (at most
    /// `RECENT_SILENCES` of those).
    silences: RwLock<BTreeMap<String, Silence>>,
    /// The threshold rules in force: those of the config, then run-time changes.
    rules: RwLock<BTreeMap<String, BreachRule>>,
    models: RwLock<BTreeMap<ModelKey, ModelSnapshot>>,
    triggers: RwLock<VecDeque<RetrainingTrigger>>,
    baseline_pins: RwLock<VecDeque<BaselinePin>>,
    registry: RwLock<BTreeMap<(Id, Option<Id>), ModelRegistration>>,
    unattributed_orphans: std::sync::atomic::AtomicU64,
    /// Predictive insights, forecasts and session predictions.
    pub insights: crate::insights::InsightViews,
    anomalies: RwLock<VecDeque<AnomalyReport>>,
    novel_errors: RwLock<VecDeque<NovelError>>,
    error_families: RwLock<Vec<ErrorFamily>>,
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
        let insights = crate::insights::InsightViews::new(config.max_sessions, config.max_series);
        Self {
            config,
            history_length,
            metrics,
            series: RwLock::new(HashMap::new()),
            sessions: RwLock::new(HashMap::new()),
            breaches: RwLock::new(VecDeque::new()),
            alerts: RwLock::new(BTreeMap::new()),
            rejections: RwLock::new(VecDeque::new()),
            silences: RwLock::new(BTreeMap::new()),
            rules: RwLock::new(BTreeMap::new()),
            models: RwLock::new(BTreeMap::new()),
            triggers: RwLock::new(VecDeque::new()),
            baseline_pins: RwLock::new(VecDeque::new()),
            registry: RwLock::new(BTreeMap::new()),
            unattributed_orphans: std::sync::atomic::AtomicU64::new(0),
            insights,
            anomalies: RwLock::new(VecDeque::new()),
            novel_errors: RwLock::new(VecDeque::new()),
            error_families: RwLock::new(Vec::new()),
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
                            if existing.latest.end < stats.end {
                                existing.previous_mean = Some(existing.latest.mean);
                                existing.latest = stats.clone();
                            }
                        } else if series.len() < self.config.max_series {
                            series.insert(
                                stats.key.clone(),
                                SeriesEntry {
                                    latest: stats.clone(),
                                    previous_mean: None,
                                },
                            );
                        } else {
                            dropped += 1;
                        }
                    }
                    Update::SeriesIdle { key, end }
                        if series
                            .get(key)
                            .is_some_and(|existing| existing.latest.end < *end) =>
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
        if has(|u| matches!(u, Update::AlertRecord(_))) {
            let mut alerts = write(&self.alerts);
            for update in &updates {
                if let Update::AlertRecord(record) = update {
                    apply_record(&mut alerts, record, self.config.recent_breaches);
                }
            }
        }
        if has(|u| matches!(u, Update::RuleChange(_))) {
            let mut rules = write(&self.rules);
            for update in &updates {
                if let Update::RuleChange(change) = update {
                    match &change.rule {
                        Some(rule) => {
                            rules.insert(change.rule_id.to_string(), rule.clone());
                        }
                        None => {
                            rules.remove(change.rule_id.as_str());
                        }
                    }
                }
            }
        }
        if has(|u| matches!(u, Update::Silence(_))) {
            let mut silences = write(&self.silences);
            for update in &updates {
                if let Update::Silence(silence) = update {
                    silences.insert(silence.id.clone(), (**silence).clone());
                }
            }
            let ended = silences.values().filter(|s| s.expired.is_some()).count();
            if ended > RECENT_SILENCES {
                let mut oldest: Vec<(u64, String)> = silences
                    .values()
                    .filter(|s| s.expired.is_some())
                    .map(|s| (s.ends_at, s.id.clone()))
                    .collect();
                oldest.sort();
                for (_, id) in oldest.into_iter().take(ended - RECENT_SILENCES) {
                    silences.remove(&id);
                }
            }
        }
        if has(|u| matches!(u, Update::CommandRejected(_))) {
            let mut rejections = write(&self.rejections);
            for update in &updates {
                if let Update::CommandRejected(rejection) = update {
                    rejections.push_back(rejection.clone());
                    while rejections.len() > RECENT_REJECTIONS {
                        rejections.pop_front();
                    }
                }
            }
        }
        if has(|u| {
            matches!(
                u,
                Update::ModelMetrics(_)
                    | Update::RetrainingTrigger(_)
                    | Update::UnattributedOrphans { .. }
                    | Update::ModelRegistered(_)
                    | Update::BaselinePin(_)
            )
        }) {
            let mut models = write(&self.models);
            let mut registry = write(&self.registry);
            let mut triggers = write(&self.triggers);
            let mut pins = write(&self.baseline_pins);
            for update in &updates {
                match update {
                    Update::ModelMetrics(snapshot) => {
                        let key = ModelKey {
                            model_id: snapshot.model_id.clone(),
                            model_version: snapshot.model_version.clone(),
                        };
                        let room = models.len() < MAX_MODELS;
                        match models.get_mut(&key) {
                            Some(existing) => {
                                if (snapshot.events, snapshot.ordered)
                                    >= (existing.events, existing.ordered)
                                {
                                    *existing = (**snapshot).clone();
                                }
                            }
                            None if room => {
                                models.insert(key, (**snapshot).clone());
                            }
                            None => dropped += 1,
                        }
                    }
                    Update::RetrainingTrigger(trigger) => {
                        triggers.push_back((**trigger).clone());
                        while triggers.len() > RECENT_TRIGGERS {
                            triggers.pop_front();
                        }
                    }
                    Update::BaselinePin(pin) => {
                        pins.push_back((**pin).clone());
                        while pins.len() > RECENT_PINS {
                            pins.pop_front();
                        }
                    }
                    Update::ModelRegistered(registration) => {
                        let key = (
                            registration.model_id.clone(),
                            registration.model_version.clone(),
                        );
                        if registry.len() < MAX_MODELS || registry.contains_key(&key) {
                            registry.insert(key, (**registration).clone());
                        } else {
                            dropped += 1;
                        }
                    }
                    Update::UnattributedOrphans { expired } => {
                        self.unattributed_orphans
                            .fetch_max(*expired, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
        dropped += self.insights.apply(&updates);
        if has(|u| {
            matches!(
                u,
                Update::Anomaly(_) | Update::NovelError(_) | Update::ErrorFamilies(_)
            )
        }) {
            let mut anomalies = write(&self.anomalies);
            let mut novel_errors = write(&self.novel_errors);
            for update in &updates {
                match update {
                    Update::Anomaly(report) => {
                        anomalies.push_back((**report).clone());
                        while anomalies.len() > RECENT_ANOMALIES {
                            anomalies.pop_front();
                        }
                    }
                    Update::NovelError(novel) => {
                        novel_errors.push_back((**novel).clone());
                        while novel_errors.len() > RECENT_NOVEL_ERRORS {
                            novel_errors.pop_front();
                        }
                    }
                    Update::ErrorFamilies(families) => {
                        *write(&self.error_families) = families.families.clone();
                    }
                    _ => {}
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

    /// The most recent anomalous points, newest first.
    pub fn anomalies(&self, limit: usize) -> Vec<AnomalyReport> {
        read(&self.anomalies)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// The most recent novel error messages, newest first.
    pub fn novel_errors(&self, limit: usize) -> Vec<NovelError> {
        read(&self.novel_errors)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// The current error families, largest first.
    pub fn error_families(&self) -> Vec<ErrorFamily> {
        read(&self.error_families).clone()
    }

    /// Latest window of each series matching `filter`, sorted by key.
    pub fn series(&self, filter: &SeriesFilter) -> Vec<WindowStats> {
        self.series_trends(filter)
            .into_iter()
            .map(|trend| trend.window)
            .collect()
    }

    /// Latest window and previous mean of each series matching `filter`, sorted by key.
    pub fn series_trends(&self, filter: &SeriesFilter) -> Vec<SeriesTrend> {
        let series = read(&self.series);
        let mut out: Vec<SeriesTrend> = series
            .values()
            .filter(|entry| {
                let key = &entry.latest.key;
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
            .map(|entry| SeriesTrend {
                window: entry.latest.clone(),
                previous_mean: entry.previous_mean,
            })
            .collect();
        out.sort_by(|a, b| a.window.key.cmp(&b.window.key));
        if filter.limit > 0 {
            out.truncate(filter.limit);
        }
        out
    }

    /// The latest snapshot of every tracked model version, sorted by model and version.
    pub fn models(&self) -> Vec<ModelSnapshot> {
        read(&self.models).values().cloned().collect()
    }

    /// Registers models known before any event (`[[ml.models]]` in the config).
    pub fn seed_registry(&self, registrations: &[ModelRegistration]) {
        let mut registry = write(&self.registry);
        for registration in registrations {
            registry.insert(
                (
                    registration.model_id.clone(),
                    registration.model_version.clone(),
                ),
                registration.clone(),
            );
        }
    }

    /// The model registry (config and registration events), sorted by model and version
    /// (model-wide entries first).
    pub fn registry(&self) -> Vec<ModelRegistration> {
        read(&self.registry).values().cloned().collect()
    }

    /// Recent retraining triggers, oldest first.
    pub fn retraining_triggers(&self) -> Vec<RetrainingTrigger> {
        read(&self.triggers).iter().cloned().collect()
    }

    /// Recent "pin now" outcomes (pinned or rejected, with the reason), oldest first.
    pub fn baseline_pins(&self) -> Vec<BaselinePin> {
        read(&self.baseline_pins).iter().cloned().collect()
    }

    /// Outcomes that named no model and expired without a prediction.
    pub fn unattributed_orphans(&self) -> u64 {
        self.unattributed_orphans
            .load(std::sync::atomic::Ordering::Relaxed)
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

    /// Alerts: active ones (firing, then acknowledged) first, then the most recent.
    pub fn alerts(&self, only_active: bool) -> Vec<AlertRecord> {
        let alerts = read(&self.alerts);
        let mut out: Vec<AlertRecord> = alerts
            .values()
            .filter(|alert| !only_active || alert.status.is_open())
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            a.status
                .cmp(&b.status)
                .then(b.severity.cmp(&a.severity))
                .then(b.updated_at.cmp(&a.updated_at))
                .then(a.id.cmp(&b.id))
        });
        out
    }

    /// Sets the rules of the config (before any run-time change arrives).
    pub fn set_rules(&self, rules: &[BreachRule]) {
        let mut held = write(&self.rules);
        for rule in rules {
            held.insert(rule.id.to_string(), rule.clone());
        }
    }

    /// The threshold rules in force, by id.
    pub fn rules(&self) -> Vec<BreachRule> {
        read(&self.rules).values().cloned().collect()
    }

    /// Silences: in force first (by end), then the recently ended (latest first).
    pub fn silences(&self) -> Vec<Silence> {
        let mut out: Vec<Silence> = read(&self.silences).values().cloned().collect();
        out.sort_by(|a, b| {
            (
                a.expired.is_some(),
                a.expired.is_some().then(|| u64::MAX - a.ends_at),
                a.ends_at,
                &a.id,
            )
                .cmp(&(
                    b.expired.is_some(),
                    b.expired.is_some().then(|| u64::MAX - b.ends_at),
                    b.ends_at,
                    &b.id,
                ))
        });
        out
    }

    /// One alert by id.
    pub fn alert(&self, id: &str) -> Option<AlertRecord> {
        read(&self.alerts).get(id).cloned()
    }

    /// The most recent rejection of a command on alert `id` at or after event time `since`.
    pub fn rejection(&self, id: &str, since: u64) -> Option<CommandRejection> {
        read(&self.rejections)
            .iter()
            .rev()
            .find(|rejection| rejection.alert_id == id && rejection.at >= since)
            .cloned()
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

fn apply_record(
    alerts: &mut BTreeMap<String, AlertRecord>,
    record: &AlertRecord,
    keep_resolved: usize,
) {
    alerts.insert(record.id.clone(), record.clone());
    let resolved = alerts
        .values()
        .filter(|alert| !alert.status.is_open())
        .count();
    if resolved > keep_resolved {
        let oldest = alerts
            .values()
            .filter(|alert| !alert.status.is_open())
            .min_by_key(|alert| alert.updated_at)
            .map(|alert| alert.id.clone());
        if let Some(id) = oldest {
            alerts.remove(&id);
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
    fn alerts_follow_records_and_rejections_are_remembered() {
        use megamind_dataflows::model::{AlertAction, AlertStatus};
        let views = views();
        let record = |status, updated_at| {
            Update::AlertRecord(Box::new(AlertRecord {
                rule_id: Some("r".into()),
                key: Some(SeriesKey::named("a")),
                since: 10,
                value: Some(2.0),
                threshold: Some(1.0),
                fired: 1,
                ..AlertRecord::new(
                    "f".into(),
                    "r on a".into(),
                    Severity::High,
                    status,
                    updated_at,
                )
            }))
        };
        views.apply(vec![record(AlertStatus::Firing, 10)]);
        assert_eq!(views.alerts(true).len(), 1);
        views.apply(vec![record(AlertStatus::Resolved, 20)]);
        assert!(views.alerts(true).is_empty());
        assert_eq!(
            views.alert("f").map(|alert| alert.status),
            Some(AlertStatus::Resolved)
        );
        views.apply(vec![Update::CommandRejected(CommandRejection {
            alert_id: "f".into(),
            command: AlertAction::Acknowledge,
            reason: "the alert is already resolved".into(),
            at: 25,
        })]);
        assert!(views.rejection("f", 20).is_some());
        assert!(views.rejection("f", 26).is_none());
    }
}
