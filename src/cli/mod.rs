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
            eprintln!("whaleid: {}", error_text(&e));
            1
        }
    }
}

/// The error and its causes, each cause once: most of ours already say their cause in their
/// own words ("FILE: No such file"), which the chain would repeat.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn open(path: &Path) -> anyhow::Result<Catalogue> {
    Ok(Catalogue::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(crate::models::WeightsError::io("head.safetensors", io));
        assert_eq!(error_text(&e), "head.safetensors: No such file or directory");
        let e = anyhow::anyhow!("disk full").context("cannot save c.whaleid");
        assert_eq!(error_text(&e), "cannot save c.whaleid: disk full");
    }
}
