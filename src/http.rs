//! The HTTP API: event ingest, queries over the views, status, Prometheus metrics, health.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/events` | one event, a JSON array, or NDJSON → accepted count and per-record errors |
//! | `GET /v1/metrics` | latest window per series (`name`, `prefix`, `session_id`, `label=k:v`, `limit`) |
//! | `GET /v1/sessions` | sessions (`status`, `limit`) |
//! | `GET /v1/sessions/{id}` | one session with its history |
//! | `GET /v1/breaches` | recent breaches and alert states (`limit`) |
//! | `POST /v1/models` | register a model (version): a `type: "model"` event |
//! | `GET /v1/models` | the model registry and every tracked version's health |
//! | `POST /v1/models/{id}/baseline` | "pin now": a `type: "model_baseline"` event → 202 with the event |
//! | `POST /v1/reload` | reload `[[rules]]` and `[[alerts.silences]]` from the config file (as SIGHUP) → what changed |
//! | `GET /v1/status` | engine status |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | liveness |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use megamind_dataflows::model::SessionStatus;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ingest::Ingest;
use crate::metrics::EngineMetrics;
use crate::runtime::FeedError;
use crate::views::{SeriesFilter, Views};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Live intake.
    pub ingest: Arc<Ingest>,
    /// Query views.
    pub views: Arc<Views>,
    /// Counters.
    pub metrics: Arc<EngineMetrics>,
    /// Wall-clock start time, ms.
    pub started_ms: u64,
    /// Worker threads in this process.
    pub workers: usize,
    /// Switchable services.
    pub services: Arc<crate::services::Services>,
    /// Where the WebSocket servers listen, once they do.
    pub live: Arc<std::sync::OnceLock<LiveEndpoints>>,
    /// Notification channels (delivery counters, dead letters).
    pub notifier: Arc<megamind_connectors::notify::Notifier>,
    /// The routing/grouping dispatcher's queue (its counters).
    pub dispatch: megamind_connectors::notify::route::DispatchHandle,
    /// The Kafka source, when configured.
    pub kafka: Option<Arc<std::sync::Mutex<crate::kafka::KafkaRuntime>>>,
    /// The config file rules and silences reload from (none: started without one).
    pub config_path: Option<Arc<std::path::Path>>,
}

impl AppState {
    /// The Kafka status, when Kafka is configured.
    pub fn kafka_status(&self) -> Option<crate::kafka::KafkaStatus> {
        self.kafka.as_ref().map(|kafka| {
            kafka
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .status()
        })
    }
}

/// The WebSocket endpoints, for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEndpoints {
    /// Port of the analytics stream.
    pub analytics_port: u16,
    /// Port of the session monitor.
    pub sessions_port: u16,
}

/// Builds the router.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/v1/events", post(post_events))
        .route("/v1/models", post(post_models).get(get_models))
        .route("/v1/models/{id}/baseline", post(post_baseline))
        .route("/v1/metrics", get(get_metrics))
        .route("/v1/sessions", get(get_sessions))
        .route("/v1/sessions/{id}", get(get_session))
        .route("/v1/breaches", get(get_breaches))
        .route("/v1/anomalies", get(get_anomalies))
        .route("/v1/error-families", get(get_error_families))
        .route("/v1/alerts", get(get_alerts))
        .route("/v1/alerts/notifications", get(get_notifications))
        .route("/v1/alerts/{id}", get(get_alert))
        .route("/v1/silences", get(get_silences).post(post_silence))
        .route("/v1/rules", get(get_rules).post(post_rule))
        .route("/v1/rules/{id}", axum::routing::delete(delete_rule))
        .route("/v1/silences/{id}", axum::routing::delete(delete_silence))
        .route("/v1/reload", post(post_reload))
        .route("/v1/status", get(get_status))
        .route("/v1/insights", get(get_insights))
        .route("/v1/forecasts", get(get_forecasts))
        .route("/v1/live", get(get_live))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

async fn index() -> Html<&'static str> {
    Html(include_str!("dashboard/index.html"))
}

async fn post_events(State(state): State<AppState>, body: bytes::Bytes) -> Response {
    ingest_response(&state, body).await
}

