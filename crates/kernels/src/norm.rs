//! Fused GroupNorm and LayerNorm, with an optional per-channel shift before and SiLU after.
//!
//! candle_nn's `GroupNorm` followed by `.silu()` is a dozen element-wise ops, each a pass over
//! memory into a fresh buffer, and its autograd backward about twice as many; on the CPU they
//! were a large share of the UNet's training step. Here a custom op normalises each (row, group)
//! block in a few cache-resident passes, the blocks in parallel with rayon, and its backward is
//! a second custom op that returns the gradients of the input, weight, bias and shift together.
//!
//! The kernel sees the input as `[rows, channels, spatial]` with the channels split into
//! `groups` equal groups; the statistics are per (row, group) block of `channels / groups *
//! spatial` contiguous elements, and the affine weight and bias are per channel:
//! - GroupNorm of `[B, C, ...]`: rows `B`, channels `C`, spatial the product of the rest;
//! - LayerNorm of `[..., H]`: rows the product of the leading axes, channels `H`, spatial 1, one
//!   group.
//!
//! The fused path covers f32 and f64 on the CPU; other devices and dtypes run the same math as a
//! composition of candle ops (`composite`).

use crate::machinery::{
    contiguous, dispatch, output_vec, sum_by, sum_zip, unpack, wide_fn, Float, Stash,
};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

/// How the kernel reads its input: `[rows, channels, spatial]`, channels in `groups` groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    rows: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
}

impl Geometry {
    fn len(&self) -> usize {
        self.rows * self.channels * self.spatial
    }

    /// Channels per group.
    fn group_channels(&self) -> usize {
        self.channels / self.groups
    }

    /// Elements per (row, group) block.
    fn block_len(&self) -> usize {
        self.group_channels() * self.spatial
    }

    /// The fewest blocks a rayon task takes, so that small blocks (LayerNorm rows) are batched
    /// into tasks of a few thousand elements.
    fn min_blocks_per_task(&self) -> usize {
        (4096 / self.block_len().max(1)).max(1)
    }
}

/// Everything the forward and backward kernels need besides the tensors.
#[derive(Clone, Copy, Debug)]
struct Spec {
    geo: Geometry,
    eps: f64,
    silu: bool,
    /// Whether the packed parameters end with a `[rows, channels]` shift.
    shift: bool,
}

impl Spec {
    /// Length of the packed parameters `[weight (C), bias (C), shift (rows * C) if any]`.
    fn params_len(&self) -> usize {
        let c = self.geo.channels;
        2 * c + if self.shift { self.geo.rows * c } else { 0 }
    }

    /// The weight, bias and (if any) shift slices of the packed parameters for block `i`.
    fn block_params<'a, T>(
        &self,
        params: &'a [T],
        i: usize,
    ) -> (&'a [T], &'a [T], Option<&'a [T]>) {
        let (c, g) = (self.geo.channels, self.geo.groups);
        let cg = self.geo.group_channels();
        let (row, first) = (i / g, (i % g) * cg);
        let weight = &params[first..first + cg];
        let bias = &params[c + first..c + first + cg];
        let shift = self.shift.then(|| &params[2 * c + row * c + first..][..cg]);
        (weight, bias, shift)
    }

    /// Checks the storages' sizes against the geometry and returns their contiguous slices.
    fn slices<'a, T>(
        &self,
        x: (&'a [T], &Layout),
        params: (&'a [T], &Layout),
        op: &str,
    ) -> Result<(&'a [T], &'a [T])> {
        let x = contiguous(x.0, x.1, op)?;
        let params = contiguous(params.0, params.1, op)?;
        if x.len() != self.geo.len() || params.len() != self.params_len() {
            bail!(
                "{op}: input of {} elements and {} packed parameters do not fit {:?}",
                x.len(),
                params.len(),
                self
            );
        }
        Ok((x, params))
    }
}

/// Mean and `1 / sqrt(var + eps)` of a block `x + shift` (one shift per channel of `spatial`
/// elements), by two passes (sums as in [`sum_zip`]).
#[inline(always)]
fn block_stats<T: Float>(x: &[T], shift: Option<&[T]>, spatial: usize, eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let (mean, sq) = match shift {
        None => {
            let mean = sum_by(x, |v| v) / n;
            let m = T::from_f64(mean);
            (mean, sum_by(x, |v| (v - m) * (v - m)))
        }
        Some(shift) => {
            // Plain loops over the channels (an iterator chain's `fold` would not be inlined
            // into the AVX-512 copy of the block functions).
            let channels = x.len() / spatial;
            let mut sum = 0.0;
            for c in 0..channels {
                sum += sum_by(&x[c * spatial..][..spatial], |v| v)
                    + shift[c].to_f64() * spatial as f64;
            }
            let mean = sum / n;
            let mut sq = 0.0;
            for c in 0..channels {
                let d = T::from_f64(shift[c].to_f64() - mean);
                sq += sum_by(&x[c * spatial..][..spatial], |v| (v + d) * (v + d));
            }
            (mean, sq)
        }
    };
    (mean, 1.0 / (sq / n + eps).sqrt())
}

/// `sigmoid(y)`.
#[inline(always)]
fn sigmoid<T: Float>(y: T) -> T {
    let one = T::ONE;
    one / (one + (-y).exp())
}

