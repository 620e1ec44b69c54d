//! `track_models`: predictions ⋈ outcomes and per-model performance.

pub mod stats;
