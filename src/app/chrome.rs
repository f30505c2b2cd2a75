//! The window's frame around the panels: menu bar and panel tabs, status bar (jobs, device,
//! catalogue, saved indicator), notices, file dialogs, and the shortcuts, settings and
//! path windows.

use std::path::PathBuf;
use std::sync::mpsc::Sender;

use eframe::egui;

use super::WhaleApp;
use super::command::{Command, Event, ImportKind, Level, Notice, Pick};
use super::panels::labelled_text;
use crate::jobs::export::ExportFormat;

#[derive(Default)]
pub struct Chrome {
    pub shortcuts: bool,
    pub settings: bool,
    /// The "type a path" window: for when no file dialog can be shown (no desktop portal).
    pub path_prompt: Option<(Pick, String)>,
    pub details: Option<Notice>,
}

impl Chrome {
    pub fn modal_open(&self) -> bool {
        self.path_prompt.is_some()
    }
}

const GLOBAL_SHORTCUTS: &[(&str, &str)] = &[
    ("Ctrl+Z", "undo the last edit (any edit, saved or not yet)"),
    ("Ctrl+Shift+Z or Ctrl+Y", "redo"),
    ("Ctrl+1, Ctrl+2, ...", "switch panel"),
    ("Ctrl+O", "open a catalogue"),
    ("Ctrl+,", "settings"),
    ("F1", "this list"),
];

/// Shows a file dialog on its own thread (it blocks until the user answers) and sends the
/// command the answer makes.
pub fn pick(pick: Pick, events: Sender<Event>, ctx: egui::Context) {
    let spawned = std::thread::Builder::new().name("file dialog".into()).spawn(move || {
        let asked = std::time::Instant::now();
        let dialog = rfd::FileDialog::new();
        let catalogue_filter = |d: rfd::FileDialog| d.add_filter("whaleid catalogue", &[crate::catalogue::EXTENSION]);
        let command = match pick {
            Pick::OpenCatalogue => {
                catalogue_filter(dialog).set_title("Open a catalogue").pick_file().map(Command::OpenCatalogue)
            }
            Pick::NewCatalogue => catalogue_filter(dialog)
                .set_title("New catalogue")
                .set_file_name("catalogue.whaleid")
                .save_file()
                .map(Command::NewCatalogue),
            Pick::Import(what) => {
                let dialog = dialog.set_title(import_title(what));
                let source = match what {
                    ImportKind::Folder | ImportKind::YoloBoxes => dialog.pick_folder(),
                    ImportKind::Labels => dialog.add_filter("labels CSV", &["csv"]).pick_file(),
                    ImportKind::CocoBoxes => dialog.add_filter("COCO JSON", &["json"]).pick_file(),
                };
                source.map(|source| Command::Import { source, what })
            }
            Pick::Export(format) => {
                let dialog = dialog.set_title(format!("Export {format:?} into folder"));
                dialog.pick_folder().map(|out| Command::Export { format, out })
            }
        };
        let command = match command {
            Some(c) => c,
            // Back at once with nothing: no dialog could be shown (no desktop portal), so
            // ask for the path in the window instead. A user who cancels takes longer.
            None if asked.elapsed() < std::time::Duration::from_millis(400) => Command::PromptPath(pick),
            None => return,
        };
        let _ = events.send(Event::Command(command));
        ctx.request_repaint();
    });
    if let Err(e) = spawned {
        log_error(&format!("cannot show a file dialog: {e}"));
    }
}

/// What a path typed for a dialog becomes.
pub fn command_for(pick: Pick, path: PathBuf) -> Command {
    match pick {
        Pick::OpenCatalogue => Command::OpenCatalogue(path),
        Pick::NewCatalogue => Command::NewCatalogue(path),
        Pick::Import(what) => Command::Import { source: path, what },
        Pick::Export(format) => Command::Export { format, out: path },
    }
}

/// Title, hint and button of the path window.
fn prompt_words(pick: Pick) -> (&'static str, &'static str, &'static str) {
    match pick {
        Pick::OpenCatalogue => ("Open a catalogue", "/path/to/catalogue.whaleid", "Open"),
        Pick::NewCatalogue => ("New catalogue", "/path/to/new.whaleid", "Create"),
        Pick::Import(_) => ("Import", "a photo folder, a labels .csv or a COCO .json", "Import"),
        Pick::Export(_) => ("Export", "the folder to write into", "Export"),
    }
}

fn log_error(text: &str) {
    eprintln!("whaleid: {text}");
}

