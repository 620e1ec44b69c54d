//! Kafka wiring: plans the partitions before the engine starts, feeds the workers, writes
//! results to the results store and the output topics, suppresses what a previous run
//! already delivered, and reports partitions, lag and counters.
//!
//! Exactness after a crash rests on three pieces (see `megamind_connectors::kafka`):
//! per-partition event-time rules (so re-reading decides the same), rewind commits (so a
//! restart re-reads enough to rebuild every open window), and here: outputs before the
//! durable frontier of the previous run are dropped, and the store ignores a row it has.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use megamind_connectors::error_chain;
use megamind_connectors::kafka::{
    self, KafkaConfig, KafkaOutput, KafkaPlan, KafkaSource, OutputHandle, OutputTopic,
    PartitionShared, PartitionStatus, SourceContext,
};
use megamind_connectors::store::results::{
    CheckpointJournal, ResultRow, ResultsHandle, ResultsStore,
};
use megamind_dataflows::model::Update;
use megamind_dataflows::time::{duration_ms, Clock};
use megamind_dataflows::Time;
use serde::Serialize;

use crate::config::Config;
use crate::runtime::{Feeder, KafkaInputs, UpdateSink};

/// The Kafka parts of a running server.
pub struct KafkaRuntime {
    config: KafkaConfig,
    plan: Option<KafkaPlan>,
    source: Option<KafkaSource>,
    output: Option<KafkaOutput>,
    results: Option<ResultsStore>,
    partitions: Vec<Arc<PartitionShared>>,
    closing: Arc<AtomicBool>,
    suppress_before: u64,
    suppressed: Arc<AtomicU64>,
    frontiers: Arc<Vec<AtomicU64>>,
    source_metrics: Option<Arc<kafka::SourceMetrics>>,
    journal: Option<Arc<CheckpointJournal>>,
}

impl std::fmt::Debug for KafkaRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaRuntime")
            .field("partitions", &self.partitions.len())
            .field("suppress_before", &self.suppress_before)
            .finish_non_exhaustive()
    }
}

/// The Kafka status, as in `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaStatus {
    /// Topics consumed.
    pub topics: Vec<String>,
    /// Consumer group.
    pub group_id: String,
    /// This process's partitions.
    pub partitions: Vec<PartitionStatus>,
    /// Sum of the partitions' lag, messages.
    pub total_lag: i64,
    /// Outputs before this time were delivered by a previous run and are not re-emitted.
    pub suppress_before_ms: u64,
    /// Outputs dropped for that reason.
    pub suppressed: u64,
    /// Every result before this time is durable (results store, output topics).
    pub durable_frontier_ms: u64,
    /// Batches handed to workers.
    pub batches: u64,
    /// Backpressure pauses.
    pub pauses: u64,
    /// Partitions whose next message was not at the next offset.
    pub offset_gaps: u64,
    /// Commits, and failed commits.
    pub commits: u64,
    /// Failed commits.
    pub commit_failures: u64,
    /// Output records acknowledged, failed, dead letters written.
    pub output_delivered: u64,
    /// Output records the client gave up on.
    pub output_failed: u64,
    /// Malformed messages sent to the dead-letter topic.
    pub dead_letters: u64,
}

