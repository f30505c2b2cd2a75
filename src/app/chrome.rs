//! The window's frame around the panels: menu bar and panel tabs, status bar (jobs, device,
//! catalogue, saved indicator), notices, the shortcuts, settings and path windows, and the
//! shortcuts that work everywhere. Like a panel, it changes things only by pushing intents.

use std::collections::HashMap;
use std::path::PathBuf;

use eframe::egui;

use super::embedding::{BackboneChoice, BackboneState};
use super::jobs::Jobs;
use super::messages::{CatalogueEdit, ImportKind, Intent, Level, Notice, Pick};
use super::panels::Panel;
use super::settings::Settings;
use super::state::AppState;
use super::widgets::labelled_text;
use crate::jobs::export::ExportFormat;
use crate::models::KnownModel;

/// The frame's own state: which windows are open, and what it caches between frames.
#[derive(Default)]
pub struct Chrome {
    pub shortcuts: bool,
    pub settings: bool,
    /// The "type a path" window: for when no file dialog can be shown (no desktop portal).
    pub path_prompt: Option<(Pick, String)>,
    pub details: Option<Notice>,
    /// A setting changed and is not written yet: it is, once the change is finished (the
    /// pointer released, a typed value committed).
    settings_unsaved: bool,
    /// Whether each recent catalogue still exists, checked in the background when the list
    /// changes (the menu asks every frame it is open).
    recent_exists: HashMap<PathBuf, bool>,
}

/// What the frame reads and changes: the state, the jobs for the status bar, the panels for
/// the tabs and the shortcuts, and the intents it pushes.
pub struct ChromeContext<'a> {
    pub state: &'a mut AppState,
    pub jobs: &'a Jobs,
    pub panels: &'a [Box<dyn Panel>],
    pub out: &'a mut Vec<Intent>,
}

impl Chrome {
    pub fn modal_open(&self) -> bool {
        self.path_prompt.is_some()
    }