fn import_title(what: ImportKind) -> &'static str {
    match what {
        ImportKind::Folder => "Import a photo folder (photos, labels and boxes inside are recognised)",
        ImportKind::Labels => "Import identity labels (CSV)",
        ImportKind::CocoBoxes => "Import boxes (COCO JSON)",
        ImportKind::YoloBoxes => "Import boxes (folder of YOLO labels)",
    }
}

const EXPORTS: &[(ExportFormat, &str)] = &[
    (ExportFormat::Csv, "Catalogue CSV…"),
    (ExportFormat::Coco, "COCO JSON…"),
    (ExportFormat::Yolo, "YOLO labels…"),
    (ExportFormat::Crops, "Crops (JPEG per individual)…"),
    (ExportFormat::Mark, "Program MARK capture histories…"),
];

impl WhaleApp {
    pub(super) fn menu_bar(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("menu").show(ui, |ui| {
            egui::MenuBar::new().ui(ui, |ui| {
                ui.menu_button("File", |ui| self.file_menu(ui));
                ui.menu_button("Edit", |ui| self.edit_menu(ui));
                ui.menu_button("View", |ui| {
                    for p in &self.panels {
                        if ui.button(p.title()).clicked() {
                            self.out.push(Command::Show(p.id()));
                        }
                    }
                    ui.separator();
                    if ui.button("Keyboard shortcuts (F1)").clicked() {
                        self.chrome.shortcuts = true;
                    }
                    if ui.button("Settings… (Ctrl+,)").clicked() {
                        self.chrome.settings = true;
                    }
                });
                ui.separator();
                let active = self.state.active;
                for p in &self.panels {
                    if ui.selectable_label(p.id() == active, p.title()).clicked() {
                        self.out.push(Command::Show(p.id()));
                    }
                }
            });
        });
    }