impl KafkaRuntime {
    /// Plans partitions, opens the results store and the producer: everything the engine
    /// needs before it starts. The engine's `kafka` inputs are returned alongside.
    ///
    /// # Errors
    /// Brokers unreachable, a topic missing, the store or producer failing.
    pub fn prepare(
        config: &Config,
        first_worker: usize,
        local_workers: usize,
        total_workers: usize,
        process: Option<usize>,
    ) -> Result<(KafkaRuntime, KafkaInputs), String> {
        let kafka_config = config.kafka.clone();
        let lateness = duration_ms(config.ingest.allowed_lateness);
        let journal = if config.store.enabled {
            let path = config.store.results_path_for(process);
            Some(Arc::new(
                CheckpointJournal::open(&path).map_err(|error| error_chain(&error))?,
            ))
        } else {
            None
        };
        let plan = kafka::plan(
            &kafka_config,
            first_worker,
            local_workers,
            total_workers,
            lateness,
            journal.as_deref(),
        )
        .map_err(|error| error_chain(&error))?;
        let output = if kafka_config.has_outputs() {
            Some(
                KafkaOutput::start(&kafka_config, local_workers)
                    .map_err(|error| error_chain(&error))?,
            )
        } else {
            None
        };
        // With alerts or windows produced to topics, the store's frontier waits for the
        // producer's: a restart then suppresses only results that reached both.
        let produced = output
            .as_ref()
            .filter(|_| kafka_config.produces_results())
            .map(|output| Arc::clone(&output.delivered_frontier));
        let results = if config.store.enabled {
            let path = config.store.results_path_for(process);
            Some(
                ResultsStore::open(&path, local_workers, produced)
                    .map_err(|error| error_chain(&error))?,
            )
        } else {
            None
        };
        let suppress_before = results
            .as_ref()
            .map_or(plan.committed_frontier, ResultsStore::start_frontier);
        let partitions: Vec<Arc<PartitionShared>> = plan.partitions().cloned().collect();
        tracing::info!(
            topics = ?kafka_config.topics,
            group = %kafka_config.group_id,
            partitions = partitions.len(),
            of = plan.total_partitions(),
            suppress_before,
            "kafka source planned"
        );
        let inputs = KafkaInputs {
            partitions: plan.by_worker.clone(),
            dead_letters: output
                .as_ref()
                .filter(|_| kafka_config.dead_letter_topic.is_some())
                .map(KafkaOutput::handle),
            max_future_skew: config.ingest.max_future_skew,
        };
        let frontiers = Arc::new(
            (0..local_workers.max(1))
                .map(|_| AtomicU64::new(0))
                .collect(),
        );
        Ok((
            KafkaRuntime {
                config: kafka_config,
                plan: Some(plan),
                source: None,
                output,
                results,
                partitions,
                closing: Arc::new(AtomicBool::new(false)),
                suppress_before,
                suppressed: Arc::new(AtomicU64::new(0)),
                frontiers,
                source_metrics: None,
                journal,
            },
            inputs,
        ))
    }

    /// What the workers' sinks need (see [`KafkaSinkParts::wrap`]).
    pub fn sink_parts(&self) -> KafkaSinkParts {
        KafkaSinkParts {
            suppress_before: self.suppress_before,
            suppressed: Arc::clone(&self.suppressed),
            closing: Arc::clone(&self.closing),
            results: self.results.as_ref().and_then(ResultsStore::handle),
            output: self.output.as_ref().map(KafkaOutput::handle),
            frontiers: Arc::clone(&self.frontiers),
        }
    }

    /// Starts the consumer threads.
    ///
    /// # Errors
    /// A consumer cannot be created.
    pub fn start_source(
        &mut self,
        config: &Config,
        feeder: Feeder,
        clock: Arc<dyn Clock>,
    ) -> Result<(), String> {
        let Some(plan) = self.plan.take() else {
            return Ok(());
        };
        let durable = self.durable_frontiers();
        let horizon = config.windows.length + config.windows.slide * self.config.rebuild_windows;
        let source = KafkaSource::start(
            &plan,
            SourceContext {
                config: self.config.clone(),
                target: Arc::new(feeder),
                durable_frontiers: durable,
                output_frontiers: Arc::clone(&self.frontiers),
                horizon_ms: duration_ms(horizon),
                clock,
                journal: self.journal.clone(),
            },
        )
        .map_err(|error| error_chain(&error))?;
        self.source_metrics = Some(Arc::clone(&source.metrics));
        self.source = Some(source);
        Ok(())
    }

    /// Stops consuming (with a last commit); from here on the workers' outputs are partial
    /// (open windows flushed at shutdown) and are not recorded.
    pub fn stop_source(&mut self) {
        if let Some(source) = self.source.take() {
            source.stop();
        }
        self.closing.store(true, Ordering::Release);
    }

    /// Closes the producer and then the results store (after the engine has stopped), so
    /// the store's last frontier counts what the producer flushed on its way out.
    pub fn close(mut self) {
        if let Some(output) = self.output.take() {
            output.join();
        }
        if let Some(results) = self.results.take() {
            results.close();
        }
    }

    /// Times a worker waited for the results store writer (backpressure from SQLite).
    pub fn results_store_waits(&self) -> u64 {
        self.results.as_ref().map_or(0, ResultsStore::waits)
    }

    /// The frontiers the source commits by: the results store's (which never passes the
    /// producer's delivered frontier when results are produced to topics, see
    /// [`ResultsStore::open`]), or without a store the producer's.
    fn durable_frontiers(&self) -> Vec<Arc<AtomicU64>> {
        match (&self.results, &self.output) {
            (Some(results), _) => vec![results.durable_frontier()],
            (None, Some(output)) if self.config.produces_results() => {
                vec![Arc::clone(&output.delivered_frontier)]
            }
            (None, _) => Vec::new(),
        }
    }

