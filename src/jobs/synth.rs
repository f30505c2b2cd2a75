//! Synthetic humpback-whale fluke photographs: the demo catalogue and test data for metric
//! learning.
//!
//! An individual's identity is drawn from `(seed, individual)` alone: the shape of its trailing
//! edge (scallops, the central notch, nicks and missing chunks), its black-and-white ventral
//! pigmentation, its scars and the survey days it was sighted on. A photograph is drawn from
//! `(seed, individual, photo)`: pose, sea and sky, light, water streaming off the fluke,
//! occlusion and blur. So individual 7 looks the same whether 10 or 100 are generated.
//!
//! The identity is painted once into a texture in the fluke's canonical frame: `u` runs across
//! the span from the left tip (-0.5) to the right tip (+0.5) as the photographer sees the
//! ventral side, `v` runs down from the trailing edge (0 at the notch) to the tail stock; one
//! unit is the span. A photo maps that frame into the picture with one affine transform per
//! lobe (both agree on the centre line), which gives rotation, scale, perspective squash and
//! shear, plus a slight yaw asymmetry between the lobes.

use std::f32::consts::PI;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, ensure};
use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tiny_skia::{
    Color, FillRule, FilterQuality, GradientStop, LineCap, LinearGradient, Mask, Paint, PathBuilder, Pattern, Pixmap,
    Point, RadialGradient, Rect, Shader, SpreadMode, Stroke, Transform,
};

/// What to generate and where.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub individuals: usize,
    pub images_per_individual: usize,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// Individuals are numbered from here, so a second call can make *other* individuals
    /// (train on 30, evaluate on 20 others).
    pub first_individual: usize,
    /// JPEG quality, 1..=100.
    pub jpeg_quality: u8,
}

impl SynthOptions {
    pub fn new(out: impl Into<PathBuf>, individuals: usize, images_per_individual: usize, seed: u64) -> Self {
        Self {
            out: out.into(),
            individuals,
            images_per_individual,
            seed,
            width: 512,
            height: 384,
            first_individual: 0,
            jpeg_quality: 90,
        }
    }
}

/// What `generate` wrote.
#[derive(Clone, Debug)]
pub struct SynthReport {
    pub photos: usize,
    pub individuals: usize,
    pub labels_csv: PathBuf,
    pub images_dir: PathBuf,
}

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

const MIN_SIDE: u32 = 64;
const MAX_SIDE: u32 = 8192;

/// Renders all photos (in parallel with rayon), calling `on_photo` once per photo written.
///
/// Writes `images/whale_IIII_PP.jpg` (with EXIF date and GPS), `labels.csv`
/// (`image,individual_id,species,side,part`), and YOLO boxes `labels/whale_IIII_PP.txt` with
/// `labels/classes.txt`.
///
/// # Errors
/// When the options are out of range or a file cannot be written.
pub fn generate(opts: &SynthOptions, on_photo: &(dyn Fn() + Sync)) -> Result<SynthReport> {
    ensure!(
        (MIN_SIDE..=MAX_SIDE).contains(&opts.width) && (MIN_SIDE..=MAX_SIDE).contains(&opts.height),
        "photo size {}x{} is outside {MIN_SIDE}..={MAX_SIDE} pixels",
        opts.width,
        opts.height
    );
    ensure!((1..=100).contains(&opts.jpeg_quality), "JPEG quality {} is outside 1..=100", opts.jpeg_quality);
    let images_dir = opts.out.join("images");
    let labels_dir = opts.out.join("labels");
    for dir in [&images_dir, &labels_dir] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let first = opts.first_individual;
    let last = first.checked_add(opts.individuals).context("first_individual + individuals overflows")?;
    (first..last).into_par_iter().try_for_each(|individual| {
        let whale = SyntheticWhale::new(opts.seed, individual);
        (0..opts.images_per_individual).into_par_iter().try_for_each(|photo| {
            let (image, fluke_box) = whale.photograph(opts.seed, photo, opts.width, opts.height);
            let capture = whale.capture(opts.seed, photo);
            let name = photo_file_name(individual, photo);
            write_jpeg(&images_dir.join(&name), &image, opts.jpeg_quality, &capture)?;
            let yolo = labels_dir.join(name.replace(".jpg", ".txt"));
            fs::write(&yolo, yolo_line(fluke_box, opts.width, opts.height))
                .with_context(|| format!("writing {}", yolo.display()))?;
            on_photo();
            Ok::<_, anyhow::Error>(())
        })
    })?;

    let classes = labels_dir.join("classes.txt");
    fs::write(&classes, "fluke\n").with_context(|| format!("writing {}", classes.display()))?;
    let labels_csv = opts.out.join("labels.csv");
    write_labels_csv(&labels_csv, opts).with_context(|| format!("writing {}", labels_csv.display()))?;

    Ok(SynthReport {
        photos: opts.individuals * opts.images_per_individual,
        individuals: opts.individuals,
        labels_csv,
        images_dir,
    })
}

/// Renders one photo in memory (for benchmarks and tests): the RGB image and its fluke box
/// `[x, y, w, h]` in pixels (the visible part of the fluke, clipped to the frame).
pub fn render_photo(seed: u64, individual: usize, photo: usize, width: u32, height: u32) -> (RgbImage, [f32; 4]) {
    let width = width.clamp(MIN_SIDE, MAX_SIDE);
    let height = height.clamp(MIN_SIDE, MAX_SIDE);
    SyntheticWhale::new(seed, individual).photograph(seed, photo, width, height)
}

// ---------------------------------------------------------------------------------------------
// Output files

fn write_labels_csv(path: &Path, opts: &SynthOptions) -> Result<()> {
    let mut csv = csv::Writer::from_path(path)?;
    csv.write_record(["image", "individual_id", "species", "side", "part"])?;
    for individual in opts.first_individual..opts.first_individual + opts.individuals {
        let id = individual_id(individual);
        for photo in 0..opts.images_per_individual {
            let name = photo_file_name(individual, photo);
            csv.write_record([name.as_str(), id.as_str(), SPECIES, "unknown", "fluke"])?;
        }
    }
    csv.flush()?;
    Ok(())
}

fn yolo_line(fluke_box: [f32; 4], width: u32, height: u32) -> String {
    let [x, y, w, h] = fluke_box;
    let (width, height) = (width as f32, height as f32);
    let cx = ((x + w / 2.0) / width).clamp(0.0, 1.0);
    let cy = ((y + h / 2.0) / height).clamp(0.0, 1.0);
    format!("0 {cx:.6} {cy:.6} {:.6} {:.6}\n", (w / width).clamp(0.0, 1.0), (h / height).clamp(0.0, 1.0))
}

