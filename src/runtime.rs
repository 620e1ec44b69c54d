//! The engine: timely workers running the analytics pipeline, fed from tokio (or a reader
//! thread) through bounded channels, with results handed to per-worker sinks.
//!
//! ```text
//!   Ingest ──bounded mpsc + SyncActivator──► [worker i: IngestSource ─► analytics ─► sink i]
//! ```
//!
//! Each worker's source drains its channel without blocking, stamps every record it emits
//! with its current watermark (max event time seen minus the allowed lateness, or a
//! watermark pushed from outside when input is idle) and parks when there is nothing to
//! do, so an idle engine uses no CPU. Dropping the senders closes the sources; the
//! dataflow then flushes every open window and the workers exit.
//!
//! **Bounded work in flight.** timely's channels between operators and workers are
//! unbounded, so a source that reads faster than the dataflow (or one worker of it, such
//! as the session predictor's worker 0) can finish would let memory grow without limit.
//! Each source therefore counts the events it has released whose timestamps the dataflow's
//! output frontier has not yet passed, and stops reading its queue while that count is at
//! least `max_in_flight` and the frontier trails every local source's watermark — that
//! is, while operators, not inputs, hold it back. (When a source holds the frontier back,
//! it or its peer must read on, or nothing could move: a producer blocked on one full queue
//! could otherwise wait for a worker that waits for the producer's next batch.) Its bounded
//! queue then fills and ingest reports overload (HTTP 503, MCP error, a waiting Kafka
//! consumer) instead of the process growing; the pauses are counted
//! (`megamind_engine_backpressure_pauses_total`) and the events in flight are a gauge.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use megamind_connectors::kafka::progress::Admission;
use megamind_connectors::kafka::{DeadLetter, OutputHandle, PartitionBatch, PartitionShared};
use megamind_dataflows::model::decode::{decode_event, DecodeLimits};
use megamind_dataflows::model::{DataError, ErrorReason, Event, Update};
use megamind_dataflows::pipelines::{analytics, AnalyticsConfig};
use megamind_dataflows::time::{Clock, SystemClock};
use megamind_dataflows::Time;
use timely::communication::Config as CommunicationConfig;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::Inspect;
use timely::scheduling::SyncActivator;
use timely::WorkerConfig;
use tokio::sync::mpsc;

use crate::metrics::{EngineMetrics, UPDATE_KINDS};

/// Most queue messages one source activation takes.
const MAX_MESSAGES_PER_ACTIVATION: usize = 256;
/// Most events one source activation emits (it stops after the message that crosses this).
const MAX_EVENTS_PER_ACTIVATION: u64 = 16_384;

/// A message to one worker's source.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Decoded events.
    Events(Vec<Event>),
    /// Raw NDJSON lines to decode on the worker (replay), stamped with `default_ts` when
    /// they carry no `ts`.
    Lines {
        /// Complete lines.
        chunk: Vec<u8>,
        /// Time for events without `ts`.
        default_ts: u64,
    },
    /// Advance the watermark to at least this time (idle input, or a source's own progress).
    /// Ignored by workers that read Kafka partitions: their partitions set the watermark.
    Watermark(u64),
    /// Raw messages of one Kafka partition owned by this worker.
    Partition(PartitionBatch),
}

/// Receives the updates of one worker.
pub trait UpdateSink {
    /// A batch of updates from the dataflow.
    fn deliver(&mut self, updates: &[Update]);
    /// A batch of updates from the dataflow, none of event time before `time`.
    fn deliver_at(&mut self, time: Time, updates: &[Update]) {
        let _ = time;
        self.deliver(updates);
    }
    /// The worker's output frontier moved (`None`: the dataflow is complete).
    fn frontier(&mut self, _frontier: Option<Time>) {}
    /// The worker is shutting down.
    fn finish(&mut self) {}
}

/// Builds the sink of each worker, given its global index.
pub type SinkFactory = Arc<dyn Fn(usize) -> Box<dyn UpdateSink> + Send + Sync>;

/// Where this process sits in a timely cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This process's index.
    pub process: usize,
    /// `host:port` of every process, in order.
    pub addresses: Vec<String>,
}

