//! ML tracking end to end: a seeded stream of predictions and outcomes (late outcomes,
//! outcomes before their prediction, outcomes beyond the horizon, predictions that never
//! get one, orphan outcomes with and without a model) goes in through HTTP `/v1/events`
//! and a few records through the MCP tools; the metrics are read back through the
//! official MCP client and compared with scikit-learn, scipy and River run by
//! `tests/ml/check_ml_reference.py` on the same matched pairs.
//!
//! Tolerances: counts exact; metrics derived from counts (accuracy, precision, recall,
//! F1, Wilson bounds) 1e-9; KS statistic 1e-12 and p-value 1e-9; chi-squared statistic
//! and p-value 1e-9; ADWIN change points identical (megamind's ADWIN uses River's
//! clock of 32, bucket limit 5, minimum sub-window 5, grace period 10, and resets after a
//! detection as River's `ADWIN.update` does, so there is no clock or bucketing
//! difference to bound).
//!
//! Peer: a Python interpreter with scikit-learn, scipy, River and the MCP client
//! (`MEGAMIND_TEST_PYTHON`, else `python3`); a missing one fails the test loudly.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::mcp::{mcp_call, MODERN, TOKEN};
use crate::support::{clean_env, eventually, now_ms, run, Server};

const HORIZON_MS: u64 = 30_000;
const PREDICTIONS: u64 = 3000;
const STEP_MS: u64 = 50;
const WINDOW: usize = 200;
const LABELS: [&str; 3] = ["approve", "review", "reject"];
const VERSIONS: [(&str, &str); 3] = [("fraud", "v1"), ("fraud", "v2"), ("churn", "v1")];

/// The interpreter with the ML references; panics with how to install them.
fn ml_python() -> String {
    let python = std::env::var("MEGAMIND_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args([
            "-c",
            "import sklearn, scipy, river, mcp; print(sklearn.__version__, scipy.__version__)",
        ])
        .output();
    match probe {
        Ok(output) if output.status.success() => python,
        Ok(output) => panic!(
            "{python:?} cannot import scikit-learn, scipy, river and mcp ({}): the ML oracle \
             test needs them. `bash .ci/run` installs them in .ci/.venv (scikit-learn==1.9.1 \
             scipy==1.17.1 river==0.26.1 mcp==2.3.0); then set \
             MEGAMIND_TEST_PYTHON=$PWD/.ci/.venv/bin/python\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "cannot run {python:?} ({error}): the ML oracle test needs Python with \
             scikit-learn, scipy, river and mcp (see .ci/run)"
        ),
    }
}

/// A deterministic pseudo-random source (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        ((self.uniform() * n as f64) as u64).min(n - 1)
    }
}

/// One generated prediction and what the test expects of it.
struct Generated {
    id: String,
    version: usize,
    ts: u64,
    predicted: &'static str,
    confidence: f64,
    /// (outcome ts, actual), when an outcome is sent.
    outcome: Option<(u64, &'static str)>,
}

impl Generated {
    fn matched(&self) -> Option<(u64, &'static str)> {
        self.outcome
            .filter(|(ts, _)| ts.abs_diff(self.ts) < HORIZON_MS)
            .map(|(ts, actual)| (ts.max(self.ts), actual))
    }
}

struct Stream {
    /// (ts, event JSON), sorted by ts.
    events: Vec<(u64, Value)>,
    predictions: Vec<Generated>,
    /// Orphans naming `fraud`, and naming no model.
    hinted_orphans: u64,
    unhinted_orphans: u64,
    last_ts: u64,
}

fn generate(base: u64) -> Stream {
    let mut rng = Lcg(2026);
    let mut events = Vec::new();
    let mut predictions = Vec::new();
    for index in 0..PREDICTIONS {
        let ts = base + index * STEP_MS;
        let version = (index % 3) as usize;
        // fraud v1 degrades in the second half: less accurate, less confident, shifted x.
        let degraded = version == 0 && index >= PREDICTIONS / 2;
        let accuracy = if degraded { 0.45 } else { 0.85 };
        let confidence = if degraded {
            0.3 + 0.4 * rng.uniform()
        } else {
            0.5 + 0.5 * rng.uniform()
        };
        let x = 4.0 * rng.uniform() + if degraded { 2.0 } else { 0.0 };
        let predicted = LABELS[rng.below(3) as usize];
        let actual = if rng.uniform() < accuracy {
            predicted
        } else {
            let others: Vec<&str> = LABELS.iter().copied().filter(|l| *l != predicted).collect();
            others[rng.below(2) as usize]
        };
        let (model_id, model_version) = VERSIONS[version];
        let id = format!("pred-{index}");
        events.push((
            ts,
            json!({
                "type": "prediction", "ts": ts, "model_id": model_id,
                "model_version": model_version, "prediction_id": id, "predicted": predicted,
                "confidence": confidence, "latency_ms": 2.0 + 40.0 * rng.uniform(),
                "features": {"x": x},
            }),
        ));
        let roll = rng.uniform();
        let outcome = if roll < 0.10 {
            None // never labelled: expires
        } else if roll < 0.15 {
            // The outcome is recorded before the prediction.
            Some((ts.saturating_sub(rng.below(2000)).max(base), actual))
        } else {
            // Late by up to 40 s: a quarter of these miss the 30 s horizon.
            Some((ts + rng.below(40_000), actual))
        };
        if let Some((outcome_ts, actual)) = outcome {
            events.push((
                outcome_ts,
                json!({"type": "outcome", "ts": outcome_ts, "prediction_id": id, "actual": actual}),
            ));
        }
        predictions.push(Generated {
            id,
            version,
            ts,
            predicted,
            confidence,
            outcome,
        });
    }
    let span = PREDICTIONS * STEP_MS;
    let (mut hinted_orphans, mut unhinted_orphans) = (0, 0);
    for index in 0..60u64 {
        let ts = base + rng.below(span);
        let mut event = json!({"type": "outcome", "ts": ts, "prediction_id": format!("ghost-{index}"), "actual": "approve"});
        if index % 2 == 0 {
            event["model_id"] = json!("fraud");
            hinted_orphans += 1;
        } else {
            unhinted_orphans += 1;
        }
        events.push((ts, event));
    }
    events.sort_by_key(|(ts, _)| *ts);
    let last_ts = events.last().map_or(base, |(ts, _)| *ts);
    Stream {
        events,
        predictions,
        hinted_orphans,
        unhinted_orphans,
        last_ts,
    }
}

/// What megamind should report for one version, and the oracle's input.
struct Expected {
    predictions: u64,
    matched: u64,
    expired: u64,
    input: Value,
}

fn expected(stream: &Stream, version: usize) -> Expected {
    let mut pairs: Vec<(u64, &str, &Generated, &str)> = stream
        .predictions
        .iter()
        .filter(|p| p.version == version)
        .filter_map(|p| {
            p.matched()
                .map(|(ts, actual)| (ts, p.id.as_str(), p, actual))
        })
        .collect();
    pairs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let predictions = stream
        .predictions
        .iter()
        .filter(|p| p.version == version)
        .count() as u64;
    let reference: Vec<_> = pairs.iter().take(WINDOW).collect();
    let rest: Vec<_> = pairs.iter().skip(WINDOW).collect();
    let current: Vec<_> = rest
        .iter()
        .skip(rest.len().saturating_sub(WINDOW))
        .collect();
    let (model_id, model_version) = VERSIONS[version];
    let input = json!({
        "model_id": model_id,
        "model_version": model_version,
        "actual": pairs.iter().map(|p| p.3).collect::<Vec<_>>(),
        "predicted": pairs.iter().map(|p| p.2.predicted).collect::<Vec<_>>(),
        "errors": pairs.iter().map(|p| u8::from(p.3 != p.2.predicted)).collect::<Vec<_>>(),
        "reference_confidence": reference.iter().map(|p| p.2.confidence).collect::<Vec<_>>(),
        "current_confidence": current.iter().map(|p| p.2.confidence).collect::<Vec<_>>(),
        "reference_predicted": reference.iter().map(|p| p.2.predicted).collect::<Vec<_>>(),
        "current_predicted": current.iter().map(|p| p.2.predicted).collect::<Vec<_>>(),
    });
    Expected {
        predictions,
        matched: pairs.len() as u64,
        expired: predictions - pairs.len() as u64,
        input,
    }
}

fn close(what: &str, actual: &Value, expected: &Value, tolerance: f64) {
    let (Some(a), Some(b)) = (actual.as_f64(), expected.as_f64()) else {
        panic!("{what}: {actual} or {expected} is not a number");
    };
    assert!(
        (a - b).abs() <= tolerance,
        "{what}: megamind {a} vs reference {b} (tolerance {tolerance})"
    );
}

fn drift_test<'a>(tracked: &'a Value, name: &str) -> &'a Value {
    tracked["drift"]["tests"]
        .as_array()
        .and_then(|tests| tests.iter().find(|test| test["test"] == name))
        .unwrap_or_else(|| panic!("no drift test {name}: {}", tracked["drift"]))
}

