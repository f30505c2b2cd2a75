//! A photo's sea and sky, and the glints on the waves.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tiny_skia::Pixmap;

use super::geometry::pt;
use super::noise::{Noise, lerp, lerp3, scale3, smoothstep, unit_u8};
use super::paint::EllipseBatch;

/// Low-resolution background pixels per full-resolution pixel (the sea is smooth).
const BACKGROUND_DOWNSAMPLE: u32 = 3;

pub(super) struct Seascape {
    pub(super) width: f32,
    pub(super) height: f32,
    /// Horizon height at the frame's centre column; negative when the camera looks down.
    horizon: f32,
    pub(super) horizon_slope: f32,
    sky_top: [f32; 3],
    pub(super) sky_horizon: [f32; 3],
    pub(super) sea_far: [f32; 3],
    sea_near: [f32; 3],
    waves: Noise,
    wave_x: f32,
    wave_z: f32,
    wave_contrast: f32,
    glint: f32,
    clouds: Noise,
    cloud_cover: f32,
    land: Option<(f32, [f32; 3], Noise)>,
}

const SEA_PALETTE: [([f32; 3], [f32; 3]); 6] = [
    ([0.36, 0.46, 0.56], [0.08, 0.19, 0.32]),
    ([0.45, 0.50, 0.50], [0.16, 0.26, 0.26]),
    ([0.34, 0.38, 0.42], [0.12, 0.15, 0.19]),
    ([0.35, 0.50, 0.55], [0.06, 0.26, 0.32]),
    ([0.48, 0.62, 0.76], [0.12, 0.30, 0.52]),
    ([0.55, 0.55, 0.52], [0.26, 0.28, 0.28]),
];
const SKY_PALETTE: [([f32; 3], [f32; 3]); 4] = [
    ([0.64, 0.67, 0.72], [0.84, 0.85, 0.87]),
    ([0.42, 0.58, 0.80], [0.80, 0.85, 0.90]),
    ([0.52, 0.56, 0.68], [0.95, 0.82, 0.64]),
    ([0.50, 0.52, 0.55], [0.70, 0.72, 0.74]),
];

impl Seascape {
    pub(super) fn random(rng: &mut ChaCha8Rng, width: f32, height: f32) -> Self {
        let (a, b) = (SEA_PALETTE[rng.random_range(0..6)], SEA_PALETTE[rng.random_range(0..6)]);
        let m = rng.random::<f32>();
        let jitter = |rng: &mut ChaCha8Rng, c: [f32; 3]| {
            let s = rng.random_range(0.75..1.25);
            c.map(|x| x * s * rng.random_range(0.9..1.1))
        };
        let sea_far = jitter(rng, lerp3(a.0, b.0, m));
        let sea_near = jitter(rng, lerp3(a.1, b.1, m));
        let sky = SKY_PALETTE[rng.random_range(0..4)];
        let horizon = if rng.random::<f32>() < 0.45 {
            height * rng.random_range(0.02..0.4)
        } else {
            -height * rng.random_range(0.15..1.8)
        };
        // Wave sizes chosen so a wave at mid-frame is a few percent of the frame high.
        let depth_mid = height / 2.0 - horizon;
        let k = rng.random_range(0.6..1.8);
        let land = (horizon > 0.0 && rng.random::<f32>() < 0.35).then(|| {
            (
                height * rng.random_range(0.01..0.06),
                lerp3([0.2, 0.23, 0.22], sky.1, rng.random_range(0.2..0.6)),
                Noise::new(rng.random()),
            )
        });
        Self {
            width,
            height,
            horizon,
            horizon_slope: rng.random_range(-4.0f32..4.0).to_radians().tan(),
            sky_top: sky.0,
            sky_horizon: sky.1,
            sea_far,
            sea_near,
            waves: Noise::new(rng.random()),
            wave_z: depth_mid * depth_mid / (0.045 * height * k),
            wave_x: depth_mid / (0.22 * height * k),
            wave_contrast: rng.random_range(0.15..0.7),
            glint: rng.random_range(0.0..0.6),
            clouds: Noise::new(rng.random()),
            cloud_cover: rng.random_range(0.0..0.8),
            land,
        }
    }

    fn horizon_at(&self, x: f32) -> f32 {
        self.horizon + self.horizon_slope * (x - self.width / 2.0)
    }

