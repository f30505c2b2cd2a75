//! A 2-D map of a gallery for the app to draw (egui_plot) and to pick from: hover and click
//! go through `nearest`, box selection through `within_rect`, the lasso through
//! `within_polygon`.
//!
//! The map is the gallery's first two principal components, found by subspace iteration
//! with a Rayleigh-Ritz step (a fixed start, so the same gallery gives the same map), on an
//! evenly spaced sample of at most `SAMPLE` rows; every row is then projected. Points are
//! scaled by one factor into the unit square, centred, so that distances on the map keep
//! their meaning in both directions. A k-d tree (kiddo) indexes them.

use kiddo::dist::{Chebyshev, SquaredEuclidean};
use kiddo::{ImmutableKdTree, QueryResultItem};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::jobs::search::Gallery;

/// Rows the axes are computed from: plenty for two directions, and it bounds the cost of a
/// big gallery's map (each iteration reads the sample once).
const SAMPLE: usize = 5_000;
/// Extra directions iterated alongside the two kept: convergence then goes with the gap
/// between the 2nd and 5th eigenvalues instead of the 2nd and 3rd.
const BLOCK: usize = 4;
/// A gallery without two dominant directions (nearly isotropic, like random vectors)
/// converges slowly, and any plane is then as good a map as another: the cap bounds it.
const MAX_ITERATIONS: usize = 50;
/// Stop when the plane of the two kept directions moves less than this (1 - cos² of the
/// angle between planes, about 0.03°) in an iteration: far below what a map can show.
/// Turning within the plane does not count: the Ritz step orients the axes in it.
const TOLERANCE: f64 = 1e-7;

pub struct EmbeddingMap {
    /// Per gallery row, its position in the unit square.
    points: Vec<[f32; 2]>,
    /// `None` when there are no points (kiddo builds no empty tree).
    tree: Option<ImmutableKdTree<f32, 2>>,
    explained: [f32; 2],
}

impl std::fmt::Debug for EmbeddingMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingMap").field("points", &self.points.len()).field("explained", &self.explained).finish()
    }
}

impl EmbeddingMap {
    /// The principal-component map of a gallery; row `i` of the gallery is point `i`.
    pub fn new(gallery: &Gallery) -> EmbeddingMap {
        let (points, explained) = principal_plane(gallery.as_matrix(), gallery.dim(), gallery.len());
        let mut map = EmbeddingMap::from_points(points);
        map.explained = explained;
        map
    }

