//! The analytics pipeline: events in, typed updates out.
//!
//! ```text
//!                 ┌─ samples ──────────────────────────────┐
//!                 ├─ scored (all but anomaly.skip_series)  │
//!                 │           └► ScoreAnomalies ─┬─ anomaly_score samples
//!                 │                              └─► anomalies
//!                 │   samples + anomaly_score ─► ComputeWindows ─► EvaluateBreaches ─► windows
//!                 │                                      │ transitions     + breaches
//!   events ─► RouteEvents                                ▼
//!                 ├─ commands ──────────────────────► ManageAlerts ───► alert records
//!                 ├─ sessions ──► TrackSessions ─────────────────────► sessions
//!                 │          └──► DetectNovelErrors ─────────────────► novel errors, families
//!                 │          └────────► PredictSessions ─► session predictions ─┐
//!                 │                               │ prediction/outcome events      │
//!                 └─ ml ─────────────────(+)──────┘                                │
//!                                         └─► TrackModels ─► model metrics ────────┤
//!                                      ├─ drift/threshold transitions ─► ManageAlerts
//!                                      └─ model.correct samples ─► ComputeWindows ─►
//!                                           EvaluateBreaches ─► windows + breaches,
//!                                           transitions ─► ManageAlerts
//!   windows ─► ForecastSeries ─► forecasts ───────────────────────────────────────┤
//!                   └─ predictive transitions (rules with `forecast`) ─► ManageAlerts
//!   predictions + forecasts + model metrics ─► Recommend ─► insights
//! ```

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Filter;
use timely::dataflow::operators::{Concatenate, Operator};
use timely::dataflow::StreamVec;

use crate::model::{AlertTransition, Event, Update};
use crate::operators::route_events::series_names::MODEL_CORRECT;
use crate::operators::score_anomalies::Scored;
use crate::operators::{
    AlertConfig, AnomalyConfig, ComputeWindows, DetectNovelErrors, EvaluateBreaches,
    ForecastConfig, ForecastSeries, ManageAlerts, NoveltyConfig, PredictConfig, PredictSessions,
    Recommend, RecommendConfig, RouteEvents, RuleSet, ScoreAnomalies, SessionConfig, TrackModels,
    TrackModelsConfig, TrackSessions, WindowConfig,
};
use crate::Time;

/// Everything the analytics pipeline needs to know.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsConfig {
    /// Sliding window shape.
    pub windows: WindowConfig,
    /// Session tracking.
    pub sessions: SessionConfig,
    /// Threshold rules over windows.
    pub rules: RuleSet,
    /// Alert lifecycle.
    pub alerts: AlertConfig,
    /// ML tracking.
    pub models: TrackModelsConfig,
    /// Numeric anomaly scoring.
    pub anomaly: AnomalyConfig,
    /// Error families and novel errors.
    pub novelty: NoveltyConfig,
    /// Predictive insights.
    pub insights: InsightsConfig,
}

/// Predictive insights: session success, forecasts, recommendations.
#[derive(Debug, Clone, PartialEq)]
pub struct InsightsConfig {
    /// Whether the insight operators run at all.
    pub enabled: bool,
    /// Session success model and completion estimates.
    pub predict: PredictConfig,
    /// Trends and forecasts of window series.
    pub forecast: ForecastConfig,
    /// Recommendation rules.
    pub recommend: RecommendConfig,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            predict: PredictConfig::default(),
            forecast: ForecastConfig::default(),
            recommend: RecommendConfig::default(),
        }
    }
}

