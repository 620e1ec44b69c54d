//! The Kafka source: one consumer thread per local timely worker, each reading the
//! partitions statically assigned to that worker, handing raw batches to it (the worker
//! decodes them and applies the per-partition event-time rules of [`super::progress`]),
//! pausing its partitions when the worker's queue is full, and committing rewind positions.
//!
//! Partitions are numbered across all topics (topic order, then partition) and partition
//! `n` belongs to global worker `n % total_workers`, so every process of a timely cluster
//! computes the same assignment without a consumer-group rebalance. Offsets are committed
//! under the configured group with manual assignment.
//!
//! **What is committed.** Not the read position, but the position a restart must re-read
//! from: the latest batch boundary before which every event is older than the durable
//! output frontier minus the recompute horizon (window length plus a few slides). The
//! commit's metadata records that frontier and the partition's newest event time at the
//! boundary. The frontier used is the smallest one any process of the group has committed,
//! so a cluster in which one process is behind still rewinds far enough for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use megamind_dataflows::time::{duration_ms, Clock, Stopwatch};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::config::{KafkaConfig, StartFrom};
use super::progress::{parse_metadata, Checkpoint, PartitionProgress};
use super::KafkaError;
use crate::store::results::CheckpointJournal;

/// How long broker requests made outside the poll loop may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idleness is checked and lag refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// Checkpoints kept per partition (thinned when full; rewinds only get coarser).
const CHECKPOINTS_PER_PARTITION: usize = 4096;
/// How long [`KafkaSource::stop`] waits for the consumer threads to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition, shared by its consumer thread, the worker that owns it, and status.
#[derive(Debug)]
pub struct PartitionShared {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Global worker that owns it.
    pub worker: usize,
    progress: Mutex<PartitionProgress>,
    idle: AtomicBool,
    paused: AtomicBool,
    fetched: AtomicI64,
    high_watermark: AtomicI64,
    committed: AtomicI64,
    /// Messages read.
    pub consumed: AtomicU64,
    /// Events dropped as late (per-partition rule).
    pub late: AtomicU64,
    /// Messages that did not decode.
    pub malformed: AtomicU64,
}

