//! Synthetic traffic for `megamind demo`: work sessions that start, work, fail or
//! complete; service latencies with a periodic incident; model predictions whose outcomes
//! arrive seconds later. Deterministic for a given seed, stamped with the wall clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use megamind_dataflows::model::{
    Event, EventBody, Id, MetricEvent, OutcomeEvent, PredictionEvent, SessionEvent, SessionKind,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::config::DemoConfig;
use crate::ingest::Ingest;

const TICK: Duration = Duration::from_millis(100);
const SERVICES: [&str; 3] = ["api", "db", "cache"];
const OPERATIONS: [&str; 5] = ["read_file", "edit", "search", "run_tests", "plan"];
/// An incident (api latency ×3, model m0 accuracy drops) lasts this long...
const INCIDENT_MS: u64 = 60_000;
/// ...and starts every this often.
const INCIDENT_EVERY_MS: u64 = 180_000;
/// Most outcomes waiting to be sent.
const MAX_PENDING_OUTCOMES: usize = 100_000;

struct DemoSession {
    id: Id,
    user: Id,
    remaining: u32,
    error_rate: f64,
    started: bool,
}

/// The generator's state.
pub struct DemoTraffic {
    config: DemoConfig,
    rng: StdRng,
    sessions: Vec<DemoSession>,
    next_session: u64,
    next_prediction: u64,
    pending_outcomes: VecDeque<(u64, Id, Id)>,
    started_ms: u64,
}

