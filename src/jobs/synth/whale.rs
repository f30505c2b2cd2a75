//! The individual: everything drawn from `(seed, individual)`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tiny_skia::{Color, FillRule, GradientStop, LinearGradient, Mask, Pixmap, Point, Rect, SpreadMode, Transform};

use super::fluke::{Cut, FlukeOutline, Lobe, STOCK_BOTTOM};
use super::geometry::{Pt, polygon_path, pt};
use super::paint::shader_paint;
use super::pigment::{
    PigmentField, TEXTURE_H, TEXTURE_W, canonical_from_texture, paint_marks, paint_pigmentation, texture_from_canonical,
};
use super::seeds::{STREAM_CAPTURE, STREAM_IDENTITY, rng_for};
use super::sightings::{Capture, SURVEY_DAYS, Sighting, random_sightings};

pub(super) struct SyntheticWhale {
    pub(super) individual: usize,
    pub(super) outline: FlukeOutline,
    pub(super) pigment: Pixmap,
    /// Canonical points inside the flukes (above the box cut), for the visible box.
    pub(super) interior: Vec<Pt>,
    sightings: Vec<Sighting>,
}

impl SyntheticWhale {
    pub(super) fn new(seed: u64, individual: usize) -> Self {
        let mut rng = rng_for(&[seed, STREAM_IDENTITY, individual as u64]);
        let rng = &mut rng;
        let (left, right) = random_lobes(rng);
        let outline = FlukeOutline::new(&left, &right, rng);
        let field = PigmentField::random(rng);
        let (mut pigment, field_values) = paint_pigmentation(&field, &left, &right, rng);
        paint_marks(&mut pigment, &field_values, &left, &right, &field, rng);
        darken_tail_stock(&mut pigment, outline.box_cut_v);
        let sightings = random_sightings(seed, rng);
        let interior = interior_points(&outline);
        Self { individual, outline, pigment, interior, sightings }
    }

    pub(super) fn capture(&self, seed: u64, photo: usize) -> Capture {
        let mut rng = rng_for(&[seed, STREAM_CAPTURE, self.individual as u64, photo as u64]);
        let sighting = &self.sightings[photo % self.sightings.len()];
        let s = sighting.start_seconds + rng.random_range(0..1500);
        Capture {
            timestamp: format!("{} {:02}:{:02}:{:02}", SURVEY_DAYS[sighting.day], s / 3600, s / 60 % 60, s % 60),
            latitude: sighting.latitude + rng.random_range(-0.002..0.002),
            longitude: sighting.longitude + rng.random_range(-0.002..0.002),
        }
    }
}

fn random_lobes(rng: &mut ChaCha8Rng) -> (Lobe, Lobe) {
    let tip_lift = rng.random_range(0.04..0.15);
    let bulge = rng.random_range(-0.035..0.03);
    let root_chord = rng.random_range(0.22..0.3);
    let chord_p = rng.random_range(1.3..2.3);
    let chord_q = rng.random_range(0.45..0.8);
    let notch_depth = rng.random_range(0.025..0.06);
    let notch_width = rng.random_range(0.025..0.06);
    let scallop_count = rng.random_range(8.0..30.0f32);
    let scallop_depth = rng.random_range(0.003..0.011);
    let nicks = [0, 0, 1, 1, 1, 2, 2, 3, 4][rng.random_range(0..9)];
    let bites = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2][rng.random_range(0..10)];
    let torn_tip = rng.random::<f32>() < 0.12;
    let torn_side = if rng.random::<bool>() { 1.0 } else { -1.0 };

    let mut lobes = [-1.0f32, 1.0].map(|side| Lobe {
        side,
        tip_lift: tip_lift + rng.random_range(-0.015..0.015),
        bulge: bulge + rng.random_range(-0.008..0.008),
        root_chord: root_chord + rng.random_range(-0.01..0.01),
        chord_p,
        chord_q,
        notch_depth,
        notch_width,
        t_end: if torn_tip && side == torn_side { rng.random_range(0.8..0.95) } else { 1.0 },
        scallops: Vec::new(),
        nicks: Vec::new(),
        bites: Vec::new(),
    });
    for lobe in &mut lobes {
        let n = (scallop_count + rng.random_range(-3.0..3.0)).max(4.0);
        let spacing = 1.0 / n;
        let mut t = lobe.notch_width + rng.random::<f32>() * spacing;
        while t < lobe.t_end - 0.02 {
            let envelope = 1.0 - 0.75 * t.powi(3);
            lobe.scallops.push((t, scallop_depth * rng.random_range(0.3..1.5) * envelope));
            t += spacing * rng.random_range(0.5..1.5);
        }
    }
    for _ in 0..nicks {
        let lobe = &mut lobes[rng.random_range(0..2)];
        let t = rng.random_range(lobe.notch_width + 0.03..lobe.t_end - 0.04);
        lobe.nicks.push(Cut { t, half_width: rng.random_range(0.006..0.018), depth: rng.random_range(0.01..0.032) });
    }
    for _ in 0..bites {
        let lobe = &mut lobes[rng.random_range(0..2)];
        let t = rng.random_range(0.15..lobe.t_end - 0.08);
        lobe.bites.push(Cut { t, half_width: rng.random_range(0.03..0.1), depth: rng.random_range(0.02..0.07) });
    }
    let [left, right] = lobes;
    (left, right)
}

/// The tail stock is in shadow and darkens towards the water.
fn darken_tail_stock(pigment: &mut Pixmap, top_v: f32) {
    let ts = texture_from_canonical().to_skia();
    let (top, bottom) = (top_v - 0.03, 0.62);
    let Some(shader) = LinearGradient::new(
        Point::from_xy(0.0, top),
        Point::from_xy(0.0, bottom),
        vec![
            GradientStop::new(0.0, Color::from_rgba8(0, 0, 0, 0)),
            GradientStop::new(1.0, Color::from_rgba8(0, 0, 0, 190)),
        ],
        SpreadMode::Pad,
        Transform::identity(),
    ) else {
        return;
    };
    if let Some(rect) = Rect::from_ltrb(-0.5, top, 0.5, STOCK_BOTTOM + 0.05) {
        pigment.fill_rect(rect, &shader_paint(shader), ts, None);
    }
}

fn interior_points(outline: &FlukeOutline) -> Vec<Pt> {
    let Some(mut mask) = Mask::new(TEXTURE_W, TEXTURE_H) else {
        return Vec::new();
    };
    if let Some(path) = polygon_path(&outline.full) {
        let ts = texture_from_canonical().to_skia();
        mask.fill_path(&path, FillRule::Winding, false, ts);
    }
    let to_canonical = canonical_from_texture();
    let step = 4;
    let mut points = Vec::new();
    for y in (0..TEXTURE_H).step_by(step) {
        for x in (0..TEXTURE_W).step_by(step) {
            if mask.data()[(y * TEXTURE_W + x) as usize] > 127 {
                let p = to_canonical.apply(pt(x as f32 + 0.5, y as f32 + 0.5));
                if p.y <= outline.box_cut_v {
                    points.push(p);
                }
            }
        }
    }
    points
}
