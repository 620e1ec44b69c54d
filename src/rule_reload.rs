//! Reloading the config file (on SIGHUP, `POST /v1/reload` or the WebSocket admin action
//! `reload`): the difference between the rules in force and the file's `[[rules]]` becomes
//! `create_rule` / `delete_rule` alert commands, and the difference between the silences
//! held and the file's `[[alerts.silences]]` becomes `silence` / `expire_silence` commands
//! (see [`crate::silences::config_silence_commands`]), ingested like every event, so a
//! reload is in the event log and replays the same way.
//!
//! Only rules and config silences reload; every other setting needs a restart. A file
//! that does not load (any problem) changes nothing: [`reload`] returns every problem.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use megamind_dataflows::model::BreachRule;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::http::AppState;
use crate::silences::{config_silence_commands, ConfigSilence, SilenceChanges};

/// The commands that turn the rules `current` into `wanted`: deletions of rules that are
/// gone, then creations of rules that are new or changed (by id order).
pub fn reload_commands(current: &[BreachRule], wanted: &[BreachRule]) -> Vec<Value> {
    rule_changes(current, wanted).0
}

/// What a reload changes in the rules, by rule id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleChanges {
    /// New rules.
    pub added: Vec<String>,
    /// Rules gone from the file (deleted; their alerts resolve).
    pub removed: Vec<String>,
    /// Rules whose entry changed (replaced).
    pub changed: Vec<String>,
}

fn rule_changes(current: &[BreachRule], wanted: &[BreachRule]) -> (Vec<Value>, RuleChanges) {
    let mut commands = Vec::new();
    let mut changes = RuleChanges::default();
    for rule in current {
        if !wanted.iter().any(|other| other.id == rule.id) {
            commands.push(json!({"type": "alert_command", "command": "delete_rule",
                                 "alert_id": rule.id.as_str(), "actor": "reload"}));
            changes.removed.push(rule.id.to_string());
        }
    }
    for rule in wanted {
        if current.iter().any(|other| other == rule) {
            continue;
        }
        if let Ok(value) = serde_json::to_value(rule) {
            commands.push(json!({"type": "alert_command", "command": "create_rule",
                                 "rule": value, "actor": "reload"}));
            if current.iter().any(|other| other.id == rule.id) {
                changes.changed.push(rule.id.to_string());
            } else {
                changes.added.push(rule.id.to_string());
            }
        }
    }
    (commands, changes)
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// The file reloaded.
    pub path: String,
    /// Rule changes.
    pub rules: RuleChanges,
    /// Config silence changes.
    pub silences: SilenceChanges,
    /// Commands ingested (0: the file matches what is in force).
    pub accepted: usize,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was started without `--config`.
    #[error("no config file: the server was started without --config")]
    NoConfigFile,
    /// The file has problems (all of them, one per line); the old config stays.
    #[error("{path}: the config file has problems; nothing was reloaded:\n{problems}")]
    Invalid {
        /// The file.
        path: String,
        /// Every problem.
        problems: String,
    },
    /// The pipeline or the event log refused the commands.
    #[error("the reload commands were not accepted: {0}")]
    Refused(String),
}

/// Reloads rules and config silences from `path`: loads and validates the whole file
/// (with the environment's overrides, as at start), then ingests the differences.
///
/// # Errors
/// No file, a file with problems (nothing changes), or commands the intake refused.
pub async fn reload(state: &AppState, path: Option<&Path>) -> Result<ReloadReport, ReloadError> {
    let path = path.ok_or(ReloadError::NoConfigFile)?;
    let shown = path.display().to_string();
    let config =
        Config::load(Some(path), std::env::vars()).map_err(|error| ReloadError::Invalid {
            path: shown.clone(),
            problems: error.to_string(),
        })?;
    let (mut commands, rules) = rule_changes(&state.views.rules(), &config.rules);
    let now = state.ingest.clock().now_ms();
    let (silence_commands, silences) =
        config_silence_commands(&state.views.silences(), &config.alerts.silences, now);
    commands.extend(silence_commands);
    let accepted = submit(state, commands).await?;
    Ok(ReloadReport {
        path: shown,
        rules,
        silences,
        accepted,
    })
}

