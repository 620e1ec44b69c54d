//! The pure core of the window operator: a sparse ring of panes per series.
//!
//! A window of length `L` sliding by `S` (with `S` dividing `L`) is the union of `L/S`
//! consecutive panes of length `S`. Each sample lands in exactly one pane; a window's
//! statistics merge its panes. Only non-empty panes are stored, oldest first, so a
//! series with a few samples per window costs a few small panes, and panes older than
//! the oldest open window are dropped as windows close.

use std::collections::VecDeque;
use std::time::Duration;

use crate::model::{SeriesKey, WindowStats};
use crate::operators::quantiles::{nearest_rank, QuantileScratch, ValueBag};
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

/// The panes of one series, oldest first, non-empty only, plus the values of the panes
/// that the current window covers, kept sorted.
///
/// Each window reuses the previous one: the pane that enters is merged into the sorted
/// values and the pane that leaves is taken out, so a sample is inserted and removed once
/// instead of being copied into every one of the `L/S` windows that contain it. Min, max
/// and percentiles are then index lookups. Series with more than `exact_limit` samples in
/// a window fall back to merging the panes' histograms per window.
#[derive(Debug, Clone, Default)]
pub struct SeriesPanes {
    panes: VecDeque<Pane>,
    /// Whether the last window computed for this series was non-empty.
    pub active: bool,
    /// Sorted values of the panes with index in `merged_from..merged_to`.
    sorted: Vec<f64>,
    merged_from: u64,
    merged_to: u64,
    /// Too many values for exact percentiles: `sorted` is unused.
    overflowed: bool,
}

impl SeriesPanes {
    /// Adds a sample to pane `index`.
    pub fn insert(&mut self, index: u64, value: f64, exact_limit: usize) {
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
        if !self.overflowed && (self.merged_from..self.merged_to).contains(&index) {
            insert_sorted(&mut self.sorted, value);
            if self.sorted.len() > exact_limit {
                self.overflow();
            }
        }
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.sorted = Vec::new();
    }

    /// Whether no pane holds data.
    pub fn is_empty(&self) -> bool {
        self.panes.is_empty()
    }

    /// Index of the oldest pane holding data.
    pub fn first_index(&self) -> Option<u64> {
        self.panes.front().map(|pane| pane.index)
    }

    /// Statistics of the window made of panes `[end_index - panes, end_index)`, or `None`
    /// when it is empty. Panes must already be evicted below `end_index - panes`.
    pub fn window(
        &mut self,
        key: &SeriesKey,
        end_index: u64,
        config: &WindowConfig,
        scratch: &mut QuantileScratch,
    ) -> Option<WindowStats> {
        let first_index = end_index.saturating_sub(config.panes());
        self.merge_range(first_index, end_index, config.exact_limit);
        let (count, sum, min, max, [p50, p95, p99], exact) = if self.overflowed {
            let mut count = 0u64;
            let mut sum = 0.0f64;
            let mut min = f64::INFINITY;
            let mut max = f64::NEG_INFINITY;
            scratch.clear();
            for pane in self.panes.iter().take_while(|pane| pane.index < end_index) {
                debug_assert!(
                    pane.index >= first_index,
                    "invariant: panes before the window are evicted"
                );
                count += pane.count;
                sum += pane.sum;
                min = min.min(pane.min);
                max = max.max(pane.max);
                scratch.add(&pane.values, config.exact_limit);
            }
            if count == 0 {
                return None;
            }
            let (quantiles, exact) = scratch.quantiles([0.5, 0.95, 0.99]);
            (count, sum, min, max, quantiles, exact)
        } else {
            // The sorted values are the window: no pane needs to be visited, and summing
            // in sorted order makes the sum independent of arrival order.
            let (&min, &max) = (self.sorted.first()?, self.sorted.last()?);
            let count = self.sorted.len() as u64;
            let sum: f64 = self.sorted.iter().sum();
            let at = |q: f64| self.sorted[(nearest_rank(q, count) - 1) as usize];
            (count, sum, min, max, [at(0.5), at(0.95), at(0.99)], true)
        };
        let slide = config.slide_ms();
        let length_ms = config.length_ms();
        Some(WindowStats {
            key: key.clone(),
            start: first_index.saturating_mul(slide),
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
        })
    }

