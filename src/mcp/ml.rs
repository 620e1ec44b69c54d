//! ML tools: `ml_record_prediction`, `ml_record_outcome`, `ml_performance_status`,
//! `ml_get_performance_metrics`.
//!
//! Predictions and outcomes enter the pipeline as events (written ahead like every other
//! event). The pipeline's `TrackModels` operator joins them by `prediction_id` and keeps,
//! per model version, the performance, calibration and drift these tools report (read
//! from the views); the sliding windows add the current latency and confidence windows.

use std::collections::BTreeMap;

use megamind_dataflows::model::{
    BaselinePin, ModelRegistration, ModelSnapshot, PinnedReference, RetrainingTrigger, WindowStats,
    UNVERSIONED,
};
use megamind_dataflows::operators::route_events::series_names;
use megamind_dataflows::operators::track_models::stats;
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

/// One model version: its tracked performance (prediction ⋈ outcome) and its latest
/// latency/confidence windows.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelVersionStatus {
    /// The model.
    pub model_id: String,
    /// The version (`unversioned` when predictions carry none).
    pub model_version: String,
    /// `ok`, `degraded` (a registered threshold is breached), `drifted`, `waiting` (no
    /// outcome matched yet) or `unknown` (only windows seen so far).
    pub health: String,
    /// Predictions in the current latency window.
    pub predictions: u64,
    /// Predictions per second over the current window.
    pub predictions_per_second: Option<f64>,
    /// Latency p50 over the current window, ms.
    pub latency_p50_ms: Option<f64>,
    /// Latency p95 over the current window, ms.
    pub latency_p95_ms: Option<f64>,
    /// Latency p99 over the current window, ms.
    pub latency_p99_ms: Option<f64>,
    /// Mean confidence over the current window.
    pub confidence_mean: Option<f64>,
    /// End of the latency window these numbers describe, ms.
    pub window_end: Option<u64>,
    /// Predictions recorded since the version was first seen.
    pub total_predictions: u64,
    /// Cumulative accuracy over every prediction matched with its outcome.
    pub accuracy: Option<f64>,
    /// 95% Wilson interval of `accuracy`.
    pub accuracy_interval: Option<(f64, f64)>,
    /// Accuracy over the current drift window (the latest matched pairs).
    pub window_accuracy: Option<f64>,
    /// Predictions matched with an outcome.
    pub matched: u64,
    /// Predictions waiting for their outcome (pending labels).
    pub pending: u64,
    /// Predictions whose outcome did not come within the horizon.
    pub expired: u64,
    /// Whether any drift test currently says the version drifted.
    pub drifted: bool,
    /// The drift tests that currently fire (`psi:confidence`, `ks:confidence`, ...).
    pub drift_flags: Vec<String>,
    /// Change points ADWIN found on the error stream.
    pub adwin_changes: u64,
    /// Retraining triggers raised.
    pub retraining_triggers: u64,
    /// Whose reference window the drift tests use: the version itself or its registered
    /// `baseline_version` (none before the first evaluation).
    pub reference_version: Option<String>,
    /// When, by whom and why that reference was frozen by "pin now" (a `type:
    /// "model_baseline"` event); none for a reference of first matched pairs.
    #[schemars(with = "Option<serde_json::Value>")]
    pub reference_pinned: Option<PinnedReference>,
}

/// `ml_performance_status`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PerformanceStatus {
    /// One entry per model version seen.
    pub models: Vec<ModelVersionStatus>,
    /// The model registry: `[[ml.models]]` in the config and `type: "model"` events
    /// (register with `realtime_add_event` or `POST /v1/models`), model-wide entries
    /// (no `model_version`) first.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub registry: Vec<ModelRegistration>,
    /// Outcomes that named no model and found no prediction within the horizon.
    pub unattributed_orphan_outcomes: u64,
    /// Recent retraining triggers, oldest first.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub retraining_triggers: Vec<RetrainingTrigger>,
    /// Recent "pin now" commands (`type: "model_baseline"` events) per version they
    /// acted on: `pinned` with the new reference's size, or the `reason` nothing changed.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub baseline_pins: Vec<BaselinePin>,
    /// Where the numbers come from.
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

type VersionKey = (String, String);

fn window_key(stats: &WindowStats) -> VersionKey {
    (
        label(stats, "model_id").unwrap_or_default().to_owned(),
        label(stats, "model_version")
            .unwrap_or(UNVERSIONED)
            .to_owned(),
    )
}

