//! Scale-invariant keypoints and their gradient descriptors (Lowe 2004), as RootSIFT
//! (Arandjelović & Zisserman 2012): a difference-of-Gaussians pyramid, extrema refined to
//! sub-pixel and sub-scale, edge-like and faint ones dropped, one keypoint per dominant
//! gradient orientation, and a 4 x 4 x 8 histogram of gradients around it.
//!
//! Written here rather than taken from a crate: the pure-Rust SIFT crates pull in the
//! image crate's every codec (an AV1 encoder among them) or a second linear-algebra
//! library, which would double the build for the few hundred lines below.

use image::{ImageBuffer, Luma};

use super::{DESCRIPTOR_LEN, Keypoint};

type Plane = ImageBuffer<Luma<f32>, Vec<f32>>;

/// Blur of the first level of every octave.
const SIGMA0: f32 = 1.6;
/// Blur assumed in the working frame before any is added.
const SIGMA_IN: f32 = 0.5;
/// Levels of the difference-of-Gaussians searched per octave.
const INTERVALS: usize = 3;
/// Smallest |DoG| of a kept extremum (intensities in 0..1), per interval as Lowe scales it.
const CONTRAST: f32 = 0.04 / INTERVALS as f32;
/// Largest ratio of principal curvatures: edges, which slide along themselves, go.
const EDGE_RATIO: f32 = 10.0;
/// Pixels at an octave's border where no extremum is looked for.
const BORDER: i32 = 5;
const ORIENTATION_BINS: usize = 36;
/// Secondary orientation peaks at least this share of the highest make keypoints of their own.
const PEAK_SHARE: f32 = 0.8;
/// Spatial cells per side of the descriptor, and orientation bins per cell.
const CELLS: usize = 4;
const CELL_BINS: usize = 8;
/// Descriptor components are clipped here (after L2 normalising) against lighting changes.
const CLIP: f32 = 0.2;

/// One octave: its Gaussian levels and their differences, and its scale in working pixels.
struct Octave {
    gauss: Vec<Plane>,
    dog: Vec<Plane>,
    /// Working pixels per octave pixel: 2^octave.
    step: f32,
}

/// Keypoints and their RootSIFT descriptors (quantised to bytes) of a grey image, the
/// `limit` strongest by DoG response.
pub fn detect_and_describe(gray: &Plane, limit: usize) -> (Vec<Keypoint>, Vec<[u8; DESCRIPTOR_LEN]>) {
    let octaves = pyramid(gray);
    let mut found = Vec::new();
    for (o, octave) in octaves.iter().enumerate() {
        for level in 1..=INTERVALS {
            extrema(octave, o, level, &mut found);
        }
    }
    // Strongest first; ties by position so the order never depends on the search order.
    found.sort_by(|a: &Candidate, b| {
        b.response.total_cmp(&a.response).then(a.x.total_cmp(&b.x)).then(a.y.total_cmp(&b.y))
    });
    let mut keypoints = Vec::new();
    let mut descriptors = Vec::new();
    for c in found {
        if keypoints.len() >= limit {
            break;
        }
        let octave = &octaves[c.octave];
        let image = &octave.gauss[c.level];
        for angle in orientations(image, &c) {
            if keypoints.len() >= limit {
                break;
            }
            descriptors.push(describe(image, &c, angle));
            keypoints.push(Keypoint {
                x: c.x * octave.step,
                y: c.y * octave.step,
                scale: c.sigma * octave.step,
                angle,
            });
        }
    }
    (keypoints, descriptors)
}

/// The Gaussian pyramid: octaves while the image is at least 16 pixels a side.
fn pyramid(gray: &Plane) -> Vec<Octave> {
    let k = 2f32.powf(1.0 / INTERVALS as f32);
    // Blur added between consecutive levels, so level i has blur SIGMA0 * k^i.
    let increments: Vec<f32> = (1..INTERVALS + 3)
        .map(|i| {
            let prev = SIGMA0 * k.powi(i as i32 - 1);
            let next = prev * k;
            (next * next - prev * prev).sqrt()
        })
        .collect();
    let mut octaves: Vec<Octave> = Vec::new();
    let mut base = image::imageops::blur(gray, (SIGMA0 * SIGMA0 - SIGMA_IN * SIGMA_IN).sqrt());
    let mut step = 1.0;
    while base.width().min(base.height()) >= 16 {
        let mut gauss = vec![base];
        for &s in &increments {
            let next = image::imageops::blur(gauss.last().expect("one level at least"), s);
            gauss.push(next);
        }
        let dog = gauss.windows(2).map(|w| difference(&w[1], &w[0])).collect();
        // The next octave starts from the level with twice the base blur, halved.
        base = halve(&gauss[INTERVALS]);
        octaves.push(Octave { gauss, dog, step });
        step *= 2.0;
    }
    octaves
}

