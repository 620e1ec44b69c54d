//! Live fan-out: pipeline updates published on WebSocket topics, the application's answers
//! to snapshots and client actions, and the two WebSocket servers.
//!
//! | topic | carries |
//! |---|---|
//! | `metrics/{name}` | closed windows (and idle marks) of series without a session |
//! | `sessions/{id}` | the session's state, history points and per-session windows |
//! | `models/{id}` | the model's latency/confidence windows, tracked metrics (`model_metrics`: accuracy, PRF, calibration, drift) and retraining triggers |
//! | `alerts` | alert lifecycle records (with the dispatcher's `inhibited_by` and `suppressed_by.rate_limit`, republished when those change) and refused alert commands |
//! | `alerts/stats` | alert statistics and notification counters (as in `/v1/status`), once a second |
//! | `breaches` | breaching windows |
//! | `sessions/{id}` | also the session's success prediction and completion estimate (`session_prediction`) |
//! | `metrics/{name}` | also the series' trend and forecast (`forecast`) |
//! | `insights` | risks and recommendations (raised/updated/cleared), success-model versions |
//! | `health` | engine status, once a second |

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use megamind_connectors::websocket::server::{serve, CallFuture};
use megamind_connectors::websocket::{Backend, Hub, HubConfig, Role, RpcError, WsServerConfig};
use megamind_dataflows::model::{SeriesKey, Update};
use megamind_dataflows::time::Clock;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::config::WebSocketConfig;
use crate::mcp::McpContext;
use crate::views::SeriesFilter;

/// The topic a series' updates go to.
pub fn series_topic(key: &SeriesKey) -> String {
    if let Some(session) = &key.session_id {
        return format!("sessions/{session}");
    }
    if key.name.starts_with("prediction.") {
        if let Some((_, model)) = key.labels.iter().find(|(name, _)| name == "model_id") {
            return format!("models/{model}");
        }
    }
    format!("metrics/{}", key.name)
}

/// The topic of one update, if it is published.
pub fn topic_of(update: &Update) -> Option<String> {
    match update {
        Update::Window(stats) => Some(series_topic(&stats.key)),
        Update::SeriesIdle { key, .. } => Some(series_topic(key)),
        Update::Session(state) => Some(format!("sessions/{}", state.session_id)),
        Update::SessionSample(sample) => Some(format!("sessions/{}", sample.session_id)),
        Update::Breach(_) => Some("breaches".to_owned()),
        Update::AlertRecord(_)
        | Update::CommandRejected(_)
        | Update::Silence(_)
        | Update::RuleChange(_) => Some("alerts".to_owned()),
        Update::ModelMetrics(snapshot) => Some(format!("models/{}", snapshot.model_id)),
        Update::RetrainingTrigger(trigger) => Some(format!("models/{}", trigger.model_id)),
        Update::ModelRegistered(registration) => Some(format!("models/{}", registration.model_id)),
        Update::BaselinePin(pin) => Some(format!("models/{}", pin.model_id)),
        Update::SessionPrediction(prediction) => {
            Some(format!("sessions/{}", prediction.session_id))
        }
        Update::Forecast(forecast) => Some(series_topic(&forecast.key)),
        Update::Insight(_) | Update::SuccessModel(_) => Some("insights".to_owned()),
        Update::Anomaly(_) | Update::NovelError(_) | Update::ErrorFamilies(_) => {
            Some("anomalies".to_owned())
        }
        Update::Alert(_)
        | Update::Rejected { .. }
        | Update::UnattributedOrphans { .. }
        | Update::AnomalyCounters(_) => None,
    }
}