/// `POST /v1/models`: the body is one registration object (`model_id`, `model_version`,
/// `task`, `classes`, `owner`, `description`, `min_accuracy`, `max_latency_p99_ms`,
/// `baseline_version`, optional `ts`); it enters the event log as a `type: "model"` event,
/// so it is validated, written ahead and replayed like any other event.
async fn post_models(State(state): State<AppState>, body: bytes::Bytes) -> Response {
    let mut object = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "the body must be one JSON object (a model registration)",
            )
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("invalid JSON: {err}"),
            )
        }
    };
    match object.get("type") {
        None => {
            object.insert("type".into(), json!("model"));
        }
        Some(serde_json::Value::String(kind)) if kind == "model" => {}
        Some(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "field `type`: must be \"model\" (or absent) on /v1/models",
            )
        }
    }
    let body = serde_json::Value::Object(object).to_string();
    ingest_response(&state, bytes::Bytes::from(body)).await
}

/// Fields a `POST /v1/models/{id}/baseline` body may hold (`type` and `model_id` come
/// from the route).
const BASELINE_FIELDS: [&str; 4] = ["model_version", "actor", "note", "ts"];

/// `POST /v1/models/{id}/baseline`: "pin now". The optional body holds `model_version`
/// (default: every version of the model with matched pairs), `actor` (default `http`),
/// `note` and `ts` (default: now). It enters the event log as a `type: "model_baseline"`
/// event (validated, written ahead, replayed) and the answer is 202 with that event: the
/// pin takes effect in event time inside the dataflow, and its outcome (the new
/// reference's size, or why nothing changed) follows as a `baseline_pin` update on
/// `models/{id}`, in `ml_performance_status.baseline_pins` and in the version's snapshot.
async fn post_baseline(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    body: bytes::Bytes,
) -> Response {
    let mut object =
        if body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Map::new()
        } else {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Object(object)) => object,
                Ok(_) => return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    "the body must be one JSON object (model_version, actor, note, ts) or empty",
                ),
                Err(err) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "malformed_json",
                        format!("invalid JSON: {err}"),
                    )
                }
            }
        };
    if let Some(field) = object
        .keys()
        .find(|key| !BASELINE_FIELDS.contains(&key.as_str()))
    {
        let shown: String = field.chars().take(64).collect();
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {
                "code": "invalid",
                "field": shown,
                "message": format!(
                    "field `{shown}`: unknown; a pin takes {} (the model comes from the path)",
                    BASELINE_FIELDS.join(", ")
                ),
            }})),
        )
            .into_response();
    }
    object.insert("type".into(), json!("model_baseline"));
    object.insert("model_id".into(), json!(model_id));
    if object.get("ts").is_none_or(serde_json::Value::is_null) {
        object.insert("ts".into(), json!(state.ingest.clock().now_ms()));
    }
    if object.get("actor").is_none_or(serde_json::Value::is_null) {
        object.insert("actor".into(), json!("http"));
    }
    let event = serde_json::Value::Object(object);
    let body = crate::ingest::ndjson_body(std::slice::from_ref(&event));
    match state.ingest.ingest_body(body).await {
        Ok(report) if report.accepted == 1 => (
            StatusCode::ACCEPTED,
            Json(json!({"accepted": 1, "event": event})),
        )
            .into_response(),
        Ok(report) => (StatusCode::UNPROCESSABLE_ENTITY, Json(report)).into_response(),
        Err(refused) => feed_error(refused),
    }
}

/// `GET /v1/models`: the registry (config and registration events) and the health of
/// every tracked version.
async fn get_models(State(state): State<AppState>) -> Response {
    let versions: Vec<serde_json::Value> = state
        .views
        .models()
        .iter()
        .map(|snapshot| {
            json!({
                "model_id": snapshot.model_id,
                "model_version": snapshot.model_version,
                "health": snapshot.health,
                "predictions": snapshot.predictions,
                "matched": snapshot.matched,
                "pending": snapshot.pending,
                "accuracy": snapshot.cumulative.accuracy,
                "registration": snapshot.registration,
                "reference_version": snapshot.drift.as_ref().map(|d| d.reference_version.clone()),
                "reference_pinned": snapshot.drift.as_ref().and_then(|d| d.pinned.clone()),
            })
        })
        .collect();
    Json(json!({"registry": state.views.registry(), "versions": versions})).into_response()
}

