//! What the processor offers the hand-written vector kernels.

/// Whether this CPU has AVX2 and FMA (x86-64-v3: nearly every x86-64 CPU since 2013), which
/// the kernels written with `std::arch` intrinsics need; elsewhere their plain loops run.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
