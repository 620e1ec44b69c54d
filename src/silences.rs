//! Silences through the HTTP API, the WebSocket admin and the config file
//! (`[[alerts.silences]]`): the request shapes, turned into `alert_command` events
//! (`silence`, `expire_silence`) that go through ingestion like every event, so silences
//! are written ahead and replay with the log.
//!
//! The dataflow owns the silences (see `megamind_dataflows::operators::manage_alerts`);
//! this module only builds the commands. Matchers and durations are checked again by the
//! event decoder, which names the field in its rejection.
//!
//! Config silences enter the log the same way, marked `origin = "config"`: at start (once
//! the replayed log is applied) and on every reload, [`config_silence_commands`] compares
//! the file with the silences the dataflow holds and issues only the differences, so a
//! restart or a reload of an unchanged file adds nothing to the log, and a silence a
//! person expired early stays expired until its entry in the file changes.

use std::time::{Duration, SystemTime};

use megamind_dataflows::model::decode::MAX_SILENCE_MS;
use megamind_dataflows::model::{parse_matchers, Silence};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The `origin` of silences from the config file.
pub const CONFIG_ORIGIN: &str = "config";

/// A silence in the config file (`[[alerts.silences]]`). Its window is `starts_at` (default:
/// when it is first loaded) to `ends_at`, or to `starts_at + duration`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSilence {
    /// The silence's id (unique among the file's silences; the same id as a silence made
    /// over HTTP replaces that one).
    pub id: String,
    /// Matchers: `team="db", severity=~"low|medium"` (`=`, `!=`, `=~`, `!~`).
    pub matchers: String,
    /// When it starts, RFC 3339 (`2026-11-28T22:00:00Z`); default: when first loaded.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub starts_at: Option<SystemTime>,
    /// When it ends, RFC 3339; give this or `duration`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ends_at: Option<SystemTime>,
    /// How long it lasts from its start (`"2h"`); give this or `ends_at`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,
    /// Who it is recorded as created by.
    #[serde(default = "default_creator")]
    pub created_by: String,
    /// Why (recorded as the silence's note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn default_creator() -> String {
    CONFIG_ORIGIN.to_owned()
}

fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl ConfigSilence {
    /// Problems with this entry, each naming its field under `prefix`
    /// (`alerts.silences[0]`).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.id.trim().is_empty() {
            problems.push(format!("{prefix}.id must not be empty"));
        }
        if self.created_by.trim().is_empty() {
            problems.push(format!("{prefix}.created_by must not be empty"));
        }
        if let Err(error) = parse_matchers(&self.matchers) {
            problems.push(format!("{prefix}.matchers: {}", error.0));
        }
        let max = Duration::from_millis(MAX_SILENCE_MS);
        match (self.ends_at, self.duration) {
            (Some(_), Some(_)) => problems.push(format!(
                "{prefix}: give either ends_at or duration, not both"
            )),
            (None, None) => problems.push(format!(
                "{prefix}.ends_at: a silence needs ends_at or duration"
            )),
            (None, Some(duration)) => {
                if duration.is_zero() || duration > max {
                    problems.push(format!("{prefix}.duration must be between 1ms and 365days"));
                }
            }
            (Some(ends), None) => {
                if let Some(starts) = self.starts_at {
                    match ends.duration_since(starts) {
                        Ok(length) if !length.is_zero() && length <= max => {}
                        Ok(length) if !length.is_zero() => problems.push(format!(
                            "{prefix}.ends_at must be at most 365days after starts_at"
                        )),
                        _ => problems.push(format!("{prefix}.ends_at must be after starts_at")),
                    }
                }
            }
        }
        problems
    }

    /// Its window at wall-clock `now` (ms): `(starts_at, ends_at)`.
    fn window(&self, now: u64) -> (u64, u64) {
        let starts = self.starts_at.map_or(now, epoch_ms);
        let ends = match (self.ends_at, self.duration) {
            (Some(ends), _) => epoch_ms(ends),
            (None, Some(duration)) => {
                starts.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
            }
            (None, None) => starts,
        };
        (starts, ends)
    }

    /// Whether the dataflow's `held` silence is this entry as issued (same matchers,
    /// creator, comment and window); a silence a person expired early counts as issued,
    /// so that expiry stands until the entry changes.
    pub fn is_issued_as(&self, held: &Silence) -> bool {
        let Ok(matchers) = parse_matchers(&self.matchers) else {
            return false;
        };
        let expired_by_person = held.expired.as_ref().is_some_and(|act| {
            act.by.as_str() != megamind_dataflows::operators::manage_alerts::SILENCE_EXPIRY
        });
        let window = expired_by_person
            || match (self.starts_at, self.ends_at, self.duration) {
                (starts, Some(ends), _) => {
                    held.ends_at == epoch_ms(ends)
                        && starts.is_none_or(|starts| held.starts_at == epoch_ms(starts))
                }
                (starts, None, Some(duration)) => {
                    u128::from(held.ends_at.saturating_sub(held.starts_at)) == duration.as_millis()
                        && starts.is_none_or(|starts| held.starts_at == epoch_ms(starts))
                }
                (_, None, None) => false,
            };
        held.id == self.id
            && held.origin.as_deref() == Some(CONFIG_ORIGIN)
            && held.matchers == matchers
            && held.created.by.as_str() == self.created_by
            && held.created.note == self.comment
            && window
    }

    /// The `silence` command that makes it, at wall-clock `now` (ms); none when its window
    /// is already over.
    pub fn command(&self, now: u64) -> Option<Value> {
        let (starts, ends) = self.window(now);
        if ends <= now || ends <= starts {
            return None;
        }
        Some(json!({
            "type": "alert_command",
            "command": "silence",
            "alert_id": self.id,
            "matchers": self.matchers,
            "starts_at": starts,
            "duration_ms": ends - starts,
            "actor": self.created_by,
            "note": self.comment,
            "origin": CONFIG_ORIGIN,
        }))
    }
}

/// What a reconciliation of config silences changes, by silence id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SilenceChanges {
    /// New silences.
    pub added: Vec<String>,
    /// Silences replaced because their entry changed.
    pub changed: Vec<String>,
    /// Config silences no longer in the file, expired now.
    pub expired: Vec<String>,
}

