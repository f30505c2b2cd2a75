//! The identification commands: embedding a catalogue's crops, searching it for a photo,
//! evaluating identification on labelled data and writing a Kaggle-style submission.

use anyhow::Result;

use super::args::{EmbedArgs, EvalArgs, SearchArgs, SubmitArgs};
use super::open;
use crate::base::console::{Console, emit};
use crate::jobs::embed::EmbedOptions;
use crate::jobs::eval::EvalOptions;
use crate::jobs::search::{Filter, Gallery, rerank};
use crate::models::local::LocalFeatures;

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
    let shortlist = if args.rerank.on() { args.top.max(rerank::SHORTLIST) } else { args.top };
    let mut result = load.gallery.search(&query[0], shortlist, &filter, None, threshold);
    // Other photos of a new animal not named yet, as Identify lists them.
    result.unidentified = load.gallery.nearest_unidentified(&query[0], args.top, &filter, None);
    if args.rerank.on() {
        let query_local = LocalFeatures::of_crop(&crate::base::crop::crop(&img, bbox));
        let console = Console::new(args.json);
        let (_, problems) = rerank::rerank_search(
            &mut cat,
            embedder.key(),
            &load.gallery,
            &query[0],
            rerank::QueryCrop::Features(&query_local),
            &mut result,
            &console,
        )?;
        drop(console);
        for problem in &problems {
            eprintln!("warning: {problem}");
        }
    }
    result.matches.truncate(args.top);
    result.name_photos(&cat)?;
    emit(args.json, &result, |r| format!("{}: {r}", photo.display()))
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let options =
        EvalOptions { batch: args.batch, open_set_fraction: args.open_set, seed: args.seed, rerank: args.rerank.on() };
    let report = match &args.catalog {
        Some(path) => {
            let mut cat = open(path)?;
            let embedder = args.model.load_for(Some(&cat))?;
            let console = Console::new(args.json);
            let report = crate::jobs::eval::evaluate_catalogue(&mut cat, &embedder, &options, &console)?;
            if args.save_threshold {
                crate::jobs::eval::save_thresholds(&mut cat, embedder.key(), &report)?;
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
    let report =
        crate::jobs::submit::submit(&mut cat, &embedder, &args.queries, &args.out, args.rerank.on(), &console)?;
    drop(console);
    emit(args.json, &report, |r| r.to_string())
}
