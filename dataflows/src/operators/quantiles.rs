//! Percentiles of a bag of values: exact while the bag is small, an HDR histogram after.
//!
//! Most series hold a few dozen samples per window, where sorting is cheaper and more
//! precise than any sketch, so values are kept verbatim up to a limit. Beyond it they move
//! into a pair of [`hdrhistogram`] histograms (one for negative values, one for
//! non-negative), recorded in thousandths with two significant digits, so memory stays
//! bounded (a few KiB per histogram) whatever the rate.
//!
//! Percentiles use the nearest-rank definition: the `q` quantile of `n` values is the
//! `ceil(q·n)`-th smallest (numpy's `method="inverted_cdf"`).

use hdrhistogram::Histogram;
use smallvec::SmallVec;

/// Values are recorded in the histogram as integer multiples of this resolution.
const RESOLUTION: f64 = 1_000.0;
/// Largest magnitude recordable, in resolution units (values beyond are clamped).
const MAX_SCALED: f64 = 9.0e15;
const SIGNIFICANT_DIGITS: u8 = 2;

/// The nearest rank (1-based) of quantile `q` among `n` values.
pub fn nearest_rank(q: f64, n: u64) -> u64 {
    let rank = (q * n as f64).ceil() as u64;
    rank.clamp(1, n.max(1))
}

/// Two HDR histograms covering negative and non-negative values.
#[derive(Debug, Clone)]
pub struct SignedHistogram {
    negative: Histogram<u32>,
    positive: Histogram<u32>,
}

impl Default for SignedHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl SignedHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // Two significant digits with auto-resize: valid arguments, cannot fail.
        let empty = || match Histogram::new(SIGNIFICANT_DIGITS) {
            Ok(histogram) => histogram,
            Err(error) => {
                panic!("invariant: a 2-digit auto-resizing histogram is constructible: {error:?}")
            }
        };
        Self {
            negative: empty(),
            positive: empty(),
        }
    }

    /// Records one value.
    pub fn record(&mut self, value: f64) {
        let scaled = (value.abs() * RESOLUTION).round().min(MAX_SCALED) as u64;
        let histogram = if value < 0.0 {
            &mut self.negative
        } else {
            &mut self.positive
        };
        // Auto-resize is on and `scaled` is below the histogram's hard ceiling.
        let _ = histogram.record(scaled);
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &SignedHistogram) {
        let _ = self.negative.add(&other.negative);
        let _ = self.positive.add(&other.positive);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.negative.len() + self.positive.len()
    }

    /// Clears all values, keeping the allocation.
    pub fn reset(&mut self) {
        self.negative.reset();
        self.positive.reset();
    }

    /// The value of the given 1-based rank (smallest first).
    fn at_rank(&self, rank: u64) -> f64 {
        let negatives = self.negative.len();
        if rank <= negatives {
            // Largest magnitudes come first among negatives.
            let magnitude_rank = negatives - rank + 1;
            -rank_in(&self.negative, magnitude_rank)
        } else {
            rank_in(&self.positive, rank - negatives)
        }
    }

    /// Nearest-rank quantiles.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [f64; N] {
        let n = self.count();
        qs.map(|q| {
            if n == 0 {
                0.0
            } else {
                self.at_rank(nearest_rank(q, n))
            }
        })
    }
}

fn rank_in(histogram: &Histogram<u32>, rank: u64) -> f64 {
    let mut seen = 0u64;
    for bucket in histogram.iter_recorded() {
        seen += bucket.count_at_value() as u64;
        if seen >= rank {
            return histogram.median_equivalent(bucket.value_iterated_to()) as f64 / RESOLUTION;
        }
    }
    histogram.max() as f64 / RESOLUTION
}

/// A bag of values that answers nearest-rank quantiles, exactly up to `exact_limit` values.
#[derive(Debug, Clone)]
pub enum ValueBag {
    /// The values themselves; the first few inline, so small bags cost no allocation and
    /// no pointer chase.
    Exact(SmallVec<[f64; 3]>),
    /// Too many values: a histogram.
    Histogram(Box<SignedHistogram>),
}

impl Default for ValueBag {
    fn default() -> Self {
        Self::Exact(SmallVec::new())
    }
}

impl ValueBag {
    /// Adds a value, switching to a histogram past `exact_limit` values.
    pub fn record(&mut self, value: f64, exact_limit: usize) {
        match self {
            Self::Exact(values) if values.len() < exact_limit => values.push(value),
            Self::Exact(values) => {
                let mut histogram = SignedHistogram::new();
                for v in values.iter() {
                    histogram.record(*v);
                }
                histogram.record(value);
                *self = Self::Histogram(Box::new(histogram));
            }
            Self::Histogram(histogram) => histogram.record(value),
        }
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        match self {
            Self::Exact(values) => values.len() as u64,
            Self::Histogram(histogram) => histogram.count(),
        }
    }

