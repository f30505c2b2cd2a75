//! Map: every embedded crop on the gallery's principal plane (`map::EmbeddingMap`), coloured
//! by individual or by review status. Hover and click go through the map's k-d tree; a drag
//! selects with a box or a lasso; a click opens the crop in Identify; a selection can be
//! assigned to an individual or shown in the library.
//!
//! The points are drawn into a picture by a job (`map_picture`) whenever the view, the
//! colouring or the selection changes; a frame draws that one texture.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use eframe::egui;

use super::{Panel, PanelContext};
use crate::app::embedding::GalleryData;
use crate::app::images::ImageRequest;
use crate::app::map_picture::{ColorBy, MapDrawing, MapPicture, MapView, RasterKey, STATUS_COLORS};
use crate::app::messages::{CatalogueEdit, Event, Intent, Notice, PanelId};
use crate::app::widgets::{labelled_text, model_status_ui, paint_picture, submitted};
use crate::base::ids::{AnnotationId, IndividualId, PhotoId};

/// How near (in points) the pointer must be to a crop to hover it.
const HOVER_REACH: f32 = 8.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tool {
    #[default]
    Box,
    Lasso,
}

#[derive(Default)]
pub struct MapPanel {
    view: MapView,
    color_by: ColorBy,
    tool: Tool,
    /// The box's corners or the lasso's path, in map units, while dragging.
    drag: Option<Vec<[f32; 2]>>,
    /// Selected crops, by annotation (gallery rows change when it is read again).
    selection: BTreeSet<AnnotationId>,
    selection_version: u64,
    hovered: Option<usize>,
    raster: Option<(RasterKey, egui::TextureHandle)>,
    /// The picture asked for and not drawn yet.
    drawing: Option<RasterKey>,
    /// The picture drawn, to be made a texture when the canvas is drawn.
    drawn: Option<MapPicture>,
    assign_to: String,
    /// ((selection version, gallery generation), crops, individuals) of the selection.
    counted: Option<((u64, u64), usize, usize)>,
}

impl MapPanel {
    pub fn selection(&self) -> &BTreeSet<AnnotationId> {
        &self.selection
    }

    fn select(&mut self, rows: Vec<usize>, add: bool, data: &GalleryData) {
        if !add {
            self.selection.clear();
        }
        self.selection
            .extend(rows.into_iter().filter_map(|r| data.load.gallery.entries().get(r)).map(|e| e.annotation));
        self.selection_version += 1;
    }

    /// Keeps the picture of the points in step with the view, drawn off the UI thread.
    fn raster(&mut self, ui: &egui::Ui, cx: &mut PanelContext<'_>, canvas: egui::Rect, data: &Arc<GalleryData>) {
        let ppp = ui.ctx().pixels_per_point();
        let pixels =
            [(canvas.width() * ppp).round().max(1.0) as usize, (canvas.height() * ppp).round().max(1.0) as usize];
        let key = RasterKey {
            generation: cx.state.model.generation,
            view: self.view,
            pixels,
            color_by: self.color_by,
            selection: self.selection_version,
        };
        if let Some(picture) = self.drawn.take() {
            let texture = ui.ctx().load_texture("embedding map", picture.image, egui::TextureOptions::NEAREST);
            self.raster = Some((picture.key, texture));
        }
        // One picture at a time; a new gallery asks again even if the last one never came.
        let in_flight = self.drawing.as_ref().is_some_and(|k| k.generation == key.generation);
        if in_flight || self.raster.as_ref().is_some_and(|(k, _)| *k == key) {
            return;
        }
        let selected: HashSet<usize> = self.selection.iter().filter_map(|&a| data.row(a)).collect();
        self.drawing = Some(key.clone());
        cx.send(Intent::DrawMap(Box::new(MapDrawing { gallery: data.clone(), key, selected, pixels_per_point: ppp })));
    }

