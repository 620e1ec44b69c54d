//! The pure core of the window operator: a sparse ring of panes per series.
//!
//! A window of length `L` sliding by `S` (with `S` dividing `L`) is the union of `L/S`
//! consecutive panes of length `S`. Each sample lands in exactly one pane; a window's
//! statistics merge its panes. Only non-empty panes are stored, oldest first, so a
//! series with a few samples per window costs a few small panes, and panes older than
//! the oldest open window are dropped as windows close.

use std::collections::VecDeque;
use std::time::Duration;

use super::sorted::SortedValues;
use crate::model::{SeriesKey, WindowStats};
use crate::operators::quantiles::{nearest_rank, LogHistogram, ValueBag};
use crate::time::duration_ms;

/// Shape of the sliding windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// Window length (a multiple of `slide`).
    pub length: Duration,
    /// Distance between window starts (the pane length).
    pub slide: Duration,
    /// Percentiles are exact for windows with at most this many samples.
    pub exact_limit: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            length: Duration::from_secs(300),
            slide: Duration::from_secs(10),
            exact_limit: 4096,
        }
    }
}

/// A window configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowConfigError {
    /// The slide is shorter than a millisecond.
    #[error("window slide must be at least 1ms")]
    ZeroSlide,
    /// The length is not a whole number of slides.
    #[error("window length {length:?} is not a multiple of the slide {slide:?}")]
    NotAMultiple {
        /// The length.
        length: Duration,
        /// The slide.
        slide: Duration,
    },
}

impl WindowConfig {
    /// Checks that the shape is usable.
    ///
    /// # Errors
    /// A zero slide, or a length that is not a multiple of the slide.
    pub fn validate(&self) -> Result<(), WindowConfigError> {
        let slide = duration_ms(self.slide);
        let length = duration_ms(self.length);
        if slide == 0 {
            return Err(WindowConfigError::ZeroSlide);
        }
        if length == 0 || length % slide != 0 {
            return Err(WindowConfigError::NotAMultiple {
                length: self.length,
                slide: self.slide,
            });
        }
        Ok(())
    }

    /// Pane length in ms (at least 1).
    pub fn slide_ms(&self) -> u64 {
        duration_ms(self.slide).max(1)
    }

    /// Window length in ms.
    pub fn length_ms(&self) -> u64 {
        duration_ms(self.length)
    }

    /// Panes per window (at least 1).
    pub fn panes(&self) -> u64 {
        (self.length_ms() / self.slide_ms()).max(1)
    }
}

/// Aggregates of the samples in one pane.
#[derive(Debug, Clone)]
struct Pane {
    index: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    values: ValueBag,
}

impl Pane {
    fn new(index: u64) -> Self {
        Self {
            index,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            values: ValueBag::default(),
        }
    }

    fn add(&mut self, value: f64, exact_limit: usize) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.values.record(value, exact_limit);
    }
}

/// The percentiles a window reports.
const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// The panes of one series, oldest first, non-empty only, plus the values of the panes
/// that the current window covers.
///
/// Each window reuses the previous one: the pane that enters is merged in and the pane
/// that leaves is taken out, so a sample is added and removed once instead of being
/// copied into every one of the `L/S` windows that contain it. While the window holds at
/// most `exact_limit` samples its values are kept sorted (min, max and percentiles are
/// index lookups, the sum is taken in sorted order and so does not depend on arrival
/// order); beyond that they are kept in a [`LogHistogram`] that supports the same add and
/// remove, so a heavy series costs the same per window as a light one.
///
/// The merging is done ahead of the close: once a window is emitted, [`Self::prepare`]
/// names the next one, and [`Self::catch_up`] (called by the operator a few series at a
/// time after the close, or failing that by the next close) moves the merged values to
/// it, after which samples of the entering pane go straight into the merged values. So a
/// close costs a few lookups per series instead of a pane's worth of inserts and
/// removals, and 1,000 series closing at once are out in a few milliseconds. When the
/// series already has samples after the next window, the catch-up also computes that
/// window's numbers (see [`Self::catch_up`]), and the close only emits them.
#[derive(Debug, Clone, Default)]
pub struct SeriesPanes {
    panes: VecDeque<Pane>,
    /// Whether the last window computed for this series was non-empty.
    pub active: bool,
    /// Sorted values of the panes with index in `merged_from..merged_to` (exact mode).
    sorted: SortedValues,
    /// The same values, binned (when the window outgrew `exact_limit`).
    binned: Option<Box<LogHistogram>>,
    merged_from: u64,
    merged_to: u64,
    /// Panes `[first, end)` of the next window, to merge ahead of its close.
    next: Option<(u64, u64)>,
    /// Panes `[first, end)` of the next window, merged or not, until it closes.
    named: Option<(u64, u64)>,
    /// Whether `named` is a new series' guess at its first window, not a close's: an
    /// earlier window may still close, so the catch-up keeps the panes before it.
    tentative: bool,
    /// Whether the operator has this series in its catch-up queue.
    pub(super) queued: bool,
    /// Where the operator keeps the window built from the numbers computed ahead: the
    /// window's end (pane index) and its slot (see `SeriesWindows`).
    pub(super) built: Option<(u64, usize)>,
    /// The numbers of the window named by the last catch-up, computed then because the
    /// window looked complete (see [`Self::catch_up`]); dropped when a sample enters it.
    ahead: Option<Ahead>,
}

