//! From-scratch recomputations that operator tests compare against.
//!
//! These are deliberately naive: they see the whole input at once and recompute every
//! window, session, history sample and alert transition by scanning all of it, sharing no
//! code with the operators. [`json_differences`] compares an operator's output with them.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    Aggregate, AlertCommand, AlertState, AlertTransition, Breach, BreachRule, Comparison, Event,
    EventBody, HistorySample, Id, Sample, SeriesKey, SessionEvent, SessionKind, SessionState,
    SessionStatus, WindowStats,
};
use crate::Time;

/// One expected window: count, sum, min, max, nearest-rank p50/p95/p99.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedWindow {
    /// Samples in the window.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Percentiles 50/95/99.
    pub quantiles: [f64; 3],
}

/// Everything the window operator should output for `input` (samples with the time
/// they arrived at): the windows per (key, end), the idle marks per (key, end), and the
/// number of late samples.
#[derive(Debug, Default)]
pub struct ExpectedWindows {
    /// Non-empty windows.
    pub windows: BTreeMap<(SeriesKey, u64), ExpectedWindow>,
    /// First empty window after a non-empty one.
    pub idle: BTreeSet<(SeriesKey, u64)>,
    /// Samples dropped as late.
    pub late: usize,
}

/// Recomputes sliding windows of `length_ms` every `slide_ms` from scratch.
pub fn sliding_windows(input: &[(Time, Sample)], length_ms: u64, slide_ms: u64) -> ExpectedWindows {
    let mut expected = ExpectedWindows::default();
    let mut by_key: BTreeMap<SeriesKey, Vec<(u64, f64)>> = BTreeMap::new();
    for (arrived, sample) in input {
        let pane_end = (sample.ts / slide_ms + 1) * slide_ms;
        if pane_end <= *arrived {
            expected.late += 1;
            continue;
        }
        by_key
            .entry(sample.key.clone())
            .or_default()
            .push((sample.ts, sample.value));
    }
    for (key, samples) in by_key {
        let mut ends = BTreeSet::new();
        for (ts, _) in &samples {
            let first_end = (ts / slide_ms + 1) * slide_ms;
            let mut end = first_end;
            while end < first_end + length_ms {
                ends.insert(end);
                end += slide_ms;
            }
        }
        for end in &ends {
            let start = end.saturating_sub(length_ms);
            let mut values: Vec<f64> = samples
                .iter()
                .filter(|(ts, _)| *ts >= start && ts < end)
                .map(|(_, v)| *v)
                .collect();
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let rank = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
            expected.windows.insert(
                (key.clone(), *end),
                ExpectedWindow {
                    count: n as u64,
                    sum: values.iter().sum(),
                    min: values[0],
                    max: values[n - 1],
                    quantiles: [rank(0.5), rank(0.95), rank(0.99)],
                },
            );
            if !ends.contains(&(end + slide_ms)) {
                expected.idle.insert((key.clone(), end + slide_ms));
            }
        }
    }
    expected
}

impl ExpectedWindow {
    /// The statistics the window operator should report for this window of `key` ending at
    /// `end`, for windows `length_ms` long: start is `end - length_ms` (saturating), mean is
    /// `sum / count`, rate is samples per second over the window length, percentiles exact.
    pub fn stats(&self, key: &SeriesKey, end: u64, length_ms: u64) -> WindowStats {
        WindowStats {
            key: key.clone(),
            start: end.saturating_sub(length_ms),
            end,
            count: self.count,
            sum: self.sum,
            mean: self.sum / self.count as f64,
            min: self.min,
            max: self.max,
            rate: self.count as f64 * 1000.0 / length_ms.max(1) as f64,
            p50: self.quantiles[0],
            p95: self.quantiles[1],
            p99: self.quantiles[2],
            exact: true,
        }
    }
}

