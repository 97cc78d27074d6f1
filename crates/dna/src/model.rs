//! The token denoiser for masked diffusion over DNA: the shared 1-D UNet reading one-hot
//! tokens (the four bases and the mask, `5 x L`) and giving `[B, L, 4]` base logits.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use sugarcube_core::cond::CondSpec;
use sugarcube_core::denoiser::{Denoiser, Inputs};
use sugarcube_core::nn::unet::{Dims, UNet, UNetConfig};
use sugarcube_core::rng::Rows;
use sugarcube_core::tensor_util::one_hot;

/// The masked process's time runs over [0, 1]; the UNet's sinusoidal time features are laid
/// out for timestep indices (periods up to 10,000), so the time is scaled by this before them.
pub const TIME_SCALE: f64 = 1000.0;

/// A 1-D UNet over tokens: `[B, L]` u32 tokens in `0..=4` (4 = mask) are one-hot encoded as
/// `[B, 5, L]` channels, and the UNet's `[B, 4, L]` output is returned as `[B, L, 4]` logits.
pub struct TokenUNet {
    unet: UNet,
}

impl TokenUNet {
    /// Builds the network with the UNet table `model` and the condition fields of `cond`.
    pub fn new(vb: VarBuilder, model: &UNetConfig, cond: &CondSpec) -> Result<Self> {
        Ok(Self {
            unet: UNet::new(vb, model, Dims::One, 5, 4, cond)?,
        })
    }

    /// The lengths the UNet's levels need: sequence lengths must be multiples of it.
    pub fn size_multiple(&self) -> usize {
        self.unet.size_multiple()
    }

    fn run(&self, inputs: &Inputs, rows: Option<&mut Rows>) -> Result<Tensor> {
        if inputs.mask.is_some() {
            candle_core::bail!("the DNA token UNet takes no padding mask: its sequences must have one length (crop them)");
        }
        let x = one_hot(inputs.x, 5)?.transpose(1, 2)?.contiguous()?;
        let t = (inputs.time * TIME_SCALE)?;
        let out = self.unet.forward_t(&x, &t, inputs.cond, rows)?;
        out.transpose(1, 2)?.contiguous()
    }
}

impl Denoiser for TokenUNet {
    fn forward(&self, inputs: &Inputs) -> Result<Tensor> {
        self.run(inputs, None)
    }

    fn forward_train(&self, inputs: &Inputs, rows: &mut Rows) -> Result<Tensor> {
        self.run(inputs, Some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn logits_per_position_and_base() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let params = sugarcube_core::params::Params::new(0);
        let model = UNetConfig {
            channels: 16,
            channel_mults: vec![1, 2],
            layers_per_block: 1,
            attention_levels: vec![],
            groups: 4,
            ..Default::default()
        };
        let net = TokenUNet::new(
            params.var_builder(DType::F32, &dev),
            &model,
            &CondSpec::default(),
        )?;
        let x = Tensor::from_vec((0..24u32).map(|i| i % 5).collect::<Vec<_>>(), (2, 12), &dev)?;
        let t = Tensor::new(&[0.5f32, 0.9], &dev)?;
        let out = net.forward(&Inputs::new(&x, &t))?;
        assert_eq!(out.dims(), &[2, 12, 4]);
        assert!(out
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite()));
        Ok(())
    }
}
