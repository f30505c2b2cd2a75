//! The individual's pigmentation and scars, painted into a canonical texture.

use std::f32::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tiny_skia::{FillRule, LineCap, PathBuilder, Pixmap, Stroke, Transform};

use super::fluke::{Lobe, T_ROOT};
use super::geometry::{Affine, Pt, ellipse_path, pt};
use super::noise::{Noise, lerp, smoothstep, unit_u8};
use super::paint::{resample, solid};
use super::seeds::normal;

/// Texture pixels per canonical unit.
const TEXTURE_SCALE: f32 = 400.0;
pub(super) const TEXTURE_W: u32 = 448;
pub(super) const TEXTURE_H: u32 = 392;
/// Texture pixel of the canonical origin.
const TEXTURE_ORIGIN: Pt = pt(224.0, 100.0);

pub(super) fn canonical_from_texture() -> Affine {
    let s = 1.0 / TEXTURE_SCALE;
    Affine::new(s, 0.0, 0.0, s, -TEXTURE_ORIGIN.x * s, -TEXTURE_ORIGIN.y * s)
}

pub(super) fn texture_from_canonical() -> Affine {
    Affine::new(TEXTURE_SCALE, 0.0, 0.0, TEXTURE_SCALE, TEXTURE_ORIGIN.x, TEXTURE_ORIGIN.y)
}

/// Parameters of the black-and-white field whose sign paints the ventral side black.
pub(super) struct PigmentField {
    bias: f32,
    pub(super) noise: Noise,
    noise_amp: f32,
    noise_freq: f32,
    symmetry: f32,
    trailing_margin: f32,
    trailing_width: f32,
    leading_margin: f32,
    leading_width: f32,
    pub(super) centre: f32,
    centre_width: f32,
    pub(super) tips: f32,
    stock: f32,
    /// Fingers of pigment reaching in from the trailing edge.
    streaks: Noise,
    streak_amp: f32,
    streak_freq: f32,
    streak_reach: f32,
    mottle: Noise,
    mottle_amp: f32,
    mottle_freq: f32,
    softness: f32,
    pub(super) white: [f32; 3],
    pub(super) black: [f32; 3],
}

impl PigmentField {
    pub(super) fn random(rng: &mut ChaCha8Rng) -> Self {
        // From mostly white to mostly black flukes; mixed ones are the commonest.
        let class: f32 = rng.random();
        let bias = if class < 0.35 {
            rng.random_range(-1.1..-0.55)
        } else if class < 0.8 {
            rng.random_range(-0.55..0.0)
        } else {
            rng.random_range(0.0..0.5)
        };
        let tint = [rng.random_range(0.92..0.98), rng.random_range(0.92..0.97), rng.random_range(0.86..0.96)];
        let k = rng.random_range(0.04..0.09);
        Self {
            bias,
            noise: Noise::new(rng.random()),
            noise_amp: rng.random_range(0.5..1.0),
            noise_freq: rng.random_range(3.5..8.0),
            symmetry: rng.random_range(0.2..0.85),
            trailing_margin: rng.random_range(0.3..1.5),
            trailing_width: rng.random_range(0.006..0.03),
            leading_margin: rng.random_range(-0.2..0.8),
            leading_width: rng.random_range(0.01..0.05),
            centre: rng.random_range(-0.5..0.9),
            centre_width: rng.random_range(0.04..0.18),
            tips: rng.random_range(-0.3..0.6),
            stock: rng.random_range(0.3..1.2),
            streaks: Noise::new(rng.random()),
            streak_amp: if rng.random::<f32>() < 0.4 { rng.random_range(0.3..1.0) } else { 0.0 },
            streak_freq: rng.random_range(25.0..55.0),
            streak_reach: rng.random_range(0.03..0.15),
            mottle: Noise::new(rng.random()),
            mottle_amp: rng.random_range(0.0..0.4),
            mottle_freq: rng.random_range(22.0..50.0),
            softness: rng.random_range(0.02..0.08),
            white: tint,
            black: [k, k * 1.05, k * 1.15],
        }
    }

    /// The large-scale part of the field: blotches, the centre and the tips.
    fn smooth_at(&self, u: f32, v: f32) -> f32 {
        let t = (2.0 * u.abs()).min(1.0);
        let f = self.noise_freq;
        let mirrored = self.noise.fbm(u.abs() * f, v * f, 3);
        let own = self.noise.fbm(u * f + 71.3, v * f + 13.1, 3);
        let n = lerp(own, mirrored, self.symmetry);
        self.bias
            + self.noise_amp * (2.0 * n - 1.0) * 1.6
            + self.centre * (-(u / self.centre_width).powi(2)).exp()
            + self.tips * t * t * t
    }
}