impl PartitionShared {
    fn new(topic: String, partition: i32, worker: usize, start: Checkpoint, lateness: u64) -> Self {
        Self {
            topic,
            partition,
            worker,
            progress: Mutex::new(PartitionProgress::new(
                start,
                lateness,
                CHECKPOINTS_PER_PARTITION,
            )),
            idle: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            fetched: AtomicI64::new(start.offset),
            high_watermark: AtomicI64::new(-1),
            committed: AtomicI64::new(-1),
            consumed: AtomicU64::new(0),
            late: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    /// The partition's event-time progress (held by the owning worker while it applies a
    /// batch, and briefly by the committer).
    pub fn progress(&self) -> MutexGuard<'_, PartitionProgress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the partition is idle (no message for `idle_after` and caught up): it then
    /// does not hold back the watermark.
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    /// What status reports about the partition.
    pub fn status(&self) -> PartitionStatus {
        let (processed, newest, watermark) = {
            let progress = self.progress();
            (
                progress.next_offset(),
                progress.newest(),
                progress.watermark(),
            )
        };
        let high = self.high_watermark.load(Ordering::Relaxed);
        let fetched = self.fetched.load(Ordering::Relaxed);
        PartitionStatus {
            topic: self.topic.clone(),
            partition: self.partition,
            worker: self.worker,
            processed_offset: processed,
            fetched_offset: fetched,
            high_watermark: (high >= 0).then_some(high),
            lag: (high >= 0).then(|| (high - processed).max(0)),
            committed_offset: {
                let committed = self.committed.load(Ordering::Relaxed);
                (committed >= 0).then_some(committed)
            },
            newest_event_ms: newest,
            watermark_ms: watermark,
            idle: self.is_idle(),
            paused: self.paused.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }
}

/// A partition, as reported by status and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Owning global worker.
    pub worker: usize,
    /// Next offset the worker will apply.
    pub processed_offset: i64,
    /// Next offset the consumer will read.
    pub fetched_offset: i64,
    /// The broker's high watermark (next offset to be written), when known.
    pub high_watermark: Option<i64>,
    /// Messages written but not yet applied.
    pub lag: Option<i64>,
    /// The committed rewind position.
    pub committed_offset: Option<i64>,
    /// Newest event time applied, ms.
    pub newest_event_ms: Option<u64>,
    /// The partition's watermark, ms.
    pub watermark_ms: Option<u64>,
    /// Idle (not holding back the watermark).
    pub idle: bool,
    /// Paused by backpressure right now.
    pub paused: bool,
    /// Messages read.
    pub consumed: u64,
    /// Events dropped as late.
    pub late: u64,
    /// Messages that did not decode.
    pub malformed: u64,
}

/// One record of a batch: where its value lies in the batch's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord {
    /// Kafka offset.
    pub offset: i64,
    /// Kafka timestamp, ms (used when the event has no `ts`).
    pub timestamp: Option<u64>,
    start: usize,
    end: usize,
}

/// Consecutive messages of one partition, handed to the owning worker.
#[derive(Debug)]
pub struct PartitionBatch {
    /// The partition.
    pub partition: Arc<PartitionShared>,
    /// The records, in offset order.
    pub records: Vec<RawRecord>,
    data: Vec<u8>,
    /// The offset after the last record.
    pub next_offset: i64,
}

impl PartitionBatch {
    fn new(partition: Arc<PartitionShared>) -> Self {
        Self {
            partition,
            records: Vec::new(),
            data: Vec::new(),
            next_offset: 0,
        }
    }

    fn push(&mut self, offset: i64, timestamp: Option<u64>, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.records.push(RawRecord {
            offset,
            timestamp,
            start,
            end: self.data.len(),
        });
        self.next_offset = offset + 1;
    }

    /// The value of `record`.
    pub fn payload(&self, record: &RawRecord) -> &[u8] {
        self.data.get(record.start..record.end).unwrap_or_default()
    }

    /// Bytes of values held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// Where batches go: the queue of a local worker.
pub trait BatchTarget: Send + Sync {
    /// Enqueues without waiting; gives the batch back when the queue is full.
    ///
    /// # Errors
    /// The queue is full (the batch is returned).
    fn try_deliver(&self, local_worker: usize, batch: PartitionBatch)
        -> Result<(), PartitionBatch>;
}

/// Counters of the Kafka source.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Batches handed to workers.
    pub batches: AtomicU64,
    /// Times a consumer paused its partitions because its worker's queue was full.
    pub pauses: AtomicU64,
    /// Successful commits.
    pub commits: AtomicU64,
    /// Failed commits (retried at the next interval).
    pub commit_failures: AtomicU64,
    /// Errors reported by poll.
    pub poll_errors: AtomicU64,
    /// Times a partition's next message was not at the next offset (compacted topics,
    /// transaction markers).
    pub offset_gaps: AtomicU64,
}

/// The partitions of this process, planned before the engine starts.
#[derive(Debug)]
pub struct KafkaPlan {
    /// Partitions per local worker.
    pub by_worker: Vec<Vec<Arc<PartitionShared>>>,
    /// Every partition of the topics, for reading the group's commits.
    all: Vec<(String, i32)>,
    /// This process's partitions (their outputs share the local durable frontier).
    local: std::collections::HashSet<(String, i32)>,
    /// Smallest durable frontier found in this process's commits (`0` if none).
    pub committed_frontier: u64,
}

impl KafkaPlan {
    /// Every local partition.
    pub fn partitions(&self) -> impl Iterator<Item = &Arc<PartitionShared>> {
        self.by_worker.iter().flatten()
    }