#[test]
fn ml_metrics_match_scikit_learn_scipy_and_river() {
    let python = ml_python();
    let server = Server::start(&[
        ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
        ("MEGAMIND__ML__HORIZON", "30s"),
        ("MEGAMIND__ML__REFERENCE_SIZE", "200"),
        ("MEGAMIND__ML__WINDOW_SIZE", "200"),
        ("MEGAMIND__ML__EVALUATE_EVERY", "1"),
        // The stream runs ahead of the wall clock (below).
        ("MEGAMIND__INGEST__MAX_FUTURE_SKEW", "1h"),
    ]);
    let url = server.mcp_url();
    // Event time starts 10 minutes ahead of the wall clock, so the idle watermark (wall
    // clock) never overtakes the stream while it is being sent, even on a loaded machine
    // (10 s was not enough at load 11 on 2 cores); the flush events below close it.
    let base = now_ms() + 600_000;
    let stream = generate(base);

    // A few records through the MCP tools (single and batch), the rest over HTTP.
    let (head, tail) = stream.events.split_at(4);
    for (_, event) in head {
        let mut record = event.clone();
        let kind = record["type"].as_str().unwrap_or_default().to_owned();
        if let Some(map) = record.as_object_mut() {
            map.remove("type");
        }
        let (tool, key) = if kind == "prediction" {
            ("ml_record_prediction", "predictions")
        } else {
            ("ml_record_outcome", "outcomes")
        };
        let mut arguments = serde_json::Map::new();
        arguments.insert(key.to_owned(), json!([record]));
        let answer = mcp_call(&url, MODERN, tool, &Value::Object(arguments));
        assert_eq!(
            answer["structuredContent"],
            json!({"accepted": 1, "rejected": []}),
            "{tool}"
        );
    }
    for chunk in tail.chunks(500) {
        let body: String = chunk
            .iter()
            .map(|(_, event)| event.to_string() + "\n")
            .collect();
        server.post_events_ok(body, chunk.len());
    }
    // Push the watermark past every expiry: last event + horizon + one expiry bucket. The
    // frontier is the slowest worker's watermark and batches go to workers round-robin,
    // so every worker gets a flush event (the server runs 2 workers; 4 posts cover it).
    let flush = stream.last_ts + HORIZON_MS + 3_000;
    for offset in 0..4 {
        server.post_events_ok(
            json!({"type": "metric", "ts": flush + offset, "name": "ml_test.flush", "value": 1.0})
                .to_string(),
            1,
        );
    }

    let expectations: Vec<Expected> = (0..VERSIONS.len()).map(|v| expected(&stream, v)).collect();
    let too_late = stream
        .predictions
        .iter()
        .filter(|p| p.outcome.is_some() && p.matched().is_none())
        .count() as u64;

    // Wait until every version is settled: all predictions matched or expired.
    eventually("every version settled", Duration::from_secs(120), || {
        let answer = mcp_call(&url, MODERN, "ml_performance_status", &json!({}));
        let status = answer["structuredContent"].clone();
        let settled = VERSIONS
            .iter()
            .zip(&expectations)
            .all(|((model, version), want)| {
                status["models"].as_array().is_some_and(|models| {
                    models.iter().any(|entry| {
                        entry["model_id"] == *model
                            && entry["model_version"] == *version
                            && entry["total_predictions"] == want.predictions
                            && entry["matched"].as_u64().unwrap_or(0)
                                + entry["expired"].as_u64().unwrap_or(0)
                                == want.predictions
                    })
                })
            });
        let orphans_settled =
            status["unattributed_orphan_outcomes"] == stream.unhinted_orphans + too_late;
        if settled && orphans_settled {
            Ok(())
        } else {
            let want: Vec<(u64, u64)> = expectations
                .iter()
                .map(|e| (e.predictions, e.matched))
                .collect();
            Err(format!(
                "want (predictions, matched) {want:?}, unattributed {} + {too_late}; got {status}",
                stream.unhinted_orphans
            ))
        }
    });

    // The oracle.
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("ml_reference_input.json");
    let versions: Vec<Value> = expectations.iter().map(|e| e.input.clone()).collect();
    std::fs::write(&input, json!({"versions": versions}).to_string()).expect("write oracle input");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("ml")
        .join("check_ml_reference.py");
    let mut command = Command::new(&python);
    clean_env(&mut command).arg(script).arg(&input);
    let finished = run(
        "check_ml_reference.py",
        &mut command,
        Duration::from_secs(120),
    );
    finished.assert_success("check_ml_reference.py");
    let reference: Value = serde_json::from_str(finished.stdout.trim()).expect("oracle JSON");

    let mut drifted = BTreeMap::new();
    for (index, ((model, version), want)) in VERSIONS.iter().zip(&expectations).enumerate() {
        let oracle = &reference["versions"][index];
        let answer = mcp_call(
            &url,
            MODERN,
            "ml_get_performance_metrics",
            &json!({"model_id": model, "model_version": version}),
        );
        let metrics = &answer["structuredContent"];
        let tracked = &metrics["details"][0]["tracked"];
        let what = format!("{model}/{version}");
        assert_eq!(
            tracked["predictions"], want.predictions,
            "{what} predictions"
        );
        assert_eq!(tracked["matched"], want.matched, "{what} matched");
        assert_eq!(tracked["expired"], want.expired, "{what} expired");
        assert_eq!(tracked["pending"], 0, "{what} pending");
        let hinted = if *model == "fraud" {
            stream.hinted_orphans
        } else {
            0
        };
        assert_eq!(tracked["orphans_expired"], hinted, "{what} orphans");
        let cumulative = &tracked["cumulative"];
        assert_eq!(cumulative["labels"], oracle["labels"], "{what} labels");
        assert_eq!(
            cumulative["confusion"], oracle["confusion"],
            "{what} confusion"
        );
        close(
            &format!("{what} accuracy"),
            &cumulative["accuracy"],
            &oracle["accuracy"],
            1e-9,
        );
        for bound in 0..2 {
            close(
                &format!("{what} Wilson bound {bound}"),
                &cumulative["accuracy_interval"][bound],
                &oracle["wilson"][bound],
                1e-9,
            );
        }
        for (class, scores) in oracle["per_class"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for field in ["precision", "recall", "f1"] {
                close(
                    &format!("{what} class {class} {field}"),
                    &cumulative["per_class"][class][field],
                    &scores[field],
                    1e-9,
                );
            }
            assert_eq!(cumulative["per_class"][class]["support"], scores["support"]);
        }
        for (average, ours) in [("macro", "macro_avg"), ("weighted", "weighted_avg")] {
            for field in ["precision", "recall", "f1"] {
                close(
                    &format!("{what} {average} {field}"),
                    &cumulative[ours][field],
                    &oracle[average][field],
                    1e-9,
                );
            }
        }
        let ks = drift_test(tracked, "ks:confidence");
        close(
            &format!("{what} KS"),
            &ks["statistic"],
            &oracle["ks"]["statistic"],
            1e-12,
        );
        close(
            &format!("{what} KS p"),
            &ks["p_value"],
            &oracle["ks"]["p_value"],
            1e-9,
        );
        let chi = drift_test(tracked, "chi2:predicted_labels");
        close(
            &format!("{what} chi2"),
            &chi["statistic"],
            &oracle["chi2"]["statistic"],
            1e-9,
        );
        close(
            &format!("{what} chi2 p"),
            &chi["p_value"],
            &oracle["chi2"]["p_value"],
            1e-9,
        );
        assert_eq!(
            tracked["drift"]["adwin_change_points"], oracle["adwin_change_points"],
            "{what} ADWIN change points"
        );
        drifted.insert(what, tracked["drift"]["drifted"].clone());
    }
    // fraud v1 degraded in the second half: drift, a retraining trigger and an alert.
    assert_eq!(drifted["fraud/v1"], json!(true), "{drifted:?}");
    // The status as of now (the ordered analyses have caught up, as the checks above show).
    let status =
        mcp_call(&url, MODERN, "ml_performance_status", &json!({}))["structuredContent"].clone();
    let entry = status["models"]
        .as_array()
        .and_then(|models| {
            models
                .iter()
                .find(|m| m["model_id"] == "fraud" && m["model_version"] == "v1")
        })
        .cloned()
        .unwrap_or_default();
    let flags = entry["drift_flags"].as_array().cloned().unwrap_or_default();
    assert!(flags.contains(&json!("accuracy_drop")), "{entry}");
    assert!(
        status["retraining_triggers"]
            .as_array()
            .is_some_and(|triggers| triggers
                .iter()
                .any(|t| t["model_id"] == "fraud" && t["model_version"] == "v1")),
        "no retraining trigger for fraud/v1: {status}"
    );
    let alerts = mcp_call(&url, MODERN, "alerts_get_active", &json!({}));
    assert!(
        alerts["structuredContent"].to_string().contains("ml.drift"),
        "no ml.drift alert: {}",
        alerts["structuredContent"]
    );
    // Side-by-side comparison of two versions.
    let compared = mcp_call(
        &url,
        MODERN,
        "ml_get_performance_metrics",
        &json!({"model_id": "fraud", "model_version": "v1", "compare_with": "v2"}),
    );
    let comparison = &compared["structuredContent"]["comparison"];
    let a = reference["versions"][0]["accuracy"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let b = reference["versions"][1]["accuracy"]
        .as_f64()
        .unwrap_or(f64::NAN);
    close(
        "accuracy difference",
        &comparison["accuracy_difference"],
        &json!(a - b),
        1e-9,
    );
    let interval = &comparison["accuracy_difference_interval"];
    assert!(
        interval[0].as_f64() < Some(a - b) && interval[1].as_f64() > Some(a - b),
        "{comparison}"
    );
}

/// A real HTTP server on its own thread recording every POSTed JSON body (the alert
/// notifications of a webhook channel).
struct Hook {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Hook {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook receiver");
        listener.set_nonblocking(true).expect("webhook receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&bodies);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("webhook runtime");
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(move |body: axum::body::Bytes| {
                        let seen = std::sync::Arc::clone(&seen);
                        async move {
                            if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                                seen.lock().expect("webhook bodies").push(value);
                            }
                            axum::http::StatusCode::NO_CONTENT
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("webhook receiver");
            });
        });
        Self { url, bodies }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("webhook bodies").clone()
    }
}

