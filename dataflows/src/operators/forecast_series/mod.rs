//! `forecast_series`: trend, Holt forecast and time-to-threshold per window series, and
//! predictive alerts for rules that carry a `forecast` horizon.
//!
//! ```text
//!   Update::Window / SeriesIdle ──exchange(series key)──► ForecastSeries ─► Update::Forecast
//!                                                               └──────────► AlertTransition
//!                                                                            (rule `<id>.forecast`)
//! ```
//!
//! The pure core is [`SeriesHistory`] (one series' recent windows) over the statistics in
//! [`math`]. The shell only routes windows to the worker owning the series key and hands
//! results on. Nothing here fails on data: a series with too few windows or a degenerate
//! history simply gets no forecast yet.

pub mod math;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use rustc_hash::FxBuildHasher;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use crate::model::{
    Aggregate, AlertCommand, AlertState, AlertTransition, Comparison, SeriesForecast, SeriesKey,
    ThresholdForecast, Update, WindowStats,
};
use crate::operators::RuleSet;
use crate::time::{duration_ms, Stopwatch};
use crate::Time;

use self::math::{ols_trend, Holt};

/// How series are forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    /// Windows kept per series (the history the trend and Holt see).
    pub history: usize,
    /// Fewer windows than this: no forecast yet (cold start).
    pub min_windows: usize,
    /// Holt level smoothing, in `(0, 1]`.
    pub alpha: f64,
    /// Holt trend smoothing, in `(0, 1]`.
    pub beta: f64,
    /// How far ahead the reported forecast looks.
    pub horizon: Duration,
    /// How far ahead a threshold crossing is still reported.
    pub reach: Duration,
    /// A slope with a p-value below this is a trend (rising/falling), else flat.
    pub significance: f64,
    /// Series tracked per worker; beyond it the series with the oldest window is evicted.
    pub max_series: usize,
    /// Whether per-session series (`session.*{session_id=..}`) are forecast too.
    pub include_session_series: bool,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            history: 30,
            min_windows: 5,
            alpha: 0.5,
            beta: 0.3,
            horizon: Duration::from_secs(15 * 60),
            reach: Duration::from_secs(60 * 60),
            significance: 0.05,
            max_series: 10_000,
            include_session_series: false,
        }
    }
}

const AGGREGATES: [Aggregate; 9] = [
    Aggregate::Count,
    Aggregate::Sum,
    Aggregate::Mean,
    Aggregate::Min,
    Aggregate::Max,
    Aggregate::Rate,
    Aggregate::P50,
    Aggregate::P95,
    Aggregate::P99,
];

fn aggregate_index(aggregate: Aggregate) -> usize {
    AGGREGATES
        .iter()
        .position(|candidate| *candidate == aggregate)
        .unwrap_or(2)
}

/// The recent windows of one series and its predictive-alert state (the pure core).
#[derive(Debug, Clone, Default)]
pub struct SeriesHistory {
    ends: VecDeque<u64>,
    values: VecDeque<[f64; 9]>,
    /// Rule positions whose predictive alert is firing.
    predicted: BTreeSet<usize>,
}

impl SeriesHistory {
    /// End of the latest window, ms.
    pub fn last_end(&self) -> Option<u64> {
        self.ends.back().copied()
    }

    fn column(&self, aggregate: Aggregate) -> Vec<f64> {
        let index = aggregate_index(aggregate);
        self.values.iter().map(|row| row[index]).collect()
    }

