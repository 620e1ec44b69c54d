use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::model::{
    Aggregate, AlertAction, AlertCommand, AlertState, BreachRule, Comparison, ErrorReason,
    EventBody, MetricEvent, OutcomeEvent, PredictionEvent, SeriesKey, SessionEvent, SessionKind,
    Severity, Update,
};
use crate::operators::AlertConfig;
use crate::reference::{
    alert_lifecycle, breaches_and_transitions, correctness_samples, event_samples,
    json_differences, session_history, session_states, sliding_windows, ExpectedRecord,
};
use crate::testing::{run_epochs, Epoch, Output};

/// Window, interval and rules of one test run.
#[derive(Debug, Clone)]
struct Setup {
    length_ms: u64,
    slide_ms: u64,
    interval_ms: u64,
    rules: Vec<BreachRule>,
}

impl Setup {
    fn config(&self) -> AnalyticsConfig {
        AnalyticsConfig {
            windows: WindowConfig {
                length: Duration::from_millis(self.length_ms),
                slide: Duration::from_millis(self.slide_ms),
                exact_limit: 10_000,
            },
            sessions: SessionConfig {
                history_interval: Duration::from_millis(self.interval_ms),
                ..SessionConfig::default()
            },
            rules: RuleSet::new(self.rules.clone()),
            alerts: AlertConfig::default(),
            models: crate::operators::TrackModelsConfig::default(),
            // These tests compare with the reference recomputation of windows, sessions
            // and alerts; the insight operators have their own tests.
            insights: crate::pipelines::InsightsConfig {
                enabled: false,
                ..Default::default()
            },
            // The oracle below covers windows, sessions and alerts; anomaly scoring has its
            // own operator tests.
            anomaly: crate::operators::AnomalyConfig {
                enabled: false,
                ..Default::default()
            },
            novelty: crate::operators::NoveltyConfig::default(),
        }
    }
}

fn rule(
    id: &str,
    metric: &str,
    aggregate: Aggregate,
    op: Comparison,
    threshold: f64,
) -> BreachRule {
    BreachRule {
        id: id.into(),
        metric: metric.into(),
        labels: Vec::new(),
        aggregate,
        op,
        threshold,
        severity: Severity::High,
        min_count: 1,
        for_duration: std::time::Duration::ZERO,
        keep_firing_for: std::time::Duration::ZERO,
        cooldown: std::time::Duration::ZERO,
        forecast: None,
        summary: None,
        annotations: Default::default(),
    }
}

fn at(ts: u64, body: EventBody) -> Event {
    Event {
        ts,
        body,
        attrs: Vec::new(),
    }
}

fn metric(ts: u64, name: &str, region: Option<&str>, session: Option<&str>, value: f64) -> Event {
    at(
        ts,
        EventBody::Metric(MetricEvent {
            name: name.into(),
            value,
            labels: region
                .map(|region| vec![("region".into(), region.into())])
                .unwrap_or_default(),
            session_id: session.map(Into::into),
        }),
    )
}

fn session(session: &str, kind: SessionKind) -> SessionEvent {
    SessionEvent {
        session_id: session.into(),
        user_id: None,
        kind,
        operation: None,
        duration_ms: None,
        tokens: None,
        success: None,
        message: None,
    }
}

fn session_event(ts: u64, event: SessionEvent) -> Event {
    at(ts, EventBody::Session(event))
}

fn operation(ts: u64, id: &str, duration: f64, tokens: u64, success: bool) -> Event {
    session_event(
        ts,
        SessionEvent {
            operation: Some("read".into()),
            duration_ms: Some(duration),
            tokens: Some(tokens),
            success: Some(success),
            ..session(id, SessionKind::Operation)
        },
    )
}

fn prediction(ts: u64, model: &str, version: Option<&str>, latency: f64, confidence: f64) -> Event {
    at(
        ts,
        EventBody::Prediction(PredictionEvent {
            model_id: model.into(),
            model_version: version.map(Into::into),
            prediction_id: format!("p{ts}").into(),
            predicted: "cat".into(),
            confidence,
            latency_ms: latency,
            features: vec![("x".into(), 1.0)],
            session_id: None,
        }),
    )
}

fn outcome(ts: u64) -> Event {
    outcome_of(ts, &format!("p{ts}"), "dog")
}

fn outcome_of(ts: u64, prediction_id: &str, actual: &str) -> Event {
    at(
        ts,
        EventBody::Outcome(OutcomeEvent {
            prediction_id: prediction_id.into(),
            actual: actual.into(),
            model_id: None,
        }),
    )
}

