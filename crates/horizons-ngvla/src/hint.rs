//! A cache hint for the loops that stream through a block's samples a baseline at a time
//! (validation, the flagger's gather): with some computing per baseline, the hardware
//! prefetcher alone does not keep ahead of them (README, "Benchmarks").

/// How many baselines ahead those loops ask for their samples.
pub(crate) const AHEAD: usize = 4;

/// Asks the CPU to start loading `data` into its caches: one `PREFETCHT0` per 64-byte line.
/// A hint only, with no effect on any result; nothing off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = data.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(data)).step_by(64) {
            // SAFETY: `_mm_prefetch` needs only SSE, which every x86-64 CPU has; a prefetch
            // never faults and reads nothing into the program; the address lies in `data`.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