    fn canvas_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &Arc<GalleryData>) {
        let size = ui.available_size();
        let (canvas, response) = ui.allocate_exact_size(size, egui::Sense::click_and_drag());
        let n = data.map.len();
        response
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, format!("Embedding map of {n} crops")));
        ui.painter().rect_filled(canvas, 0.0, ui.visuals().extreme_bg_color);
        self.raster(ui, cx, canvas, data);
        if let Some((key, texture)) = &self.raster
            && key.generation == cx.state.model.generation
        {
            let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            ui.painter().image(texture.id(), canvas, uv, egui::Color32::WHITE);
        }

        // Wheel zooms at the pointer; the right or middle button pans.
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0
                && let Some(pos) = response.hover_pos()
            {
                let before = self.view.map_from_screen(canvas, pos);
                self.view.zoom = (self.view.zoom * (scroll * 0.003).exp()).clamp(0.5, 400.0);
                let after = self.view.map_from_screen(canvas, pos);
                self.view.center += egui::vec2(before[0] - after[0], before[1] - after[1]);
            }
        }
        if response.dragged_by(egui::PointerButton::Secondary) || response.dragged_by(egui::PointerButton::Middle) {
            self.view.center -= response.drag_delta() / self.view.scale(canvas.size());
        }

        // Hover through the k-d tree.
        self.hovered = response.hover_pos().and_then(|pos| {
            let [x, y] = self.view.map_from_screen(canvas, pos);
            let (row, distance) = data.map.nearest(x, y)?;
            (distance * self.view.scale(canvas.size()) <= HOVER_REACH).then_some(row)
        });

        // Box or lasso with the primary button; Shift adds to the selection. It starts where
        // the button went down: a drag is only recognised once the pointer has moved a few
        // points from there.
        if response.drag_started_by(egui::PointerButton::Primary)
            && let Some(pos) = ui.input(|i| i.pointer.press_origin())
        {
            self.drag = Some(vec![self.view.map_from_screen(canvas, pos)]);
        }
        if let (Some(path), Some(pos)) = (&mut self.drag, response.interact_pointer_pos())
            && response.dragged_by(egui::PointerButton::Primary)
        {
            let p = self.view.map_from_screen(canvas, pos);
            match self.tool {
                Tool::Box => {
                    path.truncate(1);
                    path.push(p);
                }
                Tool::Lasso => path.push(p),
            }
        }
        if let Some(path) = &self.drag {
            let screen: Vec<egui::Pos2> = path.iter().map(|p| self.view.screen_from_map(canvas, *p)).collect();
            let stroke = egui::Stroke::new(1.5, ui.visuals().selection.stroke.color);
            match (self.tool, screen.as_slice()) {
                (Tool::Box, [a, b]) => {
                    ui.painter().rect_stroke(egui::Rect::from_two_pos(*a, *b), 0.0, stroke, egui::StrokeKind::Middle);
                }
                (Tool::Lasso, pts) if pts.len() > 1 => {
                    ui.painter().add(egui::Shape::closed_line(pts.to_vec(), stroke));
                }
                _ => {}
            }
        }
        if response.drag_stopped_by(egui::PointerButton::Primary)
            && let Some(path) = self.drag.take()
        {
            let add = ui.input(|i| i.modifiers.shift);
            let rows = match (self.tool, path.as_slice()) {
                (Tool::Box, [a, b]) => data.map.within_rect(a[0], a[1], b[0], b[1]),
                (Tool::Lasso, pts) => data.map.within_polygon(&pts.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>()),
                _ => Vec::new(),
            };
            self.select(rows, add, data);
        }

        if let Some(row) = self.hovered
            && let Some(crop) = data.crop_of_row(row)
        {
            let p = self.view.screen_from_map(canvas, data.map.points()[row]);
            ui.painter().circle_stroke(p, 6.0, egui::Stroke::new(2.0, ui.visuals().strong_text_color()));
            let who = crop.code.clone().unwrap_or_else(|| "unidentified".into());
            let text = format!("Hovering {who} · {} · {} (click to open)", crop.file_name(), crop.status);
            // A label, not painted text: screen readers (and tests) read it.
            let at = egui::Rect::from_min_size(
                canvas.left_top() + egui::vec2(8.0, 8.0),
                egui::vec2(canvas.width() - 16.0, 20.0),
            );
            ui.put(at, egui::Label::new(egui::RichText::new(&text).strong()).truncate());
            let crop = crop.clone();
            let response = response.clone().on_hover_ui_at_pointer(|ui| {
                let (rect, _) = ui.allocate_exact_size(egui::vec2(160.0, 120.0), egui::Sense::hover());
                let picture = cx.images.get(&ImageRequest::thumbnail(&crop.hash, &crop.file, crop.bbox));
                paint_picture(ui, rect, picture, crop.file_name());
                ui.label(&text);
            });
            if response.clicked() {
                cx.send(Intent::OpenCrop(crop.annotation));
            }
        }
    }

    fn side_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData) {
        ui.heading("Map");
        let [a, b] = data.map.explained();
        ui.label(format!(
            "{} crop(s) on the plane of the two main directions ({:.0}% and {:.0}% of the variance)",
            data.map.len(),
            a * 100.0,
            b * 100.0
        ));
        let left_out = data.load.describe();
        if !left_out.is_empty() {
            ui.weak(format!("Not on the map: {left_out}"));
        }
        ui.separator();
        ui.horizontal(|ui| {
            ui.label("Colour by");
            ui.selectable_value(&mut self.color_by, ColorBy::Individual, "individual");
            ui.selectable_value(&mut self.color_by, ColorBy::Status, "status");
        });
        match self.color_by {
            ColorBy::Individual => {
                ui.weak("Each individual its own colour; grey: unidentified");
            }
            ColorBy::Status => {
                for (s, c) in STATUS_COLORS {
                    ui.colored_label(c, format!("● {s}"));
                }
            }
        }
        ui.horizontal(|ui| {
            ui.label("Select with");
            ui.selectable_value(&mut self.tool, Tool::Box, "box");
            ui.selectable_value(&mut self.tool, Tool::Lasso, "lasso");
        });
        ui.weak("Drag to select (Shift adds), wheel to zoom, right-drag to pan, click a crop to open it");
        if ui.button("Reset view").clicked() {
            self.view = MapView::default();
        }
        ui.separator();
        // Counted once per change of the selection or the gallery, not every frame.
        let key = (self.selection_version, cx.state.model.generation);
        if self.counted.is_none_or(|(k, ..)| k != key) {
            let selected: Vec<&crate::app::records::CropInfo> =
                self.selection.iter().filter_map(|&a| data.crop(a)).collect();
            let individuals: HashSet<IndividualId> = selected.iter().filter_map(|c| c.individual).collect();
            self.counted = Some((key, selected.len(), individuals.len()));
        }
        let (crops, individuals) = self.counted.map(|(_, c, i)| (c, i)).unwrap_or_default();
        ui.strong(format!("{crops} crop(s) selected, {individuals} individual(s)"));
        if crops == 0 {
            return;
        }
        let selection = &self.selection;
        let selected = || selection.iter().filter_map(|&a| data.crop(a));
        let mut assigned = false;
        ui.horizontal(|ui| {
            let field = labelled_text(ui, "Assign to", &mut self.assign_to, "individual code or name", 130.0);
            if ui.button("Assign").clicked() || submitted(ui, &field) {
                match cx.state.find_individual(&self.assign_to) {
                    Ok(ind) => {
                        let annotations: Vec<AnnotationId> = selected().map(|c| c.annotation).collect();
                        cx.send(Intent::Edit(CatalogueEdit::Assign { annotations, individual: ind.individual.id }));
                        assigned = true;
                    }
                    Err(e) => cx.send(Intent::Notify(Notice::error(e))),
                }
            }
        });
        let mut clear = false;
        ui.horizontal(|ui| {
            if ui.button("Open in library").clicked() {
                let photos: BTreeSet<PhotoId> = selected().map(|c| c.photo).collect();
                cx.send(Intent::ShowPhotosInLibrary(photos.into_iter().collect()));
            }
            clear = ui.button("Clear selection").clicked();
        });
        if assigned {
            self.assign_to.clear();
        }
        if clear {
            self.selection.clear();
            self.selection_version += 1;
        }
    }
}