    /// A map of given positions, scaled into the unit square like a gallery's.
    pub fn from_points(mut points: Vec<[f32; 2]>) -> EmbeddingMap {
        fit_unit_square(&mut points);
        // Item indices are u32; a gallery of 4 billion images is not a case to handle.
        let tree = if points.is_empty() { None } else { ImmutableKdTree::new_from_slice(&points).ok() };
        EmbeddingMap { points, tree, explained: [0.0; 2] }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Every point, indexed by gallery row, in the unit square.
    pub fn points(&self) -> &[[f32; 2]] {
        &self.points
    }

    /// The share of the gallery's variance along each axis (for axis labels; 0 for a map
    /// made `from_points`).
    pub fn explained(&self) -> [f32; 2] {
        self.explained
    }

    /// The row nearest to `(x, y)` and its distance, in map units.
    pub fn nearest(&self, x: f32, y: f32) -> Option<(usize, f32)> {
        if !(x.is_finite() && y.is_finite()) {
            return None;
        }
        let tree = self.tree.as_ref()?;
        let hit = tree.query(&[x, y]).nearest_one::<SquaredEuclidean<f32>>().execute();
        Some((hit.item as usize, hit.distance.sqrt()))
    }

    /// Rows inside the rectangle with corners `(x0, y0)` and `(x1, y1)` (either order;
    /// edges included), in row order.
    pub fn within_rect(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> Vec<usize> {
        let (xmin, xmax, ymin, ymax) = (x0.min(x1), x0.max(x1), y0.min(y1), y0.max(y1));
        if ![xmin, xmax, ymin, ymax].iter().all(|v| v.is_finite()) {
            return Vec::new();
        }
        let mut rows =
            self.candidates(xmin, xmax, ymin, ymax, |[x, y]| (xmin..=xmax).contains(&x) && (ymin..=ymax).contains(&y));
        rows.sort_unstable();
        rows
    }

    /// Rows inside a closed polygon given by its vertices (a lasso: any shape, concave or
    /// crossing itself, by the even-odd rule), in row order. Fewer than three vertices
    /// enclose nothing.
    pub fn within_polygon(&self, polygon: &[(f32, f32)]) -> Vec<usize> {
        if polygon.len() < 3 || !polygon.iter().all(|(x, y)| x.is_finite() && y.is_finite()) {
            return Vec::new();
        }
        let fold =
            |f: fn(f32, f32) -> f32, init: f32, pick: fn(&(f32, f32)) -> f32| polygon.iter().map(pick).fold(init, f);
        let (xmin, xmax) = (fold(f32::min, f32::INFINITY, |p| p.0), fold(f32::max, f32::NEG_INFINITY, |p| p.0));
        let (ymin, ymax) = (fold(f32::min, f32::INFINITY, |p| p.1), fold(f32::max, f32::NEG_INFINITY, |p| p.1));
        let mut rows = self.candidates(xmin, xmax, ymin, ymax, |p| inside(polygon, p));
        rows.sort_unstable();
        rows
    }

    /// Rows within the square around a box (a Chebyshev ball: the tree's closest query to a
    /// box) that pass `keep`.
    fn candidates(&self, xmin: f32, xmax: f32, ymin: f32, ymax: f32, keep: impl Fn([f32; 2]) -> bool) -> Vec<usize> {
        let Some(tree) = &self.tree else { return Vec::new() };
        let centre = [(xmin + xmax) / 2.0, (ymin + ymax) / 2.0];
        // Widened by a hair so that rounding in the centre never drops a point on an edge;
        // `keep` decides exactly.
        let radius = ((xmax - xmin).max(ymax - ymin) / 2.0) * (1.0 + 1e-5) + 1e-6;
        let hits: Vec<QueryResultItem<(), u32, f32>> =
            tree.query(&centre).within::<Chebyshev<f32>>(radius).unsorted().execute();
        hits.into_iter().map(|h| h.item as usize).filter(|&row| keep(self.points[row])).collect()
    }
}

/// Even-odd rule: a ray to the right crosses the boundary an odd number of times.
fn inside(polygon: &[(f32, f32)], [x, y]: [f32; 2]) -> bool {
    let mut odd = false;
    let mut j = polygon.len() - 1;
    for (i, &(xi, yi)) in polygon.iter().enumerate() {
        let (xj, yj) = polygon[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            odd = !odd;
        }
        j = i;
    }
    odd
}

/// Scales every point by one factor into the unit square, centred. A single point, or
/// points all at one place, sit in the middle.
fn fit_unit_square(points: &mut [[f32; 2]]) {
    let mut lo = [f32::INFINITY; 2];
    let mut hi = [f32::NEG_INFINITY; 2];
    for p in points.iter() {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    for p in points.iter_mut() {
        for k in 0..2 {
            p[k] = if span > 0.0 && span.is_finite() { (p[k] - centre[k]) / span + 0.5 } else { 0.5 };
            // Rounding can put an extreme a hair outside; the square is a promise.
            p[k] = p[k].clamp(0.0, 1.0);
        }
    }
}

/// Each row projected on the two leading principal components, and the share of the
/// variance each carries.
fn principal_plane(matrix: &[f32], dim: usize, n: usize) -> (Vec<[f32; 2]>, [f32; 2]) {
    if n == 0 || dim == 0 {
        return (vec![[0.0; 2]; n], [0.0; 2]);
    }
    let row = |i: usize| &matrix[i * dim..(i + 1) * dim];
    let sample: Vec<usize> = if n <= SAMPLE { (0..n).collect() } else { (0..SAMPLE).map(|i| i * n / SAMPLE).collect() };
    let mut mean = vec![0f64; dim];
    for &i in &sample {
        for (m, &x) in mean.iter_mut().zip(row(i)) {
            *m += f64::from(x);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / sample.len() as f64) as f32).collect();
    let total_variance: f64 = sample
        .par_iter()
        .map(|&i| row(i).iter().zip(&mean).map(|(x, m)| f64::from(x - m).powi(2)).sum::<f64>())
        .sum::<f64>()
        / sample.len() as f64;

    // C·V for the sample's covariance C, one pass over the sample: Σ (x-μ) ((x-μ)ᵀ V) / m.
    let times_covariance = |v: &[Vec<f64>]| -> Vec<Vec<f64>> {
        let v32: Vec<Vec<f32>> = v.iter().map(|c| c.iter().map(|&x| x as f32).collect()).collect();
        let mut out = sample
            .par_chunks(256)
            .map(|chunk| {
                let mut acc = vec![vec![0f32; dim]; v.len()];
                let mut centred = vec![0f32; dim];
                for &i in chunk {
                    for ((c, &x), &m) in centred.iter_mut().zip(row(i)).zip(&mean) {
                        *c = x - m;
                    }
                    for (a, col) in acc.iter_mut().zip(&v32) {
                        let y = crate::jobs::search::dot(&centred, col);
                        for (a, &c) in a.iter_mut().zip(&centred) {
                            *a += c * y;
                        }
                    }
                }
                acc.into_iter().map(|a| a.into_iter().map(f64::from).collect::<Vec<f64>>()).collect::<Vec<_>>()
            })
            .reduce(
                || vec![vec![0f64; dim]; v.len()],
                |mut a, b| {
                    for (a, b) in a.iter_mut().zip(b) {
                        for (a, b) in a.iter_mut().zip(b) {
                            *a += b;
                        }
                    }
                    a
                },
            );
        for col in &mut out {
            col.iter_mut().for_each(|x| *x /= sample.len() as f64);
        }
        out
    };

    let block = BLOCK.min(dim);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x0CA_0001);
    let mut v: Vec<Vec<f64>> = (0..block).map(|_| (0..dim).map(|_| rng.random::<f64>() - 0.5).collect()).collect();
    orthonormalise(&mut v);
    // One pass over the sample an iteration: C·V gives both the Rayleigh-Ritz step within
    // span(V) and, rotated the same way, the next block to orthonormalise.
    let mut previous: Option<Vec<Vec<f64>>> = None;
    let mut ritz = Ritz { vectors: Vec::new(), values: Vec::new(), times_c: Vec::new() };
    for _ in 0..MAX_ITERATIONS {
        ritz = ritz_step(&v, &times_covariance(&v));
        let kept = 2.min(block);
        let moved = previous.as_ref().map_or(f64::INFINITY, |p: &Vec<Vec<f64>>| {
            (0..kept)
                .map(|k| 1.0 - (0..kept).map(|j| dot64(&ritz.vectors[k], &p[j]).powi(2)).sum::<f64>())
                .fold(0.0, f64::max)
        });
        if moved < TOLERANCE {
            break;
        }
        previous = Some(ritz.vectors.clone());
        v = ritz.times_c.clone();
        orthonormalise(&mut v);
    }

    // A direction's sign is arbitrary: its largest entry is made positive, so that the
    // same gallery and a slightly grown one are drawn the same way round.
    let mut axes: Vec<Vec<f32>> = Vec::new();
    for k in 0..2 {
        let Some(c) = ritz.vectors.get(k) else {
            axes.push(vec![0.0; dim]);
            continue;
        };
        let biggest = c.iter().copied().fold(0.0, |b: f64, x| if x.abs() > b.abs() { x } else { b });
        let sign = if biggest < 0.0 { -1.0 } else { 1.0 };
        axes.push(c.iter().map(|x| (x * sign) as f32).collect());
    }
    // (x - μ)·a = x·a - μ·a: the rows are read as they are.
    let mean_along: Vec<f32> = axes.iter().map(|a| crate::jobs::search::dot(&mean, a)).collect();
    let points = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut p = [0f32; 2];
            for (k, axis) in axes.iter().enumerate() {
                p[k] = crate::jobs::search::dot(row(i), axis) - mean_along[k];
            }
            p
        })
        .collect();
    let share = |k: usize| {
        let value = ritz.values.get(k).copied().unwrap_or(0.0).max(0.0);
        if total_variance > 0.0 { (value / total_variance) as f32 } else { 0.0 }
    };
    (points, [share(0), share(1)])
}

