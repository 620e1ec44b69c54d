//! Dataflow graphs composed from operators. Pipelines connect; operators compute.

pub mod analytics;

pub use analytics::{analytics, AnalyticsConfig, InsightsConfig};