/// Builds the analytics graph over `events` and returns the merged update stream.
pub fn analytics<'scope>(
    events: StreamVec<'scope, Time, Event>,
    config: &AnalyticsConfig,
) -> StreamVec<'scope, Time, Update> {
    let scope = events.scope();
    let scored = config
        .anomaly
        .enabled
        .then_some(config.anomaly.skip_series.as_slice());
    let routed = events.route_events("events", scored);
    let mut extra = Vec::new();
    let samples = if config.anomaly.enabled {
        let scored = routed.scored.score_anomalies("series", &config.anomaly);
        let (anomalies, scores) = split_scored(scored);
        extra.push(anomalies);
        extra.push(
            routed
                .sessions
                .clone()
                .detect_novel_errors("messages", &config.novelty),
        );
        scope.concatenate([routed.samples, scores])
    } else {
        routed.samples
    };
    // Without the `model.correct` series a rule over it could never fire: the lifecycle
    // refuses it (and says why), and the evaluators never see it.
    let correctness_series = config.models.correctness_series;
    let rule_changes = routed.commands.clone().filter(move |(_, command)| {
        command.command.is_rule() && (correctness_series || !watches_correctness(command))
    });
    let windows = samples.compute_windows("series", &config.windows);
    let (windows_and_breaches, transitions) =
        windows
            .clone()
            .evaluate_breaches("rules", &config.rules, rule_changes.clone());
    let insights = &config.insights;
    let session_events = routed.sessions;
    let sessions = session_events
        .clone()
        .track_sessions("sessions", &config.sessions);
    let (predictions, ml) = if insights.enabled {
        let retrain_requests = routed.retrains;
        let (predictions, success_ml) =
            session_events.predict_sessions("sessions", &insights.predict, retrain_requests);
        (
            Some(predictions),
            scope.concatenate([routed.ml, success_ml]),
        )
    } else {
        (None, routed.ml)
    };
    let (models, correctness) = ml.track_models("models", &config.models);
    // `model.correct` is windowed by its own operators: fed into the windows above, it
    // would tie every window close to the tracker, which releases pairs only once the
    // frontier has passed them. Its windows, breaches and transitions join the others.
    // The tracker is exchanged by model id, so each series is on one worker already.
    let model_windows = config.models.correctness_series.then(|| {
        let model_windows = correctness.compute_windows_in_place("model_series", &config.windows);
        let (with_breaches, transitions) = model_windows.clone().evaluate_breaches(
            "model_rules",
            &config.rules,
            rule_changes.clone(),
        );
        (model_windows, with_breaches, transitions)
    });
    let model_transitions = models.clone().unary(Pipeline, "ModelTransitions", |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for update in data.iter() {
                    if let Update::Alert(transition) = update {
                        session.give(transition.clone());
                    }
                }
            });
        }
    });
    let mut transition_streams = vec![transitions, model_transitions];
    let mut outputs = vec![windows_and_breaches, sessions, models.clone()];
    let model_windows = model_windows.map(|(model_windows, with_breaches, transitions)| {
        outputs.push(with_breaches);
        transition_streams.push(transitions);
        model_windows
    });
    if let Some(predictions) = predictions {
        // From the windows themselves: the breach records would only be copied to the
        // forecaster to be dropped there.
        let windows = match model_windows {
            Some(model_windows) => scope.concatenate([windows, model_windows]),
            None => windows,
        };
        let (forecasts, predictive) =
            windows.forecast_series("series", &insights.forecast, &config.rules, rule_changes);
        transition_streams.push(predictive);
        let recommendations = scope
            .concatenate([predictions.clone(), forecasts.clone(), models])
            .recommend("insights", &insights.recommend);
        outputs.extend([predictions, forecasts, recommendations]);
    }
    let transitions: StreamVec<'_, Time, AlertTransition> = scope.concatenate(transition_streams);
    let alert_config = AlertConfig {
        correctness_series,
        ..config.alerts.clone()
    };
    let alerts = transitions.manage_alerts("alerts", routed.commands, &alert_config);
    // Alert records first: the merge forwards its inputs in this order, so in the step of
    // a window close the sinks get the alerts before the close's thousands of windows.
    outputs.insert(0, alerts);
    outputs.extend(extra);
    scope.concatenate(outputs)
}

/// Whether `command` creates a rule over the `model.correct` series.
fn watches_correctness(command: &crate::model::AlertCommand) -> bool {
    command.command == crate::model::AlertAction::CreateRule
        && command
            .rule
            .as_deref()
            .and_then(|text| serde_json::from_str::<crate::model::BreachRule>(text).ok())
            .is_some_and(|rule| rule.metric == MODEL_CORRECT)
}

/// Splits the scorer's output into updates and derived `anomaly_score` samples.
fn split_scored<'scope>(
    scored: StreamVec<'scope, Time, Scored>,
) -> (
    StreamVec<'scope, Time, Update>,
    StreamVec<'scope, Time, crate::model::Sample>,
) {
    let updates = scored.clone().unary(Pipeline, "AnomalyUpdates", |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for item in data.drain(..) {
                    if let Scored::Update(update) = item {
                        session.give(*update);
                    }
                }
            });
        }
    });
    let samples = scored.unary(Pipeline, "AnomalyScoreSamples", |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for item in data.drain(..) {
                    if let Scored::Sample(sample) = item {
                        session.give(sample);
                    }
                }
            });
        }
    });
    (updates, samples)
}

#[cfg(test)]
mod tests;
