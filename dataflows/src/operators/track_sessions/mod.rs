//! `track_sessions`: live state and sampled performance history per work session.
//!
//! ```text
//!   (ts, SessionEvent) ──exchange(session_id)──► TrackSessions ──► Session / SessionSample
//! ```

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use rustc_hash::FxBuildHasher;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use crate::model::{
    HistorySample, Id, SessionEvent, SessionKind, SessionState, SessionStatus, Update,
};
use crate::operators::quantiles::ValueBag;
use crate::time::{duration_ms, pane_end};
use crate::Time;

/// How sessions are tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Length of one performance-history interval.
    pub history_interval: Duration,
    /// An active session with no events for this long (event time) is forgotten.
    pub idle_timeout: Duration,
    /// A completed or failed session is forgotten this long (event time) after its last event.
    pub retention: Duration,
    /// Duration percentiles are exact up to this many operations per session.
    pub exact_limit: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            history_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30 * 60),
            retention: Duration::from_secs(10 * 60),
            exact_limit: 1024,
        }
    }
}

/// Counts of one history interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Interval {
    operations: u64,
    errors: u64,
    activities: u64,
    tokens: u64,
    duration_sum: f64,
    duration_count: u64,
}

impl Interval {
    fn add(&mut self, other: &Interval) {
        self.operations += other.operations;
        self.errors += other.errors;
        self.activities += other.activities;
        self.tokens += other.tokens;
        self.duration_sum += other.duration_sum;
        self.duration_count += other.duration_count;
    }
}

/// A value with the event time that set it; the latest time wins, ties broken by value,
/// so the result does not depend on arrival order.
#[derive(Debug, Clone, Default)]
struct Latest<T> {
    value: Option<(u64, T)>,
}

impl<T: Ord> Latest<T> {
    fn offer(&mut self, ts: u64, value: T) {
        let newer = match &self.value {
            None => true,
            Some((seen_ts, seen)) => (ts, &value) > (*seen_ts, seen),
        };
        if newer {
            self.value = Some((ts, value));
        }
    }

    fn get(&self) -> Option<&T> {
        self.value.as_ref().map(|(_, value)| value)
    }
}

/// Per-session state held by the operator.
#[derive(Debug, Clone)]
pub struct SessionTracker {
    session_id: Id,
    first_ts: u64,
    last_ts: u64,
    events: u64,
    totals: Interval,
    durations: ValueBag,
    user_id: Latest<Id>,
    last_operation: Latest<Id>,
    last_error: Latest<String>,
    /// (ts, rank) of the latest terminal event; `failed` outranks `completed` at equal ts.
    terminal: Latest<u8>,
    /// Intervals not yet sampled, by interval end.
    open: BTreeMap<u64, Interval>,
    /// Totals over every sampled interval.
    sampled: Interval,
}

impl SessionTracker {
    /// A tracker for a session first seen at `ts`.
    pub fn new(session_id: Id, ts: u64) -> Self {
        Self {
            session_id,
            first_ts: ts,
            last_ts: ts,
            events: 0,
            totals: Interval::default(),
            durations: ValueBag::default(),
            user_id: Latest::default(),
            last_operation: Latest::default(),
            last_error: Latest::default(),
            terminal: Latest::default(),
            open: BTreeMap::new(),
            sampled: Interval::default(),
        }
    }

