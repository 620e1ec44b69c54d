use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::reference::{json_differences, session_history, session_states};
use crate::testing::{run_epochs, Epoch, Output};

fn event(kind: SessionKind) -> SessionEvent {
    SessionEvent {
        session_id: "s".into(),
        user_id: None,
        kind,
        operation: None,
        duration_ms: None,
        tokens: None,
        success: None,
        message: None,
    }
}

fn op(duration: f64, success: bool) -> SessionEvent {
    SessionEvent {
        operation: Some("read".into()),
        duration_ms: Some(duration),
        success: Some(success),
        tokens: Some(10),
        ..event(SessionKind::Operation)
    }
}

#[test]
fn tracker_counts_operations_errors_and_durations() {
    let mut tracker = SessionTracker::new("s".into(), 100);
    tracker.apply(100, &event(SessionKind::Started), 1000, 16);
    tracker.apply(200, &op(10.0, true), 1000, 16);
    tracker.apply(300, &op(30.0, false), 1000, 16);
    let mut error = event(SessionKind::Error);
    error.message = Some("boom".into());
    tracker.apply(400, &error, 1000, 16);
    let state = tracker.snapshot();
    assert_eq!(state.status, SessionStatus::Active);
    assert_eq!(
        (state.operations, state.errors, state.tokens, state.events),
        (2, 2, 20, 4)
    );
    assert!((state.error_rate - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(state.duration_mean_ms, Some(20.0));
    assert_eq!(state.duration_p95_ms, Some(30.0));
    assert_eq!(state.last_error.as_deref(), Some("boom"));
    assert_eq!((state.started_at, state.last_activity), (100, 400));
}

#[test]
fn terminal_status_is_order_independent() {
    let mut a = SessionTracker::new("s".into(), 0);
    let mut b = SessionTracker::new("s".into(), 0);
    let events = [
        (5, event(SessionKind::Completed)),
        (9, event(SessionKind::Failed)),
        (7, op(1.0, true)),
    ];
    for (ts, e) in &events {
        a.apply(*ts, e, 10, 4);
    }
    for (ts, e) in events.iter().rev() {
        b.apply(*ts, e, 10, 4);
    }
    let (sa, sb) = (a.snapshot(), b.snapshot());
    assert_eq!(sa, sb);
    assert_eq!(sa.status, SessionStatus::Failed);
    assert_eq!(sa.ended_at, Some(9));
}

#[test]
fn samples_accumulate_totals() {
    let mut tracker = SessionTracker::new("s".into(), 0);
    assert!(tracker.apply(1, &op(4.0, true), 10, 4));
    assert!(!tracker.apply(2, &op(6.0, false), 10, 4));
    assert!(tracker.apply(15, &op(8.0, true), 20, 4));
    let first = tracker.sample(10).unwrap();
    assert_eq!(
        (first.operations, first.errors, first.interval_operations),
        (2, 1, 2)
    );
    assert_eq!(first.interval_duration_mean_ms, Some(5.0));
    let second = tracker.sample(20).unwrap();
    assert_eq!(
        (second.operations, second.interval_operations, second.errors),
        (3, 1, 1)
    );
    assert!(tracker.sample(30).is_none());
    assert!(tracker.expired(15 + 100, 100, 5));
    assert!(!tracker.expired(15 + 99, 100, 5));
}

fn in_session(session: &str, event: SessionEvent) -> SessionEvent {
    SessionEvent {
        session_id: session.into(),
        ..event
    }
}

fn config(interval_ms: u64) -> SessionConfig {
    SessionConfig {
        history_interval: Duration::from_millis(interval_ms),
        ..SessionConfig::default()
    }
}

fn run(config: &SessionConfig, epochs: Vec<Epoch<(Time, SessionEvent)>>) -> Output {
    let config = config.clone();
    run_epochs(move |events| events.track_sessions("test", &config), epochs)
}

fn arrivals(epochs: &[Epoch<(Time, SessionEvent)>]) -> Vec<(Time, u64, SessionEvent)> {
    epochs
        .iter()
        .flat_map(|epoch| {
            epoch
                .data
                .iter()
                .map(move |(ts, event)| (epoch.time, *ts, event.clone()))
        })
        .collect()
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
        assert!(previous.is_none(), "duplicate {kind} {previous:?}");
    }
    out
}

/// Final sessions and samples of the output, for direct assertions.
fn sessions(output: &Output) -> BTreeMap<String, SessionState> {
    by_key(output, "session", |v| {
        v["session_id"].as_str().unwrap().to_owned()
    })
    .into_iter()
    .map(|(id, value)| (id, serde_json::from_value(value).unwrap()))
    .collect()
}

fn samples(output: &Output) -> BTreeMap<(String, u64), HistorySample> {
    by_key(output, "session_sample", |v| {
        (
            v["session_id"].as_str().unwrap().to_owned(),
            v["at"].as_u64().unwrap(),
        )
    })
    .into_iter()
    .map(|(key, value)| (key, serde_json::from_value(value).unwrap()))
    .collect()
}

/// Compares the final session states and every history sample with the references.
fn assert_matches_reference(
    output: &Output,
    epochs: &[Epoch<(Time, SessionEvent)>],
    interval_ms: u64,
) {
    let input = arrivals(epochs);
    let want_states = session_states(&input);
    let got_states = by_key(output, "session", |v| {
        v["session_id"].as_str().unwrap().to_owned()
    });
    let want_ids: Vec<String> = want_states.keys().map(ToString::to_string).collect();
    assert_eq!(
        got_states.keys().cloned().collect::<Vec<_>>(),
        want_ids,
        "sessions"
    );
    for (id, want) in &want_states {
        let got = &got_states[id.as_str()];
        let differences = json_differences(got, &serde_json::to_value(want).unwrap(), 1e-9);
        assert!(
            differences.is_empty(),
            "session {id}: {differences:#?}\ngot {got}\nwant {want:?}"
        );
    }
    let want_samples = session_history(&input, interval_ms);
    let got_samples = by_key(output, "session_sample", |v| {
        (
            v["session_id"].as_str().unwrap().to_owned(),
            v["at"].as_u64().unwrap(),
        )
    });
    let want_keys: Vec<(String, u64)> = want_samples
        .keys()
        .map(|(id, at)| (id.to_string(), *at))
        .collect();
    assert_eq!(
        got_samples.keys().cloned().collect::<Vec<_>>(),
        want_keys,
        "sample keys"
    );
    for ((id, at), want) in &want_samples {
        let got = &got_samples[&(id.to_string(), *at)];
        let differences = json_differences(got, &serde_json::to_value(want).unwrap(), 1e-9);
        assert!(
            differences.is_empty(),
            "sample {id}@{at}: {differences:#?}\ngot {got}\nwant {want:?}"
        );
    }
}

#[test]
fn status_follows_the_latest_terminal_event() {
    let epochs = vec![
        Epoch::new(
            100,
            vec![
                (100, in_session("a", event(SessionKind::Started))),
                (150, in_session("a", event(SessionKind::Completed))),
                (120, in_session("b", event(SessionKind::Completed))),
                (105, in_session("c", event(SessionKind::Started))),
                (110, in_session("c", op(5.0, true))),
            ],
        ),
        Epoch::new(
            130,
            vec![
                // Earlier than the completion it follows: completion still wins.
                (140, in_session("a", event(SessionKind::Failed))),
                // Same time as the completion: failure wins.
                (120, in_session("b", event(SessionKind::Failed))),
                // Activity after the end does not reopen the session.
                (160, in_session("a", op(1.0, true))),
                (131, in_session("c", event(SessionKind::Status))),
                (200, in_session("d", event(SessionKind::Failed))),
            ],
        ),
        Epoch::new(
            160,
            vec![(300, in_session("d", event(SessionKind::Completed)))],
        ),
    ];
    let output = run(&config(10), epochs.clone());
    assert_matches_reference(&output, &epochs, 10);
    let sessions = sessions(&output);
    let status = |id: &str| (sessions[id].status, sessions[id].ended_at);
    assert_eq!(status("a"), (SessionStatus::Completed, Some(150)));
    assert_eq!(status("b"), (SessionStatus::Failed, Some(120)));
    assert_eq!(status("c"), (SessionStatus::Active, None));
    assert_eq!(status("d"), (SessionStatus::Completed, Some(300)));
    assert_eq!(
        (
            sessions["a"].started_at,
            sessions["a"].last_activity,
            sessions["a"].events
        ),
        (100, 160, 4)
    );
    // Each batch that touched a session produced a snapshot at the batch's time.
    let snapshots_of_d: Vec<(Time, SessionStatus)> = output
        .updates
        .iter()
        .filter_map(|(time, update)| match update {
            Update::Session(state) if state.session_id == "d" => Some((*time, state.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        snapshots_of_d,
        [
            (130, SessionStatus::Failed),
            (160, SessionStatus::Completed)
        ]
    );
}

#[test]
fn late_events_land_in_the_interval_open_at_arrival() {
    let mut error = event(SessionKind::Error);
    error.message = Some("timeout".into());
    let epochs = vec![
        Epoch::new(0, vec![(5, op(4.0, true))]),
        // Watermark 25: the interval [0, 10) has closed, so the event at ts 3 counts in [20, 30).
        Epoch::new(25, vec![(3, op(8.0, false)), (27, op(6.0, true))]),
        Epoch::new(40, vec![(41, error)]),
    ];
    let output = run(&config(10), epochs.clone());
    assert_matches_reference(&output, &epochs, 10);
    let samples = samples(&output);
    let summary: Vec<_> = samples
        .values()
        .map(|s| {
            (
                s.at,
                s.operations,
                s.errors,
                s.tokens,
                s.interval_operations,
                s.interval_errors,
                s.interval_duration_mean_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (10, 1, 0, 10, 1, 0, Some(4.0)),
            (30, 3, 1, 30, 2, 1, Some(7.0)),
            (50, 3, 2, 30, 0, 1, None)
        ]
    );
    assert_eq!(samples[&("s".to_owned(), 50)].error_rate, 0.5);
    let state = &sessions(&output)["s"];
    assert_eq!((state.started_at, state.last_activity), (3, 41));
    assert_eq!((state.operations, state.errors, state.tokens), (3, 2, 30));
    assert_eq!(
        (state.duration_mean_ms, state.duration_p95_ms),
        (Some(6.0), Some(8.0))
    );
    assert_eq!(state.last_error.as_deref(), Some("timeout"));
}

#[test]
fn sessions_are_tracked_independently() {
    let with_user = |session: &str, user: &str, event: SessionEvent| SessionEvent {
        user_id: Some(user.into()),
        ..in_session(session, event)
    };
    let epochs = vec![
        Epoch::new(
            0,
            vec![
                (1, with_user("x", "ann", event(SessionKind::Started))),
                (2, in_session("x", op(10.0, true))),
                (3, with_user("y", "cy", op(50.0, false))),
                (4, in_session("z", event(SessionKind::Started))),
            ],
        ),
        Epoch::new(
            15,
            vec![
                (18, in_session("x", op(30.0, true))),
                (5, with_user("x", "bob", event(SessionKind::Status))),
                (21, in_session("x", op(20.0, true))),
                (22, in_session("x", event(SessionKind::Error))),
                (30, in_session("z", event(SessionKind::Status))),
            ],
        ),
    ];
    let output = run(&config(20), epochs.clone());
    assert_matches_reference(&output, &epochs, 20);
    let sessions = sessions(&output);
    let x = &sessions["x"];
    assert_eq!(x.user_id.as_deref(), Some("bob"));
    assert_eq!((x.operations, x.errors, x.tokens, x.events), (3, 1, 30, 6));
    assert_eq!(
        (x.error_rate, x.duration_mean_ms, x.duration_p95_ms),
        (0.25, Some(20.0), Some(30.0))
    );
    assert_eq!(x.last_error.as_deref(), Some(""));
    let y = &sessions["y"];
    assert_eq!(
        (y.operations, y.errors, y.error_rate, y.user_id.as_deref()),
        (1, 1, 1.0, Some("cy"))
    );
    let z = &sessions["z"];
    assert_eq!(
        (
            z.operations,
            z.error_rate,
            z.duration_mean_ms,
            z.last_operation.clone()
        ),
        (0, 0.0, None, None)
    );
    let ats: Vec<(String, u64)> = samples(&output).into_keys().collect();
    let expected: Vec<(String, u64)> = [("x", 20), ("x", 40), ("y", 20), ("z", 20), ("z", 40)]
        .iter()
        .map(|(id, at)| ((*id).to_owned(), *at))
        .collect();
    assert_eq!(ats, expected);
}

/// Random session events: few sessions so they collide, every kind, optional fields,
/// small time ranges so terminal events tie, and offsets around the watermark so some
/// events arrive after their interval closed.
fn arbitrary_epochs() -> impl Strategy<Value = Vec<Epoch<(Time, SessionEvent)>>> {
    let raw_event = (
        0usize..4,
        proptest::option::of(0usize..2),
        0usize..6,
        proptest::option::of(0usize..3),
        proptest::option::of(0u32..400),
        proptest::option::of(0u64..100),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0usize..3),
        0u64..80,
    );
    let epoch = (0u64..40, proptest::collection::vec(raw_event, 0..12));
    proptest::collection::vec(epoch, 1..8).prop_map(|raw| {
        let mut time = 100u64;
        raw.into_iter()
            .map(|(advance, events)| {
                time += advance;
                let data = events
                    .into_iter()
                    .map(
                        |(
                            session,
                            user,
                            kind,
                            operation,
                            duration,
                            tokens,
                            success,
                            message,
                            offset,
                        )| {
                            let event = SessionEvent {
                                session_id: ["s0", "s1", "s2", "s3"][session].into(),
                                user_id: user.map(|user| ["ann", "bob"][user].into()),
                                kind: SessionKind::NAMES[kind].1,
                                operation: operation
                                    .map(|operation| ["read", "write", "plan"][operation].into()),
                                duration_ms: duration.map(|quarters| f64::from(quarters) / 4.0),
                                tokens,
                                success,
                                message: message.map(|message| {
                                    ["oops", "timeout", "denied"][message].to_owned()
                                }),
                            };
                            (time + offset - 30, event)
                        },
                    )
                    .collect();
                Epoch::new(time, data)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_on_random_epochs(epochs in arbitrary_epochs(), interval in 1u64..30) {
        let output = run(&config(interval), epochs.clone());
        assert_matches_reference(&output, &epochs, interval);
    }
}
