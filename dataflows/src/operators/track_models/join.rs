//! The pure core of the prediction ⋈ outcome join: pending predictions and orphan
//! outcomes per prediction id, matched when their event times are less than the horizon
//! apart, expired once the frontier guarantees no partner can still come.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxBuildHasher;

use hdrhistogram::Histogram;

use super::state::{bin_of, latency_class, latency_histogram};
use super::stats::fixed;
use crate::model::{
    Id, MatchedPair, MlEvent, ModelInput, ModelKey, OutcomeEvent, PredictionEvent, VersionCounts,
    UNVERSIONED,
};

/// Expiry buckets are this long (ms): a prediction expires at the end of its bucket plus
/// the horizon, so expiry is up to one bucket later than `ts + horizon` (it never
/// changes which pairs match, only when the expiry is reported).
pub const EXPIRY_BUCKET_MS: u64 = 1000;

/// A small interning table (model versions, labels, feature names per worker). It grows
/// with the number of distinct names, which the data bounds (models, classes, features).
#[derive(Debug)]
struct Interner<T> {
    index: HashMap<T, u32, FxBuildHasher>,
    values: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            index: HashMap::default(),
            values: Vec::new(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Interner<T> {
    fn intern(&mut self, value: &T) -> u32 {
        if let Some(index) = self.index.get(value) {
            return *index;
        }
        let index = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(value.clone());
        self.index.insert(value.clone(), index);
        index
    }

    fn get(&self, index: u32) -> Option<&T> {
        self.values.get(index as usize)
    }
}

/// A prediction waiting for its outcome, in compact form (its id is the map key; its
/// features, when it has any, sit in a side map). 24 bytes, so a table bucket (id and
/// entry) is 48: a probe, mostly a cache miss in a table of hundreds of thousands, then
/// touches one cache line half the time and two the other half (56-byte buckets, with a
/// `has_features` flag, crossed a line boundary seven times in eight).
#[derive(Debug)]
struct Pending {
    ts: u64,
    confidence: f64,
    model: u32,
    predicted: u32,
}

/// An outcome waiting for its prediction.
#[derive(Debug)]
struct Orphan {
    ts: u64,
    actual: Id,
    model_id: Option<Id>,
}

/// Join state of one worker: the prediction ids routed to it.
#[derive(Debug)]
pub struct JoinState {
    horizon: u64,
    pending: HashMap<Id, Pending, FxBuildHasher>,
    /// Interned features of the pending predictions that have some.
    features: HashMap<Id, Box<[(u32, f64)]>, FxBuildHasher>,
    orphans: HashMap<Id, Orphan, FxBuildHasher>,
    /// Expiry bucket end → how many pending predictions have their event time in it (a
    /// bucket leaves the map when its last prediction is matched or expires). Counts
    /// rather than ids: an id queue cost 24 bytes and a first-touch write per prediction,
    /// although nearly every prediction is matched long before its bucket expires; the
    /// few that expire are found by one pass over the table per expiry (see
    /// [`JoinState::expire`]).
    pending_expiry: BTreeMap<u64, u64>,
    /// Expiry bucket end → how many orphan outcomes have their event time in it.
    orphan_expiry: BTreeMap<u64, u64>,
    models: Interner<ModelKey>,
    /// The interned versions by model id (a prediction's version is found without
    /// building its key: one hash of the model id, then a comparison per version).
    versions: HashMap<Id, Vec<(Id, u32)>, FxBuildHasher>,
    labels: Interner<Id>,
    /// Predictions and matched pairs since the last [`JoinState::flush`], by interned
    /// model version: the tracker gets two batches per version instead of one input per
    /// event. Emptied by every flush.
    recorded: Vec<Recorded>,
    /// The interned versions with something recorded, in first-recorded order.
    touched: Vec<u32>,
    /// Predictions (duplicates aside) and outcomes applied so far: numbers the arrival
    /// of each matched pair (see [`MatchedPair::arrival`]).
    arrivals: u64,
    /// Bins of the confidence histogram and the calibration.
    bins: usize,
    /// Classes latencies as the tracker's histograms do (never records).
    latency_classes: Option<Histogram<u64>>,
}

/// What one model version got since the last flush: the order-independent counts of its
/// predictions and pairs (labels by their interned number), and the pairs themselves for
/// the tracker's ordered analyses.
#[derive(Debug, Default)]
struct Recorded {
    predictions: u64,
    matched: u64,
    first_seen: Option<u64>,
    last_seen: u64,
    /// Latency class (µs) → predictions.
    latency: HashMap<u64, u64, FxBuildHasher>,
    latency_sum: u128,
    confidence_sum: u128,
    /// Predictions per confidence bin (allocated on the first prediction).
    confidence_histogram: Vec<u64>,
    /// Predictions per interned predicted label.
    predicted_labels: Vec<u64>,
    /// Pairs per interned `(actual, predicted)`.
    confusion: HashMap<(u32, u32), u64, FxBuildHasher>,
    /// Pairs, correct pairs and confidence sum per confidence bin (allocated on the first
    /// pair).
    calibration: Vec<(u64, u64, u128)>,
    pairs: Vec<MatchedPair>,
}

impl Recorded {
    fn is_empty(&self) -> bool {
        self.predictions == 0 && self.matched == 0
    }

    fn predicted(
        &mut self,
        ts: u64,
        predicted: u32,
        confidence: f64,
        latency: Option<u64>,
        latency_ms: f64,
        bins: usize,
    ) {
        self.predictions += 1;
        self.first_seen = Some(self.first_seen.map_or(ts, |first| first.min(ts)));
        self.last_seen = self.last_seen.max(ts);
        if let Some(class) = latency {
            *self.latency.entry(class).or_insert(0) += 1;
        }
        self.latency_sum = self.latency_sum.saturating_add(fixed(latency_ms));
        self.confidence_sum = self.confidence_sum.saturating_add(fixed(confidence));
        if self.confidence_histogram.is_empty() {
            self.confidence_histogram = vec![0; bins];
        }
        self.confidence_histogram[bin_of(confidence, bins)] += 1;
        let label = predicted as usize;
        if self.predicted_labels.len() <= label {
            self.predicted_labels.resize(label + 1, 0);
        }
        self.predicted_labels[label] += 1;
    }

    fn matched(&mut self, pair: MatchedPair, actual: u32, predicted: u32, bins: usize) {
        self.matched += 1;
        self.last_seen = self.last_seen.max(pair.ts);
        *self.confusion.entry((actual, predicted)).or_insert(0) += 1;
        if self.calibration.is_empty() {
            self.calibration = vec![(0, 0, 0); bins];
        }
        let bin = &mut self.calibration[bin_of(pair.confidence, bins)];
        bin.0 += 1;
        bin.1 += u64::from(actual == predicted);
        bin.2 = bin.2.saturating_add(fixed(pair.confidence));
        self.pairs.push(pair);
    }

    /// The counts with labels spelt out; leaves the counts empty (the pairs stay).
    fn take_counts(&mut self, labels: &Interner<Id>) -> VersionCounts {
        let label = |index: u32| labels.get(index).cloned().unwrap_or_default();
        let mut latency: Vec<(u64, u64)> = self.latency.drain().collect();
        latency.sort_unstable();
        let predicted_labels = self
            .predicted_labels
            .iter_mut()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, count)| {
                (
                    label(u32::try_from(index).unwrap_or(u32::MAX)),
                    std::mem::take(count),
                )
            })
            .collect();
        let mut confusion: Vec<(u32, u32, u64)> = self
            .confusion
            .drain()
            .map(|((actual, predicted), count)| (actual, predicted, count))
            .collect();
        confusion.sort_unstable();
        let counts = VersionCounts {
            predictions: self.predictions,
            matched: self.matched,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            latency,
            latency_sum: self.latency_sum,
            confidence_sum: self.confidence_sum,
            confidence_histogram: std::mem::take(&mut self.confidence_histogram),
            predicted_labels,
            confusion: confusion
                .into_iter()
                .map(|(actual, predicted, count)| (label(actual), label(predicted), count))
                .collect(),
            calibration: std::mem::take(&mut self.calibration),
        };
        self.predictions = 0;
        self.matched = 0;
        self.first_seen = None;
        self.last_seen = 0;
        self.latency_sum = 0;
        self.confidence_sum = 0;
        counts
    }
}