/// How to run the engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Worker threads in this process.
    pub workers: usize,
    /// Cluster placement, if more than one process.
    pub cluster: Option<ClusterConfig>,
    /// The dataflow.
    pub analytics: AnalyticsConfig,
    /// How far the watermark trails the newest event.
    pub allowed_lateness: Duration,
    /// Batches buffered per worker.
    pub queue_capacity: usize,
    /// Decode limits for raw lines.
    pub limits: DecodeLimits,
    /// Kafka partitions of each local worker: when set, partitions drive the watermark.
    pub kafka: Option<KafkaInputs>,
    /// Events a worker's source may have released that the output frontier has not passed
    /// before it stops reading (see the module docs).
    pub max_in_flight: u64,
}

/// What one source has released that the output frontier has not passed yet.
#[derive(Debug, Default)]
struct InFlight {
    /// `(timestamp, events released at it)`, oldest first.
    by_time: VecDeque<(Time, u64)>,
    /// Sum of the counts.
    events: u64,
}

impl InFlight {
    fn released(&mut self, time: Time, events: u64) {
        if events == 0 {
            return;
        }
        match self.by_time.back_mut() {
            Some((last, count)) if *last == time => *count += events,
            _ => self.by_time.push_back((time, events)),
        }
        self.events += events;
    }

    /// Forgets what the frontier has passed; returns how many events that was.
    fn passed(&mut self, frontier: Time) -> u64 {
        let mut done = 0;
        while let Some(&(time, count)) = self.by_time.front() {
            if time >= frontier {
                break;
            }
            self.by_time.pop_front();
            done += count;
        }
        self.events -= done;
        done
    }
}

/// What the workers of a Kafka-fed engine need.
#[derive(Clone, Debug)]
pub struct KafkaInputs {
    /// Partitions per local worker.
    pub partitions: Vec<Vec<Arc<PartitionShared>>>,
    /// Where malformed messages go, when a dead-letter topic is configured.
    pub dead_letters: Option<OutputHandle>,
    /// Events stamped more than this after their Kafka timestamp are rejected.
    pub max_future_skew: Duration,
}

/// Decodes a partition batch on its worker: the per-partition lateness rule, the future
/// check against the message's own timestamp (never the wall clock, so a re-read decides
/// the same), errors counted and dead-lettered.
fn decode_partition_batch(
    batch: &PartitionBatch,
    limits: &DecodeLimits,
    inputs: &KafkaInputs,
    metrics: &EngineMetrics,
) -> Vec<Event> {
    let shared = &batch.partition;
    let skew = megamind_dataflows::time::duration_ms(inputs.max_future_skew);
    let mut events = Vec::with_capacity(batch.records.len());
    let mut late = 0u64;
    let mut progress = shared.progress();
    for record in &batch.records {
        let payload = batch.payload(record);
        let decoded =
            decode_event(payload, limits, record.timestamp.unwrap_or(0)).and_then(|event| {
                match record.timestamp {
                    Some(stamp) if event.ts > stamp.saturating_add(skew) => Err(DataError::field(
                        ErrorReason::FutureTimestamp,
                        "ts",
                        format!(
                            "{} ms after the message's kafka timestamp (max_future_skew {} ms)",
                            event.ts - stamp,
                            skew
                        ),
                    )),
                    _ => Ok(event),
                }
            });
        match decoded {
            Ok(event) => match progress.admit(event.ts) {
                Admission::Admitted => events.push(event),
                Admission::Late { .. } => late += 1,
            },
            Err(error) => {
                shared.malformed.fetch_add(1, Ordering::Relaxed);
                metrics.reject(error.reason, 1);
                if let Some(dead_letters) = &inputs.dead_letters {
                    dead_letters.dead_letter(DeadLetter {
                        topic: shared.topic.clone(),
                        partition: shared.partition,
                        offset: record.offset,
                        payload: payload.to_vec(),
                        reason: error.reason.as_str(),
                        field: error.field.as_deref().map(str::to_owned),
                        message: error.message.to_string(),
                    });
                }
            }
        }
    }
    progress.end_batch(batch.next_offset);
    drop(progress);
    if late > 0 {
        shared.late.fetch_add(late, Ordering::Relaxed);
        metrics.reject(ErrorReason::Late, late);
    }
    events
}