    /// Adds a closed window and returns the series' forecast (none during cold start or
    /// for a window not later than the last) plus predictive-alert transitions.
    pub fn observe(
        &mut self,
        stats: &WindowStats,
        config: &ForecastConfig,
        rules: &RuleSet,
    ) -> (Option<SeriesForecast>, Vec<AlertTransition>) {
        if self.last_end().is_some_and(|end| stats.end <= end) {
            return (None, Vec::new());
        }
        let row = AGGREGATES.map(|aggregate| aggregate.apply(stats));
        if row.iter().any(|value| !value.is_finite()) {
            return (None, Vec::new());
        }
        self.ends.push_back(stats.end);
        self.values.push_back(row);
        while self.ends.len() > config.history.max(3) {
            self.ends.pop_front();
            self.values.pop_front();
        }
        if self.ends.len() < config.min_windows.max(3) {
            return (None, Vec::new());
        }
        let first = self.ends[0] as f64;
        let minutes: Vec<f64> = self
            .ends
            .iter()
            .map(|end| (*end as f64 - first) / 60_000.0)
            .collect();
        let step_ms = {
            let n = self.ends.len();
            ((self.ends[n - 1] - self.ends[0]) as f64 / (n - 1) as f64).max(1.0)
        };
        let horizon_ms = duration_ms(config.horizon);
        let horizon_steps = (horizon_ms as f64 / step_ms).max(1.0);
        let means = self.column(Aggregate::Mean);
        let Some(trend) = ols_trend(&minutes, &means) else {
            return (None, Vec::new());
        };
        let Some(holt) = Holt::fit(&means, config.alpha, config.beta) else {
            return (None, Vec::new());
        };
        let forecast = holt.forecast(horizon_steps);
        let half_width = holt.interval(horizon_steps);
        let direction = if trend.p_value < config.significance && trend.slope > 0.0 {
            "rising"
        } else if trend.p_value < config.significance && trend.slope < 0.0 {
            "falling"
        } else {
            "flat"
        };
        let mut thresholds = Vec::new();
        let mut transitions = Vec::new();
        for position in rules.watching(&stats.key) {
            let rule = &rules.rules()[position];
            let value = rule.aggregate.apply(stats);
            let breaching = rule.check(stats).is_some();
            let rising = matches!(rule.op, Comparison::Above | Comparison::AtLeast);
            let crosses_in_ms = if breaching {
                None
            } else {
                let column = self.column(rule.aggregate);
                Holt::fit(&column, config.alpha, config.beta)
                    .and_then(|fit| fit.steps_to(rule.threshold, rising))
                    .map(|steps| (steps.max(0.0) * step_ms).ceil())
                    .filter(|ms| *ms <= duration_ms(config.reach) as f64)
                    .map(|ms| ms as u64)
            };
            let horizon = rule.forecast.map(duration_ms);
            if let Some(horizon) = horizon {
                let predicted = crosses_in_ms.is_some_and(|ms| ms <= horizon);
                let was = self.predicted.contains(&position);
                if predicted != was {
                    if predicted {
                        self.predicted.insert(position);
                    } else {
                        self.predicted.remove(&position);
                    }
                    transitions.push(predictive_transition(
                        rule,
                        &stats.key,
                        if predicted {
                            AlertState::Firing
                        } else {
                            AlertState::Resolved
                        },
                        stats.end,
                        Some(value),
                    ));
                }
            }
            thresholds.push(ThresholdForecast {
                rule_id: rule.id.clone(),
                aggregate: rule.aggregate,
                op: rule.op,
                threshold: rule.threshold,
                value,
                breaching,
                crosses_in_ms,
                horizon_ms: horizon,
            });
        }
        let forecast = SeriesForecast {
            key: stats.key.clone(),
            at: stats.end,
            statistic: Aggregate::Mean,
            windows: self.ends.len() as u64,
            value: stats.mean,
            slope_per_min: trend.slope,
            slope_p_value: trend.p_value,
            trend: direction.into(),
            level: holt.level,
            holt_trend: holt.trend,
            horizon_ms,
            forecast,
            lower: forecast - half_width,
            upper: forecast + half_width,
            thresholds,
        };
        (Some(forecast), transitions)
    }