    fn colour_at(&self, x: f32, y: f32) -> [f32; 3] {
        // Edges are blended over about one background pixel so the stretch has no stairs.
        let soft = BACKGROUND_DOWNSAMPLE as f32 / 2.0;
        let hy = self.horizon_at(x);
        if y < hy - soft {
            self.sky_at(x, y, hy)
        } else if y > hy + soft {
            self.sea_at(x, y, hy)
        } else {
            let t = smoothstep(hy - soft, hy + soft, y);
            lerp3(self.sky_at(x, y, hy), self.sea_at(x, y.max(hy), hy), t)
        }
    }

    fn sea_at(&self, x: f32, y: f32, hy: f32) -> [f32; 3] {
        let d = y - hy;
        let near = (d / (self.height * 1.3)).min(1.0).sqrt();
        let c = lerp3(self.sea_far, self.sea_near, near);
        // Wave noise on the sea plane, so waves shrink towards the horizon.
        let z = 1.0 / (d + 3.0);
        let wave = self.waves.fbm((x - self.width / 2.0) * z * self.wave_x, z * self.wave_z, 3);
        let detail = smoothstep(0.0, 14.0, d);
        let c = scale3(c, 1.0 + self.wave_contrast * (2.0 * wave - 1.0) * detail);
        let glint = smoothstep(0.62, 0.85, wave) * self.glint * detail;
        let haze = (-d / (0.05 * self.height)).exp() * 0.6;
        lerp3(c, self.sky_horizon, (glint + haze).min(1.0))
    }

    fn sky_at(&self, x: f32, y: f32, hy: f32) -> [f32; 3] {
        let s = ((hy - y) / (0.7 * self.height)).clamp(0.0, 1.0).powf(0.7);
        let c = lerp3(self.sky_horizon, self.sky_top, s);
        let cloud = self.clouds.fbm(x * 0.006, y * 0.018, 3);
        let cover = smoothstep(1.0 - self.cloud_cover * 0.6, 1.0, cloud);
        let c = lerp3(c, [0.9, 0.9, 0.9], cover);
        match &self.land {
            Some((land_height, land_colour, land_noise)) => {
                let top = hy - land_height * (0.3 + 0.7 * land_noise.fbm(x * 0.008, 0.0, 3));
                let soft = BACKGROUND_DOWNSAMPLE as f32 / 2.0;
                lerp3(c, *land_colour, smoothstep(top - soft, top + soft, y))
            }
            None => c,
        }
    }

    /// The sea and sky at low resolution, to be stretched over the frame.
    pub(super) fn paint(&self) -> Pixmap {
        let bw = (self.width as u32).div_ceil(BACKGROUND_DOWNSAMPLE);
        let bh = (self.height as u32).div_ceil(BACKGROUND_DOWNSAMPLE);
        let mut pixmap = Pixmap::new(bw, bh).expect("photo size is clamped to a drawable range");
        let f = BACKGROUND_DOWNSAMPLE as f32;
        for (i, px) in pixmap.data_mut().chunks_exact_mut(4).enumerate() {
            let (bx, by) = ((i as u32 % bw) as f32, (i as u32 / bw) as f32);
            let c = self.colour_at((bx + 0.5) * f, (by + 0.5) * f);
            px.copy_from_slice(&[unit_u8(c[0]), unit_u8(c[1]), unit_u8(c[2]), 255]);
        }
        pixmap
    }
}

pub(super) fn paint_wave_glints(canvas: &mut Pixmap, sea: &Seascape, rng: &mut ChaCha8Rng) {
    let (w, h) = (sea.width, sea.height);
    let top = sea.horizon.max(0.0);
    let tilt = sea.horizon_slope.atan();
    let mut light = EllipseBatch::new([0.07, 0.13, 0.2], tilt);
    let mut dark = EllipseBatch::new([0.08, 0.14, 0.2], tilt);
    for _ in 0..rng.random_range(10..80) {
        let y = lerp(top, h, rng.random::<f32>().powf(0.7));
        let x = rng.random_range(0.0..w);
        let d = y - sea.horizon_at(x);
        if d < 4.0 {
            continue;
        }
        let len = (2.0 + 0.04 * d) * rng.random_range(0.4..2.0);
        let thick = (0.4 + 0.003 * d) * rng.random_range(0.6..1.4);
        let batch = if rng.random::<f32>() < 0.6 { &mut light } else { &mut dark };
        batch.push(pt(x, y), len, thick, rng.random_range(0..3));
    }
    light.fill(canvas, lerp3(sea.sky_horizon, [1.0, 1.0, 1.0], 0.3));
    dark.fill(canvas, scale3(sea.sea_near, 0.5));
}
