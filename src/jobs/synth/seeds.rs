//! Seeds: every random draw comes from a stream keyed by the seed, the individual and the photo.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(super) const STREAM_IDENTITY: u64 = 0x1D;
pub(super) const STREAM_PHOTO: u64 = 0x9F;
pub(super) const STREAM_CAPTURE: u64 = 0xCA;
pub(super) const STREAM_SURVEY: u64 = 0x5E;

pub(super) fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mix_seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |h, &p| splitmix64(h ^ p))
}

pub(super) fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(parts))
}

/// Gaussian-ish sample: the sum of three uniforms, scaled to unit variance.
pub(super) fn normal(rng: &mut ChaCha8Rng) -> f32 {
    (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 2.0
}
