//! The bfloat16 matrix product of linear layers: the left operand packed in panels of [`MR`]
//! rows, the right one in pairs along the inner dimension, an `MR x 48` register tile, blocks of
//! [`KB`] pairs.

use super::{available, bf16_pair, pair_rows, to_bf16};
use crate::machinery::{Mat, LANES};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows per micro-tile of [`matmul`] (one broadcast pair each).
const MR: usize = 8;
/// Vectors of 16 columns per micro-tile of [`matmul`].
const NV: usize = 3;
/// Pairs of the inner dimension per block of [`matmul`]: a block of the packed right operand
/// (`KB x 48` pairs, 48 KiB) stays in cache while every row tile passes over it.
const KB: usize = 256;

/// The left operand of [`matmul`] (`m x k`) in panels of [`MR`] rows, each `[ceil(k / 2)][MR]`
/// pairs along the inner dimension (zero rows past `m`), so that a micro-tile's broadcasts for
/// one pair are 8 neighbouring words.
fn pack_left(a: &Mat<f32>) -> Vec<u32> {
    let (m, k) = (a.rows, a.cols);
    let kp = k.div_ceil(2);
    let mut data = vec![0u32; m.div_ceil(MR) * kp * MR];
    if a.cs == 1 {
        // Rows contiguous: each row converted in order is its own run of pairs; a panel's rows
        // are converted together, then interleaved.
        data.par_chunks_mut(kp * MR).enumerate().for_each_init(
            || vec![0u32; kp * MR],
            |rows, (panel, dst)| {
                for (r, row) in rows.chunks_mut(kp).enumerate() {
                    let i = panel * MR + r;
                    // SAFETY: a u32 slice viewed as twice as many u16 (alignment 4 >= 2), the
                    // little-endian layout of the pairs: element 2p low, 2p + 1 high.
                    let halves = unsafe {
                        std::slice::from_raw_parts_mut(row.as_mut_ptr().cast::<u16>(), 2 * kp)
                    };
                    halves.fill(0);
                    if i < m {
                        to_bf16(&a.data[i * a.rs..][..k], &mut halves[..k]);
                    }
                }
                for (p, words) in dst.chunks_mut(MR).enumerate() {
                    for (r, w) in words.iter_mut().enumerate() {
                        *w = rows[r * kp + p];
                    }
                }
            },
        );
    } else {
        // Any other view (the callers' left operands all have contiguous rows).
        let at = |i: usize, j: usize| {
            if j < k {
                a.data[i * a.rs + j * a.cs]
            } else {
                0.0
            }
        };
        for i in 0..m {
            for p in 0..kp {
                data[((i / MR) * kp + p) * MR + i % MR] = bf16_pair(at(i, 2 * p), at(i, 2 * p + 1));
            }
        }
    }
    data
}

/// The right operand of [`matmul`] (`k x n`) as `[ceil(k / 2)][np]` pairs along the inner
/// dimension, `np` the columns rounded up to 16 (zeros past `n`).
fn pack_right(b: &Mat<f32>) -> (Vec<u32>, usize) {
    let (k, n) = (b.rows, b.cols);
    let np = n.div_ceil(LANES) * LANES;
    let mut data = vec![0u32; k.div_ceil(2) * np];
    let zeros = vec![0f32; n];
    for (p, row) in data.chunks_mut(np).enumerate() {
        let (r0, r1) = (2 * p, 2 * p + 1);
        if b.cs == 1 {
            let second = if r1 < k {
                &b.data[r1 * b.rs..][..n]
            } else {
                &zeros[..]
            };
            pair_rows(&b.data[r0 * b.rs..][..n], second, &mut row[..n]);
        } else {
            for (j, d) in row[..n].iter_mut().enumerate() {
                let second = if r1 < k {
                    b.data[r1 * b.rs + j * b.cs]
                } else {
                    0.0
                };
                *d = bf16_pair(b.data[r0 * b.rs + j * b.cs], second);
            }
        }
    }
    (data, np)
}

/// `dst = a b` (or `dst += a b` with `accumulate`) for a row-major `dst` of `a.rows x b.cols`,
/// with both operands rounded to bfloat16 and the products summed in f32, on all of rayon's
/// threads. Each entry is one running sum over the inner dimension in order, computed by one
/// thread, so the result depends neither on the thread count nor on the other rows. Needs
/// [`available`].
pub(crate) fn matmul(dst: &mut [f32], a: Mat<f32>, b: Mat<f32>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner sizes differ");
    assert!(dst.len() >= m * n, "matmul: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    for v in [&a, &b] {
        assert!(
            (v.rows - 1) * v.rs + (v.cols - 1) * v.cs < v.data.len(),
            "matmul: view out of bounds"
        );
    }
    assert!(available(), "bfloat16 matmul on a CPU without AVX-512 BF16");
    let left = pack_left(&a);
    let (right, np) = pack_right(&b);
    let kp = k.div_ceil(2);
    let per_task = (m.div_ceil(4 * rayon::current_num_threads()).div_ceil(MR) * MR).max(MR);
    dst[..m * n]
        .par_chunks_mut(per_task * n)
        .enumerate()
        .for_each(|(task, block)| {
            let (first, rows) = (task * per_task, block.len() / n);
            for k0 in (0..kp).step_by(KB) {
                let pairs = k0..(k0 + KB).min(kp);
                let add = accumulate || k0 > 0;
                for n0 in (0..n).step_by(NV * LANES) {
                    let vectors = (n - n0).div_ceil(LANES).min(NV);
                    for r in (0..rows).step_by(MR) {
                        let at = Tile {
                            left: &left[((first + r) / MR) * kp * MR..],
                            right: &right,
                            np,
                            pairs: pairs.clone(),
                            rows: (rows - r).min(MR),
                            n0,
                            n,
                            add,
                        };
                        let out = &mut block[r * n..];
                        // SAFETY: `available()` was checked; the tile's panel holds `kp` pairs of
                        // `MR` rows, its pairs and columns `n0..n0 + 16 vectors <= np` lie in
                        // `right`, and its outputs (rows below `rows`, columns masked past `n`) in
                        // `out`.
                        unsafe {
                            match vectors {
                                3 => tile::<3>(&at, out),
                                2 => tile::<2>(&at, out),
                                _ => tile::<1>(&at, out),
                            }
                        }
                    }
                }
            }
        });
}