/// Where [`SeriesPanes::insert`] put a sample, relative to the next window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Into the window whose numbers were computed ahead: they are forgotten (see
    /// [`SeriesPanes::ahead_window`]).
    IntoAhead,
    /// The series' first sample after the next window, whose numbers were not computed
    /// ahead: a catch-up now can compute them (see [`SeriesPanes::catch_up`]).
    FirstAfter,
    /// Anywhere else.
    Other,
}

/// The numbers of one window, without its key and bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Numbers {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    quantiles: [f64; 3],
    exact: bool,
}

/// A window's numbers computed ahead of its close: panes `[first, end)`, `None` if empty.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ahead {
    first: u64,
    end: u64,
    numbers: Option<Numbers>,
}

impl SeriesPanes {
    /// Adds a sample to pane `index`, and says where it went relative to the next window.
    pub fn insert(&mut self, index: u64, value: f64, exact_limit: usize) -> Inserted {
        let entered_ahead = self.ahead.as_ref().is_some_and(|ahead| index < ahead.end);
        let inserted = if entered_ahead {
            self.ahead = None;
            Inserted::IntoAhead
        } else {
            match self.named {
                Some((_, end))
                    if self.ahead.is_none()
                        && index >= end
                        && self.panes.back().is_none_or(|newest| newest.index < end) =>
                {
                    Inserted::FirstAfter
                }
                _ => Inserted::Other,
            }
        };
        // Samples mostly arrive in time order: the newest pane is the usual target.
        let position = match self.panes.back() {
            Some(last) if last.index == index => self.panes.len() - 1,
            Some(last) if last.index < index => {
                self.panes.push_back(Pane::new(index));
                self.panes.len() - 1
            }
            None => {
                self.panes.push_back(Pane::new(index));
                0
            }
            Some(_) => match self.panes.binary_search_by_key(&index, |pane| pane.index) {
                Ok(position) => position,
                Err(position) => {
                    self.panes.insert(position, Pane::new(index));
                    position
                }
            },
        };
        self.panes[position].add(value, exact_limit);
        if (self.merged_from..self.merged_to).contains(&index) {
            match self.binned.as_mut() {
                Some(binned) => binned.insert(value),
                None => {
                    self.sorted.insert(value);
                    if self.sorted.len() > exact_limit {
                        self.switch_to_bins();
                    }
                }
            }
        }
        inserted
    }

    fn switch_to_bins(&mut self) {
        let mut binned = LogHistogram::default();
        for value in self.sorted.iter() {
            binned.insert(value);
        }
        self.sorted = SortedValues::default();
        self.binned = Some(Box::new(binned));
    }

    /// Forgets the numbers computed ahead, so the next close computes them itself.
    #[cfg(test)]
    pub(super) fn forget_ahead(&mut self) {
        self.ahead = None;
    }

    /// Whether the numbers of the window ending at pane `end_index` were computed ahead.
    pub(super) fn has_ahead(&self, end_index: u64) -> bool {
        self.ahead
            .as_ref()
            .is_some_and(|ahead| ahead.end == end_index)
    }

