//! Pure numeric anomaly detectors for one series: a robust z-score, an isolation forest and
//! the rule that combines them. No timely, no clock, no I/O; time comes in with each point.
//!
//! Errors do not leave this module: non-finite values are rejected by the caller (samples are
//! finite by construction) and every other input is valid.

use serde::Serialize;

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
            reference_size: 512,
            trees: 64,
            tree_sample: 128,
            forest_threshold: 0.62,
            refit_every: 1024,
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

/// An isolation forest over [`FEATURES`]-dimensional points, stored as flat arrays.
///
/// Every tree lives in the same node arrays; a node is either internal (`feature < FEATURES`,
/// split at `threshold`, children at `left` and `left + 1`) or a leaf holding the number of
/// training points that reached it in `size`. Scoring walks one path per tree and allocates
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct IsolationForest {
    feature: Vec<u8>,
    threshold: Vec<f64>,
    left: Vec<u32>,
    size: Vec<u32>,
    roots: Vec<u32>,
    normaliser: f64,
}

const LEAF: u8 = u8::MAX;

impl IsolationForest {
    /// Fits `trees` trees, each on `tree_sample` points drawn without replacement from
    /// `points` (all of them if fewer). Depth is limited to `ceil(log2(tree_sample))`.
    pub fn fit(points: &[[f64; FEATURES]], trees: usize, tree_sample: usize, seed: u64) -> Self {
        let mut forest = Self::default();
        if points.is_empty() || trees == 0 {
            return forest;
        }
        let psi = tree_sample.clamp(2, points.len().max(2)).min(points.len());
        let depth_limit = (psi.max(2) as f64).log2().ceil() as usize;
        let mut rng = SplitMix64::new(seed);
        let mut indices: Vec<u32> = (0..points.len() as u32).collect();
        let mut work: Vec<[f64; FEATURES]> = Vec::with_capacity(psi);
        let nodes_per_tree = 2 * psi;
        forest.feature.reserve(trees * nodes_per_tree);
        forest.threshold.reserve(trees * nodes_per_tree);
        forest.left.reserve(trees * nodes_per_tree);
        forest.size.reserve(trees * nodes_per_tree);
        for _ in 0..trees {
            // Partial Fisher–Yates: the first `psi` indices become the tree's sample.
            for i in 0..psi {
                let j = i + rng.below(indices.len() - i);
                indices.swap(i, j);
            }
            work.clear();
            work.extend(indices[..psi].iter().map(|&i| points[i as usize]));
            let root = forest.push_leaf(0);
            forest.roots.push(root);
            forest.grow(root, &mut work[..], depth_limit, &mut rng);
        }
        forest.normaliser = average_path_length(psi);
        forest
    }

    fn push_leaf(&mut self, size: usize) -> u32 {
        let index = self.feature.len() as u32;
        self.feature.push(LEAF);
        self.threshold.push(0.0);
        self.left.push(0);
        self.size.push(size as u32);
        index
    }