    /// Total partitions of the consumed topics.
    pub fn total_partitions(&self) -> usize {
        self.all.len()
    }
}

/// librdkafka settings for `config`, with megamind's own keys set last.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    // Defaults a user may override.
    client.set("queued.max.messages.kbytes", "16384");
    client.set("session.timeout.ms", "10000");
    for (key, value) in &config.client {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &config.brokers);
    client.set("group.id", &config.group_id);
    client.set("enable.auto.commit", "false");
    client.set("enable.auto.offset.store", "false");
    client.set("enable.partition.eof", "false");
    client.set(
        "auto.offset.reset",
        match config.start_from {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        },
    );
    client
}

fn consumer(config: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
    client_config(config)
        .create::<BaseConsumer>()
        .map_err(|source| KafkaError::Client {
            what: "create a consumer",
            source,
        })
}

/// Reads the topics' partitions and this process's committed positions.
///
/// # Errors
/// The brokers cannot be reached, a topic does not exist, or commits cannot be read.
pub fn plan(
    config: &KafkaConfig,
    first_worker: usize,
    local_workers: usize,
    total_workers: usize,
    lateness_ms: u64,
    journal: Option<&CheckpointJournal>,
) -> Result<KafkaPlan, KafkaError> {
    let consumer = consumer(config)?;
    let mut all = Vec::new();
    for topic in &config.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|source| KafkaError::Client {
                what: "fetch topic metadata",
                source,
            })?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|entry| entry.name() == topic)
            .filter(|entry| entry.error().is_none() && !entry.partitions().is_empty())
            .map(|entry| {
                let mut ids: Vec<i32> = entry.partitions().iter().map(|p| p.id()).collect();
                ids.sort_unstable();
                ids
            })
            .ok_or_else(|| KafkaError::MissingTopic(topic.clone()))?;
        all.extend(partitions.into_iter().map(|id| (topic.clone(), id)));
    }
    let total_workers = total_workers.max(1);
    let mine: Vec<(usize, &(String, i32))> = all
        .iter()
        .enumerate()
        .map(|(index, partition)| (index % total_workers, partition))
        .filter(|(worker, _)| (first_worker..first_worker + local_workers).contains(worker))
        .collect();
    let mut list = TopicPartitionList::new();
    for (_, (topic, partition)) in &mine {
        list.add_partition(topic, *partition);
    }
    let committed = if mine.is_empty() {
        TopicPartitionList::new()
    } else {
        consumer
            .committed_offsets(list, REQUEST_TIMEOUT)
            .map_err(|source| KafkaError::Client {
                what: "read committed offsets",
                source,
            })?
    };
    let mut by_worker: Vec<Vec<Arc<PartitionShared>>> = vec![Vec::new(); local_workers];
    let mut committed_frontier: Option<u64> = None;
    for (worker, (topic, partition)) in mine {
        let element = committed.find_partition(topic, *partition);
        let stored = element.as_ref().and_then(|element| match element.offset() {
            Offset::Offset(offset) if offset >= 0 => Some((offset, element.metadata().to_owned())),
            _ => None,
        });
        let start = match stored {
            Some((offset, metadata)) => {
                let parsed = parse_metadata(&metadata);
                committed_frontier = Some(
                    committed_frontier
                        .unwrap_or(u64::MAX)
                        .min(parsed.map_or(0, |meta| meta.frontier)),
                );
                // The broker's metadata, else this process's journal, else nothing known
                // before the position (the lateness rule then starts afresh).
                let journaled = journal
                    .and_then(|journal| {
                        journal
                            .lookup(&config.group_id, topic, *partition, offset)
                            .ok()
                    })
                    .flatten();
                Checkpoint {
                    offset,
                    max_before: parsed.map(|meta| meta.max_before).or(journaled).flatten(),
                }
            }
            None => {
                committed_frontier = Some(0);
                let (low, high) = consumer
                    .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
                    .map_err(|source| KafkaError::Client {
                        what: "fetch partition offsets",
                        source,
                    })?;
                Checkpoint {
                    offset: match config.start_from {
                        StartFrom::Earliest => low,
                        StartFrom::Latest => high,
                    },
                    max_before: None,
                }
            }
        };
        tracing::info!(
            topic = %topic,
            partition,
            offset = start.offset,
            max_before = ?start.max_before,
            committed = ?element.as_ref().map(|element| element.offset()),
            "kafka partition start"
        );
        if let Some(slot) = by_worker.get_mut(worker - first_worker) {
            slot.push(Arc::new(PartitionShared::new(
                topic.clone(),
                *partition,
                worker,
                start,
                lateness_ms,
            )));
        }
    }
    let local = by_worker
        .iter()
        .flatten()
        .map(|partition| (partition.topic.clone(), partition.partition))
        .collect();
    Ok(KafkaPlan {
        by_worker,
        all,
        local,
        committed_frontier: committed_frontier.unwrap_or(0),
    })
}

