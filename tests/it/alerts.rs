//! Alert notifications end to end: alert commands posted over HTTP go through the
//! dataflow, the routing/grouping dispatcher and the webhook channel to a real HTTP
//! receiver, signed with HMAC-SHA256; a restart (SIGKILL, replay of the event log) does
//! not notify the replayed alert changes again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use megamind_connectors::notify::webhook;
use serde_json::{json, Value};

use crate::mcp::{mcp_call, MODERN, TOKEN};
use crate::ml::websocket_updates;
use crate::support::{eventually, Server};

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "it-webhook-secret";

/// A real HTTP server on its own runtime, recording every verified POST body.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook receiver");
        listener.set_nonblocking(true).expect("webhook receiver");
        let url = format!(
            "http://{}/hook",
            listener.local_addr().expect("webhook receiver")
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let seen = Arc::clone(&bodies);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("webhook receiver");
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let timestamp: u64 = headers[webhook::TIMESTAMP_HEADER]
                                .to_str()
                                .expect("webhook receiver")
                                .parse()
                                .expect("webhook receiver");
                            let signature = headers[webhook::SIGNATURE_HEADER]
                                .to_str()
                                .expect("webhook receiver");
                            if !webhook::verify(SECRET.as_bytes(), timestamp, &body, signature) {
                                return axum::http::StatusCode::UNAUTHORIZED;
                            }
                            seen.lock()
                                .expect("webhook receiver")
                                .push(serde_json::from_slice(&body).expect("webhook receiver"));
                            axum::http::StatusCode::NO_CONTENT
                        }
                    }),
                );
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("webhook receiver");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("webhook receiver");
            });
        });
        Self {
            url,
            bodies,
            stop: Some(stop),
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("webhook receiver").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The overrides that send every alert to `receiver` (signed), one group per alert with
/// short waits, then `extra`.
fn webhook_overrides<'a>(
    receiver: &'a Receiver,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut overrides = vec![
        ("MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__TYPE", "webhook"),
        (
            "MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__URL",
            receiver.url.as_str(),
        ),
        ("MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__SECRET", SECRET),
        ("MEGAMIND__ALERTS__ROUTING__CHANNELS", r#"["hook"]"#),
        ("MEGAMIND__ALERTS__ROUTING__GROUP_WAIT", "100ms"),
        ("MEGAMIND__ALERTS__ROUTING__GROUP_INTERVAL", "200ms"),
    ];
    overrides.extend_from_slice(extra);
    overrides
}

fn ids(notification: &Value) -> Vec<String> {
    notification["alerts"]
        .as_array()
        .expect("webhook receiver")
        .iter()
        .map(|alert| alert["id"].as_str().expect("webhook receiver").to_owned())
        .collect()
}

fn create(id: &str) -> String {
    json!({"type": "alert_command", "command": "create", "alert_id": id, "title": format!("{id} is full"),
           "severity": "high", "labels": {"team": "db"}, "actor": "ana"})
    .to_string()
}

