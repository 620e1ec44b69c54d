//! Data errors: bad records travel through the pipeline as values, never as panics.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a record was rejected. A small closed set, so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The bytes are not valid JSON (or not a JSON object).
    MalformedJson,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type.
    InvalidType,
    /// A field has the right type but a value outside its domain.
    InvalidValue,
    /// A number is NaN or infinite.
    NonFinite,
    /// An identifier is empty.
    EmptyId,
    /// A string, map or record is longer than the configured limit.
    TooLong,
    /// The `type` field names no known event variant.
    UnknownType,
    /// A field appears twice in one object.
    DuplicateField,
    /// The event's time is further in the future than the ingest allows.
    FutureTimestamp,
    /// The event arrived after the windows it belongs to were closed.
    Late,
}

impl ErrorReason {
    /// Every reason, in a stable order (for metrics and reports).
    pub const ALL: [ErrorReason; 11] = [
        Self::MalformedJson,
        Self::MissingField,
        Self::InvalidType,
        Self::InvalidValue,
        Self::NonFinite,
        Self::EmptyId,
        Self::TooLong,
        Self::UnknownType,
        Self::DuplicateField,
        Self::FutureTimestamp,
        Self::Late,
    ];

    /// The snake_case name used in JSON, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MissingField => "missing_field",
            Self::InvalidType => "invalid_type",
            Self::InvalidValue => "invalid_value",
            Self::NonFinite => "non_finite",
            Self::EmptyId => "empty_id",
            Self::TooLong => "too_long",
            Self::UnknownType => "unknown_type",
            Self::DuplicateField => "duplicate_field",
            Self::FutureTimestamp => "future_timestamp",
            Self::Late => "late",
        }
    }

    /// The position of this reason in [`ErrorReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: which field, why, and a human-readable explanation.
///
/// Cheap to clone and totally ordered, so it can travel through timely streams and
/// differential arrangements. JSON omits an absent `field`; binary encodings carry it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct DataError {
    /// The classified reason.
    pub reason: ErrorReason,
    /// The offending field (dotted path such as `labels.host`), when one is to blame.
    #[serde(default)]
    pub field: Option<Box<str>>,
    /// A lowercase explanation without trailing period.
    pub message: Box<str>,
}

impl DataError {
    /// A new error about `field`.
    pub fn field(
        reason: ErrorReason,
        field: impl Into<Box<str>>,
        message: impl Into<Box<str>>,
    ) -> Self {
        Self {
            reason,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A new error about the record as a whole.
    pub fn record(reason: ErrorReason, message: impl Into<Box<str>>) -> Self {
        Self {
            reason,
            field: None,
            message: message.into(),
        }
    }
}

impl Serialize for DataError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let skip_field = serializer.is_human_readable() && self.field.is_none();
        let mut state = serializer.serialize_struct("DataError", if skip_field { 2 } else { 3 })?;
        state.serialize_field("reason", &self.reason)?;
        if skip_field {
            state.skip_field("field")?;
        } else {
            state.serialize_field("field", &self.field)?;
        }
        state.serialize_field("message", &self.message)?;
        state.end()
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {} ({})", self.message, self.reason),
            None => write!(f, "{} ({})", self.message, self.reason),
        }
    }
}

impl std::error::Error for DataError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_indexed_in_order() {
        for (position, reason) in ErrorReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
    }

    #[test]
    fn display_names_field_and_reason() {
        let error = DataError::field(ErrorReason::NonFinite, "value", "must be a finite number");
        assert_eq!(
            error.to_string(),
            "field `value`: must be a finite number (non_finite)"
        );
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(
            json,
            r#"{"reason":"non_finite","field":"value","message":"must be a finite number"}"#
        );
        let record = DataError::record(ErrorReason::MalformedJson, "bad");
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"reason":"malformed_json","message":"bad"}"#
        );
        // The binary encoding timely uses between processes keeps every field.
        for error in [error, record] {
            let bytes = bincode::serialize(&error).unwrap();
            let back: DataError = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back, error);
        }
    }
}
