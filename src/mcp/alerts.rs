//! Alert tools: `alerts_get_active`, `alerts_acknowledge`, `alerts_resolve`,
//! `alerts_create_custom`.
//!
//! People's actions enter the pipeline as `alert_command` events (written ahead like any
//! event), so the alert lifecycle is a function of the event log. A tool submits its
//! command, then waits (bounded) until the alert operator has applied it and the views
//! show the result — or the operator's reason for refusing it.

use std::collections::BTreeMap;
use std::time::Duration;

use megamind_dataflows::model::{AlertAction, AlertCommand, AlertRecord, AlertStatus, Severity};
use megamind_dataflows::operators::manage_alerts::custom_alert_id;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{limit, ToolError};
use super::McpContext;

/// How long a tool waits for its command to show in the alert state. Commands apply once
/// the watermark passes them: with the next events, or the next idle tick.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// Severity names.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum SeverityParam {
    /// Informational.
    Low,
    /// Needs attention soon.
    Medium,
    /// Needs attention now.
    High,
    /// Wake someone up.
    Critical,
}

impl From<SeverityParam> for Severity {
    fn from(severity: SeverityParam) -> Self {
        match severity {
            SeverityParam::Low => Severity::Low,
            SeverityParam::Medium => Severity::Medium,
            SeverityParam::High => Severity::High,
            SeverityParam::Critical => Severity::Critical,
        }
    }
}

/// Parameters of `alerts_get_active`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveParams {
    /// Only alerts at or above this severity.
    #[serde(default)]
    pub min_severity: Option<SeverityParam>,
    /// Only alerts of exactly these severities.
    #[serde(default)]
    pub severity: Vec<SeverityParam>,
    /// Only alerts in this state.
    #[serde(default)]
    pub state: Option<StateParam>,
    /// Only alerts carrying all these labels (the alert's own or its series').
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only alerts about this session's series (or labelled `session=<id>`).
    #[serde(default)]
    pub session: Option<String>,
    /// Most alerts returned (1–1000, default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}

/// States an active alert can be in.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StateParam {
    /// Nobody has taken it yet.
    Firing,
    /// Somebody is on it.
    Acknowledged,
    /// The condition holds, but not yet for its rule's `for` duration (never notified).
    Pending,
}

impl ActiveParams {
    /// Whether `alert` passes every filter given.
    pub fn accepts(&self, alert: &AlertRecord) -> bool {
        let minimum: Option<Severity> = self.min_severity.map(Into::into);
        let label = |name: &str| {
            alert
                .labels
                .iter()
                .chain(alert.key.iter().flat_map(|key| key.labels.iter()))
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        minimum.is_none_or(|minimum| alert.severity >= minimum)
            && (self.severity.is_empty()
                || self
                    .severity
                    .iter()
                    .any(|severity| Severity::from(*severity) == alert.severity))
            && self.state.is_none_or(|state| match state {
                StateParam::Firing => alert.status == AlertStatus::Firing,
                StateParam::Acknowledged => alert.status == AlertStatus::Acknowledged,
                StateParam::Pending => alert.status == AlertStatus::Pending,
            })
            && self
                .labels
                .iter()
                .all(|(name, value)| label(name) == Some(value.as_str()))
            && self.session.as_deref().is_none_or(|session| {
                alert.key.as_ref().and_then(|key| key.session_id.as_deref()) == Some(session)
                    || label("session") == Some(session)
            })
    }
}

/// Active alerts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActiveResult {
    /// Number returned.
    pub count: usize,
    /// Active alerts per status (`firing`, `acknowledged`).
    pub by_status: BTreeMap<String, usize>,
    /// Firing first, then acknowledged, then pending; most severe and most recent first.
    /// Each carries `inhibited_by` (the alert whose inhibition mutes it now) and
    /// `suppressed_by` (notifications held back by `cooldown`, `silence` and `rate_limit`)
    /// when those apply.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub alerts: Vec<AlertRecord>,
}

/// `alerts_get_active`.
///
/// # Errors
/// An out-of-range limit.
pub fn active(context: &McpContext, params: &ActiveParams) -> Result<ActiveResult, ToolError> {
    let limit = limit("limit", params.limit, 100, 1000)?;
    if params.session.as_deref() == Some("") {
        return Err(ToolError::invalid("session", "must not be empty"));
    }
    let mut alerts: Vec<AlertRecord> = context
        .app
        .views
        .alerts(true)
        .into_iter()
        .filter(|alert| params.accepts(alert))
        .collect();
    let mut by_status = BTreeMap::new();
    for alert in &alerts {
        *by_status
            .entry(alert.status.as_str().to_owned())
            .or_insert(0) += 1;
    }
    alerts.truncate(limit);
    // Inhibition and the rate limit act in the dispatcher, not the dataflow: add what it
    // knows (`inhibited_by`, `suppressed_by.rate_limit`).
    context.app.dispatch.metrics().annotate(&mut alerts);
    Ok(ActiveResult {
        count: alerts.len(),
        by_status,
        alerts,
    })
}