fn alert_command(ts: u64) -> Event {
    at(
        ts,
        EventBody::AlertCommand(Box::new(AlertCommand {
            alert_id: Some("slow-0".into()),
            actor: Some("ann".into()),
            ..AlertCommand::new(AlertAction::Acknowledge)
        })),
    )
}

fn run(setup: &Setup, epochs: Vec<Epoch<Event>>) -> Output {
    let config = setup.config();
    run_epochs(move |events| analytics(events, &config), epochs)
}

/// The canonical updates of one kind, without their `kind` tag, keyed by `key`.
fn by_key<K: Ord + std::fmt::Debug>(
    output: &Output,
    kind: &str,
    key: impl Fn(&Value) -> K,
) -> BTreeMap<K, Value> {
    let mut out = BTreeMap::new();
    for mut value in output.of_kind(kind) {
        value.as_object_mut().unwrap().remove("kind");
        let previous = out.insert(key(&value), value);
        assert!(previous.is_none(), "duplicate {kind}: {previous:?}");
    }
    out
}

/// Asserts that `got` and `want` hold the same keys and, per key, values equal up to 1e-9.
fn assert_same<K: Ord + std::fmt::Debug, T: serde::Serialize>(
    what: &str,
    got: &BTreeMap<K, Value>,
    want: &BTreeMap<K, T>,
) {
    let got_keys: Vec<&K> = got.keys().collect();
    let want_keys: Vec<&K> = want.keys().collect();
    assert_eq!(got_keys, want_keys, "{what}: keys");
    for (key, want) in want {
        let want = serde_json::to_value(want).unwrap();
        let differences = json_differences(&got[key], &want, 1e-9);
        assert!(
            differences.is_empty(),
            "{what} {key:?}: {differences:#?}\ngot  {}\nwant {want}",
            got[key]
        );
    }
}

fn key_of(value: &Value) -> SeriesKey {
    serde_json::from_value(value["key"].clone()).unwrap()
}

