//! The relative-position term of attention (HuggingFace's `relative_key`) as a CPU kernel
//! with a hand-written backward pass: [`add_relative_scores`] gathers it from one small product
//! per query, instead of a matmul per query position and a permuted (strided) add. Off the CPU
//! (or for dtypes other than f32/f64) it is a gather of candle ops with the same result.

use crate::machinery::{contiguous, dispatch, Float};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `scores[n, l, r] + qe[n, l, l - r + m - 1]` for `scores: [N, L, L]`, `qe: [N, L, 2m - 1]`.
#[derive(Clone, Copy, Debug)]
struct RelativeScores;

/// The `qe` gradient of [`RelativeScores`]: each row of the score gradient scattered to the
/// distances it read.
#[derive(Clone, Copy, Debug)]
struct RelativeScoresBackward {
    distances: usize,
}

/// `(n, l, distances)` of a relative-score pair, or an error naming the shapes.
fn relative_shapes(scores: &Shape, qe: &Shape) -> Result<(usize, usize, usize)> {
    let (n, l, l2) = scores.dims3()?;
    let (n2, l3, r) = qe.dims3()?;
    if l != l2 || n != n2 || l3 != l || r % 2 == 0 || r + 1 < 2 * l {
        bail!("relative scores: scores {:?} need per-distance products [N, L, 2m - 1] with m >= L, got {:?}", scores.dims(), qe.dims());
    }
    Ok((n, l, r))
}

impl RelativeScores {
    fn run<T: Float>(&self, s: (&[T], &Layout), qe: (&[T], &Layout)) -> Result<(Vec<T>, Shape)> {
        let (n, l, r) = relative_shapes(s.1.shape(), qe.1.shape())?;
        let (ss, qs) = (
            contiguous(s.0, s.1, "relative scores")?,
            contiguous(qe.0, qe.1, "relative scores")?,
        );
        let m = r.div_ceil(2);
        let mut out = ss.to_vec();
        if n * l > 0 {
            out.par_chunks_mut(l)
                .zip(qs.par_chunks(r))
                .enumerate()
                .for_each(|(row, (o, q))| {
                    let li = row % l;
                    for (ri, v) in o.iter_mut().enumerate() {
                        *v += q[li + m - 1 - ri];
                    }
                });
        }
        Ok((out, s.1.shape().clone()))
    }
}

impl RelativeScoresBackward {
    fn run<T: Float>(&self, g: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let g = contiguous(g, layout, "relative scores backward")?;
        let (n, l, _) = layout.shape().dims3()?;
        let (r, m) = (self.distances, self.distances.div_ceil(2));
        let mut out = vec![T::default(); n * l * r];
        if n * l > 0 {
            out.par_chunks_mut(r)
                .zip(g.par_chunks(l))
                .enumerate()
                .for_each(|(row, (o, gr))| {
                    let li = row % l;
                    for (ri, &v) in gr.iter().enumerate() {
                        o[li + m - 1 - ri] = v;
                    }
                });
        }
        Ok((out, Shape::from((n, l, r))))
    }
}

impl CustomOp2 for RelativeScores {
    fn name(&self) -> &'static str {
        "relative-scores"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        sl: &Layout,
        q: &CpuStorage,
        ql: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("relative positions");
        dispatch!("relative scores", (s => s, q => q), self.run((s, sl), (q, ql)))
    }

    fn bwd(
        &self,
        _s: &Tensor,
        qe: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dq = grad
            .contiguous()?
            .apply_op1_no_bwd(&RelativeScoresBackward {
                distances: qe.dim(2)?,
            })?;
        Ok((Some(grad.clone()), Some(dq)))
    }
}

impl CustomOp1 for RelativeScoresBackward {
    fn name(&self) -> &'static str {
        "relative-scores-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = crate::profile::scope("relative positions");
        dispatch!("relative scores backward", (s => v), self.run(v, l))
    }
}

/// Adds the relative-position term of attention: `scores[n, l, r] + qe[n, l, l - r + m - 1]`
/// for `scores: [N, L, L]` and `qe: [N, L, 2m - 1]` (`qe = q E^T`, the queries against the
/// embedding of every distance `-(m - 1)..=(m - 1)`, `m >= L`). Differentiable in both.
pub fn add_relative_scores(scores: &Tensor, qe: &Tensor) -> Result<Tensor> {
    let (n, l, r) = relative_shapes(scores.shape(), qe.shape())?;
    if crate::switches::use_fused(scores) && scores.dtype() == qe.dtype() {
        return scores
            .contiguous()?
            .apply_op2(&qe.contiguous()?, RelativeScores);
    }
    let m = r.div_ceil(2);
    let idx: Vec<u32> = (0..l)
        .flat_map(|q| (0..l).map(move |k| (q + m - 1 - k) as u32))
        .collect();
    let idx = Tensor::from_vec(idx, (1, l, l), scores.device())?
        .broadcast_as((n, l, l))?
        .contiguous()?;
    scores.add(&qe.contiguous()?.gather(&idx, 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_diff, randn, values, TestRng};
    use candle_core::{DType, Device, Var};

    #[test]
    fn relative_scores_match_the_definition_and_candle() -> Result<()> {
        let dev = Device::Cpu;
        let (n, l, m) = (3, 4, 5);
        let mut rng = TestRng::new(21);
        let s = Var::from_tensor(&randn(&mut rng, &[n, l, l], DType::F64, &dev)?)?;
        let qe = Var::from_tensor(&randn(&mut rng, &[n, l, 2 * m - 1], DType::F64, &dev)?)?;
        let out = add_relative_scores(s.as_tensor(), qe.as_tensor())?;
        let (sv, qv, ov) = (
            values(s.as_tensor())?,
            values(qe.as_tensor())?,
            values(&out)?,
        );
        for i in 0..n {
            for a in 0..l {
                for b in 0..l {
                    let want =
                        sv[(i * l + a) * l + b] + qv[(i * l + a) * (2 * m - 1) + a + m - 1 - b];
                    assert!((ov[(i * l + a) * l + b] - want).abs() < 1e-14);
                }
            }
        }
        // gradients against a gather-based composite (the fallback's formula; the global
        // switch is not flipped here, other tests run at the same time)
        let r = randn(&mut rng, &[n, l, l], DType::F64, &dev)?;
        let g = out.mul(&r)?.sum_all()?.backward()?;
        let idx: Vec<u32> = (0..l)
            .flat_map(|q| (0..l).map(move |k| (q + m - 1 - k) as u32))
            .collect();
        let idx = Tensor::from_vec(idx, (1, l, l), &dev)?
            .broadcast_as((n, l, l))?
            .contiguous()?;
        let plain = s.as_tensor().add(&qe.as_tensor().gather(&idx, 2)?)?;
        assert!(max_diff(&values(&plain)?, &ov) < 1e-14);
        let gp = plain.mul(&r)?.sum_all()?.backward()?;
        for v in [&s, &qe] {
            assert!(
                max_diff(
                    &values(g.get(v.as_tensor()).unwrap())?,
                    &values(gp.get(v.as_tensor()).unwrap())?
                ) < 1e-14
            );
        }
        assert!(
            add_relative_scores(s.as_tensor(), &Tensor::zeros((n, l, 5), DType::F64, &dev)?)
                .is_err()
        );
        Ok(())
    }
}