/// Parameters of `alerts_acknowledge` and `alerts_resolve`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActParams {
    /// The alert's id (its fingerprint, or a custom alert's id).
    pub alert_id: String,
    /// Who acts (recorded on the alert).
    #[serde(default)]
    pub actor: Option<String>,
    /// Why (recorded on the alert); `comment` is accepted as another name.
    #[serde(default, alias = "comment")]
    pub note: Option<String>,
}

/// The alert after a person's action.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActResult {
    /// The alert as the pipeline now holds it.
    #[schemars(with = "serde_json::Value")]
    pub alert: AlertRecord,
}

async fn submit(context: &McpContext, command: serde_json::Value) -> Result<(), ToolError> {
    let result = super::events::ingest_objects(context, vec![command]).await?;
    match result.rejected.into_iter().next() {
        Some(rejection) => Err(ToolError(format!(
            "invalid `{}`: {}",
            rejection.field.unwrap_or_else(|| "command".to_owned()),
            rejection.message
        ))),
        None => Ok(()),
    }
}

/// Waits until `done` accepts the alert's state, or the operator rejects a command on it.
async fn wait_for(
    context: &McpContext,
    id: &str,
    since: u64,
    done: impl Fn(&AlertRecord) -> bool,
) -> Result<AlertRecord, ToolError> {
    let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
    loop {
        if let Some(record) = context.app.views.alert(id).filter(|record| done(record)) {
            return Ok(context.app.dispatch.metrics().annotated(record));
        }
        if let Some(rejection) = context.app.views.rejection(id, since) {
            return Err(ToolError::refused(format!(
                "alert {id:?}: {}",
                rejection.reason
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ToolError::refused(format!(
                "the command on alert {id:?} was recorded but not applied within {}s; \
                 check alerts_get_active",
                APPLY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn check_text(field: &str, value: Option<&String>, max: usize) -> Result<(), ToolError> {
    match value {
        Some(text) if text.len() > max => Err(ToolError::invalid(
            field,
            format!("is longer than {max} bytes"),
        )),
        _ => Ok(()),
    }
}

async fn act(
    context: &McpContext,
    params: &ActParams,
    action: AlertAction,
) -> Result<ActResult, ToolError> {
    if params.alert_id.is_empty() {
        return Err(ToolError::invalid("alert_id", "must not be empty"));
    }
    check_text("actor", params.actor.as_ref(), 256)?;
    check_text("note", params.note.as_ref(), 8192)?;
    let Some(current) = context.app.views.alert(&params.alert_id) else {
        return Err(ToolError::invalid(
            "alert_id",
            format!("no alert {:?} (see alerts_get_active)", params.alert_id),
        ));
    };
    if current.status == AlertStatus::Resolved {
        return Err(ToolError::refused(format!(
            "alert {:?} is already resolved",
            params.alert_id
        )));
    }
    let now = context.app.ingest.clock().now_ms();
    let actor = params.actor.clone().unwrap_or_else(|| "mcp".to_owned());
    let mut command = json!({
        "type": "alert_command",
        "ts": now,
        "command": action.as_str(),
        "alert_id": params.alert_id,
        "actor": actor,
    });
    if let (Some(note), Some(map)) = (&params.note, command.as_object_mut()) {
        map.insert("note".into(), json!(note));
    }
    submit(context, command).await?;
    let alert = wait_for(context, &params.alert_id, now, |record| match action {
        AlertAction::Acknowledge => record
            .acknowledged
            .as_ref()
            .is_some_and(|act| act.at >= now),
        _ => record.status == AlertStatus::Resolved,
    })
    .await?;
    Ok(ActResult { alert })
}

/// `alerts_acknowledge`.
///
/// # Errors
/// Unknown or resolved alert, a refused command, or no answer in time.
pub async fn acknowledge(context: &McpContext, params: &ActParams) -> Result<ActResult, ToolError> {
    act(context, params, AlertAction::Acknowledge).await
}

/// `alerts_resolve`.
///
/// # Errors
/// Unknown or resolved alert, a refused command, or no answer in time.
pub async fn resolve(context: &McpContext, params: &ActParams) -> Result<ActResult, ToolError> {
    act(context, params, AlertAction::Resolve).await
}

/// Parameters of `alerts_create_custom`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// One-line summary.
    pub title: String,
    /// Severity (default medium).
    #[serde(default)]
    pub severity: Option<SeverityParam>,
    /// Details.
    #[serde(default)]
    pub message: Option<String>,
    /// Labels for routing and grouping.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An id of your choice (default: derived from the content and time).
    #[serde(default)]
    pub alert_id: Option<String>,
    /// Who raises it.
    #[serde(default)]
    pub actor: Option<String>,
}

/// `alerts_create_custom`.
///
/// # Errors
/// Invalid fields, an id already active, a refused command, or no answer in time.
pub async fn create(context: &McpContext, params: &CreateParams) -> Result<ActResult, ToolError> {
    if params.title.trim().is_empty() {
        return Err(ToolError::invalid("title", "must not be empty"));
    }
    check_text("title", Some(&params.title), 8192)?;
    check_text("message", params.message.as_ref(), 8192)?;
    if params.alert_id.as_deref() == Some("") {
        return Err(ToolError::invalid("alert_id", "must not be empty"));
    }
    let now = context.app.ingest.clock().now_ms();
    let severity: Severity = params.severity.unwrap_or(SeverityParam::Medium).into();
    let id = params.alert_id.clone().unwrap_or_else(|| {
        custom_alert_id(
            now,
            &AlertCommand {
                title: Some(params.title.clone()),
                severity: Some(severity),
                labels: params
                    .labels
                    .iter()
                    .map(|(key, value)| (key.as_str().into(), value.as_str().into()))
                    .collect(),
                message: params.message.clone(),
                ..AlertCommand::new(AlertAction::Create)
            },
        )
    });
    if context
        .app
        .views
        .alert(&id)
        .is_some_and(|alert| alert.status.is_active())
    {
        return Err(ToolError::invalid(
            "alert_id",
            format!("an active alert {id:?} already exists"),
        ));
    }
    let mut command = json!({
        "type": "alert_command",
        "ts": now,
        "command": "create",
        "alert_id": id,
        "title": params.title,
        "severity": severity.as_str(),
        "actor": params.actor.clone().unwrap_or_else(|| "mcp".to_owned()),
    });
    if let Some(map) = command.as_object_mut() {
        if let Some(message) = &params.message {
            map.insert("message".into(), json!(message));
        }
        if !params.labels.is_empty() {
            map.insert("labels".into(), json!(params.labels));
        }
    }
    submit(context, command).await?;
    let alert = wait_for(context, &id, now, |record| {
        record.status.is_active() && record.since >= now && record.rule_id.is_none()
    })
    .await?;
    Ok(ActResult { alert })
}

#[cfg(test)]
mod tests {
    use megamind_dataflows::model::SeriesKey;

    use super::*;

    fn alert(severity: Severity, status: AlertStatus, session: Option<&str>) -> AlertRecord {
        AlertRecord {
            rule_id: Some("r".into()),
            key: Some(SeriesKey {
                name: "latency_ms".into(),
                session_id: session.map(Into::into),
                labels: vec![("region".into(), "eu".into())],
            }),
            labels: vec![("team".into(), "db".into())],
            fired: 1,
            ..AlertRecord::new("a".to_owned(), "t".to_owned(), severity, status, 0)
        }
    }

    fn params(json: serde_json::Value) -> ActiveParams {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn active_filters_combine() {
        let high = alert(Severity::High, AlertStatus::Firing, Some("s1"));
        let low_acked = alert(Severity::Low, AlertStatus::Acknowledged, None);
        let accepts =
            |filter: serde_json::Value, alert: &AlertRecord| params(filter).accepts(alert);
        assert!(accepts(json!({}), &high));
        assert!(accepts(json!({"severity": ["high", "critical"]}), &high));
        assert!(!accepts(json!({"severity": ["critical"]}), &high));
        assert!(!accepts(json!({"min_severity": "medium"}), &low_acked));
        assert!(accepts(json!({"state": "acknowledged"}), &low_acked));
        assert!(!accepts(json!({"state": "firing"}), &low_acked));
        let pending = alert(Severity::High, AlertStatus::Pending, None);
        assert!(accepts(json!({"state": "pending"}), &pending));
        assert!(!accepts(json!({"state": "pending"}), &high));
        assert!(!accepts(json!({"state": "firing"}), &pending));
        assert!(accepts(
            json!({"labels": {"team": "db", "region": "eu"}}),
            &high
        ));
        assert!(!accepts(json!({"labels": {"team": "web"}}), &high));
        assert!(accepts(json!({"session": "s1"}), &high));
        assert!(!accepts(json!({"session": "s2"}), &high));
        assert!(!accepts(json!({"session": "s1"}), &low_acked));
        assert!(serde_json::from_value::<ActiveParams>(json!({"state": "resolved"})).is_err());
        let act: ActParams =
            serde_json::from_value(json!({"alert_id": "a", "actor": "ana", "comment": "done"}))
                .unwrap();
        assert_eq!(act.note.as_deref(), Some("done"));
    }
}
