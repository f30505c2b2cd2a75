//! whaleid: offline photo-identification of individual whales and dolphins.
//!
//! The modules are floors (the README's Layout; `tests/architecture.rs` keeps every import
//! pointing down): `base` (vocabulary and infrastructure), `catalogue` (the one file, the only
//! SQL), `models` (weights, backbones, heads, the embedder), `jobs` (what whaleid does), and on
//! top the two faces, `cli` and `app`.

pub mod app;
pub mod base;
pub mod catalogue;
pub mod cli;
pub mod jobs;
pub mod models;