#[test]
fn alert_changes_reach_a_signed_webhook_grouped_and_are_not_resent_after_restart() {
    let receiver = Receiver::start();
    let overrides = [
        ("MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__TYPE", "webhook"),
        (
            "MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__URL",
            receiver.url.as_str(),
        ),
        ("MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__SECRET", SECRET),
        ("MEGAMIND__ALERTS__ROUTING__CHANNELS", r#"["hook"]"#),
        ("MEGAMIND__ALERTS__ROUTING__GROUP_BY", r#"["team"]"#),
        ("MEGAMIND__ALERTS__ROUTING__GROUP_WAIT", "300ms"),
        ("MEGAMIND__ALERTS__ROUTING__GROUP_INTERVAL", "600ms"),
        ("MEGAMIND__ALERTS__PUBLIC_URL", "http://megamind.test"),
    ];
    let server = Server::start(&overrides);
    server.post_events_ok(format!("{}\n{}\n", create("disk-1"), create("disk-2")), 2);
    let first = eventually("the first grouped notification", WAIT, || {
        receiver
            .bodies()
            .into_iter()
            .find(|body| ids(body).len() == 2)
            .ok_or_else(|| {
                format!(
                    "{:?} {:?} {:?} {}",
                    receiver.bodies(),
                    server.get("/v1/alerts/notifications"),
                    server.get("/v1/status"),
                    server.log()
                )
            })
    });
    assert_eq!(first["group"], "team=db");
    assert_eq!(first["group_labels"], json!({"team": "db"}));
    assert_eq!(first["status"], "firing");
    assert_eq!(first["reason"], "new");
    assert_eq!(
        ids(&first),
        vec!["disk-1", "disk-2"],
        "one notification for the group"
    );
    assert_eq!(first["links"][0], "http://megamind.test/v1/alerts/disk-1");
    assert_eq!(
        receiver.bodies().len(),
        1,
        "both alerts arrived within group_wait: one notification"
    );

    // A person acknowledges: the group is notified again (an update), with who and when.
    let ack = json!({"type": "alert_command", "command": "acknowledge", "alert_id": "disk-1",
                     "actor": "bob", "note": "on it"});
    server.post_events_ok(format!("{ack}\n"), 1);
    let update = eventually("the update notification", WAIT, || {
        receiver
            .bodies()
            .into_iter()
            .find(|body| body["reason"] == "update")
            .ok_or_else(|| format!("{:?}", receiver.bodies()))
    });
    let disk_1 = &update["alerts"][0];
    assert_eq!(disk_1["status"], "acknowledged");
    assert_eq!(disk_1["acknowledged"]["by"], "bob");
    assert_eq!(disk_1["acknowledged"]["note"], "on it");

    let (status, alert) = server.get("/v1/alerts/disk-1");
    assert_eq!((status, &alert["status"]), (200, &json!("acknowledged")));
    let (status, _) = server.get("/v1/alerts/nope");
    assert_eq!(status, 404);
    let (_, counts) = server.get("/v1/alerts/notifications");
    let hook = counts["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "hook")
        .cloned()
        .unwrap();
    assert_eq!(hook["sent"], 2, "{counts}");
    assert_eq!(hook["failed_attempts"], 0, "{counts}");
    assert_eq!(hook["kind"], "webhook");
    let stats = &counts["alerts"];
    assert_eq!(stats["active_by_severity"], json!({"high": 2}), "{counts}");
    assert_eq!(stats["active_by_rule"], json!({"custom": 2}), "{counts}");
    assert_eq!(stats["acknowledged"], 1, "{counts}");
    assert!(
        stats["mean_time_to_acknowledge_ms"].as_u64().is_some(),
        "{counts}"
    );
    assert_eq!(counts["dispatch"]["dropped"], 0, "{counts}");
    let (_, prometheus) = server.get_text("/metrics");
    assert!(
        prometheus.contains("megamind_notify_sent_total{channel=\"hook\",type=\"webhook\"} 2"),
        "{prometheus}"
    );

    // SIGKILL and restart on the same store: the replayed alerts are back, but not
    // notified again; a new alert is.
    let before = receiver.bodies().len();
    let dir = server.kill();
    let server = Server::start_in(dir, &overrides);
    eventually("the replayed alert", WAIT, || {
        let (status, alert) = server.get("/v1/alerts/disk-1");
        (status == 200 && alert["status"] == "acknowledged")
            .then_some(())
            .ok_or_else(|| format!("{status} {alert}"))
    });
    server.post_events_ok(format!("{}\n", create("disk-3")), 1);
    eventually("the notification of disk-3", WAIT, || {
        receiver
            .bodies()
            .iter()
            .any(|body| ids(body).contains(&"disk-3".to_owned()))
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "{:?} {:?} {:?}",
                    server.get("/v1/alerts/notifications"),
                    server.get("/v1/alerts/disk-3"),
                    server.get("/v1/status")
                )
            })
    });
    for body in &receiver.bodies()[before..] {
        assert_eq!(
            ids(body),
            vec!["disk-3"],
            "replayed alerts were notified again: {body}"
        );
    }
    drop(server);
}