    /// Follows a rule change (`moved[old position]` is the rule's new position, none when
    /// it was deleted or changed): predictive alerts of rules that are gone resolve at `at`,
    /// the others keep firing under the rule's new position. `rules` is the old set.
    pub fn change_rules(
        &mut self,
        key: &SeriesKey,
        rules: &RuleSet,
        moved: &[Option<usize>],
        at: u64,
    ) -> Vec<AlertTransition> {
        let mut transitions = Vec::new();
        for position in std::mem::take(&mut self.predicted) {
            match moved.get(position).copied().flatten() {
                Some(new_position) => {
                    self.predicted.insert(new_position);
                }
                None => {
                    if let Some(rule) = rules.rules().get(position) {
                        transitions.push(predictive_transition(
                            rule,
                            key,
                            AlertState::Resolved,
                            at,
                            None,
                        ));
                    }
                }
            }
        }
        transitions
    }

    /// Resolves every firing predictive alert (the series went quiet or was evicted).
    pub fn resolve_all(
        &mut self,
        key: &SeriesKey,
        at: u64,
        rules: &RuleSet,
    ) -> Vec<AlertTransition> {
        let positions = std::mem::take(&mut self.predicted);
        positions
            .into_iter()
            .filter_map(|position| rules.rules().get(position))
            .map(|rule| predictive_transition(rule, key, AlertState::Resolved, at, None))
            .collect()
    }
}

/// Whether a series is forecast: session series only when configured, and never the
/// derived `anomaly_score` series (a forecast of a detector's score says nothing the
/// detector does not).
fn forecastable(key: &SeriesKey, include_sessions: bool) -> bool {
    (include_sessions || key.session_id.is_none())
        && key.name != crate::operators::score_anomalies::ANOMALY_SCORE
}

/// Forecasting time per activation, at most (at least one window; see the operator's
/// frontier notes).
const FORECAST_SLICE: Duration = Duration::from_micros(500);

/// A window, or the idle mark ending a series, on its way to the forecaster (the window
/// keeps its key inside: no copy per window).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Item {
    Window(WindowStats),
    Idle { key: SeriesKey, end: u64 },
}

impl Item {
    fn key(&self) -> &SeriesKey {
        match self {
            Item::Window(stats) => &stats.key,
            Item::Idle { key, .. } => key,
        }
    }

    fn end(&self) -> u64 {
        match self {
            Item::Window(stats) => stats.end,
            Item::Idle { end, .. } => *end,
        }
    }
}

/// Whether any rule has a forecast horizon (only those raise predictive alerts).
fn has_forecast(rules: &RuleSet) -> bool {
    rules.rules().iter().any(|rule| rule.forecast.is_some())
}

/// The rule id under which a rule's predictive alerts fire.
pub fn predictive_rule_id(rule_id: &str) -> String {
    format!("{rule_id}.forecast")
}

fn predictive_transition(
    rule: &crate::model::BreachRule,
    key: &SeriesKey,
    state: AlertState,
    at: u64,
    value: Option<f64>,
) -> AlertTransition {
    AlertTransition {
        fingerprint: format!("{}.forecast", rule.fingerprint(key)),
        rule_id: predictive_rule_id(&rule.id).into(),
        key: key.clone(),
        state,
        at,
        value,
        threshold: rule.threshold,
        severity: rule.severity,
    }
}