/// The watermark of a worker's partitions: the smallest over partitions that are not idle;
/// `None` while an active partition has no event yet (hold); when every partition is idle
/// (or the worker has none), the wall clock minus the lateness, so quiet input still closes
/// windows.
fn partitions_watermark(
    partitions: &[Arc<PartitionShared>],
    wall_ms: u64,
    lateness: u64,
) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    let mut active = false;
    for partition in partitions {
        if partition.is_idle() {
            continue;
        }
        active = true;
        let watermark = partition.progress().watermark()?;
        lowest = Some(lowest.map_or(watermark, |seen| seen.min(watermark)));
    }
    if active {
        lowest
    } else {
        Some(wall_ms.saturating_sub(lateness))
    }
}

/// Errors starting the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Timely refused to start (bad cluster addresses, ports in use, ...).
    #[error("timely failed to start: {0}")]
    Timely(String),
    /// A worker failed while starting.
    #[error("worker {0} failed to start")]
    WorkerStart(usize),
}

/// A running engine.
pub struct Engine {
    senders: Vec<mpsc::Sender<WorkerMsg>>,
    activators: Vec<SyncActivator>,
    guards: Option<timely::communication::initialize::WorkerGuards<()>>,
    first_worker: usize,
    total_workers: usize,
    metrics: Arc<EngineMetrics>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.senders.len())
            .field("first_worker", &self.first_worker)
            .field("total_workers", &self.total_workers)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the workers and waits until each has built its dataflow.
    ///
    /// # Errors
    /// Timely fails to start (for example, cluster ports in use), or a worker dies early.
    pub fn start(
        config: EngineConfig,
        sinks: SinkFactory,
        metrics: Arc<EngineMetrics>,
    ) -> Result<Engine, EngineError> {
        let workers = config.workers.max(1);
        let (communication, first_worker, total_workers) = match &config.cluster {
            None => (CommunicationConfig::Process(workers), 0, workers),
            Some(cluster) => (
                CommunicationConfig::Cluster {
                    threads: workers,
                    process: cluster.process,
                    addresses: cluster.addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                cluster.process * workers,
                cluster.addresses.len() * workers,
            ),
        };
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
            senders.push(sender);
            receivers.push(Some(receiver));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let (activator_tx, activator_rx) = std::sync::mpsc::channel::<(usize, SyncActivator)>();
        let activator_tx = Mutex::new(activator_tx);
        let worker_metrics = Arc::clone(&metrics);
        // Each local source's capability time (`Time::MAX` once closed), for the in-flight
        // gate's "who holds the frontier" test.
        let source_times: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
            (0..workers)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        );
        let timely_config = timely::Config {
            communication,
            worker: WorkerConfig::default(),
        };
        let guards = timely::execute(timely_config, move |worker| {
            let index = worker.index();
            let local = index - first_worker;
            let receiver = receivers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(local)
                .and_then(Option::take);
            let Some(mut receiver) = receiver else {
                panic!("invariant: worker {index} owns local channel {local}");
            };
            let sink: Rc<RefCell<Box<dyn UpdateSink>>> = Rc::new(RefCell::new(sinks(index)));
            // The output frontier as this worker last saw it (`Time::MAX` once complete).
            let output_frontier: Rc<Cell<Time>> = Rc::new(Cell::new(0));
            let max_in_flight = config.max_in_flight.max(1);
            let source_times = Arc::clone(&source_times);
            let lateness = megamind_dataflows::time::duration_ms(config.allowed_lateness);
            let metrics = Arc::clone(&worker_metrics);
            let limits = config.limits.clone();
            let analytics_config = config.analytics.clone();
            let kafka = config.kafka.clone();
            let partitions: Option<Vec<Arc<PartitionShared>>> = kafka
                .as_ref()
                .map(|kafka| kafka.partitions.get(local).cloned().unwrap_or_default());
            let activator_tx = activator_tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            worker.dataflow::<Time, _, _>(|scope| {
                let frontier_seen = Rc::clone(&output_frontier);
                let events = source::<_, CapacityContainerBuilder<Vec<Event>>, _, _>(
                    scope,
                    "IngestSource",
                    |capability, info| {
                        let address = info.address.to_vec();
                        let _ =
                            activator_tx.send((local, scope.worker().sync_activator_for(address)));
                        let reschedule = scope.activator_for(Rc::clone(&info.address));
                        let reschedule_after = scope.activator_for(Rc::clone(&info.address));
                        let mut capability = Some(capability);
                        let mut max_event_time: Option<u64> = None;
                        let mut pushed: u64 = 0;
                        let mut in_flight = InFlight::default();
                        let mut paused = false;
                        move |output| {
                            let Some(cap) = capability.as_mut() else {
                                return;
                            };
                            let frontier = frontier_seen.get();
                            let done = in_flight.passed(frontier);
                            if done > 0 {
                                metrics.in_flight.fetch_sub(done, Ordering::Relaxed);
                            }
                            let sources_min = source_times
                                .iter()
                                .map(|time| time.load(Ordering::Relaxed))
                                .min()
                                .unwrap_or(Time::MAX);
                            let gated = in_flight.events >= max_in_flight && frontier < sources_min;
                            if gated && !paused {
                                metrics.backpressure_pauses.fetch_add(1, Ordering::Relaxed);
                            }
                            paused = gated;
                            let mut closed = false;
                            let mut accepted = 0u64;
                            let mut drained = false;
                            let released_at = *cap.time();
                            // Bounded work per activation keeps the worker responsive and the
                            // data in flight between operators small: downstream operators run
                            // only after this activation returns.
                            let budget = if gated {
                                0
                            } else {
                                MAX_MESSAGES_PER_ACTIVATION
                            };
                            for _ in 0..budget {
                                if accepted >= MAX_EVENTS_PER_ACTIVATION {
                                    break;
                                }
                                match receiver.try_recv() {
                                    Ok(WorkerMsg::Events(events)) => {
                                        accepted += events.len() as u64;
                                        if let Some(max) = events.iter().map(|event| event.ts).max()
                                        {
                                            max_event_time = Some(
                                                max_event_time.map_or(max, |seen| seen.max(max)),
                                            );
                                        }
                                        output.session(&*cap).give_iterator(events.into_iter());
                                    }
                                    Ok(WorkerMsg::Lines { chunk, default_ts }) => {
                                        let mut session = output.session(&*cap);
                                        let mut max = max_event_time;
                                        for line in megamind_connectors::codec::json::lines(&chunk)
                                        {
                                            if line.iter().all(u8::is_ascii_whitespace) {
                                                continue;
                                            }
                                            match decode_event(line, &limits, default_ts) {
                                                Ok(event) => {
                                                    accepted += 1;
                                                    max =
                                                        Some(max.map_or(event.ts, |seen: u64| {
                                                            seen.max(event.ts)
                                                        }));
                                                    session.give(event);
                                                }
                                                Err(error) => metrics.reject(error.reason, 1),
                                            }
                                        }
                                        max_event_time = max;
                                    }
                                    Ok(WorkerMsg::Watermark(time)) => pushed = pushed.max(time),
                                    Ok(WorkerMsg::Partition(batch)) => {
                                        if let Some(inputs) = &kafka {
                                            let events = decode_partition_batch(
                                                &batch, &limits, inputs, &metrics,
                                            );
                                            accepted += events.len() as u64;
                                            output.session(&*cap).give_iterator(events.into_iter());
                                        }
                                    }
                                    Err(mpsc::error::TryRecvError::Empty) => {
                                        drained = true;
                                        break;
                                    }
                                    Err(mpsc::error::TryRecvError::Disconnected) => {
                                        closed = true;
                                        break;
                                    }
                                }
                            }
                            if accepted > 0 {
                                metrics
                                    .events_accepted
                                    .fetch_add(accepted, Ordering::Relaxed);
                                metrics.in_flight.fetch_add(accepted, Ordering::Relaxed);
                                in_flight.released(released_at, accepted);
                            }
                            let watermark = match &partitions {
                                // Kafka: only the partitions move time (see `partitions_watermark`).
                                Some(partitions) => {
                                    partitions_watermark(partitions, SystemClock.now_ms(), lateness)
                                        .unwrap_or(0)
                                }
                                None => max_event_time
                                    .map_or(0, |max| max.saturating_sub(lateness))
                                    .max(pushed),
                            };
                            if watermark > *cap.time() {
                                cap.downgrade(&watermark);
                                metrics.watermark_ms.fetch_max(watermark, Ordering::Relaxed);
                            }
                            if let Some(time) = source_times.get(local) {
                                time.store(
                                    if closed { Time::MAX } else { *cap.time() },
                                    Ordering::Relaxed,
                                );
                            }
                            if closed {
                                capability = None;
                            } else if gated {
                                // Look again once the dataflow has had time to catch up.
                                reschedule_after.activate_after(Duration::from_millis(1));
                            } else if !drained {
                                // Stopped at a work bound: come back for the rest (and to notice
                                // a disconnect, which no sender will announce).
                                reschedule.activate();
                            } else if partitions.is_some() {
                                // Partition idleness and the wall clock move the watermark
                                // without a message: look again shortly.
                                reschedule_after.activate_after(Duration::from_millis(50));
                            }
                        }
                    },
                );
                let sink = Rc::clone(&sink);
                analytics(events, &analytics_config).inspect_core(move |event| match event {
                    Ok((stamp, updates)) => {
                        let time = stamp.least().copied().unwrap_or(0);
                        sink.borrow_mut().deliver_at(time, updates)
                    }
                    Err(frontier) => {
                        output_frontier.set(frontier.first().copied().unwrap_or(Time::MAX));
                        sink.borrow_mut().frontier(frontier.first().copied())
                    }
                });
            });
            while worker.step_or_park(None) {}
            sink.borrow_mut().finish();
        })
        .map_err(EngineError::Timely)?;

        let mut activators: Vec<Option<SyncActivator>> = vec![None; workers];
        for _ in 0..workers {
            match activator_rx.recv_timeout(Duration::from_secs(30)) {
                Ok((local, activator)) => activators[local] = Some(activator),
                Err(_) => break,
            }
        }
        let activators: Vec<SyncActivator> = activators
            .into_iter()
            .enumerate()
            .map(|(local, activator)| {
                activator.ok_or(EngineError::WorkerStart(first_worker + local))
            })
            .collect::<Result<_, _>>()?;
        Ok(Engine {
            senders,
            activators,
            guards: Some(guards),
            first_worker,
            total_workers,
            metrics,
        })
    }

    /// A handle for feeding the workers of this process.
    pub fn feeder(&self) -> Feeder {
        Feeder {
            senders: self.senders.clone(),
            activators: self.activators.clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Index of this process's first worker, and the number of workers in the cluster.
    pub fn worker_range(&self) -> (usize, usize) {
        (self.first_worker, self.total_workers)
    }

    /// Number of local workers.
    pub fn local_workers(&self) -> usize {
        self.senders.len()
    }

    /// Closes the inputs, lets the dataflow flush every window, and waits for the workers.
    /// Blocks: call it from a blocking context.
    ///
    /// # Errors
    /// The message of the first worker that panicked.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.senders.clear();
        for activator in &self.activators {
            let _ = activator.activate();
        }
        match self.guards.take() {
            Some(guards) => guards
                .join()
                .into_iter()
                .collect::<Result<Vec<()>, String>>()
                .map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Why a feed was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// Every queue is full; try again later.
    #[error("ingest queues are full")]
    Overloaded,
    /// The engine is shutting down.
    #[error("the engine is stopped")]
    Stopped,
    /// The write-ahead log could not record the batch; nothing was accepted.
    #[error("the event log is unavailable")]
    Storage,
    /// Monitoring was stopped (`realtime_stop_monitoring`); start it again to ingest.
    #[error("monitoring is stopped")]
    Paused,
}

/// Room reserved in one worker's queue: sending through it cannot fail for lack of space.
pub struct Reservation {
    permit: mpsc::OwnedPermit<WorkerMsg>,
    activator: Option<SyncActivator>,
}

impl Reservation {
    /// Enqueues `message` and wakes the worker.
    pub fn send(self, message: WorkerMsg) {
        let _sender = self.permit.send(message);
        if let Some(activator) = self.activator {
            let _ = activator.activate();
        }
    }
}

/// Sends messages to the workers of this process. Cheap to clone.
#[derive(Clone)]
pub struct Feeder {
    senders: Vec<mpsc::Sender<WorkerMsg>>,
    activators: Vec<SyncActivator>,
    metrics: Arc<EngineMetrics>,
}

impl std::fmt::Debug for Feeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeder")
            .field("workers", &self.senders.len())
            .finish()
    }
}

