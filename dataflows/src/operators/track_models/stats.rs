//! Pure statistics of ML tracking: classification metrics from a confusion matrix, the
//! Wilson interval, calibration, and the drift tests (PSI, two-sample Kolmogorov–Smirnov,
//! chi-squared contingency, ADWIN).
//!
//! No timely, no I/O, no clock: every function is a plain computation over counts or
//! samples, checked here against values computed with scikit-learn 1.9.1, scipy 1.17.1 and
//! River 0.26.1, and end to end by `tests/it/ml.rs`. Functions that cannot produce a
//! value (empty input, zero variance) return `None` rather than NaN.

use std::collections::{BTreeMap, VecDeque};

use crate::operators::forecast_series::math::ln_gamma;

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of `successes` out of `trials` at `z`; `None` for no trials.
pub fn wilson(successes: u64, trials: u64, z: f64) -> Option<(f64, f64)> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Newcombe's hybrid score interval (method 10) for the difference `p1 − p2` of two
/// independent proportions, from their Wilson intervals.
pub fn newcombe(p1: f64, wilson1: (f64, f64), p2: f64, wilson2: (f64, f64)) -> (f64, f64) {
    let (l1, u1) = wilson1;
    let (l2, u2) = wilson2;
    let difference = p1 - p2;
    let lower = difference - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let upper = difference + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    (lower.max(-1.0), upper.min(1.0))
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ClassScores {
    /// tp / (tp + fp); 0 when nothing was predicted as the class (scikit-learn's
    /// `zero_division=0`... see [`class_scores`]).
    pub precision: f64,
    /// tp / (tp + fn); 0 when the class never occurred.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// How often the class truly occurred.
    pub support: u64,
}

/// Per-class and averaged scores of a confusion matrix.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Scores {
    /// Per class, in the order of the matrix's labels.
    pub per_class: Vec<ClassScores>,
    /// Unweighted mean over classes.
    pub macro_avg: ClassScores,
    /// Mean weighted by support.
    pub weighted_avg: ClassScores,
    /// Correct / total.
    pub accuracy: Option<f64>,
}

/// Scores of `matrix` (rows: actual, columns: predicted, both over the same labels).
///
/// Matches scikit-learn's `precision_recall_fscore_support(..., zero_division=0.0)` over
/// the union of labels: a ratio with a zero denominator is 0 (scikit-learn warns and
/// uses 0 by default too), and F1 is computed from the counts
/// (`2 tp / (2 tp + fp + fn)`), as scikit-learn does.
pub fn class_scores(matrix: &[Vec<u64>]) -> Scores {
    let classes = matrix.len();
    let mut per_class = Vec::with_capacity(classes);
    let mut total = 0u64;
    let mut correct = 0u64;
    for (class, row) in matrix.iter().enumerate() {
        let tp = row.get(class).copied().unwrap_or(0);
        let support: u64 = row.iter().sum();
        let predicted: u64 = matrix
            .iter()
            .map(|other| other.get(class).copied().unwrap_or(0))
            .sum();
        total += support;
        correct += tp;
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        let fp = predicted - tp;
        let fn_ = support - tp;
        per_class.push(ClassScores {
            precision: ratio(tp, predicted),
            recall: ratio(tp, support),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
            support,
        });
    }
    let mean = |weights: &dyn Fn(&ClassScores) -> f64| {
        let sum: f64 = per_class.iter().map(weights).sum();
        if sum == 0.0 {
            return ClassScores::default();
        }
        let pick = |f: fn(&ClassScores) -> f64| {
            per_class.iter().map(|c| f(c) * weights(c)).sum::<f64>() / sum
        };
        ClassScores {
            precision: pick(|c| c.precision),
            recall: pick(|c| c.recall),
            f1: pick(|c| c.f1),
            support: per_class.iter().map(|c| c.support).sum(),
        }
    };
    let macro_avg = mean(&|_| 1.0);
    let weighted_avg = mean(&|c| c.support as f64);
    Scores {
        per_class,
        macro_avg,
        weighted_avg,
        accuracy: (total > 0).then(|| correct as f64 / total as f64),
    }
}

