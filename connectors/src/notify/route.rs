//! Routing and grouping: which channels hear about an alert, and how alerts are batched
//! into one notification per group (Alertmanager's `group_by`, `group_wait`,
//! `group_interval`).
//!
//! Routes are checked in order; the first that matches takes the alert unless it says
//! `continue = true`, in which case later routes are checked too. An alert no route takes
//! goes to the default `channels`. Within a route, alerts are grouped by the values of the
//! `group_by` labels (`severity`, `rule` and `status` are usable as labels too). A new group
//! waits `group_wait` so that alerts arriving together go out together; after that, a group
//! with changes goes out at most once per `group_interval`. Resolved alerts leave a group
//! after the notification that reports them. This runs on wall-clock time, outside the
//! dataflow: it shapes delivery, not alert state.
//!
//! [`Grouper`] is the pure core (time passed in); [`run_dispatcher`] is its tokio shell.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use megamind_dataflows::model::{AlertRecord, MatcherSet, Severity};
use megamind_dataflows::time::{duration_ms, Clock};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Notification, Notifier};
use crate::store::rate_limits::RateLimitCounts;

fn default_group_wait() -> Duration {
    Duration::from_secs(10)
}

fn default_group_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_max_groups() -> usize {
    10_000
}

/// The routing tree's root: defaults and the ordered routes below it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Channels for alerts no route takes.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Labels that form groups (default for routes that set none).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
    /// Least time between two notifications of one group.
    #[serde(default = "default_group_interval", with = "humantime_serde")]
    pub group_interval: Duration,
    /// Most groups held; alerts for further groups are suppressed and counted.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Routes, checked in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Global limit on notifications against alert storms; none: unlimited.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Inhibition: while an alert matching a rule's `source` is firing or acknowledged,
    /// alerts matching its `target` with the same `equal` labels are muted.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRule>,
}

/// One inhibition rule, like Alertmanager's: a firing (or acknowledged) alert matching
/// `source` mutes the alerts matching `target` that carry the same values of the `equal`
/// labels (a label both lack counts as equal). An alert never mutes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// Matchers of the muting alerts, e.g. `severity="critical"`.
    pub source: String,
    /// Matchers of the muted alerts, e.g. `severity=~"low|medium|high"`.
    pub target: String,
    /// Labels that must be equal on both.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// An inhibition rule with its matchers compiled.
#[derive(Debug, Clone)]
struct Inhibition {
    source: MatcherSet,
    target: MatcherSet,
    equal: Vec<String>,
}

/// An alert muted by inhibition: its latest change, and the alert muting it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Muted {
    /// The muted alert's latest change (sent when the inhibition ends, if still active).
    pub alert: AlertRecord,
    /// The id of the alert that mutes it.
    pub by: String,
    /// The position of the inhibition rule in `inhibit_rules`.
    pub rule: usize,
}

/// A token bucket over all notifications: `burst` at once, refilled at `per_minute`.
/// A group that finds the bucket empty is not dropped: it stays due and goes out (with
/// every change it gathered meanwhile) when a token is back; each such deferral is counted
/// as `rate_limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Tokens added per minute.
    pub per_minute: u32,
    /// Most tokens held (notifications that can go out at once).
    pub burst: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            channels: vec!["log".to_owned()],
            group_by: Vec::new(),
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            max_groups: default_max_groups(),
            routes: Vec::new(),
            rate_limit: None,
            inhibit_rules: Vec::new(),
        }
    }
}

/// One route: matchers and where matching alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matches alerts of any of these severities (empty: any).
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Matches alerts carrying all these labels (`rule` matches the rule id).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Channels notified.
    pub channels: Vec<String>,
    /// Labels forming groups on this route (default: the root's).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// Keep checking later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

