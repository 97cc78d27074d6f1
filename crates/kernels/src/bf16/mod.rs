//! bfloat16 arithmetic on CPUs with AVX-512 BF16: conversions (round to nearest, ties to even,
//! as the hardware does), single values and pairs packed for `vdpbf16ps` (which adds the
//! products of two pairs of bfloat16 to each f32 lane), and a matrix product whose operands are
//! rounded to bfloat16 and whose sums are float32 ([`matmul`]). Used where
//! [`crate::set_bf16_compute`] is on: by the direct convolution kernels
//! ([`crate::conv`]) and by linear layers ([`crate::linear`]).

use crate::machinery::LANES;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

mod matmul;
pub(crate) use matmul::matmul;

/// Whether this CPU runs the bfloat16 kernels (AVX-512F, BW and BF16, checked once).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            crate::machinery::wide::available()
                && std::arch::is_x86_feature_detected!("avx512bf16")
                && std::arch::is_x86_feature_detected!("avx512bw")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to bfloat16 (to nearest, ties to even), as the top 16 bits of an f32 (NaN stays
/// a quiet NaN). The same rounding as AVX-512 BF16's conversions.
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return 0x7fc0_0000;
    }
    b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000
}

/// `x` rounded to bfloat16, as an f32.
#[cfg(test)]
pub(crate) fn round_bf16(x: f32) -> f32 {
    f32::from_bits(bf16_bits(x))
}

/// Two values as one 32-bit pair of bfloat16 for `vdpbf16ps`: `a` in the low half, `b` in the
/// high half (the dot product multiplies low halves together and high halves together).
#[inline(always)]
pub(crate) fn bf16_pair(a: f32, b: f32) -> u32 {
    (bf16_bits(a) >> 16) | bf16_bits(b)
}

/// `out[i] = bf16(x[i])` for `i < out.len()` (`x` at least as long). Needs [`available`].
pub(crate) fn to_bf16(x: &[f32], out: &mut [u16]) {
    assert!(available() && x.len() >= out.len());
    // SAFETY: the CPU has AVX-512F and BF16; the slices are long enough.
    unsafe { to_bf16_avx512(&x[..out.len()], out) }
}

/// `out[i] = bf16_pair(a[i], b[i])` for `i < out.len()` (`a`, `b` at least as long). Needs
/// [`available`].
pub(crate) fn pair_rows(a: &[f32], b: &[f32], out: &mut [u32]) {
    assert!(available() && a.len() >= out.len() && b.len() >= out.len());
    // SAFETY: the CPU has AVX-512F, BW and BF16; the slices are long enough.
    unsafe { pair_rows_avx512(&a[..out.len()], &b[..out.len()], out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_bf16_avx512(x: &[f32], out: &mut [u16]) {
    let whole = out.len() / LANES * LANES;
    for i in (0..whole).step_by(LANES) {
        let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x.as_ptr().add(i)));
        _mm256_storeu_si256(
            out.as_mut_ptr().add(i).cast(),
            std::mem::transmute::<__m256bh, __m256i>(h),
        );
    }
    for i in whole..out.len() {
        out[i] = (bf16_bits(x[i]) >> 16) as u16;
    }
}

/// 16 of each row converted at once, then their halves interleaved.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn pair_rows_avx512(a: &[f32], b: &[f32], out: &mut [u32]) {
    let whole = out.len() / LANES * LANES;
    // Element 2i of the result is a[i] (in the low 256 bits), 2i + 1 is b[i] (the high ones).
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    for i in (0..whole).step_by(LANES) {
        let h = _mm512_cvtne2ps_pbh(
            _mm512_loadu_ps(b.as_ptr().add(i)),
            _mm512_loadu_ps(a.as_ptr().add(i)),
        );
        let pairs =
            _mm512_permutexvar_epi16(interleave, std::mem::transmute::<__m512bh, __m512i>(h));
        _mm512_storeu_si512(out.as_mut_ptr().add(i).cast(), pairs);
    }
    for i in whole..out.len() {
        out[i] = bf16_pair(a[i], b[i]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn to_bf16_avx512(_: &[f32], _: &mut [u16]) {
    unreachable!("bfloat16 kernels need x86_64 with AVX-512 BF16")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pair_rows_avx512(_: &[f32], _: &[f32], _: &mut [u32]) {
    unreachable!("bfloat16 kernels need x86_64 with AVX-512 BF16")
}
