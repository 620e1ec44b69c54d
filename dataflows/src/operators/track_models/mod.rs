//! `track_models`: predictions ⋈ outcomes by `prediction_id`, and per model version the
//! performance, calibration, drift and retraining triggers that follow from the pairs.
//!
//! ```text
//!   (ts, MlEvent) ──exchange(prediction_id)──► JoinOutcomes ──ModelInput──►
//!       ──exchange(model_id)──► TrackModels ──► ModelMetrics / RetrainingTrigger / Alert
//! ```
//!
//! The join is a timely operator with explicit per-id state rather than a differential
//! `join`: NOTES.md measured differential at 0.4–2 M records/s with hundreds of MB for
//! windowed state, far from the 500 k predictions/s target with a 24 h horizon, while the
//! per-id hash map here costs one entry per pending prediction and nothing per matched
//! one. The result is the same incremental join: pairs are emitted the moment their
//! second half arrives, in either order.
//!
//! Determinism: a prediction and an outcome match iff their event times are less than the
//! horizon apart; expiry happens once the frontier guarantees that no partner can still
//! come. Counts are order-independent, so the join workers (balanced by prediction id)
//! sum them per version and flush ([`ModelInput::Counted`]), and the model-keyed tracker
//! only adds the sums; the order-dependent analyses (reference and current windows, drift
//! tests, ADWIN) see matched pairs sorted by `(ts, prediction_id)` once the frontier has
//! passed `ts`, so results do not depend on batching or worker count. Errors: none leave this operator; duplicate prediction ids are counted per model.

pub mod join;
pub mod state;
pub mod stats;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use crate::model::{
    AlertState, AlertTransition, BaselinePin, Id, MlEvent, ModelInput, ModelKey, ModelRegistration,
    PinBaseline, PinRejection, Sample, SeriesKey, Severity, Update, UNVERSIONED,
};
use crate::operators::route_events::series_names;
use crate::time::duration_ms;
use crate::Time;
use join::JoinState;
use state::{Kept, ModelState};

/// How models are tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackModelsConfig {
    /// Outcomes match predictions less than this far apart in event time; unmatched
    /// predictions and orphan outcomes expire after it.
    pub horizon: Duration,
    /// Matched pairs in the reference window (the first of each version).
    pub reference_size: usize,
    /// Matched pairs in the current window (the latest).
    pub window_size: usize,
    /// Bins of the confidence histogram, the reliability diagram and PSI.
    pub bins: usize,
    /// PSI at or above this is drift.
    pub psi_threshold: f64,
    /// KS and chi-squared p-values below this are drift.
    pub p_value_threshold: f64,
    /// A relative accuracy drop (reference → current) at or above this is drift.
    pub accuracy_drop: f64,
    /// ADWIN's confidence parameter on the 0/1 error stream.
    pub adwin_delta: f64,
    /// Drift tests and thresholds are evaluated after every this many ordered matched
    /// pairs of a version (deterministic points; the exact KS test costs O(n·m)).
    pub evaluate_every: u64,
    /// Registered models: metadata and thresholds.
    pub models: Vec<ModelRegistration>,
    /// Whether every ordered matched pair also becomes a `model.correct` sample (1 when the
    /// prediction was right, 0 when not; labels `model_id`, `model_version`), so window
    /// rules can watch accuracy (the window `mean`).
    pub correctness_series: bool,
}

impl Default for TrackModelsConfig {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(24 * 3600),
            reference_size: 500,
            window_size: 500,
            bins: 10,
            psi_threshold: 0.2,
            p_value_threshold: 0.01,
            accuracy_drop: 0.15,
            adwin_delta: 0.002,
            evaluate_every: 1000,
            models: Vec::new(),
            correctness_series: true,
        }
    }
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    value.hash(&mut hasher);
    hasher.finish()
}

fn route(input: &ModelInput) -> u64 {
    match input {
        ModelInput::Counted { key, .. }
        | ModelInput::MatchedBatch { key, .. }
        | ModelInput::Duplicate { key }
        | ModelInput::Expired { key } => hash_of(key.model_id.as_str()),
        ModelInput::OrphanExpired { model_id } => hash_of(model_id.as_str()),
        ModelInput::Registered { registration, .. } => hash_of(registration.model_id.as_str()),
        ModelInput::PinBaseline { pin, .. } => hash_of(pin.model_id.as_str()),
    }
}