/// `silu'(y) = sigmoid(y) (1 + y (1 - sigmoid(y)))`.
#[inline(always)]
fn silu_grad<T: Float>(y: T) -> T {
    let sig = sigmoid(y);
    sig * (T::ONE + y * (T::ONE - sig))
}

/// `z = x + shift` (or `x`) into `z`, for blocks of one element per channel.
#[inline(always)]
fn shifted<T: Float>(x: &[T], shift: Option<&[T]>, z: &mut [T]) {
    match shift {
        Some(shift) => {
            let (x, shift) = (&x[..z.len()], &shift[..z.len()]);
            for i in 0..z.len() {
                z[i] = x[i] + shift[i];
            }
        }
        None => z.copy_from_slice(x),
    }
}

wide_fn! {
    /// [`forward_block`], 16 lanes wide where the CPU allows.
    fn forward_block_wide<T: Float>(spec: &Spec, x: &[T], weight: &[T], bias: &[T], shift: Option<&[T]>, out: &mut [T]) -> (f64, f64) = forward_block
}

wide_fn! {
    /// [`backward_block`], 16 lanes wide where the CPU allows.
    #[allow(clippy::too_many_arguments)]
    fn backward_block_wide<T: Float>(spec: &Spec, x: &[T], weight: &[T], bias: &[T], shift: Option<&[T]>, dout: &[T], dx: &mut [T], grads: ParamGrads, scratch: &mut [T], stats: Option<(f64, f64)>) -> () = backward_block
}

/// Normalises one block: `out = silu?((x + shift - mean) * rstd * weight + bias)`; returns the
/// block's `(mean, rstd)`.
#[inline(always)]
fn forward_block<T: Float>(
    spec: &Spec,
    x: &[T],
    weight: &[T],
    bias: &[T],
    shift: Option<&[T]>,
    out: &mut [T],
) -> (f64, f64) {
    let s = spec.geo.spatial;
    if s == 1 {
        // One element per channel (LayerNorm): vectorise over the channels. (Index loops: an
        // iterator zip's `fold` is not inlined into the AVX-512 copy of this function.)
        shifted(x, shift, out);
        let (mean, rstd) = block_stats(out, None, 1, spec.eps);
        let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
        let (weight, bias) = (&weight[..out.len()], &bias[..out.len()]);
        for c in 0..out.len() {
            out[c] = (out[c] - m) * r * weight[c] + bias[c];
        }
        if spec.silu {
            out.iter_mut().for_each(|o| *o = *o * sigmoid(*o));
        }
        return (mean, rstd);
    }
    let (mean, rstd) = block_stats(x, shift, s, spec.eps);
    for (c, (xc, oc)) in x.chunks_exact(s).zip(out.chunks_exact_mut(s)).enumerate() {
        let d = T::from_f64(shift.map_or(0.0, |sh| sh[c].to_f64()) - mean);
        let a = T::from_f64(rstd * weight[c].to_f64());
        let b = bias[c];
        for (o, &v) in oc.iter_mut().zip(xc) {
            *o = (v + d) * a + b;
        }
    }
    // SiLU over the whole block at once: per channel, short rows (1-D UNets: 50 to 200
    // positions) would leave each row's tail to scalar code.
    if spec.silu {
        out.iter_mut().for_each(|o| *o = *o * sigmoid(*o));
    }
    (mean, rstd)
}

/// Where [`backward_block`] puts the parameter gradients of one block's channels: it adds
/// `sum dy * xhat` and `sum dy` per channel to `weight` and `bias` and sets `shift` to `sum dz`.
struct ParamGrads<'a> {
    weight: &'a mut [f64],
    bias: &'a mut [f64],
    shift: &'a mut [f64],
}