    /// The time before which every result is durable in the store and, with results
    /// produced to topics, acknowledged by the brokers. 0 without a results store.
    fn durable_frontier_ms(&self) -> u64 {
        self.results.as_ref().map_or(0, |results| {
            results.durable_frontier().load(Ordering::Acquire)
        })
    }

    /// Status for `/v1/status` and `/metrics`.
    pub fn status(&self) -> KafkaStatus {
        let partitions: Vec<PartitionStatus> = self
            .partitions
            .iter()
            .map(|partition| partition.status())
            .collect();
        let source = self.source_metrics.as_deref();
        let read = |counter: Option<&AtomicU64>| counter.map_or(0, |c| c.load(Ordering::Relaxed));
        let output = self.output.as_ref().map(|output| &output.metrics);
        KafkaStatus {
            topics: self.config.topics.clone(),
            group_id: self.config.group_id.clone(),
            total_lag: partitions.iter().filter_map(|p| p.lag).sum(),
            partitions,
            suppress_before_ms: self.suppress_before,
            suppressed: self.suppressed.load(Ordering::Relaxed),
            durable_frontier_ms: self.durable_frontier_ms(),
            batches: read(source.map(|s| &s.batches)),
            pauses: read(source.map(|s| &s.pauses)),
            offset_gaps: read(source.map(|s| &s.offset_gaps)),
            commits: read(source.map(|s| &s.commits)),
            commit_failures: read(source.map(|s| &s.commit_failures)),
            output_delivered: read(output.map(|o| &o.delivered)),
            output_failed: read(output.map(|o| &o.failed)),
            dead_letters: read(output.map(|o| &o.dead_letters)),
        }
    }
}

/// The stored form of an update: kind, identity, output time. Sessions and rejections are
/// not results of this kind (sessions are rebuilt only from the rewind horizon).
pub fn result_row(time: Time, update: &Update) -> Option<ResultRow> {
    let (kind, key) = match update {
        Update::Window(stats) => ("window", stats.key.to_string()),
        Update::SeriesIdle { key, .. } => ("series_idle", key.to_string()),
        Update::Breach(breach) => ("breach", format!("{} {}", breach.rule_id, breach.key)),
        Update::Alert(transition) => ("alert", transition.fingerprint.clone()),
        Update::AlertRecord(record) => ("alert_record", record.id.clone()),
        Update::RetrainingTrigger(trigger) => (
            "retraining_trigger",
            format!("{} {}", trigger.model_id, trigger.model_version),
        ),
        Update::ModelRegistered(registration) => (
            "model_registered",
            format!(
                "{} {}",
                registration.model_id,
                registration.model_version.as_deref().unwrap_or("*")
            ),
        ),
        Update::BaselinePin(pin) => (
            "baseline_pin",
            format!(
                "{} {}",
                pin.model_id,
                pin.model_version.as_deref().unwrap_or("*")
            ),
        ),
        Update::Anomaly(report) => ("anomaly", format!("{} {}", report.series, report.ts)),
        Update::NovelError(novel) => ("novel_error", format!("{} {}", novel.session_id, novel.ts)),
        Update::Insight(insight) => ("insight", insight.id.clone()),
        Update::SuccessModel(report) => ("success_model", report.version.to_string()),
        // Snapshots, predictions and forecasts are state, not events: the latest one is in
        // the views and on its topic; they are not stored per output time.
        Update::SessionPrediction(_)
        | Update::Forecast(_)
        | Update::ModelMetrics(_)
        | Update::AnomalyCounters(_)
        | Update::ErrorFamilies(_)
        | Update::UnattributedOrphans { .. }
        | Update::Session(_)
        | Update::SessionSample(_)
        | Update::CommandRejected(_)
        | Update::Silence(_)
        | Update::RuleChange(_)
        | Update::Rejected { .. } => return None,
    };
    let body = serde_json::to_string(update).ok()?;
    Some(ResultRow {
        kind: kind.to_owned(),
        key,
        time,
        body,
    })
}

/// Shared pieces of the workers' Kafka sinks.
#[derive(Clone)]
pub struct KafkaSinkParts {
    suppress_before: u64,
    suppressed: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
    results: Option<ResultsHandle>,
    output: Option<OutputHandle>,
    frontiers: Arc<Vec<AtomicU64>>,
}

impl std::fmt::Debug for KafkaSinkParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkParts")
            .field("suppress_before", &self.suppress_before)
            .finish_non_exhaustive()
    }
}

