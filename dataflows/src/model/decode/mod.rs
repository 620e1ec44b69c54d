//! JSON wire form → validated [`Event`], in one pass, with errors that name the field.
//!
//! The decoder walks the JSON object once with serde_json, classifying each key. Known
//! fields are captured leniently (any JSON type), so that a wrong type becomes a precise
//! [`DataError`] (`field `value`: expected a number, found a string`) instead of a generic
//! parse failure. Unknown fields are kept as raw JSON in [`Event::attrs`]. Only the first
//! problem is reported; the rest of the object is still checked for well-formedness.
//!
//! Nothing here allocates for short strings (ids up to 24 bytes are stored inline), which
//! keeps decoding at millions of events per second per core.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::error::{DataError, ErrorReason};
use super::event::{
    AlertAction, AlertCommand, Event, EventBody, Id, Labels, MetricEvent, OutcomeEvent,
    PredictionEvent, RetrainRequest, SessionEvent, SessionKind, Severity,
};
use super::ml::{ModelRegistration, PinBaseline};
use super::rules::BreachRule;
use super::silence::parse_matchers;
use crate::operators::route_events::series_names::MODEL_CORRECT;

/// The longest silence, ms: one year.
pub const MAX_SILENCE_MS: u64 = 365 * 24 * 3600 * 1000;

mod direct;
mod fast;
#[cfg(test)]
mod tests;

/// Size limits applied while decoding. All limits are in bytes or entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest identifier or name (`session_id`, `name`, label keys and values, ...).
    pub max_id_bytes: usize,
    /// Longest free text (`message`, `note`, `title`).
    pub max_text_bytes: usize,
    /// Most entries in one map (`labels`, `features`) and most unknown fields kept.
    pub max_map_entries: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_id_bytes: 256,
            max_text_bytes: 8192,
            max_map_entries: 64,
        }
    }
}

/// Decodes one JSON object into an [`Event`].
///
/// `default_ts` stamps events that carry no `ts` (the caller passes ingestion time).
///
/// # Errors
/// Returns a [`DataError`] naming the first offending field and the reason: malformed
/// JSON, a missing or ill-typed field, a non-finite number, an empty id, an oversize
/// string or map, a duplicate field, or an unknown `type`.
pub fn decode_event(
    bytes: &[u8],
    limits: &DecodeLimits,
    default_ts: u64,
) -> Result<Event, DataError> {
    if let Some(event) = direct::decode(bytes, limits, default_ts) {
        return Ok(event);
    }
    if let Some(fields) = fast::scan(bytes, limits) {
        return fields.build(limits, default_ts);
    }
    decode_event_serde(bytes, limits, default_ts)
}

/// The general path: serde_json walks the object; every syntax and type problem is
/// reported precisely. [`decode_event`] uses it whenever the fast scanner gives up.
fn decode_event_serde(
    bytes: &[u8],
    limits: &DecodeLimits,
    default_ts: u64,
) -> Result<Event, DataError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut current_field: Option<Field> = None;
    let seed = ObjectSeed {
        limits,
        current_field: &mut current_field,
    };
    let parsed = match seed.deserialize(&mut deserializer) {
        Ok(parsed) => parsed,
        Err(error) => return Err(syntax_error(&error, current_field)),
    };
    if let Err(error) = deserializer.end() {
        return Err(syntax_error(&error, None));
    }
    let fields = parsed?;
    fields.build(limits, default_ts)
}

fn syntax_error(error: &serde_json::Error, field: Option<Field>) -> DataError {
    let text = error.to_string();
    let reason = if text.contains("number out of range") {
        ErrorReason::NonFinite
    } else {
        ErrorReason::MalformedJson
    };
    let message = if reason == ErrorReason::NonFinite {
        "number is out of the finite f64 range".to_owned()
    } else if text.contains("invalid type") && field.is_none() {
        "an event must be a JSON object".to_owned()
    } else {
        format!("invalid JSON: {text}")
    };
    match field {
        Some(field) => DataError::field(reason, field.name(), message),
        None => DataError::record(reason, message),
    }
}

