//! Individuals: every known animal, and for the one chosen all its crops with their sighting
//! dates; rename it, merge another into it, split chosen crops off into a new individual.

use std::collections::BTreeSet;

use eframe::egui;

use super::{Panel, PanelContext};
use crate::app::images::ImageRequest;
use crate::app::messages::{CatalogueEdit, Event, Intent, Notice, PanelId};
use crate::app::records::SightingHistory;
use crate::app::widgets::{accessible_label, labelled_text, paint_picture, submitted};
use crate::base::ids::{AnnotationId, IndividualId};

const TILE: egui::Vec2 = egui::vec2(150.0, 140.0);
const THUMB_HEIGHT: f32 = 104.0;

#[derive(Default)]
pub struct IndividualsPanel {
    find: String,
    /// Indices into `state.individuals` passing `find`.
    listed: Vec<usize>,
    listed_for: Option<(u64, String)>,
    current: Option<IndividualId>,
    history: Option<SightingHistory>,
    gone: bool,
    /// Annotations chosen in the gallery (for a split).
    chosen: BTreeSet<AnnotationId>,
    name: String,
    /// The name as the catalogue last said; the field follows it (after an undo) unless the
    /// user is typing a new one.
    stored_name: String,
    merge_with: String,
}

impl IndividualsPanel {
    pub fn current(&self) -> Option<IndividualId> {
        self.current
    }

    fn open(&mut self, id: IndividualId, cx: &mut PanelContext<'_>) {
        if self.current != Some(id) {
            self.history = None;
            self.chosen.clear();
            self.merge_with.clear();
            self.name = cx.state.individual(id).map(|i| i.individual.name.clone()).unwrap_or_default();
            self.stored_name = self.name.clone();
        }
        self.current = Some(id);
        self.gone = false;
        cx.send(Intent::WatchSightings(Some(id)));
    }

