use std::time::Duration;

use super::math::{incomplete_beta, ln_gamma, ols_trend, student_t_two_sided, Holt};
use super::*;
use crate::model::{BreachRule, Severity};
use crate::testing::{run_epochs, Epoch};

/// Reference values computed once with statsmodels 0.15.0 (`Holt(y,
/// initialization_method="known", initial_level=y[0], initial_trend=y[1]-y[0])
/// .fit(smoothing_level=0.5, smoothing_trend=0.3, optimized=False)`) and scipy 1.17.1
/// (`linregress(arange(n), y)`) by `tests/insights/oracle.py`; the integration test
/// `insights::forecast_statistics_match_statsmodels_and_scipy` recomputes them live.
/// Tolerance 1e-9 (relative to the magnitude) for every value.
const SERIES_A: [f64; 10] = [1.0, 2.0, 3.5, 3.9, 5.2, 6.8, 6.1, 7.9, 9.4, 9.0];
const SERIES_B: [f64; 12] = [
    100.0, 98.0, 101.0, 97.0, 99.0, 100.0, 102.0, 98.0, 99.0, 101.0, 100.0, 97.0,
];

fn close(actual: f64, expected: f64) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} != {expected} (tolerance {tolerance})"
    );
}

#[test]
fn holt_matches_statsmodels_on_fixed_data() {
    let a = Holt::fit(&SERIES_A, 0.5, 0.3).unwrap();
    close(a.level, 9.505622048014649);
    close(a.trend, 0.847964989027246);
    close(a.forecast(1.0), 10.353587037041894);
    close(a.forecast(3.0), 12.049517015096388);
    close(a.sigma.powi(2) * 8.0, 5.72993584059286);
    let b = Holt::fit(&SERIES_B, 0.5, 0.3).unwrap();
    close(b.level, 98.67551032576395);
    close(b.trend, -0.3044134791984522);
    close(b.forecast(2.0), 98.06668336736705);
}

#[test]
fn trend_matches_scipy_linregress_on_fixed_data() {
    let x: Vec<f64> = (0..SERIES_A.len()).map(|i| i as f64).collect();
    let a = ols_trend(&x, &SERIES_A).unwrap();
    close(a.slope, 0.9333333333333333);
    close(a.intercept, 1.2799999999999994);
    close(a.slope_stderr, 0.06215003027051776);
    // p-values: 1e-9 relative.
    assert!((a.p_value - 3.818905555157616e-07).abs() <= 1e-9 * 3.818905555157616e-07);
    let x: Vec<f64> = (0..SERIES_B.len()).map(|i| i as f64).collect();
    let b = ols_trend(&x, &SERIES_B).unwrap();
    close(b.slope, -0.02097902097902098);
    close(b.slope_stderr, 0.14143057701394074);
    close(b.p_value, 0.885027344652901);
}

#[test]
fn special_functions_hit_known_values() {
    close(ln_gamma(1.0), 0.0);
    close(ln_gamma(5.0), 24f64.ln());
    close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln());
    close(incomplete_beta(1.0, 1.0, 0.3), 0.3);
    // t = 2.0 with 10 degrees of freedom: scipy.stats.t.sf(2, 10) * 2.
    close(student_t_two_sided(2.0, 10.0), 0.07338803477074024);
    assert!(ols_trend(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_none());
    assert!(ols_trend(&[1.0, 2.0], &[1.0, 2.0]).is_none());
}

#[test]
fn holt_interval_widens_with_the_horizon_and_steps_to_threshold() {
    let fit = Holt::fit(&SERIES_A, 0.5, 0.3).unwrap();
    assert!(fit.interval(1.0) < fit.interval(5.0));
    close(fit.interval(1.0), 1.96 * fit.sigma);
    let steps = fit.steps_to(20.0, true).unwrap();
    close(fit.forecast(steps), 20.0);
    assert_eq!(
        fit.steps_to(0.0, false),
        None,
        "rising series never falls to 0"
    );
    assert_eq!(fit.steps_to(5.0, true), Some(0.0), "already above");
}

