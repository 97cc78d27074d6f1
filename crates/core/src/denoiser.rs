//! The network side of diffusion: what a domain's model must offer ([`Denoiser`], fed one
//! [`Inputs`] struct), the single-time view that samplers call ([`Model`]), guidance that
//! composes conditions ([`Guided`]), and scorers for classifier guidance ([`Scorer`]).

use crate::cond::{CondBatch, CondSpec, Condition};
use crate::rng::Rows;
use candle_core::{Result, Tensor};

/// What a denoiser is given for one batch.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The noised batch `[B, ...]`: float32 for continuous data, u32 tokens for token data.
    pub x: &'a Tensor,
    /// `[B]` float32: each row's time in the process's own coordinate (see
    /// [`crate::process::Process::time_coordinate`]).
    pub time: &'a Tensor,
    /// The encoded conditions; None means the null condition on every row.
    pub cond: Option<&'a CondBatch>,
    /// `[B, L]` float32, 1 at real positions and 0 at padding; None when every position is real.
    pub mask: Option<&'a Tensor>,
}

impl<'a> Inputs<'a> {
    /// Inputs with only the batch and its times.
    pub fn new(x: &'a Tensor, time: &'a Tensor) -> Self {
        Self {
            x,
            time,
            cond: None,
            mask: None,
        }
    }
}

/// A network that maps a noised batch to the process's prediction (epsilon, x0, v, EDM's F,
/// token logits).
pub trait Denoiser {
    /// The evaluation-mode prediction.
    fn forward(&self, inputs: &Inputs) -> Result<Tensor>;

    /// The training-mode prediction (dropout on), drawing any randomness from `rows`, one
    /// stream per batch row keyed by the example, so a resumed or differently split run repeats
    /// it. Models without dropout need not override it.
    fn forward_train(&self, inputs: &Inputs, rows: &mut Rows) -> Result<Tensor> {
        let _ = rows;
        self.forward(inputs)
    }
}

/// What samplers call: the network output for a whole batch at one time (in the process's
/// coordinate).
pub trait Model {
    /// The network output for `x` at time `t`.
    fn predict(&self, x: &Tensor, t: f64) -> Result<Tensor>;
}

impl<F: Fn(&Tensor, f64) -> Result<Tensor>> Model for F {
    fn predict(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        self(x, t)
    }
}

/// A denoiser bound to a batch's conditions and padding, with composable classifier-free
/// guidance (Ho and Salimans 2022; with several terms, Liu et al. 2022):
/// `out = null + sum_i w_i (c_i - null) - sum_j v_j (n_j - null)`.
///
/// One positive term of weight 1 and no negative terms is the plain conditional model (one
/// network call); otherwise the null and every term are evaluated in one batched call. The
/// combination is linear in the network output, so it applies to epsilon, x0, v and token
/// logits alike.
pub struct Guided<'a> {
    /// The network.
    pub denoiser: &'a dyn Denoiser,
    /// Encoded positive terms with their weights, each `[B]` rows.
    pub positive: Vec<(CondBatch, f64)>,
    /// Encoded negative terms with their weights.
    pub negative: Vec<(CondBatch, f64)>,
    /// The encoded null condition for `[B]` rows (None for an unconditional model).
    pub null: Option<CondBatch>,
    /// The batch's padding mask.
    pub mask: Option<Tensor>,
}

impl<'a> Guided<'a> {
    /// Binds `denoiser` to per-row positive and negative terms (`positive[k][row]` is term `k`
    /// of row `row`) for a conditional model with `spec`; an unconditional spec needs no terms.
    pub fn new(
        denoiser: &'a dyn Denoiser,
        spec: &CondSpec,
        positive: &[(Vec<Condition>, f64)],
        negative: &[(Vec<Condition>, f64)],
        rows: usize,
        mask: Option<Tensor>,
        device: &candle_core::Device,
    ) -> Result<Self> {
        if spec.is_empty() {
            if !negative.is_empty()
                || positive
                    .iter()
                    .any(|(c, _)| c.iter().any(|c| !c.0.is_empty()))
            {
                candle_core::bail!("this model is unconditional: it takes no conditions");
            }
            return Ok(Self {
                denoiser,
                positive: vec![],
                negative: vec![],
                null: None,
                mask,
            });
        }
        let enc = |terms: &[(Vec<Condition>, f64)]| -> Result<Vec<(CondBatch, f64)>> {
            terms
                .iter()
                .map(|(c, w)| Ok((spec.encode(c, device)?, *w)))
                .collect()
        };
        let null = spec.encode(&vec![spec.null(); rows], device)?;
        Ok(Self {
            denoiser,
            positive: enc(positive)?,
            negative: enc(negative)?,
            null: Some(null),
            mask,
        })
    }

    fn plain(&self) -> bool {
        self.negative.is_empty()
            && self.positive.len() <= 1
            && self.positive.iter().all(|(_, w)| *w == 1.0)
    }