/// The samples an event feeds into the window operator, following the documented series:
/// a metric is its own series (keyed by name, session and labels); a session event yields
/// `session.duration_ms` (when it carries a duration), `session.errors` (1 or 0, for
/// operations and error events) and `session.tokens` (when it carries tokens), each keyed
/// by its session, and an operation with a name and a duration also yields
/// `operation.duration_ms` labelled by `operation` (across sessions); a prediction yields `prediction.latency_ms` and `prediction.confidence`
/// labelled by `model_id` (and `model_version`). Outcomes and alert commands yield none.
pub fn event_samples(event: &Event) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut push = |name: &str, session_id: Option<Id>, labels: Vec<(Id, Id)>, value: f64| {
        out.push(Sample {
            key: SeriesKey {
                name: name.into(),
                session_id,
                labels,
            },
            ts: event.ts,
            value,
        });
    };
    match &event.body {
        EventBody::Metric(metric) => {
            push(
                &metric.name,
                metric.session_id.clone(),
                metric.labels.clone(),
                metric.value,
            );
        }
        EventBody::Session(session) => {
            let id = Some(session.session_id.clone());
            if let Some(duration) = session.duration_ms {
                push("session.duration_ms", id.clone(), Vec::new(), duration);
            }
            let failed = session.kind == SessionKind::Operation && session.success == Some(false);
            match session.kind {
                SessionKind::Error => push("session.errors", id.clone(), Vec::new(), 1.0),
                SessionKind::Operation => push(
                    "session.errors",
                    id.clone(),
                    Vec::new(),
                    if failed { 1.0 } else { 0.0 },
                ),
                _ => {}
            }
            if let Some(tokens) = session.tokens {
                push("session.tokens", id, Vec::new(), tokens as f64);
            }
            if session.kind == SessionKind::Operation {
                if let (Some(operation), Some(duration)) = (&session.operation, session.duration_ms)
                {
                    push(
                        "operation.duration_ms",
                        None,
                        vec![("operation".into(), operation.clone())],
                        duration,
                    );
                }
            }
        }
        EventBody::Prediction(prediction) => {
            let mut labels = vec![("model_id".into(), prediction.model_id.clone())];
            if let Some(version) = &prediction.model_version {
                labels.push(("model_version".into(), version.clone()));
            }
            labels.sort();
            push(
                "prediction.latency_ms",
                None,
                labels.clone(),
                prediction.latency_ms,
            );
            push("prediction.confidence", None, labels, prediction.confidence);
        }
        EventBody::Outcome(_)
        | EventBody::AlertCommand(_)
        | EventBody::Model(_)
        | EventBody::Retrain(_)
        | EventBody::ModelBaseline(_) => {}
    }
    out
}

/// The `model.correct` samples of a run with unique prediction ids: one per prediction
/// and outcome with the same id whose times (each the later of the event time and the
/// arrival time) are less than `horizon_ms` apart, at the later of the two, 1 when the
/// predicted label is the actual one, labelled by `model_id` (and `model_version`). Each
/// comes with its own time as arrival time: the tracker hands it on no later than that.
pub fn correctness_samples(events: &[(Time, &Event)], horizon_ms: u64) -> Vec<(Time, Sample)> {
    let mut predictions = BTreeMap::new();
    for (arrived, event) in events {
        if let EventBody::Prediction(prediction) = &event.body {
            predictions.insert(
                prediction.prediction_id.clone(),
                (event.ts.max(*arrived), prediction),
            );
        }
    }
    let mut out = Vec::new();
    for (arrived, event) in events {
        let EventBody::Outcome(outcome) = &event.body else {
            continue;
        };
        let Some((predicted_at, prediction)) = predictions.get(&outcome.prediction_id) else {
            continue;
        };
        let outcome_at = event.ts.max(*arrived);
        if predicted_at.abs_diff(outcome_at) >= horizon_ms {
            continue;
        }
        let mut labels = vec![("model_id".into(), prediction.model_id.clone())];
        if let Some(version) = &prediction.model_version {
            labels.push(("model_version".into(), version.clone()));
        }
        let at = outcome_at.max(*predicted_at);
        out.push((
            at,
            Sample {
                key: SeriesKey {
                    name: "model.correct".into(),
                    session_id: None,
                    labels,
                },
                ts: at,
                value: if prediction.predicted == outcome.actual {
                    1.0
                } else {
                    0.0
                },
            },
        ));
    }
    out
}

/// A session event counts as an error when it is an `error` event or an operation that
/// reported `success: false`.
fn counts_as_error(event: &SessionEvent) -> bool {
    match event.kind {
        SessionKind::Error => true,
        SessionKind::Operation => event.success == Some(false),
        _ => false,
    }
}