/// A WebSocket client on its own thread, subscribed to `topics`, recording every update.
pub(crate) fn websocket_updates(
    url: &str,
    topics: &[&str],
) -> std::sync::Arc<std::sync::Mutex<Vec<Value>>> {
    use futures_util::{SinkExt, StreamExt};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let updates = std::sync::Arc::clone(&seen);
    let (subscribed, ready) = std::sync::mpsc::channel::<Result<(), String>>();
    let url = url.to_owned();
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                         "params": {"topics": topics}})
    .to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("websocket runtime");
        runtime.block_on(async move {
            let (mut socket, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok(connected) => connected,
                Err(error) => {
                    let _ = subscribed.send(Err(format!("connect {url}: {error}")));
                    return;
                }
            };
            if let Err(error) = socket.send(request.into()).await {
                let _ = subscribed.send(Err(format!("subscribe: {error}")));
                return;
            }
            while let Some(Ok(message)) = socket.next().await {
                let Ok(text) = message.into_text() else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if value["id"] == 1 {
                    let answer = if value.get("result").is_some() {
                        Ok(())
                    } else {
                        Err(format!("subscribe refused: {value}"))
                    };
                    let _ = subscribed.send(answer);
                } else if value["method"] == "update" {
                    seen.lock().expect("updates").push(value["params"].clone());
                }
            }
        });
    });
    ready
        .recv_timeout(Duration::from_secs(20))
        .expect("the WebSocket subscription answer")
        .expect("subscribed");
    updates
}

