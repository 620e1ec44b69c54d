//! Decoding throughput: one event at a time (the direct prediction/outcome path, the fast
//! scanner and the serde fallback) and whole NDJSON bodies.
//!
//! Run: `cargo bench --bench codec` (or `-- decode_event` for one group).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use megamind_connectors::codec::json::{decode_body, BatchLimits};
use megamind_dataflows::model::decode::{decode_event, DecodeLimits};

const METRIC: &str = r#"{"type":"metric","ts":1700000000123,"session_id":"s417","name":"latency_ms","value":48.211}"#;
const METRIC_LABELS: &str = r#"{"type":"metric","ts":1700000000123,"name":"latency_ms","value":48.211,"labels":{"service":"api","region":"eu-west-1"}}"#;
const SESSION: &str = r#"{"type":"session","ts":1700000000123,"session_id":"session-9","user_id":"user-3","kind":"operation","operation":"run_tests","duration_ms":812.5,"tokens":1400,"success":false,"message":"run_tests failed: exit status 1"}"#;
// The ML bench's two lines: the direct prediction/outcome path.
const PREDICTION: &str = r#"{"type":"prediction","ts":1700000000123,"model_id":"model-3","model_version":"v1","prediction_id":"p1234567","predicted":"cat","confidence":0.873,"latency_ms":12}"#;
const OUTCOME: &str =
    r#"{"type":"outcome","ts":1700000000123,"prediction_id":"p1234567","actual":"dog"}"#;
// An escaped string defers to the serde path.
const ESCAPED: &str = r#"{"type":"metric","ts":1700000000123,"session_id":"s\u0034","name":"latency_ms","value":48.211}"#;

fn decode_one(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("decode_event");
    for (name, line) in [
        ("metric", METRIC),
        ("metric_labels", METRIC_LABELS),
        ("session", SESSION),
        ("prediction", PREDICTION),
        ("outcome", OUTCOME),
        ("escaped_fallback", ESCAPED),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| decode_event(std::hint::black_box(line.as_bytes()), &limits, 0))
        });
    }
    group.finish();
}

fn decode_ndjson(c: &mut Criterion) {
    let limits = BatchLimits {
        max_records: 1_000_000,
        ..BatchLimits::default()
    };
    let mut body = String::new();
    for i in 0..10_000 {
        body.push_str(&METRIC.replace("s417", &format!("s{}", i % 1000)));
        body.push('\n');
    }
    let mut group = c.benchmark_group("decode_body");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("ndjson_10k_metrics", |b| {
        b.iter(|| decode_body(std::hint::black_box(body.as_bytes()), &limits, 0))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = decode_one, decode_ndjson
}
criterion_main!(benches);
