//! The windows operator's state apart from its capabilities: every series' panes, the
//! catch-up queue, and the windows built ahead of their close.
//!
//! A close comes in two halves. [`SeriesWindows::begin_close`] hands out the windows the
//! catch-up already built (their numbers computed ahead, see [`SeriesPanes::catch_up`])
//! without touching any series, so the operator can send them, and the breaches and alerts
//! they raise, downstream at once. [`SeriesWindows::finish_close`], which the operator
//! runs in its next activation, computes the windows that were not built ahead, marks
//! series idle, and names every series' next window. The two halves together emit
//! exactly what one close over every series emitted before.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rustc_hash::FxBuildHasher;

use super::panes::{Inserted, SeriesPanes, WindowConfig};
use crate::model::{SeriesKey, Update};

/// Every series of one worker, with the windows built ahead of the next close.
#[derive(Debug)]
pub(super) struct SeriesWindows {
    config: WindowConfig,
    series: HashMap<SeriesKey, SeriesPanes, FxBuildHasher>,
    /// Series whose merged values still have to move to their next window, done a few
    /// per activation so that the work after a close does not hold up the alerts that the
    /// close raised.
    catching_up: VecDeque<SeriesKey>,
    /// Windows built at catch-up, by the pane index they end at. (When a close skips over
    /// a stretch without data, windows built for an end it skipped are dropped.)
    built: BTreeMap<u64, Built>,
    /// The close that began and has not finished (its end, pane index), and whether its
    /// beginning handed out the windows built for it.
    closing: Option<(u64, bool)>,
    /// Pane index at which the window after the last close ends.
    next_end_index: u64,
    /// Whether the catch-up builds windows (always, but for a test's reference).
    build_ahead: bool,
}

impl SeriesWindows {
    pub(super) fn new(config: WindowConfig) -> Self {
        Self {
            config,
            series: HashMap::default(),
            catching_up: VecDeque::new(),
            built: BTreeMap::new(),
            closing: None,
            next_end_index: 0,
            build_ahead: true,
        }
    }

    /// Windows that catch up like [`Self::new`]'s but never build a window ahead, so
    /// every close computes all its windows: the reference for the two-half close.
    #[cfg(test)]
    pub(super) fn without_building(config: WindowConfig) -> Self {
        Self {
            build_ahead: false,
            ..Self::new(config)
        }
    }

    /// Whether no series has state.
    pub(super) fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Adds a sample to pane `index` of its series (the caller has checked it is not late).
    /// A sample into a window built ahead takes that window back; a series' first sample
    /// after its next window queues the series for a catch-up that builds the window.
    pub(super) fn insert(&mut self, key: SeriesKey, index: u64, value: f64) {
        let Some(panes) = self.series.get_mut(&key) else {
            // A new series: its first window is named at once, so that it too can be
            // built ahead of its close (the first close of a run has nothing else built).
            // A close before that window merges back to its own.
            let mut panes = SeriesPanes::default();
            panes.name_first(
                self.next_end_index.max(index.saturating_add(1)),
                &self.config,
            );
            panes.insert(index, value, self.config.exact_limit);
            self.series.insert(key, panes);
            return;
        };
        match panes.insert(index, value, self.config.exact_limit) {
            Inserted::IntoAhead => take_back(&mut self.built, panes),
            Inserted::FirstAfter if !panes.queued => {
                panes.queued = true;
                self.catching_up.push_back(key);
            }
            Inserted::FirstAfter | Inserted::Other => {}
        }
    }

    /// The pane index at which the next window to close ends: the one after the last
    /// close, or later when no series has data and none needs an idle mark before its
    /// earliest pane (a stretch without data is skipped, not iterated).
    pub(super) fn next_close(&self) -> u64 {
        let next_end_index = self.next_end_index;
        if self.series.values().any(|panes| panes.active) {
            return next_end_index;
        }
        self.series
            .values()
            .filter_map(SeriesPanes::first_index)
            .min()
            .map_or(next_end_index, |earliest| {
                next_end_index.max(earliest.saturating_add(1))
            })
    }