/// `errors / activities`, 0 when there was no activity.
fn error_rate(errors: u64, activities: u64) -> f64 {
    if activities == 0 {
        0.0
    } else {
        errors as f64 / activities as f64
    }
}

/// The value offered at the latest time; among equal times, the greatest value.
fn latest<T: Ord + Clone>(offers: impl Iterator<Item = (u64, T)>) -> Option<T> {
    offers.max().map(|(_, value)| value)
}

/// Recomputes the final state of one session from all its `(ts, event)` pairs.
fn session_state(session_id: &Id, events: &[(u64, &SessionEvent)]) -> SessionState {
    let operations = events
        .iter()
        .filter(|(_, e)| e.kind == SessionKind::Operation)
        .count() as u64;
    let error_events = events
        .iter()
        .filter(|(_, e)| e.kind == SessionKind::Error)
        .count() as u64;
    let errors = events.iter().filter(|(_, e)| counts_as_error(e)).count() as u64;
    let tokens = events.iter().map(|(_, e)| e.tokens.unwrap_or(0)).sum();
    // Latest terminal event; at equal times `failed` (rank 1) beats `completed` (rank 0).
    let terminal = events
        .iter()
        .filter_map(|(ts, e)| match e.kind {
            SessionKind::Completed => Some((*ts, 0u8)),
            SessionKind::Failed => Some((*ts, 1u8)),
            _ => None,
        })
        .max();
    let (status, ended_at) = match terminal {
        None => (SessionStatus::Active, None),
        Some((ts, 0)) => (SessionStatus::Completed, Some(ts)),
        Some((ts, _)) => (SessionStatus::Failed, Some(ts)),
    };
    let mut durations: Vec<f64> = events
        .iter()
        .filter(|(_, e)| e.kind == SessionKind::Operation)
        .filter_map(|(_, e)| e.duration_ms)
        .collect();
    durations.sort_by(f64::total_cmp);
    let n = durations.len();
    let (duration_mean_ms, duration_p95_ms) = if n == 0 {
        (None, None)
    } else {
        let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
        (
            Some(durations.iter().sum::<f64>() / n as f64),
            Some(durations[rank - 1]),
        )
    };
    SessionState {
        session_id: session_id.clone(),
        user_id: latest(
            events
                .iter()
                .filter_map(|(ts, e)| e.user_id.clone().map(|user| (*ts, user))),
        ),
        status,
        started_at: events.iter().map(|(ts, _)| *ts).min().unwrap_or(0),
        last_activity: events.iter().map(|(ts, _)| *ts).max().unwrap_or(0),
        ended_at,
        operations,
        errors,
        error_rate: error_rate(errors, operations + error_events),
        tokens,
        duration_mean_ms,
        duration_p95_ms,
        last_operation: latest(
            events
                .iter()
                .filter(|(_, e)| e.kind == SessionKind::Operation)
                .filter_map(|(ts, e)| e.operation.clone().map(|operation| (*ts, operation))),
        ),
        // An error without a message counts as the empty message.
        last_error: latest(
            events
                .iter()
                .filter(|(_, e)| counts_as_error(e))
                .map(|(ts, e)| (*ts, e.message.clone().unwrap_or_default())),
        ),
        events: events.len() as u64,
    }
}

/// Recomputes the final state of every session from `input`, a list of
/// `(arrival time, ts, event)`. Arrival times do not matter for the final state: every
/// field is a function of the session's events as a set.
///
/// Operations count `operation` events; errors count `error` events and operations with
/// `success: false`; the error rate is errors per activity (operations plus `error`
/// events); tokens sum over every event; the terminal event with the latest `ts` decides
/// the status (`failed` beats `completed` at equal `ts`); the duration mean and
/// nearest-rank p95 cover operation durations; `user_id`, `last_operation` and
/// `last_error` come from the latest event that carries one (greatest value at equal `ts`).
pub fn session_states(input: &[(Time, u64, SessionEvent)]) -> BTreeMap<Id, SessionState> {
    let mut by_session: BTreeMap<Id, Vec<(u64, &SessionEvent)>> = BTreeMap::new();
    for (_, ts, event) in input {
        by_session
            .entry(event.session_id.clone())
            .or_default()
            .push((*ts, event));
    }
    by_session
        .iter()
        .map(|(id, events)| (id.clone(), session_state(id, events)))
        .collect()
}