/// Escalation end to end: an unacknowledged custom alert escalates when event time (here the
/// idle wall-clock advance of the watermark) passes its first step, goes to the step's
/// channel as an `escalation` notification, and shows who/when/why in `/v1/alerts`; an
/// alert acknowledged first does not escalate.
#[test]
fn unacknowledged_alert_escalates_to_the_step_channel() {
    let receiver = Receiver::start();
    // Alerts go to the log (a later override wins); only the escalation step adds the hook.
    let overrides = webhook_overrides(
        &receiver,
        &[
            ("MEGAMIND__ALERTS__ROUTING__CHANNELS", r#"["log"]"#),
            (
                "MEGAMIND__ALERTS__ESCALATIONS",
                r#"[{severity = ["high"], steps = [{after = "2s", channels = ["hook"], raise_to = "critical"}]}]"#,
            ),
        ],
    );
    let server = Server::start(&overrides);
    let ack = json!({"type": "alert_command", "command": "acknowledge", "alert_id": "quiet",
                     "actor": "bob"});
    server.post_events_ok(format!("{}\n{}\n", create("loud"), create("quiet")), 2);
    server.post_events_ok(format!("{ack}\n"), 1);
    let escalation = eventually("the escalation notification", WAIT, || {
        receiver
            .bodies()
            .into_iter()
            .find(|body| body["reason"] == "escalation")
            .ok_or_else(|| {
                format!(
                    "{:?} {:?} {:?}",
                    receiver.bodies(),
                    server.get("/v1/alerts?state=all"),
                    server.get("/v1/alerts/notifications")
                )
            })
    });
    assert_eq!(ids(&escalation), vec!["loud"]);
    let loud = &escalation["alerts"][0];
    assert_eq!(loud["severity"], "critical", "{loud}");
    assert_eq!(loud["escalation_step"], 1, "{loud}");
    assert_eq!(loud["escalated"]["by"], "escalation", "{loud}");
    assert_eq!(
        loud["escalated"]["note"],
        "step 1: unacknowledged for 2s; severity high -> critical; notify hook"
    );
    let since = loud["since"].as_u64().unwrap();
    assert!(
        loud["escalated"]["at"].as_u64().unwrap() == since + 2_000,
        "the step is at since + after (event time): {loud}"
    );
    let (_, quiet) = server.get("/v1/alerts/quiet");
    assert_eq!(quiet["status"], "acknowledged", "{quiet}");
    assert!(
        quiet.get("escalated").is_none(),
        "acknowledged first: {quiet}"
    );
    let (_, counts) = server.get("/v1/alerts/notifications");
    assert_eq!(counts["alerts"]["escalated"], 1, "{counts}");
    let (_, status) = server.get("/v1/status");
    assert_eq!(status["alerts"]["escalated"], 1, "{status}");
    assert_eq!(status["alerts"]["by_status"]["acknowledged"], 1, "{status}");
    assert!(
        status["alerts"]["notifications"]["channels"]
            .as_array()
            .is_some_and(|channels| channels.iter().any(|c| c["channel"] == "hook")),
        "{status}"
    );
    let (_, prometheus) = server.get_text("/metrics");
    assert!(
        prometheus.contains("megamind_alerts_escalated 1"),
        "{prometheus}"
    );
    for body in receiver.bodies() {
        assert!(
            !ids(&body).contains(&"quiet".to_owned()),
            "the acknowledged alert reached the escalation channel: {body}"
        );
    }
}

/// Pending and templates end to end: a rule with a long `for` shows its alert as `pending`
/// in `/v1/alerts` and `/v1/status` but never notifies it; a rule without `for` fires with
/// its summary and annotations rendered from templates, and only that alert reaches the
/// webhook.
#[test]
fn pending_alerts_are_visible_not_notified_and_templates_render() {
    let receiver = Receiver::start();
    let rules = concat!(
        r#"[{id = "slow", metric = "it_latency", aggregate = "max", op = ">", "#,
        r#"threshold = 10.0, severity = "high", for = "1h"}, "#,
        r#"{id = "fast", metric = "it_latency", aggregate = "max", op = ">", "#,
        r#"threshold = 10.0, severity = "critical", "#,
        r#"summary = "{{ $labels.team }} latency {{ $value }} > {{ $threshold }}", "#,
        r#"annotations = {runbook = "https://runbooks/{{ $rule }}/{{ $severity }}"}}]"#
    );
    let mut overrides = webhook_overrides(&receiver, &[("MEGAMIND__RULES", rules)]);
    overrides.extend(crate::support::SHORT_WINDOWS);
    let server = Server::start(&overrides);
    let now = crate::support::now_ms();
    let metric = json!({"type": "metric", "name": "it_latency", "value": 42.5,
                        "labels": {"team": "api"}, "ts": now});
    server.post_events_ok(format!("{metric}\n"), 1);
    let notified = eventually("the notification of the fast rule", WAIT, || {
        receiver
            .bodies()
            .into_iter()
            .find(|body| body["status"] == "firing")
            .ok_or_else(|| format!("{:?} {:?}", receiver.bodies(), server.get("/v1/alerts")))
    });
    let fast = &notified["alerts"][0];
    assert_eq!(fast["rule_id"], "fast", "{notified}");
    assert_eq!(fast["title"], "api latency 42.5 > 10", "{fast}");
    assert_eq!(
        fast["annotations"]["runbook"], "https://runbooks/fast/critical",
        "{fast}"
    );
    let (_, alerts) = server.get("/v1/alerts");
    let slow = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["rule_id"] == "slow")
        .cloned()
        .unwrap_or_else(|| panic!("no pending alert of rule slow in {alerts}"));
    assert_eq!(slow["status"], "pending", "{slow}");
    assert_eq!(slow["fired"], 0, "{slow}");
    let (_, status) = server.get("/v1/status");
    assert_eq!(status["alerts"]["by_status"]["pending"], 1, "{status}");
    assert_eq!(
        status["firing_alerts"], 1,
        "pending is not firing: {status}"
    );
    for body in receiver.bodies() {
        for alert in body["alerts"].as_array().unwrap() {
            assert_ne!(
                alert["rule_id"], "slow",
                "a pending alert was notified: {body}"
            );
        }
    }
}

