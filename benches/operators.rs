//! The window operator: its pure pane core, and the whole timely operator on a P1-shaped
//! stream (1,000 sessions × 3 metrics, 5 min windows sliding by 10 s).
//!
//! Run: `cargo bench --bench operators` (or `-- compute_windows` for one group).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use megamind_dataflows::model::{Sample, SeriesKey, Update};
use megamind_dataflows::operators::compute_windows::SeriesPanes;
use megamind_dataflows::operators::{ComputeWindows, WindowConfig};
use megamind_dataflows::testing::{run_with_workers, Epoch};

const NAMES: [&str; 3] = ["latency_ms", "tokens", "errors"];

/// A P1-shaped stream: non-decreasing ts (0–3 ms apart), random session and metric.
fn samples(n: usize) -> Vec<Sample> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut ts = 1_700_000_000_000u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ts += state % 4;
            Sample {
                key: SeriesKey {
                    name: NAMES[(state >> 8) as usize % 3].into(),
                    session_id: Some(format!("s{}", (state >> 16) % 1000).into()),
                    labels: Vec::new(),
                },
                ts,
                value: ((state >> 32) % 10_000) as f64 / 100.0,
            }
        })
        .collect()
}

fn pane_core(c: &mut Criterion) {
    let config = WindowConfig::default();
    let key = SeriesKey::named("latency_ms");
    let mut group = c.benchmark_group("series_panes");
    // One series receiving 7 samples per pane, emitting a window per pane.
    group.throughput(Throughput::Elements(7_000));
    group.bench_function("insert_and_window_1000_panes", |b| {
        b.iter(|| {
            let mut panes = SeriesPanes::default();
            let mut emitted = 0u64;
            for index in 0..1_000u64 {
                for i in 0..7 {
                    panes.insert(index, (index * 7 + i) as f64 % 97.0, config.exact_limit);
                }
                if let Some(stats) = panes.window(&key, index + 1, &config) {
                    emitted += stats.count;
                }
                panes.evict_before((index + 2).saturating_sub(config.panes()));
            }
            emitted
        })
    });
    group.finish();
}

fn whole_operator(c: &mut Criterion) {
    let data = samples(200_000);
    let epochs: Vec<Epoch<Sample>> = data
        .chunks(10_000)
        .map(|chunk| {
            let time = chunk
                .iter()
                .map(|s| s.ts)
                .min()
                .unwrap_or(0)
                .saturating_sub(2_000);
            Epoch::new(time, chunk.to_vec())
        })
        .collect();
    let mut group = c.benchmark_group("compute_windows");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(data.len() as u64));
    for workers in [1usize, 2] {
        group.bench_function(format!("p1_shape_200k_samples_{workers}_workers"), |b| {
            b.iter(|| {
                let out = run_with_workers(
                    workers,
                    |samples| samples.compute_windows("bench", &WindowConfig::default()),
                    epochs.clone(),
                );
                out.iter()
                    .filter(|(_, update)| matches!(update, Update::Window(_)))
                    .count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pane_core, whole_operator);
criterion_main!(benches);
