//! The WebSocket server: connection handling, roles, rate limits, heartbeats, and the
//! JSON-RPC 2.0 methods of megamind's live protocol.
//!
//! | method | role | params | result |
//! |---|---|---|---|
//! | `auth` | any | `{token}` | `{role}` |
//! | `subscribe` | dashboard | `{topics: [..]}` (exact, `prefix/*`, `*`) | `{subscribed, seq: {topic: n}}` |
//! | `unsubscribe` | dashboard | `{topics: [..]}` | `{unsubscribed}` |
//! | `snapshot` | dashboard | `{topic}` | `{topic, seq, data}` |
//! | `history` | dashboard | `{topic, since_ms?, limit?}` | `{topic, updates: [..]}` |
//! | `resume` | dashboard | `{topic, since}` | `{topic, replayed, seq}` then the missed updates, or error `gap` |
//! | `ping` | any | — | `"pong"` |
//! | `events.add` | developer | `{events: [..]}` | as the HTTP ingest |
//! | `alerts.acknowledge`, `alerts.resolve` | admin | `{alert_id, note?}` | the alert |
//! | `alerts.silence` | admin | `{id, matchers, duration, note?}` | as the HTTP ingest |
//! | `alerts.expire_silence` | admin | `{id, note?}` | as the HTTP ingest |
//! | `alerts.reload` | admin | — | as `POST /v1/reload`: rules and silences changed |
//!
//! Server → client: `{"jsonrpc":"2.0","method":"update","params":{"topic","seq","data"}}`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use megamind_dataflows::time::Clock;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use super::hub::{ClientId, Hub, Kick, Outbound, CLOSE_LAGGED};

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read: subscribe, snapshot, history.
    Dashboard,
    /// Read and add events.
    Developer,
    /// Everything, including alert actions.
    Admin,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dashboard => "dashboard",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Role> {
        [Self::Dashboard, Self::Developer, Self::Admin]
            .into_iter()
            .find(|role| role.as_str() == name)
    }
}

/// A JSON-RPC error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// Explanation.
    pub message: String,
}

impl RpcError {
    /// `-32602`: the params are wrong; names the field.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            code: -32602,
            message: format!("invalid `{field}`: {reason}"),
        }
    }

    /// A failure of the request itself (`-32000`).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: -32000,
            message: message.into(),
        }
    }
}

/// Error codes of the protocol (besides JSON-RPC's own).
pub mod codes {
    /// The role does not allow the method, or the client did not authenticate.
    pub const FORBIDDEN: i64 = -32001;
    /// Too many requests.
    pub const RATE_LIMITED: i64 = -32002;
    /// The updates after the requested sequence are gone: take a snapshot.
    pub const GAP: i64 = -32003;
}

/// A boxed future answering a call.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send + 'a>>;

/// What the application answers for the hub.
pub trait Backend: Send + Sync + 'static {
    /// The current state of `topic`, or `None` for a topic that does not exist.
    fn snapshot(&self, topic: &str) -> Option<Value>;
    /// Carries out `events.add`, `alerts.acknowledge`, `alerts.resolve`, `alerts.silence`,
    /// `alerts.expire_silence` or `alerts.reload`.
    fn call<'a>(&'a self, method: &'a str, params: Value) -> CallFuture<'a>;
}

/// How one WebSocket server behaves.
#[derive(Clone)]
pub struct WsServerConfig {
    /// Name in logs (`analytics`, `sessions`).
    pub name: String,
    /// Topic prefixes clients may subscribe to (empty: all).
    pub topic_prefixes: Vec<String>,
    /// Token → role. When empty, every client gets `open_role`.
    pub tokens: HashMap<String, Role>,
    /// The role of clients when no tokens are configured (`None`: refuse everyone).
    pub open_role: Option<Role>,
    /// Largest message accepted, bytes.
    pub max_message_bytes: usize,
    /// Sustained requests per second per client.
    pub requests_per_second: f64,
    /// Request burst per client.
    pub burst: f64,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// Silence after which a client is dropped.
    pub idle_timeout: Duration,
    /// Time allowed to authenticate when tokens are configured.
    pub auth_timeout: Duration,
    /// Consecutive bad requests before the connection is closed.
    pub max_strikes: u32,
    /// Wall clock (for history filters).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServerConfig")
            .field("name", &self.name)
            .field("topic_prefixes", &self.topic_prefixes)
            .field("tokens", &self.tokens.len())
            .field("open_role", &self.open_role)
            .finish_non_exhaustive()
    }
}