/// Every model version known to the views, optionally of one model: its tracker snapshot
/// and its latest latency and confidence windows.
fn versions(context: &McpContext, model: Option<&str>) -> Vec<VersionView> {
    let mut out: BTreeMap<VersionKey, VersionView> = BTreeMap::new();
    for snapshot in context.app.views.models() {
        if model.is_some_and(|model| snapshot.model_id != model) {
            continue;
        }
        let key = (
            snapshot.model_id.to_string(),
            snapshot.model_version.to_string(),
        );
        out.entry(key).or_default().snapshot = Some(snapshot);
    }
    for (latency, confidence) in model_windows(context, model) {
        let view = out.entry(window_key(&latency)).or_default();
        view.latency = Some(latency);
        view.confidence = confidence;
    }
    out.into_iter()
        .map(|((model_id, model_version), mut view)| {
            view.model_id = model_id;
            view.model_version = model_version;
            view
        })
        .collect()
}

#[derive(Debug, Default)]
struct VersionView {
    model_id: String,
    model_version: String,
    snapshot: Option<ModelSnapshot>,
    latency: Option<WindowStats>,
    confidence: Option<WindowStats>,
}

fn version_status(view: &VersionView) -> ModelVersionStatus {
    let latency = view.latency.as_ref();
    let snapshot = view.snapshot.as_ref();
    let drift = snapshot.and_then(|snapshot| snapshot.drift.as_ref());
    ModelVersionStatus {
        model_id: view.model_id.clone(),
        model_version: view.model_version.clone(),
        health: snapshot.map_or_else(|| "unknown".to_owned(), |s| s.health.clone()),
        predictions: latency.map_or(0, |stats| stats.count),
        predictions_per_second: latency.map(|stats| stats.rate),
        latency_p50_ms: latency.map(|stats| stats.p50),
        latency_p95_ms: latency.map(|stats| stats.p95),
        latency_p99_ms: latency.map(|stats| stats.p99),
        confidence_mean: view.confidence.as_ref().map(|stats| stats.mean),
        window_end: latency.map(|stats| stats.end),
        total_predictions: snapshot.map_or(0, |s| s.predictions),
        accuracy: snapshot.and_then(|s| s.cumulative.accuracy),
        accuracy_interval: snapshot.and_then(|s| s.cumulative.accuracy_interval),
        window_accuracy: snapshot.and_then(|s| s.window.accuracy),
        matched: snapshot.map_or(0, |s| s.matched),
        pending: snapshot.map_or(0, |s| s.pending),
        expired: snapshot.map_or(0, |s| s.expired),
        drifted: drift.is_some_and(|drift| drift.drifted),
        drift_flags: drift
            .map(|drift| {
                drift
                    .tests
                    .iter()
                    .filter(|test| test.drifted)
                    .map(|test| test.test.clone())
                    .collect()
            })
            .unwrap_or_default(),
        adwin_changes: drift.map_or(0, |drift| drift.adwin_changes),
        retraining_triggers: snapshot.map_or(0, |s| s.retraining_triggers),
        reference_version: drift.map(|drift| drift.reference_version.to_string()),
        reference_pinned: drift.and_then(|drift| drift.pinned.clone()),
    }
}

const NOTE: &str = "accuracy, precision/recall/F1, calibration and drift come from the \
                    prediction-outcome join (cumulative and over the latest matched pairs); \
                    predictions, rate, latency percentiles and mean confidence come from the \
                    current sliding window";

/// `ml_performance_status`.
pub fn status(context: &McpContext) -> PerformanceStatus {
    PerformanceStatus {
        models: versions(context, None).iter().map(version_status).collect(),
        registry: context.app.views.registry(),
        unattributed_orphan_outcomes: context.app.views.unattributed_orphans(),
        retraining_triggers: context.app.views.retraining_triggers(),
        baseline_pins: context.app.views.baseline_pins(),
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
    /// Compare `model_version` with this version of the same model (side by side, with
    /// the accuracy difference and its 95% Newcombe interval).
    #[serde(default)]
    pub compare_with: Option<String>,
}

/// Everything measured about one model version.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionMetrics {
    /// Summary.
    pub status: ModelVersionStatus,
    /// Everything tracked from the prediction-outcome join: counts, cumulative and
    /// current-window performance (accuracy with Wilson interval, confusion matrix,
    /// per-class/macro/weighted precision, recall, F1), latency percentiles (all
    /// predictions, hdrhistogram), confidence histogram, reliability bins and expected
    /// calibration error, label mixes, drift tests.
    #[schemars(with = "Option<serde_json::Value>")]
    pub tracked: Option<ModelSnapshot>,
}

/// Two versions side by side: `first − second` for each headline metric.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Comparison {
    /// The first version.
    pub first: String,
    /// The second version.
    pub second: String,
    /// Cumulative accuracy difference.
    pub accuracy_difference: Option<f64>,
    /// Its 95% interval (Newcombe's hybrid score interval from the two Wilson intervals).
    pub accuracy_difference_interval: Option<(f64, f64)>,
    /// Macro F1 difference.
    pub macro_f1_difference: Option<f64>,
    /// Weighted F1 difference.
    pub weighted_f1_difference: Option<f64>,
    /// Latency p99 difference, ms.
    pub latency_p99_difference_ms: Option<f64>,
    /// Expected calibration error difference.
    pub calibration_error_difference: Option<f64>,
}

