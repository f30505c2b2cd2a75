//! Detection: boxes around flukes, dorsal fins and heads in whole field photos, from the
//! features of a frozen backbone.
//!
//! Two sources of boxes share one feature pass: [`zero_shot`] proposals, which need no
//! whale training (the cells that look least like the rest of the photo, grouped into
//! regions), and the learned [`Detector`], a small convolutional head over the feature grid
//! trained from the catalogue's verified boxes (`jobs::detect`). A detector file is a
//! safetensors file whose metadata says it is a detector and records its
//! [`DetectorConfig`]; it is refused for any other backbone than the one it was trained on.

mod boxes;
mod config;
mod network;
mod refine;
pub mod zero_shot;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use image::DynamicImage;

pub use boxes::{Calibration, Detection, nms, nms_voting};
pub use config::{CONFIG_KEY, DetectorCard, DetectorConfig};
pub use network::{DetectorNet, HeadOutput, Targets, decode, loss, targets};
pub use refine::{Looked, RefineConfig, RefineNet, Wanted, Window, loss as refine_loss};

use super::backbone::{Backbone, Tap};
use super::file_kind::FileKind;
use super::preprocess::{IMAGENET_MEAN, IMAGENET_STD};

/// Boxes that overlap a better one by more than this are the same animal.
pub const NMS_IOU: f64 = 0.5;
/// Candidates overlapping a kept box by this much vote on where its edges lie.
pub const VOTE_IOU: f64 = 0.5;
/// At most this many boxes per photo.
pub const MAX_BOXES: usize = 20;

/// Why a detector file could not be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("{}: cannot read it: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a detector file ({reason})", path.display())]
    NotADetector { path: PathBuf, reason: String },
    #[error(transparent)]
    Kind(#[from] super::file_kind::FileKindError),
    #[error(
        "{}: this detector was trained on the features of {trained}, but the backbone given is {given}; \
         train a detector for {given} (`whaleid train-detector`)",
        path.display()
    )]
    OtherBackbone { path: PathBuf, trained: String, given: String },
    #[error("{}: {source}", path.display())]
    Tensors { path: PathBuf, source: candle_core::Error },
}

/// A photo resized for the detector: `[1, 3, H, W]` normalised, and input pixels per photo
/// pixel.
pub struct DetectorInput {
    pub image: Tensor,
    pub scale: f64,
    pub photo: (u32, u32),
}

/// Resizes `img` so its longer side is `long_side` (sides rounded to `multiple`), normalised
/// with the ImageNet statistics the backbones were trained with.
pub fn prepare_photo(
    img: &DynamicImage,
    long_side: u32,
    multiple: usize,
    device: &Device,
) -> candle_core::Result<DetectorInput> {
    let (w, h) = (img.width().max(1), img.height().max(1));
    let scale = long_side as f64 / w.max(h) as f64;
    let round = |v: u32| {
        let m = multiple.max(1) as u32;
        (((v as f64 * scale) / m as f64).round() as u32).max(1) * m
    };
    let (nw, nh) = (round(w), round(h));
    let rgb = img.to_rgb8();
    let resized = if scale < 1.0 {
        image::imageops::thumbnail(&rgb, nw, nh)
    } else {
        image::imageops::resize(&rgb, nw, nh, image::imageops::FilterType::Triangle)
    };
    let image = normalised(&resized, device)?;
    // The scale actually applied along the longer side (after rounding).
    let applied = if w >= h { nw as f64 / w as f64 } else { nh as f64 / h as f64 };
    Ok(DetectorInput { image, scale: applied, photo: (w, h) })
}

