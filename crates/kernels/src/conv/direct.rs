//! Stride-1 convolutions without im2col, on CPUs with AVX-512F: float32 products, or bfloat16
//! ones summed in float32 on CPUs with AVX-512 BF16 ([`Weights::Bf16`], [`weight_grad`]'s
//! `bf16`), the same loops over pairs of input channels (forward) or of positions (weight
//! gradient).
//!
//! Pad one image with zeros to `[C, Hp, Wp]` and flatten each channel: the output at flat
//! position `p = oh * Wp + ow` is then `y[o, p] = sum_c sum_t w[o, c, t] x[c, p + off_t]` with
//! `off_t = i * Wp + j` for the kernel tap `t = (i, j)`. Every tap is a constant shift, so each
//! step of the product reads a contiguous run of the padded input: no column matrix is built and
//! no operand is packed except the weights (once per call). The columns `ow >= Wo` of each row
//! are computed and dropped (the cost of the trick: `Wp / Wo`, 6% at 32 wide).
//!
//! Sequences (height 1) are short next to a tile (50 positions are 4 vectors of 16, 78% used), so
//! the forward lays up to [`MAX_STACK`] padded sequences side by side in one row and convolves
//! them as one: each output still reads only its own sequence's padded slot, so the values are
//! those of one sequence alone, bit for bit.
//!
//! [`forward_padded`] computes one image's output (also the input gradient, as the convolution of
//! the padded output gradient with the flipped, transposed kernel); [`weight_grad`] sums
//! `dw[o, c, t] = sum_p dy[o, p] x[c, p + off_t]` over a group of images. Each output element
//! is summed in a fixed order that depends only on its own image (forward) or on the fixed
//! group (weight gradient), never on the batch size or the thread count.

use crate::bf16::{bf16_pair, pair_rows, to_bf16};
use crate::machinery::LANES;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per forward micro-tile (one broadcast weight each).
const OR: usize = 8;
/// Vectors of output positions per forward micro-tile.
const PV: usize = 3;
/// Most sequences laid side by side in one padded row by [`forward`].
const MAX_STACK: usize = 4;

/// Whether this CPU runs the kernels (AVX-512F, checked once).
pub(crate) fn available() -> bool {
    crate::machinery::wide::available()
}

/// A kernel's geometry on a padded image: `c` input channels of `h x w`, zero padding `(ph, pw)`
/// on each side (padded size `hp x wp`), `kh x kw` taps, output `ho x wo` (`wo = wp - kw + 1`);
/// `stack` images of height 1 side by side in one padded row (1 for images).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    c: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    kh: usize,
    kw: usize,
    hp: usize,
    wp: usize,
    stack: usize,
}

impl Plan {
    /// The plan of a `kh x kw` kernel over `c` channels of `h x w` padded by `(ph, pw)`.
    pub(crate) fn new(
        c: usize,
        (h, w): (usize, usize),
        (ph, pw): (usize, usize),
        (kh, kw): (usize, usize),
    ) -> Self {
        Plan {
            c,
            h,
            w,
            ph,
            pw,
            kh,
            kw,
            hp: h + 2 * ph,
            wp: w + 2 * pw,
            stack: 1,
        }
    }

    /// This plan for `images` sequences side by side in one row (images of height above 1 are
    /// never stacked).
    fn stacked(&self, images: usize) -> Self {
        assert!(
            self.hp == 1 || images == 1,
            "only sequences are laid side by side"
        );
        Plan {
            stack: images.max(1),
            ..*self
        }
    }

    /// Sequences to lay side by side for a batch of `batch`: up to [`MAX_STACK`], while every
    /// rayon thread keeps at least four rows to work on; 1 for images.
    fn stack_for(&self, batch: usize) -> usize {
        if self.hp != 1 {
            return 1;
        }
        (batch / (4 * rayon::current_num_threads())).clamp(1, MAX_STACK)
    }

    /// Elements of one padded row: `stack` padded widths.
    fn row(&self) -> usize {
        self.wp * self.stack
    }

    /// Output rows.
    fn ho(&self) -> usize {
        self.hp + 1 - self.kh
    }

    /// Output columns.
    fn wo(&self) -> usize {
        self.wp + 1 - self.kw
    }

    /// Taps per channel.
    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Flat output positions computed (whole padded rows): `ho * row`.
    fn positions(&self) -> usize {
        self.ho() * self.row()
    }

