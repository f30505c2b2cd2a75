//! Identify: one crop at a time (unidentified crops first, then labels nobody confirmed), its
//! best candidates from the gallery ranked by individual, the chosen candidate's best crop
//! beside the query with one zoom for both. Keys 1-9 confirm a candidate, N makes a new
//! individual, S skips, M shows more of the candidate. After the candidates come the nearest
//! unidentified crops (other photos of the survey): U names the query and the one compared
//! as one new individual, so that an animal photographed twice is named once. The filter and
//! the number of crops searched are always on screen, and a best score under the new-individual threshold is
//! flagged. Crops that are unreviewed detector proposals are not offered unless the filter
//! "include unreviewed proposals" is on (then those shown at Annotate's score threshold are).
//! Searching runs as a background job, never in the frame.

use std::collections::HashSet;
use std::sync::Arc;

use eframe::egui;

use super::{Panel, PanelContext};
use crate::app::embedding::GalleryData;
use crate::app::images::{ImageCache, ImageRequest, Picture};
use crate::app::messages::{CatalogueEdit, Event, FilterChoice, Intent, Notice, PanelId, SearchRequest, Searched};
use crate::app::records::CropInfo;
use crate::app::settings::{SettingChange, Settings};
use crate::app::widgets::{accessible_label, labelled_text, model_status_ui, paint_picture, placeholder};
use crate::base::ids::AnnotationId;
use crate::base::vocabulary::{Hundredths, Side, is_proposal, shown_at};
use crate::jobs::search::{Neighbour, Verified};

/// Candidates shown (keys 1-9).
pub const CANDIDATES: usize = 9;
const TILE: egui::Vec2 = egui::vec2(132.0, 132.0);
const MORE: usize = 12;
/// Unidentified crops shown after the candidates.
const NEIGHBOURS: usize = 6;

/// Zoom shared by the query and the candidate: the centre of what is shown, in the crop's
/// own 0..1 coordinates, and the magnification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropZoom {
    pub center: egui::Vec2,
    pub zoom: f32,
}

impl Default for CropZoom {
    fn default() -> Self {
        CropZoom { center: egui::vec2(0.5, 0.5), zoom: 1.0 }
    }
}

impl CropZoom {
    /// The part of the crop shown, in the crop's 0..1 coordinates.
    fn region(&self) -> egui::Rect {
        let half = 0.5 / self.zoom;
        let c = egui::vec2(self.center.x.clamp(half, 1.0 - half), self.center.y.clamp(half, 1.0 - half));
        egui::Rect::from_center_size(c.to_pos2(), egui::vec2(2.0 * half, 2.0 * half))
    }

    /// Wheel zoom and drag pan over a pane of `size` points.
    fn interact(&mut self, ui: &egui::Ui, response: &egui::Response) {
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.zoom = (self.zoom * (scroll * 0.003).exp()).clamp(1.0, 12.0);
            }
        }
        if response.dragged() {
            let size = response.rect.size();
            let d = response.drag_delta();
            self.center -= egui::vec2(d.x / size.x, d.y / size.y) / self.zoom;
        }
        let half = 0.5 / self.zoom;
        self.center = egui::vec2(self.center.x.clamp(half, 1.0 - half), self.center.y.clamp(half, 1.0 - half));
    }
}

