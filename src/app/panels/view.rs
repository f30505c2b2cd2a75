//! Zoom and pan of a photo on screen, and the two transforms between photo pixels and
//! screen points. Boxes are stored in photo pixels; everything drawn or dragged goes through
//! `screen_from_image` / `image_from_screen`, never through ad-hoc arithmetic.

use eframe::egui::{Pos2, Rect, Vec2, pos2, vec2};

use crate::base::vocabulary::BoxPx;

/// How the user has zoomed and panned; 1.0 fits the photo into the canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoomPan {
    pub zoom: f32,
    /// Screen points the photo's centre is moved from the canvas centre.
    pub pan: Vec2,
}

impl Default for ZoomPan {
    fn default() -> Self {
        ZoomPan { zoom: 1.0, pan: Vec2::ZERO }
    }
}

pub const MIN_ZOOM: f32 = 0.25;
pub const MAX_ZOOM: f32 = 40.0;

/// Screen = offset + image * scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewTransform {
    pub scale: f32,
    pub offset: Vec2,
}

impl ViewTransform {
    /// The transform showing an `image_size` photo in `canvas` with `zp` applied.
    pub fn new(canvas: Rect, image_size: Vec2, zp: ZoomPan) -> Self {
        let fit = (canvas.width() / image_size.x.max(1.0)).min(canvas.height() / image_size.y.max(1.0));
        let scale = fit * zp.zoom;
        let offset = canvas.center().to_vec2() + zp.pan - image_size * scale / 2.0;
        ViewTransform { scale, offset }
    }

    pub fn screen_from_image(&self, p: Pos2) -> Pos2 {
        (p.to_vec2() * self.scale + self.offset).to_pos2()
    }

    pub fn image_from_screen(&self, p: Pos2) -> Pos2 {
        ((p.to_vec2() - self.offset) / self.scale).to_pos2()
    }

    pub fn screen_from_box(&self, b: &BoxPx) -> Rect {
        Rect::from_min_max(
            self.screen_from_image(pos2(b.x as f32, b.y as f32)),
            self.screen_from_image(pos2((b.x + b.w) as f32, (b.y + b.h) as f32)),
        )
    }

    pub fn box_from_screen(&self, r: Rect) -> BoxPx {
        let min = self.image_from_screen(r.min);
        let max = self.image_from_screen(r.max);
        BoxPx::new(min.x as f64, min.y as f64, (max.x - min.x) as f64, (max.y - min.y) as f64)
    }
}

impl ZoomPan {
    /// Zooms by `factor` keeping the photo point under `cursor` where it is.
    pub fn zoom_at(&mut self, canvas: Rect, image_size: Vec2, cursor: Pos2, factor: f32) {
        let before = ViewTransform::new(canvas, image_size, *self);
        let anchor = before.image_from_screen(cursor);
        self.zoom = (self.zoom * factor).clamp(MIN_ZOOM, MAX_ZOOM);
        let after = ViewTransform::new(canvas, image_size, *self);
        self.pan += cursor - after.screen_from_image(anchor);
    }
}

/// A part of a box the pointer can grab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grip {
    Inside,
    Left,
    Right,
    Top,
    Bottom,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// What part of the box `r` (on screen) is under `p`, within `reach` points of an edge.
pub fn grip_at(r: Rect, p: Pos2, reach: f32) -> Option<Grip> {
    if !r.expand(reach).contains(p) {
        return None;
    }
    let near = |a: f32, b: f32| (a - b).abs() <= reach;
    let (l, rt, t, b) = (near(p.x, r.left()), near(p.x, r.right()), near(p.y, r.top()), near(p.y, r.bottom()));
    Some(match (l, rt, t, b) {
        (true, _, true, _) => Grip::TopLeft,
        (_, true, true, _) => Grip::TopRight,
        (true, _, _, true) => Grip::BottomLeft,
        (_, true, _, true) => Grip::BottomRight,
        (true, ..) => Grip::Left,
        (_, true, ..) => Grip::Right,
        (_, _, true, _) => Grip::Top,
        (.., true) => Grip::Bottom,
        _ if r.contains(p) => Grip::Inside,
        _ => return None,
    })
}

