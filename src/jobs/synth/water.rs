//! A photo's water: the water line in front of the tail stock, and the water streaming off the fluke.

use std::f32::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tiny_skia::{
    Color, FillRule, GradientStop, LineCap, LinearGradient, PathBuilder, Pixmap, Point, RadialGradient, Rect,
    SpreadMode, Stroke, Transform,
};

use super::fluke::FlukeOutline;
use super::geometry::{Pt, polygon_path, polyline_path, pt};
use super::noise::{lerp, lerp3};
use super::paint::{EllipseBatch, color, shader_paint, solid};
use super::pose::Pose;
use super::sea::Seascape;
use super::seeds::normal;

pub(super) struct WaterLine {
    pub(super) y0: f32,
    pub(super) x0: f32,
    pub(super) slope: f32,
    pub(super) ripples: [(f32, f32, f32); 3],
    /// Centre x, height and width of a crest rising in front of a lobe.
    pub(super) crest: Option<(f32, f32, f32)>,
}

impl WaterLine {
    fn base_at(&self, x: f32) -> f32 {
        let ripples: f32 = self.ripples.iter().map(|&(a, f, p)| a * (x * f + p).sin()).sum();
        self.y0 + self.slope * (x - self.x0) + ripples
    }

    pub(super) fn y_at(&self, x: f32) -> f32 {
        let crest = self.crest.map_or(0.0, |(cx, h, w)| {
            let d = ((x - cx) / w).abs().min(1.0);
            h * (1.0 - d * d).powi(2)
        });
        self.base_at(x) - crest
    }

    /// The water in front of everything between `x0` and `x1`, down to `bottom`.
    pub(super) fn front(&self, x0: f32, x1: f32, bottom: f32) -> Vec<Pt> {
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

pub(super) fn paint_streams(
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

pub(super) fn paint_drops(
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
pub(super) fn paint_crest(canvas: &mut Pixmap, water: &WaterLine, sea: &Seascape, rng: &mut ChaCha8Rng) {
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

pub(super) fn paint_foam(canvas: &mut Pixmap, water: &WaterLine, pose: &Pose, rng: &mut ChaCha8Rng) {
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

pub(super) fn paint_spray_cloud(canvas: &mut Pixmap, outline: &FlukeOutline, pose: &Pose, rng: &mut ChaCha8Rng) {
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
