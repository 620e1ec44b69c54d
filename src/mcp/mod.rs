//! The MCP server: megamind's 16 tools and its session resources, over stdio
//! (`megamind mcp`) and Streamable HTTP (`/mcp` on the HTTP port), for both protocol
//! generations in use (2025-11-25 with its initialize handshake and sessions; 2026-07-28,
//! stateless, with `server/discover` and `subscriptions/listen`).
//!
//! Tool logic lives in one module per family ([`monitoring`], [`events`], [`ml`],
//! [`alerts`], [`dashboard`]); this module only adapts it to the SDK (`rmcp`). Tool
//! failures become results with `isError: true` ([`error`]); malformed requests and unknown
//! tools are JSON-RPC errors.

pub mod alerts;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod ml;
pub mod monitoring;
pub mod stdio;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use megamind_dataflows::model::Update;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ResourceUpdatedNotificationParam, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{
    tool, tool_handler, tool_router, ErrorData as McpError, Json, Peer, RoleServer, ServerHandler,
};
use tokio::sync::{broadcast, Mutex};
use tokio_util::sync::CancellationToken;

use crate::http::AppState;
use error::Args;

/// Prefix of the session resources.
pub const SESSION_URI_PREFIX: &str = "megamind://sessions/";

/// The resource URI of a session.
pub fn session_uri(session_id: &str) -> String {
    format!("{SESSION_URI_PREFIX}{session_id}")
}

fn session_of(uri: &str) -> Option<&str> {
    uri.strip_prefix(SESSION_URI_PREFIX)
        .filter(|id| !id.is_empty())
}

/// Facts about the running configuration that tools report.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Window length.
    pub window_length: Duration,
    /// Window slide.
    pub window_slide: Duration,
    /// Most events per batch.
    pub max_batch_events: usize,
}

/// What every MCP connection shares.
pub struct McpContext {
    /// The application (ingest, views, services, metrics).
    pub app: AppState,
    /// Configuration facts.
    pub facts: Facts,
    /// 2025-11-25 `resources/subscribe` subscribers: URI → connection → peer.
    subscribers: Mutex<HashMap<String, HashMap<u64, Peer<RoleServer>>>>,
    connections: AtomicU64,
    /// Cancelled at shutdown (ends long-lived `listen` streams).
    pub shutdown: CancellationToken,
}

impl McpContext {
    /// A context over a running application.
    pub fn new(app: AppState, facts: Facts, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            app,
            facts,
            subscribers: Mutex::new(HashMap::new()),
            connections: AtomicU64::new(1),
            shutdown,
        })
    }
}

/// The session ids that a batch of updates touched.
fn touched_sessions(updates: &[Update]) -> BTreeSet<String> {
    updates
        .iter()
        .filter_map(|update| match update {
            Update::Session(state) => Some(state.session_id.to_string()),
            Update::SessionSample(sample) => Some(sample.session_id.to_string()),
            _ => None,
        })
        .collect()
}

/// Sends `notifications/resources/updated` to 2025-11-25 subscribers whenever a
/// subscribed session changes. Runs until `shutdown`.
pub async fn run_subscription_fan_out(context: Arc<McpContext>) {
    let mut updates = context.app.views.subscribe();
    loop {
        let batch = tokio::select! {
            () = context.shutdown.cancelled() => return,
            received = updates.recv() => match received {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let touched = touched_sessions(&batch);
        if touched.is_empty() {
            continue;
        }
        let targets: Vec<(String, u64, Peer<RoleServer>)> = {
            let subscribers = context.subscribers.lock().await;
            touched
                .iter()
                .map(|id| session_uri(id))
                .filter_map(|uri| subscribers.get(&uri).map(|peers| (uri, peers.clone())))
                .flat_map(|(uri, peers)| {
                    peers
                        .into_iter()
                        .map(move |(connection, peer)| (uri.clone(), connection, peer))
                })
                .collect()
        };
        for (uri, connection, peer) in targets {
            if peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri.clone()))
                .await
                .is_err()
            {
                if let Some(peers) = context.subscribers.lock().await.get_mut(&uri) {
                    peers.remove(&connection);
                }
            }
        }
    }
}

