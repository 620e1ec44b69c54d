//! What is delivered: a group of alerts with one status, and its text renderings.

use std::collections::BTreeMap;

use megamind_dataflows::model::{AlertRecord, AlertStatus, Severity};
use serde::{Deserialize, Serialize};

/// Whether a notification announces trouble or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// At least one alert of the group is firing or acknowledged.
    Firing,
    /// Every alert of the group is resolved.
    Resolved,
}

impl NotificationStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One notification: the alerts of one group, as of one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The group key (the grouping labels' values, or the fingerprint).
    pub group: String,
    /// The labels the group was formed by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// Why it is sent: `new`, `update`, `escalation`, `reminder`, `resolved`.
    pub reason: String,
    /// The alerts, each with its fingerprint (`id`), labels, status and history.
    pub alerts: Vec<AlertRecord>,
    /// Where people can look at the alerts (one per alert, same order).
    #[serde(default)]
    pub links: Vec<String>,
}

impl Notification {
    /// A notification about `alerts` in `group`; `base_url` (megamind's public HTTP address)
    /// makes the links.
    pub fn new(
        group: impl Into<String>,
        reason: impl Into<String>,
        alerts: Vec<AlertRecord>,
        base_url: Option<&str>,
    ) -> Self {
        let status = if alerts.iter().any(|a| a.status.is_active()) {
            NotificationStatus::Firing
        } else {
            NotificationStatus::Resolved
        };
        let links = base_url
            .map(|base| {
                let base = base.trim_end_matches('/');
                alerts
                    .iter()
                    .map(|a| format!("{base}/v1/alerts/{}", a.id))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            group: group.into(),
            group_labels: BTreeMap::new(),
            status,
            reason: reason.into(),
            alerts,
            links,
        }
    }

    /// The most severe severity in the group.
    pub fn severity(&self) -> Severity {
        self.alerts
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Low)
    }

    /// A one-line summary: `[FIRING:2] high: latency on api (+1 more)`.
    pub fn summary(&self) -> String {
        let active = self.alerts.iter().filter(|a| a.status.is_active()).count();
        let head = match self.status {
            NotificationStatus::Firing => format!("[FIRING:{active}]"),
            NotificationStatus::Resolved => "[RESOLVED]".to_owned(),
        };
        let first = self.alerts.first().map_or("", |a| a.title.as_str());
        let more = self.alerts.len().saturating_sub(1);
        if more > 0 {
            format!("{head} {}: {first} (+{more} more)", self.severity())
        } else {
            format!("{head} {}: {first}", self.severity())
        }
    }

    /// One line per alert, for text bodies.
    pub fn alert_lines(&self) -> Vec<String> {
        self.alerts
            .iter()
            .enumerate()
            .map(|(position, alert)| {
                let mut line = format!(
                    "{} [{}] {} ({})",
                    status_word(alert.status),
                    alert.severity,
                    alert.title,
                    alert.id
                );
                if let (Some(value), Some(threshold)) = (alert.value, alert.threshold) {
                    line.push_str(&format!(" value {value} threshold {threshold}"));
                }
                if let Some(message) = &alert.message {
                    line.push_str(" — ");
                    line.push_str(message);
                }
                if let Some(link) = self.links.get(position) {
                    line.push(' ');
                    line.push_str(link);
                }
                line
            })
            .collect()
    }

    /// The plain-text body (email, logs).
    pub fn text(&self) -> String {
        let mut text = self.summary();
        text.push_str("\n\n");
        for line in self.alert_lines() {
            text.push_str("- ");
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    /// The HTML body (email); every piece of alert text is escaped.
    pub fn html(&self) -> String {
        let mut html = format!(
            "<html><body><h2>{}</h2><table border=\"1\" cellpadding=\"4\">\
             <tr><th>status</th><th>severity</th><th>alert</th><th>fingerprint</th><th>value</th></tr>",
            escape(&self.summary())
        );
        for (position, alert) in self.alerts.iter().enumerate() {
            let title = match self.links.get(position) {
                Some(link) => format!("<a href=\"{}\">{}</a>", escape(link), escape(&alert.title)),
                None => escape(&alert.title),
            };
            let value = alert.value.map(|v| v.to_string()).unwrap_or_default();
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{title}</td><td>{}</td><td>{}</td></tr>",
                status_word(alert.status),
                alert.severity,
                escape(&alert.id),
                escape(&value)
            ));
        }
        html.push_str("</table></body></html>");
        html
    }
}

fn status_word(status: AlertStatus) -> &'static str {
    status.as_str()
}

/// Escapes text for HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
