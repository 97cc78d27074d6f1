//! 2-D convolution for the CPU as one custom op: im2col + gemm per image, bias fused, with a
//! hand-written backward.
//!
//! candle 0.11.1's CPU conv2d (and its backward, which goes through conv_transpose2d and a
//! conv2d with swapped axes) is a direct convolution that spends most of its time in scalar dot
//! products; expressing the convolution through candle's matmul instead leaves the kernel
//! gradient to a batch-broadcast matmul whose reduction over the batch, and the bias gradient
//! to a reduction over batch and space, both on candle's slow strided-reduction path. Here
//! `Conv2d` runs, for each image in parallel, `y_b = W cols(x_b) + bias` with `cols` the
//! im2col unfolding, and its backward (`Conv2dBackward`) computes in one pass over the images
//! `dx_b = col2im(W^T dy_b)`, `dW = sum_b dy_b cols(x_b)^T` and `db = sum_b sum_l dy_b`, all on
//! the `gemm` crate candle itself uses. Each image is computed by one thread from its own
//! inputs, so a sample's output does not depend on the batch it is in; the weight gradient sums
//! fixed groups of images in a fixed order, so it is the same on every run.
//!
//! Stride-1 convolutions in f32 on CPUs with AVX-512F run on the direct kernels instead
//! (`direct`: no column matrix, optionally in bfloat16), forward and both gradients.

mod direct;

use crate::machinery::{
    contiguous, dispatch, matmul, matmul_into_strides, matmul_strided, output_vec, sum_by, unpack,
    Float, Mat,
};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry shared by [`Im2Col`] and [`Col2Im`]: kernel, stride and zero padding (dilation 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
}

impl Geometry {
    /// Output height and width for an `h x w` input.
    fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if self.kh == 0 || self.kw == 0 || self.sh == 0 || self.sw == 0 {
            bail!("im2col: kernel and stride must be positive, got {self:?}");
        }
        if h + 2 * self.ph < self.kh || w + 2 * self.pw < self.kw {
            bail!(
                "im2col: kernel {}x{} larger than padded input {h}x{w} ({self:?})",
                self.kh,
                self.kw
            );
        }
        Ok((
            (h + 2 * self.ph - self.kh) / self.sh + 1,
            (w + 2 * self.pw - self.kw) / self.sw + 1,
        ))
    }

    /// The output positions `o < n_out` whose input index `o * s + k - p` lies in `0..n_in`.
    fn valid(n_in: usize, n_out: usize, k: usize, s: usize, p: usize) -> std::ops::Range<usize> {
        // o * s + k >= p  <=>  o >= ceil((p - k) / s)
        let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
        // o * s + k - p <= n_in - 1  <=>  o <= (n_in - 1 + p - k) / s
        let hi = if n_in + p > k {
            ((n_in - 1 + p - k) / s + 1).min(n_out)
        } else {
            0
        };
        lo.min(hi)..hi
    }
}

/// Unfolds the output rows `oh` of one `[h, w]` channel into `kh * kw` rows of
/// `oh.len() * wout` columns (`out` pre-zeroed).
#[allow(clippy::too_many_arguments)]
fn unfold_channel<T: Copy>(
    g: &Geometry,
    x: &[T],
    h: usize,
    w: usize,
    out: &mut [T],
    ho: usize,
    wo: usize,
    oh: std::ops::Range<usize>,
) {
    let l = oh.len() * wo;
    for i in 0..g.kh {
        let valid = Geometry::valid(h, ho, i, g.sh, g.ph);
        let rows = valid.start.max(oh.start)..valid.end.min(oh.end);
        for j in 0..g.kw {
            let cols = Geometry::valid(w, wo, j, g.sw, g.pw);
            if cols.is_empty() {
                continue;
            }
            let row = &mut out[(i * g.kw + j) * l..][..l];
            for r in rows.clone() {
                let src = &x[(r * g.sh + i - g.ph) * w..][..w];
                let dst = &mut row[(r - oh.start) * wo..][..wo];
                if g.sw == 1 {
                    let start = cols.start + j - g.pw;
                    dst[cols.clone()].copy_from_slice(&src[start..start + cols.len()]);
                } else {
                    for ow in cols.clone() {
                        dst[ow] = src[ow * g.sw + j - g.pw];
                    }
                }
            }
        }
    }
}

/// Scatter-adds `kh * kw` rows of `hout * wout` columns into one `[h, w]` channel.
fn fold_channel<T: Copy + std::ops::AddAssign>(
    g: &Geometry,
    cols_in: &[T],
    h: usize,
    w: usize,
    out: &mut [T],
    ho: usize,
    wo: usize,
) {
    let l = ho * wo;
    for i in 0..g.kh {
        let rows = Geometry::valid(h, ho, i, g.sh, g.ph);
        for j in 0..g.kw {
            let cols = Geometry::valid(w, wo, j, g.sw, g.pw);
            let row = &cols_in[(i * g.kw + j) * l..][..l];
            for oh in rows.clone() {
                let dst = &mut out[(oh * g.sh + i - g.ph) * w..][..w];
                let src = &row[oh * wo..][..wo];
                for ow in cols.clone() {
                    dst[ow * g.sw + j - g.pw] += src[ow];
                }
            }
        }
    }
}

/// Sizes of one convolution: input `[b, c, h, w]`, `o` output channels, output `ho x wo`.
#[derive(Clone, Copy, Debug)]
struct ConvShape {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ho: usize,
    wo: usize,
}

impl ConvShape {
    /// Rows of the column matrix: `c * kh * kw`.
    fn k(&self, g: &Geometry) -> usize {
        self.c * g.kh * g.kw
    }

    /// Output positions per image.
    fn l(&self) -> usize {
        self.ho * self.wo
    }
}

impl Geometry {
    /// The sizes of a convolution of `x` (`[B, C, H, W]`, or `[B, C, W]` for a 1-D one, as a
    /// height-1 image) with `weight` (`[O, C, kh, kw]`, or `[O, C, kw]`).
    fn conv_shape(&self, x: &Shape, weight: &Shape) -> Result<ConvShape> {
        let ((b, c, h, w), (o, ci, kh, kw)) = match (x.rank(), weight.rank()) {
            (3, 3) => {
                let ((b, c, w), (o, ci, kw)) = (x.dims3()?, weight.dims3()?);
                ((b, c, 1, w), (o, ci, 1, kw))
            }
            _ => (x.dims4()?, weight.dims4()?),
        };
        if ci != c || kh != self.kh || kw != self.kw {
            bail!(
                "conv2d: input {:?} does not fit kernel {:?}",
                x.dims(),
                weight.dims()
            );
        }
        if c == 0 {
            bail!("conv2d: input {:?} has no channels", x.dims());
        }
        let (ho, wo) = self.out_size(h, w)?;
        Ok(ConvShape {
            b,
            c,
            h,
            w,
            o,
            ho,
            wo,
        })
    }

    /// The output shape: `[B, O, Hout, Wout]`, or `[B, O, Wout]` for a 1-D input.
    fn out_shape(s: &ConvShape, x: &Shape) -> Shape {
        match x.rank() {
            3 => Shape::from((s.b, s.o, s.wo)),
            _ => Shape::from((s.b, s.o, s.ho, s.wo)),
        }
    }

