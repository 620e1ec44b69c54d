//! Reloading `[[rules]]` from the config file (on SIGHUP): the difference between the rules
//! in force and the file's rules becomes `create_rule` / `delete_rule` alert commands,
//! ingested like every event, so a reload is in the event log and replays the same way.
//!
//! Only rules reload; every other setting needs a restart. A file that does not load (any
//! problem) changes nothing: the problems are logged.

use megamind_dataflows::model::BreachRule;
use serde_json::{json, Value};

/// The commands that turn the rules `current` into `wanted`: deletions of rules that are
/// gone, then creations of rules that are new or changed (by id order).
pub fn reload_commands(current: &[BreachRule], wanted: &[BreachRule]) -> Vec<Value> {
    let mut commands = Vec::new();
    for rule in current {
        if !wanted.iter().any(|other| other.id == rule.id) {
            commands.push(json!({"type": "alert_command", "command": "delete_rule",
                                 "alert_id": rule.id.as_str(), "actor": "reload"}));
        }
    }
    for rule in wanted {
        if current.iter().any(|other| other == rule) {
            continue;
        }
        if let Ok(value) = serde_json::to_value(rule) {
            commands.push(json!({"type": "alert_command", "command": "create_rule",
                                 "rule": value, "actor": "reload"}));
        }
    }
    commands
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
    }
}