    /// Flat elements of one padded channel.
    fn plane(&self) -> usize {
        self.hp * self.row()
    }

    /// The shift of each tap.
    fn offsets(&self) -> Vec<usize> {
        (0..self.kh)
            .flat_map(|i| (0..self.kw).map(move |j| i * self.row() + j))
            .collect()
    }

    /// Length of a padded image buffer of `depth` planes (channels, or pairs of them): every
    /// plane, plus the slack the last plane's shifted reads run past it (they feed only dropped
    /// positions).
    fn padded_len(&self, depth: usize) -> usize {
        depth * self.plane() + self.kw + PV * LANES
    }

    /// Elements of one unpadded image.
    fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Writes the plan's `stack` images `x` (`[stack, c, h, w]`) into `out` zero-padded. A
    /// buffer of the plan's length is taken to hold earlier images padded the same way (one is
    /// reused per thread within one call): its zero border is kept and only the images are
    /// overwritten.
    fn pad(&self, x: &[f32], out: &mut Vec<f32>) {
        assert_eq!(x.len(), self.stack * self.image_len());
        if out.len() != self.padded_len(self.c) {
            out.clear();
            out.resize(self.padded_len(self.c), 0.0);
        }
        for (s, image) in x.chunks(self.image_len()).enumerate() {
            for (dst, src) in out
                .chunks_mut(self.plane())
                .zip(image.chunks(self.h * self.w))
            {
                for (r, row) in src.chunks(self.w).enumerate() {
                    dst[(r + self.ph) * self.row() + s * self.wp + self.pw..][..self.w]
                        .copy_from_slice(row);
                }
            }
        }
    }

    /// [`Plan::pad`] for the bfloat16 kernel: each plane holds a pair of channels, one
    /// [`bf16_pair`] per position (the last pair of an odd count has a zero second channel).
    fn pad_bf16(&self, x: &[f32], out: &mut Vec<u32>) {
        assert_eq!(x.len(), self.stack * self.image_len());
        let len = self.padded_len(self.c.div_ceil(2));
        if out.len() != len {
            out.clear();
            out.resize(len, 0);
        }
        let hw = self.h * self.w;
        // The partner of an odd count's last channel.
        let zeros = if self.c % 2 == 1 {
            vec![0f32; hw]
        } else {
            Vec::new()
        };
        for (s, image) in x.chunks(self.image_len()).enumerate() {
            for (pair, dst) in out
                .chunks_mut(self.plane())
                .take(self.c.div_ceil(2))
                .enumerate()
            {
                let first = &image[2 * pair * hw..][..hw];
                let second = image
                    .get((2 * pair + 1) * hw..(2 * pair + 2) * hw)
                    .unwrap_or(&zeros);
                for r in 0..self.h {
                    let d =
                        &mut dst[(r + self.ph) * self.row() + s * self.wp + self.pw..][..self.w];
                    pair_rows(
                        &first[r * self.w..][..self.w],
                        &second[r * self.w..][..self.w],
                        d,
                    );
                }
            }
        }
    }
}

/// The weights of a [`forward`]: f32, or bfloat16 pairs of input channels.
pub(crate) enum Weights {
    F32(Vec<f32>),
    Bf16(Vec<u32>),
}

impl Weights {
    /// `w` (`[o, c, taps]`) packed in blocks of [`OR`] output channels, each `[depth * taps][OR]`
    /// with `depth` the channels (f32) or pairs of channels (`bf16`, on CPUs with
    /// [`crate::bf16::available`]); zero rows past `o`.
    pub(crate) fn pack(w: &[f32], o: usize, c: usize, taps: usize, bf16: bool) -> Self {
        let k = c * taps;
        if !bf16 {
            return Weights::F32(pack_blocks(w, o, k, k, |row, kk| row[kk]));
        }
        let pairs = c.div_ceil(2);
        Weights::Bf16(pack_blocks(w, o, k, pairs * taps, |row, j| {
            let (pair, t) = (j / taps, j % taps);
            let second = if 2 * pair + 1 < c {
                row[(2 * pair + 1) * taps + t]
            } else {
                0.0
            };
            bf16_pair(row[2 * pair * taps + t], second)
        }))
    }
}