/// Silences end to end over HTTP: `POST /v1/silences` mutes matching alerts (counted on
/// the alert with the reason, not sent), other alerts still go out; `DELETE` ends the
/// silence and the muted alert that is still firing is notified then; bad matchers are
/// rejected naming the field; `GET /v1/silences` lists them with who/when.
#[test]
fn silences_mute_matching_alerts_and_release_them_when_expired() {
    let receiver = Receiver::start();
    let overrides = webhook_overrides(&receiver, &[]);
    let server = Server::start(&overrides);
    let (status, answer) = server.post(
        "/v1/silences",
        json!({"id": "db-maint", "matchers": "team=\"db\", severity=~\"high|critical\"",
               "duration": "1h", "actor": "ana", "note": "db upgrade"})
        .to_string(),
    );
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let (status, answer) = server.post(
        "/v1/silences",
        json!({"id": "bad", "matchers": "team=~\"(\"", "duration": "1h"}).to_string(),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "matchers", "{answer}");
    let silence = eventually("the silence in /v1/silences", WAIT, || {
        let (_, silences) = server.get("/v1/silences");
        silences
            .as_array()
            .and_then(|list| list.iter().find(|s| s["id"] == "db-maint").cloned())
            .ok_or_else(|| format!("{silences}"))
    });
    assert_eq!(silence["created"]["by"], "ana", "{silence}");
    assert_eq!(silence["matchers"][0]["op"], "=", "{silence}");
    assert_eq!(silence["matchers"][1]["op"], "=~", "{silence}");
    let web = json!({"type": "alert_command", "command": "create", "alert_id": "web-1",
                     "title": "web down", "severity": "high", "labels": {"team": "web"}});
    server.post_events_ok(format!("{}\n{web}\n", create("disk-1")), 2);
    eventually("the notification of web-1", WAIT, || {
        receiver
            .bodies()
            .iter()
            .any(|body| ids(body).contains(&"web-1".to_owned()))
            .then_some(())
            .ok_or_else(|| format!("{:?}", receiver.bodies()))
    });
    let (_, disk) = server.get("/v1/alerts/disk-1");
    assert_eq!(disk["status"], "firing", "{disk}");
    assert_eq!(disk["suppressed"], 1, "{disk}");
    assert_eq!(disk["suppression"]["by"], "silence", "{disk}");
    assert!(
        disk["suppression"]["note"]
            .as_str()
            .is_some_and(|note| note.starts_with("silenced by db-maint until ")),
        "{disk}"
    );
    let (status, answer) = server.delete("/v1/silences/db-maint");
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let released = eventually("the released notification of disk-1", WAIT, || {
        receiver
            .bodies()
            .into_iter()
            .find(|body| ids(body).contains(&"disk-1".to_owned()))
            .ok_or_else(|| {
                format!(
                    "{:?} {:?} {:?}",
                    receiver.bodies(),
                    server.get("/v1/alerts/disk-1"),
                    server.get("/v1/silences")
                )
            })
    });
    assert_eq!(released["alerts"][0]["suppressed"], 1, "{released}");
    let (_, silences) = server.get("/v1/silences");
    let ended = silences
        .as_array()
        .and_then(|list| list.iter().find(|s| s["id"] == "db-maint").cloned())
        .unwrap();
    assert_eq!(ended["expired"]["by"], "http", "{ended}");
    // Expiring it again is refused (an alert command rejection), nothing else changes.
    let (status, _) = server.delete("/v1/silences/db-maint");
    assert_eq!(status, 200, "accepted as an event; the dataflow rejects it");
}

/// Inhibition end to end: a firing critical alert mutes the lower alerts of its team
/// (shown as `inhibited_by` over HTTP and MCP `alerts_get_active`, counted), not other
/// teams'; when it resolves, the muted alert that is still firing is notified.
#[test]
fn a_critical_alert_inhibits_lower_alerts_of_its_team() {
    let receiver = Receiver::start();
    let overrides = webhook_overrides(
        &receiver,
        &[
            (
                "MEGAMIND__ALERTS__ROUTING__INHIBIT_RULES",
                r#"[{source = 'severity="critical"', target = 'severity=~"low|medium|high"', equal = ["team"]}]"#,
            ),
            ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
        ],
    );
    let server = Server::start(&overrides);
    let alert = |id: &str, severity: &str, team: &str| {
        json!({"type": "alert_command", "command": "create", "alert_id": id, "title": id,
               "severity": severity, "labels": {"team": team}})
        .to_string()
    };
    let sent = |id: &str| {
        receiver
            .bodies()
            .iter()
            .any(|body| ids(body).contains(&id.to_owned()))
    };
    server.post_events_ok(format!("{}\n", alert("db-crit", "critical", "db")), 1);
    eventually("the critical notification", WAIT, || {
        sent("db-crit")
            .then_some(())
            .ok_or_else(|| format!("{:?}", receiver.bodies()))
    });
    server.post_events_ok(
        format!(
            "{}\n{}\n",
            alert("db-high", "high", "db"),
            alert("web-high", "high", "web")
        ),
        2,
    );
    eventually("the web notification", WAIT, || {
        sent("web-high")
            .then_some(())
            .ok_or_else(|| format!("{:?}", receiver.bodies()))
    });
    let muted = eventually("db-high shown as inhibited", WAIT, || {
        let (_, alert) = server.get("/v1/alerts/db-high");
        (alert["inhibited_by"] == "db-crit")
            .then_some(alert.clone())
            .ok_or_else(|| format!("{alert} {:?}", server.get("/v1/alerts/notifications")))
    });
    assert_eq!(muted["status"], "firing", "{muted}");
    let (_, counts) = server.get("/v1/alerts/notifications");
    assert_eq!(counts["dispatch"]["inhibited"], 1, "{counts}");
    assert_eq!(counts["muted"], json!({"db-high": "db-crit"}), "{counts}");
    let (_, prometheus) = server.get_text("/metrics");
    assert!(
        prometheus.contains("megamind_notify_inhibited_total 1"),
        "{prometheus}"
    );
    let active = mcp_call(&server.mcp_url(), MODERN, "alerts_get_active", &json!({}));
    let listed = &active["structuredContent"]["alerts"];
    let by_id = |id: &str| {
        listed
            .as_array()
            .and_then(|alerts| alerts.iter().find(|alert| alert["id"] == id))
            .unwrap_or_else(|| panic!("{id} not in alerts_get_active: {active}"))
    };
    assert_eq!(by_id("db-high")["inhibited_by"], "db-crit", "{active}");
    assert!(by_id("web-high").get("inhibited_by").is_none(), "{active}");
    assert!(!sent("db-high"), "a muted alert was notified");
    let resolve = json!({"type": "alert_command", "command": "resolve", "alert_id": "db-crit",
                         "actor": "ana"});
    server.post_events_ok(format!("{resolve}\n"), 1);
    eventually("db-high released", WAIT, || {
        sent("db-high")
            .then_some(())
            .ok_or_else(|| format!("{:?}", receiver.bodies()))
    });
    let (_, alert) = server.get("/v1/alerts/db-high");
    assert!(alert.get("inhibited_by").is_none(), "{alert}");
}

