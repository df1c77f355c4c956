//! Cache prefetch hints for the batch paths: the pipeline asks for every frame's headers
//! before parsing a batch, the FIB for table entries some keys ahead of the one it loads.
//! Its own module because the hints are intrinsics: the only `unsafe` of those paths.

// unsafe: core::arch prefetch intrinsics are unsafe functions, though they never fault.
#![allow(unsafe_code)]

/// A hint to load the cache line holding `buf[at]`; nothing when `at` is out of bounds
/// or the target has no prefetch instruction.
#[inline(always)]
pub(crate) fn prefetch(buf: &[u8], at: usize) {
    if let Some(byte) = buf.get(at) {
        prefetch_ref(byte);
    }
}

/// A hint to load the cache line holding `*item`.
#[inline(always)]
pub(crate) fn prefetch_ref<T>(item: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache; it never faults and writes nothing, and
    // the address is that of a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((item as *const T).cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = item;
}
