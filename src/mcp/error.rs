//! How failures become MCP answers, in one place.
//!
//! A tool that runs but cannot do what was asked (invalid input, unknown alert, stopped
//! monitoring) answers with a result flagged `isError: true` and a message naming the
//! field and the reason. Unknown tools and malformed requests are JSON-RPC errors, produced
//! by the SDK. Internal details are logged here and never sent to the client.

use crate::runtime::FeedError;

/// A tool-level failure: its message is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl ToolError {
    /// An invalid argument: names the field and the reason.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self(format!("invalid `{field}`: {reason}"))
    }

    /// A request that is valid but cannot be carried out.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl From<ToolError> for String {
    fn from(error: ToolError) -> Self {
        error.0
    }
}

impl From<FeedError> for ToolError {
    fn from(error: FeedError) -> Self {
        match error {
            FeedError::Overloaded => Self::refused("ingest queues are full; nothing was accepted, retry later"),
            FeedError::Stopped => Self::refused("the pipeline is shutting down; nothing was accepted"),
            FeedError::Paused => {
                Self::refused("monitoring is stopped; call realtime_start_monitoring first (nothing was accepted)")
            }
            FeedError::Storage => {
                tracing::error!("mcp: event log refused a batch");
                Self::refused("the event log is unavailable; nothing was accepted")
            }
        }
    }
}

/// Checks an optional limit against its range, returning the default when absent.
pub fn limit(field: &str, value: Option<u32>, default: u32, max: u32) -> Result<usize, ToolError> {
    match value {
        None => Ok(default as usize),
        Some(0) => Err(ToolError::invalid(field, "must be at least 1")),
        Some(value) if value > max => {
            Err(ToolError::invalid(field, format!("must be at most {max}")))
        }
        Some(value) => Ok(value as usize),
    }
}

/// Tool arguments whose deserialization errors name the offending field.
///
/// The SDK reports a failed `Parameters<T>` conversion as a tool error with serde's
/// message, which says what was wrong but not where. This wrapper deserializes through
/// `serde_path_to_error`, so the message reads `invalid \`limit\`: invalid type: string
/// "ten", expected u32`. Its JSON Schema is `T`'s.
#[derive(Debug)]
pub struct Args<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> serde::Deserialize<'de> for Args<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        serde_path_to_error::deserialize(value)
            .map(Args)
            .map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                if path == "." {
                    D::Error::custom(inner)
                } else {
                    D::Error::custom(format!("invalid `{path}`: {inner}"))
                }
            })
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Args<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// Schema of a free-form JSON object (an event).
pub fn object_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object"})
}

/// Schema of a list of free-form JSON objects (events).
pub fn objects_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "object"}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // fields are read by the deserializer under test
    struct Inner {
        limit: Option<u32>,
        nested: Option<Vec<Nested>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // see Inner
    struct Nested {
        confidence: f64,
    }

    #[test]
    fn errors_name_the_field() {
        let error =
            serde_json::from_value::<Args<Inner>>(serde_json::json!({"limit": "ten"})).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid `limit`: invalid type: string"),
            "{error}"
        );
        let error = serde_json::from_value::<Args<Inner>>(
            serde_json::json!({"nested": [{"confidence": "high"}]}),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid `nested[0].confidence`"),
            "{error}"
        );
        assert!(serde_json::from_value::<Args<Inner>>(serde_json::json!({"limit": 3})).is_ok());
        assert_eq!(
            limit("limit", Some(0), 5, 10),
            Err(ToolError::invalid("limit", "must be at least 1"))
        );
    }
}
