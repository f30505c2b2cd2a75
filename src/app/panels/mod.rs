//! The panels of the window. Each is a struct implementing `Panel`; adding one means writing
//! the struct and listing it in `all()`. A panel reads the
//! shared `AppState`, asks `ImageCache` for pictures, and changes anything only by pushing
//! `Command`s.

pub mod annotate;
pub mod errors;
pub mod identify;
pub mod individuals;
pub mod library;
pub mod map;
pub mod train;
pub mod view;

use eframe::egui;

use super::command::{Command, Event};
use super::images::{ImageCache, Picture};
use super::state::AppState;

/// A panel's name, as the `WHALEID_PANEL` variable and the View menu use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PanelId(pub &'static str);

impl PanelId {
    pub const LIBRARY: PanelId = PanelId("library");
    pub const ANNOTATE: PanelId = PanelId("annotate");
    pub const INDIVIDUALS: PanelId = PanelId("individuals");
    pub const IDENTIFY: PanelId = PanelId("identify");
    pub const MAP: PanelId = PanelId("map");
    pub const ERRORS: PanelId = PanelId("errors");
    pub const TRAIN: PanelId = PanelId("train");
}

impl Default for PanelId {
    fn default() -> Self {
        PanelId::LIBRARY
    }
}

/// What a panel gets each frame.
pub struct PanelContext<'a> {
    pub state: &'a AppState,
    pub images: &'a mut ImageCache,
    pub out: &'a mut Vec<Command>,
    /// Whether single-key shortcuts are this panel's: it is shown, no text field has focus and
    /// no dialog is open.
    pub keys: bool,
}

impl PanelContext<'_> {
    pub fn send(&mut self, command: Command) {
        self.out.push(command);
    }
}

pub trait Panel {
    fn id(&self) -> PanelId;
    fn title(&self) -> &'static str;
    /// Key bindings, for the shortcuts overlay (F1).
    fn shortcuts(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Every frame, shown or not: keep what the panel derives from the state up to date.
    fn update(&mut self, _cx: &mut PanelContext<'_>) {}
    /// A worker's answer (every panel sees every event).
    fn on_event(&mut self, _event: &Event, _cx: &mut PanelContext<'_>) {}
    /// A command addressed to panels (`OpenPhoto`, `OpenIndividual`), before the app shows the panel.
    fn on_command(&mut self, _command: &Command, _cx: &mut PanelContext<'_>) {}
    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>);
}

/// The panels in the order of the tab bar.
pub fn all() -> Vec<Box<dyn Panel>> {
    vec![
        Box::new(library::LibraryPanel::default()),
        Box::new(annotate::AnnotatePanel::default()),
        Box::new(individuals::IndividualsPanel::default()),
        Box::new(identify::IdentifyPanel::default()),
        Box::new(map::MapPanel::default()),
        Box::new(errors::ErrorsPanel::default()),
        Box::new(train::TrainPanel::default()),
    ]
}

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
