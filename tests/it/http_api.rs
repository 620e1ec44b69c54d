//! The HTTP API of `megamind serve`: ingest, window queries, sessions, breaches and
//! alerts, per-record rejections, status and Prometheus counters, body limit, 404s.
//!
//! Every test runs its own server with 1 minute windows sliding by 1 second, no allowed
//! lateness and a 200 ms idle advance, so windows of events stamped with the current
//! time close on their own within a couple of seconds.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{eventually, now_ms, Server};

/// Longest wait for a window, session or breach to show up.
const WAIT: Duration = Duration::from_secs(20);

/// The current time, plus one second: with no allowed lateness, an event stamped exactly
/// "now" could find its pane closed by the idle ticker in the few milliseconds between
/// stamping and arrival, right at a second boundary. A second ahead is well within the
/// allowed future skew (5 minutes) and makes the tests independent of that race.
fn event_time() -> u64 {
    now_ms() + 1000
}

/// NDJSON of `events`.
fn ndjson(events: &[Value]) -> String {
    events.iter().map(|event| format!("{event}\n")).collect()
}

/// The series of `GET /v1/metrics?query` (checks `count` agrees with the list).
fn series(server: &Server, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/metrics?{query}"));
    assert_eq!(status, 200, "GET /v1/metrics?{query}: {body}");
    let series = body["series"].as_array().expect("series array").clone();
    assert_eq!(body["count"], json!(series.len()), "count of {body}");
    series
}

fn f64_of(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("`{field}` is not a number in {value}"))
}

fn u64_of(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not an unsigned integer in {value}"))
}

/// Whether `key` (a series key as served) is `name` in `session` with exactly `labels`;
/// an absent field, `null` and `{}` all mean none.
fn is_key(key: &Value, name: &str, session: Option<&str>, labels: &[(&str, &str)]) -> bool {
    let served_labels = match key.get("labels") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return false,
    };
    let wanted_labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    key.get("name") == Some(&json!(name))
        && key.get("session_id").and_then(Value::as_str) == session
        && served_labels == wanted_labels
}

