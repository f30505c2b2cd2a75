//! The desktop app's shell. On first run it creates the demo catalogue of synthetic
//! whales in the background and shows the open catalogue; the review, identify and
//! train screens build on this window.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::Context as _;

use crate::catalogue::Catalogue;
use crate::import::ImportOptions;
use crate::model::Part;
use crate::progress::Progress;
use crate::stats::Stats;

/// The demo catalogue's size and seed: small enough to create in seconds.
pub const DEMO_INDIVIDUALS: usize = 30;
pub const DEMO_PHOTOS_PER_INDIVIDUAL: usize = 6;
pub const DEMO_SEED: u64 = 2026;

/// Where whaleid keeps its own files: `$WHALEID_HOME`, else the platform's data folder.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("WHALEID_HOME") {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("whaleid");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local").join("share").join("whaleid"),
        None => PathBuf::from("whaleid-data"),
    }
}

pub fn demo_catalogue_path() -> PathBuf {
    data_dir().join("demo").join("demo.whaleid")
}

/// Creates the demo catalogue (synthetic photos beside it) unless it is already complete.
/// Interrupted creation is finished by the next call: rendering is deterministic and the
/// import skips what is already there.
pub fn ensure_demo(path: &Path, progress: &dyn Progress) -> anyhow::Result<()> {
    let expected = (DEMO_INDIVIDUALS * DEMO_PHOTOS_PER_INDIVIDUAL) as i64;
    if path.exists() {
        let cat = Catalogue::open(path)?;
        if crate::stats::stats(&cat)?.photos >= expected {
            return Ok(());
        }
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).with_context(|| format!("cannot create {}", photos.display()))?;
    let opts = crate::synth::SynthOptions::new(&photos, DEMO_INDIVIDUALS, DEMO_PHOTOS_PER_INDIVIDUAL, DEMO_SEED);
    progress.stage("rendering demo whales", expected as u64);
    crate::synth::generate(&opts, &|| progress.advance(1))?;
    let mut cat = Catalogue::open_or_create(path)?;
    let import =
        ImportOptions { part: Some(Part::Fluke), species: Some("humpback_whale".into()), ..Default::default() };
    crate::import::import(&mut cat, &photos, &import, progress)?;
    Ok(())
}

/// Messages from the background worker to the window.
enum Event {
    Stage(String, u64),
    Advance(u64),
    Opened(Box<Stats>),
    Failed(String),
}

struct ChannelProgress {
    tx: Sender<Event>,
    ctx: egui::Context,
}

impl Progress for ChannelProgress {
    fn stage(&self, name: &str, total: u64) {
        let _ = self.tx.send(Event::Stage(name.to_string(), total));
        self.ctx.request_repaint();
    }
    fn advance(&self, n: u64) {
        let _ = self.tx.send(Event::Advance(n));
        self.ctx.request_repaint();
    }
}

use eframe::egui;

/// What the window shows; changed only by draining worker events.
#[derive(Default)]
pub struct Shell {
    catalogue: PathBuf,
    stage: Option<(String, u64, u64)>,
    stats: Option<Box<Stats>>,
    error: Option<String>,
}

pub struct ShellApp {
    shell: Shell,
    events: Receiver<Event>,
}

impl ShellApp {
    /// Starts opening `catalogue` (creating the demo first when it is the demo) on a worker thread.
    pub fn new(ctx: &egui::Context, catalogue: PathBuf, is_demo: bool) -> ShellApp {
        let (tx, rx) = channel();
        let progress = ChannelProgress { tx: tx.clone(), ctx: ctx.clone() };
        let path = catalogue.clone();
        std::thread::spawn(move || {
            let result = (|| -> anyhow::Result<Stats> {
                if is_demo {
                    ensure_demo(&path, &progress)?;
                }
                let cat = Catalogue::open(&path)?;
                Ok(crate::stats::stats(&cat)?)
            })();
            let _ = tx.send(match result {
                Ok(s) => Event::Opened(Box::new(s)),
                Err(e) => Event::Failed(format!("{e:#}")),
            });
            progress.ctx.request_repaint();
        });
        ShellApp { shell: Shell { catalogue, ..Default::default() }, events: rx }
    }

    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::Stage(name, total) => self.shell.stage = Some((name, 0, total)),
                Event::Advance(n) => {
                    if let Some(stage) = &mut self.shell.stage {
                        stage.1 += n;
                    }
                }
                Event::Opened(stats) => {
                    self.shell.stage = None;
                    self.shell.stats = Some(stats);
                }
                Event::Failed(e) => {
                    self.shell.stage = None;
                    self.shell.error = Some(e);
                }
            }
        }
    }
}

impl eframe::App for ShellApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.drain();
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("whaleid");
            ui.label("Photo-identification of individual whales and dolphins, offline.");
            ui.add_space(8.0);
            ui.label(
                "The review, identification, gallery, map and training screens are being built. \
                 Until they land, every job runs from the command line: whaleid --help",
            );
            ui.separator();
            ui.label(format!("Catalogue: {}", self.shell.catalogue.display()));
            if let Some((name, done, total)) = &self.shell.stage {
                ui.label(format!("{name}: {done}/{total}"));
                ui.add(egui::ProgressBar::new(*done as f32 / (*total).max(1) as f32).show_percentage());
            }
            if let Some(error) = &self.shell.error {
                ui.colored_label(egui::Color32::LIGHT_RED, error);
            }
            if let Some(stats) = &self.shell.stats {
                ui.monospace(stats.to_string());
            }
        });
    }
}

/// Opens the window on `catalogue`, or on the demo catalogue when none is given.
pub fn run(catalogue: Option<PathBuf>) -> anyhow::Result<()> {
    let is_demo = catalogue.is_none();
    let path = catalogue.unwrap_or_else(demo_catalogue_path);
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_inner_size([900.0, 600.0]).with_title("whaleid"),
        ..Default::default()
    };
    eframe::run_native("whaleid", options, Box::new(move |cc| Ok(Box::new(ShellApp::new(&cc.egui_ctx, path, is_demo)))))
        .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
