//! The network side of diffusion: what a domain's model must offer ([`Denoiser`]), the
//! single-time view that samplers call ([`Model`]), and classifier-free guidance ([`Guided`]).

use candle_core::{Result, Tensor};

/// A network that maps a noised batch to its prediction (epsilon, x0 or v).
pub trait Denoiser {
    /// `x_t` is `[B, ...]`; `t` is a `[B]` float32 tensor of training timesteps (fractional
    /// for sigma-space samplers); `cond` holds `[B]` u32 class ids when the model is
    /// conditional, where id `num_classes` is the learned null class.
    fn forward(&self, x_t: &Tensor, t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor>;

    /// The training-mode forward pass (dropout on), drawing any randomness from `rng`, the
    /// trainer's generator, so a resumed run repeats it. Models without dropout need not
    /// override it.
    fn forward_train(&self, x_t: &Tensor, t: &Tensor, cond: Option<&Tensor>, rng: &mut crate::rng::Rng) -> Result<Tensor> {
        let _ = rng;
        self.forward(x_t, t, cond)
    }
}

/// What samplers call: a prediction for a whole batch at one (possibly fractional) timestep.
pub trait Model {
    /// The network output for `x` at timestep `t`.
    fn predict(&self, x: &Tensor, t: f64) -> Result<Tensor>;
}

impl<F: Fn(&Tensor, f64) -> Result<Tensor>> Model for F {
    fn predict(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        self(x, t)
    }
}

/// A denoiser bound to a batch's conditioning, with classifier-free guidance.
///
/// With `scale` w, the output is `uncond + w * (cond - uncond)`; w = 1 is the plain conditional
/// model and costs one network call; any other w evaluates both halves in one batched call.
pub struct Guided<'a> {
    /// The network.
    pub denoiser: &'a dyn Denoiser,
    /// `[B]` class ids, or None for an unconditional model.
    pub cond: Option<Tensor>,
    /// The null class id used for the unconditional half.
    pub null_class: u32,
    /// Guidance scale w.
    pub scale: f64,
}

impl Model for Guided<'_> {
    /// The guided prediction, detached: sampling never needs gradients, and without the detach
    /// every step's activations would stay alive through the whole trajectory.
    fn predict(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        Ok(self.guided(x, t)?.detach())
    }
}

impl Guided<'_> {
    fn guided(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let b = x.dim(0)?;
        let tt = Tensor::full(t as f32, b, x.device())?;
        match &self.cond {
            Some(cond) if self.scale != 1.0 => {
                let null = Tensor::full(self.null_class, b, x.device())?;
                let x2 = Tensor::cat(&[x, x], 0)?;
                let t2 = Tensor::cat(&[&tt, &tt], 0)?;
                let c2 = Tensor::cat(&[cond, &null], 0)?;
                let out = self.denoiser.forward(&x2, &t2, Some(&c2))?;
                let c = out.narrow(0, 0, b)?;
                let u = out.narrow(0, b, b)?;
                u.add(&c.sub(&u)?.affine(self.scale, 0.0)?)
            }
            cond => self.denoiser.forward(x, &tt, cond.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Output = x * (1 + class id): easy to reason about.
    struct ByClass;
    impl Denoiser for ByClass {
        fn forward(&self, x: &Tensor, _t: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
            let c = cond.unwrap().to_dtype(x.dtype())?.affine(1.0, 1.0)?.unsqueeze(1)?;
            x.broadcast_mul(&c)
        }
    }

    #[test]
    fn guidance_extrapolates_from_the_null_class() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev)?;
        let cond = Some(Tensor::new(&[1u32, 2], &dev)?);
        let null_class = 4; // output x * 5 for the unconditional half
        let g = |scale| Guided { denoiser: &ByClass, cond: cond.clone(), null_class, scale };
        // w = 1: plain conditional
        assert_eq!(g(1.0).predict(&x, 10.0)?.to_vec2::<f32>()?, vec![vec![2.0, 4.0], vec![9.0, 12.0]]);
        // w = 0: unconditional
        assert_eq!(g(0.0).predict(&x, 10.0)?.to_vec2::<f32>()?, vec![vec![5.0, 10.0], vec![15.0, 20.0]]);
        // w = 3: u + 3 (c - u)
        let out = g(3.0).predict(&x, 10.0)?.to_vec2::<f32>()?;
        assert_eq!(out, vec![vec![5.0 + 3.0 * (2.0 - 5.0), 10.0 + 3.0 * (4.0 - 10.0)], vec![15.0 + 3.0 * (9.0 - 15.0), 20.0 + 3.0 * (12.0 - 20.0)]]);
        Ok(())
    }
}