    /// The recent catalogues checked (see `Event::RecentChecked`).
    pub fn recent_checked(&mut self, checked: Vec<(PathBuf, bool)>) {
        self.recent_exists = checked.into_iter().collect();
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

/// Title, hint and button of the path window.
fn prompt_words(pick: Pick) -> (&'static str, &'static str, &'static str) {
    match pick {
        Pick::OpenCatalogue => ("Open a catalogue", "/path/to/catalogue.whaleid", "Open"),
        Pick::NewCatalogue => ("New catalogue", "/path/to/new.whaleid", "Create"),
        Pick::Import(_) => ("Import", "a photo folder, a labels .csv or a COCO .json", "Import"),
        Pick::Export(_) => ("Export", "the folder to write into", "Export"),
    }
}

const EXPORTS: &[(ExportFormat, &str)] = &[
    (ExportFormat::Csv, "Catalogue CSV…"),
    (ExportFormat::Coco, "COCO JSON…"),
    (ExportFormat::Yolo, "YOLO labels…"),
    (ExportFormat::Crops, "Crops (JPEG per individual)…"),
    (ExportFormat::Mark, "Program MARK capture histories…"),
];

impl Chrome {
    /// Shortcuts that work everywhere: undo and redo (unless typing), the panels, the windows.
    pub fn global_keys(&mut self, ui: &egui::Ui, cx: &mut ChromeContext<'_>) {
        use egui::{Key, Modifiers};
        let typing = ui.ctx().egui_wants_keyboard_input();
        ui.input_mut(|i| {
            if !typing {
                if i.consume_key(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
                    || i.consume_key(Modifiers::COMMAND, Key::Y)
                {
                    cx.out.push(Intent::Redo);
                }
                if i.consume_key(Modifiers::COMMAND, Key::Z) {
                    cx.out.push(Intent::Undo);
                }
            }
            if i.consume_key(Modifiers::NONE, Key::F1) {
                self.shortcuts = !self.shortcuts;
            }
            if i.consume_key(Modifiers::COMMAND, Key::Comma) {
                self.settings = !self.settings;
            }
            if i.consume_key(Modifiers::COMMAND, Key::O) {
                cx.out.push(Intent::Pick(Pick::OpenCatalogue));
            }
            const DIGITS: [Key; 9] =
                [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6, Key::Num7, Key::Num8, Key::Num9];
            for (n, key) in DIGITS.into_iter().enumerate() {
                if i.consume_key(Modifiers::COMMAND, key)
                    && let Some(p) = cx.panels.get(n)
                {
                    cx.out.push(Intent::Show(p.id()));
                }
            }
        });
    }

    pub fn menu_bar(&mut self, ui: &mut egui::Ui, cx: &mut ChromeContext<'_>) {
        egui::Panel::top("menu").show(ui, |ui| {
            egui::MenuBar::new().ui(ui, |ui| {
                ui.menu_button("File", |ui| self.file_menu(ui, cx));
                ui.menu_button("Edit", |ui| self.edit_menu(ui, cx));
                ui.menu_button("View", |ui| {
                    for p in cx.panels {
                        if ui.button(p.title()).clicked() {
                            cx.out.push(Intent::Show(p.id()));
                        }
                    }
                    ui.separator();
                    if ui.button("Keyboard shortcuts (F1)").clicked() {
                        self.shortcuts = true;
                    }
                    if ui.button("Settings… (Ctrl+,)").clicked() {
                        self.settings = true;
                    }
                });
                ui.separator();
                let active = cx.state.active;
                for p in cx.panels {
                    if ui.selectable_label(p.id() == active, p.title()).clicked() {
                        cx.out.push(Intent::Show(p.id()));
                    }
                }
            });
        });
    }

    fn file_menu(&mut self, ui: &mut egui::Ui, cx: &mut ChromeContext<'_>) {
        let pick = |ui: &mut egui::Ui, label: &str, p: Pick, out: &mut Vec<Intent>| {
            if ui.button(label).clicked() {
                out.push(Intent::Pick(p));
            }
        };
        pick(ui, "New catalogue…", Pick::NewCatalogue, cx.out);
        pick(ui, "Open catalogue… (Ctrl+O)", Pick::OpenCatalogue, cx.out);
        ui.menu_button("Open recent", |ui| {
            if cx.state.settings.recent.is_empty() {
                ui.label("(none yet)");
            }
            for path in &cx.state.settings.recent {
                // Not checked yet: offered, and an open that fails says why.
                let exists = self.recent_exists.get(path).copied().unwrap_or(true);
                let text = path.display().to_string();
                if ui.add_enabled(exists, egui::Button::new(text)).on_disabled_hover_text("missing").clicked() {
                    cx.out.push(Intent::OpenCatalogue(path.clone()));
                }
            }
        });
        if ui.button("Open the demo catalogue").clicked() {
            cx.out.push(Intent::OpenDemo);
        }
        if ui.button("Type a catalogue path…").clicked() {
            self.path_prompt = Some((Pick::OpenCatalogue, String::new()));
        }
        ui.separator();
        pick(ui, "Import a photo folder…", Pick::Import(ImportKind::Folder), cx.out);
        pick(ui, "Import labels (CSV)…", Pick::Import(ImportKind::Labels), cx.out);
        pick(ui, "Import boxes (COCO JSON)…", Pick::Import(ImportKind::CocoBoxes), cx.out);
        pick(ui, "Import boxes (YOLO folder)…", Pick::Import(ImportKind::YoloBoxes), cx.out);
        if ui.button("Type a path to import…").clicked() {
            self.path_prompt = Some((Pick::Import(ImportKind::Folder), String::new()));
        }
        ui.menu_button("Export", |ui| {
            for (format, label) in EXPORTS {
                pick(ui, label, Pick::Export(*format), cx.out);
            }
        });
        ui.separator();
        if ui.button("Quit").clicked() {
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn edit_menu(&mut self, ui: &mut egui::Ui, cx: &mut ChromeContext<'_>) {
        if ui.button("Undo (Ctrl+Z)").clicked() {
            cx.out.push(Intent::Undo);
        }
        if ui.button("Redo (Ctrl+Shift+Z)").clicked() {
            cx.out.push(Intent::Redo);
        }
        ui.separator();
        ui.label("History (newest first):");
        if cx.state.history.is_empty() {
            ui.weak("no edits yet");
        }
        for a in cx.state.history.iter().take(20) {
            let text = format!("{} {}{}", &a.at, a.label, if a.undone { " (undone)" } else { "" });
            if a.undone {
                ui.weak(text);
            } else {
                ui.label(text);
            }
        }
    }

    pub fn status_bar(&mut self, ui: &mut egui::Ui, cx: &mut ChromeContext<'_>) {
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                // Background jobs: name, stage, progress, cancel.
                let mut cancel = None;
                if cx.jobs.listed().next().is_none() {
                    ui.weak("no background work");
                }
                for job in cx.jobs.listed() {
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
                    cx.out.push(Intent::CancelJob(id));
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let save = &cx.state.save;
                    if let Some(e) = &save.error {
                        ui.colored_label(ui.visuals().error_fg_color, "NOT SAVED").on_hover_text(e);
                    } else if save.pending > 0 {
                        ui.label("saving…");
                    } else if cx.state.stats.is_some() {
                        let last = save.last.as_deref().map(|l| format!("last edit: {l}")).unwrap_or_default();
                        ui.colored_label(egui::Color32::from_rgb(80, 190, 100), "all saved")
                            .on_hover_text(format!("Every edit is written to the catalogue at once. {last}"));
                    }
                    ui.separator();
                    match &cx.state.catalogue {
                        Some(path) => {
                            let counts = cx
                                .state
                                .stats
                                .as_ref()
                                .map(|_| {
                                    format!(
                                        " · {} photos, {} individuals",
                                        cx.state.rows.len(),
                                        cx.state.individuals.len()
                                    )
                                })
                                .unwrap_or_else(|| " · opening…".into());
                            ui.label(format!("{}{counts}", path.display()));
                        }
                        None => {
                            ui.weak("no catalogue open");
                        }
                    }
                    if let Some(device) = &cx.state.device_label {
                        ui.separator();
                        ui.label(device);
                    }
                });
            });
        });
    }

