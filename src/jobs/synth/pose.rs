//! A photo's pose: how the fluke's canonical frame maps into the picture.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::fluke::FlukeOutline;
use super::geometry::{Affine, Pt, pt};

/// Where the fluke sits in one photo: a transform per lobe, agreeing on the centre line.
pub(super) struct Pose {
    pub(super) photo_from_left: Affine,
    pub(super) photo_from_right: Affine,
    /// Fluke span in pixels.
    pub(super) span: f32,
}

impl Pose {
    pub(super) fn map(&self, p: Pt) -> Pt {
        if p.x < 0.0 { self.photo_from_left.apply(p) } else { self.photo_from_right.apply(p) }
    }

    pub(super) fn random(rng: &mut ChaCha8Rng, outline: &FlukeOutline, width: f32, height: f32) -> Self {
        let span = width * rng.random_range(0.45..0.9);
        let squash = rng.random_range(0.65..1.05);
        let shear = rng.random_range(-0.22..0.22);
        let angle = rng.random_range(-25.0f32..25.0).to_radians();
        let yaw = rng.random_range(-0.16..0.16);
        let twist = [rng.random_range(-0.07..0.07), rng.random_range(-0.07..0.07)];
        let core = Affine::rotate(angle)
            .after(Affine::shear_x(shear))
            .after(Affine::scale(span, span * squash))
            .after(Affine::translate(0.0, -0.1));
        let half = |side: f32, twist: f32| core.after(Affine::new(1.0 + side * yaw, twist, 0.0, 1.0, 0.0, 0.0));
        let mut pose = Pose { photo_from_left: half(-1.0, twist[0]), photo_from_right: half(1.0, twist[1]), span };

        // Place the fluke box in the frame, leaving room for water below.
        let (lo, hi) = bounds(outline.full.iter().filter(|p| p.y <= outline.box_cut_v).map(|&p| pose.map(p)));
        let margin = 0.02 * width;
        let place = |rng: &mut ChaCha8Rng, size: f32, room: f32, lo: f32| {
            let slack = room - size - 2.0 * margin;
            let start = if slack > 0.0 {
                margin + rng.random::<f32>() * slack
            } else {
                (room - size) / 2.0 + rng.random_range(-0.03..0.03) * room
            };
            start - lo
        };
        let dx = place(rng, hi.x - lo.x, width, lo.x);
        let dy = place(rng, hi.y - lo.y, height * 0.93, lo.y);
        for t in [&mut pose.photo_from_left, &mut pose.photo_from_right] {
            t.tx += dx;
            t.ty += dy;
        }
        pose
    }
}

pub(super) fn bounds(points: impl Iterator<Item = Pt>) -> (Pt, Pt) {
    points.fold((pt(f32::INFINITY, f32::INFINITY), pt(f32::NEG_INFINITY, f32::NEG_INFINITY)), |(lo, hi), p| {
        (pt(lo.x.min(p.x), lo.y.min(p.y)), pt(hi.x.max(p.x), hi.y.max(p.y)))
    })
}
