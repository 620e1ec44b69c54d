//! `compute_windows`: sliding event-time windows per series, pane-based, in timely.
//!
//! ```text
//!   samples ──exchange(key)──► ComputeWindows ──► Window / SeriesIdle / Rejected(late)
//! ```
//!
//! Why timely and not differential: a pane ring per key closes windows in microseconds
//! and in a few bytes per sample, where insert-and-retract collections rescan pending
//! retractions on every frontier advance (see the project's notes).

mod exact_sum;
mod panes;
mod series_windows;
mod sorted;

use std::time::Duration;

use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

pub use panes::{SeriesPanes, WindowConfig, WindowConfigError};
use series_windows::SeriesWindows;

use crate::model::{DataError, ErrorReason, Sample, Update};
use crate::time::Stopwatch;
use crate::Time;

/// Samples moved between windows per activation, at most (and at least one series; see
/// [`SeriesPanes::catch_up`]): about half a millisecond of work.
const CATCH_UP_SAMPLES_PER_ACTIVATION: u64 = 2048;

/// How long after a close the catch-up waits, so that the close's breaches and alerts
/// pass through the workers before the catch-up shares their steps.
/// (None in this crate's tests, so that the catch-up, and the windows built by it, happen
/// between the closes of a test's epochs.)
const CATCH_UP_DELAY: Duration = if cfg!(test) {
    Duration::ZERO
} else {
    Duration::from_millis(10)
};

/// Sliding-window statistics per series.
pub trait ComputeWindows<'scope> {
    /// Closes windows `[start, start + length)`, `start` a multiple of the slide, for every
    /// series that has samples in them.
    ///
    /// # Inputs and outputs
    /// `self`: [`Sample`]s, at timely times no later than their `ts` (the watermark when
    /// they entered). Returns [`Update::Window`] for each closed non-empty window,
    /// [`Update::SeriesIdle`] for the first empty window after a non-empty one, and
    /// [`Update::Rejected`] (reason `late`) for samples that arrived too late.
    ///
    /// # Frontier behaviour
    /// The window ending at `e` is emitted at time `e` once the input frontier reaches `e`,
    /// in two activations: first the windows built ahead of the close (see
    /// `series_windows`), alone, so that their breaches and alerts go downstream at once;
    /// then the rest and the idle marks. When the input closes, every remaining window is
    /// emitted. Over a stretch without data the capability moves to the next window
    /// that can close, so the frontier is not held back. The operator holds one capability
    /// at the next window end while any series has state. (The alert lifecycle applies
    /// transitions when its frontier reaches their time, so stamping windows `e - 1` to
    /// gain a step is not needed.)
    ///
    /// # Late samples
    /// A sample whose pane ended at or before the timely time it arrived at (the watermark
    /// when it entered) is late: it is dropped from every window and reported. The rule
    /// depends only on the data, never on scheduling, so results are deterministic.
    ///
    /// # State
    /// Per series: its non-empty panes newer than the oldest open window. A series is
    /// evicted one slide after its last sample leaves the window. Keys are exchanged by
    /// [`SeriesKey::route`], so each worker owns a slice of the key space.
    fn compute_windows(self, name: &str, config: &WindowConfig) -> StreamVec<'scope, Time, Update>;

    /// [`Self::compute_windows`] without the exchange, for samples whose series are
    /// already placed, each series on one worker (the same worker for every sample of
    /// it, whatever the timely time): then the result does not depend on the worker
    /// count either, and the samples are not moved between workers a second time.
    fn compute_windows_in_place(
        self,
        name: &str,
        config: &WindowConfig,
    ) -> StreamVec<'scope, Time, Update>;
}

impl<'scope> ComputeWindows<'scope> for StreamVec<'scope, Time, Sample> {
    fn compute_windows(self, name: &str, config: &WindowConfig) -> StreamVec<'scope, Time, Update> {
        let exchange = Exchange::new(|sample: &Sample| sample.key.route());
        windows_operator(self, exchange, name, config)
    }

    fn compute_windows_in_place(
        self,
        name: &str,
        config: &WindowConfig,
    ) -> StreamVec<'scope, Time, Update> {
        windows_operator(self, Pipeline, name, config)
    }
}

