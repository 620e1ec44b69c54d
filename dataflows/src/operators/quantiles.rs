//! Percentiles of a bag of values: exact while the bag is small, log-binned after.
//!
//! Most series hold a few dozen samples per window, where sorted values are cheaper and
//! more precise than any sketch, so values are kept verbatim up to a limit. Beyond it they
//! move into a [`LogHistogram`]: 128 bins per power of two (relative error under 0.4%),
//! sparse by octave, so memory depends on the range of the values and not on their
//! number. Unlike an HDR histogram it supports removing values and answers a rank query
//! by walking octave totals, which is what a sliding window needs: a pane leaving the
//! window is subtracted, a pane entering is added, and the percentiles of the new window
//! cost a few hundred operations whatever the rate. (HDR histograms are used where values
//! only accumulate: latency percentiles of models and of the load harness.)
//!
//! Percentiles use the nearest-rank definition: the `q` quantile of `n` values is the
//! `ceil(q·n)`-th smallest (numpy's `method="inverted_cdf"`).

use std::collections::BTreeMap;

use smallvec::SmallVec;

/// Bits of mantissa that select a bin within an octave.
const SUB_BITS: u32 = 7;
const BINS: usize = 1 << SUB_BITS;
/// Keys of non-negative values start here; negative values map below it, reversed.
const POSITIVE_BASE: u32 = 1 << 18;

/// The nearest rank (1-based) of quantile `q` among `n` values.
pub fn nearest_rank(q: f64, n: u64) -> u64 {
    let rank = (q * n as f64).ceil() as u64;
    rank.clamp(1, n.max(1))
}

/// The order-preserving bin key of a finite value.
fn bin_key(value: f64) -> u32 {
    // 11 exponent bits and the top 7 mantissa bits of |value|: monotone in |value|.
    let magnitude = (value.abs().to_bits() >> (52 - SUB_BITS)) as u32;
    if value < 0.0 {
        POSITIVE_BASE - 1 - magnitude
    } else {
        POSITIVE_BASE + magnitude
    }
}

/// The value a bin stands for: the midpoint of its range.
fn bin_value(key: u32) -> f64 {
    let (magnitude, sign) = if key >= POSITIVE_BASE {
        (key - POSITIVE_BASE, 1.0)
    } else {
        (POSITIVE_BASE - 1 - key, -1.0)
    };
    if magnitude == 0 {
        return 0.0;
    }
    let lower = f64::from_bits(u64::from(magnitude) << (52 - SUB_BITS));
    let upper = f64::from_bits(u64::from(magnitude + 1) << (52 - SUB_BITS));
    let middle = if upper.is_finite() {
        lower + (upper - lower) / 2.0
    } else {
        lower
    };
    sign * middle
}

/// Counts of the 128 bins of one octave.
#[derive(Debug, Clone)]
struct Octave {
    total: u64,
    bins: Box<[u32; BINS]>,
}

/// A log-binned histogram of finite values that supports removal and rank queries.
#[derive(Debug, Clone, Default)]
pub struct LogHistogram {
    octaves: BTreeMap<u32, Octave>,
    count: u64,
}

impl LogHistogram {
    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `times` occurrences of the bin of `value`.
    fn add_key(&mut self, key: u32, times: u32) {
        let octave = self
            .octaves
            .entry(key >> SUB_BITS)
            .or_insert_with(|| Octave {
                total: 0,
                bins: Box::new([0; BINS]),
            });
        octave.total += u64::from(times);
        octave.bins[(key as usize) & (BINS - 1)] += times;
        self.count += u64::from(times);
    }

    /// Removes up to `times` occurrences of the bin `key` (never below zero).
    fn remove_key(&mut self, key: u32, times: u32) {
        let index = key >> SUB_BITS;
        if let Some(octave) = self.octaves.get_mut(&index) {
            let bin = &mut octave.bins[(key as usize) & (BINS - 1)];
            let removed = (*bin).min(times);
            *bin -= removed;
            octave.total -= u64::from(removed);
            self.count -= u64::from(removed);
            if octave.total == 0 {
                self.octaves.remove(&index);
            }
        }
    }

    /// Records one value.
    pub fn insert(&mut self, value: f64) {
        self.add_key(bin_key(value), 1);
    }

