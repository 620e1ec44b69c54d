//! `score_anomalies`: per-series numeric anomaly scores (robust z-score + isolation forest).
//!
//! The pure core is [`detectors::SeriesDetector`] (one series) and [`AnomalyScorer`] (many
//! series with idle eviction); the timely shell exchanges samples by series key, orders each
//! timestamp's batch deterministically and feeds the core once the frontier passes it.
//!
//! Nothing here fails: samples are finite by construction. Cold start is an explicit verdict.
//!
//! ```text
//!   samples ─► ScoreAnomalies ─┬─► Update::Anomaly (anomalous points only)
//!                              └─► Sample "anomaly_score" (every scored point, fed to windows)
//! ```

pub mod detectors;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

use rustc_hash::FxBuildHasher;
use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use crate::model::{Id, Labels, Sample, SeriesKey, Update};
use crate::operators::route_events::series_names;
use crate::time::duration_ms;
use crate::Time;
pub use detectors::{Detector, DetectorConfig, Scores, SeriesDetector, Verdict};

/// Name of the derived series carrying each point's combined score.
pub const ANOMALY_SCORE: &str = "anomaly_score";
/// Label on an `anomaly_score` sample naming the scored metric.
pub const METRIC_LABEL: &str = "metric";

/// Settings of the numeric scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    /// Whether the scorer runs at all.
    pub enabled: bool,
    /// Detector parameters.
    pub detectors: DetectorConfig,
    /// A series without samples for this long (event time) is forgotten.
    pub idle_timeout: Duration,
    /// Series tracked per worker; a new series beyond this is not scored (and counted).
    pub max_series: usize,
    /// Names of series that are not scored (they still get windows). By default the
    /// per-prediction series `prediction.latency_ms` and `prediction.confidence`: the ML
    /// tracker already watches them per model version (confidence drift by PSI and KS,
    /// latency percentiles and thresholds), and scoring two samples per prediction would
    /// cost more than the rest of the ML path together.
    pub skip_series: Vec<Id>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            detectors: DetectorConfig::default(),
            idle_timeout: Duration::from_secs(30 * 60),
            max_series: 10_000,
            skip_series: default_skip_series(),
        }
    }
}

/// The series not scored by default: the two samples every prediction yields.
pub fn default_skip_series() -> Vec<Id> {
    vec![
        Id::from(series_names::PREDICTION_LATENCY),
        Id::from(series_names::PREDICTION_CONFIDENCE),
    ]
}

/// One scored point that was judged anomalous.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyReport {
    /// The series.
    pub series: SeriesKey,
    /// Event time, ms.
    pub ts: u64,
    /// The value.
    pub value: f64,
    /// The scores and verdict.
    #[serde(flatten)]
    pub scores: Scores,
    /// Human-readable reason: which detector, how far.
    pub reason: String,
}

/// The reason text of an anomalous point.
pub fn reason(scores: &Scores, config: &DetectorConfig) -> String {
    match scores.detector {
        Detector::RobustZ => format!(
            "robust z {:.1} beyond {:.1} (twice the threshold); forest {:.2}",
            scores.z,
            2.0 * config.z_threshold,
            scores.forest
        ),
        Detector::Both => format!(
            "robust z {:.1} beyond {:.1} and forest {:.2} (threshold {:.2})",
            scores.z, config.z_threshold, scores.forest, config.forest_threshold
        ),
        Detector::None => String::from("normal"),
    }
}

/// Counts of the scorer. Emitted as per-batch deltas in `Update::AnomalyCounters` (one per
/// worker and batch: sum them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AnomalyCounters {
    /// Points scored (not cold start).
    pub scored: u64,
    /// Points in cold start.
    pub cold_start: u64,
    /// Points judged anomalous.
    pub anomalous: u64,
    /// Forest refits.
    pub refits: u64,
    /// Samples dropped because `max_series` was reached.
    pub series_dropped: u64,
}

struct Tracked {
    detector: SeriesDetector,
    last_ts: u64,
}

/// Many series' detectors, with eviction of idle series and a cap on their number.
pub struct AnomalyScorer {
    config: AnomalyConfig,
    series: HashMap<SeriesKey, Tracked, FxBuildHasher>,
    counters: AnomalyCounters,
}

