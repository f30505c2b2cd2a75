//! The files `generate` writes: JPEGs with EXIF date and place, `labels.csv` and YOLO boxes.

use std::fs;
use std::io::Cursor;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, RgbImage};

use super::sightings::Capture;

/// The label every synthetic photo carries in `labels.csv`.
pub const SPECIES: &str = "humpback_whale";

/// File name of one synthetic photo, e.g. `whale_0003_02.jpg`.
pub fn photo_file_name(individual: usize, photo: usize) -> String {
    format!("whale_{individual:04}_{photo:02}.jpg")
}

/// Catalogue id of one synthetic individual, e.g. `SYN-0003`.
pub fn individual_id(individual: usize) -> String {
    format!("SYN-{individual:04}")
}

/// `labels.csv`: one row per photo of `individuals`, each with `photos` photos.
pub(super) fn write_labels_csv(path: &Path, individuals: Range<usize>, photos: usize) -> Result<()> {
    let mut csv = csv::Writer::from_path(path)?;
    csv.write_record(["image", "individual_id", "species", "side", "part"])?;
    for individual in individuals {
        let id = individual_id(individual);
        for photo in 0..photos {
            let name = photo_file_name(individual, photo);
            csv.write_record([name.as_str(), id.as_str(), SPECIES, "unknown", "fluke"])?;
        }
    }
    csv.flush()?;
    Ok(())
}

pub(super) fn yolo_line(fluke_box: [f32; 4], width: u32, height: u32) -> String {
    let [x, y, w, h] = fluke_box;
    let (width, height) = (width as f32, height as f32);
    let cx = ((x + w / 2.0) / width).clamp(0.0, 1.0);
    let cy = ((y + h / 2.0) / height).clamp(0.0, 1.0);
    format!("0 {cx:.6} {cy:.6} {:.6} {:.6}\n", (w / width).clamp(0.0, 1.0), (h / height).clamp(0.0, 1.0))
}

pub(super) fn write_jpeg(path: &Path, image: &RgbImage, quality: u8, capture: &Capture) -> Result<()> {
    let mut bytes = Vec::with_capacity(64 * 1024);
    let mut encoder = JpegEncoder::new_with_quality(&mut bytes, quality);
    encoder.set_exif_metadata(exif_block(capture)?).map_err(|e| anyhow::anyhow!("JPEG encoder refused EXIF: {e}"))?;
    encoder.encode_image(image)?;
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// TIFF-structured EXIF with the capture time and place; the JPEG encoder wraps it in APP1.
fn exif_block(capture: &Capture) -> Result<Vec<u8>> {
    use exif::{Field, In, Tag, Value};
    let ascii = |s: &str| Value::Ascii(vec![s.as_bytes().to_vec()]);
    let field = |tag, value| Field { tag, ifd_num: In::PRIMARY, value };
    let fields = [
        field(Tag::Make, ascii("whaleid")),
        field(Tag::Model, ascii("synthetic fluke")),
        field(Tag::DateTime, ascii(&capture.timestamp)),
        field(Tag::DateTimeOriginal, ascii(&capture.timestamp)),
        field(Tag::GPSVersionID, Value::Byte(vec![2, 3, 0, 0])),
        field(Tag::GPSLatitudeRef, ascii(if capture.latitude >= 0.0 { "N" } else { "S" })),
        field(Tag::GPSLatitude, degrees_minutes_seconds(capture.latitude)),
        field(Tag::GPSLongitudeRef, ascii(if capture.longitude >= 0.0 { "E" } else { "W" })),
        field(Tag::GPSLongitude, degrees_minutes_seconds(capture.longitude)),
    ];
    let mut writer = exif::experimental::Writer::new();
    for f in &fields {
        writer.push_field(f);
    }
    let mut buf = Cursor::new(Vec::new());
    writer.write(&mut buf, false).context("encoding EXIF")?;
    Ok(buf.into_inner())
}

fn degrees_minutes_seconds(angle: f64) -> exif::Value {
    use exif::Rational;
    let a = angle.abs();
    let degrees = a.floor();
    let minutes = ((a - degrees) * 60.0).floor();
    let centiseconds = ((a - degrees - minutes / 60.0) * 360_000.0).round();
    exif::Value::Rational(vec![
        Rational { num: degrees as u32, denom: 1 },
        Rational { num: minutes as u32, denom: 1 },
        Rational { num: centiseconds as u32, denom: 100 },
    ])
}
