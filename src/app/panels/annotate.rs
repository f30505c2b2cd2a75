//! Annotate: one photo at a time, zoomable and pannable, with its boxes drawn by part,
//! status and individual. Boxes are edited by dragging corners and edges, drawn new with B,
//! deleted with Shift+Delete. The review keys walk the library's queue: Enter verifies,
//! Delete rejects, arrows go to the previous/next photo, U jumps to the next unreviewed box.
//! Detector proposals are boxes with status `unreviewed` and source `detector`, so they
//! enter this same review: drawn dashed with their score, hidden under the toolbar's score
//! threshold, and verified in bulk only when asked (one edit, one undo).

use eframe::egui;

use super::view::{Grip, ViewTransform, ZoomPan, box_from_corners, drag_box, grip_at, size_of};
use super::{Panel, PanelContext};
use crate::app::images::{ImageRequest, Picture};
use crate::app::messages::{CatalogueEdit, Event, Intent, Notice, PanelId};
use crate::app::records::{BoxRecord, PhotoDetail, individual_label};
use crate::app::settings::SettingChange;
use crate::app::widgets::{labelled_text, placeholder, submitted};
use crate::base::ids::{AnnotationId, PhotoId};
use crate::base::vocabulary::{BoxPx, Fit, Hundredths, Part, Side, Source, Status, is_proposal, shown_at};

/// Which box to select when the photo's boxes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    FirstUnreviewed,
    Last,
    Keep,
}

#[derive(Debug, Clone, Copy)]
enum Drag {
    /// Moving or resizing a box: the box and pointer (photo pixels) when the drag began.
    Edit {
        annotation: AnnotationId,
        grip: Grip,
        start: BoxPx,
        from: egui::Pos2,
        now: BoxPx,
    },
    Draw {
        from: egui::Pos2,
        now: egui::Pos2,
    },
    Pan,
}

pub struct AnnotatePanel {
    photo: Option<PhotoId>,
    detail: Option<PhotoDetail>,
    selected: Option<AnnotationId>,
    arrival: Arrival,
    zp: ZoomPan,
    /// The next drag on the photo draws a new box (B).
    drawing: bool,
    drag: Option<Drag>,
    assign_to: String,
    missing: Option<PhotoId>,
    /// Where the photo was in the queue when last seen there: a reviewed photo can leave a
    /// filtered queue, and Next should still go on from where it was.
    queue_hint: usize,
    /// Unreviewed proposals scoring under this are hidden (the settings' value, read each frame).
    threshold: Hundredths,
}

impl Default for AnnotatePanel {
    fn default() -> Self {
        AnnotatePanel {
            photo: None,
            detail: None,
            selected: None,
            arrival: Arrival::FirstUnreviewed,
            zp: ZoomPan::default(),
            drawing: false,
            drag: None,
            assign_to: String::new(),
            missing: None,
            queue_hint: 0,
            threshold: Hundredths::default(),
        }
    }
}

fn status_color(status: Status) -> egui::Color32 {
    match status {
        Status::Unreviewed => egui::Color32::from_rgb(250, 170, 40),
        Status::Verified => egui::Color32::from_rgb(80, 200, 100),
        Status::Rejected => egui::Color32::from_rgb(220, 70, 60),
    }
}

/// How a box is named in the list (and by screen readers and tests).
pub fn box_title(index: usize, b: &BoxRecord) -> String {
    let who = b.individual.as_ref().map(individual_label).unwrap_or_else(|| "unidentified".into());
    let source = match b.annotation.source {
        Source::Detector => match b.annotation.score {
            Some(s) => format!(" · detector {}", Hundredths::of(s)),
            None => " · detector".into(),
        },
        _ => String::new(),
    };
    format!("Box {}: {} · {} · {}{}", index + 1, b.annotation.part, b.annotation.status, who, source)
}

impl AnnotatePanel {
    pub fn photo(&self) -> Option<PhotoId> {
        self.photo
    }

    fn open(&mut self, photo: PhotoId, arrival: Arrival, cx: &mut PanelContext<'_>) {
        if self.photo != Some(photo) {
            self.detail = None;
            self.selected = None;
            self.zp = ZoomPan::default();
            self.drag = None;
        }
        self.photo = Some(photo);
        self.arrival = arrival;
        self.missing = None;
        cx.send(Intent::WatchPhoto(Some(photo)));
    }

    fn boxes(&self) -> &[BoxRecord] {
        self.detail.as_ref().map(|d| d.boxes.as_slice()).unwrap_or(&[])
    }

