//! Which backbone the window proposes boxes with. Detection runs as a background job
//! (`tasks::detect`, `tasks::retrain_detector`): after an import on the photos it added, on
//! demand from Annotate, and again after the detector is retrained.

use std::path::PathBuf;
use std::sync::Arc;

use crate::models::Backbone;

/// The backbone detection runs on.
#[derive(Clone, Default)]
pub enum Detection {
    /// No detection (the default for tests that do not need it).
    #[default]
    Off,
    /// EfficientNet-Lite0 from this models folder (`models::default_dir()` for the window),
    /// photos read at the detector's usual size.
    Weights(PathBuf),
    /// This backbone instead (tests, screenshots): photos read at `long_side`, detectors
    /// trained for `epochs`, so a random tiny network answers in milliseconds.
    Given { backbone: Arc<dyn Backbone>, long_side: u32, epochs: usize },
}

impl std::fmt::Debug for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detection::Off => f.write_str("Off"),
            Detection::Weights(dir) => write!(f, "Weights({})", dir.display()),
            Detection::Given { backbone, long_side, epochs } => {
                write!(f, "Given({} at {long_side} px, {epochs} epochs)", backbone.name())
            }
        }
    }
}

impl Detection {
    pub fn is_on(&self) -> bool {
        !matches!(self, Detection::Off)
    }
}

/// An untrained two-stage EfficientNet (the same random draw every time) reading photos at
/// 96 px (a grid of 24 cells on the longer side, as the real one has at its usual size),
/// training detectors for a few epochs: tests and screenshots without weights (its boxes
/// mean nothing).
pub fn tiny_random_detection() -> Option<Detection> {
    let config = crate::models::efficientnet::EfficientNetConfig::tiny();
    let net = crate::models::efficientnet::seeded(&config, &candle_core::Device::Cpu, 1).ok()?;
    Some(Detection::Given { backbone: Arc::new(net), long_side: 96, epochs: 8 })
}
