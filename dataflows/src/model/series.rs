//! Numeric series: their keys, their samples and their window statistics.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::event::{Id, Labels};
use super::labels::labels_as_map;

/// Identifies one numeric series: a metric name, its labels, and the session it belongs to.
///
/// Session events produce per-session series named `session.*`. In JSON an absent session
/// and empty labels are omitted; binary encodings (between timely workers) always carry
/// every field, since they cannot skip fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct SeriesKey {
    /// Metric name.
    pub name: Id,
    /// Session, when the samples belong to one.
    #[serde(default)]
    pub session_id: Option<Id>,
    /// Canonical labels.
    #[serde(default, with = "labels_as_map")]
    pub labels: Labels,
}

impl Serialize for SeriesKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct LabelMap<'a>(&'a Labels);
        impl Serialize for LabelMap<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                labels_as_map::serialize(self.0, serializer)
            }
        }
        let readable = serializer.is_human_readable();
        let skip_session = readable && self.session_id.is_none();
        let skip_labels = readable && self.labels.is_empty();
        let fields = 1 + usize::from(!skip_session) + usize::from(!skip_labels);
        let mut state = serializer.serialize_struct("SeriesKey", fields)?;
        state.serialize_field("name", &self.name)?;
        if skip_session {
            state.skip_field("session_id")?;
        } else {
            state.serialize_field("session_id", &self.session_id)?;
        }
        if skip_labels {
            state.skip_field("labels")?;
        } else {
            state.serialize_field("labels", &LabelMap(&self.labels))?;
        }
        state.end()
    }
}

impl SeriesKey {
    /// A key with a name only.
    pub fn named(name: impl Into<Id>) -> Self {
        Self {
            name: name.into(),
            session_id: None,
            labels: Labels::new(),
        }
    }

    /// A deterministic hash (identical in every process), used to route the key to the
    /// worker that owns it.
    pub fn route(&self) -> u64 {
        let mut hasher = rustc_hash::FxHasher::default();
        self.hash(&mut hasher);
        hasher.finish()
    }

    /// Whether every `(key, value)` in `wanted` is among this key's labels.
    pub fn has_labels(&self, wanted: &Labels) -> bool {
        wanted
            .iter()
            .all(|pair| self.labels.binary_search(pair).is_ok())
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.session_id.is_none() && self.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        let mut first = true;
        if let Some(session) = &self.session_id {
            write!(f, "session_id={session}")?;
            first = false;
        }
        for (key, value) in &self.labels {
            if !first {
                f.write_str(",")?;
            }
            write!(f, "{key}={value}")?;
            first = false;
        }
        f.write_str("}")
    }
}

/// One observation of a series at an event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The series.
    pub key: SeriesKey,
    /// Event time in milliseconds.
    pub ts: u64,
    /// The observed value (finite).
    pub value: f64,
}

/// Statistics of one series over one sliding window `[start, end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// The series.
    pub key: SeriesKey,
    /// Window start (inclusive), ms.
    pub start: u64,
    /// Window end (exclusive), ms.
    pub end: u64,
    /// Number of samples.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Mean value.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Samples per second over the window length.
    pub rate: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Whether the percentiles are exact (otherwise from a histogram, 3 significant digits).
    pub exact: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<SeriesKey> {
        vec![
            SeriesKey::named("a"),
            SeriesKey {
                name: "b".into(),
                session_id: Some("s".into()),
                labels: vec![("k".into(), "v".into())],
            },
        ]
    }

    #[test]
    fn json_omits_empty_fields_and_binary_round_trips() {
        assert_eq!(
            serde_json::to_string(&keys()[0]).unwrap(),
            r#"{"name":"a"}"#
        );
        assert_eq!(
            serde_json::to_string(&keys()[1]).unwrap(),
            r#"{"name":"b","session_id":"s","labels":{"k":"v"}}"#
        );
        for key in keys() {
            let json: SeriesKey =
                serde_json::from_str(&serde_json::to_string(&key).unwrap()).unwrap();
            assert_eq!(json, key);
            // The encoding timely uses between processes.
            let bytes = bincode::serialize(&key).unwrap();
            let back: SeriesKey = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back, key);
        }
    }
}