const SCORER_HORIZON_MS: u64 = 30_000;

/// `scorer` v1: 100 pairs, all right; `scorer` v2: 100 pairs, every other one wrong.
fn scorer_events(base: u64) -> Vec<Value> {
    let mut events = Vec::new();
    for index in 0..200u64 {
        let (version, ts) = if index < 100 {
            ("v1", base + 1_000 + index * 100)
        } else {
            ("v2", base + 20_000 + index * 100)
        };
        let id = format!("s-{index}");
        let actual = if version == "v2" && index % 2 == 1 {
            "no"
        } else {
            "yes"
        };
        events.push(json!({"type": "prediction", "ts": ts, "model_id": "scorer",
            "model_version": version, "prediction_id": id, "predicted": "yes",
            "confidence": 0.8 + 0.01 * (index % 10) as f64, "latency_ms": 5.0}));
        events
            .push(json!({"type": "outcome", "ts": ts + 10, "prediction_id": id, "actual": actual}));
    }
    events
}

fn registry_entry<'a>(registry: &'a Value, model: &str, version: Option<&str>) -> &'a Value {
    registry
        .as_array()
        .and_then(|entries| {
            entries.iter().find(|entry| {
                entry["model_id"] == model
                    && entry["model_version"] == version.map_or(Value::Null, |v| json!(v))
            })
        })
        .unwrap_or(&Value::Null)
}