    /// Removes one value previously inserted.
    pub fn remove(&mut self, value: f64) {
        self.remove_key(bin_key(value), 1);
    }

    /// The occupied bins, as `(key, count)`.
    fn bins(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.octaves.iter().flat_map(|(index, octave)| {
            octave
                .bins
                .iter()
                .enumerate()
                .filter(|(_, times)| **times > 0)
                .map(move |(bin, times)| ((index << SUB_BITS) | bin as u32, *times))
        })
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &LogHistogram) {
        for (key, times) in other.bins() {
            self.add_key(key, times);
        }
    }

    /// Removes every value of `other` (which must have been added before).
    pub fn subtract(&mut self, other: &LogHistogram) {
        for (key, times) in other.bins() {
            self.remove_key(key, times);
        }
    }

    /// The value standing for the given 1-based rank (smallest first).
    fn at_rank(&self, rank: u64) -> f64 {
        let mut seen = 0u64;
        for (index, octave) in &self.octaves {
            if seen + octave.total < rank {
                seen += octave.total;
                continue;
            }
            for (bin, times) in octave.bins.iter().enumerate() {
                seen += u64::from(*times);
                if seen >= rank {
                    return bin_value((index << SUB_BITS) | bin as u32);
                }
            }
        }
        0.0
    }

    /// Nearest-rank quantiles (zero when empty).
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [f64; N] {
        let n = self.count;
        qs.map(|q| {
            if n == 0 {
                0.0
            } else {
                self.at_rank(nearest_rank(q, n))
            }
        })
    }
}

/// A bag of values that answers nearest-rank quantiles, exactly up to `exact_limit` values.
#[derive(Debug, Clone)]
pub enum ValueBag {
    /// The values themselves; the first few inline, so small bags cost no allocation and
    /// no pointer chase.
    Exact(SmallVec<[f64; 3]>),
    /// Too many values: log-binned.
    Binned(Box<LogHistogram>),
}

impl Default for ValueBag {
    fn default() -> Self {
        Self::Exact(SmallVec::new())
    }
}

impl ValueBag {
    /// Adds a value, switching to bins past `exact_limit` values.
    pub fn record(&mut self, value: f64, exact_limit: usize) {
        match self {
            Self::Exact(values) if values.len() < exact_limit => values.push(value),
            Self::Exact(values) => {
                let mut histogram = LogHistogram::default();
                for v in values.iter() {
                    histogram.insert(*v);
                }
                histogram.insert(value);
                *self = Self::Binned(Box::new(histogram));
            }
            Self::Binned(histogram) => histogram.insert(value),
        }
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        match self {
            Self::Exact(values) => values.len() as u64,
            Self::Binned(histogram) => histogram.count(),
        }
    }

    /// Adds every value of this bag to `histogram`.
    pub fn add_to(&self, histogram: &mut LogHistogram) {
        match self {
            Self::Exact(values) => values.iter().for_each(|value| histogram.insert(*value)),
            Self::Binned(bins) => histogram.add(bins),
        }
    }

    /// Removes every value of this bag from `histogram`.
    pub fn remove_from(&self, histogram: &mut LogHistogram) {
        match self {
            Self::Exact(values) => values.iter().for_each(|value| histogram.remove(*value)),
            Self::Binned(bins) => histogram.subtract(bins),
        }
    }

    /// Nearest-rank quantiles and whether they are exact. Sorts the exact values in place.
    pub fn quantiles<const N: usize>(&mut self, qs: [f64; N]) -> ([f64; N], bool) {
        match self {
            Self::Exact(values) => (exact_quantiles(values, qs), true),
            Self::Binned(histogram) => (histogram.quantiles(qs), false),
        }
    }
}