/// One MCP connection (one per stdio process, per HTTP session, or per stateless request).
#[derive(Clone)]
pub struct McpServer {
    context: Arc<McpContext>,
    connection: u64,
    tool_router: ToolRouter<McpServer>,
}

fn json<T>(result: Result<T, error::ToolError>) -> Result<Json<T>, String> {
    result.map(Json).map_err(String::from)
}

#[tool_router]
impl McpServer {
    /// A connection over `context`.
    pub fn new(context: Arc<McpContext>) -> Self {
        let connection = context.connections.fetch_add(1, Ordering::Relaxed);
        Self {
            context,
            connection,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Start real-time monitoring services: `ingest` (accept events over HTTP and MCP) and \
                          `demo` (synthetic traffic under `megamind demo`). No list starts all. Returns what changed \
                          and every service's state."
    )]
    async fn realtime_start_monitoring(
        &self,
        Parameters(Args(params)): Parameters<Args<monitoring::ServicesParams>>,
    ) -> Result<Json<monitoring::ServicesResult>, String> {
        json(monitoring::start(&self.context, &params))
    }

    #[tool(
        description = "Stop real-time monitoring services (see realtime_start_monitoring). Stopped intake refuses \
                          events; windows, sessions and alerts stay queryable."
    )]
    async fn realtime_stop_monitoring(
        &self,
        Parameters(Args(params)): Parameters<Args<monitoring::ServicesParams>>,
    ) -> Result<Json<monitoring::ServicesResult>, String> {
        json(monitoring::stop(&self.context, &params))
    }

    #[tool(
        description = "Status of the real-time engine: each service's state and uptime, events/s, events accepted, \
                       rejects by reason, late events, queue depth, watermark, series, sessions, firing alerts, memory.",
        annotations(read_only_hint = true)
    )]
    async fn realtime_get_status(&self) -> Result<Json<monitoring::StatusResult>, String> {
        Ok(Json(monitoring::status(&self.context)))
    }

    #[tool(
        description = "How to follow one session live: its MCP resource URI (subscribe for update notifications) \
                       and its current state and performance history.",
        annotations(read_only_hint = true)
    )]
    async fn realtime_subscribe_session(
        &self,
        Parameters(Args(params)): Parameters<Args<monitoring::SubscribeParams>>,
    ) -> Result<Json<monitoring::SubscribeResult>, String> {
        json(monitoring::subscribe(&self.context, &params))
    }

    #[tool(
        description = "Add one event (`event`) or a batch (`events`) to real-time analytics. Each event is a JSON \
                          object with `type` session|metric|prediction|outcome|alert_command|model|model_baseline|retrain \
                          and that type's fields (`model_baseline` pins a model version's current drift window as \
                          its reference); \
                          `ts` (ms) defaults to now. Accepted events are written ahead (durable) before the answer; \
                          each rejected event is reported with its field and reason."
    )]
    async fn realtime_add_event(
        &self,
        // Not `Args`: both fields are free-form JSON, validated per event by the decoder
        // (which names fields itself), and the extra copy would cost the hot path.
        Parameters(params): Parameters<events::AddEventParams>,
    ) -> Result<Json<events::AddEventResult>, String> {
        json(events::add(&self.context, params).await)
    }

    #[tool(
        description = "Latest closed sliding window of each series (count, sum, mean, min, max, rate/s, p50, p95, \
                       p99), filtered by metric name or prefix, session and labels.",
        annotations(read_only_hint = true)
    )]
    async fn realtime_get_metrics(
        &self,
        Parameters(Args(params)): Parameters<Args<events::GetMetricsParams>>,
    ) -> Result<Json<events::GetMetricsResult>, String> {
        json(events::get_metrics(&self.context, params))
    }

    #[tool(
        description = "Analytics summary: sessions by status, top sessions by error rate, slowest operations (p95), \
                       breach counts per rule, active alerts per severity, and the series whose mean moved most.",
        annotations(read_only_hint = true)
    )]
    async fn realtime_get_analytics(
        &self,
        Parameters(Args(params)): Parameters<Args<events::AnalyticsParams>>,
    ) -> Result<Json<events::AnalyticsResult>, String> {
        json(events::analytics(&self.context, &params))
    }

    #[tool(
        description = "ML performance status of every model version: health, accuracy with its 95% interval, \
                       drift flags, pending labels, retraining triggers, current-window rate, latency and \
                       confidence; the model registry (register with a `type: \"model\"` event); and recent \
                       \"pin now\" outcomes (pin with a `type: \"model_baseline\"` event).",
        annotations(read_only_hint = true)
    )]
    async fn ml_performance_status(&self) -> Result<Json<ml::PerformanceStatus>, String> {
        Ok(Json(ml::status(&self.context)))
    }

    #[tool(
        description = "Record one ML prediction (`prediction`) or a batch (`predictions`): model, version, \
                          prediction id, predicted label, confidence (0..1), latency (ms), optional features."
    )]
    async fn ml_record_prediction(
        &self,
        Parameters(Args(params)): Parameters<Args<ml::RecordPredictionParams>>,
    ) -> Result<Json<events::AddEventResult>, String> {
        json(ml::record_predictions(&self.context, params).await)
    }

    #[tool(
        description = "Record the true label of an earlier prediction (`outcome`) or a batch (`outcomes`); \
                          outcomes may arrive long after their predictions."
    )]
    async fn ml_record_outcome(
        &self,
        Parameters(Args(params)): Parameters<Args<ml::RecordOutcomeParams>>,
    ) -> Result<Json<events::AddEventResult>, String> {
        json(ml::record_outcomes(&self.context, params).await)
    }

    #[tool(
        description = "Performance metrics of one model (optionally one version): everything tracked from the \
                       prediction-outcome join (confusion, per-class/macro/weighted precision, recall, F1, \
                       calibration, drift tests and their reference), window statistics, its registry entries, \
                       and with `compare_with` a side-by-side comparison of two versions.",
        annotations(read_only_hint = true)
    )]
    async fn ml_get_performance_metrics(
        &self,
        Parameters(Args(params)): Parameters<Args<ml::ModelParams>>,
    ) -> Result<Json<ml::ModelMetrics>, String> {
        json(ml::metrics(&self.context, &params))
    }

    #[tool(
        description = "Active alerts (firing, then acknowledged), most severe and most recent first; filters: \
                       min_severity, severity (list), state (firing|acknowledged), labels (all must match), session.",
        annotations(read_only_hint = true)
    )]
    async fn alerts_get_active(
        &self,
        Parameters(Args(params)): Parameters<Args<alerts::ActiveParams>>,
    ) -> Result<Json<alerts::ActiveResult>, String> {
        json(alerts::active(&self.context, &params))
    }

    #[tool(
        description = "Acknowledge an active alert (records who and why). Returns the alert once the pipeline \
                          has applied the acknowledgement."
    )]
    async fn alerts_acknowledge(
        &self,
        Parameters(Args(params)): Parameters<Args<alerts::ActParams>>,
    ) -> Result<Json<alerts::ActResult>, String> {
        json(alerts::acknowledge(&self.context, &params).await)
    }

    #[tool(
        description = "Resolve an active alert by hand (records who and why). Returns the alert once resolved."
    )]
    async fn alerts_resolve(
        &self,
        Parameters(Args(params)): Parameters<Args<alerts::ActParams>>,
    ) -> Result<Json<alerts::ActResult>, String> {
        json(alerts::resolve(&self.context, &params).await)
    }

    #[tool(
        description = "Raise a custom alert with a title, severity (low|medium|high|critical), message and \
                          labels. Returns the alert, firing."
    )]
    async fn alerts_create_custom(
        &self,
        Parameters(Args(params)): Parameters<Args<alerts::CreateParams>>,
    ) -> Result<Json<alerts::ActResult>, String> {
        json(alerts::create(&self.context, &params).await)
    }

    #[tool(
        description = "One snapshot of everything a real-time dashboard shows: status, latest windows of every \
                       series, recent sessions, active alerts, recent breaches, models.",
        annotations(read_only_hint = true)
    )]
    async fn dashboard_realtime(&self) -> Result<Json<dashboard::Dashboard>, String> {
        Ok(Json(dashboard::snapshot(&self.context)))
    }
}