/// Packs the rows of `w` (`o` rows of `k`) in blocks of [`OR`] rows, each `depth` entries deep,
/// interleaved (`block[j * OR + r] = entry(row r, j)`); rows past `o` are zero. One block per
/// rayon task.
fn pack_blocks<E: Copy + Default + Send>(
    w: &[f32],
    o: usize,
    k: usize,
    depth: usize,
    entry: impl Fn(&[f32], usize) -> E + Sync,
) -> Vec<E> {
    let mut packed = vec![E::default(); o.div_ceil(OR) * depth * OR];
    if depth > 0 {
        packed
            .par_chunks_mut(depth * OR)
            .enumerate()
            .for_each(|(ob, block)| {
                for r in 0..OR.min(o - ob * OR) {
                    let row = &w[(ob * OR + r) * k..][..k];
                    for j in 0..depth {
                        block[j * OR + r] = entry(row, j);
                    }
                }
            });
    }
    packed
}

/// The convolution of a batch of images `x` (`[b, c, h, w]`) into `y` (`[b, o, ho, wo]`), an
/// image (or a row of sequences side by side) per rayon task: `y[o, oh, ow] = bias[o] + sum w x`,
/// weights from [`Weights::pack`] (in bfloat16, each image is rounded to bfloat16 as it is
/// padded, and the products are summed in f32).
pub(crate) fn forward(
    plan: &Plan,
    weights: &Weights,
    o: usize,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) {
    match weights {
        Weights::F32(packed) => forward_with(plan, packed, o, bias, x, y),
        Weights::Bf16(packed) => forward_with(plan, packed, o, bias, x, y),
    }
}

/// [`forward`] with weights packed as `E`.
fn forward_with<E: Operand>(
    plan: &Plan,
    packed: &[E],
    o: usize,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) {
    let out_len = o * plan.ho() * plan.wo();
    if out_len == 0 || plan.image_len() == 0 {
        return;
    }
    let stack = plan.stack_for(x.len() / plan.image_len());
    y.par_chunks_mut(stack * out_len)
        .zip(x.par_chunks(stack * plan.image_len()))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(xp, tmp), (y, x)| {
                let plan = plan.stacked(x.len() / plan.image_len());
                E::pad(&plan, x, xp);
                forward_padded(&plan, packed, o, bias, xp, y, tmp);
            },
        );
}

/// The element of packed weights and padded images: f32, or a pair of bfloat16 (`u32`), with
/// how an image is padded into it and the micro-tile that multiplies them.
trait Operand: Copy + Send + Sync {
    /// Planes of a padded image of `c` channels (channels, or pairs of them).
    fn depth(c: usize) -> usize;
    /// Pads the plan's images into `out` ([`Plan::pad`] or [`Plan::pad_bf16`]).
    fn pad(plan: &Plan, x: &[f32], out: &mut Vec<Self>);
    /// `OR x (V * 16)` outputs at flat positions `p..`, accumulated over every plane and tap
    /// ([`tile_body`] compiled for the instructions it needs).
    ///
    /// # Safety
    /// The CPU has the kernel's instructions; `a` holds `depth * taps` rows of [`OR`], `xp`
    /// `depth` planes plus the slack of [`Plan::padded_len`], and `out` [`OR`] rows of `stride`
    /// with `p + V * 16 <= stride`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const V: usize>(
        a: &[Self],
        depth: usize,
        plane: usize,
        offsets: &[usize],
        xp: &[Self],
        p: usize,
        bias: &[f32; OR],
        out: &mut [f32],
        stride: usize,
    );
    /// 16 lanes from `ptr` (16 floats, or 16 pairs of bfloat16).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load(ptr: *const Self) -> __m512i;
    /// `acc + a * b` lane by lane (a pair of bfloat16 products per lane in bfloat16).
    #[cfg(target_arch = "x86_64")]
    unsafe fn madd(acc: __m512, a: __m512i, b: __m512i) -> __m512;
}

impl Operand for f32 {
    fn depth(c: usize) -> usize {
        c
    }
    fn pad(plan: &Plan, x: &[f32], out: &mut Vec<f32>) {
        plan.pad(x, out)
    }
    unsafe fn tile<const V: usize>(
        a: &[f32],
        depth: usize,
        plane: usize,
        offsets: &[usize],
        xp: &[f32],
        p: usize,
        bias: &[f32; OR],
        out: &mut [f32],
        stride: usize,
    ) {
        tile_f32::<V>(a, depth, plane, offsets, xp, p, bias, out, stride)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> __m512i {
        _mm512_castps_si512(_mm512_loadu_ps(ptr))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), acc)
    }
}