impl Feeder {
    /// Number of local workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Batches waiting in all queues.
    pub fn queue_depth(&self) -> usize {
        self.senders
            .iter()
            .map(|sender| sender.max_capacity() - sender.capacity())
            .sum()
    }

    /// Total queue capacity in batches.
    pub fn queue_capacity(&self) -> usize {
        self.senders.iter().map(mpsc::Sender::max_capacity).sum()
    }

    /// Tries to enqueue `message` for local worker `worker` without waiting.
    ///
    /// # Errors
    /// [`FeedError::Overloaded`] when that queue is full (the message is returned inside
    /// no error: callers pick another worker or give up), [`FeedError::Stopped`] when the
    /// engine is gone.
    pub fn try_send(
        &self,
        worker: usize,
        message: WorkerMsg,
    ) -> Result<(), (FeedError, WorkerMsg)> {
        let Some(sender) = self.senders.get(worker) else {
            return Err((FeedError::Stopped, message));
        };
        match sender.try_send(message) {
            Ok(()) => {
                self.wake(worker);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(message)) => Err((FeedError::Overloaded, message)),
            Err(mpsc::error::TrySendError::Closed(message)) => Err((FeedError::Stopped, message)),
        }
    }

    /// Enqueues `message` for local worker `worker`, waiting up to `timeout` for room.
    ///
    /// # Errors
    /// [`FeedError::Overloaded`] after the timeout, [`FeedError::Stopped`] when the engine
    /// is gone.
    ///
    /// # Cancel safety
    /// Cancelling drops the message.
    pub async fn send(
        &self,
        worker: usize,
        message: WorkerMsg,
        timeout: Duration,
    ) -> Result<(), FeedError> {
        let Some(sender) = self.senders.get(worker) else {
            return Err(FeedError::Stopped);
        };
        match tokio::time::timeout(timeout, sender.send(message)).await {
            Ok(Ok(())) => {
                self.wake(worker);
                Ok(())
            }
            Ok(Err(_)) => Err(FeedError::Stopped),
            Err(_) => {
                self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                Err(FeedError::Overloaded)
            }
        }
    }