/// Paints the part `zoom` shows of a crop, from the full photo when it is decoded (sharp at
/// any zoom), else from its thumbnail.
pub fn paint_crop(ui: &egui::Ui, rect: egui::Rect, images: &mut ImageCache, crop: &CropInfo, zoom: CropZoom) {
    let (pw, ph) = (crop.photo_size.0.max(1) as f32, crop.photo_size.1.max(1) as f32);
    let b = crop.bbox.map(|b| (b.x as f32, b.y as f32, b.w as f32, b.h as f32)).unwrap_or((0.0, 0.0, pw, ph));
    let (bw, bh) = (b.2.max(1.0), b.3.max(1.0));
    let region = zoom.region();
    let shown = egui::vec2(bw * region.width(), bh * region.height());
    let scale = (rect.width() / shown.x).min(rect.height() / shown.y);
    let target = egui::Rect::from_center_size(rect.center(), shown * scale);
    let painter = ui.painter_at(rect);
    let view = ImageRequest::view(&crop.hash, &crop.file);
    let texture = match images.get(&view) {
        Picture::Ready(t) => Some((t.id(), true)),
        Picture::Failed(why) => {
            let why = why.to_string();
            placeholder(&painter, rect, crop.file_name(), &why, ui.visuals());
            return;
        }
        Picture::Loading => None,
    };
    let texture = texture.or_else(|| {
        let thumb = ImageRequest::thumbnail(&crop.hash, &crop.file, crop.bbox);
        match images.get(&thumb) {
            Picture::Ready(t) => Some((t.id(), false)),
            _ => None,
        }
    });
    match texture {
        Some((id, whole_photo)) => {
            let uv = if whole_photo {
                egui::Rect::from_min_max(
                    egui::pos2((b.0 + region.min.x * bw) / pw, (b.1 + region.min.y * bh) / ph),
                    egui::pos2((b.0 + region.max.x * bw) / pw, (b.1 + region.max.y * bh) / ph),
                )
            } else {
                region
            };
            painter.image(id, target, uv, egui::Color32::WHITE);
        }
        None => {
            painter.rect_filled(target, 2.0, ui.visuals().extreme_bg_color);
        }
    }
}

/// Where a point given as fractions of a crop falls in `rect` as `paint_crop` draws it at
/// `zoom`; `None` outside the part shown.
fn crop_point(rect: egui::Rect, crop: &CropInfo, zoom: CropZoom, fx: f32, fy: f32) -> Option<egui::Pos2> {
    let (pw, ph) = (crop.photo_size.0.max(1) as f32, crop.photo_size.1.max(1) as f32);
    let (bw, bh) = crop.bbox.map(|b| (b.w as f32, b.h as f32)).unwrap_or((pw, ph));
    let region = zoom.region();
    let shown = egui::vec2(bw.max(1.0) * region.width(), bh.max(1.0) * region.height());
    let scale = (rect.width() / shown.x).min(rect.height() / shown.y);
    let target = egui::Rect::from_center_size(rect.center(), shown * scale);
    let (u, v) = ((fx - region.min.x) / region.width(), (fy - region.min.y) / region.height());
    ((0.0..=1.0).contains(&u) && (0.0..=1.0).contains(&v)).then(|| target.lerp_inside(egui::vec2(u, v)))
}

/// A candidate's evidence in words: its score, and what the local verification found.
fn evidence_words(verified: Option<&Verified>, score: f32) -> String {
    match verified {
        Some(v) => match v.probability {
            Some(p) => format!("p {p:.2} · {} matches · score {score:.3}", v.matches),
            None => format!("{} matches · score {score:.3}", v.matches),
        },
        None => format!("score {score:.3}"),
    }
}

/// Which crops Identify offers: every crop but the unreviewed detector proposals, unless they
/// are asked for (and then those shown at the threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Offer {
    proposals: bool,
    threshold: Hundredths,
}

impl Offer {
    fn from_settings(s: &Settings) -> Offer {
        Offer { proposals: s.identify_proposals, threshold: s.proposal_threshold() }
    }

    fn offers(self, crop: &CropInfo) -> bool {
        !is_proposal(crop.source, crop.status)
            || (self.proposals && shown_at(self.threshold, crop.source, crop.status, crop.score))
    }
}

