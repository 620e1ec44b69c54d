//! Silences through the HTTP API and the WebSocket admin: the request shapes, turned into
//! `alert_command` events (`silence`, `expire_silence`) that go through ingestion like every
//! event, so silences are written ahead and replay with the log.
//!
//! The dataflow owns the silences (see `megamind_dataflows::operators::manage_alerts`);
//! this module only builds the commands. Matchers and durations are checked again by the
//! event decoder, which names the field in its rejection.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// A request to create (or replace) a silence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// The silence's id; a silence with the same id is replaced.
    pub id: String,
    /// Matchers: `team="db", severity=~"low|medium"` (`=`, `!=`, `=~`, `!~`).
    pub matchers: String,
    /// How long it lasts, for example `"2h"`.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Who silences (recorded).
    #[serde(default)]
    pub actor: Option<String>,
    /// Why (recorded).
    #[serde(default, alias = "comment")]
    pub note: Option<String>,
}

/// A request to end a silence now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireRequest {
    /// The silence's id.
    pub id: String,
    /// Who expires it (recorded).
    #[serde(default)]
    pub actor: Option<String>,
    /// Why (recorded).
    #[serde(default, alias = "comment")]
    pub note: Option<String>,
}

impl SilenceRequest {
    /// The `alert_command` event; `default_actor` when the request names none.
    pub fn command(&self, default_actor: &str) -> Value {
        let duration_ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX);
        json!({
            "type": "alert_command",
            "command": "silence",
            "alert_id": self.id,
            "matchers": self.matchers,
            "duration_ms": duration_ms,
            "actor": self.actor.as_deref().unwrap_or(default_actor),
            "note": self.note,
        })
    }
}

impl ExpireRequest {
    /// The `alert_command` event; `default_actor` when the request names none.
    pub fn command(&self, default_actor: &str) -> Value {
        json!({
            "type": "alert_command",
            "command": "expire_silence",
            "alert_id": self.id,
            "actor": self.actor.as_deref().unwrap_or(default_actor),
            "note": self.note,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_alert_commands_the_decoder_accepts() {
        let request: SilenceRequest = serde_json::from_value(json!({
            "id": "maint", "matchers": "team=\"db\"", "duration": "2h", "comment": "upgrade"
        }))
        .unwrap();
        let command = request.command("http");
        assert_eq!(command["duration_ms"], 7_200_000);
        assert_eq!(command["actor"], "http");
        assert_eq!(command["note"], "upgrade");
        let decoded = megamind_dataflows::model::decode::decode_event(
            command.to_string().as_bytes(),
            &megamind_dataflows::model::decode::DecodeLimits::default(),
            1,
        )
        .unwrap();
        assert_eq!(decoded.body.type_name(), "alert_command");
        let expire: ExpireRequest =
            serde_json::from_value(json!({"id": "maint", "actor": "ana"})).unwrap();
        assert_eq!(expire.command("http")["actor"], "ana");
        assert!(serde_json::from_value::<SilenceRequest>(json!({"id": "x"})).is_err());
    }
}