impl Operand for u32 {
    fn depth(c: usize) -> usize {
        c.div_ceil(2)
    }
    fn pad(plan: &Plan, x: &[f32], out: &mut Vec<u32>) {
        plan.pad_bf16(x, out)
    }
    unsafe fn tile<const V: usize>(
        a: &[u32],
        depth: usize,
        plane: usize,
        offsets: &[usize],
        xp: &[u32],
        p: usize,
        bias: &[f32; OR],
        out: &mut [f32],
        stride: usize,
    ) {
        tile_bf16::<V>(a, depth, plane, offsets, xp, p, bias, out, stride)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load(ptr: *const u32) -> __m512i {
        _mm512_loadu_si512(ptr.cast())
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        _mm512_dpbf16_ps(
            acc,
            std::mem::transmute::<__m512i, __m512bh>(a),
            std::mem::transmute::<__m512i, __m512bh>(b),
        )
    }
}

/// The convolution of the plan's `stack` images, from the padded row(s) `xp` (from
/// [`Operand::pad`]) into `y` (`[stack, o, ho, wo]`). `tmp` is scratch.
fn forward_padded<E: Operand>(
    plan: &Plan,
    packed: &[E],
    o: usize,
    bias: Option<&[f32]>,
    xp: &[E],
    y: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let depth = E::depth(plan.c);
    let (n, k) = (plan.positions(), depth * plan.taps());
    let stride = n.div_ceil(LANES) * LANES;
    assert!(
        xp.len() >= plan.padded_len(depth)
            && y.len() == plan.stack * o * plan.ho() * plan.wo()
            && packed.len() >= o.div_ceil(OR) * k * OR
    );
    // Every position of `tmp` that is read back is written by a tile first: no need to clear.
    let need = o.div_ceil(OR) * OR * stride;
    if tmp.len() < need {
        tmp.resize(need, 0.0);
    }
    let offsets = plan.offsets();
    let mut bias_block = [0f32; OR];
    for ob in 0..o.div_ceil(OR) {
        for (r, b) in bias_block.iter_mut().enumerate() {
            *b = bias
                .and_then(|bs| bs.get(ob * OR + r))
                .copied()
                .unwrap_or(0.0);
        }
        let a = &packed[ob * k * OR..][..k * OR];
        let out = &mut tmp[ob * OR * stride..][..OR * stride];
        let mut p = 0;
        while p < n {
            // Tiles of 3 vectors; 4 left are done as 2 + 2 rather than 3 + 1 (a 1-vector tile
            // loads as many weights as it does multiply-adds).
            let left = (n - p).div_ceil(LANES);
            let vectors = if left == 4 { 2 } else { left.min(PV) };
            // SAFETY: `available()` was checked by the caller; reads stay inside `xp` because
            // `p + vectors * LANES <= stride <= n + LANES - 1` and the last channel's slack covers
            // the largest offset plus one vector; writes stay inside row `r` of `out`.
            unsafe {
                let plane = plan.plane();
                match vectors {
                    3 => E::tile::<3>(a, depth, plane, &offsets, xp, p, &bias_block, out, stride),
                    2 => E::tile::<2>(a, depth, plane, &offsets, xp, p, &bias_block, out, stride),
                    _ => E::tile::<1>(a, depth, plane, &offsets, xp, p, &bias_block, out, stride),
                }
            }
            p += vectors * LANES;
        }
    }
    let (ho, wo, wp, row) = (plan.ho(), plan.wo(), plan.wp, plan.row());
    for (s, image) in y.chunks_mut(o * ho * wo).enumerate() {
        for (oi, dst) in image.chunks_mut(ho * wo).enumerate() {
            let src = &tmp[oi * stride + s * wp..];
            for (d, r) in dst.chunks_mut(wo).zip(src.chunks(row)) {
                d.copy_from_slice(&r[..wo]);
            }
        }
    }
}

/// [`tile_body`] in f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32<const V: usize>(
    a: &[f32],
    depth: usize,
    plane: usize,
    offsets: &[usize],
    xp: &[f32],
    p: usize,
    bias: &[f32; OR],
    out: &mut [f32],
    stride: usize,
) {
    tile_body::<f32, V>(a, depth, plane, offsets, xp, p, bias, out, stride)
}

