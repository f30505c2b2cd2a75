//! The ground floor: the biologist's vocabulary and the infrastructure every layer shares.

pub mod console;
pub mod cpu;
pub mod crop;
pub mod ids;
pub mod paths;
pub mod photo;
pub mod progress;
pub mod vocabulary;