/// Reads each partition's high watermark from librdkafka's statistics (served during
/// `poll`): no extra broker request, so nothing queues behind a long fetch.
struct StatsContext {
    partitions: HashMap<(String, i32), Arc<PartitionShared>>,
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                if partition.hi_offset < 0 {
                    continue;
                }
                if let Some(shared) = self.partitions.get(&(name.clone(), *id)) {
                    shared
                        .high_watermark
                        .store(partition.hi_offset, Ordering::Relaxed);
                }
            }
        }
    }
}

impl ConsumerContext for StatsContext {}

/// The running consumer threads.
#[derive(Debug)]
pub struct KafkaSource {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Counters.
    pub metrics: Arc<SourceMetrics>,
}

/// What the consumer threads share.
pub struct SourceContext {
    /// Settings.
    pub config: KafkaConfig,
    /// Where batches go.
    pub target: Arc<dyn BatchTarget>,
    /// Outputs with time below the smallest of these are durable (results store, output
    /// topics acknowledged).
    pub durable_frontiers: Vec<Arc<AtomicU64>>,
    /// The local workers' output frontiers: used as the durable frontier when there is no
    /// results store and no output topic (results then live only in memory).
    pub output_frontiers: Arc<Vec<AtomicU64>>,
    /// How far before the durable frontier events are needed to recompute what follows it:
    /// window length plus `rebuild_windows` slides.
    pub horizon_ms: u64,
    /// Wall clock (idleness only).
    pub clock: Arc<dyn Clock>,
    /// Records each committed position's event-time state locally before the commit.
    pub journal: Option<Arc<CheckpointJournal>>,
}

impl SourceContext {
    fn durable_frontier(&self) -> u64 {
        let frontiers = if self.durable_frontiers.is_empty() {
            self.output_frontiers
                .iter()
                .map(|frontier| frontier.load(Ordering::Acquire))
                .min()
        } else {
            self.durable_frontiers
                .iter()
                .map(|frontier| frontier.load(Ordering::Acquire))
                .min()
        };
        frontiers.unwrap_or(0)
    }
}