/// [`tile_body`] in bfloat16: each plane of `xp` and each row of `a` holds pairs of input
/// channels, and one `vdpbf16ps` adds both channels' products to the f32 sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16<const V: usize>(
    a: &[u32],
    depth: usize,
    plane: usize,
    offsets: &[usize],
    xp: &[u32],
    p: usize,
    bias: &[f32; OR],
    out: &mut [f32],
    stride: usize,
) {
    tile_body::<u32, V>(a, depth, plane, offsets, xp, p, bias, out, stride)
}

/// `OR x (V * 16)` outputs at flat positions `p..`, accumulated over every plane and tap: per
/// plane and tap, `V` vectors of the shifted input times one broadcast weight (or pair) per
/// output channel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_body<E: Operand, const V: usize>(
    a: &[E],
    depth: usize,
    plane: usize,
    offsets: &[usize],
    xp: &[E],
    p: usize,
    bias: &[f32; OR],
    out: &mut [f32],
    stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; OR];
    for (r, row) in acc.iter_mut().enumerate() {
        *row = [_mm512_set1_ps(bias[r]); V];
    }
    let taps = offsets.len();
    let (xs, ws) = (xp.as_ptr(), a.as_ptr());
    for ci in 0..depth {
        let xc = xs.add(ci * plane + p);
        for (t, &off) in offsets.iter().enumerate() {
            let xt = xc.add(off);
            let xv: [__m512i; V] = std::array::from_fn(|v| E::load(xt.add(v * LANES)));
            let wr = ws.add((ci * taps + t) * OR).cast::<i32>();
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_epi32(*wr.add(r));
                for v in 0..V {
                    row[v] = E::madd(row[v], wv, xv[v]);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, &val) in row.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(r * stride + p + v * LANES), val);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32<const V: usize>(
    _: &[f32],
    _: usize,
    _: usize,
    _: &[usize],
    _: &[f32],
    _: usize,
    _: &[f32; OR],
    _: &mut [f32],
    _: usize,
) {
    unreachable!("direct convolution kernels need x86_64 with AVX-512F")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16<const V: usize>(
    _: &[u32],
    _: usize,
    _: usize,
    _: &[usize],
    _: &[u32],
    _: usize,
    _: &[f32; OR],
    _: &mut [f32],
    _: usize,
) {
    unreachable!("bfloat16 convolution kernels need x86_64 with AVX-512 BF16")
}

/// Whether [`weight_grad`] is used for this plan and `o` output channels: a kernel of 3 or 9 taps
/// (1x3, 3x1, 3x3), `o` a multiple of 16.
pub(crate) fn weight_grad_supported(plan: &Plan, o: usize) -> bool {
    matches!(plan.taps(), 3 | 9) && o.is_multiple_of(LANES)
}

/// A zeroed slice of `len` floats inside `buf` starting on a 64-byte boundary, so that whole
/// vector loads from it never straddle two cache lines.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.clear();
    buf.resize(len + LANES, 0.0);
    let skip = buf.as_ptr().align_offset(64).min(LANES);
    &mut buf[skip..skip + len]
}

/// Writes `dy` (`[o, l]`) transposed, as `[l, o]`, into an aligned slice of `buf`, which it
/// returns.
pub(crate) fn transpose<'a>(dy: &[f32], o: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
    let l = dy.len() / o.max(1);
    let out = aligned(buf, dy.len());
    for o0 in (0..o).step_by(LANES) {
        for l0 in (0..l).step_by(LANES) {
            if o0 + LANES <= o && l0 + LANES <= l {
                // SAFETY: `available()` was checked by the caller; the block's 16 rows of 16 lie
                // inside `dy` (`[o, l]`) and its 16 columns of 16 inside `out` (`[l, o]`).
                unsafe {
                    transpose_block(
                        dy.as_ptr().add(o0 * l + l0),
                        l,
                        out.as_mut_ptr().add(l0 * o + o0),
                        o,
                    )
                };
                continue;
            }
            for oi in o0..(o0 + LANES).min(o) {
                for li in l0..(l0 + LANES).min(l) {
                    out[li * o + oi] = dy[oi * l + li];
                }
            }
        }
    }
    out
}