/// Checks every update of the run against the from-scratch references: windows, idle
/// marks, late rejections, breaches, alert transitions, final sessions and history samples.
fn assert_matches_references(output: &Output, epochs: &[Epoch<Event>], setup: &Setup) {
    let events: Vec<(Time, &Event)> = epochs
        .iter()
        .flat_map(|epoch| epoch.data.iter().map(move |event| (epoch.time, event)))
        .collect();
    let horizon_ms = crate::time::duration_ms(setup.config().models.horizon);
    let samples: Vec<(Time, crate::model::Sample)> = events
        .iter()
        .flat_map(|(arrived, event)| {
            event_samples(event)
                .into_iter()
                .map(move |sample| (*arrived, sample))
        })
        .chain(correctness_samples(&events, horizon_ms))
        .collect();
    let session_events: Vec<(Time, u64, SessionEvent)> = events
        .iter()
        .filter_map(|(arrived, event)| match &event.body {
            EventBody::Session(session) => Some((*arrived, event.ts, session.clone())),
            _ => None,
        })
        .collect();

    let windows = sliding_windows(&samples, setup.length_ms, setup.slide_ms);
    let want_windows: BTreeMap<(SeriesKey, u64), _> = windows
        .windows
        .iter()
        .map(|((key, end), window)| {
            (
                (key.clone(), *end),
                window.stats(key, *end, setup.length_ms),
            )
        })
        .collect();
    let got_windows = by_key(output, "window", |v| {
        (key_of(v), v["end"].as_u64().unwrap())
    });
    assert_same("window", &got_windows, &want_windows);

    let got_idle: BTreeSet<(SeriesKey, u64)> = output
        .of_kind("series_idle")
        .iter()
        .map(|v| (key_of(v), v["end"].as_u64().unwrap()))
        .collect();
    assert_eq!(got_idle, windows.idle, "idle marks");
    let rejected = output.of_kind("rejected");
    assert_eq!(rejected.len(), windows.late, "late samples");
    assert!(
        rejected
            .iter()
            .all(|v| v["error"]["reason"] == ErrorReason::Late.as_str()),
        "{rejected:?}"
    );

    let alerts = breaches_and_transitions(&windows, setup.length_ms, &setup.rules);
    let want_breaches: BTreeMap<(String, SeriesKey, u64), _> = alerts
        .breaches
        .iter()
        .map(|breach| {
            (
                (breach.rule_id.to_string(), breach.key.clone(), breach.end),
                breach,
            )
        })
        .collect();
    assert_eq!(
        want_breaches.len(),
        alerts.breaches.len(),
        "one breach per rule and window"
    );
    let got_breaches = by_key(output, "breach", |v| {
        (
            v["rule_id"].as_str().unwrap().to_owned(),
            key_of(v),
            v["end"].as_u64().unwrap(),
        )
    });
    assert_same("breach", &got_breaches, &want_breaches);
    let want_transitions: BTreeMap<(String, u64), _> = alerts
        .transitions
        .iter()
        .map(|transition| ((transition.fingerprint.clone(), transition.at), transition))
        .collect();
    assert_eq!(
        want_transitions.len(),
        alerts.transitions.len(),
        "one transition per alert and time"
    );
    let got_transitions = by_key(output, "alert", |v| {
        (
            v["fingerprint"].as_str().unwrap().to_owned(),
            v["at"].as_u64().unwrap(),
        )
    });
    assert_same("alert", &got_transitions, &want_transitions);

    let want_sessions: BTreeMap<String, _> = session_states(&session_events)
        .into_iter()
        .map(|(id, state)| (id.to_string(), state))
        .collect();
    let got_sessions = by_key(output, "session", |v| {
        v["session_id"].as_str().unwrap().to_owned()
    });
    assert_same("session", &got_sessions, &want_sessions);
    let want_history: BTreeMap<(String, u64), _> =
        session_history(&session_events, setup.interval_ms)
            .into_iter()
            .map(|((id, at), sample)| ((id.to_string(), at), sample))
            .collect();
    let got_history = by_key(output, "session_sample", |v| {
        (
            v["session_id"].as_str().unwrap().to_owned(),
            v["at"].as_u64().unwrap(),
        )
    });
    assert_same("session_sample", &got_history, &want_history);

    // The alert lifecycle: final record per alert (in emission order of the 1-worker
    // run) and the rejected commands, against a from-scratch replay.
    let commands: Vec<(Time, u64, crate::model::AlertCommand)> = events
        .iter()
        .filter_map(|(entered, event)| match &event.body {
            EventBody::AlertCommand(command) => Some((*entered, event.ts, (**command).clone())),
            _ => None,
        })
        .collect();
    let (want_records, want_rejections) = alert_lifecycle(&alerts.transitions, &commands);
    let mut got_records: BTreeMap<String, ExpectedRecord> = BTreeMap::new();
    for (_, update) in &output.updates {
        if let Update::AlertRecord(record) = update {
            got_records.insert(
                record.id.clone(),
                ExpectedRecord {
                    status: record.status.as_str(),
                    fired: record.fired,
                    acknowledged_by: record.acknowledged.as_ref().map(|act| act.by.to_string()),
                    resolved_by: record.resolved.as_ref().map(|act| act.by.to_string()),
                },
            );
        }
    }
    assert_eq!(got_records, want_records, "alert lifecycle");
    let record_lines = output.of_kind("alert_record").len();
    let rejection_lines = output.of_kind("command_rejected").len();
    assert_eq!(rejection_lines, want_rejections, "rejected commands");

    let checked = got_windows.len()
        + got_idle.len()
        + rejected.len()
        + got_breaches.len()
        + got_transitions.len()
        + got_sessions.len()
        + got_history.len()
        + record_lines
        + rejection_lines
        + output.of_kind("model_metrics").len()
        + output.of_kind("retraining_trigger").len()
        + output.of_kind("unattributed_orphans").len();
    assert_eq!(
        output.lines.len(),
        checked,
        "updates of unexpected kinds: {:#?}",
        output.lines
    );
}

fn hand_built_setup() -> Setup {
    let mut eu_hot = rule("eu_hot", "*", Aggregate::Max, Comparison::AtLeast, 90.0);
    eu_hot.labels = vec![("region".into(), "eu".into())];
    eu_hot.min_count = 2;
    eu_hot.severity = Severity::Critical;
    Setup {
        length_ms: 20,
        slide_ms: 10,
        interval_ms: 10,
        rules: vec![
            rule(
                "slow",
                "latency_ms",
                Aggregate::Mean,
                Comparison::Above,
                50.0,
            ),
            eu_hot,
            rule(
                "erring",
                "session.errors",
                Aggregate::Mean,
                Comparison::AtLeast,
                0.5,
            ),
        ],
    }
}

