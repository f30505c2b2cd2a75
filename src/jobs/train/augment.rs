//! Augmentation. Of tokens, for training on cached tokens: a random subset of patch tokens
//! and a little noise, every step.
//!
//! Of images, for end-to-end (`full`) training: a random resized crop, a rotation of
//! up to ±15° and colour jitter, drawn per crop and per step. Mirroring is an option that is
//! off by default: a mirrored fluke or dorsal fin can look like another individual.
//!
//! The crop is letterboxed as for inference (`models::preprocess::letterbox`), then one affine warp does
//! the resized crop, the rotation and the optional flip in a single bilinear resampling, the
//! uncovered corners taking the padding colour; the colour jitter follows, then the same
//! normalisation as `models::preprocess::prepare`.

use candle_core::Tensor;
use image::{DynamicImage, RgbImage};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::base::vocabulary::BoxPx;
use crate::models::{IMAGENET_MEAN, IMAGENET_STD, letterbox};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageAugmentation {
    /// The smallest share of the crop's area a random resized crop keeps (1 = no cropping).
    pub min_area: f64,
    /// The largest change of aspect ratio of the random crop (4/3 allows 3:4 to 4:3).
    pub max_aspect: f64,
    pub max_rotation_degrees: f64,
    /// Brightness, contrast and saturation each scaled by a factor in [1 - x, 1 + x].
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    /// Mirror half of the crops left to right.
    pub flip: bool,
}

impl Default for ImageAugmentation {
    fn default() -> Self {
        Self {
            min_area: 0.7,
            max_aspect: 4.0 / 3.0,
            max_rotation_degrees: 15.0,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            flip: false,
        }
    }
}

impl ImageAugmentation {
    /// No change at all: `prepare` then gives exactly `models::preprocess::prepare`'s input.
    pub const NONE: Self = Self {
        min_area: 1.0,
        max_aspect: 1.0,
        max_rotation_degrees: 0.0,
        brightness: 0.0,
        contrast: 0.0,
        saturation: 0.0,
        flip: false,
    };

    /// The embedder's input for one crop, augmented: `[3, side, side]`, normalised.
    pub fn prepare(&self, img: &DynamicImage, bbox: Option<BoxPx>, side: u32, rng: &mut impl Rng) -> Vec<f32> {
        let canvas = letterbox(img, bbox, side);
        let warped = self.warp(&canvas, rng);
        let mut rgb: Vec<[f32; 3]> = warped.pixels().map(|p| p.0.map(|v| v as f32 / 255.0)).collect();
        self.jitter(&mut rgb, rng);
        let plane = (side * side) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, p) in rgb.iter().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (p[c].clamp(0.0, 1.0) - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        out
    }

    /// Random resized crop + rotation + optional flip, as one inverse mapping from each
    /// output pixel to the source.
    fn warp(&self, src: &RgbImage, rng: &mut impl Rng) -> RgbImage {
        let (w, h) = (src.width() as f64, src.height() as f64);
        let area = if self.min_area < 1.0 { rng.random_range(self.min_area.max(0.05)..=1.0) } else { 1.0 };
        let log_aspect = self.max_aspect.max(1.0).ln();
        let aspect = if log_aspect > 0.0 { rng.random_range(-log_aspect..=log_aspect).exp() } else { 1.0 };
        // The window of the source seen, as a share of each side.
        let (sx, sy) = ((area * aspect).sqrt().min(1.0), (area / aspect).sqrt().min(1.0));
        let (cx, cy) = (
            w * (0.5 + if sx < 1.0 { rng.random_range(-(1.0 - sx) / 2.0..=(1.0 - sx) / 2.0) } else { 0.0 }),
            h * (0.5 + if sy < 1.0 { rng.random_range(-(1.0 - sy) / 2.0..=(1.0 - sy) / 2.0) } else { 0.0 }),
        );
        let max_angle = self.max_rotation_degrees.abs().to_radians();
        let angle = if max_angle > 0.0 { rng.random_range(-max_angle..=max_angle) } else { 0.0 };
        let flip = self.flip && rng.random_bool(0.5);
        if area >= 1.0 && aspect == 1.0 && angle == 0.0 && !flip {
            return src.clone();
        }
        let (sin, cos) = angle.sin_cos();
        let fill = IMAGENET_MEAN.map(|m| m * 255.0);
        RgbImage::from_fn(src.width(), src.height(), |x, y| {
            // Output pixel centre relative to the output centre, in the source's scale.
            let mut u = (x as f64 + 0.5 - w / 2.0) * sx;
            let v = (y as f64 + 0.5 - h / 2.0) * sy;
            if flip {
                u = -u;
            }
            let (ru, rv) = (cos * u - sin * v, sin * u + cos * v);
            image::Rgb(bilinear(src, cx + ru - 0.5, cy + rv - 0.5, fill))
        })
    }

