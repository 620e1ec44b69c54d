//! `dashboard_realtime`: one snapshot of everything a dashboard shows.

use megamind_dataflows::model::{AlertRecord, Breach, SessionState, WindowStats};
use schemars::JsonSchema;
use serde::Serialize;

use super::monitoring::{status, StatusResult};
use super::McpContext;
use crate::views::SeriesFilter;

/// Series shown at most.
const SERIES: usize = 200;
/// Sessions shown at most.
const SESSIONS: usize = 25;
/// Breaches shown at most.
const BREACHES: usize = 25;

/// The snapshot.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Dashboard {
    /// Engine status, events/s, queue, rejects, window shape.
    pub status: StatusResult,
    /// Latest window of every series not tied to a session (metrics, operations, models).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub series: Vec<WindowStats>,
    /// Most recently active sessions.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub sessions: Vec<SessionState>,
    /// Active alerts.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub alerts: Vec<AlertRecord>,
    /// Most recent breaching windows.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub breaches: Vec<Breach>,
    /// Models seen in the current window.
    pub models: super::ml::PerformanceStatus,
}

/// `dashboard_realtime`.
pub fn snapshot(context: &McpContext) -> Dashboard {
    let views = &context.app.views;
    let mut series = views.series(&SeriesFilter::default());
    series.retain(|stats| stats.key.session_id.is_none());
    series.truncate(SERIES);
    Dashboard {
        status: status(context),
        series,
        sessions: views.sessions(None, SESSIONS),
        alerts: views.alerts(true),
        breaches: views.breaches(BREACHES),
        models: super::ml::status(context),
    }
}