    /// The latest notice; errors stay until dismissed, other notices until the next one.
    pub fn notices(&mut self, ui: &mut egui::Ui, cx: &mut ChromeContext<'_>) {
        let Some(notice) = cx.state.notices.last().cloned() else { return };
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
                    self.details = Some(notice.clone());
                }
                if ui.small_button("Dismiss").clicked() {
                    cx.state.notices.clear();
                }
            });
        });
    }

    pub fn windows(&mut self, ui: &mut egui::Ui, cx: &mut ChromeContext<'_>) {
        let ctx = ui.ctx().clone();
        let mut open = self.shortcuts;
        egui::Window::new("Keyboard shortcuts").open(&mut open).collapsible(false).show(&ctx, |ui| {
            egui::Grid::new("shortcuts_everywhere").striped(true).show(ui, |ui| {
                for (keys, what) in GLOBAL_SHORTCUTS {
                    ui.strong(*keys);
                    ui.label(*what);
                    ui.end_row();
                }
            });
            for p in cx.panels {
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
        self.shortcuts = open;
        self.settings_window(&ctx, cx);
        self.path_prompt_window(&ctx, cx);
        self.details_window(&ctx);
        self.save_finished_changes(&ctx, cx);
    }

    /// Settings apply at once (the threshold moves the candidates while it is dragged) and are
    /// written once the change is finished, by a job.
    fn settings_window(&mut self, ctx: &egui::Context, cx: &mut ChromeContext<'_>) {
        let mut open = self.settings;
        let before = open.then(|| cx.state.settings.clone());
        egui::Window::new("Settings").open(&mut open).collapsible(false).show(ctx, |ui| {
            let s = &mut cx.state.settings;
            // Typed values count when committed (Enter, or leaving the field), not per keystroke.
            ui.add(
                egui::Slider::new(&mut s.new_individual_threshold, 0.0..=1.0)
                    .text("New-individual threshold")
                    .update_while_editing(false),
            )
            .on_hover_text("Similarity below which a match is flagged as a possible new individual");
            ui.horizontal(|ui| {
                let l = ui.label("Thumbnail cache (MB)");
                ui.add(egui::DragValue::new(&mut s.thumbnail_cache_mb).range(16..=100_000).update_while_editing(false))
                    .labelled_by(l.id);
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
            let model = &cx.state.model;
            if let Some(gallery) = &model.gallery
                && let Some(t) = gallery.tuned_threshold
            {
                ui.weak(format!("This model has a tuned threshold, {t:.2}, which is used instead of the slider"));
            }
            // The backbone can be switched even when the catalogue's failed to load.
            if cx.state.stats.is_some()
                && let Some(backbone) = model.backbone
            {
                let speed = |c: &BackboneChoice| cx.state.settings.embed_ms_per_crop.get(&c.name).copied();
                let describe = |m: KnownModel| match model.choices.iter().find(|c| c.model == m) {
                    Some(c) => c.describe(speed(c)),
                    None => m.label().to_string(),
                };
                let mut chosen_backbone = backbone;
                ui.horizontal(|ui| {
                    let l = ui.label("Backbone (this catalogue)");
                    egui::ComboBox::from_id_salt("active_backbone")
                        .selected_text(describe(backbone))
                        .width(360.0)
                        .show_ui(ui, |ui| {
                            for c in &model.choices {
                                let usable = c.state != BackboneState::Unavailable;
                                ui.add_enabled_ui(usable, |ui| {
                                    ui.selectable_value(&mut chosen_backbone, c.model, c.describe(speed(c)));
                                });
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
                if chosen_backbone != backbone {
                    // An undoable edit of the catalogue; its embeddings follow in the background,
                    // the other backbones' are kept.
                    cx.out.push(Intent::Edit(CatalogueEdit::SetActiveBackbone(chosen_backbone)));
                }
            }
            if cx.state.stats.is_some() && model.embedder.is_some() {
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
                    cx.out.push(Intent::Edit(CatalogueEdit::SetActiveHead(chosen)));
                }
                ui.weak(format!("Embeddings: {}", cx.state.settings.model));
            }
            ui.weak(format!("Saved in {}", Settings::file(&cx.state.home).display()));
        });
        self.settings = open;
        if let Some(before) = before
            && cx.state.settings != before
        {
            self.settings_unsaved = true;
            if cx.state.settings.device != before.device {
                cx.out.push(Intent::LoadEmbedder);
            }
        }
    }

    /// A setting was changed (here or by a panel); it is written once the change is finished.
    pub fn settings_changed(&mut self) {
        self.settings_unsaved = true;
    }

    /// Writes the settings once a change is finished: a drag or a click is when the pointer is released.
    fn save_finished_changes(&mut self, ctx: &egui::Context, cx: &mut ChromeContext<'_>) {
        if self.settings_unsaved && !ctx.input(|i| i.pointer.any_down()) {
            self.settings_unsaved = false;
            cx.out.push(Intent::SaveSettings);
        }
    }

    fn path_prompt_window(&mut self, ctx: &egui::Context, cx: &mut ChromeContext<'_>) {
        if let Some((pick, mut text)) = self.path_prompt.take() {
            let mut keep = true;
            let (title, hint, action) = prompt_words(pick);
            egui::Modal::new(egui::Id::unique("path_prompt")).show(ctx, |ui| {
                ui.heading(title);
                let field = labelled_text(ui, "Path", &mut text, hint, 420.0);
                // The window is modal: typing always goes to its one field.
                field.request_focus();
                let enter = ui.input(|i| i.key_pressed(egui::Key::Enter));
                ui.horizontal(|ui| {
                    let path = PathBuf::from(text.trim());
                    let typed = !text.trim().is_empty();
                    if (ui.button(action).clicked() || enter) && typed {
                        cx.out.push(pick.intent(path.clone()));
                        keep = false;
                    }
                    if matches!(pick, Pick::OpenCatalogue) && ui.button("Create new").clicked() && typed {
                        cx.out.push(Intent::NewCatalogue(path));
                        keep = false;
                    }
                    if ui.button("Cancel").clicked() || ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                        keep = false;
                    }
                });
            });
            if keep {
                self.path_prompt = Some((pick, text));
            } else if let Some(focused) = ctx.memory(|m| m.focused()) {
                // Enter would otherwise leave focus on whatever widget egui moves it to, and a
                // focused button or combo box would take the next Enter meant for the review.
                ctx.memory_mut(|m| m.surrender_focus(focused));
            }
        }
    }

    fn details_window(&mut self, ctx: &egui::Context) {
        if let Some(notice) = self.details.clone() {
            let mut open = true;
            egui::Window::new("Details").open(&mut open).show(ctx, |ui| {
                ui.label(&notice.text);
                ui.separator();
                egui::ScrollArea::vertical().max_height(400.0).show(ui, |ui| {
                    for line in &notice.details {
                        ui.label(line);
                    }
                });
            });
            if !open {
                self.details = None;
            }
        }
    }
}