    /// Whether no pane holds data.
    pub fn is_empty(&self) -> bool {
        self.panes.is_empty()
    }

    /// Index of the oldest pane holding data.
    pub fn first_index(&self) -> Option<u64> {
        self.panes.front().map(|pane| pane.index)
    }

    /// Names the window that will close next, `[end_index - panes, end_index)`, so that
    /// the work of merging its panes can be done ahead of its close by [`Self::catch_up`].
    /// Cheap: nothing moves until then.
    pub fn prepare(&mut self, end_index: u64, config: &WindowConfig) {
        self.next = Some((end_index.saturating_sub(config.panes()), end_index));
        self.named = self.next;
        self.tentative = false;
    }

    /// Names a new series' first window, ending at pane `end_index`, before any close
    /// has (see [`Self::prepare`]); a close of an earlier window still sees every pane.
    pub fn name_first(&mut self, end_index: u64, config: &WindowConfig) {
        self.prepare(end_index, config);
        self.tentative = true;
    }

    /// Moves the merged values to the window named by [`Self::prepare`]: the leaving pane
    /// out, the samples already in the entering pane in; later samples of that pane then
    /// go straight into the merged values. Nothing to move when that was done already
    /// (a second catch-up only looks again for numbers to compute ahead, see below), nothing
    /// to do when no window is named. Returns how many samples were in the panes that
    /// moved (a measure of the work).
    pub fn catch_up(&mut self, exact_limit: usize) -> u64 {
        let Some((first, end)) = self.named else {
            return 0;
        };
        let mut moved = 0;
        if self.next.take().is_some() {
            let entering = self.merged_to.max(first);
            moved = self
                .panes
                .iter()
                .filter(|pane| pane.index < first || (entering..end).contains(&pane.index))
                .map(|pane| pane.count)
                .sum();
            if !self.tentative {
                self.evict_before(first);
            }
            self.merge_range(first, end, exact_limit);
            self.ahead = None;
        }
        // A series that already has samples after the window (samples arrive roughly in
        // time order and the lateness is at least a slide) will most likely see no more
        // samples inside it: its numbers are computed now, off the close's path, and the
        // close only has to emit them. A sample entering the window drops them, so the
        // close then computes them as usual and the result is the same either way.
        if self.ahead.is_none() && self.panes.back().is_some_and(|newest| newest.index >= end) {
            self.ahead = Some(Ahead {
                first,
                end,
                numbers: self.numbers(end),
            });
        }
        moved
    }

    /// Statistics of the window made of panes `[end_index - panes, end_index)`, or `None`
    /// when it is empty. Panes before the window are dropped.
    pub fn window(
        &mut self,
        key: &SeriesKey,
        end_index: u64,
        config: &WindowConfig,
    ) -> Option<WindowStats> {
        let numbers = self.advance(end_index, config)?;
        Some(stats(key, end_index, numbers, config))
    }

    /// What [`Self::window`] does to the series, without building the statistics: for a
    /// window whose statistics [`Self::ahead_window`] already gave out. Returns whether
    /// the window is non-empty.
    pub fn pass(&mut self, end_index: u64, config: &WindowConfig) -> bool {
        self.advance(end_index, config).is_some()
    }

    /// The statistics of the window named by the last catch-up, with its end (pane
    /// index), when the catch-up computed them and no sample entered the window since.
    /// The close of that window computes the same statistics (see [`Self::catch_up`]).
    pub fn ahead_window(
        &self,
        key: &SeriesKey,
        config: &WindowConfig,
    ) -> Option<(u64, WindowStats)> {
        let ahead = self.ahead.as_ref()?;
        let numbers = ahead.numbers?;
        (ahead.first == ahead.end.saturating_sub(config.panes()))
            .then(|| (ahead.end, stats(key, ahead.end, numbers, config)))
    }

    /// Moves the series to the window ending at pane `end_index` and returns its
    /// numbers, `None` when it is empty.
    fn advance(&mut self, end_index: u64, config: &WindowConfig) -> Option<Numbers> {
        let first_index = end_index.saturating_sub(config.panes());
        self.next = None;
        self.named = None;
        self.evict_before(first_index);
        self.merge_range(first_index, end_index, config.exact_limit);
        match self.ahead.take() {
            Some(ahead) if ahead.first == first_index && ahead.end == end_index => ahead.numbers,
            _ => self.numbers(end_index),
        }
    }

