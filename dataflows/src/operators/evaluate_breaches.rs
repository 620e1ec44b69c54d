//! `evaluate_breaches`: threshold rules over closed windows, with firing/resolved state.
//!
//! ```text
//!   Window / SeriesIdle ──pipeline──► EvaluateBreaches ──► input + Breach / Alert(firing|resolved)
//! ```
//!
//! This is the seed of the alert system: rules are matched per window, and each
//! `(rule, series)` pair remembers whether it is firing so that a streak of breaching
//! windows yields one `firing` transition and one `resolved` transition.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::model::{
    AlertAction, AlertCommand, AlertState, AlertTransition, Breach, BreachRule, Id, SeriesKey,
    Update, WindowStats,
};
use crate::time::duration_ms;
use crate::Time;

/// Rules indexed by the metric they watch.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<BreachRule>,
    /// Rules of a named metric without label matchers.
    by_metric: HashMap<Id, Vec<usize>, FxBuildHasher>,
    /// Rules of a named metric with label matchers, under (metric, first label pair): a
    /// series only looks up its own label pairs, so a thousand rules on one metric that
    /// differ by a label cost a few lookups per window instead of a thousand checks.
    /// Looked up by borrowed strings, metric, then label name, then value, so a window
    /// costs no key copies.
    by_metric_label: HashMap<Id, LabelIndex, FxBuildHasher>,
    wildcard: Vec<usize>,
}

/// Rule positions by label name, then label value.
type LabelIndex = HashMap<Id, HashMap<Id, Vec<usize>, FxBuildHasher>, FxBuildHasher>;

impl RuleSet {
    /// The rule set after a `create_rule` (add or replace by id) or `delete_rule` command;
    /// `None` when the command does not change it (a delete of an unknown id, or a rule
    /// that does not parse, which the decoder already refused).
    pub fn after(&self, command: &AlertCommand) -> Option<RuleSet> {
        let id = command.alert_id.as_deref()?;
        let mut rules = self.rules.clone();
        match command.command {
            AlertAction::CreateRule => {
                let rule: BreachRule = serde_json::from_str(command.rule.as_deref()?).ok()?;
                rule.validate().ok()?;
                match rules.iter_mut().find(|existing| existing.id == id) {
                    Some(existing) => *existing = rule,
                    None => rules.push(rule),
                }
            }
            AlertAction::DeleteRule => {
                let before = rules.len();
                rules.retain(|existing| existing.id != id);
                if rules.len() == before {
                    return None;
                }
            }
            _ => return None,
        }
        Some(RuleSet::new(rules))
    }

