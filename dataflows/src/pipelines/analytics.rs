//! The analytics pipeline: events in, typed updates out.
//!
//! ```text
//!                 ┌─ samples ──► ComputeWindows ─► EvaluateBreaches ─► windows + breaches
//!                 │                                      │ transitions
//!   events ─► RouteEvents                                ▼
//!                 ├─ commands ──────────────────────► ManageAlerts ───► alert records
//!                 ├─ sessions ──► TrackSessions ─────────────────────► sessions
//!                 └─ ml ────────► TrackModels ─► model metrics, retraining triggers
//!                                      └─ drift/threshold transitions ─► ManageAlerts
//! ```

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Concatenate, Operator};
use timely::dataflow::StreamVec;

use crate::model::{AlertTransition, Event, Update};
use crate::operators::{
    AlertConfig, ComputeWindows, EvaluateBreaches, ManageAlerts, RouteEvents, RuleSet,
    SessionConfig, TrackModels, TrackModelsConfig, TrackSessions, WindowConfig,
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
}

/// Builds the analytics graph over `events` and returns the merged update stream.
pub fn analytics<'scope>(
    events: StreamVec<'scope, Time, Event>,
    config: &AnalyticsConfig,
) -> StreamVec<'scope, Time, Update> {
    let scope = events.scope();
    let routed = events.route_events("events");
    let (windows_and_breaches, transitions) = routed
        .samples
        .compute_windows("series", &config.windows)
        .evaluate_breaches("rules", &config.rules);
    let models = routed.ml.track_models("models", &config.models);
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
    let transitions: StreamVec<'_, Time, AlertTransition> =
        scope.concatenate([transitions, model_transitions]);
    let alerts = transitions.manage_alerts("alerts", routed.commands, &config.alerts);
    let sessions = routed.sessions.track_sessions("sessions", &config.sessions);
    scope.concatenate([windows_and_breaches, alerts, sessions, models])
}

#[cfg(test)]
mod tests;