/// Model states of one worker, each in a slot that never changes: an input's version
/// is looked up once (one Fx hash of its key), and matched pairs waiting for the
/// frontier carry their slot, so releasing them needs no lookup at all.
#[derive(Debug, Default)]
struct Models {
    slots: std::collections::HashMap<ModelKey, usize, rustc_hash::FxBuildHasher>,
    states: Vec<ModelState>,
    /// Per slot: the key of the version's `model.correct` series.
    correctness: Vec<SeriesKey>,
    /// Per slot: changed since the last snapshots.
    dirty: Vec<bool>,
    /// The slots marked in `dirty`.
    changed: Vec<usize>,
}

impl Models {
    fn slot(&self, key: &ModelKey) -> Option<usize> {
        self.slots.get(key).copied()
    }

    /// The slot of `key`, creating its state with `create` when it has none.
    fn slot_or_insert_with(
        &mut self,
        key: &ModelKey,
        create: impl FnOnce() -> ModelState,
    ) -> usize {
        if let Some(slot) = self.slot(key) {
            return slot;
        }
        let slot = self.states.len();
        self.states.push(create());
        self.correctness.push(correctness_key(key));
        self.dirty.push(false);
        self.slots.insert(key.clone(), slot);
        slot
    }

    /// The slots of every version of `model_id`.
    fn slots_of(&self, model_id: &str) -> Vec<usize> {
        self.slots
            .iter()
            .filter(|(key, _)| key.model_id == model_id)
            .map(|(_, slot)| *slot)
            .collect()
    }

    fn mark(&mut self, slot: usize) {
        if let Some(dirty) = self.dirty.get_mut(slot) {
            if !*dirty {
                *dirty = true;
                self.changed.push(slot);
            }
        }
    }

    /// The changed slots, in key order, unmarked.
    fn take_changed(&mut self) -> Vec<usize> {
        let mut changed = std::mem::take(&mut self.changed);
        for slot in &changed {
            self.dirty[*slot] = false;
        }
        changed.sort_by(|a, b| self.states[*a].key().cmp(self.states[*b].key()));
        changed
    }

    /// The state in `slot` beside the state in `other` (none when it is the same slot).
    fn with_other(
        &mut self,
        slot: usize,
        other: Option<usize>,
    ) -> (&mut ModelState, Option<&ModelState>) {
        match other {
            Some(other) if other < slot => {
                let (low, high) = self.states.split_at_mut(slot);
                (&mut high[0], low.get(other))
            }
            Some(other) if other > slot => {
                let (low, high) = self.states.split_at_mut(other);
                (&mut low[slot], high.first())
            }
            _ => (&mut self.states[slot], None),
        }
    }
}

/// The `model.correct` series of a version: labelled like the prediction series
/// (`model_id`, and `model_version` unless the predictions carried none).
fn correctness_key(key: &ModelKey) -> SeriesKey {
    let mut labels = Vec::with_capacity(2);
    labels.push(("model_id".into(), key.model_id.clone()));
    if key.model_version != UNVERSIONED {
        labels.push(("model_version".into(), key.model_version.clone()));
    }
    SeriesKey {
        name: series_names::MODEL_CORRECT.into(),
        session_id: None,
        labels,
    }
}

/// What the tracker hands on: updates, and the `model.correct` samples that the pipeline
/// windows apart from the other series. Updates are boxed: they are few, and samples
/// (one per outcome) then move as 96 bytes instead of 208.
#[derive(Debug, Clone)]
enum Tracked {
    Update(Box<Update>),
    Sample(Sample),
}

/// Registrations in effect on one worker: by model id, then version (`None`: every
/// version of the model).
type Registry = BTreeMap<(Id, Option<Id>), ModelRegistration>;

/// The registration that applies to `key`: its version's, else its model's.
fn registration_for<'a>(registry: &'a Registry, key: &ModelKey) -> Option<&'a ModelRegistration> {
    registry
        .get(&(key.model_id.clone(), Some(key.model_version.clone())))
        .or_else(|| registry.get(&(key.model_id.clone(), None)))
}