impl RoutingConfig {
    /// Problems the types cannot express, naming their fields; `channels` are the known
    /// channel names.
    pub fn problems<'a>(
        &self,
        prefix: &str,
        channels: impl Iterator<Item = &'a str> + Clone,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |field: String, names: &[String]| {
            for name in names {
                if !channels.clone().any(|known| known == name) {
                    problems.push(format!("{field}: unknown channel {name:?}"));
                }
            }
        };
        check(format!("{prefix}.channels"), &self.channels);
        for (position, route) in self.routes.iter().enumerate() {
            check(
                format!("{prefix}.routes[{position}].channels"),
                &route.channels,
            );
        }
        if self.max_groups == 0 {
            problems.push(format!("{prefix}.max_groups must be positive"));
        }
        for (position, rule) in self.inhibit_rules.iter().enumerate() {
            for (field, text) in [("source", &rule.source), ("target", &rule.target)] {
                if let Err(error) = MatcherSet::parse(text) {
                    problems.push(format!(
                        "{prefix}.inhibit_rules[{position}].{field}: {error}"
                    ));
                }
            }
        }
        if let Some(limit) = self.rate_limit {
            if limit.per_minute == 0 {
                problems.push(format!("{prefix}.rate_limit.per_minute must be positive"));
            }
            if limit.burst == 0 {
                problems.push(format!("{prefix}.rate_limit.burst must be positive"));
            }
        }
        problems
    }
}

/// The value of label `name` on `alert`; `severity`, `rule` and `status` are built in.
fn label<'a>(alert: &'a AlertRecord, name: &str) -> Option<&'a str> {
    if let Some((_, value)) = alert.labels.iter().find(|(key, _)| key == name) {
        return Some(value.as_str());
    }
    alert
        .key
        .as_ref()
        .and_then(|key| key.labels.iter().find(|(k, _)| k == name))
        .map(|(_, value)| value.as_str())
        .or(match name {
            "severity" => Some(alert.severity.as_str()),
            "rule" => alert.rule_id.as_deref(),
            "status" => Some(alert.status.as_str()),
            _ => None,
        })
}

impl RouteConfig {
    /// Whether `alert` matches this route.
    pub fn matches(&self, alert: &AlertRecord) -> bool {
        (self.severity.is_empty() || self.severity.contains(&alert.severity))
            && self
                .labels
                .iter()
                .all(|(name, value)| label(alert, name) == Some(value.as_str()))
    }
}

/// The routes (by index; `None` is the default) that take `alert`.
pub fn routes_for(config: &RoutingConfig, alert: &AlertRecord) -> Vec<Option<usize>> {
    let mut taken = Vec::new();
    for (position, route) in config.routes.iter().enumerate() {
        if route.matches(alert) {
            taken.push(Some(position));
            if !route.continue_matching {
                return taken;
            }
        }
    }
    if taken.is_empty() {
        taken.push(None);
    }
    taken
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    route: Option<usize>,
    /// Channels added by escalation (one group per escalated alert); empty for routes.
    escalated_to: Vec<String>,
    values: Vec<(String, String)>,
}

#[derive(Debug)]
struct Group {
    alerts: BTreeMap<String, AlertRecord>,
    /// When the group may next go out, ms.
    due: u64,
    sent_once: bool,
}

/// A notification ready to go, with its channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Channel names.
    pub channels: Vec<String>,
    /// The notification.
    pub notification: Notification,
}