#[derive(Default)]
pub struct IdentifyPanel {
    /// The crop being identified.
    current: Option<AnnotationId>,
    /// Opened on purpose (from the map): stays until identified or skipped.
    pinned: bool,
    /// Crops confirmed, made new or skipped in this session, so the queue moves on at once.
    done: HashSet<AnnotationId>,
    skipped: usize,
    /// Where in the gallery's `to_identify` the next crop is looked for.
    queue_pos: usize,
    queue_for: Option<(u64, Offer)>,
    offer: Offer,
    /// How many crops of the gallery's queue are offered, for the queue it was counted for.
    offered: usize,
    choice: FilterChoice,
    result: Option<Searched>,
    /// What the last search asked for: (annotation, gallery generation, filter, threshold bits).
    asked: Option<(AnnotationId, u64, FilterChoice, u32)>,
    /// The candidate compared with the query (0-based), and a crop of it chosen from "more".
    compared: usize,
    compared_crop: Option<AnnotationId>,
    /// An unidentified crop compared with the query instead of a candidate.
    compared_unidentified: Option<AnnotationId>,
    zoom: CropZoom,
    new_name: String,
    more: bool,
}

impl IdentifyPanel {
    pub fn current(&self) -> Option<AnnotationId> {
        self.current
    }

    /// Starts the queue over for a new gallery or a new choice of what is offered.
    fn requeue(&mut self, generation: u64, data: &GalleryData) {
        let key = (generation, self.offer);
        if self.queue_for == Some(key) {
            return;
        }
        self.queue_for = Some(key);
        self.queue_pos = 0;
        let offer = self.offer;
        self.offered = data.to_identify.iter().filter(|&&a| data.crop(a).is_some_and(|c| offer.offers(c))).count();
    }

    fn offered(&self, data: &GalleryData, annotation: AnnotationId) -> bool {
        data.crop(annotation).is_some_and(|c| self.offer.offers(c))
    }

    fn remaining(&self, data: &GalleryData) -> usize {
        let done = self
            .done
            .iter()
            .filter(|&&a| data.crop(a).is_some_and(|c| c.needs_identification() && self.offer.offers(c)))
            .count();
        self.offered.saturating_sub(done)
    }

    fn next_crop(&mut self, data: &GalleryData) {
        self.pinned = false;
        // The queue only loses crops as they are done: the search goes on from the last place.
        let skip = self.queue_pos.min(data.to_identify.len());
        let next = data.to_identify[skip..].iter().position(|&a| !self.done.contains(&a) && self.offered(data, a));
        self.queue_pos = skip + next.unwrap_or(data.to_identify.len() - skip);
        self.current = next.map(|k| data.to_identify[skip + k]);
        self.compared = 0;
        self.compared_crop = None;
        self.compared_unidentified = None;
        self.zoom = CropZoom::default();
        self.more = false;
    }

    fn threshold(cx: &PanelContext<'_>, data: &GalleryData) -> (f32, &'static str) {
        match data.tuned_threshold {
            Some(t) => (t, "tuned for this model"),
            None => (cx.state.settings.new_individual_threshold, "from Settings"),
        }
    }

    /// Starts a search when the crop, the gallery, the filter or the threshold changed.
    fn search(&mut self, cx: &mut PanelContext<'_>, data: &Arc<GalleryData>) {
        let Some(annotation) = self.current else { return };
        let Some(crop) = data.crop(annotation) else { return };
        let Some(row) = data.row(annotation) else { return };
        let generation = cx.state.model.generation;
        let (threshold, source) = Self::threshold(cx, data);
        let asked = (annotation, generation, self.choice, threshold.to_bits());
        if self.asked == Some(asked) {
            return;
        }
        self.asked = Some(asked);
        cx.send(Intent::Search(Box::new(SearchRequest {
            gallery: data.clone(),
            annotation,
            row,
            generation,
            choice: self.choice,
            filter: self.choice.filter(crop),
            candidates: CANDIDATES,
            threshold,
            threshold_source: source,
        })));
    }

    /// The candidates of the current crop, when its search is in.
    fn candidates(&self) -> Option<&Searched> {
        self.result.as_ref().filter(|r| Some(r.annotation) == self.current && r.choice == self.choice)
    }