    fn guided(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let b = x.dim(0)?;
        let tt = Tensor::full(t as f32, b, x.device())?;
        if self.plain() {
            let cond = self.positive.first().map(|(c, _)| c).or(self.null.as_ref());
            return self.denoiser.forward(&Inputs {
                x,
                time: &tt,
                cond,
                mask: self.mask.as_ref(),
            });
        }
        let null = self
            .null
            .as_ref()
            .expect("a conditional model has a null condition");
        let mut conds = vec![null];
        conds.extend(self.positive.iter().map(|(c, _)| c));
        conds.extend(self.negative.iter().map(|(c, _)| c));
        let k = conds.len();
        let xs = Tensor::cat(&vec![x; k], 0)?;
        let ts = Tensor::cat(&vec![&tt; k], 0)?;
        let masks = match &self.mask {
            Some(m) => Some(Tensor::cat(&vec![m; k], 0)?),
            None => None,
        };
        let cond = CondBatch::cat(&conds)?;
        let out = self.denoiser.forward(&Inputs {
            x: &xs,
            time: &ts,
            cond: Some(&cond),
            mask: masks.as_ref(),
        })?;
        let u = out.narrow(0, 0, b)?;
        let mut acc = u.clone();
        let weights = self
            .positive
            .iter()
            .map(|(_, w)| *w)
            .chain(self.negative.iter().map(|(_, v)| -*v));
        for (i, w) in weights.enumerate() {
            let term = out.narrow(0, (i + 1) * b, b)?;
            acc = acc.add(&term.sub(&u)?.affine(w, 0.0)?)?;
        }
        Ok(acc)
    }
}

impl Model for Guided<'_> {
    /// The guided prediction, detached: sampling never needs gradients, and without the detach
    /// every step's activations would stay alive through the whole trajectory.
    fn predict(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        Ok(self.guided(x, t)?.detach())
    }
}

/// A differentiable scorer for classifier guidance (Dhariwal and Nichol 2021): the gradient of
/// `log p(y | x_t, t)` with respect to the noisy input, one target `y` per row.
pub trait Scorer {
    /// `grad_x log p(y | x, t)` for a batch `x` at time `t` (the training timestep of a
    /// Gaussian process), shaped like `x`.
    fn grad_log_prob(&self, x: &Tensor, t: f64) -> Result<Tensor>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cond::{Field, Value};
    use candle_core::Device;

    /// Output = x * (1 + class id), with the null id 4 giving x * 5.
    struct ByClass;
    impl Denoiser for ByClass {
        fn forward(&self, i: &Inputs) -> Result<Tensor> {
            let onehot = &i.cond.unwrap().fields[0];
            let ids = Tensor::new(&[1f32, 2., 3., 4., 5.], onehot.device())?.unsqueeze(1)?;
            let c = onehot.matmul(&ids)?;
            i.x.broadcast_mul(&c)
        }
    }

    fn spec() -> CondSpec {
        CondSpec {
            fields: vec![Field::categorical(
                "c",
                (0..4).map(|i| i.to_string()).collect(),
            )],
        }
    }

    #[test]
    fn guidance_extrapolates_from_the_null_and_composes_terms() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev)?;
        let c = |ids: [u32; 2]| {
            ids.iter()
                .map(|&i| Condition(vec![Value::Class(i)]))
                .collect::<Vec<_>>()
        };
        let g = |pos: Vec<(Vec<Condition>, f64)>, neg: Vec<(Vec<Condition>, f64)>| {
            Guided::new(&ByClass, &spec(), &pos, &neg, 2, None, &dev).unwrap()
        };
        let out = |g: Guided| g.predict(&x, 10.0).unwrap().to_vec2::<f32>().unwrap();
        // w = 1: plain conditional
        assert_eq!(
            out(g(vec![(c([1, 2]), 1.0)], vec![])),
            vec![vec![2.0, 4.0], vec![9.0, 12.0]]
        );
        // w = 0: unconditional (null = x * 5)
        assert_eq!(
            out(g(vec![(c([1, 2]), 0.0)], vec![])),
            vec![vec![5.0, 10.0], vec![15.0, 20.0]]
        );
        // w = 3: u + 3 (c - u)
        assert_eq!(
            out(g(vec![(c([1, 2]), 3.0)], vec![])),
            vec![vec![5.0 - 9.0, 10.0 - 18.0], vec![15.0 - 18.0, 20.0 - 24.0]]
        );
        // two positive terms and a negative one: u + 2 (c1 - u) + 2 (c2 - u) - 1 (n - u)
        let got = out(g(
            vec![(c([0, 0]), 2.0), (c([1, 1]), 2.0)],
            vec![(c([3, 3]), 1.0)],
        ));
        let expect =
            |x: f32| 5.0 * x + 2.0 * (1.0 - 5.0) * x + 2.0 * (2.0 - 5.0) * x - (4.0 - 5.0) * x;
        assert_eq!(
            got,
            vec![
                vec![expect(1.0), expect(2.0)],
                vec![expect(3.0), expect(4.0)]
            ]
        );
        Ok(())
    }
}
