//! Train: a guided run of `train::train_catalogue` on the catalogue's own labelled crops (the
//! split by individual is done for the user). What will be trained on, the mode (the head on
//! the frozen backbone, or with its last blocks, or all of it), loss, epochs and learning rate; Start and Cancel; the loss and the
//! validation MAP@5 drawn live with the time left. A run that ends is activated as the
//! catalogue's model (one undoable edit), and the embeddings are recomputed in the background.

use std::path::PathBuf;

use eframe::egui;

use super::{Panel, PanelContext};
use crate::app::messages::{Event, Intent, PanelId};
use crate::app::widgets::model_status_ui;
use crate::jobs::train::{LossConfig, Mode, TrainConfig, TrainEvent};

const LOSSES: [(&str, &str); 4] = [
    ("ArcFace", "additive angular margin; the seed pipelines' classifier loss"),
    ("Sub-center ArcFace", "two centres per individual, dynamic margins (Happywhale 2022 winner)"),
    ("Proxy-Anchor", "one proxy per individual; beat ArcFace on humpbacks in the seed pipeline"),
    ("Batch-hard triplet", "no classifier: hardest positive and negative in each batch"),
];

fn loss_index(loss: &LossConfig) -> usize {
    match loss {
        LossConfig::ArcFace(_) => 0,
        LossConfig::SubCenterArcFace(_) => 1,
        LossConfig::ProxyAnchor(_) => 2,
        LossConfig::Triplet(_) => 3,
    }
}

fn loss_of(index: usize) -> LossConfig {
    match index {
        1 => LossConfig::SubCenterArcFace(Default::default()),
        2 => LossConfig::ProxyAnchor(Default::default()),
        3 => LossConfig::Triplet(Default::default()),
        _ => LossConfig::ArcFace(Default::default()),
    }
}

/// What a run has reported so far.
#[derive(Default)]
pub struct Curves {
    /// (step since the start, loss)
    pub loss: Vec<[f64; 2]>,
    /// (epoch, validation MAP@5); epoch 0 is before training.
    pub map5: Vec<[f64; 2]>,
    pub steps_per_epoch: usize,
    pub epoch: usize,
    pub epochs: usize,
    pub eta_seconds: Option<f64>,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// The validated run is over and the model is being trained again on every individual.
    refitting: bool,
}

impl Curves {
    fn take(&mut self, event: &TrainEvent) {
        match *event {
            TrainEvent::Started {
                train_crops,
                classes,
                validation_crops,
                validation_individuals,
                steps_per_epoch,
                ..
            } => {
                self.steps_per_epoch = steps_per_epoch;
                self.started = Some(format!(
                    "training on {train_crops} crop(s) of {classes} individual(s); validating on \
                     {validation_crops} crop(s) of {validation_individuals} individual(s) never trained on"
                ));
            }
            // A refit's steps would draw over the validated run's curve.
            TrainEvent::Step { .. } if self.refitting => {}
            TrainEvent::Step { epoch, step, steps, loss, .. } => {
                self.steps_per_epoch = steps;
                let x = epoch.saturating_sub(1) * steps + step;
                self.loss.push([x as f64, loss]);
            }
            TrainEvent::Epoch { epoch, epochs, ref validation, eta_seconds, .. } => {
                self.epoch = epoch;
                self.epochs = epochs;
                self.eta_seconds = Some(eta_seconds);
                self.map5.push([epoch as f64, validation.closed_set.map5]);
            }
            TrainEvent::Finished { best_epoch, best_map5, stopped_early, .. } => {
                self.finished = Some(format!(
                    "best validation MAP@5 {best_map5:.3} at epoch {best_epoch}{}",
                    if stopped_early { " (stopped early: no better for a while)" } else { "" }
                ));
                self.eta_seconds = None;
            }
            TrainEvent::Refitting(ref refit) => {
                self.refitting = true;
                if let Some(finished) = &mut self.finished {
                    finished.push_str(&format!(
                        "; the model kept is trained again on all {} individuals for {} epoch(s)",
                        refit.individuals, refit.epochs
                    ));
                }
            }
        }
    }
}

#[derive(Default)]
pub struct TrainPanel {
    config: TrainConfig,
    curves: Curves,
    /// The output folder of the run shown, running or ended.
    shown_run: Option<PathBuf>,
}

impl TrainPanel {
    fn start(&mut self, cx: &mut PanelContext<'_>) {
        self.curves = Curves::default();
        self.shown_run = None;
        cx.send(Intent::Train(Box::new(self.config.clone())));
    }