    fn shows(&self, b: &BoxRecord) -> bool {
        shown_at(self.threshold, b.annotation.source, b.annotation.status, b.annotation.score)
    }

    /// The boxes drawn and listed: all but the proposals under the threshold.
    fn shown(&self) -> impl Iterator<Item = &BoxRecord> {
        self.boxes().iter().filter(|b| self.shows(b))
    }

    fn first_shown_unreviewed(&self) -> Option<AnnotationId> {
        self.shown().find(|b| b.annotation.status == Status::Unreviewed).map(|b| b.annotation.id)
    }

    fn selected_index(&self) -> Option<usize> {
        let sel = self.selected?;
        self.boxes().iter().position(|b| b.annotation.id == sel)
    }

    fn queue_position(&self, cx: &PanelContext<'_>) -> Option<usize> {
        let photo = self.photo?;
        cx.state.queue.iter().position(|&p| p == photo)
    }

    /// The queue position, remembered for when the photo leaves the queue.
    fn track_queue(&mut self, cx: &PanelContext<'_>) -> Option<usize> {
        let at = self.queue_position(cx);
        if let Some(i) = at {
            self.queue_hint = i;
        }
        at
    }

    fn step_photo(&mut self, forward: bool, cx: &mut PanelContext<'_>) {
        let queue = &cx.state.queue;
        if queue.is_empty() {
            return;
        }
        let next = match self.queue_position(cx) {
            Some(i) if forward => (i + 1 < queue.len()).then(|| queue[i + 1]),
            Some(i) => i.checked_sub(1).map(|j| queue[j]),
            // The photo left the queue (reviewed out of a filter): the one now at its place is next.
            None if forward => queue.get(self.queue_hint.min(queue.len() - 1)).copied(),
            None => self.queue_hint.checked_sub(1).and_then(|j| queue.get(j.min(queue.len() - 1))).copied(),
        };
        match next {
            Some(p) => self.open(p, if forward { Arrival::FirstUnreviewed } else { Arrival::Last }, cx),
            None => cx.send(Intent::Notify(Notice::info(if forward {
                "This is the last photo of the queue"
            } else {
                "This is the first photo of the queue"
            }))),
        }
    }

    fn step_box(&mut self, forward: bool) {
        let shown: Vec<AnnotationId> = self.shown().map(|b| b.annotation.id).collect();
        let n = shown.len();
        if n == 0 {
            return;
        }
        let i = match self.selected.and_then(|s| shown.iter().position(|&id| id == s)) {
            Some(i) if forward => (i + 1) % n,
            Some(i) => (i + n - 1) % n,
            None => 0,
        };
        self.selected = Some(shown[i]);
    }

    /// The next unreviewed box shown: later in this photo, else in the next photo of the queue
    /// that has one.
    fn next_unreviewed(&mut self, cx: &mut PanelContext<'_>) {
        let from = self.selected_index().map(|i| i + 1).unwrap_or(0);
        let later = self.boxes().iter().skip(from).find(|b| b.annotation.status == Status::Unreviewed && self.shows(b));
        if let Some(b) = later {
            self.selected = Some(b.annotation.id);
            return;
        }
        let queue = &cx.state.queue;
        let start = self.queue_position(cx).map(|i| i + 1).unwrap_or(0);
        let found = (0..queue.len())
            .map(|k| queue[(start + k) % queue.len()])
            .filter(|&p| Some(p) != self.photo)
            .find(|&p| cx.state.row(p).is_some_and(|r| r.unreviewed_shown(self.threshold) > 0));
        match found {
            Some(p) => self.open(p, Arrival::FirstUnreviewed, cx),
            None => {
                // Earlier in this photo, then nothing left.
                if let Some(id) = self.first_shown_unreviewed() {
                    self.selected = Some(id);
                } else {
                    cx.send(Intent::Notify(Notice::info("Nothing left to review in this queue")));
                }
            }
        }
    }

    /// Verifies or rejects the selected box (at once, on disk), then moves on.
    fn review(&mut self, status: Status, cx: &mut PanelContext<'_>) {
        let Some(i) = self.selected_index() else {
            cx.send(Intent::Notify(Notice::info("Select a box first (click it, or J)")));
            return;
        };
        let id = self.boxes()[i].annotation.id;
        if let Some(d) = &mut self.detail {
            d.boxes[i].annotation.status = status; // shown at once; the worker's answer confirms it
        }
        cx.send(Intent::Edit(CatalogueEdit::SetStatus { annotations: vec![id], status }));
        if cx.state.settings.advance_after_review {
            let later =
                self.boxes().iter().skip(i + 1).find(|b| b.annotation.status == Status::Unreviewed && self.shows(b));
            match later {
                Some(b) => self.selected = Some(b.annotation.id),
                None => self.step_photo(true, cx),
            }
        }
    }