async fn ingest_response(state: &AppState, body: bytes::Bytes) -> Response {
    match state.ingest.ingest_body(body).await {
        Ok(report) => {
            let status = if report.accepted == 0 && !report.rejected.is_empty() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (status, Json(report)).into_response()
        }
        Err(refused) => feed_error(refused),
    }
}

/// The answer to a batch the intake refused as a whole.
fn feed_error(refused: FeedError) -> Response {
    match refused {
        FeedError::Overloaded => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "ingest queues are full; nothing from this request was accepted, retry later",
        ),
        FeedError::Stopped => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopped",
            "the pipeline is stopped",
        ),
        FeedError::Paused => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopped",
            "monitoring is stopped; start it again (realtime_start_monitoring) to ingest",
        ),
        FeedError::Storage => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage",
            "the event log could not record the batch; nothing from this request was accepted",
        ),
    }
}

async fn get_rules(State(state): State<AppState>) -> Response {
    Json(state.views.rules()).into_response()
}

/// `POST /v1/rules`: the body is one rule (the fields of a `[[rules]]` entry, as JSON). It
/// becomes a `create_rule` alert command, checked by the decoder (errors name `rule`) and
/// written ahead like every event; a rule with the same id is replaced.
async fn post_rule(State(state): State<AppState>, body: bytes::Bytes) -> Response {
    let rule: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(rule) => rule,
        Err(problem) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("invalid rule: {problem}"),
            )
        }
    };
    let command = json!({"type": "alert_command", "command": "create_rule", "rule": rule,
                         "actor": "http"});
    post_events(State(state), bytes::Bytes::from(format!("{command}\n"))).await
}

/// `DELETE /v1/rules/{id}`: a `delete_rule` alert command; the rule's alerts resolve.
async fn delete_rule(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let command = json!({"type": "alert_command", "command": "delete_rule", "alert_id": id,
                         "actor": "http"});
    post_events(State(state), bytes::Bytes::from(format!("{command}\n"))).await
}

async fn get_silences(State(state): State<AppState>) -> Response {
    Json(state.views.silences()).into_response()
}

/// `POST /v1/silences`: `{"id", "matchers", "duration", "actor"?, "note"?}` becomes a
/// `silence` alert command, ingested (and written ahead) like `POST /v1/events`.
async fn post_silence(State(state): State<AppState>, body: bytes::Bytes) -> Response {
    let request: crate::silences::SilenceRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(problem) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("invalid silence: {problem}"),
            )
        }
    };
    let line = format!("{}\n", request.command("http"));
    post_events(State(state), bytes::Bytes::from(line)).await
}

/// `POST /v1/reload`: what SIGHUP does — rules and config silences from the config file
/// become alert commands (only the differences); answers what changed, or every problem
/// of a file that does not load (then nothing changes).
async fn post_reload(State(state): State<AppState>) -> Response {
    use crate::rule_reload::ReloadError;
    match crate::rule_reload::reload(&state, state.config_path.as_deref()).await {
        Ok(report) => {
            tracing::info!(path = %report.path, accepted = report.accepted, "config reloaded over HTTP");
            Json(report).into_response()
        }
        Err(error @ ReloadError::NoConfigFile) => {
            error_response(StatusCode::CONFLICT, "no_config_file", &error)
        }
        Err(error @ ReloadError::Invalid { .. }) => {
            tracing::error!(problems = %error, "config not reloaded over HTTP");
            error_response(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", &error)
        }
        Err(error @ ReloadError::Refused(_)) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "refused", &error)
        }
    }
}

fn error_response(status: StatusCode, code: &str, problem: &dyn std::fmt::Display) -> Response {
    error(status, code, problem.to_string())
}

/// `DELETE /v1/silences/{id}`: an `expire_silence` alert command.
async fn delete_silence(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let request = crate::silences::ExpireRequest {
        id,
        actor: None,
        note: None,
    };
    let line = format!("{}\n", request.command("http"));
    post_events(State(state), bytes::Bytes::from(line)).await
}

