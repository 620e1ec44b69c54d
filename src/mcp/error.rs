//! How failures become MCP answers, in one place.
//!
//! A tool that runs but cannot do what was asked (invalid input, unknown alert, stopped
//! monitoring) answers with a result flagged `isError: true` and a message naming the
//! field and the reason. Unknown tools and malformed requests are JSON-RPC errors, produced
//! by the SDK. Internal details are logged here and never sent to the client.

use crate::runtime::FeedError;

/// A tool-level failure: its message is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl ToolError {
    /// An invalid argument: names the field and the reason.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self(format!("invalid `{field}`: {reason}"))
    }

    /// A request that is valid but cannot be carried out.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl From<ToolError> for String {
    fn from(error: ToolError) -> Self {
        error.0
    }
}

impl From<FeedError> for ToolError {
    fn from(error: FeedError) -> Self {
        match error {
            FeedError::Overloaded => Self::refused("ingest queues are full; nothing was accepted, retry later"),
            FeedError::Stopped => Self::refused("the pipeline is shutting down; nothing was accepted"),
            FeedError::Paused => {
                Self::refused("monitoring is stopped; call realtime_start_monitoring first (nothing was accepted)")
            }
            FeedError::Storage => {
                tracing::error!("mcp: event log refused a batch");
                Self::refused("the event log is unavailable; nothing was accepted")
            }
        }
    }
}

/// Checks an optional limit against its range, returning the default when absent.
pub fn limit(field: &str, value: Option<u32>, default: u32, max: u32) -> Result<usize, ToolError> {
    match value {
        None => Ok(default as usize),
        Some(0) => Err(ToolError::invalid(field, "must be at least 1")),
        Some(value) if value > max => {
            Err(ToolError::invalid(field, format!("must be at most {max}")))
        }
        Some(value) => Ok(value as usize),
    }
}