/// Nearest-rank quantiles of `values` (reordered in place), `qs` ascending. Zero when empty.
pub fn exact_quantiles<const N: usize>(values: &mut [f64], qs: [f64; N]) -> [f64; N] {
    let n = values.len();
    let mut out = [0.0; N];
    if n == 0 {
        return out;
    }
    // Each selection partitions the slice, so later (larger) quantiles search only the
    // part above the previous one.
    let mut lower = 0usize;
    for (slot, q) in out.iter_mut().zip(qs) {
        let index = (nearest_rank(q, n as u64) - 1) as usize;
        if index < lower {
            *slot = values[index];
            continue;
        }
        let (_, value, _) = values[lower..].select_nth_unstable_by(index - lower, f64::total_cmp);
        *slot = *value;
        lower = index;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const QS: [f64; 3] = [0.5, 0.95, 0.99];

    fn sorted_rank(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[(nearest_rank(q, values.len() as u64) - 1) as usize]
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want.abs() * 0.004 + 1e-12
    }

    #[test]
    fn nearest_rank_matches_definition() {
        assert_eq!(nearest_rank(0.5, 1), 1);
        assert_eq!(nearest_rank(0.5, 4), 2);
        assert_eq!(nearest_rank(0.95, 100), 95);
        assert_eq!(nearest_rank(0.99, 101), 100);
        assert_eq!(nearest_rank(0.0, 10), 1);
        assert_eq!(nearest_rank(1.0, 10), 10);
    }

    #[test]
    fn bins_preserve_order_across_signs() {
        let values = [
            -1e9, -3.5, -1.0, -1e-300, 0.0, 1e-300, 0.25, 1.0, 1.01, 7.0, 1e300,
        ];
        for pair in values.windows(2) {
            assert!(bin_key(pair[0]) <= bin_key(pair[1]), "{pair:?}");
        }
        for value in values {
            assert!(
                close(bin_value(bin_key(value)), value),
                "{value} -> {}",
                bin_value(bin_key(value))
            );
        }
    }

    #[test]
    fn histogram_quantiles_are_within_bin_precision() {
        let mut histogram = LogHistogram::default();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.37 - 500.0).collect();
        for v in &values {
            histogram.insert(*v);
        }
        for q in [0.01, 0.3, 0.5, 0.95, 0.99] {
            let want = sorted_rank(&values, q);
            let got = histogram.quantiles([q])[0];
            assert!(close(got, want), "q={q} want {want} got {got}");
        }
    }

    #[test]
    fn removal_undoes_insertion() {
        let mut window = LogHistogram::default();
        let mut pane = LogHistogram::default();
        for i in 0..1000 {
            window.insert(f64::from(i));
        }
        for i in 0..500 {
            pane.insert(f64::from(i));
        }
        window.subtract(&pane);
        assert_eq!(window.count(), 500);
        let [p50] = window.quantiles([0.5]);
        assert!(close(p50, 749.0), "{p50}");
        for i in 500..1000 {
            window.remove(f64::from(i));
        }
        assert_eq!(window.count(), 0);
        assert!(window.octaves.is_empty(), "empty octaves are dropped");
        window.remove(3.0); // removing what is not there is harmless
        assert_eq!(window.count(), 0);
    }

    #[test]
    fn bag_switches_to_bins_past_limit() {
        let mut bag = ValueBag::default();
        for i in 0..10 {
            bag.record(i as f64, 10);
        }
        assert!(matches!(bag, ValueBag::Exact(_)));
        bag.record(10.0, 10);
        assert!(matches!(bag, ValueBag::Binned(_)));
        assert_eq!(bag.count(), 11);
        let (q, exact) = bag.quantiles([0.5]);
        assert!(!exact);
        assert!(close(q[0], 5.0), "{}", q[0]);
    }

    proptest::proptest! {
        #[test]
        fn exact_quantiles_match_sorting(mut values in proptest::collection::vec(-1e6f64..1e6, 1..300)) {
            let want: Vec<f64> = QS.iter().map(|q| sorted_rank(&values, *q)).collect();
            let got = exact_quantiles(&mut values, QS);
            proptest::prop_assert_eq!(got.to_vec(), want);
        }

        #[test]
        fn binned_quantiles_are_close(values in proptest::collection::vec(-1e6f64..1e6, 1..500)) {
            let mut histogram = LogHistogram::default();
            values.iter().for_each(|v| histogram.insert(*v));
            let got = histogram.quantiles(QS);
            for (got, q) in got.into_iter().zip(QS) {
                let want = sorted_rank(&values, q);
                proptest::prop_assert!(close(got, want), "q={} want {} got {}", q, want, got);
            }
        }
    }
}
