//! Kafka: the partitioned source (per-partition event time, rewind commits, backpressure)
//! and the outputs (alerts, windows, dead letters).
//!
//! This module yields raw values with their offsets and timestamps; decoding is the
//! codec's job and happens on the timely worker that owns the partition.

pub mod config;
pub mod consumer;
pub mod producer;
pub mod progress;

pub use config::{KafkaConfig, StartFrom};
pub use consumer::{
    plan, BatchTarget, KafkaPlan, KafkaSource, PartitionBatch, PartitionShared, PartitionStatus,
    RawRecord, SourceContext, SourceMetrics,
};
pub use producer::{DeadLetter, KafkaOutput, OutputHandle, OutputMetrics, OutputTopic};

/// Kafka failures.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka reported an error.
    #[error("kafka: cannot {what}")]
    Client {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A configured topic does not exist (topics are not created implicitly).
    #[error("kafka: topic {0:?} does not exist or has no partitions")]
    MissingTopic(String),
    /// A thread could not be started.
    #[error("kafka: cannot start a thread")]
    Thread(#[source] std::io::Error),
}
