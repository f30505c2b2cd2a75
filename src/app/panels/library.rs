//! The library: every photo of the catalogue as a virtualised thumbnail grid (only the rows
//! on screen are laid out, so 100,000 photos scroll like 100), with filters, sorting,
//! multi-select and bulk review, assignment and tagging.

use std::collections::{BTreeSet, HashMap, HashSet};

use eframe::egui;

use super::{Panel, PanelContext};
use crate::app::images::ImageRequest;
use crate::app::messages::{CatalogueEdit, Intent, Notice, PanelId};
use crate::app::records::PhotoRow;
use crate::app::state::AppState;
use crate::app::widgets::{accessible_label, labelled_text, paint_picture, submitted};
use crate::base::ids::{IndividualId, PhotoId};
use crate::base::vocabulary::{Hundredths, Part, Status};

const TILE: egui::Vec2 = egui::vec2(168.0, 162.0);
const THUMB_HEIGHT: f32 = 124.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReviewFilter {
    #[default]
    Any,
    Unreviewed,
    AllVerified,
    HasRejected,
    NoBoxes,
}

impl ReviewFilter {
    const ALL: [ReviewFilter; 5] = [
        ReviewFilter::Any,
        ReviewFilter::Unreviewed,
        ReviewFilter::AllVerified,
        ReviewFilter::HasRejected,
        ReviewFilter::NoBoxes,
    ];

    fn label(self) -> &'static str {
        match self {
            ReviewFilter::Any => "any",
            ReviewFilter::Unreviewed => "has unreviewed boxes",
            ReviewFilter::AllVerified => "all boxes verified",
            ReviewFilter::HasRejected => "has rejected boxes",
            ReviewFilter::NoBoxes => "no annotation",
        }
    }

    fn keeps(self, r: &PhotoRow) -> bool {
        match self {
            ReviewFilter::Any => true,
            ReviewFilter::Unreviewed => r.unreviewed > 0,
            ReviewFilter::AllVerified => r.annotations > 0 && r.verified == r.annotations,
            ReviewFilter::HasRejected => r.rejected > 0,
            ReviewFilter::NoBoxes => r.annotations == 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Imported,
    DateTaken,
    FileName,
    MostUnreviewed,
    /// Photos with the lowest-scoring proposal first (those shown at the threshold); photos
    /// without one after them, in import order.
    DoubtfulFirst,
}

impl SortBy {
    const ALL: [SortBy; 5] =
        [SortBy::Imported, SortBy::DateTaken, SortBy::FileName, SortBy::MostUnreviewed, SortBy::DoubtfulFirst];

    fn label(self) -> &'static str {
        match self {
            SortBy::Imported => "import order",
            SortBy::DateTaken => "date taken",
            SortBy::FileName => "file name",
            SortBy::MostUnreviewed => "most unreviewed first",
            SortBy::DoubtfulFirst => "doubtful proposals first (lowest score)",
        }
    }
}

/// Which photos the grid shows, and in what order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhotoQuery {
    pub review: ReviewFilter,
    /// Code or name, any part of it.
    pub individual: String,
    pub species: Option<String>,
    pub part: Option<Part>,
    pub has_box: Option<bool>,
    /// `YYYY-MM-DD` (or any prefix of it); inclusive.
    pub from: String,
    pub to: String,
    pub tag: String,
    pub file: String,
    pub sort: SortBy,
    /// Only these photos (a selection made on the map); shown above the filters while set.
    pub only: Option<std::sync::Arc<BTreeSet<PhotoId>>>,
}

