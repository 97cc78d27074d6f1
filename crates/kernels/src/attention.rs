//! Multi-head scaled dot-product self-attention as one CPU custom op, with a hand-written
//! backward pass.
//!
//! As candle ops, attention is a permute and copy of q, k and v into `[B, heads, L, d]`, two
//! batched matmuls, the scale, the optional relative-position term and key mask, softmax, and
//! the merge of the heads, each a pass over memory into a fresh buffer, and autograd runs about
//! twice as many in backward. Here one op reads the packed projections `[B, L, 3H]` (q, k and v
//! side by side, each `heads` blocks of `d = H / heads`) where they lie and writes the merged
//! context `[B, L, H]`; each batch row is one rayon task that runs its heads with gemm calls
//! on `L x L` score buffers. When its inputs take part in autograd, the forward keeps the
//! probabilities (`B * heads * L * L` values) for the backward pass, which returns the gradients
//! of the packed projections and of the relative-position table; without them (a second
//! backward through the same graph) it recomputes the probabilities from q and k.
//!
//! Relative positions are HuggingFace BERT's `relative_key` (FoldingDiff's choice): a learned
//! vector `E[l - r + max_len - 1]` per signed distance, dotted with the query and added to the
//! score of the pair (query `l`, key `r`). With the scale `s = 1 / sqrt(d)`:
//! `scores = s (q k^T + q E_(l-r)) + key_bias`, `p = softmax(scores)` over the keys, dropout
//! on `p` (multipliers the caller draws), `context = p v`.
//!
//! Other devices and dtypes (and [`crate::set_fused_kernels`]`(false)`) run the same math as candle
//! ops.

use crate::elementwise::softmax_last;
use crate::machinery::{
    contiguous, dispatch, matmul, matmul_strided, softmax_grad_row, softmax_row, unpack, Float,
    Mat, Stash,
};
use crate::relative::add_relative_scores;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// What the forward and backward kernels share besides the tensors.
#[derive(Clone, Debug)]
struct Spec {
    batch: usize,
    len: usize,
    heads: usize,
    head_dim: usize,
    scale: f64,
    /// Rows of the relative-position table (`2 max_len - 1`), if there is one.
    table_rows: Option<usize>,
    /// `[B, L]` additive key bias (0 for real keys, large negative for padding).
    key_bias: Option<Arc<[f32]>>,
    /// `[B, heads, L, L]` dropout multipliers on the probabilities (0 or `1 / (1 - p)`).
    keep: Option<Arc<[f32]>>,
}

impl Spec {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Row of the table where the `2L - 1` distances of a length-`L` sequence start: the pair
    /// (query `l`, key `r`) uses row `start + l - r + L - 1`.
    fn table_start(&self) -> usize {
        self.table_rows
            .map_or(0, |rows| rows.div_ceil(2) - self.len)
    }