/// What the ordered analyses see, in `(ts, OrderKey)` order: at equal event time,
/// commands (registrations and "pin now", in arrival order) come before matched pairs (by
/// prediction id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum OrderKey {
    Command(u64),
    Pair(Id),
}

impl OrderKey {
    /// A cheap first comparison: the kind, then the command's number or the first 16
    /// bytes of the pair's id (big-endian, zero-padded). A smaller prefix means a smaller
    /// key; equal prefixes need the full comparison.
    fn prefix(&self) -> (u8, u128) {
        match self {
            Self::Command(number) => (0, u128::from(*number)),
            Self::Pair(id) => (1, state::prefix16(id)),
        }
    }
}

#[derive(Debug)]
enum Ordered {
    Registration(Box<ModelRegistration>),
    Pin(PinBaseline),
    /// A matched pair: what the ordered analyses keep of it (inline: a bucket released in
    /// one go is then one walk through contiguous memory, not one cache miss per boxed
    /// pair), the slot of its version's state, and its arrival at the join (the later of
    /// two pairs with the same id and time replaces the earlier).
    Pair {
        slot: usize,
        arrival: u64,
        kept: Kept,
    },
}

impl Ordered {
    /// Orders equal keys: only pairs can share one (commands are numbered).
    fn arrival(&self) -> u64 {
        match self {
            Self::Pair { arrival, .. } => *arrival,
            Self::Registration(_) | Self::Pin(_) => 0,
        }
    }
}

/// Emptied waiting buckets a tracker keeps for reuse.
const SPARE_BUCKETS: usize = 64;

/// The rule id of ML alerts raised by drift.
pub const DRIFT_RULE: &str = "ml.drift";
/// The rule id of ML alerts raised by registered thresholds.
pub const THRESHOLD_RULE: &str = "ml.threshold";

/// The bucket of pairs and commands waiting for time `ts`: a spare one when there is one,
/// else a new one with room for `room` entries (the size of the last released bucket, so
/// it does not grow by doubling).
fn bucket_at<'a>(
    waiting: &'a mut BTreeMap<u64, Vec<(OrderKey, Ordered)>>,
    ts: u64,
    spare: &mut Vec<Vec<(OrderKey, Ordered)>>,
    room: usize,
) -> &'a mut Vec<(OrderKey, Ordered)> {
    waiting
        .entry(ts)
        .or_insert_with(|| spare.pop().unwrap_or_else(|| Vec::with_capacity(room)))
}

fn transition(
    rule: &str,
    key: &ModelKey,
    state: AlertState,
    at: u64,
    value: Option<f64>,
    threshold: f64,
    severity: Severity,
) -> AlertTransition {
    let series = SeriesKey {
        name: "model".into(),
        session_id: None,
        labels: vec![
            ("model_id".into(), key.model_id.clone()),
            ("model_version".into(), key.model_version.clone()),
        ],
    };
    let fingerprint = format!("{rule}-{:016x}", hash_of(&(rule, &series)));
    AlertTransition {
        fingerprint,
        rule_id: rule.into(),
        key: series,
        state,
        at,
        value,
        threshold,
        severity,
    }
}

/// The slot of `key`, created (with the baseline the registry gives it) on first sight,
/// and marked changed.
fn slot_of(
    models: &mut Models,
    key: &ModelKey,
    config: &TrackModelsConfig,
    registry: &Registry,
) -> usize {
    let slot = models.slot_or_insert_with(key, || {
        let mut state = ModelState::new(key.clone(), config);
        state
            .set_baseline(registration_for(registry, key).and_then(|r| r.baseline_version.clone()));
        state
    });
    models.mark(slot);
    slot
}