const INSTRUCTIONS: &str = "megamind is a real-time analytics server for work sessions and ML models. Add events \
with realtime_add_event (or ml_record_prediction / ml_record_outcome); read windows with realtime_get_metrics, \
summaries with realtime_get_analytics and dashboard_realtime; manage alerts with alerts_*. Each session is a \
resource megamind://sessions/{id}: subscribe to it for update notifications.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("megamind", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resources = self
            .context
            .app
            .views
            .sessions(None, 100)
            .into_iter()
            .map(|session| {
                Resource::new(
                    session_uri(&session.session_id),
                    format!("session {}", session.session_id),
                )
                .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("megamind://sessions/{id}", "session")
                .with_description("A live work session: state and performance history, as JSON")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri;
        let Some(id) = session_of(&uri) else {
            return Err(McpError::resource_not_found(
                format!("no resource {uri}"),
                None,
            ));
        };
        let Some(view) = self.context.app.views.session(id) else {
            return Err(McpError::resource_not_found(
                format!("no session {id:?} yet"),
                None,
            ));
        };
        let text = serde_json::to_string(&view)
            .map_err(|error| McpError::internal_error(error.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri.clone()).with_mime_type("application/json")
        ])
        .into())
    }

    #[allow(deprecated)] // resources/subscribe is the 2025-11-25 generation's mechanism
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if session_of(&request.uri).is_none() {
            return Err(McpError::invalid_params(
                format!(
                    "cannot subscribe to {}: expected megamind://sessions/{{id}}",
                    request.uri
                ),
                None,
            ));
        }
        self.context
            .subscribers
            .lock()
            .await
            .entry(request.uri)
            .or_default()
            .insert(self.connection, context.peer.clone());
        Ok(())
    }

    #[allow(deprecated)] // see `subscribe`
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(peers) = self.context.subscribers.lock().await.get_mut(&request.uri) {
            peers.remove(&self.connection);
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = requested.supported_by(&self.get_info().capabilities);
        if let Some(uris) = accepted.resource_subscriptions.as_mut() {
            uris.retain(|uri| session_of(uri).is_some());
        }
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let wanted: BTreeSet<String> = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut updates = self.context.app.views.subscribe();
        // The acknowledgement went out before this method ran: announce every subscribed
        // resource once, so a change in between is never missed (updates are level
        // triggers: the client re-reads the resource).
        for uri in &wanted {
            if context
                .sink()
                .notify_resource_updated(uri.clone())
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = self.context.shutdown.cancelled() => return Ok(()),
                received = updates.recv() => match received {
                    Ok(batch) => {
                        for id in touched_sessions(&batch) {
                            let uri = session_uri(&id);
                            if wanted.contains(&uri) && context.sink().notify_resource_updated(uri).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
}

/// The Streamable HTTP service for `/mcp` (stateful sessions for 2025-11-25 clients; the
/// 2026-07-28 generation is served statelessly on the same endpoint). Host and Origin
/// headers are checked against `allowed_hosts` (loopback plus configured names).
pub fn http_service(
    context: Arc<McpContext>,
    allowed_hosts: &[String],
) -> StreamableHttpService<McpServer, LocalSessionManager> {
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.extend(allowed_hosts.iter().cloned());
    let origins: Vec<String> = hosts
        .iter()
        .flat_map(|host| [format!("http://{host}:*"), format!("https://{host}:*")])
        .collect();
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(context.shutdown.child_token())
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins);
    StreamableHttpService::new(
        move || Ok(McpServer::new(Arc::clone(&context))),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