/// Transposes the 16 x 16 block at `src` (rows `src_stride` apart) into `dst` (rows
/// `dst_stride` apart), in registers: pairs of rows interleaved by 32 and 64 bits, then 128-bit
/// lanes exchanged twice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_block(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * src_stride)));
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // Within each group of four: (0, 2) low, (0, 2) high, (1, 3) low, (1, 3) high.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let base = i & !3;
        let (a, b) = (
            _mm512_castps_pd(t[base + (i & 3) / 2]),
            _mm512_castps_pd(t[base + (i & 3) / 2 + 2]),
        );
        _mm512_castpd_ps(if i % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // Groups 0 and 1 (and 2 and 3) exchange 128-bit lanes: even lanes, then odd lanes.
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let (half, j) = (i / 8, i % 8);
        let (a, b) = (u[half * 8 + j % 4], u[half * 8 + j % 4 + 4]);
        if j < 4 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    });
    for i in 0..16 {
        let (a, b) = (v[i % 8], v[i % 8 + 8]);
        let row = if i < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        };
        _mm512_storeu_ps(dst.add(i * dst_stride), row);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_block(_: *const f32, _: usize, _: *mut f32, _: usize) {
    unreachable!("direct convolution kernels need x86_64 with AVX-512F")
}

/// Adds the weight gradient of a group of images `x` (`[g, c, h, w]`, output gradients `dy`
/// `[g, o, ho, wo]`) to `dw_t`, laid out `[c * taps, o]`:
/// `dw_t[c, t, o] += sum_images sum_(valid p) x[c, p + off_t] dy[p, o]`, over each image padded
/// by [`Plan::pad`] and its output gradient transposed by [`transpose`]. Each element is one
/// running sum over the group's images and positions in order; no position is computed twice
/// and no column is dropped.
///
/// With `bf16` (on CPUs with [`crate::bf16::available`]) both operands are rounded to bfloat16 and
/// pairs of neighbouring positions go into each `vdpbf16ps` ([`weight_grad_bf16`]).
pub(crate) fn weight_grad(
    plan: &Plan,
    x: &[f32],
    dy: &[f32],
    o: usize,
    dw_t: &mut [f32],
    bf16: bool,
) {
    let k = plan.c * plan.taps();
    let l = plan.ho() * plan.wo();
    assert!(weight_grad_supported(plan, o) && dw_t.len() == o * k);
    let images = x.len() / plan.image_len().max(1);
    assert!(x.len() == images * plan.image_len() && dy.len() == images * o * l);
    if bf16 {
        return weight_grad_bf16(plan, x, dy, o, dw_t);
    }
    let xps: Vec<Vec<f32>> = x
        .chunks(plan.image_len())
        .map(|image| {
            let mut xp = Vec::new();
            plan.pad(image, &mut xp);
            xp
        })
        .collect();
    let mut bufs: Vec<Vec<f32>> = xps.iter().map(|_| Vec::new()).collect();
    let dyts: Vec<&[f32]> = dy
        .chunks(o * l)
        .zip(&mut bufs)
        .map(|(d, buf)| transpose(d, o, buf))
        .collect();
    weight_grad_blocks(
        plan,
        &WgOperands::F32 {
            xps: &xps,
            dyts: &dyts,
        },
        o,
        dw_t,
    );
}

/// A weight-gradient group's images as a kernel reads them: padded f32 planes and transposed
/// output gradients, or bfloat16 planes and output gradients paired by neighbouring positions.
enum WgOperands<'a> {
    F32 {
        xps: &'a [Vec<f32>],
        dyts: &'a [&'a [f32]],
    },
    Bf16 {
        xps: &'a [Vec<u16>],
        dyps: &'a [Vec<u32>],
        pairs: usize,
    },
}