    fn grow(
        &mut self,
        node: u32,
        points: &mut [[f64; FEATURES]],
        depth_left: usize,
        rng: &mut SplitMix64,
    ) {
        let node = node as usize;
        self.size[node] = points.len() as u32;
        if depth_left == 0 || points.len() <= 1 {
            return;
        }
        // Pick a feature with spread; a point set that is constant everywhere stays a leaf.
        let start = rng.below(FEATURES);
        let mut chosen = None;
        for offset in 0..FEATURES {
            let feature = (start + offset) % FEATURES;
            let (low, high) = points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |acc, p| {
                    (acc.0.min(p[feature]), acc.1.max(p[feature]))
                });
            if high > low {
                chosen = Some((feature, low, high));
                break;
            }
        }
        let Some((feature, low, high)) = chosen else {
            return;
        };
        let mut threshold = low + rng.next_f64() * (high - low);
        if threshold <= low {
            threshold = low + (high - low) * 0.5;
        }
        // Partition in place: `< threshold` goes left.
        let mut split = 0;
        for i in 0..points.len() {
            if points[i][feature] < threshold {
                points.swap(i, split);
                split += 1;
            }
        }
        let left = self.push_leaf(0);
        let right = self.push_leaf(0);
        debug_assert_eq!(right, left + 1);
        self.feature[node] = feature as u8;
        self.threshold[node] = threshold;
        self.left[node] = left;
        let (low_points, high_points) = points.split_at_mut(split);
        self.grow(left, low_points, depth_left - 1, rng);
        self.grow(right, high_points, depth_left - 1, rng);
    }

    /// Whether the forest has been fitted.
    pub fn is_fitted(&self) -> bool {
        !self.roots.is_empty() && self.normaliser > 0.0
    }

    /// Bytes held by the node arrays (for the memory bound).
    pub fn node_count(&self) -> usize {
        self.feature.len()
    }

    /// The calibrated score `s = 2^(-E[h(x)] / c(n))`: near 1 for points isolated quickly,
    /// about 0.5 or below for inliers. An unfitted forest scores 0.
    pub fn score(&self, point: &[f64; FEATURES]) -> f64 {
        if !self.is_fitted() {
            return 0.0;
        }
        let mut total = 0.0;
        for &root in &self.roots {
            let mut node = root as usize;
            let mut depth = 0.0;
            loop {
                let feature = self.feature[node];
                if feature == LEAF {
                    total += depth + average_path_length(self.size[node] as usize);
                    break;
                }
                let left = self.left[node] as usize;
                node = if point[feature as usize] < self.threshold[node] {
                    left
                } else {
                    left + 1
                };
                depth += 1.0;
            }
        }
        let mean = total / self.roots.len() as f64;
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

/// The state of one series: rings of recent values and reference points, the current
/// median/MAD and the fitted forest.
///
/// Memory is bounded by `z_window + reference_size` points plus the forest's
/// `trees × 2 × tree_sample` nodes.
#[derive(Debug, Clone)]
pub struct SeriesDetector {
    window: Vec<f64>,
    window_next: usize,
    reference: Vec<[f64; FEATURES]>,
    reference_next: usize,
    scratch: Vec<f64>,
    median: f64,
    mad: f64,
    fit_median: f64,
    fit_mad: f64,
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

impl SeriesDetector {
    /// A fresh detector; `key_hash` makes the forest's seed depend on the series only.
    pub fn new(config: &DetectorConfig, key_hash: u64) -> Self {
        Self {
            window: Vec::with_capacity(config.z_window),
            window_next: 0,
            reference: Vec::with_capacity(config.reference_size),
            reference_next: 0,
            scratch: Vec::with_capacity(config.z_window),
            median: 0.0,
            mad: 0.0,
            fit_median: 0.0,
            fit_mad: 0.0,
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

    fn recompute_median(&mut self) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.window);
        let n = self.scratch.len();
        let mid = n / 2;
        let (_, median, _) = self.scratch.select_nth_unstable_by(mid, f64::total_cmp);
        let median = *median;
        for value in self.scratch.iter_mut() {
            *value = (*value - median).abs();
        }
        let (_, mad, _) = self.scratch.select_nth_unstable_by(mid, f64::total_cmp);
        self.median = median;
        let mut mad = *mad;
        if mad <= 0.0 {
            // More than half the window is one value: fall back to the mean absolute
            // deviation (scaled to match the MAD of a normal distribution).
            mad = self.scratch.iter().sum::<f64>() / n as f64 * 0.797_884_560_8;
        }
        self.mad = mad;
    }

    fn refit(&mut self, config: &DetectorConfig) {
        self.refits += 1;
        let seed = self
            .seed
            .wrapping_add(self.refits.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.forest = IsolationForest::fit(&self.reference, config.trees, config.tree_sample, seed);
        self.fit_median = self.median;
        self.fit_mad = self.mad;
        self.since_fit = 0;
    }

    /// Keeps only the last `keep` points of both rings: the series moved to a new level, so
    /// the old points would make every new point look anomalous for half a window.
    fn restart_at_new_level(&mut self, keep: usize, config: &DetectorConfig) {
        let last = |ring: &[f64], next: usize| -> Vec<f64> {
            let len = ring.len();
            let mut out: Vec<f64> = (1..=keep.min(len))
                .map(|back| ring[(next + len - back) % len])
                .collect();
            out.reverse();
            out
        };
        let values = last(&self.window, self.window_next);
        let len = self.reference.len();
        let mut points: Vec<[f64; FEATURES]> = (1..=keep.min(len))
            .map(|back| self.reference[(self.reference_next + len - back) % len])
            .collect();
        points.reverse();
        self.window = values;
        self.window
            .reserve(config.z_window.saturating_sub(self.window.len()));
        self.window_next = self.window.len() % config.z_window.max(1);
        self.reference = points;
        self.reference
            .reserve(config.reference_size.saturating_sub(self.reference.len()));
        self.reference_next = self.reference.len() % config.reference_size.max(1);
        self.since_recompute = 0;
        self.recompute_median();
        // A forest of the few new-level points until the reference refills to
        // `min_history`, when it is refitted again.
        self.refit(config);
        self.run = 0;
    }

    /// Scores `value` against the history so far, then adds it to the history.
    pub fn observe(&mut self, value: f64, config: &DetectorConfig) -> Scores {
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
        // Update history.
        if self.window.len() < config.z_window {
            self.window.push(value);
        } else {
            self.window[self.window_next] = value;
        }
        self.window_next = (self.window_next + 1) % config.z_window.max(1);
        if self.reference.len() < config.reference_size {
            self.reference.push(point);
        } else {
            self.reference[self.reference_next] = point;
        }
        self.reference_next = (self.reference_next + 1) % config.reference_size.max(1);
        self.previous = Some(value);
        self.seen += 1;
        self.since_recompute += 1;
        self.since_fit += 1;
        let filling = (self.seen as usize) <= config.min_history;
        if self.since_recompute >= config.z_recompute_every || filling {
            self.since_recompute = 0;
            self.recompute_median();
            let shifted = self.forest.is_fitted()
                && self.fit_mad > 0.0
                && (self.median - self.fit_median).abs() > config.shift_mads * self.fit_mad;
            if shifted {
                self.refit(config);
            }
        }
        if config.shift_run > 0 && self.run >= config.shift_run {
            self.restart_at_new_level(config.shift_run, config);
        } else if (self.reference.len() == config.min_history && self.since_fit > 0)
            || (self.forest.is_fitted() && self.since_fit >= config.refit_every)
        {
            self.refit(config);
        }
        scores
    }
}