/// `rgb` as the backbones take it: `[1, 3, H, W]`, normalised with the ImageNet statistics.
pub fn normalised(rgb: &image::RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = rgb.dimensions();
    let plane = (w * h) as usize;
    let mut data = vec![0f32; 3 * plane];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = (p[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    Tensor::from_vec(data, (1, 3, h as usize, w as usize), device)
}

/// The features the detector reads: the backbone's maps at its taps, each `[1, C, rows,
/// cols]` on its own grid, and the finest grid's stride in input pixels.
pub struct FeatureMaps {
    pub maps: Vec<Tensor>,
    pub stride: usize,
}

impl FeatureMaps {
    pub fn new(backbone: &dyn Backbone, input: &Tensor, taps: &[usize]) -> candle_core::Result<Self> {
        let taps: Vec<Tap> = taps.iter().map(|&d| Tap::Output(d)).collect();
        let features = backbone.features(input, &taps)?;
        let stride =
            features.iter().map(|f| f.stride()).min().ok_or_else(|| candle_core::Error::Msg("no taps".into()))?;
        let maps = features
            .iter()
            .map(|f| {
                let (b, n, d) = f.grid()?.dims3()?;
                debug_assert_eq!(n, f.rows() * f.cols());
                // Detached: the backbone stays frozen, and no gradient (or its graph, kept
                // alive by cached features) reaches back into it.
                Ok(f.grid()?.transpose(1, 2)?.reshape((b, d, f.rows(), f.cols()))?.contiguous()?.detach())
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(FeatureMaps { maps, stride })
    }

    /// The finest grid's rows and columns.
    pub fn grid(&self) -> (usize, usize) {
        network::finest_grid(&self.maps)
    }

    /// Every map's width.
    pub fn channels(&self) -> Vec<usize> {
        self.maps.iter().map(|m| m.dim(1).unwrap_or(0)).collect()
    }

    /// All maps on the finest grid (nearest neighbour), concatenated: `[1, sum C, rows, cols]`.
    pub fn concatenated(&self) -> candle_core::Result<Tensor> {
        let (rows, cols) = self.grid();
        let maps = self
            .maps
            .iter()
            .map(|m| {
                if m.dims4()?.2 == rows && m.dims4()?.3 == cols {
                    Ok(m.clone())
                } else {
                    m.upsample_nearest2d(rows, cols)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&maps, 1)?.contiguous()
    }

    /// The same maps in another dtype (f16 to cache them, f32 to use them).
    pub fn to_dtype(&self, dtype: DType) -> candle_core::Result<Self> {
        let maps = self.maps.iter().map(|m| m.to_dtype(dtype)).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(FeatureMaps { maps, stride: self.stride })
    }
}

/// Sets the variables `{prefix}.feature_mean` and `{prefix}.feature_std` in `vars` to the
/// per-channel mean and standard deviation (at least 1e-3) of `maps`, each `[C, cells]`.
pub fn set_standardisation(
    vars: &VarMap,
    prefix: &str,
    maps: impl Iterator<Item = candle_core::Result<Tensor>>,
    device: &Device,
) -> candle_core::Result<()> {
    let (mut sum, mut sq, mut n) = (Vec::<f64>::new(), Vec::<f64>::new(), 0usize);
    for map in maps {
        let flat = map?.to_vec2::<f32>()?;
        sum.resize(flat.len(), 0.0);
        sq.resize(flat.len(), 0.0);
        for (ch, row) in flat.iter().enumerate() {
            for &v in row {
                sum[ch] += v as f64;
                sq[ch] += (v as f64) * (v as f64);
            }
        }
        n += flat.first().map_or(0, Vec::len);
    }
    let n = n.max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std: Vec<f32> =
        sq.iter().zip(&sum).map(|(q, s)| ((q / n - (s / n).powi(2)).max(0.0).sqrt() as f32).max(1e-3)).collect();
    let data = vars.data().lock().map_err(|_| candle_core::Error::Msg("the variables are poisoned".into()))?;
    for (name, values) in [("feature_mean", mean), ("feature_std", std)] {
        let name = format!("{prefix}.{name}");
        let var = data.get(&name).ok_or_else(|| candle_core::Error::Msg(format!("the detector has no {name}")))?;
        let len = values.len();
        var.set(&Tensor::from_vec(values, len, device)?)?;
    }
    Ok(())
}

/// The default feature depths for a backbone: for a CNN the last stage at stride 16 (fine
/// enough for a fin a few dozen pixels wide) beside the final map (what the animal is); for
/// a ViT the last block.
pub fn default_taps(backbone: &dyn Backbone) -> Vec<usize> {
    let depth = backbone.depth();
    if backbone.input_multiple() == 1 && depth >= 7 { vec![depth - 2, depth] } else { vec![depth] }
}

/// Where the second look's variables are kept in a detector file.
pub const REFINE_PREFIX: &str = "refine";

/// A learned detector: the head, the second look where it has one, and what they were made
/// from.
pub struct Detector {
    pub config: DetectorConfig,
    pub net: DetectorNet,
    pub refiner: Option<RefineNet>,
}

impl Detector {
    /// A fresh head (for training), its variables in `vars`; no second look yet.
    pub fn new(config: DetectorConfig, vars: &VarMap, device: &Device) -> candle_core::Result<Self> {
        let vb = VarBuilder::from_varmap(vars, DType::F32, device);
        let net = DetectorNet::new(vb, &config.channels, config.hidden, config.parts.len().max(1))?;
        Ok(Self { config: DetectorConfig { refine: None, ..config }, net, refiner: None })
    }

    /// This detector with the second look `refiner` (configured by `config`).
    pub fn with_refiner(mut self, config: RefineConfig, refiner: RefineNet) -> Self {
        self.config.refine = Some(config);
        self.refiner = Some(refiner);
        self
    }

    /// Reads a detector file, refusing anything else and any other backbone than `backbone`.
    pub fn load(path: &Path, backbone: &str, device: &Device) -> Result<Self, DetectorError> {
        let bytes = std::fs::read(path).map_err(|source| DetectorError::Io { path: path.to_path_buf(), source })?;
        let config = config_in(&bytes, path)?;
        if config.backbone != backbone {
            return Err(DetectorError::OtherBackbone {
                path: path.to_path_buf(),
                trained: config.backbone.clone(),
                given: backbone.to_string(),
            });
        }
        let tensors = |source| DetectorError::Tensors { path: path.to_path_buf(), source };
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(tensors)?;
        let net = DetectorNet::new(vb.clone(), &config.channels, config.hidden, config.parts.len().max(1))
            .map_err(tensors)?;
        let refiner = match &config.refine {
            Some(r) => Some(RefineNet::new(vb.pp(REFINE_PREFIX), r).map_err(tensors)?),
            None => None,
        };
        Ok(Self { config, net, refiner })
    }

    /// Writes the variables of `vars` (the head's, and the second look's under
    /// [`REFINE_PREFIX`]) with `config` as a detector file.
    pub fn save(vars: &[&VarMap], config: &DetectorConfig, path: &Path) -> anyhow::Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for map in vars {
            let data = map.data().lock().map_err(|_| anyhow::anyhow!("the detector's variables are poisoned"))?;
            tensors.extend(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())));
        }
        let mut metadata = FileKind::Detector.metadata();
        metadata.insert(CONFIG_KEY.to_string(), serde_json::to_string(config)?);
        let bytes = safetensors::serialize(tensors, Some(metadata))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        }
        let partial = path.with_extension("safetensors.partial");
        std::fs::write(&partial, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", partial.display()))?;
        std::fs::rename(&partial, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(())
    }

    /// The boxes of one photo, best first: the first look over its features, the second look
    /// at the best of them, then the scores calibrated; those under `min_score` dropped.
    pub fn detect(
        &self,
        backbone: &dyn Backbone,
        photo: &DynamicImage,
        features: &FeatureMaps,
        input: &DetectorInput,
        min_score: f32,
    ) -> candle_core::Result<Vec<Detection>> {
        let found = self.second_look(backbone, photo, self.first_look(features, input)?)?;
        Ok(self.calibrated(found, min_score))
    }

    /// The first look: the head over the photo's grid, its boxes suppressed with voting, best
    /// first, scored as the head scores them (not calibrated: the calibration was fitted on
    /// boxes voted with these scores).
    pub fn first_look(&self, features: &FeatureMaps, input: &DetectorInput) -> candle_core::Result<Vec<Detection>> {
        let (rows, cols) = features.grid();
        let out = self.net.forward(&features.maps)?;
        let raw =
            decode(&out, rows, cols, self.config.stride as f64, input.scale, input.photo, &self.config.parts, 0.01)?;
        // Every candidate votes, even those too weak to be kept themselves.
        Ok(nms_voting(raw, NMS_IOU, VOTE_IOU, MAX_BOXES))
    }

    /// `found` (best first, as [`Detector::first_look`] gives them) with the best boxes looked
    /// at again at `photo` (unchanged without a second look): each placed anew and, where the
    /// second look judges, scored by the geometric mean of the two looks' scores. Then
    /// suppressed again: two boxes on one animal may now agree. Not calibrated.
    pub fn second_look(
        &self,
        backbone: &dyn Backbone,
        photo: &DynamicImage,
        mut found: Vec<Detection>,
    ) -> candle_core::Result<Vec<Detection>> {
        let (Some(config), Some(net)) = (&self.config.refine, &self.refiner) else { return Ok(found) };
        let n = found.len().min(config.boxes);
        if n == 0 {
            return Ok(found);
        }
        // Converted only here: a detector without a second look, or a photo without boxes,
        // costs no copy of the photo.
        let photo = photo.to_rgb8();
        let windows: Vec<Window> = found[..n].iter().map(|d| Window::around(&d.bbox, config.context)).collect();
        let looked = look_again(backbone, &self.config.taps, net, config, &photo, &windows)?;
        let size = photo.dimensions();
        for ((d, w), (edges, judged)) in found.iter_mut().zip(&windows).zip(looked) {
            let b = w.box_at(edges, config.input, self.config.stride as f64, size);
            if b.w >= 1.0 && b.h >= 1.0 {
                d.bbox = b;
            }
            if let Some(j) = judged {
                d.score = (d.score * j).sqrt();
            }
        }
        Ok(nms(found, NMS_IOU, MAX_BOXES))
    }

    /// `found` with its scores calibrated (read as the probability that a box is right),
    /// those under `min_score` dropped.
    pub fn calibrated(&self, found: Vec<Detection>, min_score: f32) -> Vec<Detection> {
        found
            .into_iter()
            .map(|d| Detection { score: self.config.calibration.apply(d.score), ..d })
            .filter(|d| d.score >= min_score)
            .collect()
    }
}

/// The edges `net` places in each of `windows` of `photo` (as [`Window::edges_of`] gives
/// them) and, with a judge, the probability that the window is centred on an animal's box,
/// from one pass of `backbone` over all the windows.
pub fn look_again(
    backbone: &dyn Backbone,
    taps: &[usize],
    net: &RefineNet,
    config: &RefineConfig,
    photo: &image::RgbImage,
    windows: &[Window],
) -> candle_core::Result<Vec<([f32; 4], Option<f32>)>> {
    let maps = window_features(backbone, taps, photo, windows, config.input)?;
    let looked = net.forward(&maps)?;
    let edges = looked.edges.to_vec2::<f32>()?;
    let judged = match looked.judged {
        Some(j) => candle_nn::ops::sigmoid(&j)?.to_vec1::<f32>()?.into_iter().map(Some).collect(),
        None => vec![None; edges.len()],
    };
    Ok(edges.into_iter().zip(judged).map(|(e, j)| ([e[0], e[1], e[2], e[3]], j)).collect())
}

/// `[windows, C, rows, cols]`: the features of each of `windows` of `photo` read at `input`
/// pixels a side, the taps' maps side by side on the finest grid.
pub fn window_features(
    backbone: &dyn Backbone,
    taps: &[usize],
    photo: &image::RgbImage,
    windows: &[Window],
    input: u32,
) -> candle_core::Result<Tensor> {
    let images = windows
        .iter()
        .map(|w| normalised(&w.pixels(photo, input), backbone.device()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    FeatureMaps::new(backbone, &Tensor::cat(&images, 0)?, taps)?.concatenated()
}

/// The config recorded in a detector file, after checking that it is one.
pub fn read_config(path: &Path) -> Result<DetectorConfig, DetectorError> {
    let bytes = std::fs::read(path).map_err(|source| DetectorError::Io { path: path.to_path_buf(), source })?;
    config_in(&bytes, path)
}

/// [`read_config`] on the bytes of the file at `path`, already read.
fn config_in(bytes: &[u8], path: &Path) -> Result<DetectorConfig, DetectorError> {
    let metadata = FileKind::checked_metadata(bytes, path, FileKind::Detector)?;
    let not = |reason: String| DetectorError::NotADetector { path: path.to_path_buf(), reason };
    let config = metadata.get(CONFIG_KEY).ok_or_else(|| not("its configuration is missing".into()))?;
    serde_json::from_str(config).map_err(|e| not(format!("its configuration cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::vocabulary::Part;

    /// The calibration was fitted on boxes voted with the head's own scores: it changes how
    /// a box's score reads, never where a box is or which boxes are kept.
    #[test]
    fn calibration_rescores_the_boxes_without_moving_them() -> anyhow::Result<()> {
        let device = Device::Cpu;
        let config = DetectorConfig {
            backbone: "test".into(),
            taps: vec![1],
            long_side: 168,
            stride: 14,
            channels: vec![8],
            hidden: 8,
            parts: vec![Part::Fluke],
            calibration: Calibration::default(),
            refine: None,
            card: DetectorCard::default(),
        };
        let vars = VarMap::new();
        let plain = Detector::new(config.clone(), &vars, &device)?;
        crate::models::reseed(&vars, 5)?;
        let sharp = Detector::new(config.clone(), &vars, &device)?;
        let sharp =
            Detector { config: DetectorConfig { calibration: Calibration { a: 3.0, b: -1.0 }, ..config }, ..sharp };
        let maps = Tensor::randn(0f32, 1.0, (1, 8, 9, 12), &device)?;
        let features = FeatureMaps { maps: vec![maps], stride: 14 };
        let input = DetectorInput {
            image: Tensor::zeros((1, 3, 126, 168), DType::F32, &device)?,
            scale: 0.5,
            photo: (336, 252),
        };
        let first = plain.first_look(&features, &input)?;
        assert!(first.len() > 1, "a random head proposes boxes: {first:?}");
        let calibrated = sharp.calibrated(sharp.first_look(&features, &input)?, 0.0);
        assert_eq!(first.len(), calibrated.len());
        for (a, b) in first.iter().zip(&calibrated) {
            assert_eq!(a.bbox, b.bbox);
            assert!((b.score - sharp.config.calibration.apply(a.score)).abs() < 1e-6);
        }
        let kept = sharp.calibrated(first.clone(), 0.5);
        assert!(kept.iter().all(|d| d.score >= 0.5) && kept.len() < first.len(), "{kept:?}");
        Ok(())
    }
}