    fn delete_selected(&mut self, cx: &mut PanelContext<'_>) {
        if let Some(i) = self.selected_index() {
            let id = self.boxes()[i].annotation.id;
            if let Some(d) = &mut self.detail {
                d.boxes.remove(i);
            }
            self.selected = self.boxes().get(i.min(self.boxes().len().saturating_sub(1))).map(|b| b.annotation.id);
            cx.send(Intent::Edit(CatalogueEdit::DeleteBox { annotation: id }));
        }
    }

    /// The part a new box in this photo most likely shows.
    fn default_part(&self) -> (Part, Option<String>) {
        let species = self.boxes().iter().find_map(|b| b.annotation.species.clone());
        match self.boxes().first() {
            Some(b) => (b.annotation.part, species),
            None => (species.as_deref().map(Part::usual_for_species).unwrap_or(Part::Body), species),
        }
    }

    fn toolbar_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        ui.horizontal_wrapped(|ui| {
            if ui.button("< Previous").on_hover_text("Left arrow").clicked() {
                self.step_photo(false, cx);
            }
            if ui.button("Next >").on_hover_text("Right arrow").clicked() {
                self.step_photo(true, cx);
            }
            if ui.button("Next unreviewed").on_hover_text("U").clicked() {
                self.next_unreviewed(cx);
            }
            ui.separator();
            ui.toggle_value(&mut self.drawing, "Draw box").on_hover_text("B, then drag on the photo");
            if ui.button("Fit").on_hover_text("0").clicked() {
                self.zp = ZoomPan::default();
            }
            ui.label(format!("zoom {:.0}%", self.zp.zoom * 100.0));
            ui.separator();
            self.proposals_ui(ui, cx);
            ui.separator();
            match (self.queue_position(cx), &self.detail) {
                (Some(i), Some(d)) => {
                    ui.label(format!("{} of {} · {}", i + 1, cx.state.queue.len(), d.photo.stored_path));
                }
                (None, Some(d)) => {
                    ui.label(format!("not in the library's current view · {}", d.photo.stored_path));
                }
                _ => {}
            }
        });
    }

    /// The detector's proposals: the score under which they are hidden, and verifying those at
    /// or above it in the whole queue (only when asked: proposals are never accepted silently).
    fn proposals_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        ui.label("Proposals:");
        let mut threshold = cx.state.settings.proposal_threshold;
        let slider = ui
            .add(egui::Slider::new(&mut threshold, 0.0..=1.0).step_by(0.01).fixed_decimals(2).text("minimum score"))
            .on_hover_text(
                "Unreviewed detector proposals scoring under this are hidden: not drawn, listed or reviewed",
            );
        let at_least = Hundredths::nearest(threshold);
        if slider.changed() {
            cx.send(Intent::ChangeSetting(SettingChange::ProposalThreshold(at_least.value())));
        }
        // The photo shown counts too when it has left the queue (reviewed out of a filter).
        let outside = self.photo.filter(|_| self.queue_position(cx).is_none());
        let count = cx.state.queue.len() + usize::from(outside.is_some());
        let button = egui::Button::new(format!("Verify all ≥ {at_least}"));
        let hover = format!(
            "Verify every unreviewed proposal scoring {at_least} or more on the {count} photo(s) of the queue \
             (the library's view), as one edit: one undo (Ctrl+Z) takes them all back"
        );
        if ui.add_enabled(count > 0, button).on_hover_text(hover).clicked() {
            let photos = cx.state.queue.iter().copied().chain(outside).collect();
            cx.send(Intent::Edit(CatalogueEdit::VerifyProposals { photos, at_least }));
        }
        self.detector_ui(ui, cx);
    }

    /// Proposing boxes and retraining the detector, both background jobs (the status bar shows
    /// their progress and cancels them).
    fn detector_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let on = cx.state.detection_on;
        let busy = cx.state.detecting.is_some();
        let off = "Detection is off in this window: no detector backbone was given";
        let (detect_hover, retrain_hover) = if !on {
            (off.to_string(), off.to_string())
        } else if busy {
            let running = "Boxes are being detected: the status bar shows the progress and cancels it";
            (running.to_string(), running.to_string())
        } else {
            let detector = match cx.state.detector.as_ref().and_then(|d| d.active.as_ref()) {
                Some(file) => format!("the catalogue's detector ({})", file.display()),
                None => "zero-shot proposals (the catalogue has no detector yet)".to_string(),
            };
            (
                format!(
                    "Propose boxes with {detector} on every photo that has no box; each photo is one undoable edit"
                ),
                "Train the catalogue's detector on its verified, drawn and imported boxes, make it the catalogue's \
                 detector, and propose again on the photos without a reviewed box"
                    .to_string(),
            )
        };
        if ui.add_enabled(on && !busy, egui::Button::new("Detect boxes")).on_hover_text(detect_hover).clicked() {
            cx.send(Intent::Detect(None));
        }
        let offer = on && cx.state.detector.as_ref().is_some_and(|d| d.retrain_worth_it());
        let retrain = egui::Button::new("Retrain detector").selected(offer);
        if ui.add_enabled(on && !busy, retrain).on_hover_text(retrain_hover).clicked() {
            cx.send(Intent::RetrainDetector);
        }
    }

    /// Offers retraining once enough boxes were verified or drawn since the detector learned.
    fn retrain_notice_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let Some(status) = cx.state.detector.as_ref().filter(|d| cx.state.detection_on && d.retrain_worth_it()) else {
            return;
        };
        let new = status.new_boxes();
        let text = match status.trained_on {
            Some(_) => format!(
                "{new} box(es) verified or drawn since the detector was trained: Retrain detector so its proposals \
                 learn from them"
            ),
            None => format!(
                "{new} verified, drawn or imported box(es) and no detector trained on them yet: Retrain detector \
                 so its proposals learn from them"
            ),
        };
        ui.horizontal_wrapped(|ui| {
            ui.colored_label(egui::Color32::from_rgb(250, 170, 40), text);
            if let Some(problem) = &status.problem {
                ui.weak(problem.as_str());
            }
        });
    }

    fn side_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let Some(detail) = self.detail.clone() else { return };
        ui.heading("Boxes");
        if detail.boxes.is_empty() {
            ui.label("No box yet. Press B and drag on the photo to draw one.");
        }
        let mut select = None;
        for (i, b) in detail.boxes.iter().enumerate().filter(|(_, b)| self.shows(b)) {
            let selected = self.selected == Some(b.annotation.id);
            let text = egui::RichText::new(box_title(i, b)).color(status_color(b.annotation.status));
            if ui.selectable_label(selected, text).clicked() {
                select = Some(b.annotation.id);
            }
        }
        let hidden = detail.boxes.len() - self.shown().count();
        if hidden > 0 {
            ui.weak(format!("{hidden} proposal(s) scoring under {} hidden", self.threshold));
        }
        if let Some(s) = select {
            self.selected = Some(s);
        }
        ui.separator();
        if let Some(i) = self.selected_index() {
            let b = self.boxes()[i].clone();
            ui.horizontal_wrapped(|ui| {
                if ui.button("Verify").on_hover_text("Enter").clicked() {
                    self.review(Status::Verified, cx);
                }
                if ui.button("Reject").on_hover_text("Delete").clicked() {
                    self.review(Status::Rejected, cx);
                }
                if ui.button("Reopen").on_hover_text("Mark as unreviewed").clicked() {
                    let annotations = vec![b.annotation.id];
                    cx.send(Intent::Edit(CatalogueEdit::SetStatus { annotations, status: Status::Unreviewed }));
                }
                if ui.button("Delete box").on_hover_text("Shift+Delete").clicked() {
                    self.delete_selected(cx);
                }
            });
            let (mut part, mut side) = (b.annotation.part, b.annotation.side);
            egui::ComboBox::from_label("Part").selected_text(part.as_str()).show_ui(ui, |ui| {
                for p in Part::ALL {
                    ui.selectable_value(&mut part, *p, p.as_str());
                }
            });
            egui::ComboBox::from_label("Side").selected_text(side.as_str()).show_ui(ui, |ui| {
                for s in Side::ALL {
                    ui.selectable_value(&mut side, *s, s.as_str());
                }
            });
            if (part, side) != (b.annotation.part, b.annotation.side) {
                cx.send(Intent::Edit(CatalogueEdit::SetPartSide { annotation: b.annotation.id, part, side }));
            }
            match &b.individual {
                Some(ind) => {
                    let how = b.how.map(|h| format!(" ({h})")).unwrap_or_default();
                    if ui.link(format!("Individual: {}{how}", individual_label(ind))).clicked() {
                        cx.send(Intent::OpenIndividual(ind.id));
                    }
                }
                None => {
                    ui.label("Individual: not identified");
                }
            }
            ui.horizontal(|ui| {
                let field = labelled_text(ui, "Assign to", &mut self.assign_to, "individual code", 110.0);
                if ui.button("Assign").clicked() || submitted(ui, &field) {
                    match cx.state.find_individual(&self.assign_to) {
                        Ok(ind) => cx.send(Intent::Edit(CatalogueEdit::Assign {
                            annotations: vec![b.annotation.id],
                            individual: ind.individual.id,
                        })),
                        Err(e) => cx.send(Intent::Notify(Notice::error(e))),
                    }
                }
            });
            if ui.button("New individual").on_hover_text("This box shows an animal not in the catalogue").clicked() {
                cx.send(Intent::Edit(CatalogueEdit::NewIndividual {
                    annotations: vec![b.annotation.id],
                    name: String::new(),
                }));
            }
            if let Some(bb) = b.annotation.bbox {
                ui.weak(format!("{bb} · {}", b.annotation.source));
            } else {
                ui.weak(format!("whole photo · {}", b.annotation.source));
            }
        }
        ui.separator();
        ui.heading("Photo");
        let p = &detail.photo;
        ui.label(format!("{} x {} px", p.facts.width, p.facts.height));
        ui.label(format!("taken {}", p.facts.taken_at.as_deref().unwrap_or("(no date in the file)")));
        if let (Some(lat), Some(lon)) = (p.facts.latitude, p.facts.longitude) {
            ui.label(format!("at {lat:.5}, {lon:.5}"));
        }
        if !detail.tags.is_empty() {
            ui.label(format!("tags: {}", detail.tags.join(", ")));
        }
        ui.add(egui::Label::new(egui::RichText::new(detail.file.display().to_string()).weak()).wrap());
    }

    fn keys_now(&mut self, ui: &egui::Ui, cx: &mut PanelContext<'_>) {
        use egui::{Key, Modifiers};
        let pressed = |ui: &egui::Ui, m: Modifiers, k: Key| ui.input_mut(|i| i.consume_key(m, k));
        if pressed(ui, Modifiers::SHIFT, Key::Delete) {
            self.delete_selected(cx);
        }
        if pressed(ui, Modifiers::NONE, Key::Enter) {
            self.review(Status::Verified, cx);
        }
        if pressed(ui, Modifiers::NONE, Key::Delete) || pressed(ui, Modifiers::NONE, Key::Backspace) {
            self.review(Status::Rejected, cx);
        }
        if pressed(ui, Modifiers::NONE, Key::ArrowRight) || pressed(ui, Modifiers::NONE, Key::N) {
            self.step_photo(true, cx);
        }
        if pressed(ui, Modifiers::NONE, Key::ArrowLeft) || pressed(ui, Modifiers::NONE, Key::P) {
            self.step_photo(false, cx);
        }
        // Not Tab: egui moves keyboard focus with it, and a focused button would take Enter.
        if pressed(ui, Modifiers::NONE, Key::J) {
            self.step_box(true);
        }
        if pressed(ui, Modifiers::NONE, Key::K) {
            self.step_box(false);
        }
        if pressed(ui, Modifiers::NONE, Key::U) {
            self.next_unreviewed(cx);
        }
        if pressed(ui, Modifiers::NONE, Key::B) {
            self.drawing = !self.drawing;
        }
        if pressed(ui, Modifiers::NONE, Key::Escape) {
            self.drawing = false;
            self.drag = None;
        }
        if pressed(ui, Modifiers::NONE, Key::Num0) {
            self.zp = ZoomPan::default();
        }
        let zoom_in = pressed(ui, Modifiers::NONE, Key::Plus) || pressed(ui, Modifiers::NONE, Key::Equals);
        let zoom_out = pressed(ui, Modifiers::NONE, Key::Minus);
        if zoom_in || zoom_out {
            self.zp.zoom = (self.zp.zoom * if zoom_in { 1.25 } else { 0.8 }).clamp(0.25, 40.0);
        }
    }

    fn canvas_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let (rect, response) = ui.allocate_exact_size(ui.available_size(), egui::Sense::click_and_drag());
        let Some(detail) = &self.detail else {
            let text = if self.missing.is_some() {
                "This photo is no longer in the catalogue."
            } else if self.photo.is_some() {
                "Loading…"
            } else {
                "No photo to annotate: the library's view is empty."
            };
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                text,
                egui::FontId::proportional(16.0),
                ui.visuals().weak_text_color(),
            );
            return;
        };
        let (w, h) = (detail.photo.facts.width, detail.photo.facts.height);
        let size = size_of(w, h);
        // Zoom with the wheel (or pinch) around the pointer.
        if let Some(pointer) = response.hover_pos() {
            let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = pinch * (scroll / 300.0).exp();
            if (factor - 1.0).abs() > 1e-4 {
                self.zp.zoom_at(rect, size, pointer, factor);
            }
        }
        let t = ViewTransform::new(rect, size, self.zp);
        let painter = ui.painter_at(rect);
        let photo_rect = t.screen_from_box(&BoxPx::whole(w, h));
        let file_name = detail.photo.stored_path.rsplit('/').next().unwrap_or(&detail.photo.stored_path).to_string();
        match cx.images.get(&ImageRequest::view(&detail.photo.facts.hash, &detail.file)) {
            Picture::Ready(texture) => {
                let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                painter.image(texture.id(), photo_rect, uv, egui::Color32::WHITE);
            }
            Picture::Loading => {
                painter.rect_filled(photo_rect, 0.0, ui.visuals().extreme_bg_color);
                painter.text(
                    photo_rect.center(),
                    egui::Align2::CENTER_CENTER,
                    "Loading photo…",
                    egui::FontId::proportional(14.0),
                    ui.visuals().weak_text_color(),
                );
            }
            Picture::Failed(why) => placeholder(&painter, photo_rect, &file_name, why, ui.visuals()),
        }
        // Decode the next photo of the queue while this one is reviewed.
        if let Some(i) = self.queue_position(cx)
            && let Some(next) = cx.state.queue.get(i + 1).and_then(|&p| cx.state.row(p))
        {
            cx.images.prefetch(&ImageRequest::view(&next.hash, &next.file));
        }

        let pointer = response.interact_pointer_pos().or(response.hover_pos());
        let origin = ui.input(|i| i.pointer.press_origin());
        self.handle_drag(&response, &t, (w, h), pointer, origin, cx);

        // Boxes, the selected one last (on top) with its grips.
        let mut order: Vec<&BoxRecord> = self.shown().collect();
        order.sort_by_key(|b| Some(b.annotation.id) == self.selected);
        for b in order {
            let selected = Some(b.annotation.id) == self.selected;
            let bbox = match self.drag {
                Some(Drag::Edit { annotation, now, .. }) if annotation == b.annotation.id => now,
                _ => b.annotation.bbox.unwrap_or(BoxPx::whole(w, h)),
            };
            let r = t.screen_from_box(&bbox);
            let color = status_color(b.annotation.status);
            let stroke = egui::Stroke::new(if selected { 3.0 } else { 1.5 }, color);
            if b.annotation.source == Source::Detector && b.annotation.status == Status::Unreviewed {
                // A detector's proposal, not yet looked at by anyone: dashed.
                let path = [r.left_top(), r.right_top(), r.right_bottom(), r.left_bottom(), r.left_top()];
                painter.extend(egui::Shape::dashed_line(&path, stroke, 8.0, 5.0));
            } else {
                painter.rect_stroke(r, 0.0, stroke, egui::StrokeKind::Outside);
            }
            let who = b.individual.as_ref().map(|i| i.code.as_str()).unwrap_or("?");
            let mut label = format!("{} · {} · {}", b.annotation.part, b.annotation.status, who);
            if is_proposal(b.annotation.source, b.annotation.status)
                && let Some(score) = b.annotation.score
            {
                label = format!("{} {label}", Hundredths::of(score));
            }
            let font = egui::FontId::proportional(13.0);
            let galley = painter.layout_no_wrap(label, font, egui::Color32::BLACK);
            let at = egui::pos2(r.left(), (r.top() - galley.size().y - 2.0).max(rect.top()));
            painter.rect_filled(egui::Rect::from_min_size(at, galley.size() + egui::vec2(6.0, 2.0)), 2.0, color);
            painter.galley(at + egui::vec2(3.0, 1.0), galley, egui::Color32::BLACK);
            if selected {
                for c in [r.left_top(), r.right_top(), r.left_bottom(), r.right_bottom()] {
                    painter.rect_filled(egui::Rect::from_center_size(c, egui::vec2(8.0, 8.0)), 1.0, color);
                }
            }
        }
        if let Some(Drag::Draw { from, now }) = self.drag {
            let r = t.screen_from_box(&box_from_corners(from, now));
            painter.rect_stroke(r, 0.0, egui::Stroke::new(2.0, egui::Color32::WHITE), egui::StrokeKind::Outside);
        }
        // Say what a drag will do.
        if let Some(p) = response.hover_pos() {
            let cursor = if self.drawing {
                egui::CursorIcon::Crosshair
            } else {
                match self.selected_rect(&t, (w, h)).and_then(|r| grip_at(r, p, 6.0)) {
                    Some(Grip::Left | Grip::Right) => egui::CursorIcon::ResizeHorizontal,
                    Some(Grip::Top | Grip::Bottom) => egui::CursorIcon::ResizeVertical,
                    Some(Grip::TopLeft | Grip::BottomRight) => egui::CursorIcon::ResizeNwSe,
                    Some(Grip::TopRight | Grip::BottomLeft) => egui::CursorIcon::ResizeNeSw,
                    Some(Grip::Inside) => egui::CursorIcon::Move,
                    None => egui::CursorIcon::Grab,
                }
            };
            ui.ctx().set_cursor_icon(cursor);
        }
    }

    /// Selects a shown box of the photo as it arrives (or as the threshold changes).
    fn select_on(&mut self, arrival: Arrival) {
        let first = self.shown().next().map(|b| b.annotation.id);
        let still_there = self.selected.filter(|s| self.shown().any(|b| b.annotation.id == *s));
        self.selected = match arrival {
            Arrival::FirstUnreviewed => self.first_shown_unreviewed().or(first),
            Arrival::Last => self.shown().last().map(|b| b.annotation.id),
            Arrival::Keep => still_there.or(first),
        };
    }

    fn selected_rect(&self, t: &ViewTransform, (w, h): (u32, u32)) -> Option<egui::Rect> {
        let b = &self.boxes()[self.selected_index()?];
        Some(t.screen_from_box(&b.annotation.bbox.unwrap_or(BoxPx::whole(w, h))))
    }

    /// The topmost (smallest) box under a screen point.
    fn box_at(&self, t: &ViewTransform, (w, h): (u32, u32), p: egui::Pos2) -> Option<AnnotationId> {
        self.shown()
            .map(|b| (b, t.screen_from_box(&b.annotation.bbox.unwrap_or(BoxPx::whole(w, h)))))
            .filter(|(_, r)| r.expand(4.0).contains(p))
            .min_by(|a, b| a.1.area().total_cmp(&b.1.area()))
            .map(|(b, _)| b.annotation.id)
    }

    fn handle_drag(
        &mut self,
        response: &egui::Response,
        t: &ViewTransform,
        (w, h): (u32, u32),
        pointer: Option<egui::Pos2>,
        origin: Option<egui::Pos2>,
        cx: &mut PanelContext<'_>,
    ) {
        let Some(p) = pointer else { return };
        let img = t.image_from_screen(p);
        if response.clicked() && !self.drawing {
            self.selected = self.box_at(t, (w, h), p).or(self.selected);
        }
        if response.drag_started() {
            // A drag is recognised after the pointer moved a little: it starts where it was pressed.
            let p = origin.unwrap_or(p);
            let img = t.image_from_screen(p);
            let primary = response.dragged_by(egui::PointerButton::Primary);
            self.drag = if !primary {
                Some(Drag::Pan)
            } else if self.drawing {
                Some(Drag::Draw { from: img, now: img })
            } else {
                let on_selected = self.selected_rect(t, (w, h)).and_then(|r| grip_at(r, p, 6.0));
                let grabbed = match on_selected {
                    Some(grip) => self.selected.map(|id| (id, grip)),
                    None => self.box_at(t, (w, h), p).map(|id| (id, Grip::Inside)),
                };
                match grabbed {
                    Some((annotation, grip)) => {
                        self.selected = Some(annotation);
                        let start = self
                            .boxes()
                            .iter()
                            .find(|b| b.annotation.id == annotation)
                            .and_then(|b| b.annotation.bbox)
                            .unwrap_or(BoxPx::whole(w, h));
                        Some(Drag::Edit { annotation, grip, start, from: img, now: start })
                    }
                    None => Some(Drag::Pan),
                }
            };
        }
        if response.dragged() {
            match &mut self.drag {
                Some(Drag::Edit { grip, start, from, now, .. }) => *now = drag_box(start, *grip, img - *from),
                Some(Drag::Draw { now, .. }) => *now = img,
                Some(Drag::Pan) => self.zp.pan += response.drag_delta(),
                None => {}
            }
        }
        if response.drag_stopped() {
            let min_side = (6.0 / t.scale) as f64; // six screen points, in photo pixels
            match self.drag.take() {
                Some(Drag::Edit { annotation, start, now, .. }) if now != start => match now.fit(w, h) {
                    Fit::Inside(b) | Fit::Clipped(b) if b.w >= min_side && b.h >= min_side => {
                        if let Some(d) = &mut self.detail
                            && let Some(rec) = d.boxes.iter_mut().find(|r| r.annotation.id == annotation)
                        {
                            rec.annotation.bbox = Some(b);
                        }
                        cx.send(Intent::Edit(CatalogueEdit::MoveBox { annotation, bbox: b }));
                    }
                    _ => cx.send(Intent::Notify(Notice::info("That box would be empty or off the photo; not moved"))),
                },
                Some(Drag::Draw { from, now }) => {
                    self.drawing = false;
                    match box_from_corners(from, now).fit(w, h) {
                        Fit::Inside(b) | Fit::Clipped(b) if b.w >= min_side && b.h >= min_side => {
                            let (part, species) = self.default_part();
                            if let Some(photo) = self.photo {
                                cx.send(Intent::Edit(CatalogueEdit::AddBox { photo, bbox: b, part, species }));
                                self.arrival = Arrival::Last;
                            }
                        }
                        _ => cx.send(Intent::Notify(Notice::info("Drag across the animal to draw a box"))),
                    }
                }
                _ => {}
            }
        }
    }
}

