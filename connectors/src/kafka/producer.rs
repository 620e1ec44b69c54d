//! Kafka outputs: breaches and alerts, windows, and dead letters, written by one producer
//! thread fed through a bounded queue.
//!
//! The producer is idempotent by default (`enable.idempotence`, so retries inside the
//! client never duplicate), values are JSON, keys are fingerprints or series keys. Each
//! worker also sends its output frontier; once every record before it is acknowledged
//! (`flush`) and none failed, the thread publishes the *delivered frontier*, which the
//! source folds into the position it commits: results are re-sent after a crash rather
//! than lost, and a consumer that keys by fingerprint and window sees each one once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde::Serialize;

use super::config::KafkaConfig;
use super::KafkaError;

/// Records queued for the producer thread before senders wait.
const OUTPUT_QUEUE: usize = 65_536;
/// Longest wait for acknowledgements when a frontier is reached.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Which output topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputTopic {
    /// Breaches and alerts.
    Alerts,
    /// Closed windows.
    Windows,
}

/// A malformed input message, for the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where it was read.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The original value.
    pub payload: Vec<u8>,
    /// Error reason code (`malformed_json`, `missing_field`, ...).
    pub reason: &'static str,
    /// The offending field, when known.
    pub field: Option<String>,
    /// Human-readable error.
    pub message: String,
}

enum OutputMsg {
    Record {
        topic: OutputTopic,
        key: String,
        value: Vec<u8>,
    },
    DeadLetter(DeadLetter),
    Frontier {
        worker: usize,
        frontier: Option<u64>,
    },
}

/// Counters of the outputs.
#[derive(Debug, Default, Serialize)]
pub struct OutputMetrics {
    /// Records acknowledged by the brokers.
    pub delivered: AtomicU64,
    /// Records the client gave up on (after its own retries).
    pub failed: AtomicU64,
    /// Dead letters handed to the producer.
    pub dead_letters: AtomicU64,
    /// Times a sender waited because the output queue was full.
    pub waits: AtomicU64,
}

struct CountingContext {
    metrics: Arc<OutputMetrics>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => self.metrics.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.metrics.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A worker's handle on the outputs.
#[derive(Clone)]
pub struct OutputHandle {
    sender: SyncSender<OutputMsg>,
    metrics: Arc<OutputMetrics>,
    alerts: bool,
    windows: bool,
    dead_letters: bool,
}

impl std::fmt::Debug for OutputHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputHandle").finish_non_exhaustive()
    }
}

impl OutputHandle {
    /// Whether records for `topic` are wanted.
    pub fn wants(&self, topic: OutputTopic) -> bool {
        match topic {
            OutputTopic::Alerts => self.alerts,
            OutputTopic::Windows => self.windows,
        }
    }

    /// Whether a dead-letter topic is configured.
    pub fn has_dead_letters(&self) -> bool {
        self.dead_letters
    }

    fn send(&self, message: OutputMsg) {
        match self.sender.try_send(message) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(message)) => {
                // Backpressure, never loss: the worker waits for the producer.
                self.metrics.waits.fetch_add(1, Ordering::Relaxed);
                let _ = self.sender.send(message);
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {}
        }
    }

    /// Queues a result record.
    pub fn record(&self, topic: OutputTopic, key: String, value: Vec<u8>) {
        if self.wants(topic) {
            self.send(OutputMsg::Record { topic, key, value });
        }
    }

    /// Queues a dead letter.
    pub fn dead_letter(&self, letter: DeadLetter) {
        if self.dead_letters {
            self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
            self.send(OutputMsg::DeadLetter(letter));
        }
    }

    /// Reports a local worker's output frontier (`None`: finished).
    pub fn frontier(&self, worker: usize, frontier: Option<u64>) {
        self.send(OutputMsg::Frontier { worker, frontier });
    }
}

/// The producer thread.
pub struct KafkaOutput {
    handle: OutputHandle,
    thread: Option<JoinHandle<()>>,
    /// Everything before this output time has been acknowledged.
    pub delivered_frontier: Arc<AtomicU64>,
    /// Counters.
    pub metrics: Arc<OutputMetrics>,
}

impl std::fmt::Debug for KafkaOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOutput").finish_non_exhaustive()
    }
}

/// A producer for `config` (idempotent unless the client settings say otherwise).
///
/// # Errors
/// librdkafka rejects the settings.
pub fn producer<C: ProducerContext>(
    config: &KafkaConfig,
    context: C,
) -> Result<BaseProducer<C>, KafkaError> {
    let mut client = ClientConfig::new();
    client.set("enable.idempotence", "true");
    client.set("linger.ms", "5");
    client.set("compression.type", "lz4");
    for (key, value) in &config.client {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &config.brokers);
    client
        .create_with_context::<C, BaseProducer<C>>(context)
        .map_err(|source| KafkaError::Client {
            what: "create a producer",
            source,
        })
}

/// Sends one record, waiting (polling the producer) while its queue is full.
///
/// # Errors
/// Any error other than a full queue.
pub fn send_waiting<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], ()>,
) -> Result<(), ClientError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(20));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