    /// Checks the packed projections (and table) against the spec; their contiguous slices.
    fn slices<'a, T>(
        &self,
        qkv: (&'a [T], &Layout),
        table: (&'a [T], &Layout),
        op: &str,
    ) -> Result<(&'a [T], &'a [T])> {
        let qkv = contiguous(qkv.0, qkv.1, op)?;
        let table = contiguous(table.0, table.1, op)?;
        if qkv.len() != self.batch * self.len * 3 * self.hidden() {
            bail!(
                "{op}: {} packed projections do not fit {:?}",
                qkv.len(),
                self
            );
        }
        if let Some(rows) = self.table_rows {
            if table.len() != rows * self.head_dim {
                bail!(
                    "{op}: a relative-position table of {} elements does not fit {:?}",
                    table.len(),
                    self
                );
            }
        }
        Ok((qkv, table))
    }

    /// The probabilities of head `h` of one batch row into `p` (`L x L`): scores, relative
    /// term, key bias, softmax. `qkv` is the row's `[L, 3H]`, `rel` a `L x (2L - 1)` buffer.
    fn probabilities<T: Float>(
        &self,
        b: usize,
        h: usize,
        qkv: &[T],
        table: &[T],
        p: &mut [T],
        rel: &mut [T],
    ) {
        let (l, d, hid) = (self.len, self.head_dim, self.hidden());
        let q = Mat::strided(&qkv[h * d..], l, d, 3 * hid);
        let k = Mat::strided(&qkv[hid + h * d..], l, d, 3 * hid);
        matmul(p, q, k.t(), false);
        if self.table_rows.is_some() {
            let span = 2 * l - 1;
            let e = Mat::new(&table[self.table_start() * d..][..span * d], span, d);
            matmul(rel, q, e.t(), false);
            for (i, (row, rel)) in p
                .chunks_exact_mut(l)
                .zip(rel.chunks_exact(span))
                .enumerate()
            {
                // key j uses distance column i - j + L - 1: columns i + L - 1 down to i.
                let rel = &rel[i..i + l];
                for (s, &r) in row.iter_mut().zip(rel.iter().rev()) {
                    *s += r;
                }
            }
        }
        let scale = T::from_f64(self.scale);
        let bias = self.key_bias.as_ref().map(|kb| &kb[b * l..][..l]);
        for row in p.chunks_exact_mut(l) {
            match bias {
                Some(bias) => row
                    .iter_mut()
                    .zip(bias)
                    .for_each(|(s, &kb)| *s = *s * scale + T::from_f64(kb as f64)),
                None => row.iter_mut().for_each(|s| *s = *s * scale),
            }
            softmax_row(row);
        }
    }

    /// Head `h`'s dropout multipliers for batch row `b`, if any.
    fn keep_of(&self, b: usize, h: usize) -> Option<&[f32]> {
        let n = self.len * self.len;
        self.keep
            .as_ref()
            .map(|k| &k[(b * self.heads + h) * n..][..n])
    }
}

/// The probabilities after dropout: `p` itself without `keep`, else `p * keep` written into
/// `buf`.
fn dropped<'a, T: Float>(p: &'a [T], keep: Option<&[f32]>, buf: &'a mut [T]) -> &'a [T] {
    let Some(keep) = keep else { return p };
    for ((o, &p), &k) in buf.iter_mut().zip(p).zip(keep) {
        *o = p * T::from_f64(k as f64);
    }
    buf
}

/// `buf` cut into `rows` consecutive slices of `per_row` elements (empty ones when `per_row` is
/// 0), one per batch row, to zip with the rows of the other buffers.
fn per_row_slices<T>(buf: &mut [T], rows: usize, per_row: usize) -> Vec<&mut [T]> {
    if per_row == 0 {
        return (0..rows).map(|_| <&mut [T]>::default()).collect();
    }
    buf.chunks_mut(per_row).collect()
}

/// The forward custom op: `(qkv [B, L, 3H], table [R, d])` to the context `[B, L, H]` (the
/// table is a placeholder when the spec has no relative positions). With `stash`, it keeps the
/// probabilities (`[B, heads, L, L]`) there for the backward pass, which then need not
/// recompute them.
#[derive(Debug)]
struct AttentionFwd {
    spec: Spec,
    stash: Stash<CpuStorage>,
}

impl AttentionFwd {
    fn run<T: Float>(&self, qkv: (&[T], &Layout), table: (&[T], &Layout)) -> Result<Vec<T>> {
        let spec = &self.spec;
        let (qkv, table) = spec.slices(qkv, table, "attention")?;
        let (l, d, hid, heads) = (spec.len, spec.head_dim, spec.hidden(), spec.heads);
        let mut out = vec![T::default(); spec.batch * l * hid];
        // Every batch row's probabilities when they are kept, else one buffer per task.
        let per_row = if self.stash.armed() { heads * l * l } else { 0 };
        let mut probs_all = vec![T::default(); spec.batch * per_row];
        let rows = out.par_chunks_mut(l * hid).zip(qkv.par_chunks(3 * l * hid));
        let kept_rows = per_row_slices(&mut probs_all, spec.batch, per_row);
        rows.zip(kept_rows)
            .enumerate()
            .for_each(|(b, ((out, qkv), kept))| {
                let mut own = vec![T::default(); if per_row == 0 { l * l } else { 0 }];
                let mut drop_buf = vec![T::default(); if spec.keep.is_some() { l * l } else { 0 }];
                let mut rel = vec![
                    T::default();
                    if spec.table_rows.is_some() {
                        l * (2 * l - 1)
                    } else {
                        0
                    }
                ];
                for h in 0..heads {
                    let p = if per_row == 0 {
                        &mut own[..]
                    } else {
                        &mut kept[h * l * l..][..l * l]
                    };
                    spec.probabilities(b, h, qkv, table, p, &mut rel);
                    let probs = dropped(p, spec.keep_of(b, h), &mut drop_buf);
                    let v = Mat::strided(&qkv[2 * hid + h * d..], l, d, 3 * hid);
                    matmul_strided(&mut out[h * d..], hid, Mat::new(probs, l, l), v, false);
                }
            });
        self.stash.put(T::into_storage(probs_all));
        Ok(out)
    }
}

impl CustomOp2 for AttentionFwd {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("attention (forward)");
        let spec = &self.spec;
        let shape = Shape::from((spec.batch, spec.len, spec.hidden()));
        dispatch!("attention", (s1 => q, s2 => t), self.run((q, l1), (t, l2)).map(|v| (v, shape.clone())))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        table: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The kept probabilities move to the backward op (a second backward recomputes them).
        let probs = self.stash.take();
        let packed = qkv.apply_op3_no_bwd(
            table,
            &grad.contiguous()?,
            &AttentionBwd {
                spec: self.spec.clone(),
                probs,
            },
        )?;
        let like: &[&Tensor] = if self.spec.table_rows.is_some() {
            &[qkv, table]
        } else {
            &[qkv]
        };
        let mut grads = unpack(&packed, like)?.into_iter();
        Ok((grads.next(), grads.next()))
    }
}