/// Rules created and deleted at run time over HTTP: `POST /v1/rules` adds a rule (as a
/// `create_rule` event), its alert fires from live metrics; a bad rule is rejected naming
/// the field; `DELETE /v1/rules/{id}` removes it and its alert resolves; `GET /v1/rules`
/// follows.
#[test]
fn rules_are_created_and_deleted_at_run_time() {
    let mut overrides = vec![
        ("MEGAMIND__ALERTS__ROUTING__GROUP_WAIT", "100ms"),
        ("MEGAMIND__RULES", "[]"),
    ];
    overrides.extend(crate::support::SHORT_WINDOWS);
    let server = Server::start(&overrides);
    let (status, answer) = server.post(
        "/v1/rules",
        json!({"id": "rt_slow", "metric": "rt_latency", "aggregate": "max", "op": ">",
               "threshold": 10.0, "severity": "high",
               "summary": "latency {{ $value }}"})
        .to_string(),
    );
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let (status, answer) = server.post(
        "/v1/rules",
        json!({"id": "bad", "metric": "x", "aggregate": "median", "op": ">",
               "threshold": 1.0, "severity": "high"})
        .to_string(),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "rule", "{answer}");
    eventually("the rule in /v1/rules", WAIT, || {
        let (_, rules) = server.get("/v1/rules");
        (rules.as_array().map(Vec::len) == Some(1) && rules[0]["id"] == "rt_slow")
            .then_some(())
            .ok_or_else(|| format!("{rules}"))
    });
    let metric = |value: f64| {
        json!({"type": "metric", "name": "rt_latency", "value": value,
               "ts": crate::support::now_ms()})
        .to_string()
    };
    server.post_events_ok(format!("{}\n", metric(42.0)), 1);
    let fired = eventually("the run-time rule's alert", WAIT, || {
        let (_, alerts) = server.get("/v1/alerts");
        alerts
            .as_array()
            .and_then(|list| list.iter().find(|a| a["rule_id"] == "rt_slow").cloned())
            .filter(|alert| alert["status"] == "firing")
            .ok_or_else(|| format!("{alerts}"))
    });
    assert_eq!(
        fired["title"], "latency 42",
        "templates of run-time rules: {fired}"
    );
    let id = fired["id"].as_str().unwrap().to_owned();
    let (status, answer) = server.delete("/v1/rules/rt_slow");
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let resolved = eventually("the alert of the deleted rule resolved", WAIT, || {
        let (_, alert) = server.get(&format!("/v1/alerts/{id}"));
        (alert["status"] == "resolved")
            .then_some(alert.clone())
            .ok_or_else(|| format!("{alert}"))
    });
    assert_eq!(resolved["resolved"]["by"], "rule", "{resolved}");
    let (_, rules) = server.get("/v1/rules");
    assert_eq!(rules, json!([]), "{rules}");

    // Forecasts on run-time rules, as on config rules: the horizon is validated, and a
    // rule with one raises a predictive alert (`<id>.forecast`) while the series'
    // forecast crosses the threshold before the series does.
    let (status, answer) = server.post(
        "/v1/rules",
        json!({"id": "bad_horizon", "metric": "x", "aggregate": "max", "op": ">",
               "threshold": 1.0, "severity": "high", "forecast": "0s"})
        .to_string(),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "rule", "{answer}");
    assert!(
        answer["rejected"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("forecast must be between 1s and 7days")),
        "{answer}"
    );
    let (status, answer) = server.post(
        "/v1/rules",
        json!({"id": "rt_grow", "metric": "rt_growth", "aggregate": "mean", "op": ">",
               "threshold": 1000.0, "severity": "medium", "forecast": "1h"})
        .to_string(),
    );
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    eventually("rt_grow in /v1/rules", WAIT, || {
        let (_, rules) = server.get("/v1/rules");
        (rules.as_array().map(Vec::len) == Some(1) && rules[0]["forecast"] == "1h")
            .then_some(())
            .ok_or_else(|| format!("{rules}"))
    });
    let start = crate::support::now_ms();
    let rising: String = (0..40u64)
        .map(|second| {
            let event = json!({"type": "metric", "name": "rt_growth",
                               "value": 10.0 * (second + 1) as f64,
                               "ts": start + second * 1000});
            format!("{event}\n")
        })
        .collect();
    server.post_events_ok(rising, 40);
    let predicted = eventually("the run-time rule's predictive alert", WAIT, || {
        let (_, alerts) = server.get("/v1/alerts");
        alerts
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|alert| alert["rule_id"] == "rt_grow.forecast")
                    .cloned()
            })
            .filter(|alert| alert["status"] == "firing")
            .ok_or_else(|| format!("{alerts}"))
    });
    assert!(
        predicted["value"]
            .as_f64()
            .is_some_and(|value| value < 1000.0),
        "predicted before the breach: {predicted}"
    );
}