    /// The plan of the [`direct`] kernels for this convolution, where they apply: stride 1,
    /// padding below the kernel size, a kernel bigger than 1x1 (in float32: a 1x1 one is a plain
    /// gemm already; in bfloat16 the direct kernel is twice as fast), at least 8 output
    /// channels, on a CPU with AVX-512F (the caller checks the dtype is f32).
    fn direct_plan(&self, s: &ConvShape, allowed: bool, bf16: bool) -> Option<direct::Plan> {
        let applies = allowed
            && (self.sh, self.sw) == (1, 1)
            && self.ph < self.kh
            && self.pw < self.kw
            && (self.kh * self.kw > 1 || bf16)
            && s.o >= 8
            && s.c > 0
            && direct::available();
        applies.then(|| direct::Plan::new(s.c, (s.h, s.w), (self.ph, self.pw), (self.kh, self.kw)))
    }

    /// A 1x1 kernel with stride 1 and no padding: the image is its own column matrix.
    fn pointwise(&self) -> bool {
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)
    }

    /// Output rows per column tile: tiles of the column matrix stay near `TILE_ELEMS` elements,
    /// so that unfolding a tile and multiplying it happen while it is in cache.
    fn tile_rows(&self, s: &ConvShape) -> usize {
        (TILE_ELEMS / (s.k(self) * s.wo).max(1)).clamp(1, s.ho.max(1))
    }

    /// The columns of output rows `oh` of one image (`[c * kh * kw, oh.len() * wo]`), in `cols`.
    fn unfold_rows<T: Float>(
        &self,
        s: &ConvShape,
        x: &[T],
        oh: std::ops::Range<usize>,
        cols: &mut Vec<T>,
    ) {
        let per_channel = self.kh * self.kw * oh.len() * s.wo;
        cols.clear();
        cols.resize(s.c * per_channel, T::default());
        for (dst, src) in cols.chunks_mut(per_channel).zip(x.chunks(s.h * s.w)) {
            unfold_channel(self, src, s.h, s.w, dst, s.ho, s.wo, oh.clone());
        }
    }

    /// The whole column matrix `[c * kh * kw, ho * wo]` of one image, in `cols`.
    #[cfg(test)]
    fn unfold_image<T: Float>(&self, s: &ConvShape, x: &[T], cols: &mut Vec<T>) {
        self.unfold_rows(s, x, 0..s.ho, cols)
    }

    /// `y (+)= w cols(x)` for one image, `w: [o, k]`, `y: [o, ho * wo]`, tile by tile.
    fn conv_image<T: Float>(
        &self,
        s: &ConvShape,
        w: &[T],
        x: &[T],
        y: &mut [T],
        accumulate: bool,
        cols: &mut Vec<T>,
    ) {
        let (k, l) = (s.k(self), s.l());
        if self.pointwise() {
            return matmul(y, Mat::new(w, s.o, k), Mat::new(x, k, l), accumulate);
        }
        let tr = self.tile_rows(s);
        for start in (0..s.ho).step_by(tr) {
            let rows = start..(start + tr).min(s.ho);
            let tl = rows.len() * s.wo;
            self.unfold_rows(s, x, rows, cols);
            matmul_strided(
                &mut y[start * s.wo..],
                l,
                Mat::new(w, s.o, k),
                Mat::new(cols, k, tl),
                accumulate,
            );
        }
    }

    /// `dw (+)= dy cols(x)^T` for one image, tile by tile (`dw: [o, k]`, `dy: [o, ho * wo]`).
    fn weight_grad_image<T: Float>(
        &self,
        s: &ConvShape,
        dy: &[T],
        x: &[T],
        dw: &mut [T],
        cols: &mut Vec<T>,
    ) {
        let (k, l) = (s.k(self), s.l());
        if self.pointwise() {
            return matmul(dw, Mat::new(dy, s.o, l), Mat::new(x, k, l).t(), true);
        }
        let tr = self.tile_rows(s);
        for start in (0..s.ho).step_by(tr) {
            let rows = start..(start + tr).min(s.ho);
            let tl = rows.len() * s.wo;
            self.unfold_rows(s, x, rows, cols);
            matmul(
                dw,
                Mat::strided(&dy[start * s.wo..], s.o, tl, l),
                Mat::new(cols, k, tl).t(),
                true,
            );
        }
    }

    /// Whether the weight gradient lays a group's sequences side by side
    /// ([`Geometry::weight_grad_sequences`]) where the direct kernel does not run: 1-D
    /// convolutions (height 1) of stride 1, with a kernel wider than 1 or sequences shorter than
    /// [`SHORT_SEQUENCE`]. (A 1x1 kernel over 200 positions measured 12% faster per sequence,
    /// with no copies; over 50 positions 8% slower; a 1x3 kernel 64 -> 4 channels over 200
    /// positions 3.5x slower, through its column matrix.)
    fn stacks_sequences(&self, s: &ConvShape) -> bool {
        s.h == 1
            && self.kh == 1
            && self.ph == 0
            && (self.sh, self.sw) == (1, 1)
            && (self.kw > 1 || s.w < SHORT_SEQUENCE)
    }

    /// `dw (+)= sum_b dy_b cols(x_b)^T` over a group of sequences `x` (`[n, c, w]`, output
    /// gradients `dy` `[n, o, wo]`) laid side by side: each sequence zero-padded into a slot of
    /// `wp = w + 2 pw` in one row of `n * wp`, its output gradient at the same place with zeros
    /// between, then per kernel tap `t` one product over the whole row,
    /// `dw[:, :, t] += dy_row x_row[t..]^T`. Each valid output reads only its own slot and the
    /// positions between slots carry zero gradient, so this is the per-sequence sum; but each
    /// product is as deep as the group is long rather than one sequence (50 to 200 positions in
    /// the DNA UNet), and no column matrix is built.
    fn weight_grad_sequences<T: Float>(
        &self,
        s: &ConvShape,
        x: &[T],
        dy: &[T],
        dw: &mut [T],
        (xr, dyr): (&mut Vec<T>, &mut Vec<T>),
    ) {
        let n = x.len() / (s.c * s.w);
        let wp = s.w + 2 * self.pw;
        let row = n * wp;
        let span = row + 1 - self.kw;
        xr.clear();
        xr.resize(s.c * row, T::default());
        dyr.clear();
        dyr.resize(s.o * span, T::default());
        for (i, (xi, dyi)) in x.chunks(s.c * s.w).zip(dy.chunks(s.o * s.wo)).enumerate() {
            for (ch, src) in xi.chunks(s.w).enumerate() {
                xr[ch * row + i * wp + self.pw..][..s.w].copy_from_slice(src);
            }
            for (oi, src) in dyi.chunks(s.wo).enumerate() {
                dyr[oi * span + i * wp..][..s.wo].copy_from_slice(src);
            }
        }
        for t in 0..self.kw {
            let x_t = Mat::strided(&xr[t..], s.c, span, row).t();
            matmul_into_strides(
                &mut dw[t..],
                (s.c * self.kw, self.kw),
                Mat::new(dyr, s.o, span),
                x_t,
                true,
            );
        }
    }

    /// For stride 1 (and padding below the kernel size), the input gradient is itself a
    /// convolution: of the output gradient, with the kernel flipped in space and its channel axes
    /// swapped, and padding `k - 1 - p`. Returns that convolution's geometry, shape and kernel
    /// (`[C, O * kh * kw]`), or None where it does not apply. This avoids col2im's 9x larger
    /// column matrix and its shallow (depth O) product.
    fn transposed<T: Float>(
        &self,
        s: &ConvShape,
        w: &[T],
    ) -> Option<(Geometry, ConvShape, Vec<T>)> {
        if (self.sh, self.sw) != (1, 1) || self.ph >= self.kh || self.pw >= self.kw {
            return None;
        }
        let g = Geometry {
            ph: self.kh - 1 - self.ph,
            pw: self.kw - 1 - self.pw,
            ..*self
        };
        let ts = ConvShape {
            b: s.b,
            c: s.o,
            h: s.ho,
            w: s.wo,
            o: s.c,
            ho: s.h,
            wo: s.w,
        };
        if g.out_size(ts.h, ts.w).ok()? != (s.h, s.w) {
            return None;
        }
        let kk = self.kh * self.kw;
        let mut flipped = output_vec(s.c * s.o * kk);
        if kk > 0 && s.o > 0 {
            flipped
                .par_chunks_mut(s.o * kk)
                .enumerate()
                .for_each(|(c, dst)| {
                    for o in 0..s.o {
                        let src = &w[(o * s.c + c) * kk..][..kk];
                        for i in 0..kk {
                            dst[o * kk + kk - 1 - i] = src[i];
                        }
                    }
                });
        }
        Some((g, ts, flipped))
    }

    /// Scatter-adds one image's column matrix into its `[c, h, w]` input gradient.
    fn fold_image<T: Float>(&self, s: &ConvShape, cols: &[T], dx: &mut [T]) {
        let per_channel = self.kh * self.kw * s.l();
        for (dst, src) in dx.chunks_mut(s.h * s.w).zip(cols.chunks(per_channel)) {
            fold_channel(self, src, s.h, s.w, dst, s.ho, s.wo);
        }
    }
}

