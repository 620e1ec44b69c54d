//! `manage_alerts`: the alert lifecycle, driven by breach transitions and people.
//!
//! ```text
//!   AlertTransition ──exchange(fingerprint)──┐
//!                                             ├─► ManageAlerts ──► AlertRecord / CommandRejected
//!   (ts, AlertCommand) ──exchange(alert_id)──┘
//! ```
//!
//! Rule-based alerts are keyed by fingerprint: a `firing` transition opens (or re-opens)
//! the alert, a `resolved` transition closes it. Commands acknowledge, resolve, or create
//! custom alerts. Inputs are applied in timestamp order: transitions as soon as the
//! frontier reaches their time (an alert raised by a window close goes out without waiting
//! for the other workers' shares of the close), commands once the frontier passes them (a
//! command enters at the watermark of its arrival, so it applies as soon as the watermark
//! moves on: with the next events, or the next idle tick). This makes the lifecycle a
//! function of the event stream, independent of arrival order and worker count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::{Broadcast, Filter};
use timely::dataflow::operators::{Capability, Concat, Exchange as _, Operator};
use timely::dataflow::StreamVec;

use crate::model::{
    matchers_text, policy_for, AlertAct, AlertAction, AlertCommand, AlertRecord, AlertState,
    AlertStatus, AlertTransition, BreachRule, CommandRejection, CompiledSilence, EscalationPolicy,
    RuleChange, RuleTemplates, Severity, Silence, Update, PENDING_CLEARED,
};
use crate::operators::route_events::series_names::MODEL_CORRECT;
use crate::time::duration_ms;
use crate::Time;

/// How alerts are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// Resolved alerts are forgotten this long (event time) after their resolution.
    pub resolved_retention: Duration,
    /// Escalation policies, checked in order; the first that matches a newly firing alert
    /// drives its escalation.
    pub escalations: Vec<EscalationPolicy>,
    /// Per rule id, the cooldown after a resolution (see `BreachRule::cooldown`); rules
    /// without one are absent.
    pub cooldowns: BTreeMap<String, Duration>,
    /// Per rule id, the parsed summary and annotation templates; rules without any are
    /// absent.
    pub templates: BTreeMap<String, RuleTemplates>,
    /// The ids of the rules in force at start (rules created at run time are added, and
    /// deleted ones removed, by `create_rule` / `delete_rule` commands).
    pub rule_ids: BTreeSet<String>,
    /// Whether the pipeline windows `model.correct` (set by the analytics pipeline from
    /// `TrackModelsConfig::correctness_series`): when not, a `create_rule` over it is
    /// refused, since it could never fire.
    pub correctness_series: bool,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            resolved_retention: Duration::from_secs(3600),
            escalations: Vec::new(),
            cooldowns: BTreeMap::new(),
            templates: BTreeMap::new(),
            rule_ids: BTreeSet::new(),
            correctness_series: true,
        }
    }
}

/// Renders the templates of `record`'s rule into it, if the rule has any.
fn render(templates: &HashMap<String, RuleTemplates>, record: &mut AlertRecord) {
    let Some(rule) = record.rule_id.as_deref() else {
        return;
    };
    // Predictive alerts (`<rule>.forecast`) use their rule's texts.
    let rule = rule.strip_suffix(".forecast").unwrap_or(rule);
    if let Some(templates) = templates.get(rule) {
        templates.apply(record);
    }
}

/// The id of a custom alert: the one given, or one derived from its content and time.
pub fn custom_alert_id(ts: u64, command: &AlertCommand) -> String {
    if let Some(id) = &command.alert_id {
        return id.to_string();
    }
    let mut hasher = rustc_hash::FxHasher::default();
    ts.hash(&mut hasher);
    command.title.hash(&mut hasher);
    command.labels.hash(&mut hasher);
    command.message.hash(&mut hasher);
    format!("custom-{:016x}", hasher.finish())
}

/// The worker an alert (and every command about it) goes to: the hash an id ends in
/// (`…-` and 16 hex digits, as rule fingerprints end in their series' routing hash, see
/// [`BreachRule::fingerprint`]), or else a hash of the whole id.
fn route(id: &str) -> u64 {
    if let Some((_, tail)) = id.rsplit_once('-') {
        if tail.len() == 16 {
            if let Ok(hash) = u64::from_str_radix(tail, 16) {
                return hash;
            }
        }
    }
    let mut hasher = rustc_hash::FxHasher::default();
    id.hash(&mut hasher);
    hasher.finish()
}

/// Who escalation transitions are by.
pub const ESCALATION_ACTOR: &str = "escalation";

/// Why people cannot act on a pending alert.
const PENDING_REJECTION: &str =
    "the alert is pending (its rule's `for` has not elapsed); it cannot be acted on yet";

/// The mechanism named on firings held back by a rule's cooldown.
pub const COOLDOWN: &str = "cooldown";

/// The escalation of one firing alert: its policy and its next timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Escalation {
    policy: usize,
    due: u64,
}

/// The pure alert book: every alert this worker owns, and the escalation timers of the
/// firing ones (event time; the operator fires them as its input frontier passes).
#[derive(Debug, Default)]
pub struct AlertBook {
    alerts: HashMap<String, AlertRecord>,
    policies: Vec<EscalationPolicy>,
    /// One entry per firing alert that has a policy; removed on acknowledge or resolve.
    escalations: HashMap<String, Escalation>,
    /// Per rule id, the cooldown after a resolution, ms (only rules that have one).
    cooldowns: HashMap<String, u64>,
    /// Firings held back by a cooldown: alert id → (end of the cooldown, the firing
    /// transition). Removed when the condition clears first; at most one per resolved
    /// alert, so bounded by the alerts held.
    deferred: HashMap<String, (u64, AlertTransition)>,
    /// `(due, alert id)` of every entry of `escalations` and `deferred` (an alert is in at
    /// most one of them: escalations are for active alerts, deferrals for resolved ones).
    timers: BTreeSet<(u64, String)>,
    /// Per rule id, its summary and annotation templates.
    templates: HashMap<String, RuleTemplates>,
    /// The rules in force, by id (every worker sees every rule change).
    rule_ids: BTreeSet<String>,
    /// Whether `create_rule` over `model.correct` is refused (the series is off).
    refuse_correctness_rules: bool,
    /// Silences by id (every worker holds all of them); removed when they end, so at most
    /// [`MAX_SILENCES`].
    silences: BTreeMap<String, CompiledSilence>,
    /// `(ends_at, id)` of every silence held.
    silence_ends: BTreeSet<(u64, String)>,
    /// Silences that ended, until taken.
    ended: Vec<Silence>,
}

/// Most silences held at once.
pub const MAX_SILENCES: usize = 10_000;

/// The mechanism named on alert changes held back by a silence.
pub const SILENCE: &str = "silence";

/// Who ends a silence that ran out.
pub const SILENCE_EXPIRY: &str = "expiry";