/// Every field name the decoder knows, across all variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Type,
    Ts,
    SessionId,
    UserId,
    Kind,
    Operation,
    DurationMs,
    Tokens,
    Success,
    Message,
    Name,
    Value,
    Labels,
    ModelId,
    ModelVersion,
    PredictionId,
    Predicted,
    Confidence,
    LatencyMs,
    Features,
    Actual,
    Command,
    AlertId,
    Actor,
    Note,
    Title,
    Severity,
    Matchers,
    Rule,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Type => "type",
            Field::Ts => "ts",
            Field::SessionId => "session_id",
            Field::UserId => "user_id",
            Field::Kind => "kind",
            Field::Operation => "operation",
            Field::DurationMs => "duration_ms",
            Field::Tokens => "tokens",
            Field::Success => "success",
            Field::Message => "message",
            Field::Name => "name",
            Field::Value => "value",
            Field::Labels => "labels",
            Field::ModelId => "model_id",
            Field::ModelVersion => "model_version",
            Field::PredictionId => "prediction_id",
            Field::Predicted => "predicted",
            Field::Confidence => "confidence",
            Field::LatencyMs => "latency_ms",
            Field::Features => "features",
            Field::Actual => "actual",
            Field::Command => "command",
            Field::AlertId => "alert_id",
            Field::Actor => "actor",
            Field::Note => "note",
            Field::Title => "title",
            Field::Severity => "severity",
            Field::Matchers => "matchers",
            Field::Rule => "rule",
        }
    }

    fn from_key(key: &str) -> Option<Field> {
        Some(match key {
            "type" => Field::Type,
            "ts" => Field::Ts,
            "session_id" => Field::SessionId,
            "user_id" => Field::UserId,
            "kind" => Field::Kind,
            "operation" => Field::Operation,
            "duration_ms" => Field::DurationMs,
            "tokens" => Field::Tokens,
            "success" => Field::Success,
            "message" => Field::Message,
            "name" => Field::Name,
            "value" => Field::Value,
            "labels" => Field::Labels,
            "model_id" => Field::ModelId,
            "model_version" => Field::ModelVersion,
            "prediction_id" => Field::PredictionId,
            "predicted" => Field::Predicted,
            "confidence" => Field::Confidence,
            "latency_ms" => Field::LatencyMs,
            "features" => Field::Features,
            "actual" => Field::Actual,
            "command" => Field::Command,
            "alert_id" => Field::AlertId,
            "actor" => Field::Actor,
            "note" => Field::Note,
            "title" => Field::Title,
            "severity" => Field::Severity,
            "matchers" => Field::Matchers,
            "rule" => Field::Rule,
            _ => return None,
        })
    }
}

/// A JSON value captured without judging its type.
#[derive(Debug, Clone, PartialEq)]
enum Found<'de> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'de, str>),
    /// Arrays and objects (never valid for a scalar field; kept for `attrs`).
    Composite(serde_json::Value),
}

impl Found<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Found::Null => "null",
            Found::Bool(_) => "a boolean",
            Found::U64(_) | Found::I64(_) | Found::F64(_) => "a number",
            Found::Str(_) => "a string",
            Found::Composite(serde_json::Value::Array(_)) => "an array",
            Found::Composite(_) => "an object",
        }
    }

    fn to_json_text(&self) -> String {
        let value = match self {
            Found::Null => serde_json::Value::Null,
            Found::Bool(b) => serde_json::Value::from(*b),
            Found::U64(n) => serde_json::Value::from(*n),
            Found::I64(n) => serde_json::Value::from(*n),
            Found::F64(n) => serde_json::Value::from(*n),
            Found::Str(s) => serde_json::Value::from(s.as_ref()),
            Found::Composite(value) => value.clone(),
        };
        value.to_string()
    }
}

impl<'de> Deserialize<'de> for Found<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FoundVisitor)
    }
}

struct FoundVisitor;

impl<'de> Visitor<'de> for FoundVisitor {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Found::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Found::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Found::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Found::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Found::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Found::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Found::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Found::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Found::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let value = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Found::Composite(value))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let value = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Found::Composite(value))
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A map field (`labels`, `features`) parsed entry by entry, so that a bad entry is
/// reported with its dotted path.
enum MapField {
    Labels(Labels),
    Features(Vec<(Id, f64)>),
}

struct MapSeed<'a> {
    field: Field,
    limits: &'a DecodeLimits,
}

