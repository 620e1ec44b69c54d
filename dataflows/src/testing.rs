//! Epoch harness for operator tests: feeds batches per timely time, collects the output,
//! and checks that 1 and 4 workers agree.
//!
//! Each [`Epoch`] is sent at its `time` (the watermark its records entered at), spread
//! round-robin over the workers; then every worker advances its input to the next epoch's
//! time. After the last epoch the input closes, so every window and interval flushes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle, StreamVec};

use crate::model::Update;
use crate::Time;

/// One batch of input at one timely time.
#[derive(Debug, Clone)]
pub struct Epoch<D> {
    /// The time the batch is sent at; must not decrease from epoch to epoch.
    pub time: Time,
    /// The records.
    pub data: Vec<D>,
}

impl<D> Epoch<D> {
    /// An epoch at `time` holding `data`.
    pub fn new(time: Time, data: Vec<D>) -> Self {
        Self { time, data }
    }
}

/// Runs `build` over `epochs` on `workers` threads and returns every output record with
/// the time it was emitted at (order unspecified).
///
/// # Panics
/// Panics if timely fails to start or a worker panics (tests want that).
pub fn run_with_workers<D, O, F>(workers: usize, build: F, epochs: Vec<Epoch<D>>) -> Vec<(Time, O)>
where
    D: timely::ExchangeData + Clone + Send + Sync,
    O: Clone + Send + 'static,
    F: for<'scope> Fn(StreamVec<'scope, Time, D>) -> StreamVec<'scope, Time, O>
        + Send
        + Sync
        + 'static,
{
    run_workers(workers, false, build, epochs)
}

/// Like [`run_with_workers`], but after each epoch every worker steps until the output
/// frontier reaches the epoch's time, so operators see every epoch's frontier (event-time
/// timers fire before the input closes).
pub fn run_settled<D, O, F>(workers: usize, build: F, epochs: Vec<Epoch<D>>) -> Vec<(Time, O)>
where
    D: timely::ExchangeData + Clone + Send + Sync,
    O: Clone + Send + 'static,
    F: for<'scope> Fn(StreamVec<'scope, Time, D>) -> StreamVec<'scope, Time, O>
        + Send
        + Sync
        + 'static,
{
    run_workers(workers, true, build, epochs)
}

fn run_workers<D, O, F>(
    workers: usize,
    settle: bool,
    build: F,
    epochs: Vec<Epoch<D>>,
) -> Vec<(Time, O)>
where
    D: timely::ExchangeData + Clone + Send + Sync,
    O: Clone + Send + 'static,
    F: for<'scope> Fn(StreamVec<'scope, Time, D>) -> StreamVec<'scope, Time, O>
        + Send
        + Sync
        + 'static,
{
    let epochs = std::sync::Arc::new(epochs);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut input: InputHandleVec<Time, D> = InputHandleVec::new();
        let probe = ProbeHandle::new();
        let seen: Rc<RefCell<Vec<(Time, O)>>> = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&seen);
        worker.dataflow::<Time, _, _>(|scope| {
            let stream = input.to_stream(scope);
            build(stream)
                .inspect_core(move |event| {
                    if let Ok((stamp, data)) = event {
                        let time = stamp.iter().next().copied().unwrap_or(0);
                        sink.borrow_mut()
                            .extend(data.iter().cloned().map(|datum| (time, datum)));
                    }
                })
                .probe_with(&probe);
        });
        for epoch in epochs.iter() {
            if epoch.time > *input.time() {
                input.advance_to(epoch.time);
            }
            for (position, datum) in epoch.data.iter().enumerate() {
                if position % peers == index {
                    input.send(datum.clone());
                }
            }
            input.flush();
            worker.step();
            if settle {
                let time = *input.time();
                while probe.less_than(&time) {
                    worker.step();
                }
            }
        }
        drop(input);
        while !probe.done() {
            worker.step();
        }
        let out = seen.borrow().clone();
        out
    })
    .expect("timely starts");
    guards
        .join()
        .into_iter()
        .flat_map(|result| result.expect("worker completes"))
        .collect()
}

/// Output of [`run_epochs`]: updates in canonical form.
#[derive(Debug, Clone)]
pub struct Output {
    /// Canonical JSON lines, sorted (see [`canonical`]).
    pub lines: Vec<String>,
    /// Updates as emitted by the single-worker run.
    pub updates: Vec<(Time, Update)>,
}

impl Output {
    /// The canonical lines of one update kind.
    pub fn of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.lines
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|value| value["kind"] == kind)
            .collect()
    }
}

/// A deterministic view of an update stream: every update as a JSON line, except that the
/// intermediate snapshots of a session or a model version collapse into its final one
/// (the one that has seen the most events), and running counts of unattributed orphan
/// outcomes into the largest; sorted.
pub fn canonical(updates: &[(Time, Update)]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut sessions: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut models: BTreeMap<(String, String), ((u64, u64), String)> = BTreeMap::new();
    let mut orphans: Option<u64> = None;
    for (_, update) in updates {
        let line = serde_json::to_string(update).expect("updates serialize");
        match update {
            Update::Session(state) => {
                let entry = sessions
                    .entry(state.session_id.to_string())
                    .or_insert((0, String::new()));
                if state.events >= entry.0 {
                    *entry = (state.events, line);
                }
            }
            Update::ModelMetrics(snapshot) => {
                let entry = models
                    .entry((
                        snapshot.model_id.to_string(),
                        snapshot.model_version.to_string(),
                    ))
                    .or_insert(((0, 0), String::new()));
                let order = (snapshot.events, snapshot.ordered);
                if order >= entry.0 {
                    *entry = (order, line);
                }
            }
            Update::UnattributedOrphans { expired } => {
                orphans = orphans.max(Some(*expired));
            }
            _ => lines.push(line),
        }
    }
    if let Some(expired) = orphans {
        let update = Update::UnattributedOrphans { expired };
        lines.push(serde_json::to_string(&update).expect("updates serialize"));
    }
    lines.extend(sessions.into_values().map(|(_, line)| line));
    lines.extend(models.into_values().map(|(_, line)| line));
    lines.sort();
    lines
}

/// Runs `build` with 1 and with 4 workers, asserts both give the same canonical output,
/// and returns it.
///
/// # Panics
/// Panics when the runs differ.
pub fn run_epochs<D, F>(build: F, epochs: Vec<Epoch<D>>) -> Output
where
    D: timely::ExchangeData + Clone + Send + Sync,
    F: for<'scope> Fn(StreamVec<'scope, Time, D>) -> StreamVec<'scope, Time, Update>
        + Send
        + Sync
        + Clone
        + 'static,
{
    let one = run_with_workers(1, build.clone(), epochs.clone());
    let four = run_with_workers(4, build, epochs);
    let lines = canonical(&one);
    assert_eq!(lines, canonical(&four), "1 and 4 workers disagree");
    Output {
        lines,
        updates: one,
    }
}
