//! megamind's adapters to the outside world.
//!
//! Everything that knows about bytes, sockets, files or brokers lives here, and nothing
//! here knows about the application: connectors take and give model records
//! (`megamind_dataflows::model`) and report their own typed errors.

pub mod codec;
pub mod kafka;
pub mod notify;
pub mod store;
pub mod websocket;