fn hand_built_epochs() -> Vec<Epoch<Event>> {
    let mut started = session("s1", SessionKind::Started);
    started.user_id = Some("ann".into());
    let mut error = session("s1", SessionKind::Error);
    error.message = Some("boom".into());
    vec![
        Epoch::new(
            0,
            vec![
                metric(1, "latency_ms", Some("eu"), None, 40.0),
                metric(5, "latency_ms", Some("eu"), None, 80.0),
                session_event(2, started),
                operation(3, "s1", 12.0, 7, true),
                prediction(4, "m1", Some("v2"), 30.0, 0.75),
                outcome(6),
                alert_command(7),
            ],
        ),
        Epoch::new(
            10,
            vec![
                metric(12, "latency_ms", Some("eu"), None, 20.0),
                metric(14, "cpu", Some("eu"), Some("s1"), 95.0),
                metric(15, "cpu", Some("eu"), Some("s1"), 91.0),
                session_event(11, error),
                operation(13, "s1", 20.0, 3, false),
            ],
        ),
        Epoch::new(
            30,
            vec![
                session_event(31, session("s1", SessionKind::Completed)),
                metric(35, "latency_ms", Some("eu"), None, 100.0),
                // Late: its pane [10, 20) closed before the watermark reached 30.
                metric(12, "latency_ms", Some("eu"), None, 1_000.0),
                // Late for windows, but sessions count it in the interval open at 30.
                session_event(8, session("s1", SessionKind::Status)),
            ],
        ),
    ]
}

#[test]
fn mixed_events_match_the_references() {
    let setup = hand_built_setup();
    let epochs = hand_built_epochs();
    let output = run(&setup, epochs.clone());
    assert_matches_references(&output, &epochs, &setup);

    let mut transitions: Vec<(String, String, AlertState, u64, Option<f64>)> = output
        .of_kind("alert")
        .iter()
        .map(|v| {
            (
                v["rule_id"].as_str().unwrap().to_owned(),
                v["key"]["name"].as_str().unwrap().to_owned(),
                serde_json::from_value(v["state"].clone()).unwrap(),
                v["at"].as_u64().unwrap(),
                v["value"].as_f64(),
            )
        })
        .collect();
    transitions.sort_by(|a, b| (&a.0, a.3).cmp(&(&b.0, b.3)));
    let firing = AlertState::Firing;
    let resolved = AlertState::Resolved;
    let expected = [
        ("erring", "session.errors", firing, 20, Some(2.0 / 3.0)),
        ("erring", "session.errors", resolved, 40, None),
        ("eu_hot", "cpu", firing, 20, Some(95.0)),
        ("eu_hot", "cpu", resolved, 40, None),
        ("slow", "latency_ms", firing, 10, Some(60.0)),
        ("slow", "latency_ms", resolved, 20, Some(140.0 / 3.0)),
        ("slow", "latency_ms", firing, 40, Some(100.0)),
        ("slow", "latency_ms", resolved, 60, None),
    ]
    .map(|(rule, name, state, at, value)| (rule.to_owned(), name.to_owned(), state, at, value));
    assert_eq!(transitions, expected);
    assert_eq!(output.of_kind("breach").len(), 7);
    assert_eq!(output.of_kind("rejected").len(), 1);

    let sessions = output.of_kind("session");
    assert_eq!(sessions.len(), 1);
    let s1 = &sessions[0];
    assert_eq!(
        (s1["status"].as_str(), s1["ended_at"].as_u64()),
        (Some("completed"), Some(31))
    );
    assert_eq!(
        (
            s1["operations"].as_u64(),
            s1["errors"].as_u64(),
            s1["tokens"].as_u64()
        ),
        (Some(2), Some(2), Some(10))
    );
    assert_eq!(
        (s1["events"].as_u64(), s1["started_at"].as_u64()),
        (Some(6), Some(2))
    );
    let history: Vec<(u64, u64)> = output
        .of_kind("session_sample")
        .iter()
        .map(|v| (v["at"].as_u64().unwrap(), v["operations"].as_u64().unwrap()))
        .collect();
    // The status event at ts 8 arrived at 30: it falls in the interval ending at 40.
    assert_eq!(history, [(10, 1), (20, 2), (40, 2)]);
}

