//! Serde helper: a canonical label list (sorted pairs) as a JSON object.

/// Serializes [`crate::model::Labels`] as a map and reads it back, keeping it canonical.
///
/// Works with self-describing formats (JSON) and with bincode (maps are length-prefixed).
pub mod labels_as_map {
    use compact_str::CompactString;
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    use crate::model::Labels;

    /// Writes the labels as a map.
    ///
    /// # Errors
    /// Whatever the serializer reports.
    pub fn serialize<S: Serializer>(labels: &Labels, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(labels.len()))?;
        for (key, value) in labels {
            map.serialize_entry(key.as_str(), value.as_str())?;
        }
        map.end()
    }

    /// Reads a map of strings into canonical labels (sorted by key).
    ///
    /// # Errors
    /// Whatever the deserializer reports, or a non-string entry.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Labels, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = Labels::new();
                while let Some((key, value)) = map.next_entry::<CompactString, CompactString>()? {
                    labels.push((key, value));
                }
                labels.sort();
                Ok(labels)
            }
        }
        deserializer.deserialize_map(LabelsVisitor)
    }
}
