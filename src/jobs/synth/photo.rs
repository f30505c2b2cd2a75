//! A photo: the individual posed in its sea, then developed like a camera would.

use std::f32::consts::PI;

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tiny_skia::{
    Color, FillRule, FilterQuality, GradientStop, LinearGradient, Pattern, Pixmap, Point, RadialGradient, Shader,
    SpreadMode, Transform,
};

use super::geometry::{Pt, polygon_path, pt};
use super::noise::{lerp, unit_u8};
use super::paint::{defocus, resample, shader_paint};
use super::pigment::canonical_from_texture;
use super::pose::{Pose, bounds};
use super::sea::{Seascape, paint_wave_glints};
use super::seeds::{STREAM_PHOTO, rng_for};
use super::water::{WaterLine, paint_crest, paint_drops, paint_foam, paint_spray_cloud, paint_streams};
use super::whale::SyntheticWhale;

impl SyntheticWhale {
    pub(super) fn photograph(&self, seed: u64, photo: usize, width: u32, height: u32) -> (RgbImage, [f32; 4]) {
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
