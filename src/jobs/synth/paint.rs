//! Raster helpers: resampling, defocus, paints, and ellipses filled in batches.

use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Rect, Shader, Transform};

use super::geometry::Pt;

/// Bilinear resampling of an RGBA buffer, pixel centres aligned, in fixed point. Faster than
/// a bilinear pattern fill for whole-frame upscaling.
pub(super) fn resample(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    let taps = |n_src: usize, n_dst: usize| -> Vec<(usize, usize, u32)> {
        (0..n_dst)
            .map(|i| {
                let x = ((i as f32 + 0.5) * n_src as f32 / n_dst as f32 - 0.5).max(0.0);
                let x0 = (x as usize).min(n_src - 1);
                let x1 = (x0 + 1).min(n_src - 1);
                (x0, x1, ((x - x0 as f32) * 256.0) as u32)
            })
            .collect()
    };
    let src: Vec<u32> = src.chunks_exact(4).map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])).collect();
    let xs = taps(sw, dw);
    let mut wide = Vec::with_capacity(sh * dw);
    for row in src.chunks_exact(sw) {
        wide.extend(xs.iter().map(|&(x0, x1, w)| mix_rgba(row[x0], row[x1], w)));
    }
    for (dst_row, &(y0, y1, w)) in dst.chunks_exact_mut(dw * 4).zip(&taps(sh, dh)) {
        let (a, b) = (&wide[y0 * dw..][..dw], &wide[y1 * dw..][..dw]);
        for ((out, &a), &b) in dst_row.chunks_exact_mut(4).zip(a).zip(b) {
            out.copy_from_slice(&mix_rgba(a, b, w).to_le_bytes());
        }
    }
}

/// `a + (b - a) w / 256` on all four channels of packed RGBA at once.
fn mix_rgba(a: u32, b: u32, w: u32) -> u32 {
    const LANES: u32 = 0x00FF_00FF;
    let v = 256 - w;
    let even = ((a & LANES) * v + (b & LANES) * w + 0x0080_0080) >> 8;
    let odd = ((a >> 8 & LANES) * v + (b >> 8 & LANES) * w + 0x0080_0080) >> 8;
    (even & LANES) | (odd & LANES) << 8
}

/// Out-of-focus blur: halve the frame `halvings` times, then stretch it back.
pub(super) fn defocus(canvas: &mut Pixmap, halvings: u32) {
    let (w, h) = (canvas.width() as usize, canvas.height() as usize);
    let (mut data, mut cw, mut ch) = (canvas.data().to_vec(), w, h);
    for _ in 0..halvings {
        let (nw, nh) = (cw.div_ceil(2), ch.div_ceil(2));
        let mut half = vec![0u8; nw * nh * 4];
        resample(&data, cw, ch, &mut half, nw, nh);
        (data, cw, ch) = (half, nw, nh);
    }
    resample(&data, cw, ch, canvas.data_mut(), w, h);
}

pub(super) fn solid(rgb: [f32; 3], alpha: f32) -> Paint<'static> {
    let mut paint = Paint::default();
    paint.set_color(color(rgb, alpha));
    paint.anti_alias = true;
    paint
}

pub(super) fn color(rgb: [f32; 3], alpha: f32) -> Color {
    Color::from_rgba(rgb[0].clamp(0.0, 1.0), rgb[1].clamp(0.0, 1.0), rgb[2].clamp(0.0, 1.0), alpha.clamp(0.0, 1.0))
        .unwrap_or(Color::BLACK)
}

pub(super) fn shader_paint(shader: Shader<'_>) -> Paint<'_> {
    Paint { shader, anti_alias: true, ..Paint::default() }
}

/// Many small ellipses of one colour, filled in a few batches (one per opacity level) rather
/// than one by one: each fill has a fixed cost.
pub(super) struct EllipseBatch {
    levels: [(f32, PathBuilder); 3],
    /// All ellipses are tilted by this angle (radians).
    pub(super) tilt: f32,
}

impl EllipseBatch {
    pub(super) fn new(alphas: [f32; 3], tilt: f32) -> Self {
        Self { levels: alphas.map(|a| (a, PathBuilder::new())), tilt }
    }

    pub(super) fn push(&mut self, centre: Pt, rx: f32, ry: f32, level: usize) {
        // Place the ellipse in the untilted frame; the fill tilts the whole batch back.
        let (s, c) = (-self.tilt).sin_cos();
        let (x, y) = (centre.x * c - centre.y * s, centre.x * s + centre.y * c);
        if let Some(oval) = Rect::from_xywh(x - rx, y - ry, 2.0 * rx, 2.0 * ry) {
            self.levels[level.min(2)].1.push_oval(oval);
        }
    }

    pub(super) fn fill(self, canvas: &mut Pixmap, rgb: [f32; 3]) {
        let tilt = Transform::from_rotate(self.tilt.to_degrees());
        for (alpha, builder) in self.levels {
            if let Some(path) = builder.finish() {
                canvas.fill_path(&path, &solid(rgb, alpha), FillRule::Winding, tilt, None);
            }
        }
    }
}