/// The backward custom op: `(qkv, table, dcontext)` to the flat `[dqkv, dtable]` (the table's
/// part only with relative positions), from the forward's probabilities if it kept them.
#[derive(Debug)]
struct AttentionBwd {
    spec: Spec,
    probs: Option<CpuStorage>,
}

impl AttentionBwd {
    fn run<T: Float>(
        &self,
        qkv: (&[T], &Layout),
        table: (&[T], &Layout),
        grad: (&[T], &Layout),
    ) -> Result<Vec<T>> {
        let spec = &self.spec;
        let per_row = spec.heads * spec.len * spec.len;
        let kept = self
            .probs
            .as_ref()
            .and_then(T::of_storage)
            .filter(|p| p.len() == spec.batch * per_row);
        let (qkv, table) = spec.slices(qkv, table, "attention-backward")?;
        let grad = contiguous(grad.0, grad.1, "attention-backward")?;
        let (l, d, hid) = (spec.len, spec.head_dim, spec.hidden());
        if grad.len() != spec.batch * l * hid {
            bail!(
                "attention-backward: gradient of {} elements for {:?}",
                grad.len(),
                spec
            );
        }
        let span = 2 * l - 1;
        let table_len = spec.table_rows.map_or(0, |rows| rows * d);
        // Per batch row: its share of the table's gradient (the `2L - 1` rows in use).
        let part_len = if spec.table_rows.is_some() {
            span * d
        } else {
            0
        };
        let mut parts = vec![T::default(); spec.batch * part_len];
        let mut out = vec![T::default(); qkv.len() + table_len];
        let (dqkv, dtable) = out.split_at_mut(qkv.len());
        dqkv.par_chunks_mut(3 * l * hid)
            .zip(per_row_slices(&mut parts, spec.batch, part_len))
            .enumerate()
            .for_each(|(b, (dqkv, dtable))| {
                let (qkv, grad) = (
                    &qkv[b * 3 * l * hid..][..3 * l * hid],
                    &grad[b * l * hid..][..l * hid],
                );
                let mut own = vec![T::default(); if kept.is_none() { l * l } else { 0 }];
                let mut drop_buf = vec![T::default(); if spec.keep.is_some() { l * l } else { 0 }];
                let mut ds = vec![T::default(); l * l];
                let mut rel = vec![
                    T::default();
                    if spec.table_rows.is_some() {
                        l * span
                    } else {
                        0
                    }
                ];
                // The band of dR that [`Spec::probabilities`] reads; zero elsewhere, always.
                let mut drel = vec![T::default(); rel.len()];
                let scale = T::from_f64(spec.scale);
                for h in 0..spec.heads {
                    let p: &[T] = match kept {
                        Some(kept) => &kept[b * per_row + h * l * l..][..l * l],
                        None => {
                            spec.probabilities(b, h, qkv, table, &mut own, &mut rel);
                            &own
                        }
                    };
                    let keep = spec.keep_of(b, h);
                    let probs = dropped(p, keep, &mut drop_buf);
                    let q = Mat::strided(&qkv[h * d..], l, d, 3 * hid);
                    let k = Mat::strided(&qkv[hid + h * d..], l, d, 3 * hid);
                    let v = Mat::strided(&qkv[2 * hid + h * d..], l, d, 3 * hid);
                    let dctx = Mat::strided(&grad[h * d..], l, d, hid);
                    // dv = probs^T dctx; dprobs = dctx v^T.
                    matmul_strided(
                        &mut dqkv[2 * hid + h * d..],
                        3 * hid,
                        Mat::new(probs, l, l).t(),
                        dctx,
                        false,
                    );
                    matmul(&mut ds, dctx, v.t(), false);
                    if let Some(keep) = keep {
                        ds.iter_mut()
                            .zip(keep)
                            .for_each(|(g, &k)| *g = *g * T::from_f64(k as f64));
                    }
                    // Softmax backward, times the scale: ds = s p (dp - sum(dp p)).
                    for (g, p) in ds.chunks_exact_mut(l).zip(p.chunks_exact(l)) {
                        softmax_grad_row(p, g, scale);
                    }
                    // dq = ds k (+ dR E); dk = ds^T q.
                    matmul_strided(&mut dqkv[h * d..], 3 * hid, Mat::new(&ds, l, l), k, false);
                    matmul_strided(
                        &mut dqkv[hid + h * d..],
                        3 * hid,
                        Mat::new(&ds, l, l).t(),
                        q,
                        false,
                    );
                    if spec.table_rows.is_some() {
                        for (i, (dr, g)) in drel
                            .chunks_exact_mut(span)
                            .zip(ds.chunks_exact(l))
                            .enumerate()
                        {
                            dr[i..i + l]
                                .iter_mut()
                                .zip(g.iter().rev())
                                .for_each(|(dr, &g)| *dr = g);
                        }
                        let e = Mat::new(&table[spec.table_start() * d..][..span * d], span, d);
                        matmul_strided(
                            &mut dqkv[h * d..],
                            3 * hid,
                            Mat::new(&drel, l, span),
                            e,
                            true,
                        );
                        matmul(dtable, Mat::new(&drel, l, span).t(), q, true);
                    }
                }
            });
        if spec.table_rows.is_some() {
            // The batch rows' shares, added in order (deterministic).
            let used = &mut dtable[spec.table_start() * d..][..part_len];
            for part in parts.chunks_exact(part_len) {
                used.iter_mut().zip(part).for_each(|(o, &v)| *o += v);
            }
        }
        Ok(out)
    }
}