/// The pure grouping core.
#[derive(Debug)]
pub struct Grouper {
    config: RoutingConfig,
    base_url: Option<String>,
    groups: BTreeMap<GroupKey, Group>,
    /// Keys of the groups with changes not yet sent, so finding what is due costs the
    /// changed groups and not every group held (a storm of 1,000 alerts is 1,000 groups).
    changed: BTreeSet<GroupKey>,
    /// Alerts not grouped because `max_groups` was reached.
    pub suppressed: u64,
    /// Times a due notification was held back by the rate limit (it goes out later).
    pub rate_limited: u64,
    /// Tokens in the bucket, in thousandths, and when it was last refilled (ms).
    tokens_milli: u64,
    refilled_at: Option<u64>,
    inhibitions: Vec<Inhibition>,
    /// Active alerts that match some inhibition rule's source, by id (bounded by the
    /// active alerts).
    sources: BTreeMap<String, AlertRecord>,
    /// Alerts muted by inhibition, by id: removed when they resolve or are released.
    muted: BTreeMap<String, Muted>,
    /// Alert changes muted by inhibition (not notified).
    pub inhibited: u64,
    /// Bumped whenever the muted set may have changed (for publishing it).
    muted_generation: u64,
    /// Per alert id: how many due notifications carrying it the rate limit deferred. Kept
    /// for alerts still in a group; beyond `max_groups` entries, those of alerts no group
    /// holds any more (resolved and sent) are dropped (the total stays in
    /// `rate_limited`).
    rate_limited_alerts: BTreeMap<String, u64>,
    /// Bumped whenever `rate_limited_alerts` changed.
    rate_limited_generation: u64,
}

/// The name under which rate-limit deferrals are counted in an alert's `suppressed_by`.
pub const RATE_LIMIT: &str = "rate_limit";

impl Grouper {
    /// An empty grouper.
    pub fn new(config: RoutingConfig, base_url: Option<String>) -> Self {
        Self {
            config,
            base_url,
            groups: BTreeMap::new(),
            changed: BTreeSet::new(),
            suppressed: 0,
            rate_limited: 0,
            tokens_milli: 0,
            refilled_at: None,
            inhibitions: Vec::new(),
            sources: BTreeMap::new(),
            muted: BTreeMap::new(),
            inhibited: 0,
            muted_generation: 0,
            rate_limited_alerts: BTreeMap::new(),
            rate_limited_generation: 0,
        }
        .with_inhibitions()
    }

    /// Compiles the config's inhibition rules (checked by [`RoutingConfig::problems`]; a
    /// rule that does not parse is left out).
    fn with_inhibitions(mut self) -> Self {
        self.inhibitions = self
            .config
            .inhibit_rules
            .iter()
            .filter_map(|rule| {
                Some(Inhibition {
                    source: MatcherSet::parse(&rule.source).ok()?,
                    target: MatcherSet::parse(&rule.target).ok()?,
                    equal: rule.equal.clone(),
                })
            })
            .collect();
        self
    }

    /// The alerts muted by inhibition now.
    pub fn muted(&self) -> impl Iterator<Item = &Muted> {
        self.muted.values()
    }

    /// Changes whenever [`Self::muted`] may have changed.
    pub fn muted_generation(&self) -> u64 {
        self.muted_generation
    }

    /// Per alert id, how many of its due notifications the rate limit deferred.
    pub fn rate_limited_alerts(&self) -> &BTreeMap<String, u64> {
        &self.rate_limited_alerts
    }

    /// Changes whenever [`Self::rate_limited_alerts`] changed.
    pub fn rate_limited_generation(&self) -> u64 {
        self.rate_limited_generation
    }

    /// The rate limit's counts: the total and per alert.
    pub fn rate_limit_counts(&self) -> RateLimitCounts {
        RateLimitCounts {
            total: self.rate_limited,
            alerts: self.rate_limited_alerts.clone(),
        }
    }

    /// Continues from counts kept before a restart (the alerts they name are restored
    /// by replaying the event log, which does not notify them again).
    pub fn restore(&mut self, counts: RateLimitCounts) {
        self.rate_limited = counts.total;
        self.rate_limited_alerts = counts.alerts;
        self.rate_limited_generation += 1;
    }

    /// The rule and the alert muting `alert`, if an active source inhibits it.
    fn inhibitor(&self, alert: &AlertRecord) -> Option<(usize, String)> {
        for (position, rule) in self.inhibitions.iter().enumerate() {
            if !rule.target.matches(alert) {
                continue;
            }
            let source = self.sources.values().find(|source| {
                source.id != alert.id
                    && rule.source.matches(source)
                    && rule.equal.iter().all(|name| {
                        source.label(name).unwrap_or("") == alert.label(name).unwrap_or("")
                    })
            });
            if let Some(source) = source {
                return Some((position, source.id.clone()));
            }
        }
        None
    }