async fn submit(state: &AppState, commands: Vec<Value>) -> Result<usize, ReloadError> {
    if commands.is_empty() {
        return Ok(0);
    }
    let report = state
        .ingest
        .ingest_body(crate::ingest::ndjson_body(&commands))
        .await
        .map_err(|error| ReloadError::Refused(error.to_string()))?;
    if let Some(rejection) = report.rejected.first() {
        return Err(ReloadError::Refused(format!(
            "{} of {} commands rejected; first: {}",
            report.rejected.len(),
            commands.len(),
            rejection.error
        )));
    }
    Ok(report.accepted)
}

/// Longest wait at start for the replayed event log to reach the views, before the config
/// silences are compared with the silences it holds.
const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// At start: issues the config file's silences that the dataflow does not hold as they
/// are (after the replayed log, up to event time `replayed_to`, reached the views, so a
/// restart does not issue them again). A wait that runs out issues them anyway (a silence
/// issued again with the same window changes nothing).
pub async fn issue_config_silences(
    state: AppState,
    silences: Vec<ConfigSilence>,
    replayed_to: u64,
) {
    if silences.is_empty() {
        return;
    }
    if replayed_to > 0 {
        let mut waited = Duration::ZERO;
        let poll = Duration::from_millis(20);
        while state.metrics.output_frontier_ms.load(Ordering::Acquire) <= replayed_to {
            if waited >= REPLAY_WAIT {
                tracing::warn!(
                    replayed_to,
                    "config silences issued before the replayed log reached the views"
                );
                break;
            }
            tokio::time::sleep(poll).await;
            waited += poll;
        }
    }
    let now = state.ingest.clock().now_ms();
    let (commands, changes) = config_silence_commands(&state.views.silences(), &silences, now);
    match submit(&state, commands).await {
        Ok(0) => tracing::info!(
            silences = silences.len(),
            "config silences: all in force as the file says"
        ),
        Ok(accepted) => tracing::info!(
            added = ?changes.added,
            changed = ?changes.changed,
            expired = ?changes.expired,
            accepted,
            "config silences issued"
        ),
        Err(error) => tracing::error!(error = %error, "config silences not issued"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, threshold: f64) -> BreachRule {
        serde_json::from_value(
            json!({"id": id, "metric": "x", "aggregate": "max", "op": ">",
                                      "threshold": threshold, "severity": "high"}),
        )
        .unwrap()
    }

    #[test]
    fn only_differences_become_commands_and_they_decode() {
        let current = [rule("a", 1.0), rule("b", 2.0), rule("c", 3.0)];
        let wanted = [rule("a", 1.0), rule("b", 5.0), rule("d", 4.0)];
        let commands = reload_commands(&current, &wanted);
        let summary: Vec<(String, String)> = commands
            .iter()
            .map(|command| {
                (
                    command["command"].as_str().unwrap().to_owned(),
                    command["alert_id"]
                        .as_str()
                        .or(command["rule"]["id"].as_str())
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("delete_rule".to_owned(), "c".to_owned()),
                ("create_rule".to_owned(), "b".to_owned()),
                ("create_rule".to_owned(), "d".to_owned()),
            ]
        );
        for command in commands {
            megamind_dataflows::model::decode::decode_event(
                command.to_string().as_bytes(),
                &megamind_dataflows::model::decode::DecodeLimits::default(),
                1,
            )
            .unwrap();
        }
        assert!(reload_commands(&wanted, &wanted).is_empty());
        let (_, changes) = rule_changes(&current, &wanted);
        assert_eq!(
            changes,
            RuleChanges {
                added: vec!["d".to_owned()],
                removed: vec!["c".to_owned()],
                changed: vec!["b".to_owned()],
            }
        );
    }
}
