//! From-scratch recomputations that operator tests compare against.
//!
//! These are deliberately naive: they see the whole input at once and recompute every
//! window by scanning all samples, sharing no code with the operators.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Sample, SeriesKey};
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
        by_key.entry(sample.key.clone()).or_default().push((sample.ts, sample.value));
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
            let mut values: Vec<f64> =
                samples.iter().filter(|(ts, _)| *ts >= start && ts < end).map(|(_, v)| *v).collect();
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