struct Ritz {
    /// Orthonormal, by decreasing eigenvalue.
    vectors: Vec<Vec<f64>>,
    values: Vec<f64>,
    /// C times each of `vectors`.
    times_c: Vec<Vec<f64>>,
}

/// The best approximations to eigenvectors within span(v) (orthonormal), given `cv` = C·v:
/// the eigenvectors of the small matrix vᵀCv, mapped back.
fn ritz_step(v: &[Vec<f64>], cv: &[Vec<f64>]) -> Ritz {
    let b = v.len();
    // Symmetrised: rounding leaves vᵀCv a hair off, and Jacobi assumes symmetry.
    let h: Vec<Vec<f64>> =
        (0..b).map(|i| (0..b).map(|j| (dot64(&v[i], &cv[j]) + dot64(&v[j], &cv[i])) / 2.0).collect()).collect();
    let (values, u) = jacobi_eigen(h);
    let mut order: Vec<usize> = (0..b).collect();
    order.sort_by(|&a, &c| values[c].total_cmp(&values[a]));
    let dim = v.first().map_or(0, Vec::len);
    let rotate = |basis: &[Vec<f64>]| -> Vec<Vec<f64>> {
        order
            .iter()
            .map(|&k| {
                let mut out = vec![0f64; dim];
                for (j, bj) in basis.iter().enumerate() {
                    for (o, x) in out.iter_mut().zip(bj) {
                        *o += u[j][k] * x;
                    }
                }
                out
            })
            .collect()
    };
    Ritz { vectors: rotate(v), values: order.iter().map(|&k| values[k]).collect(), times_c: rotate(cv) }
}

