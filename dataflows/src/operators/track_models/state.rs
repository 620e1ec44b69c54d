//! The pure per-model-version state: cumulative counts applied as inputs arrive (their
//! order does not matter), and the order-dependent analyses (reference and current
//! windows, drift tests, ADWIN) fed with matched pairs in event-time order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hdrhistogram::Histogram;

use super::stats::{self, Adwin, Calibration};
use super::TrackModelsConfig;
use crate::model::{
    BaselinePin, ConfidenceSummary, DriftReport, DriftTest, Id, LatencySummary, MatchedPair,
    ModelKey, ModelRegistration, ModelSnapshot, Performance, PinBaseline, PinRejection,
    PinnedReference, RetrainingTrigger, VersionCounts,
};

/// ADWIN change points remembered per version (the latest; the count covers all).
const MAX_CHANGE_POINTS: usize = 1000;

/// Latency is recorded in microseconds.
const LATENCY_SCALE: f64 = 1000.0;

/// An empty latency histogram (µs, 3 significant digits, up to one hour); the join keeps
/// one too, only to class latencies as the tracker's histograms do.
pub(super) fn latency_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

/// `latency_ms` in µs, clamped to what `histogram` tracks (here, not inside the
/// histogram, so the class maps mirror it), as the lowest value of its equivalence class:
/// recording that value counts the latency in the same class, with the same minimum and
/// maximum, as recording the latency itself.
pub(super) fn latency_class(histogram: &Histogram<u64>, latency_ms: f64) -> u64 {
    let micros = ((latency_ms * LATENCY_SCALE).round().max(1.0) as u64).min(histogram.high());
    histogram.lowest_equivalent(micros)
}

/// The bin of a confidence among `bins` (at least one) equal-width bins over `[0, 1]`,
/// the last one including 1.
pub(super) fn bin_of(confidence: f64, bins: usize) -> usize {
    ((confidence * bins as f64) as usize).min(bins.max(1) - 1)
}

/// The first 16 bytes of `text`, big-endian and zero-padded. A smaller prefix means a
/// smaller text; texts with equal prefixes compare by length when both are at most 16
/// bytes long (the shorter is then a prefix of the other), else by their bytes.
pub(super) fn prefix16(text: &str) -> u128 {
    let bytes = text.as_bytes();
    let length = bytes.len().min(16);
    let mut prefix = [0u8; 16];
    prefix[..length].copy_from_slice(&bytes[..length]);
    u128::from_be_bytes(prefix)
}

/// Compares two labels given their [`prefix16`]s: the same order as `a.cmp(b)`.
fn compare_labels(a_prefix: u128, a: &Id, b_prefix: u128, b: &Id) -> std::cmp::Ordering {
    a_prefix.cmp(&b_prefix).then_with(|| {
        if a.len() <= 16 && b.len() <= 16 {
            a.len().cmp(&b.len())
        } else {
            a.cmp(b)
        }
    })
}

/// One non-zero cell of a [`Confusion`] matrix, with the prefixes its search compares.
#[derive(Debug, Clone)]
struct Cell {
    actual_prefix: u128,
    predicted_prefix: u128,
    actual: Id,
    predicted: Id,
    count: u64,
}

/// A sparse confusion matrix.
#[derive(Debug, Clone, Default)]
pub struct Confusion {
    /// The non-zero cells, sorted by `(actual, predicted)`. There are at most classes² of
    /// them, so a sorted vector searched with borrowed ids beats a map whose every lookup
    /// builds a key of two cloned ids (this runs up to three times per matched pair); the
    /// search compares integer prefixes and looks at the ids' bytes only for labels longer
    /// than 16 bytes that share a prefix.
    cells: Vec<Cell>,
}

impl Confusion {
    fn add(&mut self, actual: &Id, predicted: &Id, count: i64) {
        let (actual_prefix, predicted_prefix) = (prefix16(actual), prefix16(predicted));
        match self.cells.binary_search_by(|cell| {
            compare_labels(cell.actual_prefix, &cell.actual, actual_prefix, actual).then_with(
                || {
                    compare_labels(
                        cell.predicted_prefix,
                        &cell.predicted,
                        predicted_prefix,
                        predicted,
                    )
                },
            )
        }) {
            Ok(index) => {
                let cell = &mut self.cells[index].count;
                *cell = cell.saturating_add_signed(count);
                if *cell == 0 {
                    self.cells.remove(index);
                }
            }
            Err(index) => {
                let cell = 0u64.saturating_add_signed(count);
                if cell != 0 {
                    self.cells.insert(
                        index,
                        Cell {
                            actual_prefix,
                            predicted_prefix,
                            actual: actual.clone(),
                            predicted: predicted.clone(),
                            count: cell,
                        },
                    );
                }
            }
        }
    }