impl DemoTraffic {
    /// A generator starting at wall time `now_ms`.
    pub fn new(config: DemoConfig, now_ms: u64) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        let mut traffic = Self {
            config,
            rng,
            sessions: Vec::new(),
            next_session: 0,
            next_prediction: 0,
            pending_outcomes: VecDeque::new(),
            started_ms: now_ms,
        };
        for _ in 0..traffic.config.sessions {
            traffic.spawn_session();
        }
        traffic
    }

    fn spawn_session(&mut self) {
        self.next_session += 1;
        let troubled = self.rng.random_bool(0.2);
        self.sessions.push(DemoSession {
            id: format!("session-{}", self.next_session).into(),
            user: format!("user-{}", self.rng.random_range(1..=12)).into(),
            remaining: self.rng.random_range(5..60),
            error_rate: if troubled { 0.6 } else { 0.05 },
            started: false,
        });
    }

    fn in_incident(&self, now_ms: u64) -> bool {
        let since = now_ms.saturating_sub(self.started_ms);
        since >= 20_000 && (since - 20_000) % INCIDENT_EVERY_MS < INCIDENT_MS
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box–Muller.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * normal).exp()
    }

    /// The events of one tick of `count` events at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64, count: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(count + 16);
        while let Some((due, _, _)) = self.pending_outcomes.front() {
            if *due > now_ms {
                break;
            }
            if let Some((_, prediction_id, actual)) = self.pending_outcomes.pop_front() {
                events.push(Event {
                    ts: now_ms,
                    body: EventBody::Outcome(OutcomeEvent {
                        prediction_id,
                        actual,
                        model_id: None,
                    }),
                    attrs: Vec::new(),
                });
            }
        }
        let incident = self.in_incident(now_ms);
        for _ in 0..count {
            let roll: f64 = self.rng.random();
            let body = if roll < 0.5 {
                self.metric(incident)
            } else if roll < 0.85 {
                self.session_event(incident)
            } else {
                self.prediction(now_ms, incident)
            };
            events.push(Event {
                ts: now_ms,
                body,
                attrs: Vec::new(),
            });
        }
        events
    }

    fn metric(&mut self, incident: bool) -> EventBody {
        let service = SERVICES[self.rng.random_range(0..SERVICES.len())];
        let (name, value) = if self.rng.random_bool(0.7) {
            let mut latency = self.lognormal(50.0, 0.4);
            if incident && service == "api" {
                latency *= 3.0;
            }
            // Rare isolated spikes, for the anomaly detectors to find.
            if self.rng.random_bool(0.002) {
                latency *= 8.0;
            }
            ("latency_ms", (latency * 1000.0).round() / 1000.0)
        } else {
            let mut cpu = self.rng.random_range(5.0..70.0f64).round();
            // A level shift of db CPU during incidents.
            if incident && service == "db" {
                cpu += 60.0;
            }
            ("cpu_percent", cpu)
        };
        EventBody::Metric(MetricEvent {
            name: name.into(),
            value,
            labels: vec![("service".into(), service.into())],
            session_id: None,
        })
    }

    /// An error message from one of a few families; during incidents, sometimes one of a
    /// kind never seen before (a novel error for the error-family detector).
    fn failure_message(&mut self, incident: bool) -> String {
        let number = self.rng.random_range(1..10_000u32);
        match self.rng.random_range(0..if incident { 5 } else { 4 }) {
            0 => format!("{{operation}} failed: exit status {}", 1 + number % 3),
            1 => format!("timeout after {number} ms waiting for tool output"),
            2 => format!("rate limit exceeded: retry in {} s", number % 60),
            3 => format!("context window exceeded by {number} tokens"),
            _ => format!("disk quota exceeded on volume vol-{number}: write rejected"),
        }
    }

    fn session_event(&mut self, incident: bool) -> EventBody {
        if self.sessions.is_empty() {
            self.spawn_session();
        }
        let position = self.rng.random_range(0..self.sessions.len());
        let (kind, operation, duration_ms, tokens, success, message);
        let failure = self.failure_message(incident);
        {
            let error_roll: f64 = self.rng.random();
            let duration = self.lognormal(400.0, 0.6);
            let tokens_used = self.rng.random_range(50..2_000u64);
            let operation_name = OPERATIONS[self.rng.random_range(0..OPERATIONS.len())];
            let session = &mut self.sessions[position];
            if !session.started {
                session.started = true;
                kind = SessionKind::Started;
                operation = None;
                duration_ms = None;
                tokens = None;
                success = None;
                message = None;
            } else if session.remaining == 0 {
                // Learnable but not certain: troubled sessions (high error rate) mostly
                // fail, healthy ones rarely do (the success model's training signal).
                let failed = if session.error_rate > 0.5 {
                    error_roll < 0.9
                } else {
                    error_roll < 0.05
                };
                kind = if failed {
                    SessionKind::Failed
                } else {
                    SessionKind::Completed
                };
                operation = None;
                duration_ms = None;
                tokens = None;
                success = Some(!failed);
                message = failed.then(|| "too many errors".to_owned());
            } else {
                session.remaining -= 1;
                let ok = error_roll >= session.error_rate;
                kind = SessionKind::Operation;
                operation = Some(Id::from(operation_name));
                duration_ms = Some((duration * 10.0).round() / 10.0);
                tokens = Some(tokens_used);
                success = Some(ok);
                message = (!ok).then(|| failure.replace("{operation}", operation_name));
            }
        }
        let session = &self.sessions[position];
        let body = EventBody::Session(SessionEvent {
            session_id: session.id.clone(),
            user_id: Some(session.user.clone()),
            kind,
            operation,
            duration_ms,
            tokens,
            success,
            message,
        });
        if matches!(kind, SessionKind::Completed | SessionKind::Failed) {
            self.sessions.swap_remove(position);
            self.spawn_session();
        }
        body
    }

    fn prediction(&mut self, now_ms: u64, incident: bool) -> EventBody {
        let models = self.config.models.max(1);
        let model = self.rng.random_range(0..models);
        self.next_prediction += 1;
        let prediction_id: Id = format!("p-{}", self.next_prediction).into();
        let predicted = if self.rng.random_bool(0.5) {
            "yes"
        } else {
            "no"
        };
        let accuracy = if incident && model == 0 { 0.6 } else { 0.88 };
        let correct = self.rng.random_bool(accuracy);
        let actual = match (predicted, correct) {
            ("yes", true) | ("no", false) => "yes",
            _ => "no",
        };
        if self.pending_outcomes.len() < MAX_PENDING_OUTCOMES {
            let delay = self.rng.random_range(1_000..20_000u64);
            // Keep the queue ordered by due time (delays are short; insert near the back).
            let due = now_ms + delay;
            let position = self.pending_outcomes.partition_point(|(d, _, _)| *d <= due);
            self.pending_outcomes
                .insert(position, (due, prediction_id.clone(), Id::from(actual)));
        }
        let confidence: f64 = if correct {
            self.rng.random_range(0.6..0.99)
        } else {
            self.rng.random_range(0.5..0.8)
        };
        EventBody::Prediction(PredictionEvent {
            model_id: format!("model-{model}").into(),
            model_version: Some("v1".into()),
            prediction_id,
            predicted: predicted.into(),
            confidence: (confidence * 1000.0).round() / 1000.0,
            latency_ms: (self.lognormal(20.0, 0.5) * 10.0).round() / 10.0,
            features: vec![
                (
                    "tokens".into(),
                    self.rng.random_range(10.0..5000.0f64).round(),
                ),
                (
                    "age_s".into(),
                    self.rng.random_range(0.0..3600.0f64).round(),
                ),
            ],
            session_id: None,
        })
    }
}

