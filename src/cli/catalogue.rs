//! The catalogue's commands: rendering and importing photos, exporting, summarising, relinking
//! moved photos, and undoing or listing edits.

use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::args::{CatalogueArgs, DemoArgs, ExportArgs, HistoryArgs, ImportArgs, RelinkArgs, SynthArgs};
use super::open;
use crate::base::console::{Console, emit};
use crate::base::progress::Progress;
use crate::catalogue::{Action, Catalogue};
use crate::jobs::export::ExportOptions;
use crate::jobs::import::ImportOptions;
use crate::jobs::synth::{SynthOptions, generate};

/// What `synth` rendered, under the names its `--json` has always used.
#[derive(Serialize)]
struct Rendered {
    photos: usize,
    individuals: usize,
    images: PathBuf,
    labels: PathBuf,
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rendered {} photos of {} individuals into {}\nlabels: {}",
            self.photos,
            self.individuals,
            self.images.display(),
            self.labels.display()
        )
    }
}

pub fn synth(args: SynthArgs) -> Result<()> {
    let mut opts = SynthOptions::new(&args.out, args.individuals, args.images_per_individual, args.seed);
    opts.first_individual = args.first_individual;
    opts.width = args.width;
    opts.height = args.height;
    let console = Console::new(args.json);
    console.stage("rendering", (args.individuals * args.images_per_individual) as u64);
    let report = generate(&opts, &|| console.advance(1))?;
    drop(console);
    let rendered = Rendered {
        photos: report.photos,
        individuals: report.individuals,
        images: report.images_dir,
        labels: report.labels_csv,
    };
    emit(args.json, &rendered, |r| r.to_string())
}

pub fn import(args: ImportArgs) -> Result<()> {
    let mut cat = Catalogue::open_or_create(&args.catalog)?;
    let opts = ImportOptions { part: args.part, species: args.species, batch_size: args.batch };
    let console = Console::new(args.json);
    let mut reports = Vec::new();
    for dataset in &args.datasets {
        reports.push(crate::jobs::import::import(&mut cat, dataset, &opts, &console)?);
    }
    drop(console);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!("{r}");
        }
    }
    Ok(())
}

pub fn export(args: ExportArgs) -> Result<()> {
    let cat = open(&args.catalog)?;
    let console = Console::new(args.json);
    let opts = ExportOptions { occasion: args.occasion, include_rejected: args.include_rejected, model: args.model };
    let report = crate::jobs::export::export(&cat, args.format, &args.out, &opts, &console)?;
    drop(console);
    emit(args.json, &report, |r| r.to_string())
}

pub fn stats(args: CatalogueArgs) -> Result<()> {
    let cat = open(&args.catalog)?;
    let stats = crate::catalogue::stats::stats(&cat)?;
    emit(args.json, &stats, |s| s.to_string())
}

pub fn relink(args: RelinkArgs) -> Result<()> {
    let mut cat = open(&args.catalog)?;
    let console = Console::new(args.json);
    let report = crate::jobs::import::relink(&mut cat, &args.folder, &console)?;
    drop(console);
    emit(args.json, &report, |r| r.to_string())
}

/// The edit undone or redone, if there was one.
#[derive(Serialize)]
struct Done {
    done: Option<String>,
    #[serde(skip)]
    undo: bool,
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.done, self.undo) {
            (Some(label), true) => write!(f, "undid: {label}"),
            (Some(label), false) => write!(f, "redid: {label}"),
            (None, true) => write!(f, "nothing to undo"),
            (None, false) => write!(f, "nothing to redo"),
        }
    }
}

pub fn undo(args: CatalogueArgs) -> Result<()> {
    let done = Done { done: open(&args.catalog)?.undo()?, undo: true };
    emit(args.json, &done, |d| d.to_string())
}

pub fn redo(args: CatalogueArgs) -> Result<()> {
    let done = Done { done: open(&args.catalog)?.redo()?, undo: false };
    emit(args.json, &done, |d| d.to_string())
}

/// The edit history, newest first: one line per edit.
#[derive(Serialize)]
#[serde(transparent)]
struct History(Vec<Action>);

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{:>6} {} {}{}", a.id, a.at, a.label, if a.undone { " (undone)" } else { "" })?;
        }
        Ok(())
    }
}

pub fn history(args: HistoryArgs) -> Result<()> {
    let history = History(open(&args.catalog)?.history(args.limit)?);
    emit(args.json, &history, |h| h.to_string())
}

pub fn demo(args: DemoArgs) -> Result<()> {
    let path = args.catalog.unwrap_or_else(crate::jobs::demo::demo_catalogue_path);
    let console = Console::new(args.json);
    crate::jobs::demo::ensure_demo(&path, &console)?;
    drop(console);
    let cat = open(&path)?;
    let stats = crate::catalogue::stats::stats(&cat)?;
    emit(args.json, &stats, |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_prints_one_line_per_edit_newest_first() {
        let action =
            |id, label: &str, undone| Action { id, label: label.into(), at: "2024-06-01T10:00:00".into(), undone };
        let history = History(vec![action(12, "rename HW-001", true), action(3, "import", false)]);
        assert_eq!(
            history.to_string(),
            "    12 2024-06-01T10:00:00 rename HW-001 (undone)\n     3 2024-06-01T10:00:00 import"
        );
        assert_eq!(serde_json::to_value(&history).unwrap()[0]["label"], "rename HW-001");
    }

    #[test]
    fn undo_and_redo_say_what_they_did_or_that_there_was_nothing() {
        assert_eq!(Done { done: Some("import".into()), undo: true }.to_string(), "undid: import");
        assert_eq!(Done { done: None, undo: false }.to_string(), "nothing to redo");
        assert_eq!(serde_json::to_string(&Done { done: None, undo: true }).unwrap(), r#"{"done":null}"#);
    }
}
