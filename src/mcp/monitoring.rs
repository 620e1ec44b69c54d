//! Tools that control and report the running services: `realtime_start_monitoring`,
//! `realtime_stop_monitoring`, `realtime_get_status`, `realtime_subscribe_session`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ToolError;
use super::{session_uri, McpContext};
use crate::http::Status;
use crate::services::{ServiceName, ServiceStatus};
use crate::views::SessionView;

/// Which services to switch.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicesParams {
    /// Services to switch: `ingest` (event intake over HTTP and MCP) and `demo` (synthetic
    /// traffic, only under `megamind demo`). Omit or leave empty for all.
    #[serde(default)]
    pub services: Vec<String>,
}

/// What a start or stop did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServicesResult {
    /// Services whose state changed.
    pub changed: Vec<String>,
    /// Every service after the change.
    pub services: Vec<ServiceStatusOut>,
}

/// One service's state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServiceStatusOut {
    /// `ingest` or `demo`.
    pub name: String,
    /// `running`, `stopped` or `unavailable`.
    pub state: String,
    /// Seconds since last started, when running.
    pub uptime_seconds: Option<f64>,
}

impl From<ServiceStatus> for ServiceStatusOut {
    fn from(status: ServiceStatus) -> Self {
        Self {
            name: status.name.as_str().to_owned(),
            state: status.state.to_owned(),
            uptime_seconds: status.uptime_seconds,
        }
    }
}

fn parse_services(params: &ServicesParams) -> Result<Vec<ServiceName>, ToolError> {
    params
        .services
        .iter()
        .enumerate()
        .map(|(position, name)| {
            ServiceName::parse(name).ok_or_else(|| {
                ToolError::invalid(
                    &format!("services[{position}]"),
                    format!("unknown service {name:?} (expected ingest or demo)"),
                )
            })
        })
        .collect()
}

fn statuses(context: &McpContext) -> Vec<ServiceStatusOut> {
    context
        .app
        .services
        .statuses()
        .into_iter()
        .map(Into::into)
        .collect()
}

/// `realtime_start_monitoring`.
///
/// # Errors
/// An unknown service name.
pub fn start(context: &McpContext, params: &ServicesParams) -> Result<ServicesResult, ToolError> {
    switch(context, params, true)
}

/// `realtime_stop_monitoring`.
///
/// # Errors
/// An unknown service name.
pub fn stop(context: &McpContext, params: &ServicesParams) -> Result<ServicesResult, ToolError> {
    switch(context, params, false)
}

fn switch(
    context: &McpContext,
    params: &ServicesParams,
    running: bool,
) -> Result<ServicesResult, ToolError> {
    let names = parse_services(params)?;
    let changed = if running {
        context.app.services.start(&names)
    } else {
        context.app.services.stop(&names)
    };
    Ok(ServicesResult {
        changed: changed
            .iter()
            .map(|name| name.as_str().to_owned())
            .collect(),
        services: statuses(context),
    })
}

/// `realtime_get_status`: the engine status (as `/v1/status`) plus the window shape.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusResult {
    /// Engine status.
    #[schemars(with = "serde_json::Value")]
    pub status: Status,
    /// Window length, seconds.
    pub window_length_seconds: f64,
    /// Window slide, seconds.
    pub window_slide_seconds: f64,
}

/// `realtime_get_status`.
pub fn status(context: &McpContext) -> StatusResult {
    StatusResult {
        status: crate::http::status(&context.app),
        window_length_seconds: context.facts.window_length.as_secs_f64(),
        window_slide_seconds: context.facts.window_slide.as_secs_f64(),
    }
}

/// Parameters of `realtime_subscribe_session`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    /// The session to follow.
    pub session_id: String,
}

/// How to follow a session live.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SubscribeResult {
    /// The session.
    pub session_id: String,
    /// MCP resource to subscribe to (`resources/subscribe`, or `subscriptions/listen`):
    /// an update notification follows every change of the session.
    pub resource_uri: String,
    /// Whether the session has been seen yet (a subscription also works before).
    pub known: bool,
    /// Current state and history, when known.
    #[schemars(with = "Option<serde_json::Value>")]
    pub session: Option<SessionView>,
    /// WebSocket stream for the session; absent until the WebSocket servers run.
    pub websocket_url: Option<String>,
}

/// `realtime_subscribe_session`.
///
/// # Errors
/// An empty or oversize session id.
pub fn subscribe(
    context: &McpContext,
    params: &SubscribeParams,
) -> Result<SubscribeResult, ToolError> {
    if params.session_id.is_empty() {
        return Err(ToolError::invalid("session_id", "must not be empty"));
    }
    if params.session_id.len() > 256 {
        return Err(ToolError::invalid("session_id", "is longer than 256 bytes"));
    }
    let session = context.app.views.session(&params.session_id);
    Ok(SubscribeResult {
        session_id: params.session_id.clone(),
        resource_uri: session_uri(&params.session_id),
        known: session.is_some(),
        session,
        websocket_url: None,
    })
}