/// Applies a registration: records it, re-pins the baselines of the versions it covers,
/// and creates the state of a version registered before its first prediction.
fn register(
    models: &mut Models,
    registry: &mut Registry,
    registration: &ModelRegistration,
    config: &TrackModelsConfig,
) {
    registry.insert(
        (
            registration.model_id.clone(),
            registration.model_version.clone(),
        ),
        registration.clone(),
    );
    if let Some(version) = &registration.model_version {
        let key = ModelKey {
            model_id: registration.model_id.clone(),
            model_version: version.clone(),
        };
        models.slot_or_insert_with(&key, || ModelState::new(key.clone(), config));
    }
    for slot in models.slots_of(&registration.model_id) {
        let model = &mut models.states[slot];
        let baseline =
            registration_for(registry, model.key()).and_then(|r| r.baseline_version.clone());
        model.set_baseline(baseline);
        models.mark(slot);
    }
}

/// Applies a "pin now" command at `at` to the version it names, or to every version of
/// the model that has ordered matched pairs, and re-evaluates each pinned version at once
/// (its drift flags clear, its alerts resolve). Versions without ordered pairs are
/// rejected without touching their state: whether such a state exists yet depends on
/// when its predictions arrived, and the outcome must depend on the event log alone.
fn pin_baseline(
    models: &mut Models,
    registry: &Registry,
    pin: &PinBaseline,
    at: u64,
    config: &TrackModelsConfig,
    updates: &mut Vec<Update>,
) {
    let mut keys: Vec<ModelKey> = match &pin.model_version {
        Some(version) => vec![ModelKey {
            model_id: pin.model_id.clone(),
            model_version: version.clone(),
        }],
        None => models
            .slots_of(&pin.model_id)
            .into_iter()
            .map(|slot| &models.states[slot])
            .filter(|model| model.has_ordered())
            .map(|model| model.key().clone())
            .collect(),
    };
    keys.sort();
    if keys.is_empty() {
        updates.push(Update::BaselinePin(Box::new(no_pairs(pin, None, at))));
    }
    for key in keys {
        let Some(slot) = models
            .slot(&key)
            .filter(|slot| models.states[*slot].has_ordered())
        else {
            updates.push(Update::BaselinePin(Box::new(no_pairs(
                pin,
                Some(key.model_version.clone()),
                at,
            ))));
            continue;
        };
        let outcome = models.states[slot].pin_current(at, pin, config);
        let pinned = outcome.pinned;
        updates.push(Update::BaselinePin(Box::new(outcome)));
        if pinned {
            evaluate(models, registry, slot, at, config, updates);
        }
        models.mark(slot);
    }
}

/// The rejection of a pin that found no ordered matched pairs.
fn no_pairs(pin: &PinBaseline, model_version: Option<Id>, at: u64) -> BaselinePin {
    BaselinePin {
        model_id: pin.model_id.clone(),
        model_version,
        at,
        actor: pin.actor.clone(),
        note: pin.note.clone(),
        pinned: false,
        size: 0,
        previous_reference: None,
        reason: Some(PinRejection::NoMatchedPairs),
        message: Some(
            "no matched pair of this model (version) reached the drift windows before the \
             command's time"
                .to_owned(),
        ),
    }
}

/// Runs the drift tests and threshold checks of the model in `slot` at `at`, pushing
/// triggers and alert transitions.
fn evaluate(
    models: &mut Models,
    registry: &Registry,
    slot: usize,
    at: u64,
    config: &TrackModelsConfig,
    updates: &mut Vec<Update>,
) {
    let Some(state) = models.states.get(slot) else {
        return;
    };
    let key = state.key().clone();
    // The pinned baseline's state is read beside this one.
    let baseline = state.baseline().and_then(|version| {
        models.slot(&ModelKey {
            model_id: key.model_id.clone(),
            model_version: version.clone(),
        })
    });
    let (model, baseline) = models.with_other(slot, baseline);
    let was_drifted = model.drifted();
    if let Some(trigger) = model.evaluate_drift(at, config, baseline) {
        updates.push(Update::RetrainingTrigger(Box::new(trigger)));
    }
    if model.drifted() != was_drifted {
        let state = if model.drifted() {
            AlertState::Firing
        } else {
            AlertState::Resolved
        };
        updates.push(Update::Alert(transition(
            DRIFT_RULE,
            &key,
            state,
            at,
            None,
            config.accuracy_drop,
            Severity::High,
        )));
    }
    let breaches = model.threshold_breaches(registration_for(registry, &key));
    if model.set_breached(!breaches.is_empty()) {
        let (value, threshold) = breaches
            .first()
            .map_or((None, 0.0), |(_, value, threshold)| {
                (Some(*value), *threshold)
            });
        let state = if breaches.is_empty() {
            AlertState::Resolved
        } else {
            AlertState::Firing
        };
        updates.push(Update::Alert(transition(
            THRESHOLD_RULE,
            &key,
            state,
            at,
            value,
            threshold,
            Severity::Medium,
        )));
    }
}