/// The windows operator, its input distributed by `pact`.
fn windows_operator<'scope, P>(
    samples: StreamVec<'scope, Time, Sample>,
    pact: P,
    name: &str,
    config: &WindowConfig,
) -> StreamVec<'scope, Time, Update>
where
    P: ParallelizationContract<Time, Vec<Sample>>,
{
    let config = config.clone();
    let slide = config.slide_ms();
    let scope = samples.scope();
    samples.unary_frontier(pact, &format!("ComputeWindows({name})"), move |_initial, info| {
        let activator = scope.activator_for(info.address);
        let mut windows = SeriesWindows::new(config);
        // Capability at (or before) the next window end to close; held while state exists.
        let mut held: Option<Capability<Time>> = None;
        let mut late: Vec<Update> = Vec::new();
        // The window end whose close was put off to the next activation.
        let mut deferred_end: Option<Time> = None;
        // The time of the close whose second half waits for the next activation.
        let mut finishing: Option<Capability<Time>> = None;
        // When the last close happened, while its catch-up waits (see `CATCH_UP_DELAY`).
        let mut catch_up_after: Option<Stopwatch> = None;

        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(&arrived) = cap.least() else { return };
                let mut first_end: Option<Time> = None;
                for sample in data.drain(..) {
                    let index = sample.ts / slide;
                    let end = index.saturating_add(1).saturating_mul(slide);
                    if end <= arrived {
                        late.push(Update::Rejected {
                            error: DataError::field(
                                ErrorReason::Late,
                                "ts",
                                format!("window pane ending at {end} closed before the sample arrived"),
                            ),
                            ts: sample.ts,
                        });
                        continue;
                    }
                    first_end = Some(first_end.map_or(end, |first| first.min(end)));
                    windows.insert(sample.key, index, sample.value);
                }
                if !late.is_empty() {
                    output.session(&cap).give_iterator(late.drain(..));
                }
                if let Some(first_end) = first_end {
                    // `first_end > arrived`, so the delay is always legal.
                    if held.as_ref().is_none_or(|held| *held.time() > first_end) {
                        held = Some(cap.delayed(&first_end, output.output_index()));
                    }
                }
            });

            // The second half of the last close, which its first half left for this
            // activation (the samples just inserted are all after its windows).
            if let Some(at) = finishing.take() {
                let mut session = output.session(&at);
                windows.finish_close(|update| session.give(update));
            }

            let input_done = frontier.is_empty();
            let mut closed_any = false;
            let frontier_time = frontier.frontier().as_option().copied();
            while let Some(cap) = held.as_mut() {
                if windows.is_empty() {
                    held = None;
                    break;
                }
                let end_index = windows.next_close();
                let end = end_index.saturating_mul(slide);
                if *cap.time() < end {
                    // A stretch without data is skipped: nothing closes before `end`
                    // (a sample into an earlier pane takes the capability back).
                    cap.downgrade(&end);
                }
                if !input_done && frontier_time.is_some_and(|time| time < end) {
                    break;
                }
                // Close in the next activation, not in the step that saw the frontier
                // reach `end`: that step also moved this worker's input forward, and
                // timely tells the other workers at the end of the step, so closing
                // here (and running everything downstream of the close) would keep
                // them from closing their share of the same windows meanwhile.
                if !input_done && deferred_end != Some(end) {
                    deferred_end = Some(end);
                    activator.activate();
                    break;
                }
                // Windows ending at `end` are emitted at time `end` exactly, so their
                // timestamp (and everything derived downstream) does not depend on how
                // the input happened to be batched. The windows built ahead go out
                // first, alone: everything downstream of them (breaches, alerts) runs
                // before the rest of the close.
                let at = if *cap.time() <= end { cap.delayed(&end) } else { cap.clone() };
                let mut built = windows.begin_close(end_index);
                if !built.is_empty() {
                    output.session(&at).give_container(&mut built);
                }
                closed_any = true;
                let next_end = end_index.saturating_add(1).saturating_mul(slide);
                if *cap.time() < next_end {
                    cap.downgrade(&next_end);
                }
                if !input_done {
                    // The second half in the next activation, after what runs
                    // downstream of the first.
                    finishing = Some(at);
                    activator.activate();
                    break;
                }
                // The input is done: nothing downstream waits, so finish at once.
                let mut session = output.session(&at);
                windows.finish_close(|update| session.give(update));
            }

            // Not right after a close: its results (and the alerts they raise) go
            // downstream first.
            if closed_any {
                catch_up_after = Some(Stopwatch::start());
            }
            let wait = catch_up_after
                .as_ref()
                .map(|closed| CATCH_UP_DELAY.saturating_sub(closed.elapsed()))
                .filter(|left| !left.is_zero());
            if finishing.is_some() {
                // The catch-up comes after the close's second half.
            } else if let Some(left) = wait {
                if windows.catching_up() {
                    activator.activate_after(left);
                }
            } else {
                catch_up_after = None;
                if windows.catch_up(CATCH_UP_SAMPLES_PER_ACTIVATION) {
                    activator.activate();
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