    /// Reserves room in local worker `worker`'s queue, waiting up to `timeout`.
    ///
    /// # Errors
    /// [`FeedError::Overloaded`] after the timeout, [`FeedError::Stopped`] when the engine
    /// is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is reserved unless this returns.
    pub async fn reserve(
        &self,
        worker: usize,
        timeout: Duration,
    ) -> Result<Reservation, FeedError> {
        let sender = self.senders.get(worker).ok_or(FeedError::Stopped)?.clone();
        match tokio::time::timeout(timeout, sender.reserve_owned()).await {
            Ok(Ok(permit)) => Ok(Reservation {
                permit,
                activator: self.activators.get(worker).cloned(),
            }),
            Ok(Err(_)) => Err(FeedError::Stopped),
            Err(_) => {
                self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                Err(FeedError::Overloaded)
            }
        }
    }

    /// Blocking send from a plain thread (replay reader).
    ///
    /// # Errors
    /// [`FeedError::Stopped`] when the engine is gone.
    pub fn blocking_send(&self, worker: usize, message: WorkerMsg) -> Result<(), FeedError> {
        let sender = self.senders.get(worker).ok_or(FeedError::Stopped)?;
        sender
            .blocking_send(message)
            .map_err(|_| FeedError::Stopped)?;
        self.wake(worker);
        Ok(())
    }

