//! Bicubic resizing of the position-embedding grid, as a pair of small matrices.
//!
//! DINOv2 was trained with a 37x37 grid of position embeddings; other input sizes resize it.
//! The reference ONNX graph (Hugging Face `Dinov2Embeddings.interpolate_pos_encoding`, current
//! versions) calls `interpolate(size=(H/14, W/14), mode="bicubic", align_corners=False)`,
//! exported as ONNX `Resize` with explicit output sizes, `half_pixel` coordinates and
//! `cubic_coeff_a = -0.75`. So the source coordinate of output cell `i` is
//! `(i + 0.5) * in/out - 0.5`, with the scale taken from the sizes. (Older transformers
//! versions passed `scale_factor=(H/14 + 0.1)/37` instead, which shifts the sampling points;
//! the reference follows the size form.) Out-of-range taps are clamped to the border,
//! as in both PyTorch and onnxruntime.
//!
//! Bicubic resizing is separable and linear, so `out = Wy · grid · Wxᵀ`; expressing it as
//! matrices keeps it differentiable with respect to the position embeddings.

/// Catmull-Rom-like cubic convolution coefficient used by PyTorch and ONNX.
const CUBIC_A: f64 = -0.75;

/// Weight of a tap at distance `x` in [0, 1].
fn cubic_near(x: f64) -> f64 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

/// Weight of a tap at distance `x` in [1, 2].
fn cubic_far(x: f64) -> f64 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// The `[out_size, in_size]` row-major matrix that resizes a signal of `in_size` samples to
/// `out_size` samples bicubically (half-pixel centres, A = -0.75, clamped borders).
pub fn bicubic_resize_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    if in_size == 0 || out_size == 0 {
        return Vec::new();
    }
    let mut matrix = vec![0.0f64; out_size * in_size];
    let scale = in_size as f64 / out_size as f64;
    let last = in_size as i64 - 1;
    for i in 0..out_size {
        let source = (i as f64 + 0.5) * scale - 0.5;
        let floor = source.floor();
        let t = source - floor;
        let weights = [cubic_far(t + 1.0), cubic_near(t), cubic_near(1.0 - t), cubic_far(2.0 - t)];
        for (offset, weight) in (-1i64..=2).zip(weights) {
            let tap = (floor as i64 + offset).clamp(0, last) as usize;
            matrix[i * in_size + tap] += weight;
        }
    }
    matrix.into_iter().map(|w| w as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let m = bicubic_resize_matrix(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((m[i * 5 + j] - want).abs() < 1e-7, "{i},{j}: {}", m[i * 5 + j]);
            }
        }
    }

    #[test]
    fn rows_sum_to_one() {
        for (n_in, n_out) in [(37, 16), (37, 3), (4, 9), (37, 40)] {
            let m = bicubic_resize_matrix(n_in, n_out);
            for row in m.chunks(n_in) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "{n_in}->{n_out}: {sum}");
            }
        }
    }
}