impl PhotoQuery {
    /// The indices of the rows that pass, sorted.
    pub fn apply(&self, state: &AppState) -> Vec<usize> {
        let wanted_individuals: Option<HashSet<IndividualId>> = {
            let text = self.individual.trim().to_lowercase();
            (!text.is_empty()).then(|| {
                state
                    .individuals
                    .iter()
                    .filter(|i| {
                        i.individual.code.to_lowercase().contains(&text)
                            || i.individual.name.to_lowercase().contains(&text)
                    })
                    .map(|i| i.individual.id)
                    .collect()
            })
        };
        let file = self.file.trim().to_lowercase();
        let tag = self.tag.trim().to_lowercase();
        let (from, to) = (self.from.trim(), self.to.trim());
        let mut out: Vec<usize> = state
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                self.review.keeps(r)
                    && wanted_individuals.as_ref().is_none_or(|w| r.individuals.iter().any(|i| w.contains(i)))
                    && self.species.as_ref().is_none_or(|s| r.species.contains(s))
                    && self.part.is_none_or(|p| r.parts.contains(&p))
                    && self.has_box.is_none_or(|b| (r.boxes > 0) == b)
                    && (from.is_empty() || r.date().is_some_and(|d| d >= from))
                    && (to.is_empty() || r.date().is_some_and(|d| d.get(..to.len()).unwrap_or(d) <= to))
                    && (tag.is_empty() || r.tags.iter().any(|t| t.to_lowercase().contains(&tag)))
                    && (file.is_empty() || r.stored_path.to_lowercase().contains(&file))
                    && self.only.as_ref().is_none_or(|only| only.contains(&r.id))
            })
            .map(|(i, _)| i)
            .collect();
        let rows = &state.rows;
        match self.sort {
            SortBy::Imported => {}
            SortBy::DateTaken => out.sort_by(|&a, &b| rows[a].taken_at.cmp(&rows[b].taken_at)),
            SortBy::FileName => out.sort_by(|&a, &b| rows[a].file_name().cmp(rows[b].file_name())),
            SortBy::MostUnreviewed => out.sort_by(|&a, &b| rows[b].unreviewed.cmp(&rows[a].unreviewed)),
            SortBy::DoubtfulFirst => {
                let threshold = state.settings.proposal_threshold();
                let doubt: HashMap<usize, f64> =
                    out.iter().filter_map(|&i| Some((i, rows[i].most_doubtful(threshold)?))).collect();
                out.sort_by(|a, b| match (doubt.get(a), doubt.get(b)) {
                    (Some(x), Some(y)) => x.total_cmp(y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                });
            }
        }
        out
    }
}

#[derive(Default)]
pub struct LibraryPanel {
    pub query: PhotoQuery,
    /// Indices into `state.rows` of the photos shown, in order.
    visible: Vec<usize>,
    /// What `visible` was computed for: rows, individuals, the query and the proposal threshold.
    shown_for: Option<(u64, u64, PhotoQuery, Hundredths)>,
    species: Vec<String>,
    selected: BTreeSet<PhotoId>,
    /// Where a shift-click range starts (an index into `visible`).
    anchor: Option<usize>,
    assign_to: String,
    tag: String,
    scroll_to: Option<usize>,
}

impl LibraryPanel {
    fn refilter(&mut self, cx: &mut PanelContext<'_>) {
        let state = cx.state;
        let threshold = state.settings.proposal_threshold();
        let key = (state.rows_generation, state.individuals_generation, self.query.clone(), threshold);
        if self.shown_for.as_ref() == Some(&key) {
            return;
        }
        let rows_changed = self.shown_for.as_ref().is_none_or(|k| k.0 != key.0);
        self.visible = self.query.apply(state);
        if rows_changed {
            let all: BTreeSet<&String> = state.rows.iter().flat_map(|r| &r.species).collect();
            self.species = all.into_iter().cloned().collect();
            let live: HashSet<PhotoId> = state.rows.iter().map(|r| r.id).collect();
            self.selected.retain(|id| live.contains(id));
        }
        self.shown_for = Some(key);
        let queue: Vec<PhotoId> = self.visible.iter().map(|&i| state.rows[i].id).collect();
        if queue != state.queue {
            cx.send(Intent::SetQueue(queue));
        }
    }

    fn selection(&self) -> Vec<PhotoId> {
        self.selected.iter().copied().collect()
    }

