//! JSON framing: one event, a JSON array of events, or newline-delimited JSON (NDJSON).
//!
//! Decoding of each record is [`decode_event`]; this module only finds record boundaries,
//! enforces per-record size limits, and collects per-record errors so one bad record never
//! loses the rest of the batch.

use megamind_dataflows::model::decode::{decode_event, DecodeLimits};
use megamind_dataflows::model::{DataError, ErrorReason, Event};
use serde_json::value::RawValue;

/// A record that could not be decoded, with its position in the batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordError {
    /// Zero-based position of the record (array element or non-empty line).
    pub index: usize,
    /// One-based line number for NDJSON input, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What was wrong.
    #[serde(flatten)]
    pub error: DataError,
}

/// The result of decoding a batch: the good events and one error per bad record.
#[derive(Debug, Default)]
pub struct DecodedBatch {
    /// Valid events, in input order.
    pub events: Vec<Event>,
    /// The one-based line of each valid event (NDJSON input), parallel to `events`.
    pub event_lines: Vec<Option<usize>>,
    /// Rejected records.
    pub errors: Vec<RecordError>,
}

impl DecodedBatch {
    /// Number of records seen (good and bad).
    pub fn records(&self) -> usize {
        self.events.len() + self.errors.len()
    }

    /// The events paired with their record index (the positions not taken by errors) and
    /// line, and the errors.
    pub fn into_indexed(self) -> (Vec<IndexedEvent>, Vec<RecordError>) {
        let mut failed: Vec<usize> = self.errors.iter().map(|error| error.index).collect();
        failed.sort_unstable();
        let mut failed = failed.into_iter().peekable();
        let mut index = 0usize;
        let mut indexed = Vec::with_capacity(self.events.len());
        let mut lines = self.event_lines.into_iter();
        for event in self.events {
            while failed.peek() == Some(&index) {
                failed.next();
                index += 1;
            }
            indexed.push(IndexedEvent {
                index,
                line: lines.next().flatten(),
                event,
            });
            index += 1;
        }
        (indexed, self.errors)
    }
}

/// A valid event with its position in the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedEvent {
    /// Zero-based record position.
    pub index: usize,
    /// One-based line (NDJSON input).
    pub line: Option<usize>,
    /// The event.
    pub event: Event,
}

/// Limits applied to a whole batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLimits {
    /// Per-field limits.
    pub fields: DecodeLimits,
    /// Largest single record, in bytes.
    pub max_record_bytes: usize,
    /// Most records in one batch; records beyond are rejected.
    pub max_records: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            fields: DecodeLimits::default(),
            max_record_bytes: 1 << 20,
            max_records: 10_000,
        }
    }
}

/// Decodes a request body holding one object, an array of objects, or NDJSON.
///
/// `default_ts` stamps events without `ts`.
pub fn decode_body(body: &[u8], limits: &BatchLimits, default_ts: u64) -> DecodedBatch {
    let trimmed = trim_ascii(body);
    match trimmed.first() {
        Some(b'[') => decode_array(trimmed, limits, default_ts),
        _ => decode_lines(body, limits, default_ts),
    }
}

fn decode_array(body: &[u8], limits: &BatchLimits, default_ts: u64) -> DecodedBatch {
    let mut batch = DecodedBatch::default();
    let elements: Vec<&RawValue> = match serde_json::from_slice(body) {
        Ok(elements) => elements,
        Err(error) => {
            batch.errors.push(RecordError {
                index: 0,
                line: None,
                error: DataError::record(
                    ErrorReason::MalformedJson,
                    format!("invalid JSON array: {error}"),
                ),
            });
            return batch;
        }
    };
    for (index, element) in elements.into_iter().enumerate() {
        decode_one(
            element.get().as_bytes(),
            index,
            None,
            limits,
            default_ts,
            &mut batch,
        );
    }
    batch
}

/// The lines of newline-delimited input, without their `\n` (the last one need not end in
/// one), found with `memchr`: a byte-by-byte split was ~2.5 % of a worker's time with
/// 100–150-byte lines.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', body)
        .chain(std::iter::once(body.len()))
        .map(move |end| {
            let line = &body[start..end];
            start = end + 1;
            line
        })
}

/// Decodes newline-delimited JSON; blank lines are skipped.
pub fn decode_lines(body: &[u8], limits: &BatchLimits, default_ts: u64) -> DecodedBatch {
    let mut batch = DecodedBatch::default();
    let mut index = 0;
    for (line_number, line) in lines(body).enumerate() {
        let line = trim_ascii(line);
        if line.is_empty() {
            continue;
        }
        decode_one(
            line,
            index,
            Some(line_number + 1),
            limits,
            default_ts,
            &mut batch,
        );
        index += 1;
    }
    batch
}