/// Recomputes every history sample from `input` (`(arrival time, ts, event)`), for history
/// intervals of `interval_ms`.
///
/// An event counts in the interval ending at the smallest multiple of `interval_ms` greater
/// than `max(ts, arrival)`. There is one sample per `(session, interval end)` that had
/// events, keyed by both, with totals over every interval up to and including it.
pub fn session_history(
    input: &[(Time, u64, SessionEvent)],
    interval_ms: u64,
) -> BTreeMap<(Id, u64), HistorySample> {
    let interval_ms = interval_ms.max(1);
    let mut by_session: BTreeMap<Id, Vec<(u64, &SessionEvent)>> = BTreeMap::new();
    for (arrived, ts, event) in input {
        let end = ((*ts).max(*arrived) / interval_ms + 1) * interval_ms;
        by_session
            .entry(event.session_id.clone())
            .or_default()
            .push((end, event));
    }
    let mut samples = BTreeMap::new();
    for (id, events) in by_session {
        let ends: BTreeSet<u64> = events.iter().map(|(end, _)| *end).collect();
        for at in ends {
            let through: Vec<&SessionEvent> = events
                .iter()
                .filter(|(end, _)| *end <= at)
                .map(|(_, e)| *e)
                .collect();
            let within: Vec<&SessionEvent> = events
                .iter()
                .filter(|(end, _)| *end == at)
                .map(|(_, e)| *e)
                .collect();
            let count = |list: &[&SessionEvent], kind: SessionKind| {
                list.iter().filter(|e| e.kind == kind).count() as u64
            };
            let errors =
                |list: &[&SessionEvent]| list.iter().filter(|e| counts_as_error(e)).count() as u64;
            let durations: Vec<f64> = within
                .iter()
                .filter(|e| e.kind == SessionKind::Operation)
                .filter_map(|e| e.duration_ms)
                .collect();
            let total_errors = errors(&through);
            let activities =
                count(&through, SessionKind::Operation) + count(&through, SessionKind::Error);
            samples.insert(
                (id.clone(), at),
                HistorySample {
                    session_id: id.clone(),
                    at,
                    operations: count(&through, SessionKind::Operation),
                    errors: total_errors,
                    error_rate: error_rate(total_errors, activities),
                    tokens: through.iter().map(|e| e.tokens.unwrap_or(0)).sum(),
                    interval_operations: count(&within, SessionKind::Operation),
                    interval_errors: errors(&within),
                    interval_duration_mean_ms: (!durations.is_empty())
                        .then(|| durations.iter().sum::<f64>() / durations.len() as f64),
                },
            );
        }
    }
    samples
}

/// Breaches and alert transitions expected for some windows and rules.
#[derive(Debug, Default)]
pub struct ExpectedAlerts {
    /// One breach per breaching `(rule, window)`, in walk order.
    pub breaches: Vec<Breach>,
    /// Firing and resolved transitions, in walk order.
    pub transitions: Vec<AlertTransition>,
}

/// The statistic `aggregate` names, read from `stats`.
fn statistic(aggregate: Aggregate, stats: &WindowStats) -> f64 {
    match aggregate {
        Aggregate::Count => stats.count as f64,
        Aggregate::Sum => stats.sum,
        Aggregate::Mean => stats.mean,
        Aggregate::Min => stats.min,
        Aggregate::Max => stats.max,
        Aggregate::Rate => stats.rate,
        Aggregate::P50 => stats.p50,
        Aggregate::P95 => stats.p95,
        Aggregate::P99 => stats.p99,
    }
}

/// Whether `value` breaches `threshold` under `op`.
fn breaches(op: Comparison, value: f64, threshold: f64) -> bool {
    match op {
        Comparison::Above => value > threshold,
        Comparison::AtLeast => value >= threshold,
        Comparison::Below => value < threshold,
        Comparison::AtMost => value <= threshold,
    }
}