/// The interval's closed form equals the variance summed from the innovations form: an
/// `h`-step forecast error is `ε_h + Σ_{j=1}^{h−1} (α + α β* j) ε_{h−j}` (Hyndman &
/// Athanasopoulos, ETS(A,A,N) with β = αβ*). A Monte Carlo run of Holt's recurrences
/// (200,000 paths, α = 0.5, β* = 0.3, h = 5) gave variance 4.169 σ² against 4.175 σ² from
/// this sum; using β* itself would give 7.7 σ².
#[test]
fn holt_interval_equals_the_innovations_variance_sum() {
    let fit = Holt::fit(&SERIES_A, 0.5, 0.3).unwrap();
    for steps in [1_u32, 2, 5, 30, 900] {
        let summed: f64 = 1.0
            + (1..steps)
                .map(|j| {
                    let coefficient = fit.alpha + fit.alpha * fit.beta * f64::from(j);
                    coefficient * coefficient
                })
                .sum::<f64>();
        close(
            fit.interval(f64::from(steps)),
            1.96 * fit.sigma * summed.sqrt(),
        );
    }
}

fn rule(forecast: Option<Duration>) -> BreachRule {
    BreachRule {
        id: "latency_high".into(),
        metric: "latency_ms".into(),
        labels: Vec::new(),
        aggregate: Aggregate::P95,
        op: Comparison::Above,
        threshold: 500.0,
        severity: Severity::High,
        min_count: 1,
        for_duration: Duration::ZERO,
        keep_firing_for: Duration::ZERO,
        cooldown: Duration::ZERO,
        forecast,
        summary: None,
        annotations: Default::default(),
    }
}

fn window(name: &str, end: u64, value: f64) -> WindowStats {
    WindowStats {
        key: SeriesKey::named(name),
        start: end.saturating_sub(60_000),
        end,
        count: 10,
        sum: value * 10.0,
        mean: value,
        min: value,
        max: value,
        rate: 1.0,
        p50: value,
        p95: value,
        p99: value,
        exact: true,
    }
}

fn config() -> ForecastConfig {
    ForecastConfig {
        min_windows: 5,
        horizon: Duration::from_secs(15 * 60),
        ..ForecastConfig::default()
    }
}

#[test]
fn rising_series_reports_time_to_threshold_and_a_predictive_alert_once() {
    let rules = RuleSet::new(vec![rule(Some(Duration::from_secs(15 * 60)))]);
    let mut history = SeriesHistory::default();
    let mut fired = Vec::new();
    let mut last = None;
    // 100 ms → +10 ms per minute; crosses 500 after 40 min at first, sooner later.
    for minute in 0..40u64 {
        let (forecast, transitions) = history.observe(
            &window(
                "latency_ms",
                (minute + 1) * 60_000,
                100.0 + 10.0 * minute as f64,
            ),
            &config(),
            &rules,
        );
        fired.extend(transitions);
        if forecast.is_some() {
            last = forecast;
        }
        if minute < 4 {
            assert!(last.is_none(), "cold start before 5 windows");
        }
    }
    let forecast = last.unwrap();
    assert_eq!(forecast.trend, "rising");
    assert!(forecast.slope_p_value < 1e-6);
    close(forecast.slope_per_min, 10.0);
    let threshold = &forecast.thresholds[0];
    // Latest value 490: one more minute to 500 (up to float rounding of the smoothing).
    let crosses = threshold.crosses_in_ms.unwrap();
    assert!((60_000..=60_100).contains(&crosses), "{crosses}");
    assert_eq!(
        fired.len(),
        1,
        "one firing transition while the forecast holds: {fired:?}"
    );
    assert_eq!(fired[0].state, AlertState::Firing);
    assert_eq!(fired[0].rule_id, "latency_high.forecast");
    // The real breach takes over: the predictive alert resolves.
    let (_, transitions) =
        history.observe(&window("latency_ms", 41 * 60_000, 510.0), &config(), &rules);
    assert_eq!(transitions.len(), 1);
    assert_eq!(transitions[0].state, AlertState::Resolved);
}