/// Prediction ⋈ outcome join and per-model tracking.
pub trait TrackModels<'scope> {
    /// Joins predictions with outcomes and tracks every model version.
    ///
    /// # Inputs and outputs
    /// `self`: `(ts, MlEvent)` at timely times no later than `ts`. Returns updates:
    /// [`Update::ModelMetrics`] for every model version changed in an activation (at the
    /// earliest input time of the activation, so an outcome shows in accuracy within one
    /// activation),
    /// [`Update::RetrainingTrigger`] when drift starts or ADWIN detects a change,
    /// [`Update::BaselinePin`] for each version a "pin now" command acted on (or the
    /// reason it changed nothing),
    /// [`Update::Alert`] transitions (rules [`DRIFT_RULE`], [`THRESHOLD_RULE`]) for the
    /// alert lifecycle, and [`Update::UnattributedOrphans`] for expired outcomes that
    /// named no model. Beside them, when `config.correctness_series` is set, one
    /// `model.correct` [`Sample`] per ordered matched pair (at the pair's time, at a
    /// timely time no later than it, so it is never late for a window), on the worker
    /// that tracks the model (every version's samples on one worker).
    ///
    /// # Frontier behaviour
    /// Expiry of a prediction at `ts` is reported once the frontier passes the end of its
    /// one-second bucket plus the horizon. Matched pairs reach the ordered analyses once
    /// the frontier passes their `ts`; a closed input flushes everything.
    ///
    /// # State
    /// Join: one compact entry per pending prediction and per orphan outcome (exchanged
    /// by prediction id), each dropped when matched or at its expiry. Tracker: one
    /// [`ModelState`] and the `model.correct` series key per model version (exchanged by
    /// model id), the state holding counts, a latency
    /// histogram, and at most `max(reference_size, window_size) + window_size` matched
    /// pairs (a "pin now" copies the current window into the reference); model states
    /// live as long as the dataflow (their number is the number of model versions).
    ///
    /// # Panics
    /// Only if timely's `partition` into two streams returned another number of streams
    /// (a broken invariant of timely, not of the data).
    fn track_models(
        self,
        name: &str,
        config: &TrackModelsConfig,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, Sample>,
    );
}

