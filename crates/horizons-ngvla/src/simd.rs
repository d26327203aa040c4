//! Running a hot loop compiled for AVX2 + FMA when the CPU has them.
//!
//! The crate is built for baseline x86-64 (SSE2: two f64 per instruction). [`avx2_fn!`] builds
//! a function's body a second time with AVX2 and FMA enabled (four f64 per instruction) and
//! picks that build at run time when the CPU has both; on other CPUs, and on other
//! architectures, the baseline build runs. (A closure passed to one generic AVX2 function
//! would be simpler, but the compiler does not inline the closure into it, so the closure's
//! body stays a baseline build.) Rust never fuses a multiply and an add into an FMA on its
//! own, so both builds compute the same numbers (a test of the flagger compares them).
//!
//! The macro holds the workspace's one `unsafe` block (see ARCHITECTURE.md, "Unsafe code").

/// Defines two functions with one body: `$portable`, built for the baseline CPU, and `$name`,
/// which runs that body compiled for AVX2 + FMA when the CPU has them (checked at run time)
/// and `$portable` otherwise.
///
/// ```text
/// avx2_fn! { fn sum / sum_portable(x: &[f64]) -> f64 { x.iter().sum() } }
/// ```
macro_rules! avx2_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident / $portable:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        /// The baseline build of the function of the same name without `_portable`.
        #[inline(always)]
        #[allow(dead_code)]
        $vis fn $portable($($arg: $ty),*) $(-> $ret)? $body

        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: `avx2` needs only the CPU features checked just above.
                    #[allow(unsafe_code)]
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}
pub(crate) use avx2_fn;

/// `x.floor()` without a call into libm (baseline x86-64 has no rounding instruction), exact
/// for |x| < 2⁶³.
#[inline(always)]
pub fn floor(x: f64) -> f64 {
    let t = x as i64 as f64;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn floor_matches_the_library() {
        for x in [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.999, -2.999, 1e15 + 0.5, -1e15 - 0.5, 123.0, -123.0] {
            assert_eq!(super::floor(x), x.floor(), "{x}");
        }
    }
}