    fn confirm(&mut self, k: usize, cx: &mut PanelContext<'_>, data: &GalleryData) {
        let (Some(query), Some(searched)) = (self.current, self.candidates()) else { return };
        let Some(m) = searched.result.matches.get(k) else {
            cx.send(Intent::Notify(Notice::error(format!("There is no candidate {}", k + 1))));
            return;
        };
        let Some(individual) = data.crop(m.best_annotation).and_then(|c| c.individual) else { return };
        cx.send(Intent::Edit(CatalogueEdit::Assign { annotations: vec![query], individual }));
        self.done.insert(query);
        self.next_crop(data);
    }

    fn new_individual(&mut self, cx: &mut PanelContext<'_>, data: &GalleryData) {
        let Some(query) = self.current else { return };
        let name = std::mem::take(&mut self.new_name);
        cx.send(Intent::Edit(CatalogueEdit::NewIndividual { annotations: vec![query], name }));
        self.done.insert(query);
        self.next_crop(data);
    }

    /// The query and the unidentified crop compared with it become one new individual.
    fn same_new_individual(&mut self, cx: &mut PanelContext<'_>, data: &GalleryData) {
        let (Some(query), Some(other)) = (self.current, self.compared_unidentified) else {
            cx.send(Intent::Notify(Notice::error(
                "Click one of the unidentified crops below first, then U names both as one new individual",
            )));
            return;
        };
        let name = std::mem::take(&mut self.new_name);
        cx.send(Intent::Edit(CatalogueEdit::NewIndividual { annotations: vec![query, other], name }));
        self.done.insert(query);
        self.done.insert(other);
        self.next_crop(data);
    }