    /// Indexes `rules` (assumed valid, see [`BreachRule::validate`]).
    pub fn new(rules: Vec<BreachRule>) -> Self {
        let mut set = Self {
            rules,
            ..Self::default()
        };
        for (position, rule) in set.rules.iter().enumerate() {
            if rule.metric == "*" {
                set.wildcard.push(position);
            } else if let Some((name, value)) = rule.labels.first() {
                set.by_metric_label
                    .entry(rule.metric.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default()
                    .push(position);
            } else {
                set.by_metric
                    .entry(rule.metric.clone())
                    .or_default()
                    .push(position);
            }
        }
        set
    }

    /// The rules.
    pub fn rules(&self) -> &[BreachRule] {
        &self.rules
    }

    /// Positions of the rules that watch `key`: the named metric's rules in ascending
    /// position, then the wildcard rules.
    pub fn watching<'a>(&'a self, key: &'a SeriesKey) -> impl Iterator<Item = usize> + 'a {
        let mut named: SmallVec<[usize; 4]> = self
            .by_metric
            .get(key.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        if let Some(by_label) = self.by_metric_label.get(key.name.as_str()) {
            for (name, value) in &key.labels {
                if let Some(positions) = by_label
                    .get(name.as_str())
                    .and_then(|values| values.get(value.as_str()))
                {
                    named.extend(positions.iter().copied());
                }
            }
            named.sort_unstable();
        }
        named
            .into_iter()
            .chain(self.wildcard.iter().copied())
            .filter(move |position| self.rules[*position].watches(key))
    }
}

/// Where one `(rule, series)` pair is between quiet and resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PairState {
    /// End of the first window of the current breaching streak, ms.
    breaching_since: u64,
    /// Whether the `firing` transition was emitted.
    firing: bool,
    /// End of the first clear window since the condition last held (firing only), ms.
    clear_since: Option<u64>,
}

/// The pure rule logic: which `(rule, series)` pairs are pending or firing, with the
/// rule's `for` (pending before firing) and `keep_firing_for` (anti-flap), measured in
/// event time between window ends.
#[derive(Debug, Default)]
pub struct BreachState {
    /// Per series, the pending or firing pairs by rule position. Keyed by series so the
    /// windows of quiet pairs (nearly all of them) are looked up without cloning their key.
    pairs: HashMap<SeriesKey, Vec<(usize, PairState)>, FxBuildHasher>,
    /// Per series with windows, the positions of the rules watching it: one lookup per
    /// window instead of the rule index's several. Emptied when the rules change; a series
    /// leaves it when it goes quiet.
    watching: HashMap<SeriesKey, Watching, FxBuildHasher>,
}

/// Positions of the rules watching one series, in [`RuleSet::watching`]'s order.
type Watching = SmallVec<[usize; 4]>;

impl BreachState {
    /// Evaluates every rule watching the window's series, pushing breaches and transitions.
    pub fn on_window(&mut self, rules: &RuleSet, stats: &WindowStats, out: &mut Vec<Update>) {
        let end = stats.end;
        let watching = match self.watching.get(&stats.key) {
            Some(watching) => watching.clone(),
            None => {
                let watching: Watching = rules.watching(&stats.key).collect();
                self.watching.insert(stats.key.clone(), watching.clone());
                watching
            }
        };
        for position in watching {
            let rule = &rules.rules[position];
            match rule.check(stats) {
                Some(value) => {
                    out.push(Update::Breach(Breach {
                        rule_id: rule.id.clone(),
                        key: stats.key.clone(),
                        start: stats.start,
                        end,
                        aggregate: rule.aggregate,
                        op: rule.op,
                        value,
                        threshold: rule.threshold,
                        severity: rule.severity,
                    }));
                    let entries = match self.pairs.get_mut(&stats.key) {
                        Some(entries) => entries,
                        None => self.pairs.entry(stats.key.clone()).or_default(),
                    };
                    let found = entries.iter().position(|(held, _)| *held == position);
                    let started = found.is_none();
                    let index = found.unwrap_or_else(|| {
                        entries.push((
                            position,
                            PairState {
                                breaching_since: end,
                                firing: false,
                                clear_since: None,
                            },
                        ));
                        entries.len() - 1
                    });
                    let pair = &mut entries[index].1;
                    pair.clear_since = None;
                    let due =
                        end.saturating_sub(pair.breaching_since) >= duration_ms(rule.for_duration);
                    if started && !due {
                        // The streak begins but `for` has not elapsed: visible as pending.
                        out.push(transition(
                            rule,
                            &stats.key,
                            AlertState::Pending,
                            end,
                            Some(value),
                        ));
                    }
                    if !pair.firing && due {
                        pair.firing = true;
                        out.push(transition(
                            rule,
                            &stats.key,
                            AlertState::Firing,
                            end,
                            Some(value),
                        ));
                    }
                }
                None => {
                    let Some(entries) = self.pairs.get_mut(&stats.key) else {
                        continue;
                    };
                    let Some(index) = entries.iter().position(|(held, _)| *held == position) else {
                        continue;
                    };
                    let pair = &mut entries[index].1;
                    if !pair.firing {
                        // Pending, never fired: the streak is over; the pending alert
                        // clears (it was never notified).
                        self.forget(&stats.key, index);
                        out.push(transition(
                            rule,
                            &stats.key,
                            AlertState::Resolved,
                            end,
                            Some(rule.aggregate.apply(stats)),
                        ));
                        continue;
                    }
                    let clear_since = *pair.clear_since.get_or_insert(end);
                    if end.saturating_sub(clear_since) >= duration_ms(rule.keep_firing_for) {
                        self.forget(&stats.key, index);
                        let value = rule.aggregate.apply(stats);
                        out.push(transition(
                            rule,
                            &stats.key,
                            AlertState::Resolved,
                            end,
                            Some(value),
                        ));
                    }
                }
            }
        }
    }

