use super::families::*;
use super::*;
use crate::testing::{run_with_workers, Epoch};

fn known(i: usize) -> String {
    match i % 3 {
        0 => format!("connection timeout after {} ms to db-{}", 100 + i, i % 5),
        1 => format!(
            "rate limit exceeded for user {} on endpoint /v1/search",
            i * 7
        ),
        _ => format!("token budget exhausted: used {} of 8000 tokens", 7000 + i),
    }
}

#[test]
fn tokens_replace_numbers_and_lowercase() {
    let tokens: Vec<String> = tokens("Timeout after 250ms on DB-3")
        .map(|t| t.into_owned())
        .collect();
    assert_eq!(
        tokens,
        vec!["timeout", "after", "<num>", "on", "db", "<num>"]
    );
}

#[test]
fn new_kind_of_message_is_flagged_and_known_families_are_not() {
    let config = NoveltyConfig::default();
    let mut detector = NoveltyDetector::new();
    for i in 0..120 {
        detector.observe(&known(i), i as u64, &config);
    }
    assert_eq!(detector.families().len(), 3, "{:#?}", detector.families());
    for i in 120..180 {
        let verdict = detector.observe(&known(i), i as u64, &config);
        assert!(
            !verdict.novel,
            "known message {} flagged: {verdict:?}",
            known(i)
        );
        assert!(verdict.family.is_some());
    }
    let verdict = detector.observe(
        "disk quota exceeded while writing checkpoint shard 12",
        500,
        &config,
    );
    assert!(verdict.novel, "{verdict:?}");
    assert!(!verdict.cold_start);
    // After it repeats min_points times it becomes a family of its own.
    for i in 0..config.min_points {
        detector.observe(
            &format!("disk quota exceeded while writing checkpoint shard {i}"),
            501,
            &config,
        );
    }
    let verdict = detector.observe(
        "disk quota exceeded while writing checkpoint shard 99",
        502,
        &config,
    );
    assert!(!verdict.novel, "{verdict:?}");
    let families = detector.families();
    let disk = families
        .iter()
        .find(|f| f.template.starts_with("disk quota"))
        .unwrap();
    assert!(disk.count >= 1);
    assert_eq!(disk.last_seen, 502);
    let timeouts = families
        .iter()
        .find(|f| f.template.starts_with("connection timeout"))
        .unwrap();
    assert_eq!(timeouts.count, 60);
    assert!(!timeouts.examples.is_empty());
}

#[test]
fn cold_start_gives_no_verdict() {
    let config = NoveltyConfig::default();
    let mut detector = NoveltyDetector::new();
    let verdict = detector.observe("anything at all", 0, &config);
    assert!(verdict.cold_start);
    assert!(!verdict.novel);
}

#[test]
fn dbscan_separates_groups_and_marks_noise() {
    let v = |a: f32, b: f32| {
        let n = (a * a + b * b).sqrt();
        [a / n, b / n]
    };
    let points = [
        v(1.0, 0.0),
        v(1.0, 0.05),
        v(1.0, 0.1),
        v(0.0, 1.0),
        v(0.05, 1.0),
        v(0.1, 1.0),
        v(1.0, 1.0),
    ];
    let rows = ndarray::Array2::from_shape_fn((points.len(), 2), |(i, j)| points[i][j]);
    let labels = dbscan(rows.view(), 0.02, 3);
    assert_eq!(
        labels,
        vec![Some(0), Some(0), Some(0), Some(1), Some(1), Some(1), None]
    );
}

#[test]
fn bounded_cuts_at_a_character_boundary() {
    assert_eq!(bounded("short", 512), "short");
    // "é" is two bytes: a cut in its middle backs off to before it.
    assert_eq!(bounded("abé", 3), "ab");
    assert_eq!(bounded("abé", 4), "abé");
}