/// The convolution `[B, C, H, W] x [O, C, kh, kw] + [O] -> [B, O, Hout, Wout]` (custom op).
#[derive(Clone, Copy, Debug)]
struct Conv2d {
    g: Geometry,
    /// Whether the [`direct`] kernels may run where they apply (always, outside tests that
    /// compare them with im2col).
    direct: bool,
    /// Whether the direct kernels multiply in bfloat16 (see [`crate::set_bf16_compute`]).
    bf16: bool,
}

impl Conv2d {
    /// The op for `g`, with the direct kernels, in bfloat16 where [`crate::bf16_compute`] says so.
    fn new(g: Geometry) -> Self {
        Conv2d {
            g,
            direct: true,
            bf16: crate::bf16_compute(),
        }
    }

    fn run<T: Float>(
        &self,
        x: (&[T], &Layout),
        w: (&[T], &Layout),
        bias: (&[T], &Layout),
    ) -> Result<(Vec<T>, Shape)> {
        let s = self.g.conv_shape(x.1.shape(), w.1.shape())?;
        let (xs, ws, bs) = (
            contiguous(x.0, x.1, "conv2d")?,
            contiguous(w.0, w.1, "conv2d")?,
            contiguous(bias.0, bias.1, "conv2d")?,
        );
        if bs.len() != s.o {
            bail!(
                "conv2d: bias has {} entries for {} output channels",
                bs.len(),
                s.o
            );
        }
        let (l, g) = (s.l(), self.g);
        let mut out = output_vec(s.b * s.o * l);
        if let (Some(plan), Some(x32), Some(w32), Some(b32)) = (
            g.direct_plan(&s, self.direct, self.bf16),
            T::as_f32(xs),
            T::as_f32(ws),
            T::as_f32(bs),
        ) {
            let out32 = T::as_f32_mut(&mut out).expect("f32 output for f32 inputs");
            direct::forward(
                &plan,
                &direct::Weights::pack(w32, s.o, s.c, g.kh * g.kw, self.bf16),
                s.o,
                Some(b32),
                x32,
                out32,
            );
        } else if !out.is_empty() {
            out.par_chunks_mut(s.o * l)
                .zip(xs.par_chunks(s.c * s.h * s.w))
                .for_each_init(Vec::new, |cols, (y, xb)| {
                    for (row, &bv) in y.chunks_mut(l).zip(bs) {
                        row.fill(bv);
                    }
                    g.conv_image(&s, ws, xb, y, true, cols);
                });
        }
        Ok((out, Geometry::out_shape(&s, x.1.shape())))
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("conv (forward)");
        dispatch!("conv2d", (x => x, w => w, b => b), self.run((x, xl), (w, wl), (b, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // An input that is neither a variable nor computed from one (a network's first
        // convolution reads the noisy data) gets no gradient: it is not computed at all.
        let input_grad = x.track_op();
        let packed = grad.contiguous()?.apply_op3_no_bwd(
            x,
            w,
            &Conv2dBackward {
                g: self.g,
                direct: self.direct,
                bf16: self.bf16,
                input_grad,
            },
        )?;
        if !input_grad {
            let mut grads = unpack(&packed, &[w, bias])?.into_iter();
            return Ok((None, grads.next(), grads.next()));
        }
        let mut grads = unpack(&packed, &[x, w, bias])?.into_iter();
        Ok((grads.next(), grads.next(), grads.next()))
    }
}

/// Target size (elements) of one tile of a column matrix: 128K floats, 512 KB, about a core's L2.
const TILE_ELEMS: usize = 128 << 10;

/// Images per group when summing the weight gradient: groups are fixed (not per thread), so the
/// sum is the same whatever the number of threads.
const IMAGES_PER_GROUP: usize = 4;
/// Sequences per group of a 1-D weight gradient (by the direct kernel or
/// [`Geometry::weight_grad_sequences`]): twice the images, as each is short (in the DNA UNet the
/// direct kernel measured 10-20% faster than with groups of 4).
const SEQUENCES_PER_GROUP: usize = 8;
/// Elements per rayon task when adding up the groups' weight gradients.
const SUM_CHUNK: usize = 16 << 10;
/// Sequences shorter than this are laid side by side for a 1x1 kernel's weight gradient.
const SHORT_SEQUENCE: usize = 128;

/// The gradients of [`Conv2d`] from the output gradient, input and weight, packed into one
/// vector `[dx (B*C*H*W), dW (O*C*kh*kw), db (O)]` (without `dx` where the input needs no gradient).
#[derive(Clone, Copy, Debug)]
struct Conv2dBackward {
    g: Geometry,
    direct: bool,
    bf16: bool,
    /// Whether to compute the input gradient (else the output holds only `[dW, db]`).
    input_grad: bool,
}

impl Conv2dBackward {
    fn run<T: Float>(
        &self,
        dy: (&[T], &Layout),
        x: (&[T], &Layout),
        w: (&[T], &Layout),
    ) -> Result<(Vec<T>, Shape)> {
        let s = self.g.conv_shape(x.1.shape(), w.1.shape())?;
        let (dys, xs, ws) = (
            contiguous(dy.0, dy.1, "conv2d backward")?,
            contiguous(x.0, x.1, "conv2d backward")?,
            contiguous(w.0, w.1, "conv2d backward")?,
        );
        let (k, l, g) = (s.k(&self.g), s.l(), self.g);
        let out_shape = Geometry::out_shape(&s, x.1.shape());
        if dy.1.shape() != &out_shape {
            bail!(
                "conv2d backward: gradient {:?} does not match the output {:?}",
                dy.1.shape().dims(),
                out_shape.dims()
            );
        }
        let image = s.c * s.h * s.w;
        let dx_len = if self.input_grad { s.b * image } else { 0 };
        let mut out = output_vec(dx_len + s.o * k + s.o);
        let (dx, rest) = out.split_at_mut(dx_len);
        if !dx.is_empty() && l > 0 {
            let _t = crate::profile::scope("conv (backward): input gradient");
            let transposed = g.transposed(&s, ws);
            let direct_t = transposed.as_ref().and_then(|(tg, ts, tw)| {
                Some((tg.direct_plan(ts, self.direct, self.bf16)?, T::as_f32(tw)?))
            });
            if let (Some((plan, tw)), Some(dx32), Some(dy32)) =
                (direct_t, T::as_f32_mut(dx), T::as_f32(dys))
            {
                direct::forward(
                    &plan,
                    &direct::Weights::pack(tw, s.c, s.o, g.kh * g.kw, self.bf16),
                    s.c,
                    None,
                    dy32,
                    dx32,
                );
            } else {
                dx.par_chunks_mut(image)
                    .zip(dys.par_chunks(s.o * l))
                    .for_each_init(Vec::new, |cols, (dxb, dyb)| {
                        let wt = Mat::new(ws, s.o, k).t();
                        if g.pointwise() {
                            matmul(dxb, wt, Mat::new(dyb, s.o, l), false);
                        } else if let Some((tg, ts, tw)) = &transposed {
                            tg.conv_image(ts, tw, dyb, dxb, false, cols);
                        } else {
                            cols.resize(k * l, T::default());
                            matmul(cols, wt, Mat::new(dyb, s.o, l), false);
                            g.fold_image(&s, cols, dxb);
                        }
                    });
            }
        }
        if s.b > 0 && l > 0 {
            let _t = crate::profile::scope("conv (backward): weight gradient");
            let direct_plan = g
                .direct_plan(&s, self.direct, self.bf16)
                .filter(|plan| direct::weight_grad_supported(plan, s.o) && T::as_f32(xs).is_some());
            // With the direct kernel each group's weight gradient is laid out `[k, o]` (as the
            // kernel writes it) and the sum of the groups is transposed once at the end.
            let stacks = g.stacks_sequences(&s);
            let per_group = if s.h == 1 {
                SEQUENCES_PER_GROUP
            } else {
                IMAGES_PER_GROUP
            };
            let mut groups: Vec<Vec<T>> = (0..s.b.div_ceil(per_group))
                .into_par_iter()
                .map(|group| {
                    let mut acc = vec![T::default(); s.o * k + s.o];
                    let (mut cols, mut dy_row) = (Vec::new(), Vec::new());
                    let images = group * per_group..s.b.min((group + 1) * per_group);
                    let (dw, db) = acc.split_at_mut(s.o * k);
                    let (xg, dyg) = (
                        &xs[images.start * image..images.end * image],
                        &dys[images.start * s.o * l..images.end * s.o * l],
                    );
                    match (
                        direct_plan,
                        T::as_f32(xg),
                        T::as_f32(dyg),
                        T::as_f32_mut(dw),
                    ) {
                        (Some(plan), Some(x32), Some(dy32), Some(dw_t)) => {
                            direct::weight_grad(&plan, x32, dy32, s.o, dw_t, self.bf16)
                        }
                        _ if stacks => {
                            g.weight_grad_sequences(&s, xg, dyg, dw, (&mut cols, &mut dy_row))
                        }
                        _ => {
                            for (xb, dyb) in xg.chunks(image).zip(dyg.chunks(s.o * l)) {
                                g.weight_grad_image(&s, dyb, xb, dw, &mut cols);
                            }
                        }
                    }
                    for dyb in dyg.chunks(s.o * l) {
                        for (d, row) in db.iter_mut().zip(dyb.chunks(l)) {
                            *d += T::from_f64(sum_by(row, |v| v));
                        }
                    }
                    acc
                })
                .collect();
            // The groups summed in order, element chunks in parallel.
            let mut sum = std::mem::take(&mut groups[0]);
            sum.par_chunks_mut(SUM_CHUNK)
                .enumerate()
                .for_each(|(i, chunk)| {
                    for acc in &groups[1..] {
                        for (r, &a) in chunk.iter_mut().zip(&acc[i * SUM_CHUNK..]) {
                            *r += a;
                        }
                    }
                });
            let (dw, db) = rest.split_at_mut(s.o * k);
            match (direct_plan, T::as_f32(&sum), T::as_f32_mut(dw)) {
                (Some(_), Some(sum32), Some(dw32)) => {
                    dw32.copy_from_slice(direct::transpose(&sum32[..s.o * k], k, &mut Vec::new()))
                }
                _ => dw.copy_from_slice(&sum[..s.o * k]),
            }
            db.copy_from_slice(&sum[s.o * k..]);
        }
        let n = out.len();
        Ok((out, Shape::from(n)))
    }
}

impl CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d-im2col-backward"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("conv (backward)");
        dispatch!("conv2d backward", (dy => dy, x => x, w => w), self.run((dy, dyl), (x, xl), (w, wl)))
    }
}

/// 2-D convolution (cross-correlation, as in candle and PyTorch) of `x: [B, Cin, H, W]` with
/// `weight: [Cout, Cin, kh, kw]` plus `bias: [Cout]`, zero padding `(ph, pw)`, stride `(sh, sw)`,
/// dilation 1, giving `[B, Cout, Hout, Wout]`; differentiable in all three inputs.
///
/// On the CPU with f32/f64 this is the fused im2col + gemm op of the [module docs](self); on
/// other devices (or dtypes, or with the fused kernels switched off) it is candle's conv2d, which
/// needs equal strides.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Tensor> {
    let g = Geometry {
        kh: weight.dim(2)?,
        kw: weight.dim(3)?,
        sh: stride.0,
        sw: stride.1,
        ph: padding.0,
        pw: padding.1,
    };
    if crate::switches::use_fused(x) {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            Conv2d::new(g),
        );
    }
    if stride.0 != stride.1 {
        bail!(
            "conv2d: candle's convolution (used off the CPU) needs equal strides, got {stride:?}"
        );
    }
    let x = x
        .pad_with_zeros(2, padding.0, padding.0)?
        .pad_with_zeros(3, padding.1, padding.1)?;
    x.conv2d(weight, 0, stride.0, 1, 1)?
        .broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)
}

