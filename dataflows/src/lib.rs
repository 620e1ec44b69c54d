//! megamind's dataflow crate: the event model and every timely operator.
//!
//! This crate is pure computation. It owns the records that flow through the pipeline
//! ([`model`]), the operators that transform them ([`operators`]), the graphs composed
//! from those operators ([`pipelines`]) and event-time helpers ([`time`]). It never opens
//! a socket or a file and never reads the wall clock outside [`time::SystemClock`]; the
//! application crate attaches real sources and sinks.
//!
//! Errors leave this crate as data: decoding and operator failures become
//! [`model::DataError`] values on an error stream, never panics.

pub mod model;
pub mod operators;
pub mod pipelines;
pub mod time;

#[cfg(any(test, feature = "testing"))]
pub mod reference;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// The timely timestamp used by every megamind dataflow: event time in milliseconds since
/// the Unix epoch, as carried by the watermark.
pub type Time = u64;