    /// Takes a changed alert at wall-clock `now` (ms).
    pub fn add(&mut self, now: u64, alert: &AlertRecord) {
        if alert.is_quiet() {
            // Pending, a pending streak that cleared, or a firing held back by noise
            // control: shown and counted on the record, not notified.
            return;
        }
        if self.inhibitions.is_empty() {
            self.route(now, alert);
            return;
        }
        self.muted_generation += 1;
        let was_source = self.sources.contains_key(&alert.id);
        let is_source = alert.status.is_active()
            && self
                .inhibitions
                .iter()
                .any(|rule| rule.source.matches(alert));
        if is_source {
            self.sources.insert(alert.id.clone(), alert.clone());
        } else {
            self.sources.remove(&alert.id);
        }
        if let Some((rule, by)) = self.inhibitor(alert) {
            self.inhibited += 1;
            if alert.status.is_active() {
                self.muted.insert(
                    alert.id.clone(),
                    Muted {
                        alert: alert.clone(),
                        by,
                        rule,
                    },
                );
            } else {
                // Resolved while muted: nothing to send later.
                self.muted.remove(&alert.id);
            }
        } else {
            self.muted.remove(&alert.id);
            self.route(now, alert);
        }
        if was_source && !is_source {
            self.release(now);
        }
    }

    /// After a source stopped: sends the muted alerts that nothing inhibits any more, and
    /// names the new muting alert of the others.
    fn release(&mut self, now: u64) {
        let verdicts: Vec<(String, Option<(usize, String)>)> = self
            .muted
            .values()
            .map(|muted| (muted.alert.id.clone(), self.inhibitor(&muted.alert)))
            .collect();
        for (id, verdict) in verdicts {
            match verdict {
                Some((rule, by)) => {
                    if let Some(muted) = self.muted.get_mut(&id) {
                        muted.rule = rule;
                        muted.by = by;
                    }
                }
                None => {
                    if let Some(muted) = self.muted.remove(&id) {
                        self.route(now, &muted.alert);
                    }
                }
            }
        }
    }

    /// Puts `alert` into the groups of the routes that take it.
    fn route(&mut self, now: u64, alert: &AlertRecord) {
        for route in routes_for(&self.config, alert) {
            let group_by = route
                .and_then(|position| self.config.routes[position].group_by.as_ref())
                .unwrap_or(&self.config.group_by);
            let values = if group_by.is_empty() {
                vec![("alert".to_owned(), alert.id.clone())]
            } else {
                group_by
                    .iter()
                    .map(|name| (name.clone(), label(alert, name).unwrap_or("").to_owned()))
                    .collect()
            };
            self.put(
                now,
                GroupKey {
                    route,
                    escalated_to: Vec::new(),
                    values,
                },
                alert,
            );
        }
        // Escalation adds channels to this alert: it (and its later changes, up to the
        // resolution) also goes there, in a group of its own.
        if !alert.escalated_to.is_empty() {
            let key = GroupKey {
                route: None,
                escalated_to: alert.escalated_to.clone(),
                values: vec![("alert".to_owned(), alert.id.clone())],
            };
            self.put(now, key, alert);
        }
    }

    fn put(&mut self, now: u64, key: GroupKey, alert: &AlertRecord) {
        let wait = duration_ms(self.config.group_wait);
        if !self.groups.contains_key(&key) && self.groups.len() >= self.config.max_groups {
            self.suppressed += 1;
            return;
        }
        if !key.escalated_to.is_empty() {
            // A longer escalation list replaces the shorter group of the same alert.
            let id = &alert.id;
            self.groups.retain(|other, _| {
                other.escalated_to.is_empty()
                    || other.values.first().map(|(_, value)| value) != Some(id)
                    || *other == key
            });
            let groups = &self.groups;
            self.changed.retain(|other| groups.contains_key(other));
        }
        self.changed.insert(key.clone());
        let group = self.groups.entry(key).or_insert_with(|| Group {
            alerts: BTreeMap::new(),
            due: now.saturating_add(wait),
            sent_once: false,
        });
        group.alerts.insert(alert.id.clone(), alert.clone());
    }