/// Recomputes breaches and alert transitions from the expected windows (of `length_ms`)
/// and `rules`.
///
/// A rule watches a series when its metric is `*` or the series name and every label it
/// asks for is on the series. Per `(rule, series)`, window ends and idle ends are walked in
/// increasing order: a window with at least `min_count` samples whose statistic breaches
/// the threshold is a breach, and the first of a streak fires (at the window end, with the
/// statistic); the first non-breaching window after a streak resolves with its statistic,
/// and the first idle end after a streak resolves with no value.
pub fn breaches_and_transitions(
    windows: &ExpectedWindows,
    length_ms: u64,
    rules: &[BreachRule],
) -> ExpectedAlerts {
    enum Step {
        Window(WindowStats),
        Idle,
    }
    let mut by_key: BTreeMap<&SeriesKey, BTreeMap<u64, Step>> = BTreeMap::new();
    for ((key, end), window) in &windows.windows {
        by_key
            .entry(key)
            .or_default()
            .insert(*end, Step::Window(window.stats(key, *end, length_ms)));
    }
    for (key, end) in &windows.idle {
        by_key.entry(key).or_default().insert(*end, Step::Idle);
    }
    let mut expected = ExpectedAlerts::default();
    for rule in rules {
        for (key, steps) in &by_key {
            let named = rule.metric == "*" || rule.metric == key.name;
            let labelled = rule.labels.iter().all(|wanted| key.labels.contains(wanted));
            if !(named && labelled) {
                continue;
            }
            let transition = |state: AlertState, at: u64, value: Option<f64>| AlertTransition {
                fingerprint: rule.fingerprint(key),
                rule_id: rule.id.clone(),
                key: (*key).clone(),
                state,
                at,
                value,
                threshold: rule.threshold,
                severity: rule.severity,
            };
            let mut firing = false;
            for (end, step) in steps {
                match step {
                    Step::Window(stats) => {
                        let value = statistic(rule.aggregate, stats);
                        if stats.count >= rule.min_count && breaches(rule.op, value, rule.threshold)
                        {
                            expected.breaches.push(Breach {
                                rule_id: rule.id.clone(),
                                key: (*key).clone(),
                                start: stats.start,
                                end: stats.end,
                                aggregate: rule.aggregate,
                                op: rule.op,
                                value,
                                threshold: rule.threshold,
                                severity: rule.severity,
                            });
                            if !firing {
                                expected.transitions.push(transition(
                                    AlertState::Firing,
                                    stats.end,
                                    Some(value),
                                ));
                            }
                            firing = true;
                        } else if firing {
                            expected.transitions.push(transition(
                                AlertState::Resolved,
                                stats.end,
                                Some(value),
                            ));
                            firing = false;
                        }
                    }
                    Step::Idle => {
                        if firing {
                            expected
                                .transitions
                                .push(transition(AlertState::Resolved, *end, None));
                            firing = false;
                        }
                    }
                }
            }
        }
    }
    expected
}