fn decode_one(
    record: &[u8],
    index: usize,
    line: Option<usize>,
    limits: &BatchLimits,
    default_ts: u64,
    batch: &mut DecodedBatch,
) {
    let result = if index >= limits.max_records {
        Err(DataError::record(
            ErrorReason::TooLong,
            format!("batch holds more than {} records", limits.max_records),
        ))
    } else if record.len() > limits.max_record_bytes {
        Err(DataError::record(
            ErrorReason::TooLong,
            format!("record is larger than {} bytes", limits.max_record_bytes),
        ))
    } else {
        decode_event(record, &limits.fields, default_ts)
    };
    match result {
        Ok(event) => {
            batch.events.push(event);
            batch.event_lines.push(line);
        }
        Err(error) => batch.errors.push(RecordError { index, line, error }),
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    &bytes[start..end]
}

/// Splits `buffer` at its last newline: the complete lines, and the incomplete tail.
pub fn split_complete_lines(buffer: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memrchr(b'\n', buffer) {
        Some(position) => buffer.split_at(position + 1),
        None => (&buffer[..0], buffer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BatchLimits {
        BatchLimits::default()
    }

    #[test]
    fn single_object_array_and_ndjson() {
        let one = decode_body(br#" {"type":"metric","name":"a","value":1} "#, &limits(), 7);
        assert_eq!((one.events.len(), one.errors.len()), (1, 0));
        assert_eq!(one.events[0].ts, 7);

        let array = decode_body(
            br#"[{"type":"metric","name":"a","value":1},{"type":"metric","name":"","value":1},{"type":"metric","name":"b","value":2}]"#,
            &limits(),
            0,
        );
        assert_eq!(array.events.len(), 2);
        assert_eq!(array.errors.len(), 1);
        assert_eq!(array.errors[0].index, 1);
        assert_eq!(array.errors[0].error.reason, ErrorReason::EmptyId);

        let lines = decode_body(
            b"{\"type\":\"metric\",\"name\":\"a\",\"value\":1}\n\nnot json\n{\"type\":\"metric\",\"name\":\"b\",\"value\":2}\n",
            &limits(),
            0,
        );
        assert_eq!(lines.events.len(), 2);
        assert_eq!(lines.errors.len(), 1);
        assert_eq!((lines.errors[0].index, lines.errors[0].line), (1, Some(3)));
        assert_eq!(lines.errors[0].error.reason, ErrorReason::MalformedJson);
    }

    #[test]
    fn broken_array_is_one_error() {
        let batch = decode_body(b"[{\"type\":", &limits(), 0);
        assert!(batch.events.is_empty());
        assert_eq!(batch.errors.len(), 1);
        assert_eq!(batch.errors[0].error.reason, ErrorReason::MalformedJson);
    }

    #[test]
    fn record_and_batch_limits() {
        let limits = BatchLimits {
            max_record_bytes: 60,
            max_records: 2,
            ..BatchLimits::default()
        };
        let body = format!(
            "{}\n{}\n{}\n",
            r#"{"type":"metric","name":"a","value":1}"#,
            r#"{"type":"metric","name":"a","value":1,"padding":"xxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
            r#"{"type":"metric","name":"a","value":1}"#
        );
        let batch = decode_body(body.as_bytes(), &limits, 0);
        assert_eq!(batch.events.len(), 1);
        let reasons: Vec<_> = batch
            .errors
            .iter()
            .map(|e| (e.index, e.error.reason))
            .collect();
        assert_eq!(
            reasons,
            [(1, ErrorReason::TooLong), (2, ErrorReason::TooLong)]
        );
    }

    #[test]
    fn indexed_events_skip_failed_positions() {
        let body = b"bad\n{\"type\":\"metric\",\"name\":\"a\",\"value\":1}\nbad\nbad\n{\"type\":\"metric\",\"name\":\"b\",\"value\":1}\n";
        let (indexed, errors) = decode_body(body, &limits(), 0).into_indexed();
        let positions: Vec<(usize, Option<usize>)> = indexed
            .iter()
            .map(|event| (event.index, event.line))
            .collect();
        assert_eq!(positions, [(1, Some(2)), (4, Some(5))]);
        assert_eq!(errors.len(), 3);
    }

    /// `lines` cuts exactly where splitting at every `\n` does, at the edges too.
    #[test]
    fn lines_are_the_pieces_between_newlines() {
        for body in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"\na",
            b"a\n\nbc\n \nd",
            b"\n\n\n",
        ] {
            let expected: Vec<&[u8]> = body.split(|byte| *byte == b'\n').collect();
            assert_eq!(lines(body).collect::<Vec<_>>(), expected, "{body:?}");
        }
    }

    #[test]
    fn split_keeps_incomplete_tail() {
        assert_eq!(
            split_complete_lines(b"a\nb\nc"),
            (&b"a\nb\n"[..], &b"c"[..])
        );
        assert_eq!(split_complete_lines(b"abc"), (&b""[..], &b"abc"[..]));
    }

    #[test]
    fn errors_serialize_flat() {
        let batch = decode_body(br#"{"type":"metric","name":"a"}"#, &limits(), 0);
        let json = serde_json::to_value(&batch.errors[0]).unwrap();
        assert_eq!(json["field"], "value");
        assert_eq!(json["reason"], "missing_field");
        assert_eq!(json["index"], 0);
    }
}