    /// The unidentified crops near the query that Identify offers (those not yet done here).
    fn neighbours<'d>(&self, data: &'d GalleryData) -> Vec<(&'d CropInfo, Neighbour)> {
        let Some(s) = self.candidates() else { return Vec::new() };
        s.result
            .unidentified
            .iter()
            .filter(|n| !self.done.contains(&n.annotation))
            .filter_map(|n| data.crop(n.annotation).filter(|c| self.offer.offers(c)).map(|c| (c, n.clone())))
            .take(NEIGHBOURS)
            .collect()
    }

    fn skip(&mut self, data: &GalleryData) {
        if let Some(query) = self.current {
            self.done.insert(query);
            self.skipped += 1;
            self.next_crop(data);
        }
    }

    fn keys(&mut self, ui: &egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData) {
        use egui::{Key, Modifiers};
        const DIGITS: [Key; 9] =
            [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6, Key::Num7, Key::Num8, Key::Num9];
        let (mut confirm, mut new, mut skip, mut more, mut same) = (None, false, false, false, false);
        ui.input_mut(|i| {
            for (k, key) in DIGITS.iter().enumerate() {
                if i.consume_key(Modifiers::NONE, *key) {
                    confirm = Some(k);
                }
            }
            new = i.consume_key(Modifiers::NONE, Key::N);
            skip = i.consume_key(Modifiers::NONE, Key::S);
            more = i.consume_key(Modifiers::NONE, Key::M);
            same = i.consume_key(Modifiers::NONE, Key::U);
        });
        if let Some(k) = confirm {
            self.confirm(k, cx, data);
        } else if new {
            self.new_individual(cx, data);
        } else if skip {
            self.skip(data);
        } else if more {
            self.more = !self.more;
        } else if same {
            self.same_new_individual(cx, data);
        }
    }

    fn header_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData, crop: &CropInfo) {
        ui.horizontal_wrapped(|ui| {
            ui.strong(format!("{} · {}", crop.file_name(), crop.part));
            let who = match (&crop.code, crop.how) {
                (Some(code), Some(how)) => format!("labelled {code} ({how})"),
                _ => "unidentified".into(),
            };
            ui.label(who);
            ui.separator();
            ui.label(format!("{} crop(s) to identify, {} skipped", self.remaining(data), self.skipped));
        });
        // The filter is always on screen, with what it left to search.
        ui.horizontal_wrapped(|ui| {
            ui.label("Candidates restricted to the query's");
            let species = crop.species.clone().unwrap_or_else(|| "(no species)".into());
            ui.checkbox(&mut self.choice.species, format!("species ({species})"));
            ui.checkbox(&mut self.choice.part, format!("part ({})", crop.part));
            ui.add_enabled(
                crop.side != Side::Unknown,
                egui::Checkbox::new(&mut self.choice.side, format!("side ({})", crop.side)),
            );
        });
        ui.horizontal_wrapped(|ui| {
            let mut proposals = self.offer.proposals;
            let text = format!("include unreviewed proposals (scoring {} or more)", self.offer.threshold);
            if ui
                .checkbox(&mut proposals, text)
                .on_hover_text(
                    "Offer crops that are detector proposals nobody has reviewed yet; the threshold is \
                     Annotate's minimum score",
                )
                .changed()
            {
                cx.send(Intent::ChangeSetting(SettingChange::IdentifyProposals(proposals)));
            }
            if is_proposal(crop.source, crop.status) {
                let score = crop.score.map(|s| format!(" scoring {}", Hundredths::of(s))).unwrap_or_default();
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("This crop is an unreviewed detector proposal{score}: verify its box in Annotate"),
                );
            }
        });
        match self.candidates() {
            Some(s) => {
                ui.label(format!(
                    "Searched {} crop(s) of {} individual(s) · filter: {}",
                    s.result.searched_images, s.result.searched_individuals, s.result.filter
                ));
            }
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Searching…");
                });
            }
        }
        let left_out = data.load.describe();
        if !left_out.is_empty() {
            ui.weak(format!("Not searched: {left_out}"));
        }
        if let Some(s) = self.candidates() {
            let threshold = s.result.threshold.unwrap_or(0.0);
            let probability = s.result.threshold_is_probability;
            let best = s.result.matches.first().map(|m| match (&m.verified, probability) {
                (Some(v), true) => v.probability.unwrap_or(0.0),
                _ => m.score,
            });
            let what = if probability { "probability" } else { "score" };
            if s.result.new_individual {
                let text = match best {
                    Some(b) => format!(
                        "Possibly a new individual: the best {what} {b:.3} is under the new-individual threshold \
                         {threshold:.2} ({}). Press N to make one.",
                        s.threshold_source
                    ),
                    None => "No candidate at all under this filter: press N to make a new individual.".into(),
                };
                ui.colored_label(ui.visuals().warn_fg_color, text);
            } else {
                ui.weak(format!("New-individual threshold {threshold:.2} ({})", s.threshold_source));
            }
        }
    }

    fn compare_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData, crop: &CropInfo) {
        // The crop compared with the query (an unidentified neighbour, or the candidate's crop)
        // and its verified matches, drawn when found on the crop compared.
        let neighbour =
            self.compared_unidentified.and_then(|a| self.neighbours(data).into_iter().find(|(c, _)| c.annotation == a));
        let (compared, lines): (Option<(&CropInfo, String)>, Vec<[f32; 4]>) = match neighbour {
            Some((c, n)) => {
                let words = evidence_words(n.verified.as_ref(), n.score);
                let lines = n.verified.map(|v| v.lines).unwrap_or_default();
                (Some((c, format!("Unidentified · {} · {words}", c.file_name()))), lines)
            }
            None => {
                let m = self.candidates().and_then(|s| s.result.matches.get(self.compared));
                let verified = m.and_then(|m| m.verified.as_ref());
                let compared = m.and_then(|m| {
                    let shown = self.compared_crop.or(verified.map(|v| v.annotation)).unwrap_or(m.best_annotation);
                    let words = evidence_words(verified, m.score);
                    Some((data.crop(shown)?, format!("{} · {} · {words}", self.compared + 1, m.individual)))
                });
                let lines = verified
                    .filter(|v| compared.as_ref().is_some_and(|(c, _)| c.annotation == v.annotation))
                    .map(|v| v.lines.clone())
                    .unwrap_or_default();
                (compared, lines)
            }
        };
        let mut rects = [None, None];
        // Room below for the candidates' row, and the unidentified crops' row when there is one.
        let below = if self.neighbours(data).is_empty() { TILE.y + 90.0 } else { TILE.y + 230.0 };
        let height = (ui.available_height() - below).max(160.0);
        let width = (ui.available_width() - ui.spacing().item_spacing.x) / 2.0;
        ui.horizontal(|ui| {
            for (side, (shown, title)) in [
                (0, (Some(crop), format!("Query: {}", crop.file_name()))),
                (1, compared.map(|(c, t)| (Some(c), t)).unwrap_or((None, "No candidate".into()))),
            ] {
                ui.vertical(|ui| {
                    ui.label(title);
                    let (rect, response) =
                        ui.allocate_exact_size(egui::vec2(width, height - 20.0), egui::Sense::click_and_drag());
                    let name = if side == 0 { "Query crop" } else { "Compared crop" };
                    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, name));
                    ui.painter().rect_filled(rect, 2.0, ui.visuals().faint_bg_color);
                    if let Some(c) = shown {
                        paint_crop(ui, rect, cx.images, c, self.zoom);
                        rects[side] = Some((rect, c));
                    }
                    // One zoom for both: what is done to either is done to the other.
                    self.zoom.interact(ui, &response);
                    if response.double_clicked() {
                        self.zoom = CropZoom::default();
                    }
                });
            }
        });
        if let [Some((a, query)), Some((b, candidate))] = &rects {
            let painter = ui.painter().with_clip_rect(a.union(*b));
            let stroke = egui::Stroke::new(1.5, egui::Color32::from_rgba_unmultiplied(90, 230, 120, 200));
            for l in &lines {
                let from = crop_point(*a, query, self.zoom, l[0], l[1]);
                let to = crop_point(*b, candidate, self.zoom, l[2], l[3]);
                if let (Some(from), Some(to)) = (from, to) {
                    painter.line_segment([from, to], stroke);
                    painter.circle_filled(from, 2.5, stroke.color);
                    painter.circle_filled(to, 2.5, stroke.color);
                }
            }
        }
        let shown_lines =
            if lines.is_empty() { String::new() } else { format!(" · {} verified matches drawn", lines.len()) };
        ui.weak(format!(
            "Zoom ×{:.1} on both crops (wheel, drag to pan, double-click to reset){shown_lines}",
            self.zoom.zoom
        ));
    }

    fn candidates_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData) {
        let Some(s) = self.candidates() else { return };
        let matches = s.result.matches.clone();
        let mut compare = None;
        let mut confirm = None;
        egui::ScrollArea::horizontal().id_salt("candidates").show(ui, |ui| {
            ui.horizontal(|ui| {
                for (k, m) in matches.iter().enumerate() {
                    let Some(c) = data.crop(m.best_annotation) else { continue };
                    ui.vertical(|ui| {
                        let (rect, response) = ui.allocate_exact_size(TILE, egui::Sense::click());
                        let label = format!(
                            "Candidate {}: {}, {}",
                            k + 1,
                            m.individual,
                            evidence_words(m.verified.as_ref(), m.score)
                        );
                        let picture = cx.images.get(&ImageRequest::thumbnail(&c.hash, &c.file, c.bbox));
                        let name = accessible_label(&label, Some(&picture));
                        response.widget_info(|| {
                            egui::WidgetInfo::selected(egui::Role::Button, true, k == self.compared, &name)
                        });
                        if k == self.compared {
                            ui.painter().rect_filled(rect, 4.0, ui.visuals().selection.bg_fill);
                        }
                        paint_picture(ui, rect.shrink(4.0), picture, c.file_name());
                        if response.clicked() {
                            compare = Some(k);
                        }
                        ui.label(format!(
                            "{} {} · {}",
                            k + 1,
                            m.individual,
                            evidence_words(m.verified.as_ref(), m.score)
                        ));
                        if ui.small_button(format!("Confirm ({})", k + 1)).clicked() {
                            confirm = Some(k);
                        }
                    });
                }
            });
        });
        if let Some(k) = compare {
            self.compared = k;
            self.compared_crop = None;
            self.compared_unidentified = None;
        }
        if let Some(k) = confirm {
            self.confirm(k, cx, data);
        }
    }

    /// The nearest unidentified crops: click one to compare it, U (or its button) names it
    /// and the query as one new individual.
    fn neighbours_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData) {
        let neighbours = self.neighbours(data);
        if self.candidates().is_none() {
            return;
        }
        if neighbours.is_empty() {
            ui.weak("No other unidentified crop under this filter.");
            return;
        }
        ui.label("Unidentified crops nearest this one (the same animal photographed again?): click to compare");
        let (mut compare, mut same) = (None, false);
        egui::ScrollArea::horizontal().id_salt("unidentified").show(ui, |ui| {
            ui.horizontal(|ui| {
                for (k, (c, n)) in neighbours.iter().enumerate() {
                    ui.vertical(|ui| {
                        let size = egui::vec2(96.0, 96.0);
                        let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
                        let selected = self.compared_unidentified == Some(c.annotation);
                        let words = evidence_words(n.verified.as_ref(), n.score);
                        let label = format!("Unidentified {}: {}, {words}", k + 1, c.file_name());
                        let picture = cx.images.get(&ImageRequest::thumbnail(&c.hash, &c.file, c.bbox));
                        let name = accessible_label(&label, Some(&picture));
                        response.widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, true, selected, &name));
                        if selected {
                            ui.painter().rect_filled(rect, 4.0, ui.visuals().selection.bg_fill);
                        }
                        paint_picture(ui, rect.shrink(3.0), picture, c.file_name());
                        if response.clicked() {
                            compare = Some(c.annotation);
                        }
                        ui.label(words);
                        if selected && ui.small_button("Same new individual (U)").clicked() {
                            same = true;
                        }
                    });
                }
            });
        });
        if compare.is_some() {
            self.compared_unidentified = compare;
        }
        if same {
            self.same_new_individual(cx, data);
        }
    }

    fn more_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData) {
        let Some(m) = self.candidates().and_then(|s| s.result.matches.get(self.compared)) else { return };
        let Some(individual) = data.crop(m.best_annotation).and_then(|c| c.individual) else { return };
        let code = m.individual.clone();
        let others: Vec<&CropInfo> = data
            .crops
            .iter()
            .filter(|c| c.individual == Some(individual) && Some(c.annotation) != self.current)
            .collect();
        ui.horizontal(|ui| {
            ui.strong(format!("More of {code}: {} crop(s)", others.len()));
            if ui.small_button("All of them in Individuals").clicked() {
                cx.send(Intent::OpenIndividual(individual));
            }
        });
        let mut chosen = None;
        ui.horizontal(|ui| {
            for c in others.iter().take(MORE) {
                let size = egui::vec2(96.0, 96.0);
                let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
                let picture = cx.images.get(&ImageRequest::thumbnail(&c.hash, &c.file, c.bbox));
                let name = accessible_label(&format!("{code} {}", c.file_name()), Some(&picture));
                response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
                paint_picture(ui, rect, picture, c.file_name());
                if response.clicked() {
                    chosen = Some(c.annotation);
                }
            }
        });
        if chosen.is_some() {
            self.compared_crop = chosen;
        }
    }

    fn actions_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData) {
        ui.horizontal(|ui| {
            labelled_text(ui, "Name for a new individual", &mut self.new_name, "optional", 160.0);
            if ui.button("New individual (N)").on_hover_text("A fresh unique code; Ctrl+Z undoes").clicked() {
                self.new_individual(cx, data);
            }
            if ui.button("Skip (S)").clicked() {
                self.skip(data);
            }
            let more = if self.more { "Hide more (M)" } else { "More of this individual (M)" };
            if ui.button(more).clicked() {
                self.more = !self.more;
            }
        });
    }
}

