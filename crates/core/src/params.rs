//! Seeded model parameters.
//!
//! candle's `VarMap` initialises weights from a thread-local generator, so two runs with the
//! same seed would start from different weights. [`Params`] is a `VarBuilder` backend that draws
//! every parameter from a stream keyed by the seed and the parameter's path: the same seed and
//! model give the same weights whatever order the layers are built in.

use crate::rng::Rng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A named set of trainable variables, created on first use with seeded initial values.
#[derive(Clone)]
pub struct Params {
    seed: u64,
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
}

impl Params {
    /// An empty set whose variables will be initialised from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            vars: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// A `VarBuilder` that creates (or reuses) variables in this set.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// All variables, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.vars
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Current values, sorted by name.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.vars
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars
            .lock()
            .unwrap()
            .values()
            .map(|v| v.elem_count())
            .sum()
    }

    /// Overwrites every variable with the tensor of the same name in `values` (prefixed by
    /// `prefix`); a missing name or a shape mismatch is an error naming the variable.
    pub fn load(&self, values: &HashMap<String, Tensor>, prefix: &str) -> anyhow::Result<()> {
        for (name, var) in self.vars.lock().unwrap().iter() {
            let key = format!("{prefix}{name}");
            let v = values
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("tensor `{key}` is missing"))?;
            anyhow::ensure!(
                v.dims() == var.dims(),
                "tensor `{key}` has shape {:?}, the model expects {:?}",
                v.dims(),
                var.dims()
            );
            var.set(&v.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

fn draw(init: Init, shape: &Shape, rng: &mut Rng) -> Vec<f32> {
    let n = shape.elem_count();
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => (0..n)
            .map(|_| (mean + stdev * rng.normal()) as f32)
            .collect(),
        Init::Uniform { lo, up } => (0..n)
            .map(|_| (lo + (up - lo) * rng.uniform()) as f32)
            .collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| (std * rng.normal()) as f32).collect(),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n)
                        .map(|_| (bound * (2.0 * rng.uniform() - 1.0)) as f32)
                        .collect()
                }
            }
        }
    }
}

impl SimpleBackend for Params {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars = self.vars.lock().unwrap();
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "parameter `{name}` exists with shape {:?}, asked for {s:?}",
                    v.shape()
                );
            }
            return Ok(v.as_tensor().clone());
        }
        let mut rng = Rng::named(self.seed, name);
        let values = draw(h, &s, &mut rng);
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        match self.vars.lock().unwrap().get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("parameter `{name}` does not exist"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.lock().unwrap().contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_regardless_of_order() -> Result<()> {
        let dev = Device::Cpu;
        let a = Params::new(1);
        let vb = a.var_builder(DType::F32, &dev);
        candle_nn::linear(3, 4, vb.pp("x"))?;
        candle_nn::linear(4, 2, vb.pp("y"))?;
        let b = Params::new(1);
        let vb = b.var_builder(DType::F32, &dev);
        candle_nn::linear(4, 2, vb.pp("y"))?;
        candle_nn::linear(3, 4, vb.pp("x"))?;
        for ((na, ta), (nb, tb)) in a.tensors().iter().zip(b.tensors().iter()) {
            assert_eq!(na, nb);
            assert_eq!(
                ta.flatten_all()?.to_vec1::<f32>()?,
                tb.flatten_all()?.to_vec1::<f32>()?
            );
        }
        Ok(())
    }
}
