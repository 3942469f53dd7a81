//! The AVX state-transition workaround (see [`super::plan::run_plan`]): VZEROUPPER between
//! tract's graph nodes on x86_64; nothing on other architectures.

#[cfg(target_arch = "x86_64")]
pub(super) fn avx_present() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn avx_present() -> bool {
    false
}

/// VZEROUPPER; a no-op where AVX is absent (callers check `avx_present` first anyway).
#[cfg(target_arch = "x86_64")]
pub(super) fn clear_upper_vector_halves() {
    if avx_present() {
        // SAFETY: AVX is present, which is all VZEROUPPER needs.
        unsafe { vzeroupper() }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn clear_upper_vector_halves() {}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn vzeroupper() {
    std::arch::x86_64::_mm256_zeroupper()
}
