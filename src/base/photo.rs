//! Reading photographs safely: content hash, pixel size after EXIF orientation,
//! EXIF date and GPS, and decoding with limits so that no file can make whaleid
//! allocate without bound or panic.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, metadata::Orientation};

/// The largest side accepted; larger headers are refused before any pixel is allocated.
pub const MAX_SIDE: u32 = 30_000;
/// The most memory one decode may take.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

pub const PHOTO_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "tif", "tiff"];

pub fn is_photo(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PHOTO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The photo files under `folder` (at any depth, through symbolic links, as the importer
/// reads them), sorted by path.
pub fn photos_under(folder: &Path) -> Vec<std::path::PathBuf> {
    let mut photos: Vec<std::path::PathBuf> = walkdir::WalkDir::new(folder)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && is_photo(e.path()))
        .map(|e| e.into_path())
        .collect();
    photos.sort();
    photos
}

/// What whaleid records about a photo file's content; the catalogue's photo records carry it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PhotoFacts {
    pub hash: String,
    /// Pixel size as the photo is shown, i.e. after EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// The EXIF orientation tag (1-8), 1 when absent.
    pub orientation: u16,
    pub taken_at: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Decodes a photo in memory with EXIF orientation applied. The error says what is wrong
/// with the file (not which file: callers name it).
pub fn decode_bytes(bytes: &[u8]) -> Result<(DynamicImage, u16), String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read the file: {e}"))?;
    let Some(format) = reader.format() else {
        return Err("not an image whaleid reads (JPEG, PNG, WebP or TIFF): unrecognised content".into());
    };
    // The header alone first, so an absurd size is named before any decoder allocates for it.
    let (w, h) =
        ImageReader::with_format(Cursor::new(bytes), format).into_dimensions().map_err(|e| describe(format, e))?;
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("the header claims {w}x{h} pixels, more than the {MAX_SIDE} px whaleid accepts"));
    }
    reader.limits(limits());
    let mut decoder = reader.into_decoder().map_err(|e| describe(format, e))?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if format == image::ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        return Err("truncated JPEG: the file ends before the image data does".into());
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| describe(format, e))?;
    img.apply_orientation(orientation);
    Ok((img, orientation_tag(orientation)))
}

/// Decodes a photo file (see `decode_bytes`).
pub fn decode_file(path: &Path) -> Result<DynamicImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    decode_bytes(&bytes).map(|(img, _)| img)
}

fn describe(format: image::ImageFormat, e: image::ImageError) -> String {
    let name = format!("{format:?}").to_uppercase();
    match e {
        image::ImageError::Limits(_) => format!("{name} too large to decode safely ({e})"),
        image::ImageError::Unsupported(_) => format!("unsupported {name} variant: {e}"),
        _ => format!("not a valid {name} image: {e}"),
    }
}

/// A complete JPEG ends with the EOI marker (some cameras pad a few bytes after it).
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

fn orientation_tag(o: Orientation) -> u16 {
    match o {
        Orientation::NoTransforms => 1,
        Orientation::FlipHorizontal => 2,
        Orientation::Rotate180 => 3,
        Orientation::FlipVertical => 4,
        Orientation::Rotate90FlipH => 5,
        Orientation::Rotate90 => 6,
        Orientation::Rotate270FlipH => 7,
        Orientation::Rotate270 => 8,
    }
}

/// Hashes, decodes (to prove the photo is whole) and reads EXIF metadata.
pub fn probe_bytes(bytes: &[u8]) -> Result<PhotoFacts, String> {
    let (img, orientation) = decode_bytes(bytes)?;
    let exif = read_exif(bytes);
    Ok(PhotoFacts {
        hash: hash_bytes(bytes),
        width: img.width(),
        height: img.height(),
        orientation,
        taken_at: exif.taken_at,
        latitude: exif.latitude,
        longitude: exif.longitude,
    })
}