/// What the pigment field needs to know about one texture column.
struct ColumnEdges {
    pub(super) u: f32,
    pub(super) trailing: f32,
    /// Width of the dark trailing margin here: it is ragged along the span.
    margin_width: f32,
    pub(super) leading: f32,
    pub(super) root: f32,
}

/// Paints the ventral pattern into a canonical texture. Also returns the field at half
/// resolution (positive where black), so marks can contrast with the skin beneath.
pub(super) fn paint_pigmentation(
    field: &PigmentField,
    left: &Lobe,
    right: &Lobe,
    rng: &mut ChaCha8Rng,
) -> (Pixmap, Vec<f32>) {
    let to_canonical = canonical_from_texture();
    // The large-scale part is smooth: evaluate it on a coarse grid and interpolate.
    const COARSE: u32 = 8;
    let (cw, ch) = (TEXTURE_W / COARSE + 2, TEXTURE_H / COARSE + 2);
    let mut smooth = Vec::with_capacity((cw * ch) as usize);
    for gy in 0..ch {
        for gx in 0..cw {
            let p = to_canonical.apply(pt((gx * COARSE) as f32, (gy * COARSE) as f32));
            smooth.push(field.smooth_at(p.x, p.y));
        }
    }
    // Edges, streaks and mottling at half resolution, then resampled to full.
    let (hw, hh) = (TEXTURE_W / 2, TEXTURE_H / 2);
    let columns: Vec<ColumnEdges> = (0..hw)
        .map(|x| {
            let u = to_canonical.apply(pt(2.0 * x as f32 + 1.0, 0.0)).x;
            let lobe = if u < 0.0 { left } else { right };
            let t = (2.0 * u.abs()).min(1.0);
            let ragged = field.streaks.at(u * 7.0, 57.5);
            ColumnEdges {
                u,
                trailing: lobe.trailing_smooth(t),
                margin_width: field.trailing_width * (0.3 + 1.5 * ragged),
                leading: lobe.leading(t),
                root: lobe.leading(T_ROOT),
            }
        })
        .collect();
    let shade_noise = Noise::new(rng.random());
    let mut half = Pixmap::new(hw, hh).expect("texture size is a nonzero constant");
    let mut values = Vec::with_capacity((hw * hh) as usize);
    let soft = field.softness * 2.0;
    let data = half.data_mut();
    for y in 0..hh {
        let v = to_canonical.apply(pt(0.0, 2.0 * y as f32 + 1.0)).y;
        let gy = (2 * y + 1) as f32 / COARSE as f32;
        let (gy0, fy) = (gy as usize, gy.fract());
        for (x, col) in columns.iter().enumerate() {
            let gx = (2 * x + 1) as f32 / COARSE as f32;
            let (gx0, fx) = (gx as usize, gx.fract());
            let i = gy0 * cw as usize + gx0;
            let top = lerp(smooth[i], smooth[i + 1], fx);
            let bottom = lerp(smooth[i + cw as usize], smooth[i + cw as usize + 1], fx);
            let mut f = lerp(top, bottom, fy);

            let below_trailing = (v - col.trailing).max(0.0);
            let above_leading = (col.leading - v).max(0.0);
            f += field.trailing_margin * (-below_trailing / col.margin_width).exp()
                + field.leading_margin * (-above_leading / field.leading_width).exp()
                + field.stock * smoothstep(col.root, col.root + 0.15, v);
            if field.streak_amp > 0.0 {
                let s = field.streaks.at(col.u * field.streak_freq, v * field.streak_freq * 0.12);
                f += field.streak_amp * (2.0 * s - 0.8) * (-below_trailing / field.streak_reach).exp();
            }
            if field.mottle_amp > 0.0 {
                let m = field.mottle.fbm(col.u * field.mottle_freq, v * field.mottle_freq, 2);
                f += field.mottle_amp * (2.0 * m - 1.0) * 1.5;
            }
            values.push(f);
            let shade = shade_noise.at(col.u * 9.0, v * 9.0);
            let o = 4 * (y * hw) as usize + 4 * x;
            data[o] = unit_u8(smoothstep(-soft, soft, f));
            data[o + 1] = unit_u8(shade);
            data[o + 2] = 0;
            data[o + 3] = 255;
        }
    }

    let mut pixmap = Pixmap::new(TEXTURE_W, TEXTURE_H).expect("texture size is a nonzero constant");
    let (tw, th) = (TEXTURE_W as usize, TEXTURE_H as usize);
    resample(half.data(), hw as usize, hh as usize, pixmap.data_mut(), tw, th);
    // Sharpen the resampled edges back and colour the skin: black, or unevenly lit white.
    let mut white_part = [[0.0f32; 3]; 256];
    let mut black_part = [[0.0f32; 3]; 256];
    for i in 0..256 {
        let black = smoothstep(0.25, 0.75, i as f32 / 255.0);
        for c in 0..3 {
            white_part[i][c] = field.white[c] * (1.0 - black) * 255.0;
            black_part[i][c] = field.black[c] * black * 255.0;
        }
    }
    for px in pixmap.data_mut().chunks_exact_mut(4) {
        let (g, light) = (px[0] as usize, 0.9 + 0.0004 * px[1] as f32);
        for c in 0..3 {
            px[c] = (white_part[g][c] * light + black_part[g][c]).min(255.0) as u8;
        }
        px[3] = 255;
    }
    (pixmap, values)
}

