//! The arithmetic a search spends its time in: normalising, exact dot products, and the
//! one-byte copy of each row with its error bound, each with an AVX2 path chosen at run time.

/// Quantises a normalised row to `codes` (symmetric, one scale per row) and returns the scale
/// and the slack: by Cauchy-Schwarz, |q·x - scale·(q·codes)| ≤ |q|·|x - scale·codes|, plus a
/// margin for the rounding of both f32 sums (each within dim·ε of the real one for unit vectors).
pub(super) fn quantise(row: &[f32], codes: &mut [i8]) -> (f32, f32) {
    let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        codes.fill(0);
        return (0.0, 0.0);
    }
    let (scale, inv) = (max / 127.0, 127.0 / max);
    // Rounded by adding 1.5·2^23, which leaves the nearest integer in the low mantissa bits:
    // `round` is a libm call on baseline x86-64 and `as i32` a scalar saturating conversion,
    // and either stops this loop vectorising (it was a sixth of the load time). Clamped as
    // floats first, so the integer is within ±127.
    const MAGIC: f32 = 12_582_912.0;
    for (c, &x) in codes.iter_mut().zip(row) {
        let v = (x * inv).clamp(-127.0, 127.0);
        *c = ((v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i8;
    }
    let mut residual = [0f32; 8];
    let (c8, x8) = (codes.chunks_exact(8), row.chunks_exact(8));
    let tail: f32 = c8.remainder().iter().zip(x8.remainder()).map(|(&c, &x)| (x - scale * f32::from(c)).powi(2)).sum();
    for (c, x) in c8.zip(x8) {
        for j in 0..8 {
            let d = x[j] - scale * f32::from(c[j]);
            residual[j] += d * d;
        }
    }
    // Summing in f32 is off by far less than the 1.001, which also covers a query whose
    // norm after `normalise` is a hair above 1; the margin covers the two scores' roundings.
    let margin = 2.0 * row.len() as f32 * f32::EPSILON;
    (scale, (residual.iter().sum::<f32>() + tail).sqrt() * 1.001 + margin)
}

/// L2-normalises in place; a zero vector stays zero.
pub fn normalise(v: &mut [f32]) {
    // `dot` keeps eight sums: a plain `.sum()` is one serial chain, and loading a gallery
    // normalises every row.
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Dot products of `query` with consecutive rows of `query.len()` floats, one per `out` slot.
pub(super) fn score_rows(query: &[f32], rows: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::base::cpu::has_avx2_fma() {
            // SAFETY: the CPU was just checked for both features.
            unsafe { score_rows_avx2(query, rows, out) };
            return;
        }
    }
    for (s, row) in out.iter_mut().zip(rows.chunks_exact(query.len())) {
        *s = dot(query, row);
    }
}

/// Portable dot product: eight independent sums let the compiler vectorise without
/// reassociating (the default x86-64 target has SSE2 only, so this is the fallback).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The same with AVX2 + FMA, chosen at run time so the binary still runs on any x86-64.
/// Four accumulators of eight lanes hide the FMA latency; rows come from memory anyway.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn score_rows_avx2(query: &[f32], rows: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = query.len();
    let body = dim / 32 * 32;
    for (s, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        let (q, r) = (query.as_ptr(), row.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= body <= dim = query.len() = row.len().
            unsafe {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i + 8 * k)), _mm256_loadu_ps(r.add(i + 8 * k)), *a);
                }
            }
            i += 32;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let tail: f32 = query[body..].iter().zip(&row[body..]).map(|(x, y)| x * y).sum();
        *s = lanes.iter().sum::<f32>() + tail;
    }
}

/// Coarse scores: `scales[r] * (query · codes[r])` for consecutive rows.
pub(super) fn coarse_rows(query: &[f32], codes: &[i8], scales: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::base::cpu::has_avx2_fma() {
            // SAFETY: the CPU was just checked for both features.
            unsafe { coarse_rows_avx2(query, codes, scales, out) };
            return;
        }
    }
    for ((s, row), scale) in out.iter_mut().zip(codes.chunks_exact(query.len())).zip(scales) {
        let mut acc = [0f32; 8];
        let (q8, c8) = (query.chunks_exact(8), row.chunks_exact(8));
        let tail: f32 = q8.remainder().iter().zip(c8.remainder()).map(|(q, &c)| q * f32::from(c)).sum();
        for (q, c) in q8.zip(c8) {
            for j in 0..8 {
                acc[j] += q[j] * f32::from(c[j]);
            }
        }
        *s = scale * (acc.iter().sum::<f32>() + tail);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn coarse_rows_avx2(query: &[f32], codes: &[i8], scales: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = query.len();
    let body = dim / 32 * 32;
    for ((s, row), scale) in out.iter_mut().zip(codes.chunks_exact(dim)).zip(scales) {
        let (q, c) = (query.as_ptr(), row.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            // SAFETY: i + 32 <= body <= dim = query.len() = row.len(); each load reads 8 bytes.
            unsafe {
                for (k, a) in acc.iter_mut().enumerate() {
                    let bytes = _mm_loadl_epi64(c.add(i + 8 * k) as *const __m128i);
                    let codes = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i + 8 * k)), codes, *a);
                }
            }
            i += 32;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let tail: f32 = query[body..].iter().zip(&row[body..]).map(|(q, &c)| q * f32::from(c)).sum();
        *s = scale * (lanes.iter().sum::<f32>() + tail);
    }
}
