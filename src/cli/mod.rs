//! The command line: every job of the app also runs as `whaleid <subcommand>`. `run` only
//! dispatches; each subcommand is one small function beside the others of its kind, and the
//! reports print themselves (`Display`) or as JSON with `--json`.

pub mod args;
pub mod bench;
mod catalogue;
mod detect;
mod identify;
mod models;

use std::path::Path;

pub use args::{Cli, Command, ModelArgs, ModelsCommand};

use crate::catalogue::Catalogue;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        return crate::app::run(None);
    };
    match command {
        Command::App { catalog } => crate::app::run(catalog),
        Command::Synth(args) => catalogue::synth(args),
        Command::Import(args) => catalogue::import(args),
        Command::Export(args) => catalogue::export(args),
        Command::Stats(args) => catalogue::stats(args),
        Command::Relink(args) => catalogue::relink(args),
        Command::Undo(args) => catalogue::undo(args),
        Command::Redo(args) => catalogue::redo(args),
        Command::History(args) => catalogue::history(args),
        Command::Demo(args) => catalogue::demo(args),
        Command::Embed(args) => identify::embed(args),
        Command::Search(args) => identify::search(args),
        Command::Eval(args) => identify::eval(args),
        Command::Submit(args) => identify::submit(args),
        Command::Train(args) => models::train(args),
        Command::TrainDetector(args) => detect::train_detector(args),
        Command::Detect(args) => detect::detect(args),
        Command::EvalDetect(args) => detect::eval_detect(args),
        Command::Verify(args) => detect::verify(args),
        Command::Models { which: ModelsCommand::Fetch(args) } => models::fetch(args),
        Command::Models { which: ModelsCommand::Activate(args) } => models::activate(args),
        Command::Bench { which } => bench::run(which),
    }
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

fn open(path: &Path) -> anyhow::Result<Catalogue> {
    Ok(Catalogue::open(path)?)
}