/// Query of `GET /v1/metrics`.
#[derive(Debug, Default, Deserialize)]
pub struct MetricsQuery {
    name: Option<String>,
    prefix: Option<String>,
    session_id: Option<String>,
    /// `key:value`, comma-separated for several.
    label: Option<String>,
    limit: Option<usize>,
}

async fn get_metrics(State(state): State<AppState>, Query(query): Query<MetricsQuery>) -> Response {
    let mut labels = Vec::new();
    if let Some(spec) = &query.label {
        for pair in spec.split(',').filter(|pair| !pair.is_empty()) {
            match pair.split_once(':') {
                Some((key, value)) => labels.push((key.to_owned(), value.to_owned())),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_label",
                        format!("label {pair:?} must be key:value"),
                    )
                }
            }
        }
    }
    let filter = SeriesFilter {
        name: query.name,
        prefix: query.prefix,
        session_id: query.session_id,
        labels,
        limit: query.limit.unwrap_or(1000),
    };
    let series = state.views.series(&filter);
    Json(json!({"count": series.len(), "series": series})).into_response()
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Default, Deserialize)]
pub struct SessionsQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// Parses a session status name.
pub fn parse_status(name: &str) -> Option<SessionStatus> {
    match name {
        "active" => Some(SessionStatus::Active),
        "completed" => Some(SessionStatus::Completed),
        "failed" => Some(SessionStatus::Failed),
        _ => None,
    }
}

async fn get_sessions(
    State(state): State<AppState>,
    Query(query): Query<SessionsQuery>,
) -> Response {
    let status = match query
        .status
        .as_deref()
        .map(|name| (name, parse_status(name)))
    {
        None => None,
        Some((_, Some(status))) => Some(status),
        Some((name, None)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_status",
                format!("status {name:?} must be active, completed or failed"),
            )
        }
    };
    let sessions = state.views.sessions(status, query.limit.unwrap_or(500));
    Json(json!({"count": sessions.len(), "sessions": sessions})).into_response()
}

async fn get_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.views.session(&id) {
        Some(view) => Json(view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_session",
            format!("no session {id:?}"),
        ),
    }
}

/// Query of `GET /v1/breaches`.
#[derive(Debug, Default, Deserialize)]
pub struct BreachesQuery {
    limit: Option<usize>,
}

async fn get_breaches(
    State(state): State<AppState>,
    Query(query): Query<BreachesQuery>,
) -> Response {
    let breaches = state.views.breaches(query.limit.unwrap_or(100));
    let alerts = state.views.alerts(false);
    let firing = alerts
        .iter()
        .filter(|alert| alert.status.is_active())
        .count();
    Json(json!({"firing": firing, "alerts": alerts, "breaches": breaches})).into_response()
}

/// Query of `GET /v1/anomalies` and `GET /v1/error-families`.
#[derive(Debug, Default, Deserialize)]
pub struct AnomaliesQuery {
    limit: Option<usize>,
}

async fn get_anomalies(
    State(state): State<AppState>,
    Query(query): Query<AnomaliesQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(100);
    Json(json!({
        "anomalies": state.views.anomalies(limit),
        "novel_errors": state.views.novel_errors(limit),
    }))
    .into_response()
}

async fn get_error_families(
    State(state): State<AppState>,
    Query(query): Query<AnomaliesQuery>,
) -> Response {
    let mut families = state.views.error_families();
    families.truncate(query.limit.unwrap_or(100));
    Json(json!({
        "families": families,
        "novel_errors": state.views.novel_errors(query.limit.unwrap_or(100)),
    }))
    .into_response()
}