/// SIGHUP reloads `[[rules]]` from the config file: the differences become rule events
/// (`GET /v1/rules` follows); a file with problems changes nothing.
#[test]
fn sighup_reloads_rules_from_the_config_file() {
    let rule = |id: &str, threshold: f64| {
        format!(
            "[[rules]]\nid = \"{id}\"\nmetric = \"x\"\naggregate = \"max\"\nop = \">\"\n\
             threshold = {threshold:?}\nseverity = \"high\"\n"
        )
    };
    let server = Server::start_with_config(&format!("{}{}", rule("a", 1.0), rule("b", 2.0)), &[]);
    let ids = || {
        let (_, rules) = server.get("/v1/rules");
        rules
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["threshold"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(), [("a".to_owned(), 1.0), ("b".to_owned(), 2.0)]);
    let silence = "[[alerts.silences]]\nid = \"hup\"\nmatchers = \"team=db\"\nduration = \"1h\"\n";
    std::fs::write(
        server.config_path(),
        format!("{}{}{silence}", rule("b", 5.0), rule("c", 3.0)),
    )
    .unwrap();
    server.signal_hangup();
    eventually("the reloaded rules", WAIT, || {
        let now = ids();
        (now == [("b".to_owned(), 5.0), ("c".to_owned(), 3.0)])
            .then_some(())
            .ok_or_else(|| format!("{now:?}\n{}", server.log()))
    });
    // A broken file changes nothing and says why in the log.
    std::fs::write(server.config_path(), "[[rules]]\nid = \"d\"\n").unwrap();
    server.signal_hangup();
    eventually("the reload problem in the log", WAIT, || {
        server
            .log()
            .contains("rules not reloaded")
            .then_some(())
            .ok_or_else(|| server.log())
    });
    assert_eq!(ids(), [("b".to_owned(), 5.0), ("c".to_owned(), 3.0)]);
    // The same reload brought the file's silence.
    let hup = eventually("the config silence reloaded by SIGHUP", WAIT, || {
        silence_by_id(&server, "hup").ok_or_else(|| server.log())
    });
    assert_eq!(hup["origin"], "config", "{hup}");
}

/// The global rate limit defers notifications and never drops them; each alert reports
/// how many of its notifications were held back, and why (`suppressed_by.rate_limit`),
/// over HTTP, MCP `alerts_get_active` and the `alerts` WebSocket topic; the counts
/// survive a restart.
#[test]
fn rate_limited_notifications_are_counted_on_the_alert() {
    let receiver = Receiver::start();
    let overrides = webhook_overrides(
        &receiver,
        &[
            // One notification at once, then one every 10 s.
            (
                "MEGAMIND__ALERTS__ROUTING__RATE_LIMIT",
                "{per_minute = 6, burst = 1}",
            ),
            ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
        ],
    );
    let server = Server::start(&overrides);
    let updates = websocket_updates(&server.websocket().analytics, &["alerts"]);
    server.post_events_ok(format!("{}\n{}\n", create("disk-1"), create("disk-2")), 2);
    let counted = |alert: &Value| alert["suppressed_by"]["rate_limit"].as_u64().unwrap_or(0);
    let limited = eventually("a rate-limited alert in /v1/alerts", WAIT, || {
        let (_, alerts) = server.get("/v1/alerts");
        alerts
            .as_array()
            .and_then(|list| list.iter().find(|alert| counted(alert) >= 1).cloned())
            .ok_or_else(|| format!("{alerts}"))
    });
    let id = limited["id"].as_str().unwrap().to_owned();
    let active = mcp_call(&server.mcp_url(), MODERN, "alerts_get_active", &json!({}));
    let listed = active["structuredContent"]["alerts"]
        .as_array()
        .and_then(|alerts| {
            alerts
                .iter()
                .find(|alert| alert["id"] == id.as_str())
                .cloned()
        })
        .unwrap_or_else(|| panic!("{id} not in alerts_get_active: {active}"));
    assert!(counted(&listed) >= 1, "{listed}");
    eventually("the count on the alerts topic", WAIT, || {
        let seen = updates.lock().unwrap().clone();
        seen.iter()
            .any(|update| {
                update["data"]["kind"] == "alert_record"
                    && update["data"]["id"] == id.as_str()
                    && counted(&update["data"]) >= 1
            })
            .then_some(())
            .ok_or_else(|| format!("{seen:?}"))
    });
    // Deferred, not dropped: both go out, and the count stays on the alert.
    eventually("both alerts notified", Duration::from_secs(40), || {
        let bodies = receiver.bodies();
        let sent: Vec<String> = bodies.iter().flat_map(ids).collect();
        (sent.contains(&"disk-1".to_owned()) && sent.contains(&"disk-2".to_owned()))
            .then_some(())
            .ok_or_else(|| format!("{bodies:?}"))
    });
    let (_, alert) = server.get(&format!("/v1/alerts/{id}"));
    assert!(counted(&alert) >= 1, "{alert}");
    let (_, counts) = server.get("/v1/alerts/notifications");
    let total = counts["dispatch"]["rate_limited"].as_u64().unwrap_or(0);
    assert!(total >= counted(&alert), "{counts}");
    // The journal commits in the background: a kill loses what it has not committed yet
    // (milliseconds' worth), so the kill waits for the commit.
    let stored = crate::support::store_path(server.dir());
    eventually("the counts committed", WAIT, || {
        let counts = megamind_connectors::store::rate_limits::RateLimitJournal::load(&stored)
            .map_err(|error| error.to_string())?;
        (counts.total == total && counts.alerts.get(&id) == Some(&counted(&alert)))
            .then_some(())
            .ok_or_else(|| format!("{counts:?}"))
    });

    // The counts are kept in the store: after SIGKILL and a restart (the alerts come back
    // by replay, without being notified again) they are what they were.
    let dir = server.kill();
    let server = Server::start_in(dir, &overrides);
    let restored = eventually("the alert replayed", WAIT, || {
        let (_, alert) = server.get(&format!("/v1/alerts/{id}"));
        (alert["status"] == "firing")
            .then_some(alert.clone())
            .ok_or_else(|| alert.to_string())
    });
    assert_eq!(counted(&restored), counted(&alert), "{restored}");
    let (_, counts) = server.get("/v1/alerts/notifications");
    assert_eq!(
        counts["dispatch"]["rate_limited"].as_u64(),
        Some(total),
        "{counts}"
    );
    let active = mcp_call(&server.mcp_url(), MODERN, "alerts_get_active", &json!({}));
    assert!(
        active["structuredContent"]["alerts"]
            .as_array()
            .is_some_and(|alerts| alerts
                .iter()
                .any(|listed| listed["id"] == id.as_str() && counted(listed) == counted(&alert))),
        "{active}"
    );
}

/// One JSON-RPC call without parameters over a real WebSocket client: the answer.
fn websocket_call(url: &str, method: &str) -> Value {
    use futures_util::{SinkExt, StreamExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("websocket runtime");
    runtime.block_on(async {
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        let request = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": {}});
        socket
            .send(request.to_string().into())
            .await
            .expect("websocket send");
        while let Some(message) = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a websocket answer in time")
        {
            let text = message
                .expect("a websocket frame")
                .into_text()
                .expect("text");
            let value: Value = serde_json::from_str(&text).expect("a JSON-RPC message");
            if value["id"] == 7 {
                return value;
            }
        }
        panic!("the websocket closed before answering {method}")
    })
}

/// A config file with a rule and `[[alerts.silences]]`.
fn silences_config(rule_threshold: f64, silences: &str) -> String {
    format!(
        "[[rules]]\nid = \"a\"\nmetric = \"x\"\naggregate = \"max\"\nop = \">\"\n\
         threshold = {rule_threshold:?}\nseverity = \"high\"\n{silences}"
    )
}

fn silence_by_id(server: &Server, id: &str) -> Option<Value> {
    let (_, silences) = server.get("/v1/silences");
    silences
        .as_array()
        .and_then(|list| list.iter().find(|silence| silence["id"] == id).cloned())
}

/// Config silences: issued at start (marked `origin = "config"`) and muting like silences
/// made over HTTP; `POST /v1/reload` reports what changed (rules and silences), issues
/// nothing for an unchanged file, expires silences that left the file, and refuses a
/// broken file naming the field (keeping the old config); a restart on the same event log
/// does not issue them again.
#[test]
fn config_silences_load_at_start_reload_over_http_and_are_not_issued_twice() {
    let maint = "[[alerts.silences]]\nid = \"maint\"\nmatchers = 'team=\"db\"'\n\
                 duration = \"1h\"\ncreated_by = \"ops\"\ncomment = \"db upgrade\"\n";
    let server = Server::start_with_config(&silences_config(1.0, maint), &[]);
    let silence = eventually("the config silence", WAIT, || {
        silence_by_id(&server, "maint").ok_or_else(|| server.log())
    });
    assert_eq!(silence["origin"], "config", "{silence}");
    assert_eq!(silence["created"]["by"], "ops", "{silence}");
    assert_eq!(silence["created"]["note"], "db upgrade", "{silence}");
    assert_eq!(
        silence["ends_at"].as_u64().unwrap() - silence["starts_at"].as_u64().unwrap(),
        3_600_000,
        "{silence}"
    );
    server.post_events_ok(format!("{}\n", create("disk-1")), 1);
    let muted = eventually("the silenced alert", WAIT, || {
        let (_, alert) = server.get("/v1/alerts/disk-1");
        (alert["suppressed_by"]["silence"] == 1)
            .then_some(alert.clone())
            .ok_or_else(|| format!("{alert}"))
    });
    assert_eq!(muted["suppression"]["by"], "silence", "{muted}");

    let (status, unchanged) = server.post("/v1/reload", "");
    assert_eq!(status, 200, "{unchanged}");
    assert_eq!(unchanged["accepted"], 0, "{unchanged}");
    assert_eq!(
        (&unchanged["rules"], &unchanged["silences"]),
        (
            &json!({"added": [], "removed": [], "changed": []}),
            &json!({"added": [], "changed": [], "expired": []})
        ),
        "{unchanged}"
    );

    // The WebSocket admin method does the same.
    let answer = websocket_call(&server.websocket().analytics, "alerts.reload");
    assert_eq!(answer["result"]["accepted"], 0, "{answer}");
    assert_eq!(answer["result"]["silences"]["added"], json!([]), "{answer}");

    let hour = |hours: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH
                + Duration::from_millis(crate::support::now_ms() + hours * 3_600_000),
        )
        .to_string()
    };
    let (starts, ends) = (hour(1), hour(2));
    let window = format!(
        "[[alerts.silences]]\nid = \"window\"\nmatchers = 'severity=~\"low|medium\"'\n\
         starts_at = \"{starts}\"\nends_at = \"{ends}\"\n"
    );
    let second = format!(
        "{}[[rules]]\nid = \"b\"\nmetric = \"y\"\naggregate = \"max\"\nop = \">\"\n\
         threshold = 2.0\nseverity = \"low\"\n",
        silences_config(5.0, &window)
    );
    std::fs::write(server.config_path(), &second).unwrap();
    let (status, report) = server.post("/v1/reload", "");
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["rules"], &report["silences"], &report["accepted"]),
        (
            &json!({"added": ["b"], "removed": [], "changed": ["a"]}),
            &json!({"added": ["window"], "changed": [], "expired": ["maint"]}),
            &json!(4)
        ),
        "{report}"
    );
    let expired = eventually("maint expired by the reload", WAIT, || {
        silence_by_id(&server, "maint")
            .filter(|silence| silence["expired"]["by"] == "reload")
            .ok_or_else(|| format!("{:?}", server.get("/v1/silences")))
    });
    assert_eq!(expired["origin"], "config", "{expired}");
    let scheduled = eventually("the scheduled config silence", WAIT, || {
        silence_by_id(&server, "window").ok_or_else(|| format!("{:?}", server.get("/v1/silences")))
    });
    let ms = |text: &str| {
        humantime::parse_rfc3339(text)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    assert_eq!(
        (
            scheduled["starts_at"].as_u64(),
            scheduled["ends_at"].as_u64()
        ),
        (Some(ms(&starts)), Some(ms(&ends))),
        "{scheduled}"
    );
    eventually("the reloaded rules", WAIT, || {
        let (_, rules) = server.get("/v1/rules");
        (rules.as_array().map(Vec::len) == Some(2))
            .then_some(())
            .ok_or_else(|| format!("{rules}"))
    });

    // A broken file: every problem named, nothing changes.
    std::fs::write(
        server.config_path(),
        "[[alerts.silences]]\nid = \"bad\"\nmatchers = 'team=~\"(\"'\nduration = \"1h\"\n",
    )
    .unwrap();
    let (status, refused) = server.post("/v1/reload", "");
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_config", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("alerts.silences[0].matchers: matcher 1: invalid regular expression"),
        "{refused}"
    );
    assert!(silence_by_id(&server, "bad").is_none());

    // A restart on the same log with the good file issues nothing again.
    std::fs::write(server.config_path(), &second).unwrap();
    let issued_at = scheduled["created"]["at"].clone();
    let server = Server::restart_with_config(server.kill(), &[]);
    eventually("the config silences checked after the replay", WAIT, || {
        let log = server.log();
        log.contains("config silences: all in force as the file says")
            .then_some(())
            .ok_or(log)
    });
    assert!(
        !server.log().contains("config silences issued"),
        "{}",
        server.log()
    );
    let replayed = silence_by_id(&server, "window").unwrap();
    assert_eq!(replayed["created"]["at"], issued_at, "{replayed}");
}