    /// Performance over the matrix.
    pub fn performance(&self) -> Performance {
        let labels: Vec<Id> = self
            .cells
            .iter()
            .flat_map(|cell| [cell.actual.clone(), cell.predicted.clone()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let position = |label: &Id| labels.binary_search(label).unwrap_or(0);
        let mut matrix = vec![vec![0u64; labels.len()]; labels.len()];
        for cell in &self.cells {
            matrix[position(&cell.actual)][position(&cell.predicted)] += cell.count;
        }
        let scores = stats::class_scores(&matrix);
        let matched: u64 = self.cells.iter().map(|cell| cell.count).sum();
        let correct: u64 = (0..labels.len()).map(|i| matrix[i][i]).sum();
        Performance {
            matched,
            accuracy: scores.accuracy,
            accuracy_interval: stats::wilson(correct, matched, stats::Z95),
            labels,
            confusion: matrix,
            per_class: scores.per_class,
            macro_avg: scores.macro_avg,
            weighted_avg: scores.weighted_avg,
        }
    }
}

/// One matched pair as the ordered analyses keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// The prediction's confidence.
    pub confidence: f64,
    /// The predicted label.
    pub predicted: Id,
    /// The true label.
    pub actual: Id,
    /// The prediction's features.
    pub features: Vec<(Id, f64)>,
}

impl Kept {
    /// The part of `pair` the ordered analyses keep.
    pub fn of(pair: MatchedPair) -> Self {
        Self {
            confidence: pair.confidence,
            predicted: pair.predicted,
            actual: pair.actual,
            features: pair.features,
        }
    }