    /// Begins the close of the windows ending at pane `end_index`: the windows built for
    /// it ahead, in no particular order. [`Self::finish_close`] must follow before any
    /// other close or catch-up.
    pub(super) fn begin_close(&mut self, end_index: u64) -> Vec<Update> {
        debug_assert!(
            self.closing.is_none(),
            "a close began before the last finished"
        );
        // Windows built for ends up to this one leave the map (those of earlier ends were
        // skipped over and are computed, if at all, by the close itself).
        let later = self.built.split_off(&end_index.saturating_add(1));
        let mut built = std::mem::replace(&mut self.built, later);
        let handed = built.remove(&end_index);
        self.closing = Some((end_index, handed.is_some()));
        self.next_end_index = end_index.saturating_add(1);
        handed.map(Built::into_windows).unwrap_or_default()
    }

    /// Finishes the close that [`Self::begin_close`] began: gives every window not built
    /// ahead ([`Update::Window`]) and every series that went quiet
    /// ([`Update::SeriesIdle`]), names each series' next window and queues it for catch-up.
    /// Does nothing when no close began.
    pub(super) fn finish_close(&mut self, mut give: impl FnMut(Update)) {
        let Some((end_index, handed)) = self.closing.take() else {
            return;
        };
        let config = &self.config;
        for (key, panes) in &mut self.series {
            let built = handed && panes.built.is_some_and(|(end, _)| end == end_index);
            if built {
                // Its window went out at the beginning; only the series moves on.
                panes.built = None;
                let non_empty = panes.pass(end_index, config);
                debug_assert!(non_empty, "a window built ahead is not empty");
                panes.active = true;
            } else {
                match panes.window(key, end_index, config) {
                    Some(stats) => {
                        panes.active = true;
                        give(Update::Window(stats));
                    }
                    None if panes.active => {
                        panes.active = false;
                        give(Update::SeriesIdle {
                            key: key.clone(),
                            end: end_index.saturating_mul(config.slide_ms()),
                        });
                    }
                    None => {}
                }
                // A window built for another end is taken back when this close dropped
                // the numbers it came from.
                take_back(&mut self.built, panes);
            }
            panes.prepare(end_index.saturating_add(1), config);
            if !panes.queued {
                panes.queued = true;
                self.catching_up.push_back(key.clone());
            }
        }
        self.series
            .retain(|_, panes| panes.active || !panes.is_empty());
    }

    /// Moves queued series to their next window until about `budget` samples have moved
    /// (at least one series), building the windows whose numbers came out ahead. Returns
    /// whether series are still queued.
    pub(super) fn catch_up(&mut self, budget: u64) -> bool {
        debug_assert!(self.closing.is_none(), "catch-up inside a close");
        let mut moved = 0u64;
        while moved < budget {
            let Some(key) = self.catching_up.pop_front() else {
                break;
            };
            let Some(panes) = self.series.get_mut(&key) else {
                continue;
            };
            panes.queued = false;
            moved += panes.catch_up(self.config.exact_limit).max(1);
            take_back(&mut self.built, panes);
            if !self.build_ahead {
                continue;
            }
            let Some((end, stats)) = panes.ahead_window(&key, &self.config) else {
                continue;
            };
            if end < self.next_end_index
                || panes.built.is_some_and(|(built_end, _)| built_end == end)
            {
                continue;
            }
            let built = self.built.entry(end).or_default();
            panes.built = Some((end, built.windows.len()));
            built.windows.push(Update::Window(stats));
        }
        !self.catching_up.is_empty()
    }

    /// Whether series wait for catch-up.
    pub(super) fn catching_up(&self) -> bool {
        !self.catching_up.is_empty()
    }
}

/// Takes back the window built for `panes` when the numbers it was built from are gone (a
/// sample entered its window, or a close or a catch-up replaced them): the close then
/// computes that window itself.
fn take_back(built: &mut BTreeMap<u64, Built>, panes: &mut SeriesPanes) {
    let Some((end, slot)) = panes.built else {
        return;
    };
    if panes.has_ahead(end) {
        return;
    }
    panes.built = None;
    if let Some(built) = built.get_mut(&end) {
        built.taken.push(slot);
    }
}

/// The windows built for one close, and the slots taken back since (rare: a sample
/// entered the window after its catch-up). Slots stay valid until the close, which
/// removes the taken ones and hands out the rest as they are.
#[derive(Debug, Default)]
struct Built {
    windows: Vec<Update>,
    taken: Vec<usize>,
}

impl Built {
    fn into_windows(mut self) -> Vec<Update> {
        // Highest slot first, so each removal leaves the lower slots where they are.
        self.taken.sort_unstable_by(|a, b| b.cmp(a));
        self.taken.dedup();
        for slot in self.taken {
            if slot < self.windows.len() {
                self.windows.swap_remove(slot);
            }
        }
        self.windows
    }
}
