use super::*;
use crate::model::{Aggregate, Comparison};
use crate::model::{Id, SeriesKey, ThresholdForecast};
use crate::testing::{run_epochs, Epoch};

fn prediction(
    session: &str,
    at: u64,
    probability: f64,
    status: PredictionStatus,
) -> SessionPrediction {
    SessionPrediction {
        session_id: session.into(),
        at,
        status,
        success_probability: Some(probability),
        predicted: Some(Id::from(if probability >= 0.5 {
            "success"
        } else {
            "failure"
        })),
        confidence: Some(probability.max(1.0 - probability)),
        model_version: Some("v1".into()),
        completion: None,
        outcome: None,
        features: Vec::new(),
    }
}

#[test]
fn raised_once_while_the_condition_holds_updated_on_priority_change_cleared_once() {
    let config = RecommendConfig::default();
    let mut dedup = Dedup::default();
    let mut changes = Vec::new();
    for (at, probability) in [
        (1, 0.9),
        (2, 0.25),
        (3, 0.27),
        (4, 0.26),
        (5, 0.05),
        (6, 0.6),
        (7, 0.7),
    ] {
        let update = Update::SessionPrediction(Box::new(prediction(
            "s1",
            at,
            probability,
            PredictionStatus::Predicted,
        )));
        for verdict in candidates(&update, &config) {
            changes.extend(dedup.apply(verdict, 100));
        }
    }
    let summary: Vec<(u64, InsightChange, Priority)> = changes
        .iter()
        .map(|insight| (insight.at, insight.change, insight.priority))
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, InsightChange::Raised, Priority::Medium),
            (5, InsightChange::Updated, Priority::Critical),
            (6, InsightChange::Cleared, Priority::Critical),
        ]
    );
    assert_eq!(changes[0].category, "session_at_risk");
    assert_eq!(changes[0].id, "session_at_risk:s1");
    assert!((changes[0].impact - 0.75).abs() < 1e-12);
    assert!(dedup.is_empty());
}

#[test]
fn an_ended_session_clears_its_risk() {
    let config = RecommendConfig::default();
    let mut dedup = Dedup::default();
    let raise = Update::SessionPrediction(Box::new(prediction(
        "s",
        1,
        0.1,
        PredictionStatus::Predicted,
    )));
    let end = Update::SessionPrediction(Box::new(prediction("s", 2, 0.1, PredictionStatus::Ended)));
    let mut changes = Vec::new();
    for update in [raise, end] {
        for verdict in candidates(&update, &config) {
            changes.extend(dedup.apply(verdict, 100));
        }
    }
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].change, InsightChange::Cleared);
}

#[test]
fn bound_clears_the_oldest() {
    let config = RecommendConfig::default();
    let mut dedup = Dedup::default();
    let mut cleared = Vec::new();
    for index in 0..5u64 {
        let update = Update::SessionPrediction(Box::new(prediction(
            &format!("s{index}"),
            index,
            0.1,
            PredictionStatus::Predicted,
        )));
        for verdict in candidates(&update, &config) {
            cleared.extend(
                dedup
                    .apply(verdict, 3)
                    .into_iter()
                    .filter(|insight| insight.change == InsightChange::Cleared),
            );
        }
    }
    assert_eq!(dedup.len(), 3);
    let ids: Vec<&str> = cleared
        .iter()
        .map(|insight| insight.subject.as_str())
        .collect();
    assert_eq!(ids, vec!["s0", "s1"]);
}

fn forecast(
    name: &str,
    at: u64,
    crosses_in_ms: Option<u64>,
    trend: &str,
    upper: f64,
) -> SeriesForecast {
    SeriesForecast {
        key: SeriesKey::named(name),
        at,
        statistic: Aggregate::Mean,
        windows: 10,
        value: 1.0,
        slope_per_min: 1.0,
        slope_p_value: if trend == "rising" { 0.0001 } else { 0.5 },
        trend: trend.into(),
        level: 1.0,
        holt_trend: 0.1,
        horizon_ms: 900_000,
        forecast: upper * 0.95,
        lower: 0.0,
        upper,
        thresholds: vec![ThresholdForecast {
            rule_id: "r".into(),
            aggregate: Aggregate::P95,
            op: Comparison::Above,
            threshold: 500.0,
            value: 400.0,
            breaching: false,
            crosses_in_ms,
            horizon_ms: None,
        }],
    }
}

#[test]
fn forecast_rules_cover_time_to_threshold_error_trends_and_memory() {
    let config = RecommendConfig::default();
    let verdicts = candidates(
        &Update::Forecast(Box::new(forecast(
            "api.error_rate",
            10,
            Some(4 * 60_000),
            "rising",
            1.0,
        ))),
        &config,
    );
    let held: Vec<(&str, Priority)> = verdicts
        .iter()
        .filter_map(|(_, candidate, _)| candidate.as_ref())
        .map(|candidate| (candidate.kind.as_str(), candidate.priority))
        .collect();
    assert_eq!(
        held,
        vec![
            ("time_to_threshold", Priority::Critical),
            ("rising_error_rate", Priority::High)
        ]
    );
    assert!(verdicts[0].1.as_ref().unwrap().message.contains("~4min"));
    let memory = candidates(
        &Update::Forecast(Box::new(forecast(
            "megamind.process.memory_bytes",
            10,
            None,
            "flat",
            3.0 * 1024.0 * 1024.0 * 1024.0,
        ))),
        &config,
    );
    assert_eq!(
        memory.len(),
        2,
        "threshold verdict (clear) and memory verdict"
    );
    assert!(memory[0].1.is_none());
    assert_eq!(
        memory[1].1.as_ref().unwrap().kind,
        "memory_forecast_over_limit"
    );
}

#[test]
fn operator_dedups_identically_on_one_and_four_workers() {
    // Probability per time for three sessions; inputs carried as (session, at, p) since
    // updates are not exchangeable.
    let mut epochs = Vec::new();
    for at in 1..=10u64 {
        let data: Vec<(String, u64, f64)> = (0..3)
            .map(|session| {
                let probability = if (3..=6).contains(&at) && session != 2 {
                    0.15
                } else {
                    0.8
                };
                (format!("s{session}"), at, probability)
            })
            .collect();
        epochs.push(Epoch::new(at, data));
    }
    let out = run_epochs(
        |input| {
            input
                .unary(Pipeline, "AsPredictions", |_, _| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut session = output.session(&cap);
                            for (id, at, probability) in data.drain(..) {
                                session.give(Update::SessionPrediction(Box::new(prediction(
                                    &id,
                                    at,
                                    probability,
                                    PredictionStatus::Predicted,
                                ))));
                            }
                        });
                    }
                })
                .recommend("test", &RecommendConfig::default())
        },
        epochs,
    );
    let insights = out.of_kind("insight");
    let changes: Vec<(String, String, u64)> = insights
        .iter()
        .map(|insight| {
            (
                insight["subject"].as_str().unwrap().to_owned(),
                insight["change"].as_str().unwrap().to_owned(),
                insight["at"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("s0".to_owned(), "cleared".to_owned(), 7),
            ("s0".to_owned(), "raised".to_owned(), 3),
            ("s1".to_owned(), "cleared".to_owned(), 7),
            ("s1".to_owned(), "raised".to_owned(), 3),
        ]
    );
}
