//! The direct path for the two most frequent records, `prediction` and `outcome`.
//!
//! One pass over the bytes fills typed slots and builds the [`PredictionEvent`] or
//! [`OutcomeEvent`] at the end: no captured-field list, no lookups by field, no attrs.
//! It takes only records that are valid and need nothing kept aside, and gives up
//! (returns `None`) on anything else — another type, an unknown or foreign field (which
//! would go to `attrs`), `null`, an escape, a duplicate, a value the decoder would reject
//! — so that the general path decodes the record and reports the precise error. Like
//! [`super::fast`], it never decides that a record is invalid.

use compact_str::CompactString;

use super::fast::Scanner;
use super::{DecodeLimits, Field, Found, MapField};
use crate::model::event::{Event, EventBody, Id, OutcomeEvent, PredictionEvent};

/// The variant named by `type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Prediction,
    Outcome,
}

/// Every field either variant has, as it is read. A slot is filled at most once.
#[derive(Default)]
struct Slots<'de> {
    variant: Option<Variant>,
    ts: Option<u64>,
    model_id: Option<&'de str>,
    model_version: Option<&'de str>,
    prediction_id: Option<&'de str>,
    predicted: Option<Id>,
    confidence: Option<f64>,
    latency_ms: Option<f64>,
    features: Option<Vec<(Id, f64)>>,
    session_id: Option<&'de str>,
    actual: Option<Id>,
}

/// Decodes `bytes` if it is a valid `prediction` or `outcome` with only its own fields,
/// or returns `None` to defer to [`super::decode_event`]'s other paths.
pub(super) fn decode(bytes: &[u8], limits: &DecodeLimits, default_ts: u64) -> Option<Event> {
    let mut scanner = Scanner::new(bytes)?;
    let mut slots = Slots::default();
    scanner.skip_whitespace();
    scanner.expect(b'{')?;
    scanner.skip_whitespace();
    if scanner.peek()? == b'}' {
        // `{}` lacks `type`: the general path reports it.
        return None;
    }
    loop {
        let key = scanner.string()?;
        scanner.skip_whitespace();
        scanner.expect(b':')?;
        scanner.skip_whitespace();
        match key {
            "type" => {
                let variant = match scanner.string()? {
                    "prediction" => Variant::Prediction,
                    "outcome" => Variant::Outcome,
                    _ => return None,
                };
                fill(&mut slots.variant, variant)?;
            }
            "ts" => match scanner.scalar()? {
                Found::U64(ts) => fill(&mut slots.ts, ts)?,
                _ => return None,
            },
            "model_id" => fill(&mut slots.model_id, id(&mut scanner, limits)?)?,
            "model_version" => fill(&mut slots.model_version, id(&mut scanner, limits)?)?,
            "prediction_id" => fill(&mut slots.prediction_id, id(&mut scanner, limits)?)?,
            "session_id" => fill(&mut slots.session_id, id(&mut scanner, limits)?)?,
            "predicted" => fill(&mut slots.predicted, label(&mut scanner, limits)?)?,
            "actual" => fill(&mut slots.actual, label(&mut scanner, limits)?)?,
            "confidence" => {
                let confidence = number(&mut scanner)?;
                if !(0.0..=1.0).contains(&confidence) {
                    return None;
                }
                fill(&mut slots.confidence, confidence)?;
            }
            "latency_ms" => {
                let latency_ms = number(&mut scanner)?;
                if latency_ms < 0.0 {
                    return None;
                }
                fill(&mut slots.latency_ms, latency_ms)?;
            }
            "features" => match scanner.flat_map(Field::Features, limits)? {
                MapField::Features(features) => fill(&mut slots.features, features)?,
                MapField::Labels(_) => return None,
            },
            _ => return None,
        }
        scanner.skip_whitespace();
        match scanner.next()? {
            b',' => scanner.skip_whitespace(),
            b'}' => break,
            _ => return None,
        }
    }
    if !scanner.at_end() {
        return None;
    }
    let ts = slots.ts.unwrap_or(default_ts);
    let body = match slots.variant? {
        Variant::Prediction => {
            if slots.actual.is_some() {
                return None;
            }
            EventBody::Prediction(PredictionEvent {
                model_id: CompactString::from(slots.model_id?),
                model_version: slots.model_version.map(CompactString::from),
                prediction_id: CompactString::from(slots.prediction_id?),
                predicted: slots.predicted?,
                confidence: slots.confidence?,
                latency_ms: slots.latency_ms?,
                features: slots.features.unwrap_or_default(),
                session_id: slots.session_id.map(CompactString::from),
            })
        }
        Variant::Outcome => {
            if slots.model_version.is_some()
                || slots.predicted.is_some()
                || slots.confidence.is_some()
                || slots.latency_ms.is_some()
                || slots.features.is_some()
                || slots.session_id.is_some()
            {
                return None;
            }
            EventBody::Outcome(OutcomeEvent {
                prediction_id: CompactString::from(slots.prediction_id?),
                actual: slots.actual?,
                model_id: slots.model_id.map(CompactString::from),
            })
        }
    };
    Some(Event {
        ts,
        body,
        attrs: Vec::new(),
    })
}

/// Fills an empty slot; a second value (a duplicate field) defers.
fn fill<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// An identifier: a non-empty string within the id limit.
fn id<'de>(scanner: &mut Scanner<'de>, limits: &DecodeLimits) -> Option<&'de str> {
    if scanner.peek()? != b'"' {
        return None;
    }
    let text = scanner.string()?;
    (!text.is_empty() && text.len() <= limits.max_id_bytes).then_some(text)
}

/// A class label: an identifier, an integer or a boolean, stored as text.
fn label(scanner: &mut Scanner<'_>, limits: &DecodeLimits) -> Option<Id> {
    if scanner.peek()? == b'"' {
        return id(scanner, limits).map(CompactString::from);
    }
    match scanner.scalar()? {
        Found::U64(n) => Some(CompactString::from(n.to_string())),
        Found::I64(n) => Some(CompactString::from(n.to_string())),
        Found::Bool(b) => Some(CompactString::from(if b { "true" } else { "false" })),
        _ => None,
    }
}

/// A finite number.
fn number(scanner: &mut Scanner<'_>) -> Option<f64> {
    let value = match scanner.scalar()? {
        Found::U64(n) => n as f64,
        Found::I64(n) => n as f64,
        Found::F64(n) => n,
        _ => return None,
    };
    value.is_finite().then_some(value)
}