    /// The earliest time a group is due, ms.
    pub fn next_due(&self) -> Option<u64> {
        self.changed
            .iter()
            .filter_map(|key| self.groups.get(key))
            .map(|group| group.due)
            .min()
    }

    /// Notifications due at `now` (ms), one per changed group.
    pub fn due(&mut self, now: u64) -> Vec<Outgoing> {
        let interval = duration_ms(self.config.group_interval);
        let mut out = Vec::new();
        let mut sent = Vec::new();
        for key in &self.changed {
            let Some(group) = self.groups.get_mut(key) else {
                continue;
            };
            if group.due > now {
                continue;
            }
            if let Err(wait) = take_token(
                self.config.rate_limit,
                &mut self.tokens_milli,
                &mut self.refilled_at,
                now,
            ) {
                self.rate_limited += 1;
                for id in group.alerts.keys() {
                    *self.rate_limited_alerts.entry(id.clone()).or_default() += 1;
                }
                self.rate_limited_generation += 1;
                group.due = now.saturating_add(wait);
                continue;
            }
            let alerts: Vec<AlertRecord> = group.alerts.values().cloned().collect();
            let name = key
                .values
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join(",");
            let reason = match (group.sent_once, key.escalated_to.is_empty()) {
                (true, _) => "update",
                (false, true) => "new",
                (false, false) => "escalation",
            };
            let mut notification =
                Notification::new(name, reason, alerts, self.base_url.as_deref());
            notification.group_labels = key.values.iter().cloned().collect();
            let channels = match key.route {
                _ if !key.escalated_to.is_empty() => key.escalated_to.clone(),
                Some(position) => self.config.routes[position].channels.clone(),
                None => self.config.channels.clone(),
            };
            out.push(Outgoing {
                channels,
                notification,
            });
            group.sent_once = true;
            group.due = now.saturating_add(interval);
            group.alerts.retain(|_, alert| alert.status.is_active());
            sent.push((key.clone(), group.alerts.is_empty()));
        }
        for (key, emptied) in sent {
            self.changed.remove(&key);
            if emptied {
                self.groups.remove(&key);
            }
        }
        if self.rate_limited_alerts.len() > self.config.max_groups {
            let held: BTreeSet<&String> = self
                .groups
                .values()
                .flat_map(|group| group.alerts.keys())
                .collect();
            let before = self.rate_limited_alerts.len();
            self.rate_limited_alerts.retain(|id, _| held.contains(id));
            if self.rate_limited_alerts.len() != before {
                self.rate_limited_generation += 1;
            }
        }
        out
    }

    /// Groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether no group is held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Takes one token of the bucket `limit` at `now` (ms): `tokens_milli` holds thousandths of
/// a token, `refilled_at` the last refill (none: a full bucket). `Err(ms)`: how long until
/// the next token. No limit: always `Ok`.
fn take_token(
    limit: Option<RateLimitConfig>,
    tokens_milli: &mut u64,
    refilled_at: &mut Option<u64>,
    now: u64,
) -> Result<(), u64> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let capacity = u64::from(limit.burst).saturating_mul(1000);
    let per_minute = u64::from(limit.per_minute.max(1));
    match *refilled_at {
        None => *tokens_milli = capacity,
        Some(last) => {
            // per_minute tokens per 60,000 ms = per_minute thousandths per 60 ms.
            let added = now.saturating_sub(last).saturating_mul(per_minute) / 60;
            *tokens_milli = tokens_milli.saturating_add(added).min(capacity);
        }
    }
    *refilled_at = Some(now);
    if *tokens_milli >= 1000 {
        *tokens_milli -= 1000;
        Ok(())
    } else {
        let missing = 1000 - *tokens_milli;
        Err((missing * 60).div_ceil(per_minute).max(1))
    }
}