impl KafkaOutput {
    /// Starts the producer thread for `local_workers` workers.
    ///
    /// # Errors
    /// The producer cannot be created.
    pub fn start(config: &KafkaConfig, local_workers: usize) -> Result<KafkaOutput, KafkaError> {
        let metrics = Arc::new(OutputMetrics::default());
        let producer = producer(
            config,
            CountingContext {
                metrics: Arc::clone(&metrics),
            },
        )?;
        let (sender, receiver) = sync_channel(OUTPUT_QUEUE);
        let delivered_frontier = Arc::new(AtomicU64::new(0));
        let topics = Topics {
            alerts: config.alerts_topic.clone(),
            windows: config.windows_topic.clone(),
            dead_letters: config.dead_letter_topic.clone(),
        };
        let thread = {
            let metrics = Arc::clone(&metrics);
            let delivered = Arc::clone(&delivered_frontier);
            std::thread::Builder::new()
                .name("kafka-producer".to_owned())
                .spawn(move || {
                    produce_loop(
                        &producer,
                        &receiver,
                        &topics,
                        local_workers,
                        &metrics,
                        &delivered,
                    );
                })
                .map_err(KafkaError::Thread)?
        };
        Ok(KafkaOutput {
            handle: OutputHandle {
                sender,
                metrics: Arc::clone(&metrics),
                alerts: config.alerts_topic.is_some(),
                windows: config.windows_topic.is_some(),
                dead_letters: config.dead_letter_topic.is_some(),
            },
            thread: Some(thread),
            delivered_frontier,
            metrics,
        })
    }

    /// A handle for a worker.
    pub fn handle(&self) -> OutputHandle {
        self.handle.clone()
    }

    /// Waits for the thread to flush and exit (after every handle is dropped).
    pub fn join(mut self) {
        let (sender, _) = sync_channel(1);
        self.handle.sender = sender;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Topics {
    alerts: Option<String>,
    windows: Option<String>,
    dead_letters: Option<String>,
}

fn produce_loop<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    receiver: &Receiver<OutputMsg>,
    topics: &Topics,
    local_workers: usize,
    metrics: &OutputMetrics,
    delivered: &AtomicU64,
) {
    let mut frontiers: Vec<Option<Option<u64>>> = vec![None; local_workers.max(1)];
    loop {
        let message = match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                producer.poll(Duration::ZERO);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match message {
            OutputMsg::Record { topic, key, value } => {
                let name = match topic {
                    OutputTopic::Alerts => topics.alerts.as_deref(),
                    OutputTopic::Windows => topics.windows.as_deref(),
                };
                if let Some(name) = name {
                    let record = BaseRecord::to(name).key(key.as_bytes()).payload(&value[..]);
                    if let Err(error) = send_waiting(producer, record) {
                        metrics.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, topic = name, "kafka output record not sent");
                    }
                }
            }
            OutputMsg::DeadLetter(letter) => {
                if let Some(name) = topics.dead_letters.as_deref() {
                    let partition = letter.partition.to_string();
                    let offset = letter.offset.to_string();
                    let mut headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "megamind.error.reason",
                            value: Some(letter.reason),
                        })
                        .insert(Header {
                            key: "megamind.error.message",
                            value: Some(&letter.message),
                        })
                        .insert(Header {
                            key: "megamind.source.topic",
                            value: Some(&letter.topic),
                        })
                        .insert(Header {
                            key: "megamind.source.partition",
                            value: Some(&partition),
                        })
                        .insert(Header {
                            key: "megamind.source.offset",
                            value: Some(&offset),
                        });
                    if let Some(field) = &letter.field {
                        headers = headers.insert(Header {
                            key: "megamind.error.field",
                            value: Some(field),
                        });
                    }
                    let key = format!("{}/{}/{}", letter.topic, letter.partition, letter.offset);
                    let record = BaseRecord::to(name)
                        .key(key.as_bytes())
                        .payload(&letter.payload[..])
                        .headers(headers);
                    if let Err(error) = send_waiting(producer, record) {
                        metrics.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "dead letter not sent");
                    }
                }
            }
            OutputMsg::Frontier { worker, frontier } => {
                if let Some(slot) = frontiers.get_mut(worker) {
                    *slot = Some(frontier);
                }
                let all: Option<Vec<Option<u64>>> = frontiers.iter().copied().collect();
                if let Some(all) = all {
                    let lowest = all.iter().map(|f| f.unwrap_or(u64::MAX)).min().unwrap_or(0);
                    if lowest > delivered.load(Ordering::Relaxed) {
                        let failed_before = metrics.failed.load(Ordering::Relaxed);
                        if producer.flush(FLUSH_TIMEOUT).is_ok()
                            && metrics.failed.load(Ordering::Relaxed) == failed_before
                        {
                            delivered.store(lowest, Ordering::Release);
                        }
                    }
                }
            }
        }
    }
    // At shutdown wait a bounded time: what is not acknowledged lies after the delivered
    // frontier, so it is produced again after the restart.
    if let Err(error) = producer.flush(Duration::from_secs(5)) {
        tracing::warn!(%error, "kafka outputs not all acknowledged at shutdown");
    }
}
