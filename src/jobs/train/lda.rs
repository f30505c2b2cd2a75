//! Fisher's linear discriminant: the closed form that the LDA baseline scores and the
//! trained neck starts from.

use nalgebra::{DMatrix, SymmetricEigen};

/// Default ridge added to the within-individual scatter, as a share of its mean variance:
/// keeps the whitening finite when a direction barely varies within individuals, and keeps
/// the projection from fitting noise when individuals have few photos (0.3 scored best of
/// 0.01 to 1 on real catalogues).
pub const LDA_RIDGE: f64 = 0.3;

/// Fisher's linear discriminant: directions that maximise between-individual over
/// within-individual variance, found by whitening the within scatter and diagonalising the
/// between scatter in the whitened space.
pub struct Lda {
    mean: Vec<f64>,
    /// `[in_dim, out_dim]`.
    projection: DMatrix<f64>,
}

impl Lda {
    /// `None` when fewer than two classes have two or more samples.
    pub fn fit(x: &[Vec<f32>], labels: &[u32], ridge: f64) -> Option<Lda> {
        let d = x.first()?.len();
        let classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
        let mut counts = vec![0usize; classes];
        let mut sums = vec![vec![0f64; d]; classes];
        for (v, &c) in x.iter().zip(labels) {
            counts[c as usize] += 1;
            for (s, &a) in sums[c as usize].iter_mut().zip(v) {
                *s += a as f64;
            }
        }
        if counts.iter().filter(|&&n| n >= 2).count() < 2 {
            return None;
        }
        let n = x.len() as f64;
        let mean: Vec<f64> = (0..d).map(|j| sums.iter().map(|s| s[j]).sum::<f64>() / n).collect();
        let class_means: Vec<Vec<f64>> =
            sums.iter().zip(&counts).map(|(s, &k)| s.iter().map(|v| v / k.max(1) as f64).collect()).collect();
        // Within: rows minus their class mean. Between: class means minus the mean, weighted.
        let within_rows = DMatrix::from_fn(x.len(), d, |i, j| x[i][j] as f64 - class_means[labels[i] as usize][j]);
        let between_rows =
            DMatrix::from_fn(classes, d, |c, j| (class_means[c][j] - mean[j]) * (counts[c] as f64).sqrt());
        let mut within = within_rows.transpose() * &within_rows;
        let between = between_rows.transpose() * &between_rows;
        let ridge = ridge * within.trace() / d as f64;
        for i in 0..d {
            within[(i, i)] += ridge.max(f64::MIN_POSITIVE);
        }
        let w = SymmetricEigen::new(within);
        let whiten =
            DMatrix::from_fn(d, d, |i, j| w.eigenvectors[(i, j)] / w.eigenvalues[j].max(f64::MIN_POSITIVE).sqrt());
        let b = SymmetricEigen::new(whiten.transpose() * between * &whiten);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&i, &j| b.eigenvalues[j].total_cmp(&b.eigenvalues[i]));
        let nonzero_classes = counts.iter().filter(|&&k| k > 0).count();
        let keep = (nonzero_classes - 1).min(d).max(1);
        let projection = whiten * b.eigenvectors.select_columns(&order[..keep]);
        Some(Lda { mean, projection })
    }

    pub fn dim(&self) -> usize {
        self.projection.ncols()
    }

    /// The projection as a linear layer with `out_dim` outputs, row-major `[out_dim, in]`
    /// weights and a bias (outputs past [`Lda::dim`] are zero rows): `W x + b` is
    /// `project(x)` padded with zeros.
    pub fn linear(&self, out_dim: usize) -> (Vec<f32>, Vec<f32>) {
        let d = self.mean.len();
        let mut weight = vec![0f32; out_dim * d];
        let mut bias = vec![0f32; out_dim];
        for k in 0..self.dim().min(out_dim) {
            let column = self.projection.column(k);
            for (w, p) in weight[k * d..][..d].iter_mut().zip(column.iter()) {
                *w = *p as f32;
            }
            bias[k] = -column.iter().zip(&self.mean).map(|(p, m)| p * m).sum::<f64>() as f32;
        }
        (weight, bias)
    }

    pub fn project(&self, v: &[f32]) -> Vec<f32> {
        let centred = DMatrix::from_fn(1, self.mean.len(), |_, j| v[j] as f64 - self.mean[j]);
        (centred * &self.projection).iter().map(|&p| p as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn lda_finds_the_direction_that_separates_individuals_under_louder_noise() {
        // Two dimensions: the first carries loud noise shared by all, the second the class.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut x, mut labels) = (Vec::new(), Vec::new());
        for c in 0..3u32 {
            for _ in 0..50 {
                x.push(vec![rng.random_range(-10.0..10.0f32), c as f32 + rng.random_range(-0.2..0.2f32)]);
                labels.push(c);
            }
        }
        let lda = Lda::fit(&x, &labels, LDA_RIDGE).unwrap();
        assert_eq!(lda.dim(), 2);
        // The leading direction is (almost) the second axis.
        let (a, b) = (lda.projection[(0, 0)].abs(), lda.projection[(1, 0)].abs());
        assert!(b > 5.0 * a, "leading direction ({a}, {b})");
        assert!(Lda::fit(&x[..1], &labels[..1], LDA_RIDGE).is_none());
        // As a linear layer: the same numbers, then zeros.
        let (w, b) = lda.linear(3);
        let v = [1.5f32, 0.7];
        let layer: Vec<f32> = (0..3).map(|k| w[2 * k] * v[0] + w[2 * k + 1] * v[1] + b[k]).collect();
        let projected = lda.project(&v);
        assert!((layer[0] - projected[0]).abs() < 1e-4 && (layer[1] - projected[1]).abs() < 1e-4);
        assert_eq!(layer[2], 0.0);
    }
}