impl KafkaSinkParts {
    /// Wraps local worker `local_worker`'s sink: outputs before the previous run's durable
    /// frontier are dropped, the rest go to the results store and output topics too.
    pub fn wrap(&self, local_worker: usize, inner: Box<dyn UpdateSink>) -> Box<dyn UpdateSink> {
        let parts = self.clone();
        Box::new(KafkaSink {
            inner,
            local_worker,
            suppress_before: parts.suppress_before,
            suppressed: parts.suppressed,
            closing: parts.closing,
            results: parts.results,
            output: parts.output,
            frontiers: parts.frontiers,
        })
    }
}

struct KafkaSink {
    inner: Box<dyn UpdateSink>,
    local_worker: usize,
    suppress_before: u64,
    suppressed: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
    results: Option<ResultsHandle>,
    output: Option<OutputHandle>,
    frontiers: Arc<Vec<AtomicU64>>,
}

impl UpdateSink for KafkaSink {
    fn deliver(&mut self, updates: &[Update]) {
        self.inner.deliver(updates);
    }

    fn deliver_at(&mut self, time: Time, updates: &[Update]) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        if time < self.suppress_before {
            self.suppressed
                .fetch_add(updates.len() as u64, Ordering::Relaxed);
            return;
        }
        let rows: Vec<ResultRow> = updates
            .iter()
            .filter_map(|update| result_row(time, update))
            .collect();
        if let Some(output) = &self.output {
            for row in &rows {
                let topic = match row.kind.as_str() {
                    "window" => OutputTopic::Windows,
                    "breach" | "alert" | "alert_record" | "retraining_trigger" => {
                        OutputTopic::Alerts
                    }
                    _ => continue,
                };
                if output.wants(topic) {
                    output.record(
                        topic,
                        format!("{}|{}", row.key, row.time),
                        row.body.clone().into_bytes(),
                    );
                }
            }
        }
        if let Some(results) = &self.results {
            results.rows(rows);
        }
        self.inner.deliver_at(time, updates);
    }

    fn frontier(&mut self, frontier: Option<Time>) {
        self.inner.frontier(frontier);
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        // `None` (complete) only happens at shutdown, after `closing` is set.
        let Some(frontier) = frontier else {
            return;
        };
        if let Some(slot) = self.frontiers.get(self.local_worker) {
            slot.fetch_max(frontier, Ordering::Release);
        }
        if let Some(results) = &self.results {
            results.frontier(self.local_worker, frontier);
        }
        if let Some(output) = &self.output {
            output.frontier(self.local_worker, Some(frontier));
        }
    }

    fn finish(&mut self) {
        self.inner.finish();
        self.results = None;
        self.output = None;
    }
}

/// Appends the Kafka metrics in Prometheus text format.
pub fn render_prometheus(status: &KafkaStatus, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP megamind_kafka_lag_messages Messages written to a partition but not yet applied.\n# TYPE megamind_kafka_lag_messages gauge"
    );
    for partition in &status.partitions {
        if let Some(lag) = partition.lag {
            let _ = writeln!(
                out,
                "megamind_kafka_lag_messages{{topic=\"{}\",partition=\"{}\"}} {lag}",
                partition.topic, partition.partition
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP megamind_kafka_consumed_messages_total Messages read per partition.\n# TYPE megamind_kafka_consumed_messages_total counter"
    );
    for partition in &status.partitions {
        let _ = writeln!(
            out,
            "megamind_kafka_consumed_messages_total{{topic=\"{}\",partition=\"{}\"}} {}",
            partition.topic, partition.partition, partition.consumed
        );
    }
    for (name, help, kind, value) in [
        (
            "megamind_kafka_pauses_total",
            "Backpressure pauses of the consumers.",
            "counter",
            status.pauses,
        ),
        (
            "megamind_kafka_commits_total",
            "Offset commits.",
            "counter",
            status.commits,
        ),
        (
            "megamind_kafka_commit_failures_total",
            "Failed offset commits.",
            "counter",
            status.commit_failures,
        ),
        (
            "megamind_kafka_output_delivered_total",
            "Output records acknowledged.",
            "counter",
            status.output_delivered,
        ),
        (
            "megamind_kafka_output_failed_total",
            "Output records not delivered.",
            "counter",
            status.output_failed,
        ),
        (
            "megamind_kafka_dead_letters_total",
            "Malformed messages sent to the dead-letter topic.",
            "counter",
            status.dead_letters,
        ),
        (
            "megamind_kafka_suppressed_total",
            "Outputs already delivered by a previous run, not re-emitted.",
            "counter",
            status.suppressed,
        ),
        (
            "megamind_kafka_durable_frontier_ms",
            "Every result before this event time is durable.",
            "gauge",
            status.durable_frontier_ms,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}
