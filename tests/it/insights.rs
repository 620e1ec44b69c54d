//! Predictive insights end to end.
//!
//! - The forecast statistics (Holt's linear method, the OLS slope t-test) against
//!   statsmodels' `Holt` and `scipy.stats.linregress`, run live by
//!   `tests/insights/oracle.py` on fixed series. Tolerance: 1e-9 relative to the value's
//!   magnitude (at least 1e-9 absolute), for levels, trends, forecasts, slopes, standard
//!   errors and p-values.
//! - The session success model through the real interfaces: a generated population with a
//!   known rule (troubled sessions err often and mostly fail) is posted over HTTP; the
//!   model's own predictions and the sessions' outcomes are read back from the ML tracker
//!   with the official Python MCP client (`ml_get_performance_metrics` for
//!   `session-success`), and its accuracy must be well above the majority-class rate.
//!   `/v1/insights`, `/v1/forecasts`, `/v1/status` and `realtime_get_analytics` carry the
//!   model, forecasts and recommendations.
//!
//! Peer: Python with statsmodels, scipy and the MCP client (`MEGAMIND_TEST_PYTHON`, else
//! `python3`); a missing one fails the test loudly.

use std::process::{Command, Stdio};
use std::time::Duration;

use megamind_dataflows::operators::forecast_series::math::{ols_trend, Holt};
use serde_json::{json, Value};

use crate::mcp::{mcp_call, MODERN, TOKEN};
use crate::support::{eventually, now_ms, Server};

/// The interpreter with statsmodels, scipy and mcp; panics with how to install them.
fn insights_python() -> String {
    let python = std::env::var("MEGAMIND_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import statsmodels, scipy, mcp"])
        .output();
    match probe {
        Ok(output) if output.status.success() => python,
        other => panic!(
            "{python:?} cannot import statsmodels, scipy and mcp ({other:?}): the insights \
             oracle test needs them. `bash .ci/run` installs them in .ci/.venv \
             (statsmodels==0.15.0 scipy==1.17.1 mcp==2.3.0); then set \
             MEGAMIND_TEST_PYTHON=$PWD/.ci/.venv/bin/python"
        ),
    }
}

fn close(what: &str, actual: f64, expected: f64) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: megamind {actual} vs reference {expected} (tolerance {tolerance})"
    );
}

/// A deterministic pseudo-random source (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn forecast_statistics_match_statsmodels_and_scipy() {
    let python = insights_python();
    let mut rng = Lcg(11);
    let mut series: Vec<Vec<f64>> = vec![
        vec![1.0, 2.0, 3.5, 3.9, 5.2, 6.8, 6.1, 7.9, 9.4, 9.0],
        vec![
            100.0, 98.0, 101.0, 97.0, 99.0, 100.0, 102.0, 98.0, 99.0, 101.0,
        ],
    ];
    // Noisy trends and level shifts, as window means look.
    for slope in [0.5, -2.0, 0.0, 10.0] {
        series.push(
            (0..30)
                .map(|index| {
                    let shift = if index >= 20 { 15.0 } else { 0.0 };
                    200.0 + slope * index as f64 + shift + 8.0 * (rng.next() - 0.5)
                })
                .collect(),
        );
    }
    let (alpha, beta, horizon) = (0.5, 0.3, 5);
    let request = json!({"series": series, "alpha": alpha, "beta": beta, "horizon": horizon});
    let mut child = Command::new(&python)
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join("insights")
                .join("oracle.py"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the insights oracle");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(request.to_string().as_bytes())
            .expect("write the request");
    }
    let output = child.wait_with_output().expect("oracle output");
    assert!(
        output.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Vec<Value> = serde_json::from_slice(&output.stdout).expect("oracle JSON");
    assert_eq!(reference.len(), series.len());
    for (index, (values, want)) in series.iter().zip(&reference).enumerate() {
        let holt = Holt::fit(values, alpha, beta).expect("enough points");
        close(
            &format!("series {index} level"),
            holt.level,
            want["level"].as_f64().unwrap(),
        );
        close(
            &format!("series {index} trend"),
            holt.trend,
            want["trend"].as_f64().unwrap(),
        );
        for (step, expected) in want["forecast"].as_array().unwrap().iter().enumerate() {
            close(
                &format!("series {index} forecast h={}", step + 1),
                holt.forecast(step as f64 + 1.0),
                expected.as_f64().unwrap(),
            );
        }
        close(
            &format!("series {index} SSE"),
            holt.sigma.powi(2) * (values.len() as f64 - 2.0),
            want["sse"].as_f64().unwrap(),
        );
        let x: Vec<f64> = (0..values.len()).map(|i| i as f64).collect();
        let trend = ols_trend(&x, values).expect("enough points");
        close(
            &format!("series {index} slope"),
            trend.slope,
            want["slope"].as_f64().unwrap(),
        );
        close(
            &format!("series {index} intercept"),
            trend.intercept,
            want["intercept"].as_f64().unwrap(),
        );
        close(
            &format!("series {index} stderr"),
            trend.slope_stderr,
            want["stderr"].as_f64().unwrap(),
        );
        let p_value = want["p_value"].as_f64().unwrap();
        assert!(
            (trend.p_value - p_value).abs() <= 1e-9 * p_value.max(1e-300).max(1e-9),
            "series {index} p-value: megamind {} vs scipy {p_value}",
            trend.p_value
        );
    }
}