fn write_jpeg(path: &Path, image: &RgbImage, quality: u8, capture: &Capture) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// Seeds and noise

const STREAM_IDENTITY: u64 = 0x1D;
const STREAM_PHOTO: u64 = 0x9F;
const STREAM_CAPTURE: u64 = 0xCA;
const STREAM_SURVEY: u64 = 0x5E;

fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mix_seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |h, &p| splitmix64(h ^ p))
}

fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(parts))
}

fn lattice() -> &'static [f32] {
    static LATTICE: OnceLock<Vec<f32>> = OnceLock::new();
    LATTICE.get_or_init(|| {
        (0..256u64 * 256).map(|i| (splitmix64(i ^ 0x5EA5_1DE5) >> 40) as f32 / (1u64 << 24) as f32).collect()
    })
}

/// Smooth value noise in [0, 1] on a 256x256 periodic lattice; `key` picks the offset.
#[derive(Clone, Copy)]
struct Noise {
    table: &'static [f32],
    ox: i32,
    oy: i32,
}

impl Noise {
    fn new(key: u64) -> Self {
        let h = splitmix64(key);
        Self { table: lattice(), ox: (h & 255) as i32, oy: ((h >> 8) & 255) as i32 }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
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
    fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
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

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)]
}

fn scale3(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn unit_u8(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
}

/// Bilinear resampling of an RGBA buffer, pixel centres aligned, in fixed point. Faster than
/// a bilinear pattern fill for whole-frame upscaling.
fn resample(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
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
fn defocus(canvas: &mut Pixmap, halvings: u32) {
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

fn solid(rgb: [f32; 3], alpha: f32) -> Paint<'static> {
    let mut paint = Paint::default();
    paint.set_color(color(rgb, alpha));
    paint.anti_alias = true;
    paint
}

fn color(rgb: [f32; 3], alpha: f32) -> Color {
    Color::from_rgba(rgb[0].clamp(0.0, 1.0), rgb[1].clamp(0.0, 1.0), rgb[2].clamp(0.0, 1.0), alpha.clamp(0.0, 1.0))
        .unwrap_or(Color::BLACK)
}

fn shader_paint(shader: Shader<'_>) -> Paint<'_> {
    Paint { shader, anti_alias: true, ..Paint::default() }
}

/// Gaussian-ish sample: the sum of three uniforms, scaled to unit variance.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 2.0
}

// ---------------------------------------------------------------------------------------------
// Geometry

#[derive(Clone, Copy, Debug)]
struct Pt {
    x: f32,
    y: f32,
}

const fn pt(x: f32, y: f32) -> Pt {
    Pt { x, y }
}

/// `x' = a x + c y + tx`, `y' = b x + d y + ty` (tiny-skia's row order).
#[derive(Clone, Copy, Debug)]
struct Affine {
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    tx: f32,
    ty: f32,
}

impl Affine {
    fn new(a: f32, b: f32, c: f32, d: f32, tx: f32, ty: f32) -> Self {
        Self { a, b, c, d, tx, ty }
    }
    fn translate(tx: f32, ty: f32) -> Self {
        Self::new(1.0, 0.0, 0.0, 1.0, tx, ty)
    }
    fn scale(sx: f32, sy: f32) -> Self {
        Self::new(sx, 0.0, 0.0, sy, 0.0, 0.0)
    }
    fn rotate(angle: f32) -> Self {
        let (s, c) = angle.sin_cos();
        Self::new(c, s, -s, c, 0.0, 0.0)
    }
    fn shear_x(k: f32) -> Self {
        Self::new(1.0, 0.0, k, 1.0, 0.0, 0.0)
    }
    /// The transform that applies `first`, then `self`.
    fn after(self, first: Affine) -> Affine {
        let f = first;
        Affine {
            a: self.a * f.a + self.c * f.b,
            b: self.b * f.a + self.d * f.b,
            c: self.a * f.c + self.c * f.d,
            d: self.b * f.c + self.d * f.d,
            tx: self.a * f.tx + self.c * f.ty + self.tx,
            ty: self.b * f.tx + self.d * f.ty + self.ty,
        }
    }
    fn apply(&self, p: Pt) -> Pt {
        pt(self.a * p.x + self.c * p.y + self.tx, self.b * p.x + self.d * p.y + self.ty)
    }
    fn to_skia(self) -> Transform {
        Transform::from_row(self.a, self.b, self.c, self.d, self.tx, self.ty)
    }
}

fn polygon_path(points: &[Pt]) -> Option<tiny_skia::Path> {
    let mut pb = PathBuilder::with_capacity(points.len() + 1, points.len() + 1);
    let (first, rest) = points.split_first()?;
    pb.move_to(first.x, first.y);
    for p in rest {
        pb.line_to(p.x, p.y);
    }
    pb.close();
    pb.finish()
}

fn polyline_path(points: &[Pt]) -> Option<tiny_skia::Path> {
    let mut pb = PathBuilder::with_capacity(points.len(), points.len());
    let (first, rest) = points.split_first()?;
    pb.move_to(first.x, first.y);
    for p in rest {
        pb.line_to(p.x, p.y);
    }
    pb.finish()
}

fn ellipse_path(center: Pt, rx: f32, ry: f32, angle: f32) -> Option<(tiny_skia::Path, Transform)> {
    let path = PathBuilder::from_oval(Rect::from_xywh(-rx, -ry, 2.0 * rx, 2.0 * ry)?)?;
    let transform = Transform::from_rotate(angle.to_degrees()).post_translate(center.x, center.y);
    Some((path, transform))
}

// ---------------------------------------------------------------------------------------------
// The individual: fluke shape

/// Where the tail stock's outline ends, well below any water line.
const STOCK_BOTTOM: f32 = 0.68;
/// Half the tail stock's width where it leaves the flukes.
const STOCK_ROOT_U: f32 = 0.07;
/// Lobe parameter where the leading edge meets the tail stock.
const T_ROOT: f32 = 2.0 * STOCK_ROOT_U;

/// A cut into the trailing edge, in lobe parameter `t` (0 at the notch, 1 at the tip).
#[derive(Clone, Debug)]
struct Cut {
    t: f32,
    half_width: f32,
    depth: f32,
}

/// One lobe's outline, parameterised by `t` from the notch (0) to the tip (1); `u = side t / 2`.
#[derive(Clone, Debug)]
struct Lobe {
    side: f32,
    tip_lift: f32,
    bulge: f32,
    root_chord: f32,
    chord_p: f32,
    chord_q: f32,
    notch_depth: f32,
    notch_width: f32,
    /// Where the lobe ends (below 1 when the tip is missing).
    t_end: f32,
    /// Scallop boundaries (projecting points of the trailing edge) and each scallop's depth.
    scallops: Vec<(f32, f32)>,
    nicks: Vec<Cut>,
    bites: Vec<Cut>,
}

impl Lobe {
    /// The trailing edge without scallops or damage; the notch is included.
    fn trailing_smooth(&self, t: f32) -> f32 {
        let notch = self.notch_depth * (1.0 - t / self.notch_width).max(0.0).powf(1.4);
        -self.tip_lift * t.powf(1.8) - self.bulge * (PI * t).sin() + notch
    }

    fn leading(&self, t: f32) -> f32 {
        let chord = self.root_chord * (1.0 - t.powf(self.chord_p)).max(0.0).powf(self.chord_q);
        -self.tip_lift * t.powf(1.8) - self.bulge * (PI * t).sin() + chord + 0.004
    }

    fn scallop_depth(&self, t: f32) -> f32 {
        let k = self.scallops.partition_point(|&(start, _)| start <= t);
        if k == 0 || k >= self.scallops.len() {
            return 0.0;
        }
        let (t0, depth) = self.scallops[k - 1];
        let t1 = self.scallops[k].0;
        let phase = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0);
        depth * (4.0 * phase * (1.0 - phase)).powf(0.6)
    }

    fn damage(&self, t: f32) -> f32 {
        let nicks: f32 = self.nicks.iter().map(|c| c.depth * (1.0 - (t - c.t).abs() / c.half_width).max(0.0)).sum();
        let bites: f32 = self
            .bites
            .iter()
            .map(|c| {
                let x = (t - c.t) / c.half_width;
                c.depth * (1.0 - x * x).max(0.0).sqrt() * (1.0 + 0.2 * (x * 9.0 + c.t * 50.0).sin())
            })
            .sum();
        nicks + bites
    }

    fn trailing(&self, t: f32) -> f32 {
        let v = self.trailing_smooth(t) + self.scallop_depth(t) + self.damage(t);
        v.min(self.leading(t) - 0.008)
    }

    fn u(&self, t: f32) -> f32 {
        self.side * 0.5 * t
    }

    /// Trailing-edge sample positions: a fine grid plus every feature's corners.
    fn trailing_samples(&self) -> Vec<f32> {
        let mut ts: Vec<f32> = (0..=260).map(|i| i as f32 / 260.0 * self.t_end).collect();
        ts.extend(self.scallops.iter().map(|s| s.0));
        for c in self.nicks.iter().chain(&self.bites) {
            ts.extend([c.t - c.half_width, c.t, c.t + c.half_width]);
        }
        ts.retain(|&t| (0.0..=self.t_end).contains(&t));
        ts.sort_by(f32::total_cmp);
        ts.dedup_by(|a, b| (*a - *b).abs() < 1e-4);
        ts
    }

    /// The lobe from the notch out along the trailing edge, back along the leading edge and
    /// down the side of the tail stock.
    fn outline(&self, rng: &mut ChaCha8Rng) -> (Vec<Pt>, usize) {
        let mut points: Vec<Pt> = self.trailing_samples().iter().map(|&t| pt(self.u(t), self.trailing(t))).collect();
        let trailing_len = points.len();
        if self.t_end < 1.0 {
            // A torn-off tip: a ragged cut from trailing to leading edge.
            let (a, b) = (self.trailing(self.t_end), self.leading(self.t_end));
            for k in 1..4 {
                let f = k as f32 / 4.0;
                let jitter = (rng.random::<f32>() - 0.5) * 0.012;
                points.push(pt(self.u(self.t_end) + self.side * jitter, lerp(a, b, f)));
            }
        }
        for i in 0..=120 {
            let t = lerp(self.t_end, T_ROOT, i as f32 / 120.0);
            points.push(pt(self.u(t), self.leading(t)));
        }
        // Fillet into the tail stock, then straight down.
        let root = self.leading(T_ROOT);
        let (p0, c, p1) =
            (pt(self.side * STOCK_ROOT_U, root), pt(self.side * 0.054, root + 0.01), pt(self.side * 0.05, root + 0.07));
        for i in 1..=6 {
            let s = i as f32 / 6.0;
            let q = |a: f32, b: f32, d: f32| (1.0 - s) * (1.0 - s) * a + 2.0 * s * (1.0 - s) * b + s * s * d;
            points.push(pt(q(p0.x, c.x, p1.x), q(p0.y, c.y, p1.y)));
        }
        points.push(pt(self.side * 0.054, STOCK_BOTTOM));
        (points, trailing_len)
    }
}

/// The outline in the canonical frame, ready to be mapped into a photo.
struct FlukeOutline {
    /// Left half (u <= 0, overlapping the centre line a little so the halves meet without a seam).
    left: Vec<Pt>,
    right: Vec<Pt>,
    /// The whole outline.
    full: Vec<Pt>,
    /// Trailing-edge points of both lobes, tip to tip.
    trailing_edge: Vec<Pt>,
    /// Leading-edge points of both lobes.
    leading_edge: Vec<Pt>,
    /// The root of the leading edge: the fluke box stops a little below it.
    box_cut_v: f32,
}

impl FlukeOutline {
    fn new(left: &Lobe, right: &Lobe, rng: &mut ChaCha8Rng) -> Self {
        let (left_pts, left_te) = left.outline(rng);
        let (right_pts, right_te) = right.outline(rng);
        let notch = right_pts[0];
        let bottom = pt(0.0, STOCK_BOTTOM);
        let seam = 0.004;

        let mut left_half = left_pts.clone();
        left_half.extend([bottom, pt(seam, STOCK_BOTTOM), pt(seam, notch.y + 0.012)]);
        let mut right_half = right_pts.clone();
        right_half.push(bottom);

        let mut full = vec![bottom];
        full.extend(left_pts.iter().rev());
        full.extend(right_pts.iter().skip(1));

        let mut trailing_edge: Vec<Pt> = left_pts[..left_te].iter().rev().copied().collect();
        trailing_edge.extend(&right_pts[1..right_te]);
        let leading_edge = left_pts[left_te..]
            .iter()
            .chain(&right_pts[right_te..])
            .copied()
            .filter(|p| p.y < STOCK_BOTTOM - 0.2)
            .collect();
        let box_cut_v = left.leading(T_ROOT).max(right.leading(T_ROOT)) + 0.03;
        Self { left: left_half, right: right_half, full, trailing_edge, leading_edge, box_cut_v }
    }
}

// ---------------------------------------------------------------------------------------------
// The individual: pigmentation and scars, painted into a canonical texture

/// Texture pixels per canonical unit.
const TEXTURE_SCALE: f32 = 400.0;
const TEXTURE_W: u32 = 448;
const TEXTURE_H: u32 = 392;
/// Texture pixel of the canonical origin.
const TEXTURE_ORIGIN: Pt = pt(224.0, 100.0);

fn canonical_from_texture() -> Affine {
    let s = 1.0 / TEXTURE_SCALE;
    Affine::new(s, 0.0, 0.0, s, -TEXTURE_ORIGIN.x * s, -TEXTURE_ORIGIN.y * s)
}

fn texture_from_canonical() -> Affine {
    Affine::new(TEXTURE_SCALE, 0.0, 0.0, TEXTURE_SCALE, TEXTURE_ORIGIN.x, TEXTURE_ORIGIN.y)
}

/// Parameters of the black-and-white field whose sign paints the ventral side black.
struct PigmentField {
    bias: f32,
    noise: Noise,
    noise_amp: f32,
    noise_freq: f32,
    symmetry: f32,
    trailing_margin: f32,
    trailing_width: f32,
    leading_margin: f32,
    leading_width: f32,
    centre: f32,
    centre_width: f32,
    tips: f32,
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
    white: [f32; 3],
    black: [f32; 3],
}

impl PigmentField {
    fn random(rng: &mut ChaCha8Rng) -> Self {
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
    u: f32,
    trailing: f32,
    /// Width of the dark trailing margin here: it is ragged along the span.
    margin_width: f32,
    leading: f32,
    root: f32,
}

/// Paints the ventral pattern into a canonical texture. Also returns the field at half
/// resolution (positive where black), so marks can contrast with the skin beneath.
fn paint_pigmentation(field: &PigmentField, left: &Lobe, right: &Lobe, rng: &mut ChaCha8Rng) -> (Pixmap, Vec<f32>) {
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
fn paint_marks(
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

// ---------------------------------------------------------------------------------------------
// The individual: sighting history

/// Six sampling occasions across one season.
const SURVEY_DAYS: [&str; 6] = ["2024:06:14", "2024:07:02", "2024:07:19", "2024:08:06", "2024:08:24", "2024:09:11"];
/// Stellwagen Bank, Gulf of Maine.
const SURVEY_SITE: (f64, f64) = (42.35, -70.30);

#[derive(Clone, Debug)]
struct Sighting {
    day: usize,
    start_seconds: u32,
    latitude: f64,
    longitude: f64,
}

/// When and where one photo was taken.
#[derive(Clone, Debug)]
struct Capture {
    /// EXIF format, `YYYY:MM:DD HH:MM:SS`.
    timestamp: String,
    latitude: f64,
    longitude: f64,
}

fn survey_day_position(seed: u64, day: usize) -> (f64, f64) {
    let mut rng = rng_for(&[seed, STREAM_SURVEY, day as u64]);
    (SURVEY_SITE.0 + rng.random_range(-0.08..0.08), SURVEY_SITE.1 + rng.random_range(-0.12..0.12))
}

fn random_sightings(seed: u64, rng: &mut ChaCha8Rng) -> Vec<Sighting> {
    let count = [1, 1, 2, 2, 2, 3, 3, 4][rng.random_range(0..8)];
    let mut days: Vec<usize> = (0..SURVEY_DAYS.len()).collect();
    for i in 0..count {
        let j = rng.random_range(i..days.len());
        days.swap(i, j);
    }
    days.truncate(count);
    days.sort_unstable();
    days.into_iter()
        .map(|day| {
            let (lat, lon) = survey_day_position(seed, day);
            Sighting {
                day,
                start_seconds: rng.random_range(7 * 3600..17 * 3600),
                latitude: lat + rng.random_range(-0.03..0.03),
                longitude: lon + rng.random_range(-0.04..0.04),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The individual

struct SyntheticWhale {
    individual: usize,
    outline: FlukeOutline,
    pigment: Pixmap,
    /// Canonical points inside the flukes (above the box cut), for the visible box.
    interior: Vec<Pt>,
    sightings: Vec<Sighting>,
}

impl SyntheticWhale {
    fn new(seed: u64, individual: usize) -> Self {
        let mut rng = rng_for(&[seed, STREAM_IDENTITY, individual as u64]);
        let rng = &mut rng;
        let (left, right) = random_lobes(rng);
        let outline = FlukeOutline::new(&left, &right, rng);
        let field = PigmentField::random(rng);
        let (mut pigment, field_values) = paint_pigmentation(&field, &left, &right, rng);
        paint_marks(&mut pigment, &field_values, &left, &right, &field, rng);
        darken_tail_stock(&mut pigment, outline.box_cut_v);
        let sightings = random_sightings(seed, rng);
        let interior = interior_points(&outline);
        Self { individual, outline, pigment, interior, sightings }
    }

    fn capture(&self, seed: u64, photo: usize) -> Capture {
        let mut rng = rng_for(&[seed, STREAM_CAPTURE, self.individual as u64, photo as u64]);
        let sighting = &self.sightings[photo % self.sightings.len()];
        let s = sighting.start_seconds + rng.random_range(0..1500);
        Capture {
            timestamp: format!("{} {:02}:{:02}:{:02}", SURVEY_DAYS[sighting.day], s / 3600, s / 60 % 60, s % 60),
            latitude: sighting.latitude + rng.random_range(-0.002..0.002),
            longitude: sighting.longitude + rng.random_range(-0.002..0.002),
        }
    }
}

fn random_lobes(rng: &mut ChaCha8Rng) -> (Lobe, Lobe) {
    let tip_lift = rng.random_range(0.04..0.15);
    let bulge = rng.random_range(-0.035..0.03);
    let root_chord = rng.random_range(0.22..0.3);
    let chord_p = rng.random_range(1.3..2.3);
    let chord_q = rng.random_range(0.45..0.8);
    let notch_depth = rng.random_range(0.025..0.06);
    let notch_width = rng.random_range(0.025..0.06);
    let scallop_count = rng.random_range(8.0..30.0f32);
    let scallop_depth = rng.random_range(0.003..0.011);
    let nicks = [0, 0, 1, 1, 1, 2, 2, 3, 4][rng.random_range(0..9)];
    let bites = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2][rng.random_range(0..10)];
    let torn_tip = rng.random::<f32>() < 0.12;
    let torn_side = if rng.random::<bool>() { 1.0 } else { -1.0 };

    let mut lobes = [-1.0f32, 1.0].map(|side| Lobe {
        side,
        tip_lift: tip_lift + rng.random_range(-0.015..0.015),
        bulge: bulge + rng.random_range(-0.008..0.008),
        root_chord: root_chord + rng.random_range(-0.01..0.01),
        chord_p,
        chord_q,
        notch_depth,
        notch_width,
        t_end: if torn_tip && side == torn_side { rng.random_range(0.8..0.95) } else { 1.0 },
        scallops: Vec::new(),
        nicks: Vec::new(),
        bites: Vec::new(),
    });
    for lobe in &mut lobes {
        let n = (scallop_count + rng.random_range(-3.0..3.0)).max(4.0);
        let spacing = 1.0 / n;
        let mut t = lobe.notch_width + rng.random::<f32>() * spacing;
        while t < lobe.t_end - 0.02 {
            let envelope = 1.0 - 0.75 * t.powi(3);
            lobe.scallops.push((t, scallop_depth * rng.random_range(0.3..1.5) * envelope));
            t += spacing * rng.random_range(0.5..1.5);
        }
    }
    for _ in 0..nicks {
        let lobe = &mut lobes[rng.random_range(0..2)];
        let t = rng.random_range(lobe.notch_width + 0.03..lobe.t_end - 0.04);
        lobe.nicks.push(Cut { t, half_width: rng.random_range(0.006..0.018), depth: rng.random_range(0.01..0.032) });
    }
    for _ in 0..bites {
        let lobe = &mut lobes[rng.random_range(0..2)];
        let t = rng.random_range(0.15..lobe.t_end - 0.08);
        lobe.bites.push(Cut { t, half_width: rng.random_range(0.03..0.1), depth: rng.random_range(0.02..0.07) });
    }
    let [left, right] = lobes;
    (left, right)
}

/// The tail stock is in shadow and darkens towards the water.
fn darken_tail_stock(pigment: &mut Pixmap, top_v: f32) {
    let ts = texture_from_canonical().to_skia();
    let (top, bottom) = (top_v - 0.03, 0.62);
    let Some(shader) = LinearGradient::new(
        Point::from_xy(0.0, top),
        Point::from_xy(0.0, bottom),
        vec![
            GradientStop::new(0.0, Color::from_rgba8(0, 0, 0, 0)),
            GradientStop::new(1.0, Color::from_rgba8(0, 0, 0, 190)),
        ],
        SpreadMode::Pad,
        Transform::identity(),
    ) else {
        return;
    };
    if let Some(rect) = Rect::from_ltrb(-0.5, top, 0.5, STOCK_BOTTOM + 0.05) {
        pigment.fill_rect(rect, &shader_paint(shader), ts, None);
    }
}

fn interior_points(outline: &FlukeOutline) -> Vec<Pt> {
    let Some(mut mask) = Mask::new(TEXTURE_W, TEXTURE_H) else {
        return Vec::new();
    };
    if let Some(path) = polygon_path(&outline.full) {
        let ts = texture_from_canonical().to_skia();
        mask.fill_path(&path, FillRule::Winding, false, ts);
    }
    let to_canonical = canonical_from_texture();
    let step = 4;
    let mut points = Vec::new();
    for y in (0..TEXTURE_H).step_by(step) {
        for x in (0..TEXTURE_W).step_by(step) {
            if mask.data()[(y * TEXTURE_W + x) as usize] > 127 {
                let p = to_canonical.apply(pt(x as f32 + 0.5, y as f32 + 0.5));
                if p.y <= outline.box_cut_v {
                    points.push(p);
                }
            }
        }
    }
    points
}

// ---------------------------------------------------------------------------------------------
// A photo: pose

/// Where the fluke sits in one photo: a transform per lobe, agreeing on the centre line.
struct Pose {
    photo_from_left: Affine,
    photo_from_right: Affine,
    /// Fluke span in pixels.
    span: f32,
}

impl Pose {
    fn map(&self, p: Pt) -> Pt {
        if p.x < 0.0 { self.photo_from_left.apply(p) } else { self.photo_from_right.apply(p) }
    }

    fn random(rng: &mut ChaCha8Rng, outline: &FlukeOutline, width: f32, height: f32) -> Self {
        let span = width * rng.random_range(0.45..0.9);
        let squash = rng.random_range(0.65..1.05);
        let shear = rng.random_range(-0.22..0.22);
        let angle = rng.random_range(-25.0f32..25.0).to_radians();
        let yaw = rng.random_range(-0.16..0.16);
        let twist = [rng.random_range(-0.07..0.07), rng.random_range(-0.07..0.07)];
        let core = Affine::rotate(angle)
            .after(Affine::shear_x(shear))
            .after(Affine::scale(span, span * squash))
            .after(Affine::translate(0.0, -0.1));
        let half = |side: f32, twist: f32| core.after(Affine::new(1.0 + side * yaw, twist, 0.0, 1.0, 0.0, 0.0));
        let mut pose = Pose { photo_from_left: half(-1.0, twist[0]), photo_from_right: half(1.0, twist[1]), span };

        // Place the fluke box in the frame, leaving room for water below.
        let (lo, hi) = bounds(outline.full.iter().filter(|p| p.y <= outline.box_cut_v).map(|&p| pose.map(p)));
        let margin = 0.02 * width;
        let place = |rng: &mut ChaCha8Rng, size: f32, room: f32, lo: f32| {
            let slack = room - size - 2.0 * margin;
            let start = if slack > 0.0 {
                margin + rng.random::<f32>() * slack
            } else {
                (room - size) / 2.0 + rng.random_range(-0.03..0.03) * room
            };
            start - lo
        };
        let dx = place(rng, hi.x - lo.x, width, lo.x);
        let dy = place(rng, hi.y - lo.y, height * 0.93, lo.y);
        for t in [&mut pose.photo_from_left, &mut pose.photo_from_right] {
            t.tx += dx;
            t.ty += dy;
        }
        pose
    }
}

fn bounds(points: impl Iterator<Item = Pt>) -> (Pt, Pt) {
    points.fold((pt(f32::INFINITY, f32::INFINITY), pt(f32::NEG_INFINITY, f32::NEG_INFINITY)), |(lo, hi), p| {
        (pt(lo.x.min(p.x), lo.y.min(p.y)), pt(hi.x.max(p.x), hi.y.max(p.y)))
    })
}

// ---------------------------------------------------------------------------------------------
// A photo: sea and sky

/// Low-resolution background pixels per full-resolution pixel (the sea is smooth).
const BACKGROUND_DOWNSAMPLE: u32 = 3;

struct Seascape {
    width: f32,
    height: f32,
    /// Horizon height at the frame's centre column; negative when the camera looks down.
    horizon: f32,
    horizon_slope: f32,
    sky_top: [f32; 3],
    sky_horizon: [f32; 3],
    sea_far: [f32; 3],
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
    fn random(rng: &mut ChaCha8Rng, width: f32, height: f32) -> Self {
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
    fn paint(&self) -> Pixmap {
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

// ---------------------------------------------------------------------------------------------
// A photo: the water line in front of the tail stock, with an optional wave crest

struct WaterLine {
    y0: f32,
    x0: f32,
    slope: f32,
    ripples: [(f32, f32, f32); 3],
    /// Centre x, height and width of a crest rising in front of a lobe.
    crest: Option<(f32, f32, f32)>,
}

impl WaterLine {
    fn base_at(&self, x: f32) -> f32 {
        let ripples: f32 = self.ripples.iter().map(|&(a, f, p)| a * (x * f + p).sin()).sum();
        self.y0 + self.slope * (x - self.x0) + ripples
    }

    fn y_at(&self, x: f32) -> f32 {
        let crest = self.crest.map_or(0.0, |(cx, h, w)| {
            let d = ((x - cx) / w).abs().min(1.0);
            h * (1.0 - d * d).powi(2)
        });
        self.base_at(x) - crest
    }

    /// The water in front of everything between `x0` and `x1`, down to `bottom`.
    fn front(&self, x0: f32, x1: f32, bottom: f32) -> Vec<Pt> {
        let steps = ((x1 - x0) / 3.0).ceil().max(1.0) as usize;
        let mut points: Vec<Pt> = (0..=steps)
            .map(|i| {
                let x = lerp(x0, x1, i as f32 / steps as f32);
                pt(x, self.y_at(x))
            })
            .collect();
        let bottom = points.iter().fold(bottom, |b, p| b.max(p.y + 1.0));
        points.extend([pt(x1, bottom), pt(x0, bottom)]);
        points
    }
}

// ---------------------------------------------------------------------------------------------
// A photo

impl SyntheticWhale {
    fn photograph(&self, seed: u64, photo: usize, width: u32, height: u32) -> (RgbImage, [f32; 4]) {
        let mut rng = rng_for(&[seed, STREAM_PHOTO, self.individual as u64, photo as u64]);
        let rng = &mut rng;
        let (w, h) = (width as f32, height as f32);
        let mut canvas = Pixmap::new(width, height).expect("photo size is clamped to a drawable range");

        let sea = Seascape::random(rng, w, h);
        let background = sea.paint();
        let (bw, bh) = (background.width(), background.height());
        resample(background.data(), bw as usize, bh as usize, canvas.data_mut(), width as usize, height as usize);
        let stretch = Transform::from_scale(w / bw as f32, h / bh as f32);
        let background_shader =
            Pattern::new(background.as_ref(), SpreadMode::Pad, FilterQuality::Bilinear, 1.0, stretch);
        paint_wave_glints(&mut canvas, &sea, rng);

        let pose = Pose::random(rng, &self.outline, w, h);
        self.paint_fluke(&mut canvas, &pose, rng);

        // The sea in front of the tail stock; sometimes a crest hides part of a lobe. Only the
        // part in front of the whale needs repainting.
        let water = self.water_line(&pose, &sea, rng);
        let (lo, hi) = bounds(self.outline.full.iter().map(|&p| pose.map(p)));
        if let Some(path) = polygon_path(&water.front(lo.x - 3.0, hi.x + 3.0, hi.y + 3.0)) {
            let paint = shader_paint(background_shader);
            canvas.fill_path(&path, &paint, FillRule::Winding, Transform::identity(), None);
        }
        paint_crest(&mut canvas, &water, &sea, rng);
        paint_foam(&mut canvas, &water, &pose, rng);

        // Water streaming off the fluke.
        let wetness = rng.random::<f32>();
        paint_streams(&mut canvas, &self.outline, &pose, &water, wetness, rng);
        if rng.random::<f32>() < 0.13 {
            paint_spray_cloud(&mut canvas, &self.outline, &pose, rng);
        }
        paint_drops(&mut canvas, &self.outline, &pose, &water, wetness, rng);

        let fluke_box = self.visible_box(&pose, &water, w, h);
        let image = develop(&mut canvas, rng);
        (image, fluke_box)
    }

    fn paint_fluke(&self, canvas: &mut Pixmap, pose: &Pose, rng: &mut ChaCha8Rng) {
        let identity = Transform::identity();
        for (half, photo_from_canonical) in
            [(&self.outline.left, pose.photo_from_left), (&self.outline.right, pose.photo_from_right)]
        {
            let points: Vec<Pt> = half.iter().map(|&p| photo_from_canonical.apply(p)).collect();
            let Some(path) = polygon_path(&points) else {
                continue;
            };
            let pattern = Pattern::new(
                self.pigment.as_ref(),
                SpreadMode::Pad,
                FilterQuality::Bilinear,
                1.0,
                photo_from_canonical.after(canonical_from_texture()).to_skia(),
            );
            canvas.fill_path(&path, &shader_paint(pattern), FillRule::Winding, identity, None);
        }
        let full: Vec<Pt> = self.outline.full.iter().map(|&p| pose.map(p)).collect();
        let Some(path) = polygon_path(&full) else {
            return;
        };
        let mut shade = |shader: Option<Shader>| {
            if let Some(shader) = shader {
                canvas.fill_path(&path, &shader_paint(shader), FillRule::Winding, identity, None);
            }
        };
        let black = |alpha: f32| Color::from_rgba8(0, 0, 0, unit_u8(alpha));

        // Uneven light across the flukes; sometimes backlit, sometimes glare.
        let angle = rng.random_range(0.0..2.0 * PI);
        let c = pose.map(pt(0.0, 0.1));
        let r = pose.span * 0.5;
        let (a, b) = (
            Point::from_xy(c.x - angle.cos() * r, c.y - angle.sin() * r),
            Point::from_xy(c.x + angle.cos() * r, c.y + angle.sin() * r),
        );
        let backlit = if rng.random::<f32>() < 0.25 { rng.random_range(0.15f32..0.45) } else { 0.0 };
        let (lit, shaded) = (rng.random_range(0.0f32..0.1), rng.random_range(0.05f32..0.4));
        let even_light = rng.random::<f32>() < 0.3;
        shade(if even_light && backlit == 0.0 {
            None
        } else {
            LinearGradient::new(
                a,
                b,
                vec![
                    GradientStop::new(0.0, black((lit + backlit).min(0.8))),
                    GradientStop::new(1.0, black((shaded + backlit).min(0.8))),
                ],
                SpreadMode::Pad,
                identity,
            )
        });
        if rng.random::<f32>() < 0.15 {
            let glare = pose.map(pt(rng.random_range(-0.4..0.4), rng.random_range(0.0..0.15)));
            let glare = Point::from_xy(glare.x, glare.y);
            shade(RadialGradient::new(
                glare,
                glare,
                pose.span * rng.random_range(0.15..0.4),
                vec![
                    GradientStop::new(0.0, Color::from_rgba8(255, 255, 250, rng.random_range(40..100))),
                    GradientStop::new(1.0, Color::from_rgba8(255, 255, 250, 0)),
                ],
                SpreadMode::Pad,
                identity,
            ));
        }
    }

    fn water_line(&self, pose: &Pose, sea: &Seascape, rng: &mut ChaCha8Rng) -> WaterLine {
        let at = pose.map(pt(0.0, rng.random_range(0.34..0.5)));
        let ripple = |rng: &mut ChaCha8Rng| {
            (rng.random_range(0.5..2.5), 2.0 * PI / rng.random_range(20.0..90.0), rng.random_range(0.0..2.0 * PI))
        };
        let mut water = WaterLine {
            y0: at.y,
            x0: at.x,
            slope: sea.horizon_slope,
            ripples: [ripple(rng), ripple(rng), ripple(rng)],
            crest: None,
        };
        if rng.random::<f32>() < 0.22 {
            // A crest rising in front of one lobe, hiding its lower part.
            let side = if rng.random::<bool>() { 1.0 } else { -1.0 };
            let u = side * rng.random_range(0.12..0.4);
            let cover = rng.random_range(0.25..0.65);
            let nearest = |edge: &[Pt]| edge.iter().min_by(|a, b| (a.x - u).abs().total_cmp(&(b.x - u).abs())).copied();
            let trailing = nearest(&self.outline.trailing_edge).unwrap_or(pt(u, 0.0));
            let leading = nearest(&self.outline.leading_edge).unwrap_or(pt(u, 0.2));
            let target = pose.map(pt(u, lerp(leading.y, trailing.y, cover)));
            let height = water.y_at(target.x) - target.y;
            // About one lobe wide, and no steeper than a swell.
            let width = pose.span * rng.random_range(0.22..0.32);
            let height = height.min(0.45 * width);
            if height > 0.0 {
                water.crest = Some((target.x, height, width));
            }
        }
        water
    }

    fn visible_box(&self, pose: &Pose, water: &WaterLine, w: f32, h: f32) -> [f32; 4] {
        let cut = self.outline.box_cut_v;
        let visible = self
            .outline
            .full
            .iter()
            .filter(|p| p.y <= cut)
            .chain(&self.interior)
            .map(|&p| pose.map(p))
            .filter(|q| q.y < water.y_at(q.x));
        let (lo, hi) = bounds(visible);
        if !lo.x.is_finite() {
            return [0.0; 4];
        }
        let (x0, y0) = (lo.x.clamp(0.0, w), lo.y.clamp(0.0, h));
        let (x1, y1) = (hi.x.clamp(0.0, w), hi.y.clamp(0.0, h));
        [x0, y0, x1 - x0, y1 - y0]
    }
}

/// Many small ellipses of one colour, filled in a few batches (one per opacity level) rather
/// than one by one: each fill has a fixed cost.
struct EllipseBatch {
    levels: [(f32, PathBuilder); 3],
    /// All ellipses are tilted by this angle (radians).
    tilt: f32,
}

impl EllipseBatch {
    fn new(alphas: [f32; 3], tilt: f32) -> Self {
        Self { levels: alphas.map(|a| (a, PathBuilder::new())), tilt }
    }

    fn push(&mut self, centre: Pt, rx: f32, ry: f32, level: usize) {
        // Place the ellipse in the untilted frame; the fill tilts the whole batch back.
        let (s, c) = (-self.tilt).sin_cos();
        let (x, y) = (centre.x * c - centre.y * s, centre.x * s + centre.y * c);
        if let Some(oval) = Rect::from_xywh(x - rx, y - ry, 2.0 * rx, 2.0 * ry) {
            self.levels[level.min(2)].1.push_oval(oval);
        }
    }

    fn fill(self, canvas: &mut Pixmap, rgb: [f32; 3]) {
        let tilt = Transform::from_rotate(self.tilt.to_degrees());
        for (alpha, builder) in self.levels {
            if let Some(path) = builder.finish() {
                canvas.fill_path(&path, &solid(rgb, alpha), FillRule::Winding, tilt, None);
            }
        }
    }
}

fn paint_wave_glints(canvas: &mut Pixmap, sea: &Seascape, rng: &mut ChaCha8Rng) {
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

/// A curtain of water falling from `start` until it reaches the sea.
fn falling_water(start: Pt, len: f32, sway: f32, phase: f32, water: &WaterLine) -> Vec<Pt> {
    let mut points = Vec::with_capacity(12);
    for k in 0..=10 {
        let s = k as f32 / 10.0;
        let p = pt(start.x + sway * s * s + (s * 7.0 + phase).sin() * 0.8 * s, start.y + len * s);
        if p.y > water.y_at(p.x) {
            break;
        }
        points.push(p);
    }
    points
}

fn paint_streams(
    canvas: &mut Pixmap,
    outline: &FlukeOutline,
    pose: &Pose,
    water: &WaterLine,
    wetness: f32,
    rng: &mut ChaCha8Rng,
) {
    let white = [0.92, 0.94, 0.96];
    let identity = Transform::identity();
    // Sheets running down the ventral side from the trailing edge.
    for _ in 0..(wetness * rng.random_range(0.0..10.0)) as usize {
        let start = pose.map(outline.trailing_edge[rng.random_range(0..outline.trailing_edge.len())]);
        let len = pose.span * rng.random_range(0.03..0.15);
        let sway = rng.random_range(-0.1..0.1) * len;
        let points = falling_water(start, len, sway, rng.random_range(0.0..2.0 * PI), water);
        let Some(path) = polyline_path(&points) else {
            continue;
        };
        let stroke = Stroke { width: rng.random_range(1.5..5.0), line_cap: LineCap::Round, ..Stroke::default() };
        let paint = solid(white, rng.random_range(0.08..0.22));
        canvas.stroke_path(&path, &paint, &stroke, identity, None);
    }
    // Streams pouring off the leading edge and the tips.
    for _ in 0..(wetness * rng.random_range(0.0..16.0)) as usize {
        let start = if rng.random::<f32>() < 0.3 {
            let tips = [0, outline.trailing_edge.len() - 1];
            outline.trailing_edge[tips[rng.random_range(0..2)]]
        } else {
            outline.leading_edge[rng.random_range(0..outline.leading_edge.len())]
        };
        let len = pose.span * rng.random::<f32>().powi(2) * 0.3;
        let points = falling_water(pose.map(start), len, 0.0, rng.random_range(0.0..2.0 * PI), water);
        let Some(path) = polyline_path(&points) else {
            continue;
        };
        let stroke = Stroke { width: rng.random_range(0.6..2.0), line_cap: LineCap::Round, ..Stroke::default() };
        let paint = solid(white, rng.random_range(0.2..0.55));
        canvas.stroke_path(&path, &paint, &stroke, identity, None);
    }
}

fn paint_drops(
    canvas: &mut Pixmap,
    outline: &FlukeOutline,
    pose: &Pose,
    water: &WaterLine,
    wetness: f32,
    rng: &mut ChaCha8Rng,
) {
    let drops = (wetness * wetness * rng.random_range(0.0..150.0)) as usize;
    let mut pb = PathBuilder::new();
    for _ in 0..drops {
        let edge = if rng.random::<bool>() { &outline.leading_edge } else { &outline.trailing_edge };
        let p = pose.map(edge[rng.random_range(0..edge.len())]);
        let fall = pose.span * rng.random::<f32>().powi(2) * 0.35;
        let (x, y) = (p.x + normal(rng) * pose.span * 0.02, p.y + fall);
        if y < water.y_at(x) {
            pb.push_circle(x, y, rng.random_range(0.5..1.6));
        }
    }
    if let Some(path) = pb.finish() {
        let paint = solid([0.95, 0.96, 0.97], rng.random_range(0.4..0.8));
        canvas.fill_path(&path, &paint, FillRule::Winding, Transform::identity(), None);
    }
}

/// The face of a wave crest: lighter where the light passes through its top.
fn paint_crest(canvas: &mut Pixmap, water: &WaterLine, sea: &Seascape, rng: &mut ChaCha8Rng) {
    let Some((cx, height, width)) = water.crest else {
        return;
    };
    let (x0, x1) = (cx - width, cx + width);
    let steps = ((x1 - x0) / 3.0).ceil().max(1.0) as usize;
    let xs = (0..=steps).map(|i| lerp(x0, x1, i as f32 / steps as f32));
    let mut points: Vec<Pt> = xs.clone().map(|x| pt(x, water.y_at(x))).collect();
    points.extend(xs.rev().map(|x| pt(x, water.base_at(x) + 2.0)));
    let Some(path) = polygon_path(&points) else {
        return;
    };
    let top = water.y_at(cx);
    let tint = lerp3(sea.sea_far, sea.sky_horizon, 0.3);
    let alpha = rng.random_range(0.15..0.4);
    let Some(shader) = LinearGradient::new(
        Point::from_xy(cx, top),
        Point::from_xy(cx, top + height),
        vec![GradientStop::new(0.0, color(tint, alpha)), GradientStop::new(1.0, color(tint, 0.0))],
        SpreadMode::Pad,
        Transform::identity(),
    ) else {
        return;
    };
    canvas.fill_path(&path, &shader_paint(shader), FillRule::Winding, Transform::identity(), None);
}

fn paint_foam(canvas: &mut Pixmap, water: &WaterLine, pose: &Pose, rng: &mut ChaCha8Rng) {
    let white = [0.93, 0.95, 0.96];
    // White water where the tail stock and the crest break the surface.
    let mut sources = vec![(water.x0, pose.span * 0.06, rng.random_range(20..60))];
    if let Some((cx, _, w)) = water.crest {
        sources.push((cx, w * 0.15, rng.random_range(10..30)));
    }
    let mut foam = EllipseBatch::new([0.3, 0.5, 0.7], rng.random_range(-0.2..0.2));
    for (cx, spread, n) in sources {
        for _ in 0..n {
            let x = cx + normal(rng) * spread;
            let y = water.y_at(x) + normal(rng).abs() * pose.span * 0.01 - pose.span * 0.003;
            let r = pose.span * rng.random_range(0.002..0.011);
            foam.push(pt(x, y), r * rng.random_range(1.0..2.2), r, rng.random_range(0..3));
        }
    }
    foam.fill(canvas, white);
}

fn paint_spray_cloud(canvas: &mut Pixmap, outline: &FlukeOutline, pose: &Pose, rng: &mut ChaCha8Rng) {
    let anchor = outline.leading_edge[rng.random_range(0..outline.leading_edge.len())];
    let centre = pose.map(anchor);
    for _ in 0..rng.random_range(5..14) {
        let c = pt(centre.x + normal(rng) * pose.span * 0.06, centre.y + normal(rng) * pose.span * 0.04);
        let r = pose.span * rng.random_range(0.03..0.1);
        let alpha = rng.random_range(70..150);
        let Some(shader) = RadialGradient::new(
            Point::from_xy(c.x, c.y),
            Point::from_xy(c.x, c.y),
            r,
            vec![
                GradientStop::new(0.0, Color::from_rgba8(240, 243, 245, alpha)),
                GradientStop::new(1.0, Color::from_rgba8(240, 243, 245, 0)),
            ],
            SpreadMode::Pad,
            Transform::identity(),
        ) else {
            continue;
        };
        let Some(rect) = Rect::from_xywh(c.x - r, c.y - r, 2.0 * r, 2.0 * r) else {
            continue;
        };
        canvas.fill_rect(rect, &shader_paint(shader), Transform::identity(), None);
    }
}

/// Sometimes out of focus; then exposure, contrast, colour cast, gamma, haze and sensor noise.
fn develop(canvas: &mut Pixmap, rng: &mut ChaCha8Rng) -> RgbImage {
    if rng.random::<f32>() < 0.3 {
        defocus(canvas, if rng.random::<f32>() < 0.7 { 1 } else { 2 });
    }
    let exposure = rng.random_range(-0.6f32..0.5).exp2();
    let contrast = rng.random_range(0.75..1.3);
    let gamma = rng.random_range(0.7..1.25);
    let cast = match rng.random_range(0..4) {
        0 => [1.06, 1.0, 0.9],
        1 => [0.92, 0.99, 1.07],
        _ => [1.0, 1.0, 1.0],
    }
    .map(|c: f32| c * rng.random_range(0.95..1.05));
    let haze = rng.random_range(0.0..0.6f32).powi(2);
    let haze_colour = rng.random_range(0.6..0.9);
    let [red, green, blue]: [[u8; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|i| {
            let x = (i as f32 / 255.0).powf(gamma) * exposure * cast[c];
            let x = (x - 0.45) * contrast + 0.45;
            unit_u8(lerp(x, haze_colour, haze))
        })
    });
    let noise = if rng.random::<f32>() < 0.6 { rng.random_range(0..7u32) } else { 0 };
    let mut state = rng.random::<u64>() | 1;
    let (width, height) = (canvas.width(), canvas.height());
    let mut image = RgbImage::new(width, height);
    for (dst, src) in image.as_mut().chunks_exact_mut(3).zip(canvas.data().chunks_exact(4)) {
        let grain = if noise > 0 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) % (2 * noise as u64 + 1)) as i32 - noise as i32
        } else {
            0
        };
        dst[0] = (red[src[0] as usize] as i32 + grain).clamp(0, 255) as u8;
        dst[1] = (green[src[1] as usize] as i32 + grain).clamp(0, 255) as u8;
        dst[2] = (blue[src[2] as usize] as i32 + grain).clamp(0, 255) as u8;
    }
    image
}
