//! Pure numeric anomaly detectors for one series: a robust z-score, an isolation forest and
//! the rule that combines them. No timely, no clock, no I/O; time comes in with each point.
//!
//! Errors do not leave this module: non-finite values are rejected by the caller (samples are
//! finite by construction) and every other input is valid.
//!
//! Memory is the design constraint (one detector per series, up to `max_series` per worker):
//! a series keeps one ring of its last `max(z_window, reference_size)` values (the z window
//! and the forest's reference sample are both views of it; the reference points' second
//! feature, the change from the previous value, is derived at fit time) and a forest of
//! 8-byte nodes (f32 thresholds relative to the sample's centre). The ring grows with the
//! series, so a short-lived series costs little; the forest exists from the first fit on.

use std::cell::RefCell;
use std::time::Duration;

use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;

use crate::time::duration_ms;

/// Settings shared by every series' detectors.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Points kept for the robust z-score (median/MAD window).
    pub z_window: usize,
    /// The median and MAD are recomputed every this many points (cheap on the hot path).
    pub z_recompute_every: usize,
    /// |z| at which the robust z-score alone votes "anomalous".
    pub z_threshold: f64,
    /// Points before any verdict is given (cold start).
    pub min_history: usize,
    /// Points kept as the isolation forest's reference sample.
    pub reference_size: usize,
    /// Trees in the forest.
    pub trees: usize,
    /// Points drawn (without replacement) for each tree.
    pub tree_sample: usize,
    /// Forest score (0–1) at which the forest votes "anomalous".
    pub forest_threshold: f64,
    /// The forest is refitted every this many points.
    pub refit_every: usize,
    /// … and when this much event time has passed since its last fit and at least
    /// `z_recompute_every` points have arrived since (checked when a point arrives), so
    /// slow series are refitted on a clock, not only by count.
    pub refit_interval: Duration,
    /// The forest is also refitted when the window median moves this many fit-time MADs.
    pub shift_mads: f64,
    /// This many consecutive anomalous points on the same side mean a level shift: the
    /// history restarts from them (0 disables).
    pub shift_run: usize,
    /// An anomalous point within this many points of the previous anomalous point
    /// continues that episode ([`Verdict::Ongoing`]) instead of raising a new alarm.
    pub refractory: usize,
    /// Seed mixed with each series' key hash.
    pub seed: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            z_window: 256,
            z_recompute_every: 16,
            z_threshold: 5.0,
            min_history: 64,
            reference_size: 256,
            trees: 32,
            tree_sample: 64,
            forest_threshold: 0.62,
            refit_every: 1024,
            refit_interval: Duration::from_secs(7 * 24 * 3600),
            shift_mads: 6.0,
            shift_run: 8,
            refractory: 32,
            seed: 0x6d65_6761_6d69_6e64,
        }
    }
}

/// A deterministic 64-bit generator (splitmix64): small, fast and identical everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform index in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// Expected path length of an unsuccessful search in a binary search tree of `n` points,
/// the normaliser `c(n)` of the isolation forest score.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Number of features per point: the value and its change from the previous value.
pub const FEATURES: usize = 2;

/// Largest `tree_sample`: node indices within a tree are `u16`.
pub const MAX_TREE_SAMPLE: usize = 16_384;

const LEAF: u8 = u8::MAX;

/// Trees walked side by side when scoring.
const LANES: usize = 4;

/// One tree node in 8 bytes. Internal: split `feature` at `value` (relative to the forest's
/// centre), children at `left` and `left + 1` (indices within the tree). Leaf: `value` is the
/// path length it contributes, `depth + c(size)`, computed once at fit time.
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    value: f32,
    left: u16,
    feature: u8,
}

/// An isolation forest over [`FEATURES`]-dimensional points.
///
/// All trees live in one node array (`starts` gives each tree's first node). Thresholds are
/// `f32` relative to `centre`, the midpoint of the fitted sample's range, so large
/// magnitudes (timestamps, byte counts) keep their resolution. Scoring walks one path per
/// tree and allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct IsolationForest {
    nodes: Vec<Node>,
    starts: Vec<u32>,
    centre: [f64; FEATURES],
    normaliser: f64,
}

