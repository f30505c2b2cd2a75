//! Cutting an annotation out of its photo: the one place that maps a box to pixels
//! (exports, the embedder and training use it).

use image::DynamicImage;

use crate::base::vocabulary::BoxPx;

/// The pixel rectangle `(x, y, w, h)` a box covers in a `width` x `height` photo: rounded
/// outwards, clamped to the photo, at least one pixel.
pub fn pixel_rect(bbox: &BoxPx, width: u32, height: u32) -> (u32, u32, u32, u32) {
    let x0 = bbox.x.floor().clamp(0.0, width.saturating_sub(1) as f64) as u32;
    let y0 = bbox.y.floor().clamp(0.0, height.saturating_sub(1) as f64) as u32;
    let x1 = ((bbox.x + bbox.w).ceil().clamp(0.0, width as f64) as u32).max(x0 + 1);
    let y1 = ((bbox.y + bbox.h).ceil().clamp(0.0, height as f64) as u32).max(y0 + 1);
    (x0, y0, (x1 - x0).min(width - x0), (y1 - y0).min(height - y0))
}

/// The crop of a box, or the whole photo when there is none.
pub fn crop(img: &DynamicImage, bbox: Option<BoxPx>) -> DynamicImage {
    match bbox {
        None => img.clone(),
        Some(b) => {
            let (x, y, w, h) = pixel_rect(&b, img.width(), img.height());
            img.crop_imm(x, y, w, h)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_map_to_pixels_inside_the_photo() {
        assert_eq!(pixel_rect(&BoxPx::new(10.4, 5.6, 20.2, 10.0), 100, 50), (10, 5, 21, 11));
        assert_eq!(pixel_rect(&BoxPx::new(-5.0, -5.0, 500.0, 500.0), 100, 50), (0, 0, 100, 50));
        assert_eq!(pixel_rect(&BoxPx::new(99.9, 49.9, 0.0, 0.0), 100, 50), (99, 49, 1, 1));
    }
}