    fn relist(&mut self, cx: &PanelContext<'_>) {
        let key = (cx.state.individuals_generation, self.find.clone());
        if self.listed_for.as_ref() == Some(&key) {
            return;
        }
        let text = self.find.trim().to_lowercase();
        self.listed = cx
            .state
            .individuals
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                text.is_empty()
                    || i.individual.code.to_lowercase().contains(&text)
                    || i.individual.name.to_lowercase().contains(&text)
            })
            .map(|(k, _)| k)
            .collect();
        self.listed_for = Some(key);
    }

    fn list_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        ui.heading(format!("{} individuals", cx.state.individuals.len()));
        let field = labelled_text(ui, "Find individual", &mut self.find, "code or name", 160.0);
        self.relist(cx);
        if submitted(ui, &field)
            && let Some(&first) = self.listed.first()
        {
            let id = cx.state.individuals[first].individual.id;
            self.open(id, cx);
        }
        ui.separator();
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
        let mut open = None;
        egui::ScrollArea::vertical().auto_shrink([false, false]).show_rows(
            ui,
            row_height,
            self.listed.len(),
            |ui, range| {
                for k in range {
                    let row = &cx.state.individuals[self.listed[k]];
                    let selected = self.current == Some(row.individual.id);
                    let text = format!("{}  ·  {} sighting(s)", row.label(), row.sightings);
                    if ui.selectable_label(selected, text).clicked() {
                        open = Some(row.individual.id);
                    }
                }
            },
        );
        if let Some(id) = open {
            self.open(id, cx);
        }
    }

    fn gallery_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let Some(id) = self.current else {
            ui.label("Choose an individual on the left.");
            return;
        };
        if self.gone {
            ui.label("This individual is no longer in the catalogue (merged or undone).");
            return;
        }
        let Some(row) = cx.state.individual(id) else {
            ui.spinner();
            return;
        };
        ui.heading(row.label());
        let species = row.individual.species.as_deref().unwrap_or("species not recorded");
        let seen = match (&row.first_seen, &row.last_seen) {
            (Some(a), Some(b)) => format!(", first {} last {}", &a[..a.len().min(10)], &b[..b.len().min(10)]),
            _ => String::new(),
        };
        ui.label(format!("{species} · {} sighting(s){seen}", row.sightings));
        ui.horizontal(|ui| {
            let field = labelled_text(ui, "Name", &mut self.name, "a name for this animal", 160.0);
            if ui.button("Rename").clicked() || submitted(ui, &field) {
                cx.send(Intent::Edit(CatalogueEdit::Rename { individual: id, name: self.name.clone() }));
            }
        });
        ui.horizontal(|ui| {
            let field = labelled_text(ui, "Merge with", &mut self.merge_with, "another individual's code", 160.0);
            let hint = format!(
                "Moves every sighting of that individual to {} and removes it (Ctrl+Z undoes)",
                row.individual.code
            );
            if ui.button("Merge").on_hover_text(hint).clicked() || submitted(ui, &field) {
                match cx.state.find_individual(&self.merge_with) {
                    Ok(other) if other.individual.id == id => {
                        cx.send(Intent::Notify(Notice::error("An individual cannot be merged with itself")));
                    }
                    Ok(other) => {
                        let absorbed = other.individual.id;
                        cx.send(Intent::Edit(CatalogueEdit::Merge { kept: id, absorbed }));
                        self.merge_with.clear();
                    }
                    Err(e) => cx.send(Intent::Notify(Notice::error(e))),
                }
            }
        });
        ui.horizontal(|ui| {
            ui.label(format!("{} crop(s) chosen", self.chosen.len()));
            let can_split = !self.chosen.is_empty();
            if ui
                .add_enabled(can_split, egui::Button::new("Split into a new individual"))
                .on_hover_text("The chosen crops are another animal: give them a new individual")
                .clicked()
            {
                let annotations: Vec<AnnotationId> = self.chosen.iter().copied().collect();
                cx.send(Intent::Edit(CatalogueEdit::Split { annotations }));
                self.chosen.clear();
            }
        });
        let Some(history) = &self.history else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading sightings…");
            });
            return;
        };
        let dates = history.dates();
        if !dates.is_empty() {
            ui.add(egui::Label::new(format!("Seen on {} day(s): {}", dates.len(), dates.join(", "))).wrap());
        }
        ui.separator();
        let spacing = ui.spacing().item_spacing;
        let columns = (((ui.available_width() + spacing.x) / (TILE.x + spacing.x)).floor() as usize).max(1);
        let n = history.sightings.len();
        let mut toggled = None;
        let mut open_photo = None;
        egui::ScrollArea::vertical().auto_shrink([false, false]).show_rows(
            ui,
            TILE.y,
            n.div_ceil(columns),
            |ui, range| {
                for r in range {
                    ui.horizontal(|ui| {
                        for c in 0..columns {
                            let Some(s) = history.sightings.get(r * columns + c) else { break };
                            let chosen = self.chosen.contains(&s.annotation.id);
                            let (rect, response) = ui.allocate_exact_size(TILE, egui::Sense::click());
                            let name =
                                s.photo.stored_path.rsplit('/').next().unwrap_or(&s.photo.stored_path).to_string();
                            let date =
                                s.photo.facts.taken_at.as_deref().map(|d| &d[..d.len().min(10)]).unwrap_or("no date");
                            let visible = ui.is_rect_visible(rect);
                            let request = ImageRequest::thumbnail(&s.photo.facts.hash, &s.file, s.annotation.bbox);
                            let picture = visible.then(|| cx.images.get(&request));
                            let label = accessible_label(&format!("{name} {date}"), picture.as_ref());
                            response
                                .widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, true, chosen, &label));
                            if let Some(picture) = picture {
                                let visuals = ui.visuals().clone();
                                if chosen {
                                    ui.painter().rect_filled(rect, 4.0, visuals.selection.bg_fill);
                                }
                                let thumb = egui::Rect::from_min_size(
                                    rect.min + egui::vec2(4.0, 4.0),
                                    egui::vec2(TILE.x - 8.0, THUMB_HEIGHT),
                                );
                                paint_picture(ui, thumb, picture, &name);
                                let font = egui::FontId::proportional(11.5);
                                let color = if chosen { visuals.selection.stroke.color } else { visuals.text_color() };
                                let painter = ui.painter_at(rect);
                                painter.text(
                                    thumb.left_bottom() + egui::vec2(0.0, 4.0),
                                    egui::Align2::LEFT_TOP,
                                    date,
                                    font.clone(),
                                    color,
                                );
                                painter.text(
                                    thumb.left_bottom() + egui::vec2(0.0, 18.0),
                                    egui::Align2::LEFT_TOP,
                                    &name,
                                    font,
                                    color,
                                );
                            }
                            if response.double_clicked() {
                                open_photo = Some(s.photo.id);
                            } else if response.clicked() {
                                toggled = Some(s.annotation.id);
                            }
                            response.on_hover_text("Click to choose for a split; double-click to annotate the photo");
                        }
                    });
                }
            },
        );
        if let Some(a) = toggled
            && !self.chosen.remove(&a)
        {
            self.chosen.insert(a);
        }
        if let Some(p) = open_photo {
            cx.send(Intent::OpenPhoto(p));
        }
    }
}

impl Panel for IndividualsPanel {
    fn id(&self) -> PanelId {
        PanelId::INDIVIDUALS
    }

    fn title(&self) -> &'static str {
        "Individuals"
    }

    fn shortcuts(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("Enter in Find individual", "open the first match"),
            ("Click a crop", "choose it for a split"),
            ("Double-click a crop", "annotate its photo"),
        ]
    }

    fn on_event(&mut self, event: &Event, _cx: &mut PanelContext<'_>) {
        match event {
            Event::Opened { .. } => *self = IndividualsPanel::default(),
            Event::Sightings { id, history } if Some(*id) == self.current => match history {
                Some(g) => {
                    let live: BTreeSet<AnnotationId> = g.sightings.iter().map(|s| s.annotation.id).collect();
                    self.chosen.retain(|a| live.contains(a));
                    if self.name == self.stored_name {
                        self.name = g.individual.name.clone();
                    }
                    self.stored_name = g.individual.name.clone();
                    self.history = Some((**g).clone());
                    self.gone = false;
                }
                None => {
                    self.history = None;
                    self.gone = true;
                }
            },
            _ => {}
        }
    }

    fn on_intent(&mut self, intent: &Intent, cx: &mut PanelContext<'_>) {
        if let Intent::OpenIndividual(id) = intent {
            self.open(*id, cx);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        if self.current.is_none()
            && let Some(first) = cx.state.individuals.first()
        {
            let id = first.individual.id;
            self.open(id, cx);
        }
        egui::Panel::left("individuals_list").default_size(280.0).show(ui, |ui| self.list_ui(ui, cx));
        egui::CentralPanel::default().show(ui, |ui| self.gallery_ui(ui, cx));
    }
}