/// The places where `got` and `want` differ, as `path: got != want` lines; numbers match
/// when they are within `tolerance` (relative, or absolute below 1). Empty when they agree.
pub fn json_differences(
    got: &serde_json::Value,
    want: &serde_json::Value,
    tolerance: f64,
) -> Vec<String> {
    use serde_json::Value;
    fn walk(path: &str, got: &Value, want: &Value, tolerance: f64, out: &mut Vec<String>) {
        match (got, want) {
            (Value::Number(a), Value::Number(b)) => {
                let same = match (a.as_u64(), b.as_u64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => match (a.as_f64(), b.as_f64()) {
                        (Some(a), Some(b)) => {
                            (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0)
                        }
                        _ => false,
                    },
                };
                if !same {
                    out.push(format!("{path}: {got} != {want}"));
                }
            }
            (Value::Object(a), Value::Object(b)) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    let null = Value::Null;
                    let (left, right) = (a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null));
                    walk(&format!("{path}.{key}"), left, right, tolerance, out);
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (position, (left, right)) in a.iter().zip(b).enumerate() {
                    walk(&format!("{path}[{position}]"), left, right, tolerance, out);
                }
            }
            _ => {
                if got != want {
                    out.push(format!("{path}: {got} != {want}"));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", got, want, tolerance, &mut out);
    out
}

/// The final state of one alert, as the lifecycle reference computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRecord {
    /// `firing`, `acknowledged` or `resolved`.
    pub status: &'static str,
    /// Times fired.
    pub fired: u64,
    /// Who acknowledged the current streak.
    pub acknowledged_by: Option<String>,
    /// Who resolved it (`rule` for the condition clearing).
    pub resolved_by: Option<String>,
}

/// Replays the alert lifecycle from scratch: transitions at their window end, commands at
/// the time they entered (`entered`), transitions before commands at equal times, each
/// group in a fixed order. Returns the final record per alert id and the number of
/// commands that could not apply.
pub fn alert_lifecycle(
    transitions: &[AlertTransition],
    commands: &[(Time, u64, AlertCommand)],
) -> (BTreeMap<String, ExpectedRecord>, usize) {
    use crate::model::AlertAction;
    use crate::operators::manage_alerts::custom_alert_id;

    enum Step<'a> {
        Transition(&'a AlertTransition),
        Command(u64, &'a AlertCommand),
    }
    // (time, transitions before commands, ts, id, state or action, step)
    let mut steps: Vec<(Time, u8, u64, String, u8, Step<'_>)> = Vec::new();
    for transition in transitions {
        let state = u8::from(transition.state == AlertState::Resolved);
        steps.push((
            transition.at,
            0,
            transition.at,
            transition.fingerprint.clone(),
            state,
            Step::Transition(transition),
        ));
    }
    for (entered, ts, command) in commands {
        let order = match command.command {
            AlertAction::Acknowledge => 0,
            AlertAction::Resolve => 1,
            AlertAction::Create => 2,
            // Silences mute notifications; they do not change the lifecycle modelled here.
            AlertAction::Silence
            | AlertAction::ExpireSilence
            | AlertAction::CreateRule
            | AlertAction::DeleteRule => continue,
        };
        steps.push((
            *entered,
            1,
            *ts,
            custom_alert_id(*ts, command),
            order,
            Step::Command(*ts, command),
        ));
    }
    steps.sort_by(|a, b| (a.0, a.1, a.2, &a.3, a.4).cmp(&(b.0, b.1, b.2, &b.3, b.4)));
    let mut records: BTreeMap<String, ExpectedRecord> = BTreeMap::new();
    let mut rejected = 0usize;
    let active = |record: &ExpectedRecord| record.status != "resolved";
    for (_, _, _, _, _, step) in steps {
        match step {
            Step::Transition(transition) => {
                if transition.state == AlertState::Firing {
                    let record =
                        records
                            .entry(transition.fingerprint.clone())
                            .or_insert(ExpectedRecord {
                                status: "resolved",
                                fired: 0,
                                acknowledged_by: None,
                                resolved_by: None,
                            });
                    if record.status == "resolved" {
                        *record = ExpectedRecord {
                            status: "firing",
                            fired: record.fired + 1,
                            acknowledged_by: None,
                            resolved_by: None,
                        };
                    }
                } else if let Some(record) = records.get_mut(&transition.fingerprint) {
                    if active(record) {
                        record.status = "resolved";
                        record.resolved_by = Some("rule".to_owned());
                    }
                }
            }
            Step::Command(ts, command) => {
                let id = custom_alert_id(ts, command);
                let actor = command
                    .actor
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), ToString::to_string);
                match (command.command, records.get_mut(&id)) {
                    (
                        AlertAction::Silence
                        | AlertAction::ExpireSilence
                        | AlertAction::CreateRule
                        | AlertAction::DeleteRule,
                        _,
                    ) => {}
                    (AlertAction::Create, Some(record)) if active(record) => rejected += 1,
                    (AlertAction::Create, _) => {
                        records.insert(
                            id,
                            ExpectedRecord {
                                status: "firing",
                                fired: 1,
                                acknowledged_by: None,
                                resolved_by: None,
                            },
                        );
                    }
                    (_, None) => rejected += 1,
                    (_, Some(record)) if !active(record) => rejected += 1,
                    (AlertAction::Acknowledge, Some(record)) => {
                        record.status = "acknowledged";
                        record.acknowledged_by = Some(actor);
                    }
                    (AlertAction::Resolve, Some(record)) => {
                        record.status = "resolved";
                        record.resolved_by = Some(actor);
                    }
                }
            }
        }
    }
    (records, rejected)
}