    /// Applies one event; `interval_end` is the history interval it counts in.
    /// Returns whether that interval was new for this session.
    pub fn apply(
        &mut self,
        ts: u64,
        event: &SessionEvent,
        interval_end: u64,
        exact_limit: usize,
    ) -> bool {
        self.events += 1;
        self.first_ts = self.first_ts.min(ts);
        self.last_ts = self.last_ts.max(ts);
        if let Some(user) = &event.user_id {
            self.user_id.offer(ts, user.clone());
        }
        let mut delta = Interval::default();
        match event.kind {
            SessionKind::Operation => {
                delta.operations = 1;
                delta.activities = 1;
                if let Some(operation) = &event.operation {
                    self.last_operation.offer(ts, operation.clone());
                }
                if let Some(duration) = event.duration_ms {
                    delta.duration_sum = duration;
                    delta.duration_count = 1;
                    self.durations.record(duration, exact_limit);
                }
            }
            SessionKind::Error => delta.activities = 1,
            SessionKind::Completed => self.terminal.offer(ts, 1),
            SessionKind::Failed => self.terminal.offer(ts, 2),
            SessionKind::Started | SessionKind::Status => {}
        }
        if event.is_error() {
            delta.errors = 1;
            let message = event.message.clone().unwrap_or_default();
            self.last_error.offer(ts, message);
        }
        delta.tokens = event.tokens.unwrap_or(0);
        self.totals.add(&delta);
        let mut fresh = false;
        self.open
            .entry(interval_end)
            .or_insert_with(|| {
                fresh = true;
                Interval::default()
            })
            .add(&delta);
        fresh
    }

    /// The current snapshot.
    pub fn snapshot(&mut self) -> SessionState {
        let (status, ended_at) = match self.terminal.value {
            Some((ts, 2)) => (SessionStatus::Failed, Some(ts)),
            Some((ts, _)) => (SessionStatus::Completed, Some(ts)),
            None => (SessionStatus::Active, None),
        };
        let totals = self.totals;
        let (duration_mean_ms, duration_p95_ms) = if totals.duration_count == 0 {
            (None, None)
        } else {
            let ([p95], _) = self.durations.quantiles([0.95]);
            (
                Some(totals.duration_sum / totals.duration_count as f64),
                Some(p95),
            )
        };
        SessionState {
            session_id: self.session_id.clone(),
            user_id: self.user_id.get().cloned(),
            status,
            started_at: self.first_ts,
            last_activity: self.last_ts,
            ended_at,
            operations: totals.operations,
            errors: totals.errors,
            error_rate: rate(totals.errors, totals.activities),
            tokens: totals.tokens,
            duration_mean_ms,
            duration_p95_ms,
            last_operation: self.last_operation.get().cloned(),
            last_error: self.last_error.get().cloned(),
            events: self.events,
        }
    }

    /// Closes the interval ending at `at`, returning its history sample if it had events.
    pub fn sample(&mut self, at: u64) -> Option<HistorySample> {
        let interval = self.open.remove(&at)?;
        self.sampled.add(&interval);
        let through = self.sampled;
        Some(HistorySample {
            session_id: self.session_id.clone(),
            at,
            operations: through.operations,
            errors: through.errors,
            error_rate: rate(through.errors, through.activities),
            tokens: through.tokens,
            interval_operations: interval.operations,
            interval_errors: interval.errors,
            interval_duration_mean_ms: (interval.duration_count > 0)
                .then(|| interval.duration_sum / interval.duration_count as f64),
        })
    }

    /// Whether the session may be forgotten at event time `now`.
    pub fn expired(&self, now: u64, idle_timeout: u64, retention: u64) -> bool {
        let keep_for = if self.terminal.value.is_some() {
            retention
        } else {
            idle_timeout
        };
        self.open.is_empty() && self.last_ts.saturating_add(keep_for) <= now
    }
}

fn rate(errors: u64, activities: u64) -> f64 {
    if activities == 0 {
        0.0
    } else {
        errors as f64 / activities as f64
    }
}

fn route(session_id: &Id) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    session_id.hash(&mut hasher);
    hasher.finish()
}

