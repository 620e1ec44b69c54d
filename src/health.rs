//! Self-monitoring: samples megamind's own CPU use, resident memory and ingest queue depth
//! with `sysinfo` and feeds them into the pipeline as ordinary metric events
//! (`megamind.process.cpu_percent`, `megamind.process.memory_bytes`,
//! `megamind.ingest.queue_depth`), so they are windowed, forecast and turned into
//! recommendations like any other series.
//!
//! Samples go through [`Ingest::submit`], the same bounded path as demo traffic; when the
//! queues are full the sample is dropped with a warning (health must not add to overload).

use std::sync::Arc;
use std::time::Duration;

use megamind_dataflows::model::{Event, EventBody, MetricEvent};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::watch;

use crate::ingest::Ingest;
use crate::insights::HEALTH_SERIES;

/// One reading of megamind's health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSample {
    /// CPU use of the process, percent of one core (can exceed 100 with several cores).
    pub cpu_percent: f64,
    /// Resident set size, bytes.
    pub memory_bytes: f64,
    /// Batches waiting in the workers' ingest queues.
    pub queue_depth: f64,
}

impl HealthSample {
    /// The sample as metric events at `ts`.
    pub fn events(&self, ts: u64) -> Vec<Event> {
        [self.cpu_percent, self.memory_bytes, self.queue_depth]
            .into_iter()
            .zip(HEALTH_SERIES)
            .filter(|(value, _)| value.is_finite())
            .map(|(value, name)| Event {
                ts,
                body: EventBody::Metric(MetricEvent {
                    name: name.into(),
                    value,
                    labels: Vec::new(),
                    session_id: None,
                }),
                attrs: Vec::new(),
            })
            .collect()
    }
}

/// Reads this process' CPU and memory.
pub struct HealthProbe {
    system: System,
    pid: Option<Pid>,
}

impl Default for HealthProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthProbe {
    /// A probe for the current process (CPU use is measured between two samples, so the
    /// first reads 0).
    pub fn new() -> Self {
        Self {
            system: System::new(),
            pid: sysinfo::get_current_pid().ok(),
        }
    }

    /// Samples CPU and memory now, with `queue_depth` from the caller. `None` when the
    /// process cannot be read (not supported on this platform).
    pub fn sample(&mut self, queue_depth: usize) -> Option<HealthSample> {
        let pid = self.pid?;
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let process = self.system.process(pid)?;
        Some(HealthSample {
            cpu_percent: f64::from(process.cpu_usage()),
            memory_bytes: process.memory() as f64,
            queue_depth: queue_depth as f64,
        })
    }
}

/// Samples health every `interval` and submits it until `shutdown` flips.
pub async fn run_health_sampler(
    ingest: Arc<Ingest>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut probe = HealthProbe::new();
    let interval = interval.max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once: the first sample comes one interval after start.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(sample) = probe.sample(ingest.feeder().queue_depth()) else {
            continue;
        };
        let events = sample.events(ingest.clock().now_ms());
        if let Err(error) = ingest.submit(events).await {
            tracing::warn!(error = %error, "health sample refused by ingest");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_this_process() {
        let mut probe = HealthProbe::new();
        let sample = probe
            .sample(3)
            .expect("sysinfo reads the current process on Linux");
        assert!(sample.memory_bytes > 1_000_000.0, "{sample:?}");
        assert!(sample.cpu_percent >= 0.0);
        let events = sample.events(42);
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|event| event.ts == 42));
    }
}