#[test]
fn derived_series_are_windowed() {
    let setup = Setup {
        length_ms: 10,
        slide_ms: 10,
        interval_ms: 10,
        rules: Vec::new(),
    };
    let mut error = session("s1", SessionKind::Error);
    error.duration_ms = Some(2.5);
    let epochs = vec![Epoch::new(
        0,
        vec![
            operation(1, "s1", 12.0, 7, true),
            operation(2, "s1", 20.0, 3, false),
            session_event(3, error),
            prediction(4, "m1", Some("v2"), 30.0, 0.75),
            prediction(5, "m2", None, 10.0, 0.25),
            // Right (the predictions say "cat") and wrong: a window mean of 1/2 over the
            // two versions would be wrong, each version has its own series.
            outcome_of(6, "p4", "cat"),
            outcome_of(7, "p5", "dog"),
        ],
    )];
    let output = run(&setup, epochs.clone());
    assert_matches_references(&output, &epochs, &setup);
    let windows: BTreeMap<String, (u64, f64)> = output
        .of_kind("window")
        .iter()
        .map(|v| {
            (
                key_of(v).to_string(),
                (v["count"].as_u64().unwrap(), v["sum"].as_f64().unwrap()),
            )
        })
        .collect();
    let expected: BTreeMap<String, (u64, f64)> = [
        ("operation.duration_ms{operation=read}", (2, 32.0)),
        (
            "prediction.confidence{model_id=m1,model_version=v2}",
            (1, 0.75),
        ),
        ("prediction.confidence{model_id=m2}", (1, 0.25)),
        (
            "prediction.latency_ms{model_id=m1,model_version=v2}",
            (1, 30.0),
        ),
        ("prediction.latency_ms{model_id=m2}", (1, 10.0)),
        ("model.correct{model_id=m1,model_version=v2}", (1, 1.0)),
        ("model.correct{model_id=m2}", (1, 0.0)),
        ("session.duration_ms{session_id=s1}", (3, 34.5)),
        ("session.errors{session_id=s1}", (3, 2.0)),
        ("session.tokens{session_id=s1}", (2, 10.0)),
    ]
    .into_iter()
    .map(|(key, stats)| (key.to_owned(), stats))
    .collect();
    assert_eq!(windows, expected);
}

#[test]
fn rules_watch_model_accuracy() {
    // Accuracy below 3/4 over at least two outcomes of model m1 (any version).
    let mut accuracy_low = rule(
        "accuracy_low",
        "model.correct",
        Aggregate::Mean,
        Comparison::Below,
        0.75,
    );
    accuracy_low.labels = vec![("model_id".into(), "m1".into())];
    accuracy_low.min_count = 2;
    let setup = Setup {
        length_ms: 10,
        slide_ms: 10,
        interval_ms: 10,
        rules: vec![accuracy_low],
    };
    let guess = |ts: u64, model: &str| prediction(ts, model, Some("v1"), 5.0, 0.9);
    let epochs = vec![
        // [0, 10): three of four right, 0.75 is not below 0.75; m2 is always wrong but
        // the rule watches m1 only.
        Epoch::new(
            0,
            vec![
                guess(1, "m1"),
                guess(2, "m1"),
                guess(3, "m1"),
                guess(4, "m1"),
                guess(9, "m2"),
                outcome_of(5, "p1", "cat"),
                outcome_of(6, "p2", "cat"),
                outcome_of(7, "p3", "cat"),
                outcome_of(8, "p4", "dog"),
                outcome_of(9, "p9", "dog"),
            ],
        ),
        // [10, 20): two of four right: fires at 20 with the accuracy as its value. No
        // outcome falls in [20, 30) (p21's comes later), so the series goes idle and the
        // alert resolves at 30.
        Epoch::new(
            10,
            vec![
                guess(11, "m1"),
                guess(12, "m1"),
                outcome_of(13, "p11", "dog"),
                outcome_of(14, "p12", "cat"),
                outcome_of(16, "p16", "cat"),
                guess(16, "m1"),
                guess(17, "m1"),
                outcome_of(18, "p17", "dog"),
                guess(21, "m1"),
            ],
        ),
        // The outcome of p21, arriving at 40 with an older event time: the pair is
        // complete at its arrival, so it is counted in [40, 50), not dropped as late.
        Epoch::new(40, vec![outcome_of(25, "p21", "cat")]),
        Epoch::new(60, vec![]),
    ];
    let output = run(&setup, epochs.clone());
    assert_matches_references(&output, &epochs, &setup);
    let transitions: Vec<(String, AlertState, u64, Option<f64>)> = output
        .of_kind("alert")
        .iter()
        .map(|v| {
            (
                v["key"].to_string(),
                serde_json::from_value(v["state"].clone()).unwrap(),
                v["at"].as_u64().unwrap(),
                v["value"].as_f64(),
            )
        })
        .collect();
    let series = r#"{"labels":{"model_id":"m1","model_version":"v1"},"name":"model.correct"}"#;
    assert_eq!(
        transitions,
        [
            (series.to_owned(), AlertState::Firing, 20, Some(0.5)),
            (series.to_owned(), AlertState::Resolved, 30, None),
        ]
    );
    let windows: Vec<(String, u64, u64, f64)> = output
        .of_kind("window")
        .iter()
        .filter(|v| v["key"]["name"] == "model.correct")
        .map(|v| {
            (
                v["key"]["labels"]["model_id"].as_str().unwrap().to_owned(),
                v["end"].as_u64().unwrap(),
                v["count"].as_u64().unwrap(),
                v["mean"].as_f64().unwrap(),
            )
        })
        .collect();
    let m1 = |end, count, mean| ("m1".to_owned(), end, count, mean);
    assert_eq!(
        windows,
        [
            m1(10, 4, 0.75),
            m1(20, 4, 0.5),
            m1(50, 1, 1.0),
            ("m2".to_owned(), 10, 1, 0.0),
        ]
    );

    // Without the series: no model.correct windows, so nothing for a rule to watch, and a
    // rule over it created at run time is refused, with the reason.
    let mut config = setup.config();
    config.models.correctness_series = false;
    let mut epochs = epochs;
    let mut create = AlertCommand {
        alert_id: Some("late_rule".into()),
        actor: Some("ann".into()),
        ..AlertCommand::new(AlertAction::CreateRule)
    };
    create.rule = Some(
        serde_json::to_string(&rule(
            "late_rule",
            "model.correct",
            Aggregate::Mean,
            Comparison::Below,
            0.9,
        ))
        .unwrap(),
    );
    epochs[1]
        .data
        .push(at(12, EventBody::AlertCommand(Box::new(create))));
    let output = run_epochs(move |events| analytics(events, &config), epochs);
    let rejected = output.of_kind("command_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        rejected[0]["reason"],
        "the rule watches model.correct, which needs ml.correctness_series = true"
    );
    assert!(output.of_kind("rule_change").is_empty());
    for kind in ["window", "series_idle", "breach", "alert", "alert_record"] {
        assert!(
            output
                .of_kind(kind)
                .iter()
                .all(|value| value["key"]["name"] != "model.correct"),
            "{kind}: {:#?}",
            output.lines
        );
    }
    assert!(
        output.of_kind("window").len() > 4,
        "the other series are still windowed"
    );
}