/// A message of `words` distinct words (no two messages share one), about 8 bytes a word.
fn long_message(seed: usize, words: usize) -> String {
    (0..words)
        .map(|w| {
            let mut x = (seed * 1_000_003 + w) as u64;
            let mut word = String::new();
            for _ in 0..7 {
                word.push(char::from(b'a' + (x % 26) as u8));
                x /= 26;
            }
            word
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn very_long_messages_are_read_only_up_to_the_bound() {
    let config = NoveltyConfig::default();
    let mut detector = NoveltyDetector::new();
    for i in 0..120 {
        detector.observe(&known(i), i as u64, &config);
    }
    assert_eq!(detector.families().len(), 3);
    let refits = detector.refits();
    // 200 messages of 1 MB, each made of words never seen before: all novel, none of
    // them alike, so none triggers an early refit; all are cut to the byte bound.
    let novel = (0..200)
        .filter(|&i| {
            let message = long_message(i, 128 * 1024);
            assert!(message.len() > 1_000_000);
            detector.observe(&message, 1_000 + i as u64, &config).novel
        })
        .count();
    assert_eq!(novel, 200);
    assert_eq!(detector.truncated(), 200);
    let (messages, longest) = detector.sample_stats();
    assert!(messages <= config.sample_size);
    assert!(longest <= config.max_message_bytes, "{longest}");
    // Only the scheduled refits (every refit_every messages) ran.
    assert_eq!(detector.refits() - refits, 200 / config.refit_every as u64);
    // A known message is still recognised: the long ones did not form a family.
    let verdict = detector.check(&known(7), &config);
    assert!(!verdict.novel, "{verdict:?}");
    for family in detector.families() {
        for example in &family.examples {
            assert!(example.len() <= config.max_message_bytes);
        }
    }
}

#[test]
fn a_long_repeated_message_becomes_a_family_from_its_start() {
    let config = NoveltyConfig::default();
    let mut detector = NoveltyDetector::new();
    for i in 0..120 {
        detector.observe(&known(i), i as u64, &config);
    }
    // The same 64 KiB stack trace with a different tail each time: only the start is read,
    // so they are one family.
    let head = long_message(7, 8 * 1024);
    let first = detector.observe(
        &format!("{head} tail {}", long_message(1, 50)),
        200,
        &config,
    );
    assert!(first.novel);
    for i in 0..config.min_points {
        detector.observe(
            &format!("{head} tail {}", long_message(i + 2, 50)),
            201,
            &config,
        );
    }
    let verdict = detector.check(&format!("{head} other"), &config);
    assert!(!verdict.novel, "{verdict:?}");
}

fn event(session: &str, message: String) -> SessionEvent {
    SessionEvent {
        session_id: session.into(),
        user_id: None,
        kind: SessionKind::Error,
        operation: None,
        duration_ms: None,
        tokens: None,
        success: None,
        message: Some(message),
    }
}

fn operator_output(workers: usize) -> Vec<String> {
    let mut epochs = Vec::new();
    for epoch in 0..6u64 {
        let mut data = Vec::new();
        for i in 0..30usize {
            let n = epoch as usize * 30 + i;
            data.push((
                epoch * 1000 + i as u64,
                event(&format!("s{}", n % 4), known(n)),
            ));
        }
        if epoch == 5 {
            data.push((
                5_500,
                event("s9", String::from("gpu fell off the bus during inference")),
            ));
        }
        epochs.push(Epoch::new(epoch * 1000, data));
    }
    let config = NoveltyConfig::default();
    let mut out: Vec<String> = run_with_workers(
        workers,
        move |events| events.detect_novel_errors("t", &config),
        epochs,
    )
    .into_iter()
    .map(|(time, update)| format!("{time} {}", serde_json::to_string(&update).unwrap()))
    .collect();
    out.sort();
    out
}

#[test]
fn operator_flags_novel_errors_and_agrees_across_worker_counts() {
    let one = operator_output(1);
    assert_eq!(one, operator_output(4));
    let novel: Vec<&String> = one
        .iter()
        .filter(|l| l.contains("\"kind\":\"novel_error\""))
        .collect();
    assert!(
        novel.iter().any(|l| l.contains("gpu fell off the bus")),
        "{novel:?}"
    );
    // Only the new message (and nothing from the warm-up families after cold start) is novel.
    assert_eq!(novel.len(), 1, "{novel:?}");
}
