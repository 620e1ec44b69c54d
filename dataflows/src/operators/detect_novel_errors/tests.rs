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
        vec![(0u32, a / n), (1u32, b / n)]
    };
    let vectors = vec![
        v(1.0, 0.0),
        v(1.0, 0.05),
        v(1.0, 0.1),
        v(0.0, 1.0),
        v(0.05, 1.0),
        v(0.1, 1.0),
        v(1.0, 1.0),
    ];
    let labels = dbscan(&vectors, 0.02, 3);
    assert_eq!(
        labels,
        vec![Some(0), Some(0), Some(0), Some(1), Some(1), Some(1), None]
    );
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