/// One random event body: metrics (two names, optional `region`, optional session),
/// session events of every kind, predictions, outcomes and alert commands. Values are
/// multiples of 1/4 so that window sums are exact and threshold decisions cannot flip on
/// rounding.
fn arbitrary_body() -> impl Strategy<Value = EventBody> {
    let metric = (
        0usize..2,
        proptest::option::of(0usize..2),
        proptest::option::of(0usize..2),
        0u32..400,
    )
        .prop_map(|(name, region, session, quarters)| {
            EventBody::Metric(MetricEvent {
                name: ["latency_ms", "cpu"][name].into(),
                value: f64::from(quarters) / 4.0,
                labels: region
                    .map(|region| vec![("region".into(), ["eu", "us"][region].into())])
                    .unwrap_or_default(),
                session_id: session.map(|session| ["s0", "s1"][session].into()),
            })
        });
    let session = (
        0usize..3,
        0usize..6,
        proptest::option::of(0u32..400),
        proptest::option::of(0u64..50),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0usize..2),
    )
        .prop_map(|(session, kind, duration, tokens, success, message)| {
            EventBody::Session(SessionEvent {
                session_id: ["s0", "s1", "s2"][session].into(),
                user_id: None,
                kind: SessionKind::NAMES[kind].1,
                operation: Some("read".into()),
                duration_ms: duration.map(|quarters| f64::from(quarters) / 4.0),
                tokens,
                success,
                message: message.map(|message| ["oops", "denied"][message].to_owned()),
            })
        });
    let prediction = (
        0usize..2,
        proptest::option::of(0usize..2),
        0u32..400,
        0u32..=4,
    )
        .prop_map(|(model, version, latency, confidence)| {
            EventBody::Prediction(PredictionEvent {
                model_id: ["m0", "m1"][model].into(),
                model_version: version.map(|version| ["v1", "v2"][version].into()),
                prediction_id: "p".into(),
                predicted: "cat".into(),
                confidence: f64::from(confidence) / 4.0,
                latency_ms: f64::from(latency) / 4.0,
                features: Vec::new(),
                session_id: None,
            })
        });
    // Commands on a small pool of custom ids exercise create, acknowledge, resolve,
    // duplicates and unknown ids; `slow-0` never exists.
    let command = (0usize..3, 0usize..3, 0usize..2).prop_map(|(action, id, actor)| {
        EventBody::AlertCommand(Box::new(AlertCommand {
            alert_id: Some(["c1", "c2", "slow-0"][id].into()),
            actor: Some(["ann", "bob"][actor].into()),
            title: Some("custom".into()),
            ..AlertCommand::new(
                [
                    AlertAction::Create,
                    AlertAction::Acknowledge,
                    AlertAction::Resolve,
                ][action],
            )
        }))
    });
    prop_oneof![
        3 => metric,
        3 => session,
        2 => prediction,
        2 => prop_oneof![Just(outcome(0).body), Just(outcome_of(0, "p", "cat").body)],
        2 => command,
    ]
}

