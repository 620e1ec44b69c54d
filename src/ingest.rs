//! Live intake: decode request bodies, check event times against the wall clock, write
//! the accepted batch ahead to the embedded store, then hand it to a worker; replay the
//! store at start; advance the watermark when input goes quiet.
//!
//! The order matters: room in a worker queue is reserved first (so an overloaded
//! pipeline refuses the batch before anything is stored), then the batch is committed to
//! the event log, then it is enqueued through the reservation (which cannot fail). An
//! answered request is therefore both durable and in the pipeline.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use megamind_connectors::codec::json::{decode_body, IndexedEvent, RecordError};
use megamind_connectors::store::EventLog;
use megamind_dataflows::model::{DataError, ErrorReason, Event};
use megamind_dataflows::time::{duration_ms, Clock};
use serde::Serialize;

use crate::config::IngestConfig;
use crate::metrics::EngineMetrics;
use crate::runtime::{FeedError, Feeder, WorkerMsg};

/// Bodies larger than this are decoded on the blocking pool, not on a runtime thread.
const INLINE_DECODE_BYTES: usize = 256 * 1024;
/// How long a request waits for queue room before it is refused as overload.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// JSON objects as one NDJSON body for [`Ingest::ingest_body`] (serde_json writes no raw
/// newlines, so every object stays on its line).
pub fn ndjson_body(objects: &[serde_json::Value]) -> bytes::Bytes {
    let mut body = String::new();
    for object in objects {
        body.push_str(&object.to_string());
        body.push('\n');
    }
    bytes::Bytes::from(body)
}

/// What happened to a batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Events handed to the pipeline.
    pub accepted: usize,
    /// One entry per rejected record.
    pub rejected: Vec<RecordError>,
}

/// The live ingest path, shared by HTTP, MCP and the demo generator.
pub struct Ingest {
    feeder: Feeder,
    clock: Arc<dyn Clock>,
    config: IngestConfig,
    metrics: Arc<EngineMetrics>,
    log: Option<EventLog>,
    services: Option<Arc<crate::services::Services>>,
    next_worker: AtomicUsize,
    last_event_wall_ms: AtomicU64,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("feeder", &self.feeder)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// Totals of a start-up replay of the event log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReplayedLog {
    /// Batches read.
    pub batches: usize,
    /// Events fed back into the pipeline.
    pub events: usize,
    /// The largest event time replayed, ms (0: none).
    pub max_ts: u64,
}

impl Ingest {
    /// A new ingest path over `feeder`, writing ahead to `log` when given.
    pub fn new(
        feeder: Feeder,
        clock: Arc<dyn Clock>,
        config: IngestConfig,
        metrics: Arc<EngineMetrics>,
        log: Option<EventLog>,
    ) -> Self {
        let now = clock.now_ms();
        Self {
            feeder,
            clock,
            config,
            metrics,
            log,
            services: None,
            next_worker: AtomicUsize::new(0),
            last_event_wall_ms: AtomicU64::new(now),
        }
    }

    /// Makes the intake follow the `ingest` service switch.
    pub fn with_services(mut self, services: Arc<crate::services::Services>) -> Self {
        self.services = Some(services);
        self
    }

    fn check_open(&self) -> Result<(), FeedError> {
        match &self.services {
            Some(services) if !services.is_running(crate::services::ServiceName::Ingest) => {
                Err(FeedError::Paused)
            }
            _ => Ok(()),
        }
    }

    /// The clock this ingest stamps events with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The feeder (queue depth, worker count).
    pub fn feeder(&self) -> &Feeder {
        &self.feeder
    }

    /// The write-ahead log, when enabled.
    pub fn log(&self) -> Option<&EventLog> {
        self.log.as_ref()
    }

