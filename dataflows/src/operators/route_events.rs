//! `route_events`: splits the event stream into what each downstream operator consumes.
//!
//! ```text
//!             ┌──► samples (metric values, session series, prediction latency/confidence)
//!   events ───┤
//!             └──► (ts, SessionEvent)
//! ```

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::model::{Event, EventBody, Labels, Sample, SeriesKey, SessionEvent, SessionKind};
use crate::Time;

/// Series names derived from session events (one series per session).
pub mod series_names {
    /// Operation durations, ms.
    pub const SESSION_DURATION: &str = "session.duration_ms";
    /// 1 for an error, 0 for a successful activity: the window mean is the error rate.
    pub const SESSION_ERRORS: &str = "session.errors";
    /// Tokens per operation.
    pub const SESSION_TOKENS: &str = "session.tokens";
    /// Prediction latency, ms, labelled by model (and version).
    pub const PREDICTION_LATENCY: &str = "prediction.latency_ms";
    /// Prediction confidence, labelled by model (and version).
    pub const PREDICTION_CONFIDENCE: &str = "prediction.confidence";
}

/// The streams that [`RouteEvents::route_events`] produces.
pub struct RoutedEvents<'scope> {
    /// Numeric samples for the window operator.
    pub samples: StreamVec<'scope, Time, Sample>,
    /// Session events with their event time, for the session tracker.
    pub sessions: StreamVec<'scope, Time, (Time, SessionEvent)>,
}

/// Derives the samples of one event (at most three).
pub fn samples_of(event: &Event) -> impl Iterator<Item = Sample> {
    let mut out: [Option<Sample>; 3] = [None, None, None];
    let sample = |name: &str, session: &crate::model::Id, labels: Labels, value: f64| Sample {
        key: SeriesKey {
            name: name.into(),
            session_id: Some(session.clone()),
            labels,
        },
        ts: event.ts,
        value,
    };
    match &event.body {
        EventBody::Metric(metric) => {
            out[0] = Some(Sample {
                key: SeriesKey {
                    name: metric.name.clone(),
                    session_id: metric.session_id.clone(),
                    labels: metric.labels.clone(),
                },
                ts: event.ts,
                value: metric.value,
            });
        }
        EventBody::Session(session) => {
            if let Some(duration) = session.duration_ms {
                out[0] = Some(sample(
                    series_names::SESSION_DURATION,
                    &session.session_id,
                    Labels::new(),
                    duration,
                ));
            }
            if matches!(session.kind, SessionKind::Operation | SessionKind::Error) {
                let errors = if session.is_error() { 1.0 } else { 0.0 };
                out[1] = Some(sample(
                    series_names::SESSION_ERRORS,
                    &session.session_id,
                    Labels::new(),
                    errors,
                ));
            }
            if let Some(tokens) = session.tokens {
                out[2] = Some(sample(
                    series_names::SESSION_TOKENS,
                    &session.session_id,
                    Labels::new(),
                    tokens as f64,
                ));
            }
        }
        EventBody::Prediction(prediction) => {
            let mut labels: Labels = vec![("model_id".into(), prediction.model_id.clone())];
            if let Some(version) = &prediction.model_version {
                labels.push(("model_version".into(), version.clone()));
            }
            let key = |name: &str| SeriesKey {
                name: name.into(),
                session_id: None,
                labels: labels.clone(),
            };
            out[0] = Some(Sample {
                key: key(series_names::PREDICTION_LATENCY),
                ts: event.ts,
                value: prediction.latency_ms,
            });
            out[1] = Some(Sample {
                key: key(series_names::PREDICTION_CONFIDENCE),
                ts: event.ts,
                value: prediction.confidence,
            });
        }
        EventBody::Outcome(_) | EventBody::AlertCommand(_) => {}
    }
    out.into_iter().flatten()
}

/// Splits events by consumer.
pub trait RouteEvents<'scope> {
    /// Routes every event to the streams that consume it.
    ///
    /// # Inputs and outputs
    /// `self`: validated [`Event`]s. Returns [`RoutedEvents`].
    ///
    /// # Frontier behaviour
    /// Stateless; outputs carry their input's time.
    ///
    /// # State
    /// None.
    fn route_events(self, name: &str) -> RoutedEvents<'scope>;
}

impl<'scope> RouteEvents<'scope> for StreamVec<'scope, Time, Event> {
    fn route_events(self, name: &str) -> RoutedEvents<'scope> {
        let mut builder = OperatorBuilder::new(format!("RouteEvents({name})"), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (samples_output, samples) = builder.new_output();
        let (sessions_output, sessions) = builder.new_output();
        let mut samples_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<Sample>>,
        >::from(samples_output);
        let mut sessions_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<(Time, SessionEvent)>>,
        >::from(sessions_output);
        builder.build(move |_capabilities| {
            move |_frontiers| {
                let mut samples_handle = samples_output.activate();
                let mut sessions_handle = sessions_output.activate();
                input.for_each(|cap, data| {
                    let samples_cap = cap.retain_least(0);
                    let sessions_cap = cap.retain_least(1);
                    let (Some(samples_cap), Some(sessions_cap)) = (samples_cap, sessions_cap)
                    else {
                        return;
                    };
                    let mut samples = samples_handle.session(&samples_cap);
                    let mut sessions = sessions_handle.session(&sessions_cap);
                    for event in data.drain(..) {
                        samples.give_iterator(samples_of(&event));
                        if let EventBody::Session(session) = event.body {
                            sessions.give((event.ts, session));
                        }
                    }
                });
            }
        });
        RoutedEvents { samples, sessions }
    }
}