    fn filters_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let f = &mut self.query;
        ui.heading("Filters");
        if let Some(n) = f.only.as_ref().map(|only| only.len()) {
            ui.horizontal_wrapped(|ui| {
                ui.strong(format!("Only the {n} photo(s) chosen on the map"));
                if ui.small_button("Show all").clicked() {
                    f.only = None;
                }
            });
        }
        egui::ComboBox::from_label("Review").selected_text(f.review.label()).show_ui(ui, |ui| {
            for r in ReviewFilter::ALL {
                ui.selectable_value(&mut f.review, r, r.label());
            }
        });
        labelled_text(ui, "Individual", &mut f.individual, "code or name", 150.0);
        let matches: Vec<_> = {
            let text = f.individual.trim();
            if text.is_empty() { Vec::new() } else { cx.state.find_individual(text).into_iter().collect() }
        };
        if let [one] = matches.as_slice()
            && ui.small_button(format!("Open {} in Individuals", one.individual.code)).clicked()
        {
            cx.out.push(Intent::OpenIndividual(one.individual.id));
        }
        egui::ComboBox::from_label("Species").selected_text(f.species.as_deref().unwrap_or("any")).show_ui(ui, |ui| {
            ui.selectable_value(&mut f.species, None, "any");
            for s in &self.species {
                ui.selectable_value(&mut f.species, Some(s.clone()), s);
            }
        });
        egui::ComboBox::from_label("Part").selected_text(f.part.map(|p| p.as_str()).unwrap_or("any")).show_ui(
            ui,
            |ui| {
                ui.selectable_value(&mut f.part, None, "any");
                for p in Part::ALL {
                    ui.selectable_value(&mut f.part, Some(*p), p.as_str());
                }
            },
        );
        egui::ComboBox::from_label("Box")
            .selected_text(match f.has_box {
                None => "any",
                Some(true) => "has a box",
                Some(false) => "no box",
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut f.has_box, None, "any");
                ui.selectable_value(&mut f.has_box, Some(true), "has a box");
                ui.selectable_value(&mut f.has_box, Some(false), "no box");
            });
        labelled_text(ui, "Taken from", &mut f.from, "YYYY-MM-DD", 110.0);
        labelled_text(ui, "Taken to", &mut f.to, "YYYY-MM-DD", 110.0);
        labelled_text(ui, "Tag", &mut f.tag, "any tag", 150.0);
        labelled_text(ui, "File", &mut f.file, "part of the path", 150.0);
        egui::ComboBox::from_label("Sort").selected_text(f.sort.label()).show_ui(ui, |ui| {
            for s in SortBy::ALL {
                ui.selectable_value(&mut f.sort, s, s.label());
            }
        });
        if ui.button("Clear filters").clicked() {
            self.query = PhotoQuery { sort: self.query.sort, ..PhotoQuery::default() };
        }
    }

    fn actions_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("{} of {} photos", self.visible.len(), cx.state.rows.len()));
            ui.separator();
            let n = self.selected.len();
            ui.label(format!("{n} selected"));
            ui.add_enabled_ui(n > 0, |ui| {
                for (label, status) in
                    [("Verify", Status::Verified), ("Reject", Status::Rejected), ("Reopen", Status::Unreviewed)]
                {
                    if ui.button(label).on_hover_text(format!("{label} every box of the selected photos")).clicked() {
                        let photos = self.selection();
                        cx.send(Intent::Edit(CatalogueEdit::SetStatusOfPhotos { photos, status }));
                    }
                }
                ui.separator();
                let field = labelled_text(ui, "Assign to", &mut self.assign_to, "individual code", 110.0);
                if ui.button("Assign").clicked() || submitted(ui, &field) {
                    match cx.state.find_individual(&self.assign_to) {
                        Ok(ind) => {
                            let edit =
                                CatalogueEdit::AssignPhotos { photos: self.selection(), individual: ind.individual.id };
                            cx.out.push(Intent::Edit(edit));
                        }
                        Err(e) => cx.out.push(Intent::Notify(Notice::error(e))),
                    }
                }
                ui.separator();
                let field = labelled_text(ui, "Tag with", &mut self.tag, "tag", 90.0);
                if ui.button("Tag").clicked() || submitted(ui, &field) {
                    let edit = CatalogueEdit::Tag { photos: self.selection(), tag: self.tag.clone() };
                    cx.out.push(Intent::Edit(edit));
                }
                ui.separator();
                if ui.button("Annotate selected").on_hover_text("Open the first selected photo (Enter)").clicked()
                    && let Some(&first) = self.selected.first()
                {
                    cx.out.push(Intent::OpenPhoto(first));
                }
            });
            if ui.button("Select all").on_hover_text("Ctrl+A").clicked() {
                self.select_all(cx.state);
            }
        });
    }

    fn select_all(&mut self, state: &AppState) {
        self.selected = self.visible.iter().map(|&i| state.rows[i].id).collect();
    }

    fn keys(&mut self, ui: &egui::Ui, cx: &mut PanelContext<'_>) {
        if !cx.keys {
            return;
        }
        let (all, clear, open) = ui.input_mut(|i| {
            (
                i.consume_key(egui::Modifiers::COMMAND, egui::Key::A),
                i.consume_key(egui::Modifiers::NONE, egui::Key::Escape),
                i.consume_key(egui::Modifiers::NONE, egui::Key::Enter),
            )
        });
        if all {
            self.select_all(cx.state);
        }
        if clear {
            self.selected.clear();
        }
        if open && let Some(&first) = self.selected.first() {
            cx.out.push(Intent::OpenPhoto(first));
        }
    }

    fn grid_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        if !cx.state.library_loaded {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reading the catalogue…");
            });
            return;
        }
        if self.visible.is_empty() {
            ui.label(if cx.state.rows.is_empty() {
                "This catalogue has no photos yet. File > Import a photo folder… adds them."
            } else {
                "No photo passes these filters."
            });
            return;
        }
        let spacing = ui.spacing().item_spacing;
        let columns = (((ui.available_width() + spacing.x) / (TILE.x + spacing.x)).floor() as usize).max(1);
        let rows = self.visible.len().div_ceil(columns);
        let mut area = egui::ScrollArea::vertical().auto_shrink([false, false]);
        if let Some(i) = self.scroll_to.take() {
            area = area.vertical_scroll_offset((i / columns) as f32 * (TILE.y + spacing.y));
        }
        area.show_rows(ui, TILE.y, rows, |ui, range| {
            for row in range {
                ui.horizontal(|ui| {
                    for col in 0..columns {
                        let i = row * columns + col;
                        if i >= self.visible.len() {
                            break;
                        }
                        self.tile_ui(ui, cx, i);
                    }
                });
            }
        });
    }

    fn tile_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, i: usize) {
        let row = &cx.state.rows[self.visible[i]];
        let selected = self.selected.contains(&row.id);
        let (rect, response) = ui.allocate_exact_size(TILE, egui::Sense::click());
        let name = row.file_name().to_string();
        let visible = ui.is_rect_visible(rect);
        let picture = visible.then(|| cx.images.get(&ImageRequest::thumbnail(&row.hash, &row.file, None)));
        let label = accessible_label(&name, picture.as_ref());
        response.widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, true, selected, &label));
        if let Some(picture) = picture {
            let visuals = ui.visuals().clone();
            if selected {
                ui.painter().rect_filled(rect, 4.0, visuals.selection.bg_fill);
            } else if response.hovered() {
                ui.painter().rect_filled(rect, 4.0, visuals.widgets.hovered.weak_bg_fill);
            }
            let thumb =
                egui::Rect::from_min_size(rect.min + egui::vec2(4.0, 4.0), egui::vec2(TILE.x - 8.0, THUMB_HEIGHT));
            paint_picture(ui, thumb, picture, &name);
            // A strip under the picture: orange = boxes to review, green = all verified, red = rejected.
            let color = if row.unreviewed > 0 {
                egui::Color32::from_rgb(240, 160, 40)
            } else if row.annotations > 0 && row.verified == row.annotations {
                egui::Color32::from_rgb(70, 180, 90)
            } else if row.rejected > 0 {
                egui::Color32::from_rgb(210, 70, 60)
            } else {
                visuals.weak_text_color()
            };
            let strip = egui::Rect::from_min_size(thumb.left_bottom(), egui::vec2(thumb.width(), 3.0));
            ui.painter().rect_filled(strip, 0.0, color);
            let text_color = if selected { visuals.selection.stroke.color } else { visuals.text_color() };
            let font = egui::FontId::proportional(11.5);
            let mut y = strip.bottom() + 3.0;
            for line in [name.clone(), self.caption(row, cx.state)] {
                let galley = ui.painter().layout(line, font.clone(), text_color, thumb.width());
                let clipped = ui.painter().with_clip_rect(egui::Rect::from_min_size(
                    egui::pos2(thumb.left(), y),
                    egui::vec2(thumb.width(), 15.0),
                ));
                clipped.galley(egui::pos2(thumb.left(), y), galley, text_color);
                y += 15.0;
            }
        }
        let row_id = row.id;
        if response.double_clicked() {
            cx.out.push(Intent::OpenPhoto(row_id));
        } else if response.clicked() {
            let modifiers = ui.input(|inp| inp.modifiers);
            if modifiers.shift
                && let Some(a) = self.anchor
            {
                let (lo, hi) = (a.min(i), a.max(i));
                for j in lo..=hi {
                    self.selected.insert(cx.state.rows[self.visible[j]].id);
                }
            } else if modifiers.command {
                if !self.selected.remove(&row_id) {
                    self.selected.insert(row_id);
                }
                self.anchor = Some(i);
            } else {
                self.selected.clear();
                self.selected.insert(row_id);
                self.anchor = Some(i);
            }
        }
        response.on_hover_ui(|ui| {
            if let Some(row) = cx.state.row(row_id) {
                ui.label(&row.stored_path);
                ui.label(format!(
                    "{} annotation(s): {} unreviewed, {} verified, {} rejected",
                    row.annotations, row.unreviewed, row.verified, row.rejected
                ));
                if let Some(lowest) = row.proposal_scores.iter().copied().min_by(f64::total_cmp) {
                    ui.label(format!(
                        "{} unreviewed detector proposal(s), the lowest scoring {}",
                        row.proposal_scores.len(),
                        Hundredths::of(lowest)
                    ));
                }
                if !row.tags.is_empty() {
                    ui.label(format!("tags: {}", row.tags.join(", ")));
                }
                ui.weak("Double-click to annotate");
            }
        });
    }

    fn caption(&self, row: &PhotoRow, state: &AppState) -> String {
        let mut parts = Vec::new();
        let codes: Vec<&str> =
            row.individuals.iter().filter_map(|id| state.individual(*id)).map(|i| i.individual.code.as_str()).collect();
        match codes.as_slice() {
            [] if row.annotations == 0 => parts.push("no annotation".to_string()),
            [] => parts.push("unidentified".to_string()),
            [one] => parts.push(one.to_string()),
            [first, rest @ ..] => parts.push(format!("{first} +{}", rest.len())),
        }
        if let Some(d) = row.date() {
            parts.push(d.to_string());
        }
        parts.join(" · ")
    }
}

