//! Self-monitoring counters, shared by every component and rendered for Prometheus.
//!
//! Counters are plain atomics updated once per batch (never per record in a hot loop),
//! and every label comes from a closed set (rejection reasons, update kinds).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use megamind_dataflows::model::ErrorReason;

/// Update kinds counted, in the order of [`UPDATE_KINDS`].
pub const UPDATE_KINDS: [&str; 24] = [
    "window",
    "series_idle",
    "session",
    "session_sample",
    "breach",
    "alert",
    "rejected",
    "alert_record",
    "command_rejected",
    "model_metrics",
    "retraining_trigger",
    "unattributed_orphans",
    "session_prediction",
    "success_model",
    "forecast",
    "insight",
    "anomaly",
    "anomaly_counters",
    "novel_error",
    "error_families",
    "model_registered",
    "silence",
    "rule_change",
    "baseline_pin",
];

/// Names of the anomaly counters, in the order of [`EngineMetrics::anomaly`]:
/// points scored (past cold start), points anomalous, novel error messages, isolation forest
/// refits, error-family reclusterings.
pub const ANOMALY_COUNTERS: [(&str, &str); 6] = [
    (
        "megamind_anomaly_points_scored_total",
        "Numeric points scored past cold start.",
    ),
    (
        "megamind_anomaly_points_anomalous_total",
        "Numeric points judged anomalous.",
    ),
    (
        "megamind_anomaly_novel_errors_total",
        "Messages in no error family.",
    ),
    (
        "megamind_anomaly_forest_refits_total",
        "Isolation forest (re)fits.",
    ),
    (
        "megamind_anomaly_family_refits_total",
        "Error-family reclusterings (DBSCAN).",
    ),
    (
        "megamind_anomaly_messages_truncated_total",
        "Messages longer than anomaly.max_message_bytes (only their start was read).",
    ),
];

/// Counters of the running engine.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Events accepted into the pipeline.
    pub events_accepted: AtomicU64,
    /// Records rejected, by reason (decode failures at ingest, late events in the dataflow).
    pub rejected: [AtomicU64; ErrorReason::ALL.len()],
    /// Ingest calls refused because worker queues were full.
    pub overloaded: AtomicU64,
    /// Times a worker's source stopped reading because too much work was in flight.
    pub backpressure_pauses: AtomicU64,
    /// Events released into the dataflow whose timestamps the output frontier has not
    /// passed yet (all local workers).
    pub in_flight: AtomicU64,
    /// Updates delivered to sinks, by kind.
    pub updates: [AtomicU64; UPDATE_KINDS.len()],
    /// Anomaly counters, see [`ANOMALY_COUNTERS`].
    pub anomaly: [AtomicU64; ANOMALY_COUNTERS.len()],
    /// Updates the views dropped because a bound was reached.
    pub views_dropped: AtomicU64,
    /// The latest watermark sent to the workers (ms).
    pub watermark_ms: AtomicU64,
    /// The latest output frontier seen by a sink (ms).
    pub output_frontier_ms: AtomicU64,
}

impl EngineMetrics {
    /// Counts `count` rejections for `reason`.
    pub fn reject(&self, reason: ErrorReason, count: u64) {
        self.rejected[reason.index()].fetch_add(count, Ordering::Relaxed);
    }

    /// Rejections for `reason` so far.
    pub fn rejected(&self, reason: ErrorReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// All rejections so far.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|counter| counter.load(Ordering::Relaxed))
            .sum()
    }