/// Model snapshots are coalesced: at most one per model version per this interval (the
/// latest), so a busy model does not flood `models/{id}` subscribers. Views (MCP, HTTP)
/// see every snapshot at once.
const MODEL_PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// Publishes every pipeline update on its topic until `shutdown`.
pub async fn run_publisher(
    context: Arc<McpContext>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut updates = context.app.views.subscribe();
    let clock = Arc::clone(context.app.ingest.clock());
    let mut models: BTreeMap<(String, String), (u64, u64, String, String)> = BTreeMap::new();
    let mut tick = tokio::time::interval(MODEL_PUBLISH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dispatch_seen = DispatchSeen::default();
    loop {
        let batch = tokio::select! {
            received = updates.recv() => received,
            _ = tick.tick() => {
                dispatch_seen.republish(&context, &hub, clock.now_ms());
                if !models.is_empty() {
                    let now = clock.now_ms();
                    let pending = std::mem::take(&mut models);
                    hub.publish_batch(
                        pending
                            .values()
                            .map(|(_, _, topic, data)| (topic.as_str(), data.as_str())),
                        now,
                    );
                }
                continue;
            }
            _ = shutdown.changed() => return,
        };
        match batch {
            Ok(batch) => {
                let now = clock.now_ms();
                let items: Vec<(String, String)> = batch
                    .iter()
                    .filter_map(|update| {
                        let topic = topic_of(update)?;
                        let data = match update {
                            Update::AlertRecord(record) => {
                                let record =
                                    context.app.dispatch.metrics().annotated((**record).clone());
                                serde_json::to_string(&Update::AlertRecord(Box::new(record)))
                                    .ok()?
                            }
                            _ => serde_json::to_string(update).ok()?,
                        };
                        if let Update::ModelMetrics(snapshot) = update {
                            let key = (
                                snapshot.model_id.to_string(),
                                snapshot.model_version.to_string(),
                            );
                            let order = (snapshot.events, snapshot.ordered);
                            let newer = models
                                .get(&key)
                                .is_none_or(|(events, ordered, _, _)| order >= (*events, *ordered));
                            if newer {
                                models.insert(key, (order.0, order.1, topic, data));
                            }
                            return None;
                        }
                        Some((topic, data))
                    })
                    .collect();
                // One batch per client: a burst of closing windows is one queue entry.
                hub.publish_batch(
                    items
                        .iter()
                        .map(|(topic, data)| (topic.as_str(), data.as_str())),
                    now,
                );
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Sequences stay contiguous per topic, so clients cannot see this gap; the
                // next snapshot repairs their state. Make it visible to operators.
                tracing::warn!(
                    missed_batches = missed,
                    "live publisher fell behind the pipeline"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What the dispatcher said about alerts when last published: inhibitions and rate-limit
/// counts change on delivery, without an alert change from the dataflow, so the alerts
/// they concern are published again (from the views, annotated) when they change.
#[derive(Default)]
struct DispatchSeen {
    generation: u64,
    muted: BTreeMap<String, String>,
    limited: BTreeMap<String, u64>,
}

impl DispatchSeen {
    fn republish(&mut self, context: &McpContext, hub: &Hub, now: u64) {
        let metrics = context.app.dispatch.metrics();
        let generation = metrics
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let muted = metrics
            .muted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let limited = metrics
            .rate_limited_alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut changed: Vec<&String> = muted
            .iter()
            .filter(|(id, by)| self.muted.get(*id) != Some(*by))
            .map(|(id, _)| id)
            .chain(self.muted.keys().filter(|id| !muted.contains_key(*id)))
            .chain(
                limited
                    .iter()
                    .filter(|(id, count)| self.limited.get(*id) != Some(*count))
                    .map(|(id, _)| id),
            )
            .collect();
        changed.sort();
        changed.dedup();
        let mut alerts: Vec<megamind_dataflows::model::AlertRecord> = changed
            .iter()
            .filter_map(|id| context.app.views.alert(id))
            .collect();
        metrics.annotate(&mut alerts);
        let items: Vec<String> = alerts
            .into_iter()
            .filter_map(|alert| serde_json::to_string(&Update::AlertRecord(Box::new(alert))).ok())
            .collect();
        hub.publish_batch(items.iter().map(|data| ("alerts", data.as_str())), now);
        self.muted = muted;
        self.limited = limited;
    }
}

/// Publishes the engine status on `health`, and its alert statistics on `alerts/stats`,
/// every second until `shutdown`.
pub async fn run_health(
    context: Arc<McpContext>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let data = health(&context, &hub);
        let now = context.app.ingest.clock().now_ms();
        hub.publish("health", &data.to_string(), now);
        hub.publish("alerts/stats", &data["status"]["alerts"].to_string(), now);
    }
}

fn health(context: &McpContext, hub: &Hub) -> Value {
    json!({
        "status": crate::http::status(&context.app),
        "websocket": hub.stats(),
    })
}

/// The application's side of the WebSocket protocol.
pub struct LiveBackend {
    context: Arc<McpContext>,
    hub: Arc<Hub>,
}

impl Backend for LiveBackend {
    fn snapshot(&self, topic: &str) -> Option<Value> {
        let views = &self.context.app.views;
        let (head, tail) = topic.split_once('/').unwrap_or((topic, ""));
        match (head, tail) {
            ("metrics", "") => {
                let mut series = views.series(&SeriesFilter::default());
                series.retain(|stats| stats.key.session_id.is_none());
                Some(json!(series))
            }
            ("metrics", name) => Some(json!(views
                .series(&SeriesFilter {
                    name: Some(name.to_owned()),
                    ..SeriesFilter::default()
                })
                .into_iter()
                .filter(|stats| stats.key.session_id.is_none())
                .collect::<Vec<_>>())),
            ("sessions", "") => Some(json!(views.sessions(None, 500))),
            ("sessions", id) => Some(json!({
                "session": views.session(id),
                "prediction": views.insights.session_prediction(id),
                "series": views.series(&SeriesFilter {
                    session_id: Some(id.to_owned()),
                    ..SeriesFilter::default()
                }),
            })),
            ("models", "") => Some(json!(crate::mcp::ml::status(&self.context))),
            ("models", id) => {
                let status = crate::mcp::ml::status(&self.context);
                Some(json!(status
                    .models
                    .into_iter()
                    .filter(|model| model.model_id == id)
                    .collect::<Vec<_>>()))
            }
            ("alerts", "") => {
                let mut alerts = views.alerts(false);
                self.context.app.dispatch.metrics().annotate(&mut alerts);
                Some(json!(alerts))
            }
            ("alerts", "stats") => Some(crate::http::status(&self.context.app).alerts),
            ("breaches", "") => Some(json!(views.breaches(1000))),
            ("insights", "") => Some(json!(views.insights.snapshot(100))),
            ("anomalies", "") => Some(json!({
                "anomalies": views.anomalies(100),
                "novel_errors": views.novel_errors(100),
                "families": views.error_families(),
            })),
            ("health", "") => Some(health(&self.context, &self.hub)),
            _ => None,
        }
    }

    fn call<'a>(&'a self, method: &'a str, params: Value) -> CallFuture<'a> {
        Box::pin(async move {
            match method {
                "events.add" => {
                    let Some(Value::Array(events)) = params.get("events").cloned() else {
                        return Err(RpcError::invalid(
                            "events",
                            "must be a list of event objects",
                        ));
                    };
                    let result = crate::mcp::events::ingest_objects(&self.context, events)
                        .await
                        .map_err(tool_error)?;
                    serde_json::to_value(result)
                        .map_err(|error| RpcError::failed(error.to_string()))
                }
                "alerts.acknowledge" | "alerts.resolve" => {
                    let mut params: crate::mcp::alerts::ActParams = serde_json::from_value(params)
                        .map_err(|error| RpcError::invalid("params", error))?;
                    if params.actor.is_none() {
                        params.actor = Some("websocket".to_owned());
                    }
                    let result = if method == "alerts.acknowledge" {
                        crate::mcp::alerts::acknowledge(&self.context, &params).await
                    } else {
                        crate::mcp::alerts::resolve(&self.context, &params).await
                    };
                    let result = result.map_err(tool_error)?;
                    serde_json::to_value(result)
                        .map_err(|error| RpcError::failed(error.to_string()))
                }
                "alerts.silence" | "alerts.expire_silence" => {
                    let command = if method == "alerts.silence" {
                        serde_json::from_value::<crate::silences::SilenceRequest>(params)
                            .map(|request| request.command("websocket"))
                    } else {
                        serde_json::from_value::<crate::silences::ExpireRequest>(params)
                            .map(|request| request.command("websocket"))
                    }
                    .map_err(|error| RpcError::invalid("params", error))?;
                    let result = crate::mcp::events::ingest_objects(&self.context, vec![command])
                        .await
                        .map_err(tool_error)?;
                    serde_json::to_value(result)
                        .map_err(|error| RpcError::failed(error.to_string()))
                }
                "alerts.reload" => {
                    let state = &self.context.app;
                    let report =
                        crate::rule_reload::reload(state, state.config_path.as_deref()).await;
                    match report {
                        Ok(report) => serde_json::to_value(report)
                            .map_err(|error| RpcError::failed(error.to_string())),
                        Err(error) => Err(RpcError::failed(error.to_string())),
                    }
                }
                other => Err(RpcError {
                    code: -32601,
                    message: format!("unknown method {other:?}"),
                }),
            }
        })
    }
}

/// A tool failure as a JSON-RPC error: bad arguments are `-32602`, the rest `-32000`.
fn tool_error(error: crate::mcp::error::ToolError) -> RpcError {
    if error.0.starts_with("invalid `") {
        RpcError {
            code: -32602,
            message: error.0,
        }
    } else {
        RpcError::failed(error.0)
    }
}

/// The running WebSocket servers.
#[derive(Debug, Clone)]
pub struct LiveServers {
    /// The hub they share.
    pub hub: Arc<Hub>,
    /// Bound address of the analytics stream.
    pub analytics: std::net::SocketAddr,
    /// Bound address of the session monitor.
    pub sessions: std::net::SocketAddr,
}

/// Errors starting the WebSocket servers.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}")]
pub struct LiveError {
    /// The address.
    pub address: std::net::SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds both servers and spawns them, the publisher and the health ticker.
///
/// # Errors
/// An address cannot be bound.
pub async fn start(
    config: &WebSocketConfig,
    context: Arc<McpContext>,
    shutdown: &watch::Receiver<bool>,
    port_offset: u16,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<LiveServers, LiveError> {
    let hub = Arc::new(Hub::new(HubConfig {
        ring_capacity: config.ring_capacity,
        client_queue: config.client_queue,
        ..HubConfig::default()
    }));
    let mut tokens = HashMap::new();
    for (token, role) in [
        (&config.dashboard_token, Role::Dashboard),
        (&config.developer_token, Role::Developer),
        (&config.admin_token, Role::Admin),
    ] {
        if let Some(token) = token.as_ref().filter(|token| !token.expose().is_empty()) {
            tokens.insert(token.expose().to_owned(), role);
        }
    }
    let open_role = tokens.is_empty().then_some(Role::Admin);
    let base = |name: &str, prefixes: Vec<String>| WsServerConfig {
        name: name.to_owned(),
        topic_prefixes: prefixes,
        tokens: tokens.clone(),
        open_role,
        max_message_bytes: config.max_message_bytes,
        requests_per_second: config.requests_per_second,
        burst: config.burst,
        ping_interval: config.ping_interval,
        idle_timeout: config.idle_timeout,
        auth_timeout: Duration::from_secs(10),
        max_strikes: 10,
        clock: Arc::clone(context.app.ingest.clock()) as Arc<dyn Clock>,
    };
    let backend: Arc<dyn Backend> = Arc::new(LiveBackend {
        context: Arc::clone(&context),
        hub: Arc::clone(&hub),
    });
    let mut bound = Vec::new();
    for (mut address, server) in [
        (config.analytics_listen, base("analytics", Vec::new())),
        (
            config.sessions_listen,
            base("sessions", vec!["sessions".to_owned()]),
        ),
    ] {
        if address.port() != 0 {
            address.set_port(address.port().saturating_add(port_offset));
        }
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| LiveError { address, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| LiveError { address, source })?;
        bound.push(local);
        tasks.push(tokio::spawn(serve(
            listener,
            Arc::clone(&hub),
            Arc::clone(&backend),
            Arc::new(server),
            shutdown.clone(),
        )));
    }
    if tokens.is_empty() {
        tracing::info!("websocket servers are open to every client as admin (no tokens configured; loopback only)");
    }
    tasks.push(tokio::spawn(run_publisher(
        Arc::clone(&context),
        Arc::clone(&hub),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(run_health(
        context,
        Arc::clone(&hub),
        shutdown.clone(),
    )));
    Ok(LiveServers {
        hub,
        analytics: bound[0],
        sessions: bound[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_series() {
        let mut key = SeriesKey::named("latency_ms");
        assert_eq!(series_topic(&key), "metrics/latency_ms");
        key.session_id = Some("s1".into());
        assert_eq!(series_topic(&key), "sessions/s1");
        let model = SeriesKey {
            name: "prediction.latency_ms".into(),
            session_id: None,
            labels: vec![("model_id".into(), "m1".into())],
        };
        assert_eq!(series_topic(&model), "models/m1");
    }
}