/// 1-D convolution (cross-correlation) of `x: [B, Cin, L]` with `weight: [Cout, Cin, k]` plus
/// `bias: [Cout]`, zero padding `padding` on both ends, stride `stride`, giving `[B, Cout, Lout]`;
/// differentiable in all three inputs.
///
/// On the CPU with f32/f64 this is the fused op of [`conv2d`] on the sequence as a height-1
/// image, read and written in place (no reshape nodes in the autograd graph). Elsewhere it is
/// candle's conv2d over a height-1 image with explicit zero padding (candle 0.11.1's conv1d has
/// wrong gradients for batches of more than one); the right-hand padding a strided convolution
/// never reads is left out, so that conv2d's backward pass (which derives its output padding
/// from the height) fits.
pub fn conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let k = weight.dim(2)?;
    if crate::switches::use_fused(x) {
        let g = Geometry {
            kh: 1,
            kw: k,
            sh: 1,
            sw: stride,
            ph: 0,
            pw: padding,
        };
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            Conv2d::new(g),
        );
    }
    let l = x.dim(2)?;
    let right = padding - ((l + 2 * padding).saturating_sub(k) % stride.max(1)).min(padding);
    let x = x.pad_with_zeros(2, padding, right)?.unsqueeze(2)?;
    conv2d(&x, &weight.unsqueeze(2)?, bias, (stride, stride), (0, 0))?.squeeze(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{numeric_grad, randn, rel_err, values, TestRng};
    use candle_core::{DType, Device, Var};

    /// (input [B, C, H, W], Cout, kernel, stride, padding)
    type Config = (
        [usize; 4],
        usize,
        (usize, usize),
        (usize, usize),
        (usize, usize),
    );

    const CONFIGS: [Config; 9] = [
        ([2, 3, 6, 5], 4, (3, 3), (1, 1), (1, 1)),
        ([2, 3, 7, 6], 4, (3, 3), (2, 2), (1, 1)),
        ([2, 3, 5, 4], 4, (1, 1), (1, 1), (0, 0)),
        ([2, 3, 1, 9], 4, (1, 3), (1, 1), (0, 1)),
        ([2, 3, 1, 9], 4, (1, 3), (1, 2), (0, 1)),
        ([2, 2, 7, 5], 3, (3, 3), (1, 1), (1, 1)),
        ([2, 2, 7, 5], 3, (3, 2), (2, 1), (0, 1)),
        ([2, 2, 7, 5], 3, (1, 1), (2, 2), (0, 0)),
        ([3, 3, 1, 7], 4, (1, 1), (1, 1), (0, 0)),
    ];

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        assert_eq!(a.dims(), b.dims());
        Ok(values(a)?
            .iter()
            .zip(values(b)?)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max))
    }

    /// Reference: candle's conv2d, with asymmetric padding done by hand (candle pads equally).
    fn reference(
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        assert_eq!(stride.0, stride.1, "candle's conv2d takes one stride");
        let x = x
            .pad_with_zeros(2, padding.0, padding.0)?
            .pad_with_zeros(3, padding.1, padding.1)?;
        let y = x.conv2d(w, 0, stride.0, 1, 1)?;
        y.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)
    }

    #[test]
    fn forward_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for (n, &(shape, cout, k, s, p)) in CONFIGS.iter().enumerate() {
                let mut rng = TestRng::new(n as u64);
                let x = randn(&mut rng, &shape, dtype, &dev)?;
                let w = randn(&mut rng, &[cout, shape[1], k.0, k.1], dtype, &dev)?;
                let bias = randn(&mut rng, &[cout], dtype, &dev)?;
                let y = conv2d(&x, &w, &bias, s, p)?;
                if s.0 == s.1 {
                    let err = max_abs_diff(&y, &reference(&x, &w, &bias, s, p)?)?;
                    assert!(err < tol, "{dtype:?} config {n}: max diff {err}");
                }
                // A strided view of the input gives the same result.
                let xt = x.transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
                assert_eq!(values(&conv2d(&xt, &w, &bias, s, p)?)?, values(&y)?);
                // Each image's output is the same whatever batch it is computed in.
                let first = conv2d(&x.narrow(0, 1, 1)?, &w, &bias, s, p)?;
                assert_eq!(values(&first)?, values(&y.narrow(0, 1, 1)?)?);
            }
        }
        Ok(())
    }

    /// im2col of one image (through the helper the op uses), as a `[C*kh*kw, Hout*Wout]` tensor.
    fn unfold(x: &Tensor, g: Geometry) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let (ho, wo) = g.out_size(h, w)?;
        let s = ConvShape {
            b: 1,
            c,
            h,
            w,
            o: 0,
            ho,
            wo,
        };
        let mut cols = Vec::new();
        g.unfold_image(&s, &x.flatten_all()?.to_vec1::<f64>()?, &mut cols);
        Tensor::from_vec(cols, (c * g.kh * g.kw, ho * wo), x.device())
    }

    /// A shape big enough to be unfolded in several column tiles (11 + 9 output rows here):
    /// forward and every gradient against candle's conv2d and its autograd.
    #[test]
    fn tiled_unfolding_matches_candle() -> Result<()> {
        let dev = Device::Cpu;
        let g = Geometry {
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            ph: 1,
            pw: 1,
        };
        let s = ConvShape {
            b: 2,
            c: 64,
            h: 20,
            w: 20,
            o: 40,
            ho: 20,
            wo: 20,
        };
        let (tg, ts, _) = g.transposed(&s, &[0.0f64; 40 * 64 * 9]).unwrap();
        assert!(
            g.tile_rows(&s) < s.ho && tg.tile_rows(&ts) < ts.ho,
            "every pass must span several tiles"
        );
        let mut rng = TestRng::new(77);
        let x = Var::from_tensor(&randn(&mut rng, &[2, 64, 20, 20], DType::F64, &dev)?)?;
        let w = Var::from_tensor(&randn(&mut rng, &[40, 64, 3, 3], DType::F64, &dev)?)?;
        let bias = Var::from_tensor(&randn(&mut rng, &[40], DType::F64, &dev)?)?;
        let ours = conv2d(
            x.as_tensor(),
            w.as_tensor(),
            bias.as_tensor(),
            (1, 1),
            (1, 1),
        )?;
        let theirs = reference(
            x.as_tensor(),
            w.as_tensor(),
            bias.as_tensor(),
            (1, 1),
            (1, 1),
        )?;
        assert!(max_abs_diff(&ours, &theirs)? < 1e-10);
        let r = randn(&mut rng, ours.dims(), DType::F64, &dev)?;
        let (g1, g2) = (
            ours.mul(&r)?.sum_all()?.backward()?,
            theirs.mul(&r)?.sum_all()?.backward()?,
        );
        for v in [&x, &w, &bias] {
            assert!(
                max_abs_diff(
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap()
                )? < 1e-9
            );
        }
        Ok(())
    }

    #[test]
    fn im2col_layout_and_col2im_adjoint() -> Result<()> {
        let dev = Device::Cpu;
        // 1 x 1 x 2 x 3 input, 2x2 kernel, padding 1 on the width only.
        let x = Tensor::new(&[[[[1f64, 2.0, 3.0], [4.0, 5.0, 6.0]]]], &dev)?;
        let cols = unfold(
            &x,
            Geometry {
                kh: 2,
                kw: 2,
                sh: 1,
                sw: 1,
                ph: 0,
                pw: 1,
            },
        )?;
        let want = vec![
            vec![0.0, 1.0, 2.0, 3.0], // (i, j) = (0, 0)
            vec![1.0, 2.0, 3.0, 0.0], // (0, 1)
            vec![0.0, 4.0, 5.0, 6.0], // (1, 0)
            vec![4.0, 5.0, 6.0, 0.0], // (1, 1)
        ];
        assert_eq!(cols.to_vec2::<f64>()?, want);
        // <im2col(x), y> = <x, col2im(y)>
        for (n, &(shape, _, k, s, p)) in CONFIGS.iter().enumerate() {
            let mut rng = TestRng::new(100 + n as u64);
            let x = randn(
                &mut rng,
                &[1, shape[1], shape[2], shape[3]],
                DType::F64,
                &dev,
            )?;
            let g = Geometry {
                kh: k.0,
                kw: k.1,
                sh: s.0,
                sw: s.1,
                ph: p.0,
                pw: p.1,
            };
            let cols = unfold(&x, g)?;
            let y = randn(&mut rng, cols.dims(), DType::F64, &dev)?;
            let (ho, wo) = g.out_size(shape[2], shape[3])?;
            let cs = ConvShape {
                b: 1,
                c: shape[1],
                h: shape[2],
                w: shape[3],
                o: 0,
                ho,
                wo,
            };
            let mut back = vec![0f64; x.elem_count()];
            g.fold_image(&cs, &y.flatten_all()?.to_vec1::<f64>()?, &mut back);
            let lhs = cols.mul(&y)?.sum_all()?.to_scalar::<f64>()?;
            let rhs = x
                .flatten_all()?
                .mul(&Tensor::new(back, &dev)?)?
                .sum_all()?
                .to_scalar::<f64>()?;
            assert!(
                (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
                "config {n}: {lhs} vs {rhs}"
            );
        }
        Ok(())
    }

    /// The direct kernels (f32, AVX-512) against the im2col path in f64, which the other tests
    /// check against candle and finite differences: forward and all three gradients, on shapes
    /// with odd sizes, 1-D and non-square kernels, no padding and padding of 2, odd channel
    /// counts, output channels that are and are not multiples of 16 (the weight gradient's direct
    /// kernel needs them), and the batch independence of each image's output.
    #[test]
    fn direct_kernels_match_im2col() -> Result<()> {
        if !direct::available() {
            eprintln!("skipped: this CPU has no AVX-512F, the direct kernels never run");
            return Ok(());
        }
        let dev = Device::Cpu;
        let configs: [Config; 8] = [
            ([3, 5, 9, 7], 16, (3, 3), (1, 1), (1, 1)),
            ([2, 3, 8, 8], 32, (3, 3), (1, 1), (1, 1)),
            ([2, 7, 1, 37], 16, (1, 3), (1, 1), (0, 1)),
            ([2, 6, 3, 23], 64, (1, 3), (1, 1), (0, 1)),
            ([2, 4, 6, 5], 24, (3, 3), (1, 1), (1, 1)),
            ([2, 4, 7, 6], 16, (3, 3), (1, 1), (0, 0)),
            ([2, 17, 5, 4], 16, (3, 1), (1, 1), (1, 0)),
            ([2, 9, 4, 6], 8, (3, 3), (1, 1), (2, 1)),
        ];
        let apply = |x: &Tensor, w: &Tensor, b: &Tensor, g: Geometry, direct: bool| {
            x.apply_op3(
                w,
                b,
                Conv2d {
                    g,
                    direct,
                    bf16: false,
                },
            )
        };
        for (n, &(shape, cout, k, st, p)) in configs.iter().enumerate() {
            let g = Geometry {
                kh: k.0,
                kw: k.1,
                sh: st.0,
                sw: st.1,
                ph: p.0,
                pw: p.1,
            };
            let s = g.conv_shape(
                &Shape::from(shape.to_vec()),
                &Shape::from((cout, shape[1], k.0, k.1)),
            )?;
            assert!(
                g.direct_plan(&s, true, false).is_some(),
                "config {n} must take the direct path"
            );
            let mut rng = TestRng::new(500 + n as u64);
            let x64 = Var::from_tensor(&randn(&mut rng, &shape, DType::F64, &dev)?)?;
            let w64 = Var::from_tensor(&randn(
                &mut rng,
                &[cout, shape[1], k.0, k.1],
                DType::F64,
                &dev,
            )?)?;
            let b64 = Var::from_tensor(&randn(&mut rng, &[cout], DType::F64, &dev)?)?;
            let (x, w, b) = (
                Var::from_tensor(&x64.to_dtype(DType::F32)?)?,
                Var::from_tensor(&w64.to_dtype(DType::F32)?)?,
                Var::from_tensor(&b64.to_dtype(DType::F32)?)?,
            );
            let want = apply(x64.as_tensor(), w64.as_tensor(), b64.as_tensor(), g, false)?;
            let ours = apply(x.as_tensor(), w.as_tensor(), b.as_tensor(), g, true)?;
            let scale = values(&want)?.iter().fold(1f64, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&ours.to_dtype(DType::F64)?, &want)? < 1e-5 * scale,
                "config {n}: forward"
            );
            let first = apply(
                &x.as_tensor().narrow(0, 1, 1)?,
                w.as_tensor(),
                b.as_tensor(),
                g,
                true,
            )?;
            assert_eq!(
                values(&first)?,
                values(&ours.narrow(0, 1, 1)?)?,
                "config {n}: batch independence"
            );
            let r = randn(&mut rng, want.dims(), DType::F64, &dev)?;
            let g64 = want.mul(&r)?.sum_all()?.backward()?;
            let g32 = ours.mul(&r.to_dtype(DType::F32)?)?.sum_all()?.backward()?;
            for (v64, v32, name) in [
                (&x64, &x, "input"),
                (&w64, &w, "weight"),
                (&b64, &b, "bias"),
            ] {
                let (a, e) = (
                    g32.get(v32.as_tensor()).unwrap().to_dtype(DType::F64)?,
                    g64.get(v64.as_tensor()).unwrap(),
                );
                let scale = values(e)?.iter().fold(1f64, |m, v| m.max(v.abs()));
                let err = max_abs_diff(&a, e)?;
                assert!(
                    err < 1e-5 * scale,
                    "config {n}: {name} gradient off by {err} (scale {scale})"
                );
            }
        }
        Ok(())
    }

    /// Sequences laid side by side by the direct kernels (forward and input gradient, on one
    /// thread so that a batch of 9 runs as rows of 2, 2, 2, 2 and 1 sequences): each sequence's
    /// output and input gradient are those it has alone, bit for bit, and the weight gradients
    /// (the direct kernel for 16 outputs, sequences side by side through gemm for 24) match the
    /// f64 path.
    #[test]
    fn sequences_side_by_side_match_one_by_one() -> Result<()> {
        if !direct::available() {
            eprintln!("skipped: this CPU has no AVX-512F, the direct kernels never run");
            return Ok(());
        }
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(candle_core::Error::wrap)?;
        for (o, l) in [(16, 37), (24, 50)] {
            let mut rng = TestRng::new(900 + o as u64);
            let x = Var::from_tensor(&randn(&mut rng, &[9, 5, l], DType::F32, &dev)?)?;
            let w = Var::from_tensor(&randn(&mut rng, &[o, 5, 3], DType::F32, &dev)?)?;
            let b = Var::from_tensor(&randn(&mut rng, &[o], DType::F32, &dev)?)?;
            let r = randn(&mut rng, &[9, o, l], DType::F32, &dev)?;
            let run =
                |x: &Tensor, r: &Tensor| -> Result<(Tensor, candle_core::backprop::GradStore)> {
                    let y = pool.install(|| conv1d(x, w.as_tensor(), b.as_tensor(), 1, 1))?;
                    let grads = pool.install(|| y.mul(r)?.sum_all()?.backward())?;
                    Ok((y, grads))
                };
            let (all, grads) = run(x.as_tensor(), &r)?;
            let dx_all = grads.get(x.as_tensor()).unwrap();
            for i in 0..9 {
                let xi = Var::from_tensor(&x.as_tensor().narrow(0, i, 1)?)?;
                let (one, gi) = run(xi.as_tensor(), &r.narrow(0, i, 1)?)?;
                assert_eq!(
                    values(&one)?,
                    values(&all.narrow(0, i, 1)?)?,
                    "output of sequence {i} ({o} channels)"
                );
                assert_eq!(
                    values(gi.get(xi.as_tensor()).unwrap())?,
                    values(&dx_all.narrow(0, i, 1)?)?,
                    "input gradient of sequence {i}"
                );
            }
            let (x64, w64, b64) = (
                Var::from_tensor(&x.to_dtype(DType::F64)?)?,
                Var::from_tensor(&w.to_dtype(DType::F64)?)?,
                b.to_dtype(DType::F64)?,
            );
            let g = Geometry {
                kh: 1,
                kw: 3,
                sh: 1,
                sw: 1,
                ph: 0,
                pw: 1,
            };
            let want = x64
                .as_tensor()
                .unsqueeze(2)?
                .apply_op3(
                    &w64.as_tensor().unsqueeze(2)?,
                    &b64,
                    Conv2d {
                        g,
                        direct: false,
                        bf16: false,
                    },
                )?
                .squeeze(2)?;
            let g64 = want.mul(&r.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
            let (a, e) = (
                grads.get(w.as_tensor()).unwrap().to_dtype(DType::F64)?,
                g64.get(w64.as_tensor()).unwrap(),
            );
            let scale = values(e)?.iter().fold(1f64, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&a, e)? < 1e-5 * scale,
                "weight gradient ({o} channels)"
            );
        }
        Ok(())
    }

    /// The bfloat16 kernels (forward, input and weight gradients) against the f64 path on inputs
    /// rounded to bfloat16: only the f32 summation differs (1e-5 relative); the bias gradient is
    /// the float32 one, as are the input gradient of fewer than 8 input channels and the weight
    /// gradient of output channels not in sixteens (where the direct kernels do not run).
    /// Shapes: odd channel counts (a zero-padded last pair), 2-D, 1-D sequences side by side,
    /// 1x3 and 3x3 kernels.
    #[test]
    fn bf16_kernels_match_rounded_inputs() -> Result<()> {
        if !crate::bf16::available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return Ok(());
        }
        let dev = Device::Cpu;
        let round = |t: &Tensor| -> Result<Tensor> {
            let v: Vec<f32> = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(crate::bf16::round_bf16)
                .collect();
            Tensor::from_vec(v, t.shape(), t.device())
        };
        let configs: [Config; 5] = [
            ([2, 5, 9, 7], 16, (3, 3), (1, 1), (1, 1)),
            ([3, 8, 6, 6], 24, (3, 3), (1, 1), (1, 1)),
            ([9, 11, 1, 37], 16, (1, 3), (1, 1), (0, 1)),
            ([2, 9, 4, 6], 8, (3, 3), (1, 1), (2, 1)),
            ([3, 10, 5, 5], 16, (1, 1), (1, 1), (0, 0)),
        ];
        // One thread, so that the 9 sequences run side by side in rows of 2.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(candle_core::Error::wrap)?;
        pool.install(|| -> Result<()> {
            for (n, &(shape, cout, k, st, p)) in configs.iter().enumerate() {
                let g = Geometry {
                    kh: k.0,
                    kw: k.1,
                    sh: st.0,
                    sw: st.1,
                    ph: p.0,
                    pw: p.1,
                };
                let mut rng = TestRng::new(700 + n as u64);
                let x = Var::from_tensor(&randn(&mut rng, &shape, DType::F32, &dev)?)?;
                let w = Var::from_tensor(&randn(
                    &mut rng,
                    &[cout, shape[1], k.0, k.1],
                    DType::F32,
                    &dev,
                )?)?;
                let b = Var::from_tensor(&randn(&mut rng, &[cout], DType::F32, &dev)?)?;
                let ours = x.as_tensor().apply_op3(
                    w.as_tensor(),
                    b.as_tensor(),
                    Conv2d {
                        g,
                        direct: true,
                        bf16: true,
                    },
                )?;
                let f32_op = x.as_tensor().apply_op3(
                    w.as_tensor(),
                    b.as_tensor(),
                    Conv2d {
                        g,
                        direct: true,
                        bf16: false,
                    },
                )?;
                let (xr, wr) = (
                    Var::from_tensor(&round(x.as_tensor())?.to_dtype(DType::F64)?)?,
                    Var::from_tensor(&round(w.as_tensor())?.to_dtype(DType::F64)?)?,
                );
                let want = xr.as_tensor().apply_op3(
                    wr.as_tensor(),
                    &b.to_dtype(DType::F64)?,
                    Conv2d {
                        g,
                        direct: false,
                        bf16: false,
                    },
                )?;
                let scale = values(&want)?.iter().fold(1f64, |m, v| m.max(v.abs()));
                assert!(
                    max_abs_diff(&ours.to_dtype(DType::F64)?, &want)? < 1e-5 * scale,
                    "config {n}: forward"
                );
                let rel = max_abs_diff(&ours.to_dtype(DType::F64)?, &f32_op.to_dtype(DType::F64)?)?
                    / scale;
                assert!(
                    rel > 0.0 && rel < 3e-2,
                    "config {n}: bfloat16 against float32 off by {rel} (relative)"
                );
                let r = randn(&mut rng, want.dims(), DType::F32, &dev)?;
                let g_ours = ours.mul(&r)?.sum_all()?.backward()?;
                let g_f32 = f32_op.mul(&r)?.sum_all()?.backward()?;
                let g_want = want
                    .mul(&round(&r)?.to_dtype(DType::F64)?)?
                    .sum_all()?
                    .backward()?;
                let dx = g_ours.get(x.as_tensor()).unwrap();
                if shape[1] >= 8 {
                    let dx_want = g_want.get(xr.as_tensor()).unwrap();
                    let scale = values(dx_want)?.iter().fold(1f64, |m, v| m.max(v.abs()));
                    assert!(
                        max_abs_diff(&dx.to_dtype(DType::F64)?, dx_want)? < 1e-5 * scale,
                        "config {n}: input gradient"
                    );
                } else {
                    // Fewer than 8 input channels: the input gradient (a convolution with that many
                    // outputs) is not a direct one and stays float32.
                    assert_eq!(
                        values(dx)?,
                        values(g_f32.get(x.as_tensor()).unwrap())?,
                        "config {n}: float32 input gradient"
                    );
                }
                let dw = g_ours.get(w.as_tensor()).unwrap();
                if cout % 16 == 0 && k.0 * k.1 > 1 {
                    let dw_want = g_want.get(wr.as_tensor()).unwrap();
                    let scale = values(dw_want)?.iter().fold(1f64, |m, v| m.max(v.abs()));
                    assert!(
                        max_abs_diff(&dw.to_dtype(DType::F64)?, dw_want)? < 1e-5 * scale,
                        "config {n}: weight gradient"
                    );
                } else {
                    // The direct weight-gradient kernel needs output channels in sixteens and
                    // a 1x3, 3x1 or 3x3 kernel.
                    assert_eq!(
                        values(dw)?,
                        values(g_f32.get(w.as_tensor()).unwrap())?,
                        "config {n}: float32 weight gradient"
                    );
                }
                assert_eq!(
                    values(g_ours.get(b.as_tensor()).unwrap())?,
                    values(g_f32.get(b.as_tensor()).unwrap())?,
                    "config {n}: float32 bias gradient"
                );
            }
            Ok(())
        })
    }

    /// An input that tracks no gradient (data, not a variable) gets none, and the parameters'
    /// gradients are those they get when it does.
    #[test]
    fn untracked_inputs_get_no_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = TestRng::new(77);
        let x = randn(&mut rng, &[2, 3, 6, 5], DType::F32, &dev)?;
        let w = Var::from_tensor(&randn(&mut rng, &[16, 3, 3, 3], DType::F32, &dev)?)?;
        let b = Var::from_tensor(&randn(&mut rng, &[16], DType::F32, &dev)?)?;
        let r = randn(&mut rng, &[2, 16, 6, 5], DType::F32, &dev)?;
        let xv = Var::from_tensor(&x)?;
        let plain = conv2d(&x, w.as_tensor(), b.as_tensor(), (1, 1), (1, 1))?
            .mul(&r)?
            .sum_all()?
            .backward()?;
        let tracked = conv2d(xv.as_tensor(), w.as_tensor(), b.as_tensor(), (1, 1), (1, 1))?
            .mul(&r)?
            .sum_all()?
            .backward()?;
        assert!(plain.get(&x).is_none() && tracked.get(xv.as_tensor()).is_some());
        for v in [&w, &b] {
            assert_eq!(
                values(plain.get(v.as_tensor()).unwrap())?,
                values(tracked.get(v.as_tensor()).unwrap())?
            );
        }
        Ok(())
    }

    #[test]
    fn conv1d_is_the_height_one_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (stride, padding, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1)] {
            let mut rng = TestRng::new(31 + stride as u64);
            let x = Var::from_tensor(&randn(&mut rng, &[3, 4, 9], DType::F64, &dev)?)?;
            let w = Var::from_tensor(&randn(&mut rng, &[5, 4, k], DType::F64, &dev)?)?;
            let b = Var::from_tensor(&randn(&mut rng, &[5], DType::F64, &dev)?)?;
            let ours = conv1d(x.as_tensor(), w.as_tensor(), b.as_tensor(), stride, padding)?;
            let x2 = x.as_tensor().unsqueeze(2)?;
            let want = conv2d(
                &x2,
                &w.as_tensor().unsqueeze(2)?,
                b.as_tensor(),
                (1, stride),
                (0, padding),
            )?
            .squeeze(2)?;
            assert_eq!(ours.dims(), want.dims());
            assert_eq!(values(&ours)?, values(&want)?);
            let r = randn(&mut rng, ours.dims(), DType::F64, &dev)?;
            let (g1, g2) = (
                ours.mul(&r)?.sum_all()?.backward()?,
                want.mul(&r)?.sum_all()?.backward()?,
            );
            for v in [&x, &w, &b] {
                assert_eq!(
                    values(g1.get(v.as_tensor()).unwrap())?,
                    values(g2.get(v.as_tensor()).unwrap())?
                );
            }
        }
        Ok(())
    }

    #[test]
    fn outputs_do_not_depend_on_the_batch() -> Result<()> {
        // An image's output is the same alone or in a batch, bit for bit (a small image in one
        // tile, a large one in several).
        let dev = Device::Cpu;
        for (shape, o) in [([5, 3, 6, 5], 4), ([3, 16, 40, 40], 8)] {
            let mut rng = TestRng::new(21);
            let x = randn(&mut rng, &shape, DType::F32, &dev)?;
            let w = randn(&mut rng, &[o, shape[1], 3, 3], DType::F32, &dev)?;
            let b = randn(&mut rng, &[o], DType::F32, &dev)?;
            let all = conv2d(&x, &w, &b, (1, 1), (1, 1))?;
            for i in 0..shape[0] {
                let one = conv2d(&x.narrow(0, i, 1)?, &w, &b, (1, 1), (1, 1))?;
                assert_eq!(
                    values(&one)?,
                    values(&all.narrow(0, i, 1)?)?,
                    "image {i} of {shape:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for (n, &(shape, cout, k, s, p)) in CONFIGS.iter().enumerate() {
            let mut rng = TestRng::new(200 + n as u64);
            let x = Var::from_tensor(&randn(&mut rng, &shape, DType::F64, &dev)?)?;
            let w = Var::from_tensor(&randn(
                &mut rng,
                &[cout, shape[1], k.0, k.1],
                DType::F64,
                &dev,
            )?)?;
            let bias = Var::from_tensor(&randn(&mut rng, &[cout], DType::F64, &dev)?)?;
            let y = conv2d(x.as_tensor(), w.as_tensor(), bias.as_tensor(), s, p)?;
            let r = randn(&mut rng, y.dims(), DType::F64, &dev)?;
            let loss_t = || {
                conv2d(x.as_tensor(), w.as_tensor(), bias.as_tensor(), s, p)?
                    .mul(&r)?
                    .sum_all()
            };
            let loss = || loss_t()?.to_scalar::<f64>();
            let grads = loss_t()?.backward()?;
            for (name, var) in [("input", &x), ("weight", &w), ("bias", &bias)] {
                let analytic = values(grads.get(var.as_tensor()).unwrap())?;
                let all: Vec<usize> = (0..var.elem_count()).collect();
                let err = rel_err(&analytic, &numeric_grad(var, &all, &loss)?);
                assert!(err < 1e-6, "config {n} {name}: relative error {err}");
            }
        }
        Ok(())
    }
}