impl Panel for MapPanel {
    fn id(&self) -> PanelId {
        PanelId::MAP
    }

    fn title(&self) -> &'static str {
        "Map"
    }

    fn shortcuts(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("Click a crop", "open it in Identify"),
            ("Drag", "select with a box or a lasso (Shift adds)"),
            ("Wheel / right-drag", "zoom / pan"),
        ]
    }

    fn on_event(&mut self, event: &Event, _cx: &mut PanelContext<'_>) {
        match event {
            Event::Opened { .. } => *self = MapPanel::default(),
            Event::MapDrawn(picture) if self.drawing.as_ref() == Some(&picture.key) => {
                self.drawing = None;
                self.drawn = Some(picture.clone());
            }
            _ => {}
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        let Some(data) = cx.state.model.gallery.clone().filter(|d| !d.map.is_empty()) else {
            egui::CentralPanel::default().show(ui, |ui| {
                if model_status_ui(ui, &cx.state.model, cx.out) {
                    ui.label("No crop has an embedding yet.");
                }
            });
            return;
        };
        egui::Panel::right("map_side").default_size(280.0).show(ui, |ui| self.side_ui(ui, cx, &data));
        egui::CentralPanel::default().frame(egui::Frame::NONE).show(ui, |ui| self.canvas_ui(ui, cx, &data));
    }
}
