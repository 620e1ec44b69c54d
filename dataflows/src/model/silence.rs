//! Silences: label matchers with an expiry that mute alert notifications.
//!
//! A silence is created and expired by `alert_command` events (`silence`,
//! `expire_silence`), so like every alert change it is a function of the event log. While
//! a silence is in force, a change of an alert it matches is held back: the alert shows it,
//! counts it as suppressed (`suppression.by = "silence"`), and is not notified. When the
//! silence ends, the alerts whose latest change it held back and that are still active are
//! notified then: nothing is lost.
//!
//! Matchers use Alertmanager's forms: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`, separated by commas, optionally inside `{...}`. Regular expressions
//! match the whole value. A label the alert lacks has the value `""`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::alerts::{AlertAct, AlertRecord};

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`: equal.
    #[serde(rename = "=")]
    Equal,
    /// `!=`: not equal.
    #[serde(rename = "!=")]
    NotEqual,
    /// `=~`: the whole value matches the regular expression.
    #[serde(rename = "=~")]
    Regex,
    /// `!~`: the whole value does not match the regular expression.
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

/// One label matcher.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Matcher {
    /// The label (`severity`, `rule` and `status` are built in).
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or regular expression.
    pub value: String,
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.symbol(), self.value)
    }
}

/// Matchers that failed to parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MatcherError(pub String);

/// Most matchers one silence may have.
pub const MAX_MATCHERS: usize = 32;

/// Parses `team="db", severity=~"low|medium"` (optionally in braces). Every regular
/// expression is compiled to check it.
///
/// # Errors
/// Empty input, a malformed matcher (named by position), an invalid regular expression,
/// or more than [`MAX_MATCHERS`].
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, MatcherError> {
    let mut rest = text.trim();
    if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        rest = inner.trim();
    }
    let mut matchers = Vec::new();
    while !rest.is_empty() {
        let position = matchers.len() + 1;
        let bad = |why: &str| MatcherError(format!("matcher {position}: {why}"));
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(bad("expected a label name"));
        }
        rest = rest[name_end..].trim_start();
        let (op, after) = if let Some(after) = rest.strip_prefix("=~") {
            (MatchOp::Regex, after)
        } else if let Some(after) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, after)
        } else if let Some(after) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, after)
        } else if let Some(after) = rest.strip_prefix('=') {
            (MatchOp::Equal, after)
        } else {
            return Err(bad(&format!(
                "expected =, !=, =~ or !~ after label {name:?}"
            )));
        };
        rest = after.trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((index, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped)) => out.push(escaped),
                        None => break,
                    },
                    '"' => {
                        end = Some(index);
                        break;
                    }
                    other => out.push(other),
                }
            }
            let Some(end) = end else {
                return Err(bad("unclosed quote"));
            };
            value = out;
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        if matches!(op, MatchOp::Regex | MatchOp::NotRegex) {
            if let Err(error) = anchored(&value) {
                return Err(bad(&format!("invalid regular expression: {error}")));
            }
        }
        matchers.push(Matcher {
            name: name.to_owned(),
            op,
            value,
        });
        if matchers.len() > MAX_MATCHERS {
            return Err(MatcherError(format!("more than {MAX_MATCHERS} matchers")));
        }
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(bad("expected `,` between matchers"));
        }
    }
    if matchers.is_empty() {
        return Err(MatcherError("at least one matcher is required".to_owned()));
    }
    Ok(matchers)
}

fn anchored(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

/// A silence as people see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// The id given in the command (`alert_id`).
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Event time it took effect, ms.
    pub starts_at: u64,
    /// Event time it ends (or ended), ms.
    pub ends_at: u64,
    /// Who created it, when, why.
    pub created: AlertAct,
    /// Who expired it early, when, why; or `by: "expiry"` when it ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<AlertAct>,
    /// `config` for a silence from `[[alerts.silences]]` (a reload replaces or expires
    /// it); none for one made by a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Matchers with their regular expressions compiled: all must match.
#[derive(Debug, Clone)]
pub struct MatcherSet {
    matchers: Vec<Matcher>,
    regexes: Vec<Option<regex::Regex>>,
}

impl MatcherSet {
    /// Compiles `matchers` (already checked by [`parse_matchers`]; a pattern that fails
    /// now matches nothing).
    pub fn new(matchers: Vec<Matcher>) -> Self {
        let regexes = matchers
            .iter()
            .map(|matcher| match matcher.op {
                MatchOp::Regex | MatchOp::NotRegex => anchored(&matcher.value).ok(),
                MatchOp::Equal | MatchOp::NotEqual => None,
            })
            .collect();
        Self { matchers, regexes }
    }

    /// Parses and compiles `text`.
    ///
    /// # Errors
    /// See [`parse_matchers`].
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        parse_matchers(text).map(Self::new)
    }

    /// The matchers.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// Whether every matcher accepts `alert`.
    pub fn matches(&self, alert: &AlertRecord) -> bool {
        self.matchers
            .iter()
            .zip(&self.regexes)
            .all(|(matcher, regex)| {
                let value = alert.label(&matcher.name).unwrap_or("");
                match matcher.op {
                    MatchOp::Equal => value == matcher.value,
                    MatchOp::NotEqual => value != matcher.value,
                    MatchOp::Regex => regex.as_ref().is_some_and(|r| r.is_match(value)),
                    MatchOp::NotRegex => regex.as_ref().is_some_and(|r| !r.is_match(value)),
                }
            })
    }
}

/// A silence with its matchers compiled.
#[derive(Debug, Clone)]
pub struct CompiledSilence {
    /// The silence.
    pub silence: Silence,
    set: MatcherSet,
}

impl CompiledSilence {
    /// Compiles `silence`'s matchers.
    pub fn new(silence: Silence) -> Self {
        let set = MatcherSet::new(silence.matchers.clone());
        Self { silence, set }
    }

    /// Whether every matcher accepts `alert`.
    pub fn matches(&self, alert: &AlertRecord) -> bool {
        self.set.matches(alert)
    }

    /// Whether it is in force at event time `at`.
    pub fn in_force(&self, at: u64) -> bool {
        self.silence.starts_at <= at && at < self.silence.ends_at
    }
}

/// `team="db", severity=~"a|b"`.
pub fn matchers_text(matchers: &[Matcher]) -> String {
    matchers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertStatus, SeriesKey, Severity};

    #[test]
    fn parses_every_operator_and_reports_errors_by_position() {
        let matchers =
            parse_matchers(r#"{team="db", severity=~"low|medium", rule!="x", zone !~ "eu-.*"}"#)
                .unwrap();
        assert_eq!(
            matchers_text(&matchers),
            r#"team="db", severity=~"low|medium", rule!="x", zone!~"eu-.*""#
        );
        assert_eq!(parse_matchers("team=db").unwrap()[0].value, "db");
        assert_eq!(
            parse_matchers(r#"a="x\"y""#).unwrap()[0].value,
            "x\"y",
            "escaped quote"
        );
        let error = |text: &str| parse_matchers(text).unwrap_err().0;
        assert_eq!(error(""), "at least one matcher is required");
        assert_eq!(
            error(r#"team="db", =x"#),
            "matcher 2: expected a label name"
        );
        assert_eq!(
            error("team>db"),
            "matcher 1: expected =, !=, =~ or !~ after label \"team\""
        );
        assert_eq!(error(r#"team="db"#), "matcher 1: unclosed quote");
        assert!(error(r#"team=~"(""#).starts_with("matcher 1: invalid regular expression"));
        assert_eq!(
            error(r#"a="1" b="2""#),
            "matcher 1: expected `,` between matchers"
        );
    }

    #[test]
    fn matching_is_whole_value_and_missing_labels_are_empty() {
        let mut alert = AlertRecord::new_rule_alert(
            "x".into(),
            "latency_high".into(),
            SeriesKey {
                name: "latency_ms".into(),
                session_id: None,
                labels: vec![("team".into(), "database".into())],
            },
            Severity::High,
            1.0,
            0,
        );
        alert.status = AlertStatus::Firing;
        let silence = |text: &str| {
            CompiledSilence::new(Silence {
                id: "s".into(),
                matchers: parse_matchers(text).unwrap(),
                starts_at: 10,
                ends_at: 20,
                created: AlertAct {
                    by: "ana".into(),
                    at: 10,
                    note: None,
                },
                expired: None,
                origin: None,
            })
        };
        assert!(silence(r#"team=~"data.*", severity="high""#).matches(&alert));
        assert!(!silence(r#"team=~"data""#).matches(&alert), "anchored");
        assert!(silence(r#"team!~"web|api""#).matches(&alert));
        assert!(!silence(r#"team!="database""#).matches(&alert));
        assert!(
            silence(r#"zone="""#).matches(&alert),
            "missing label is empty"
        );
        assert!(!silence(r#"zone!="""#).matches(&alert));
        assert!(silence("rule=latency_high").matches(&alert));
        let s = silence("team=database");
        assert!(!s.in_force(9) && s.in_force(10) && s.in_force(19) && !s.in_force(20));
    }
}
