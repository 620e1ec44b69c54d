//! Tools over the event stream and its windows: `realtime_add_event`,
//! `realtime_get_metrics`, `realtime_get_analytics`.

use std::collections::BTreeMap;

use megamind_dataflows::model::WindowStats;
use megamind_dataflows::operators::route_events::series_names;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{limit, ToolError};
use super::McpContext;
use crate::views::SeriesFilter;

/// Parameters of `realtime_add_event`: exactly one of `event` and `events`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddEventParams {
    /// One event: a JSON object with `type` (session, metric, prediction, outcome,
    /// alert_command, model, model_baseline, retrain) and that type's fields; `ts` (ms
    /// since the epoch) defaults to now.
    /// Example: `{"type":"metric","name":"latency_ms","value":51.2,"labels":{"service":"api"}}`.
    #[serde(default)]
    #[schemars(schema_with = "super::error::object_schema")]
    pub event: Option<serde_json::Value>,
    /// Several events (at most the configured batch limit, 10,000 by default).
    #[serde(default)]
    #[schemars(schema_with = "super::error::objects_schema")]
    pub events: Option<Vec<serde_json::Value>>,
}

/// One rejected event.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Rejection {
    /// Position in `events` (0 for a single `event`).
    pub index: usize,
    /// The offending field, when one is to blame (`value`, `labels.host`, ...).
    pub field: Option<String>,
    /// The classified reason (`missing_field`, `invalid_type`, `non_finite`, ...).
    pub reason: String,
    /// Explanation.
    pub message: String,
}

/// What `realtime_add_event` did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AddEventResult {
    /// Events accepted: written ahead to the embedded store and in the pipeline.
    pub accepted: usize,
    /// Events rejected, each with its reason; nothing else was lost.
    pub rejected: Vec<Rejection>,
}

/// Turns JSON event objects into one NDJSON body and runs it through the live intake
/// (validation, write-ahead, pipeline) — the same path as `POST /v1/events`.
///
/// # Errors
/// The pipeline or the event log refused the batch, or monitoring is stopped.
pub async fn ingest_objects(
    context: &McpContext,
    objects: Vec<serde_json::Value>,
) -> Result<AddEventResult, ToolError> {
    let report = context
        .app
        .ingest
        .ingest_body(crate::ingest::ndjson_body(&objects))
        .await?;
    Ok(AddEventResult {
        accepted: report.accepted,
        rejected: report
            .rejected
            .into_iter()
            .map(|rejection| Rejection {
                index: rejection.index,
                field: rejection.error.field.map(String::from),
                reason: rejection.error.reason.as_str().to_owned(),
                message: rejection.error.message.to_string(),
            })
            .collect(),
    })
}

/// `realtime_add_event`.
///
/// # Errors
/// Neither or both of `event`/`events`, an empty or oversize batch, or a refused batch.
pub async fn add(
    context: &McpContext,
    params: AddEventParams,
) -> Result<AddEventResult, ToolError> {
    let objects = match (params.event, params.events) {
        (Some(event), None) => vec![event],
        (None, Some(events)) if events.is_empty() => {
            return Err(ToolError::invalid("events", "must not be empty"))
        }
        (None, Some(events)) if events.len() > context.facts.max_batch_events => {
            return Err(ToolError::invalid(
                "events",
                format!(
                    "holds {} events; the limit is {}",
                    events.len(),
                    context.facts.max_batch_events
                ),
            ))
        }
        (None, Some(events)) => events,
        (Some(_), Some(_)) => {
            return Err(ToolError::invalid(
                "event",
                "give either `event` or `events`, not both",
            ))
        }
        (None, None) => {
            return Err(ToolError::invalid(
                "event",
                "give `event` (one object) or `events` (a list)",
            ))
        }
    };
    ingest_objects(context, objects).await
}

/// Parameters of `realtime_get_metrics`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetMetricsParams {
    /// Exact metric name, for example `latency_ms` or `session.errors`.
    #[serde(default)]
    pub name: Option<String>,
    /// Metric name prefix, for example `session.`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Only series of this session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Only series carrying all these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Most series returned (1–1000, default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}

/// The latest closed window of each matching series.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GetMetricsResult {
    /// Window length, seconds.
    pub window_length_seconds: f64,
    /// Window slide, seconds.
    pub window_slide_seconds: f64,
    /// Number of series returned.
    pub count: usize,
    /// One entry per series: key, window bounds (ms), count, sum, mean, min, max, rate/s,
    /// p50, p95, p99, and whether the percentiles are exact.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub series: Vec<WindowStats>,
}