/// The gradients of one block. With `z = x + shift`, `xhat = (z - mean) * rstd`,
/// `y = xhat * weight + bias` and `out = silu?(y)`, given `dout` it writes `dz` (which is `dx`)
/// into `dx` and the parameter gradients into `grads`; `scratch` is a buffer of the block's size.
/// `stats` are the block's `(mean, rstd)` as the forward computed them, if it kept them
/// (otherwise they are computed again, to the same values).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_block<T: Float>(
    spec: &Spec,
    x: &[T],
    weight: &[T],
    bias: &[T],
    shift: Option<&[T]>,
    dout: &[T],
    dx: &mut [T],
    grads: ParamGrads,
    scratch: &mut [T],
    stats: Option<(f64, f64)>,
) {
    let s = spec.geo.spatial;
    let n = x.len() as f64;
    if s == 1 {
        // One element per channel (LayerNorm): vectorise over the channels.
        let xhat = scratch;
        shifted(x, shift, xhat);
        let (mean, rstd) = stats.unwrap_or_else(|| block_stats(xhat, None, 1, spec.eps));
        let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
        let len = dx.len();
        let (xhat, dout, weight, bias) =
            (&mut xhat[..len], &dout[..len], &weight[..len], &bias[..len]);
        let (gw, gb) = (&mut grads.weight[..len], &mut grads.bias[..len]);
        xhat.iter_mut().for_each(|v| *v = (*v - m) * r);
        // dx holds dxhat = dy * weight for now.
        for c in 0..len {
            let (xh, w, g) = (xhat[c], weight[c], dout[c]);
            let dy = if spec.silu {
                g * silu_grad(xh * w + bias[c])
            } else {
                g
            };
            gw[c] += (dy * xh).to_f64();
            gb[c] += dy.to_f64();
            dx[c] = dy * w;
        }
        let mean_dxhat = T::from_f64(sum_by(dx, |v| v) / n);
        let mean_dxhat_xhat = T::from_f64(sum_zip(dx, xhat, |d, xh| d * xh) / n);
        for c in 0..len {
            dx[c] = r * (dx[c] - mean_dxhat - xhat[c] * mean_dxhat_xhat);
        }
        if spec.shift {
            let gs = &mut grads.shift[..len];
            for c in 0..len {
                gs[c] = dx[c].to_f64();
            }
        }
        return;
    }
    let cg = weight.len();
    let (mean, rstd) = stats.unwrap_or_else(|| block_stats(x, shift, s, spec.eps));
    let offset = |c: usize| T::from_f64(shift.map_or(0.0, |sh| sh[c].to_f64()) - mean);

    // Pass 1: dy (stored in dx for now) and its per-channel sums; with dxhat = dy * weight,
    // the block means of dxhat and dxhat * xhat follow from them.
    let (mut mean_dxhat, mut mean_dxhat_xhat) = (0.0, 0.0);
    if spec.silu {
        // y per channel, then dy = dout * silu'(y) over the whole block (see forward_block).
        for c in 0..cg {
            let (xc, yc) = (&x[c * s..][..s], &mut dx[c * s..][..s]);
            let (d, a, b) = (offset(c), T::from_f64(rstd * weight[c].to_f64()), bias[c]);
            for (y, &v) in yc.iter_mut().zip(xc) {
                *y = (v + d) * a + b;
            }
        }
        for (dy, &g) in dx.iter_mut().zip(dout) {
            *dy = g * silu_grad(*dy);
        }
    } else {
        dx.copy_from_slice(dout);
    }
    for c in 0..cg {
        let (xc, dyc) = (&x[c * s..][..s], &dx[c * s..][..s]);
        let d = offset(c);
        let sum_dy = sum_by(dyc, |v| v);
        let sum_dy_xhat = sum_zip(dyc, xc, |dy, v| dy * (v + d)) * rstd;
        grads.weight[c] += sum_dy_xhat;
        grads.bias[c] += sum_dy;
        let w = weight[c].to_f64();
        mean_dxhat += w * sum_dy;
        mean_dxhat_xhat += w * sum_dy_xhat;
    }
    mean_dxhat /= n;
    mean_dxhat_xhat /= n;

    // Pass 2: dz = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    //            = a * dy + k * (z - mean) + e.
    let k = T::from_f64(-rstd * rstd * mean_dxhat_xhat);
    let e = T::from_f64(-rstd * mean_dxhat);
    for c in 0..cg {
        let (xc, dzc) = (&x[c * s..][..s], &mut dx[c * s..][..s]);
        let (d, a) = (offset(c), T::from_f64(rstd * weight[c].to_f64()));
        for (dz, &v) in dzc.iter_mut().zip(xc) {
            *dz = a * *dz + k * (v + d) + e;
        }
        if spec.shift {
            grads.shift[c] = sum_by(dzc, |v| v);
        }
    }
}

/// Per-block `(mean, rstd)` the forward keeps for the backward when its inputs are tracked.
type Stats = Vec<(f64, f64)>;

/// The forward custom op: `(x, [weight, bias, shift?])` to the normalised `x`. With `stash`, it
/// keeps every block's statistics for the first backward (a second backward recomputes them).
#[derive(Debug)]
struct NormFwd {
    spec: Spec,
    stash: Stash<Stats>,
}

impl NormFwd {
    fn run<T: Float>(&self, x: (&[T], &Layout), params: (&[T], &Layout)) -> Result<Vec<T>> {
        let spec = &self.spec;
        let (x, params) = spec.slices(x, params, "fused-norm")?;
        let mut out = output_vec(x.len());
        let len = spec.geo.block_len();
        let mut stats = vec![(0.0, 0.0); x.len().checked_div(len).unwrap_or(0)];
        if len > 0 {
            out.par_chunks_mut(len)
                .zip(x.par_chunks(len))
                .zip(stats.par_iter_mut())
                .enumerate()
                .with_min_len(spec.geo.min_blocks_per_task())
                .for_each(|(i, ((out, x), st))| {
                    let (w, b, shift) = spec.block_params(params, i);
                    *st = forward_block_wide(spec, x, w, b, shift, out);
                });
        }
        self.stash.put(stats);
        Ok(out)
    }
}