/// Serves WebSocket connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    backend: Arc<dyn Backend>,
    config: Arc<WsServerConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let hub = Arc::clone(&hub);
                let backend = Arc::clone(&backend);
                let config = Arc::clone(&config);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(error) =
                        connection(stream, peer, hub, backend, config, shutdown).await
                    {
                        tracing::debug!(%peer, error = %error, "websocket connection ended with an error");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(error = %error, "websocket accept failed");
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn token_from_query(request: &Request) -> Option<String> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "token").then(|| value.to_owned())
    })
}

/// Per-client token bucket.
struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    backend: Arc<dyn Backend>,
    config: Arc<WsServerConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let _ = stream.set_nodelay(true);
    let mut query_token = None;
    // The signature is tungstenite's handshake callback; its error type is not ours to box.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        query_token = token_from_query(request);
        Ok(response)
    };
    // Small buffers keep 10,000 connections in tens of megabytes.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let socket =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config)).await?;
    let (mut sink, mut source) = socket.split();

    let mut role = if config.tokens.is_empty() {
        config.open_role
    } else {
        query_token
            .as_ref()
            .and_then(|token| config.tokens.get(token).copied())
    };
    if config.tokens.is_empty() && role.is_none() {
        sink.send(close_frame(1008, "this server accepts no clients"))
            .await?;
        return Ok(());
    }
    if query_token.is_some() && role.is_none() {
        sink.send(close_frame(1008, "unknown token")).await?;
        return Ok(());
    }

    let (client, receiver) = hub.connect();
    tracing::debug!(%peer, client, server = %config.name, "websocket client connected");
    let mut writer = tokio::spawn(write_loop(sink, receiver, config.ping_interval));

    let mut limiter = RateLimit {
        tokens: config.burst,
        rate: config.requests_per_second,
        burst: config.burst,
        last: tokio::time::Instant::now(),
    };
    let mut strikes = 0u32;
    let auth_deadline = tokio::time::Instant::now() + config.auth_timeout;
    let mut last_heard = tokio::time::Instant::now();
    let mut writer_done = false;
    let reply = |message: Value| {
        hub.send_to(client, Arc::from(message.to_string()));
    };
    let close_reason: Option<(u16, &str)> = loop {
        let idle_deadline = last_heard + config.idle_timeout;
        let deadline = if role.is_none() {
            idle_deadline.min(auth_deadline)
        } else {
            idle_deadline
        };
        let next = tokio::select! {
            next = source.next() => next,
            _ = tokio::time::sleep_until(deadline) => {
                break Some(if role.is_none() {
                    (1008, "authentication required")
                } else {
                    (1001, "idle: no traffic or pong within the timeout")
                });
            }
            _ = shutdown.changed() => break Some((1001, "server shutting down")),
            // The writer stops on its own when the hub drops the client for lagging.
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break None;
            }
        };
        let message = match next {
            None => break None,
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                break Some((1009, "message too large"));
            }
            Some(Err(_)) => break None,
            Some(Ok(message)) => message,
        };
        last_heard = tokio::time::Instant::now();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                strikes += 1;
                reply(error_answer(
                    Value::Null,
                    -32600,
                    "binary frames are not supported; send JSON-RPC text",
                ));
                if strikes >= config.max_strikes {
                    break Some((1008, "too many invalid requests"));
                }
                continue;
            }
            Message::Close(_) => break None,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if !limiter.allow() {
            strikes += 1;
            reply(error_answer(
                request_id(text.as_str()),
                codes::RATE_LIMITED,
                "too many requests; slow down",
            ));
            if strikes >= config.max_strikes {
                break Some((1008, "too many requests"));
            }
            continue;
        }
        let answer = handle(
            text.as_str(),
            client,
            &mut role,
            &hub,
            backend.as_ref(),
            &config,
        )
        .await;
        match answer {
            Answer::Reply(message, good) => {
                strikes = if good { 0 } else { strikes + 1 };
                reply(message);
            }
            Answer::Replay(message, updates) => {
                strikes = 0;
                reply(message);
                for update in updates {
                    hub.send_to(client, update);
                }
            }
        }
        if strikes >= config.max_strikes {
            break Some((1008, "too many invalid requests"));
        }
    };
    // The writer flushes every queued answer, then the close frame with the reason.
    if let Some((code, reason)) = close_reason {
        tracing::debug!(%peer, client, code, reason, "closing websocket");
        hub.kick(client, code, reason);
    }
    if !writer_done {
        // A peer that stopped reading can block the writer forever: give it a moment,
        // then drop the socket regardless.
        if tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    hub.disconnect(client);
    if close_reason.is_some() {
        // Read (and discard) until the peer's close frame: closing a socket with unread
        // data makes the kernel reset it, and the peer would lose the close frame.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(message)) = source.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}

/// How long a closing connection waits for its writer and for the peer's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Sends queued messages, pings, and finally a close frame, until the hub lets the client
/// go. A send to a peer that stopped reading is abandoned as soon as the client is kicked
/// for lagging, so such a peer cannot hold the writer.
async fn write_loop<S>(
    mut sink: S,
    mut receiver: super::hub::ClientReceiver,
    ping_interval: Duration,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut pings = tokio::time::interval(ping_interval);
    pings.tick().await;
    loop {
        let kick = receiver.kicked.borrow().clone();
        if let Some(kick) = kick {
            if kick.code != CLOSE_LAGGED {
                // Answers already queued go out before the close, so the client sees them.
                while let Ok(Outbound::Batch(texts)) = receiver.queue.try_recv() {
                    for text in texts {
                        if sink.send(Message::text(text.to_string())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(close_frame(kick.code, &kick.reason)).await;
            let _ = sink.close().await;
            return;
        }
        tokio::select! {
            biased;
            outbound = receiver.queue.recv() => match outbound {
                Some(Outbound::Batch(texts)) => {
                    for text in texts {
                        tokio::select! {
                            sent = sink.send(Message::text(text.to_string())) => {
                                if sent.is_err() {
                                    return;
                                }
                            }
                            () = lagged(&mut receiver.kicked) => return close_lagged(sink, &receiver).await,
                        }
                    }
                }
                None => return,
            },
            changed = receiver.kicked.changed() => {
                if changed.is_err() {
                    let _ = sink.close().await;
                    return;
                }
            }
            _ = pings.tick() => {
                tokio::select! {
                    sent = sink.send(Message::Ping(Vec::new().into())) => {
                        if sent.is_err() {
                            return;
                        }
                    }
                    () = lagged(&mut receiver.kicked) => return close_lagged(sink, &receiver).await,
                }
            }
        }
    }
}

/// Tries, for a moment, to tell a lagging client why it is dropped: the close frame goes
/// out if the peer starts reading again soon; otherwise the socket is simply dropped.
async fn close_lagged<S>(mut sink: S, receiver: &super::hub::ClientReceiver)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let kick = receiver.kicked.borrow().clone();
    if let Some(kick) = kick {
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close_frame(kick.code, &kick.reason)))
            .await;
    }
}

/// Resolves once the client has been kicked for lagging (never otherwise).
async fn lagged(kicked: &mut tokio::sync::watch::Receiver<Option<Kick>>) {
    loop {
        if kicked
            .borrow()
            .as_ref()
            .is_some_and(|kick| kick.code == CLOSE_LAGGED)
        {
            return;
        }
        if kicked.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The `id` of a request, when its text has one (for answers to requests not handled).
fn request_id(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|request| request.get("id").cloned())
        .unwrap_or(Value::Null)
}

enum Answer {
    /// A single answer; `true` when the request was valid.
    Reply(Value, bool),
    /// An answer followed by replayed updates.
    Replay(Value, Vec<Arc<str>>),
}

fn ok_answer(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error_answer(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn required_role(method: &str) -> Option<Role> {
    match method {
        "subscribe" | "unsubscribe" | "snapshot" | "history" | "resume" => Some(Role::Dashboard),
        "events.add" => Some(Role::Developer),
        "alerts.acknowledge"
        | "alerts.resolve"
        | "alerts.silence"
        | "alerts.expire_silence"
        | "alerts.reload" => Some(Role::Admin),
        // `auth`, `ping`, and unknown methods (answered "unknown method" to anyone).
        _ => None,
    }
}

fn topic_param(params: &Value) -> Result<String, RpcError> {
    match params.get("topic") {
        Some(Value::String(topic)) if !topic.is_empty() && topic.len() <= 512 => Ok(topic.clone()),
        Some(Value::String(_)) => Err(RpcError::invalid("topic", "must be 1 to 512 bytes")),
        Some(_) => Err(RpcError::invalid("topic", "must be a string")),
        None => Err(RpcError::invalid("topic", "is required")),
    }
}

fn topics_param(params: &Value, config: &WsServerConfig) -> Result<Vec<String>, RpcError> {
    let Some(Value::Array(items)) = params.get("topics") else {
        return Err(RpcError::invalid(
            "topics",
            "must be a list of topic patterns",
        ));
    };
    if items.is_empty() || items.len() > 256 {
        return Err(RpcError::invalid("topics", "must hold 1 to 256 patterns"));
    }
    items
        .iter()
        .enumerate()
        .map(|(position, item)| {
            let field = format!("topics[{position}]");
            let Value::String(pattern) = item else {
                return Err(RpcError::invalid(&field, "must be a string"));
            };
            if pattern.is_empty() || pattern.len() > 512 {
                return Err(RpcError::invalid(&field, "must be 1 to 512 bytes"));
            }
            if pattern.contains('*') && !(pattern == "*" || pattern.ends_with("/*"))
                || pattern.matches('*').count() > 1
            {
                return Err(RpcError::invalid(
                    &field,
                    "wildcards are `*` or a trailing `/*`",
                ));
            }
            if !allowed(pattern, config) {
                return Err(RpcError::invalid(
                    &field,
                    format!(
                        "this server serves only {}",
                        config.topic_prefixes.join(", ")
                    ),
                ));
            }
            Ok(pattern.clone())
        })
        .collect()
}

fn allowed(topic_or_pattern: &str, config: &WsServerConfig) -> bool {
    config.topic_prefixes.is_empty()
        || config.topic_prefixes.iter().any(|prefix| {
            topic_or_pattern.starts_with(prefix.as_str())
                || (topic_or_pattern == "*" && prefix.is_empty())
        })
}

async fn handle(
    text: &str,
    client: ClientId,
    role: &mut Option<Role>,
    hub: &Hub,
    backend: &dyn Backend,
    config: &WsServerConfig,
) -> Answer {
    let request: Value = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(error) => {
            return Answer::Reply(
                error_answer(Value::Null, -32700, &format!("parse error: {error}")),
                false,
            );
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return Answer::Reply(
            error_answer(id, -32600, "invalid request: `method` must be a string"),
            false,
        );
    };
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Answer::Reply(
            error_answer(id, -32600, "invalid request: `jsonrpc` must be \"2.0\""),
            false,
        );
    }
    let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
    if let Some(required) = required_role(method) {
        match role {
            None => {
                return Answer::Reply(
                    error_answer(
                        id,
                        codes::FORBIDDEN,
                        "authenticate first (method `auth` with a token)",
                    ),
                    false,
                )
            }
            Some(have) if *have < required => {
                return Answer::Reply(
                    error_answer(
                        id,
                        codes::FORBIDDEN,
                        &format!(
                            "`{method}` needs the {} role; this client is {}",
                            required.as_str(),
                            have.as_str()
                        ),
                    ),
                    false,
                )
            }
            Some(_) => {}
        }
    }
    let result: Result<Value, RpcError> = match method {
        "ping" => Ok(json!("pong")),
        "auth" => match params.get("token").and_then(Value::as_str) {
            Some(token) => match config.tokens.get(token) {
                Some(granted) => {
                    *role = Some(*granted);
                    Ok(json!({"role": granted.as_str()}))
                }
                None if config.tokens.is_empty() => Ok(json!({"role": role.map(Role::as_str)})),
                None => Err(RpcError {
                    code: codes::FORBIDDEN,
                    message: "unknown token".to_owned(),
                }),
            },
            None => Err(RpcError::invalid("token", "must be a string")),
        },
        "subscribe" => topics_param(&params, config).map(|topics| {
            let mut sequences = serde_json::Map::new();
            for topic in &topics {
                hub.subscribe(client, topic);
                if !topic.contains('*') {
                    sequences.insert(topic.clone(), json!(hub.sequence(topic)));
                }
            }
            json!({"subscribed": topics, "seq": sequences})
        }),
        "unsubscribe" => topics_param(&params, config).map(|topics| {
            let removed: Vec<&String> = topics
                .iter()
                .filter(|topic| hub.unsubscribe(client, topic))
                .collect();
            json!({"unsubscribed": removed})
        }),
        "snapshot" => match topic_param(&params) {
            Ok(topic) if !allowed(&topic, config) => {
                Err(RpcError::invalid("topic", "not served here"))
            }
            Ok(topic) => {
                // Read the sequence first: updates after it may already be in the data,
                // which a resume from it replays harmlessly (updates are idempotent).
                let seq = hub.sequence(&topic);
                match backend.snapshot(&topic) {
                    Some(data) => Ok(json!({"topic": topic, "seq": seq, "data": data})),
                    None => Err(RpcError::invalid("topic", format!("no topic {topic:?}"))),
                }
            }
            Err(error) => Err(error),
        },
        "history" => topic_param(&params).and_then(|topic| {
            let since_ms = match params.get("since_ms") {
                None => 0,
                Some(value) => value
                    .as_u64()
                    .ok_or_else(|| RpcError::invalid("since_ms", "must be a whole number"))?,
            };
            let limit = match params.get("limit") {
                None => 100,
                Some(value) => match value.as_u64() {
                    Some(limit @ 1..=1000) => limit as usize,
                    _ => return Err(RpcError::invalid("limit", "must be 1 to 1000")),
                },
            };
            let updates: Vec<Value> = hub
                .history(&topic, since_ms, limit)
                .iter()
                .filter_map(|published| {
                    serde_json::from_str::<Value>(&published.message)
                        .ok()
                        .and_then(|message| message.get("params").cloned())
                })
                .collect();
            Ok(json!({"topic": topic, "updates": updates}))
        }),
        "resume" => {
            let topic = match topic_param(&params) {
                Ok(topic) => topic,
                Err(error) => return Answer::Reply(rpc_error(id, error), false),
            };
            let Some(since) = params.get("since").and_then(Value::as_u64) else {
                return Answer::Reply(
                    rpc_error(id, RpcError::invalid("since", "must be a whole number")),
                    false,
                );
            };
            if !allowed(&topic, config) {
                return Answer::Reply(
                    rpc_error(id, RpcError::invalid("topic", "not served here")),
                    false,
                );
            }
            return match hub.resume(client, &topic, since) {
                Ok(missed) => Answer::Replay(
                    ok_answer(
                        id,
                        json!({"topic": topic, "replayed": missed.len(), "seq": hub.sequence(&topic)}),
                    ),
                    missed
                        .into_iter()
                        .map(|published| published.message)
                        .collect(),
                ),
                Err(oldest) => Answer::Reply(
                    json!({"jsonrpc": "2.0", "id": id, "error": {
                        "code": codes::GAP,
                        "message": "gap: the missed updates are gone; take a snapshot and resume from its seq",
                        "data": {"topic": topic, "oldest": oldest, "seq": hub.sequence(&topic)}
                    }}),
                    true,
                ),
            };
        }
        "events.add"
        | "alerts.acknowledge"
        | "alerts.resolve"
        | "alerts.silence"
        | "alerts.expire_silence"
        | "alerts.reload" => backend.call(method, params).await,
        other => Err(RpcError {
            code: -32601,
            message: format!("unknown method {other:?}"),
        }),
    };
    match result {
        Ok(value) => Answer::Reply(ok_answer(id, value), true),
        Err(error) => {
            let good = error.code == -32000;
            Answer::Reply(rpc_error(id, error), good)
        }
    }
}

fn rpc_error(id: Value, error: RpcError) -> Value {
    error_answer(id, error.code, &error.message)
}
