//! The analytics pipeline: events in, typed updates out.
//!
//! ```text
//!                 ┌─ samples ──► ComputeWindows ─► EvaluateBreaches ─► windows + breaches
//!                 │                                      │ transitions
//!   events ─► RouteEvents                                ▼
//!                 ├─ commands ──────────────────────► ManageAlerts ───► alert records
//!                 └─ sessions ──► TrackSessions ─────────────────────► sessions
//! ```

use timely::dataflow::operators::Concatenate;
use timely::dataflow::StreamVec;

use crate::model::{Event, Update};
use crate::operators::{
    AlertConfig, ComputeWindows, EvaluateBreaches, ManageAlerts, RouteEvents, RuleSet,
    SessionConfig, TrackSessions, WindowConfig,
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
    let alerts = transitions.manage_alerts("alerts", routed.commands, &config.alerts);
    let sessions = routed.sessions.track_sessions("sessions", &config.sessions);
    scope.concatenate([windows_and_breaches, alerts, sessions])
}

#[cfg(test)]
mod tests;