    /// The numbers of the merged values of panes `[merged_from, end)` (the panes before
    /// them evicted), `None` when there are none.
    fn numbers(&mut self, end: u64) -> Option<Numbers> {
        let (count, sum, min, max, quantiles, exact) = match &self.binned {
            Some(binned) => {
                let mut count = 0u64;
                let mut sum = 0.0f64;
                let mut min = f64::INFINITY;
                let mut max = f64::NEG_INFINITY;
                // Panes before the window are evicted, except those a new series keeps
                // while its first window is a guess (see `name_first`).
                for pane in self
                    .panes
                    .iter()
                    .take_while(|pane| pane.index < end)
                    .filter(|pane| pane.index >= self.merged_from)
                {
                    count += pane.count;
                    sum += pane.sum;
                    min = min.min(pane.min);
                    max = max.max(pane.max);
                }
                if count == 0 {
                    return None;
                }
                // Bins stand for their midpoint: keep the answer inside the observed range.
                let quantiles = binned.quantiles(QUANTILES).map(|q| q.clamp(min, max));
                (count, sum, min, max, quantiles, false)
            }
            None => {
                let (min, max) = (self.sorted.first()?, self.sorted.last()?);
                let count = self.sorted.len() as u64;
                let sum = self.sorted.sum();
                let quantiles = self
                    .sorted
                    .at_ranks(QUANTILES.map(|q| (nearest_rank(q, count) - 1) as usize))
                    .map(|value| value.unwrap_or(max));
                (count, sum, min, max, quantiles, true)
            }
        };
        Some(Numbers {
            count,
            sum,
            min,
            max,
            quantiles,
            exact,
        })
    }

    /// Makes the merged values hold exactly the values of panes `[first, end)`.
    fn merge_range(&mut self, first: u64, end: u64, exact_limit: usize) {
        if first >= self.merged_to
            || end <= self.merged_from
            || first < self.merged_from
            || end < self.merged_to
        {
            // Disjoint (a jump over an idle stretch), or an edge moving back (a close
            // before the window that a new series' catch-up merged): start over.
            self.sorted.clear();
            self.binned = None;
            self.merged_from = first;
            self.merged_to = first;
        }
        if first > self.merged_from {
            let (from, to) = (self.merged_from, first);
            for pane in self
                .panes
                .iter()
                .take_while(|pane| pane.index < to)
                .filter(|pane| pane.index >= from)
            {
                remove_values(&mut self.sorted, self.binned.as_deref_mut(), &pane.values);
            }
            self.merged_from = first;
        }
        if end > self.merged_to {
            let (from, to) = (self.merged_to.max(first), end);
            let entering = || {
                self.panes
                    .iter()
                    .take_while(move |pane| pane.index < to)
                    .filter(move |pane| pane.index >= from)
            };
            let needs_bins = entering().any(|pane| matches!(pane.values, ValueBag::Binned(_)));
            if self.binned.is_none() && needs_bins {
                self.switch_to_bins();
            }
            for pane in self
                .panes
                .iter()
                .take_while(|pane| pane.index < to)
                .filter(|pane| pane.index >= from)
            {
                match self.binned.as_mut() {
                    Some(binned) => pane.values.add_to(binned),
                    None => {
                        if let ValueBag::Exact(values) = &pane.values {
                            values.iter().for_each(|value| self.sorted.insert(*value));
                        }
                    }
                }
            }
            self.merged_to = end;
            if self.binned.is_none() && self.sorted.len() > exact_limit {
                self.switch_to_bins();
            }
        }
        // Back to exact percentiles as soon as the window is within the limit again: so
        // whether a window is exact is a function of its samples alone, not of the path
        // the merged values took (a catch-up before or after the close, or none). A
        // series hovering at the limit rebuilds its sorted values once per crossing.
        if let Some(binned) = &self.binned {
            let in_window = || {
                self.panes
                    .iter()
                    .take_while(|pane| pane.index < end)
                    .filter(|pane| pane.index >= first)
            };
            if binned.count() as usize <= exact_limit
                && in_window().all(|pane| matches!(pane.values, ValueBag::Exact(_)))
            {
                let mut sorted = Vec::with_capacity(binned.count() as usize);
                for pane in in_window() {
                    if let ValueBag::Exact(values) = &pane.values {
                        sorted.extend_from_slice(values);
                    }
                }
                sorted.sort_by(f64::total_cmp);
                self.sorted = SortedValues::from_sorted(sorted);
                self.binned = None;
            }
        }
    }

