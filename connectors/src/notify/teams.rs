//! Microsoft Teams incoming webhooks (Workflows): a `message` carrying one Adaptive Card.
//!
//! Format (Microsoft's "Create incoming webhooks with Workflows" / Adaptive Cards 1.4):
//! `{"type": "message", "attachments": [{"contentType":
//! "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": <AdaptiveCard>}]}`.
//! The card has a bold `TextBlock` title, a `FactSet` per alert and an `Action.OpenUrl` per
//! link (at most 5). Adaptive Card text is not HTML, so nothing needs escaping beyond JSON.

use serde_json::{json, Value};

use super::{Notification, NotificationStatus};

const MAX_ALERTS: usize = 30;
const MAX_ACTIONS: usize = 5;

/// The Teams message for `notification`.
pub fn message(notification: &Notification) -> Value {
    let color = match notification.status {
        NotificationStatus::Firing => "Attention",
        NotificationStatus::Resolved => "Good",
    };
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": notification.summary(),
        "weight": "Bolder",
        "size": "Medium",
        "color": color,
        "wrap": true
    })];
    for alert in notification.alerts.iter().take(MAX_ALERTS) {
        let mut facts = vec![
            json!({"title": "Alert", "value": alert.title}),
            json!({"title": "Status", "value": alert.status.as_str()}),
            json!({"title": "Severity", "value": alert.severity.as_str()}),
            json!({"title": "Fingerprint", "value": alert.id}),
        ];
        if let (Some(value), Some(threshold)) = (alert.value, alert.threshold) {
            facts.push(
                json!({"title": "Value", "value": format!("{value} (threshold {threshold})")}),
            );
        }
        if let Some(message) = &alert.message {
            facts.push(json!({"title": "Details", "value": message}));
        }
        body.push(json!({"type": "FactSet", "separator": true, "facts": facts}));
    }
    let hidden = notification.alerts.len().saturating_sub(MAX_ALERTS);
    if hidden > 0 {
        body.push(json!({"type": "TextBlock", "text": format!("{hidden} more alerts not shown"), "wrap": true}));
    }
    let actions: Vec<Value> = notification
        .links
        .iter()
        .zip(&notification.alerts)
        .take(MAX_ACTIONS)
        .map(|(link, alert)| json!({"type": "Action.OpenUrl", "title": format!("Open {}", alert.id), "url": link}))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions
            }
        }]
    })
}
