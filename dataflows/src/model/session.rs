//! Live state of a work session, as maintained by the `track_sessions` operator.

use serde::{Deserialize, Serialize};

use super::event::Id;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Started or seen, not yet ended.
    Active,
    /// Ended successfully.
    Completed,
    /// Ended in failure.
    Failed,
}

impl SessionStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// A snapshot of one session. Every field is a function of the session's events as a set
/// (not of their arrival order), so replays and different worker counts agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// The session.
    pub session_id: Id,
    /// Who runs it (from the latest event that said).
    pub user_id: Option<Id>,
    /// Active, completed or failed (the terminal event with the latest time wins).
    pub status: SessionStatus,
    /// Earliest event time seen, ms.
    pub started_at: u64,
    /// Latest event time seen, ms.
    pub last_activity: u64,
    /// Time of the terminal event, ms.
    pub ended_at: Option<u64>,
    /// Number of `operation` events.
    pub operations: u64,
    /// Number of errors (`error` events and operations with `success: false`).
    pub errors: u64,
    /// Errors per activity (operations plus standalone error events), 0 when none.
    pub error_rate: f64,
    /// Tokens consumed.
    pub tokens: u64,
    /// Mean operation duration, ms.
    pub duration_mean_ms: Option<f64>,
    /// 95th percentile operation duration, ms (nearest rank).
    pub duration_p95_ms: Option<f64>,
    /// The operation of the latest operation event.
    pub last_operation: Option<Id>,
    /// The message of the latest error.
    pub last_error: Option<String>,
    /// Total events applied.
    pub events: u64,
}

/// One point of a session's performance history, taken when event time passes the end
/// of a sampling interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistorySample {
    /// The session.
    pub session_id: Id,
    /// End of the interval (exclusive), ms.
    pub at: u64,
    /// Operations up to `at`.
    pub operations: u64,
    /// Errors up to `at`.
    pub errors: u64,
    /// Error rate up to `at`.
    pub error_rate: f64,
    /// Tokens up to `at`.
    pub tokens: u64,
    /// Operations within the interval.
    pub interval_operations: u64,
    /// Errors within the interval.
    pub interval_errors: u64,
    /// Mean operation duration within the interval, ms.
    pub interval_duration_mean_ms: Option<f64>,
}
