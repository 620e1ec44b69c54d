//! megamind's adapters to the outside world.
//!
//! Everything that knows about bytes, sockets, files or brokers lives here, and nothing
//! here knows about the application: connectors take and give model records
//! (`megamind_dataflows::model`) and report their own typed errors.

pub mod codec;
pub mod kafka;
pub mod notify;
pub mod store;
pub mod websocket;

/// Renders an error with its causes (`outer: inner: root`), for logs and reports.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
