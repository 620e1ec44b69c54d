//! `evaluate_breaches`: threshold rules over closed windows, with firing/resolved state.
//!
//! ```text
//!   Window / SeriesIdle ──pipeline──► EvaluateBreaches ──► input + Breach / Alert(firing|resolved)
//! ```
//!
//! This is the seed of the alert system: rules are matched per window, and each
//! `(rule, series)` pair remembers whether it is firing so that a streak of breaching
//! windows yields one `firing` transition and one `resolved` transition.

use std::collections::{HashMap, HashSet};

use rustc_hash::FxBuildHasher;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::model::{
    AlertState, AlertTransition, Breach, BreachRule, Id, SeriesKey, Update, WindowStats,
};
use crate::Time;

/// Rules indexed by the metric they watch.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<BreachRule>,
    by_metric: HashMap<Id, Vec<usize>, FxBuildHasher>,
    wildcard: Vec<usize>,
}

impl RuleSet {
    /// Indexes `rules` (assumed valid, see [`BreachRule::validate`]).
    pub fn new(rules: Vec<BreachRule>) -> Self {
        let mut set = Self {
            rules,
            ..Self::default()
        };
        for (position, rule) in set.rules.iter().enumerate() {
            if rule.metric == "*" {
                set.wildcard.push(position);
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

    /// Positions of the rules that watch `key`.
    pub fn watching<'a>(&'a self, key: &'a SeriesKey) -> impl Iterator<Item = usize> + 'a {
        self.by_metric
            .get(&key.name)
            .into_iter()
            .flatten()
            .chain(self.wildcard.iter())
            .copied()
            .filter(move |position| self.rules[*position].watches(key))
    }
}

/// The pure rule logic: which `(rule, series)` pairs are firing.
#[derive(Debug, Default)]
pub struct BreachState {
    firing: HashSet<(usize, SeriesKey), FxBuildHasher>,
}

impl BreachState {
    /// Evaluates every rule watching the window's series, pushing breaches and transitions.
    pub fn on_window(&mut self, rules: &RuleSet, stats: &WindowStats, out: &mut Vec<Update>) {
        for position in rules.watching(&stats.key) {
            let rule = &rules.rules[position];
            match rule.check(stats) {
                Some(value) => {
                    out.push(Update::Breach(Breach {
                        rule_id: rule.id.clone(),
                        key: stats.key.clone(),
                        start: stats.start,
                        end: stats.end,
                        aggregate: rule.aggregate,
                        op: rule.op,
                        value,
                        threshold: rule.threshold,
                        severity: rule.severity,
                    }));
                    if self.firing.insert((position, stats.key.clone())) {
                        out.push(transition(
                            rule,
                            &stats.key,
                            AlertState::Firing,
                            stats.end,
                            Some(value),
                        ));
                    }
                }
                None => {
                    if self.firing.remove(&(position, stats.key.clone())) {
                        let value = rule.aggregate.apply(stats);
                        out.push(transition(
                            rule,
                            &stats.key,
                            AlertState::Resolved,
                            stats.end,
                            Some(value),
                        ));
                    }
                }
            }
        }
    }

    /// Resolves every firing rule of a series that went quiet.
    pub fn on_idle(&mut self, rules: &RuleSet, key: &SeriesKey, end: u64, out: &mut Vec<Update>) {
        for position in rules.watching(key) {
            if self.firing.remove(&(position, key.clone())) {
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

    /// Number of firing `(rule, series)` pairs.
    pub fn firing(&self) -> usize {
        self.firing.len()
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
    /// The set of firing `(rule, series)` pairs; an entry is removed when its series
    /// resolves or goes idle. Runs on the worker that computed the window (pipeline), so it
    /// sees each series' windows in order.
    fn evaluate_breaches(
        self,
        name: &str,
        rules: &RuleSet,
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
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, AlertTransition>,
    ) {
        let rules = rules.clone();
        let mut builder = OperatorBuilder::new(format!("EvaluateBreaches({name})"), self.scope());
        let mut input = builder.new_input(self, Pipeline);
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
            move |_frontiers| {
                let mut updates_handle = updates_output.activate();
                let mut transitions_handle = transitions_output.activate();
                input.for_each(|cap, data| {
                    for update in data.iter() {
                        match update {
                            Update::Window(stats) => state.on_window(&rules, stats, &mut out),
                            Update::SeriesIdle { key, end } => {
                                state.on_idle(&rules, key, *end, &mut out)
                            }
                            _ => {}
                        }
                    }
                    let (Some(updates_cap), Some(transitions_cap)) =
                        (cap.retain_least(0), cap.retain_least(1))
                    else {
                        return;
                    };
                    let mut session = updates_handle.session(&updates_cap);
                    session.give_container(data);
                    if !out.is_empty() {
                        let mut transitions = transitions_handle.session(&transitions_cap);
                        for update in &out {
                            if let Update::Alert(transition) = update {
                                transitions.give(transition.clone());
                            }
                        }
                        session.give_iterator(out.drain(..));
                    }
                });
            }
        });
        (updates, transitions)
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
}