/// Everything measured about one model.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelMetrics {
    /// The model.
    pub model_id: String,
    /// Summary per version.
    pub versions: Vec<ModelVersionStatus>,
    /// Full metrics per version.
    pub details: Vec<VersionMetrics>,
    /// Full latency window statistics per version (ms).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub latency_windows: Vec<WindowStats>,
    /// Full confidence window statistics per version.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub confidence_windows: Vec<WindowStats>,
    /// The comparison asked for with `compare_with`.
    pub comparison: Option<Comparison>,
    /// This model's registry entries (model-wide first, then per version).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub registry: Vec<ModelRegistration>,
    /// Where the numbers come from.
    pub note: String,
}

fn compare(first: &VersionView, second: &VersionView) -> Comparison {
    let (a, b) = (first.snapshot.as_ref(), second.snapshot.as_ref());
    let both = |f: &dyn Fn(&ModelSnapshot) -> Option<f64>| match (a.and_then(f), b.and_then(f)) {
        (Some(x), Some(y)) => Some(x - y),
        _ => None,
    };
    let interval = match (a, b) {
        (Some(a), Some(b)) => match (
            a.cumulative.accuracy,
            a.cumulative.accuracy_interval,
            b.cumulative.accuracy,
            b.cumulative.accuracy_interval,
        ) {
            (Some(p1), Some((l1, u1)), Some(p2), Some((l2, u2))) => {
                Some(stats::newcombe(p1, (l1, u1), p2, (l2, u2)))
            }
            _ => None,
        },
        _ => None,
    };
    Comparison {
        first: first.model_version.clone(),
        second: second.model_version.clone(),
        accuracy_difference: both(&|s| s.cumulative.accuracy),
        accuracy_difference_interval: interval,
        macro_f1_difference: both(&|s| (s.matched > 0).then_some(s.cumulative.macro_avg.f1)),
        weighted_f1_difference: both(&|s| (s.matched > 0).then_some(s.cumulative.weighted_avg.f1)),
        latency_p99_difference_ms: both(&|s| s.latency.map(|latency| latency.p99)),
        calibration_error_difference: both(&|s| s.confidence.expected_calibration_error),
    }
}

/// `ml_get_performance_metrics`.
///
/// # Errors
/// An empty model id, or no prediction of that model (and version).
pub fn metrics(context: &McpContext, params: &ModelParams) -> Result<ModelMetrics, ToolError> {
    if params.model_id.is_empty() {
        return Err(ToolError::invalid("model_id", "must not be empty"));
    }
    let all = versions(context, Some(&params.model_id));
    let missing = |version: Option<&str>| {
        ToolError::refused(format!(
            "no predictions of model {:?}{}",
            params.model_id,
            version.map_or_else(String::new, |version| format!(" version {version:?}"))
        ))
    };
    let comparison = match &params.compare_with {
        None => None,
        Some(other) => {
            let Some(first_version) = params.model_version.as_deref() else {
                return Err(ToolError::invalid(
                    "compare_with",
                    "needs `model_version` (the version to compare with it)",
                ));
            };
            let first = all
                .iter()
                .find(|view| view.model_version == first_version)
                .ok_or_else(|| missing(Some(first_version)))?;
            let second = all
                .iter()
                .find(|view| &view.model_version == other)
                .ok_or_else(|| missing(Some(other)))?;
            Some(compare(first, second))
        }
    };
    let chosen: Vec<&VersionView> = all
        .iter()
        .filter(|view| {
            params.model_version.as_deref().is_none_or(|version| {
                view.model_version == version
                    || params.compare_with.as_deref() == Some(view.model_version.as_str())
            })
        })
        .collect();
    let registry: Vec<ModelRegistration> = context
        .app
        .views
        .registry()
        .into_iter()
        .filter(|registration| registration.model_id == params.model_id.as_str())
        .collect();
    // A model registered without a version has no tracked version before its first
    // prediction; it is still known.
    if chosen.is_empty() && (registry.is_empty() || params.model_version.is_some()) {
        return Err(missing(params.model_version.as_deref()));
    }
    Ok(ModelMetrics {
        model_id: params.model_id.clone(),
        versions: chosen.iter().map(|view| version_status(view)).collect(),
        details: chosen
            .iter()
            .map(|view| VersionMetrics {
                status: version_status(view),
                tracked: view.snapshot.clone(),
            })
            .collect(),
        latency_windows: chosen
            .iter()
            .filter_map(|view| view.latency.clone())
            .collect(),
        confidence_windows: chosen
            .iter()
            .filter_map(|view| view.confidence.clone())
            .collect(),
        comparison,
        registry,
        note: NOTE.to_owned(),
    })
}
