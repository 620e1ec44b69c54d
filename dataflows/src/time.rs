//! Event-time helpers and the injectable wall clock.
//!
//! Operators never read the wall clock: their notion of time comes from the data and the
//! frontier. The runtime needs "now" in two places (stamping events that carry no `ts`,
//! and advancing the watermark of an idle input); it asks a [`Clock`], so tests can
//! substitute a [`ManualClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(duration_ms)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(duration_ms(by), Ordering::SeqCst);
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: u64) {
        self.now.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Measures elapsed wall time (benchmarks, summaries, pacing); never used by operators.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    started: std::time::Instant,
}

impl Stopwatch {
    /// Starts measuring now.
    #[allow(clippy::disallowed_methods)] // the one place the monotonic clock is read
    pub fn start() -> Self {
        Self {
            started: std::time::Instant::now(),
        }
    }

    /// Time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The instant it started (for latency arithmetic between stopwatches).
    pub fn started(&self) -> std::time::Instant {
        self.started
    }
}

/// Blocks the calling thread for `duration`. Only for pacing threads that belong to
/// megamind itself (replay at recorded speed, load generators), never timely workers.
#[allow(clippy::disallowed_methods)] // the one sanctioned sleep
pub fn pace(duration: Duration) {
    std::thread::sleep(duration);
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The end of the pane of length `pane_ms` that contains `ts`: the smallest multiple of
/// `pane_ms` strictly greater than `ts`. Panes are aligned to the Unix epoch and half-open.
///
/// # Panics
/// Panics if `pane_ms` is zero (configuration validation rules that out).
pub fn pane_end(ts: u64, pane_ms: u64) -> u64 {
    assert!(pane_ms > 0, "pane length must be positive");
    (ts / pane_ms).saturating_add(1).saturating_mul(pane_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pane_end_is_exclusive_and_aligned() {
        assert_eq!(pane_end(0, 10), 10);
        assert_eq!(pane_end(9, 10), 10);
        assert_eq!(pane_end(10, 10), 20);
        assert_eq!(pane_end(u64::MAX, 10), u64::MAX);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        clock.set(5);
        assert_eq!(clock.now_ms(), 5);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