impl KafkaSource {
    /// Starts one consumer thread per local worker that owns partitions.
    ///
    /// # Errors
    /// A consumer cannot be created or assigned.
    pub fn start(plan: &KafkaPlan, context: SourceContext) -> Result<KafkaSource, KafkaError> {
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(SourceMetrics::default());
        let context = Arc::new(context);
        let mut threads = Vec::new();
        for (local, partitions) in plan.by_worker.iter().enumerate() {
            if partitions.is_empty() {
                continue;
            }
            let consumer: BaseConsumer<StatsContext> = client_config(&context.config)
                .set("statistics.interval.ms", "1000")
                .create_with_context(StatsContext {
                    partitions: partitions
                        .iter()
                        .map(|partition| {
                            (
                                (partition.topic.clone(), partition.partition),
                                Arc::clone(partition),
                            )
                        })
                        .collect(),
                })
                .map_err(|source| KafkaError::Client {
                    what: "create a consumer",
                    source,
                })?;
            let mut assignment = TopicPartitionList::new();
            for partition in partitions {
                let offset = partition.progress().next_offset();
                assignment
                    .add_partition_offset(
                        &partition.topic,
                        partition.partition,
                        Offset::Offset(offset),
                    )
                    .map_err(|source| KafkaError::Client {
                        what: "build the assignment",
                        source,
                    })?;
            }
            consumer
                .assign(&assignment)
                .map_err(|source| KafkaError::Client {
                    what: "assign partitions",
                    source,
                })?;
            // Partitions of other processes: their commits carry those processes' durable
            // frontiers. This process's partitions share its own.
            let mut group = TopicPartitionList::new();
            for (topic, partition) in plan.all.iter().filter(|key| !plan.local.contains(*key)) {
                group.add_partition(topic, *partition);
            }
            let mut worker = ConsumerLoop {
                consumer,
                local,
                partitions: partitions.clone(),
                index: partitions
                    .iter()
                    .enumerate()
                    .map(|(index, partition)| {
                        ((partition.topic.clone(), partition.partition), index)
                    })
                    .collect(),
                assignment,
                group,
                last_message_ms: vec![context.clock.now_ms(); partitions.len()],
                context: Arc::clone(&context),
                stop: Arc::clone(&stop),
                metrics: Arc::clone(&metrics),
            };
            let thread = std::thread::Builder::new()
                .name(format!("kafka-consumer-{local}"))
                .spawn(move || {
                    worker.run();
                    // Let go of the worker queues before the client: if librdkafka's close
                    // hangs (see `stop`), the workers still see their input end.
                    let ConsumerLoop {
                        consumer, context, ..
                    } = worker;
                    drop(context);
                    drop(consumer);
                })
                .map_err(KafkaError::Thread)?;
            threads.push(thread);
        }
        Ok(KafkaSource {
            stop,
            threads,
            metrics,
        })
    }