    /// Resolves every firing or pending rule of a series that went quiet, without waiting
    /// for `keep_firing_for`: no more windows will come.
    pub fn on_idle(&mut self, rules: &RuleSet, key: &SeriesKey, end: u64, out: &mut Vec<Update>) {
        let watching = self
            .watching
            .remove(key)
            .unwrap_or_else(|| rules.watching(key).collect());
        for position in watching {
            let Some(entries) = self.pairs.get(key) else {
                return;
            };
            if let Some(index) = entries.iter().position(|(held, _)| *held == position) {
                self.forget(key, index);
                out.push(transition(
                    &rules.rules[position],
                    key,
                    AlertState::Resolved,
                    end,
                    None,
                ));
            }
        }
    }

    /// Replaces `rules` by `next` (a rule created, replaced or deleted at event time `at`):
    /// the pairs of rules that are gone or changed resolve at `at` (firing or pending ones
    /// emit a `resolved` transition with no value) and are forgotten; the others keep their
    /// state under the rule's new position.
    pub fn change_rules(
        &mut self,
        rules: &mut RuleSet,
        next: RuleSet,
        at: u64,
        out: &mut Vec<Update>,
    ) {
        self.watching.clear();
        let moved: Vec<Option<usize>> = rules
            .rules
            .iter()
            .map(|old| next.rules.iter().position(|new| new == old))
            .collect();
        let mut gone: Vec<(usize, SeriesKey)> = Vec::new();
        for (key, entries) in &mut self.pairs {
            entries.retain_mut(
                |(position, _)| match moved.get(*position).copied().flatten() {
                    Some(new_position) => {
                        *position = new_position;
                        true
                    }
                    None => {
                        gone.push((*position, key.clone()));
                        false
                    }
                },
            );
        }
        self.pairs.retain(|_, entries| !entries.is_empty());
        gone.sort();
        for (position, key) in gone {
            out.push(transition(
                &rules.rules[position],
                &key,
                AlertState::Resolved,
                at,
                None,
            ));
        }
        *rules = next;
    }

    /// Forgets the pair at `index` of `key`'s pairs (and the key with its last pair).
    fn forget(&mut self, key: &SeriesKey, index: usize) {
        if let Some(entries) = self.pairs.get_mut(key) {
            entries.swap_remove(index);
            if entries.is_empty() {
                self.pairs.remove(key);
            }
        }
    }

    /// Number of firing `(rule, series)` pairs.
    pub fn firing(&self) -> usize {
        self.pairs
            .values()
            .flatten()
            .filter(|(_, pair)| pair.firing)
            .count()
    }

    /// Number of pending `(rule, series)` pairs (breaching, `for` not yet elapsed).
    pub fn pending(&self) -> usize {
        self.pairs
            .values()
            .flatten()
            .filter(|(_, pair)| !pair.firing)
            .count()
    }
}

fn transition(
    rule: &BreachRule,
    key: &SeriesKey,
    state: AlertState,
    at: u64,
    value: Option<f64>,
) -> Update {
    Update::Alert(AlertTransition {
        fingerprint: rule.fingerprint(key),
        rule_id: rule.id.clone(),
        key: key.clone(),
        state,
        at,
        value,
        threshold: rule.threshold,
        severity: rule.severity,
    })
}

/// Threshold rules over closed windows.
pub trait EvaluateBreaches<'scope> {
    /// Emits a [`Update::Breach`] for every window that breaches a rule, and
    /// [`Update::Alert`] transitions when a `(rule, series)` pair starts or stops breaching.
    ///
    /// # Inputs and outputs
    /// `self`: the output of `compute_windows`. Returns two streams: every input update
    /// forwarded unchanged (moved, so the windows need not be cloned for a second
    /// consumer) followed by the breaches and transitions it caused; and the transitions
    /// alone, for the alert lifecycle.
    ///
    /// # Frontier behaviour
    /// Stateless with respect to time: output appears in the activation that receives the
    /// window, at the window's timely time.
    ///
    /// # State
    /// One entry per pending or firing `(rule, series)` pair; an entry is removed when its
    /// series resolves (after `keep_firing_for`), its pending streak clears, or it goes idle. Runs on the worker that computed the window (pipeline), so it
    /// sees each series' windows in order.
    fn evaluate_breaches(
        self,
        name: &str,
        rules: &RuleSet,
        changes: StreamVec<'scope, Time, (Time, AlertCommand)>,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, AlertTransition>,
    );
}

