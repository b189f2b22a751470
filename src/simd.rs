//! Functions compiled for the widest vector instructions this CPU has (AVX-512, AVX2, or the
//! baseline), chosen at run time: `multiversion!` compiles one body — loops over fixed-size
//! lane arrays, written so that the compiler vectorizes them — once per [`Variant`]. The body's
//! arithmetic is the same on every variant (Rust never contracts; a `mul_add` written is one
//! rounding everywhere: an instruction on AVX2 + FMA and AVX-512, the C library's `fma` on the
//! baseline), so the results are the same bits; the tests run every variant the machine has.

/// An instruction-set level a `multiversion!` function is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, DQ, BW and VL.
    Avx512,
}

impl Variant {
    /// Whether this CPU runs the variant.
    pub fn available(self) -> bool {
        match self {
            Variant::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The variants this CPU runs, the baseline first.
    pub fn all_available() -> Vec<Variant> {
        [Variant::Baseline, Variant::Avx2, Variant::Avx512]
            .into_iter()
            .filter(|v| v.available())
            .collect()
    }

    /// The widest variant this CPU runs.
    pub fn widest() -> Variant {
        *Variant::all_available()
            .last()
            .expect("the baseline always runs")
    }
}

/// `fn $name(args) -> ret` running `$body(args)` compiled for the widest [`Variant`] of the CPU,
/// and `fn $on(variant, args) -> ret` running it for a given one (panics if the CPU lacks it).
/// `$body` should be `#[inline(always)]`, so that it is compiled inside each variant.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident $(<$g:ident: $bound:path>)? / $on:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:path) => {
        $(#[$doc])*
        $vis fn $name $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            static WIDEST: std::sync::OnceLock<$crate::simd::Variant> = std::sync::OnceLock::new();
            $on(*WIDEST.get_or_init($crate::simd::Variant::widest), $($arg),*)
        }

        /// The same, compiled for `variant` (one this CPU runs).
        $vis fn $on $(<$g: $bound>)? (variant: $crate::simd::Variant, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
            fn avx512 $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2 $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            assert!(variant.available(), "this CPU does not run {variant:?}");
            match variant {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512 (asserted above).
                $crate::simd::Variant::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 and FMA (asserted above).
                $crate::simd::Variant::Avx2 => unsafe { avx2($($arg),*) },
                _ => $body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