/// A rule created at run time (`create_rule`) forecasts like a config rule; a rule change
/// keeps the predictive alerts of unchanged rules under their new positions and resolves
/// those of deleted rules.
#[test]
fn rule_changes_move_or_resolve_predictive_alerts() {
    use crate::model::{AlertAction, AlertCommand};
    let horizon = Some(Duration::from_secs(15 * 60));
    let first = BreachRule {
        id: "first".into(),
        ..rule(horizon)
    };
    let created = RuleSet::default()
        .after(&AlertCommand {
            alert_id: Some("first".into()),
            rule: Some(serde_json::to_string(&first).unwrap()),
            ..AlertCommand::new(AlertAction::CreateRule)
        })
        .unwrap();
    let rules = created
        .after(&AlertCommand {
            alert_id: Some("latency_high".into()),
            rule: Some(serde_json::to_string(&rule(horizon)).unwrap()),
            ..AlertCommand::new(AlertAction::CreateRule)
        })
        .unwrap();
    let mut history = SeriesHistory::default();
    let mut fired = Vec::new();
    for minute in 0..20u64 {
        let stats = window(
            "latency_ms",
            (minute + 1) * 60_000,
            100.0 + 20.0 * minute as f64,
        );
        fired.extend(history.observe(&stats, &config(), &rules).1);
    }
    let ids: Vec<&str> = fired.iter().map(|t| t.rule_id.as_str()).collect();
    assert_eq!(ids, ["first.forecast", "latency_high.forecast"]);
    // Deleting `first` moves `latency_high` from position 1 to 0.
    let next = rules
        .after(&AlertCommand {
            alert_id: Some("first".into()),
            ..AlertCommand::new(AlertAction::DeleteRule)
        })
        .unwrap();
    let moved = [None, Some(0)];
    let key = SeriesKey::named("latency_ms");
    let resolved = history.change_rules(&key, &rules, &moved, 21 * 60_000);
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        (
            resolved[0].rule_id.as_str(),
            resolved[0].state,
            resolved[0].at
        ),
        ("first.forecast", AlertState::Resolved, 21 * 60_000)
    );
    let left = history.resolve_all(&key, 22 * 60_000, &next);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].rule_id, "latency_high.forecast");
}

#[test]
fn forecast_horizons_are_validated() {
    let zero = rule(Some(Duration::ZERO));
    assert!(zero
        .validate()
        .unwrap_err()
        .to_string()
        .contains("forecast"));
    let long = rule(Some(Duration::from_secs(8 * 24 * 3600)));
    assert!(long.validate().is_err());
    assert!(rule(Some(Duration::from_secs(60))).validate().is_ok());
    let suffixed = BreachRule {
        id: "x.forecast".into(),
        ..rule(None)
    };
    assert!(suffixed.validate().is_err());
}

#[test]
fn flat_noisy_series_has_no_trend_and_no_crossing() {
    let rules = RuleSet::new(vec![rule(None)]);
    let mut history = SeriesHistory::default();
    let mut last = None;
    for (index, value) in SERIES_B.iter().enumerate() {
        let (forecast, transitions) = history.observe(
            &window("latency_ms", (index as u64 + 1) * 10_000, *value),
            &config(),
            &rules,
        );
        assert!(transitions.is_empty(), "no forecast horizon on the rule");
        last = forecast.or(last);
    }
    let forecast = last.unwrap();
    assert_eq!(forecast.trend, "flat");
    assert!(forecast.lower < forecast.forecast && forecast.forecast < forecast.upper);
    assert_eq!(forecast.thresholds[0].crosses_in_ms, None);
}

