//! `route_events`: splits the event stream into what each downstream operator consumes.
//!
//! ```text
//!             ┌──► samples (metric values, session series, prediction latency/confidence)
//!             ├──► scored: the samples the anomaly scorer reads (all but skipped series)
//!   events ───┼──► (ts, SessionEvent)
//!             ├──► (ts, AlertCommand)
//!             ├──► (ts, MlEvent) (predictions, outcomes, registrations)
//!             └──► (ts, who asked) retrain requests for the session success model
//! ```

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::model::{
    AlertAction, AlertCommand, Event, EventBody, Id, Labels, MlEvent, Sample, SeriesKey,
    SessionEvent, SessionKind,
};
use crate::operators::manage_alerts::custom_alert_id;
use crate::Time;

/// Series names derived from session and prediction events.
pub mod series_names {
    /// Durations carried by session events, ms, per session.
    pub const SESSION_DURATION: &str = "session.duration_ms";
    /// 1 for an error, 0 for a successful activity: the window mean is the error rate.
    pub const SESSION_ERRORS: &str = "session.errors";
    /// Tokens carried by session events, per session.
    pub const SESSION_TOKENS: &str = "session.tokens";
    /// Operation durations, ms, across sessions, labelled by operation name.
    pub const OPERATION_DURATION: &str = "operation.duration_ms";
    /// Prediction latency, ms, labelled by model (and version).
    pub const PREDICTION_LATENCY: &str = "prediction.latency_ms";
    /// Prediction confidence, labelled by model (and version).
    pub const PREDICTION_CONFIDENCE: &str = "prediction.confidence";
    /// 1 for a right prediction, 0 for a wrong one, at the time its pair became complete,
    /// labelled by model (and version): the window mean is the accuracy. Derived by the
    /// ML tracker, not here.
    pub const MODEL_CORRECT: &str = "model.correct";
}

/// The streams that [`RouteEvents::route_events`] produces.
pub struct RoutedEvents<'scope> {
    /// Numeric samples for the window operator.
    pub samples: StreamVec<'scope, Time, Sample>,
    /// Copies of the samples the anomaly scorer reads: none when scoring is off, else
    /// those whose series name is not skipped. A separate output (rather than a clone of
    /// `samples` filtered afterwards) so skipped samples are never copied.
    pub scored: StreamVec<'scope, Time, Sample>,
    /// Session events with their event time, for the session tracker.
    pub sessions: StreamVec<'scope, Time, (Time, SessionEvent)>,
    /// Alert commands with their event time; `create` commands carry their final id.
    pub commands: StreamVec<'scope, Time, (Time, AlertCommand)>,
    /// Predictions and outcomes with their event time, for the ML tracker.
    pub ml: StreamVec<'scope, Time, (Time, MlEvent)>,
    /// Retrain requests (who asked, `anonymous` when nobody said) with their event time.
    pub retrains: StreamVec<'scope, Time, (Time, Id)>,
}

/// Derives the samples of one event (at most four).
pub fn samples_of(event: &Event) -> impl Iterator<Item = Sample> {
    let mut out: [Option<Sample>; 4] = [None, None, None, None];
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
            if let (SessionKind::Operation, Some(operation), Some(duration)) =
                (session.kind, &session.operation, session.duration_ms)
            {
                out[3] = Some(Sample {
                    key: SeriesKey {
                        name: series_names::OPERATION_DURATION.into(),
                        session_id: None,
                        labels: vec![("operation".into(), operation.clone())],
                    },
                    ts: event.ts,
                    value: duration,
                });
            }
        }
        EventBody::Prediction(prediction) => {
            // Room for both labels at once (a one-element `vec!` grew on the second).
            let mut labels: Labels = Vec::with_capacity(2);
            labels.push(("model_id".into(), prediction.model_id.clone()));
            if let Some(version) = &prediction.model_version {
                labels.push(("model_version".into(), version.clone()));
            }
            // One clone of the labels; the second key takes the original.
            out[0] = Some(Sample {
                key: SeriesKey {
                    name: series_names::PREDICTION_LATENCY.into(),
                    session_id: None,
                    labels: labels.clone(),
                },
                ts: event.ts,
                value: prediction.latency_ms,
            });
            out[1] = Some(Sample {
                key: SeriesKey {
                    name: series_names::PREDICTION_CONFIDENCE.into(),
                    session_id: None,
                    labels,
                },
                ts: event.ts,
                value: prediction.confidence,
            });
        }
        EventBody::Outcome(_)
        | EventBody::AlertCommand(_)
        | EventBody::Model(_)
        | EventBody::Retrain(_)
        | EventBody::ModelBaseline(_) => {}
    }
    out.into_iter().flatten()
}