    /// Drops panes with index below `first_kept`.
    pub fn evict_before(&mut self, first_kept: u64) {
        while let Some(pane) = self.panes.front() {
            if pane.index >= first_kept {
                break;
            }
            if let Some(pane) = self.panes.pop_front() {
                if (self.merged_from..self.merged_to).contains(&pane.index) {
                    remove_values(&mut self.sorted, self.binned.as_deref_mut(), &pane.values);
                }
            }
        }
        self.merged_from = self.merged_from.max(first_kept);
        self.merged_to = self.merged_to.max(self.merged_from);
    }
}

/// The statistics of the window of `key` ending at pane `end_index`, from its numbers.
fn stats(key: &SeriesKey, end_index: u64, numbers: Numbers, config: &WindowConfig) -> WindowStats {
    let Numbers {
        count,
        sum,
        min,
        max,
        quantiles: [p50, p95, p99],
        exact,
    } = numbers;
    let slide = config.slide_ms();
    let length_ms = config.length_ms();
    WindowStats {
        key: key.clone(),
        start: end_index
            .saturating_sub(config.panes())
            .saturating_mul(slide),
        end: end_index.saturating_mul(slide),
        count,
        sum,
        mean: sum / count as f64,
        min,
        max,
        rate: count as f64 * 1000.0 / length_ms.max(1) as f64,
        p50,
        p95,
        p99,
        exact,
    }
}

/// Takes a pane's values out of whichever structure holds the merged window.
fn remove_values(sorted: &mut SortedValues, binned: Option<&mut LogHistogram>, values: &ValueBag) {
    match (binned, values) {
        (Some(binned), values) => values.remove_from(binned),
        (None, ValueBag::Exact(values)) => values.iter().for_each(|value| {
            sorted.remove(*value);
        }),
        // A binned pane inside an exact window cannot happen: merging it switches to bins.
        (None, ValueBag::Binned(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(length_ms: u64, slide_ms: u64) -> WindowConfig {
        WindowConfig {
            length: Duration::from_millis(length_ms),
            slide: Duration::from_millis(slide_ms),
            exact_limit: 64,
        }
    }

    #[test]
    fn validation_catches_bad_shapes() {
        assert_eq!(config(10, 0).validate(), Err(WindowConfigError::ZeroSlide));
        assert!(matches!(
            config(25, 10).validate(),
            Err(WindowConfigError::NotAMultiple { .. })
        ));
        assert_eq!(config(30, 10).validate(), Ok(()));
    }

    #[test]
    fn window_merges_its_panes_only() {
        let config = config(30, 10);
        let key = SeriesKey::named("x");
        let mut panes = SeriesPanes::default();
        panes.insert(2, 5.0, 64);
        panes.insert(0, 1.0, 64); // out of order
        panes.insert(1, 3.0, 64);
        panes.insert(1, 4.0, 64);
        panes.insert(3, 100.0, 64); // not in the window ending at pane 3
        let stats = panes.window(&key, 3, &config).unwrap();
        assert_eq!((stats.start, stats.end, stats.count), (0, 30, 4));
        assert_eq!(
            (stats.sum, stats.min, stats.max, stats.mean),
            (13.0, 1.0, 5.0, 3.25)
        );
        assert_eq!(
            (stats.p50, stats.p95, stats.p99, stats.exact),
            (3.0, 5.0, 5.0, true)
        );
        assert!((stats.rate - 4.0 / 0.03).abs() < 1e-9);
        panes.evict_before(1);
        let stats = panes.window(&key, 4, &config).unwrap();
        assert_eq!((stats.start, stats.count, stats.max), (10, 4, 100.0));
        panes.evict_before(5);
        assert!(panes.is_empty());
        assert!(panes.window(&key, 7, &config).is_none());
    }
}