impl IsolationForest {
    /// Fits `trees` trees, each on `tree_sample` rows drawn without replacement from
    /// `points` (`n × FEATURES`; all rows if fewer). Depth is limited to
    /// `ceil(log2(tree_sample))`.
    pub fn fit(points: ArrayView2<'_, f64>, trees: usize, tree_sample: usize, seed: u64) -> Self {
        let mut forest = Self::default();
        let n = points.nrows();
        if n == 0 || trees == 0 || points.ncols() != FEATURES {
            return forest;
        }
        for (feature, column) in points.axis_iter(Axis(1)).enumerate() {
            let (low, high) = column
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |acc, &v| {
                    (acc.0.min(v), acc.1.max(v))
                });
            forest.centre[feature] = low + 0.5 * (high - low);
        }
        let psi = tree_sample.clamp(2, MAX_TREE_SAMPLE).min(n);
        let depth_limit = (psi.max(2) as f64).log2().ceil() as usize;
        let mut rng = SplitMix64::new(seed);
        let mut indices: Vec<u32> = (0..n as u32).collect();
        let mut work: Vec<[f32; FEATURES]> = Vec::with_capacity(psi);
        forest
            .nodes
            .reserve(trees * (2 * psi).min(1 << (depth_limit + 1)));
        forest.starts.reserve_exact(trees);
        let centre = forest.centre;
        for _ in 0..trees {
            // Partial Fisher–Yates: the first `psi` indices become the tree's sample.
            for i in 0..psi {
                let j = i + rng.below(n - i);
                indices.swap(i, j);
            }
            work.clear();
            work.extend(indices[..psi].iter().map(|&i| {
                let row = points.row(i as usize);
                [(row[0] - centre[0]) as f32, (row[1] - centre[1]) as f32]
            }));
            let start = forest.nodes.len();
            forest.starts.push(start as u32);
            forest.nodes.push(Node::default());
            forest.grow(start, 0, &mut work[..], 0, depth_limit, &mut rng);
        }
        forest.nodes.shrink_to_fit();
        forest.normaliser = average_path_length(psi);
        forest
    }

    /// [`Self::fit`] on rows given as arrays.
    pub fn fit_rows(
        points: &[[f64; FEATURES]],
        trees: usize,
        tree_sample: usize,
        seed: u64,
    ) -> Self {
        Self::fit(ndarray::aview2(points), trees, tree_sample, seed)
    }

    fn grow(
        &mut self,
        start: usize,
        node: usize,
        points: &mut [[f32; FEATURES]],
        depth: usize,
        depth_limit: usize,
        rng: &mut SplitMix64,
    ) {
        let leaf = |points: usize| Node {
            value: (depth as f64 + average_path_length(points)) as f32,
            left: 0,
            feature: LEAF,
        };
        if depth >= depth_limit || points.len() <= 1 {
            self.nodes[start + node] = leaf(points.len());
            return;
        }
        // Pick a feature with spread; a point set that is constant everywhere stays a leaf.
        let first = rng.below(FEATURES);
        let mut chosen = None;
        for offset in 0..FEATURES {
            let feature = (first + offset) % FEATURES;
            let (low, high) = points
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |acc, p| {
                    (acc.0.min(p[feature]), acc.1.max(p[feature]))
                });
            if high > low {
                chosen = Some((feature, low, high));
                break;
            }
        }
        let Some((feature, low, high)) = chosen else {
            self.nodes[start + node] = leaf(points.len());
            return;
        };
        let mut threshold = low + (rng.next_f64() as f32) * (high - low);
        if threshold <= low {
            threshold = low + (high - low) * 0.5;
        }
        if threshold <= low {
            threshold = high; // `high` is the next representable value above `low`
        }
        // Partition in place: `< threshold` goes left.
        let mut split = 0;
        for i in 0..points.len() {
            if points[i][feature] < threshold {
                points.swap(i, split);
                split += 1;
            }
        }
        let left = self.nodes.len() - start;
        self.nodes.push(Node::default());
        self.nodes.push(Node::default());
        self.nodes[start + node] = Node {
            value: threshold,
            left: left as u16,
            feature: feature as u8,
        };
        let (low_points, high_points) = points.split_at_mut(split);
        self.grow(start, left, low_points, depth + 1, depth_limit, rng);
        self.grow(start, left + 1, high_points, depth + 1, depth_limit, rng);
    }

    /// Whether the forest has been fitted.
    pub fn is_fitted(&self) -> bool {
        !self.starts.is_empty() && self.normaliser > 0.0
    }

    /// Nodes over all trees.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Heap bytes held by the forest.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.starts.capacity() * std::mem::size_of::<u32>()
    }

    /// The calibrated score `s = 2^(-E[h(x)] / c(n))`: near 1 for points isolated quickly,
    /// about 0.5 or below for inliers. An unfitted forest scores 0.
    pub fn score(&self, point: &[f64; FEATURES]) -> f64 {
        if !self.is_fitted() {
            return 0.0;
        }
        let x = [
            (point[0] - self.centre[0]) as f32,
            (point[1] - self.centre[1]) as f32,
        ];
        let mut total = 0.0f32;
        // Four trees at a time: their walks are independent chains of loads, so the CPU
        // overlaps them instead of waiting for one node after another.
        let mut groups = self.starts.chunks_exact(LANES);
        for group in &mut groups {
            let base: [usize; LANES] = std::array::from_fn(|lane| group[lane] as usize);
            let mut at = base;
            loop {
                let mut walking = false;
                for lane in 0..LANES {
                    let node = self.nodes[at[lane]];
                    if node.feature != LEAF {
                        walking = true;
                        let right = x[usize::from(node.feature & 1)] >= node.value;
                        at[lane] = base[lane] + usize::from(node.left) + usize::from(right);
                    }
                }
                if !walking {
                    break;
                }
            }
            for position in at {
                total += self.nodes[position].value;
            }
        }
        for &start in groups.remainder() {
            let tree = &self.nodes[start as usize..];
            let mut node = tree[0];
            while node.feature != LEAF {
                let right = x[usize::from(node.feature & 1)] >= node.value;
                node = tree[usize::from(node.left) + usize::from(right)];
            }
            total += node.value;
        }
        let mean = f64::from(total) / self.starts.len() as f64;
        (-mean / self.normaliser).exp2()
    }
}