    fn file_menu(&mut self, ui: &mut egui::Ui) {
        let pick = |ui: &mut egui::Ui, label: &str, p: Pick, out: &mut Vec<Command>| {
            if ui.button(label).clicked() {
                out.push(Command::Pick(p));
            }
        };
        pick(ui, "New catalogue…", Pick::NewCatalogue, &mut self.out);
        pick(ui, "Open catalogue… (Ctrl+O)", Pick::OpenCatalogue, &mut self.out);
        ui.menu_button("Open recent", |ui| {
            if self.state.settings.recent.is_empty() {
                ui.label("(none yet)");
            }
            for path in self.state.settings.recent.clone() {
                let exists = path.is_file();
                let text = path.display().to_string();
                if ui.add_enabled(exists, egui::Button::new(text)).on_disabled_hover_text("missing").clicked() {
                    self.out.push(Command::OpenCatalogue(path));
                }
            }
        });
        if ui.button("Open the demo catalogue").clicked() {
            self.out.push(Command::OpenDemo);
        }
        if ui.button("Type a catalogue path…").clicked() {
            self.chrome.path_prompt = Some((Pick::OpenCatalogue, String::new()));
        }
        ui.separator();
        pick(ui, "Import a photo folder…", Pick::Import(ImportKind::Folder), &mut self.out);
        pick(ui, "Import labels (CSV)…", Pick::Import(ImportKind::Labels), &mut self.out);
        pick(ui, "Import boxes (COCO JSON)…", Pick::Import(ImportKind::CocoBoxes), &mut self.out);
        pick(ui, "Import boxes (YOLO folder)…", Pick::Import(ImportKind::YoloBoxes), &mut self.out);
        if ui.button("Type a path to import…").clicked() {
            self.chrome.path_prompt = Some((Pick::Import(ImportKind::Folder), String::new()));
        }
        ui.menu_button("Export", |ui| {
            for (format, label) in EXPORTS {
                pick(ui, label, Pick::Export(*format), &mut self.out);
            }
        });
        ui.separator();
        if ui.button("Quit").clicked() {
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn edit_menu(&mut self, ui: &mut egui::Ui) {
        if ui.button("Undo (Ctrl+Z)").clicked() {
            self.out.push(Command::Undo);
        }
        if ui.button("Redo (Ctrl+Shift+Z)").clicked() {
            self.out.push(Command::Redo);
        }
        ui.separator();
        ui.label("History (newest first):");
        if self.state.history.is_empty() {
            ui.weak("no edits yet");
        }
        for a in self.state.history.iter().take(20) {
            let text = format!("{} {}{}", &a.at, a.label, if a.undone { " (undone)" } else { "" });
            if a.undone {
                ui.weak(text);
            } else {
                ui.label(text);
            }
        }
    }

    pub(super) fn status_bar(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                // Background jobs: name, stage, progress, cancel.
                let mut cancel = None;
                if self.jobs.running().is_empty() {
                    ui.weak("no background work");
                }
                for job in self.jobs.running() {
                    let stage = job.stage();
                    let (done, total) = job.counts();
                    let text = if total > 0 {
                        format!("{} · {stage} {done}/{total}", job.name)
                    } else {
                        format!("{} {stage}", job.name)
                    };
                    match job.progress() {
                        Some(f) => {
                            ui.add(egui::ProgressBar::new(f).desired_width(120.0).show_percentage());
                        }
                        None => {
                            ui.spinner();
                        }
                    }
                    ui.label(text);
                    let label = if job.cancel_requested() { "Stopping…" } else { "Cancel" };
                    if ui.add_enabled(!job.cancel_requested(), egui::Button::new(label)).clicked() {
                        cancel = Some(job.id);
                    }
                    ui.separator();
                }
                if let Some(id) = cancel {
                    self.out.push(Command::CancelJob(id));
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let save = &self.state.save;
                    if let Some(e) = &save.error {
                        ui.colored_label(ui.visuals().error_fg_color, "NOT SAVED").on_hover_text(e);
                    } else if save.pending > 0 {
                        ui.label("saving…");
                    } else if self.state.stats.is_some() {
                        let last = save.last.as_deref().map(|l| format!("last edit: {l}")).unwrap_or_default();
                        ui.colored_label(egui::Color32::from_rgb(80, 190, 100), "all saved")
                            .on_hover_text(format!("Every edit is written to the catalogue at once. {last}"));
                    }
                    ui.separator();
                    match &self.state.catalogue {
                        Some(path) => {
                            let counts = self
                                .state
                                .stats
                                .as_ref()
                                .map(|_| {
                                    format!(
                                        " · {} photos, {} individuals",
                                        self.state.rows.len(),
                                        self.state.individuals.len()
                                    )
                                })
                                .unwrap_or_else(|| " · opening…".into());
                            ui.label(format!("{}{counts}", path.display()));
                        }
                        None => {
                            ui.weak("no catalogue open");
                        }
                    }
                    if let Some(device) = &self.state.device_label {
                        ui.separator();
                        ui.label(device);
                    }
                });
            });
        });
    }

    /// The latest notice; errors stay until dismissed, other notices until the next one.
    pub(super) fn notices(&mut self, ui: &mut egui::Ui) {
        let Some(notice) = self.state.notices.last().cloned() else { return };
        egui::Panel::top("notice").show(ui, |ui| {
            ui.horizontal(|ui| {
                let color = match notice.level {
                    Level::Error => ui.visuals().error_fg_color,
                    Level::Info => ui.visuals().text_color(),
                };
                ui.colored_label(color, &notice.text);
                if !notice.details.is_empty()
                    && ui.small_button(format!("{} detail(s)", notice.details.len())).clicked()
                {
                    self.chrome.details = Some(notice.clone());
                }
                if ui.small_button("Dismiss").clicked() {
                    self.state.notices.clear();
                }
            });
        });
    }

    pub(super) fn windows(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let mut open = self.chrome.shortcuts;
        egui::Window::new("Keyboard shortcuts").open(&mut open).collapsible(false).show(&ctx, |ui| {
            egui::Grid::new("shortcuts_everywhere").striped(true).show(ui, |ui| {
                for (keys, what) in GLOBAL_SHORTCUTS {
                    ui.strong(*keys);
                    ui.label(*what);
                    ui.end_row();
                }
            });
            for p in &self.panels {
                if p.shortcuts().is_empty() {
                    continue;
                }
                ui.separator();
                ui.heading(p.title());
                egui::Grid::new(("shortcuts", p.id().0)).striped(true).show(ui, |ui| {
                    for (keys, what) in p.shortcuts() {
                        ui.strong(*keys);
                        ui.label(*what);
                        ui.end_row();
                    }
                });
            }
        });
        self.chrome.shortcuts = open;

        let mut open = self.chrome.settings;
        let before = self.state.settings.clone();
        egui::Window::new("Settings").open(&mut open).collapsible(false).show(&ctx, |ui| {
            let s = &mut self.state.settings;
            ui.add(egui::Slider::new(&mut s.new_individual_threshold, 0.0..=1.0).text("New-individual threshold"))
                .on_hover_text("Similarity below which a match is flagged as a possible new individual");
            ui.horizontal(|ui| {
                let l = ui.label("Thumbnail cache (MB)");
                ui.add(egui::DragValue::new(&mut s.thumbnail_cache_mb).range(16..=100_000)).labelled_by(l.id);
            });
            ui.checkbox(&mut s.advance_after_review, "Go to the next box after verify or reject");
            ui.separator();
            ui.strong("Identification");
            ui.horizontal(|ui| {
                let l = ui.label("Device");
                egui::ComboBox::from_id_salt("device")
                    .selected_text(s.device.as_str())
                    .show_ui(ui, |ui| {
                        for (value, words) in [
                            ("auto", "auto (CUDA when built with it, else CPU)"),
                            ("cpu", "cpu"),
                            ("cuda", "cuda (falls back to the CPU, saying why)"),
                        ] {
                            ui.selectable_value(&mut s.device, value.to_string(), words);
                        }
                    })
                    .response
                    .labelled_by(l.id);
            });
            let model = &self.state.model;
            if let Some(gallery) = &model.gallery
                && let Some(t) = gallery.tuned_threshold
            {
                ui.weak(format!("This model has a tuned threshold, {t:.2}, which is used instead of the slider"));
            }
            if self.state.stats.is_some() && model.embedder.is_some() {
                let active =
                    model.head.as_ref().map(|h| h.display().to_string()).unwrap_or_else(|| "untrained head".into());
                let mut chosen = model.head.clone();
                ui.horizontal(|ui| {
                    let l = ui.label("Model (this catalogue)");
                    egui::ComboBox::from_id_salt("active_head")
                        .selected_text(active)
                        .width(360.0)
                        .show_ui(ui, |ui| {
                            ui.selectable_value(&mut chosen, None, "untrained head");
                            for h in &model.heads {
                                ui.selectable_value(&mut chosen, Some(h.clone()), h.display().to_string());
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
                if chosen != model.head {
                    // An undoable edit of the catalogue; embeddings follow in the background.
                    self.out.push(Command::Edit(super::command::CatalogueEdit::SetActiveHead(chosen)));
                }
                ui.weak(format!("Embeddings: {}", self.state.settings.model));
            }
            ui.weak(format!("Saved in {}", super::settings::Settings::file(&self.state.home).display()));
        });
        self.chrome.settings = open;
        if self.state.settings != before {
            self.out.push(Command::SaveSettings);
            if self.state.settings.device != before.device {
                self.out.push(Command::LoadEmbedder);
            }
        }

        if let Some((pick, mut text)) = self.chrome.path_prompt.take() {
            let mut keep = true;
            let (title, hint, action) = prompt_words(pick);
            egui::Modal::new(egui::Id::unique("path_prompt")).show(&ctx, |ui| {
                ui.heading(title);
                let field = labelled_text(ui, "Path", &mut text, hint, 420.0);
                // The window is modal: typing always goes to its one field.
                field.request_focus();
                let enter = ui.input(|i| i.key_pressed(egui::Key::Enter));
                ui.horizontal(|ui| {
                    let path = PathBuf::from(text.trim());
                    let typed = !text.trim().is_empty();
                    if (ui.button(action).clicked() || enter) && typed {
                        self.out.push(command_for(pick, path.clone()));
                        keep = false;
                    }
                    if matches!(pick, Pick::OpenCatalogue) && ui.button("Create new").clicked() && typed {
                        self.out.push(Command::NewCatalogue(path));
                        keep = false;
                    }
                    if ui.button("Cancel").clicked() || ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                        keep = false;
                    }
                });
            });
            if keep {
                self.chrome.path_prompt = Some((pick, text));
            } else if let Some(focused) = ctx.memory(|m| m.focused()) {
                // Enter would otherwise leave focus on whatever widget egui moves it to, and a
                // focused button or combo box would take the next Enter meant for the review.
                ctx.memory_mut(|m| m.surrender_focus(focused));
            }
        }

        if let Some(notice) = self.chrome.details.clone() {
            let mut open = true;
            egui::Window::new("Details").open(&mut open).show(&ctx, |ui| {
                ui.label(&notice.text);
                ui.separator();
                egui::ScrollArea::vertical().max_height(400.0).show(ui, |ui| {
                    for line in &notice.details {
                        ui.label(line);
                    }
                });
            });
            if !open {
                self.chrome.details = None;
            }
        }
    }
}