/// Runs the weight-gradient kernel over blocks of channels (times their taps) by vectors of
/// output channels, 18 to 24 accumulators each, adding each block into `dw_t`.
fn weight_grad_blocks(plan: &Plan, ops: &WgOperands, o: usize, dw_t: &mut [f32]) {
    let offsets = plan.offsets();
    let (channels, vectors) = match plan.taps() {
        9 => (1, if o.is_multiple_of(32) { 2 } else { 1 }),
        _ => (
            2,
            if o.is_multiple_of(64) {
                4
            } else if o.is_multiple_of(32) {
                2
            } else {
                1
            },
        ),
    };
    let mut c0 = 0;
    while c0 < plan.c {
        let chans = (plan.c - c0).min(channels);
        for o0 in (0..o).step_by(vectors * LANES) {
            // SAFETY: the caller checked the CPU (`available()`, and `bf16::available()` for
            // bfloat16 operands); reads of the planes are the taps of the positions inside
            // channel planes `c0..c0 + chans` (plus the padded length's slack), those of the
            // output gradients whole vectors `o0..o0 + vectors * 16 <= o` of each position.
            unsafe {
                macro_rules! run {
                    ($(($ch:literal, $t:literal, $v:literal)),+) => {
                        match (chans, plan.taps(), vectors) {
                            $(($ch, $t, $v) => match ops {
                                WgOperands::F32 { xps, dyts } => wg_block::<$ch, $t, $v>(plan, &offsets, xps, dyts, o, o0, c0, dw_t),
                                WgOperands::Bf16 { xps, dyps, pairs } => wg_block_bf16::<$ch, $t, $v>(plan, &offsets, xps, dyps, *pairs, o, o0, c0, dw_t),
                            },)+
                            _ => unreachable!(),
                        }
                    };
                }
                run!(
                    (1, 9, 1),
                    (1, 9, 2),
                    (1, 3, 1),
                    (1, 3, 2),
                    (1, 3, 4),
                    (2, 3, 1),
                    (2, 3, 2),
                    (2, 3, 4)
                )
            }
        }
        c0 += chans;
    }
}

/// Adds a block's sums (`CH` channels x `T` taps x `V` vectors) to rows `(c0 + ci) * T + t`,
/// output channels `o0..`, of `dw_t` (`[c * taps, o]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_block<const CH: usize, const T: usize, const V: usize>(
    acc: &[[[__m512; V]; T]; CH],
    dw_t: &mut [f32],
    c0: usize,
    o: usize,
    o0: usize,
) {
    for (ci, taps) in acc.iter().enumerate() {
        for (t, vs) in taps.iter().enumerate() {
            let row = dw_t.as_mut_ptr().add(((c0 + ci) * T + t) * o + o0);
            for (v, &val) in vs.iter().enumerate() {
                let dst = row.add(v * LANES);
                _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), val));
            }
        }
    }
}

/// Channels `c0..c0 + CH` times their `T` taps, by output channels `o0..o0 + 16 V`, over the
/// group.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn wg_block<const CH: usize, const T: usize, const V: usize>(
    plan: &Plan,
    offsets: &[usize],
    xps: &[Vec<f32>],
    dyts: &[&[f32]],
    o: usize,
    o0: usize,
    c0: usize,
    dw_t: &mut [f32],
) {
    let mut acc = [[[_mm512_setzero_ps(); V]; T]; CH];
    let off: [usize; T] = std::array::from_fn(|t| offsets[t]);
    let (ho, wo, wp, plane) = (plan.ho(), plan.wo(), plan.wp, plan.plane());
    for (xp, dyt) in xps.iter().zip(dyts) {
        let xc = xp.as_ptr().add(c0 * plane);
        let mut q = dyt.as_ptr().add(o0);
        for oh in 0..ho {
            for ow in 0..wo {
                let p = oh * wp + ow;
                let d: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(q.add(v * LANES)));
                for (ci, taps) in acc.iter_mut().enumerate() {
                    for (t, vs) in taps.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(*xc.add(ci * plane + p + off[t]));
                        for (a, &dv) in vs.iter_mut().zip(&d) {
                            *a = _mm512_fmadd_ps(xv, dv, *a);
                        }
                    }
                }
                q = q.add(o);
            }
        }
    }
    add_block(&acc, dw_t, c0, o, o0);
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn wg_block<const CH: usize, const T: usize, const V: usize>(
    _: &Plan,
    _: &[usize],
    _: &[Vec<f32>],
    _: &[&[f32]],
    _: usize,
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("direct convolution kernels need x86_64 with AVX-512F")
}