/// Why a point was or was not judged anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Too little history to judge: never an alarm.
    ColdStart,
    /// Within the normal range.
    Normal,
    /// The point is anomalous and starts a new episode: this is the alarm.
    Anomalous,
    /// The point is anomalous but belongs to an episode already reported (an anomalous
    /// point less than `refractory` points ago): its score still counts, no new alarm.
    Ongoing,
}

/// Which detector carried an anomalous verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// No detector fired.
    None,
    /// The robust z-score alone was far beyond twice its threshold.
    RobustZ,
    /// The robust z-score and the isolation forest both passed their thresholds.
    Both,
}

/// The scores of one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    /// Robust z-score `0.6745 (x − median) / MAD` (0 during cold start).
    pub z: f64,
    /// Isolation forest score in `[0, 1]` (0 before the first fit).
    pub forest: f64,
    /// Combined score in `[0, 1]`; 0.5 is the decision boundary.
    pub combined: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Which detector decided.
    pub detector: Detector,
}

/// Maps a non-negative statistic to `[0, 1)` so that `threshold` maps to 0.5.
fn squash(value: f64, threshold: f64) -> f64 {
    let value = value.max(0.0);
    value / (value + threshold)
}

/// Maps a forest score in `[0, 1]` to `[0, 1]` so that `threshold` maps to 0.5.
fn squash_forest(score: f64, threshold: f64) -> f64 {
    if score <= threshold {
        0.5 * score / threshold
    } else {
        0.5 + 0.5 * (score - threshold) / (1.0 - threshold)
    }
}

/// The combination rule. Each detector's statistic is mapped to `[0, 1]` with 0.5 at its
/// threshold; the combined score is their mean. A point is anomalous when the combined score
/// reaches 0.5 *and* the robust z passes its threshold (the forest alone is too eager on the
/// tails of skewed series), or when |z| exceeds twice its threshold whatever the forest says.
pub fn combine(z: f64, forest: f64, config: &DetectorConfig) -> (f64, Verdict, Detector) {
    let z_part = squash(z.abs(), config.z_threshold);
    let forest_part = squash_forest(forest, config.forest_threshold);
    let combined = 0.5 * (z_part + forest_part);
    if z.abs() >= 2.0 * config.z_threshold {
        (combined.max(z_part), Verdict::Anomalous, Detector::RobustZ)
    } else if z_part >= 0.5 && combined >= 0.5 {
        (combined, Verdict::Anomalous, Detector::Both)
    } else {
        (combined, Verdict::Normal, Detector::None)
    }
}

/// Upper bound of |z| reported, so a zero MAD cannot produce infinities.
pub const Z_CAP: f64 = 1.0e6;