/// The recorded batches of `model`, noting it in `touched` when they were empty.
fn recorded_for<'a>(
    recorded: &'a mut Vec<Recorded>,
    touched: &mut Vec<u32>,
    model: u32,
) -> &'a mut Recorded {
    let slot = model as usize;
    if recorded.len() <= slot {
        recorded.resize_with(slot + 1, Recorded::default);
    }
    let batches = &mut recorded[slot];
    if batches.is_empty() {
        touched.push(model);
    }
    batches
}

fn bucket_end(ts: u64) -> u64 {
    crate::time::pane_end(ts, EXPIRY_BUCKET_MS)
}

/// One entry with event time `ts` left its expiry bucket (matched): the bucket's count
/// goes down, and an empty bucket leaves the map.
fn uncount(expiry: &mut BTreeMap<u64, u64>, ts: u64) {
    if let std::collections::btree_map::Entry::Occupied(mut bucket) = expiry.entry(bucket_end(ts)) {
        let count = bucket.get_mut();
        *count = count.saturating_sub(1);
        if *count == 0 {
            bucket.remove();
        }
    }
}

/// Removes the buckets due at `frontier` (end plus `horizon` at or before it) and returns
/// the end of the last one, if any was due.
fn take_due(expiry: &mut BTreeMap<u64, u64>, horizon: u64, frontier: u64) -> Option<u64> {
    let mut last = None;
    while let Some(bucket) = expiry.first_entry() {
        let end = *bucket.key();
        if end.saturating_add(horizon) > frontier {
            break;
        }
        bucket.remove();
        last = Some(end);
    }
    last
}