    /// Whether the prediction was right.
    pub fn correct(&self) -> bool {
        self.predicted == self.actual
    }
}

/// State of one model version.
#[derive(Debug)]
pub struct ModelState {
    key: ModelKey,
    /// The pinned baseline version whose reference window this version's drift uses.
    baseline: Option<Id>,
    /// The `baseline_version` the registry gave last; a registration changes `baseline`
    /// only when it changes this, so an unrelated registration of the model does not
    /// undo a "pin now".
    registered_baseline: Option<Id>,
    /// Set when the own reference window was frozen by "pin now".
    pinned: Option<PinnedReference>,
    pins: u64,
    pins_rejected: u64,
    events: u64,
    ordered: u64,
    first_seen: Option<u64>,
    last_seen: u64,
    predictions: u64,
    expired: u64,
    orphans_expired: u64,
    duplicates: u64,
    cumulative: Confusion,
    latency: Option<Histogram<u64>>,
    /// Latencies recorded per histogram equivalence class (keyed by its lowest value):
    /// the quantiles walk these few classes instead of the histogram's thousands of
    /// counts, with the same result as `value_at_quantile`.
    latency_classes: BTreeMap<u64, u64>,
    /// Exact sums (fixed point, see [`stats::fixed`]): order-independent.
    latency_sum: u128,
    confidence_sum: u128,
    confidence_histogram: Vec<u64>,
    calibration: Calibration,
    predicted_labels: BTreeMap<Id, u64>,
    actual_labels: BTreeMap<Id, u64>,
    /// The first `reference_size` pairs in order, or the current window frozen by the
    /// last "pin now".
    reference: Vec<Kept>,
    /// The latest `window_size` pairs after the reference, in order.
    current: VecDeque<Kept>,
    window: Confusion,
    adwin: Adwin,
    adwin_changes: Vec<u64>,
    adwin_change_count: u64,
    adwin_last_change_at: Option<u64>,
    drift: Option<DriftReport>,
    drifted: bool,
    triggers: u64,
    breached: bool,
    /// KS p-values of earlier evaluations (at most [`stats::KsPValues::CAPACITY`]).
    ks_p_values: stats::KsPValues,
}

/// Adds `count` to `label`'s count in `labels`.
fn add_label(labels: &mut BTreeMap<Id, u64>, label: &Id, count: u64) {
    match labels.get_mut(label) {
        Some(seen) => *seen += count,
        None => {
            labels.insert(label.clone(), count);
        }
    }
}

/// Values at `quantiles` (ascending) exactly as `histogram.value_at_quantile` gives them,
/// in one walk over the recorded equivalence classes.
fn quantiles<const N: usize>(
    histogram: &Histogram<u64>,
    classes: &BTreeMap<u64, u64>,
    quantiles: [f64; N],
) -> [u64; N] {
    let total = histogram.len();
    let mut out = [0u64; N];
    let mut next = 0usize;
    let mut seen = 0u64;
    for (lowest, count) in classes {
        seen += count;
        while next < N {
            let target = ((quantiles[next].clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
            if seen < target {
                break;
            }
            out[next] = histogram.highest_equivalent(*lowest);
            next += 1;
        }
        if next == N {
            break;
        }
    }
    out
}

fn summary(histogram: &Histogram<u64>, classes: &BTreeMap<u64, u64>, sum: u128) -> LatencySummary {
    let [p50, p95, p99] = quantiles(histogram, classes, [0.5, 0.95, 0.99]);
    let at = |micros: u64| micros as f64 / LATENCY_SCALE;
    LatencySummary {
        p50: at(p50),
        p95: at(p95),
        p99: at(p99),
        // Latency sums are kept in 2^-53 ms units like confidences.
        mean: stats::unfixed(sum) / histogram.len().max(1) as f64,
        max: histogram.max() as f64 / LATENCY_SCALE,
    }
}

impl ModelState {
    /// Empty state of `key`.
    pub fn new(key: ModelKey, config: &TrackModelsConfig) -> Self {
        Self {
            key,
            baseline: None,
            registered_baseline: None,
            pinned: None,
            pins: 0,
            pins_rejected: 0,
            events: 0,
            ordered: 0,
            first_seen: None,
            last_seen: 0,
            predictions: 0,
            expired: 0,
            orphans_expired: 0,
            duplicates: 0,
            cumulative: Confusion::default(),
            latency: latency_histogram(),
            latency_classes: BTreeMap::new(),
            latency_sum: 0,
            confidence_sum: 0,
            confidence_histogram: vec![0; config.bins.max(1)],
            calibration: Calibration::new(config.bins),
            predicted_labels: BTreeMap::new(),
            actual_labels: BTreeMap::new(),
            reference: Vec::new(),
            current: VecDeque::new(),
            window: Confusion::default(),
            adwin: Adwin::new(config.adwin_delta),
            adwin_changes: Vec::new(),
            adwin_change_count: 0,
            adwin_last_change_at: None,
            drift: None,
            drifted: false,
            triggers: 0,
            breached: false,
            ks_p_values: stats::KsPValues::default(),
        }
    }

    /// The model version this state tracks.
    pub fn key(&self) -> &ModelKey {
        &self.key
    }

    /// Adds what a join worker counted of this version's predictions and matched pairs.
    pub fn add_counts(&mut self, counts: &VersionCounts) {
        self.events += counts.predictions + counts.matched;
        self.predictions += counts.predictions;
        if let Some(first) = counts.first_seen {
            self.first_seen = Some(self.first_seen.map_or(first, |seen| seen.min(first)));
        }
        self.last_seen = self.last_seen.max(counts.last_seen);
        if let Some(histogram) = self.latency.as_mut() {
            for &(class, count) in &counts.latency {
                histogram.saturating_record_n(class, count);
                *self.latency_classes.entry(class).or_insert(0) += count;
            }
        }
        self.latency_sum = self.latency_sum.saturating_add(counts.latency_sum);
        self.confidence_sum = self.confidence_sum.saturating_add(counts.confidence_sum);
        for (bin, count) in self
            .confidence_histogram
            .iter_mut()
            .zip(&counts.confidence_histogram)
        {
            *bin += count;
        }
        for (label, count) in &counts.predicted_labels {
            add_label(&mut self.predicted_labels, label, *count);
        }
        for (actual, predicted, count) in &counts.confusion {
            self.cumulative
                .add(actual, predicted, i64::try_from(*count).unwrap_or(i64::MAX));
            add_label(&mut self.actual_labels, actual, *count);
        }
        for (index, &(count, correct, sum)) in counts.calibration.iter().enumerate() {
            self.calibration.add(index, count, correct, sum);
        }
    }

    /// Records an expiry.
    pub fn expired(&mut self) {
        self.events += 1;
        self.expired += 1;
    }

    /// Records an expired orphan outcome that named this model.
    pub fn orphan_expired(&mut self) {
        self.events += 1;
        self.orphans_expired += 1;
    }

    /// Records an ignored duplicate prediction.
    pub fn duplicate(&mut self) {
        self.events += 1;
        self.duplicates += 1;
    }

    /// Pins (or unpins) the baseline version whose reference window the drift tests use,
    /// as the registry says. Pairs ordered while a baseline is pinned go straight to the
    /// current window. Only a change of the registered baseline takes effect: after a
    /// "pin now" ([`Self::pin_current`]) the version keeps its own frozen reference until
    /// a registration names a different `baseline_version`.
    pub fn set_baseline(&mut self, baseline: Option<Id>) {
        let baseline = baseline.filter(|version| *version != self.key.model_version);
        if baseline != self.registered_baseline {
            self.registered_baseline.clone_from(&baseline);
            self.baseline = baseline;
        }
    }

    /// Whether any matched pair has reached the ordered analyses.
    pub fn has_ordered(&self) -> bool {
        self.ordered > 0
    }

    /// "Pin now" at event time `at`: the current window (the latest matched pairs) is
    /// copied into the reference, replacing the own first pairs or a registered
    /// `baseline_version`. The current window and ADWIN start empty, so drift is measured
    /// from here on against how the version behaved just before `at`; drift flags clear
    /// at the next evaluation. Rejected, changing nothing, when the current window holds
    /// fewer than `reference_size` pairs.
    pub fn pin_current(
        &mut self,
        at: u64,
        pin: &PinBaseline,
        config: &TrackModelsConfig,
    ) -> BaselinePin {
        self.events += 1;
        let size = self.current.len() as u64;
        let needed = config.reference_size.max(1);
        let mut outcome = BaselinePin {
            model_id: self.key.model_id.clone(),
            model_version: Some(self.key.model_version.clone()),
            at,
            actor: pin.actor.clone(),
            note: pin.note.clone(),
            pinned: false,
            size,
            previous_reference: None,
            reason: None,
            message: None,
        };
        if self.current.len() < needed {
            self.pins_rejected += 1;
            outcome.reason = Some(PinRejection::WindowTooSmall);
            outcome.message = Some(format!(
                "the current window holds {size} matched pairs; a reference needs {needed} \
                 (ml.reference_size)"
            ));
            return outcome;
        }
        outcome.previous_reference = Some(
            self.baseline
                .take()
                .unwrap_or_else(|| self.key.model_version.clone()),
        );
        self.reference = self.current.drain(..).collect();
        self.window = Confusion::default();
        self.adwin = Adwin::new(config.adwin_delta);
        self.pinned = Some(PinnedReference {
            at,
            actor: pin.actor.clone(),
            note: pin.note.clone(),
            size,
        });
        self.pins += 1;
        outcome.pinned = true;
        outcome
    }

    /// The pinned baseline version, if any.
    pub fn baseline(&self) -> Option<&Id> {
        self.baseline.as_ref()
    }

    /// Feeds one pair, in event-time order, to the windows and ADWIN. Returns a retraining
    /// trigger when ADWIN detects a change. `ts` is the pair's time.
    pub fn ordered(
        &mut self,
        ts: u64,
        kept: Kept,
        config: &TrackModelsConfig,
    ) -> Option<RetrainingTrigger> {
        self.ordered += 1;
        let error = if kept.correct() { 0.0 } else { 1.0 };
        if self.baseline.is_none() && self.reference.len() < config.reference_size {
            self.reference.push(kept);
        } else {
            self.window.add(&kept.actual, &kept.predicted, 1);
            self.current.push_back(kept);
            if self.current.len() > config.window_size {
                if let Some(old) = self.current.pop_front() {
                    self.window.add(&old.actual, &old.predicted, -1);
                }
            }
        }
        if self.adwin.update(error) {
            self.adwin_change_count += 1;
            if self.adwin_changes.len() >= MAX_CHANGE_POINTS {
                self.adwin_changes.remove(0);
            }
            self.adwin_changes.push(self.ordered);
            self.adwin_last_change_at = Some(ts);
            self.triggers += 1;
            return Some(RetrainingTrigger {
                model_id: self.key.model_id.clone(),
                model_version: self.key.model_version.clone(),
                at: ts,
                evidence: vec![DriftTest {
                    test: "adwin:errors".into(),
                    statistic: self.adwin.mean().unwrap_or(0.0),
                    p_value: None,
                    threshold: config.adwin_delta,
                    drifted: true,
                }],
            });
        }
        None
    }

    /// Re-evaluates the drift tests after a run of ordered pairs; returns a retraining
    /// trigger when the model starts drifting. `baseline` is the state of the pinned
    /// baseline version (see [`Self::baseline`]); its reference window replaces this
    /// version's own. A pinned baseline whose reference is not full yet gives no tests.
    pub fn evaluate_drift(
        &mut self,
        at: u64,
        config: &TrackModelsConfig,
        baseline: Option<&ModelState>,
    ) -> Option<RetrainingTrigger> {
        let mut tests = Vec::new();
        let (reference, reference_version, pinned): (&[Kept], &Id, &Option<PinnedReference>) =
            match (&self.baseline, baseline) {
                (Some(version), Some(state)) => (&state.reference, version, &state.pinned),
                (Some(version), None) => (&[], version, &None),
                (None, _) => (&self.reference, &self.key.model_version, &self.pinned),
            };
        let full = reference.len() >= config.reference_size
            && self.current.len() >= config.window_size
            && config.reference_size > 0;
        if full {
            let confidences = |pairs: &mut dyn Iterator<Item = &Kept>| {
                pairs.map(|kept| kept.confidence).collect::<Vec<f64>>()
            };
            let reference_confidence = confidences(&mut reference.iter());
            let current_confidence = confidences(&mut self.current.iter());
            if let Some(value) = stats::psi(&reference_confidence, &current_confidence, config.bins)
            {
                tests.push(DriftTest {
                    test: "psi:confidence".into(),
                    statistic: value,
                    p_value: None,
                    threshold: config.psi_threshold,
                    drifted: value >= config.psi_threshold,
                });
            }
            let names: BTreeSet<&Id> = self
                .reference
                .iter()
                .flat_map(|kept| kept.features.iter().map(|(name, _)| name))
                .collect();
            for name in names {
                let values = |pairs: &mut dyn Iterator<Item = &Kept>| {
                    pairs
                        .filter_map(|kept| {
                            kept.features
                                .iter()
                                .find(|(feature, _)| feature == name)
                                .map(|(_, value)| *value)
                        })
                        .collect::<Vec<f64>>()
                };
                let reference = values(&mut reference.iter());
                let current = values(&mut self.current.iter());
                if let Some(value) = stats::psi(&reference, &current, config.bins) {
                    tests.push(DriftTest {
                        test: format!("psi:feature:{name}"),
                        statistic: value,
                        p_value: None,
                        threshold: config.psi_threshold,
                        drifted: value >= config.psi_threshold,
                    });
                }
            }
            if let Some((statistic, p_value)) = stats::ks_2samp_remembering(
                &reference_confidence,
                &current_confidence,
                &mut self.ks_p_values,
            ) {
                tests.push(DriftTest {
                    test: "ks:confidence".into(),
                    statistic,
                    p_value: Some(p_value),
                    threshold: config.p_value_threshold,
                    drifted: p_value < config.p_value_threshold,
                });
            }
            let labels: BTreeSet<&Id> = self
                .reference
                .iter()
                .chain(self.current.iter())
                .map(|kept| &kept.predicted)
                .collect();
            let count = |pairs: &mut dyn Iterator<Item = &Kept>| {
                let mut counts = vec![0u64; labels.len()];
                for kept in pairs {
                    if let Some(index) = labels.iter().position(|label| **label == kept.predicted) {
                        counts[index] += 1;
                    }
                }
                counts
            };
            let reference_counts = count(&mut reference.iter());
            let current_counts = count(&mut self.current.iter());
            if let Some(result) = stats::chi2_contingency(&reference_counts, &current_counts) {
                tests.push(DriftTest {
                    test: "chi2:predicted_labels".into(),
                    statistic: result.statistic,
                    p_value: Some(result.p_value),
                    threshold: config.p_value_threshold,
                    drifted: result.p_value < config.p_value_threshold,
                });
            }
            let accuracy = |pairs: &mut dyn Iterator<Item = &Kept>| {
                let (mut correct, mut total) = (0u64, 0u64);
                for kept in pairs {
                    total += 1;
                    correct += u64::from(kept.correct());
                }
                correct as f64 / total.max(1) as f64
            };
            let reference_accuracy = accuracy(&mut reference.iter());
            let current_accuracy = accuracy(&mut self.current.iter());
            if reference_accuracy > 0.0 {
                let drop = (reference_accuracy - current_accuracy) / reference_accuracy;
                tests.push(DriftTest {
                    test: "accuracy_drop".into(),
                    statistic: drop,
                    p_value: None,
                    threshold: config.accuracy_drop,
                    drifted: drop >= config.accuracy_drop,
                });
            }
        }
        let drifted = tests.iter().any(|test| test.drifted);
        let evidence: Vec<DriftTest> = tests.iter().filter(|test| test.drifted).cloned().collect();
        self.drift = Some(DriftReport {
            reference_size: reference.len() as u64,
            current_size: self.current.len() as u64,
            tests,
            drifted,
            adwin_changes: self.adwin_change_count,
            adwin_change_points: self.adwin_changes.clone(),
            adwin_last_change_at: self.adwin_last_change_at,
            reference_version: reference_version.clone(),
            pinned: pinned.clone(),
        });
        let started = drifted && !self.drifted;
        self.drifted = drifted;
        if started {
            self.triggers += 1;
            return Some(RetrainingTrigger {
                model_id: self.key.model_id.clone(),
                model_version: self.key.model_version.clone(),
                at,
                evidence,
            });
        }
        None
    }

    /// Whether the drift tests and thresholds are due (every `evaluate_every` ordered pairs).
    pub fn evaluation_due(&self, config: &TrackModelsConfig) -> bool {
        self.ordered % config.evaluate_every.max(1) == 0
    }

    /// Whether the drift tests currently say the model drifted.
    pub fn drifted(&self) -> bool {
        self.drifted
    }

    /// Registered thresholds breached now: `(what, value, threshold)`.
    pub fn threshold_breaches(
        &self,
        registration: Option<&ModelRegistration>,
    ) -> Vec<(&'static str, f64, f64)> {
        let mut breaches = Vec::new();
        let Some(registration) = registration else {
            return breaches;
        };
        if let Some(minimum) = registration.min_accuracy {
            let window = self.window.performance();
            if let Some(accuracy) = window.accuracy {
                if accuracy < minimum {
                    breaches.push(("accuracy", accuracy, minimum));
                }
            }
        }
        if let (Some(maximum), Some(histogram)) =
            (registration.max_latency_p99_ms, self.latency.as_ref())
        {
            if !histogram.is_empty() {
                let p99 = summary(histogram, &self.latency_classes, self.latency_sum).p99;
                if p99 > maximum {
                    breaches.push(("latency_p99_ms", p99, maximum));
                }
            }
        }
        breaches
    }

    /// Remembers whether a threshold breach is open; returns whether that changed.
    pub fn set_breached(&mut self, breached: bool) -> bool {
        let changed = self.breached != breached;
        self.breached = breached;
        changed
    }

    /// The current snapshot, with the registration in effect for this version.
    pub fn snapshot(&self, registration: Option<&ModelRegistration>) -> ModelSnapshot {
        let cumulative = self.cumulative.performance();
        let matched = cumulative.matched;
        let health = if self.drifted {
            "drifted"
        } else if self.breached {
            "degraded"
        } else if matched == 0 {
            "waiting"
        } else {
            "ok"
        };
        ModelSnapshot {
            model_id: self.key.model_id.clone(),
            model_version: self.key.model_version.clone(),
            registration: registration.cloned(),
            events: self.events,
            ordered: self.ordered,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            predictions: self.predictions,
            matched,
            pending: self
                .predictions
                .saturating_sub(matched)
                .saturating_sub(self.expired),
            expired: self.expired,
            orphans_expired: self.orphans_expired,
            duplicates: self.duplicates,
            cumulative,
            window: self.window.performance(),
            latency: self
                .latency
                .as_ref()
                .filter(|histogram| !histogram.is_empty())
                .map(|histogram| summary(histogram, &self.latency_classes, self.latency_sum)),
            confidence: ConfidenceSummary {
                mean: (self.predictions > 0)
                    .then(|| stats::unfixed(self.confidence_sum) / self.predictions as f64),
                histogram: self.confidence_histogram.clone(),
                reliability: self.calibration.bins().to_vec(),
                expected_calibration_error: self.calibration.expected_calibration_error(),
            },
            predicted_labels: self.predicted_labels.clone(),
            actual_labels: self.actual_labels.clone(),
            drift: self.drift.clone(),
            health: health.to_owned(),
            retraining_triggers: self.triggers,
            baseline_pins: self.pins,
            baseline_pins_rejected: self.pins_rejected,
        }
    }
}

#[cfg(test)]
mod quantile_tests {
    use super::*;

    #[test]
    fn class_walk_equals_value_at_quantile() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for scale in [50.0, 3.0, 900.0, 5_000_000.0] {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
            let mut classes = BTreeMap::new();
            for round in 0..3000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let latency_ms = (state >> 11) as f64 / (1u64 << 53) as f64 * scale;
                let micros =
                    ((latency_ms * LATENCY_SCALE).round().max(1.0) as u64).min(histogram.high());
                histogram.saturating_record(micros);
                *classes
                    .entry(histogram.lowest_equivalent(micros))
                    .or_insert(0) += 1;
                if round % 97 == 0 {
                    let qs = [0.0, 0.5, 0.95, 0.99, 1.0];
                    let walked = quantiles(&histogram, &classes, qs);
                    for (q, value) in qs.iter().zip(walked) {
                        let expected = histogram.value_at_quantile(*q);
                        if *q == 0.0 {
                            // value_at_quantile(0) reports the class's lowest value.
                            assert_eq!(histogram.lowest_equivalent(value), expected);
                        } else {
                            assert_eq!(value, expected, "q {q} scale {scale} round {round}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod confusion_tests {
    use super::*;

    const LABELS: [&str; 12] = [
        "",
        "0",
        "1",
        "10",
        "a",
        "a\0",
        "ab",
        "approve",
        "reject",
        "review",
        "a-label-longer-than-16-bytes",
        "a-label-longer-than-16-bytez",
    ];

    #[test]
    fn label_comparison_is_the_order_of_the_ids() {
        for a in LABELS {
            for b in LABELS {
                let (a, b) = (Id::from(a), Id::from(b));
                assert_eq!(
                    compare_labels(prefix16(&a), &a, prefix16(&b), &b),
                    a.cmp(&b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn cells_stay_sorted_and_counted_like_a_map() {
        let mut confusion = Confusion::default();
        let mut reference: BTreeMap<(Id, Id), u64> = BTreeMap::new();
        let mut state = 7u64;
        for step in 0..2000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let actual = Id::from(LABELS[(state >> 33) as usize % LABELS.len()]);
            let predicted = Id::from(LABELS[(state >> 45) as usize % LABELS.len()]);
            let key = (actual.clone(), predicted.clone());
            let count = reference.get(&key).copied().unwrap_or(0);
            // Mostly additions, some removals of existing counts.
            if step % 3 == 2 && count > 0 {
                confusion.add(&actual, &predicted, -1);
                if count == 1 {
                    reference.remove(&key);
                } else {
                    reference.insert(key, count - 1);
                }
            } else {
                confusion.add(&actual, &predicted, 1);
                reference.insert(key, count + 1);
            }
        }
        let cells: Vec<(Id, Id, u64)> = confusion
            .cells
            .iter()
            .map(|cell| (cell.actual.clone(), cell.predicted.clone(), cell.count))
            .collect();
        let expected: Vec<(Id, Id, u64)> = reference
            .into_iter()
            .map(|((actual, predicted), count)| (actual, predicted, count))
            .collect();
        assert_eq!(cells, expected);
    }
}