thread_local! {
    /// Scratch space for median/MAD selection, shared by all series of a thread so a series
    /// does not carry its own copy.
    static SCRATCH: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// The state of one series: a ring of recent values, the current median/MAD and the fitted
/// forest.
///
/// Memory: `max(z_window, reference_size)` values (8 bytes each, allocated as the series
/// grows) plus the forest's nodes (8 bytes each, at most `trees × 2^(depth+1)` with depth
/// `⌈log₂ tree_sample⌉`) plus about 150 bytes of fixed fields. See [`Self::heap_bytes`].
#[derive(Debug, Clone)]
pub struct SeriesDetector {
    /// Ring of the last values; `next` is the slot the next value goes to once full.
    values: Vec<f64>,
    next: usize,
    median: f64,
    mad: f64,
    fit_median: f64,
    fit_mad: f64,
    fit_ts: u64,
    previous: Option<f64>,
    /// Consecutive anomalous points on the same side of the median (sign in `run_sign`).
    run: usize,
    run_sign: bool,
    /// Points since the last anomalous (or ongoing) point; `None` before the first.
    since_anomalous: Option<usize>,
    seen: u64,
    since_recompute: usize,
    since_fit: usize,
    refits: u64,
    seed: u64,
    forest: IsolationForest,
}

fn capacity(config: &DetectorConfig) -> usize {
    config.z_window.max(config.reference_size).max(2)
}

impl SeriesDetector {
    /// A fresh detector; `key_hash` makes the forest's seed depend on the series only.
    /// Allocates nothing until points arrive.
    pub fn new(config: &DetectorConfig, key_hash: u64) -> Self {
        Self {
            values: Vec::new(),
            next: 0,
            median: 0.0,
            mad: 0.0,
            fit_median: 0.0,
            fit_mad: 0.0,
            fit_ts: 0,
            previous: None,
            run: 0,
            run_sign: false,
            since_anomalous: None,
            seen: 0,
            since_recompute: 0,
            since_fit: 0,
            refits: 0,
            seed: config.seed ^ key_hash,
            forest: IsolationForest::default(),
        }
    }

    /// How many times the forest has been (re)fitted.
    pub fn refits(&self) -> u64 {
        self.refits
    }

    /// Points seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Heap bytes held by this series (ring plus forest), not counting the struct itself.
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<f64>() + self.forest.heap_bytes()
    }

    /// The `back`-th newest value (0 = newest); `back` must be below `values.len()`.
    fn newest(&self, back: usize) -> f64 {
        let len = self.values.len();
        self.values[(self.next + len - 1 - back) % len]
    }

    /// Reference points (value, change from the previous value) of the newest
    /// `reference_size` values that have a predecessor in the ring, oldest first.
    fn reference(&self, config: &DetectorConfig) -> Array2<f64> {
        let points = self
            .values
            .len()
            .saturating_sub(1)
            .min(config.reference_size);
        let mut out = Array2::zeros((points, FEATURES));
        for (row, back) in (0..points).rev().enumerate() {
            let value = self.newest(back);
            out[[row, 0]] = value;
            out[[row, 1]] = value - self.newest(back + 1);
        }
        out
    }

    fn recompute_median(&mut self, config: &DetectorConfig) {
        let n = self.values.len().min(config.z_window);
        if n == 0 {
            return;
        }
        let (median, mad) = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            scratch.extend((0..n).map(|back| self.newest(back)));
            let mid = n / 2;
            let (_, median, _) = scratch.select_nth_unstable_by(mid, f64::total_cmp);
            let median = *median;
            for value in scratch.iter_mut() {
                *value = (*value - median).abs();
            }
            let (_, mad, _) = scratch.select_nth_unstable_by(mid, f64::total_cmp);
            let mut mad = *mad;
            if mad <= 0.0 {
                // More than half the window is one value: fall back to the mean absolute
                // deviation (scaled to match the MAD of a normal distribution).
                mad = scratch.iter().sum::<f64>() / n as f64 * 0.797_884_560_8;
            }
            (median, mad)
        });
        self.median = median;
        self.mad = mad;
    }

    fn refit(&mut self, ts: u64, config: &DetectorConfig) {
        self.refits += 1;
        let seed = self
            .seed
            .wrapping_add(self.refits.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let reference = self.reference(config);
        self.forest =
            IsolationForest::fit(reference.view(), config.trees, config.tree_sample, seed);
        self.fit_median = self.median;
        self.fit_mad = self.mad;
        self.fit_ts = ts;
        self.since_fit = 0;
    }

    /// Keeps only the last `keep` values: the series moved to a new level, so the old
    /// points would make every new point look anomalous for half a window.
    fn restart_at_new_level(&mut self, keep: usize, ts: u64, config: &DetectorConfig) {
        let keep = keep.min(self.values.len());
        let kept: Vec<f64> = (0..keep).rev().map(|back| self.newest(back)).collect();
        self.values.clear();
        self.values.extend_from_slice(&kept);
        self.next = 0;
        self.since_recompute = 0;
        self.recompute_median(config);
        // A forest of the few new-level points until the ring refills to `min_history`,
        // when it is refitted again.
        self.refit(ts, config);
        self.run = 0;
    }

    fn push(&mut self, value: f64, config: &DetectorConfig) {
        let cap = capacity(config);
        let len = self.values.len();
        if len < cap {
            if len == self.values.capacity() {
                // Grow by doubling, but never past the ring's size.
                self.values.reserve_exact(len.max(8).min(cap - len));
            }
            self.values.push(value);
            self.next = self.values.len() % cap;
        } else {
            self.values[self.next] = value;
            self.next = (self.next + 1) % cap;
        }
    }

    /// Scores `value` (event time `ts`, ms) against the history so far, then adds it to the
    /// history and refits the forest when its schedule or a shift says so.
    pub fn observe(&mut self, value: f64, ts: u64, config: &DetectorConfig) -> Scores {
        let delta = self.previous.map_or(0.0, |previous| value - previous);
        let point = [value, delta];
        let warm = self.seen as usize >= config.min_history;
        let scores = if warm {
            let z = if self.mad > 0.0 {
                (0.6745 * (value - self.median) / self.mad).clamp(-Z_CAP, Z_CAP)
            } else if value == self.median {
                0.0
            } else {
                Z_CAP.copysign(value - self.median)
            };
            let forest = self.forest.score(&point);
            let (combined, mut verdict, detector) = combine(z, forest, config);
            if verdict == Verdict::Anomalous {
                if self
                    .since_anomalous
                    .is_some_and(|since| since < config.refractory)
                {
                    verdict = Verdict::Ongoing;
                }
                self.since_anomalous = Some(0);
            } else if let Some(since) = self.since_anomalous.as_mut() {
                *since = since.saturating_add(1);
            }
            Scores {
                z,
                forest,
                combined,
                verdict,
                detector,
            }
        } else {
            Scores {
                z: 0.0,
                forest: 0.0,
                combined: 0.0,
                verdict: Verdict::ColdStart,
                detector: Detector::None,
            }
        };
        if matches!(scores.verdict, Verdict::Anomalous | Verdict::Ongoing) {
            let sign = scores.z > 0.0;
            if self.run > 0 && sign == self.run_sign {
                self.run += 1;
            } else {
                self.run = 1;
                self.run_sign = sign;
            }
        } else {
            self.run = 0;
        }
        self.push(value, config);
        self.previous = Some(value);
        self.seen += 1;
        self.since_recompute += 1;
        self.since_fit += 1;
        let filling = (self.seen as usize) <= config.min_history;
        if self.since_recompute >= config.z_recompute_every || filling {
            self.since_recompute = 0;
            self.recompute_median(config);
            let shifted = self.forest.is_fitted()
                && self.fit_mad > 0.0
                && (self.median - self.fit_median).abs() > config.shift_mads * self.fit_mad;
            if shifted {
                self.refit(ts, config);
            }
        }
        // Not in the middle of an anomalous episode: a forest refitted on the episode's
        // points would learn the anomaly as normal.
        let in_episode = self
            .since_anomalous
            .is_some_and(|since| since < config.refractory);
        let due_by_time = self.forest.is_fitted()
            && !in_episode
            && self.since_fit >= config.z_recompute_every
            && ts.saturating_sub(self.fit_ts) >= duration_ms(config.refit_interval).max(1);
        if config.shift_run > 0 && self.run >= config.shift_run {
            self.restart_at_new_level(config.shift_run, ts, config);
        } else if (self.values.len() == config.min_history && self.since_fit > 0)
            || (self.forest.is_fitted() && self.since_fit >= config.refit_every)
            || due_by_time
        {
            self.refit(ts, config);
        }
        scores
    }
}
