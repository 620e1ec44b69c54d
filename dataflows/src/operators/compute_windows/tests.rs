use std::time::Duration;

use proptest::prelude::*;

use super::series_windows::SeriesWindows;
use super::*;
use crate::model::SeriesKey;
use crate::reference::{sliding_windows, ExpectedWindows};
use crate::testing::{canonical, run_epochs, run_settled, Epoch, Output};

fn config(length_ms: u64, slide_ms: u64) -> WindowConfig {
    WindowConfig {
        length: Duration::from_millis(length_ms),
        slide: Duration::from_millis(slide_ms),
        exact_limit: 100_000,
    }
}

fn sample(name: &str, session: Option<&str>, ts: u64, value: f64) -> Sample {
    Sample {
        key: SeriesKey {
            name: name.into(),
            session_id: session.map(Into::into),
            labels: Vec::new(),
        },
        ts,
        value,
    }
}

fn run(config: &WindowConfig, epochs: Vec<Epoch<Sample>>) -> Output {
    let config = config.clone();
    run_epochs(
        move |samples| samples.compute_windows("test", &config),
        epochs,
    )
}

/// Compares the operator's output with the from-scratch reference.
fn assert_matches_reference(output: &Output, expected: &ExpectedWindows) {
    assert_matches_reference_with(output, expected, true);
}

/// As [`assert_matches_reference`]; with `all_exact == false`, windows whose percentiles
/// came from a histogram are checked against the two-significant-digit bound instead.
fn assert_matches_reference_with(output: &Output, expected: &ExpectedWindows, all_exact: bool) {
    let mut windows = 0;
    let mut idle = 0;
    let mut late = 0;
    for (_, update) in &output.updates {
        match update {
            Update::Window(stats) => {
                windows += 1;
                let want = expected
                    .windows
                    .get(&(stats.key.clone(), stats.end))
                    .unwrap_or_else(|| panic!("unexpected window {stats:?}"));
                assert_eq!(stats.count, want.count, "{stats:?}");
                assert!(
                    (stats.sum - want.sum).abs() <= 1e-9 * want.sum.abs().max(1.0),
                    "{stats:?} {want:?}"
                );
                assert_eq!((stats.min, stats.max), (want.min, want.max), "{stats:?}");
                if stats.exact {
                    assert_eq!(
                        [stats.p50, stats.p95, stats.p99],
                        want.quantiles,
                        "{stats:?}"
                    );
                } else {
                    assert!(!all_exact, "unexpected histogram percentiles {stats:?}");
                    for (got, want) in [stats.p50, stats.p95, stats.p99]
                        .into_iter()
                        .zip(want.quantiles)
                    {
                        assert!(
                            (got - want).abs() <= want.abs() * 0.01 + 0.002,
                            "{stats:?} vs {want}"
                        );
                    }
                }
            }
            Update::SeriesIdle { key, end } => {
                idle += 1;
                assert!(
                    expected.idle.contains(&(key.clone(), *end)),
                    "unexpected idle {key} {end}"
                );
            }
            Update::Rejected { error, .. } => {
                assert_eq!(error.reason, ErrorReason::Late);
                late += 1;
            }
            other => panic!("unexpected update {other:?}"),
        }
    }
    assert_eq!(windows, expected.windows.len(), "window count");
    assert_eq!(idle, expected.idle.len(), "idle count");
    assert_eq!(late, expected.late, "late count");
}

fn arrivals(epochs: &[Epoch<Sample>]) -> Vec<(u64, Sample)> {
    epochs
        .iter()
        .flat_map(|epoch| {
            epoch
                .data
                .iter()
                .map(move |sample| (epoch.time, sample.clone()))
        })
        .collect()
}