impl Panel for LibraryPanel {
    fn id(&self) -> PanelId {
        PanelId::LIBRARY
    }

    fn title(&self) -> &'static str {
        "Library"
    }

    fn shortcuts(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("Click / Ctrl+click / Shift+click", "select one / toggle / select a range"),
            ("Ctrl+A", "select every photo shown"),
            ("Esc", "clear the selection"),
            ("Enter or double-click", "annotate the (first) selected photo"),
        ]
    }

    fn update(&mut self, cx: &mut PanelContext<'_>) {
        self.refilter(cx);
    }

    fn on_intent(&mut self, intent: &Intent, cx: &mut PanelContext<'_>) {
        // Keep the photo being annotated in view when coming back.
        if let Intent::OpenPhoto(id) = intent {
            self.scroll_to = self.visible.iter().position(|&i| cx.state.rows[i].id == *id);
        }
        if let Intent::ShowPhotosInLibrary(photos) = intent {
            self.query = PhotoQuery { sort: self.query.sort, ..PhotoQuery::default() };
            self.query.only = Some(std::sync::Arc::new(photos.iter().copied().collect()));
            self.selected = photos.iter().copied().collect();
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        self.keys(ui, cx);
        egui::Panel::left("library_filters").resizable(false).default_size(220.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.filters_ui(ui, cx));
        });
        egui::Panel::top("library_actions").show(ui, |ui| self.actions_ui(ui, cx));
        egui::CentralPanel::default().show(ui, |ui| self.grid_ui(ui, cx));
        self.refilter(cx);
    }
}