impl Panel for IdentifyPanel {
    fn id(&self) -> PanelId {
        PanelId::IDENTIFY
    }

    fn title(&self) -> &'static str {
        "Identify"
    }

    fn shortcuts(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("1 … 9", "confirm that candidate for the crop"),
            ("N", "new individual (fresh unique code, the name typed if any)"),
            ("S", "skip to the next crop"),
            ("M", "more crops of the compared candidate"),
            ("U", "the query and the unidentified crop compared: one new individual"),
            ("Wheel / drag on a crop", "zoom and pan both crops together"),
        ]
    }

    fn on_event(&mut self, event: &Event, cx: &mut PanelContext<'_>) {
        match event {
            Event::Opened { .. } => *self = IdentifyPanel::default(),
            Event::Searched(s) if Some(s.annotation) == self.current => {
                let fresh = s.generation == cx.state.model.generation;
                if fresh || self.candidates().is_none() {
                    self.compared = self.compared.min(s.result.matches.len().saturating_sub(1));
                    self.result = Some((**s).clone());
                }
            }
            _ => {}
        }
    }

    fn on_intent(&mut self, intent: &Intent, _cx: &mut PanelContext<'_>) {
        if let Intent::OpenCrop(a) = intent {
            self.current = Some(*a);
            self.pinned = true;
            self.done.remove(a);
            self.compared = 0;
            self.compared_crop = None;
            self.compared_unidentified = None;
            self.zoom = CropZoom::default();
        }
    }

    fn update(&mut self, cx: &mut PanelContext<'_>) {
        let Some(data) = cx.state.model.gallery.clone() else { return };
        let offer = Offer::from_settings(&cx.state.settings);
        let offer_changed = offer != self.offer;
        self.offer = offer;
        self.requeue(cx.state.model.generation, &data);
        let current_gone = self.current.is_some_and(|a| data.crop(a).is_none());
        let current_done = self.current.is_some_and(|a| self.done.contains(&a)) && !self.pinned;
        // A new choice of what is offered starts the queue over from its head.
        let reordered = offer_changed && !self.pinned;
        if self.current.is_none() || current_gone || current_done || reordered {
            self.next_crop(&data);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        egui::CentralPanel::default().show(ui, |ui| {
            if !model_status_ui(ui, &cx.state.model, cx.out) {
                return;
            }
            let Some(data) = cx.state.model.gallery.clone() else { return };
            let Some(annotation) = self.current else {
                ui.heading("Nothing left to identify");
                ui.label(format!(
                    "Every crop has a confirmed individual ({} skipped in this session). Click a point on the \
                     Map to look at any crop again.",
                    self.skipped
                ));
                return;
            };
            let Some(crop) = data.crop(annotation).cloned() else { return };
            self.search(cx, &data);
            if cx.keys {
                self.keys(ui, cx, &data);
            }
            self.header_ui(ui, cx, &data, &crop);
            if data.row(annotation).is_none() {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    "This crop has no embedding yet (it is computed in the background); N and S work meanwhile.",
                );
            }
            ui.separator();
            self.actions_ui(ui, cx, &data);
            self.compare_ui(ui, cx, &data, &crop);
            if self.more {
                self.more_ui(ui, cx, &data);
            }
            self.candidates_ui(ui, cx, &data);
            self.neighbours_ui(ui, cx, &data);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_zoom_shows_a_part_of_the_crop_that_stays_inside_it() {
        let whole = CropZoom::default().region();
        assert_eq!(whole, egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)));
        // Panned past the edge at ×4: the region is a quarter wide and pushed back inside.
        let z = CropZoom { center: egui::vec2(0.99, 0.1), zoom: 4.0 };
        let r = z.region();
        assert!((r.width() - 0.25).abs() < 1e-6 && (r.height() - 0.25).abs() < 1e-6);
        assert!((r.max.x - 1.0).abs() < 1e-6 && (r.min.y - 0.0).abs() < 1e-6, "{r:?}");
    }
}
