//! The one place where a photo becomes the embedder's input: crop by the verified box (or
//! take the whole photo), pad to a square so the animal keeps its aspect ratio, resize,
//! normalise with the ImageNet statistics DINOv2 was trained with.

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, RgbImage};

use crate::base::vocabulary::BoxPx;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Side of the raw-pixel baseline's thumbnail.
pub const PIXEL_BASELINE_SIDE: u32 = 32;

/// The crop scaled so its longer side is `side`, centred on a `side` x `side` canvas of the
/// mean colour (which normalises to zero, so padding carries no signal).
pub fn letterbox(img: &DynamicImage, bbox: Option<BoxPx>, side: u32) -> RgbImage {
    let crop = crate::base::crop::crop(img, bbox);
    let (w, h) = crop.dimensions();
    let scale = side as f64 / w.max(h).max(1) as f64;
    let nw = ((w as f64 * scale).round() as u32).clamp(1, side);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, side);
    let resized = if scale < 1.0 {
        // Area averaging: fast and alias-free for the large reductions field photos need.
        image::imageops::thumbnail(&crop.to_rgb8(), nw, nh)
    } else {
        image::imageops::resize(&crop.to_rgb8(), nw, nh, FilterType::CatmullRom)
    };
    let fill = IMAGENET_MEAN.map(|m| (m * 255.0).round() as u8);
    let mut canvas = RgbImage::from_pixel(side, side, image::Rgb(fill));
    image::imageops::replace(&mut canvas, &resized, ((side - nw) / 2) as i64, ((side - nh) / 2) as i64);
    canvas
}

/// The embedder's input for one crop: `[3, side, side]` channel-first, normalised.
pub fn prepare(img: &DynamicImage, bbox: Option<BoxPx>, side: u32) -> Vec<f32> {
    let canvas = letterbox(img, bbox, side);
    let plane = (side * side) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in canvas.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}

/// The raw-pixel baseline every evaluation reports beside the model: the crop as a
/// 32 x 32 colour thumbnail, centred per image (so brightness alone does not match).
/// Cosine similarity of these is what "no learning at all" achieves.
pub fn pixel_vector(img: &DynamicImage, bbox: Option<BoxPx>) -> Vec<f32> {
    let canvas = letterbox(img, bbox, PIXEL_BASELINE_SIDE);
    let mut v: Vec<f32> = canvas.as_raw().iter().map(|&b| b as f32 / 255.0).collect();
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    v.iter_mut().for_each(|x| *x -= mean);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 200])))
    }

    #[test]
    fn a_wide_crop_keeps_its_aspect_and_is_padded_with_zeros() {
        let input = prepare(&gradient(400, 100), None, 28);
        assert_eq!(input.len(), 3 * 28 * 28);
        // 400 x 100 -> 28 x 7, centred: rows 10..17 carry the photo, the rest is padding.
        let row_mean = |c: usize, y: usize| input[c * 784 + y * 28..c * 784 + y * 28 + 28].iter().sum::<f32>() / 28.0;
        assert!(row_mean(0, 0).abs() < 0.01 && row_mean(2, 27).abs() < 0.01, "padding normalises to zero");
        assert!(row_mean(2, 13) > 0.5, "blue 200 is above the mean");
    }

    #[test]
    fn the_box_decides_what_is_seen() {
        let mut img = RgbImage::from_pixel(100, 100, image::Rgb([0, 0, 0]));
        for y in 50..100 {
            for x in 50..100 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let img = DynamicImage::ImageRgb8(img);
        let white = prepare(&img, Some(BoxPx::new(50.0, 50.0, 50.0, 50.0)), 14);
        let black = prepare(&img, Some(BoxPx::new(0.0, 0.0, 50.0, 50.0)), 14);
        assert!(white.iter().all(|&v| v > 1.5), "a white crop is white everywhere");
        assert!(black.iter().all(|&v| v < -1.5), "a black crop is black everywhere");
    }

    #[test]
    fn the_pixel_baseline_ignores_brightness() {
        let dark = pixel_vector(&gradient(64, 64), None);
        let bright = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x % 256) as u8 + 40, (y % 256) as u8 + 40, 240])
        }));
        let bright = pixel_vector(&bright, None);
        assert_eq!(dark.len(), 32 * 32 * 3);
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dark.iter().zip(&bright).map(|(a, b)| a * b).sum::<f32>() / (norm(&dark) * norm(&bright));
        assert!(cos > 0.99, "cosine {cos}");
    }
}