impl CustomOp3 for AttentionBwd {
    fn name(&self) -> &'static str {
        "attention-backward"
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
        let _t = crate::profile::scope("attention (backward)");
        let len =
            l1.shape().elem_count() + self.spec.table_rows.map_or(0, |r| r * self.spec.head_dim);
        dispatch!("attention-backward", (s1 => q, s2 => t, s3 => g), self.run((q, l1), (t, l2), (g, l3)).map(|v| (v, Shape::from(len))))
    }
}

/// Multi-head self-attention of packed projections `qkv` (`[B, L, 3H]`: q, k and v side by
/// side, each `heads` blocks of `H / heads`) to the merged context `[B, L, H]`, with scores
/// scaled by `1 / sqrt(H / heads)`.
///
/// - `relative`: a `[2 max_len - 1, H / heads]` table of HuggingFace's `relative_key` position
///   embeddings (`L <= max_len`), see the [module docs](self);
/// - `key_bias`: `[B, L]`, added to the scores of every query against each key (0 for real
///   keys, -10000 for padding, as BERT's extended attention mask);
/// - `dropout`: the multipliers of dropout on the attention probabilities, `[B, heads, L, L]`
///   values in that order, each 0 or `1 / (1 - p)` (the caller draws them, one per probability;
///   `None` for no dropout).
///
/// Differentiable in `qkv` and `relative`.
pub fn self_attention(
    qkv: &Tensor,
    heads: usize,
    relative: Option<&Tensor>,
    key_bias: Option<&Tensor>,
    dropout: Option<&[f32]>,
) -> Result<Tensor> {
    let (batch, len, h3) = qkv.dims3()?;
    if heads == 0 || !h3.is_multiple_of(3 * heads) {
        bail!(
            "attention: packed projections {:?} do not split into q, k, v of {heads} heads",
            qkv.dims()
        );
    }
    let head_dim = h3 / (3 * heads);
    if let Some(table) = relative {
        let (rows, width) = table.dims2()?;
        if width != head_dim || rows % 2 == 0 || len > rows.div_ceil(2) {
            bail!(
                "attention: relative-position table {:?} does not fit length {len} and head width {head_dim} \
                 (expected [2 max_len - 1, {head_dim}] with max_len >= {len})",
                table.dims()
            );
        }
    }
    if let Some(kb) = key_bias {
        if kb.dims() != [batch, len] {
            bail!(
                "attention: key bias must be [{batch}, {len}], got {:?}",
                kb.dims()
            );
        }
    }
    if let Some(keep) = dropout {
        if keep.len() != batch * heads * len * len {
            bail!("attention: {} dropout multipliers for [{batch}, {heads}, {len}, {len}] probabilities", keep.len());
        }
    }
    attend(
        qkv,
        heads,
        relative,
        key_bias,
        dropout,
        crate::switches::use_fused(qkv),
    )
}