fn difference(a: &Plane, b: &Plane) -> Plane {
    let data = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x - y).collect();
    Plane::from_raw(a.width(), a.height(), data).expect("same size as its inputs")
}

/// Every other pixel of every other row.
fn halve(p: &Plane) -> Plane {
    let (w, h) = (p.width() / 2, p.height() / 2);
    Plane::from_fn(w, h, |x, y| *p.get_pixel(2 * x, 2 * y))
}

/// An extremum found in the pyramid, refined.
struct Candidate {
    octave: usize,
    level: usize,
    /// Position in octave pixels.
    x: f32,
    y: f32,
    /// Blur in octave pixels.
    sigma: f32,
    response: f32,
}

fn at(p: &Plane, x: i32, y: i32) -> f32 {
    p.as_raw()[(y as u32 * p.width() + x as u32) as usize]
}

fn extrema(octave: &Octave, o: usize, level: usize, out: &mut Vec<Candidate>) {
    let (w, h) = (octave.dog[level].width() as i32, octave.dog[level].height() as i32);
    let dog = &octave.dog;
    for y in BORDER..h - BORDER {
        for x in BORDER..w - BORDER {
            let v = at(&dog[level], x, y);
            // A cheap first cut at half the contrast; refinement applies the full one.
            if v.abs() <= 0.5 * CONTRAST {
                continue;
            }
            let mut is_max = true;
            let mut is_min = true;
            'neighbours: for plane in &dog[level - 1..=level + 1] {
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let n = at(plane, x + dx, y + dy);
                        is_max &= v >= n;
                        is_min &= v <= n;
                        if !is_max && !is_min {
                            break 'neighbours;
                        }
                    }
                }
            }
            if (is_max || is_min)
                && let Some(c) = refine(octave, o, level, x, y)
            {
                out.push(c);
            }
        }
    }
}

/// Fits a quadratic to the DoG around `(x, y, level)`, moving to a neighbour while the
/// offset exceeds half a sample; drops faint and edge-like extrema.
fn refine(octave: &Octave, o: usize, mut level: usize, mut x: i32, mut y: i32) -> Option<Candidate> {
    let dog = &octave.dog;
    let (w, h) = (dog[0].width() as i32, dog[0].height() as i32);
    for _ in 0..5 {
        let d = |l: usize, dx: i32, dy: i32| at(&dog[l], x + dx, y + dy);
        let v = d(level, 0, 0);
        let g = [
            0.5 * (d(level, 1, 0) - d(level, -1, 0)),
            0.5 * (d(level, 0, 1) - d(level, 0, -1)),
            0.5 * (d(level + 1, 0, 0) - d(level - 1, 0, 0)),
        ];
        let dxx = d(level, 1, 0) + d(level, -1, 0) - 2.0 * v;
        let dyy = d(level, 0, 1) + d(level, 0, -1) - 2.0 * v;
        let dss = d(level + 1, 0, 0) + d(level - 1, 0, 0) - 2.0 * v;
        let dxy = 0.25 * (d(level, 1, 1) - d(level, -1, 1) - d(level, 1, -1) + d(level, -1, -1));
        let dxs = 0.25 * (d(level + 1, 1, 0) - d(level + 1, -1, 0) - d(level - 1, 1, 0) + d(level - 1, -1, 0));
        let dys = 0.25 * (d(level + 1, 0, 1) - d(level + 1, 0, -1) - d(level - 1, 0, 1) + d(level - 1, 0, -1));
        let hessian = [[dxx, dxy, dxs], [dxy, dyy, dys], [dxs, dys, dss]];
        let offset = solve3(hessian, g).map(|s| [-s[0], -s[1], -s[2]])?;
        if offset.iter().all(|c| c.abs() < 0.5) {
            let response = v + 0.5 * (g[0] * offset[0] + g[1] * offset[1] + g[2] * offset[2]);
            if response.abs() < CONTRAST {
                return None;
            }
            let (trace, det) = (dxx + dyy, dxx * dyy - dxy * dxy);
            if det <= 0.0 || trace * trace * EDGE_RATIO >= (EDGE_RATIO + 1.0).powi(2) * det {
                return None;
            }
            let s = level as f32 + offset[2];
            return Some(Candidate {
                octave: o,
                level,
                x: x as f32 + offset[0],
                y: y as f32 + offset[1],
                sigma: SIGMA0 * 2f32.powf(s / INTERVALS as f32),
                response: response.abs(),
            });
        }
        x += offset[0].round() as i32;
        y += offset[1].round() as i32;
        let l = level as i32 + offset[2].round() as i32;
        if l < 1 || l > INTERVALS as i32 || x < BORDER || y < BORDER || x >= w - BORDER || y >= h - BORDER {
            return None;
        }
        level = l as usize;
    }
    None
}

