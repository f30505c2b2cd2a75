//! The identification commands: embedding a catalogue's crops, searching it for a photo,
//! evaluating identification on labelled data and writing a Kaggle-style submission.

use anyhow::Result;

use super::args::{EmbedArgs, EvalArgs, SearchArgs, SubmitArgs};
use super::open;
use crate::base::console::{Console, emit};
use crate::jobs::embed::EmbedOptions;
use crate::jobs::eval::EvalOptions;
use crate::jobs::search::{Filter, Gallery};

pub fn embed(args: EmbedArgs) -> Result<()> {
    let mut cat = open(&args.catalog)?;
    let embedder = args.model.load_for(Some(&cat))?;
    let console = Console::new(args.json);
    let report =
        crate::jobs::embed::embed_catalogue(&mut cat, &embedder, &EmbedOptions { batch: args.batch }, &console)?;
    drop(console);
    emit(args.json, &report, |r| r.to_string())
}

pub fn search(args: SearchArgs) -> Result<()> {
    let mut cat = open(&args.catalog)?;
    let embedder = args.model.load_for(Some(&cat))?;
    let photo = &args.photo;
    let img = crate::base::photo::decode_file(photo).map_err(|e| anyhow::anyhow!("{}: {e}", photo.display()))?;
    let bbox =
        if args.detect { Some(super::detect::best_box(&cat, &img, photo, args.model.device)?) } else { args.bbox };
    let query = embedder.embed(&[crate::models::prepare(&img, bbox, embedder.size())])?;
    let console = Console::new(args.json);
    let (load, embedded) = Gallery::embedded(&mut cat, &embedder, &EmbedOptions::default(), &console)?;
    drop(console);
    if embedded.cancelled {
        anyhow::bail!("cancelled while embedding {}", cat.path().display());
    }
    for problem in &embedded.problems {
        eprintln!("warning: {problem}");
    }
    let left_out = load.describe();
    if !left_out.is_empty() {
        eprintln!("warning: {left_out}");
    }
    let filter = Filter { species: args.species, part: args.part, side: args.side };
    let threshold = crate::jobs::eval::stored_threshold(&cat, embedder.key());
    let result = load.gallery.search(&query[0], args.top, &filter, None, threshold);
    emit(args.json, &result, |r| format!("{}: {r}", photo.display()))
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let options = EvalOptions { batch: args.batch, open_set_fraction: args.open_set, seed: args.seed };
    let report = match &args.catalog {
        Some(path) => {
            let mut cat = open(path)?;
            let embedder = args.model.load_for(Some(&cat))?;
            let console = Console::new(args.json);
            let report = crate::jobs::eval::evaluate_catalogue(&mut cat, &embedder, &options, &console)?;
            if args.save_threshold {
                let Some(open) = &report.open_set else {
                    anyhow::bail!("--save-threshold needs the open-set evaluation (--open-set above 0)");
                };
                let key = crate::jobs::eval::threshold_setting(embedder.key());
                cat.set_setting(&key, &open.tuned.threshold.to_string())?;
            }
            report
        }
        None => {
            let embedder = args.model.load_for(None)?;
            crate::jobs::eval::evaluate_datasets(&args.datasets, &embedder, &options, &Console::new(args.json))?
        }
    };
    emit(args.json, &report, |r| r.to_string())
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let mut cat = open(&args.catalog)?;
    let embedder = args.model.load_for(Some(&cat))?;
    let console = Console::new(args.json);
    let report = crate::jobs::submit::submit(&mut cat, &embedder, &args.queries, &args.out, &console)?;
    drop(console);
    emit(args.json, &report, |r| r.to_string())
}