/// [`self_attention`] after its checks: by the fused op or by candle ops.
fn attend(
    qkv: &Tensor,
    heads: usize,
    relative: Option<&Tensor>,
    key_bias: Option<&Tensor>,
    keep: Option<&[f32]>,
    fused: bool,
) -> Result<Tensor> {
    let (batch, len, h3) = qkv.dims3()?;
    let head_dim = h3 / (3 * heads);
    let scale = 1.0 / (head_dim as f64).sqrt();
    if !fused {
        return composite(qkv, heads, relative, key_bias, keep, scale);
    }
    let table_rows = relative.map(|t| t.dim(0)).transpose()?;
    let key_bias = match key_bias {
        Some(kb) => Some(Arc::from(
            kb.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        )),
        None => None,
    };
    let spec = Spec {
        batch,
        len,
        heads,
        head_dim,
        scale,
        table_rows,
        key_bias,
        keep: keep.map(Arc::from),
    };
    let table = match relative {
        Some(t) => t.contiguous()?,
        None => Tensor::zeros((1, head_dim), qkv.dtype(), qkv.device())?,
    };
    // Keep the probabilities for backward only where there will be one.
    let stash = Stash::for_inputs(&[qkv, &table]);
    qkv.contiguous()?
        .apply_op2(&table, AttentionFwd { spec, stash })
}