/// Solves the 3 x 3 system `m s = b` (Cramer's rule); `None` when it is singular.
fn solve3(m: [[f32; 3]; 3], b: [f32; 3]) -> Option<[f32; 3]> {
    let det3 = |m: [[f32; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let det = det3(m);
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let mut out = [0.0; 3];
    for (c, slot) in out.iter_mut().enumerate() {
        let mut mc = m;
        for r in 0..3 {
            mc[r][c] = b[r];
        }
        *slot = det3(mc) / det;
    }
    Some(out)
}

/// Gradient magnitude and direction at an interior pixel.
fn gradient(p: &Plane, x: i32, y: i32) -> (f32, f32) {
    let dx = at(p, x + 1, y) - at(p, x - 1, y);
    let dy = at(p, x, y + 1) - at(p, x, y - 1);
    ((dx * dx + dy * dy).sqrt(), dy.atan2(dx))
}

/// The dominant gradient orientations around a keypoint (radians in 0..2π): the highest
/// peak of a smoothed, Gaussian-weighted histogram and any other peak nearly as high.
fn orientations(p: &Plane, c: &Candidate) -> Vec<f32> {
    let sigma = 1.5 * c.sigma;
    let radius = (3.0 * sigma).round() as i32;
    let (cx, cy) = (c.x.round() as i32, c.y.round() as i32);
    let (w, h) = (p.width() as i32, p.height() as i32);
    let mut hist = [0f32; ORIENTATION_BINS];
    for dy in -radius..=radius {
        for dx in -radius..=radius {
            let (x, y) = (cx + dx, cy + dy);
            if x < 1 || y < 1 || x >= w - 1 || y >= h - 1 {
                continue;
            }
            let (mag, dir) = gradient(p, x, y);
            let weight = (-((dx * dx + dy * dy) as f32) / (2.0 * sigma * sigma)).exp();
            let bin =
                (dir.rem_euclid(std::f32::consts::TAU) / std::f32::consts::TAU * ORIENTATION_BINS as f32) as usize;
            hist[bin % ORIENTATION_BINS] += weight * mag;
        }
    }
    // Two passes of a [1 4 6 4 1] / 16 circular smoothing.
    for _ in 0..2 {
        let prev = hist;
        for (i, slot) in hist.iter_mut().enumerate() {
            let b = |d: isize| prev[(i as isize + d).rem_euclid(ORIENTATION_BINS as isize) as usize];
            *slot = (b(-2) + b(2) + 4.0 * (b(-1) + b(1)) + 6.0 * b(0)) / 16.0;
        }
    }
    let highest = hist.iter().copied().fold(0f32, f32::max);
    if highest <= 0.0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..ORIENTATION_BINS {
        let (l, r) = (hist[(i + ORIENTATION_BINS - 1) % ORIENTATION_BINS], hist[(i + 1) % ORIENTATION_BINS]);
        let v = hist[i];
        if v > l && v > r && v >= PEAK_SHARE * highest {
            // The parabola through the peak and its neighbours places it between bins.
            let shift = 0.5 * (l - r) / (l - 2.0 * v + r);
            let bin = (i as f32 + 0.5 + shift).rem_euclid(ORIENTATION_BINS as f32);
            out.push(bin / ORIENTATION_BINS as f32 * std::f32::consts::TAU);
        }
    }
    out
}

/// The 4 x 4 x 8 gradient histogram around a keypoint in its own frame (rotated by its
/// orientation, sized by its scale), trilinearly interpolated, as a quantised RootSIFT.
fn describe(p: &Plane, c: &Candidate, angle: f32) -> [u8; DESCRIPTOR_LEN] {
    let cell = 3.0 * c.sigma;
    let half = CELLS as f32 / 2.0;
    let radius = (cell * std::f32::consts::SQRT_2 * (CELLS as f32 + 1.0) * 0.5).round() as i32;
    let (cos, sin) = (angle.cos(), angle.sin());
    let (cx, cy) = (c.x.round() as i32, c.y.round() as i32);
    let (w, h) = (p.width() as i32, p.height() as i32);
    let mut hist = [0f32; CELLS * CELLS * CELL_BINS];
    for dy in -radius..=radius {
        for dx in -radius..=radius {
            let (x, y) = (cx + dx, cy + dy);
            if x < 1 || y < 1 || x >= w - 1 || y >= h - 1 {
                continue;
            }
            // Offset from the true (sub-pixel) centre, in the keypoint's frame, in cells.
            let (ox, oy) = (x as f32 - c.x, y as f32 - c.y);
            let u = (cos * ox + sin * oy) / cell;
            let v = (-sin * ox + cos * oy) / cell;
            let (col, row) = (u + half - 0.5, v + half - 0.5);
            if col <= -1.0 || row <= -1.0 || col >= CELLS as f32 || row >= CELLS as f32 {
                continue;
            }
            let (mag, dir) = gradient(p, x, y);
            let weight = (-(u * u + v * v) / (2.0 * half * half)).exp();
            let o = (dir - angle).rem_euclid(std::f32::consts::TAU) / std::f32::consts::TAU * CELL_BINS as f32;
            spread(&mut hist, row, col, o, weight * mag);
        }
    }
    quantise_root(hist)
}

/// Adds `value` to the eight histogram bins around (row, col, orientation), each weighted
/// by its nearness; orientation wraps around.
fn spread(hist: &mut [f32; CELLS * CELLS * CELL_BINS], row: f32, col: f32, o: f32, value: f32) {
    let (r0, c0, o0) = (row.floor(), col.floor(), o.floor());
    let (fr, fc, fo) = (row - r0, col - c0, o - o0);
    for (dr, wr) in [(0, 1.0 - fr), (1, fr)] {
        let r = r0 as i32 + dr;
        if !(0..CELLS as i32).contains(&r) {
            continue;
        }
        for (dc, wc) in [(0, 1.0 - fc), (1, fc)] {
            let cc = c0 as i32 + dc;
            if !(0..CELLS as i32).contains(&cc) {
                continue;
            }
            for (d_o, wo) in [(0, 1.0 - fo), (1, fo)] {
                let ob = (o0 as usize + d_o) % CELL_BINS;
                hist[(r as usize * CELLS + cc as usize) * CELL_BINS + ob] += value * wr * wc * wo;
            }
        }
    }
}

/// SIFT's normalise-clip-normalise, then RootSIFT (L1 normalise, square root: comparing
/// these by Euclidean distance compares the histograms by the Hellinger kernel), in bytes.
fn quantise_root(mut hist: [f32; DESCRIPTOR_LEN]) -> [u8; DESCRIPTOR_LEN] {
    let norm = hist.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    hist.iter_mut().for_each(|x| *x = (*x / norm).min(CLIP));
    let l1 = hist.iter().sum::<f32>().max(1e-12);
    let mut out = [0u8; DESCRIPTOR_LEN];
    for (o, x) in out.iter_mut().zip(hist) {
        *o = ((x / l1).sqrt() * super::QUANTUM).round().clamp(0.0, 255.0) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_by_three_solver_inverts_a_known_system() {
        let m = [[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]];
        let s = solve3(m, [5.0, 5.0, 3.0]).unwrap();
        for (got, want) in s.iter().zip([1.0, 1.0, 1.0]) {
            assert!((got - want).abs() < 1e-5, "{s:?}");
        }
        assert!(solve3([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]], [1.0, 1.0, 1.0]).is_none());
    }

    #[test]
    fn a_blob_is_found_at_its_centre_and_scale() {
        // A bright Gaussian blob of sigma 6 on a dark 128 x 128 field: the DoG peaks at its
        // centre at a keypoint scale near sigma * sqrt(2).
        let blob = Plane::from_fn(128, 128, |x, y| {
            let (dx, dy) = (x as f32 - 60.0, y as f32 - 70.0);
            Luma([(-(dx * dx + dy * dy) / (2.0 * 36.0)).exp()])
        });
        let (kps, descs) = detect_and_describe(&blob, 10);
        assert_eq!(kps.len(), descs.len());
        let k = kps.first().expect("the blob is found");
        assert!((k.x - 60.0).abs() < 1.0 && (k.y - 70.0).abs() < 1.0, "{k:?}");
        assert!((5.0..14.0).contains(&k.scale), "{k:?}");
    }
}