fn arbitrary_epochs() -> impl Strategy<Value = Vec<Epoch<Event>>> {
    let epoch = (
        0u64..40,
        proptest::collection::vec((arbitrary_body(), 0u64..80), 0..14),
    );
    proptest::collection::vec(epoch, 1..8).prop_map(|raw| {
        let mut time = 100u64;
        // Prediction ids are unique, and each outcome resolves the latest prediction not
        // resolved yet (or none): the ML join is deterministic for unique ids only (a
        // reused id resolves in arrival order, which differs between worker counts).
        let mut predictions = 0u64;
        let mut outcomes = 0u64;
        raw.into_iter()
            .map(|(advance, events)| {
                time += advance;
                let data = events
                    .into_iter()
                    .map(|(mut body, offset)| {
                        match &mut body {
                            EventBody::Prediction(prediction) => {
                                predictions += 1;
                                prediction.prediction_id = format!("p{predictions}").into();
                            }
                            EventBody::Outcome(outcome) => {
                                outcomes += 1;
                                outcome.prediction_id = if predictions > 0 {
                                    format!("p{predictions}").into()
                                } else {
                                    format!("orphan{outcomes}").into()
                                };
                                predictions += 1; // the next outcome resolves another id
                            }
                            _ => {}
                        }
                        at(time + offset - 30, body)
                    })
                    .collect();
                Epoch::new(time, data)
            })
            .collect()
    })
}

