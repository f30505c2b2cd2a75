//! Points, affine maps and paths.

use tiny_skia::{PathBuilder, Rect, Transform};

#[derive(Clone, Copy, Debug)]
pub(super) struct Pt {
    pub(super) x: f32,
    pub(super) y: f32,
}

pub(super) const fn pt(x: f32, y: f32) -> Pt {
    Pt { x, y }
}

/// `x' = a x + c y + tx`, `y' = b x + d y + ty` (tiny-skia's row order).
#[derive(Clone, Copy, Debug)]
pub(super) struct Affine {
    pub(super) a: f32,
    pub(super) b: f32,
    pub(super) c: f32,
    pub(super) d: f32,
    pub(super) tx: f32,
    pub(super) ty: f32,
}

impl Affine {
    pub(super) fn new(a: f32, b: f32, c: f32, d: f32, tx: f32, ty: f32) -> Self {
        Self { a, b, c, d, tx, ty }
    }
    pub(super) fn translate(tx: f32, ty: f32) -> Self {
        Self::new(1.0, 0.0, 0.0, 1.0, tx, ty)
    }
    pub(super) fn scale(sx: f32, sy: f32) -> Self {
        Self::new(sx, 0.0, 0.0, sy, 0.0, 0.0)
    }
    pub(super) fn rotate(angle: f32) -> Self {
        let (s, c) = angle.sin_cos();
        Self::new(c, s, -s, c, 0.0, 0.0)
    }
    pub(super) fn shear_x(k: f32) -> Self {
        Self::new(1.0, 0.0, k, 1.0, 0.0, 0.0)
    }
    /// The transform that applies `first`, then `self`.
    pub(super) fn after(self, first: Affine) -> Affine {
        let f = first;
        Affine {
            a: self.a * f.a + self.c * f.b,
            b: self.b * f.a + self.d * f.b,
            c: self.a * f.c + self.c * f.d,
            d: self.b * f.c + self.d * f.d,
            tx: self.a * f.tx + self.c * f.ty + self.tx,
            ty: self.b * f.tx + self.d * f.ty + self.ty,
        }
    }
    pub(super) fn apply(&self, p: Pt) -> Pt {
        pt(self.a * p.x + self.c * p.y + self.tx, self.b * p.x + self.d * p.y + self.ty)
    }
    pub(super) fn to_skia(self) -> Transform {
        Transform::from_row(self.a, self.b, self.c, self.d, self.tx, self.ty)
    }
}

pub(super) fn polygon_path(points: &[Pt]) -> Option<tiny_skia::Path> {
    let mut pb = PathBuilder::with_capacity(points.len() + 1, points.len() + 1);
    let (first, rest) = points.split_first()?;
    pb.move_to(first.x, first.y);
    for p in rest {
        pb.line_to(p.x, p.y);
    }
    pb.close();
    pb.finish()
}

pub(super) fn polyline_path(points: &[Pt]) -> Option<tiny_skia::Path> {
    let mut pb = PathBuilder::with_capacity(points.len(), points.len());
    let (first, rest) = points.split_first()?;
    pb.move_to(first.x, first.y);
    for p in rest {
        pb.line_to(p.x, p.y);
    }
    pb.finish()
}

pub(super) fn ellipse_path(center: Pt, rx: f32, ry: f32, angle: f32) -> Option<(tiny_skia::Path, Transform)> {
    let path = PathBuilder::from_oval(Rect::from_xywh(-rx, -ry, 2.0 * rx, 2.0 * ry)?)?;
    let transform = Transform::from_rotate(angle.to_degrees()).post_translate(center.x, center.y);
    Some((path, transform))
}