#[derive(Debug, Default)]
struct ExifFacts {
    taken_at: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

fn read_exif(bytes: &[u8]) -> ExifFacts {
    let Ok(exif) = exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) else {
        return ExifFacts::default();
    };
    let field = |tag| exif.get_field(tag, exif::In::PRIMARY);
    let taken_at = [exif::Tag::DateTimeOriginal, exif::Tag::DateTimeDigitized, exif::Tag::DateTime]
        .into_iter()
        .find_map(|tag| match &field(tag)?.value {
            exif::Value::Ascii(v) => exif::DateTime::from_ascii(v.first()?).ok(),
            _ => None,
        })
        .and_then(|d| {
            chrono::NaiveDate::from_ymd_opt(d.year as i32, d.month as u32, d.day as u32)?.and_hms_opt(
                d.hour as u32,
                d.minute as u32,
                d.second as u32,
            )
        })
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S").to_string());
    let coordinate = |value_tag, ref_tag, negative: u8| -> Option<f64> {
        let exif::Value::Rational(parts) = &field(value_tag)?.value else { return None };
        if parts.len() < 3 || parts.iter().any(|r| r.denom == 0) {
            return None;
        }
        let degrees = parts[0].to_f64() + parts[1].to_f64() / 60.0 + parts[2].to_f64() / 3600.0;
        let sign = match &field(ref_tag).map(|f| &f.value) {
            Some(exif::Value::Ascii(v)) if v.first().and_then(|s| s.first()) == Some(&negative) => -1.0,
            _ => 1.0,
        };
        Some(sign * degrees).filter(|v| v.is_finite())
    };
    ExifFacts {
        taken_at,
        latitude: coordinate(exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef, b'S').filter(|v| v.abs() <= 90.0),
        longitude: coordinate(exif::Tag::GPSLongitude, exif::Tag::GPSLongitudeRef, b'W').filter(|v| v.abs() <= 180.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        out
    }

    #[cfg(unix)]
    #[test]
    fn photos_are_found_through_symbolic_links_to_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("day2")).unwrap();
        std::fs::write(elsewhere.join("a.jpg"), jpeg(8, 8)).unwrap();
        std::fs::write(elsewhere.join("day2/b.jpg"), jpeg(8, 8)).unwrap();
        let folder = dir.path().join("survey");
        std::fs::create_dir_all(&folder).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("a.jpg"), folder.join("a.jpg")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("day2"), folder.join("day2")).unwrap();
        std::fs::write(folder.join("notes.txt"), "not a photo").unwrap();
        let names: Vec<_> =
            photos_under(&folder).iter().map(|p| p.strip_prefix(&folder).unwrap().to_path_buf()).collect();
        assert_eq!(names, [std::path::PathBuf::from("a.jpg"), std::path::PathBuf::from("day2/b.jpg")]);
    }

    #[test]
    fn a_whole_jpeg_is_probed() {
        let info = probe_bytes(&jpeg(64, 48)).unwrap();
        assert_eq!((info.width, info.height, info.orientation), (64, 48, 1));
        assert_eq!(info.hash.len(), 64);
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        let bytes = jpeg(256, 256);
        let err = probe_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(err.contains("truncated") || err.contains("not a valid"), "{err}");
    }

    #[test]
    fn empty_and_text_files_are_refused() {
        assert!(probe_bytes(b"").unwrap_err().contains("empty"));
        assert!(probe_bytes(b"hello, I am a text file").unwrap_err().contains("unrecognised"));
    }

    #[test]
    fn a_png_claiming_100000_pixels_square_is_refused_without_allocating() {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[0u8; 4 * 4 * 3], 4, 4, image::ExtendedColorType::Rgb8)
            .unwrap();
        // Rewrite the IHDR's width and height (bytes 16..24) and its CRC.
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = probe_bytes(&png).unwrap_err();
        assert!(err.contains("100000") || err.contains("too large"), "{err}");
    }

    use image::ImageEncoder;

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