/// The box after dragging `grip` by `delta` (photo pixels); edges may cross, the result is
/// normalised so width and height stay positive.
pub fn drag_box(b: &BoxPx, grip: Grip, delta: Vec2) -> BoxPx {
    let (dx, dy) = (delta.x as f64, delta.y as f64);
    let (mut x0, mut y0, mut x1, mut y1) = (b.x, b.y, b.x + b.w, b.y + b.h);
    match grip {
        Grip::Inside => {
            x0 += dx;
            x1 += dx;
            y0 += dy;
            y1 += dy;
        }
        Grip::Left => x0 += dx,
        Grip::Right => x1 += dx,
        Grip::Top => y0 += dy,
        Grip::Bottom => y1 += dy,
        Grip::TopLeft => {
            x0 += dx;
            y0 += dy;
        }
        Grip::TopRight => {
            x1 += dx;
            y0 += dy;
        }
        Grip::BottomLeft => {
            x0 += dx;
            y1 += dy;
        }
        Grip::BottomRight => {
            x1 += dx;
            y1 += dy;
        }
    }
    BoxPx::new(x0.min(x1), y0.min(y1), (x1 - x0).abs(), (y1 - y0).abs())
}

/// A drawn box from two corners in photo pixels.
pub fn box_from_corners(a: Pos2, b: Pos2) -> BoxPx {
    BoxPx::new(a.x.min(b.x) as f64, a.y.min(b.y) as f64, (a.x - b.x).abs() as f64, (a.y - b.y).abs() as f64)
}

pub fn size_of(width: u32, height: u32) -> Vec2 {
    vec2(width as f32, height as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas() -> Rect {
        Rect::from_min_size(pos2(100.0, 50.0), vec2(800.0, 600.0))
    }

    #[test]
    fn transforms_are_inverse_and_fit_the_photo() {
        let t = ViewTransform::new(canvas(), vec2(400.0, 200.0), ZoomPan::default());
        // 400x200 fits 800 wide: scale 2, centred vertically.
        assert_eq!(t.scale, 2.0);
        assert_eq!(t.screen_from_image(pos2(0.0, 0.0)), pos2(100.0, 150.0));
        let p = pos2(123.5, 77.25);
        let back = t.image_from_screen(t.screen_from_image(p));
        assert!((back - p).length() < 1e-4);
        let b = BoxPx::new(10.0, 20.0, 30.0, 40.0);
        let r = t.box_from_screen(t.screen_from_box(&b));
        assert!((r.x - b.x).abs() < 1e-3 && (r.h - b.h).abs() < 1e-3);
    }

    #[test]
    fn zooming_keeps_the_point_under_the_cursor() {
        let mut zp = ZoomPan::default();
        let size = vec2(400.0, 200.0);
        let cursor = pos2(300.0, 250.0);
        let under = ViewTransform::new(canvas(), size, zp).image_from_screen(cursor);
        zp.zoom_at(canvas(), size, cursor, 3.0);
        assert_eq!(zp.zoom, 3.0);
        let after = ViewTransform::new(canvas(), size, zp).screen_from_image(under);
        assert!((after - cursor).length() < 1e-3, "{after:?}");
    }

    #[test]
    fn grips_and_drags_edit_the_right_edges() {
        let r = Rect::from_min_max(pos2(10.0, 10.0), pos2(110.0, 60.0));
        assert_eq!(grip_at(r, pos2(11.0, 12.0), 5.0), Some(Grip::TopLeft));
        assert_eq!(grip_at(r, pos2(60.0, 58.0), 5.0), Some(Grip::Bottom));
        assert_eq!(grip_at(r, pos2(60.0, 30.0), 5.0), Some(Grip::Inside));
        assert_eq!(grip_at(r, pos2(200.0, 30.0), 5.0), None);
        let b = BoxPx::new(10.0, 10.0, 100.0, 50.0);
        assert_eq!(drag_box(&b, Grip::Right, vec2(-20.0, 5.0)), BoxPx::new(10.0, 10.0, 80.0, 50.0));
        assert_eq!(drag_box(&b, Grip::Inside, vec2(5.0, 5.0)), BoxPx::new(15.0, 15.0, 100.0, 50.0));
        // Dragging the left edge past the right one flips the box instead of making it negative.
        assert_eq!(drag_box(&b, Grip::Left, vec2(120.0, 0.0)), BoxPx::new(110.0, 10.0, 20.0, 50.0));
    }
}