/// Splits events by consumer.
pub trait RouteEvents<'scope> {
    /// Routes every event to the streams that consume it.
    ///
    /// # Inputs and outputs
    /// `self`: validated [`Event`]s. `scored`: `None` when nothing is scored, else the
    /// names of the series the anomaly scorer skips. Returns [`RoutedEvents`].
    ///
    /// # Frontier behaviour
    /// Stateless; outputs carry their input's time.
    ///
    /// # State
    /// None.
    fn route_events(self, name: &str, scored: Option<&[Id]>) -> RoutedEvents<'scope>;
}

impl<'scope> RouteEvents<'scope> for StreamVec<'scope, Time, Event> {
    fn route_events(self, name: &str, scored: Option<&[Id]>) -> RoutedEvents<'scope> {
        let score = scored.is_some();
        let skip: Vec<Id> = scored.map(<[Id]>::to_vec).unwrap_or_default();
        let mut builder = OperatorBuilder::new(format!("RouteEvents({name})"), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (samples_output, samples) = builder.new_output();
        let (scored_output, scored) = builder.new_output();
        let (sessions_output, sessions) = builder.new_output();
        let (commands_output, commands) = builder.new_output();
        let (ml_output, ml) = builder.new_output();
        let (retrains_output, retrains) = builder.new_output();
        let mut samples_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<Sample>>,
        >::from(samples_output);
        let mut scored_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<Sample>>,
        >::from(scored_output);
        let mut sessions_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<(Time, SessionEvent)>>,
        >::from(sessions_output);
        let mut commands_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<(Time, AlertCommand)>>,
        >::from(commands_output);
        let mut ml_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<(Time, MlEvent)>>,
        >::from(ml_output);
        let mut retrains_output = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<(Time, Id)>>,
        >::from(retrains_output);
        builder.build(move |_capabilities| {
            move |_frontiers| {
                let mut samples_handle = samples_output.activate();
                let mut scored_handle = scored_output.activate();
                let mut sessions_handle = sessions_output.activate();
                let mut commands_handle = commands_output.activate();
                let mut ml_handle = ml_output.activate();
                let mut retrains_handle = retrains_output.activate();
                input.for_each(|cap, data| {
                    let (
                        Some(samples_cap),
                        Some(scored_cap),
                        Some(sessions_cap),
                        Some(commands_cap),
                        Some(ml_cap),
                        Some(retrains_cap),
                    ) = (
                        cap.retain_least(0),
                        cap.retain_least(1),
                        cap.retain_least(2),
                        cap.retain_least(3),
                        cap.retain_least(4),
                        cap.retain_least(5),
                    )
                    else {
                        return;
                    };
                    let mut samples = samples_handle.session(&samples_cap);
                    let mut scored = scored_handle.session(&scored_cap);
                    let mut sessions = sessions_handle.session(&sessions_cap);
                    let mut commands = commands_handle.session(&commands_cap);
                    let mut ml = ml_handle.session(&ml_cap);
                    let mut retrains = retrains_handle.session(&retrains_cap);
                    for event in data.drain(..) {
                        for sample in samples_of(&event) {
                            if score && !skip.contains(&sample.key.name) {
                                scored.give(sample.clone());
                            }
                            samples.give(sample);
                        }
                        match event.body {
                            EventBody::Session(session) => sessions.give((event.ts, session)),
                            EventBody::AlertCommand(mut command) => {
                                if command.command == AlertAction::Create
                                    && command.alert_id.is_none()
                                {
                                    command.alert_id =
                                        Some(custom_alert_id(event.ts, &command).into());
                                }
                                commands.give((event.ts, *command));
                            }
                            EventBody::Prediction(prediction) => {
                                ml.give((event.ts, MlEvent::Prediction(prediction)))
                            }
                            EventBody::Outcome(outcome) => {
                                ml.give((event.ts, MlEvent::Outcome(outcome)))
                            }
                            EventBody::Model(registration) => {
                                ml.give((event.ts, MlEvent::Register(registration)))
                            }
                            EventBody::ModelBaseline(pin) => {
                                ml.give((event.ts, MlEvent::PinBaseline(pin)))
                            }
                            EventBody::Retrain(request) => retrains.give((
                                event.ts,
                                request.actor.unwrap_or_else(|| Id::from("anonymous")),
                            )),
                            _ => {}
                        }
                    }
                });
            }
        });
        RoutedEvents {
            samples,
            scored,
            sessions,
            commands,
            ml,
            retrains,
        }
    }
}