/// Fixed-point scale of confidence sums: sums of `confidence · 2^53` (rounded) are exact
/// integers, so they do not depend on the order values arrive in (floating-point sums
/// would, and with them the 1- and 4-worker results).
pub const CONFIDENCE_SCALE: f64 = 9_007_199_254_740_992.0;

/// `value` in the fixed point of [`CONFIDENCE_SCALE`].
pub fn fixed(value: f64) -> u128 {
    let scaled = (value * CONFIDENCE_SCALE).round().max(0.0);
    // The same integer either way; the 64-bit conversion is one instruction, the 128-bit
    // one a library call (confidences always fit, latencies below 2048 ms do).
    if scaled < 18_446_744_073_709_551_616.0 {
        u128::from(scaled as u64)
    } else {
        scaled as u128
    }
}

/// A fixed-point sum back in floating point.
pub fn unfixed(sum: u128) -> f64 {
    sum as f64 / CONFIDENCE_SCALE
}

/// One reliability bin: confidences in `[lower, upper)` (the last bin includes 1).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ReliabilityBin {
    /// Lower edge.
    pub lower: f64,
    /// Upper edge.
    pub upper: f64,
    /// Matched predictions in the bin.
    pub count: u64,
    /// Correct ones among them.
    pub correct: u64,
    /// Sum of their confidences.
    pub confidence_sum: f64,
}

/// Equal-width reliability bins over `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Calibration {
    bins: Vec<ReliabilityBin>,
    /// Exact confidence sums per bin (see [`fixed`]).
    sums: Vec<u128>,
}

impl Calibration {
    /// `bins` equal-width bins (at least one).
    pub fn new(bins: usize) -> Self {
        let bins = bins.max(1);
        Self {
            bins: (0..bins)
                .map(|index| ReliabilityBin {
                    lower: index as f64 / bins as f64,
                    upper: (index + 1) as f64 / bins as f64,
                    ..ReliabilityBin::default()
                })
                .collect(),
            sums: vec![0; bins],
        }
    }

    /// Records one matched prediction.
    pub fn record(&mut self, confidence: f64, correct: bool) {
        let bins = self.bins.len();
        let index = ((confidence * bins as f64) as usize).min(bins - 1);
        self.add(index, 1, u64::from(correct), fixed(confidence));
    }

    /// Adds `count` matched predictions in bin `index`, `correct` of them right, whose
    /// confidences sum to `sum` (fixed point): the same as recording them one by one.
    pub fn add(&mut self, index: usize, count: u64, correct: u64, sum: u128) {
        if let (Some(bin), Some(total)) = (self.bins.get_mut(index), self.sums.get_mut(index)) {
            bin.count += count;
            bin.correct += correct;
            *total = total.saturating_add(sum);
            bin.confidence_sum = unfixed(*total);
        }
    }

    /// The bins.
    pub fn bins(&self) -> &[ReliabilityBin] {
        &self.bins
    }

    /// Expected calibration error: Σ (n_b / N) · |accuracy_b − mean confidence_b|.
    pub fn expected_calibration_error(&self) -> Option<f64> {
        let total: u64 = self.bins.iter().map(|bin| bin.count).sum();
        if total == 0 {
            return None;
        }
        Some(
            self.bins
                .iter()
                .filter(|bin| bin.count > 0)
                .map(|bin| {
                    let n = bin.count as f64;
                    (n / total as f64) * (bin.correct as f64 / n - bin.confidence_sum / n).abs()
                })
                .sum(),
        )
    }
}

/// Population stability index of `current` against `reference`.
///
/// Bin edges are the reference's deciles (`bins` quantiles, duplicates merged); values
/// fall in `(edge_i, edge_i+1]` with open ends. Empty bins get a proportion of `1e-4` so
/// the logarithm stays finite. `None` when either sample is empty.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> Option<f64> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let mut sorted = reference.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..bins.max(2))
        .map(|index| {
            let position = index * sorted.len() / bins.max(2);
            sorted[position.min(sorted.len() - 1)]
        })
        .collect();
    edges.dedup();
    let proportions = |values: &[f64]| {
        let mut counts = vec![0u64; edges.len() + 1];
        for value in values {
            let bin = edges.partition_point(|edge| edge < value);
            counts[bin] += 1;
        }
        counts
            .into_iter()
            .map(|count| (count as f64 / values.len() as f64).max(1e-4))
            .collect::<Vec<_>>()
    };
    let expected = proportions(reference);
    let actual = proportions(current);
    Some(
        expected
            .iter()
            .zip(&actual)
            .map(|(e, a)| (a - e) * (a / e).ln())
            .sum(),
    )
}

