//! Local features of a crop: keypoints with RootSIFT descriptors, and the geometric
//! verification of two crops' matches. Photo-identification has long checked a shortlist
//! this way: two photos of one animal share many patterns (callosities, nicks, scars) at
//! consistent positions, while the global embedding only says the two look alike.
//!
//! Keypoints are found in a working frame of the crop, scaled so that its longer side is
//! [`WORK_SIDE`] pixels, so that crops of any size give comparable scales; positions are
//! kept in that frame and as fractions of the crop for drawing.

mod sift;
mod verify;

pub use verify::{MatchPair, Verification, verify};

use image::{DynamicImage, ImageBuffer, Luma};
use thiserror::Error;

/// The longer side of the frame keypoints are found in.
pub const WORK_SIDE: u32 = 320;
/// Keypoints kept per crop (the strongest). Right-whale heads have more than 256 (the cap
/// before): decided on one half of the right-whale individuals, with a head trained on the
/// other half, 512 lifted fused MAP@5 from 0.638 to 0.651 (with the ratio of 0.85 in
/// `verify`, to 0.658) for about twice the verification time; a larger working frame (448)
/// was worse, a smaller one (256) no better.
pub const MAX_KEYPOINTS: usize = 512;
/// Bytes of one descriptor.
pub const DESCRIPTOR_LEN: usize = 128;
/// RootSIFT components (each at most 1) are stored times this, in a byte.
const QUANTUM: f32 = 512.0;
/// Names the method and its settings: stored features under another key are recomputed.
pub const LOCAL_METHOD: &str = "rootsift-v2";

/// A keypoint in the working frame: position, scale (the blur it was found at) and orientation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub scale: f32,
    /// Radians, 0..2π.
    pub angle: f32,
}

/// The keypoints and descriptors of one crop.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalFeatures {
    /// The working frame's size.
    pub width: u32,
    pub height: u32,
    pub keypoints: Vec<Keypoint>,
    pub descriptors: Vec<[u8; DESCRIPTOR_LEN]>,
}

#[derive(Debug, Error, PartialEq)]
pub enum LocalError {
    #[error("stored local features are damaged: {0}")]
    Damaged(String),
}

impl LocalFeatures {
    /// Finds the keypoints of a crop (already cut out of its photo).
    pub fn of_crop(crop: &DynamicImage) -> Self {
        let (w, h) = (crop.width().max(1), crop.height().max(1));
        let scale = WORK_SIDE as f32 / w.max(h) as f32;
        let (width, height) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
        let luma = crop.to_luma8();
        let gray: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_fn(luma.width(), luma.height(), |x, y| Luma([luma.get_pixel(x, y)[0] as f32 / 255.0]));
        let gray = image::imageops::resize(&gray, width, height, image::imageops::FilterType::Triangle);
        let (keypoints, descriptors) = sift::detect_and_describe(&gray, MAX_KEYPOINTS);
        LocalFeatures { width, height, keypoints, descriptors }
    }

    pub fn len(&self) -> usize {
        self.keypoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keypoints.is_empty()
    }

    /// A keypoint's position as fractions of the crop's width and height.
    pub fn relative(&self, i: usize) -> (f32, f32) {
        let k = &self.keypoints[i];
        (k.x / self.width as f32, k.y / self.height as f32)
    }

    /// Bytes for the catalogue: the frame size and count, then per keypoint four
    /// little-endian f32 and its descriptor.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.len() * (16 + DESCRIPTOR_LEN));
        for v in [self.width, self.height, self.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (k, d) in self.keypoints.iter().zip(&self.descriptors) {
            for v in [k.x, k.y, k.scale, k.angle] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(d);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LocalError> {
        let word = |at: usize| -> [u8; 4] { bytes[at..at + 4].try_into().expect("four bytes") };
        if bytes.len() < 12 {
            return Err(LocalError::Damaged(format!("{} bytes, fewer than the 12 of the header", bytes.len())));
        }
        let (width, height, count) =
            (u32::from_le_bytes(word(0)), u32::from_le_bytes(word(4)), u32::from_le_bytes(word(8)) as usize);
        let record = 16 + DESCRIPTOR_LEN;
        if count > MAX_KEYPOINTS * 4 || bytes.len() != 12 + count * record {
            return Err(LocalError::Damaged(format!(
                "{} bytes do not hold the {count} keypoint(s) the header names",
                bytes.len()
            )));
        }
        let mut keypoints = Vec::with_capacity(count);
        let mut descriptors = Vec::with_capacity(count);
        for i in 0..count {
            let at = 12 + i * record;
            let f = |j: usize| f32::from_le_bytes(word(at + 4 * j));
            let k = Keypoint { x: f(0), y: f(1), scale: f(2), angle: f(3) };
            if ![k.x, k.y, k.scale, k.angle].iter().all(|v| v.is_finite()) {
                return Err(LocalError::Damaged(format!("keypoint {i} holds a number that is not finite")));
            }
            keypoints.push(k);
            descriptors.push(bytes[at + 16..at + record].try_into().expect("descriptor length"));
        }
        Ok(LocalFeatures { width, height, keypoints, descriptors })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A grey texture of random blobs, like callosities or scars on skin.
    pub(crate) fn texture(seed: u64, w: u32, h: u32) -> image::RgbImage {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let blobs: Vec<(f32, f32, f32, f32)> = (0..60)
            .map(|_| {
                (
                    rng.random::<f32>() * w as f32,
                    rng.random::<f32>() * h as f32,
                    3.0 + rng.random::<f32>() * 10.0,
                    if rng.random::<bool>() { 1.0 } else { -1.0 },
                )
            })
            .collect();
        image::RgbImage::from_fn(w, h, |x, y| {
            let mut v = 0.5;
            for &(bx, by, r, s) in &blobs {
                let d2 = (x as f32 - bx).powi(2) + (y as f32 - by).powi(2);
                v += 0.3 * s * (-d2 / (2.0 * r * r)).exp();
            }
            let g = (v.clamp(0.0, 1.0) * 255.0) as u8;
            image::Rgb([g, g, g])
        })
    }

    #[test]
    fn features_survive_the_catalogue_bytes_and_damage_is_an_error() {
        let f = LocalFeatures::of_crop(&DynamicImage::ImageRgb8(texture(1, 200, 150)));
        assert!(f.len() > 20, "a textured crop has keypoints: {}", f.len());
        assert_eq!((f.width, f.height), (320, 240));
        let bytes = f.to_bytes();
        assert_eq!(LocalFeatures::from_bytes(&bytes).unwrap(), f);
        for cut in [0, 5, 12, bytes.len() - 1] {
            let err = LocalFeatures::from_bytes(&bytes[..cut]).unwrap_err().to_string();
            assert!(err.contains("damaged"), "{err}");
        }
        let mut nan = bytes.clone();
        nan[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(LocalFeatures::from_bytes(&nan).unwrap_err().to_string().contains("not finite"));
    }

    #[test]
    fn a_flat_crop_has_no_keypoints_and_no_panic() {
        let flat = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(50, 10, image::Rgb([90, 90, 90])));
        assert!(LocalFeatures::of_crop(&flat).is_empty());
        let tiny = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0])));
        assert!(LocalFeatures::of_crop(&tiny).is_empty());
    }
}