impl CustomOp2 for NormFwd {
    fn name(&self) -> &'static str {
        "fused-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("norm (forward)");
        dispatch!("fused-norm", (s1 => x, s2 => p), self.run((x, l1), (p, l2)).map(|v| (v, l1.shape().clone())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The kept statistics move to the backward op (a second backward recomputes them).
        let stats = self.stash.take();
        let packed = x.apply_op3_no_bwd(
            params,
            &grad.contiguous()?,
            &NormBwd {
                spec: self.spec,
                stats,
            },
        )?;
        let mut grads = unpack(&packed, &[x, params])?.into_iter();
        Ok((grads.next(), grads.next()))
    }
}

/// The backward custom op: `(x, [weight, bias, shift?], dout)` to the flat
/// `[dx, dweight, dbias, dshift?]`, laid out as the input followed by the packed parameters;
/// `stats` are the forward's per-block statistics where it kept them.
#[derive(Debug)]
struct NormBwd {
    spec: Spec,
    stats: Option<Stats>,
}

impl NormBwd {
    fn run<T: Float>(
        &self,
        x: (&[T], &Layout),
        params: (&[T], &Layout),
        dout: (&[T], &Layout),
    ) -> Result<Vec<T>> {
        let spec = &self.spec;
        let geo = &spec.geo;
        let (x, params) = spec.slices(x, params, "fused-norm-backward")?;
        let dout = contiguous(dout.0, dout.1, "fused-norm-backward")?;
        if dout.len() != x.len() {
            bail!(
                "fused-norm-backward: gradient of {} elements for an input of {}",
                dout.len(),
                x.len()
            );
        }
        let (len, cg, c) = (geo.block_len(), geo.group_channels(), geo.channels);
        let mut out = output_vec(x.len() + spec.params_len());
        if len == 0 || cg == 0 {
            return Ok(out);
        }
        // Blocks go to tasks in fixed groups (a function of the shape only), each task adds its
        // blocks' weight and bias gradients into partial sums of its own, and the partials are
        // added in task order: the result does not depend on the threads' schedule.
        let per_task = geo.min_blocks_per_task();
        let shift_len = if spec.shift { per_task * cg } else { 0 };
        let part_len = 2 * c + shift_len;
        let tasks = (geo.rows * geo.groups).div_ceil(per_task);
        let stats = self
            .stats
            .as_deref()
            .filter(|st| st.len() == geo.rows * geo.groups);
        let mut partials = vec![0.0f64; tasks * part_len];
        let (dx, dparams) = out.split_at_mut(x.len());
        dx.par_chunks_mut(per_task * len)
            .zip(partials.par_chunks_mut(part_len))
            .enumerate()
            .for_each(|(task, (dx, part))| {
                let mut scratch = vec![T::default(); if geo.spatial == 1 { len } else { 0 }];
                let (wb, dshift) = part.split_at_mut(2 * c);
                let (dweight, dbias) = wb.split_at_mut(c);
                for (j, dx) in dx.chunks_mut(len).enumerate() {
                    let i = task * per_task + j;
                    let (w, b, shift) = spec.block_params(params, i);
                    let first = (i % geo.groups) * cg;
                    let grads = ParamGrads {
                        weight: &mut dweight[first..first + cg],
                        bias: &mut dbias[first..first + cg],
                        shift: if spec.shift {
                            &mut dshift[j * cg..][..cg]
                        } else {
                            &mut []
                        },
                    };
                    let at = i * len;
                    let st = stats.map(|st| st[i]);
                    backward_block_wide(
                        spec,
                        &x[at..at + len],
                        w,
                        b,
                        shift,
                        &dout[at..at + len],
                        dx,
                        grads,
                        &mut scratch,
                        st,
                    );
                }
            });
        let mut dweight = vec![0.0f64; 2 * c];
        for part in partials.chunks_exact(part_len) {
            dweight.iter_mut().zip(part).for_each(|(d, &p)| *d += p);
        }
        for (d, &v) in dparams.iter_mut().zip(&dweight) {
            *d = T::from_f64(v);
        }
        if spec.shift {
            // Block i's shift gradients are dshift[i * cg..][..cg], as the parameters' layout.
            let dshift = &mut dparams[2 * c..];
            for (task, part) in partials.chunks_exact(part_len).enumerate() {
                let at = task * per_task * cg;
                let n = shift_len.min(dshift.len() - at);
                for (d, &p) in dshift[at..at + n].iter_mut().zip(&part[2 * c..]) {
                    *d = T::from_f64(p);
                }
            }
        }
        Ok(out)
    }
}

impl CustomOp3 for NormBwd {
    fn name(&self) -> &'static str {
        "fused-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("norm (backward)");
        let len = l1.shape().elem_count() + self.spec.params_len();
        dispatch!("fused-norm-backward", (s1 => x, s2 => p, s3 => g), self.run((x, l1), (p, l2), (g, l3)).map(|v| (v, Shape::from(len))))
    }
}

/// Checks the parameters against the geometry and runs the fused op (f32/f64 on the CPU) or
/// [`composite`] (anything else).
fn normalize(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    shift: Option<&Tensor>,
    geo: Geometry,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let c = geo.channels;
    if weight.dims() != [c] || bias.dims() != [c] {
        bail!(
            "norm: input {:?} has {c} channels but weight is {:?} and bias {:?}",
            x.dims(),
            weight.dims(),
            bias.dims()
        );
    }
    if let Some(shift) = shift {
        if shift.dims() != [geo.rows, c] {
            bail!(
                "norm: shift must be [{}, {c}] for input {:?}, got {:?}",
                geo.rows,
                x.dims(),
                shift.dims()
            );
        }
    }
    let dtype = x.dtype();
    if weight.dtype() != dtype || bias.dtype() != dtype || shift.is_some_and(|s| s.dtype() != dtype)
    {
        bail!("norm: input, weight, bias and shift must share a dtype, input is {dtype:?}");
    }
    if !crate::switches::use_fused(x) {
        return composite(x, weight, bias, shift, geo, eps, silu);
    }
    let mut parts = vec![weight.clone(), bias.clone()];
    if let Some(shift) = shift {
        parts.push(shift.flatten_all()?);
    }
    let params = Tensor::cat(&parts, 0)?;
    let spec = Spec {
        geo,
        eps,
        silu,
        shift: shift.is_some(),
    };
    let stash = Stash::for_inputs(&[x, &params]);
    x.contiguous()?.apply_op2(&params, NormFwd { spec, stash })
}