/// Run-time registration (HTTP `POST /v1/models` and MCP `realtime_add_event`) is part of
/// the event log: a pinned baseline makes a worse new version drift, the retraining
/// trigger reaches MCP, the `models/{id}` WebSocket topic and the webhook channel (through
/// the `ml.drift` alert), a run-time rule over the `model.correct` series fires for the
/// worse version only, and a restart replays the registry and that alert from the log.
#[test]
fn registered_baseline_drift_reaches_mcp_websocket_and_notifications_and_replays() {
    let hook = Hook::start();
    let overrides = [
        ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
        ("MEGAMIND__ML__HORIZON", "30s"),
        ("MEGAMIND__ML__REFERENCE_SIZE", "50"),
        ("MEGAMIND__ML__WINDOW_SIZE", "50"),
        ("MEGAMIND__ML__EVALUATE_EVERY", "10"),
        ("MEGAMIND__INGEST__MAX_FUTURE_SKEW", "1h"),
        ("MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__TYPE", "webhook"),
        (
            "MEGAMIND__ALERTS__NOTIFY__CHANNELS__HOOK__URL",
            hook.url.as_str(),
        ),
        ("MEGAMIND__ALERTS__ROUTING__CHANNELS", r#"["hook"]"#),
        ("MEGAMIND__ALERTS__ROUTING__GROUP_WAIT", "200ms"),
        ("MEGAMIND__ALERTS__ROUTING__GROUP_INTERVAL", "500ms"),
    ];
    let server = Server::start(&overrides);
    let url = server.mcp_url();
    let updates = websocket_updates(&server.websocket().analytics, &["models/scorer"]);
    let base = now_ms() + 600_000;

    // Registration over HTTP; bad registrations name their field.
    let (status, answer) = server.post(
        "/v1/models",
        json!({"model_id": "scorer", "model_version": "v2", "baseline_version": "v1",
               "task": "classification", "classes": ["no", "yes"], "owner": "ml-team",
               "description": "second try", "min_accuracy": 0.6, "max_latency_p99_ms": 100,
               "ts": base})
        .to_string(),
    );
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");
    let (status, answer) = server.post(
        "/v1/models",
        json!({"model_id": "scorer", "min_accuracy": 2}).to_string(),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "min_accuracy", "{answer}");
    let (status, answer) = server.post("/v1/models", json!({"type": "metric"}).to_string());
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("type"), "{answer}");
    // And through MCP `realtime_add_event` (a mixed batch: one good, one bad).
    let added = mcp_call(
        &url,
        MODERN,
        "realtime_add_event",
        &json!({"events": [
            {"type": "model", "model_id": "other", "description": "via MCP", "ts": base},
            {"type": "model", "model_id": "other", "classes": "yes", "ts": base},
        ]}),
    );
    let result = &added["structuredContent"];
    assert_eq!(result["accepted"], 1, "{result}");
    assert_eq!(result["rejected"][0]["field"], "classes", "{result}");
    // A rule over the accuracy series, created at run time: v2 (half right) breaks it,
    // v1 (all right) does not.
    let (status, answer) = server.post(
        "/v1/rules",
        json!({"id": "scorer_accuracy_low", "metric": "model.correct",
               "labels": {"model_id": "scorer"}, "aggregate": "mean", "op": "<",
               "threshold": 0.75, "min_count": 10, "severity": "high",
               "summary": "{{ $labels.model_id }} {{ $labels.model_version }} accuracy {{ $value }}"})
        .to_string(),
    );
    assert_eq!((status, &answer["accepted"]), (200, &json!(1)), "{answer}");

    let events = scorer_events(base);
    send_and_flush(&server, &events);

    // MCP: the registry, v2 drifting against v1's reference, the trigger.
    let status = eventually("scorer v2 drifted", Duration::from_secs(60), || {
        let status = mcp_call(&url, MODERN, "ml_performance_status", &json!({}))
            ["structuredContent"]
            .clone();
        let drifted = status["models"].as_array().is_some_and(|models| {
            models.iter().any(|m| {
                m["model_id"] == "scorer"
                    && m["model_version"] == "v2"
                    && m["matched"] == 100
                    && m["drifted"] == true
            })
        });
        if drifted {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    });
    let registration = registry_entry(&status["registry"], "scorer", Some("v2"));
    assert_eq!(registration["baseline_version"], "v1", "{status}");
    assert_eq!(registration["owner"], "ml-team", "{status}");
    assert_eq!(registration["classes"], json!(["no", "yes"]), "{status}");
    assert_eq!(
        registry_entry(&status["registry"], "other", None)["description"],
        "via MCP",
        "{status}"
    );
    let v2 = status["models"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["model_version"] == "v2"))
        .cloned()
        .unwrap_or_default();
    assert!(
        v2["drift_flags"]
            .as_array()
            .is_some_and(|flags| flags.contains(&json!("accuracy_drop"))),
        "{v2}"
    );
    assert!(
        status["retraining_triggers"]
            .as_array()
            .is_some_and(|triggers| triggers
                .iter()
                .any(|t| t["model_id"] == "scorer" && t["model_version"] == "v2")),
        "{status}"
    );
    let metrics = mcp_call(
        &url,
        MODERN,
        "ml_get_performance_metrics",
        &json!({"model_id": "scorer", "model_version": "v2"}),
    )["structuredContent"]
        .clone();
    let tracked = &metrics["details"][0]["tracked"];
    assert_eq!(tracked["drift"]["reference_version"], "v1", "{tracked}");
    assert_eq!(tracked["drift"]["reference_size"], 50, "{tracked}");
    let drop = drift_test(tracked, "accuracy_drop");
    close("v2 accuracy drop", &drop["statistic"], &json!(0.5), 1e-9);
    assert_eq!(tracked["registration"]["baseline_version"], "v1");
    assert_eq!(
        registry_entry(&metrics["registry"], "scorer", Some("v2"))["min_accuracy"],
        0.6
    );
    // v1 is its own reference and does not drift.
    let v1 = mcp_call(
        &url,
        MODERN,
        "ml_get_performance_metrics",
        &json!({"model_id": "scorer", "model_version": "v1"}),
    )["structuredContent"]["details"][0]["tracked"]
        .clone();
    assert_eq!(v1["drift"]["reference_version"], "v1", "{v1}");
    assert_eq!(v1["drift"]["drifted"], false, "{v1}");
    // A model registered without versions is known to ml_get_performance_metrics.
    let other = mcp_call(
        &url,
        MODERN,
        "ml_get_performance_metrics",
        &json!({"model_id": "other"}),
    )["structuredContent"]
        .clone();
    assert_eq!(other["registry"][0]["description"], "via MCP", "{other}");

    // WebSocket: the trigger and the registration on `models/scorer`.
    eventually(
        "the trigger on models/scorer",
        Duration::from_secs(20),
        || {
            let seen = updates.lock().expect("updates").clone();
            let trigger = seen.iter().any(|update| {
                update["topic"] == "models/scorer"
                    && update["data"]["kind"] == "retraining_trigger"
                    && update["data"]["model_version"] == "v2"
            });
            let registered = seen.iter().any(|update| {
                update["data"]["kind"] == "model_registered"
                    && update["data"]["baseline_version"] == "v1"
            });
            if trigger && registered {
                Ok(())
            } else {
                Err(format!(
                    "{} updates, none with both: {:?}",
                    seen.len(),
                    seen.last()
                ))
            }
        },
    );
    // The accuracy rule: firing for v2 alone, through MCP, with its value in the title.
    let accuracy_alerts = || {
        let active = mcp_call(&url, MODERN, "alerts_get_active", &json!({}));
        active["structuredContent"]["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|alert| alert["rule_id"] == "scorer_accuracy_low")
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let fired = eventually("the accuracy rule firing", Duration::from_secs(60), || {
        let alerts = accuracy_alerts();
        match alerts.as_slice() {
            [alert] if alert["status"] == "firing" => Ok(alert.clone()),
            _ => Err(format!("{alerts:?}")),
        }
    });
    assert_eq!(fired["key"]["name"], "model.correct", "{fired}");
    assert_eq!(fired["key"]["labels"]["model_version"], "v2", "{fired}");
    let accuracy = fired["value"].as_f64().unwrap_or(f64::NAN);
    assert!((0.4..0.6).contains(&accuracy), "v2 is half right: {fired}");
    assert!(
        fired["title"]
            .as_str()
            .is_some_and(|title| title.starts_with("scorer v2 accuracy 0.")),
        "{fired}"
    );
    // Notifiable: the drift alert reached the webhook channel.
    eventually("an ml.drift notification", Duration::from_secs(30), || {
        let bodies = hook.bodies();
        let text = Value::Array(bodies.clone()).to_string();
        if text.contains("ml.drift") && text.contains("scorer_accuracy_low") {
            Ok(())
        } else {
            Err(format!("{} notifications: {text}", bodies.len()))
        }
    });
    // GET /v1/models lists the registry and the versions.
    let (code, models) = server.get("/v1/models");
    assert_eq!(code, 200);
    assert_eq!(
        registry_entry(&models["registry"], "scorer", Some("v2"))["baseline_version"],
        "v1"
    );
    assert!(
        models["versions"]
            .as_array()
            .is_some_and(|versions| versions
                .iter()
                .any(|v| v["model_version"] == "v2" && v["reference_version"] == "v1")),
        "{models}"
    );

    // Replay: after SIGKILL, the event log rebuilds the registry, the drift and the
    // accuracy alert.
    let fired_id = fired["id"].clone();
    let dir = server.kill();
    let server = Server::start_in(dir, &overrides);
    eventually(
        "the accuracy alert replayed",
        Duration::from_secs(60),
        || {
            let (_, alert) = server.get(&format!("/v1/alerts/{}", fired_id.as_str().unwrap_or("")));
            (alert["status"] == "firing")
                .then_some(())
                .ok_or_else(|| alert.to_string())
        },
    );
    eventually("the registry replayed", Duration::from_secs(60), || {
        let (_, models) = server.get("/v1/models");
        let replayed = registry_entry(&models["registry"], "scorer", Some("v2"))
            ["baseline_version"]
            == "v1"
            && models["versions"].as_array().is_some_and(|versions| {
                versions.iter().any(|v| {
                    v["model_version"] == "v2" && v["health"] == "drifted" && v["matched"] == 100
                })
            });
        if replayed {
            Ok(())
        } else {
            Err(models.to_string())
        }
    });
}

/// Everything the ML tools report that is a function of the event log alone (not of
/// wall-clock windows): the tracked snapshot of every version, the registry, the orphan
/// count and the retraining triggers.
fn ml_state(url: &str) -> Value {
    let status =
        mcp_call(url, MODERN, "ml_performance_status", &json!({}))["structuredContent"].clone();
    let mut tracked = BTreeMap::new();
    for (model, version) in VERSIONS {
        let metrics = mcp_call(
            url,
            MODERN,
            "ml_get_performance_metrics",
            &json!({"model_id": model, "model_version": version}),
        );
        tracked.insert(
            format!("{model}/{version}"),
            metrics["structuredContent"]["details"][0]["tracked"].clone(),
        );
    }
    let mut triggers = status["retraining_triggers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    triggers.sort_by_key(|trigger| trigger.to_string());
    let summaries: Vec<Value> = status["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            json!([
                m["model_id"],
                m["model_version"],
                m["health"],
                m["accuracy"],
                m["accuracy_interval"],
                m["window_accuracy"],
                m["matched"],
                m["pending"],
                m["expired"],
                m["drifted"],
                m["drift_flags"],
                m["adwin_changes"],
                m["retraining_triggers"]
            ])
        })
        .collect();
    json!({
        "tracked": tracked,
        "summaries": summaries,
        "registry": status["registry"],
        "unattributed_orphan_outcomes": status["unattributed_orphan_outcomes"],
        "retraining_triggers": triggers,
    })
}