/// Counters of the dispatcher.
#[derive(Debug, Default)]
pub struct DispatchMetrics {
    /// Alert changes taken from the dataflow.
    pub received: AtomicU64,
    /// Alert changes dropped because the dispatcher's queue was full.
    pub dropped: AtomicU64,
    /// Alert changes not grouped because `max_groups` was reached.
    pub suppressed: AtomicU64,
    /// Notifications handed to channels.
    pub notifications: AtomicU64,
    /// Due notifications held back by the global rate limit (sent later, not dropped).
    pub rate_limited: AtomicU64,
    /// Alert changes muted by inhibition.
    pub inhibited: AtomicU64,
    /// The alerts muted by inhibition now: alert id → the id of the alert muting it.
    pub muted: std::sync::Mutex<BTreeMap<String, String>>,
    /// Per alert id, its notifications the rate limit deferred (see [`Grouper`]).
    pub rate_limited_alerts: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Bumped whenever `muted` or `rate_limited_alerts` is republished (so the alerts
    /// those describe can be shown again).
    pub generation: AtomicU64,
}

impl DispatchMetrics {
    /// Adds what the dispatcher knows of these alerts: `inhibited_by` while an
    /// inhibition mutes them, and the rate limit's deferrals under `suppressed_by`
    /// (`rate_limit`). The dataflow knows neither (inhibition and the rate limit act on
    /// delivery, on wall-clock time), so every reader of alerts calls this.
    pub fn annotate(&self, alerts: &mut [AlertRecord]) {
        let muted = self
            .muted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let limited = self
            .rate_limited_alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for alert in alerts {
            alert.inhibited_by = muted.get(&alert.id).cloned();
            match limited.get(&alert.id) {
                Some(count) => {
                    alert.suppressed_by.insert(RATE_LIMIT.to_owned(), *count);
                }
                None => {
                    alert.suppressed_by.remove(RATE_LIMIT);
                }
            }
        }
    }

    /// Publishes the grouper's rate-limit counts (the total and per alert) to readers.
    fn publish_rate_limits(&self, grouper: &Grouper) {
        self.rate_limited
            .store(grouper.rate_limited, Ordering::Relaxed);
        self.rate_limited_alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(grouper.rate_limited_alerts());
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// One alert with [`Self::annotate`]'s additions.
    pub fn annotated(&self, alert: AlertRecord) -> AlertRecord {
        let mut alerts = [alert];
        self.annotate(&mut alerts);
        let [alert] = alerts;
        alert
    }
}

/// The dispatcher's grouping state, shared by the sinks and the timer task.
struct Core {
    grouper: Grouper,
    published_muted: u64,
    published_limited: u64,
}

/// What the sending side and the timer task share.
struct Shared {
    core: std::sync::Mutex<Core>,
    notifier: Arc<Notifier>,
    clock: Arc<dyn Clock>,
    on_handoff: Option<HandoffHook>,
    on_rate_limited: Option<RateLimitHook>,
    metrics: Arc<DispatchMetrics>,
    /// Alert changes in the queue, not yet added to the grouper. While any are, later
    /// changes queue behind them, so the changes of one alert are added in order.
    queued: AtomicU64,
    /// Wakes the timer task after a change handed over on a sink's thread made a group
    /// due before the time the task sleeps until (`armed`, ms; `u64::MAX`: no timer).
    wake: tokio::sync::Notify,
    armed: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The grouping state, if it can be had within [`INLINE_WAIT`] (`None` when the wait
    /// runs out or a holder panicked).
    fn lock_briefly(&self) -> Option<std::sync::MutexGuard<'_, Core>> {
        let started = megamind_dataflows::time::Stopwatch::start();
        loop {
            match self.core.try_lock() {
                Ok(core) => return Some(core),
                Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < INLINE_WAIT => {
                    std::hint::spin_loop();
                }
                Err(_) => return None,
            }
        }
    }

