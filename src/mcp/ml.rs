//! ML tools: `ml_record_prediction`, `ml_record_outcome`, `ml_performance_status`,
//! `ml_get_performance_metrics`.
//!
//! Predictions and outcomes enter the pipeline as events (written ahead like every other
//! event). What the pipeline keeps per model today is windowed: prediction latency and
//! confidence per model and version. Accuracy needs the prediction ⋈ outcome join, which
//! the ML tracking work adds; until then `accuracy` is reported as not available rather
//! than guessed.

use std::collections::BTreeMap;

use megamind_dataflows::model::WindowStats;
use megamind_dataflows::operators::route_events::series_names;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::ToolError;
use super::events::{ingest_objects, AddEventResult};
use super::McpContext;
use crate::views::SeriesFilter;

/// One prediction.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionInput {
    /// The model.
    pub model_id: String,
    /// The model's version.
    #[serde(default)]
    pub model_version: Option<String>,
    /// Unique id the outcome will refer to.
    pub prediction_id: String,
    /// The predicted label.
    pub predicted: String,
    /// Confidence in the prediction, 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// How long the prediction took, ms (non-negative).
    #[schemars(range(min = 0.0))]
    pub latency_ms: f64,
    /// Input features, name → number (for drift detection).
    #[serde(default)]
    pub features: BTreeMap<String, f64>,
    /// The session the prediction was made for.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Event time, ms since the epoch (default: now).
    #[serde(default)]
    pub ts: Option<u64>,
}

/// Parameters of `ml_record_prediction`: exactly one of `prediction` and `predictions`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordPredictionParams {
    /// One prediction.
    #[serde(default)]
    pub prediction: Option<PredictionInput>,
    /// Several predictions.
    #[serde(default)]
    pub predictions: Option<Vec<PredictionInput>>,
}

fn prediction_json(input: &PredictionInput) -> serde_json::Value {
    let mut object = json!({
        "type": "prediction",
        "model_id": input.model_id,
        "prediction_id": input.prediction_id,
        "predicted": input.predicted,
        "confidence": input.confidence,
        "latency_ms": input.latency_ms,
    });
    if let Some(map) = object.as_object_mut() {
        if let Some(version) = &input.model_version {
            map.insert("model_version".into(), json!(version));
        }
        if !input.features.is_empty() {
            map.insert("features".into(), json!(input.features));
        }
        if let Some(session) = &input.session_id {
            map.insert("session_id".into(), json!(session));
        }
        if let Some(ts) = input.ts {
            map.insert("ts".into(), json!(ts));
        }
    }
    object
}

/// `ml_record_prediction`.
///
/// # Errors
/// Neither or both forms given, or a refused batch.
pub async fn record_predictions(
    context: &McpContext,
    params: RecordPredictionParams,
) -> Result<AddEventResult, ToolError> {
    let inputs = match (params.prediction, params.predictions) {
        (Some(one), None) => vec![one],
        (None, Some(many)) if !many.is_empty() => many,
        (None, Some(_)) => return Err(ToolError::invalid("predictions", "must not be empty")),
        (Some(_), Some(_)) => {
            return Err(ToolError::invalid(
                "predictions",
                "give either `prediction` or `predictions`, not both",
            ))
        }
        (None, None) => {
            return Err(ToolError::invalid(
                "prediction",
                "give `prediction` (one) or `predictions` (a list)",
            ))
        }
    };
    ingest_objects(context, inputs.iter().map(prediction_json).collect()).await
}

/// One outcome.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeInput {
    /// The prediction this outcome resolves.
    pub prediction_id: String,
    /// The true label.
    pub actual: String,
    /// The model, when known.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Event time, ms since the epoch (default: now).
    #[serde(default)]
    pub ts: Option<u64>,
}

/// Parameters of `ml_record_outcome`: exactly one of `outcome` and `outcomes`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordOutcomeParams {
    /// One outcome.
    #[serde(default)]
    pub outcome: Option<OutcomeInput>,
    /// Several outcomes.
    #[serde(default)]
    pub outcomes: Option<Vec<OutcomeInput>>,
}

fn outcome_json(input: &OutcomeInput) -> serde_json::Value {
    let mut object =
        json!({"type": "outcome", "prediction_id": input.prediction_id, "actual": input.actual});
    if let Some(map) = object.as_object_mut() {
        if let Some(model) = &input.model_id {
            map.insert("model_id".into(), json!(model));
        }
        if let Some(ts) = input.ts {
            map.insert("ts".into(), json!(ts));
        }
    }
    object
}

/// `ml_record_outcome`.
///
/// # Errors
/// Neither or both forms given, or a refused batch.
pub async fn record_outcomes(
    context: &McpContext,
    params: RecordOutcomeParams,
) -> Result<AddEventResult, ToolError> {
    let inputs = match (params.outcome, params.outcomes) {
        (Some(one), None) => vec![one],
        (None, Some(many)) if !many.is_empty() => many,
        (None, Some(_)) => return Err(ToolError::invalid("outcomes", "must not be empty")),
        (Some(_), Some(_)) => {
            return Err(ToolError::invalid(
                "outcomes",
                "give either `outcome` or `outcomes`, not both",
            ))
        }
        (None, None) => {
            return Err(ToolError::invalid(
                "outcome",
                "give `outcome` (one) or `outcomes` (a list)",
            ))
        }
    };
    ingest_objects(context, inputs.iter().map(outcome_json).collect()).await
}