fn arbitrary_setup() -> impl Strategy<Value = Setup> {
    (
        1u64..12,
        1u64..4,
        1u64..30,
        0u32..400,
        0u32..400,
        1u64..3,
        0u32..200,
    )
        .prop_map(|(slide, panes, interval, latency, hot, min_count, rate)| {
            let mut eu_hot = rule(
                "eu_hot",
                "*",
                Aggregate::Max,
                Comparison::AtLeast,
                f64::from(hot) / 4.0,
            );
            eu_hot.labels = vec![("region".into(), "eu".into())];
            eu_hot.min_count = min_count;
            Setup {
                length_ms: slide * panes,
                slide_ms: slide,
                interval_ms: interval,
                rules: vec![
                    rule(
                        "slow",
                        "latency_ms",
                        Aggregate::Mean,
                        Comparison::Above,
                        f64::from(latency) / 4.0,
                    ),
                    eu_hot,
                    rule(
                        "erring",
                        "session.errors",
                        Aggregate::Mean,
                        Comparison::AtLeast,
                        0.5,
                    ),
                    rule(
                        "unsure",
                        "prediction.confidence",
                        Aggregate::P50,
                        Comparison::Below,
                        0.5,
                    ),
                    rule(
                        "busy",
                        "cpu",
                        Aggregate::Rate,
                        Comparison::Above,
                        f64::from(rate),
                    ),
                    BreachRule {
                        min_count,
                        ..rule(
                            "inaccurate",
                            "model.correct",
                            Aggregate::Mean,
                            Comparison::Below,
                            0.5,
                        )
                    },
                ],
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_references_on_random_event_streams(epochs in arbitrary_epochs(), setup in arbitrary_setup()) {
        let output = run(&setup, epochs.clone());
        assert_matches_references(&output, &epochs, &setup);
    }
}

fn command_event(ts: u64, action: AlertAction, id: &str) -> Event {
    at(
        ts,
        EventBody::AlertCommand(Box::new(AlertCommand {
            alert_id: Some(id.into()),
            actor: Some("ann".into()),
            note: Some("looking".into()),
            ..AlertCommand::new(action)
        })),
    )
}

#[test]
fn people_acknowledge_and_resolve_rule_alerts() {
    let slow = rule(
        "slow",
        "latency_ms",
        Aggregate::Mean,
        Comparison::Above,
        50.0,
    );
    let fingerprint = slow.fingerprint(&SeriesKey::named("latency_ms"));
    let setup = Setup {
        length_ms: 10,
        slide_ms: 10,
        interval_ms: 10,
        rules: vec![slow],
    };
    let epochs = vec![
        Epoch::new(0, vec![metric(5, "latency_ms", None, None, 80.0)]),
        // The window [0, 10) fires at 10; the acknowledgement enters at 12.
        Epoch::new(
            12,
            vec![command_event(12, AlertAction::Acknowledge, &fingerprint)],
        ),
        // [10, 20) is empty: the series went quiet, the rule resolves at 20; a person's
        // later resolve is refused, with the reason.
        Epoch::new(
            22,
            vec![command_event(22, AlertAction::Resolve, &fingerprint)],
        ),
        Epoch::new(40, vec![]),
    ];
    let output = run(&setup, epochs.clone());
    assert_matches_references(&output, &epochs, &setup);
    let records: Vec<(String, Option<String>, Option<String>)> = output
        .updates
        .iter()
        .filter_map(|(_, update)| match update {
            Update::AlertRecord(record) => Some((
                record.status.as_str().to_owned(),
                record.acknowledged.as_ref().map(|act| act.by.to_string()),
                record.resolved.as_ref().map(|act| act.by.to_string()),
            )),
            _ => None,
        })
        .collect();
    let ann = Some("ann".to_owned());
    assert_eq!(
        records,
        [
            ("firing".to_owned(), None, None),
            ("acknowledged".to_owned(), ann.clone(), None),
            ("resolved".to_owned(), ann, Some("rule".to_owned())),
        ]
    );
    let rejected = output.of_kind("command_rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason"], "the alert is already resolved");
}

/// Window series names, and the `metric` labels of the `anomaly_score` windows.
fn window_series(updates: &[(Time, Update)]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut scored = BTreeSet::new();
    for (_, update) in updates {
        let Update::Window(window) = update else {
            continue;
        };
        names.insert(window.key.name.to_string());
        if window.key.name == "anomaly_score" {
            scored.extend(
                window
                    .key
                    .labels
                    .iter()
                    .filter(|(key, _)| key == "metric")
                    .map(|(_, value)| value.to_string()),
            );
        }
    }
    (names, scored)
}

#[test]
fn prediction_series_get_windows_but_anomaly_scores_only_when_not_skipped() {
    let setup = Setup {
        length_ms: 1000,
        slide_ms: 1000,
        interval_ms: 1000,
        rules: Vec::new(),
    };
    // Enough points per series to pass the scorer's cold start (64).
    let events: Vec<Event> = (0..200u64)
        .flat_map(|index| {
            [
                prediction(
                    index * 10,
                    "m1",
                    Some("v1"),
                    10.0 + (index % 7) as f64,
                    0.5 + (index % 5) as f64 / 10.0,
                ),
                metric(index * 10, "cpu", None, None, (index % 5) as f64),
            ]
        })
        .collect();
    // The scorer's counters are per worker (see `Update::AnomalyCounters`), so the runs
    // are compared by their windows, with 1 and with 4 workers.
    let run_with = |skip_series: Vec<crate::model::Id>, workers: usize| {
        let mut config = setup.config();
        config.anomaly = crate::operators::AnomalyConfig {
            enabled: true,
            skip_series,
            ..Default::default()
        };
        let updates = crate::testing::run_with_workers(
            workers,
            move |events| analytics(events, &config),
            vec![Epoch::new(0, events.clone())],
        );
        window_series(&updates)
    };
    let strings = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    for workers in [1, 4] {
        let (names, scored) = run_with(
            crate::operators::score_anomalies::default_skip_series(),
            workers,
        );
        assert_eq!(
            names,
            strings(&[
                "anomaly_score",
                "cpu",
                "prediction.confidence",
                "prediction.latency_ms"
            ])
        );
        assert_eq!(scored, strings(&["cpu"]));
        let (_, scored) = run_with(Vec::new(), workers);
        assert_eq!(
            scored,
            strings(&["cpu", "prediction.confidence", "prediction.latency_ms"])
        );
    }
}
