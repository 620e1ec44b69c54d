//! Dataflow operators, one module per verb.
//!
//! Each operator is an extension trait on a timely stream with a pure core that is unit
//! tested without timely. Their doc comments state inputs, outputs, frontier behaviour and
//! state bounds.

pub mod compute_windows;
pub mod detect_novel_errors;
pub mod evaluate_breaches;
pub mod forecast_series;
pub mod manage_alerts;
pub mod predict_sessions;
pub mod quantiles;
pub mod recommend;
pub mod route_events;
pub mod score_anomalies;
pub mod track_models;
pub mod track_sessions;

pub use compute_windows::{ComputeWindows, WindowConfig, WindowConfigError};
pub use detect_novel_errors::{DetectNovelErrors, NoveltyConfig};
pub use evaluate_breaches::{EvaluateBreaches, RuleSet};
pub use forecast_series::{ForecastConfig, ForecastSeries};
pub use manage_alerts::{AlertConfig, ManageAlerts};
pub use predict_sessions::{PredictConfig, PredictSessions};
pub use recommend::{Recommend, RecommendConfig};
pub use route_events::{RouteEvents, RoutedEvents};
pub use score_anomalies::{AnomalyConfig, ScoreAnomalies};
pub use track_models::{TrackModels, TrackModelsConfig};
pub use track_sessions::{SessionConfig, TrackSessions};