fn assert_close(what: &str, got: f64, expected: f64) {
    assert!(
        (got - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: got {got}, expected {expected}"
    );
}

#[test]
fn metric_window_reports_count_sum_min_max_mean() {
    let server = Server::start(&[]);
    let ts = event_time();
    // host=a: 5 values, sum 100, min 0.25, max 50, mean 20; host=b: 2 values.
    let a = [12.5, 7.25, 30.0, 0.25, 50.0];
    let b = [1000.0, 2000.0];
    let mut events: Vec<Value> = a
        .iter()
        .map(|value| json!({"type": "metric", "ts": ts, "name": "it.cpu", "value": value, "labels": {"host": "a"}}))
        .collect();
    events.extend(b.iter().map(|value| {
        json!({"type": "metric", "ts": ts, "name": "it.cpu", "value": value, "labels": {"host": "b"}})
    }));
    // A different metric, which the name filter must leave out.
    events.push(json!({"type": "metric", "ts": ts, "name": "it.other", "value": 1.0}));
    server.post_events_ok(serde_json::to_string(&events).expect("JSON array"), 8);

    let both = eventually("both it.cpu series to have a closed window", WAIT, || {
        let found = series(&server, "name=it.cpu");
        if found.len() == 2 {
            Ok(found)
        } else {
            Err(format!("{found:?}"))
        }
    });
    let hosts: Vec<&Value> = both
        .iter()
        .map(|stats| &stats["key"]["labels"]["host"])
        .collect();
    assert_eq!(
        hosts,
        [&json!("a"), &json!("b")],
        "series sorted by key: {both:?}"
    );

    let only_a = series(&server, "name=it.cpu&label=host:a");
    assert_eq!(only_a.len(), 1, "label filter: {only_a:?}");
    let stats = &only_a[0];
    assert!(
        is_key(&stats["key"], "it.cpu", None, &[("host", "a")]),
        "{stats}"
    );
    assert_eq!(u64_of(stats, "count"), 5, "{stats}");
    assert_close("sum", f64_of(stats, "sum"), 100.0);
    assert_close("mean", f64_of(stats, "mean"), 20.0);
    assert_close("min", f64_of(stats, "min"), 0.25);
    assert_close("max", f64_of(stats, "max"), 50.0);
    // Nearest rank over [0.25, 7.25, 12.5, 30, 50].
    assert_close("p50", f64_of(stats, "p50"), 12.5);
    assert_close("p99", f64_of(stats, "p99"), 50.0);
    assert_eq!(stats["exact"], json!(true));
    let (start, end) = (u64_of(stats, "start"), u64_of(stats, "end"));
    assert_eq!(end - start, 60_000, "a 1 minute window: {stats}");
    assert!(
        start <= ts && ts < end,
        "window [{start}, {end}) must hold ts {ts}"
    );
    assert_close("rate", f64_of(stats, "rate"), 5.0 / 60.0);

    let b_stats = &both[1];
    assert_eq!(u64_of(b_stats, "count"), 2, "{b_stats}");
    assert_close("sum of b", f64_of(b_stats, "sum"), 3000.0);
    assert_close("mean of b", f64_of(b_stats, "mean"), 1500.0);

    let other = eventually("it.other to have a closed window", WAIT, || {
        let found = series(&server, "name=it.other");
        found.first().cloned().ok_or_else(|| "no series".to_owned())
    });
    assert_eq!(u64_of(&other, "count"), 1, "{other}");

    let (status, body) = server.get("/v1/metrics?label=nocolon");
    assert_eq!(status, 400, "a label without `:` is a bad request: {body}");

    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM must stop the server cleanly, got {status}"
    );
}

#[test]
fn session_lifecycle_is_summarized() {
    let server = Server::start(&[]);
    let base = event_time();
    let id = "it-session-1";
    let session = |offset: u64, extra: Value| {
        let mut event = json!({"type": "session", "ts": base + offset, "session_id": id});
        for (key, value) in extra.as_object().expect("object") {
            event[key] = value.clone();
        }
        event
    };
    let events = [
        session(0, json!({"kind": "started", "user_id": "u-7"})),
        session(
            1,
            json!({"kind": "operation", "operation": "read", "duration_ms": 100.0, "tokens": 10, "success": true}),
        ),
        session(
            2,
            json!({"kind": "operation", "operation": "write", "duration_ms": 200.0, "tokens": 20}),
        ),
        session(
            3,
            json!({"kind": "operation", "operation": "plan", "duration_ms": 300.0, "tokens": 30, "success": false}),
        ),
        session(4, json!({"kind": "error", "message": "tool crashed"})),
        session(5, json!({"kind": "completed"})),
    ];
    server.post_events_ok(ndjson(&events), events.len());

    let view = eventually(
        "the session to be completed with all 6 events",
        WAIT,
        || {
            let (status, body) = server.get(&format!("/v1/sessions/{id}"));
            let state = &body["state"];
            if status == 200 && state["status"] == "completed" && state["events"] == 6 {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        },
    );
    let state = &view["state"];
    assert_eq!(state["session_id"], json!(id));
    assert_eq!(state["user_id"], json!("u-7"));
    assert_eq!(u64_of(state, "operations"), 3, "{state}");
    // The error event and the failed operation.
    assert_eq!(u64_of(state, "errors"), 2, "{state}");
    // Errors per activity: 2 errors over 3 operations + 1 standalone error.
    assert_close("error_rate", f64_of(state, "error_rate"), 0.5);
    assert_eq!(u64_of(state, "tokens"), 60, "{state}");
    assert_close("duration_mean_ms", f64_of(state, "duration_mean_ms"), 200.0);
    assert_close("duration_p95_ms", f64_of(state, "duration_p95_ms"), 300.0);
    assert_eq!(u64_of(state, "started_at"), base, "{state}");
    assert_eq!(u64_of(state, "last_activity"), base + 5, "{state}");
    assert_eq!(u64_of(state, "ended_at"), base + 5, "{state}");
    assert_eq!(state["last_operation"], json!("plan"), "{state}");
    assert_eq!(state["last_error"], json!("tool crashed"), "{state}");
    assert!(view["history"].is_array(), "history: {view}");

    let (status, list) = server.get("/v1/sessions?status=completed");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], json!(1), "{list}");
    assert_eq!(list["sessions"][0]["session_id"], json!(id), "{list}");
    let (status, list) = server.get("/v1/sessions?status=active");
    assert_eq!((status, &list["count"]), (200, &json!(0)), "{list}");
    let (status, body) = server.get("/v1/sessions?status=sleeping");
    assert_eq!(status, 400, "unknown status filter: {body}");

    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM must stop the server cleanly, got {status}"
    );
}