    /// Pushes a watermark to every local worker (best effort: a full queue already has
    /// data that will advance it).
    pub fn advance_all(&self, watermark: u64) {
        self.metrics
            .watermark_ms
            .fetch_max(watermark, Ordering::Relaxed);
        for worker in 0..self.senders.len() {
            let _ = self.try_send(worker, WorkerMsg::Watermark(watermark));
        }
    }

    fn wake(&self, worker: usize) {
        if let Some(activator) = self.activators.get(worker) {
            let _ = activator.activate();
        }
    }
}

/// Counts updates by kind, then passes them on.
pub struct CountingSink<S> {
    inner: S,
    metrics: Arc<EngineMetrics>,
}

impl<S> CountingSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Arc<EngineMetrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<S> CountingSink<S> {
    fn count(&self, updates: &[Update]) {
        let mut counts = [0u64; UPDATE_KINDS.len()];
        let mut late = 0u64;
        for update in updates {
            let position = match update {
                Update::Window(_) => 0,
                Update::SeriesIdle { .. } => 1,
                Update::Session(_) => 2,
                Update::SessionSample(_) => 3,
                Update::Breach(_) => 4,
                Update::Alert(_) => 5,
                Update::Rejected { error, .. } => {
                    if error.reason == megamind_dataflows::model::ErrorReason::Late {
                        late += 1;
                    }
                    6
                }
                Update::AlertRecord(_) => 7,
                Update::CommandRejected(_) => 8,
                Update::ModelMetrics(_) => 9,
                Update::RetrainingTrigger(_) => 10,
                Update::UnattributedOrphans { .. } => 11,
                Update::SessionPrediction(_) => 12,
                Update::SuccessModel(_) => 13,
                Update::Forecast(_) => 14,
                Update::Insight(_) => 15,
                Update::Anomaly(_) => 16,
                Update::AnomalyCounters(counters) => {
                    self.metrics.count_anomaly(0, counters.scored);
                    self.metrics.count_anomaly(1, counters.anomalous);
                    self.metrics.count_anomaly(3, counters.refits);
                    17
                }
                Update::NovelError(_) => 18,
                Update::ErrorFamilies(families) => {
                    self.metrics.count_anomaly(2, families.novel);
                    self.metrics.count_anomaly(4, families.refits);
                    self.metrics.count_anomaly(5, families.truncated);
                    19
                }
                Update::ModelRegistered(_) => 20,
                Update::Silence(_) => 21,
                Update::RuleChange(_) => 22,
                Update::BaselinePin(_) => 23,
            };
            counts[position] += 1;
        }
        for (position, count) in counts.into_iter().enumerate() {
            if count > 0 {
                self.metrics.count_update(position, count);
            }
        }
        if late > 0 {
            self.metrics
                .reject(megamind_dataflows::model::ErrorReason::Late, late);
        }
    }
}