impl JoinState {
    /// Empty state; pairs match when their event times are less than `horizon` ms apart;
    /// confidences are counted in `bins` bins (the tracker's `bins`).
    pub fn new(horizon: u64, bins: usize) -> Self {
        Self {
            horizon: horizon.max(1),
            pending: HashMap::default(),
            features: HashMap::default(),
            orphans: HashMap::default(),
            pending_expiry: BTreeMap::new(),
            orphan_expiry: BTreeMap::new(),
            models: Interner::default(),
            versions: HashMap::default(),
            labels: Interner::default(),
            recorded: Vec::new(),
            touched: Vec::new(),
            arrivals: 0,
            bins: bins.max(1),
            latency_classes: latency_histogram(),
        }
    }

    /// Appends what the predictions and matched pairs applied since the last call add to
    /// the tracker to `out`: per model version (in the order the versions were first
    /// seen) a [`ModelInput::Counted`] and, when pairs matched, a
    /// [`ModelInput::MatchedBatch`]. Call it after each run of [`Self::apply`].
    pub fn flush(&mut self, out: &mut Vec<ModelInput>) {
        for model in self.touched.drain(..) {
            let (Some(key), Some(batches)) = (
                self.models.get(model),
                self.recorded.get_mut(model as usize),
            ) else {
                continue;
            };
            if batches.is_empty() {
                continue;
            }
            out.push(ModelInput::Counted {
                key: key.clone(),
                counts: Box::new(batches.take_counts(&self.labels)),
            });
            if !batches.pairs.is_empty() {
                // The next batch starts with room for as many pairs as this one had (it
                // grew from nothing, in copies to fresh memory, on every flush).
                let room = batches.pairs.len();
                out.push(ModelInput::MatchedBatch {
                    key: key.clone(),
                    pairs: std::mem::replace(&mut batches.pairs, Vec::with_capacity(room)),
                });
            }
        }
    }

    /// Predictions waiting for outcomes.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Outcomes waiting for predictions.
    pub fn orphans(&self) -> usize {
        self.orphans.len()
    }

    /// Heap bytes the pending predictions hold: their hash table (buckets of key, entry
    /// and control byte, as hashbrown lays them out), their expiry buckets (one count per
    /// second of event time) and their features. Allocator overhead and freed-but-kept
    /// memory are not included.
    pub fn pending_heap_bytes(&self) -> usize {
        fn table<K, V>(capacity: usize) -> usize {
            if capacity == 0 {
                return 0;
            }
            // hashbrown keeps at most 7/8 of its power-of-two bucket count in use.
            let buckets = (capacity * 8 / 7).next_power_of_two();
            buckets * (std::mem::size_of::<(K, V)>() + 1)
        }
        let queue = self.pending_expiry.len() * std::mem::size_of::<(u64, u64)>();
        let features: usize = self
            .features
            .values()
            .map(|features| std::mem::size_of_val(&**features))
            .sum();
        table::<Id, Pending>(self.pending.capacity())
            + table::<Id, Box<[(u32, f64)]>>(self.features.capacity())
            + queue
            + features
    }

