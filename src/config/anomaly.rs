//! The `[anomaly]` section: numeric anomaly scoring and error families.
//!
//! Parsed with the rest of the configuration; [`AnomalySection::problems`] lists every value
//! the types cannot rule out, and [`AnomalySection::scorer`] / [`AnomalySection::novelty`]
//! turn it into the dataflow's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use megamind_dataflows::operators::score_anomalies::detectors::MAX_TREE_SAMPLE;
use megamind_dataflows::operators::score_anomalies::DetectorConfig;
use megamind_dataflows::operators::{AnomalyConfig, NoveltyConfig};

/// Numeric anomaly scoring and error families.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySection {
    /// Whether anomaly scoring and novel-error detection run.
    pub enabled: bool,
    /// Points in the median/MAD window of the robust z-score.
    pub z_window: usize,
    /// Median and MAD are recomputed every this many points.
    pub z_recompute_every: usize,
    /// |z| threshold of the robust z-score.
    pub z_threshold: f64,
    /// Points per series before any verdict (cold start).
    pub min_history: usize,
    /// Points in the isolation forest's reference sample.
    pub reference_size: usize,
    /// Trees in the isolation forest.
    pub trees: usize,
    /// Points per tree.
    pub tree_sample: usize,
    /// Forest score threshold (0–1).
    pub forest_threshold: f64,
    /// The forest is refitted every this many points of the series.
    pub refit_every: usize,
    /// … or this much event time after the last fit (once `z_recompute_every` new points
    /// have arrived).
    #[serde(with = "humantime_serde")]
    pub refit_interval: Duration,
    /// … or when the median moves this many fit-time MADs.
    pub shift_mads: f64,
    /// This many consecutive anomalous points on one side are a level shift: the history
    /// restarts from them (0: never).
    pub shift_run: usize,
    /// An anomalous point within this many points of the previous one continues its
    /// episode (no new alarm; its score still counts).
    pub refractory: usize,
    /// Seed of the forests (mixed with each series' key).
    pub seed: u64,
    /// A series idle this long in event time is forgotten.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Series tracked per worker.
    pub max_series: usize,
    /// Names of series that are not scored (they still get windows). The default skips
    /// the two samples every prediction yields (`prediction.latency_ms`,
    /// `prediction.confidence`), which the ML tracker watches per model version.
    pub skip_series: Vec<String>,
    /// Messages in the error-family sample.
    pub message_sample: usize,
    /// DBSCAN eps (cosine distance, 0–1).
    pub dbscan_eps: f64,
    /// DBSCAN min_points.
    pub dbscan_min_points: usize,
    /// Messages between reclusterings.
    pub message_refit_every: usize,
    /// Error families kept.
    pub max_families: usize,
    /// Bytes of a message that are read (the rest is ignored and the message counted).
    pub max_message_bytes: usize,
    /// Tokens of a message that are used.
    pub max_message_tokens: usize,
    /// Hash buckets of the TF-IDF vectors.
    pub message_dimensions: usize,
}

impl AnomalySection {
    /// Every problem with the values, prefixed by the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(format!("anomaly.{problem}"));
            }
        };
        check(
            (8..=100_000).contains(&self.z_window),
            "z_window must be between 8 and 100000",
        );
        check(
            self.z_recompute_every >= 1 && self.z_recompute_every <= self.z_window,
            "z_recompute_every must be between 1 and z_window",
        );
        check(
            self.z_threshold.is_finite() && self.z_threshold > 0.0,
            "z_threshold must be a positive number",
        );
        check(
            self.min_history >= 8 && self.min_history <= self.reference_size,
            "min_history must be at least 8 and at most reference_size",
        );
        check(
            (16..=100_000).contains(&self.reference_size),
            "reference_size must be between 16 and 100000",
        );
        check(
            !self.refit_interval.is_zero(),
            "refit_interval must be positive",
        );
        check(
            (1..=1_000).contains(&self.trees),
            "trees must be between 1 and 1000",
        );
        check(
            self.tree_sample >= 2
                && self.tree_sample <= self.reference_size
                && self.tree_sample <= MAX_TREE_SAMPLE,
            "tree_sample must be between 2 and reference_size (and at most 16384)",
        );
        check(
            self.forest_threshold > 0.0 && self.forest_threshold < 1.0,
            "forest_threshold must be strictly between 0 and 1",
        );
        check(self.refit_every >= 1, "refit_every must be at least 1");
        check(
            self.shift_mads.is_finite() && self.shift_mads > 0.0,
            "shift_mads must be a positive number",
        );
        check(
            self.shift_run <= self.min_history,
            "shift_run must be at most min_history",
        );
        check(self.max_series >= 1, "max_series must be at least 1");
        check(
            self.skip_series
                .iter()
                .all(|name| !name.is_empty() && name.len() <= 256),
            "skip_series names must be 1 to 256 bytes long",
        );
        check(
            (16..=10_000).contains(&self.message_sample),
            "message_sample must be between 16 and 10000 (reclustering is quadratic in it)",
        );
        check(
            self.dbscan_eps > 0.0 && self.dbscan_eps < 1.0,
            "dbscan_eps must be strictly between 0 and 1",
        );
        check(
            self.dbscan_min_points >= 2 && self.dbscan_min_points <= self.message_sample,
            "dbscan_min_points must be between 2 and message_sample",
        );
        check(
            self.message_refit_every >= 1,
            "message_refit_every must be at least 1",
        );
        check(self.max_families >= 1, "max_families must be at least 1");
        check(
            (16..=65_536).contains(&self.max_message_bytes),
            "max_message_bytes must be between 16 and 65536",
        );
        check(
            (1..=1_024).contains(&self.max_message_tokens),
            "max_message_tokens must be between 1 and 1024",
        );
        check(
            (16..=4_096).contains(&self.message_dimensions),
            "message_dimensions must be between 16 and 4096",
        );
        problems
    }

    /// The detectors' settings.
    pub fn detectors(&self) -> DetectorConfig {
        DetectorConfig {
            z_window: self.z_window,
            z_recompute_every: self.z_recompute_every,
            z_threshold: self.z_threshold,
            min_history: self.min_history,
            reference_size: self.reference_size,
            trees: self.trees,
            tree_sample: self.tree_sample,
            forest_threshold: self.forest_threshold,
            refit_every: self.refit_every,
            refit_interval: self.refit_interval,
            shift_mads: self.shift_mads,
            shift_run: self.shift_run,
            refractory: self.refractory,
            seed: self.seed,
        }
    }

    /// The numeric scorer's settings.
    pub fn scorer(&self) -> AnomalyConfig {
        AnomalyConfig {
            enabled: self.enabled,
            detectors: self.detectors(),
            idle_timeout: self.idle_timeout,
            max_series: self.max_series,
            skip_series: self
                .skip_series
                .iter()
                .map(|name| name.as_str().into())
                .collect(),
        }
    }

    /// The error-family detector's settings.
    pub fn novelty(&self) -> NoveltyConfig {
        NoveltyConfig {
            sample_size: self.message_sample,
            eps: self.dbscan_eps,
            min_points: self.dbscan_min_points,
            refit_every: self.message_refit_every,
            min_sample: self.dbscan_min_points.max(16).min(self.message_sample),
            max_families: self.max_families,
            max_message_bytes: self.max_message_bytes,
            max_tokens: self.max_message_tokens,
            dimensions: self.message_dimensions,
            ..NoveltyConfig::default()
        }
    }
}
