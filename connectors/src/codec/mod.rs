//! Codecs: bytes ↔ model records. No transport code.

pub mod json;