#[test]
fn windows_close_as_the_frontier_passes() {
    let config = config(30, 10);
    let epochs = vec![
        Epoch::new(
            0,
            vec![sample("a", None, 1, 1.0), sample("a", None, 12, 3.0)],
        ),
        Epoch::new(
            15,
            vec![sample("a", None, 25, 5.0), sample("b", Some("s"), 16, 7.0)],
        ),
        Epoch::new(40, vec![]),
    ];
    let output = run(&config, epochs.clone());
    assert_matches_reference(&output, &sliding_windows(&arrivals(&epochs), 30, 10));
    let a_windows: Vec<(u64, u64)> = output
        .of_kind("window")
        .iter()
        .filter(|w| w["key"]["name"] == "a")
        .map(|w| (w["end"].as_u64().unwrap(), w["count"].as_u64().unwrap()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(a_windows, [(10, 1), (20, 2), (30, 3), (40, 2), (50, 1)]);
    // Each series goes idle exactly once, one slide after its last window.
    let idle: Vec<String> = output
        .of_kind("series_idle")
        .iter()
        .map(|v| v["end"].to_string())
        .collect();
    assert_eq!(idle.len(), 2);
}

#[test]
fn late_samples_are_reported_not_folded_in() {
    let config = config(20, 10);
    let epochs = vec![
        Epoch::new(0, vec![sample("a", None, 5, 1.0)]),
        // The watermark is at 30: the pane [10, 20) has closed, [20, 30) has closed too.
        Epoch::new(
            30,
            vec![
                sample("a", None, 15, 100.0),
                sample("a", None, 29, 100.0),
                sample("a", None, 31, 2.0),
            ],
        ),
    ];
    let output = run(&config, epochs.clone());
    let expected = sliding_windows(&arrivals(&epochs), 20, 10);
    assert_eq!(expected.late, 2);
    assert_matches_reference(&output, &expected);
    assert!(output
        .of_kind("window")
        .iter()
        .all(|w| w["max"].as_f64().unwrap() < 100.0));
    let rejected = output.of_kind("rejected");
    assert_eq!(rejected[0]["error"]["field"], "ts");
}

#[test]
fn windows_far_apart_do_not_iterate_the_gap() {
    // Two bursts a year apart: the operator must jump over the empty stretch.
    let config = config(300_000, 10_000);
    let year = 365 * 24 * 3_600_000u64;
    let epochs = vec![
        Epoch::new(0, vec![sample("a", None, 1_000, 1.0)]),
        Epoch::new(year, vec![sample("a", None, year + 1_000, 2.0)]),
    ];
    let output = run(&config, epochs.clone());
    assert_matches_reference(
        &output,
        &sliding_windows(&arrivals(&epochs), 300_000, 10_000),
    );
    assert_eq!(output.of_kind("window").len(), 60);
}

#[test]
fn percentiles_switch_to_histogram_for_large_windows() {
    let config = WindowConfig {
        exact_limit: 100,
        ..config(10, 10)
    };
    let data: Vec<Sample> = (0..1_000)
        .map(|i| sample("big", None, 5, i as f64))
        .collect();
    let output = run(&config, vec![Epoch::new(0, data)]);
    let windows = output.of_kind("window");
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0]["exact"], false);
    assert_eq!(windows[0]["count"], 1000);
    let p99 = windows[0]["p99"].as_f64().unwrap();
    assert!((p99 - 989.0).abs() <= 989.0 * 0.01, "p99 {p99}");
}

