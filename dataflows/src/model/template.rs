//! Alert text templates: `{{ $value }}`, `{{ $labels.team }}` and a few more, in a rule's
//! `summary` and `annotations`.
//!
//! A template is parsed once, when the rule is loaded; an unknown or malformed placeholder
//! is a [`TemplateError`] naming the placeholder, so a typo fails the config check instead
//! of reaching a pager. Rendering cannot fail: a label the alert does not carry renders as
//! `<no value>`, visibly.

use std::fmt::{self, Write};

use super::alerts::AlertRecord;

/// A placeholder a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placeholder {
    /// The watched statistic's latest value.
    Value,
    /// The rule's threshold.
    Threshold,
    /// The value of one label (alert labels, then series labels, then built-ins).
    Label(String),
    /// The rule id.
    Rule,
    /// The severity.
    Severity,
    /// The series' metric name.
    Metric,
    /// The series' session, if any.
    Session,
    /// The whole series (`name{labels}`).
    Series,
}

/// What the text of a template is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(Placeholder),
}

/// A template that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a matching `}}`.
    #[error("unclosed `{{{{` at byte {position}")]
    Unclosed {
        /// Byte offset of the `{{`.
        position: usize,
    },
    /// A placeholder this renderer does not know.
    #[error(
        "unknown placeholder `{{{{ {name} }}}}` (known: $value, $threshold, $labels.<name>, $rule, $severity, $metric, $session, $series)"
    )]
    Unknown {
        /// The text between the braces, trimmed.
        name: String,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `source`.
    ///
    /// # Errors
    /// An unclosed `{{` or an unknown placeholder.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError::Unclosed {
                    position: offset + open,
                });
            };
            let name = after[..close].trim();
            pieces.push(Piece::Placeholder(placeholder(name)?));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { pieces })
    }

    /// The text for `alert`.
    pub fn render(&self, alert: &AlertRecord) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(placeholder) => render_one(placeholder, alert, &mut out),
            }
        }
        out
    }
}

const NO_VALUE: &str = "<no value>";

fn placeholder(name: &str) -> Result<Placeholder, TemplateError> {
    Ok(match name {
        "$value" => Placeholder::Value,
        "$threshold" => Placeholder::Threshold,
        "$rule" => Placeholder::Rule,
        "$severity" => Placeholder::Severity,
        "$metric" => Placeholder::Metric,
        "$session" => Placeholder::Session,
        "$series" => Placeholder::Series,
        _ => match name.strip_prefix("$labels.") {
            Some(label)
                if !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
            {
                Placeholder::Label(label.to_owned())
            }
            _ => {
                return Err(TemplateError::Unknown {
                    name: name.to_owned(),
                })
            }
        },
    })
}

/// `83.333333` → `83.333`, `90.0` → `90`: enough digits for a person, no float noise.
pub fn format_value(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let text = format!("{value:.3}");
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_owned()
}

fn render_one(placeholder: &Placeholder, alert: &AlertRecord, out: &mut String) {
    let optional = |value: Option<&str>, out: &mut String| out.push_str(value.unwrap_or(NO_VALUE));
    match placeholder {
        Placeholder::Value => match alert.value {
            Some(value) => out.push_str(&format_value(value)),
            None => out.push_str(NO_VALUE),
        },
        Placeholder::Threshold => match alert.threshold {
            Some(value) => out.push_str(&format_value(value)),
            None => out.push_str(NO_VALUE),
        },
        Placeholder::Label(name) => optional(alert.label(name), out),
        Placeholder::Rule => optional(alert.rule_id.as_deref(), out),
        Placeholder::Severity => out.push_str(alert.severity.as_str()),
        Placeholder::Metric => optional(alert.key.as_ref().map(|key| key.name.as_str()), out),
        Placeholder::Session => optional(
            alert.key.as_ref().and_then(|key| key.session_id.as_deref()),
            out,
        ),
        Placeholder::Series => match &alert.key {
            Some(key) => {
                let _ = write!(out, "{key}");
            }
            None => out.push_str(NO_VALUE),
        },
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => f.write_str(text)?,
                Piece::Placeholder(placeholder) => {
                    let name = match placeholder {
                        Placeholder::Value => "$value".to_owned(),
                        Placeholder::Threshold => "$threshold".to_owned(),
                        Placeholder::Label(name) => format!("$labels.{name}"),
                        Placeholder::Rule => "$rule".to_owned(),
                        Placeholder::Severity => "$severity".to_owned(),
                        Placeholder::Metric => "$metric".to_owned(),
                        Placeholder::Session => "$session".to_owned(),
                        Placeholder::Series => "$series".to_owned(),
                    };
                    write!(f, "{{{{ {name} }}}}")?;
                }
            }
        }
        Ok(())
    }
}

