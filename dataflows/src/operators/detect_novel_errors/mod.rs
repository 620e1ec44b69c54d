//! `detect_novel_errors`: error families and novel error messages from session events.
//!
//! The pure core is [`families::NoveltyDetector`] (TF-IDF + DBSCAN over a bounded sample).
//! The timely shell sends every message to worker 0, because families are global: one sample
//! and one clustering keep the result independent of the worker count. Messages of one
//! timely time are processed sorted by `(ts, session, message)` once the frontier passes it.
//!
//! Nothing here fails: a message is any string.
//!
//! ```text
//!   (ts, SessionEvent with message) ─► DetectNovelErrors ─┬─► Update::NovelError
//!                                                         └─► Update::ErrorFamilies
//! ```

pub mod families;

use std::collections::BTreeMap;

use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use crate::model::{Id, SessionEvent, SessionKind, Update};
use crate::Time;
pub use families::{ErrorFamily, NoveltyConfig, NoveltyDetector, NoveltyVerdict};

/// Messages of one timely time waiting for the frontier, with their capability.
type Pending = BTreeMap<Time, (Capability<Time>, Vec<(Time, SessionEvent)>)>;

/// A message that belongs to no error family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NovelError {
    /// The session that reported it.
    pub session_id: Id,
    /// The operation, if any.
    pub operation: Option<Id>,
    /// Event time, ms.
    pub ts: u64,
    /// The message (its first `max_message_bytes` bytes).
    pub message: String,
    /// Cosine distance to the closest family core (1 when there are no families).
    pub distance: f64,
}

/// The families after a batch, with counter deltas for that batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFamilies {
    /// Families, largest first.
    pub families: Vec<ErrorFamily>,
    /// Messages checked in this batch.
    pub checked: u64,
    /// Novel messages in this batch.
    pub novel: u64,
    /// Reclusterings in this batch.
    pub refits: u64,
    /// Messages in this batch longer than `max_message_bytes` (only their start was read).
    pub truncated: u64,
}

/// Whether an event's message is checked: errors, failures and operations with a message.
pub fn checked_message(event: &SessionEvent) -> Option<&str> {
    match event.kind {
        SessionKind::Error | SessionKind::Failed | SessionKind::Operation => {
            event.message.as_deref().filter(|m| !m.is_empty())
        }
        _ => None,
    }
}

/// Novel-error detection over session messages.
pub trait DetectNovelErrors<'scope> {
    /// Checks each message against the error families and maintains them.
    ///
    /// # Inputs and outputs
    /// `self`: `(ts, event)`; events without a checked message are ignored. Returns
    /// [`Update::NovelError`] per novel message and [`Update::ErrorFamilies`] after each
    /// batch that had messages.
    ///
    /// # Frontier behaviour
    /// Messages are held until the frontier passes their timely time.
    ///
    /// # State
    /// One [`NoveltyDetector`] on worker 0, bounded by `sample_size` messages and
    /// `max_families` families (see [`NoveltyConfig`]); the pending batches are released as
    /// the frontier advances.
    fn detect_novel_errors(
        self,
        name: &str,
        config: &NoveltyConfig,
    ) -> StreamVec<'scope, Time, Update>;
}

impl<'scope> DetectNovelErrors<'scope> for StreamVec<'scope, Time, (Time, SessionEvent)> {
    fn detect_novel_errors(
        self,
        name: &str,
        config: &NoveltyConfig,
    ) -> StreamVec<'scope, Time, Update> {
        let config = config.clone();
        // Families are global: all messages go to worker 0.
        let exchange = Exchange::new(|_: &(Time, SessionEvent)| 0);
        self.unary_frontier(
            exchange,
            &format!("DetectNovelErrors({name})"),
            move |_, _| {
                let mut detector = NoveltyDetector::new();
                let mut pending: Pending = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        let entry = pending.entry(time).or_insert_with(|| {
                            (cap.delayed(&time, output.output_index()), Vec::new())
                        });
                        entry
                            .1
                            .extend(data.drain(..).filter(|(_, e)| checked_message(e).is_some()));
                    });
                    while let Some(entry) = pending.first_entry() {
                        let time = *entry.key();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let (cap, mut events) = entry.remove();
                        if events.is_empty() {
                            continue;
                        }
                        events.sort_by(|a, b| {
                            a.0.cmp(&b.0)
                                .then_with(|| a.1.session_id.cmp(&b.1.session_id))
                                .then_with(|| a.1.message.cmp(&b.1.message))
                        });
                        let mut session = output.session(&cap);
                        let refits = detector.refits();
                        let truncated = detector.truncated();
                        let mut novel = 0;
                        for (ts, event) in &events {
                            let Some(message) = checked_message(event) else {
                                continue;
                            };
                            let verdict = detector.observe(message, *ts, &config);
                            if verdict.novel {
                                novel += 1;
                                session.give(Update::NovelError(Box::new(NovelError {
                                    session_id: event.session_id.clone(),
                                    operation: event.operation.clone(),
                                    ts: *ts,
                                    message: families::bounded(message, config.max_message_bytes)
                                        .to_owned(),
                                    distance: verdict.distance,
                                })));
                            }
                        }
                        session.give(Update::ErrorFamilies(Box::new(ErrorFamilies {
                            families: detector.families(),
                            checked: events.len() as u64,
                            novel,
                            refits: detector.refits() - refits,
                            truncated: detector.truncated() - truncated,
                        })));
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests;