impl<'de> DeserializeSeed<'de> for MapSeed<'_> {
    type Value = Result<MapField, DataError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MapSeed<'_> {
    type Value = Result<MapField, DataError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let field = self.field.name();
        let mut labels: Labels = Vec::new();
        let mut features: Vec<(Id, f64)> = Vec::new();
        let mut first_error: Option<DataError> = None;
        let mut entries = 0usize;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<Found<'de>>()?;
            if first_error.is_some() {
                continue;
            }
            entries += 1;
            let path = || format!("{field}.{key}");
            if entries > self.limits.max_map_entries {
                first_error = Some(DataError::field(
                    ErrorReason::TooLong,
                    field,
                    format!("has more than {} entries", self.limits.max_map_entries),
                ));
                continue;
            }
            if key.is_empty() {
                first_error = Some(DataError::field(
                    ErrorReason::EmptyId,
                    path(),
                    "key must not be empty",
                ));
                continue;
            }
            if key.len() > self.limits.max_id_bytes {
                first_error = Some(DataError::field(
                    ErrorReason::TooLong,
                    field,
                    format!("has a key longer than {} bytes", self.limits.max_id_bytes),
                ));
                continue;
            }
            let key_id = CompactString::from(key.as_ref());
            let result = if self.field == Field::Features {
                number(&value, &path()).map(|number| features.push((key_id, number)))
            } else {
                match value {
                    Found::Str(text) if text.len() <= self.limits.max_id_bytes => {
                        labels.push((key_id, CompactString::from(text.as_ref())));
                        Ok(())
                    }
                    Found::Str(_) => Err(DataError::field(
                        ErrorReason::TooLong,
                        path(),
                        format!("is longer than {} bytes", self.limits.max_id_bytes),
                    )),
                    other => Err(wrong_type(&path(), "a string", &other)),
                }
            };
            if let Err(error) = result {
                first_error = Some(error);
            }
        }
        if let Some(error) = first_error {
            return Ok(Err(error));
        }
        if self.field == Field::Features {
            features.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(pair) = features.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                return Ok(Err(duplicate(&format!("{field}.{}", pair[0].0))));
            }
            Ok(Ok(MapField::Features(features)))
        } else {
            labels.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(pair) = labels.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                return Ok(Err(duplicate(&format!("{field}.{}", pair[0].0))));
            }
            Ok(Ok(MapField::Labels(labels)))
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(self.empty()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Err(self.not_an_object(&Found::Bool(v))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Err(self.not_an_object(&Found::U64(v))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Err(self.not_an_object(&Found::I64(v))))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Err(self.not_an_object(&Found::F64(v))))
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<Self::Value, E> {
        Ok(Err(self.not_an_object(&Found::Str(Cow::Borrowed("")))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(self.not_an_object(&Found::Composite(
            serde_json::Value::Array(Vec::new()),
        ))))
    }
}

impl MapSeed<'_> {
    fn empty(&self) -> MapField {
        if self.field == Field::Features {
            MapField::Features(Vec::new())
        } else {
            MapField::Labels(Vec::new())
        }
    }

    fn not_an_object(&self, found: &Found<'_>) -> DataError {
        wrong_type(self.field.name(), "an object", found)
    }
}

impl MapField {
    fn to_json_text(&self) -> String {
        let value: serde_json::Map<String, serde_json::Value> = match self {
            MapField::Labels(labels) => labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.as_str())))
                .collect(),
            MapField::Features(features) => features
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect(),
        };
        serde_json::Value::Object(value).to_string()
    }
}