    /// The earliest frontier time at which something may expire.
    pub fn next_expiry(&self) -> Option<u64> {
        let first = |map: &BTreeMap<u64, u64>| map.keys().next().map(|end| end + self.horizon);
        match (first(&self.pending_expiry), first(&self.orphan_expiry)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn close(&self, a: u64, b: u64) -> bool {
        a.abs_diff(b) < self.horizon
    }

    /// Looks up `ids` in the pending and orphan tables and discards the answers, so that
    /// [`Self::apply`] right after finds their table slots in the cache.
    ///
    /// The tables hold hundreds of thousands of entries, so nearly every first probe is a
    /// cache miss; probes of one message's ids in a row are independent of each other and
    /// their misses overlap, where `apply` (which does much more between two probes)
    /// waits for one miss after another.
    pub fn warm<'a>(&self, ids: impl IntoIterator<Item = &'a Id>) {
        let mut seen = 0u64;
        for id in ids {
            if let Some(pending) = self.pending.get(id) {
                seen ^= pending.ts;
            }
            if let Some(orphan) = self.orphans.get(id) {
                seen ^= orphan.ts;
            }
        }
        std::hint::black_box(seen);
    }

    /// Applies one event with event time `ts`; pushes what the model tracker must know,
    /// except predictions and matched pairs, which wait for [`Self::flush`].
    pub fn apply(&mut self, ts: u64, event: MlEvent, out: &mut Vec<ModelInput>) {
        match event {
            MlEvent::Prediction(prediction) => {
                let model = self.model_of(&prediction);
                // One hash of the id: the vacant entry is filled at the end, or dropped
                // when the prediction meets a waiting outcome.
                let entry = match self.pending.entry(prediction.prediction_id) {
                    Entry::Occupied(_) => {
                        if let Some(key) = self.models.get(model) {
                            out.push(ModelInput::Duplicate { key: key.clone() });
                        }
                        return;
                    }
                    Entry::Vacant(entry) => entry,
                };
                self.arrivals += 1;
                let predicted = self.labels.intern(&prediction.predicted);
                let latency = self
                    .latency_classes
                    .as_ref()
                    .map(|histogram| latency_class(histogram, prediction.latency_ms));
                let bins = self.bins;
                let batches = recorded_for(&mut self.recorded, &mut self.touched, model);
                batches.predicted(
                    ts,
                    predicted,
                    prediction.confidence,
                    latency,
                    prediction.latency_ms,
                    bins,
                );
                let horizon = self.horizon;
                let waiting = self
                    .orphans
                    .get(entry.key())
                    .is_some_and(|orphan| orphan.ts.abs_diff(ts) < horizon);
                if waiting {
                    let prediction_id = entry.into_key();
                    if let Some(orphan) = self.orphans.remove(&prediction_id) {
                        uncount(&mut self.orphan_expiry, orphan.ts);
                        let actual = self.labels.intern(&orphan.actual);
                        batches.matched(
                            MatchedPair {
                                arrival: self.arrivals,
                                ts: ts.max(orphan.ts),
                                prediction_id,
                                predicted: prediction.predicted,
                                actual: orphan.actual,
                                confidence: prediction.confidence,
                                features: prediction.features,
                            },
                            actual,
                            predicted,
                            bins,
                        );
                    }
                    return;
                }
                if !prediction.features.is_empty() {
                    let features: Box<[(u32, f64)]> = prediction
                        .features
                        .iter()
                        .map(|(name, value)| (self.labels.intern(name), *value))
                        .collect();
                    self.features.insert(entry.key().clone(), features);
                }
                *self.pending_expiry.entry(bucket_end(ts)).or_insert(0) += 1;
                entry.insert(Pending {
                    ts,
                    model,
                    predicted,
                    confidence: prediction.confidence,
                });
            }
            MlEvent::Outcome(outcome) => self.apply_outcome(ts, outcome),
            MlEvent::Register(registration) => {
                out.push(ModelInput::Registered { ts, registration });
            }
            MlEvent::PinBaseline(pin) => out.push(ModelInput::PinBaseline { ts, pin }),
        }
    }

    /// The interned version of `prediction`'s model.
    fn model_of(&mut self, prediction: &PredictionEvent) -> u32 {
        let version = prediction.model_version.as_deref().unwrap_or(UNVERSIONED);
        let known = self
            .versions
            .get(prediction.model_id.as_str())
            .and_then(|versions| versions.iter().find(|(known, _)| known.as_str() == version));
        if let Some((_, model)) = known {
            return *model;
        }
        let model = self.models.intern(&ModelKey::of(prediction));
        self.versions
            .entry(prediction.model_id.clone())
            .or_default()
            .push((version.into(), model));
        model
    }

    fn apply_outcome(&mut self, ts: u64, outcome: OutcomeEvent) {
        self.arrivals += 1;
        // Removed at once (one probe of a table too large for the caches) and put back in
        // the rare case that it is too far apart to match.
        let taken = self.pending.remove(&outcome.prediction_id);
        let pending = match taken {
            Some(pending) if !self.close(pending.ts, ts) => {
                self.pending.insert(outcome.prediction_id.clone(), pending);
                None
            }
            other => other,
        };
        if let Some(pending) = pending {
            uncount(&mut self.pending_expiry, pending.ts);
            let actual = self.labels.intern(&outcome.actual);
            if let Some(predicted) = self.labels.get(pending.predicted).cloned() {
                // `features` holds an entry for exactly the pending predictions that
                // have features; when none has, the probe is skipped.
                let stored = (!self.features.is_empty())
                    .then(|| self.features.remove(&outcome.prediction_id))
                    .flatten();
                let features = stored
                    .iter()
                    .flat_map(|features| features.iter())
                    .filter_map(|(name, value)| {
                        self.labels.get(*name).map(|name| (name.clone(), *value))
                    })
                    .collect();
                recorded_for(&mut self.recorded, &mut self.touched, pending.model).matched(
                    MatchedPair {
                        arrival: self.arrivals,
                        ts: ts.max(pending.ts),
                        prediction_id: outcome.prediction_id,
                        predicted,
                        actual: outcome.actual,
                        confidence: pending.confidence,
                        features,
                    },
                    actual,
                    pending.predicted,
                    self.bins,
                );
            }
            return;
        }
        if self.orphans.contains_key(&outcome.prediction_id) {
            // A second outcome for the same id while the first waits: keep the first.
            return;
        }
        *self.orphan_expiry.entry(bucket_end(ts)).or_insert(0) += 1;
        self.orphans.insert(
            outcome.prediction_id,
            Orphan {
                ts,
                actual: outcome.actual,
                model_id: outcome.model_id,
            },
        );
    }

    /// Expires everything whose partner can no longer come, given that every event with
    /// event time before `frontier` has been applied.
    ///
    /// A prediction (an orphan) expires once `frontier` reaches the end of its expiry
    /// bucket plus the horizon. When a bucket with entries left is due, one pass over the
    /// table removes every entry of every due bucket: the cost is one pass per expiry
    /// step that finds something to expire, rather than a queued id per entry.
    pub fn expire(&mut self, frontier: u64, out: &mut Vec<ModelInput>) {
        if let Some(last) = take_due(&mut self.pending_expiry, self.horizon, frontier) {
            let (models, features) = (&self.models, &mut self.features);
            self.pending.retain(|id, pending| {
                if bucket_end(pending.ts) > last {
                    return true;
                }
                if !features.is_empty() {
                    features.remove(id);
                }
                if let Some(key) = models.get(pending.model) {
                    out.push(ModelInput::Expired { key: key.clone() });
                }
                false
            });
        }
        if let Some(last) = take_due(&mut self.orphan_expiry, self.horizon, frontier) {
            self.orphans.retain(|_, orphan| {
                if bucket_end(orphan.ts) > last {
                    return true;
                }
                out.push(ModelInput::OrphanExpired {
                    model_id: std::mem::take(&mut orphan.model_id).unwrap_or_default(),
                });
                false
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pending_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<super::Pending>(), 24);
    }
}