    /// Hands every due notification to its channels and publishes the grouper's counters.
    fn hand_over(&self, core: &mut Core, now: u64) {
        for outgoing in core.grouper.due(now) {
            let notification = Arc::new(outgoing.notification);
            for channel in &outgoing.channels {
                self.notifier.notify(channel, Arc::clone(&notification));
            }
            if let Some(hook) = &self.on_handoff {
                hook(&notification);
            }
            self.metrics.notifications.fetch_add(1, Ordering::Relaxed);
        }
        let grouper = &core.grouper;
        self.metrics
            .suppressed
            .store(grouper.suppressed, Ordering::Relaxed);
        self.metrics
            .inhibited
            .store(grouper.inhibited, Ordering::Relaxed);
        if grouper.muted_generation() != core.published_muted {
            core.published_muted = grouper.muted_generation();
            let muted = grouper
                .muted()
                .map(|muted| (muted.alert.id.clone(), muted.by.clone()))
                .collect();
            *self
                .metrics
                .muted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = muted;
            self.metrics.generation.fetch_add(1, Ordering::Release);
        }
        if grouper.rate_limited_generation() != core.published_limited {
            core.published_limited = grouper.rate_limited_generation();
            self.metrics.publish_rate_limits(grouper);
            if let Some(hook) = &self.on_rate_limited {
                hook(grouper.rate_limit_counts());
            }
        }
    }
}

/// The sending side of the dispatcher: called from dataflow sinks, never blocks.
#[derive(Clone)]
pub struct DispatchHandle {
    sender: mpsc::Sender<AlertRecord>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DispatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchHandle").finish_non_exhaustive()
    }
}

impl DispatchHandle {
    /// Queues a changed alert for the dispatcher task; a full queue drops it and counts
    /// it.
    pub fn offer(&self, alert: AlertRecord) {
        self.shared.metrics.received.fetch_add(1, Ordering::Relaxed);
        self.enqueue(alert);
    }

    fn enqueue(&self, alert: AlertRecord) {
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if self.sender.try_send(alert).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.metrics.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Offers the alert changes of one batch. When the dispatcher is free and nothing is
    /// queued, they are grouped and whatever is due at once (`group_wait = 0`, or a group
    /// whose interval has passed) is handed to its channels here, on the caller's thread,
    /// without waiting for the dispatcher task to be scheduled; otherwise they queue as
    /// with [`Self::offer`]. Never waits for a lock.
    pub fn offer_all<'a>(&self, alerts: impl IntoIterator<Item = &'a AlertRecord>) {
        let mut alerts = alerts.into_iter().peekable();
        if alerts.peek().is_none() {
            return;
        }
        let inline = if self.shared.queued.load(Ordering::Acquire) == 0 {
            self.shared.lock_briefly()
        } else {
            None
        };
        let Some(mut core) = inline else {
            for alert in alerts {
                self.offer(alert.clone());
            }
            return;
        };
        let now = self.shared.clock.now_ms();
        for alert in alerts {
            self.shared.metrics.received.fetch_add(1, Ordering::Relaxed);
            core.grouper.add(now, alert);
        }
        self.shared.hand_over(&mut core, now);
        let earlier = core
            .grouper
            .next_due()
            .is_some_and(|due| due < self.shared.armed.load(Ordering::Acquire));
        drop(core);
        if earlier {
            self.shared.wake.notify_one();
        }
    }

