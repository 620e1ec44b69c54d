//! Live intake: decode request bodies, check event times against the wall clock, and hand
//! batches to the workers round-robin; advance the watermark when input goes quiet.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use megamind_connectors::codec::json::{decode_body, RecordError};
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
    next_worker: AtomicUsize,
    last_event_wall_ms: AtomicU64,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("feeder", &self.feeder)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// A new ingest path over `feeder`.
    pub fn new(
        feeder: Feeder,
        clock: Arc<dyn Clock>,
        config: IngestConfig,
        metrics: Arc<EngineMetrics>,
    ) -> Self {
        let now = clock.now_ms();
        Self {
            feeder,
            clock,
            config,
            metrics,
            next_worker: AtomicUsize::new(0),
            last_event_wall_ms: AtomicU64::new(now),
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

    /// Decodes a body (one object, an array or NDJSON), checks and submits the good events.
    ///
    /// # Errors
    /// [`FeedError`] when the pipeline cannot take the batch; nothing of it was accepted.
    pub async fn ingest_body(&self, body: bytes::Bytes) -> Result<IngestReport, FeedError> {
        let limits = self.config.batch_limits();
        let now = self.clock.now_ms();
        let batch = if body.len() > INLINE_DECODE_BYTES {
            tokio::task::spawn_blocking(move || decode_body(&body, &limits, now))
                .await
                .map_err(|_| FeedError::Stopped)?
        } else {
            decode_body(&body, &limits, now)
        };
        let mut rejected = batch.errors;
        let events = self.check_times(batch.events, &mut rejected);
        self.finish(events, rejected).await
    }

    /// Checks and submits already-decoded events; `rejected` holds the records that failed
    /// to decode, by index.
    ///
    /// # Errors
    /// As [`Ingest::ingest_body`].
    pub async fn ingest_events(
        &self,
        events: Vec<Event>,
        mut rejected: Vec<RecordError>,
    ) -> Result<IngestReport, FeedError> {
        let events = self.check_times(events, &mut rejected);
        self.finish(events, rejected).await
    }

    async fn finish(
        &self,
        events: Vec<Event>,
        rejected: Vec<RecordError>,
    ) -> Result<IngestReport, FeedError> {
        for error in &rejected {
            self.metrics.reject(error.error.reason, 1);
        }
        let accepted = events.len();
        if accepted > 0 {
            self.submit(events).await?;
        }
        Ok(IngestReport { accepted, rejected })
    }

    /// Rejects events stamped too far in the future. Report indices refer to the records
    /// of the request, so the positions of the surviving events are reconstructed around
    /// the records already rejected.
    fn check_times(&self, events: Vec<Event>, rejected: &mut Vec<RecordError>) -> Vec<Event> {
        let horizon = self
            .clock
            .now_ms()
            .saturating_add(duration_ms(self.config.max_future_skew));
        if events.iter().all(|event| event.ts <= horizon) {
            return events;
        }
        let mut taken: Vec<usize> = rejected.iter().map(|error| error.index).collect();
        taken.sort_unstable();
        let mut kept = Vec::with_capacity(events.len());
        let mut position = 0usize;
        let mut next_index = || {
            while taken.binary_search(&position).is_ok() {
                position += 1;
            }
            let index = position;
            position += 1;
            index
        };
        for event in events {
            let index = next_index();
            if event.ts > horizon {
                rejected.push(RecordError {
                    index,
                    line: None,
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
                kept.push(event);
            }
        }
        rejected.sort_by_key(|error| error.index);
        kept
    }

    /// Hands events to the next worker.
    ///
    /// # Errors
    /// [`FeedError::Overloaded`] when queues stayed full for a second.
    pub async fn submit(&self, events: Vec<Event>) -> Result<(), FeedError> {
        let workers = self.feeder.workers().max(1);
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % workers;
        self.last_event_wall_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.feeder
            .send(worker, WorkerMsg::Events(events), SEND_TIMEOUT)
            .await
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
}
