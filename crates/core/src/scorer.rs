//! Classifier guidance (Dhariwal and Nichol 2021): a noise-aware [`Classifier`] trained on
//! the same process's noised data (an experiment with `task = "classifier"`), and the
//! [`Scorer`] that hands its gradient `grad_x log p(y | x_t, t)` to the Gaussian samplers
//! (`sugarcube sample --scorer RUN --scorer-scale s`).

use crate::cond::{CondSpec, Condition, FieldKind};
use crate::denoiser::Scorer;
use crate::nn::classifier::Classifier;
use candle_core::{Device, Result, Tensor, Var, D};

/// The categorical field a classifier predicts: `name`, or the spec's only categorical field.
/// Returns its index in the spec and its class names.
pub fn classifier_field(
    spec: &CondSpec,
    name: Option<&str>,
) -> anyhow::Result<(usize, Vec<String>)> {
    let categorical: Vec<(usize, &str, &[String])> = spec
        .fields
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match &f.kind {
            FieldKind::Categorical { classes } => Some((i, f.name.as_str(), classes.as_slice())),
            _ => None,
        })
        .collect();
    let names = || {
        categorical
            .iter()
            .map(|c| c.1)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => {
            let (i, f) = spec
                .field(n)
                .map_err(|e| anyhow::anyhow!("classifier.field: {e}"))?;
            match &f.kind {
                FieldKind::Categorical { classes } => Ok((i, classes.clone())),
                _ => anyhow::bail!("classifier.field = \"{n}\": a classifier predicts a categorical field, and `{n}` is not one (categorical fields: {})", names()),
            }
        }
        None => match categorical.as_slice() {
            [(i, _, classes)] => Ok((*i, classes.to_vec())),
            [] => anyhow::bail!(
                "a classifier needs labelled data: this data has no categorical condition field"
            ),
            _ => anyhow::bail!(
                "the data has several categorical fields ({}): choose one with classifier.field",
                names()
            ),
        },
    }
}

/// `[B, K]` one-hot targets of field `field` (with `K` classes) for each row's condition;
/// a row whose field is null (or of another kind) gets an all-zero row.
pub fn class_targets(
    conds: &[Condition],
    field: usize,
    classes: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut v = vec![0f32; conds.len() * classes];
    for (r, c) in conds.iter().enumerate() {
        if let Some(k) = c.class(field) {
            if (k as usize) < classes {
                v[r * classes + k as usize] = 1.0;
            }
        }
    }
    Tensor::from_vec(v, (conds.len(), classes), device)
}

/// The mean cross-entropy of `[B, K]` logits against one-hot targets, over the rows that
/// have a target.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let n = targets.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    logp.mul(targets)?.sum_all()?.affine(-1.0 / n, 0.0)
}

/// A classifier bound to one batch's targets: the scorer of classifier guidance.
pub struct ClassifierScorer<'a> {
    /// The noise-aware classifier.
    pub classifier: &'a Classifier,
    /// `[B, K]` one-hot target classes.
    pub targets: Tensor,
    /// The batch's padding mask, if any.
    pub mask: Option<Tensor>,
}

impl Scorer for ClassifierScorer<'_> {
    /// `grad_x sum_rows log softmax(classifier(x, t))[y_row]`: each row's gradient is its own
    /// (the classifier treats rows independently).
    fn grad_log_prob(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let x = Var::from_tensor(&x.detach())?;
        let b = x.dim(0)?;
        let time = Tensor::full(t as f32, b, x.device())?;
        let logits = self
            .classifier
            .logits(x.as_tensor(), &time, self.mask.as_ref(), None)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let chosen = logp.mul(&self.targets)?.sum_all()?;
        let grads = chosen.backward()?;
        match grads.get(x.as_tensor()) {
            Some(g) => Ok(g.detach()),
            None => Tensor::zeros_like(x.as_tensor()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cond::{Field, Value};
    use crate::nn::classifier::ClassifierConfig;
    use crate::params::Params;
    use candle_core::DType;

    #[test]
    fn the_field_is_found_or_the_error_says_why() {
        let spec = CondSpec {
            fields: vec![Field::categorical("class", vec!["a".into(), "b".into()])],
        };
        assert_eq!(
            classifier_field(&spec, None).unwrap(),
            (0, vec!["a".to_string(), "b".to_string()])
        );
        let e = classifier_field(&spec, Some("colour"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("classifier.field"), "{e}");
        let e = classifier_field(&CondSpec::default(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no categorical"), "{e}");
    }

    #[test]
    fn the_gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let params = Params::new(2);
        let cfg = ClassifierConfig {
            channels: 8,
            channel_mults: vec![1, 2],
            groups: 4,
            ..Default::default()
        };
        let clf = Classifier::new(params.var_builder(DType::F32, &dev), &cfg, &[1, 4, 4], 3)?;
        let conds = vec![
            Condition(vec![Value::Class(2)]),
            Condition(vec![Value::Class(0)]),
        ];
        let targets = class_targets(&conds, 0, 3, &dev)?;
        let scorer = ClassifierScorer {
            classifier: &clf,
            targets: targets.clone(),
            mask: None,
        };
        let x = Tensor::randn(0f32, 1.0, (2, 1, 4, 4), &dev)?;
        let g = scorer
            .grad_log_prob(&x, 100.0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let f = |x: &Tensor| -> Result<f64> {
            let time = Tensor::full(100f32, 2, &dev)?;
            let logp = candle_nn::ops::log_softmax(
                &clf.logits(x, &time, None, None)?.to_dtype(DType::F64)?,
                D::Minus1,
            )?;
            logp.mul(&targets.to_dtype(DType::F64)?)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        let flat = x.flatten_all()?.to_vec1::<f32>()?;
        for i in [0usize, 5, 17, 31] {
            let h = 1e-2f32;
            let mut p = flat.clone();
            p[i] += h;
            let mut m = flat.clone();
            m[i] -= h;
            let fp = f(&Tensor::from_vec(p, (2, 1, 4, 4), &dev)?)?;
            let fm = f(&Tensor::from_vec(m, (2, 1, 4, 4), &dev)?)?;
            let fd = (fp - fm) / (2.0 * h as f64);
            assert!(
                (fd - g[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()),
                "element {i}: autograd {} vs finite difference {fd}",
                g[i]
            );
        }
        Ok(())
    }
}