    /// The dispatcher's counters.
    pub fn metrics(&self) -> &DispatchMetrics {
        &self.shared.metrics
    }
}

/// Most queued alert changes the dispatcher takes before it looks for due groups.
const MAX_ALERTS_PER_PASS: usize = 4096;

/// How long [`DispatchHandle::offer_all`] waits for the grouping state while another
/// thread holds it before queueing for the task instead. The usual holder is the other
/// worker's sink handing over its share of the same window close (tens of microseconds);
/// the task's wake-up on a busy machine can take milliseconds, and once one change is
/// queued every later one is too, until the task has run.
const INLINE_WAIT: Duration = Duration::from_micros(500);

/// Called with every notification right after it was handed to its channels (benchmarks).
pub type HandoffHook = Arc<dyn Fn(&Notification) + Send + Sync>;

/// Called with the rate limit's counts whenever they change (to keep them, e.g. in
/// [`crate::store::rate_limits::RateLimitJournal`]); runs under the dispatcher's lock, so
/// it must not wait.
pub type RateLimitHook = Arc<dyn Fn(RateLimitCounts) + Send + Sync>;

/// Optional parts of a dispatcher.
#[derive(Default)]
pub struct DispatchOptions {
    /// Called after each hand-over (benchmarks).
    pub on_handoff: Option<HandoffHook>,
    /// The rate limit's counts from before a restart.
    pub restored: RateLimitCounts,
    /// Told every change of the rate limit's counts.
    pub on_rate_limited: Option<RateLimitHook>,
}

impl std::fmt::Debug for DispatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchOptions")
            .field("restored", &self.restored)
            .finish_non_exhaustive()
    }
}

/// Starts the dispatcher: alert changes in, grouped notifications out to `notifier`.
/// Changes offered with [`DispatchHandle::offer_all`] are usually grouped on the caller's
/// thread; the task takes queued changes and sends groups when their wait or interval
/// ends. The task ends when every [`DispatchHandle`] is dropped, after flushing what is
/// due.
///
/// # Panics
/// Outside a tokio runtime.
pub fn run_dispatcher(
    config: RoutingConfig,
    base_url: Option<String>,
    queue: usize,
    notifier: Arc<Notifier>,
    clock: Arc<dyn Clock>,
    options: DispatchOptions,
) -> (DispatchHandle, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::channel::<AlertRecord>(queue.max(1));
    let mut grouper = Grouper::new(config, base_url);
    grouper.restore(options.restored);
    let metrics = DispatchMetrics::default();
    metrics.publish_rate_limits(&grouper);
    let shared = Arc::new(Shared {
        core: std::sync::Mutex::new(Core {
            published_muted: 0,
            // Published above, and already kept: not handed to `on_rate_limited` again.
            published_limited: grouper.rate_limited_generation(),
            grouper,
        }),
        notifier,
        clock,
        on_handoff: options.on_handoff,
        on_rate_limited: options.on_rate_limited,
        metrics: Arc::new(metrics),
        queued: AtomicU64::new(0),
        wake: tokio::sync::Notify::new(),
        armed: AtomicU64::new(u64::MAX),
    });
    let task_shared = Arc::clone(&shared);
    let task = tokio::spawn(async move {
        let shared = task_shared;
        loop {
            let now = shared.clock.now_ms();
            let wait = {
                // Armed under the lock, so a change handed over meanwhile sees the time
                // and wakes the task if it needs it sooner.
                let core = shared.lock();
                let due = core.grouper.next_due();
                shared
                    .armed
                    .store(due.unwrap_or(u64::MAX), Ordering::Release);
                due.map(|due| Duration::from_millis(due.saturating_sub(now)))
            };
            let mut taken = Vec::new();
            tokio::select! {
                received = receiver.recv() => match received {
                    Some(alert) => {
                        // Take what else is already queued before looking for due groups:
                        // a burst is grouped in one pass, not one pass per alert.
                        taken.push(alert);
                        while taken.len() < MAX_ALERTS_PER_PASS {
                            match receiver.try_recv() {
                                Ok(alert) => taken.push(alert),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                () = shared.wake.notified() => {}
                () = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {}
            }
            let now = shared.clock.now_ms();
            let mut core = shared.lock();
            for alert in &taken {
                core.grouper.add(now, alert);
            }
            // Only now (under the lock, after adding them) may later changes skip the
            // queue.
            shared
                .queued
                .fetch_sub(taken.len() as u64, Ordering::AcqRel);
            shared.hand_over(&mut core, now);
        }
        let now = shared.clock.now_ms();
        let mut core = shared.lock();
        shared.hand_over(&mut core, now);
    });
    (DispatchHandle { sender, shared }, task)
}
