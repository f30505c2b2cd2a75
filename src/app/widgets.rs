//! Widgets the panels share: pictures with their placeholders and accessible names, labelled
//! text fields, and what the identification side says while there is nothing to search with.

use eframe::egui;

use super::embedding::{ModelState, ModelStatus};
use super::images::Picture;
use super::messages::Intent;

/// Paints a picture fitted (aspect kept) into `rect`; while loading a quiet frame, and when the
/// photo cannot be shown a placeholder that names the file and says why.
pub fn paint_picture(ui: &egui::Ui, rect: egui::Rect, picture: Picture<'_>, file_name: &str) {
    let painter = ui.painter_at(rect);
    let visuals = ui.visuals();
    match picture {
        Picture::Ready(texture) => {
            let size = texture.size_vec2();
            let scale = (rect.width() / size.x).min(rect.height() / size.y);
            let shown = egui::Rect::from_center_size(rect.center(), size * scale);
            painter.image(
                texture.id(),
                shown,
                egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                egui::Color32::WHITE,
            );
        }
        Picture::Loading => {
            painter.rect_filled(rect, 2.0, visuals.extreme_bg_color);
        }
        Picture::Failed(why) => {
            placeholder(&painter, rect, file_name, why, visuals);
        }
    }
}

/// A picture's name for screen readers and tests: the file, and why it cannot be shown.
pub fn accessible_label(name: &str, picture: Option<&Picture<'_>>) -> String {
    match picture {
        Some(Picture::Failed(why)) => format!("{name} (cannot show: {why})"),
        _ => name.to_string(),
    }
}

/// The placeholder of a photo that cannot be shown.
pub fn placeholder(painter: &egui::Painter, rect: egui::Rect, file_name: &str, why: &str, visuals: &egui::Visuals) {
    painter.rect_filled(rect, 2.0, visuals.extreme_bg_color);
    painter.rect_stroke(rect, 2.0, (1.0, visuals.error_fg_color), egui::StrokeKind::Inside);
    let font = egui::FontId::proportional(if rect.height() > 200.0 { 16.0 } else { 11.0 });
    let text = format!("Cannot show {file_name}\n{why}");
    let galley = painter.layout(text, font, visuals.error_fg_color, rect.width() - 8.0);
    let pos = rect.center() - galley.size() / 2.0;
    painter.galley(pos, galley, visuals.error_fg_color);
}

/// A text field tied to its label, so it can be reached by name (screen readers, tests).
pub fn labelled_text(ui: &mut egui::Ui, label: &str, text: &mut String, hint: &str, width: f32) -> egui::Response {
    let l = ui.label(label);
    ui.add(egui::TextEdit::singleline(text).hint_text(hint).desired_width(width)).labelled_by(l.id)
}

/// Whether Enter was pressed in a single-line field that just lost focus because of it.
pub fn submitted(ui: &egui::Ui, response: &egui::Response) -> bool {
    response.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter))
}

/// What the identification side says when there is nothing to search with; true when there is
/// a gallery to work with. `Try again` after a failure asks for the model again.
pub fn model_status_ui(ui: &mut egui::Ui, model: &ModelState, out: &mut Vec<Intent>) -> bool {
    match &model.status {
        ModelStatus::Off => {
            ui.label("Identification is off in this window.");
            false
        }
        ModelStatus::Failed(why) => {
            ui.colored_label(ui.visuals().error_fg_color, why);
            ui.label("Everything else works meanwhile. The notice's details say how to get the weights by hand.");
            if ui.button("Try again").clicked() {
                out.push(Intent::LoadEmbedder);
            }
            false
        }
        ModelStatus::Loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Preparing identification (the status bar shows progress)…");
            });
            false
        }
        ModelStatus::Ready if model.gallery.is_none() => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Embedding crops and reading the embeddings…");
            });
            false
        }
        ModelStatus::Ready => true,
    }
}
