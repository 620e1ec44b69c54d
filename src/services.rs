//! The switchable services of a running server and their status: what
//! `realtime_start_monitoring` / `realtime_stop_monitoring` turn on and off and what
//! `realtime_get_status` reports.
//!
//! Stopping monitoring closes the intake (HTTP and MCP ingest answer "stopped") and pauses
//! synthetic traffic; the engine keeps its state, so every query keeps answering, and
//! starting again resumes where it stopped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use megamind_dataflows::time::Clock;
use serde::Serialize;

use crate::metrics::EngineMetrics;

/// A service that can be started and stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceName {
    /// Event intake over HTTP and MCP.
    Ingest,
    /// The synthetic traffic generator (only with `megamind demo`).
    Demo,
}

impl ServiceName {
    /// Every service.
    pub const ALL: [ServiceName; 2] = [ServiceName::Ingest, ServiceName::Demo];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Demo => "demo",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<ServiceName> {
        Self::ALL
            .into_iter()
            .find(|service| service.as_str() == name)
    }
}

#[derive(Debug)]
struct Switch {
    available: bool,
    running: AtomicBool,
    /// Wall time of the last start, ms (0 when stopped).
    since_ms: AtomicU64,
}

/// The status of one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// Which service.
    pub name: ServiceName,
    /// `running`, `stopped`, or `unavailable` (not part of this process).
    pub state: &'static str,
    /// Seconds since it was last started, when running.
    pub uptime_seconds: Option<f64>,
}

/// The switches, shared by the intake paths, the demo loop and the MCP tools.
pub struct Services {
    ingest: Switch,
    demo: Switch,
    clock: Arc<dyn Clock>,
    metrics: Arc<EngineMetrics>,
    /// Events accepted per second, over the last second (f64 bits).
    rate_bits: AtomicU64,
    last_sample: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("ingest", &self.ingest)
            .field("demo", &self.demo)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// All available services running; `demo` says whether this process has a generator.
    pub fn new(clock: Arc<dyn Clock>, metrics: Arc<EngineMetrics>, demo: bool) -> Self {
        let now = clock.now_ms();
        let switch = |available: bool| Switch {
            available,
            running: AtomicBool::new(available),
            since_ms: AtomicU64::new(if available { now } else { 0 }),
        };
        Self {
            ingest: switch(true),
            demo: switch(demo),
            clock,
            metrics,
            rate_bits: AtomicU64::new(0),
            last_sample: Mutex::new((now, 0)),
        }
    }

    fn switch(&self, name: ServiceName) -> &Switch {
        match name {
            ServiceName::Ingest => &self.ingest,
            ServiceName::Demo => &self.demo,
        }
    }

    /// Whether `name` is running.
    pub fn is_running(&self, name: ServiceName) -> bool {
        self.switch(name).running.load(Ordering::Acquire)
    }

    /// Starts `names` (all when empty); returns the ones that changed.
    pub fn start(&self, names: &[ServiceName]) -> Vec<ServiceName> {
        self.set(names, true)
    }

    /// Stops `names` (all when empty); returns the ones that changed.
    pub fn stop(&self, names: &[ServiceName]) -> Vec<ServiceName> {
        self.set(names, false)
    }

    fn set(&self, names: &[ServiceName], running: bool) -> Vec<ServiceName> {
        let names: &[ServiceName] = if names.is_empty() {
            &ServiceName::ALL
        } else {
            names
        };
        let now = self.clock.now_ms();
        let mut changed = Vec::new();
        for name in names {
            let switch = self.switch(*name);
            if switch.available && switch.running.swap(running, Ordering::AcqRel) != running {
                switch
                    .since_ms
                    .store(if running { now } else { 0 }, Ordering::Release);
                changed.push(*name);
            }
        }
        changed
    }

    /// The status of every service.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        let now = self.clock.now_ms();
        ServiceName::ALL
            .into_iter()
            .map(|name| {
                let switch = self.switch(name);
                let running = switch.running.load(Ordering::Acquire);
                ServiceStatus {
                    name,
                    state: match (switch.available, running) {
                        (false, _) => "unavailable",
                        (true, true) => "running",
                        (true, false) => "stopped",
                    },
                    uptime_seconds: running.then(|| {
                        now.saturating_sub(switch.since_ms.load(Ordering::Acquire)) as f64 / 1000.0
                    }),
                }
            })
            .collect()
    }

    /// Events accepted per second over the last sampling period.
    pub fn events_per_second(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    /// Samples the accepted-events counter; call about once a second.
    pub fn sample_rate(&self) {
        let now = self.clock.now_ms();
        let total = self.metrics.events_accepted.load(Ordering::Relaxed);
        let mut last = self
            .last_sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_sub(last.0);
        if elapsed > 0 {
            let rate = total.saturating_sub(last.1) as f64 * 1000.0 / elapsed as f64;
            self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
            *last = (now, total);
        }
    }

    /// Samples the event rate every second until `shutdown`.
    pub async fn run_rate_sampler(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = ticker.tick() => self.sample_rate(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use megamind_dataflows::time::ManualClock;

    #[test]
    fn start_stop_and_status() {
        let clock = ManualClock::new(1_000);
        let metrics = Arc::new(EngineMetrics::default());
        let services = Services::new(Arc::new(clock.clone()), Arc::clone(&metrics), false);
        assert!(services.is_running(ServiceName::Ingest));
        assert!(
            !services.is_running(ServiceName::Demo),
            "no generator in this process"
        );
        assert_eq!(services.stop(&[]), [ServiceName::Ingest]);
        assert_eq!(services.stop(&[ServiceName::Ingest]), []);
        let statuses = services.statuses();
        assert_eq!(
            (statuses[0].state, statuses[1].state),
            ("stopped", "unavailable")
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(
            services.start(&[ServiceName::Ingest]),
            [ServiceName::Ingest]
        );
        clock.advance(Duration::from_millis(1500));
        assert_eq!(services.statuses()[0].uptime_seconds, Some(1.5));
        metrics.events_accepted.fetch_add(300, Ordering::Relaxed);
        services.sample_rate();
        assert!((services.events_per_second() - 150.0).abs() < 1e-9);
        assert_eq!(ServiceName::parse("demo"), Some(ServiceName::Demo));
        assert_eq!(ServiceName::parse("x"), None);
    }
}