/// The two-sample Kolmogorov–Smirnov statistic and its two-sided p-value.
///
/// The p-value is the exact one (scipy's `ks_2samp(method='exact')`, which its default
/// `method='auto'` selects when both samples hold at most 10,000 values): the probability
/// that a random monotone lattice path from (0, 0) to (n, m) leaves the band
/// `|i/n − j/m| < D`, computed column by column as a probability so nothing overflows.
/// `None` when either sample is empty or larger than 10,000 (callers bound their windows).
pub fn ks_2samp(first: &[f64], second: &[f64]) -> Option<(f64, f64)> {
    ks_2samp_remembering(first, second, &mut KsPValues::default())
}

/// Exact two-sample KS p-values already computed, by `(n, m, D·n·m)`: the p-value is a
/// function of these three integers alone, and a version re-evaluated every
/// `evaluate_every` pairs with full windows keeps `n` and `m` and often meets the same
/// `D` again, so the O(n·m) sweep is skipped with the very same result. Holds at most
/// [`KsPValues::CAPACITY`] values (the oldest goes first).
#[derive(Debug, Clone, Default)]
pub struct KsPValues {
    known: std::collections::VecDeque<((usize, usize, i64), f64)>,
}

impl KsPValues {
    /// Values kept at most.
    pub const CAPACITY: usize = 64;

    fn get_or_compute(&mut self, key: (usize, usize, i64), compute: impl FnOnce() -> f64) -> f64 {
        if let Some((_, value)) = self.known.iter().find(|(known, _)| *known == key) {
            return *value;
        }
        let value = compute();
        if self.known.len() >= Self::CAPACITY {
            self.known.pop_front();
        }
        self.known.push_back((key, value));
        value
    }
}

/// [`ks_2samp`], taking the p-value from `known` when it holds it.
pub fn ks_2samp_remembering(
    first: &[f64],
    second: &[f64],
    known: &mut KsPValues,
) -> Option<(f64, f64)> {
    let (n, m) = (first.len(), second.len());
    if n == 0 || m == 0 || n > 10_000 || m > 10_000 {
        return None;
    }
    let mut a = first.to_vec();
    let mut b = second.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    // D as an exact fraction: max |i·m − j·n| / (n·m) over the distinct values (exact in
    // i64: n, m ≤ 10,000).
    let (mut i, mut j) = (0usize, 0usize);
    let mut widest = 0i64;
    while i < n || j < m {
        let value = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        while i < n && a[i] <= value {
            i += 1;
        }
        while j < m && b[j] <= value {
            j += 1;
        }
        let gap = (i as i64 * m as i64 - j as i64 * n as i64).abs();
        widest = widest.max(gap);
    }
    let statistic = widest as f64 / (n as f64 * m as f64);
    if widest == 0 {
        return Some((0.0, 1.0));
    }
    let p_value = known.get_or_compute((n, m, widest), || ks_exact_p_value(n, m, widest));
    Some((statistic, p_value))
}

/// The exact p-value of a two-sample KS statistic `widest / (n·m)` (see [`ks_2samp`]).
fn ks_exact_p_value(n: usize, m: usize, widest: i64) -> f64 {
    // Probability of staying strictly inside the band, by dynamic programming over the
    // normalised path counts p(i, j) = count(i, j) / C(i + j, i):
    // p(i, j) = (i·p(i−1, j) + j·p(i, j−1)) / (i + j).
    let inside = |i: usize, j: usize| (i as i64 * m as i64 - j as i64 * n as i64).abs() < widest;
    let mut column = vec![0.0f64; m + 1];
    let mut open = true;
    for (j, cell) in column.iter_mut().enumerate() {
        // i = 0: the single path straight up, inside while every point on it is.
        open = open && inside(0, j);
        *cell = if open { 1.0 } else { 0.0 };
    }
    // Only cells inside the band can be non-zero, and the band |i·m − j·n| < D·n·m
    // moves up monotonically with i: each row visits its band (plus one cell either side,
    // written as zero like every outside cell) instead of all m + 1 cells. Cells the loop
    // skips are never read again, so the result is the same as the full sweep.
    let (width, rows) = (widest, n as i64);
    for i in 1..=n {
        let centre = i as i64 * m as i64;
        let low = ((centre - width).max(0) / rows).saturating_sub(1).max(0) as usize;
        let high = (((centre + width) / rows + 1).min(m as i64)) as usize;
        let mut below = 0.0f64;
        for j in low..=high {
            let value = if !inside(i, j) {
                0.0
            } else if j == 0 {
                column[0]
            } else {
                (i as f64 * column[j] + j as f64 * below) / (i + j) as f64
            };
            column[j] = value;
            below = value;
        }
    }
    (1.0 - column[m]).clamp(0.0, 1.0)
}

