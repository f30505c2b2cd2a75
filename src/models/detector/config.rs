//! What a detector file records about how it was made: the backbone and where its features
//! are read, the input size, the parts it knows, and how well it did.

use serde::{Deserialize, Serialize};

use super::boxes::Calibration;
use super::refine::RefineConfig;
use crate::base::vocabulary::Part;

/// The safetensors metadata key that holds the [`DetectorConfig`] as JSON.
pub const CONFIG_KEY: &str = "whaleid.detector";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// The backbone whose features the head reads (`efficientnet_lite0`): another backbone's
    /// features mean nothing to it.
    pub backbone: String,
    /// Feature depths read (blocks or stages).
    pub taps: Vec<usize>,
    /// Photos are resized so their longer side is this many input pixels.
    pub long_side: u32,
    /// Input pixels per grid cell.
    pub stride: usize,
    /// Width of each tap's features.
    pub channels: Vec<usize>,
    pub hidden: usize,
    pub parts: Vec<Part>,
    pub calibration: Calibration,
    /// The second look at each photo's best boxes (none in detectors trained before it).
    #[serde(default)]
    pub refine: Option<RefineConfig>,
    /// What the training run measured and on what (the card).
    pub card: DetectorCard,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorCard {
    pub catalogue: String,
    /// blake3 over the training photos' hashes and boxes: the same data gives the same value.
    pub data_fingerprint: String,
    pub train_photos: usize,
    pub train_boxes: usize,
    /// The head was trained again on the validation photos too, after they measured it.
    #[serde(default)]
    pub refit_on_all: bool,
    pub validation_photos: usize,
    pub validation_boxes: usize,
    pub epochs: usize,
    pub seconds: f64,
    /// AP at IoU 0.5 on the validation photos (none without validation photos).
    pub validation_ap50: Option<f64>,
    pub validation_ap50_95: Option<f64>,
    /// The same two without the second look (the first look's boxes as they are).
    #[serde(default)]
    pub validation_ap50_first_look: Option<f64>,
    #[serde(default)]
    pub validation_ap50_95_first_look: Option<f64>,
    pub created: String,
}