/// The oracle stream (late, early, too-late and missing outcomes, orphans with and
/// without a model, expiries) plus a pinned baseline and a "pin now" in the middle of the
/// stream, through servers with 1 and with 4 workers: every metric read back over MCP is
/// identical.
#[test]
fn ml_metrics_are_identical_with_1_and_4_workers() {
    let base = now_ms() + 600_000;
    let mut stream = generate(base);
    let registration = json!({"type": "model", "ts": base, "model_id": "fraud",
        "model_version": "v2", "baseline_version": "v1", "owner": "risk"});
    // In event-time order with the rest, so nothing after it is late.
    let pin_ts = base + 110_000;
    let position = stream.events.partition_point(|(ts, _)| *ts < pin_ts);
    stream.events.insert(
        position,
        (
            pin_ts,
            json!({"type": "model_baseline", "ts": pin_ts, "model_id": "churn",
                   "model_version": "v1", "actor": "ops"}),
        ),
    );
    let too_late = stream
        .predictions
        .iter()
        .filter(|p| p.outcome.is_some() && p.matched().is_none())
        .count() as u64;
    let mut states = Vec::new();
    for workers in [1usize, 4] {
        let server = Server::start_with_workers(
            workers,
            &[
                ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
                ("MEGAMIND__ML__HORIZON", "30s"),
                ("MEGAMIND__ML__REFERENCE_SIZE", "200"),
                ("MEGAMIND__ML__WINDOW_SIZE", "200"),
                ("MEGAMIND__ML__EVALUATE_EVERY", "7"),
                ("MEGAMIND__INGEST__MAX_FUTURE_SKEW", "1h"),
            ],
        );
        server.post_events_ok(registration.to_string(), 1);
        for chunk in stream.events.chunks(500) {
            let body: String = chunk
                .iter()
                .map(|(_, event)| event.to_string() + "\n")
                .collect();
            server.post_events_ok(body, chunk.len());
        }
        // One flush event per worker at least (batches go to workers round-robin).
        let flush = stream.last_ts + HORIZON_MS + 3_000;
        for offset in 0..8 {
            server.post_events_ok(
                json!({"type": "metric", "ts": flush + offset, "name": "ml_test.flush", "value": 1.0})
                    .to_string(),
                1,
            );
        }
        let url = server.mcp_url();
        let state = eventually(
            &format!("every version settled with {workers} workers"),
            Duration::from_secs(120),
            || {
                let state = ml_state(&url);
                let settled = state["tracked"].as_object().is_some_and(|tracked| {
                    tracked.values().all(|t| {
                        t["pending"] == 0
                            && t["predictions"].as_u64() == Some(PREDICTIONS / 3)
                            && t["ordered"] == t["matched"]
                    })
                }) && state["unattributed_orphan_outcomes"]
                    == stream.unhinted_orphans + too_late;
                if settled {
                    Ok(state)
                } else {
                    Err(state.to_string())
                }
            },
        );
        states.push(state);
    }
    // The pinned baseline was in effect and something drifted, so the comparison covers
    // the drift path, not only counts.
    assert_eq!(
        states[0]["tracked"]["fraud/v2"]["drift"]["reference_version"],
        "v1"
    );
    assert_eq!(states[0]["tracked"]["fraud/v1"]["drift"]["drifted"], true);
    let churn = &states[0]["tracked"]["churn/v1"];
    assert_eq!(churn["drift"]["pinned"]["at"], pin_ts, "{churn}");
    assert_eq!(churn["baseline_pins"], 1, "{churn}");
    assert_eq!(states[0], states[1], "1 and 4 workers disagree");
}