#[test]
fn operator_is_identical_on_one_and_four_workers_and_evicts_idle_series() {
    // `anomaly_score` windows (the detectors' derived series) are never forecast.
    let rules = RuleSet::new(vec![rule(Some(Duration::from_secs(15 * 60)))]);
    let mut epochs = Vec::new();
    for minute in 0..20u64 {
        let end = (minute + 1) * 60_000;
        let mut data = Vec::new();
        for (series, slope) in [
            ("latency_ms", 20.0),
            ("other", 0.0),
            ("third", -3.0),
            ("anomaly_score", 0.1),
        ] {
            data.push(Some(window(series, end, 100.0 + slope * minute as f64)));
        }
        epochs.push(Epoch::new(end, data));
    }
    epochs.push(Epoch::new(21 * 60_000, vec![None]));
    let out = run_epochs(
        move |windows| {
            // `None` stands for "latency_ms went idle" (updates are not exchangeable).
            let updates = windows.unary(Pipeline, "AsWindows", |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for item in data.drain(..) {
                            session.give(match item {
                                Some(stats) => Update::Window(stats),
                                None => Update::SeriesIdle {
                                    key: SeriesKey::named("latency_ms"),
                                    end: 21 * 60_000,
                                },
                            });
                        }
                    });
                }
            });
            use timely::dataflow::operators::vec::Map;
            let no_rule_changes = updates
                .clone()
                .flat_map(|_| None::<(Time, crate::model::AlertCommand)>);
            let (forecasts, transitions) =
                updates.forecast_series("test", &config(), &rules, no_rule_changes);
            let alerts = transitions.unary(Pipeline, "AsUpdates", |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for transition in data.drain(..) {
                            session.give(Update::Alert(transition));
                        }
                    });
                }
            });
            use timely::dataflow::operators::Concatenate;
            forecasts.scope().concatenate([forecasts, alerts])
        },
        epochs,
    );
    let forecasts = out.of_kind("forecast");
    assert_eq!(forecasts.len(), 3 * 16);
    assert!(forecasts
        .iter()
        .all(|forecast| forecast["key"]["name"] != "anomaly_score"));
    let alerts = out.of_kind("alert");
    let states: Vec<&str> = alerts
        .iter()
        .map(|alert| alert["state"].as_str().unwrap())
        .collect();
    // Rising latency: predicted, then really breaching (resolves the prediction).
    assert_eq!(states, vec!["firing", "resolved"], "{alerts:?}");
}

/// Steps a dataflow that forecasts 1,000 series closing at once and reports, after each
/// step, whether the transitions and the forecasts have passed the windows' time.
fn frontiers_while_forecasting(rules: RuleSet) -> Vec<(bool, bool)> {
    use timely::dataflow::operators::vec::Map;
    use timely::dataflow::operators::{Input, Probe};
    timely::execute_directly(move |worker| {
        let (mut input, transitions_probe, forecasts_probe) =
            worker.dataflow::<Time, _, _>(|scope| {
                let (input, updates) = scope.new_input::<Vec<Update>>();
                let no_rule_changes = updates
                    .clone()
                    .flat_map(|_| None::<(Time, crate::model::AlertCommand)>);
                let (forecasts, transitions) =
                    updates.forecast_series("test", &config(), &rules, no_rule_changes);
                (input, transitions.probe().0, forecasts.probe().0)
            });
        let time = 59_999;
        input.advance_to(time);
        for series in 0..1_000 {
            input.send(Update::Window(window(&format!("s{series}"), 60_000, 1.0)));
        }
        input.advance_to(time + 1);
        let mut seen = Vec::new();
        for _ in 0..40 {
            worker.step();
            seen.push((
                !transitions_probe.less_equal(&time),
                !forecasts_probe.less_equal(&time),
            ));
        }
        seen
    })
}

/// Without a forecast rule the transitions (which the alert lifecycle waits on) pass a
/// close's time while its 1,000 windows are still being forecast a share per step; with
/// one they wait for every window, as the predictive alerts may come from any of them.
#[test]
fn transitions_wait_for_forecasts_only_under_forecast_rules() {
    let plain = frontiers_while_forecasting(RuleSet::new(vec![rule(None)]));
    let first_transitions = plain.iter().position(|(transitions, _)| *transitions);
    let first_forecasts = plain.iter().position(|(_, forecasts)| *forecasts);
    assert!(
        matches!((first_transitions, first_forecasts), (Some(t), Some(f)) if t < f),
        "{plain:?}"
    );
    let predictive =
        frontiers_while_forecasting(RuleSet::new(vec![rule(Some(Duration::from_secs(15 * 60)))]));
    let first_transitions = predictive.iter().position(|(transitions, _)| *transitions);
    let first_forecasts = predictive.iter().position(|(_, forecasts)| *forecasts);
    assert!(
        matches!((first_transitions, first_forecasts), (Some(t), Some(f)) if t >= f),
        "{predictive:?}"
    );
}