/// The fields of one object, captured but not yet validated against a variant. Typical
/// events carry fewer than ten known fields, kept inline without allocation.
struct Fields<'de> {
    seen: u32,
    found: SmallVec<[(Field, Found<'de>); 10]>,
    labels: Option<MapField>,
    features: Option<MapField>,
    attrs: Vec<(Id, String)>,
}

struct ObjectSeed<'a> {
    limits: &'a DecodeLimits,
    current_field: &'a mut Option<Field>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Result<Fields<'de>, DataError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Result<Fields<'de>, DataError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields {
            seen: 0,
            found: SmallVec::new(),
            labels: None,
            features: None,
            attrs: Vec::new(),
        };
        let mut first_error: Option<DataError> = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match Field::from_key(&key) {
                Some(field @ (Field::Labels | Field::Features)) => {
                    *self.current_field = Some(field);
                    let parsed = map.next_value_seed(MapSeed {
                        field,
                        limits: self.limits,
                    })?;
                    *self.current_field = None;
                    let slot = if field == Field::Labels {
                        &mut fields.labels
                    } else {
                        &mut fields.features
                    };
                    match parsed {
                        _ if slot.is_some() => {
                            first_error.get_or_insert_with(|| duplicate(field.name()));
                        }
                        Ok(value) => *slot = Some(value),
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
                Some(field) => {
                    *self.current_field = Some(field);
                    let value = map.next_value::<Found<'de>>()?;
                    *self.current_field = None;
                    let bit = 1u32 << (field as u32);
                    if fields.seen & bit != 0 {
                        first_error.get_or_insert_with(|| duplicate(field.name()));
                    } else {
                        fields.seen |= bit;
                        fields.found.push((field, value));
                    }
                }
                None => {
                    *self.current_field = None;
                    let raw = map.next_value::<&'de RawValue>()?;
                    if first_error.is_some() {
                        continue;
                    }
                    if fields.attrs.len() >= self.limits.max_map_entries {
                        first_error = Some(DataError::record(
                            ErrorReason::TooLong,
                            format!(
                                "has more than {} unknown fields",
                                self.limits.max_map_entries
                            ),
                        ));
                    } else if key.len() > self.limits.max_id_bytes {
                        first_error = Some(DataError::record(
                            ErrorReason::TooLong,
                            format!(
                                "has a field name longer than {} bytes",
                                self.limits.max_id_bytes
                            ),
                        ));
                    } else if fields
                        .attrs
                        .iter()
                        .any(|(name, _)| name.as_str() == key.as_ref())
                    {
                        first_error = Some(duplicate(&key));
                    } else if raw.get().len() > self.limits.max_text_bytes {
                        first_error = Some(DataError::field(
                            ErrorReason::TooLong,
                            key.as_ref(),
                            format!("is longer than {} bytes", self.limits.max_text_bytes),
                        ));
                    } else {
                        fields
                            .attrs
                            .push((CompactString::from(key.as_ref()), raw.get().to_owned()));
                    }
                }
            }
        }
        *self.current_field = None;
        Ok(match first_error {
            Some(error) => Err(error),
            None => Ok(fields),
        })
    }
}

fn duplicate(field: &str) -> DataError {
    DataError::field(ErrorReason::DuplicateField, field, "appears more than once")
}

fn wrong_type(field: &str, expected: &str, found: &Found<'_>) -> DataError {
    DataError::field(
        ErrorReason::InvalidType,
        field,
        format!("expected {expected}, found {}", found.kind()),
    )
}

fn number(found: &Found<'_>, field: &str) -> Result<f64, DataError> {
    let value = match found {
        Found::U64(n) => *n as f64,
        Found::I64(n) => *n as f64,
        Found::F64(n) => *n,
        other => return Err(wrong_type(field, "a number", other)),
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DataError::field(
            ErrorReason::NonFinite,
            field,
            "must be a finite number",
        ))
    }
}