/// Where one micro-tile of [`matmul`] reads and writes.
struct Tile<'a> {
    /// The left operand's panel of [`MR`] rows.
    left: &'a [u32],
    right: &'a [u32],
    np: usize,
    pairs: std::ops::Range<usize>,
    /// Rows of the panel to write (the rest are padding).
    rows: usize,
    /// First column.
    n0: usize,
    /// Columns of the destination.
    n: usize,
    /// Whether to add to the destination rather than overwrite it.
    add: bool,
}

/// `MR x (V * 16)` outputs: `out[r * n + n0 + j] (+)= sum_p left[p, r] . right[p, n0 + j]` over
/// the tile's pairs, for rows `r < rows`, columns past `n` masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const V: usize>(t: &Tile, out: &mut [f32]) {
    let mask = |v: usize| -> __mmask16 {
        let left = t.n.saturating_sub(t.n0 + v * LANES).min(LANES);
        if left == LANES {
            0xffff
        } else {
            (1u16 << left) - 1
        }
    };
    let mut acc = [[_mm512_setzero_ps(); V]; MR];
    if t.add {
        for (r, row) in acc.iter_mut().enumerate().take(t.rows) {
            for (v, a) in row.iter_mut().enumerate() {
                *a = _mm512_maskz_loadu_ps(mask(v), out.as_ptr().add(r * t.n + t.n0 + v * LANES));
            }
        }
    }
    let mut lp = t.left.as_ptr().add(t.pairs.start * MR);
    let mut rp = t.right.as_ptr().add(t.pairs.start * t.np + t.n0);
    for _ in t.pairs.clone() {
        let bv: [__m512bh; V] = std::array::from_fn(|v| {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(rp.add(v * LANES).cast()))
        });
        for (r, row) in acc.iter_mut().enumerate() {
            let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*lp.add(r) as i32));
            for v in 0..V {
                row[v] = _mm512_dpbf16_ps(row[v], av, bv[v]);
            }
        }
        lp = lp.add(MR);
        rp = rp.add(t.np);
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        for (v, &val) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(
                out.as_mut_ptr().add(r * t.n + t.n0 + v * LANES),
                mask(v),
                val,
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const V: usize>(_: &Tile, _: &mut [f32]) {
    unreachable!("bfloat16 kernels need x86_64 with AVX-512 BF16")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::round_bf16;
    use crate::testing::TestRng;

    /// The product against f64 sums of the bfloat16-rounded operands (only the f32 summation
    /// differs), for both packings of the left operand (rows contiguous; any other view: a
    /// transposed one, every other element), odd inner sizes, ragged rows and columns, and
    /// accumulation; and the same result on one thread as on several.
    #[test]
    fn matmul_matches_rounded_f64() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        let mut rng = TestRng::new(41);
        for (m, k, n) in [
            (1, 1, 1),
            (5, 7, 3),
            (13, 33, 50),
            (37, 600, 70),
            (64, 96, 192),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let start: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.01).collect();
            let want = |accumulate: bool| -> Vec<f64> {
                (0..m * n)
                    .map(|idx| {
                        let (i, j) = (idx / n, idx % n);
                        let dot: f64 = (0..k)
                            .map(|p| {
                                round_bf16(a[i * k + p]) as f64 * round_bf16(b[p * n + j]) as f64
                            })
                            .sum();
                        dot + if accumulate { start[idx] as f64 } else { 0.0 }
                    })
                    .collect()
            };
            // Left: rows contiguous, a transposed view (columns contiguous), every other element
            // (neither); right: rows contiguous, a transposed view.
            let spread: Vec<f32> = (0..2 * m * k)
                .map(|i| if i % 2 == 0 { a[i / 2] } else { f32::NAN })
                .collect();
            let lefts = [
                Mat::new(&a, m, k),
                Mat::new(&at, k, m).t(),
                Mat {
                    data: &spread,
                    rows: m,
                    cols: k,
                    rs: 2 * k,
                    cs: 2,
                },
            ];
            let rights = [Mat::new(&b, k, n), Mat::new(&bt, n, k).t()];
            for (li, &left) in lefts.iter().enumerate() {
                for (ri, &right) in rights.iter().enumerate() {
                    for accumulate in [false, true] {
                        let mut dst = start.clone();
                        matmul(&mut dst, left, right, accumulate);
                        let scale = k as f64 * 4.0;
                        for (idx, (&got, &w)) in dst.iter().zip(&want(accumulate)).enumerate() {
                            assert!((got as f64 - w).abs() < 1e-5 * scale, "{m}x{k}x{n} left {li} right {ri} acc {accumulate} at {idx}: {got} vs {w}");
                        }
                        let one = rayon::ThreadPoolBuilder::new()
                            .num_threads(1)
                            .build()
                            .unwrap();
                        let mut single = start.clone();
                        one.install(|| matmul(&mut single, left, right, accumulate));
                        assert_eq!(single, dst, "{m}x{k}x{n}: thread count changed the result");
                    }
                }
            }
        }
    }
}