    /// Stops reading, commits a last time and joins the threads.
    ///
    /// A consumer thread that has committed but whose client does not finish closing within
    /// [`CLOSE_TIMEOUT`] is left behind with a warning: librdkafka's destroy can wait on its
    /// broker threads indefinitely (seen with the mock cluster and many partitions), and a
    /// stuck close must not keep the server from exiting. Its last commit was already made.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let waited = Stopwatch::start();
        for thread in self.threads.drain(..) {
            while !thread.is_finished() && waited.elapsed() < CLOSE_TIMEOUT {
                megamind_dataflows::time::pace(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                let name = thread
                    .thread()
                    .name()
                    .unwrap_or("kafka consumer")
                    .to_owned();
                tracing::warn!(thread = %name, timeout = ?CLOSE_TIMEOUT, "kafka: a consumer did not close in time; leaving it");
            }
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct ConsumerLoop {
    consumer: BaseConsumer<StatsContext>,
    local: usize,
    partitions: Vec<Arc<PartitionShared>>,
    index: HashMap<(String, i32), usize>,
    assignment: TopicPartitionList,
    group: TopicPartitionList,
    last_message_ms: Vec<u64>,
    context: Arc<SourceContext>,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
}

impl ConsumerLoop {
    fn run(&mut self) {
        let clock = Arc::clone(&self.context.clock);
        let mut next_housekeeping = clock.now_ms();
        let mut next_commit = next_housekeeping + duration_ms(self.context.config.commit_interval);
        let max_batch = self.context.config.max_batch_messages.max(1);
        let mut batches: Vec<Option<PartitionBatch>> =
            (0..self.partitions.len()).map(|_| None).collect();
        while !self.stop.load(Ordering::Acquire) {
            let mut received = 0usize;
            while received < max_batch {
                let timeout = if received == 0 {
                    Duration::from_millis(100)
                } else {
                    Duration::ZERO
                };
                match self.consumer.poll(timeout) {
                    None => break,
                    Some(Err(error)) => {
                        let count = self.metrics.poll_errors.fetch_add(1, Ordering::Relaxed);
                        if count.is_power_of_two() {
                            tracing::warn!(%error, errors = count + 1, "kafka poll error");
                        }
                        break;
                    }
                    Some(Ok(message)) => {
                        let key = (message.topic().to_owned(), message.partition());
                        let Some(&slot) = self.index.get(&key) else {
                            continue;
                        };
                        let Some(partition) = self.partitions.get(slot) else {
                            continue;
                        };
                        let expected = batches[slot].as_ref().map_or_else(
                            || partition.fetched.load(Ordering::Relaxed),
                            |batch| batch.next_offset,
                        );
                        if message.offset() < expected {
                            // Already taken (a re-fetch after a seek): skip the duplicate.
                            continue;
                        }
                        if message.offset() > expected {
                            // Compaction and transaction markers leave gaps; count them.
                            self.metrics.offset_gaps.fetch_add(1, Ordering::Relaxed);
                        }
                        let batch = batches[slot]
                            .get_or_insert_with(|| PartitionBatch::new(Arc::clone(partition)));
                        let timestamp = message
                            .timestamp()
                            .to_millis()
                            .and_then(|ms| u64::try_from(ms).ok());
                        batch.push(
                            message.offset(),
                            timestamp,
                            message.payload().unwrap_or_default(),
                        );
                        received += 1;
                    }
                }
            }
            let now = clock.now_ms();
            for (slot, batch) in batches.iter_mut().enumerate() {
                let Some(batch) = batch.take() else {
                    continue;
                };
                if let Some(partition) = self.partitions.get(slot) {
                    partition
                        .fetched
                        .store(batch.next_offset, Ordering::Relaxed);
                    partition
                        .consumed
                        .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                    partition.idle.store(false, Ordering::Release);
                }
                self.last_message_ms[slot] = now;
                if !self.deliver(batch) {
                    return;
                }
            }
            let now = clock.now_ms();
            if now >= next_housekeeping {
                next_housekeeping = now + duration_ms(HOUSEKEEPING_INTERVAL);
                self.mark_idle(now);
            }
            if now >= next_commit {
                next_commit = now + duration_ms(self.context.config.commit_interval);
                self.commit();
            }
        }
        self.commit();
    }

    /// Hands a batch to the worker; when its queue is full, pauses the partitions (so the
    /// client stops fetching ahead) and waits. `false` when the worker is gone.
    fn deliver(&mut self, batch: PartitionBatch) -> bool {
        self.metrics.batches.fetch_add(1, Ordering::Relaxed);
        let batch = match self.context.target.try_deliver(self.local, batch) {
            Ok(()) => return true,
            Err(batch) => batch,
        };
        self.metrics.pauses.fetch_add(1, Ordering::Relaxed);
        let paused = self.consumer.pause(&self.assignment).is_ok();
        for partition in &self.partitions {
            partition.paused.store(true, Ordering::Relaxed);
        }
        // Wait for room, but give up when stopping: an abandoned batch was not applied and
        // no commit passes it, so it is read again on the next start.
        let mut pending = Some(batch);
        let mut delivered = true;
        while let Some(batch) = pending.take() {
            if self.stop.load(Ordering::Acquire) {
                delivered = false;
                break;
            }
            match self.context.target.try_deliver(self.local, batch) {
                Ok(()) => {}
                Err(batch) => {
                    pending = Some(batch);
                    megamind_dataflows::time::pace(Duration::from_millis(1));
                }
            }
        }
        if paused {
            // Pausing drops what the client had fetched ahead; resuming alone would continue
            // after it. Seek every partition back to the next offset this thread has not
            // taken, so nothing is skipped.
            let mut positions = TopicPartitionList::new();
            for partition in &self.partitions {
                let next = partition.fetched.load(Ordering::Relaxed);
                let _ = positions.add_partition_offset(
                    &partition.topic,
                    partition.partition,
                    Offset::Offset(next),
                );
            }
            let _ = self.consumer.resume(&self.assignment);
            if let Err(error) = self
                .consumer
                .seek_partitions(positions, Duration::from_secs(2))
            {
                tracing::warn!(%error, "kafka: cannot seek after a pause");
            }
        }
        let now = self.context.clock.now_ms();
        for (slot, partition) in self.partitions.iter().enumerate() {
            partition.paused.store(false, Ordering::Relaxed);
            // Time spent waiting is not silence on the partition.
            self.last_message_ms[slot] = now;
        }
        delivered
    }

    fn mark_idle(&self, now: u64) {
        let idle_after = duration_ms(self.context.config.idle_after);
        for (slot, partition) in self.partitions.iter().enumerate() {
            let silent = now.saturating_sub(self.last_message_ms[slot]) >= idle_after;
            // Idle only when the broker's end is known and everything before it was applied
            // by the worker: nothing of the partition is in flight when it stops counting.
            let high = partition.high_watermark.load(Ordering::Relaxed);
            let caught_up = high >= 0 && partition.progress().next_offset() >= high;
            if silent && caught_up && !partition.is_idle() {
                partition.idle.store(true, Ordering::Release);
            }
        }
    }

    /// Commits each partition's rewind position (see the module docs).
    fn commit(&mut self) {
        let durable = self.context.durable_frontier();
        let group = match self
            .consumer
            .committed_offsets(self.group.clone(), REQUEST_TIMEOUT)
        {
            Ok(group) => group,
            Err(error) => {
                self.metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "kafka: cannot read the group's commits; not committing");
                return;
            }
        };
        let mut frontier = durable;
        for element in group.elements() {
            let own = self
                .index
                .contains_key(&(element.topic().to_owned(), element.partition()));
            if own {
                continue;
            }
            let theirs = match element.offset() {
                Offset::Offset(offset) if offset >= 0 => {
                    parse_metadata(element.metadata()).map_or(0, |meta| meta.frontier)
                }
                _ => 0,
            };
            frontier = frontier.min(theirs);
        }
        let needed_from = frontier.saturating_sub(self.context.horizon_ms);
        let mut list = TopicPartitionList::new();
        let mut positions = Vec::with_capacity(self.partitions.len());
        let mut journal_rows = Vec::with_capacity(self.partitions.len());
        for partition in &self.partitions {
            let checkpoint = partition.progress().rewind_point(needed_from);
            journal_rows.push((
                partition.topic.clone(),
                partition.partition,
                checkpoint.offset,
                checkpoint.max_before,
            ));
            if list
                .add_partition_offset(
                    &partition.topic,
                    partition.partition,
                    Offset::Offset(checkpoint.offset),
                )
                .is_err()
            {
                continue;
            }
            if let Some(mut element) = list.find_partition(&partition.topic, partition.partition) {
                element.set_metadata(checkpoint.metadata(durable));
            }
            positions.push((Arc::clone(partition), checkpoint.offset));
        }
        if let Some(journal) = &self.context.journal {
            if let Err(error) = journal.record(&self.context.config.group_id, &journal_rows) {
                self.metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "kafka: cannot journal positions; not committing");
                return;
            }
        }
        match self.consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                self.metrics.commits.fetch_add(1, Ordering::Relaxed);
                for (partition, offset) in positions {
                    partition.committed.store(offset, Ordering::Relaxed);
                }
            }
            Err(error) => {
                self.metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "kafka commit failed; retrying at the next interval");
            }
        }
    }
}