impl Panel for AnnotatePanel {
    fn id(&self) -> PanelId {
        PanelId::ANNOTATE
    }

    fn title(&self) -> &'static str {
        "Annotate"
    }

    fn shortcuts(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("Enter", "verify the selected box, then go on"),
            ("Delete", "reject the selected box, then go on"),
            ("Shift+Delete", "delete the selected box"),
            ("Right / Left (N / P)", "next / previous photo of the queue"),
            ("U", "next unreviewed box"),
            ("J / K", "next / previous box of the photo"),
            ("B", "draw a new box (drag on the photo)"),
            ("Drag a box, its corners or edges", "move or resize it"),
            ("Wheel, + / -, 0", "zoom, fit"),
            ("Drag outside boxes, right or middle drag", "pan"),
            ("Esc", "stop drawing or dragging"),
        ]
    }

    fn on_event(&mut self, event: &Event, cx: &mut PanelContext<'_>) {
        self.threshold = cx.state.settings.proposal_threshold();
        match event {
            Event::Opened { .. } => *self = AnnotatePanel::default(),
            Event::Photo { id, detail } if Some(*id) == self.photo => match detail {
                Some(d) => {
                    let arrival = self.arrival;
                    self.detail = Some((**d).clone());
                    self.arrival = Arrival::Keep;
                    self.select_on(arrival);
                }
                None => {
                    self.detail = None;
                    self.missing = Some(*id);
                }
            },
            _ => {}
        }
    }

    fn on_intent(&mut self, intent: &Intent, cx: &mut PanelContext<'_>) {
        if let Intent::OpenPhoto(id) = intent {
            self.open(*id, Arrival::FirstUnreviewed, cx);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let threshold = cx.state.settings.proposal_threshold();
        if threshold != self.threshold {
            self.threshold = threshold;
            // The selected box may have just been hidden.
            self.select_on(Arrival::Keep);
        }
        self.track_queue(cx);
        if self.photo.is_none()
            && let Some(&first) = cx.state.queue.first()
        {
            self.open(first, Arrival::FirstUnreviewed, cx);
        }
        if cx.keys {
            self.keys_now(ui, cx);
        }
        egui::Panel::top("annotate_toolbar").show(ui, |ui| {
            self.toolbar_ui(ui, cx);
            self.retrain_notice_ui(ui, cx);
        });
        egui::Panel::right("annotate_boxes").default_size(300.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.side_ui(ui, cx));
        });
        egui::CentralPanel::default().frame(egui::Frame::NONE).show(ui, |ui| self.canvas_ui(ui, cx));
    }
}