/// The engine's status, as served by `/v1/status` (and later MCP).
#[derive(Debug, Serialize)]
pub struct Status {
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Local worker threads.
    pub workers: usize,
    /// Each service's state and uptime.
    pub services: Vec<crate::services::ServiceStatus>,
    /// Events accepted per second over the last second.
    pub events_per_second: f64,
    /// Events accepted.
    pub events_accepted: u64,
    /// Rejections by reason.
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    /// Late events (also in `rejected`).
    pub late_events: u64,
    /// Batches waiting.
    pub queue_depth: usize,
    /// Batch capacity.
    pub queue_capacity: usize,
    /// Ingest refusals due to full queues.
    pub overloaded: u64,
    /// Events in the dataflow that its output has not caught up with.
    pub in_flight_events: u64,
    /// Times a worker stopped reading because `ingest.max_in_flight_events` were in flight.
    pub backpressure_pauses: u64,
    /// Latest watermark pushed, ms.
    pub watermark_ms: u64,
    /// Latest output frontier, ms.
    pub output_frontier_ms: u64,
    /// Series with a current window.
    pub series: usize,
    /// Sessions by status.
    pub sessions: std::collections::BTreeMap<&'static str, usize>,
    /// Firing alerts.
    pub firing_alerts: usize,
    /// Alert statistics (see [`alert_stats`]) and notification counters: per channel
    /// sent/failed/dead-lettered/dropped, and the dispatcher's received/dropped/suppressed.
    pub alerts: serde_json::Value,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// Kafka partitions, lag and counters, when consuming from Kafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<crate::kafka::KafkaStatus>,
    /// Trend and Holt forecast of megamind's own CPU, memory and queue depth (empty until
    /// the health series have enough windows).
    pub health_forecast: Vec<megamind_dataflows::model::SeriesForecast>,
}

/// Assembles the status.
pub fn status(state: &AppState) -> Status {
    use std::sync::atomic::Ordering::Relaxed;
    let metrics = &state.metrics;
    let now = state.ingest.clock().now_ms();
    Status {
        uptime_seconds: now.saturating_sub(state.started_ms) as f64 / 1000.0,
        workers: state.workers,
        services: state.services.statuses(),
        events_per_second: state.services.events_per_second(),
        events_accepted: metrics.events_accepted.load(Relaxed),
        rejected: metrics.rejected_by_reason(),
        late_events: metrics.rejected(megamind_dataflows::model::ErrorReason::Late),
        queue_depth: state.ingest.feeder().queue_depth(),
        queue_capacity: state.ingest.feeder().queue_capacity(),
        overloaded: metrics.overloaded.load(Relaxed),
        in_flight_events: metrics.in_flight.load(Relaxed),
        backpressure_pauses: metrics.backpressure_pauses.load(Relaxed),
        watermark_ms: metrics.watermark_ms.load(Relaxed),
        output_frontier_ms: metrics.output_frontier_ms.load(Relaxed),
        series: state.views.series_count(),
        sessions: state.views.session_counts(),
        firing_alerts: state
            .views
            .alerts(true)
            .iter()
            .filter(|alert| alert.status.is_active())
            .count(),
        alerts: {
            let dispatch = state.dispatch.metrics();
            let mut stats = alert_stats(&state.views.alerts(false));
            stats["notifications"] = serde_json::json!({
                "channels": state.notifier.counts(),
                "received": dispatch.received.load(Relaxed),
                "dropped": dispatch.dropped.load(Relaxed),
                "suppressed": dispatch.suppressed.load(Relaxed),
                "rate_limited": dispatch.rate_limited.load(Relaxed),
                "inhibited": dispatch.inhibited.load(Relaxed),
                "muted": muted_alerts(dispatch).len(),
                "sent": dispatch.notifications.load(Relaxed),
            });
            stats
        },
        rss_bytes: crate::metrics::rss_bytes(),
        kafka: state.kafka_status(),
        health_forecast: state.views.insights.health_forecast(),
    }
}

/// Query of `/v1/insights` and `/v1/forecasts`.
#[derive(Debug, Deserialize)]
struct InsightsQuery {
    /// Series name prefix (`/v1/forecasts`).
    prefix: Option<String>,
    /// Most entries (default 100).
    limit: Option<usize>,
}

async fn get_insights(
    State(state): State<AppState>,
    Query(query): Query<InsightsQuery>,
) -> Response {
    Json(state.views.insights.snapshot(query.limit.unwrap_or(100))).into_response()
}

async fn get_forecasts(
    State(state): State<AppState>,
    Query(query): Query<InsightsQuery>,
) -> Response {
    let forecasts = state.views.insights.forecasts(
        query.prefix.as_deref().unwrap_or(""),
        query.limit.unwrap_or(1000),
    );
    Json(json!({"count": forecasts.len(), "forecasts": forecasts})).into_response()
}