/// The same normalisation as a composition of candle ops (in f32 for f16 and bf16 inputs):
/// the fallback for other devices and dtypes.
fn composite(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    shift: Option<&Tensor>,
    geo: Geometry,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let Geometry {
        rows,
        channels: c,
        spatial,
        groups,
    } = geo;
    let dtype = x.dtype();
    let internal = match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let per_channel = |t: &Tensor, rows: usize| t.to_dtype(internal)?.reshape((rows, c, 1));
    let mut z = x.to_dtype(internal)?.reshape((rows, c, spatial))?;
    if let Some(shift) = shift {
        z = z.broadcast_add(&per_channel(shift, rows)?)?;
    }
    let z = z.reshape((rows, groups, geo.block_len()))?;
    let centered = z.broadcast_sub(&z.mean_keepdim(2)?)?;
    let var = centered.sqr()?.mean_keepdim(2)?;
    let xhat = centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((rows, c, spatial))?;
    let y = xhat
        .broadcast_mul(&per_channel(weight, 1)?)?
        .broadcast_add(&per_channel(bias, 1)?)?;
    let y = if silu { y.silu()? } else { y };
    y.to_dtype(dtype)?.reshape(x.shape())
}

/// GroupNorm of `x: [B, C, ...]` over `groups` groups of `C / groups` channels (statistics per
/// batch row and group over its channels and all positions, biased variance), then the
/// per-channel affine `weight` and `bias` (`[C]`). With `shift: [B, C]`, normalises
/// `x + shift` (broadcast over positions) instead; with `silu`, applies SiLU to the result.
/// Differentiable in all tensors.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    shift: Option<&Tensor>,
    silu: bool,
) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!("group_norm: input must be [B, C, ...], got {:?}", x.dims());
    }
    let (rows, channels) = (x.dim(0)?, x.dim(1)?);
    if groups == 0 || !channels.is_multiple_of(groups) {
        bail!(
            "group_norm: input {:?} has {channels} channels, not divisible into {groups} groups",
            x.dims()
        );
    }
    let spatial = x.dims()[2..].iter().product();
    normalize(
        x,
        weight,
        bias,
        shift,
        Geometry {
            rows,
            channels,
            spatial,
            groups,
        },
        eps,
        silu,
    )
}

/// LayerNorm of `x: [..., H]` over its last axis (biased variance), then the per-element affine
/// `weight` and `bias` (`[H]`). Differentiable in all tensors.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let Some(&channels) = x.dims().last() else {
        bail!("layer_norm: input must have at least one axis, got a scalar");
    };
    let rows = x.dims()[..x.rank() - 1].iter().product();
    normalize(
        x,
        weight,
        bias,
        None,
        Geometry {
            rows,
            channels,
            spatial: 1,
            groups: 1,
        },
        eps,
        false,
    )
}

/// A GroupNorm layer (parameters `weight`, initialised to ones, and `bias`, to zeros: the names
/// and initialisation of `candle_nn::group_norm`), applied by [`group_norm`].
#[derive(Clone, Debug)]
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl Norm {
    /// Creates the parameters for `channels` channels in `groups` groups.
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            bail!("GroupNorm: {channels} channels are not divisible into {groups} groups");
        }
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            groups,
            eps,
        })
    }

    /// Normalises `x: [B, C, ...]`, after adding `shift: [B, C]` if given and followed by SiLU
    /// if `silu`, see [`group_norm`].
    pub fn forward(&self, x: &Tensor, shift: Option<&Tensor>, silu: bool) -> Result<Tensor> {
        group_norm(
            x,
            &self.weight,
            &self.bias,
            self.groups,
            self.eps,
            shift,
            silu,
        )
    }
}