    fn settings_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let running = cx.state.training.is_some();
        ui.heading("Train");
        if let Some(data) = &cx.state.model.gallery {
            let labelled = data.labelled();
            ui.label(format!(
                "{} labelled crop(s) of {} individual(s), {} of them seen more than once. \
                 A share of {:.0}% of the individuals is held out to validate on (split by individual, done for you).",
                labelled.crops,
                labelled.individuals,
                labelled.seen_more_than_once,
                self.config.validation_fraction * 100.0
            ));
        }
        ui.label(format!(
            "Model in use: {}",
            cx.state.model.head.as_ref().map(|h| h.display().to_string()).unwrap_or_else(|| "untrained head".into())
        ));
        ui.separator();
        ui.add_enabled_ui(!running, |ui| {
            egui::Grid::new("train_settings").num_columns(2).show(ui, |ui| {
                let label = ui.label("Mode");
                ui.horizontal(|ui| {
                    let mode = &mut self.config.mode;
                    let blocks = match *mode {
                        Mode::LastBlocks(n) => n,
                        _ => 2,
                    };
                    let combo = egui::ComboBox::from_id_salt("mode").selected_text(mode_name(mode)).show_ui(ui, |ui| {
                        for (choice, why) in [
                            (Mode::Head, "pooling + neck on cached tokens of the frozen backbone: minutes on a laptop"),
                            (
                                Mode::LastBlocks(blocks),
                                "also the last blocks of the backbone, on cached inputs to them",
                            ),
                            (Mode::Full, "everything, end to end from augmented photos: meant for a GPU"),
                        ] {
                            ui.selectable_value(mode, choice, mode_name(&choice)).on_hover_text(why);
                        }
                    });
                    combo.response.labelled_by(label.id);
                    if let Mode::LastBlocks(n) = mode {
                        ui.add(egui::DragValue::new(n).range(1..=12).suffix(" block(s)")).labelled_by(label.id);
                    }
                    let on_cpu = cx.state.model.embedder.as_ref().is_none_or(|e| !e.device().is_cuda());
                    if *mode == Mode::Full && on_cpu {
                        ui.colored_label(ui.visuals().warn_fg_color, "on this CPU an epoch takes long");
                    }
                });
                ui.end_row();
                let label = ui.label("Loss");
                let mut index = loss_index(&self.config.loss);
                let combo = egui::ComboBox::from_id_salt("loss").selected_text(LOSSES[index].0).show_ui(ui, |ui| {
                    for (k, (name, why)) in LOSSES.iter().enumerate() {
                        ui.selectable_value(&mut index, k, *name).on_hover_text(*why);
                    }
                });
                combo.response.labelled_by(label.id);
                if index != loss_index(&self.config.loss) {
                    self.config.loss = loss_of(index);
                }
                ui.end_row();
                let label = ui.label("Epochs");
                ui.add(egui::DragValue::new(&mut self.config.epochs).range(1..=500)).labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Learning rate");
                ui.add(
                    egui::DragValue::new(&mut self.config.learning_rate).range(1e-6..=1.0).speed(1e-4).max_decimals(6),
                )
                .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Views per crop");
                ui.add_enabled_ui(self.config.mode != Mode::Full, |ui| {
                    let views = egui::DragValue::new(&mut self.config.views)
                        .range(0..=16)
                        .custom_formatter(|v, _| if v == 0.0 { "auto".into() } else { format!("{v}") })
                        .custom_parser(|text| match text.trim() {
                            "auto" => Some(0.0),
                            other => other.parse().ok(),
                        });
                    ui.add(views)
                        .labelled_by(label.id)
                        .on_hover_text(
                            "the crop and augmented copies of it (reframed, turned, relit), cached once: \
                             more views teach what stays the same of an individual, at one backbone pass each; \
                             auto: as many as fit 4,000 cached views, at most 4",
                        )
                        .on_disabled_hover_text("full training augments every step");
                });
                ui.end_row();
            });
        });
        ui.horizontal(|ui| {
            let ready = cx.state.model.embedder.is_some() && cx.state.stats.is_some();
            if ui.add_enabled(ready && !running, egui::Button::new("Start training")).clicked() {
                self.start(cx);
            }
            if let Some(run) = &cx.state.training {
                let label = if run.stopping { "Stopping…" } else { "Cancel training" };
                if ui.add_enabled(!run.stopping, egui::Button::new(label)).clicked() {
                    cx.send(Intent::CancelTraining);
                }
            }
        });
    }

    fn progress_ui(&mut self, ui: &mut egui::Ui, cx: &PanelContext<'_>) {
        let c = &self.curves;
        if let Some(s) = &c.started {
            ui.label(s);
        }
        if let Some(out) = &self.shown_run {
            let state = if cx.state.training.is_none() {
                c.finished.clone().unwrap_or_else(|| "ended".into())
            } else {
                let eta = c.eta_seconds.map(|s| format!(" · about {} left", duration_words(s))).unwrap_or_default();
                format!("Training · epoch {} of {}{eta}", c.epoch, c.epochs.max(self.config.epochs))
            };
            ui.strong(state);
            ui.weak(format!("Output: {}", out.display()));
        }
        let height = ((ui.available_height() - 40.0) / 2.0).max(120.0);
        ui.label("Loss (each step)");
        line_chart(ui, "Training loss", &c.loss, height, egui::Color32::from_rgb(240, 170, 60));
        ui.label("Validation MAP@5 (each epoch; 0 is before training)");
        line_chart(ui, "Validation MAP@5", &c.map5, height, egui::Color32::from_rgb(90, 190, 110));
    }
}

