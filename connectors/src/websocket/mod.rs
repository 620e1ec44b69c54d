//! WebSocket fan-out: a pub/sub [`hub`] shared by the analytics and session-monitor
//! servers, and the [`server`] that speaks megamind's JSON-RPC 2.0 protocol over
//! tokio-tungstenite.
//!
//! The hub knows topics and bytes, not the application: what a topic's snapshot is and
//! what an alert command does are answered by the application through [`server::Backend`].

pub mod hub;
pub mod server;

pub use hub::{Hub, HubConfig, HubStats};
pub use server::{Backend, Role, RpcError, WsServerConfig};
