//! The detection commands: training the catalogue's detector, proposing boxes, and measuring
//! detection against labelled boxes.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use image::DynamicImage;

use super::args::{DetectArgs, DetectorArgs, EvalDetectArgs, TrainDetectorArgs, VerifyArgs};
use super::open;
use crate::base::console::{Console, emit};
use crate::base::vocabulary::{BoxPx, Part};
use crate::catalogue::Catalogue;
use crate::jobs::detect::{Finder, TrainDetectorOptions};
use crate::models::{Backbone, DeviceChoice};

fn backbone(asked: Option<&Path>, device: DeviceChoice) -> Result<Arc<dyn Backbone>> {
    let path = match asked {
        Some(p) => crate::jobs::embed::resolve_model(p),
        None => crate::jobs::detect::default_backbone_path()?,
    };
    let (device, notice) = crate::models::select_device(device);
    if let Some(notice) = notice {
        eprintln!("notice: {notice}");
    }
    Ok(crate::models::load_backbone(&path, &device)?)
}

/// The detector asked for, else the catalogue's active one, else zero-shot proposals.
fn finder(args: &DetectorArgs, cat: Option<&Catalogue>, part: Part) -> Result<Finder> {
    let backbone = backbone(args.backbone.as_deref(), args.device)?;
    let file = match (&args.detector, cat) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(cat)) => crate::jobs::detect::active_detector(cat)?,
        (None, None) => None,
    };
    match file {
        Some(file) if !file.is_file() => anyhow::bail!("{}: the detector file is missing", file.display()),
        Some(file) => Finder::learned(backbone, &file),
        None => Ok(Finder::zero_shot(backbone, part)),
    }
}

/// The box the catalogue's active detector scores highest in `img` (read from `photo`).
pub(super) fn best_box(cat: &Catalogue, img: &DynamicImage, photo: &Path, device: DeviceChoice) -> Result<BoxPx> {
    let Some(file) = crate::jobs::detect::active_detector(cat)? else {
        anyhow::bail!(
            "{}: no active detector to find the animal in {} with; train one (`whaleid train-detector --catalog {}`) or give --box",
            cat.path().display(),
            photo.display(),
            cat.path().display()
        );
    };
    let args = DetectorArgs { backbone: None, detector: Some(file), device };
    let found = finder(&args, Some(cat), Part::Body)?.find(img, 0.0)?;
    let best =
        found.first().ok_or_else(|| anyhow::anyhow!("{}: the detector found no animal in it", photo.display()))?;
    eprintln!(
        "{}: searching through the detected {} at {:.0},{:.0},{:.0},{:.0} (score {:.2})",
        photo.display(),
        best.part,
        best.bbox.x,
        best.bbox.y,
        best.bbox.w,
        best.bbox.h,
        best.score
    );
    Ok(best.bbox)
}

pub fn train_detector(args: TrainDetectorArgs) -> Result<()> {
    let mut cat = open(&args.catalog)?;
    let backbone = backbone(args.backbone.as_deref(), args.device)?;
    let opts = TrainDetectorOptions {
        epochs: args.epochs,
        long_side: args.long_side,
        seed: args.seed,
        out: args.out.clone(),
        ..Default::default()
    };
    let console = Console::new(args.json);
    let report = crate::jobs::detect::train_detector(&mut cat, backbone, &opts, &console)?;
    drop(console);
    emit(args.json, &report, |r| r.to_string())
}

pub fn detect(args: DetectArgs) -> Result<()> {
    let part = args.part.unwrap_or(Part::Body);
    match (&args.catalog, &args.folder) {
        (Some(catalog), None) => {
            let mut cat = open(catalog)?;
            let finder = finder(&args.detector, Some(&cat), part)?;
            let console = Console::new(args.json);
            let mut report = crate::jobs::detect::detect_catalogue(
                &mut cat,
                &finder,
                &crate::jobs::detect::DetectOptions { threshold: args.threshold, ..Default::default() },
                &console,
            )?;
            drop(console);
            report.detector = args
                .detector
                .detector
                .clone()
                .or(crate::jobs::detect::active_detector(&cat)?)
                .map(|p| p.display().to_string());
            emit(args.json, &report, |r| r.to_string())
        }
        (catalog, Some(folder)) => {
            let cat = catalog.as_deref().map(open).transpose()?;
            let finder = finder(&args.detector, cat.as_ref(), part)?;
            let console = Console::new(true);
            let (boxes, problems) = crate::jobs::detect::detect_folder(folder, &finder, args.threshold, &console)?;
            drop(console);
            for p in &problems {
                eprintln!("{}: {}", p.photo, p.problem);
            }
            let text = serde_json::to_string_pretty(&boxes)?;
            match &args.out {
                Some(out) => {
                    std::fs::write(out, text).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
                    eprintln!("{} box(es) written to {}", boxes.len(), out.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        (None, None) => anyhow::bail!("give --catalog C (boxes into the catalogue) or a FOLDER of photos"),
    }
}

pub fn eval_detect(args: EvalDetectArgs) -> Result<()> {
    let cat = args.catalog.as_deref().map(open).transpose()?;
    let finder = finder(&args.detector, cat.as_ref(), Part::Body)?;
    let console = Console::new(args.json);
    let report = crate::jobs::detect::eval::eval_detect(&args.dataset, &finder, &console)?;
    drop(console);
    emit(args.json, &report, |r| r.to_string())
}

pub fn verify(args: VerifyArgs) -> Result<()> {
    let mut cat = open(&args.catalog)?;
    let mut proposals: Vec<_> = cat.annotations()?.into_iter().filter(crate::jobs::detect::is_unknown_box).collect();
    proposals
        .sort_by(|a, b| a.photo_id.cmp(&b.photo_id).then(b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0))));
    let mut chosen = Vec::new();
    let mut previous = None;
    for a in &proposals {
        let best = previous != Some(a.photo_id);
        previous = Some(a.photo_id);
        let above = args.above.is_some_and(|s| a.score.is_some_and(|v| v >= s));
        if above || (args.best && best) {
            chosen.push(a.id);
        }
    }
    if !chosen.is_empty() {
        cat.set_status(&chosen, crate::base::vocabulary::Status::Verified)?;
    }
    println!("{}: verified {} of {} unreviewed proposal(s)", args.catalog.display(), chosen.len(), proposals.len());
    Ok(())
}