/// Forecasts for window series.
pub trait ForecastSeries<'scope> {
    /// Keeps the last `history` windows per series and, after each window, emits its trend
    /// (OLS slope per minute with a t-test p-value), a Holt forecast of the window mean at
    /// `horizon` with a 95% interval, and the time until each watching rule's statistic
    /// crosses its threshold. Rules with a `forecast` horizon also yield predictive alert
    /// transitions (`firing` when the crossing is forecast within the horizon and the
    /// latest window does not breach, `resolved` when that stops).
    ///
    /// # Inputs and outputs
    /// `self`: the analytics updates (only `Window` and `SeriesIdle` are read);
    /// `changes`: `create_rule` / `delete_rule` commands with their event times (other
    /// commands are ignored), so rules made at run time forecast like config rules.
    /// Returns `(Update::Forecast stream, predictive AlertTransition stream)`.
    ///
    /// # Frontier behaviour
    /// Stateless with respect to time: results leave at the time of the window that
    /// caused them; windows of one series arrive in order from the worker that closed
    /// them (a window not later than the last seen is ignored). A rule change (broadcast
    /// to every worker) applies when it arrives, before the windows of the same
    /// activation: like `evaluate_breaches`' fast path, windows are not held for it, so a
    /// change that reaches a worker after later windows applies from the next window.
    /// Windows queue on arrival and are forecast in later activations, `FORECAST_SLICE` at
    /// a time, so
    /// a close of thousands of series is spread over several short steps. Predictive transitions come from windows only while
    /// some rule has a forecast horizon, so only then does the operator hold a capability
    /// for them (at the earliest window still to come): without such rules the transition
    /// stream's frontier, which the alert lifecycle waits on, does not wait for forecasts
    /// to be computed. A rule change that adds the first forecast rule takes the hold from
    /// the change's time; windows of earlier times that arrive after it are stamped then.
    ///
    /// # State
    /// Per series at most `history` rows of nine numbers. A `SeriesIdle` evicts the
    /// series (resolving its predictive alerts); beyond `max_series` per worker the
    /// series with the oldest latest window is evicted the same way.
    fn forecast_series(
        self,
        name: &str,
        config: &ForecastConfig,
        rules: &RuleSet,
        changes: StreamVec<'scope, Time, (Time, AlertCommand)>,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, AlertTransition>,
    );
}