/// Spots, streaks and scars on top of the pigmentation field.
pub(super) fn paint_marks(
    pixmap: &mut Pixmap,
    field_values: &[f32],
    left: &Lobe,
    right: &Lobe,
    field: &PigmentField,
    rng: &mut ChaCha8Rng,
) {
    let ts = texture_from_canonical().to_skia();
    let (hw, hh) = (TEXTURE_W / 2, TEXTURE_H / 2);
    let is_black_at = |p: Pt| {
        let q = texture_from_canonical().apply(p);
        let x = ((q.x / 2.0).max(0.0) as u32).min(hw - 1);
        let y = ((q.y / 2.0).max(0.0) as u32).min(hh - 1);
        field_values[(y * hw + x) as usize] > 0.0
    };
    // A random point on a lobe, `depth` of the way from trailing to leading edge.
    let lobe_point = |rng: &mut ChaCha8Rng, t_range: std::ops::Range<f32>, depth: std::ops::Range<f32>| {
        let lobe = if rng.random::<bool>() { left } else { right };
        let t = rng.random_range(t_range);
        let d = rng.random_range(depth);
        (pt(lobe.u(t), lerp(lobe.trailing_smooth(t), lobe.leading(t), d)), lobe.side)
    };
    let white = field.white;
    let black = field.black;
    let scar_white = [0.93, 0.93, 0.92];
    let scar_dark = [0.25, 0.26, 0.28];

    // Spots: clusters of black spots on white skin and white spots on black skin. Mostly
    // white and mostly black flukes carry more: often all that tells them apart.
    let plain = field.bias < -0.5 || field.bias > 0.0;
    let clusters = if plain { rng.random_range(2..7) } else { rng.random_range(0..5) };
    for _ in 0..clusters {
        let (centre, _) = lobe_point(rng, 0.1..0.9, 0.15..0.85);
        let spread = rng.random_range(0.015..0.07);
        let n = rng.random_range(3..14);
        let big = rng.random_range(0.006..0.022);
        for _ in 0..n {
            let p = pt(centre.x + normal(rng) * spread, centre.y + normal(rng) * spread * 0.6);
            let dark = !is_black_at(p);
            let r = big * rng.random_range(0.35..1.0);
            let Some((path, tr)) = ellipse_path(p, r, r * rng.random_range(0.5..1.0), rng.random_range(0.0..PI)) else {
                continue;
            };
            let col = if dark { black } else { white };
            pixmap.fill_path(
                &path,
                &solid(col, rng.random_range(0.8..1.0)),
                FillRule::Winding,
                tr.post_concat(ts),
                None,
            );
        }
    }

    // Brush-stroke streaks running from the trailing edge towards the leading edge.
    let streaks = if rng.random::<f32>() < 0.5 { rng.random_range(1..7) } else { 0 };
    let streak_dark = rng.random::<f32>() < 0.7;
    for _ in 0..streaks {
        let (start, side) = lobe_point(rng, 0.1..0.85, 0.0..0.15);
        let len = rng.random_range(0.04..0.16);
        let angle = PI / 2.0 + side * rng.random_range(-0.2..0.6);
        let bend = rng.random_range(-0.02..0.02);
        let end = pt(start.x + angle.cos() * len, start.y + angle.sin() * len);
        let mid = pt((start.x + end.x) / 2.0 + bend, (start.y + end.y) / 2.0);
        let mut pb = PathBuilder::new();
        pb.move_to(start.x, start.y);
        pb.quad_to(mid.x, mid.y, end.x, end.y);
        let Some(path) = pb.finish() else { continue };
        let stroke = Stroke { width: rng.random_range(0.005..0.016), line_cap: LineCap::Round, ..Stroke::default() };
        let col = if streak_dark { black } else { white };
        pixmap.stroke_path(&path, &solid(col, 0.9), &stroke, ts, None);
    }

    // Rake marks: sets of 2-4 parallel thin lines, contrasting with the skin beneath.
    let rake_sets = [0, 0, 1, 1, 1, 2, 2, 3][rng.random_range(0..8)].max(plain as usize);
    for _ in 0..rake_sets {
        let (centre, _) = lobe_point(rng, 0.1..0.95, 0.1..0.9);
        let lines = rng.random_range(2..=4);
        let spacing = rng.random_range(0.007..0.018);
        let len = rng.random_range(0.035..0.12);
        let width = rng.random_range(0.0022..0.0045);
        let col = if is_black_at(centre) { scar_white } else { scar_dark };
        let angle = rng.random_range(0.0..PI);
        parallel_marks(pixmap, rng, centre, angle, lines, spacing, len, width, col, 0.85, ts);
    }

    // Orca rake marks: 3-4 wider-spaced lines across a lobe, usually near the tips or edge.
    if rng.random::<f32>() < 0.35 {
        let (centre, side) = lobe_point(rng, 0.35..0.95, 0.05..0.6);
        let angle = PI / 2.0 + side * rng.random_range(-0.5..0.5);
        let len = rng.random_range(0.07..0.18);
        let spacing = rng.random_range(0.016..0.03);
        let lines = rng.random_range(3..=4);
        let width = rng.random_range(0.003..0.006);
        let col = if is_black_at(centre) { scar_white } else { scar_dark };
        parallel_marks(pixmap, rng, centre, angle, lines, spacing, len, width, col, 0.9, ts);
    }

    // Barnacle scars: clusters of small rings and dots.
    if rng.random::<f32>() < 0.45 {
        for _ in 0..rng.random_range(1..3) {
            let (centre, _) = lobe_point(rng, 0.05..0.95, 0.0..0.5);
            for _ in 0..rng.random_range(3..12) {
                let p = pt(centre.x + normal(rng) * 0.02, centre.y + normal(rng) * 0.012);
                let r = rng.random_range(0.003..0.007);
                let col = if is_black_at(p) { [0.8, 0.8, 0.78] } else { [0.35, 0.35, 0.35] };
                let Some(path) = PathBuilder::from_circle(p.x, p.y, r) else {
                    continue;
                };
                if rng.random::<bool>() {
                    let stroke = Stroke { width: 0.0018, ..Stroke::default() };
                    pixmap.stroke_path(&path, &solid(col, 0.9), &stroke, ts, None);
                } else {
                    pixmap.fill_path(&path, &solid(col, 0.8), FillRule::Winding, ts, None);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn parallel_marks(
    pixmap: &mut Pixmap,
    rng: &mut ChaCha8Rng,
    centre: Pt,
    angle: f32,
    lines: usize,
    spacing: f32,
    len: f32,
    width: f32,
    col: [f32; 3],
    alpha: f32,
    ts: Transform,
) {
    let (dir, normal_dir) = (pt(angle.cos(), angle.sin()), pt(-angle.sin(), angle.cos()));
    let bend = rng.random_range(-0.25..0.25) * len;
    for i in 0..lines {
        let off = (i as f32 - (lines as f32 - 1.0) / 2.0) * spacing;
        let l = len * rng.random_range(0.75..1.0);
        let shift = rng.random_range(-0.1..0.1) * len;
        let at = |s: f32| {
            pt(centre.x + dir.x * (s + shift) + normal_dir.x * off, centre.y + dir.y * (s + shift) + normal_dir.y * off)
        };
        let (a, b) = (at(-l / 2.0), at(l / 2.0));
        let m = at(0.0);
        let mut pb = PathBuilder::new();
        pb.move_to(a.x, a.y);
        pb.quad_to(m.x + normal_dir.x * bend, m.y + normal_dir.y * bend, b.x, b.y);
        let Some(path) = pb.finish() else { continue };
        let stroke = Stroke { width, line_cap: LineCap::Round, ..Stroke::default() };
        pixmap.stroke_path(&path, &solid(col, alpha), &stroke, ts, None);
    }
}