impl<'scope> EvaluateBreaches<'scope> for StreamVec<'scope, Time, Update> {
    fn evaluate_breaches(
        self,
        name: &str,
        rules: &RuleSet,
        changes: StreamVec<'scope, Time, (Time, AlertCommand)>,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, AlertTransition>,
    ) {
        let mut rules = rules.clone();
        let mut builder = OperatorBuilder::new(format!("EvaluateBreaches({name})"), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        // Rule changes reach every worker: each holds every rule.
        let mut change_input = builder.new_input(changes.broadcast(), Pipeline);
        let (updates_output, updates) = builder.new_output();
        let (transitions_output, transitions) = builder.new_output();
        let mut updates_output =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Update>>>::from(updates_output);
        let mut transitions_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<AlertTransition>>,
        >::from(transitions_output);
        builder.build(move |_capabilities| {
            let mut state = BreachState::default();
            let mut out = Vec::new();
            // While a rule change is pending, windows and changes are applied in time
            // order: a change of time c once no window at or before c can still come (it
            // applies to later windows), windows after it once it is applied. Windows are
            // not held for the rule input's frontier (that cost the alert path seconds of
            // latency under load): a change that reaches this worker after windows later
            // than it were evaluated applies from the next window on.
            let mut held_windows: BTreeMap<Time, Vec<Held<Vec<Update>>>> = BTreeMap::new();
            let mut held_changes: BTreeMap<Time, Vec<Held<(Time, AlertCommand)>>> = BTreeMap::new();
            move |frontiers| {
                let mut updates_handle = updates_output.activate();
                let mut transitions_handle = transitions_output.activate();
                change_input.for_each(|cap, data| {
                    let (Some(updates_cap), Some(transitions_cap)) =
                        (cap.retain_least(0), cap.retain_least(1))
                    else {
                        return;
                    };
                    let time = *updates_cap.time();
                    for change in data.drain(..) {
                        held_changes.entry(time).or_default().push(Held {
                            updates_cap: updates_cap.clone(),
                            transitions_cap: transitions_cap.clone(),
                            data: change,
                        });
                    }
                });
                let mut emit = |updates_cap: &Capability<Time>,
                                transitions_cap: &Capability<Time>,
                                data: &mut Vec<Update>,
                                out: &mut Vec<Update>| {
                    let mut session = updates_handle.session(updates_cap);
                    session.give_container(data);
                    if !out.is_empty() {
                        let mut transitions = transitions_handle.session(transitions_cap);
                        for update in out.iter() {
                            if let Update::Alert(transition) = update {
                                transitions.give(transition.clone());
                            }
                        }
                        session.give_iterator(out.drain(..));
                    }
                };
                input.for_each(|cap, data| {
                    let (Some(updates_cap), Some(transitions_cap)) =
                        (cap.retain_least(0), cap.retain_least(1))
                    else {
                        return;
                    };
                    // Fast path (no rule change pending): evaluate at once, as before rule
                    // changes existed. Otherwise hold, so each series' windows stay in time
                    // order around the change.
                    if held_changes.is_empty() && held_windows.is_empty() {
                        evaluate(&mut state, &rules, data, &mut out);
                        emit(&updates_cap, &transitions_cap, data, &mut out);
                        return;
                    }
                    let time = *updates_cap.time();
                    held_windows.entry(time).or_default().push(Held {
                        updates_cap,
                        transitions_cap,
                        data: std::mem::take(data),
                    });
                });
                loop {
                    let window_time = held_windows.first_key_value().map(|(t, _)| *t);
                    let change_time = held_changes.first_key_value().map(|(t, _)| *t);
                    // Windows of time t go before changes of time t (a change applies to
                    // the windows after it).
                    let take_window = match (window_time, change_time) {
                        (Some(w), Some(c)) => w <= c,
                        (Some(_), None) => true,
                        _ => false,
                    };
                    if take_window {
                        let Some(time) = window_time else {
                            break;
                        };
                        for mut held in held_windows.remove(&time).unwrap_or_default() {
                            evaluate(&mut state, &rules, &held.data, &mut out);
                            emit(
                                &held.updates_cap,
                                &held.transitions_cap,
                                &mut held.data,
                                &mut out,
                            );
                        }
                        continue;
                    }
                    let Some(time) = change_time.filter(|t| !frontiers[0].less_equal(t)) else {
                        break;
                    };
                    let mut changes = held_changes.remove(&time).unwrap_or_default();
                    changes.sort_by(|a, b| {
                        (a.data.0, &a.data.1.alert_id, a.data.1.command).cmp(&(
                            b.data.0,
                            &b.data.1.alert_id,
                            b.data.1.command,
                        ))
                    });
                    for held in changes {
                        if let Some(next) = rules.after(&held.data.1) {
                            state.change_rules(&mut rules, next, held.data.0, &mut out);
                        }
                        if !out.is_empty() {
                            emit(
                                &held.updates_cap,
                                &held.transitions_cap,
                                &mut Vec::new(),
                                &mut out,
                            );
                        }
                    }
                }
            }
        });
        (updates, transitions)
    }
}