/// The same attention as candle ops (the fallback for other devices and dtypes).
fn composite(
    qkv: &Tensor,
    heads: usize,
    relative: Option<&Tensor>,
    key_bias: Option<&Tensor>,
    keep: Option<&[f32]>,
    scale: f64,
) -> Result<Tensor> {
    let (b, l, h3) = qkv.dims3()?;
    let (h, d) = (h3 / 3, h3 / (3 * heads));
    // [B, L, 3H] -> [3, B, heads, L, d]
    let qkv = qkv
        .reshape((b, l, 3, heads, d))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let q = qkv.get(0)?.affine(scale, 0.0)?;
    let (k, v) = (qkv.get(1)?, qkv.get(2)?);
    let mut scores = q.matmul(&k.t()?)?; // [B, heads, L, L]
    if let Some(table) = relative {
        // scores[b, h, l, r] += q[b, h, l] . E[l - r + max_len - 1]: the queries against
        // every distance in one matmul, then gathered per (query, key) pair.
        let r = table.dim(0)?;
        let qe = q
            .reshape((b * heads * l, d))?
            .matmul(&table.t()?)?
            .reshape((b * heads, l, r))?;
        scores = add_relative_scores(&scores.reshape((b * heads, l, l))?, &qe)?
            .reshape((b, heads, l, l))?;
    }
    if let Some(kb) = key_bias {
        scores = scores.broadcast_add(&kb.to_dtype(scores.dtype())?.reshape((b, 1, 1, l))?)?;
    }
    let mut probs = softmax_last(&scores)?;
    if let Some(keep) = keep {
        probs = probs.mul(
            &Tensor::from_slice(keep, probs.shape(), probs.device())?.to_dtype(probs.dtype())?,
        )?;
    }
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{numeric_grad, randn, rel_err, values, TestRng};
    use candle_core::{DType, Device, Var};

    /// One case: batch, length, heads, head width, relative table's max_len (if any), padding.
    struct Case {
        batch: usize,
        len: usize,
        heads: usize,
        d: usize,
        max_len: Option<usize>,
        padded: bool,
        dropout: bool,
    }

    const CASES: [Case; 4] = [
        Case {
            batch: 2,
            len: 5,
            heads: 2,
            d: 3,
            max_len: None,
            padded: false,
            dropout: false,
        },
        Case {
            batch: 3,
            len: 4,
            heads: 1,
            d: 4,
            max_len: Some(6),
            padded: true,
            dropout: false,
        },
        Case {
            batch: 2,
            len: 6,
            heads: 3,
            d: 2,
            max_len: Some(6),
            padded: false,
            dropout: true,
        },
        Case {
            batch: 1,
            len: 7,
            heads: 2,
            d: 5,
            max_len: Some(9),
            padded: true,
            dropout: true,
        },
    ];

    /// The inputs of a case in `dtype`: packed projections and table as variables, the key
    /// bias (the last key of every other row padded) and dropout multipliers.
    /// Packed projections, relative table, key bias and dropout multipliers of a case.
    type Inputs = (Var, Option<Var>, Option<Tensor>, Option<Vec<f32>>);

    fn inputs(case: &Case, dtype: DType, seed: u64) -> Result<Inputs> {
        let dev = Device::Cpu;
        let mut rng = TestRng::new(seed);
        let h = case.heads * case.d;
        let qkv = Var::from_tensor(&randn(
            &mut rng,
            &[case.batch, case.len, 3 * h],
            dtype,
            &dev,
        )?)?;
        let table = match case.max_len {
            Some(m) => Some(Var::from_tensor(&randn(
                &mut rng,
                &[2 * m - 1, case.d],
                dtype,
                &dev,
            )?)?),
            None => None,
        };
        let key_bias = case.padded.then(|| {
            let bias: Vec<f32> = (0..case.batch * case.len)
                .map(|i| {
                    if i % case.len == case.len - 1 && (i / case.len).is_multiple_of(2) {
                        -10_000.0
                    } else {
                        0.0
                    }
                })
                .collect();
            Tensor::from_vec(bias, (case.batch, case.len), &dev)?.to_dtype(dtype)
        });
        // Dropout multipliers as a caller draws them: 0 with probability 0.3, else 1 / 0.7.
        let n = case.batch * case.heads * case.len * case.len;
        let keep = case.dropout.then(|| {
            (0..n)
                .map(|_| {
                    if rng.uniform() < 0.3 {
                        0.0
                    } else {
                        (1.0 / 0.7) as f32
                    }
                })
                .collect()
        });
        Ok((qkv, table, key_bias.transpose()?, keep))
    }

    fn run(
        case: &Case,
        qkv: &Tensor,
        table: Option<&Var>,
        key_bias: Option<&Tensor>,
        keep: &Option<Vec<f32>>,
        fused: bool,
    ) -> Result<Tensor> {
        attend(
            qkv,
            case.heads,
            table.map(|t| t.as_tensor()),
            key_bias,
            keep.as_deref(),
            fused,
        )
    }

    #[test]
    fn forward_and_gradients_match_candle_ops() -> Result<()> {
        for (n, case) in CASES.iter().enumerate() {
            let (qkv, table, key_bias, keep) = inputs(case, DType::F32, 40 + n as u64)?;
            let mut rng = TestRng::new(90 + n as u64);
            let out_shape = [case.batch, case.len, case.heads * case.d];
            let r = randn(&mut rng, &out_shape, DType::F32, &Device::Cpu)?;
            let mut results = Vec::new();
            for fused in [true, false] {
                let y = run(
                    case,
                    qkv.as_tensor(),
                    table.as_ref(),
                    key_bias.as_ref(),
                    &keep,
                    fused,
                )?;
                assert_eq!(y.dims(), out_shape);
                let grads = y.mul(&r)?.sum_all()?.backward()?;
                let dtable = table
                    .as_ref()
                    .map(|t| values(grads.get(t.as_tensor()).unwrap()))
                    .transpose()?;
                results.push((
                    values(&y)?,
                    values(grads.get(qkv.as_tensor()).unwrap())?,
                    dtable,
                ));
            }
            let (fused, plain) = (&results[0], &results[1]);
            assert!(
                rel_err(&fused.0, &plain.0) < 1e-5,
                "case {n}: outputs differ"
            );
            assert!(
                rel_err(&fused.1, &plain.1) < 1e-5,
                "case {n}: qkv gradients differ"
            );
            if let (Some(a), Some(b)) = (&fused.2, &plain.2) {
                assert!(rel_err(a, b) < 1e-5, "case {n}: table gradients differ");
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        for (n, case) in CASES.iter().enumerate() {
            let (qkv, table, key_bias, keep) = inputs(case, DType::F64, 60 + n as u64)?;
            let mut rng = TestRng::new(70 + n as u64);
            let r = randn(
                &mut rng,
                &[case.batch, case.len, case.heads * case.d],
                DType::F64,
                &Device::Cpu,
            )?;
            let loss = || -> Result<Tensor> {
                run(
                    case,
                    qkv.as_tensor(),
                    table.as_ref(),
                    key_bias.as_ref(),
                    &keep,
                    true,
                )?
                .mul(&r)?
                .sum_all()
            };
            let grads = loss()?.backward()?;
            let scalar = || loss()?.to_scalar::<f64>();
            let mut vars = vec![&qkv];
            vars.extend(table.as_ref());
            for var in vars {
                let analytic = values(grads.get(var.as_tensor()).unwrap())?;
                let idx: Vec<usize> = (0..analytic.len()).step_by(3).collect();
                let numeric = numeric_grad(var, &idx, &scalar)?;
                let picked: Vec<f64> = idx.iter().map(|&i| analytic[i]).collect();
                let err = rel_err(&picked, &numeric);
                assert!(
                    err < 1e-6,
                    "case {n}: relative error {err:e} for {:?}",
                    var.dims()
                );
            }
        }
        Ok(())
    }

    #[test]
    fn untracked_inputs_give_the_same_output() -> Result<()> {
        // Sampling runs on plain tensors: the forward then keeps nothing, and must still compute
        // every batch row.
        for case in &CASES {
            let (qkv, table, key_bias, keep) = inputs(case, DType::F32, 12)?;
            let tracked = run(
                case,
                qkv.as_tensor(),
                table.as_ref(),
                key_bias.as_ref(),
                &keep,
                true,
            )?;
            let plain_table = table.as_ref().map(|t| t.as_tensor().detach());
            let plain = attend(
                &qkv.as_tensor().detach(),
                case.heads,
                plain_table.as_ref(),
                key_bias.as_ref(),
                keep.as_deref(),
                true,
            )?;
            assert_eq!(values(&plain)?, values(&tracked)?);
            assert!(values(&plain)?.iter().any(|&v| v != 0.0));
        }
        Ok(())
    }

    #[test]
    fn a_second_backward_recomputes_the_same_gradients() -> Result<()> {
        // The first backward uses the probabilities the forward kept, the second recomputes them.
        let case = &CASES[2];
        let (qkv, table, key_bias, keep) = inputs(case, DType::F32, 8)?;
        let y = run(
            case,
            qkv.as_tensor(),
            table.as_ref(),
            key_bias.as_ref(),
            &keep,
            true,
        )?;
        let loss = y.sqr()?.sum_all()?;
        let (first, second) = (loss.backward()?, loss.backward()?);
        for var in [Some(&qkv), table.as_ref()].into_iter().flatten() {
            let (a, b) = (
                values(first.get(var.as_tensor()).unwrap())?,
                values(second.get(var.as_tensor()).unwrap())?,
            );
            assert!(
                rel_err(&a, &b) < 1e-6,
                "{:?}: {}",
                var.dims(),
                rel_err(&a, &b)
            );
        }
        Ok(())
    }

    #[test]
    fn padded_keys_do_not_matter_and_batch_rows_are_independent() -> Result<()> {
        let case = &CASES[1];
        let (qkv, table, key_bias, _) = inputs(case, DType::F32, 5)?;
        let full = run(
            case,
            qkv.as_tensor(),
            table.as_ref(),
            key_bias.as_ref(),
            &None,
            true,
        )?;
        // Row 0's last key is padded: changing its key and value leaves row 0's output alone.
        let h = case.heads * case.d;
        let mut v = values(qkv.as_tensor())?;
        for j in h..3 * h {
            v[(case.len - 1) * 3 * h + j] += 3.0;
        }
        let changed = Tensor::from_vec(v, qkv.dims(), &Device::Cpu)?.to_dtype(DType::F32)?;
        let out = run(
            case,
            &changed,
            table.as_ref(),
            key_bias.as_ref(),
            &None,
            true,
        )?;
        let (a, b) = (
            values(&full.get(0)?.narrow(0, 0, case.len - 1)?)?,
            values(&out.get(0)?.narrow(0, 0, case.len - 1)?)?,
        );
        assert!(rel_err(&a, &b) < 1e-6, "a padded key changed the outputs");
        // Batch row 1 alone gives the same output as within the batch.
        let one = run(
            case,
            &qkv.as_tensor().narrow(0, 1, 1)?,
            table.as_ref(),
            Some(&key_bias.unwrap().narrow(0, 1, 1)?),
            &None,
            true,
        )?;
        assert_eq!(values(&one)?, values(&full.narrow(0, 1, 1)?)?);
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((2, 4, 12), DType::F32, &dev)?;
        let err = self_attention(&qkv, 3, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 heads"), "{err}");
        let table = Tensor::zeros((5, 2), DType::F32, &dev)?; // max_len 3 < 4
        let err = self_attention(&qkv, 2, Some(&table), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_len >= 4"), "{err}");
        let kb = Tensor::zeros((2, 3), DType::F32, &dev)?;
        let err = self_attention(&qkv, 2, None, Some(&kb), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key bias must be [2, 4]"), "{err}");
        let err = self_attention(&qkv, 2, None, None, Some(&[1.0f32; 31][..]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("31 dropout multipliers for [2, 2, 4, 4]"),
            "{err}"
        );
        Ok(())
    }
}