/// The commands that bring the dataflow's silences (`held`, as the views show them) in
/// line with the file's (`wanted`) at wall-clock `now` (ms): entries not issued as they
/// are become `silence` commands; config silences in force (or scheduled) that left the
/// file become `expire_silence` commands. Silences made by people are never touched.
pub fn config_silence_commands(
    held: &[Silence],
    wanted: &[ConfigSilence],
    now: u64,
) -> (Vec<Value>, SilenceChanges) {
    let mut commands = Vec::new();
    let mut changes = SilenceChanges::default();
    for silence in held {
        let from_config = silence.origin.as_deref() == Some(CONFIG_ORIGIN);
        let running = silence.expired.is_none() && silence.ends_at > now;
        if from_config && running && !wanted.iter().any(|entry| entry.id == silence.id) {
            commands.push(json!({
                "type": "alert_command",
                "command": "expire_silence",
                "alert_id": silence.id,
                "actor": "reload",
                "note": "removed from the config file",
            }));
            changes.expired.push(silence.id.clone());
        }
    }
    for entry in wanted {
        let current = held.iter().find(|silence| silence.id == entry.id);
        if current.is_some_and(|silence| entry.is_issued_as(silence)) {
            continue;
        }
        let Some(command) = entry.command(now) else {
            continue;
        };
        commands.push(command);
        match current {
            Some(_) => changes.changed.push(entry.id.clone()),
            None => changes.added.push(entry.id.clone()),
        }
    }
    (commands, changes)
}

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
    use megamind_dataflows::model::decode::{decode_event, DecodeLimits};

    use super::*;

    fn entry(text: &str) -> ConfigSilence {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn config_silences_are_validated_naming_the_field() {
        let problems = |text: &str| entry(text).problems("alerts.silences[0]");
        assert!(problems("id = \"a\"\nmatchers = 'team=\"db\"'\nduration = \"2h\"").is_empty());
        let bad = problems("id = \"a\"\nmatchers = 'team=~\"(\"'\nduration = \"2h\"");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0]
                .starts_with("alerts.silences[0].matchers: matcher 1: invalid regular expression"),
            "{bad:?}"
        );
        assert_eq!(
            problems("id = \"\"\nmatchers = \"a=b\""),
            [
                "alerts.silences[0].id must not be empty",
                "alerts.silences[0].ends_at: a silence needs ends_at or duration"
            ]
        );
        assert_eq!(
            problems(
                "id = \"a\"\nmatchers = \"a=b\"\nstarts_at = \"2026-01-02T00:00:00Z\"\n\
                 ends_at = \"2026-01-01T00:00:00Z\""
            ),
            ["alerts.silences[0].ends_at must be after starts_at"]
        );
        assert_eq!(
            problems("id = \"a\"\nmatchers = \"a=b\"\nduration = \"0s\""),
            ["alerts.silences[0].duration must be between 1ms and 365days"]
        );
        assert_eq!(
            problems(
                "id = \"a\"\nmatchers = \"a=b\"\nduration = \"1h\"\nends_at = \"2026-01-01T00:00:00Z\""
            ),
            ["alerts.silences[0]: give either ends_at or duration, not both"]
        );
        assert!(toml::from_str::<ConfigSilence>(
            "id = \"a\"\nmatchers = \"a=b\"\nduration = \"1h\"\nwho = 1"
        )
        .is_err());
    }

    /// What the reconciliation issues decodes, applies the way the dataflow would, and a
    /// second pass over the result issues nothing (start and reload do not duplicate).
    #[test]
    fn config_silences_become_commands_once_and_leave_with_the_file() {
        let fixed = entry(
            "id = \"window\"\nmatchers = 'team=\"db\"'\nstarts_at = \"2026-11-28T22:00:00Z\"\n\
             ends_at = \"2026-11-29T02:00:00Z\"\ncreated_by = \"ops\"\ncomment = \"upgrade\"",
        );
        let relative = entry("id = \"soon\"\nmatchers = \"severity=low\"\nduration = \"2h\"");
        let now = 1_795_000_000_000; // 2026-11-18
        let (commands, changes) =
            config_silence_commands(&[], &[fixed.clone(), relative.clone()], now);
        assert_eq!(changes.added, ["window", "soon"]);
        let mut held = Vec::new();
        for command in &commands {
            let event = decode_event(
                command.to_string().as_bytes(),
                &DecodeLimits::default(),
                now,
            )
            .unwrap();
            let megamind_dataflows::model::EventBody::AlertCommand(command) = event.body else {
                panic!("not an alert command");
            };
            let mut book = megamind_dataflows::operators::manage_alerts::AlertBook::default();
            held.push(book.on_silence(now + 5, &command).unwrap());
        }
        assert_eq!(held[0].starts_at, 1_795_903_200_000);
        assert_eq!(held[0].ends_at, 1_795_917_600_000);
        assert_eq!(held[0].created.by, "ops");
        assert_eq!((held[1].starts_at, held[1].ends_at), (now, now + 7_200_000));
        let (again, changes) =
            config_silence_commands(&held, &[fixed.clone(), relative.clone()], now + 60_000);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(changes, SilenceChanges::default());
        // A changed entry replaces; a removed one is expired; people's silences stay.
        let mut people = held[1].clone();
        people.id = "by-hand".to_owned();
        people.origin = None;
        held.push(people);
        let longer = ConfigSilence {
            duration: Some(Duration::from_secs(3 * 3600)),
            ..relative
        };
        let (commands, changes) = config_silence_commands(&held, &[longer], now + 60_000);
        assert_eq!(changes.changed, ["soon"]);
        assert_eq!(changes.expired, ["window"]);
        assert!(changes.added.is_empty());
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0]["command"], "expire_silence");
        // A window already over is not issued.
        let (commands, _) = config_silence_commands(&[], &[fixed], 1_796_000_000_000);
        assert!(commands.is_empty());
    }

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
