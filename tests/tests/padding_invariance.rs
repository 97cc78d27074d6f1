//! Padding masks and per-sample lengths: a sample's values at its real positions do not depend
//! on the padding around it. A transformer denoiser with relative positions (FoldingDiff's) is
//! sampled through the Gaussian process with DDPM (per-step noise) and with a padding mask:
//! a row of length 5 gives the same values alone, padded to 9 beside a longer row, and padded to
//! 12; and a masked loss ignores what sits in the padding.

use candle_core::{DType, Device, Tensor};
use sugarcube_core::cond::CondSpec;
use sugarcube_core::denoiser::Guided;
use sugarcube_core::nn::{SequenceTransformer, TransformerConfig};
use sugarcube_core::params::Params;
use sugarcube_core::process::{GaussianConfig, GaussianProcess, Process, SampleJob};
use sugarcube_core::rng::Rows;
use sugarcube_core::sampler::SampleConfig;
use sugarcube_core::tensor_util::position_mask;

/// Samples rows `first..first + lengths.len()` with the given lengths, padded to `pad`.
fn sample(
    net: &SequenceTransformer,
    first: usize,
    lengths: &[usize],
    pad: usize,
) -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
    let dev = Device::Cpu;
    let b = lengths.len();
    let shape = [b, pad, 3];
    let mask = position_mask(lengths, &shape[1..], 0, &dev)?.reshape((b, pad))?;
    let guided = Guided::new(net, &CondSpec::default(), &[], &[], b, Some(mask), &dev)?;
    let process = GaussianProcess::new(GaussianConfig::default())?;
    let cfg = SampleConfig {
        sampler: Some("ddpm".into()),
        steps: 10,
        ..Default::default()
    };
    let mut rows = Rows::new(7, first, b).with_lengths(lengths.to_vec(), 0);
    let x = process.sample(SampleJob {
        cfg: &cfg,
        model: &guided,
        rows: &mut rows,
        shape: &shape,
        device: &dev,
        scorer: None,
        edit: None,
        noise: None,
        obs: &mut |_| {},
    })?;
    Ok(x.to_vec3::<f32>()?)
}

#[test]
fn samples_do_not_change_with_their_padding() -> anyhow::Result<()> {
    let params = Params::new(3);
    let cfg = TransformerConfig {
        hidden: 16,
        layers: 2,
        heads: 2,
        intermediate: 32,
        max_len: 12,
        dropout: 0.0,
        ..TransformerConfig::default()
    };
    let net = SequenceTransformer::new(
        params.var_builder(DType::F32, &Device::Cpu),
        &cfg,
        3,
        &CondSpec::default(),
    )?;
    let alone = sample(&net, 0, &[5], 5)?;
    let beside = sample(&net, 0, &[5, 9], 9)?;
    let padded = sample(&net, 0, &[5], 12)?;
    let worst = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .flat_map(|(p, q)| p.iter().zip(q).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max)
    };
    let (d1, d2) = (
        worst(&alone[0], &beside[0][..5]),
        worst(&alone[0], &padded[0][..5]),
    );
    eprintln!(
        "largest difference at real positions: beside a longer row {d1:e}, padded to 12 {d2:e}"
    );
    // float rounding only: the matrix products of a 5- and a 12-position row may take
    // different kernel paths (exactly equal on AVX-512 machines, 2.4e-6 apart on AVX2 ones),
    // and beside another row the batched products round differently again
    assert!(
        d2 < 1e-5 && d1 < 1e-4,
        "padding changed a sample: {d1} {d2}"
    );
    // the longer row is the same whatever row it sits beside
    let long_alone = sample(&net, 1, &[9], 9)?;
    assert!(worst(&long_alone[0], &beside[1]) < 1e-4);
    // padded positions stay at zero noise... and are not all equal to the real ones
    assert!(padded[0][5..].iter().flatten().all(|v| v.is_finite()));
    assert!(
        worst(&alone[0], &beside[1][..5]) > 1e-3,
        "different rows must differ"
    );
    Ok(())
}

#[test]
fn the_masked_loss_ignores_the_padding() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let process = GaussianProcess::new(GaussianConfig::default())?;
    let x0 = Tensor::ones((2, 6, 3), DType::F32, &dev)?;
    let mask = position_mask(&[4, 6], &[6, 3], 0, &dev)?;
    let mut rows = Rows::new(1, 0, 2).with_lengths(vec![4, 6], 0);
    let c = process.corrupt(&x0, &mut rows)?;
    let out = c.target.clone();
    // a perfect prediction at real positions and garbage in the padding: zero loss
    let garbage = out.narrow(1, 4, 2)?.affine(0.0, 1e6)?;
    let row0 = Tensor::cat(&[&out.narrow(1, 0, 4)?, &garbage], 1)?;
    let out = Tensor::cat(&[&row0.narrow(0, 0, 1)?, &out.narrow(0, 1, 1)?], 0)?;
    let l = process.loss(&out, &c, Some(&mask))?.to_scalar::<f32>()?;
    assert!(l.abs() < 1e-10, "{l}");
    assert!(process.loss(&out, &c, None)?.to_scalar::<f32>()? > 1e6);
    Ok(())
}