/// Eigenvalues and eigenvectors (as columns of the returned matrix) of a small symmetric
/// matrix, by cyclic Jacobi rotations.
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j].powi(2))
            .sum();
        let scale: f64 = (0..n).map(|i| a[i][i].powi(2)).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← Jᵀ A J: columns p and q, then rows p and q; V ← V J.
                let rotate_columns = |m: &mut Vec<Vec<f64>>| {
                    for row in m.iter_mut() {
                        let (xp, xq) = (row[p], row[q]);
                        row[p] = c * xp - s * xq;
                        row[q] = s * xp + c * xq;
                    }
                };
                rotate_columns(&mut a);
                let (upper, lower) = a.split_at_mut(q);
                for (xp, xq) in upper[p].iter_mut().zip(lower[0].iter_mut()) {
                    let (ap, aq) = (*xp, *xq);
                    *xp = c * ap - s * aq;
                    *xq = s * ap + c * aq;
                }
                rotate_columns(&mut v);
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Modified Gram-Schmidt. A column that is (nearly) a combination of the earlier ones (a
/// gallery of rank below the block) is replaced by a unit axis made orthogonal to them, so
/// no NaN ever comes out of a degenerate gallery.
fn orthonormalise(v: &mut [Vec<f64>]) {
    let dim = v.first().map_or(0, Vec::len);
    for k in 0..v.len() {
        let scale = v[k].iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut fallback = 0;
        loop {
            for j in 0..k {
                let (done, rest) = v.split_at_mut(k);
                let d = dot64(&rest[0], &done[j]);
                rest[0].iter_mut().zip(&done[j]).for_each(|(x, y)| *x -= d * y);
            }
            let norm = v[k].iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-10 * scale.max(1e-300) && norm > 1e-150 {
                v[k].iter_mut().for_each(|x| *x /= norm);
                break;
            }
            if fallback >= dim {
                // Cannot happen while k < dim; keep the column zero rather than loop.
                v[k].iter_mut().for_each(|x| *x = 0.0);
                break;
            }
            v[k] = (0..dim).map(|i| if i == fallback { 1.0 } else { 0.0 }).collect();
            fallback += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ids::AnnotationId;
    use crate::base::vocabulary::{Part, Side};

    /// `clusters` tight groups of `per` images around random directions in `dim` dimensions.
    fn clustered(clusters: usize, per: usize, dim: usize, noise: f32) -> Gallery {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let centres: Vec<Vec<f32>> =
            (0..clusters).map(|_| (0..dim).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
        let mut g = Gallery::new(dim);
        for (c, centre) in centres.iter().enumerate() {
            for i in 0..per {
                let v: Vec<f32> = centre.iter().map(|x| x + noise * (rng.random::<f32>() - 0.5)).collect();
                g.push(
                    &v,
                    AnnotationId((c * per + i) as i64),
                    Some(&format!("C{c}")),
                    Part::Fluke,
                    Side::Unknown,
                    None,
                )
                .unwrap();
            }
        }
        g
    }

    fn distance(a: [f32; 2], b: [f32; 2]) -> f32 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
    }

    #[test]
    fn clusters_stay_separated_on_the_map() {
        let (clusters, per) = (3, 40);
        let g = clustered(clusters, per, 64, 0.15);
        let map = EmbeddingMap::new(&g);
        assert_eq!(map.len(), clusters * per);
        let centroid = |c: usize| {
            let pts = &map.points()[c * per..(c + 1) * per];
            let n = pts.len() as f32;
            [pts.iter().map(|p| p[0]).sum::<f32>() / n, pts.iter().map(|p| p[1]).sum::<f32>() / n]
        };
        let centroids: Vec<[f32; 2]> = (0..clusters).map(centroid).collect();
        for (row, p) in map.points().iter().enumerate() {
            assert!((0.0..=1.0).contains(&p[0]) && (0.0..=1.0).contains(&p[1]), "{p:?} outside the unit square");
            let own = row / per;
            let nearest =
                (0..clusters).min_by(|&a, &b| distance(*p, centroids[a]).total_cmp(&distance(*p, centroids[b])));
            assert_eq!(nearest, Some(own), "row {row} at {p:?} lies nearer another cluster ({centroids:?})");
        }
        // Well apart, not merely on the right side of a line.
        let spread = map.points().iter().enumerate().map(|(r, p)| distance(*p, centroids[r / per])).fold(0.0, f32::max);
        for a in 0..clusters {
            for b in a + 1..clusters {
                assert!(distance(centroids[a], centroids[b]) > 2.0 * spread, "clusters {a} and {b} touch");
            }
        }
        let [first, second] = map.explained();
        assert!(first >= second && second > 0.0 && first + second <= 1.0 + 1e-4, "{first} {second}");
    }

    #[test]
    fn the_axes_are_the_leading_principal_components() {
        // Variance 9 along axis 2, 4 along axis 0, 1 along axis 1, nothing elsewhere.
        let mut g = Gallery::new(6);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for i in 0..500 {
            let (a, b, c): (f32, f32, f32) = (rng.random(), rng.random(), rng.random());
            let v = [2.0 * (a - 0.5), 1.0 * (b - 0.5), 3.0 * (c - 0.5), 0.0, 0.0, 10.0];
            g.push(&v, AnnotationId(i), None, Part::Fluke, Side::Unknown, None).unwrap();
        }
        let (points, explained) = principal_plane(g.as_matrix(), g.dim(), g.len());
        // Correlation of each map axis with the gallery axis it should follow.
        let corr = |k: usize, axis: usize| {
            let xs: Vec<f32> = points.iter().map(|p| p[k]).collect();
            let ys: Vec<f32> = (0..g.len()).map(|r| g.vector(r)[axis]).collect();
            let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
            let (mx, my) = (mean(&xs), mean(&ys));
            let cov: f32 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
            let vx: f32 = xs.iter().map(|x| (x - mx).powi(2)).sum();
            let vy: f32 = ys.iter().map(|y| (y - my).powi(2)).sum();
            cov / (vx * vy).sqrt()
        };
        assert!(corr(0, 2).abs() > 0.95, "first axis follows the widest direction: {}", corr(0, 2));
        assert!(corr(1, 0).abs() > 0.95, "second axis the next: {}", corr(1, 0));
        assert!(explained[0] > explained[1]);
    }

    #[test]
    fn nearest_is_the_closest_point() {
        let g = clustered(4, 50, 32, 0.6);
        let map = EmbeddingMap::new(&g);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let (x, y) = (rng.random::<f32>() * 1.2 - 0.1, rng.random::<f32>() * 1.2 - 0.1);
            let (row, d) = map.nearest(x, y).unwrap();
            let best = map.points().iter().map(|p| distance(*p, [x, y])).fold(f32::INFINITY, f32::min);
            assert!((d - best).abs() < 1e-5, "nearest said {d}, the closest is {best}");
            assert!((distance(map.points()[row], [x, y]) - d).abs() < 1e-5);
        }
        for (row, p) in map.points().iter().enumerate().take(20) {
            let (hit, d) = map.nearest(p[0], p[1]).unwrap();
            assert!(hit == row || d == 0.0);
        }
        assert_eq!(map.nearest(f32::NAN, 0.5), None);
    }

    /// A 10 × 10 grid filling the unit square: points at multiples of 1/9.
    fn grid() -> EmbeddingMap {
        EmbeddingMap::from_points((0..100).map(|i| [(i % 10) as f32, (i / 10) as f32]).collect())
    }

    #[test]
    fn a_lasso_picks_exactly_the_points_inside() {
        let map = grid();
        // An L: everything with y < 0.3 or x < 0.3, i.e. grid columns or rows 0, 1 and 2.
        let lasso = [(-0.05, -0.05), (1.05, -0.05), (1.05, 0.3), (0.3, 0.3), (0.3, 1.05), (-0.05, 1.05)];
        let want: Vec<usize> = (0..100).filter(|i| i % 10 <= 2 || i / 10 <= 2).collect();
        assert_eq!(want.len(), 51);
        assert_eq!(map.within_polygon(&lasso), want);
        // The same L traced the other way round, and a lasso around nothing.
        let reversed: Vec<(f32, f32)> = lasso.iter().rev().copied().collect();
        assert_eq!(map.within_polygon(&reversed), want);
        assert!(map.within_polygon(&[(0.01, 0.01), (0.1, 0.01), (0.05, 0.1)]).is_empty());
        assert!(map.within_polygon(&[(0.0, 0.0), (1.0, 1.0)]).is_empty(), "two vertices enclose nothing");
    }

    #[test]
    fn a_box_picks_exactly_the_points_inside_whichever_corner_comes_first() {
        let map = grid();
        // x in [0.2, 0.5] holds columns 2..=4; y in [0.6, 1.0] rows 6..=9 (edges included).
        let want: Vec<usize> = (0..100).filter(|i| (2..=4).contains(&(i % 10)) && i / 10 >= 6).collect();
        assert_eq!(map.within_rect(0.2, 0.6, 0.5, 1.0), want);
        assert_eq!(map.within_rect(0.5, 1.0, 0.2, 0.6), want);
        // A thin box along one row: the square the tree searches is much bigger than it.
        assert_eq!(map.within_rect(0.0, 5.0 / 9.0, 1.0, 5.0 / 9.0), (50..60).collect::<Vec<_>>());
        assert!(map.within_rect(0.01, 0.01, 0.1, 0.1).is_empty());
    }

    #[test]
    fn tiny_galleries_give_finite_maps() {
        let empty = EmbeddingMap::new(&Gallery::new(8));
        assert!(
            empty.is_empty() && empty.nearest(0.5, 0.5).is_none() && empty.within_rect(0.0, 0.0, 1.0, 1.0).is_empty()
        );

        let mut one = Gallery::new(3);
        one.push(&[1.0, 2.0, 3.0], AnnotationId(1), None, Part::Fluke, Side::Unknown, None).unwrap();
        let map = EmbeddingMap::new(&one);
        assert_eq!(map.points(), &[[0.5, 0.5]]);
        assert_eq!(map.nearest(0.0, 0.0).map(|(r, _)| r), Some(0));

        let mut two = one.clone();
        two.push(&[3.0, 2.0, 1.0], AnnotationId(2), None, Part::Fluke, Side::Unknown, None).unwrap();
        let map = EmbeddingMap::new(&two);
        let [a, b] = [map.points()[0], map.points()[1]];
        assert!(a.iter().chain(&b).all(|v| v.is_finite() && (0.0..=1.0).contains(v)), "{a:?} {b:?}");
        assert!((distance(a, b) - 1.0).abs() < 1e-5, "two points span the square: {a:?} {b:?}");
        assert_eq!(map.within_rect(0.0, 0.0, 1.0, 1.0), [0, 1]);

        // Many copies of one vector: one place, in the middle, and every copy selectable.
        let mut same = Gallery::new(4);
        for i in 0..100 {
            same.push(&[0.0, 1.0, 0.0, 0.0], AnnotationId(i), None, Part::Fluke, Side::Unknown, None).unwrap();
        }
        let map = EmbeddingMap::new(&same);
        assert!(map.points().iter().all(|p| *p == [0.5, 0.5]));
        assert_eq!(map.within_rect(0.4, 0.4, 0.6, 0.6).len(), 100);
        assert!(map.explained().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn jacobi_finds_the_eigenpairs_of_a_small_symmetric_matrix() {
        let a = vec![vec![2.0, 1.0, 0.0], vec![1.0, 2.0, 0.5], vec![0.0, 0.5, 5.0]];
        let (values, v) = jacobi_eigen(a.clone());
        for k in 0..3 {
            let column: Vec<f64> = v.iter().map(|row| row[k]).collect();
            for (i, row) in a.iter().enumerate() {
                let av = dot64(row, &column);
                assert!((av - values[k] * column[i]).abs() < 1e-12, "A·v = λ·v fails for eigenvalue {}", values[k]);
            }
            assert!((dot64(&column, &column) - 1.0).abs() < 1e-12);
        }
        let trace: f64 = values.iter().sum();
        assert!((trace - 9.0).abs() < 1e-12);
    }
}