    fn jitter(&self, rgb: &mut [[f32; 3]], rng: &mut impl Rng) {
        let mut factor = |x: f64| if x > 0.0 { rng.random_range(1.0 - x..=1.0 + x) as f32 } else { 1.0 };
        let (brightness, contrast, saturation) =
            (factor(self.brightness), factor(self.contrast), factor(self.saturation));
        if brightness == 1.0 && contrast == 1.0 && saturation == 1.0 {
            return;
        }
        let grey = |p: &[f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        for p in rgb.iter_mut() {
            *p = p.map(|v| v * brightness);
        }
        let mean = rgb.iter().map(grey).sum::<f32>() / rgb.len().max(1) as f32;
        for p in rgb.iter_mut() {
            let g = grey(p);
            *p = p.map(|v| {
                let saturated = g + (v - g) * saturation;
                mean + (saturated - mean) * contrast
            });
        }
    }
}

/// The source colour at (x, y) in pixel coordinates (pixel centres at integers), `fill`
/// outside.
fn bilinear(src: &RgbImage, x: f64, y: f64, fill: [f32; 3]) -> [u8; 3] {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = ((x - x0) as f32, (y - y0) as f32);
    let at = |xi: f64, yi: f64| -> [f32; 3] {
        if xi < 0.0 || yi < 0.0 || xi >= src.width() as f64 || yi >= src.height() as f64 {
            return fill;
        }
        src.get_pixel(xi as u32, yi as u32).0.map(f32::from)
    };
    let (a, b, c, d) = (at(x0, y0), at(x0 + 1.0, y0), at(x0, y0 + 1.0), at(x0 + 1.0, y0 + 1.0));
    std::array::from_fn(|k| {
        let top = a[k] + (b[k] - a[k]) * fx;
        let bottom = c[k] + (d[k] - c[k]) * fx;
        (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8
    })
}

/// Feature-level augmentation of tokens `[B, n, D]`: a random share `dropout` of the patch
/// tokens left out (the CLS token always stays) and Gaussian noise of deviation `noise`.
pub fn augment_tokens(
    tokens: &Tensor,
    n: usize,
    dropout: f64,
    noise: f64,
    rng: &mut impl Rng,
) -> candle_core::Result<Tensor> {
    let mut x = tokens.clone();
    if dropout > 0.0 && n > 2 {
        let keep = (((n - 1) as f64) * (1.0 - dropout)).round().max(1.0) as usize;
        let mut patches: Vec<u32> = (1..n as u32).collect();
        patches.shuffle(rng);
        let mut index = vec![0u32];
        index.extend(&patches[..keep]);
        x = x.index_select(&Tensor::new(index, x.device())?, 1)?;
    }
    if noise > 0.0 {
        let normal = rand_distr::Normal::new(0.0f32, noise as f32)
            .map_err(|e| candle_core::Error::msg(format!("token noise: {e}")))?;
        let noise: Vec<f32> = (0..x.elem_count()).map(|_| rng.sample(normal)).collect();
        x = (&x + Tensor::from_vec(noise, x.shape(), x.device())?)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// White on the left third, black elsewhere.
    fn left_white(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, _| {
            if x < w / 3 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) }
        }))
    }

    fn side_means(input: &[f32], side: usize) -> (f32, f32) {
        let plane = &input[..side * side];
        let (mut left, mut right) = (0.0, 0.0);
        for (i, v) in plane.iter().enumerate() {
            if i % side < side / 2 { left += v } else { right += v }
        }
        (left, right)
    }

    #[test]
    fn no_augmentation_is_exactly_the_inference_input() {
        let img = left_white(90, 60);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(ImageAugmentation::NONE.prepare(&img, None, 28, &mut rng), crate::models::prepare(&img, None, 28));
    }

    #[test]
    fn augmented_crops_vary_but_keep_their_side_unless_flipping_is_asked_for() {
        let img = left_white(60, 60);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let plain = crate::models::prepare(&img, None, 28);
        let default = ImageAugmentation::default();
        let draws: Vec<Vec<f32>> = (0..20).map(|_| default.prepare(&img, None, 28, &mut rng)).collect();
        assert!(draws.iter().all(|d| d.len() == plain.len()));
        assert!(draws.iter().filter(|d| **d != plain).count() >= 19, "each draw is another view");
        assert!(draws.windows(2).all(|w| w[0] != w[1]));
        // Rotated by 15 degrees at most and cropped to 70% at least, the white third stays left.
        for d in &draws {
            let (left, right) = side_means(d, 28);
            assert!(left > right, "never mirrored by default");
        }
        let flipping = ImageAugmentation { flip: true, ..ImageAugmentation::default() };
        let mirrored = (0..40)
            .map(|_| flipping.prepare(&img, None, 28, &mut rng))
            .filter(|d| {
                let (left, right) = side_means(d, 28);
                right > left
            })
            .count();
        assert!((8..=32).contains(&mirrored), "about half mirrored with flip on: {mirrored} of 40");
    }

    #[test]
    fn colour_jitter_changes_brightness_within_its_range() {
        let grey = DynamicImage::ImageRgb8(RgbImage::from_pixel(28, 28, image::Rgb([128; 3])));
        let only_brightness = ImageAugmentation { brightness: 0.2, ..ImageAugmentation::NONE };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut levels = Vec::new();
        for _ in 0..30 {
            let input = only_brightness.prepare(&grey, None, 28, &mut rng);
            let value = input[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]; // back to [0, 1]
            levels.push(value / (128.0 / 255.0));
        }
        assert!(levels.iter().all(|f| (0.79..=1.21).contains(f)), "{levels:?}");
        assert!(levels.iter().any(|f| *f < 0.95) && levels.iter().any(|f| *f > 1.05), "{levels:?}");
    }
}