/// Validation of captured fields against the selected variant.
impl<'de> Fields<'de> {
    /// Takes a captured field. Its slot stays (as `Null`, its bit cleared from `seen`) so
    /// the fields left over keep their order without shifting the rest; an absent field
    /// costs one bit test.
    fn take(&mut self, field: Field) -> Option<Found<'de>> {
        let bit = 1u32 << (field as u32);
        if self.seen & bit == 0 {
            return None;
        }
        self.seen &= !bit;
        let (_, found) = self.found.iter_mut().find(|(known, _)| *known == field)?;
        Some(std::mem::replace(found, Found::Null))
    }

    fn required(&mut self, field: Field, variant: &str) -> Result<Found<'de>, DataError> {
        match self.take(field) {
            Some(Found::Null) | None => Err(DataError::field(
                ErrorReason::MissingField,
                field.name(),
                format!("is required for type `{variant}`"),
            )),
            Some(found) => Ok(found),
        }
    }

    fn optional(&mut self, field: Field) -> Option<Found<'de>> {
        match self.take(field) {
            Some(Found::Null) | None => None,
            Some(found) => Some(found),
        }
    }

    fn build(mut self, limits: &DecodeLimits, default_ts: u64) -> Result<Event, DataError> {
        let type_name = match self.take(Field::Type) {
            None | Some(Found::Null) => {
                return Err(DataError::field(
                    ErrorReason::MissingField,
                    "type",
                    "is required",
                ));
            }
            Some(Found::Str(name)) => name,
            Some(other) => return Err(wrong_type("type", "a string", &other)),
        };
        let ts = match self.optional(Field::Ts) {
            None => default_ts,
            Some(found) => whole_number(&found, Field::Ts)?,
        };
        let v = type_name.as_ref();
        let body = match v {
            "session" => EventBody::Session(SessionEvent {
                session_id: id(
                    self.required(Field::SessionId, v)?,
                    Field::SessionId,
                    limits,
                )?,
                user_id: self.optional_id(Field::UserId, limits)?,
                kind: choice(
                    &self.required(Field::Kind, v)?,
                    Field::Kind,
                    &SessionKind::NAMES,
                )?,
                operation: self.optional_id(Field::Operation, limits)?,
                duration_ms: match self.optional(Field::DurationMs) {
                    None => None,
                    Some(found) => Some(non_negative(&found, Field::DurationMs)?),
                },
                tokens: match self.optional(Field::Tokens) {
                    None => None,
                    Some(found) => Some(whole_number(&found, Field::Tokens)?),
                },
                success: match self.optional(Field::Success) {
                    None => None,
                    Some(Found::Bool(b)) => Some(b),
                    Some(other) => return Err(wrong_type("success", "a boolean", &other)),
                },
                message: self.optional_text(Field::Message, limits)?,
            }),
            "metric" => {
                let name = id(self.required(Field::Name, v)?, Field::Name, limits)?;
                if name == MODEL_CORRECT {
                    // Windowed apart from metrics (see the analytics pipeline): a metric of
                    // that name would give a second, conflicting window per key and end.
                    return Err(DataError::field(
                        ErrorReason::InvalidValue,
                        "name",
                        "model.correct is reserved: the ML tracker derives it from predictions and outcomes",
                    ));
                }
                let value = number(&self.required(Field::Value, v)?, "value")?;
                EventBody::Metric(MetricEvent {
                    name,
                    value,
                    labels: self.take_labels(),
                    session_id: self.optional_id(Field::SessionId, limits)?,
                })
            }
            "prediction" => {
                let model_id = id(self.required(Field::ModelId, v)?, Field::ModelId, limits)?;
                let model_version = self.optional_id(Field::ModelVersion, limits)?;
                let prediction_id = id(
                    self.required(Field::PredictionId, v)?,
                    Field::PredictionId,
                    limits,
                )?;
                let predicted = label(
                    self.required(Field::Predicted, v)?,
                    Field::Predicted,
                    limits,
                )?;
                let confidence = number(&self.required(Field::Confidence, v)?, "confidence")?;
                if !(0.0..=1.0).contains(&confidence) {
                    return Err(DataError::field(
                        ErrorReason::InvalidValue,
                        "confidence",
                        "must be between 0 and 1",
                    ));
                }
                let latency_ms =
                    non_negative(&self.required(Field::LatencyMs, v)?, Field::LatencyMs)?;
                let features = match self.features.take() {
                    Some(MapField::Features(features)) => features,
                    _ => Vec::new(),
                };
                EventBody::Prediction(PredictionEvent {
                    model_id,
                    model_version,
                    prediction_id,
                    predicted,
                    confidence,
                    latency_ms,
                    features,
                    session_id: self.optional_id(Field::SessionId, limits)?,
                })
            }
            "outcome" => EventBody::Outcome(OutcomeEvent {
                prediction_id: id(
                    self.required(Field::PredictionId, v)?,
                    Field::PredictionId,
                    limits,
                )?,
                actual: label(self.required(Field::Actual, v)?, Field::Actual, limits)?,
                model_id: self.optional_id(Field::ModelId, limits)?,
            }),
            "alert_command" => {
                let command = choice(
                    &self.required(Field::Command, v)?,
                    Field::Command,
                    &AlertAction::NAMES,
                )?;
                let mut alert_id = self.optional_id(Field::AlertId, limits)?;
                let rule = if command == AlertAction::CreateRule {
                    let found = self.required(Field::Rule, "alert_command")?;
                    let Found::Composite(value @ serde_json::Value::Object(_)) = found else {
                        return Err(wrong_type("rule", "an object (a [[rules]] entry)", &found));
                    };
                    let parsed: BreachRule =
                        serde_json::from_value(value.clone()).map_err(|error| {
                            DataError::field(ErrorReason::InvalidValue, "rule", error.to_string())
                        })?;
                    parsed.validate().map_err(|error| {
                        DataError::field(ErrorReason::InvalidValue, "rule", error.to_string())
                    })?;
                    if alert_id.as_ref().is_some_and(|id| *id != parsed.id) {
                        return Err(DataError::field(
                            ErrorReason::InvalidValue,
                            "alert_id",
                            "must be the rule's id (or absent)",
                        ));
                    }
                    alert_id = Some(parsed.id.clone());
                    Some(value.to_string())
                } else {
                    None
                };
                if command != AlertAction::Create && alert_id.is_none() {
                    return Err(DataError::field(
                        ErrorReason::MissingField,
                        "alert_id",
                        format!("is required for command `{}`", command.as_str()),
                    ));
                }
                let title = self.optional_text(Field::Title, limits)?;
                let severity = match self.optional(Field::Severity) {
                    None => None,
                    Some(found) => Some(choice(&found, Field::Severity, &Severity::NAMES)?),
                };
                if command == AlertAction::Create && title.is_none() {
                    return Err(DataError::field(
                        ErrorReason::MissingField,
                        "title",
                        "is required for command `create`",
                    ));
                }
                let (matchers, duration_ms) = if command == AlertAction::Silence {
                    let text = match self.required(Field::Matchers, "alert_command")? {
                        Found::Str(text) if text.len() <= limits.max_text_bytes => text,
                        Found::Str(_) => {
                            return Err(DataError::field(
                                ErrorReason::TooLong,
                                "matchers",
                                format!("is longer than {} bytes", limits.max_text_bytes),
                            ))
                        }
                        other => {
                            return Err(wrong_type(
                                "matchers",
                                "a string like team=\"db\", severity=~\"low|medium\"",
                                &other,
                            ))
                        }
                    };
                    let matchers = parse_matchers(&text).map_err(|error| {
                        DataError::field(ErrorReason::InvalidValue, "matchers", error.0)
                    })?;
                    let duration = whole_number(
                        &self.required(Field::DurationMs, "alert_command")?,
                        Field::DurationMs,
                    )?;
                    if duration == 0 || duration > MAX_SILENCE_MS {
                        return Err(DataError::field(
                            ErrorReason::InvalidValue,
                            "duration_ms",
                            format!("must be between 1 and {MAX_SILENCE_MS} (one year)"),
                        ));
                    }
                    (matchers, Some(duration))
                } else {
                    (Vec::new(), None)
                };
                let (starts_at, origin) = if command == AlertAction::Silence {
                    self.silence_schedule(limits)?
                } else {
                    (None, None)
                };
                EventBody::AlertCommand(Box::new(AlertCommand {
                    command,
                    alert_id,
                    actor: self.optional_id(Field::Actor, limits)?,
                    note: self.optional_text(Field::Note, limits)?,
                    title,
                    severity,
                    labels: self.take_labels(),
                    message: self.optional_text(Field::Message, limits)?,
                    matchers,
                    duration_ms,
                    rule,
                    starts_at,
                    origin,
                }))
            }
            "model" => {
                let model_id = id(self.required(Field::ModelId, v)?, Field::ModelId, limits)?;
                let model_version = self.optional_id(Field::ModelVersion, limits)?;
                EventBody::Model(Box::new(self.registration(
                    model_id,
                    model_version,
                    limits,
                )?))
            }
            "retrain" => {
                let model_id = id(self.required(Field::ModelId, v)?, Field::ModelId, limits)?;
                if model_id != crate::operators::predict_sessions::MODEL_ID {
                    return Err(DataError::field(
                        ErrorReason::InvalidValue,
                        "model_id",
                        format!(
                            "megamind retrains only its own model `{}`; other models are retrained by their owners (drift emits retraining triggers)",
                            crate::operators::predict_sessions::MODEL_ID
                        ),
                    ));
                }
                EventBody::Retrain(RetrainRequest {
                    model_id,
                    actor: self.optional_id(Field::Actor, limits)?,
                    note: self.optional_text(Field::Note, limits)?,
                })
            }
            "model_baseline" => EventBody::ModelBaseline(PinBaseline {
                model_id: id(self.required(Field::ModelId, v)?, Field::ModelId, limits)?,
                model_version: self.optional_id(Field::ModelVersion, limits)?,
                actor: self.optional_id(Field::Actor, limits)?,
                note: self.optional_text(Field::Note, limits)?,
            }),
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(DataError::field(
                    ErrorReason::UnknownType,
                    "type",
                    format!(
                        "unknown event type {shown:?} (expected session, metric, prediction, outcome, alert_command, model, model_baseline or retrain)"
                    ),
                ));
            }
        };
        // Known fields that do not belong to this variant are kept like unknown ones.
        let mut attrs = std::mem::take(&mut self.attrs);
        for (field, found) in self.found.drain(..) {
            if self.seen & (1u32 << (field as u32)) != 0 {
                attrs.push((CompactString::from(field.name()), found.to_json_text()));
            }
        }
        for (field, map) in [
            (Field::Labels, self.labels.take()),
            (Field::Features, self.features.take()),
        ] {
            if let Some(map) = map {
                attrs.push((CompactString::from(field.name()), map.to_json_text()));
            }
        }
        Ok(Event { ts, body, attrs })
    }

    /// A silence's optional `starts_at` (ms, a whole number) and `origin` (text), taken
    /// from the unknown fields (rare, so they stay out of the scanner's field table).
    fn silence_schedule(
        &mut self,
        limits: &DecodeLimits,
    ) -> Result<(Option<u64>, Option<String>), DataError> {
        let starts_at = match self.take_attr("starts_at")? {
            None => None,
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                DataError::field(
                    ErrorReason::InvalidValue,
                    "starts_at",
                    "must be a whole number of ms since the epoch",
                )
            })?),
        };
        let origin = match self.take_attr("origin")? {
            None => None,
            Some(serde_json::Value::String(text)) if text.len() <= limits.max_id_bytes => {
                Some(text)
            }
            Some(_) => {
                return Err(DataError::field(
                    ErrorReason::InvalidValue,
                    "origin",
                    format!("must be a string of at most {} bytes", limits.max_id_bytes),
                ))
            }
        };
        Ok((starts_at, origin))
    }

    /// Removes a registration field from the unknown fields and parses its JSON text
    /// (registration fields are rare, so they stay out of the scanner's field table).
    fn take_attr(&mut self, name: &str) -> Result<Option<serde_json::Value>, DataError> {
        let Some(position) = self.attrs.iter().position(|(key, _)| key == name) else {
            return Ok(None);
        };
        let (_, raw) = self.attrs.remove(position);
        match serde_json::from_str::<serde_json::Value>(&raw) {
            Ok(serde_json::Value::Null) => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(error) => Err(DataError::field(
                ErrorReason::MalformedJson,
                name,
                format!("invalid JSON: {error}"),
            )),
        }
    }

    fn registration(
        &mut self,
        model_id: Id,
        model_version: Option<Id>,
        limits: &DecodeLimits,
    ) -> Result<ModelRegistration, DataError> {
        fn kind(value: &serde_json::Value) -> &'static str {
            match value {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::Object(_) => "an object",
            }
        }
        let invalid_type = |field: &str, expected: &str, value: &serde_json::Value| {
            DataError::field(
                ErrorReason::InvalidType,
                field,
                format!("expected {expected}, found {}", kind(value)),
            )
        };
        let text = |this: &mut Self, field: &'static str| -> Result<Option<String>, DataError> {
            match this.take_attr(field)? {
                None => Ok(None),
                Some(serde_json::Value::String(text)) => Ok(Some(text)),
                Some(other) => Err(invalid_type(field, "a string", &other)),
            }
        };
        let task = text(self, "task")?;
        let owner = text(self, "owner")?;
        let description = text(self, "description")?;
        let baseline_version = match text(self, "baseline_version")? {
            Some(version) if version.len() > limits.max_id_bytes => {
                return Err(DataError::field(
                    ErrorReason::TooLong,
                    "baseline_version",
                    format!("is longer than {} bytes", limits.max_id_bytes),
                ))
            }
            other => other.map(CompactString::from),
        };
        let number = |this: &mut Self, field: &'static str| -> Result<Option<f64>, DataError> {
            match this.take_attr(field)? {
                None => Ok(None),
                Some(serde_json::Value::Number(number)) => match number.as_f64() {
                    Some(value) if value.is_finite() => Ok(Some(value)),
                    _ => Err(DataError::field(
                        ErrorReason::NonFinite,
                        field,
                        "must be a finite number",
                    )),
                },
                Some(other) => Err(invalid_type(field, "a number", &other)),
            }
        };
        let min_accuracy = number(self, "min_accuracy")?;
        let max_latency_p99_ms = number(self, "max_latency_p99_ms")?;
        let classes = match self.take_attr("classes")? {
            None => Vec::new(),
            Some(serde_json::Value::Array(values)) => {
                let mut classes = Vec::with_capacity(values.len());
                for (index, value) in values.into_iter().enumerate() {
                    let field = format!("classes[{index}]");
                    let class = match value {
                        serde_json::Value::String(text) => text,
                        serde_json::Value::Bool(flag) => flag.to_string(),
                        serde_json::Value::Number(number) if number.is_u64() || number.is_i64() => {
                            number.to_string()
                        }
                        other => {
                            return Err(invalid_type(
                                &field,
                                "a string, integer or boolean label",
                                &other,
                            ))
                        }
                    };
                    if class.len() > limits.max_id_bytes {
                        return Err(DataError::field(
                            ErrorReason::TooLong,
                            field,
                            format!("is longer than {} bytes", limits.max_id_bytes),
                        ));
                    }
                    classes.push(CompactString::from(class));
                }
                classes
            }
            Some(other) => return Err(invalid_type("classes", "an array of labels", &other)),
        };
        let registration = ModelRegistration {
            model_id,
            model_version,
            task,
            classes,
            owner,
            description,
            min_accuracy,
            max_latency_p99_ms,
            baseline_version,
        };
        if let Some((field, reason)) = registration.problems().into_iter().next() {
            let error_reason = if reason.starts_with("is longer") || reason.starts_with("has more")
            {
                ErrorReason::TooLong
            } else if reason.contains("empty") {
                ErrorReason::EmptyId
            } else {
                ErrorReason::InvalidValue
            };
            return Err(DataError::field(error_reason, field, reason));
        }
        Ok(registration)
    }

    fn take_labels(&mut self) -> Labels {
        match self.labels.take() {
            Some(MapField::Labels(labels)) => labels,
            _ => Vec::new(),
        }
    }

    fn optional_id(
        &mut self,
        field: Field,
        limits: &DecodeLimits,
    ) -> Result<Option<Id>, DataError> {
        self.optional(field)
            .map(|found| id(found, field, limits))
            .transpose()
    }

    fn optional_text(
        &mut self,
        field: Field,
        limits: &DecodeLimits,
    ) -> Result<Option<String>, DataError> {
        match self.optional(field) {
            None => Ok(None),
            Some(Found::Str(text)) if text.len() <= limits.max_text_bytes => {
                Ok(Some(text.into_owned()))
            }
            Some(Found::Str(_)) => Err(DataError::field(
                ErrorReason::TooLong,
                field.name(),
                format!("is longer than {} bytes", limits.max_text_bytes),
            )),
            Some(other) => Err(wrong_type(field.name(), "a string", &other)),
        }
    }
}