impl<S: UpdateSink> UpdateSink for CountingSink<S> {
    fn deliver(&mut self, updates: &[Update]) {
        self.count(updates);
        self.inner.deliver(updates);
    }

    fn deliver_at(&mut self, time: Time, updates: &[Update]) {
        self.count(updates);
        self.inner.deliver_at(time, updates);
    }

    fn frontier(&mut self, frontier: Option<Time>) {
        if let Some(time) = frontier {
            self.metrics
                .output_frontier_ms
                .fetch_max(time, Ordering::Relaxed);
        }
        self.inner.frontier(frontier);
    }

    fn finish(&mut self) {
        self.inner.finish();
    }
}

/// Applies updates to the shared views.
pub struct ViewsSink {
    views: Arc<crate::views::Views>,
    alerts: Option<AlertDispatch>,
}

/// Where a sink hands alert changes for notification, and whether it may yet.
#[derive(Debug, Clone)]
pub struct AlertDispatch {
    /// The dispatcher's queue.
    pub handle: megamind_connectors::notify::route::DispatchHandle,
    /// Alert changes are offered only at event times after this one (ms): the largest
    /// time replayed from the event log on start, whose alert changes were notified
    /// before the restart and are not sent again (0: nothing replayed; `u64::MAX` until
    /// the replay is done).
    pub arm_after: Arc<std::sync::atomic::AtomicU64>,
}

impl ViewsSink {
    /// A sink into `views`.
    pub fn new(views: Arc<crate::views::Views>) -> Self {
        Self {
            views,
            alerts: None,
        }
    }

    /// Also offers every alert change to the notification dispatcher (never blocking).
    pub fn with_alert_dispatch(mut self, dispatch: AlertDispatch) -> Self {
        self.alerts = Some(dispatch);
        self
    }
}

impl UpdateSink for ViewsSink {
    fn deliver(&mut self, updates: &[Update]) {
        self.views.apply(updates.to_vec());
    }

    fn deliver_at(&mut self, time: Time, updates: &[Update]) {
        if let Some(dispatch) = &self.alerts {
            // Changes at replayed times were notified before the restart.
            let after = dispatch
                .arm_after
                .load(std::sync::atomic::Ordering::Acquire);
            if after == 0 || (after != u64::MAX && time > after) {
                dispatch
                    .handle
                    .offer_all(updates.iter().filter_map(|update| match update {
                        Update::AlertRecord(record) => Some(&**record),
                        _ => None,
                    }));
            }
        }
        self.deliver(updates);
    }
}

impl megamind_connectors::kafka::BatchTarget for Feeder {
    fn try_deliver(
        &self,
        local_worker: usize,
        batch: PartitionBatch,
    ) -> Result<(), PartitionBatch> {
        match self.try_send(local_worker, WorkerMsg::Partition(batch)) {
            Ok(()) => Ok(()),
            Err((FeedError::Overloaded, WorkerMsg::Partition(batch))) => Err(batch),
            // The engine is stopping: the batch is not applied, and its offsets are not
            // committed past it, so nothing is lost.
            Err(_) => Ok(()),
        }
    }
}