impl AnomalyScorer {
    /// An empty scorer.
    pub fn new(config: AnomalyConfig) -> Self {
        Self {
            config,
            series: HashMap::default(),
            counters: AnomalyCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> AnomalyCounters {
        self.counters
    }

    /// Counters since the last call, resetting them.
    pub fn take_counters(&mut self) -> AnomalyCounters {
        std::mem::take(&mut self.counters)
    }

    /// Series currently tracked.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Scores one sample; `None` when the series could not be tracked (cap reached).
    pub fn score(&mut self, sample: &Sample) -> Option<Scores> {
        let config = &self.config.detectors;
        // One hash lookup for a known series (the common case).
        if let Some(tracked) = self.series.get_mut(&sample.key) {
            return Some(Self::observe(tracked, sample, config, &mut self.counters));
        }
        if self.series.len() >= self.config.max_series {
            self.counters.series_dropped += 1;
            return None;
        }
        let tracked = self
            .series
            .entry(sample.key.clone())
            .or_insert_with(|| Tracked {
                detector: SeriesDetector::new(config, sample.key.route()),
                last_ts: sample.ts,
            });
        Some(Self::observe(tracked, sample, config, &mut self.counters))
    }

    fn observe(
        tracked: &mut Tracked,
        sample: &Sample,
        config: &DetectorConfig,
        counters: &mut AnomalyCounters,
    ) -> Scores {
        let refits = tracked.detector.refits();
        let scores = tracked.detector.observe(sample.value, sample.ts, config);
        tracked.last_ts = tracked.last_ts.max(sample.ts);
        counters.refits += tracked.detector.refits() - refits;
        match scores.verdict {
            Verdict::ColdStart => counters.cold_start += 1,
            Verdict::Normal | Verdict::Ongoing => counters.scored += 1,
            Verdict::Anomalous => {
                counters.scored += 1;
                counters.anomalous += 1;
            }
        }
        scores
    }

    /// Heap bytes of all series' detector state (rings and forests, not the keys or the
    /// map), for the memory bound.
    pub fn detector_heap_bytes(&self) -> usize {
        self.series
            .values()
            .map(|tracked| tracked.detector.heap_bytes())
            .sum()
    }

    /// Forgets series idle for longer than the idle timeout at event time `now`.
    pub fn evict(&mut self, now: u64) {
        let timeout = duration_ms(self.config.idle_timeout);
        self.series
            .retain(|_, tracked| tracked.last_ts.saturating_add(timeout) >= now);
    }
}

/// The `anomaly_score` sample derived from a scored sample: original name as the `metric`
/// label, the original labels kept (and the session, if any).
pub fn score_sample(sample: &Sample, combined: f64) -> Sample {
    let mut labels: Labels = sample.key.labels.clone();
    labels.push((Id::from(METRIC_LABEL), sample.key.name.clone()));
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    Sample {
        key: SeriesKey {
            name: Id::from(ANOMALY_SCORE),
            session_id: sample.key.session_id.clone(),
            labels,
        },
        ts: sample.ts,
        value: combined,
    }
}

/// What the scorer emits: reports for views and derived samples for the window operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Scored {
    /// An update (anomaly report or counters).
    Update(Box<Update>),
    /// A derived `anomaly_score` sample.
    Sample(Sample),
}

/// Numeric anomaly scoring.
pub trait ScoreAnomalies<'scope> {
    /// Scores every sample of every series.
    ///
    /// # Inputs and outputs
    /// `self`: samples. Returns [`Scored::Update`] with [`Update::Anomaly`] for each anomalous
    /// point and [`Update::AnomalyCounters`] after each batch, and [`Scored::Sample`] with an
    /// `anomaly_score` sample for every point past cold start.
    ///
    /// # Frontier behaviour
    /// Samples are held until the input frontier passes their timely time, then processed
    /// sorted by `(ts, key, value)`, so the result does not depend on the worker count or
    /// arrival order.
    ///
    /// # State
    /// One [`SeriesDetector`] per series, exchanged by [`SeriesKey::route`]; forgotten
    /// `idle_timeout` of event time after its last sample; at most `max_series` per worker.
    fn score_anomalies(self, name: &str, config: &AnomalyConfig)
        -> StreamVec<'scope, Time, Scored>;
}

impl<'scope> ScoreAnomalies<'scope> for StreamVec<'scope, Time, Sample> {
    fn score_anomalies(
        self,
        name: &str,
        config: &AnomalyConfig,
    ) -> StreamVec<'scope, Time, Scored> {
        let config = config.clone();
        let exchange = Exchange::new(|sample: &Sample| sample.key.route());
        self.unary_frontier(exchange, &format!("ScoreAnomalies({name})"), move |_, _| {
            let detectors = config.detectors.clone();
            let skip_series = config.skip_series.clone();
            let mut scorer = AnomalyScorer::new(config);
            let mut pending: BTreeMap<Time, (Capability<Time>, Vec<Sample>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    if !skip_series.is_empty() {
                        data.retain(|sample| !skip_series.contains(&sample.key.name));
                    }
                    let entry = pending
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, output.output_index()), Vec::new()));
                    entry.1.append(data);
                });
                let mut newest = None;
                while let Some(entry) = pending.first_entry() {
                    let time = *entry.key();
                    if frontier.less_equal(&time) {
                        break;
                    }
                    let (cap, mut samples) = entry.remove();
                    samples.sort_by(|a, b| {
                        a.ts.cmp(&b.ts)
                            .then_with(|| a.key.cmp(&b.key))
                            .then_with(|| a.value.total_cmp(&b.value))
                    });
                    let mut session = output.session(&cap);
                    for sample in &samples {
                        let Some(scores) = scorer.score(sample) else {
                            continue;
                        };
                        newest = Some(newest.unwrap_or(0).max(sample.ts));
                        if scores.verdict == Verdict::ColdStart {
                            continue;
                        }
                        session.give(Scored::Sample(score_sample(sample, scores.combined)));
                        if scores.verdict == Verdict::Anomalous {
                            let report = AnomalyReport {
                                series: sample.key.clone(),
                                ts: sample.ts,
                                value: sample.value,
                                reason: reason(&scores, &detectors),
                                scores,
                            };
                            let update = Update::Anomaly(Box::new(report));
                            session.give(Scored::Update(Box::new(update)));
                        }
                    }
                    let counters = scorer.take_counters();
                    if counters != AnomalyCounters::default() {
                        session.give(Scored::Update(Box::new(Update::AnomalyCounters(counters))));
                    }
                }
                if let Some(now) = newest {
                    scorer.evict(now);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