/// [`weight_grad`] in bfloat16. Each image is padded and rounded to bfloat16 plane by plane
/// (`u16`), so that two neighbouring flat positions of a channel are one 32-bit word; its output
/// gradient is laid out `[positions / 2][o]` in pairs of neighbouring flat positions (zero at
/// the dropped columns and past the end). One `vdpbf16ps` then adds
/// `x[c, q + off] dy[q, o] + x[c, q + 1 + off] dy[q + 1, o]` for 16 output channels.
fn weight_grad_bf16(plan: &Plan, x: &[f32], dy: &[f32], o: usize, dw_t: &mut [f32]) {
    let l = plan.ho() * plan.wo();
    let pairs = plan.positions().div_ceil(2);
    let mut xp = Vec::new();
    let xps: Vec<Vec<u16>> = x
        .chunks(plan.image_len())
        .map(|image| {
            plan.pad(image, &mut xp);
            let mut out = vec![0u16; xp.len()];
            to_bf16(&xp, &mut out);
            out
        })
        .collect();
    let (mut buf, zeros) = (Vec::new(), vec![0f32; o]);
    let (wo, wp) = (plan.wo(), plan.wp);
    let dyps: Vec<Vec<u32>> = dy
        .chunks(o * l)
        .map(|d| {
            let dyt = transpose(d, o, &mut buf);
            // The transposed row of flat position q, or None at a dropped column or past the end.
            let row = |q: usize| {
                (q < plan.positions() && q % wp < wo)
                    .then(|| &dyt[((q / wp) * wo + q % wp) * o..][..o])
            };
            let mut out = vec![0u32; pairs * o];
            for (qp, dst) in out.chunks_mut(o).enumerate() {
                match (row(2 * qp), row(2 * qp + 1)) {
                    (None, None) => {}
                    (a, b) => pair_rows(a.unwrap_or(&zeros), b.unwrap_or(&zeros), dst),
                }
            }
            out
        })
        .collect();
    weight_grad_blocks(
        plan,
        &WgOperands::Bf16 {
            xps: &xps,
            dyps: &dyps,
            pairs,
        },
        o,
        dw_t,
    );
}

/// [`wg_block`] in bfloat16 over pairs of positions (see [`weight_grad_bf16`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn wg_block_bf16<const CH: usize, const T: usize, const V: usize>(
    plan: &Plan,
    offsets: &[usize],
    xps: &[Vec<u16>],
    dyps: &[Vec<u32>],
    pairs: usize,
    o: usize,
    o0: usize,
    c0: usize,
    dw_t: &mut [f32],
) {
    let mut acc = [[[_mm512_setzero_ps(); V]; T]; CH];
    let off: [usize; T] = std::array::from_fn(|t| offsets[t]);
    let plane = plan.plane();
    for (xp, dyp) in xps.iter().zip(dyps) {
        let xc = xp.as_ptr().add(c0 * plane);
        let mut q = dyp.as_ptr().add(o0);
        for qp in 0..pairs {
            let d: [__m512bh; V] = std::array::from_fn(|v| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    q.add(v * LANES).cast(),
                ))
            });
            for (ci, taps) in acc.iter_mut().enumerate() {
                for (t, vs) in taps.iter_mut().enumerate() {
                    let word = xc
                        .add(ci * plane + 2 * qp + off[t])
                        .cast::<u32>()
                        .read_unaligned();
                    let xv =
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(word as i32));
                    for (a, &dv) in vs.iter_mut().zip(&d) {
                        *a = _mm512_dpbf16_ps(*a, xv, dv);
                    }
                }
            }
            q = q.add(o);
        }
    }
    add_block(&acc, dw_t, c0, o, o0);
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn wg_block_bf16<const CH: usize, const T: usize, const V: usize>(
    _: &Plan,
    _: &[usize],
    _: &[Vec<u16>],
    _: &[Vec<u32>],
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("bfloat16 convolution kernels need x86_64 with AVX-512 BF16")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-register transpose against the definition, on shapes with whole and partial blocks.
    #[test]
    fn transpose_matches_the_definition() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for (o, l) in [(16, 16), (32, 200), (48, 37), (5, 9)] {
            let dy: Vec<f32> = (0..o * l).map(|i| i as f32).collect();
            let mut buf = Vec::new();
            let t = transpose(&dy, o, &mut buf);
            for oi in 0..o {
                for li in 0..l {
                    assert_eq!(
                        t[li * o + oi],
                        dy[oi * l + li],
                        "[{o}, {l}] at ({oi}, {li})"
                    );
                }
            }
        }
    }
}