    /// Nearest-rank quantiles and whether they are exact. Sorts the exact values in place.
    pub fn quantiles<const N: usize>(&mut self, qs: [f64; N]) -> ([f64; N], bool) {
        match self {
            Self::Exact(values) => (exact_quantiles(values, qs), true),
            Self::Histogram(histogram) => (histogram.quantiles(qs), false),
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

/// Reusable scratch space that merges several bags into one answer.
#[derive(Debug, Default)]
pub struct QuantileScratch {
    values: Vec<f64>,
    histogram: Option<SignedHistogram>,
    use_histogram: bool,
}

impl QuantileScratch {
    /// Starts a new merge.
    pub fn clear(&mut self) {
        self.values.clear();
        self.use_histogram = false;
        if let Some(histogram) = self.histogram.as_mut() {
            histogram.reset();
        }
    }

    /// Adds one bag; switches to a histogram once more than `exact_limit` values gather.
    pub fn add(&mut self, bag: &ValueBag, exact_limit: usize) {
        match bag {
            ValueBag::Exact(values)
                if !self.use_histogram && self.values.len() + values.len() <= exact_limit =>
            {
                self.values.extend_from_slice(values);
            }
            ValueBag::Exact(values) => {
                let histogram = self.switch_to_histogram();
                for v in values {
                    histogram.record(*v);
                }
            }
            ValueBag::Histogram(other) => self.switch_to_histogram().add(other),
        }
    }

    fn switch_to_histogram(&mut self) -> &mut SignedHistogram {
        let histogram = self.histogram.get_or_insert_with(SignedHistogram::new);
        if !self.use_histogram {
            self.use_histogram = true;
            for v in self.values.drain(..) {
                histogram.record(v);
            }
        }
        histogram
    }

    /// Nearest-rank quantiles of everything added, and whether they are exact.
    pub fn quantiles<const N: usize>(&mut self, qs: [f64; N]) -> ([f64; N], bool) {
        match (&self.histogram, self.use_histogram) {
            (Some(histogram), true) => (histogram.quantiles(qs), false),
            _ => (exact_quantiles(&mut self.values, qs), true),
        }
    }
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
    fn histogram_quantiles_are_within_two_digits() {
        let mut histogram = SignedHistogram::new();
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.37 - 500.0).collect();
        for v in &values {
            histogram.record(*v);
        }
        for q in [0.01, 0.3, 0.5, 0.95, 0.99] {
            let want = sorted_rank(&values, q);
            let got = histogram.quantiles([q])[0];
            assert!(
                (got - want).abs() <= want.abs() * 0.01 + 0.002,
                "q={q} want {want} got {got}"
            );
        }
    }

    #[test]
    fn bag_switches_to_histogram_past_limit() {
        let mut bag = ValueBag::default();
        for i in 0..10 {
            bag.record(i as f64, 10);
        }
        assert!(matches!(bag, ValueBag::Exact(_)));
        bag.record(10.0, 10);
        assert!(matches!(bag, ValueBag::Histogram(_)));
        assert_eq!(bag.count(), 11);
        let (q, exact) = bag.quantiles([0.5]);
        assert!(!exact);
        assert!((q[0] - 5.0).abs() < 0.06);
    }

    #[test]
    fn scratch_merges_exact_and_histogram_bags() {
        let mut scratch = QuantileScratch::default();
        let mut small = ValueBag::default();
        small.record(1.0, 4);
        small.record(2.0, 4);
        scratch.add(&small, 4);
        scratch.add(&small, 4);
        let (q, exact) = scratch.quantiles([0.5, 1.0]);
        assert!(exact);
        assert_eq!(q, [1.0, 2.0]);
        scratch.add(&small, 4); // 6 values > limit 4
        let (q, exact) = scratch.quantiles([1.0]);
        assert!(!exact);
        assert!((q[0] - 2.0).abs() < 0.03);
        scratch.clear();
        scratch.add(&small, 4);
        assert_eq!(scratch.quantiles([0.5]), ([1.0], true));
    }

    proptest::proptest! {
        #[test]
        fn exact_quantiles_match_sorting(mut values in proptest::collection::vec(-1e6f64..1e6, 1..300)) {
            let want: Vec<f64> = QS.iter().map(|q| sorted_rank(&values, *q)).collect();
            let got = exact_quantiles(&mut values, QS);
            proptest::prop_assert_eq!(got.to_vec(), want);
        }
    }
}
