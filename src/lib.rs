//! whaleid: offline photo-identification of individual whales and dolphins.
//!
//! The library holds everything the app and the command line share: the catalogue
//! (one SQLite file per project), importers and exporters, synthetic whales, and
//! (later) the embedder, search and training.

pub mod app;
pub mod bench;
pub mod catalogue;
pub mod cli;
pub mod crop;
pub mod embed;
pub mod eval;
pub mod export;
pub mod import;
pub mod map;
pub mod metrics;
pub mod model;
pub mod models;
pub mod photo;
pub mod progress;
pub mod search;
pub mod stats;
pub mod submit;
pub mod synth;
pub mod train;