    /// Makes `sorted` hold exactly the values of panes `[first, end)`.
    fn merge_range(&mut self, first: u64, end: u64, exact_limit: usize) {
        if self.overflowed {
            // Come back to exact percentiles once the window is small again.
            let in_window = self
                .panes
                .iter()
                .take_while(|pane| pane.index < end)
                .filter(|pane| pane.index >= first);
            let (count, all_exact) = in_window.fold((0u64, true), |(count, exact), pane| {
                (
                    count + pane.count,
                    exact && matches!(pane.values, ValueBag::Exact(_)),
                )
            });
            if !all_exact || count as usize > exact_limit / 2 {
                self.merged_from = first;
                self.merged_to = end;
                return;
            }
            self.overflowed = false;
            self.sorted.clear();
            self.merged_from = first;
            self.merged_to = first;
        }
        if first >= self.merged_to || end <= self.merged_from {
            // Disjoint (a jump over an idle stretch): start over.
            self.sorted.clear();
            self.merged_from = first;
            self.merged_to = first;
        }
        // Panes leaving at the old end of the range.
        if first > self.merged_from {
            let (from, to) = (self.merged_from, first);
            for pane in self
                .panes
                .iter()
                .take_while(|pane| pane.index < to)
                .filter(|pane| pane.index >= from)
            {
                if let ValueBag::Exact(values) = &pane.values {
                    for value in values {
                        remove_sorted(&mut self.sorted, *value);
                    }
                }
            }
            self.merged_from = first;
        }
        // Panes entering at the new end of the range.
        if end > self.merged_to {
            let (from, to) = (self.merged_to.max(first), end);
            let mut overflow = false;
            for pane in self
                .panes
                .iter()
                .take_while(|pane| pane.index < to)
                .filter(|pane| pane.index >= from)
            {
                match &pane.values {
                    ValueBag::Exact(values) => {
                        for value in values {
                            insert_sorted(&mut self.sorted, *value);
                        }
                    }
                    ValueBag::Histogram(_) => overflow = true,
                }
            }
            self.merged_to = end;
            if overflow || self.sorted.len() > exact_limit {
                self.overflow();
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
                if !self.overflowed && (self.merged_from..self.merged_to).contains(&pane.index) {
                    if let ValueBag::Exact(values) = &pane.values {
                        for value in values {
                            remove_sorted(&mut self.sorted, *value);
                        }
                    }
                }
            }
        }
        self.merged_from = self.merged_from.max(first_kept);
        self.merged_to = self.merged_to.max(self.merged_from);
    }
}

fn insert_sorted(sorted: &mut Vec<f64>, value: f64) {
    let position = sorted.partition_point(|existing| existing.total_cmp(&value).is_lt());
    sorted.insert(position, value);
}

fn remove_sorted(sorted: &mut Vec<f64>, value: f64) {
    let position = sorted.partition_point(|existing| existing.total_cmp(&value).is_lt());
    if sorted
        .get(position)
        .is_some_and(|found| found.total_cmp(&value).is_eq())
    {
        sorted.remove(position);
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
        let mut scratch = QuantileScratch::default();
        let stats = panes.window(&key, 3, &config, &mut scratch).unwrap();
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
        let stats = panes.window(&key, 4, &config, &mut scratch).unwrap();
        assert_eq!((stats.start, stats.count, stats.max), (10, 4, 100.0));
        panes.evict_before(5);
        assert!(panes.is_empty());
        assert!(panes.window(&key, 7, &config, &mut scratch).is_none());
    }
}