/// `realtime_get_metrics`.
///
/// # Errors
/// An out-of-range limit.
pub fn get_metrics(
    context: &McpContext,
    params: GetMetricsParams,
) -> Result<GetMetricsResult, ToolError> {
    let limit = limit("limit", params.limit, 100, 1000)?;
    let filter = SeriesFilter {
        name: params.name,
        prefix: params.prefix,
        session_id: params.session_id,
        labels: params.labels.into_iter().collect(),
        limit,
    };
    let series = context.app.views.series(&filter);
    Ok(GetMetricsResult {
        window_length_seconds: context.facts.window_length.as_secs_f64(),
        window_slide_seconds: context.facts.window_slide.as_secs_f64(),
        count: series.len(),
        series,
    })
}

/// Parameters of `realtime_get_analytics`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsParams {
    /// Entries per ranking (1–50, default 5).
    #[serde(default)]
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
}

/// A session ranked by error rate.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionRank {
    /// The session.
    pub session_id: String,
    /// active, completed or failed.
    pub status: String,
    /// Errors per activity.
    pub error_rate: f64,
    /// Errors.
    pub errors: u64,
    /// Operations.
    pub operations: u64,
}

/// An operation ranked by latency over the current window.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OperationRank {
    /// The operation name.
    pub operation: String,
    /// Operations in the window.
    pub count: u64,
    /// Mean duration, ms.
    pub mean_ms: f64,
    /// 95th percentile duration, ms.
    pub p95_ms: f64,
    /// 99th percentile duration, ms.
    pub p99_ms: f64,
}

/// A series whose mean moved most since the previous window.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Trend {
    /// The series, as `name{labels}`.
    pub series: String,
    /// Mean of the latest window.
    pub mean: f64,
    /// Mean of the previous window.
    pub previous_mean: f64,
    /// Relative change, (mean − previous) / |previous|.
    pub change: f64,
    /// `rising` or `falling`.
    pub direction: String,
}

/// A summary of what is happening.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AnalyticsResult {
    /// Sessions by status.
    pub sessions: BTreeMap<String, usize>,
    /// Sessions with the highest error rate (at least one activity).
    pub top_sessions_by_error_rate: Vec<SessionRank>,
    /// Operations with the highest p95 duration in the current window.
    pub slowest_operations: Vec<OperationRank>,
    /// Breaching windows per rule among the recent breaches.
    pub breach_counts: BTreeMap<String, usize>,
    /// Active alerts per severity.
    pub active_alerts: BTreeMap<String, usize>,
    /// Series (not per session) whose mean changed most since the previous window.
    pub trends: Vec<Trend>,
    /// Holt forecasts with OLS trend significance and time-to-threshold per rule: series
    /// with a forecast threshold crossing first, then the most significant trends.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub forecasts: Vec<megamind_dataflows::model::SeriesForecast>,
    /// Active risks and recommendations (priority, impact, message, action), highest first.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub recommendations: Vec<megamind_dataflows::model::Insight>,
    /// Running sessions with the lowest predicted success probability.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub session_predictions: Vec<megamind_dataflows::model::SessionPrediction>,
    /// The current session success model (version, training size, accuracy), if trained.
    #[schemars(with = "Option<serde_json::Value>")]
    pub success_model: Option<megamind_dataflows::model::SuccessModelReport>,
    /// The most recent anomalous points, newest first.
    pub anomalies: Vec<AnomalyEntry>,
    /// Error families (clusters of session messages), largest first.
    pub error_families: Vec<FamilyEntry>,
    /// The most recent messages that fell in no family, newest first.
    pub novel_errors: Vec<NovelErrorEntry>,
}

/// A point judged anomalous.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AnomalyEntry {
    /// The series, as `name{labels}`.
    pub series: String,
    /// Event time, ms.
    pub ts: u64,
    /// The value.
    pub value: f64,
    /// Robust z-score against the series' recent median/MAD.
    pub z: f64,
    /// Isolation forest score, 0–1.
    pub forest: f64,
    /// Combined score, 0–1 (0.5 is the decision boundary).
    pub combined: f64,
    /// `robust_z` or `both`: which detector decided.
    pub detector: String,
    /// Which detector, how far.
    pub reason: String,
}

/// An error family.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FamilyEntry {
    /// Stable id.
    pub id: String,
    /// Representative message template (numbers replaced by `<num>`).
    pub template: String,
    /// Messages in the family.
    pub count: u64,
    /// Recent example messages.
    pub examples: Vec<String>,
    /// First seen, ms.
    pub first_seen: u64,
    /// Last seen, ms.
    pub last_seen: u64,
}

/// A message in no error family.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NovelErrorEntry {
    /// The session.
    pub session_id: String,
    /// Event time, ms.
    pub ts: u64,
    /// The message.
    pub message: String,
    /// Cosine distance to the nearest family core.
    pub distance: f64,
}