/// `pinned` v1 at `start`: `count` pairs `offset..offset + count`, every other one wrong
/// from pair 100 on (the first 100 are all right).
fn pin_pairs(start: u64, offset: u64, count: u64) -> Vec<Value> {
    let mut events = Vec::new();
    for index in offset..offset + count {
        let ts = start + (index - offset) * 100;
        let id = format!("pin-{index}");
        let actual = if index >= 100 && index % 2 == 1 {
            "no"
        } else {
            "yes"
        };
        events.push(json!({"type": "prediction", "ts": ts, "model_id": "pinned",
            "model_version": "v1", "prediction_id": id, "predicted": "yes",
            "confidence": 0.8 + 0.01 * (index % 10) as f64, "latency_ms": 5.0}));
        events
            .push(json!({"type": "outcome", "ts": ts + 10, "prediction_id": id, "actual": actual}));
    }
    events
}

/// Sends `events` and then metrics far enough ahead that every pair is matched and
/// ordered; returns the flush time.
fn send_and_flush(server: &Server, events: &[Value]) -> u64 {
    let last = events
        .iter()
        .filter_map(|event| event["ts"].as_u64())
        .max()
        .unwrap_or(0);
    let body: String = events
        .iter()
        .map(|event| event.to_string() + "\n")
        .collect();
    server.post_events_ok(body, events.len());
    let flush = last + SCORER_HORIZON_MS + 3_000;
    for offset in 0..4 {
        server.post_events_ok(
            json!({"type": "metric", "ts": flush + offset, "name": "ml_test.flush", "value": 1.0})
                .to_string(),
            1,
        );
    }
    flush
}

fn pinned_v1(status: &Value) -> Value {
    status["models"]
        .as_array()
        .and_then(|models| {
            models
                .iter()
                .find(|m| m["model_id"] == "pinned" && m["model_version"] == "v1")
        })
        .cloned()
        .unwrap_or(Value::Null)
}

fn pinned_tracked(url: &str) -> Value {
    mcp_call(
        url,
        MODERN,
        "ml_get_performance_metrics",
        &json!({"model_id": "pinned", "model_version": "v1"}),
    )["structuredContent"]["details"][0]["tracked"]
        .clone()
}

