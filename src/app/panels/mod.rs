//! The panels of the window. Each is a struct implementing `Panel`; adding one means writing
//! the struct and listing it in `WhaleApp`'s `all_panels()`. A panel reads the shared `AppState`, asks
//! `ImageCache` for pictures, and changes anything only by pushing `Intent`s: it never runs
//! work of its own, it asks for it and shows the `Event` that answers.

pub mod annotate;
pub mod errors;
pub mod identify;
pub mod individuals;
pub mod library;
pub mod map;
pub mod train;
pub mod view;

use eframe::egui;

use super::images::ImageCache;
use super::messages::{Event, Intent, PanelId};
use super::state::AppState;

/// What a panel gets each frame.
pub struct PanelContext<'a> {
    pub state: &'a AppState,
    pub images: &'a mut ImageCache,
    pub out: &'a mut Vec<Intent>,
    /// Whether single-key shortcuts are this panel's: it is shown, no text field has focus and
    /// no dialog is open.
    pub keys: bool,
}

impl PanelContext<'_> {
    pub fn send(&mut self, intent: Intent) {
        self.out.push(intent);
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
    /// A worker's or a job's answer (every panel sees every event addressed to panels).
    fn on_event(&mut self, _event: &Event, _cx: &mut PanelContext<'_>) {}
    /// An intent addressed to panels (`OpenPhoto`, `OpenIndividual`, ...), before the app shows the panel.
    fn on_intent(&mut self, _intent: &Intent, _cx: &mut PanelContext<'_>) {}
    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>);
}