/// A rule's parsed templates: its summary (the alert's title) and annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleTemplates {
    /// Replaces the default title `<rule> on <series>`.
    pub summary: Option<Template>,
    /// Rendered into the alert's `annotations`, by name.
    pub annotations: Vec<(String, Template)>,
}

impl RuleTemplates {
    /// Renders into `alert`'s title and annotations.
    pub fn apply(&self, alert: &mut AlertRecord) {
        if let Some(summary) = &self.summary {
            alert.title = summary.render(alert);
        }
        for (name, template) in &self.annotations {
            let text = template.render(alert);
            alert.annotations.insert(name.clone(), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertStatus, SeriesKey, Severity};

    fn alert() -> AlertRecord {
        let mut record = AlertRecord::new_rule_alert(
            "latency-1".into(),
            "latency_high".into(),
            SeriesKey {
                name: "latency_ms".into(),
                session_id: Some("s-7".into()),
                labels: vec![("team".into(), "api".into())],
            },
            Severity::High,
            70.0,
            1_000,
        );
        record.status = AlertStatus::Firing;
        record.value = Some(83.333_333);
        record
    }

    #[test]
    fn renders_every_placeholder() {
        let template = Template::parse(
            "{{ $rule }}: {{$metric}} of {{ $labels.team }} in {{ $session }} is {{ $value }} \
             (> {{ $threshold }}, {{ $severity }}) on {{ $series }}; zone {{ $labels.zone }}",
        )
        .unwrap();
        assert_eq!(
            template.render(&alert()),
            "latency_high: latency_ms of api in s-7 is 83.333 (> 70, high) on \
             latency_ms{session_id=s-7,team=api}; zone <no value>"
        );
        // Built-in labels work through $labels too.
        assert_eq!(
            Template::parse("{{ $labels.severity }}/{{ $labels.rule }}")
                .unwrap()
                .render(&alert()),
            "high/latency_high"
        );
        // Plain text and lone braces pass through.
        assert_eq!(
            Template::parse("a } b { c").unwrap().render(&alert()),
            "a } b { c"
        );
    }

    #[test]
    fn bad_templates_fail_with_the_placeholder_named() {
        assert_eq!(
            Template::parse("x {{ $valeu }}").unwrap_err().to_string(),
            "unknown placeholder `{{ $valeu }}` (known: $value, $threshold, $labels.<name>, \
             $rule, $severity, $metric, $session, $series)"
        );
        assert_eq!(
            Template::parse("ok {{ $value").unwrap_err(),
            TemplateError::Unclosed { position: 3 }
        );
        assert!(Template::parse("{{ $labels. }}").is_err());
        assert!(Template::parse("{{ $labels.a b }}").is_err());
        // Display gives back a canonical source.
        assert_eq!(
            Template::parse("v={{$value}}").unwrap().to_string(),
            "v={{ $value }}"
        );
    }

    #[test]
    fn values_are_short() {
        assert_eq!(format_value(90.0), "90");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(-1.23456), "-1.235");
        assert_eq!(format_value(f64::NAN), "NaN");
    }
}
