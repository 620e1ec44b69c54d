//! megamind: a real-time analytics and monitoring server on timely dataflow.
//!
//! This crate is the application: configuration, the engine that runs the dataflow
//! (`runtime`), live intake (`ingest`), query views (`views`), the HTTP API (`http`),
//! the demo traffic generator (`demo`), file replay (`replay`) and the load harness
//! (`bench`). Computation lives in `megamind-dataflows`; adapters to the outside world in
//! `megamind-connectors`.

pub mod app;
pub mod bench;
pub mod bench_alerts;
pub mod bench_anomaly;
pub mod bench_insights;
pub mod bench_kafka;
pub mod bench_mcp;
pub mod bench_ml;
pub mod bench_ws;
pub mod config;
pub mod demo;
pub mod health;
pub mod http;
pub mod ingest;
pub mod insights;
pub mod kafka;
pub mod live;
pub mod mcp;
pub mod metrics;
pub mod nab;
pub mod produce;
pub mod replay;
pub mod rule_reload;
pub mod runtime;
pub mod services;
pub mod silences;
pub mod views;