/// Live session state and performance history.
pub trait TrackSessions<'scope> {
    /// Maintains one [`SessionState`] per session.
    ///
    /// # Inputs and outputs
    /// `self`: `(ts, event)` pairs at timely times no later than `ts` (the watermark when
    /// they entered). Returns [`Update::Session`] after every batch that changed a session
    /// (at the batch's time) and [`Update::SessionSample`] for every history interval in
    /// which a session had events.
    ///
    /// # Frontier behaviour
    /// The sample of the interval ending at `b` is emitted once the input frontier reaches
    /// `b`. An event whose interval had already closed when it arrived counts in the
    /// interval open at its arrival time, so samples are deterministic.
    ///
    /// # State
    /// One [`SessionTracker`] per session, exchanged by session id; forgotten `idle_timeout`
    /// after its last event (active sessions) or `retention` after it (ended sessions), in
    /// event time.
    fn track_sessions(self, name: &str, config: &SessionConfig) -> StreamVec<'scope, Time, Update>;
}

impl<'scope> TrackSessions<'scope> for StreamVec<'scope, Time, (Time, SessionEvent)> {
    fn track_sessions(self, name: &str, config: &SessionConfig) -> StreamVec<'scope, Time, Update> {
        let config = config.clone();
        let interval = duration_ms(config.history_interval).max(1);
        let idle_timeout = duration_ms(config.idle_timeout);
        let retention = duration_ms(config.retention);
        let exchange = Exchange::new(|(_, event): &(Time, SessionEvent)| route(&event.session_id));
        self.unary_frontier(
            exchange,
            &format!("TrackSessions({name})"),
            move |_initial, _info| {
                let mut sessions: HashMap<Id, SessionTracker, FxBuildHasher> = HashMap::default();
                // Interval end → sessions with events in it, not yet sampled.
                let mut pending: BTreeMap<u64, Vec<Id>> = BTreeMap::new();
                let mut held: Option<Capability<Time>> = None;
                let mut changed: Vec<Id> = Vec::new();
                let mut last_sweep: u64 = 0;

                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&arrived) = cap.least() else { return };
                        for (ts, event) in data.drain(..) {
                            let interval_end = pane_end(ts.max(arrived), interval);
                            let tracker =
                                sessions.entry(event.session_id.clone()).or_insert_with(|| {
                                    SessionTracker::new(event.session_id.clone(), ts)
                                });
                            if tracker.events == 0 || changed.last() != Some(&event.session_id) {
                                changed.push(event.session_id.clone());
                            }
                            if tracker.apply(ts, &event, interval_end, config.exact_limit) {
                                pending
                                    .entry(interval_end)
                                    .or_default()
                                    .push(event.session_id.clone());
                                if held.as_ref().is_none_or(|held| *held.time() > interval_end) {
                                    held = Some(cap.delayed(&interval_end, output.output_index()));
                                }
                            }
                        }
                        changed.sort();
                        changed.dedup();
                        let mut session = output.session(&cap);
                        for id in changed.drain(..) {
                            if let Some(tracker) = sessions.get_mut(&id) {
                                session.give(Update::Session(tracker.snapshot()));
                            }
                        }
                    });

                    let input_done = frontier.is_empty();
                    let frontier_time = frontier.frontier().as_option().copied();
                    while let Some(entry) = pending.first_entry() {
                        let at = *entry.key();
                        if !input_done && frontier_time.is_some_and(|time| time < at) {
                            break;
                        }
                        let ids = entry.remove();
                        if let Some(cap) = held.as_ref() {
                            let mut session = output.session(cap);
                            for id in ids {
                                if let Some(sample) =
                                    sessions.get_mut(&id).and_then(|tracker| tracker.sample(at))
                                {
                                    session.give(Update::SessionSample(sample));
                                }
                            }
                        }
                        match (pending.keys().next(), held.as_mut()) {
                            (Some(next), Some(cap)) if cap.time() < next => cap.downgrade(next),
                            (None, _) => held = None,
                            _ => {}
                        }
                    }
                    // Forget idle and ended sessions, at most once per history interval.
                    let now = if input_done {
                        u64::MAX
                    } else {
                        frontier_time.unwrap_or(0)
                    };
                    if now >= last_sweep.saturating_add(interval) {
                        last_sweep = now;
                        sessions
                            .retain(|_, tracker| !tracker.expired(now, idle_timeout, retention));
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests;