/// A LayerNorm over the last axis (parameters `weight`, ones, and `bias`, zeros, of length `H`),
/// applied by [`layer_norm`]. Unlike `candle_nn::LayerNorm`, whose fused op has no backward pass
/// in candle 0.11.1 (gradients silently stop there), it trains.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Creates the parameters for `dim` features.
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    /// Normalises `x: [..., dim]` over its last axis.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{numeric_grad, randn, rel_err, values, TestRng};
    use candle_core::{Device, Var};
    use candle_nn::{Module, VarMap};
    use std::collections::BTreeMap;

    const EPS: f64 = 1e-5;

    /// (input shape, groups): 1-D, 2-D, odd sizes (C = 6, G = 3, 5 positions, B = 3), one
    /// group, one channel per group.
    const GROUP_CASES: [(&[usize], usize); 6] = [
        (&[2, 4, 5], 2),
        (&[2, 4, 3, 3], 2),
        (&[3, 6, 5], 3),
        (&[3, 6, 1, 5], 3),
        (&[2, 6, 7], 1),
        (&[1, 4, 2, 3], 4),
    ];

    /// Every (shift, silu) combination.
    const FLAGS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

    /// Random input (with a non-zero mean), weight, bias and shift for a GroupNorm of `shape`.
    struct Inputs {
        x: Var,
        weight: Var,
        bias: Var,
        shift: Var,
    }

    impl Inputs {
        fn new(shape: &[usize], dtype: DType, seed: u64) -> Result<Self> {
            let (mut rng, dev) = (TestRng::new(seed), Device::Cpu);
            let (b, c) = (shape[0], shape[1]);
            Ok(Self {
                x: Var::from_tensor(&randn(&mut rng, shape, dtype, &dev)?.affine(1.5, 0.7)?)?,
                weight: Var::from_tensor(&randn(&mut rng, &[c], dtype, &dev)?.affine(0.5, 1.0)?)?,
                bias: Var::from_tensor(&randn(&mut rng, &[c], dtype, &dev)?)?,
                shift: Var::from_tensor(&randn(&mut rng, &[b, c], dtype, &dev)?)?,
            })
        }

        fn vars(&self, shift: bool) -> Vec<(&'static str, &Var)> {
            let mut vars = vec![
                ("x", &self.x),
                ("weight", &self.weight),
                ("bias", &self.bias),
            ];
            if shift {
                vars.push(("shift", &self.shift));
            }
            vars
        }

        fn fused(&self, groups: usize, shift: bool, silu: bool) -> Result<Tensor> {
            let s = shift.then(|| self.shift.as_tensor());
            group_norm(
                self.x.as_tensor(),
                self.weight.as_tensor(),
                self.bias.as_tensor(),
                groups,
                EPS,
                s,
                silu,
            )
        }

        /// candle_nn's GroupNorm of `x + shift` (broadcast over positions), then SiLU.
        fn reference(&self, groups: usize, shift: bool, silu: bool) -> Result<Tensor> {
            let x = self.x.as_tensor();
            let x = if shift {
                let mut dims = vec![1; x.rank()];
                dims[..2].copy_from_slice(&x.dims()[..2]);
                x.broadcast_add(&self.shift.as_tensor().reshape(dims)?)?
            } else {
                x.clone()
            };
            let (w, b) = (
                self.weight.as_tensor().clone(),
                self.bias.as_tensor().clone(),
            );
            let y = candle_nn::GroupNorm::new(w, b, x.dim(1)?, groups, EPS)?.forward(&x)?;
            if silu {
                y.silu()
            } else {
                Ok(y)
            }
        }
    }

    /// Largest |a - b| over max(1, largest |b|): relative for large values, absolute for small
    /// ones (a shift gradient is exactly zero with one channel per group and no SiLU).
    fn err(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        diff / b.iter().map(|y| y.abs()).fold(1.0, f64::max)
    }

    /// The gradients of `sum(f() * r)` for every var, and the loss closure for finite
    /// differences.
    fn grads_of(
        f: &dyn Fn() -> Result<Tensor>,
        r: &Tensor,
        vars: &[(&str, &Var)],
    ) -> Result<Vec<Vec<f64>>> {
        let grads = f()?.mul(r)?.sum_all()?.backward()?;
        vars.iter()
            .map(|(name, v)| {
                values(
                    grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("no gradient for {name}")),
                )
            })
            .collect()
    }

    /// A tensor equal to `t` but not contiguous (a narrow view of a wider one).
    fn strided(t: &Tensor) -> Result<Tensor> {
        let last = t.rank() - 1;
        let s = Tensor::cat(&[t, t], last)?.narrow(last, 0, t.dim(last)?)?;
        assert!(!s.is_contiguous());
        Ok(s)
    }

    #[test]
    fn forward_matches_candle_group_norm() -> Result<()> {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for (n, &(shape, groups)) in GROUP_CASES.iter().enumerate() {
                let inp = Inputs::new(shape, dtype, n as u64)?;
                for (shift, silu) in FLAGS {
                    let y = inp.fused(groups, shift, silu)?;
                    let e = err(&values(&y)?, &values(&inp.reference(groups, shift, silu)?)?);
                    assert!(
                        e < tol,
                        "{dtype:?} {shape:?} G{groups} shift {shift} silu {silu}: {e}"
                    );
                }
                // A strided input gives the same result.
                let (w, b) = (inp.weight.as_tensor(), inp.bias.as_tensor());
                let y = group_norm(&strided(inp.x.as_tensor())?, w, b, groups, EPS, None, true)?;
                assert_eq!(values(&y)?, values(&inp.fused(groups, false, true)?)?);
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_match_candle_autograd() -> Result<()> {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for (n, &(shape, groups)) in GROUP_CASES.iter().enumerate() {
                let inp = Inputs::new(shape, dtype, 10 + n as u64)?;
                let r = randn(&mut TestRng::new(20 + n as u64), shape, dtype, &Device::Cpu)?;
                for (shift, silu) in FLAGS {
                    let vars = inp.vars(shift);
                    let fused = grads_of(&|| inp.fused(groups, shift, silu), &r, &vars)?;
                    let want = grads_of(&|| inp.reference(groups, shift, silu), &r, &vars)?;
                    for ((name, _), (a, b)) in vars.iter().zip(fused.iter().zip(&want)) {
                        let e = err(a, b);
                        assert!(
                            e < tol,
                            "{dtype:?} {shape:?} G{groups} shift {shift} silu {silu} {name}: {e}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        for (n, &(shape, groups)) in GROUP_CASES[..4].iter().enumerate() {
            let inp = Inputs::new(shape, DType::F64, 30 + n as u64)?;
            let r = randn(
                &mut TestRng::new(40 + n as u64),
                shape,
                DType::F64,
                &Device::Cpu,
            )?;
            for (shift, silu) in FLAGS {
                let vars = inp.vars(shift);
                let f = || inp.fused(groups, shift, silu);
                let loss = || f()?.mul(&r)?.sum_all()?.to_scalar::<f64>();
                for ((name, var), analytic) in vars.iter().zip(grads_of(&f, &r, &vars)?) {
                    let all: Vec<usize> = (0..var.elem_count()).collect();
                    let e = rel_err(&analytic, &numeric_grad(var, &all, &loss)?);
                    assert!(
                        e < 1e-7,
                        "{shape:?} G{groups} shift {shift} silu {silu} {name}: {e}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn layer_norm_matches_candle_and_finite_differences() -> Result<()> {
        for (n, shape) in [&[5usize, 7][..], &[2, 3, 6], &[4, 1]]
            .into_iter()
            .enumerate()
        {
            let h = *shape.last().unwrap();
            // candle_nn's LayerNorm takes a fast path for contiguous inputs that computes in f32
            // and has no gradient; a strided input takes the composite (differentiable) path.
            for (dtype, tol, input) in [
                (DType::F32, 1e-5, "contiguous"),
                (DType::F64, 1e-12, "strided"),
            ] {
                let mut rng = TestRng::new(50 + n as u64);
                let x = Var::from_tensor(
                    &randn(&mut rng, shape, dtype, &Device::Cpu)?.affine(2.0, -1.0)?,
                )?;
                let w = Var::from_tensor(&randn(&mut rng, &[h], dtype, &Device::Cpu)?)?;
                let b = Var::from_tensor(&randn(&mut rng, &[h], dtype, &Device::Cpu)?)?;
                let r = randn(&mut rng, shape, dtype, &Device::Cpu)?;
                let fused = || layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), EPS);
                let reference = || {
                    let norm = candle_nn::LayerNorm::new(
                        w.as_tensor().clone(),
                        b.as_tensor().clone(),
                        EPS,
                    );
                    let x = if input == "strided" {
                        strided(x.as_tensor())?
                    } else {
                        x.as_tensor().clone()
                    };
                    norm.forward(&x)
                };
                let e = err(&values(&fused()?)?, &values(&reference()?)?);
                assert!(e < tol, "{dtype:?} {shape:?} forward: {e}");
                if dtype == DType::F64 {
                    let vars = [("x", &x), ("weight", &w), ("bias", &b)];
                    let got = grads_of(&fused, &r, &vars)?;
                    let want = grads_of(&reference, &r, &vars)?;
                    let loss = || fused()?.mul(&r)?.sum_all()?.to_scalar::<f64>();
                    for (((name, var), a), want) in vars.iter().zip(&got).zip(&want) {
                        let e = err(a, want);
                        assert!(e < tol, "{shape:?} {name} vs autograd: {e}");
                        let all: Vec<usize> = (0..var.elem_count()).collect();
                        let e = err(a, &numeric_grad(var, &all, &loss)?);
                        assert!(e < 1e-7, "{shape:?} {name} vs finite differences: {e}");
                    }
                }
            }
        }
        Ok(())
    }

    /// The composite fallback (used off the CPU and for other dtypes) agrees with the kernel,
    /// and f16 input goes through it.
    #[test]
    fn fallback_matches_fused() -> Result<()> {
        for (n, &(shape, groups)) in GROUP_CASES.iter().enumerate() {
            let inp = Inputs::new(shape, DType::F64, 60 + n as u64)?;
            let r = randn(
                &mut TestRng::new(70 + n as u64),
                shape,
                DType::F64,
                &Device::Cpu,
            )?;
            let (b, c) = (shape[0], shape[1]);
            let geo = Geometry {
                rows: b,
                channels: c,
                spatial: shape[2..].iter().product(),
                groups,
            };
            for (shift, silu) in FLAGS {
                let vars = inp.vars(shift);
                let composite = || {
                    let s = shift.then(|| inp.shift.as_tensor());
                    let (x, w, b) = (
                        inp.x.as_tensor(),
                        inp.weight.as_tensor(),
                        inp.bias.as_tensor(),
                    );
                    composite(x, w, b, s, geo, EPS, silu)
                };
                let e = err(
                    &values(&composite()?)?,
                    &values(&inp.fused(groups, shift, silu)?)?,
                );
                assert!(e < 1e-12, "{shape:?} forward: {e}");
                let got = grads_of(&|| inp.fused(groups, shift, silu), &r, &vars)?;
                for ((name, _), (a, want)) in vars
                    .iter()
                    .zip(got.iter().zip(&grads_of(&composite, &r, &vars)?))
                {
                    let e = err(a, want);
                    assert!(e < 1e-12, "{shape:?} shift {shift} silu {silu} {name}: {e}");
                }
            }
            // f16 runs the composite in f32.
            let half = |v: &Var| v.as_tensor().to_dtype(DType::F16);
            let y = group_norm(
                &half(&inp.x)?,
                &half(&inp.weight)?,
                &half(&inp.bias)?,
                groups,
                EPS,
                Some(&half(&inp.shift)?),
                true,
            )?;
            assert_eq!(y.dtype(), DType::F16);
            let e = err(&values(&y)?, &values(&inp.fused(groups, true, true)?)?);
            assert!(e < 1e-2, "{shape:?} f16: {e}");
        }
        Ok(())
    }

    /// The statistics the forward keeps for the backward are the ones the backward would compute:
    /// a first backward (kept statistics) and a second backward of the same graph (recomputed)
    /// agree bit for bit, for blocks of many positions (GroupNorm) and of one (the LayerNorm path).
    #[test]
    fn kept_statistics_match_recomputed() -> Result<()> {
        for (shape, groups) in [([3usize, 8, 5, 4], 4usize), ([6, 16, 1, 1], 1)] {
            let inp = Inputs::new(&shape, DType::F32, 90)?;
            let r = randn(&mut TestRng::new(91), &shape, DType::F32, &Device::Cpu)?;
            let vars = inp.vars(true);
            let loss = inp.fused(groups, true, true)?.mul(&r)?.sum_all()?;
            let (first, second) = (loss.backward()?, loss.backward()?);
            for (name, v) in &vars {
                let (a, b) = (
                    values(first.get(v.as_tensor()).unwrap())?,
                    values(second.get(v.as_tensor()).unwrap())?,
                );
                assert_eq!(
                    a, b,
                    "{shape:?} {name}: kept and recomputed statistics differ"
                );
            }
        }
        Ok(())
    }

    /// Forward and backward give bit-identical results on every run, whatever the threads do.
    #[test]
    fn deterministic() -> Result<()> {
        let shape = [4, 32, 16, 16];
        let inp = Inputs::new(&shape, DType::F32, 80)?;
        let r = randn(&mut TestRng::new(81), &shape, DType::F32, &Device::Cpu)?;
        let vars = inp.vars(true);
        let run = || -> Result<Vec<Vec<f64>>> {
            let mut out = vec![values(&inp.fused(8, true, true)?)?];
            out.extend(grads_of(&|| inp.fused(8, true, true), &r, &vars)?);
            Ok(out)
        };
        let first = run()?;
        for _ in 0..3 {
            assert!(run()? == first, "results differ between runs");
        }
        Ok(())
    }

    #[test]
    fn shape_errors_name_the_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 6, 5), DType::F32, &dev)?;
        let v = |n: usize| Tensor::ones(n, DType::F32, &dev);
        let message = |r: Result<Tensor>| r.unwrap_err().to_string();

        let e = message(group_norm(&x, &v(6)?, &v(6)?, 4, EPS, None, false));
        assert!(e.contains("[2, 6, 5]") && e.contains("4 groups"), "{e}");
        let e = message(group_norm(&x, &v(5)?, &v(6)?, 3, EPS, None, false));
        assert!(e.contains("6 channels") && e.contains("[5]"), "{e}");
        let e = message(group_norm(
            &x,
            &v(6)?,
            &v(6)?,
            3,
            EPS,
            Some(&Tensor::zeros((2, 5), DType::F32, &dev)?),
            false,
        ));
        assert!(
            e.contains("shift must be [2, 6]") && e.contains("[2, 5]"),
            "{e}"
        );
        let e = message(group_norm(&x, &v(6)?, &v(6)?, 3, EPS, Some(&v(6)?), true));
        assert!(e.contains("shift must be [2, 6]"), "{e}");
        let e = message(group_norm(&v(6)?, &v(6)?, &v(6)?, 3, EPS, None, false));
        assert!(e.contains("[B, C, ...]"), "{e}");
        let e = message(group_norm(
            &x,
            &v(6)?.to_dtype(DType::F64)?,
            &v(6)?,
            3,
            EPS,
            None,
            false,
        ));
        assert!(e.contains("dtype"), "{e}");
        let e = message(layer_norm(&x, &v(6)?, &v(6)?, EPS));
        assert!(e.contains("5 channels") && e.contains("[6]"), "{e}");
        let varmap = VarMap::new();
        assert!(Norm::new(
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
            4,
            6,
            EPS
        )
        .is_err());
        Ok(())
    }

    /// `Norm` creates the parameters candle_nn::group_norm would (names and values), so
    /// checkpoints written before the fused kernel still load.
    #[test]
    fn norm_layer_parameters_match_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let (ours, theirs) = (VarMap::new(), VarMap::new());
        let norm = Norm::new(
            VarBuilder::from_varmap(&ours, DType::F32, &dev).pp("norm1"),
            2,
            4,
            EPS,
        )?;
        let reference = candle_nn::group_norm(
            2,
            4,
            EPS,
            VarBuilder::from_varmap(&theirs, DType::F32, &dev).pp("norm1"),
        )?;
        // The variables by name, sorted.
        let tensors = |m: &VarMap| -> BTreeMap<String, Tensor> {
            m.data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect()
        };
        let (ours, theirs) = (tensors(&ours), tensors(&theirs));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            ["norm1.bias", "norm1.weight"]
        );
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        for (name, t) in &ours {
            assert_eq!(values(t)?, values(&theirs[name])?, "{name}");
        }
        let x = randn(&mut TestRng::new(1), &[2, 4, 3], DType::F32, &dev)?;
        let e = err(
            &values(&norm.forward(&x, None, false)?)?,
            &values(&reference.forward(&x)?)?,
        );
        assert!(e < 1e-6, "{e}");
        Ok(())
    }
}