fn mode_name(mode: &Mode) -> &'static str {
    match mode {
        Mode::Head => "Head",
        Mode::LastBlocks(_) => "Last blocks",
        Mode::Full => "Full (GPU)",
    }
}

fn duration_words(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// A line over `points` scaled to fit, with its range written at the corners.
pub fn line_chart(ui: &mut egui::Ui, name: &str, points: &[[f64; 2]], height: f32, color: egui::Color32) {
    let (rect, response) = ui.allocate_exact_size(egui::vec2(ui.available_width(), height), egui::Sense::hover());
    let last = points.last().map(|p| format!(", last {:.4}", p[1])).unwrap_or_default();
    response.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Canvas, true, format!("{name}: {} point(s){last}", points.len()))
    });
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    let finite: Vec<[f64; 2]> = points.iter().copied().filter(|p| p[0].is_finite() && p[1].is_finite()).collect();
    if finite.is_empty() {
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "no data yet",
            egui::FontId::proportional(12.0),
            ui.visuals().weak_text_color(),
        );
        return;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for p in &finite {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let inner = rect.shrink2(egui::vec2(44.0, 12.0));
    let to_screen = |p: [f64; 2]| {
        egui::pos2(
            inner.left() + ((p[0] - x0) / (x1 - x0)) as f32 * inner.width(),
            inner.bottom() - ((p[1] - y0) / (y1 - y0)) as f32 * inner.height(),
        )
    };
    // At most one vertex per horizontal point: long runs stay cheap to draw.
    let stride = (finite.len() / inner.width().max(1.0) as usize).max(1);
    let line: Vec<egui::Pos2> = finite.iter().step_by(stride).map(|p| to_screen(*p)).collect();
    if line.len() == 1 {
        painter.circle_filled(line[0], 3.0, color);
    } else {
        painter.add(egui::Shape::line(line, egui::Stroke::new(1.5, color)));
    }
    let font = egui::FontId::proportional(11.0);
    let weak = ui.visuals().weak_text_color();
    painter.text(
        rect.left_top() + egui::vec2(4.0, 2.0),
        egui::Align2::LEFT_TOP,
        format!("{y1:.3}"),
        font.clone(),
        weak,
    );
    painter.text(
        rect.left_bottom() + egui::vec2(4.0, -2.0),
        egui::Align2::LEFT_BOTTOM,
        format!("{y0:.3}"),
        font.clone(),
        weak,
    );
    painter.text(
        rect.right_bottom() + egui::vec2(-4.0, -2.0),
        egui::Align2::RIGHT_BOTTOM,
        format!("{x1:.0}"),
        font,
        weak,
    );
}

impl Panel for TrainPanel {
    fn id(&self) -> PanelId {
        PanelId::TRAIN
    }

    fn title(&self) -> &'static str {
        "Train"
    }

    fn update(&mut self, cx: &mut PanelContext<'_>) {
        if let Some(run) = &cx.state.training
            && self.shown_run.as_ref() != Some(&run.out)
        {
            self.shown_run = Some(run.out.clone());
        }
    }

    fn on_event(&mut self, event: &Event, _cx: &mut PanelContext<'_>) {
        if let Event::Training(event) = event {
            self.curves.take(event);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        egui::Panel::left("train_settings_side").default_size(360.0).show(ui, |ui| {
            if model_status_ui(ui, &cx.state.model, cx.out) || cx.state.model.embedder.is_some() {
                self.settings_ui(ui, cx);
            }
        });
        egui::CentralPanel::default().show(ui, |ui| self.progress_ui(ui, cx));
    }
}
