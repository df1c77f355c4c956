//! The cache prefetch hint the pipeline issues for every frame's headers before parsing
//! a batch. Its own module because it is an intrinsic: the only `unsafe` of the pipeline.

// unsafe: core::arch prefetch intrinsics are unsafe functions, though they never fault.
#![allow(unsafe_code)]

/// A hint to load the cache line holding `buf[at]`; nothing when `at` is out of bounds
/// or the target has no prefetch instruction.
#[inline(always)]
pub(super) fn prefetch(buf: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = buf.get(at) {
        // SAFETY: PREFETCHT0 only hints the cache; it never faults and writes nothing, and
        // the address is of a live byte of `buf`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((byte as *const u8).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, at);
}