/// "Pin now" end to end: a version drifts from its first pairs; `POST
/// /v1/models/{id}/baseline` freezes its current window as the reference, the drift
/// clears and stays clear while the version behaves as it did when pinned; the pinned
/// reference (size, when, by whom) reads back over MCP, the outcome reaches the
/// `models/{id}` WebSocket topic, bad input is refused naming the field (HTTP and MCP),
/// a pin that finds nothing says why, and a SIGKILL + replay gives the same state.
#[test]
fn pin_now_over_http_clears_drift_reads_back_over_mcp_and_replays() {
    let overrides = [
        ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
        ("MEGAMIND__ML__HORIZON", "30s"),
        ("MEGAMIND__ML__REFERENCE_SIZE", "50"),
        ("MEGAMIND__ML__WINDOW_SIZE", "50"),
        ("MEGAMIND__ML__EVALUATE_EVERY", "10"),
        ("MEGAMIND__INGEST__MAX_FUTURE_SKEW", "1h"),
    ];
    let server = Server::start(&overrides);
    let url = server.mcp_url();
    let updates = websocket_updates(&server.websocket().analytics, &["models/pinned"]);
    let base = now_ms() + 600_000;

    // 100 pairs right, 100 half wrong: the current window drifts from the first 50.
    let flush = send_and_flush(&server, &pin_pairs(base, 0, 200));
    eventually("pinned v1 drifted", Duration::from_secs(60), || {
        let status = mcp_call(&url, MODERN, "ml_performance_status", &json!({}))
            ["structuredContent"]
            .clone();
        let v1 = pinned_v1(&status);
        if v1["matched"] == 200 && v1["drifted"] == true {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    let before = pinned_tracked(&url);
    assert_eq!(before["drift"]["reference_version"], "v1", "{before}");
    assert_eq!(before["drift"]["pinned"], Value::Null, "{before}");
    assert_eq!(
        drift_test(&before, "accuracy_drop")["drifted"],
        true,
        "{before}"
    );

    // Bad input names its field, and nothing is enqueued.
    let route = "/v1/models/pinned/baseline";
    let (status, answer) = server.post_raw(route, "{\"model_version\": ");
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = server.post(route, json!({"model_version": 5}).to_string());
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "model_version", "{answer}");
    let (status, answer) = server.post(route, json!({"actr": "ana"}).to_string());
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "actr", "{answer}");
    let (status, answer) = server.post(route, json!({"note": 7}).to_string());
    assert_eq!(
        (status, &answer["rejected"][0]["field"]),
        (422, &json!("note")),
        "{answer}"
    );
    let (status, answer) = server.post(route, "[1]");
    assert_eq!(status, 422, "{answer}");
    let added = mcp_call(
        &url,
        MODERN,
        "realtime_add_event",
        &json!({"event": {"type": "model_baseline", "model_id": "pinned", "actor": {"a": 1}}}),
    );
    let result = &added["structuredContent"];
    assert_eq!(result["accepted"], 0, "{result}");
    assert_eq!(result["rejected"][0]["field"], "actor", "{result}");

    // Pin now over HTTP (202 with the event), and a pin of a version that has no pairs
    // over MCP (accepted; the pipeline says why it changed nothing).
    let pin_ts = flush + 1_000;
    let (status, answer) = server.post(
        route,
        json!({"model_version": "v1", "actor": "ana", "note": "accepted shift", "ts": pin_ts})
            .to_string(),
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["event"],
        json!({"type": "model_baseline", "model_id": "pinned", "model_version": "v1",
               "actor": "ana", "note": "accepted shift", "ts": pin_ts}),
        "{answer}"
    );
    let added = mcp_call(
        &url,
        MODERN,
        "realtime_add_event",
        &json!({"event": {"type": "model_baseline", "model_id": "pinned",
                          "model_version": "v9", "actor": "mcp", "ts": pin_ts}}),
    );
    assert_eq!(added["structuredContent"]["accepted"], 1, "{added}");

    // 100 more pairs, half wrong as before the pin: no drift against the pinned window.
    send_and_flush(&server, &pin_pairs(pin_ts + 1_000, 200, 100));
    let status = eventually("pinned v1 clear", Duration::from_secs(60), || {
        let status = mcp_call(&url, MODERN, "ml_performance_status", &json!({}))
            ["structuredContent"]
            .clone();
        let v1 = pinned_v1(&status);
        if v1["matched"] == 300 && v1["drifted"] == false && v1["reference_pinned"].is_object() {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    });
    let v1 = pinned_v1(&status);
    assert_eq!(v1["reference_version"], "v1", "{v1}");
    assert_eq!(
        v1["reference_pinned"],
        json!({"at": pin_ts, "actor": "ana", "note": "accepted shift", "size": 50}),
        "{v1}"
    );
    assert_eq!(v1["health"], "ok", "{v1}");
    let pins = status["baseline_pins"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pinned = pins
        .iter()
        .find(|pin| pin["model_version"] == "v1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(pinned["pinned"], true, "{status}");
    assert_eq!(pinned["size"], 50, "{status}");
    assert_eq!(pinned["previous_reference"], "v1", "{status}");
    let missing = pins
        .iter()
        .find(|pin| pin["model_version"] == "v9")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&missing["pinned"], &missing["reason"], &missing["actor"]),
        (&json!(false), &json!("no_matched_pairs"), &json!("mcp")),
        "{status}"
    );
    let tracked = pinned_tracked(&url);
    let drift = &tracked["drift"];
    assert_eq!(drift["reference_size"], 50, "{tracked}");
    assert_eq!(drift["current_size"], 50, "{tracked}");
    assert_eq!(drift["pinned"]["at"], pin_ts, "{tracked}");
    assert_eq!(drift["pinned"]["actor"], "ana", "{tracked}");
    assert_eq!(drift["drifted"], false, "{tracked}");
    let drop = drift_test(&tracked, "accuracy_drop");
    assert_eq!(drop["drifted"], false, "{tracked}");
    close(
        "accuracy drop after the pin",
        &drop["statistic"],
        &json!(0.0),
        1e-9,
    );
    assert_eq!(tracked["baseline_pins"], 1, "{tracked}");

    // WebSocket: the outcome on `models/pinned`; HTTP: the pinned reference in the list.
    eventually("the pin on models/pinned", Duration::from_secs(20), || {
        let seen = updates.lock().expect("updates").clone();
        let pinned = seen.iter().any(|update| {
            update["topic"] == "models/pinned"
                && update["data"]["kind"] == "baseline_pin"
                && update["data"]["pinned"] == true
                && update["data"]["actor"] == "ana"
        });
        if pinned {
            Ok(())
        } else {
            Err(format!("{} updates: {:?}", seen.len(), seen.last()))
        }
    });
    let (code, models) = server.get("/v1/models");
    assert_eq!(code, 200);
    assert!(
        models["versions"]
            .as_array()
            .is_some_and(|versions| versions
                .iter()
                .any(|v| v["model_id"] == "pinned" && v["reference_pinned"]["actor"] == "ana")),
        "{models}"
    );

    // Replay: after SIGKILL the event log rebuilds the same tracked state.
    let dir = server.kill();
    let server = Server::start_in(dir, &overrides);
    let url = server.mcp_url();
    eventually("the pinned state replayed", Duration::from_secs(60), || {
        let replayed = pinned_tracked(&url);
        if replayed == tracked {
            Ok(())
        } else {
            Err(format!("replayed {replayed}\nexpected {tracked}"))
        }
    });
}