impl<'scope> TrackModels<'scope> for StreamVec<'scope, Time, (Time, MlEvent)> {
    fn track_models(
        self,
        name: &str,
        config: &TrackModelsConfig,
    ) -> (
        StreamVec<'scope, Time, Update>,
        StreamVec<'scope, Time, Sample>,
    ) {
        let horizon = duration_ms(config.horizon);
        let bins = config.bins;
        let by_id = Exchange::new(|(_, event): &(Time, MlEvent)| hash_of(event.route_id()));
        let joined = self.unary_frontier(
            by_id,
            &format!("JoinOutcomes({name})"),
            move |_initial, _info| {
                let mut join = JoinState::new(horizon, bins);
                let mut held: Option<Capability<Time>> = None;
                let mut out = Vec::new();
                move |(input, frontier), output| {
                    // The messages of one time are flushed together: a message holds a
                    // few dozen events, and each flush costs one input to the tracker
                    // per version touched.
                    let mut batch: Option<Capability<Time>> = None;
                    input.for_each(|cap, data| {
                        let Some(&arrived) = cap.least() else { return };
                        if let Some(time) = batch.as_ref().filter(|b| *b.time() != arrived) {
                            join.flush(&mut out);
                            if !out.is_empty() {
                                output.session(time).give_iterator(out.drain(..));
                            }
                            batch = None;
                        }
                        if batch.is_none() {
                            batch = Some(cap.delayed(&arrived, output.output_index()));
                        }
                        // A message holds a few dozen events: their table slots are
                        // fetched together first (see `JoinState::warm`).
                        join.warm(data.iter().filter_map(|(_, event)| match event {
                            MlEvent::Prediction(prediction) => Some(&prediction.prediction_id),
                            MlEvent::Outcome(outcome) => Some(&outcome.prediction_id),
                            MlEvent::Register(_) | MlEvent::PinBaseline(_) => None,
                        }));
                        for (ts, event) in data.drain(..) {
                            join.apply(ts.max(arrived), event, &mut out);
                        }
                        if let Some(next) = join.next_expiry() {
                            let next = next.max(arrived);
                            if held.as_ref().is_none_or(|held| *held.time() > next) {
                                held = Some(cap.delayed(&next, output.output_index()));
                            }
                        }
                    });
                    if let Some(time) = batch.take() {
                        join.flush(&mut out);
                        if !out.is_empty() {
                            output.session(&time).give_iterator(out.drain(..));
                        }
                    }
                    let now = if frontier.is_empty() {
                        u64::MAX
                    } else {
                        frontier.frontier().as_option().copied().unwrap_or(0)
                    };
                    if held.as_ref().is_some_and(|held| *held.time() <= now) {
                        join.expire(now, &mut out);
                        if let Some(cap) = held.as_ref() {
                            if !out.is_empty() {
                                output.session(cap).give_iterator(out.drain(..));
                            }
                        }
                        match (join.next_expiry(), held.as_mut()) {
                            (Some(next), Some(cap)) if *cap.time() < next => cap.downgrade(&next),
                            (None, _) => held = None,
                            _ => {}
                        }
                    }
                }
            },
        );

        let config = config.clone();
        let tracked = joined.unary_frontier(
            Exchange::new(route),
            &format!("TrackModels({name})"),
            move |_initial, _info| {
                let mut models = Models::default();
                let mut registry: Registry = config
                    .models
                    .iter()
                    .map(|r| ((r.model_id.clone(), r.model_version.clone()), r.clone()))
                    .collect();
                let mut arrivals = 0u64;
                let mut orphans: BTreeMap<Id, u64> = BTreeMap::new();
                let mut unattributed = 0u64;
                // Matched pairs and commands (registrations, pins) waiting for the frontier,
                // by event time; each bucket is put in `OrderKey` order when it is released
                // (a later entry with an equal key replaces the earlier one, as a map would).
                let mut waiting: BTreeMap<u64, Vec<(OrderKey, Ordered)>> = BTreeMap::new();
                // Emptied buckets kept for reuse (at most `SPARE_BUCKETS`): a bucket per
                // millisecond, each grown from nothing and freed, kept the allocator busy
                // handing out and zeroing fresh pages.
                let mut spare: Vec<Vec<(OrderKey, Ordered)>> = Vec::new();
                // Entries of the last released bucket (see `bucket_at`).
                let mut room = 0usize;
                let mut items: Vec<Option<Ordered>> = Vec::new();
                let mut held: Option<Capability<Time>> = None;
                // The release order of a bucket: positions sorted by key, then those kept.
                let mut order: Vec<(u8, u128, usize)> = Vec::new();
                let mut released: Vec<usize> = Vec::new();
                let mut updates: Vec<Update> = Vec::new();
                // `model.correct` samples, already wrapped: handed on as one container.
                let mut samples: Vec<Tracked> = Vec::new();
                let mut emit_at: Option<Capability<Time>> = None;
                let mut unattributed_changed = false;
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&arrived) = cap.least() else { return };
                        let mut orphans_changed = false;
                        for item in data.drain(..) {
                            match item {
                                ModelInput::Counted { key, counts } => {
                                    let slot = slot_of(&mut models, &key, &config, &registry);
                                    models.states[slot].add_counts(&counts);
                                }
                                ModelInput::Duplicate { key } => {
                                    let slot = slot_of(&mut models, &key, &config, &registry);
                                    models.states[slot].duplicate();
                                }
                                ModelInput::Expired { key } => {
                                    let slot = slot_of(&mut models, &key, &config, &registry);
                                    models.states[slot].expired();
                                }
                                ModelInput::MatchedBatch { key, pairs } => {
                                    let slot = slot_of(&mut models, &key, &config, &registry);
                                    let mut pairs = pairs.into_iter().peekable();
                                    // Pairs of one batch mostly share their time: one bucket
                                    // lookup per run of equal times.
                                    while let Some(first) = pairs.next() {
                                        let ts = first.ts;
                                        let bucket = bucket_at(&mut waiting, ts, &mut spare, room);
                                        let run = std::iter::once(first).chain(std::iter::from_fn(
                                            || pairs.next_if(|pair| pair.ts == ts),
                                        ));
                                        for mut pair in run {
                                            let prediction_id =
                                                std::mem::take(&mut pair.prediction_id);
                                            let arrival = pair.arrival;
                                            bucket.push((
                                                OrderKey::Pair(prediction_id),
                                                Ordered::Pair {
                                                    slot,
                                                    arrival,
                                                    kept: Kept::of(pair),
                                                },
                                            ));
                                        }
                                    }
                                }
                                ModelInput::Registered { ts, registration } => {
                                    arrivals += 1;
                                    bucket_at(&mut waiting, ts, &mut spare, room).push((
                                        OrderKey::Command(arrivals),
                                        Ordered::Registration(registration),
                                    ));
                                }
                                ModelInput::PinBaseline { ts, pin } => {
                                    arrivals += 1;
                                    bucket_at(&mut waiting, ts, &mut spare, room)
                                        .push((OrderKey::Command(arrivals), Ordered::Pin(pin)));
                                }
                                ModelInput::OrphanExpired { model_id } => {
                                    if model_id.is_empty() {
                                        unattributed += 1;
                                        orphans_changed = true;
                                    } else {
                                        *orphans.entry(model_id.clone()).or_insert(0) += 1;
                                        for slot in models.slots_of(&model_id) {
                                            models.states[slot].orphan_expired();
                                            models.mark(slot);
                                        }
                                    }
                                }
                            }
                        }
                        if !waiting.is_empty()
                            && held.as_ref().is_none_or(|held| *held.time() > arrived)
                        {
                            held = Some(cap.delayed(&arrived, output.output_index()));
                        }
                        if emit_at.as_ref().is_none_or(|at| *at.time() > arrived) {
                            emit_at = Some(cap.delayed(&arrived, output.output_index()));
                        }
                        unattributed_changed |= orphans_changed;
                    });
                    let emit = emit_at.take();
                    let done = frontier.is_empty();
                    let now = frontier.frontier().as_option().copied().unwrap_or(u64::MAX);
                    if held.is_some() {
                        while let Some(entry) = waiting.first_entry() {
                            if !done && *entry.key() >= now {
                                break;
                            }
                            let at = *entry.key();
                            let mut bucket = entry.remove();
                            // Positions sorted, not the entries; among equal keys the
                            // later arrival ends up last.
                            order.clear();
                            order.extend(bucket.iter().enumerate().map(|(position, (key, _))| {
                                let (kind, prefix) = key.prefix();
                                (kind, prefix, position)
                            }));
                            // The position breaks the last ties, so the order is total
                            // and an unstable sort (no scratch buffer) gives the stable
                            // sort's result.
                            order.sort_unstable_by(|a, b| {
                                (a.0, a.1)
                                    .cmp(&(b.0, b.1))
                                    .then_with(|| {
                                        let (a, b) = (&bucket[a.2], &bucket[b.2]);
                                        a.0.cmp(&b.0)
                                            .then_with(|| a.1.arrival().cmp(&b.1.arrival()))
                                    })
                                    .then_with(|| a.2.cmp(&b.2))
                            });
                            // Walking backwards keeps the last of each run of equal keys.
                            released.clear();
                            // Equal keys have equal prefixes: the keys themselves are
                            // compared only when the prefixes are equal.
                            let mut previous: Option<(u8, u128, usize)> = None;
                            for &(kind, prefix, position) in order.iter().rev() {
                                let repeated = previous.is_some_and(|(k, p, at)| {
                                    (k, p) == (kind, prefix) && bucket[at].0 == bucket[position].0
                                });
                                if repeated {
                                    continue;
                                }
                                previous = Some((kind, prefix, position));
                                released.push(position);
                            }
                            room = bucket.len();
                            items.clear();
                            items.extend(bucket.drain(..).map(|(_, item)| Some(item)));
                            if spare.len() < SPARE_BUCKETS {
                                spare.push(bucket);
                            }
                            for &position in released.iter().rev() {
                                let Some(item) = items[position].take() else {
                                    continue;
                                };
                                let (slot, pair) = match item {
                                    Ordered::Pair { slot, kept, .. } => (slot, kept),
                                    Ordered::Registration(registration) => {
                                        register(
                                            &mut models,
                                            &mut registry,
                                            &registration,
                                            &config,
                                        );
                                        updates.push(Update::ModelRegistered(registration));
                                        continue;
                                    }
                                    Ordered::Pin(pin) => {
                                        pin_baseline(
                                            &mut models,
                                            &registry,
                                            &pin,
                                            at,
                                            &config,
                                            &mut updates,
                                        );
                                        continue;
                                    }
                                };
                                if config.correctness_series {
                                    samples.push(Tracked::Sample(Sample {
                                        key: models.correctness[slot].clone(),
                                        ts: at,
                                        value: if pair.correct() { 1.0 } else { 0.0 },
                                    }));
                                }
                                let model = &mut models.states[slot];
                                if let Some(trigger) = model.ordered(at, pair, &config) {
                                    updates.push(Update::RetrainingTrigger(Box::new(trigger)));
                                }
                                if model.evaluation_due(&config) {
                                    evaluate(
                                        &mut models,
                                        &registry,
                                        slot,
                                        at,
                                        &config,
                                        &mut updates,
                                    );
                                }
                                models.mark(slot);
                            }
                        }
                    }
                    // One snapshot per changed version per activation (not per input
                    // batch, nor once for the inputs and again for the ordered pairs):
                    // snapshots cost percentiles and matrices, batches are many. They go
                    // out at the earliest capability held.
                    let cap = match (emit.as_ref(), held.as_ref()) {
                        (Some(a), Some(b)) => Some(if a.time() <= b.time() { a } else { b }),
                        (a, b) => a.or(b),
                    };
                    if let Some(cap) = cap {
                        for slot in models.take_changed() {
                            let model = &models.states[slot];
                            let key = model.key();
                            let mut snapshot = model.snapshot(registration_for(&registry, key));
                            snapshot.orphans_expired =
                                orphans.get(&key.model_id).copied().unwrap_or(0);
                            updates.push(Update::ModelMetrics(Box::new(snapshot)));
                        }
                        if std::mem::take(&mut unattributed_changed) {
                            updates.push(Update::UnattributedOrphans {
                                expired: unattributed,
                            });
                        }
                        if !updates.is_empty() || !samples.is_empty() {
                            let mut session = output.session(cap);
                            session.give_iterator(
                                updates
                                    .drain(..)
                                    .map(|update| Tracked::Update(Box::new(update))),
                            );
                            if !samples.is_empty() {
                                session.give_container(&mut samples);
                            }
                        }
                    }
                    drop(emit);
                    if waiting.is_empty() {
                        held = None;
                    } else if let Some(cap) = held.as_mut() {
                        if *cap.time() < now && now != u64::MAX {
                            cap.downgrade(&now);
                        }
                    }
                }
            },
        );
        let mut parts = tracked.partition(2, |tracked| match tracked {
            Tracked::Update(_) => (0, tracked),
            Tracked::Sample(_) => (1, tracked),
        });
        let samples = parts.pop().map(|samples| {
            samples.flat_map(|tracked| match tracked {
                Tracked::Sample(sample) => Some(sample),
                Tracked::Update(_) => None,
            })
        });
        let updates = parts.pop().map(|updates| {
            updates.flat_map(|tracked| match tracked {
                Tracked::Update(update) => Some(*update),
                Tracked::Sample(_) => None,
            })
        });
        match (updates, samples) {
            (Some(updates), Some(samples)) => (updates, samples),
            _ => panic!("partition into 2 returns 2 streams"),
        }
    }
}

#[cfg(test)]
mod tests;