impl<'scope> ForecastSeries<'scope> for StreamVec<'scope, Time, Update> {
    fn forecast_series(
        self,
        name: &str,
        config: &ForecastConfig,
        rules: &RuleSet,
        changes: StreamVec<'scope, Time, (Time, AlertCommand)>,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, AlertTransition>,
    ) {
        let config = config.clone();
        let mut rules = rules.clone();
        let include_sessions = config.include_session_series;
        let scope = self.scope();
        let windows = self.unary(Pipeline, &format!("ForecastInput({name})"), move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for update in data.drain(..) {
                        match update {
                            Update::Window(stats) if forecastable(&stats.key, include_sessions) => {
                                session.give(Item::Window(stats));
                            }
                            Update::SeriesIdle { key, end }
                                if forecastable(&key, include_sessions) =>
                            {
                                session.give(Item::Idle { key, end });
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        let exchange = Exchange::new(|item: &Item| item.key().route());
        let mut builder = OperatorBuilder::new(format!("ForecastSeries({name})"), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let (forecasts_output, forecasts) = builder.new_output();
        let (transitions_output, transitions) = builder.new_output();
        let mut forecasts_output =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Update>>>::from(forecasts_output);
        let mut transitions_output = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<AlertTransition>>,
        >::from(transitions_output);
        // Windows reach the transitions output only through a capability the operator holds
        // while some rule has a forecast horizon (see the trait's frontier notes): without
        // such rules the alert path does not wait for forecasts to be computed.
        let mut window_input = builder.new_input_connection(
            windows,
            exchange,
            [(0, Antichain::from_elem(Default::default()))],
        );
        let mut change_input = builder.new_input(changes.broadcast(), Pipeline);
        builder.build(move |mut capabilities| {
            // Whether some rule has a forecast horizon; changes only with the rules.
            let mut forecasting = has_forecast(&rules);
            let mut predictive_cap = capabilities.pop().filter(|_| forecasting);
            drop(capabilities);
            let mut series: HashMap<SeriesKey, SeriesHistory, FxBuildHasher> = HashMap::default();
            // Windows waiting to be forecast, by arrival, each batch sorted by series and end.
            let mut queue: VecDeque<(Capability<Time>, VecDeque<Item>)> = VecDeque::new();
            let mut transitions_out = Vec::new();
            move |frontiers| {
                let mut forecasts_handle = forecasts_output.activate();
                let mut transitions_handle = transitions_output.activate();
                change_input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(1) else {
                        return;
                    };
                    for (at, command) in data.drain(..) {
                        let Some(next) = rules.after(&command) else {
                            continue;
                        };
                        let moved: Vec<Option<usize>> = rules
                            .rules()
                            .iter()
                            .map(|old| next.rules().iter().position(|new| new == old))
                            .collect();
                        let mut resolved: Vec<AlertTransition> = series
                            .iter_mut()
                            .flat_map(|(key, history)| {
                                history.change_rules(key, &rules, &moved, at)
                            })
                            .collect();
                        resolved.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
                        transitions_handle
                            .session(&cap)
                            .give_iterator(resolved.into_iter());
                        rules = next;
                        forecasting = has_forecast(&rules);
                        if forecasting && predictive_cap.is_none() {
                            predictive_cap = Some(cap.clone());
                        }
                    }
                });
                let mut arrived = false;
                window_input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else {
                        return;
                    };
                    let mut batch = std::mem::take(data);
                    batch.sort_by(|left, right| {
                        (left.key(), left.end()).cmp(&(right.key(), right.end()))
                    });
                    queue.push_back((cap, batch.into()));
                    arrived = true;
                });
                // Not in the step that brought the windows (the step of their close), and a
                // bounded share per activation after it, so a close of thousands of series
                // does not make one long step: timely reports progress between steps, and
                // the alerts the same close raised wait for that report on every worker.
                let slice = Stopwatch::start();
                let mut budget = if arrived { 0 } else { usize::MAX };
                while budget > 0 {
                    let Some((cap, batch)) = queue.front_mut() else {
                        break;
                    };
                    let time = *cap.time();
                    let mut session = forecasts_handle.session(&*cap);
                    while budget > 0 {
                        let Some(item) = batch.pop_front() else {
                            break;
                        };
                        if slice.elapsed() >= FORECAST_SLICE {
                            budget = 0;
                        }
                        match item {
                            Item::Window(stats) => {
                                let known = series.contains_key(&stats.key);
                                if !known && series.len() >= config.max_series {
                                    let oldest = series
                                        .iter()
                                        .min_by_key(|(key, history)| (history.last_end(), *key))
                                        .map(|(key, _)| key.clone());
                                    if let Some(oldest) = oldest {
                                        if let Some(mut history) = series.remove(&oldest) {
                                            transitions_out.extend(
                                                history.resolve_all(&oldest, stats.end, &rules),
                                            );
                                        }
                                    }
                                }
                                let history = match series.get_mut(&stats.key) {
                                    Some(history) => history,
                                    None => series.entry(stats.key.clone()).or_default(),
                                };
                                let (forecast, transitions) =
                                    history.observe(&stats, &config, &rules);
                                if let Some(forecast) = forecast {
                                    session.give(Update::Forecast(Box::new(forecast)));
                                }
                                transitions_out.extend(transitions);
                            }
                            Item::Idle { key, end } => {
                                if let Some(mut history) = series.remove(&key) {
                                    transitions_out.extend(history.resolve_all(&key, end, &rules));
                                }
                            }
                        }
                    }
                    drop(session);
                    if batch.is_empty() {
                        queue.pop_front();
                    }
                    if transitions_out.is_empty() {
                        continue;
                    }
                    // Predictive alerts exist only under rules with a forecast horizon,
                    // and while there are such rules the capability is held.
                    match &predictive_cap {
                        Some(held) => {
                            let at = held.delayed(&time.max(*held.time()));
                            transitions_handle
                                .session(&at)
                                .give_iterator(transitions_out.drain(..));
                        }
                        None => {
                            debug_assert!(false, "predictive transitions without a forecast rule");
                            transitions_out.clear();
                        }
                    }
                }
                if !queue.is_empty() {
                    activator.activate();
                }
                // Held no further back than the earliest window still to come or queued.
                if forecasting {
                    let queued = queue.iter().map(|(cap, _)| *cap.time()).min();
                    match frontiers[0].frontier().iter().copied().chain(queued).min() {
                        Some(earliest) => {
                            if let Some(held) = predictive_cap.as_mut() {
                                if *held.time() < earliest {
                                    held.downgrade(&earliest);
                                }
                            }
                        }
                        None => predictive_cap = None,
                    }
                } else {
                    predictive_cap = None;
                }
            }
        });
        (forecasts, transitions)
    }
}

#[cfg(test)]
mod tests;
