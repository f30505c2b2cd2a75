//! The embedding map as a picture: which part of the plane is on screen (`MapView`), the
//! colours of the points, and the drawing of every point into one image, which runs as a
//! job whenever the view, the colouring or the selection changes. A frame then draws one
//! texture however many crops there are (100,000 points would be 100,000 shapes to lay out
//! every frame).

use std::collections::HashSet;
use std::sync::Arc;

use eframe::egui;

use super::embedding::GalleryData;
use crate::base::ids::IndividualId;
use crate::base::vocabulary::Status;

/// A picture of the points to draw, and what it depends on.
#[derive(Debug)]
pub struct MapDrawing {
    pub gallery: Arc<GalleryData>,
    pub key: RasterKey,
    /// Selected gallery rows.
    pub selected: HashSet<usize>,
    pub pixels_per_point: f32,
}

/// The points drawn, for the view in `key` (shared, so that handing it on copies no pixels).
#[derive(Clone)]
pub struct MapPicture {
    pub key: RasterKey,
    pub image: Arc<egui::ColorImage>,
}

impl std::fmt::Debug for MapPicture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MapPicture({:?}, {:?})", self.key, self.image.size)
    }
}

impl MapDrawing {
    pub fn draw(&self) -> MapPicture {
        MapPicture {
            key: self.key.clone(),
            image: Arc::new(rasterize(&self.gallery, &self.key, &self.selected, self.pixels_per_point)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ColorBy {
    #[default]
    Individual,
    Status,
}

/// Everything the picture of the points depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterKey {
    /// The gallery's generation (`ModelState::generation`).
    pub generation: u64,
    pub view: MapView,
    pub pixels: [usize; 2],
    pub color_by: ColorBy,
    /// The selection's version.
    pub selection: u64,
}

/// Which part of the unit square is on screen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapView {
    pub center: egui::Vec2,
    pub zoom: f32,
}

impl Default for MapView {
    fn default() -> Self {
        MapView { center: egui::vec2(0.5, 0.5), zoom: 1.0 }
    }
}

impl MapView {
    /// Points per map unit on a canvas of `size` (a margin keeps edge points on screen).
    pub fn scale(&self, size: egui::Vec2) -> f32 {
        size.x.min(size.y) * 0.92 * self.zoom
    }

    pub fn screen_from_map(&self, canvas: egui::Rect, p: [f32; 2]) -> egui::Pos2 {
        canvas.center() + (egui::vec2(p[0], p[1]) - self.center) * self.scale(canvas.size())
    }

    pub fn map_from_screen(&self, canvas: egui::Rect, p: egui::Pos2) -> [f32; 2] {
        let m = self.center + (p - canvas.center()) / self.scale(canvas.size());
        [m.x, m.y]
    }
}

pub const STATUS_COLORS: [(Status, egui::Color32); 2] = [
    (Status::Verified, egui::Color32::from_rgb(90, 190, 110)),
    (Status::Unreviewed, egui::Color32::from_rgb(240, 170, 60)),
];
const UNIDENTIFIED: egui::Color32 = egui::Color32::from_rgb(150, 150, 150);

/// A colour per individual, spread around the hue circle (golden-angle steps), so neighbours
/// in the list are far apart in colour.
fn individual_color(individual: IndividualId) -> egui::Color32 {
    let hue = (individual.0 as f32 * 0.618_034).fract();
    egui::ecolor::Hsva::new(hue, 0.75, 0.95, 1.0).into()
}

fn point_color(data: &GalleryData, row: usize, by: ColorBy) -> egui::Color32 {
    let Some(c) = data.crop_of_row(row) else { return UNIDENTIFIED };
    match by {
        ColorBy::Individual => c.individual.map(individual_color).unwrap_or(UNIDENTIFIED),
        ColorBy::Status => {
            STATUS_COLORS.iter().find(|(s, _)| *s == c.status).map(|(_, col)| *col).unwrap_or(UNIDENTIFIED)
        }
    }
}

/// Draws every point (selected ones larger, outlined) into a picture of the canvas.
pub fn rasterize(data: &GalleryData, key: &RasterKey, selected: &HashSet<usize>, ppp: f32) -> egui::ColorImage {
    let [w, h] = key.pixels;
    let mut img = egui::ColorImage::filled([w, h], egui::Color32::TRANSPARENT);
    let canvas = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(w as f32, h as f32) / ppp);
    let mut dot = |x: f32, y: f32, r: i32, color: egui::Color32| {
        let (cx, cy) = (x.round() as i32, y.round() as i32);
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy > r * r + r {
                    continue;
                }
                let (px, py) = (cx + dx, cy + dy);
                if px >= 0 && py >= 0 && (px as usize) < w && (py as usize) < h {
                    img.pixels[py as usize * w + px as usize] = color;
                }
            }
        }
    };
    let radius = (2.0 * ppp).round().max(1.0) as i32;
    let points = data.map.points();
    for (row, p) in points.iter().enumerate() {
        if selected.contains(&row) {
            continue;
        }
        let s = key.view.screen_from_map(canvas, *p);
        dot(s.x * ppp, s.y * ppp, radius, point_color(data, row, key.color_by));
    }
    // Selected points on top, ringed in white.
    for &row in selected {
        if let Some(p) = points.get(row) {
            let s = key.view.screen_from_map(canvas, *p);
            dot(s.x * ppp, s.y * ppp, radius + 2, egui::Color32::WHITE);
            dot(s.x * ppp, s.y * ppp, radius, point_color(data, row, key.color_by));
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_and_screen_transforms_are_inverse_and_zoom_keeps_the_centre() {
        let canvas = egui::Rect::from_min_size(egui::pos2(100.0, 50.0), egui::vec2(800.0, 600.0));
        let view = MapView { center: egui::vec2(0.3, 0.6), zoom: 4.0 };
        let p = [0.35, 0.52];
        let back = view.map_from_screen(canvas, view.screen_from_map(canvas, p));
        assert!((back[0] - p[0]).abs() < 1e-5 && (back[1] - p[1]).abs() < 1e-5, "{back:?}");
        assert_eq!(view.screen_from_map(canvas, [0.3, 0.6]), canvas.center());
        // At zoom 1 the unit square fits the shorter side, with a margin.
        let fit = MapView::default();
        let corner = fit.screen_from_map(canvas, [0.0, 0.0]);
        assert!(canvas.contains(corner) && canvas.contains(fit.screen_from_map(canvas, [1.0, 1.0])));
    }
}