#[test]
fn latency_mean_above_70_breaches_and_fires() {
    let server = Server::start(&[]);
    let ts = event_time();
    let latency = |session: &str, value: f64| json!({"type": "metric", "ts": ts, "name": "latency_ms", "session_id": session, "value": value});
    // it-hot: mean 90 > 70. it-calm: mean 50, must not breach.
    let events = [
        latency("it-hot", 80.0),
        latency("it-hot", 90.0),
        latency("it-hot", 100.0),
        latency("it-calm", 40.0),
        latency("it-calm", 50.0),
        latency("it-calm", 60.0),
    ];
    server.post_events_ok(ndjson(&events), events.len());

    let is_hot = |key: &Value| is_key(key, "latency_ms", Some("it-hot"), &[]);
    let answer = eventually("a breach and a firing alert for it-hot", WAIT, || {
        let (status, body) = server.get("/v1/breaches");
        let has_breach = body["breaches"]
            .as_array()
            .is_some_and(|list| list.iter().any(|breach| is_hot(&breach["key"])));
        let firing = body["alerts"].as_array().is_some_and(|list| {
            list.iter()
                .any(|alert| is_hot(&alert["key"]) && alert["status"] == "firing")
        });
        if status == 200 && has_breach && firing {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    });
    let breach = answer["breaches"]
        .as_array()
        .and_then(|list| list.iter().find(|breach| is_hot(&breach["key"])))
        .expect("hot breach");
    assert_eq!(breach["rule_id"], json!("latency_mean_high"), "{breach}");
    assert_eq!(breach["aggregate"], json!("mean"), "{breach}");
    assert_eq!(breach["severity"], json!("high"), "{breach}");
    assert_close("breach value", f64_of(breach, "value"), 90.0);
    assert_close("breach threshold", f64_of(breach, "threshold"), 70.0);
    let breach_end = u64_of(breach, "end");
    assert!(
        u64_of(breach, "start") <= ts && ts < breach_end,
        "breaching window must hold the events: {breach}"
    );

    let alerts = answer["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "exactly one alert (it-hot): {alerts:?}");
    let alert = &alerts[0];
    assert!(is_hot(&alert["key"]), "{alert}");
    assert_eq!(alert["rule_id"], json!("latency_mean_high"), "{alert}");
    assert_eq!(alert["status"], json!("firing"), "{alert}");
    assert_close("alert value", f64_of(alert, "value"), 90.0);
    assert_close("alert threshold", f64_of(alert, "threshold"), 70.0);
    assert_eq!(answer["firing"], json!(1), "{answer}");

    // Negative control: once it-calm has closed two more windows than the first breach,
    // its earlier windows have certainly been evaluated; none of them may breach.
    eventually("it-calm windows past the first breach", WAIT, || {
        let found = series(&server, "name=latency_ms&session_id=it-calm");
        match found.first() {
            Some(stats) if u64_of(stats, "end") >= breach_end + 2000 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (_, later) = server.get("/v1/breaches?limit=1000");
    let calm: Vec<&Value> = later["breaches"]
        .as_array()
        .expect("breaches")
        .iter()
        .filter(|breach| breach["key"]["session_id"] == "it-calm")
        .collect();
    assert!(
        calm.is_empty(),
        "a mean of 50 must not breach `> 70`: {calm:?}"
    );
    let (_, status_body) = server.get("/v1/status");
    assert_eq!(status_body["firing_alerts"], json!(1), "{status_body}");

    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM must stop the server cleanly, got {status}"
    );
}

#[test]
fn malformed_records_are_rejected_by_field_and_reason() {
    let server = Server::start(&[]);
    let ts = event_time();
    let day_ahead = now_ms() + 86_400_000;
    // One record per line; the blank line makes record indexes and line numbers differ.
    let body = [
        json!({"type": "metric", "ts": ts, "name": "it.good", "value": 1.0}).to_string(),
        r#"{"type":"metric","value":1}"#.to_owned(),
        r#"{"type":"metric","name":"it.good","value":"high"}"#.to_owned(),
        r#"{"type":"metric","name":"it.good","value":1e400}"#.to_owned(),
        String::new(),
        r#"{"type":"session","session_id":"","kind":"started"}"#.to_owned(),
        r#"{"type":"bogus","name":"x"}"#.to_owned(),
        "not json at all".to_owned(),
        json!({"type": "metric", "ts": day_ahead, "name": "it.good", "value": 5.0}).to_string(),
        json!({"type": "metric", "ts": ts, "name": "it.good", "value": 2.0}).to_string(),
    ]
    .join("\n");
    let (status, answer) = server.post("/v1/events", body);
    assert_eq!(status, 200, "a partly good batch is accepted: {answer}");
    assert_eq!(answer["accepted"], json!(2), "{answer}");
    let rejected = answer["rejected"].as_array().expect("rejected list");
    // (index, line, reason, field)
    let expected: [(u64, Option<u64>, &str, Option<&str>); 7] = [
        (1, Some(2), "missing_field", Some("name")),
        (2, Some(3), "invalid_type", Some("value")),
        (3, Some(4), "non_finite", Some("value")),
        (4, Some(6), "empty_id", Some("session_id")),
        (5, Some(7), "unknown_type", Some("type")),
        (6, Some(8), "malformed_json", None),
        (7, None, "future_timestamp", Some("ts")),
    ];
    assert_eq!(rejected.len(), expected.len(), "{answer}");
    for (error, (index, line, reason, field)) in rejected.iter().zip(expected) {
        assert_eq!(error["index"], json!(index), "{error}");
        if let Some(line) = line {
            assert_eq!(error["line"], json!(line), "{error}");
        }
        assert_eq!(error["reason"], json!(reason), "{error}");
        match field {
            Some(field) => assert_eq!(error["field"], json!(field), "{error}"),
            None => assert!(error.get("field").is_none(), "no field to blame: {error}"),
        }
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "every rejection explains itself: {error}"
        );
    }

    // Everything rejected: 422, with the reason.
    let (status, answer) = server.post("/v1/events", r#"{"type":"metric","value":3}"#);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["accepted"], json!(0), "{answer}");
    assert_eq!(
        answer["rejected"][0]["reason"],
        json!("missing_field"),
        "{answer}"
    );
    assert_eq!(answer["rejected"][0]["field"], json!("name"), "{answer}");

    // The server still works.
    let (status, health) = server.get("/healthz");
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    server.post_events_ok(
        json!({"type": "metric", "ts": event_time(), "name": "it.after", "value": 7.0}).to_string(),
        1,
    );
    // The two good records of the mixed batch were processed (the future one was not).
    let good = eventually("the window of the accepted records", WAIT, || {
        let found = series(&server, "name=it.good");
        found.first().cloned().ok_or_else(|| "no series".to_owned())
    });
    assert_eq!(u64_of(&good, "count"), 2, "{good}");
    assert_close("sum of the good records", f64_of(&good, "sum"), 3.0);

    let expected_rejects = json!({
        "empty_id": 1, "future_timestamp": 1, "invalid_type": 1, "malformed_json": 1,
        "missing_field": 2, "non_finite": 1, "unknown_type": 1,
    });
    let status_body = eventually("/v1/status to count the 3 accepted events", WAIT, || {
        let (code, body) = server.get("/v1/status");
        if code == 200 && body["events_accepted"] == 3 {
            Ok(body)
        } else {
            Err(format!("{code} {body}"))
        }
    });
    assert_eq!(status_body["rejected"], expected_rejects, "{status_body}");
    assert_eq!(status_body["late_events"], json!(0), "{status_body}");
    assert!(status_body["queue_depth"].is_u64(), "{status_body}");

    let (code, text) = server.get_text("/metrics");
    assert_eq!(code, 200);
    for (reason, count) in expected_rejects.as_object().expect("object") {
        let line = format!("megamind_ingest_events_rejected_total{{reason=\"{reason}\"}} {count}");
        assert!(
            text.lines().any(|l| l == line),
            "/metrics lacks `{line}`:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l == "megamind_ingest_events_accepted_total 3"),
        "/metrics lacks the accepted count:\n{text}"
    );

    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM must stop the server cleanly, got {status}"
    );
}

#[test]
fn oversize_body_is_refused_with_413() {
    let limit = 65_536;
    let server = Server::start(&[("MEGAMIND__INGEST__MAX_BODY_BYTES", "65536")]);
    let ts = event_time();
    let line =
        json!({"type": "metric", "ts": ts, "name": "it.size", "value": 1.0}).to_string() + "\n";
    let records_under = (limit - 1024) / line.len();
    let under = line.repeat(records_under);
    assert!(under.len() < limit);
    server.post_events_ok(under, records_under);

    // Just over the limit, so the client can finish writing it even if the server stops
    // reading at the limit.
    let records_over = limit / line.len() + 64;
    let over = line.repeat(records_over);
    assert!(over.len() > limit);
    let (status, text) = server.post_raw("/v1/events", over);
    assert_eq!(status, 413, "body over the {limit} byte limit: {text}");

    // Nothing of the refused body was accepted, and the server still answers.
    let (status, health) = server.get("/healthz");
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let stats = eventually("the window of the accepted body", WAIT, || {
        let found = series(&server, "name=it.size");
        found.first().cloned().ok_or_else(|| "no series".to_owned())
    });
    assert_eq!(u64_of(&stats, "count"), records_under as u64, "{stats}");
    let (_, status_body) = server.get("/v1/status");
    assert_eq!(
        status_body["events_accepted"],
        json!(records_under),
        "{status_body}"
    );

    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM must stop the server cleanly, got {status}"
    );
}

#[test]
fn unknown_session_is_404() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/v1/sessions/it-no-such-session");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], json!("unknown_session"), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("it-no-such-session"), "{body}");
    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM must stop the server cleanly, got {status}"
    );
}

/// `THP_enabled` of a running process, from `/proc/<pid>/status`.
fn huge_pages_enabled(server: &Server) -> String {
    let pid = server.pid().expect("the server runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no THP_enabled line in:\n{status}"))
}

/// The server turns transparent huge pages off for itself (first touches of 2 MB pages
/// stalled window closes); `MEGAMIND_HUGE_PAGES=true` leaves the kernel's setting.
#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let server = Server::start(&[]);
    assert_eq!(huge_pages_enabled(&server), "0");
    drop(server);
    let server = Server::start(&[("MEGAMIND_HUGE_PAGES", "true")]);
    assert_eq!(huge_pages_enabled(&server), "1");
}