fn id(found: Found<'_>, field: Field, limits: &DecodeLimits) -> Result<Id, DataError> {
    match found {
        Found::Str(text) if text.is_empty() => Err(DataError::field(
            ErrorReason::EmptyId,
            field.name(),
            "must not be empty",
        )),
        Found::Str(text) if text.len() > limits.max_id_bytes => Err(DataError::field(
            ErrorReason::TooLong,
            field.name(),
            format!("is longer than {} bytes", limits.max_id_bytes),
        )),
        Found::Str(text) => Ok(CompactString::from(text.as_ref())),
        other => Err(wrong_type(field.name(), "a string", &other)),
    }
}

/// A class label: a string, an integer or a boolean (stored as text).
fn label(found: Found<'_>, field: Field, limits: &DecodeLimits) -> Result<Id, DataError> {
    match found {
        Found::U64(n) => Ok(CompactString::from(n.to_string())),
        Found::I64(n) => Ok(CompactString::from(n.to_string())),
        Found::Bool(b) => Ok(CompactString::from(if b { "true" } else { "false" })),
        Found::Str(_) => id(found, field, limits),
        other => Err(wrong_type(
            field.name(),
            "a string, integer or boolean label",
            &other,
        )),
    }
}

fn whole_number(found: &Found<'_>, field: Field) -> Result<u64, DataError> {
    match found {
        Found::U64(n) => Ok(*n),
        Found::I64(_) => Err(DataError::field(
            ErrorReason::InvalidValue,
            field.name(),
            "must not be negative",
        )),
        Found::F64(n) if n.fract() == 0.0 && *n >= 0.0 && *n < 18_446_744_073_709_551_616.0 => {
            Ok(*n as u64)
        }
        Found::F64(_) => Err(DataError::field(
            ErrorReason::InvalidValue,
            field.name(),
            "must be a whole non-negative number",
        )),
        other => Err(wrong_type(field.name(), "a whole number", other)),
    }
}

fn non_negative(found: &Found<'_>, field: Field) -> Result<f64, DataError> {
    let value = number(found, field.name())?;
    if value < 0.0 {
        return Err(DataError::field(
            ErrorReason::InvalidValue,
            field.name(),
            "must not be negative",
        ));
    }
    Ok(value)
}

fn choice<T: Copy>(
    found: &Found<'_>,
    field: Field,
    names: &[(&'static str, T)],
) -> Result<T, DataError> {
    let Found::Str(text) = found else {
        return Err(wrong_type(field.name(), "a string", found));
    };
    names
        .iter()
        .find(|(name, _)| *name == text.as_ref())
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let allowed: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            DataError::field(
                ErrorReason::InvalidValue,
                field.name(),
                format!("must be one of {}", allowed.join(", ")),
            )
        })
}
