//! Smooth value noise, and the interpolation it and the painters use.

use std::sync::OnceLock;

use super::seeds::splitmix64;

fn lattice() -> &'static [f32] {
    static LATTICE: OnceLock<Vec<f32>> = OnceLock::new();
    LATTICE.get_or_init(|| {
        (0..256u64 * 256).map(|i| (splitmix64(i ^ 0x5EA5_1DE5) >> 40) as f32 / (1u64 << 24) as f32).collect()
    })
}

/// Smooth value noise in [0, 1] on a 256x256 periodic lattice; `key` picks the offset.
#[derive(Clone, Copy)]
pub(super) struct Noise {
    table: &'static [f32],
    ox: i32,
    oy: i32,
}

impl Noise {
    pub(super) fn new(key: u64) -> Self {
        let h = splitmix64(key);
        Self { table: lattice(), ox: (h & 255) as i32, oy: ((h >> 8) & 255) as i32 }
    }

    pub(super) fn at(&self, x: f32, y: f32) -> f32 {
        let (xi, yi) = (floor_i32(x), floor_i32(y));
        let (fx, fy) = (x - xi as f32, y - yi as f32);
        let ix = (xi.wrapping_add(self.ox) & 255) as usize;
        let iy = (yi.wrapping_add(self.oy) & 255) as usize;
        let (ix1, iy1) = ((ix + 1) & 255, (iy + 1) & 255);
        let t = self.table;
        let (a, b) = (t[iy * 256 + ix], t[iy * 256 + ix1]);
        let (c, d) = (t[iy1 * 256 + ix], t[iy1 * 256 + ix1]);
        let sx = fx * fx * (3.0 - 2.0 * fx);
        let sy = fy * fy * (3.0 - 2.0 * fy);
        let top = a + (b - a) * sx;
        let bottom = c + (d - c) * sx;
        top + (bottom - top) * sy
    }

    /// Fractal sum of `octaves` octaves, normalised to about [0, 1].
    pub(super) fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
        for o in 0..octaves {
            let shift = o as f32 * 37.7;
            sum += amp * self.at(x * f + shift, y * f - shift);
            norm += amp;
            amp *= 0.5;
            f *= 2.03;
        }
        sum / norm
    }
}

/// `floor` without a libm call (x86-64's baseline has no rounding instruction).
fn floor_i32(x: f32) -> i32 {
    let i = x as i32;
    if (i as f32) > x { i - 1 } else { i }
}

pub(super) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

pub(super) fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

pub(super) fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)]
}

pub(super) fn scale3(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub(super) fn unit_u8(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
}
