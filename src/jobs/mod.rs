//! What whaleid does, each job callable alike from the command line and the app: import,
//! export, embed, search, map, eval, submit, train and the synthetic whales.

pub mod demo;
pub mod detect;
pub mod embed;
pub mod eval;
pub mod export;
pub mod import;
pub mod map;
pub mod search;
pub mod submit;
pub mod synth;
pub mod train;