/// `realtime_get_analytics`.
///
/// # Errors
/// An out-of-range limit.
pub fn analytics(
    context: &McpContext,
    params: &AnalyticsParams,
) -> Result<AnalyticsResult, ToolError> {
    let limit = limit("limit", params.limit, 5, 50)?;
    let views = &context.app.views;
    let mut sessions = views.sessions(None, 0);
    sessions.retain(|session| session.operations + session.errors > 0);
    sessions.sort_by(|a, b| {
        b.error_rate
            .total_cmp(&a.error_rate)
            .then(b.errors.cmp(&a.errors))
            .then(a.session_id.cmp(&b.session_id))
    });
    let top_sessions_by_error_rate = sessions
        .iter()
        .take(limit)
        .map(|session| SessionRank {
            session_id: session.session_id.to_string(),
            status: session.status.as_str().to_owned(),
            error_rate: session.error_rate,
            errors: session.errors,
            operations: session.operations,
        })
        .collect();

    let mut operations = views.series(&SeriesFilter {
        name: Some(series_names::OPERATION_DURATION.to_owned()),
        ..SeriesFilter::default()
    });
    operations.sort_by(|a, b| b.p95.total_cmp(&a.p95));
    let slowest_operations = operations
        .iter()
        .take(limit)
        .map(|stats| OperationRank {
            operation: stats
                .key
                .labels
                .iter()
                .find(|(key, _)| key == "operation")
                .map_or_else(String::new, |(_, value)| value.to_string()),
            count: stats.count,
            mean_ms: stats.mean,
            p95_ms: stats.p95,
            p99_ms: stats.p99,
        })
        .collect();

    let mut breach_counts = BTreeMap::new();
    for breach in views.breaches(usize::MAX) {
        *breach_counts.entry(breach.rule_id.to_string()).or_insert(0) += 1;
    }
    let mut active_alerts = BTreeMap::new();
    for alert in views.alerts(true) {
        *active_alerts
            .entry(alert.severity.as_str().to_owned())
            .or_insert(0) += 1;
    }

    let mut trends: Vec<Trend> = views
        .series_trends(&SeriesFilter::default())
        .into_iter()
        .filter(|trend| trend.window.key.session_id.is_none())
        .filter_map(|trend| {
            let previous = trend.previous_mean?;
            (previous != 0.0).then(|| {
                let change = (trend.window.mean - previous) / previous.abs();
                Trend {
                    series: trend.window.key.to_string(),
                    mean: trend.window.mean,
                    previous_mean: previous,
                    change,
                    direction: if change >= 0.0 { "rising" } else { "falling" }.to_owned(),
                }
            })
        })
        .collect();
    trends.sort_by(|a, b| b.change.abs().total_cmp(&a.change.abs()));
    trends.truncate(limit);

    let insights = views.insights.snapshot(limit);
    let mut forecasts = views.insights.forecasts("", usize::MAX);
    let soonest = |forecast: &megamind_dataflows::model::SeriesForecast| {
        forecast
            .thresholds
            .iter()
            .filter_map(|threshold| threshold.crosses_in_ms)
            .min()
            .unwrap_or(u64::MAX)
    };
    forecasts.sort_by(|a, b| {
        soonest(a)
            .cmp(&soonest(b))
            .then(a.slope_p_value.total_cmp(&b.slope_p_value))
            .then(a.key.cmp(&b.key))
    });
    forecasts.truncate(limit);

    Ok(AnalyticsResult {
        sessions: views
            .session_counts()
            .into_iter()
            .map(|(status, count)| (status.to_owned(), count))
            .collect(),
        top_sessions_by_error_rate,
        slowest_operations,
        breach_counts,
        active_alerts,
        trends,
        forecasts,
        recommendations: insights.active,
        session_predictions: insights.at_risk_sessions,
        success_model: insights.success_model,
        anomalies: views
            .anomalies(limit)
            .into_iter()
            .map(|report| AnomalyEntry {
                series: report.series.to_string(),
                ts: report.ts,
                value: report.value,
                z: report.scores.z,
                forest: report.scores.forest,
                combined: report.scores.combined,
                detector: serde_json::to_value(report.scores.detector)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                reason: report.reason,
            })
            .collect(),
        error_families: views
            .error_families()
            .into_iter()
            .take(limit)
            .map(|family| FamilyEntry {
                id: family.id,
                template: family.template,
                count: family.count,
                examples: family.examples,
                first_seen: family.first_seen,
                last_seen: family.last_seen,
            })
            .collect(),
        novel_errors: views
            .novel_errors(limit)
            .into_iter()
            .map(|novel| NovelErrorEntry {
                session_id: novel.session_id.to_string(),
                ts: novel.ts,
                message: novel.message,
                distance: novel.distance,
            })
            .collect(),
    })
}