async fn get_live(State(state): State<AppState>) -> Response {
    match state.live.get() {
        Some(live) => Json(live).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no_websocket",
            "the WebSocket servers are not running",
        ),
    }
}

/// `GET /v1/alerts`: active alerts, with what the dispatcher adds (`inhibited_by`,
/// `suppressed_by.rate_limit`).
async fn get_alerts(State(state): State<AppState>) -> Response {
    let mut alerts = state.views.alerts(true);
    state.dispatch.metrics().annotate(&mut alerts);
    Json(alerts).into_response()
}

async fn get_alert(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.views.alert(&id) {
        Some(alert) => Json(state.dispatch.metrics().annotated(alert)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_alert",
            format!("no alert {id:?}"),
        ),
    }
}

/// Alert statistics over the alerts the views hold (active, and resolved within
/// `alerts.resolved_retention`): counts by severity, rule and status; mean time to
/// acknowledge and to resolve (event time, over the alerts that were); escalations
/// (alerts that took at least one escalation step, reminders sent, and the escalation rate:
/// escalated alerts over alerts held).
pub fn alert_stats(alerts: &[megamind_dataflows::model::AlertRecord]) -> serde_json::Value {
    let mut by_severity: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_rule: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut ack_sum, mut ack_count, mut resolve_sum, mut resolve_count) = (0u64, 0u64, 0u64, 0u64);
    let (mut escalated, mut reminders) = (0u64, 0u64);
    let mut suppressed = 0u64;
    let mut suppressed_by: BTreeMap<String, u64> = BTreeMap::new();
    for alert in alerts {
        suppressed += alert.suppressed;
        if let Some(act) = &alert.suppression {
            *suppressed_by.entry(act.by.to_string()).or_default() += 1;
        }
        if alert.escalation_step > 0 {
            escalated += 1;
        }
        reminders += alert.reminders;
        if alert.status.is_active() {
            *by_severity.entry(alert.severity.as_str()).or_default() += 1;
            *by_rule
                .entry(alert.rule_id.as_deref().unwrap_or("custom"))
                .or_default() += 1;
        }
        *by_status.entry(alert.status.as_str()).or_default() += 1;
        if let Some(act) = &alert.acknowledged {
            ack_sum += act.at.saturating_sub(alert.since);
            ack_count += 1;
        }
        if let Some(act) = &alert.resolved {
            resolve_sum += act.at.saturating_sub(alert.since);
            resolve_count += 1;
        }
    }
    serde_json::json!({
        "active_by_severity": by_severity,
        "active_by_rule": by_rule,
        "by_status": by_status,
        "mean_time_to_acknowledge_ms": ack_sum.checked_div(ack_count),
        "acknowledged": ack_count,
        "mean_time_to_resolve_ms": resolve_sum.checked_div(resolve_count),
        "resolved": resolve_count,
        "escalated": escalated,
        "reminders": reminders,
        "suppressed": suppressed,
        "latest_suppression_by": suppressed_by,
        "escalation_rate": if alerts.is_empty() { 0.0 } else { escalated as f64 / alerts.len() as f64 },
    })
}

/// The alerts muted by inhibition now: alert id → the id of the alert muting it.
fn muted_alerts(
    dispatch: &megamind_connectors::notify::route::DispatchMetrics,
) -> BTreeMap<String, String> {
    dispatch
        .muted
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Delivery counters per channel, the dispatcher's counters and recent dead letters.
pub fn notifications(state: &AppState) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let dispatch = state.dispatch.metrics();
    serde_json::json!({
        "channels": state.notifier.counts(),
        "dispatch": {
            "received": dispatch.received.load(Relaxed),
            "dropped": dispatch.dropped.load(Relaxed),
            "suppressed": dispatch.suppressed.load(Relaxed),
            "rate_limited": dispatch.rate_limited.load(Relaxed),
            "inhibited": dispatch.inhibited.load(Relaxed),
            "notifications": dispatch.notifications.load(Relaxed),
        },
        "muted": muted_alerts(dispatch),
        "dead_letters": state.notifier.dead_letters(),
        "alerts": alert_stats(&state.views.alerts(false)),
    })
}