/// Result of a chi-squared test of independence.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ChiSquared {
    /// The statistic.
    pub statistic: f64,
    /// Its p-value.
    pub p_value: f64,
    /// Degrees of freedom.
    pub dof: u64,
}

/// Chi-squared test of independence on a 2 × k table of label counts, like scipy's
/// `chi2_contingency(table)` with its default Yates correction (applied only when there
/// is one degree of freedom). Columns that are zero in both rows are dropped first
/// (scipy refuses tables with zero expected counts). `None` when fewer than two columns
/// or a row is all zero.
pub fn chi2_contingency(first: &[u64], second: &[u64]) -> Option<ChiSquared> {
    let columns: Vec<(f64, f64)> = first
        .iter()
        .zip(second)
        .filter(|(a, b)| **a + **b > 0)
        .map(|(a, b)| (*a as f64, *b as f64))
        .collect();
    let row_a: f64 = columns.iter().map(|c| c.0).sum();
    let row_b: f64 = columns.iter().map(|c| c.1).sum();
    if columns.len() < 2 || row_a == 0.0 || row_b == 0.0 {
        return None;
    }
    let total = row_a + row_b;
    let dof = (columns.len() - 1) as u64;
    let mut statistic = 0.0;
    for (a, b) in &columns {
        let column = a + b;
        for (observed, row) in [(*a, row_a), (*b, row_b)] {
            let expected = row * column / total;
            let mut difference = observed - expected;
            if dof == 1 {
                let magnitude = difference.abs().min(0.5);
                difference = difference.signum() * (difference.abs() - magnitude);
            }
            statistic += difference * difference / expected;
        }
    }
    Some(ChiSquared {
        statistic,
        p_value: chi2_survival(statistic, dof as f64),
        dof,
    })
}

/// P(X > x) for X ~ chi-squared with `dof` degrees of freedom: the regularized upper
/// incomplete gamma function Q(dof/2, x/2).
pub fn chi2_survival(x: f64, dof: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(dof / 2.0, x / 2.0)
}

