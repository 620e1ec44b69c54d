//! Slack incoming webhooks: a `text` fallback plus Block Kit `blocks`.
//!
//! Format (Slack's "Sending messages using incoming webhooks"): a JSON object with `text`
//! (shown in notifications and where blocks cannot be) and `blocks`: a `header` block
//! (`plain_text`, at most 150 characters), one `section` per alert (`mrkdwn`, at most 3,000
//! characters) and a `context` block. `&`, `<` and `>` in user text are escaped as Slack
//! requires; links use `<url|text>`. At most 50 blocks: alerts beyond 45 are summarized.

use serde_json::{json, Value};

use super::Notification;

const MAX_ALERT_SECTIONS: usize = 45;

/// Escapes text for Slack `mrkdwn`.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The Slack message for `notification`.
pub fn message(notification: &Notification) -> Value {
    let summary = notification.summary();
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(&summary, 150), "emoji": true}
    })];
    for (position, alert) in notification
        .alerts
        .iter()
        .enumerate()
        .take(MAX_ALERT_SECTIONS)
    {
        let title = match notification.links.get(position) {
            Some(link) => format!("<{link}|{}>", escape(&alert.title)),
            None => escape(&alert.title),
        };
        let mut text = format!(
            "*{}* · {} · {}\n`{}`",
            alert.status,
            alert.severity,
            title,
            escape(&alert.id)
        );
        if let (Some(value), Some(threshold)) = (alert.value, alert.threshold) {
            text.push_str(&format!(" value {value} (threshold {threshold})"));
        }
        if let Some(message) = &alert.message {
            text.push('\n');
            text.push_str(&escape(message));
        }
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&text, 3000)}
        }));
    }
    let hidden = notification.alerts.len().saturating_sub(MAX_ALERT_SECTIONS);
    let mut context = format!(
        "group `{}` · {}",
        escape(&notification.group),
        notification.reason
    );
    if hidden > 0 {
        context.push_str(&format!(" · {hidden} more alerts not shown"));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": truncate(&context, 3000)}]
    }));
    json!({"text": summary, "blocks": blocks})
}