async fn get_notifications(State(state): State<AppState>) -> Response {
    Json(notifications(&state)).into_response()
}

async fn get_status(State(state): State<AppState>) -> Response {
    Json(status(&state)).into_response()
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let uptime = state
        .ingest
        .clock()
        .now_ms()
        .saturating_sub(state.started_ms) as f64
        / 1000.0;
    state
        .metrics
        .render_prometheus(&mut out, state.ingest.feeder().queue_depth(), uptime);
    if let Some(kafka) = state.kafka_status() {
        crate::kafka::render_prometheus(&kafka, &mut out);
    }
    render_notify_metrics(&mut out, &state);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Requires `Authorization: Bearer <token>` (used in front of `/mcp` when a token is set).
pub async fn require_bearer(
    State(token): State<Arc<str>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if presented.is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}})),
    )
        .into_response()
}

/// Compares without stopping at the first difference, so timing reveals only the length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

fn render_notify_metrics(out: &mut String, state: &AppState) {
    use std::fmt::Write;
    let stats = alert_stats(&state.views.alerts(false));
    for (name, field, label) in [
        ("megamind_alerts_active", "active_by_severity", "severity"),
        ("megamind_alerts_active_by_rule", "active_by_rule", "rule"),
        ("megamind_alerts_held", "by_status", "status"),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} Alerts held by the views, by {label}.\n# TYPE {name} gauge"
        );
        if let Some(map) = stats[field].as_object() {
            for (value, count) in map {
                let _ = writeln!(out, "{name}{{{label}={value:?}}} {count}");
            }
        }
    }
    for (name, field, help, scale) in [
        (
            "megamind_alerts_mean_time_to_acknowledge_seconds",
            "mean_time_to_acknowledge_ms",
            "Mean time from firing to acknowledgement (event time).",
            1e-3,
        ),
        (
            "megamind_alerts_mean_time_to_resolve_seconds",
            "mean_time_to_resolve_ms",
            "Mean time from firing to resolution (event time).",
            1e-3,
        ),
        (
            "megamind_alerts_escalated",
            "escalated",
            "Alerts held that took at least one escalation step.",
            1.0,
        ),
        (
            "megamind_alerts_suppressed",
            "suppressed",
            "Alert changes held back by cooldowns and silences, over the alerts held.",
            1.0,
        ),
        (
            "megamind_alerts_reminders",
            "reminders",
            "Reminders sent for the alerts held.",
            1.0,
        ),
        (
            "megamind_alerts_escalation_rate",
            "escalation_rate",
            "Escalated alerts over alerts held.",
            1.0,
        ),
    ] {
        if let Some(value) = stats[field].as_f64() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                value * scale
            );
        }
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        let dispatch = state.dispatch.metrics();
        for (name, help, value) in [
            (
                "megamind_notify_rate_limited_total",
                "Due notifications held back by the global rate limit (sent later).",
                dispatch.rate_limited.load(Relaxed),
            ),
            (
                "megamind_notify_group_suppressed_total",
                "Alert changes not grouped because alerts.routing.max_groups was reached.",
                dispatch.suppressed.load(Relaxed),
            ),
            (
                "megamind_notify_inhibited_total",
                "Alert changes muted by an inhibition rule (not notified).",
                dispatch.inhibited.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }
    let counts = state.notifier.counts();
    for (name, help, get) in [
        (
            "megamind_notify_sent_total",
            "Notifications delivered per channel.",
            (|c: &megamind_connectors::notify::ChannelCounts| c.sent) as fn(&_) -> u64,
        ),
        (
            "megamind_notify_failed_attempts_total",
            "Delivery attempts that failed per channel.",
            |c| c.failed_attempts,
        ),
        (
            "megamind_notify_dead_lettered_total",
            "Notifications given up after the last try per channel.",
            |c| c.dead_lettered,
        ),
        (
            "megamind_notify_dropped_total",
            "Notifications dropped on a full channel queue.",
            |c| c.dropped,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for channel in &counts {
            let _ = writeln!(
                out,
                "{name}{{channel=\"{}\",type=\"{}\"}} {}",
                channel.channel,
                channel.kind,
                get(channel)
            );
        }
    }
}