/// The windowed view of one model version.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelVersionStatus {
    /// The model.
    pub model_id: String,
    /// The version (`unversioned` when predictions carry none).
    pub model_version: String,
    /// Predictions in the current window.
    pub predictions: u64,
    /// Predictions per second over the window.
    pub predictions_per_second: f64,
    /// Latency p50, ms.
    pub latency_p50_ms: f64,
    /// Latency p95, ms.
    pub latency_p95_ms: f64,
    /// Latency p99, ms.
    pub latency_p99_ms: f64,
    /// Mean confidence.
    pub confidence_mean: Option<f64>,
    /// Accuracy over matched outcomes: not available until predictions are joined with
    /// outcomes (ML tracking).
    pub accuracy: Option<f64>,
    /// End of the window these numbers describe, ms.
    pub window_end: u64,
}

/// `ml_performance_status`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PerformanceStatus {
    /// One entry per model version seen in the current window.
    pub models: Vec<ModelVersionStatus>,
    /// What is and is not measured yet.
    pub note: String,
}

fn label<'a>(stats: &'a WindowStats, name: &str) -> Option<&'a str> {
    stats
        .key
        .labels
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn model_windows(
    context: &McpContext,
    model: Option<&str>,
) -> Vec<(WindowStats, Option<WindowStats>)> {
    let mut labels = Vec::new();
    if let Some(model) = model {
        labels.push(("model_id".to_owned(), model.to_owned()));
    }
    let latency = context.app.views.series(&SeriesFilter {
        name: Some(series_names::PREDICTION_LATENCY.to_owned()),
        labels: labels.clone(),
        ..SeriesFilter::default()
    });
    let confidence = context.app.views.series(&SeriesFilter {
        name: Some(series_names::PREDICTION_CONFIDENCE.to_owned()),
        labels,
        ..SeriesFilter::default()
    });
    latency
        .into_iter()
        .map(|stats| {
            let matching = confidence
                .iter()
                .find(|other| other.key.labels == stats.key.labels)
                .cloned();
            (stats, matching)
        })
        .collect()
}

fn version_status(latency: &WindowStats, confidence: Option<&WindowStats>) -> ModelVersionStatus {
    ModelVersionStatus {
        model_id: label(latency, "model_id").unwrap_or_default().to_owned(),
        model_version: label(latency, "model_version")
            .unwrap_or("unversioned")
            .to_owned(),
        predictions: latency.count,
        predictions_per_second: latency.rate,
        latency_p50_ms: latency.p50,
        latency_p95_ms: latency.p95,
        latency_p99_ms: latency.p99,
        confidence_mean: confidence.map(|stats| stats.mean),
        accuracy: None,
        window_end: latency.end,
    }
}

const NOTE: &str = "latency, confidence and prediction rates come from the sliding windows; \
                    accuracy, precision/recall and drift need the prediction-outcome join (ML tracking)";

/// `ml_performance_status`.
pub fn status(context: &McpContext) -> PerformanceStatus {
    PerformanceStatus {
        models: model_windows(context, None)
            .iter()
            .map(|(latency, confidence)| version_status(latency, confidence.as_ref()))
            .collect(),
        note: NOTE.to_owned(),
    }
}

/// Parameters of `ml_get_performance_metrics`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// The model.
    pub model_id: String,
    /// Only this version.
    #[serde(default)]
    pub model_version: Option<String>,
}

/// Everything measured about one model.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelMetrics {
    /// The model.
    pub model_id: String,
    /// Summary per version.
    pub versions: Vec<ModelVersionStatus>,
    /// Full latency window statistics per version (ms).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub latency_windows: Vec<WindowStats>,
    /// Full confidence window statistics per version.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub confidence_windows: Vec<WindowStats>,
    /// What is and is not measured yet.
    pub note: String,
}

/// `ml_get_performance_metrics`.
///
/// # Errors
/// No prediction of that model (and version) in the current window.
pub fn metrics(context: &McpContext, params: &ModelParams) -> Result<ModelMetrics, ToolError> {
    if params.model_id.is_empty() {
        return Err(ToolError::invalid("model_id", "must not be empty"));
    }
    let windows: Vec<(WindowStats, Option<WindowStats>)> =
        model_windows(context, Some(&params.model_id))
            .into_iter()
            .filter(|(latency, _)| {
                params
                    .model_version
                    .as_deref()
                    .is_none_or(|version| label(latency, "model_version") == Some(version))
            })
            .collect();
    if windows.is_empty() {
        return Err(ToolError::refused(format!(
            "no predictions of model {:?}{} in the current window",
            params.model_id,
            params
                .model_version
                .as_ref()
                .map_or_else(String::new, |version| format!(" version {version:?}"))
        )));
    }
    Ok(ModelMetrics {
        model_id: params.model_id.clone(),
        versions: windows
            .iter()
            .map(|(latency, confidence)| version_status(latency, confidence.as_ref()))
            .collect(),
        latency_windows: windows.iter().map(|(latency, _)| latency.clone()).collect(),
        confidence_windows: windows
            .iter()
            .filter_map(|(_, confidence)| confidence.clone())
            .collect(),
        note: NOTE.to_owned(),
    })
}