/// Feeds demo traffic into `ingest` until `shutdown` flips, while the `demo` service runs.
pub async fn run(
    ingest: Arc<Ingest>,
    services: Arc<crate::services::Services>,
    config: DemoConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let now = ingest.clock().now_ms();
    let rate = config.events_per_second;
    let mut traffic = DemoTraffic::new(config, now);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut carry = 0.0f64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !services.is_running(crate::services::ServiceName::Demo) {
            continue;
        }
        carry += rate * TICK.as_secs_f64();
        let count = carry.floor() as usize;
        carry -= count as f64;
        let events = traffic.tick(ingest.clock().now_ms(), count);
        if events.is_empty() {
            continue;
        }
        if let Err(error) = ingest.submit(events).await {
            tracing::warn!(error = %error, "demo traffic refused by ingest");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DemoConfig {
        DemoConfig {
            events_per_second: 100.0,
            sessions: 5,
            models: 2,
            seed: 1,
        }
    }

    #[test]
    fn traffic_is_deterministic_and_mixed() {
        let mut a = DemoTraffic::new(config(), 0);
        let mut b = DemoTraffic::new(config(), 0);
        let mut kinds = std::collections::BTreeMap::new();
        for tick in 0..400u64 {
            let now = tick * 100;
            let events_a = a.tick(now, 20);
            let events_b = b.tick(now, 20);
            assert_eq!(events_a, events_b);
            for event in events_a {
                *kinds.entry(event.body.type_name()).or_insert(0) += 1;
            }
        }
        for kind in ["metric", "session", "prediction", "outcome"] {
            assert!(
                kinds.get(kind).copied().unwrap_or(0) > 50,
                "{kind}: {kinds:?}"
            );
        }
    }

    #[test]
    fn incident_triples_api_latency() {
        let mut traffic = DemoTraffic::new(config(), 0);
        assert!(!traffic.in_incident(10_000));
        assert!(traffic.in_incident(30_000));
        assert!(!traffic.in_incident(90_000));
        let mean = |traffic: &mut DemoTraffic, incident: bool| {
            let mut sum = 0.0;
            let mut n = 0.0;
            for _ in 0..3000 {
                if let EventBody::Metric(metric) = traffic.metric(incident) {
                    if metric.name == "latency_ms" && metric.labels[0].1 == "api" {
                        sum += metric.value;
                        n += 1.0;
                    }
                }
            }
            sum / n
        };
        let calm = mean(&mut traffic, false);
        let storm = mean(&mut traffic, true);
        assert!(calm < 70.0 && storm > 140.0, "calm {calm} storm {storm}");
    }
}
