//! The individual's fluke shape: two lobes with their trailing edges, cuts and notch.

use std::f32::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::geometry::{Pt, pt};
use super::noise::lerp;

/// Where the tail stock's outline ends, well below any water line.
pub(super) const STOCK_BOTTOM: f32 = 0.68;
/// Half the tail stock's width where it leaves the flukes.
const STOCK_ROOT_U: f32 = 0.07;
/// Lobe parameter where the leading edge meets the tail stock.
pub(super) const T_ROOT: f32 = 2.0 * STOCK_ROOT_U;

/// A cut into the trailing edge, in lobe parameter `t` (0 at the notch, 1 at the tip).
#[derive(Clone, Debug)]
pub(super) struct Cut {
    pub(super) t: f32,
    pub(super) half_width: f32,
    pub(super) depth: f32,
}

/// One lobe's outline, parameterised by `t` from the notch (0) to the tip (1); `u = side t / 2`.
#[derive(Clone, Debug)]
pub(super) struct Lobe {
    pub(super) side: f32,
    pub(super) tip_lift: f32,
    pub(super) bulge: f32,
    pub(super) root_chord: f32,
    pub(super) chord_p: f32,
    pub(super) chord_q: f32,
    pub(super) notch_depth: f32,
    pub(super) notch_width: f32,
    /// Where the lobe ends (below 1 when the tip is missing).
    pub(super) t_end: f32,
    /// Scallop boundaries (projecting points of the trailing edge) and each scallop's depth.
    pub(super) scallops: Vec<(f32, f32)>,
    pub(super) nicks: Vec<Cut>,
    pub(super) bites: Vec<Cut>,
}

impl Lobe {
    /// The trailing edge without scallops or damage; the notch is included.
    pub(super) fn trailing_smooth(&self, t: f32) -> f32 {
        let notch = self.notch_depth * (1.0 - t / self.notch_width).max(0.0).powf(1.4);
        -self.tip_lift * t.powf(1.8) - self.bulge * (PI * t).sin() + notch
    }

    pub(super) fn leading(&self, t: f32) -> f32 {
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

    pub(super) fn trailing(&self, t: f32) -> f32 {
        let v = self.trailing_smooth(t) + self.scallop_depth(t) + self.damage(t);
        v.min(self.leading(t) - 0.008)
    }

    pub(super) fn u(&self, t: f32) -> f32 {
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
    pub(super) fn outline(&self, rng: &mut ChaCha8Rng) -> (Vec<Pt>, usize) {
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
pub(super) struct FlukeOutline {
    /// Left half (u <= 0, overlapping the centre line a little so the halves meet without a seam).
    pub(super) left: Vec<Pt>,
    pub(super) right: Vec<Pt>,
    /// The whole outline.
    pub(super) full: Vec<Pt>,
    /// Trailing-edge points of both lobes, tip to tip.
    pub(super) trailing_edge: Vec<Pt>,
    /// Leading-edge points of both lobes.
    pub(super) leading_edge: Vec<Pt>,
    /// The root of the leading edge: the fluke box stops a little below it.
    pub(super) box_cut_v: f32,
}

impl FlukeOutline {
    pub(super) fn new(left: &Lobe, right: &Lobe, rng: &mut ChaCha8Rng) -> Self {
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