fn arbitrary_epochs() -> impl Strategy<Value = Vec<Epoch<Sample>>> {
    // Up to 8 epochs; each epoch's watermark advances by 0..40 ms; samples fall within
    // [watermark - 30, watermark + 50), so some are out of order and some are late.
    let raw_sample = (0usize..4, 0u64..80, -100i32..100);
    let epoch = (0u64..40, proptest::collection::vec(raw_sample, 0..12));
    proptest::collection::vec(epoch, 1..8).prop_map(|raw| {
        let mut time = 100u64;
        raw.into_iter()
            .map(|(advance, samples)| {
                time += advance;
                let data = samples
                    .into_iter()
                    .map(|(key, offset, value)| {
                        let names = ["a", "b", "c", "d"];
                        let session = (key % 2 == 0).then_some("s");
                        sample(
                            names[key],
                            session,
                            time + offset - 30,
                            f64::from(value) / 4.0,
                        )
                    })
                    .collect();
                Epoch::new(time, data)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn small_exact_limit_switches_modes_and_back(epochs in arbitrary_epochs(), slide in 1u64..12, panes in 1u64..5, limit in 1usize..6) {
        let config = WindowConfig { exact_limit: limit, ..config(slide * panes, slide) };
        let output = run(&config, epochs.clone());
        let expected = sliding_windows(&arrivals(&epochs), slide * panes, slide);
        assert_matches_reference_with(&output, &expected, false);
        // A window is exact iff it holds at most `limit` samples, whatever came before it.
        for (_, update) in &output.updates {
            if let Update::Window(stats) = update {
                prop_assert_eq!(stats.exact, stats.count as usize <= limit, "{:?}", stats);
            }
        }
        // So the catch-ups' timing changes nothing: closing epoch by epoch (every
        // catch-up done before the next close) gives the same windows.
        let settled = run_settled(
            1,
            move |samples| samples.compute_windows("test", &config),
            epochs,
        );
        prop_assert_eq!(canonical(&settled), output.lines);
    }

    #[test]
    fn matches_reference_on_random_epochs(epochs in arbitrary_epochs(), slide in 1u64..12, panes in 1u64..5) {
        let config = config(slide * panes, slide);
        let output = run(&config, epochs.clone());
        assert_matches_reference(&output, &sliding_windows(&arrivals(&epochs), slide * panes, slide));
    }

    /// With every epoch's frontier seen (closes one by one, each followed by its
    /// catch-up, so windows are built ahead and some are then entered by later samples),
    /// on 1 and 4 workers, the output still matches the reference.
    #[test]
    fn matches_reference_closing_epoch_by_epoch(epochs in arbitrary_epochs(), slide in 1u64..12, panes in 1u64..5) {
        let config = config(slide * panes, slide);
        let expected = sliding_windows(&arrivals(&epochs), slide * panes, slide);
        let mut lines = None;
        for workers in [1, 4] {
            let config = config.clone();
            let updates = run_settled(
                workers,
                move |samples| samples.compute_windows("test", &config),
                epochs.clone(),
            );
            let output = Output { lines: canonical(&updates), updates };
            assert_matches_reference(&output, &expected);
            if let Some(lines) = &lines {
                prop_assert_eq!(lines, &output.lines, "1 and 4 workers disagree");
            }
            lines = Some(output.lines);
        }
    }
}

/// One step of a series' life: a sample into a pane, or a close of the next window.
#[derive(Debug, Clone)]
enum Step {
    Insert {
        pane: u64,
        value: i32,
    },
    /// Close the next window, then catch up (or not) before the following steps.
    Close {
        catch_up: bool,
    },
}

fn arbitrary_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0u64..12, -50i32..50).prop_map(|(pane, value)| Step::Insert { pane, value }),
        1 => any::<bool>().prop_map(|catch_up| Step::Close { catch_up }),
    ];
    proptest::collection::vec(step, 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Numbers computed ahead at catch-up are exactly what the close would compute, in
    /// exact and binned mode, whatever samples enter the window, a later pane or an
    /// already closed one between the catch-up and the close.
    #[test]
    fn numbers_computed_ahead_equal_the_close(steps in arbitrary_steps(), panes in 1u64..5, limit in 1usize..8) {
        let config = WindowConfig { exact_limit: limit, ..config(panes * 10, 10) };
        let key = SeriesKey::named("s");
        let mut series = SeriesPanes::default();
        let mut end_index = 1u64;
        for step in steps {
            match step {
                Step::Insert { pane, value } => {
                    // Samples of closed panes are late and never reach the series.
                    let pane = pane.max(end_index.saturating_sub(1));
                    series.insert(pane, f64::from(value), limit);
                }
                Step::Close { catch_up } => {
                    let mut computed = series.clone();
                    computed.forget_ahead();
                    let closed = series.window(&key, end_index, &config);
                    prop_assert_eq!(&closed, &computed.window(&key, end_index, &config));
                    end_index += 1;
                    series.prepare(end_index, &config);
                    if catch_up {
                        series.catch_up(limit);
                    }
                }
            }
        }
    }
}

/// A series with samples after its next window has that window's numbers computed at
/// catch-up; a sample into the window drops them and the close counts it.
#[test]
fn a_sample_into_the_window_after_catch_up_is_counted() {
    let config = config(30, 10);
    let key = SeriesKey::named("s");
    let mut series = SeriesPanes::default();
    for pane in 0..5 {
        series.insert(pane, pane as f64, 1000);
    }
    assert!(series.window(&key, 3, &config).is_some());
    series.prepare(4, &config);
    series.catch_up(1000);
    assert!(
        series.has_ahead(4),
        "pane 4 exists, so window [1, 4) is computed ahead"
    );
    series.insert(3, 100.0, 1000);
    assert!(!series.has_ahead(4));
    let stats = series.window(&key, 4, &config).expect("window");
    assert_eq!(stats.count, 4);
    assert_eq!(stats.max, 100.0);
}

/// One step of a worker's windows: a sample, a close, or some catch-up.
#[derive(Debug, Clone)]
enum WorkerStep {
    /// A sample of series `key` into the pane `ahead` panes after the oldest open one.
    Insert {
        key: usize,
        ahead: u64,
        value: i32,
    },
    Close,
    CatchUp {
        budget: u64,
    },
}

fn arbitrary_worker_steps() -> impl Strategy<Value = Vec<WorkerStep>> {
    let step = prop_oneof![
        6 => (0usize..3, 0u64..6, -50i32..50)
            .prop_map(|(key, ahead, value)| WorkerStep::Insert { key, ahead, value }),
        2 => Just(WorkerStep::Close),
        2 => (1u64..6).prop_map(|budget| WorkerStep::CatchUp { budget }),
    ];
    proptest::collection::vec(step, 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A close in two halves, handing out the windows built at catch-up first, emits
    /// exactly what a close that computes every window itself emits, whatever samples
    /// entered built windows (or later panes) between the catch-up and the close, and
    /// whether or not the catch-up finished before it.
    #[test]
    fn windows_built_ahead_equal_a_plain_close(steps in arbitrary_worker_steps(), panes in 1u64..5, limit in 1usize..8) {
        let config = WindowConfig { exact_limit: limit, ..config(panes * 10, 10) };
        let mut subject = SeriesWindows::new(config.clone());
        // The same catch-ups, so the merged values take the same path.
        let mut plain = SeriesWindows::without_building(config);
        let mut next_end_index = 1u64;
        for step in steps {
            match step {
                WorkerStep::Insert { key, ahead, value } => {
                    let key = SeriesKey::named(["a", "b", "c"][key]);
                    let index = next_end_index - 1 + ahead;
                    subject.insert(key.clone(), index, f64::from(value));
                    plain.insert(key, index, f64::from(value));
                }
                WorkerStep::Close => {
                    if plain.is_empty() {
                        continue;
                    }
                    let end_index = plain.next_close();
                    prop_assert_eq!(end_index, subject.next_close());
                    let mut closed = subject.begin_close(end_index);
                    subject.finish_close(|update| closed.push(update));
                    let mut expected = plain.begin_close(end_index);
                    prop_assert!(expected.is_empty(), "the reference builds nothing");
                    plain.finish_close(|update| expected.push(update));
                    let canonical = |updates: Vec<Update>| {
                        let mut lines: Vec<String> =
                            updates.iter().map(|update| format!("{update:?}")).collect();
                        lines.sort();
                        lines
                    };
                    prop_assert_eq!(canonical(closed), canonical(expected));
                    next_end_index = end_index + 1;
                }
                WorkerStep::CatchUp { budget } => {
                    prop_assert_eq!(subject.catch_up(budget), plain.catch_up(budget));
                }
            }
        }
    }
}

/// The windows a catch-up built go out at the beginning of the close, the others at its
/// end; a sample into a built window takes it back.
#[test]
fn a_close_begins_with_the_windows_built_ahead() {
    let config = config(20, 10);
    let mut windows = SeriesWindows::new(config);
    let (a, b) = (SeriesKey::named("a"), SeriesKey::named("b"));
    for pane in 0..3 {
        windows.insert(a.clone(), pane, 1.0);
        windows.insert(b.clone(), pane, 2.0);
    }
    assert!(windows.begin_close(1).is_empty(), "no catch-up yet");
    let mut rest = Vec::new();
    windows.finish_close(|update| rest.push(update));
    assert_eq!(rest.len(), 2);
    assert!(!windows.catch_up(u64::MAX), "everything caught up");
    // Both series have pane 2, after window [0, 2): both windows are built.
    windows.insert(b.clone(), 1, 5.0);
    let built = windows.begin_close(2);
    let mut rest = Vec::new();
    windows.finish_close(|update| rest.push(update));
    let key_of = |update: &Update| match update {
        Update::Window(stats) => (stats.key.clone(), stats.count),
        other => panic!("not a window: {other:?}"),
    };
    assert_eq!(
        built.iter().map(key_of).collect::<Vec<_>>(),
        vec![(a.clone(), 2)]
    );
    assert_eq!(rest.iter().map(key_of).collect::<Vec<_>>(), vec![(b, 3)]);
}
