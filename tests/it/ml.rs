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
