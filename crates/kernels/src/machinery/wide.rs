//! Element-wise loops 16 lanes wide. The build targets x86-64-v3 (AVX2), so the compiler's
//! vectorised loops are 8 lanes wide; a function defined by [`wide_fn!`] calls its body (and the
//! helpers it calls, marked `#[inline(always)]`) compiled for AVX-512F too, on CPUs where
//! [`available`] says so, and gets them 16 wide. Element order is unchanged (the sums keep
//! their 16 partials), so results are the same bit for bit.

/// Lanes of one AVX-512 f32 vector.
pub(crate) const LANES: usize = 16;

/// Whether this CPU has AVX-512F (checked once).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `fn name<T: Float>(args) -> R = body_fn`: defines `name`, which calls `body_fn` (marked
/// `#[inline(always)]`) compiled for AVX-512F where this CPU has it (see the
/// [module docs](self)). A closure passed to a wrapper of this kind is not reliably inlined,
/// hence a macro over named functions.
macro_rules! wide_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$t:ident: Float>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:ident) => {
        $(#[$m])*
        $vis fn $name<$t: Float>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if $crate::machinery::wide::available() {
                #[target_feature(enable = "avx512f")]
                $(#[$m])*
                unsafe fn avx512<$t: Float>($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has AVX-512F.
                return unsafe { avx512($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide_fn;