/// Regularized upper incomplete gamma Q(a, x): series below a + 1, continued fraction
/// (modified Lentz) above.
fn gamma_q(a: f64, x: f64) -> f64 {
    let prefix = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut denominator = a;
        for _ in 0..10_000 {
            denominator += 1.0;
            term *= x / denominator;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        (1.0 - sum * prefix).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for index in 1..10_000 {
            let an = -(index as f64) * (index as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-17 {
                break;
            }
        }
        (prefix * h).clamp(0.0, 1.0)
    }
}

/// ADWIN (Bifet & Gavaldà, 2007) over a stream of values in `[0, 1]`, with the
/// exponential-histogram buckets and the parameters of River's `drift.ADWIN`:
/// `delta`, a check every `clock` values, at most `max_buckets` buckets per size, both
/// sub-windows at least `min_window_length` long, and no check before `grace_period`
/// values. Like River's `ADWIN.update`, the value after a detected change starts a fresh
/// window (River resets the detector once `drift_detected` was reported).
#[derive(Debug, Clone)]
pub struct Adwin {
    delta: f64,
    clock: u64,
    max_buckets: usize,
    min_window_length: u64,
    grace_period: u64,
    /// Rows of buckets by size exponent; each row is newest-first, entries (total, variance).
    rows: Vec<VecDeque<(f64, f64)>>,
    width: u64,
    total: f64,
    variance: f64,
    ticks: u64,
    detected: bool,
}

impl Adwin {
    /// ADWIN with River's defaults except `delta`.
    pub fn new(delta: f64) -> Self {
        Self {
            delta,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
            rows: Vec::new(),
            width: 0,
            total: 0.0,
            variance: 0.0,
            ticks: 0,
            detected: false,
        }
    }

    /// Values currently in the window.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// Mean of the window.
    pub fn mean(&self) -> Option<f64> {
        (self.width > 0).then(|| self.total / self.width as f64)
    }

    /// Adds one value; returns whether a change was detected.
    pub fn update(&mut self, value: f64) -> bool {
        if self.detected {
            *self = Self::new(self.delta);
        }
        self.ticks += 1;
        if self.width > 0 {
            let mean = self.total / self.width as f64;
            let n = self.width as f64;
            self.variance += n * (value - mean) * (value - mean) / (n + 1.0);
        }
        self.width += 1;
        self.total += value;
        if self.rows.is_empty() {
            self.rows.push(VecDeque::new());
        }
        self.rows[0].push_front((value, 0.0));
        self.compress();
        self.detected = self.detect();
        self.detected
    }

    fn compress(&mut self) {
        let mut level = 0;
        while level < self.rows.len() {
            if self.rows[level].len() <= self.max_buckets {
                break;
            }
            // Merge the two oldest buckets of this size into one of the next size.
            let size = (1u64 << level) as f64;
            let (Some((total_a, variance_a)), Some((total_b, variance_b))) =
                (self.rows[level].pop_back(), self.rows[level].pop_back())
            else {
                break;
            };
            let difference = total_a / size - total_b / size;
            let merged = (
                total_a + total_b,
                variance_a + variance_b + size * size * difference * difference / (2.0 * size),
            );
            if self.rows.len() == level + 1 {
                self.rows.push(VecDeque::new());
            }
            self.rows[level + 1].push_front(merged);
            level += 1;
        }
    }

    fn drop_oldest(&mut self) {
        let Some(level) = self.rows.iter().rposition(|row| !row.is_empty()) else {
            return;
        };
        let size = 1u64 << level;
        let Some((total, variance)) = self.rows[level].pop_back() else {
            return;
        };
        let n = self.width as f64;
        let s = size as f64;
        let bucket_mean = total / s;
        self.width -= size;
        self.total -= total;
        if self.width == 0 {
            self.variance = 0.0;
        } else {
            let rest_mean = self.total / self.width as f64;
            self.variance -= variance + s * (n - s) / n * (bucket_mean - rest_mean).powi(2);
            self.variance = self.variance.max(0.0);
        }
        while self.rows.last().is_some_and(VecDeque::is_empty) {
            self.rows.pop();
        }
    }

    fn detect(&mut self) -> bool {
        if self.ticks % self.clock != 0 || self.width <= self.grace_period {
            return false;
        }
        let mut changed = false;
        loop {
            if !self.has_cut() {
                break;
            }
            changed = true;
            self.drop_oldest();
            if self.width <= self.min_window_length {
                break;
            }
        }
        changed
    }

    /// Whether some split of the window (at a bucket boundary, oldest part first) has
    /// means further apart than ε_cut.
    fn has_cut(&self) -> bool {
        let width = self.width as f64;
        let variance = self.variance / width;
        let ln_term = (2.0 * width.ln() / self.delta).ln();
        let (mut n0, mut u0) = (0u64, 0.0f64);
        for (level, row) in self.rows.iter().enumerate().rev() {
            let size = 1u64 << level;
            for (total, _) in row.iter().rev() {
                n0 += size;
                u0 += total;
                let n1 = self.width - n0;
                if n1 == 0 {
                    return false;
                }
                if n0 < self.min_window_length || n1 < self.min_window_length {
                    continue;
                }
                let u1 = self.total - u0;
                let difference = (u0 / n0 as f64 - u1 / n1 as f64).abs();
                let m = 1.0 / (n0 - self.min_window_length + 1) as f64
                    + 1.0 / (n1 - self.min_window_length + 1) as f64;
                let epsilon = (2.0 * m * variance * ln_term).sqrt() + 2.0 / 3.0 * ln_term * m;
                if difference > epsilon {
                    return true;
                }
            }
        }
        false
    }
}

/// Counts of labels, ordered by label.
pub type LabelCounts = BTreeMap<String, u64>;

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