    /// Decodes a body (one object, an array or NDJSON), checks the good events, writes the
    /// batch ahead and submits it.
    ///
    /// # Errors
    /// [`FeedError`] when the pipeline or the event log cannot take the batch; nothing of it
    /// was accepted then.
    pub async fn ingest_body(&self, body: bytes::Bytes) -> Result<IngestReport, FeedError> {
        self.check_open()?;
        let limits = self.config.batch_limits();
        let now = self.clock.now_ms();
        let (batch, body) = if body.len() > INLINE_DECODE_BYTES {
            tokio::task::spawn_blocking(move || (decode_body(&body, &limits, now), body))
                .await
                .map_err(|_| FeedError::Stopped)?
        } else {
            (decode_body(&body, &limits, now), body)
        };
        let (indexed, mut rejected) = batch.into_indexed();
        let horizon = now.saturating_add(duration_ms(self.config.max_future_skew));
        let mut events = Vec::with_capacity(indexed.len());
        for IndexedEvent { index, line, event } in indexed {
            if event.ts > horizon {
                rejected.push(RecordError {
                    index,
                    line,
                    error: DataError::field(
                        ErrorReason::FutureTimestamp,
                        "ts",
                        format!(
                            "is more than {} ahead of the server clock",
                            humantime::format_duration(self.config.max_future_skew)
                        ),
                    ),
                });
            } else {
                events.push(event);
            }
        }
        rejected.sort_by_key(|error| error.index);
        for error in &rejected {
            self.metrics.reject(error.error.reason, 1);
        }
        let accepted = events.len();
        if accepted > 0 {
            let reservation = self.reserve().await?;
            if let Some(log) = &self.log {
                let payload = String::from_utf8_lossy(&body).into_owned();
                let skipped = rejected.iter().map(|error| error.index).collect();
                if let Err(error) = log.append(now, payload, skipped).await {
                    tracing::error!(error = %error, "event log append failed; batch refused");
                    return Err(FeedError::Storage);
                }
            }
            self.last_event_wall_ms.store(now, Ordering::Relaxed);
            reservation.send(WorkerMsg::Events(events));
        }
        Ok(IngestReport { accepted, rejected })
    }

    /// Submits already-validated events without writing them ahead (synthetic traffic).
    ///
    /// # Errors
    /// [`FeedError::Overloaded`] when queues stayed full for a second.
    pub async fn submit(&self, events: Vec<Event>) -> Result<(), FeedError> {
        let reservation = self.reserve().await?;
        self.last_event_wall_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
        reservation.send(WorkerMsg::Events(events));
        Ok(())
    }

    async fn reserve(&self) -> Result<crate::runtime::Reservation, FeedError> {
        let workers = self.feeder.workers().max(1);
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % workers;
        self.feeder.reserve(worker, SEND_TIMEOUT).await
    }

    /// Feeds every batch of the event log at `path` back into the pipeline, exactly as it
    /// was accepted (same ingestion time for events without `ts`, same records skipped).
    /// Call before accepting live traffic and before the idle ticker runs.
    ///
    /// # Errors
    /// The log cannot be read, or the pipeline stopped.
    pub async fn replay_log(&self, path: &std::path::Path) -> Result<ReplayedLog, String> {
        let batches = EventLog::read_after(path, 0).map_err(|error| error.to_string())?;
        let limits = self.config.batch_limits();
        let mut totals = ReplayedLog::default();
        for batch in batches {
            let decoded = decode_body(batch.payload.as_bytes(), &limits, batch.ingested_ms);
            let (indexed, _) = decoded.into_indexed();
            let events: Vec<Event> = indexed
                .into_iter()
                .filter(|indexed| batch.rejected.binary_search(&indexed.index).is_err())
                .map(|indexed| indexed.event)
                .collect();
            totals.batches += 1;
            if events.is_empty() {
                continue;
            }
            totals.events += events.len();
            totals.max_ts = events
                .iter()
                .map(|event| event.ts)
                .fold(totals.max_ts, u64::max);
            let reservation = loop {
                match self.reserve().await {
                    Ok(reservation) => break reservation,
                    // Replay waits for the pipeline however long it takes.
                    Err(FeedError::Overloaded) => continue,
                    Err(error) => return Err(error.to_string()),
                }
            };
            reservation.send(WorkerMsg::Events(events));
        }
        Ok(totals)
    }

    /// Runs until `shutdown` resolves: whenever no event arrived for `idle_advance_after`,
    /// pushes the watermark to `now - allowed_lateness` so windows close on a quiet stream.
    pub async fn run_idle_ticker(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let idle = duration_ms(self.config.idle_advance_after);
        let lateness = duration_ms(self.config.allowed_lateness);
        let period = self
            .config
            .idle_advance_after
            .min(Duration::from_millis(250));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = self.clock.now_ms();
            let last = self.last_event_wall_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= idle {
                self.feeder.advance_all(now.saturating_sub(lateness));
            }
        }
    }

    /// Runs until `shutdown`: prunes event-log batches older than `retention` every minute.
    pub async fn run_pruner(
        self: Arc<Self>,
        retention: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Some(log) = &self.log {
                let before = self.clock.now_ms().saturating_sub(duration_ms(retention));
                match log.prune(before).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "pruned event log"),
                    Err(error) => tracing::warn!(error = %error, "event log prune failed"),
                }
            }
        }
    }
}