/// `90000` → `1m30s`, for the reasons written into the history.
fn short_duration(ms: u64) -> String {
    let (minutes, seconds, millis) = (ms / 60_000, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || (minutes == 0 && millis == 0) {
        out.push_str(&format!("{seconds}s"));
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

impl AlertBook {
    /// An empty book escalating by `policies`.
    pub fn new(policies: Vec<EscalationPolicy>) -> Self {
        Self {
            policies,
            ..Self::default()
        }
    }

    /// The same book with per-rule cooldowns (rule id → cooldown).
    pub fn with_cooldowns(mut self, cooldowns: &BTreeMap<String, Duration>) -> Self {
        self.cooldowns = cooldowns
            .iter()
            .filter(|(_, cooldown)| !cooldown.is_zero())
            .map(|(rule, cooldown)| (rule.clone(), duration_ms(*cooldown)))
            .collect();
        self
    }

    /// The same book rendering rule alerts' titles and annotations from `templates`.
    pub fn with_templates(mut self, templates: &BTreeMap<String, RuleTemplates>) -> Self {
        self.templates = templates
            .iter()
            .map(|(rule, templates)| (rule.clone(), templates.clone()))
            .collect();
        self
    }

    /// The same book knowing the rules in force at start.
    pub fn with_rules(mut self, rule_ids: &BTreeSet<String>) -> Self {
        self.rule_ids = rule_ids.clone();
        self
    }

    /// The same book refusing rules over `model.correct` unless `windowed`.
    pub fn with_correctness_series(mut self, windowed: bool) -> Self {
        self.refuse_correctness_rules = !windowed;
        self
    }

    /// Applies a `create_rule` or `delete_rule` command at event time `ts`: the rule's
    /// templates and cooldown follow it. (The rule's evaluation lives in
    /// `EvaluateBreaches`, which sees the same command; a deleted rule's alerts resolve
    /// from there.)
    ///
    /// # Errors
    /// Deleting a rule that does not exist.
    pub fn on_rule(
        &mut self,
        ts: u64,
        command: &AlertCommand,
    ) -> Result<RuleChange, CommandRejection> {
        let id = command.alert_id.as_deref().unwrap_or_default().to_owned();
        let by = AlertAct {
            by: command.actor.clone().unwrap_or_else(|| "unknown".into()),
            at: ts,
            note: command.note.clone(),
        };
        let reject = |reason: &str| CommandRejection {
            alert_id: id.clone(),
            command: command.command,
            reason: reason.to_owned(),
            at: ts,
        };
        if command.command == AlertAction::DeleteRule {
            if !self.rule_ids.remove(&id) {
                return Err(reject("no rule with this id"));
            }
            self.templates.remove(&id);
            self.cooldowns.remove(&id);
            return Ok(RuleChange {
                rule_id: id.as_str().into(),
                rule: None,
                by,
            });
        }
        let rule: BreachRule = command
            .rule
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or_else(|| reject("the rule does not parse"))?;
        if self.refuse_correctness_rules && rule.metric == MODEL_CORRECT {
            return Err(reject(
                "the rule watches model.correct, which needs ml.correctness_series = true",
            ));
        }
        match rule.templates() {
            Ok(templates) if templates != RuleTemplates::default() => {
                self.templates.insert(id.clone(), templates);
            }
            _ => {
                self.templates.remove(&id);
            }
        }
        if rule.cooldown.is_zero() {
            self.cooldowns.remove(&id);
        } else {
            self.cooldowns
                .insert(id.clone(), duration_ms(rule.cooldown));
        }
        self.rule_ids.insert(id.clone());
        Ok(RuleChange {
            rule_id: id.as_str().into(),
            rule: Some(rule),
            by,
        })
    }

    /// When the cooldown of the resolved alert `id` ends, if a firing at `at` falls in it.
    fn cooldown_end(&self, id: &str, rule: &str, at: u64) -> Option<u64> {
        let cooldown = *self.cooldowns.get(rule)?;
        let record = self.alerts.get(id)?;
        if record.status != AlertStatus::Resolved {
            return None;
        }
        let end = record.resolved.as_ref()?.at.saturating_add(cooldown);
        (at < end).then_some(end)
    }

    /// Cancels the held-back firing of alert `id`, if any.
    fn drop_deferred(&mut self, id: &str) -> bool {
        match self.deferred.remove(id) {
            Some((due, _)) => {
                self.timers.remove(&(due, id.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Starts the escalation of alert `id`, which just began firing.
    fn arm(&mut self, id: &str) {
        self.disarm(id);
        let Some(record) = self.alerts.get(id) else {
            return;
        };
        let Some(policy) = policy_for(&self.policies, record) else {
            return;
        };
        let rules = &self.policies[policy];
        let due = match (rules.steps.first(), rules.repeat) {
            (Some(step), _) => record.since.saturating_add(duration_ms(step.after)),
            (None, Some(repeat)) => record.since.saturating_add(duration_ms(repeat)),
            (None, None) => return,
        };
        self.escalations
            .insert(id.to_owned(), Escalation { policy, due });
        self.timers.insert((due, id.to_owned()));
    }

    /// Cancels the escalation of alert `id`, if any.
    fn disarm(&mut self, id: &str) {
        if let Some(escalation) = self.escalations.remove(id) {
            self.timers.remove(&(escalation.due, id.to_owned()));
        }
    }

    /// The earliest escalation timer, event time ms.
    pub fn next_timer(&self) -> Option<u64> {
        let alert = self.timers.first().map(|(due, _)| *due);
        let silence = self.silence_ends.first().map(|(due, _)| *due);
        match (alert, silence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every timer due at or before `now` (event time): escalation steps and
    /// reminders, the ends of cooldowns (see [`Self::fire_alert_timers`]) and the ends of
    /// silences (which notify the active alerts whose latest change they held back).
    /// Returns the changed records; the silences that ended are kept for
    /// [`Self::take_ended_silences`].
    pub fn on_timers(&mut self, now: u64) -> Vec<AlertRecord> {
        let mut changed = Vec::new();
        while let Some((due, id)) = self
            .silence_ends
            .first()
            .filter(|(due, _)| *due <= now)
            .cloned()
        {
            // Alert timers before the silence's end first, with the silence in force.
            for record in self.fire_alert_timers(due.saturating_sub(1)) {
                changed.push(self.mute(record));
            }
            self.silence_ends.remove(&(due, id.clone()));
            changed.extend(self.end_silence(due, &id));
        }
        for record in self.fire_alert_timers(now) {
            changed.push(self.mute(record));
        }
        changed
    }

    /// Applies a breach transition; returns the changed record, muted when a silence in
    /// force matches it.
    pub fn on_transition(&mut self, transition: &AlertTransition) -> Option<AlertRecord> {
        let record = self.apply_transition(transition)?;
        Some(self.mute(record))
    }

    /// Applies an alert command at event time `ts` (the id of a `create` must already be
    /// set); silence commands go to [`Self::on_silence`].
    ///
    /// # Errors
    /// The alert is unknown, already resolved, pending, or (for `create`) already active.
    pub fn on_command(
        &mut self,
        ts: u64,
        command: &AlertCommand,
    ) -> Result<AlertRecord, CommandRejection> {
        let record = self.apply_command(ts, command)?;
        Ok(self.mute(record))
    }

    /// Creates, replaces or expires a silence at event time `ts`. Every worker applies
    /// every silence command (each holds its own alerts); returns the silence as it now
    /// is.
    ///
    /// # Errors
    /// Expiring a silence that does not exist or already ended; more than
    /// [`MAX_SILENCES`] silences.
    pub fn on_silence(
        &mut self,
        ts: u64,
        command: &AlertCommand,
    ) -> Result<Silence, CommandRejection> {
        let id = command.alert_id.as_deref().unwrap_or_default().to_owned();
        let reject = |reason: &str| CommandRejection {
            alert_id: id.clone(),
            command: command.command,
            reason: reason.to_owned(),
            at: ts,
        };
        let act = AlertAct {
            by: command.actor.clone().unwrap_or_else(|| "unknown".into()),
            at: ts,
            note: command.note.clone(),
        };
        match command.command {
            AlertAction::Silence => {
                if !self.silences.contains_key(&id) && self.silences.len() >= MAX_SILENCES {
                    return Err(reject(&format!(
                        "{MAX_SILENCES} silences are in force; expire some first"
                    )));
                }
                let duration = command.duration_ms.unwrap_or(0).max(1);
                // A scheduled silence (`starts_at`) runs from then; the window is fixed
                // by the command, so replaying it gives the same silence.
                let starts_at = command.starts_at.unwrap_or(ts);
                let silence = Silence {
                    id: id.clone(),
                    matchers: command.matchers.clone(),
                    starts_at,
                    ends_at: starts_at.saturating_add(duration),
                    created: act,
                    expired: None,
                    origin: command.origin.clone(),
                };
                if let Some(old) = self.silences.remove(&id) {
                    self.silence_ends.remove(&(old.silence.ends_at, id.clone()));
                }
                self.silence_ends.insert((silence.ends_at, id.clone()));
                self.silences
                    .insert(id, CompiledSilence::new(silence.clone()));
                Ok(silence)
            }
            _ => {
                let Some(silence) = self.silences.get_mut(&id) else {
                    return Err(reject("no silence with this id"));
                };
                if silence.silence.ends_at <= ts {
                    return Err(reject("the silence has already ended"));
                }
                self.silence_ends
                    .remove(&(silence.silence.ends_at, id.clone()));
                silence.silence.ends_at = ts;
                silence.silence.expired = Some(act);
                self.silence_ends.insert((ts, id));
                Ok(silence.silence.clone())
            }
        }
    }

    /// The silences that ran out since the last call, in order (those expired by a
    /// command were returned by [`Self::on_silence`]).
    pub fn take_ended_silences(&mut self) -> Vec<Silence> {
        std::mem::take(&mut self.ended)
    }

    /// Number of silences held (in force or not yet started).
    pub fn silences(&self) -> usize {
        self.silences.len()
    }

    /// Ends silence `id` at `due`: forgets it and notifies the active alerts whose latest
    /// change it held back, unless another silence still mutes them.
    fn end_silence(&mut self, due: u64, id: &str) -> Vec<AlertRecord> {
        let Some(mut ended) = self.silences.remove(id) else {
            return Vec::new();
        };
        // A silence expired by a command was reported then; one that ran out is reported
        // now.
        if ended.silence.expired.is_none() {
            ended.silence.expired = Some(AlertAct {
                by: SILENCE_EXPIRY.into(),
                at: due,
                note: None,
            });
            self.ended.push(ended.silence);
        }
        let mut held: Vec<String> = self
            .alerts
            .values()
            .filter(|record| {
                record.status.is_active()
                    && record.just_suppressed()
                    && record
                        .suppression
                        .as_ref()
                        .is_some_and(|act| act.by == SILENCE)
            })
            .map(|record| record.id.clone())
            .collect();
        held.sort();
        let mut released = Vec::new();
        for alert_id in held {
            let still_muted = match self.alerts.get(&alert_id) {
                Some(record) => self
                    .silences
                    .values()
                    .any(|silence| silence.in_force(due) && silence.matches(record)),
                None => true,
            };
            if still_muted {
                continue;
            }
            if let Some(record) = self.alerts.get_mut(&alert_id) {
                record.updated_at = due;
                released.push(record.clone());
            }
        }
        released
    }

    /// Holds back `record`'s change when a silence in force matches it: counted on the
    /// record (also in the book), with the silence named.
    fn mute(&mut self, mut record: AlertRecord) -> AlertRecord {
        if record.is_quiet() {
            return record;
        }
        let at = record.updated_at;
        let Some(silence) = self
            .silences
            .values()
            .find(|silence| silence.in_force(at) && silence.matches(&record))
        else {
            return record;
        };
        record.suppressed += 1;
        *record.suppressed_by.entry(SILENCE.into()).or_default() += 1;
        record.suppression = Some(AlertAct {
            by: SILENCE.into(),
            at,
            note: Some(format!(
                "silenced by {} until {}: {}",
                silence.silence.id,
                silence.silence.ends_at,
                matchers_text(&silence.silence.matchers)
            )),
        });
        if let Some(stored) = self.alerts.get_mut(&record.id) {
            stored.suppressed = record.suppressed;
            stored.suppressed_by.clone_from(&record.suppressed_by);
            stored.suppression.clone_from(&record.suppression);
        }
        record
    }

    /// Number of escalation timers set (one per escalating alert).
    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    /// Fires every escalation timer due at or before `now` (event time), in `(due, id)`
    /// order: a step (more channels, maybe a higher severity) or a reminder, each a
    /// transition by [`ESCALATION_ACTOR`] with its reason. Returns the changed records.
    fn fire_alert_timers(&mut self, now: u64) -> Vec<AlertRecord> {
        let mut changed = Vec::new();
        while let Some((due, id)) = self.timers.first().cloned() {
            if due > now {
                break;
            }
            self.timers.remove(&(due, id.clone()));
            if let Some((held_until, transition)) = self.deferred.remove(&id) {
                // The cooldown ended and the condition still holds: the alert fires now.
                if held_until == due {
                    if let Some(record) = self.alerts.get_mut(&id) {
                        start_streak(record, due, &transition);
                        record.updated_at = due;
                        render(&self.templates, record);
                        changed.push(record.clone());
                        self.arm(&id);
                    }
                }
                continue;
            }
            let Some(escalation) = self.escalations.remove(&id) else {
                continue;
            };
            let Some(record) = self.alerts.get_mut(&id) else {
                continue;
            };
            if record.status != AlertStatus::Firing {
                continue;
            }
            let policy = &self.policies[escalation.policy];
            let position = record.escalation_step as usize;
            let next = if let Some(step) = policy.steps.get(position) {
                record.escalation_step += 1;
                let mut why = format!(
                    "step {}: unacknowledged for {}",
                    position + 1,
                    short_duration(duration_ms(step.after))
                );
                if let Some(severity) = step.raise_to.filter(|s| *s > record.severity) {
                    why.push_str(&format!(
                        "; severity {} -> {}",
                        record.severity.as_str(),
                        severity.as_str()
                    ));
                    record.severity = severity;
                }
                let mut added = Vec::new();
                for channel in &step.channels {
                    if !record.escalated_to.contains(channel) {
                        record.escalated_to.push(channel.clone());
                        added.push(channel.as_str());
                    }
                }
                if !added.is_empty() {
                    why.push_str(&format!("; notify {}", added.join(", ")));
                }
                record.escalated = Some(AlertAct {
                    by: ESCALATION_ACTOR.into(),
                    at: due,
                    note: Some(why),
                });
                match policy.steps.get(position + 1) {
                    Some(step) => Some(
                        record
                            .since
                            .saturating_add(duration_ms(step.after))
                            .max(due),
                    ),
                    None => policy
                        .repeat
                        .map(|repeat| due.saturating_add(duration_ms(repeat).max(1))),
                }
            } else {
                record.reminders += 1;
                record.escalated = Some(AlertAct {
                    by: ESCALATION_ACTOR.into(),
                    at: due,
                    note: Some(format!(
                        "reminder {}: unacknowledged for {}",
                        record.reminders,
                        short_duration(due.saturating_sub(record.since))
                    )),
                });
                policy
                    .repeat
                    .map(|repeat| due.saturating_add(duration_ms(repeat).max(1)))
            };
            record.updated_at = due;
            render(&self.templates, record);
            changed.push(record.clone());
            if let Some(next) = next {
                self.escalations.insert(
                    id.clone(),
                    Escalation {
                        policy: escalation.policy,
                        due: next,
                    },
                );
                self.timers.insert((next, id));
            }
        }
        changed
    }

    /// Applies a breach transition; returns the changed record (before silences).
    fn apply_transition(&mut self, transition: &AlertTransition) -> Option<AlertRecord> {
        let at = transition.at;
        match transition.state {
            AlertState::Pending => {
                // A streak within a cooldown is held back as a whole: its firing (if the
                // condition lasts) is counted and deferred below.
                if self
                    .cooldown_end(&transition.fingerprint, &transition.rule_id, at)
                    .is_some()
                {
                    return None;
                }
                let record = self
                    .alerts
                    .entry(transition.fingerprint.clone())
                    .or_insert_with(|| {
                        AlertRecord::new_rule_alert(
                            transition.fingerprint.clone(),
                            transition.rule_id.clone(),
                            transition.key.clone(),
                            transition.severity,
                            transition.threshold,
                            at,
                        )
                    });
                if record.status.is_active() {
                    return None;
                }
                if record.status == AlertStatus::Resolved {
                    record.status = AlertStatus::Pending;
                    record.since = at;
                    record.severity = transition.severity;
                    record.acknowledged = None;
                    record.resolved = None;
                }
                record.value = transition.value;
                record.updated_at = at;
                render(&self.templates, record);
                Some(record.clone())
            }
            AlertState::Firing => {
                if let Some(end) =
                    self.cooldown_end(&transition.fingerprint, &transition.rule_id, at)
                {
                    let record = self.alerts.get_mut(&transition.fingerprint)?;
                    let resolved_at = record.resolved.as_ref().map_or(at, |act| act.at);
                    record.suppressed += 1;
                    *record.suppressed_by.entry(COOLDOWN.into()).or_default() += 1;
                    record.value = transition.value;
                    record.updated_at = at;
                    record.suppression = Some(AlertAct {
                        by: COOLDOWN.into(),
                        at,
                        note: Some(format!(
                            "fired again {} after its resolution, within the rule's cooldown of {}; held until {end}",
                            short_duration(at.saturating_sub(resolved_at)),
                            short_duration(end.saturating_sub(resolved_at)),
                        )),
                    });
                    let record = record.clone();
                    self.drop_deferred(&transition.fingerprint);
                    self.deferred
                        .insert(transition.fingerprint.clone(), (end, transition.clone()));
                    self.timers.insert((end, transition.fingerprint.clone()));
                    return Some(record);
                }
                let record = self
                    .alerts
                    .entry(transition.fingerprint.clone())
                    .or_insert_with(|| {
                        AlertRecord::new_rule_alert(
                            transition.fingerprint.clone(),
                            transition.rule_id.clone(),
                            transition.key.clone(),
                            transition.severity,
                            transition.threshold,
                            at,
                        )
                    });
                let mut started = false;
                if !record.status.is_active() {
                    start_streak(record, at, transition);
                    started = true;
                }
                record.value = transition.value;
                record.updated_at = at;
                render(&self.templates, record);
                let record = record.clone();
                if started {
                    self.arm(&transition.fingerprint);
                }
                Some(record)
            }
            AlertState::Resolved => {
                // The condition cleared before the cooldown ended: the held firing is
                // dropped (it stays counted as suppressed); nothing visible changes.
                if self.drop_deferred(&transition.fingerprint) {
                    return None;
                }
                let record = self.alerts.get_mut(&transition.fingerprint)?;
                if transition.value.is_some() {
                    record.value = transition.value;
                }
                if record.status == AlertStatus::Pending {
                    // Cleared before `for` elapsed: shown, not notified (see `is_quiet`).
                    record.status = AlertStatus::Resolved;
                    record.resolved = Some(AlertAct {
                        by: "rule".into(),
                        at,
                        note: Some(PENDING_CLEARED.to_owned()),
                    });
                } else if record.status.is_active() {
                    record.status = AlertStatus::Resolved;
                    record.resolved = Some(AlertAct {
                        by: "rule".into(),
                        at,
                        note: Some(match transition.value {
                            Some(_) => "condition cleared".to_owned(),
                            None => "series went quiet".to_owned(),
                        }),
                    });
                }
                record.updated_at = at;
                render(&self.templates, record);
                let record = record.clone();
                self.disarm(&transition.fingerprint);
                Some(record)
            }
        }
    }

    /// Applies a command at event time `ts` (the id of a `create` must already be set).
    ///
    /// # Errors
    /// The alert is unknown, already resolved, or (for `create`) already active.
    fn apply_command(
        &mut self,
        ts: u64,
        command: &AlertCommand,
    ) -> Result<AlertRecord, CommandRejection> {
        let id = custom_alert_id(ts, command);
        let reject = |reason: &str| CommandRejection {
            alert_id: id.clone(),
            command: command.command,
            reason: reason.to_owned(),
            at: ts,
        };
        let act = || AlertAct {
            by: command.actor.clone().unwrap_or_else(|| "unknown".into()),
            at: ts,
            note: command.note.clone(),
        };
        match command.command {
            AlertAction::Silence
            | AlertAction::ExpireSilence
            | AlertAction::CreateRule
            | AlertAction::DeleteRule => Err(reject(
                "silence and rule commands are applied by on_silence and on_rule, not on_command",
            )),
            AlertAction::Create => {
                if self
                    .alerts
                    .get(&id)
                    .is_some_and(|record| record.status.is_active())
                {
                    return Err(reject("an active alert with this id already exists"));
                }
                let record = AlertRecord {
                    message: command.message.clone(),
                    labels: command.labels.clone(),
                    fired: 1,
                    ..AlertRecord::new(
                        id.clone(),
                        command.title.clone().unwrap_or_default(),
                        command.severity.unwrap_or(Severity::Medium),
                        AlertStatus::Firing,
                        ts,
                    )
                };
                self.alerts.insert(id.clone(), record.clone());
                self.arm(&id);
                Ok(record)
            }
            AlertAction::Acknowledge => {
                let Some(record) = self.alerts.get_mut(&id) else {
                    return Err(reject("no alert with this id"));
                };
                match record.status {
                    AlertStatus::Resolved => Err(reject("the alert is already resolved")),
                    AlertStatus::Pending => Err(reject(PENDING_REJECTION)),
                    AlertStatus::Firing | AlertStatus::Acknowledged => {
                        record.status = AlertStatus::Acknowledged;
                        record.acknowledged = Some(act());
                        record.updated_at = ts;
                        let record = record.clone();
                        self.disarm(&id);
                        Ok(record)
                    }
                }
            }
            AlertAction::Resolve => {
                let Some(record) = self.alerts.get_mut(&id) else {
                    return Err(reject("no alert with this id"));
                };
                if record.status == AlertStatus::Resolved {
                    return Err(reject("the alert is already resolved"));
                }
                if record.status == AlertStatus::Pending {
                    return Err(reject(PENDING_REJECTION));
                }
                record.status = AlertStatus::Resolved;
                record.resolved = Some(act());
                record.updated_at = ts;
                let record = record.clone();
                self.disarm(&id);
                Ok(record)
            }
        }
    }

    /// Forgets alerts resolved before `before` (event time).
    pub fn forget_resolved_before(&mut self, before: u64) {
        let deferred = &self.deferred;
        self.alerts.retain(|id, record| {
            record.status.is_open() || record.updated_at >= before || deferred.contains_key(id)
        });
    }

    /// Number of alerts held.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// Whether no alert is held.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

/// Opens a new firing streak of a resolved rule-based alert at `at`.
fn start_streak(record: &mut AlertRecord, at: u64, transition: &AlertTransition) {
    record.status = AlertStatus::Firing;
    record.since = at;
    record.fired += 1;
    record.acknowledged = None;
    record.resolved = None;
    record.severity = transition.severity;
    record.escalation_step = 0;
    record.reminders = 0;
    record.escalated = None;
    record.escalated_to.clear();
    record.value = transition.value;
}

/// The alert lifecycle.
pub trait ManageAlerts<'scope> {
    /// Maintains one [`AlertRecord`] per alert.
    ///
    /// # Inputs and outputs
    /// `self`: breach transitions; `commands`: `(ts, command)` pairs, `create` commands
    /// carrying their final id (see [`custom_alert_id`]). Returns [`Update::AlertRecord`]
    /// for every change and [`Update::CommandRejected`] for commands that do not apply.
    ///
    /// # Frontier behaviour
    /// Inputs of time `t` are applied in this order: transitions, as they arrive once both
    /// input frontiers reached `t` and everything earlier is done (sorted within each
    /// arriving batch; the transitions of one fingerprint come from one producer, in its
    /// order); then commands, sorted, once both frontiers passed `t`; then timers due at
    /// `t`. The answers carry time `t`.
    ///
    /// # State
    /// One record per alert, exchanged by alert id; resolved alerts are forgotten
    /// `resolved_retention` after resolution (event time).
    fn manage_alerts(
        self,
        name: &str,
        commands: StreamVec<'scope, Time, (Time, AlertCommand)>,
        config: &AlertConfig,
    ) -> StreamVec<'scope, Time, Update>;
}

impl<'scope> ManageAlerts<'scope> for StreamVec<'scope, Time, AlertTransition> {
    fn manage_alerts(
        self,
        name: &str,
        commands: StreamVec<'scope, Time, (Time, AlertCommand)>,
        config: &AlertConfig,
    ) -> StreamVec<'scope, Time, Update> {
        let retention = duration_ms(config.resolved_retention);
        let policies = config.escalations.clone();
        let cooldowns = config.cooldowns.clone();
        let templates = config.templates.clone();
        let rule_ids = config.rule_ids.clone();
        let correctness_series = config.correctness_series;
        let by_fingerprint =
            Exchange::new(|transition: &AlertTransition| route(&transition.fingerprint));
        // Alert commands go to the worker owning the alert; silence commands to every
        // worker (each mutes its own alerts). Only worker 0 reports silences and their
        // rejections, so each is reported once.
        let silence_commands = commands
            .clone()
            .filter(|(_, command)| command.command.is_broadcast())
            .broadcast();
        let alert_commands = commands
            .filter(|(_, command)| !command.command.is_broadcast())
            .exchange(|(ts, command)| route(&custom_alert_id(*ts, command)));
        let commands = alert_commands.concat(silence_commands);
        let reporter = self.scope().index() == 0;
        self.binary_frontier(
            commands,
            by_fingerprint,
            Pipeline,
            &format!("ManageAlerts({name})"),
            move |_initial, _info| {
                let mut book = AlertBook::new(policies)
                    .with_cooldowns(&cooldowns)
                    .with_templates(&templates)
                    .with_rules(&rule_ids)
                    .with_correctness_series(correctness_series);
                // Inputs wait, by time, until the frontier passes them; then they are
                // applied in a fixed order (transitions, then commands, each sorted), so the
                // lifecycle does not depend on arrival order or worker count.
                let mut stash: BTreeMap<Time, Pending> = BTreeMap::new();
                // Held at or before the earliest escalation timer while any is set.
                let mut timer_cap: Option<Capability<Time>> = None;
                let mut last_sweep = 0u64;
                move |(transitions, transitions_frontier), (commands, commands_frontier), output| {
                    transitions.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        let pending = stash
                            .entry(time)
                            .or_insert_with(|| Pending::new(cap.delayed(&time, 0)));
                        pending.transitions.append(data);
                    });
                    commands.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        let pending = stash
                            .entry(time)
                            .or_insert_with(|| Pending::new(cap.delayed(&time, 0)));
                        pending.commands.append(data);
                    });
                    let ready = |time: &Time| {
                        !transitions_frontier.less_equal(time)
                            && !commands_frontier.less_equal(time)
                    };
                    // Once both inputs are done (shutdown), timers are dropped, not fired:
                    // no wall-clock time passes after the last event.
                    let finished = transitions_frontier.is_empty() && commands_frontier.is_empty();
                    loop {
                        let input_time = stash.first_key_value().map(|(time, _)| *time);
                        let timer_time = book.next_timer().filter(|_| !finished);
                        // Inputs of time t go before timers due at t: an acknowledgement at
                        // the due time cancels the step.
                        let take_timer = match (input_time, timer_time) {
                            (Some(input), Some(timer)) => timer < input,
                            (None, Some(_)) => true,
                            _ => false,
                        };
                        if take_timer {
                            let Some(due) = timer_time.filter(|due| ready(due)) else {
                                break;
                            };
                            let Some(cap) = timer_cap.as_ref() else {
                                break;
                            };
                            let at = due.max(*cap.time());
                            let changed = book.on_timers(due);
                            let ended = book.take_ended_silences();
                            let cap = cap.delayed(&at);
                            let mut session = output.session(&cap);
                            for record in changed {
                                session.give(Update::AlertRecord(Box::new(record)));
                            }
                            if reporter {
                                for silence in ended {
                                    session.give(Update::Silence(Box::new(silence)));
                                }
                            }
                            continue;
                        }
                        let Some(input) = input_time.filter(|time| ready(time)) else {
                            break;
                        };
                        let Some(mut pending) = stash.remove(&input) else {
                            break;
                        };
                        sort_transitions(&mut pending.transitions);
                        pending.commands.sort_by(|a, b| {
                            (a.0, &a.1.alert_id, a.1.command).cmp(&(
                                b.0,
                                &b.1.alert_id,
                                b.1.command,
                            ))
                        });
                        {
                            let mut session = output.session(&pending.capability);
                            for transition in &pending.transitions {
                                if let Some(record) = book.on_transition(transition) {
                                    session.give(Update::AlertRecord(Box::new(record)));
                                }
                            }
                            for (ts, command) in &pending.commands {
                                if command.command.is_rule() {
                                    let result = book.on_rule(*ts, command);
                                    if reporter {
                                        session.give(match result {
                                            Ok(change) => Update::RuleChange(Box::new(change)),
                                            Err(rejection) => Update::CommandRejected(rejection),
                                        });
                                    }
                                    continue;
                                }
                                if command.command.is_silence() {
                                    let result = book.on_silence(*ts, command);
                                    if reporter {
                                        session.give(match result {
                                            Ok(silence) => Update::Silence(Box::new(silence)),
                                            Err(rejection) => Update::CommandRejected(rejection),
                                        });
                                    }
                                    continue;
                                }
                                session.give(match book.on_command(*ts, command) {
                                    Ok(record) => Update::AlertRecord(Box::new(record)),
                                    Err(rejection) => Update::CommandRejected(rejection),
                                });
                            }
                        }
                        // New timers may be earlier than the held capability.
                        if let Some(due) = book.next_timer() {
                            let wanted = due.max(input);
                            if timer_cap.as_ref().is_none_or(|cap| *cap.time() > wanted) {
                                timer_cap = Some(pending.capability.delayed(&wanted));
                            }
                        }
                    }
                    // Transitions of the time both frontiers stand at are applied as they
                    // arrive, once everything earlier is done: no input of an earlier time
                    // can still come, commands of this time go after them anyway (see the
                    // order above), and each fingerprint has one producer, which sends its
                    // transitions of one time in order. Waiting for the frontier to pass
                    // the time as well would hold every alert of a window close until the
                    // slowest worker finished its share of the close.
                    let at_frontier =
                        transitions_frontier
                            .frontier()
                            .as_option()
                            .copied()
                            .filter(|now| {
                                !commands_frontier.less_than(now)
                                    && stash.first_key_value().is_some_and(|(time, _)| time == now)
                                    && book.next_timer().is_none_or(|due| due >= *now)
                            });
                    if let Some(now) = at_frontier {
                        if let Some(pending) = stash.get_mut(&now) {
                            if !pending.transitions.is_empty() {
                                sort_transitions(&mut pending.transitions);
                                let mut session = output.session(&pending.capability);
                                for transition in pending.transitions.drain(..) {
                                    if let Some(record) = book.on_transition(&transition) {
                                        session.give(Update::AlertRecord(Box::new(record)));
                                    }
                                }
                                if let Some(due) = book.next_timer() {
                                    let wanted = due.max(now);
                                    if timer_cap.as_ref().is_none_or(|cap| *cap.time() > wanted) {
                                        timer_cap = Some(pending.capability.delayed(&wanted));
                                    }
                                }
                            }
                        }
                    }
                    match book.next_timer().filter(|_| !finished) {
                        Some(due) => {
                            if let Some(cap) = timer_cap.as_mut() {
                                if *cap.time() < due {
                                    cap.downgrade(&due);
                                }
                            }
                        }
                        None => timer_cap = None,
                    }
                    if let Some(&now) = transitions_frontier.frontier().as_option() {
                        if now >= last_sweep.saturating_add(retention / 16 + 1) {
                            last_sweep = now;
                            book.forget_resolved_before(now.saturating_sub(retention));
                        }
                    }
                }
            },
        )
    }
}

/// The fixed order in which transitions of one time are applied.
fn sort_transitions(transitions: &mut [AlertTransition]) {
    transitions
        .sort_by(|a, b| (a.at, &a.fingerprint, a.state).cmp(&(b.at, &b.fingerprint, b.state)));
}

/// Inputs of one time, waiting for the frontier.
struct Pending {
    capability: Capability<Time>,
    transitions: Vec<AlertTransition>,
    commands: Vec<(Time, AlertCommand)>,
}

impl Pending {
    fn new(capability: Capability<Time>) -> Self {
        Self {
            capability,
            transitions: Vec::new(),
            commands: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeriesKey;
    use timely::dataflow::StreamVec;

    fn transition(state: AlertState, at: u64, value: Option<f64>) -> AlertTransition {
        AlertTransition {
            fingerprint: "rule-1".into(),
            rule_id: "rule".into(),
            key: SeriesKey::named("latency_ms"),
            state,
            at,
            value,
            threshold: 70.0,
            severity: Severity::High,
        }
    }

    fn command(action: AlertAction, id: Option<&str>) -> AlertCommand {
        AlertCommand {
            alert_id: id.map(Into::into),
            actor: Some("ana".into()),
            note: Some("on it".into()),
            title: Some("disk full".into()),
            severity: Some(Severity::Critical),
            labels: vec![("team".into(), "db".into())],
            ..AlertCommand::new(action)
        }
    }

    #[test]
    fn rule_alert_fires_is_acknowledged_and_resolves() {
        let mut book = AlertBook::default();
        let fired = book
            .on_transition(&transition(AlertState::Firing, 10, Some(80.0)))
            .unwrap();
        assert_eq!(
            (fired.status, fired.since, fired.fired),
            (AlertStatus::Firing, 10, 1)
        );
        let acked = book
            .on_command(12, &command(AlertAction::Acknowledge, Some("rule-1")))
            .unwrap();
        assert_eq!(acked.status, AlertStatus::Acknowledged);
        assert_eq!(
            acked.acknowledged.as_ref().map(|a| (a.by.as_str(), a.at)),
            Some(("ana", 12))
        );
        let resolved = book
            .on_transition(&transition(AlertState::Resolved, 20, Some(60.0)))
            .unwrap();
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(
            resolved.resolved.as_ref().map(|a| a.by.as_str()),
            Some("rule")
        );
        // Acting on a resolved alert is refused, with the reason.
        let error = book
            .on_command(21, &command(AlertAction::Acknowledge, Some("rule-1")))
            .unwrap_err();
        assert!(error.reason.contains("already resolved"));
        // A new streak reopens the same alert.
        let again = book
            .on_transition(&transition(AlertState::Firing, 30, Some(90.0)))
            .unwrap();
        assert_eq!(
            (again.status, again.fired, again.since),
            (AlertStatus::Firing, 2, 30)
        );
        assert!(again.acknowledged.is_none());
    }

    #[test]
    fn custom_alerts_and_unknown_ids() {
        let mut book = AlertBook::default();
        let created = book
            .on_command(5, &command(AlertAction::Create, None))
            .unwrap();
        assert!(created.id.starts_with("custom-"));
        assert_eq!(
            (created.severity, created.status),
            (Severity::Critical, AlertStatus::Firing)
        );
        assert_eq!(
            created.id,
            custom_alert_id(5, &command(AlertAction::Create, None)),
            "ids are reproducible"
        );
        let duplicate = book
            .on_command(5, &command(AlertAction::Create, None))
            .unwrap_err();
        assert!(duplicate.reason.contains("already exists"));
        let resolved = book
            .on_command(9, &command(AlertAction::Resolve, Some(&created.id)))
            .unwrap();
        assert_eq!(resolved.status, AlertStatus::Resolved);
        let unknown = book
            .on_command(9, &command(AlertAction::Resolve, Some("nope")))
            .unwrap_err();
        assert_eq!(unknown.reason, "no alert with this id");
        book.forget_resolved_before(10);
        assert!(book.is_empty());
    }

    fn policies() -> Vec<EscalationPolicy> {
        vec![
            EscalationPolicy {
                severity: vec![Severity::High],
                labels: BTreeMap::new(),
                steps: vec![
                    crate::model::EscalationStep {
                        after: Duration::from_secs(300),
                        channels: vec!["pager".into()],
                        raise_to: None,
                    },
                    crate::model::EscalationStep {
                        after: Duration::from_secs(900),
                        channels: vec!["manager".into()],
                        raise_to: Some(Severity::Critical),
                    },
                ],
                repeat: Some(Duration::from_secs(600)),
            },
            EscalationPolicy {
                severity: vec![Severity::Critical],
                labels: BTreeMap::new(),
                steps: Vec::new(),
                repeat: Some(Duration::from_secs(60)),
            },
        ]
    }

    const MIN: u64 = 60_000;

    #[test]
    fn unacknowledged_alert_escalates_step_by_step_then_reminds() {
        let mut book = AlertBook::new(policies());
        book.on_transition(&transition(AlertState::Firing, 10, Some(80.0)));
        assert_eq!(book.next_timer(), Some(10 + 5 * MIN));
        assert!(book.on_timers(10 + 5 * MIN - 1).is_empty(), "not due yet");
        let first = book.on_timers(10 + 5 * MIN);
        assert_eq!(first.len(), 1);
        let first = &first[0];
        assert_eq!(first.escalation_step, 1);
        assert_eq!(first.escalated_to, vec!["pager".to_owned()]);
        assert_eq!(first.severity, Severity::High);
        let act = first.escalated.as_ref().unwrap();
        assert_eq!((act.by.as_str(), act.at), ("escalation", 10 + 5 * MIN));
        assert_eq!(
            act.note.as_deref(),
            Some("step 1: unacknowledged for 5m; notify pager")
        );
        // The second step is measured from the start of firing, not from the first step.
        assert_eq!(book.next_timer(), Some(10 + 15 * MIN));
        let second = book.on_timers(10 + 15 * MIN).remove(0);
        assert_eq!(second.escalation_step, 2);
        assert_eq!(second.severity, Severity::Critical, "raised");
        assert_eq!(
            second.escalated_to,
            vec!["pager".to_owned(), "manager".to_owned()]
        );
        assert_eq!(
            second.escalated.unwrap().note.as_deref(),
            Some("step 2: unacknowledged for 15m; severity high -> critical; notify manager")
        );
        // Then reminders every 10 minutes (the policy chosen at firing time stays).
        let reminders = book.on_timers(10 + 36 * MIN);
        assert_eq!(reminders.len(), 2, "two reminders due by 35m");
        assert_eq!(reminders[1].reminders, 2);
        assert_eq!(reminders[1].updated_at, 10 + 35 * MIN);
        assert_eq!(
            reminders[1].escalated.as_ref().unwrap().note.as_deref(),
            Some("reminder 2: unacknowledged for 35m")
        );
        assert_eq!(book.timers(), 1);
    }

    #[test]
    fn acknowledgement_and_resolution_cancel_escalation() {
        let mut book = AlertBook::new(policies());
        book.on_transition(&transition(AlertState::Firing, 10, Some(80.0)));
        book.on_command(60_000, &command(AlertAction::Acknowledge, Some("rule-1")))
            .unwrap();
        assert_eq!(book.timers(), 0, "acknowledged: no timer left");
        assert!(book.on_timers(u64::MAX).is_empty());
        // Resolve, fire again: a new streak starts a new chain from its own start.
        book.on_transition(&transition(AlertState::Resolved, 100_000, Some(60.0)));
        let again = book
            .on_transition(&transition(AlertState::Firing, 200_000, Some(90.0)))
            .unwrap();
        assert_eq!((again.escalation_step, again.reminders), (0, 0));
        assert_eq!(book.next_timer(), Some(200_000 + 5 * MIN));
        book.on_transition(&transition(AlertState::Resolved, 250_000, Some(60.0)));
        assert_eq!(book.timers(), 0, "resolved: no timer left");
        // A timer that comes due after the alert was acknowledged does nothing.
        book.on_transition(&transition(AlertState::Firing, 300_000, Some(90.0)));
        book.on_command(300_001, &command(AlertAction::Resolve, Some("rule-1")))
            .unwrap();
        assert!(book.on_timers(u64::MAX).is_empty());
    }

    #[test]
    fn critical_custom_alert_gets_reminders_and_unmatched_alerts_none() {
        let mut book = AlertBook::new(policies());
        let created = book
            .on_command(1_000, &command(AlertAction::Create, Some("disk")))
            .unwrap();
        assert_eq!(created.severity, Severity::Critical);
        let reminders = book.on_timers(1_000 + 3 * MIN);
        assert_eq!(
            reminders.iter().map(|r| r.reminders).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let mut medium = command(AlertAction::Create, Some("low"));
        medium.severity = Some(Severity::Medium);
        book.on_command(1_000, &medium).unwrap();
        assert_eq!(book.timers(), 1, "no policy for medium");
    }

    #[test]
    fn policy_problems_name_the_field() {
        let mut policy = policies().remove(0);
        policy.steps.swap(0, 1);
        policy.repeat = Some(Duration::ZERO);
        assert_eq!(
            policy.problems("alerts.escalations[0]"),
            vec![
                "alerts.escalations[0].steps[1].after: must not be shorter than the step before"
                    .to_owned(),
                "alerts.escalations[0].repeat: must be positive".to_owned(),
            ]
        );
        let empty = EscalationPolicy {
            severity: Vec::new(),
            labels: BTreeMap::new(),
            steps: Vec::new(),
            repeat: None,
        };
        assert_eq!(
            empty.problems("p"),
            vec!["p: needs at least one of steps or repeat".to_owned()]
        );
    }

    /// The operator: timers fire as the input frontier passes their due time, an
    /// acknowledgement that arrives first cancels them, and 1 and 4 workers agree.
    #[test]
    fn operator_fires_timers_with_the_frontier() {
        use crate::testing::{canonical, run_settled, Epoch};
        use timely::dataflow::operators::vec::Map;
        type In = Result<AlertTransition, (Time, AlertCommand)>;
        fn build(stream: StreamVec<'_, Time, In>) -> StreamVec<'_, Time, Update> {
            let commands = stream.clone().flat_map(|input: In| input.err());
            stream.flat_map(|input: In| input.ok()).manage_alerts(
                "test",
                commands,
                &AlertConfig {
                    resolved_retention: Duration::from_secs(3600),
                    escalations: policies(),
                    cooldowns: BTreeMap::new(),
                    templates: BTreeMap::new(),
                    rule_ids: BTreeSet::new(),
                    correctness_series: true,
                },
            )
        }
        let mut other = transition(AlertState::Firing, 1_000, Some(99.0));
        other.fingerprint = "rule-2".into();
        let epochs = vec![
            Epoch::new(
                1_000,
                vec![
                    Ok(transition(AlertState::Firing, 1_000, Some(80.0))),
                    Ok(other),
                ],
            ),
            Epoch::new(2 * MIN, vec![]),
            // rule-2 is acknowledged before its first step is due; rule-1 is not.
            Epoch::new(
                4 * MIN,
                vec![Err((
                    4 * MIN,
                    command(AlertAction::Acknowledge, Some("rule-2")),
                ))],
            ),
            Epoch::new(7 * MIN, vec![]),
            Epoch::new(20 * MIN, vec![]),
        ];
        let one = run_settled(1, build, epochs.clone());
        assert_eq!(
            canonical(&one),
            canonical(&run_settled(4, build, epochs.clone())),
            "1 and 4 workers agree"
        );
        let records: Vec<(Time, AlertRecord)> = one
            .iter()
            .filter_map(|(time, update)| match update {
                Update::AlertRecord(record) if record.escalated.is_some() => {
                    Some((*time, (**record).clone()))
                }
                _ => None,
            })
            .collect();
        let mut seen: Vec<(Time, String, u32)> = records
            .iter()
            .map(|(time, record)| (*time, record.id.clone(), record.escalation_step))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (1_000 + 5 * MIN, "rule-1".to_owned(), 1),
                (1_000 + 15 * MIN, "rule-1".to_owned(), 2),
            ],
            "rule-2 was acknowledged before its step; the 25m reminder is not due by 20m"
        );
        // Replaying the same log gives the same history.
        assert_eq!(canonical(&run_settled(1, build, epochs)), canonical(&one));
    }

    /// Transitions apply as soon as both frontiers reach their time (a window close's
    /// alerts do not wait for the input to move past the close); a command of the same
    /// time waits until the frontier passes it, and a transition waits while the command
    /// input is still earlier.
    #[test]
    fn transitions_apply_when_the_frontier_reaches_them() {
        use std::cell::RefCell;
        use std::rc::Rc;
        use timely::dataflow::operators::{Input, Inspect};
        let seen = timely::execute_directly(|worker| {
            let records: Rc<RefCell<Vec<(Time, AlertStatus)>>> = Rc::default();
            let sink = Rc::clone(&records);
            let (mut transitions, mut commands) = worker.dataflow::<Time, _, _>(|scope| {
                let (transitions, transition_stream) = scope.new_input::<Vec<AlertTransition>>();
                let (commands, command_stream) = scope.new_input::<Vec<(Time, AlertCommand)>>();
                transition_stream
                    .manage_alerts("test", command_stream, &AlertConfig::default())
                    .inspect_core(move |event| {
                        if let Ok((stamp, updates)) = event {
                            let time = stamp.least().copied().unwrap_or(Time::MAX);
                            for update in updates.iter() {
                                if let Update::AlertRecord(record) = update {
                                    sink.borrow_mut().push((time, record.status));
                                }
                            }
                        }
                    });
                (transitions, commands)
            });
            let steps = |worker: &mut timely::worker::Worker| {
                for _ in 0..10 {
                    worker.step();
                }
                records.borrow().clone()
            };
            let mut seen = Vec::new();
            // The command input still stands at 500: the transition of 1000 waits.
            transitions.advance_to(1_000);
            commands.advance_to(500);
            transitions.send(transition(AlertState::Firing, 1_000, Some(80.0)));
            transitions.flush();
            seen.push(steps(worker));
            // Both inputs at 1000: the transition applies, the frontier stays at 1000.
            commands.advance_to(1_000);
            commands.send((1_000, command(AlertAction::Acknowledge, Some("rule-1"))));
            commands.flush();
            seen.push(steps(worker));
            // Past 1000: the acknowledgement of the same time follows.
            transitions.advance_to(1_001);
            commands.advance_to(1_001);
            seen.push(steps(worker));
            seen
        });
        assert_eq!(
            seen,
            vec![
                vec![],
                vec![(1_000, AlertStatus::Firing)],
                vec![
                    (1_000, AlertStatus::Firing),
                    (1_000, AlertStatus::Acknowledged)
                ],
            ]
        );
    }

    /// A rule alert lives on the worker that owns its series (its fingerprint routes like
    /// the series key); other ids route by their hash, the same for every command.
    #[test]
    fn rule_alerts_route_with_their_series() {
        let key = SeriesKey::named("latency_ms");
        let rule = crate::model::BreachRule {
            id: "slow".into(),
            metric: "latency_ms".into(),
            labels: Vec::new(),
            aggregate: crate::model::Aggregate::P99,
            op: crate::model::Comparison::Above,
            threshold: 70.0,
            severity: Severity::High,
            min_count: 1,
            for_duration: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            cooldown: Duration::ZERO,
            forecast: None,
            summary: None,
            annotations: Default::default(),
        };
        assert_eq!(route(&rule.fingerprint(&key)), key.route());
        assert_eq!(route("custom-disk"), route("custom-disk"));
        assert_ne!(route("custom-disk"), route("custom-cpu"));
        assert_eq!(route("custom-00000000000000ff"), 255);
    }

    fn cooling_book() -> AlertBook {
        let cooldowns = BTreeMap::from([("rule".to_owned(), Duration::from_millis(100))]);
        AlertBook::default().with_cooldowns(&cooldowns)
    }

    #[test]
    fn cooldown_holds_a_refire_until_it_ends() {
        let mut book = cooling_book();
        book.on_transition(&transition(AlertState::Firing, 10, Some(80.0)));
        book.on_transition(&transition(AlertState::Resolved, 20, Some(60.0)));
        // Fires again 30 ms after the resolution: held back, counted, with the reason.
        let held = book
            .on_transition(&transition(AlertState::Firing, 50, Some(85.0)))
            .unwrap();
        assert_eq!(
            (held.status, held.fired, held.suppressed),
            (AlertStatus::Resolved, 1, 1)
        );
        assert!(held.just_suppressed());
        let why = held.suppression.as_ref().unwrap();
        assert_eq!((why.by.as_str(), why.at), (COOLDOWN, 50));
        assert!(
            why.note.as_deref().unwrap().contains("held until 120"),
            "{why:?}"
        );
        assert_eq!(book.next_timer(), Some(120));
        assert!(book.on_timers(119).is_empty());
        // The condition still holds when the cooldown ends: the alert fires then.
        let fired = book.on_timers(120);
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (
                fired[0].status,
                fired[0].since,
                fired[0].fired,
                fired[0].value
            ),
            (AlertStatus::Firing, 120, 2, Some(85.0))
        );
        assert!(!fired[0].just_suppressed(), "the firing is notified");
        assert_eq!(fired[0].suppressed, 1, "the count stays on the record");
        assert_eq!(fired[0].suppressed_by.get(COOLDOWN), Some(&1), "and why");
        assert_eq!(book.next_timer(), None);
    }

    #[test]
    fn cooldown_drops_a_refire_that_clears_in_time() {
        let mut book = cooling_book();
        book.on_transition(&transition(AlertState::Firing, 10, Some(80.0)));
        book.on_transition(&transition(AlertState::Resolved, 20, Some(60.0)));
        assert!(book
            .on_transition(&transition(AlertState::Firing, 50, Some(85.0)))
            .unwrap()
            .just_suppressed());
        // Clears before the cooldown ends: nothing fires, nothing visible changes.
        assert!(book
            .on_transition(&transition(AlertState::Resolved, 60, Some(50.0)))
            .is_none());
        assert_eq!(book.next_timer(), None);
        assert!(book.on_timers(1_000).is_empty());
        // A firing after the cooldown is an ordinary one.
        let late = book
            .on_transition(&transition(AlertState::Firing, 130, Some(90.0)))
            .unwrap();
        assert_eq!(
            (late.status, late.since, late.fired, late.suppressed),
            (AlertStatus::Firing, 130, 2, 1)
        );
        // Rules without a cooldown are not held.
        let mut plain = AlertBook::default();
        plain.on_transition(&transition(AlertState::Firing, 10, Some(80.0)));
        plain.on_transition(&transition(AlertState::Resolved, 20, Some(60.0)));
        let again = plain
            .on_transition(&transition(AlertState::Firing, 30, Some(80.0)))
            .unwrap();
        assert_eq!((again.status, again.suppressed), (AlertStatus::Firing, 0));
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;
    use crate::model::{BreachRule, SeriesKey};

    #[test]
    fn rule_templates_render_into_title_and_annotations() {
        let rule: BreachRule = serde_json::from_value(serde_json::json!({
            "id": "latency_high", "metric": "latency_ms", "aggregate": "mean", "op": ">",
            "threshold": 70.0, "severity": "high",
            "summary": "{{ $labels.team }} latency {{ $value }}ms > {{ $threshold }}ms",
            "annotations": {"runbook": "https://runbooks/{{ $rule }}", "zone": "{{ $labels.zone }}"}
        }))
        .unwrap();
        let templates = BTreeMap::from([("latency_high".to_owned(), rule.templates().unwrap())]);
        let mut book = AlertBook::default().with_templates(&templates);
        let key = SeriesKey {
            name: "latency_ms".into(),
            session_id: None,
            labels: vec![("team".into(), "api".into())],
        };
        let transition = |state, at, value| AlertTransition {
            fingerprint: rule.fingerprint(&key),
            rule_id: "latency_high".into(),
            key: key.clone(),
            state,
            at,
            value: Some(value),
            threshold: 70.0,
            severity: Severity::High,
        };
        let fired = book
            .on_transition(&transition(AlertState::Firing, 10, 83.25))
            .unwrap();
        assert_eq!(fired.title, "api latency 83.25ms > 70ms");
        assert_eq!(
            fired.annotations,
            BTreeMap::from([
                (
                    "runbook".to_owned(),
                    "https://runbooks/latency_high".to_owned()
                ),
                ("zone".to_owned(), "<no value>".to_owned()),
            ])
        );
        // A later value re-renders.
        let later = book
            .on_transition(&transition(AlertState::Firing, 20, 91.0))
            .unwrap();
        assert_eq!(later.title, "api latency 91ms > 70ms");
        // A bad template is a rule error naming the field.
        let mut bad = rule.clone();
        bad.annotations.insert(
            "description".into(),
            "{{ $labels.team }} {{ $vlaue }}".into(),
        );
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "rule \"latency_high\": annotations.description: unknown placeholder `{{ $vlaue }}` \
             (known: $value, $threshold, $labels.<name>, $rule, $severity, $metric, $session, $series)"
        );
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;
    use crate::model::SeriesKey;

    fn transition(state: AlertState, at: u64) -> AlertTransition {
        AlertTransition {
            fingerprint: "slow-1".into(),
            rule_id: "slow".into(),
            key: SeriesKey::named("latency_ms"),
            state,
            at,
            value: Some(at as f64),
            threshold: 70.0,
            severity: Severity::High,
        }
    }

    #[test]
    fn pending_is_visible_quiet_and_not_actionable() {
        let mut book = AlertBook::new(vec![EscalationPolicy {
            severity: vec![Severity::High],
            labels: BTreeMap::new(),
            steps: Vec::new(),
            repeat: Some(Duration::from_millis(5)),
        }]);
        let pending = book
            .on_transition(&transition(AlertState::Pending, 10))
            .unwrap();
        assert_eq!(
            (pending.status, pending.since, pending.fired, pending.value),
            (AlertStatus::Pending, 10, 0, Some(10.0))
        );
        assert!(pending.is_quiet(), "pending is shown, never notified");
        assert!(pending.status.is_open() && !pending.status.is_active());
        assert_eq!(book.timers(), 0, "no escalation while pending");
        let refused = book
            .on_command(
                12,
                &AlertCommand {
                    alert_id: Some("slow-1".into()),
                    actor: Some("ana".into()),
                    ..AlertCommand::new(AlertAction::Acknowledge)
                },
            )
            .unwrap_err();
        assert!(refused.reason.contains("pending"), "{refused:?}");
        // Cleared before `for` elapsed: resolved quietly, never fired.
        let cleared = book
            .on_transition(&transition(AlertState::Resolved, 20))
            .unwrap();
        assert_eq!((cleared.status, cleared.fired), (AlertStatus::Resolved, 0));
        assert_eq!(
            cleared
                .resolved
                .as_ref()
                .and_then(|act| act.note.as_deref()),
            Some(PENDING_CLEARED)
        );
        assert!(cleared.is_quiet());
        // Pending again, then firing: a normal, notified streak with escalation.
        book.on_transition(&transition(AlertState::Pending, 30));
        let fired = book
            .on_transition(&transition(AlertState::Firing, 50))
            .unwrap();
        assert_eq!(
            (fired.status, fired.since, fired.fired),
            (AlertStatus::Firing, 50, 1)
        );
        assert!(!fired.is_quiet());
        assert_eq!(book.next_timer(), Some(55));
        // Its resolution is an ordinary, notified one.
        let resolved = book
            .on_transition(&transition(AlertState::Resolved, 60))
            .unwrap();
        assert_eq!(
            resolved
                .resolved
                .as_ref()
                .and_then(|act| act.note.as_deref()),
            Some("condition cleared")
        );
        assert!(!resolved.is_quiet());
    }
}

#[cfg(test)]
mod silence_tests {
    use super::*;
    use crate::model::{parse_matchers, SeriesKey};

    fn transition(id: &str, team: &str, state: AlertState, at: u64) -> AlertTransition {
        AlertTransition {
            fingerprint: id.into(),
            rule_id: "slow".into(),
            key: SeriesKey {
                name: "latency_ms".into(),
                session_id: None,
                labels: vec![("team".into(), team.into())],
            },
            state,
            at,
            value: Some(90.0),
            threshold: 70.0,
            severity: Severity::High,
        }
    }

    fn silence(id: &str, matchers: &str, duration_ms: u64) -> AlertCommand {
        AlertCommand {
            alert_id: Some(id.into()),
            actor: Some("ana".into()),
            note: Some("maintenance".into()),
            matchers: parse_matchers(matchers).unwrap(),
            duration_ms: Some(duration_ms),
            ..AlertCommand::new(AlertAction::Silence)
        }
    }

    fn expire(id: &str) -> AlertCommand {
        AlertCommand {
            command: AlertAction::ExpireSilence,
            matchers: Vec::new(),
            duration_ms: None,
            ..silence(id, "a=b", 1)
        }
    }

    #[test]
    fn silenced_changes_are_counted_and_released_when_the_silence_ends() {
        let mut book = AlertBook::default();
        let created = book
            .on_silence(100, &silence("db-maint", r#"team=~"db|data""#, 50))
            .unwrap();
        assert_eq!((created.starts_at, created.ends_at), (100, 150));
        assert_eq!(book.next_timer(), Some(150));
        // Before the silence: an ordinary, notified firing.
        let before = book
            .on_transition(&transition("a", "db", AlertState::Firing, 90))
            .unwrap();
        assert!(!before.is_quiet());
        // In force: a matching firing is muted and counted, a non-matching one is not.
        let muted = book
            .on_transition(&transition("b", "db", AlertState::Firing, 110))
            .unwrap();
        assert!(muted.is_quiet(), "{muted:?}");
        assert_eq!(muted.suppressed, 1);
        let why = muted.suppression.as_ref().unwrap();
        assert_eq!((why.by.as_str(), why.at), (SILENCE, 110));
        assert_eq!(
            why.note.as_deref(),
            Some(r#"silenced by db-maint until 150: team=~"db|data""#)
        );
        let other = book
            .on_transition(&transition("c", "web", AlertState::Firing, 110))
            .unwrap();
        assert!(!other.is_quiet());
        // A muted alert that clears within the silence stays quiet and is not released.
        book.on_transition(&transition("d", "data", AlertState::Firing, 111));
        let cleared = book
            .on_transition(&transition("d", "data", AlertState::Resolved, 120))
            .unwrap();
        assert!(cleared.is_quiet());
        // The silence runs out: the still-firing muted alert is notified then.
        assert!(book.on_timers(149).is_empty());
        let released = book.on_timers(150);
        assert_eq!(
            released
                .iter()
                .map(|r| (r.id.as_str(), r.updated_at, r.is_quiet()))
                .collect::<Vec<_>>(),
            vec![("b", 150, false)]
        );
        assert_eq!(released[0].suppressed, 1, "the count stays on the record");
        let ended = book.take_ended_silences();
        assert_eq!(ended.len(), 1);
        assert_eq!(
            ended[0]
                .expired
                .as_ref()
                .map(|act| (act.by.as_str(), act.at)),
            Some((SILENCE_EXPIRY, 150))
        );
        assert_eq!(book.silences(), 0);
        assert_eq!(book.next_timer(), None);
        // After it: not muted.
        let after = book
            .on_transition(&transition("e", "db", AlertState::Firing, 160))
            .unwrap();
        assert!(!after.is_quiet());
    }

    #[test]
    fn expiring_early_releases_at_once_and_bad_expiries_are_rejected() {
        let mut book = AlertBook::default();
        book.on_silence(0, &silence("s1", "team=db", 1_000))
            .unwrap();
        book.on_silence(0, &silence("s2", "severity=high", 2_000))
            .unwrap();
        assert!(book
            .on_transition(&transition("a", "db", AlertState::Firing, 10))
            .unwrap()
            .is_quiet());
        let expired = book.on_silence(20, &expire("s1")).unwrap();
        assert_eq!(expired.ends_at, 20);
        assert_eq!(
            expired.expired.as_ref().map(|act| act.by.as_str()),
            Some("ana")
        );
        // s2 still matches the alert: nothing is released when s1 ends (reported by the
        // expiry above, not again).
        assert!(book.on_timers(20).is_empty());
        assert!(book.take_ended_silences().is_empty());
        let released = book.on_timers(2_000);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].updated_at, 2_000);
        assert_eq!(
            book.on_silence(30, &expire("s1")).unwrap_err().reason,
            "no silence with this id"
        );
        // Replacing a silence keeps one timer.
        book.on_silence(40, &silence("s3", "team=db", 100)).unwrap();
        book.on_silence(50, &silence("s3", "team=db", 500)).unwrap();
        assert_eq!(book.silences(), 1);
        assert_eq!(book.next_timer(), Some(550));
        // Acting on a silence through on_command is refused (a caller bug, reported).
        assert!(book.on_command(60, &expire("s3")).is_err());
    }

    /// A scheduled silence (`starts_at`, as config silences with a fixed window have)
    /// mutes only from its start, ends at `starts_at + duration`, and keeps its origin;
    /// silence counts are kept per mechanism.
    #[test]
    fn scheduled_silences_mute_from_their_start() {
        let mut book = AlertBook::default();
        let created = book
            .on_silence(
                100,
                &AlertCommand {
                    starts_at: Some(200),
                    origin: Some("config".into()),
                    ..silence("window", "team=db", 50)
                },
            )
            .unwrap();
        assert_eq!((created.starts_at, created.ends_at), (200, 250));
        assert_eq!(created.origin.as_deref(), Some("config"));
        let early = book
            .on_transition(&transition("a", "db", AlertState::Firing, 150))
            .unwrap();
        assert!(!early.is_quiet(), "not in force before its start");
        let muted = book
            .on_transition(&transition("b", "db", AlertState::Firing, 210))
            .unwrap();
        assert!(muted.is_quiet());
        assert_eq!(muted.suppressed_by.get(SILENCE), Some(&1));
    }

    /// Silences reach every worker: 1 and 4 workers give the same output, replays agree,
    /// and each silence is reported once.
    #[test]
    fn operator_applies_silences_on_every_worker() {
        use crate::testing::{canonical, run_settled, Epoch};
        use timely::dataflow::operators::vec::Map;
        type In = Result<AlertTransition, (Time, AlertCommand)>;
        fn build(stream: StreamVec<'_, Time, In>) -> StreamVec<'_, Time, Update> {
            let commands = stream.clone().flat_map(|input: In| input.err());
            stream.flat_map(|input: In| input.ok()).manage_alerts(
                "test",
                commands,
                &AlertConfig::default(),
            )
        }
        let mut epochs = vec![Epoch::new(
            100,
            vec![Err((100, silence("maint", "team=db", 1_000)))],
        )];
        for (position, team) in ["db", "web", "db", "api", "db", "db"].iter().enumerate() {
            let id = format!("alert-{position}");
            epochs.push(Epoch::new(
                200 + position as u64,
                vec![Ok(transition(
                    &id,
                    team,
                    AlertState::Firing,
                    200 + position as u64,
                ))],
            ));
        }
        epochs.push(Epoch::new(300, vec![Err((300, expire("maint")))]));
        epochs.push(Epoch::new(400, vec![Err((400, expire("maint")))]));
        epochs.push(Epoch::new(500, vec![]));
        let one = run_settled(1, build, epochs.clone());
        assert_eq!(
            canonical(&one),
            canonical(&run_settled(4, build, epochs.clone())),
            "1 and 4 workers agree"
        );
        assert_eq!(canonical(&run_settled(1, build, epochs)), canonical(&one));
        let silences = one
            .iter()
            .filter(|(_, update)| matches!(update, Update::Silence(_)))
            .count();
        assert_eq!(silences, 2, "created and expired, each reported once");
        let rejections: Vec<&CommandRejection> = one
            .iter()
            .filter_map(|(_, update)| match update {
                Update::CommandRejected(rejection) => Some(rejection),
                _ => None,
            })
            .collect();
        assert_eq!(
            rejections.len(),
            1,
            "the second expiry, once: {rejections:?}"
        );
        let muted: Vec<&str> = one
            .iter()
            .filter_map(|(_, update)| match update {
                Update::AlertRecord(record) if record.is_quiet() => Some(record.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(muted.len(), 4, "{muted:?}");
        let released: Vec<(Time, &str)> = one
            .iter()
            .filter_map(|(time, update)| match update {
                Update::AlertRecord(record) if record.updated_at == 300 => {
                    Some((*time, record.id.as_str()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(released.len(), 4, "released when expired: {released:?}");
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    fn command(action: AlertAction, id: &str, rule: Option<&str>) -> AlertCommand {
        AlertCommand {
            alert_id: Some(id.into()),
            actor: Some("ana".into()),
            note: Some("tuning".into()),
            rule: rule.map(ToOwned::to_owned),
            ..AlertCommand::new(action)
        }
    }

    #[test]
    fn rule_changes_carry_templates_and_cooldowns_and_unknown_deletes_are_rejected() {
        let mut book = AlertBook::default().with_rules(&BTreeSet::from(["old".to_owned()]));
        let rule = r#"{"id":"new","metric":"x","aggregate":"max","op":">","threshold":1,
            "severity":"high","cooldown":"1m","summary":"x is {{ $value }}"}"#;
        let created = book
            .on_rule(10, &command(AlertAction::CreateRule, "new", Some(rule)))
            .unwrap();
        assert_eq!(created.rule_id, "new");
        assert_eq!(
            (created.by.by.as_str(), created.by.at),
            ("ana", 10),
            "who and when"
        );
        assert!(book.templates.contains_key("new"));
        assert_eq!(book.cooldowns.get("new"), Some(&60_000));
        let deleted = book
            .on_rule(20, &command(AlertAction::DeleteRule, "new", None))
            .unwrap();
        assert!(deleted.rule.is_none());
        assert!(!book.templates.contains_key("new") && !book.cooldowns.contains_key("new"));
        assert!(book
            .on_rule(21, &command(AlertAction::DeleteRule, "old", None))
            .is_ok());
        let refused = book
            .on_rule(22, &command(AlertAction::DeleteRule, "old", None))
            .unwrap_err();
        assert_eq!(refused.reason, "no rule with this id");
    }
}