    /// Adds `count` to the anomaly counter at `position` in [`ANOMALY_COUNTERS`].
    pub fn count_anomaly(&self, position: usize, count: u64) {
        if let Some(counter) = self.anomaly.get(position) {
            counter.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Counts delivered updates of the kind at `position` in [`UPDATE_KINDS`].
    pub fn count_update(&self, position: usize, count: u64) {
        if let Some(counter) = self.updates.get(position) {
            counter.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Delivered updates of `kind` so far.
    pub fn updates_of(&self, kind: &str) -> u64 {
        UPDATE_KINDS
            .iter()
            .position(|known| *known == kind)
            .map_or(0, |position| self.updates[position].load(Ordering::Relaxed))
    }

    /// Rejection counts by reason name (non-zero only).
    pub fn rejected_by_reason(&self) -> std::collections::BTreeMap<&'static str, u64> {
        ErrorReason::ALL
            .iter()
            .map(|reason| (reason.as_str(), self.rejected(*reason)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Renders the counters in the Prometheus text exposition format.
    pub fn render_prometheus(&self, out: &mut String, queue_depth: usize, uptime_seconds: f64) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP megamind_ingest_events_accepted_total Events accepted into the pipeline."
        );
        let _ = writeln!(out, "# TYPE megamind_ingest_events_accepted_total counter");
        let _ = writeln!(
            out,
            "megamind_ingest_events_accepted_total {}",
            load(&self.events_accepted)
        );
        let _ = writeln!(
            out,
            "# HELP megamind_ingest_events_rejected_total Records rejected, by reason."
        );
        let _ = writeln!(out, "# TYPE megamind_ingest_events_rejected_total counter");
        for reason in ErrorReason::ALL {
            let _ = writeln!(
                out,
                "megamind_ingest_events_rejected_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.rejected(reason)
            );
        }
        let _ = writeln!(out, "# HELP megamind_ingest_overloaded_total Ingest calls refused because queues were full.");
        let _ = writeln!(out, "# TYPE megamind_ingest_overloaded_total counter");
        let _ = writeln!(
            out,
            "megamind_ingest_overloaded_total {}",
            load(&self.overloaded)
        );
        let _ = writeln!(out, "# HELP megamind_engine_backpressure_pauses_total Times a worker stopped reading its queue because too many events were in flight in the dataflow.");
        let _ = writeln!(
            out,
            "# TYPE megamind_engine_backpressure_pauses_total counter"
        );
        let _ = writeln!(
            out,
            "megamind_engine_backpressure_pauses_total {}",
            load(&self.backpressure_pauses)
        );
        let _ = writeln!(out, "# HELP megamind_engine_in_flight_events Events released into the dataflow that the output frontier has not passed.");
        let _ = writeln!(out, "# TYPE megamind_engine_in_flight_events gauge");
        let _ = writeln!(
            out,
            "megamind_engine_in_flight_events {}",
            load(&self.in_flight)
        );
        let _ = writeln!(
            out,
            "# HELP megamind_ingest_queue_depth_batches Batches waiting in worker queues."
        );
        let _ = writeln!(out, "# TYPE megamind_ingest_queue_depth_batches gauge");
        let _ = writeln!(out, "megamind_ingest_queue_depth_batches {queue_depth}");
        for ((name, help), counter) in ANOMALY_COUNTERS.iter().zip(&self.anomaly) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", load(counter));
        }
        let _ = writeln!(
            out,
            "# HELP megamind_pipeline_updates_total Updates delivered by the dataflow, by kind."
        );
        let _ = writeln!(out, "# TYPE megamind_pipeline_updates_total counter");
        for (position, kind) in UPDATE_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "megamind_pipeline_updates_total{{kind=\"{kind}\"}} {}",
                load(&self.updates[position])
            );
        }
        let _ = writeln!(
            out,
            "# HELP megamind_views_dropped_total Updates dropped because a view bound was reached."
        );
        let _ = writeln!(out, "# TYPE megamind_views_dropped_total counter");
        let _ = writeln!(
            out,
            "megamind_views_dropped_total {}",
            load(&self.views_dropped)
        );
        let _ = writeln!(
            out,
            "# HELP megamind_pipeline_watermark_milliseconds Latest watermark sent to the workers."
        );
        let _ = writeln!(out, "# TYPE megamind_pipeline_watermark_milliseconds gauge");
        let _ = writeln!(
            out,
            "megamind_pipeline_watermark_milliseconds {}",
            load(&self.watermark_ms)
        );
        let _ = writeln!(
            out,
            "# HELP megamind_process_uptime_seconds Seconds since start."
        );
        let _ = writeln!(out, "# TYPE megamind_process_uptime_seconds gauge");
        let _ = writeln!(out, "megamind_process_uptime_seconds {uptime_seconds:.3}");
    }
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size of this process in bytes (Linux `VmRSS`), if known.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// CPU time (user + system) this process has used so far, in seconds (Linux
/// `/proc/self/stat`, whose times are in USER_HZ = 100 ticks per second), if known.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_reason_and_kind() {
        let metrics = EngineMetrics::default();
        metrics.reject(ErrorReason::Late, 3);
        metrics.count_update(0, 5);
        let mut out = String::new();
        metrics.render_prometheus(&mut out, 2, 1.5);
        assert!(out.contains("megamind_ingest_events_rejected_total{reason=\"late\"} 3"));
        assert!(out.contains("megamind_pipeline_updates_total{kind=\"window\"} 5"));
        assert!(out.contains("megamind_ingest_queue_depth_batches 2"));
        assert_eq!(metrics.rejected_by_reason().get("late"), Some(&3));
        assert_eq!(metrics.updates_of("window"), 5);
    }

    #[test]
    fn rss_is_readable_on_linux() {
        assert!(peak_rss_bytes().unwrap_or(0) > 0);
        assert!(rss_bytes().unwrap_or(0) > 0);
    }
}