/// Data held with its capabilities on both outputs.
struct Held<D> {
    updates_cap: Capability<Time>,
    transitions_cap: Capability<Time>,
    data: D,
}

fn evaluate(state: &mut BreachState, rules: &RuleSet, data: &[Update], out: &mut Vec<Update>) {
    for update in data {
        match update {
            Update::Window(stats) => state.on_window(rules, stats, out),
            Update::SeriesIdle { key, end } => state.on_idle(rules, key, *end, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Aggregate, Comparison, Severity};

    fn rule() -> BreachRule {
        BreachRule {
            id: "slow".into(),
            metric: "latency_ms".into(),
            labels: vec![],
            aggregate: Aggregate::Mean,
            op: Comparison::Above,
            threshold: 70.0,
            severity: Severity::High,
            min_count: 1,
            for_duration: std::time::Duration::ZERO,
            keep_firing_for: std::time::Duration::ZERO,
            cooldown: std::time::Duration::ZERO,
            forecast: None,
            summary: None,
            annotations: Default::default(),
        }
    }

    /// The index finds exactly the rules a scan of all rules finds, in the scan's order
    /// (named metric by position, then wildcards), for rules with and without labels.
    #[test]
    fn the_rule_index_finds_what_a_scan_finds_in_the_same_order() {
        let pair = |name: &str, value: &str| (Id::from(name), Id::from(value));
        let mut rules = Vec::new();
        for (index, (metric, labels)) in [
            ("latency_ms", vec![]),
            ("latency_ms", vec![pair("host", "a")]),
            ("*", vec![pair("host", "b")]),
            ("latency_ms", vec![pair("host", "b"), pair("zone", "x")]),
            ("errors", vec![pair("host", "a")]),
            ("latency_ms", vec![pair("zone", "x")]),
            ("*", vec![]),
            ("latency_ms", vec![pair("host", "a")]),
        ]
        .into_iter()
        .enumerate()
        {
            rules.push(BreachRule {
                id: format!("r{index}").into(),
                metric: metric.into(),
                labels,
                ..rule()
            });
        }
        let set = RuleSet::new(rules.clone());
        for name in ["latency_ms", "errors", "other"] {
            for labels in [
                vec![],
                vec![pair("host", "a")],
                vec![pair("host", "b"), pair("zone", "x")],
                vec![pair("host", "a"), pair("zone", "x")],
                vec![pair("zone", "x")],
            ] {
                let key = SeriesKey {
                    name: name.into(),
                    session_id: None,
                    labels,
                };
                let named = (0..rules.len()).filter(|&p| rules[p].metric != "*");
                let wild = (0..rules.len()).filter(|&p| rules[p].metric == "*");
                let scanned: Vec<usize> = named
                    .chain(wild)
                    .filter(|&p| rules[p].watches(&key))
                    .collect();
                assert_eq!(set.watching(&key).collect::<Vec<_>>(), scanned, "{key}");
            }
        }
    }

    fn window(name: &str, end: u64, mean: f64) -> WindowStats {
        WindowStats {
            key: SeriesKey::named(name),
            start: end - 10,
            end,
            count: 1,
            sum: mean,
            mean,
            min: mean,
            max: mean,
            rate: 0.1,
            p50: mean,
            p95: mean,
            p99: mean,
            exact: true,
        }
    }

    fn kinds(out: &[Update]) -> Vec<String> {
        out.iter()
            .map(|update| match update {
                Update::Alert(t) => format!("alert:{}", t.state),
                other => other.kind().to_owned(),
            })
            .collect()
    }

    #[test]
    fn streak_fires_once_and_resolves_once() {
        let rules = RuleSet::new(vec![rule()]);
        let mut state = BreachState::default();
        let mut out = Vec::new();
        state.on_window(&rules, &window("latency_ms", 10, 50.0), &mut out);
        assert!(out.is_empty());
        state.on_window(&rules, &window("latency_ms", 20, 80.0), &mut out);
        assert_eq!(kinds(&out), ["breach", "alert:firing"]);
        out.clear();
        state.on_window(&rules, &window("latency_ms", 30, 90.0), &mut out);
        assert_eq!(kinds(&out), ["breach"]);
        out.clear();
        state.on_window(&rules, &window("latency_ms", 40, 60.0), &mut out);
        assert_eq!(kinds(&out), ["alert:resolved"]);
        assert_eq!(state.firing(), 0);
    }

    /// Feeds windows (end, mean) and returns the alert transitions as `state@end`.
    fn run(rule: BreachRule, windows: &[(u64, f64)]) -> (Vec<String>, BreachState) {
        let rules = RuleSet::new(vec![rule]);
        let mut state = BreachState::default();
        let mut out = Vec::new();
        for &(end, mean) in windows {
            state.on_window(&rules, &window("latency_ms", end, mean), &mut out);
        }
        let transitions = out
            .iter()
            .filter_map(|update| match update {
                Update::Alert(t) => Some(format!("{}@{}", t.state, t.at)),
                _ => None,
            })
            .collect();
        (transitions, state)
    }

    #[test]
    fn for_keeps_the_alert_pending_until_the_condition_held_long_enough() {
        let rule = BreachRule {
            for_duration: std::time::Duration::from_millis(20),
            ..rule()
        };
        // Breaching at 10 and 20 (10 ms), clear at 30: pending only (visible), never
        // fires; the clear window ends the pending streak.
        let (transitions, state) = run(rule.clone(), &[(10, 80.0), (20, 80.0), (30, 50.0)]);
        assert_eq!(transitions, ["pending@10", "resolved@30"]);
        assert_eq!(
            (state.pending(), state.firing()),
            (0, 0),
            "a cleared pending pair is forgotten"
        );
        // Breaching 10..=30: pending at 10, fires at 30 (20 ms after the streak began), once.
        let (transitions, state) = run(
            rule.clone(),
            &[(10, 80.0), (20, 80.0), (30, 80.0), (40, 80.0)],
        );
        assert_eq!(transitions, ["pending@10", "firing@30"]);
        assert_eq!(state.firing(), 1);
        // A clear window restarts the pending streak.
        let (transitions, _) = run(
            rule.clone(),
            &[
                (10, 80.0),
                (20, 80.0),
                (25, 50.0),
                (30, 80.0),
                (40, 80.0),
                (50, 80.0),
            ],
        );
        assert_eq!(
            transitions,
            ["pending@10", "resolved@25", "pending@30", "firing@50"]
        );
        // Without `for`, no pending transition: the first breach fires.
        let (transitions, _) = run(super::tests::rule(), &[(10, 80.0), (20, 50.0)]);
        assert_eq!(transitions, ["firing@10", "resolved@20"]);
        // A pending series that goes quiet clears too.
        let mut state = BreachState::default();
        let rules = RuleSet::new(vec![rule]);
        let mut out = Vec::new();
        state.on_window(&rules, &window("latency_ms", 10, 80.0), &mut out);
        state.on_idle(&rules, &SeriesKey::named("latency_ms"), 40, &mut out);
        let seen: Vec<String> = out
            .iter()
            .filter_map(|update| match update {
                Update::Alert(t) => Some(format!("{}@{}", t.state, t.at)),
                _ => None,
            })
            .collect();
        assert_eq!(seen, ["pending@10", "resolved@40"]);
    }

    #[test]
    fn keep_firing_for_bridges_short_gaps() {
        let rule = BreachRule {
            keep_firing_for: std::time::Duration::from_millis(20),
            forecast: None,
            summary: None,
            annotations: Default::default(),
            ..rule()
        };
        // Flapping: clear at 20 and 30, breaching again at 40 (within 20 ms): one streak.
        let (transitions, _) = run(
            rule.clone(),
            &[(10, 80.0), (20, 50.0), (30, 50.0), (40, 80.0)],
        );
        assert_eq!(transitions, ["firing@10"]);
        // Clear for 20 ms (from 20 to 40): resolved at 40, the first window that long.
        let (transitions, state) = run(
            rule.clone(),
            &[(10, 80.0), (20, 50.0), (30, 50.0), (40, 50.0), (50, 50.0)],
        );
        assert_eq!(transitions, ["firing@10", "resolved@40"]);
        assert_eq!(state.firing(), 0);
        // Without keep_firing_for the same input flaps.
        let (transitions, _) = run(
            BreachRule {
                keep_firing_for: std::time::Duration::ZERO,
                forecast: None,
                summary: None,
                annotations: Default::default(),
                ..rule
            },
            &[(10, 80.0), (20, 50.0), (30, 50.0), (40, 80.0)],
        );
        assert_eq!(transitions, ["firing@10", "resolved@20", "firing@40"]);
    }

    #[test]
    fn idle_series_resolve_and_other_metrics_are_ignored() {
        let rules = RuleSet::new(vec![rule()]);
        let mut state = BreachState::default();
        let mut out = Vec::new();
        state.on_window(&rules, &window("tokens", 10, 1e9), &mut out);
        assert!(out.is_empty());
        state.on_window(&rules, &window("latency_ms", 10, 100.0), &mut out);
        out.clear();
        state.on_idle(&rules, &SeriesKey::named("latency_ms"), 20, &mut out);
        assert_eq!(kinds(&out), ["alert:resolved"]);
        let Update::Alert(transition) = &out[0] else {
            panic!()
        };
        assert_eq!((transition.at, transition.value), (20, None));
    }

    #[test]
    fn wildcard_and_label_filters() {
        let mut any = rule();
        any.id = "any".into();
        any.metric = "*".into();
        any.labels = vec![("region".into(), "eu".into())];
        let rules = RuleSet::new(vec![any]);
        let mut key = SeriesKey::named("cpu");
        assert_eq!(rules.watching(&key).count(), 0);
        key.labels = vec![("host".into(), "a".into()), ("region".into(), "eu".into())];
        assert_eq!(rules.watching(&key).count(), 1);
    }

    fn rule_command(action: AlertAction, id: &str, rule: Option<&BreachRule>) -> AlertCommand {
        AlertCommand {
            alert_id: Some(id.into()),
            actor: Some("ana".into()),
            rule: rule.map(|rule| serde_json::to_string(rule).unwrap()),
            ..AlertCommand::new(action)
        }
    }

    #[test]
    fn rules_change_at_run_time_and_deleted_rules_resolve() {
        let mut rules = RuleSet::new(vec![rule()]);
        let mut state = BreachState::default();
        let mut out = Vec::new();
        state.on_window(&rules, &window("latency_ms", 10, 80.0), &mut out);
        assert_eq!(kinds(&out), ["breach", "alert:firing"]);
        out.clear();
        // A new rule: the firing pair of `slow` keeps its state (no second firing).
        let fast = BreachRule {
            id: "fast".into(),
            threshold: 50.0,
            ..rule()
        };
        let next = rules
            .after(&rule_command(AlertAction::CreateRule, "fast", Some(&fast)))
            .unwrap();
        state.change_rules(&mut rules, next, 15, &mut out);
        assert!(out.is_empty());
        state.on_window(&rules, &window("latency_ms", 20, 80.0), &mut out);
        assert_eq!(kinds(&out), ["breach", "breach", "alert:firing"]);
        out.clear();
        // Deleting `slow` resolves its alert at the change's time, with no value.
        let next = rules
            .after(&rule_command(AlertAction::DeleteRule, "slow", None))
            .unwrap();
        state.change_rules(&mut rules, next, 25, &mut out);
        let Update::Alert(resolved) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (
                resolved.rule_id.as_str(),
                resolved.state,
                resolved.at,
                resolved.value
            ),
            ("slow", AlertState::Resolved, 25, None)
        );
        assert_eq!(state.firing(), 1, "fast still fires");
        assert_eq!(rules.rules().len(), 1);
        // Replacing `fast` with a different threshold starts it afresh.
        out.clear();
        let stricter = BreachRule {
            threshold: 95.0,
            ..fast
        };
        let next = rules
            .after(&rule_command(
                AlertAction::CreateRule,
                "fast",
                Some(&stricter),
            ))
            .unwrap();
        state.change_rules(&mut rules, next, 30, &mut out);
        assert_eq!(kinds(&out), ["alert:resolved"]);
        assert_eq!(rules.rules()[0].threshold, 95.0);
        // Deleting an unknown rule changes nothing.
        assert!(rules
            .after(&rule_command(AlertAction::DeleteRule, "nope", None))
            .is_none());
    }

    /// The operator applies rule changes in event-time order, the same with 1 and 4
    /// workers: windows before the change's time use the old rules, later ones the new.
    #[test]
    fn operator_applies_rule_changes_in_time_order() {
        use crate::testing::{canonical, run_settled, Epoch};
        use timely::dataflow::operators::vec::Map;
        type In = Result<WindowStats, (Time, AlertCommand)>;
        fn build(stream: StreamVec<'_, Time, In>) -> StreamVec<'_, Time, Update> {
            let changes = stream.clone().flat_map(|input: In| input.err());
            let fast = BreachRule {
                id: "fast".into(),
                threshold: 50.0,
                ..rule()
            };
            let windows = stream.flat_map(|input: In| input.ok().map(Update::Window));
            let (updates, _) =
                windows.evaluate_breaches("test", &RuleSet::new(vec![fast]), changes);
            updates
        }
        let slow = rule();
        let mut epochs = Vec::new();
        // Four hosts' windows at `base`, `base + 1`, ...
        let hosts = |epochs: &mut Vec<Epoch<In>>, base: u64| {
            for (position, key) in ["a", "b", "c", "d"].iter().enumerate() {
                let end = base + position as u64;
                epochs.push(Epoch::new(
                    end,
                    vec![Ok(WindowStats {
                        key: SeriesKey {
                            name: "latency_ms".into(),
                            session_id: None,
                            labels: vec![("host".into(), (*key).into())],
                        },
                        ..window("latency_ms", end, 80.0)
                    })],
                ));
            }
        };
        hosts(&mut epochs, 10);
        epochs.push(Epoch::new(
            20,
            vec![Err((
                20,
                rule_command(AlertAction::CreateRule, "slow", Some(&slow)),
            ))],
        ));
        hosts(&mut epochs, 30);
        epochs.push(Epoch::new(
            40,
            vec![Err((
                40,
                rule_command(AlertAction::DeleteRule, "fast", None),
            ))],
        ));
        epochs.push(Epoch::new(50, vec![]));
        let one = run_settled(1, build, epochs.clone());
        assert_eq!(
            canonical(&one),
            canonical(&run_settled(4, build, epochs)),
            "1 and 4 workers agree"
        );
        let mut transitions: Vec<(String, String, u64)> = one
            .iter()
            .filter_map(|(_, update)| match update {
                Update::Alert(t) => Some((t.rule_id.to_string(), t.state.to_string(), t.at)),
                _ => None,
            })
            .collect();
        transitions.sort();
        let mut expected = Vec::new();
        for position in 0..4u64 {
            expected.push(("fast".to_owned(), "firing".to_owned(), 10 + position));
            expected.push(("fast".to_owned(), "resolved".to_owned(), 40));
            expected.push(("slow".to_owned(), "firing".to_owned(), 30 + position));
        }
        expected.sort();
        assert_eq!(transitions, expected);
    }
}