/// One generated session: troubled ones (30%) err on 60% of operations and fail 90% of
/// the time; healthy ones err on 5% and fail 5% of the time.
fn session_events(index: usize, rng: &mut Lcg) -> (Vec<Value>, bool) {
    let troubled = rng.next() < 0.3;
    let error_rate = if troubled { 0.6 } else { 0.05 };
    let operations = 4 + (rng.next() * 8.0) as usize;
    let id = format!("it-session-{index:04}");
    let mut events = vec![json!({"type": "session", "session_id": id, "kind": "started"})];
    for _ in 0..operations {
        let ok = rng.next() >= error_rate;
        events.push(json!({
            "type": "session", "session_id": id, "kind": "operation", "operation": "edit",
            "duration_ms": 100.0 + 300.0 * rng.next(), "tokens": 100, "success": ok,
        }));
    }
    let failed = if troubled {
        rng.next() < 0.9
    } else {
        rng.next() < 0.05
    };
    events.push(json!({
        "type": "session", "session_id": id,
        "kind": if failed { "failed" } else { "completed" },
    }));
    (events, !failed)
}

#[test]
fn success_model_predictions_and_outcomes_reach_the_ml_tracker() {
    insights_python();
    let server = Server::start(&[
        ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
        ("MEGAMIND__INSIGHTS__MIN_TRAINING", "30"),
        ("MEGAMIND__INSIGHTS__RETRAIN_EVERY", "50"),
    ]);
    let url = server.mcp_url();
    let mut rng = Lcg(5);
    let sessions = 300;
    let mut successes = 0;
    // Ten sessions run side by side: their events interleave, a batch per round.
    let mut pending: Vec<std::collections::VecDeque<Value>> = Vec::new();
    let mut next = 0;
    loop {
        while pending.len() < 10 && next < sessions {
            let (events, succeeded) = session_events(next, &mut rng);
            successes += usize::from(succeeded);
            pending.push(events.into());
            next += 1;
        }
        if pending.is_empty() {
            break;
        }
        let ts = now_ms();
        let mut body = String::new();
        let mut count = 0;
        for queue in &mut pending {
            if let Some(mut event) = queue.pop_front() {
                event["ts"] = json!(ts);
                body.push_str(&event.to_string());
                body.push('\n');
                count += 1;
            }
        }
        pending.retain(|queue| !queue.is_empty());
        server.post_events_ok(body, count);
    }
    let base = successes as f64 / sessions as f64;
    let majority = base.max(1.0 - base);

    // Every tracked prediction meets its outcome once its session ended.
    let details = eventually(
        "session-success predictions matched",
        Duration::from_secs(60),
        || {
            let answer = mcp_call(
                &url,
                MODERN,
                "ml_get_performance_metrics",
                &json!({"model_id": "session-success"}),
            );
            let details = answer["structuredContent"]["details"]
                .as_array()
                .cloned()
                .ok_or_else(|| format!("no details: {answer}"))?;
            let (predictions, matched) = details.iter().fold((0, 0), |(p, m), detail| {
                let tracked = &detail["tracked"];
                (
                    p + tracked["predictions"].as_u64().unwrap_or(0),
                    m + tracked["matched"].as_u64().unwrap_or(0),
                )
            });
            if predictions > 150 && predictions == matched {
                Ok(details)
            } else {
                Err(format!("{predictions} predictions, {matched} matched"))
            }
        },
    );
    let (mut matched, mut correct) = (0.0, 0.0);
    for detail in &details {
        let cumulative = &detail["tracked"]["cumulative"];
        let pairs = cumulative["matched"].as_f64().unwrap();
        matched += pairs;
        correct += pairs * cumulative["accuracy"].as_f64().unwrap_or(0.0);
    }
    let accuracy = correct / matched;
    eprintln!(
        "session-success: {matched} tracked predictions over {} versions, accuracy {accuracy:.3}, \
         majority class {majority:.3}",
        details.len()
    );
    assert!(
        accuracy > majority + 0.1,
        "accuracy {accuracy:.3} is not well above the majority-class rate {majority:.3}"
    );

    let (status, insights) = server.get("/v1/insights");
    assert_eq!(status, 200);
    let model = &insights["success_model"];
    assert!(
        model["version"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{insights}"
    );
    assert!(model["trained_on"].as_u64().unwrap() >= 30, "{model}");
    let (status, forecasts) = server.get("/v1/forecasts");
    assert_eq!(status, 200);
    assert!(forecasts["forecasts"].is_array(), "{forecasts}");
    let (status, engine) = server.get("/v1/status");
    assert_eq!(status, 200);
    assert!(engine["health_forecast"].is_array(), "{engine}");
    let analytics = mcp_call(&url, MODERN, "realtime_get_analytics", &json!({}));
    let result = &analytics["structuredContent"];
    assert_eq!(
        result["success_model"]["version"], model["version"],
        "{result}"
    );
    for field in ["forecasts", "recommendations", "session_predictions"] {
        assert!(result[field].is_array(), "{field}: {result}");
    }

    // On demand: a retrain request is an event (here through MCP); the model it names must
    // be megamind's own, and a request for another model is rejected naming the field.
    let (status, answer) = server.post(
        "/v1/events",
        json!({"type": "retrain", "model_id": "churn"}).to_string(),
    );
    assert_eq!(status, 422, "every record rejected: {answer}");
    assert_eq!(answer["accepted"], 0, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "model_id", "{answer}");
    assert_eq!(answer["rejected"][0]["reason"], "invalid_value", "{answer}");
    let before: u64 = model["version"].as_str().unwrap()[1..].parse().unwrap();
    let asked = mcp_call(
        &url,
        MODERN,
        "realtime_add_event",
        &json!({"event": {"type": "retrain", "model_id": "session-success", "actor": "tester", "note": "on demand"}}),
    );
    assert_ne!(asked["isError"], json!(true), "{asked}");
    let retrained = eventually(
        "a model retrained on request",
        Duration::from_secs(30),
        || {
            let (_, insights) = server.get("/v1/insights");
            let model = insights["success_model"].clone();
            let version: u64 = model["version"]
                .as_str()
                .and_then(|v| v.strip_prefix('v'))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if model["reason"] == "requested" && version > before {
                Ok(model)
            } else {
                Err(format!("latest model: {model}"))
            }
        },
    );
    assert!(
        retrained["trained_on"].as_u64().unwrap() >= 30,
        "{retrained}"
    );
}

#[test]
fn self_monitoring_feeds_health_series_whose_forecast_reaches_the_status() {
    let server = Server::start(&[
        ("MEGAMIND__MCP__AUTH_TOKEN", TOKEN),
        ("MEGAMIND__INSIGHTS__SELF_MONITORING", "true"),
        ("MEGAMIND__INSIGHTS__HEALTH_INTERVAL", "200ms"),
        ("MEGAMIND__INSIGHTS__FORECAST_MIN_WINDOWS", "3"),
    ]);
    let forecast = eventually(
        "a health forecast in /v1/status",
        Duration::from_secs(60),
        || {
            let (status, engine) = server.get("/v1/status");
            if status != 200 {
                return Err(format!("status {status}"));
            }
            engine["health_forecast"]
                .as_array()
                .and_then(|forecasts| {
                    forecasts
                        .iter()
                        .find(|f| f["key"]["name"] == "megamind.process.memory_bytes")
                        .cloned()
                })
                .ok_or_else(|| format!("no memory forecast yet: {}", engine["health_forecast"]))
        },
    );
    let value = forecast["value"].as_f64().unwrap();
    assert!(value > 1_000_000.0, "RSS of a running server: {forecast}");
    assert!(forecast["lower"].as_f64().unwrap() <= forecast["upper"].as_f64().unwrap());
    // The same through MCP.
    let url = server.mcp_url();
    let status = mcp_call(&url, MODERN, "realtime_get_status", &json!({}));
    let health = &status["structuredContent"]["status"]["health_forecast"];
    assert!(
        health
            .as_array()
            .is_some_and(|forecasts| !forecasts.is_empty()),
        "{status}"
    );
}
