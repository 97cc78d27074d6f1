//! Mel spectra back to linear spectra by non-negative least squares: for each frame `y`,
//! `x = argmin ||F x - y||^2` over `x >= 0`, `F` the filterbank. The start is the minimum-norm
//! least-squares solution `F^T (F F^T)^-1 y` (what `torch.linalg.lstsq` gives, torchaudio's
//! `InverseMelScale`) clipped at zero, then accelerated projected gradient (FISTA, step
//! `1 / L` with `L >= ||F F^T||` from Gershgorin's bound) keeps it non-negative while
//! lowering the residual. `F` is sparse (each bin lies under at most two triangles), so an
//! iteration costs two passes over the filters' weights.

use crate::mel::MelBank;
use anyhow::Context;
use nalgebra::{Cholesky, DMatrix, DVector, Dyn};
use rayon::prelude::*;

/// A planned inverse of one filterbank.
#[derive(Clone, Debug)]
pub struct InverseMel {
    bank: MelBank,
    gram: Cholesky<f64, Dyn>,
    lipschitz: f32,
    /// Projected-gradient iterations after the least-squares start.
    pub iterations: usize,
}

impl InverseMel {
    /// Plans the inverse of `bank` with `iterations` refining steps.
    pub fn new(bank: MelBank, iterations: usize) -> anyhow::Result<Self> {
        let _t = sugarcube_core::profile::scope("inverse_mel_plan");
        let m = bank.n_mels();
        let mut g = DMatrix::<f64>::zeros(m, m);
        for i in 0..m {
            let (ai, wi) = &bank.filters[i];
            for j in i..m {
                let (aj, wj) = &bank.filters[j];
                let (lo, hi) = ((*ai).max(*aj), (ai + wi.len()).min(aj + wj.len()));
                if lo >= hi {
                    if *aj >= ai + wi.len() {
                        break;
                    }
                    continue;
                }
                let v: f64 = (lo..hi)
                    .map(|k| wi[k - ai] as f64 * wj[k - aj] as f64)
                    .sum();
                g[(i, j)] = v;
                g[(j, i)] = v;
            }
        }
        let lipschitz = (0..m)
            .map(|i| g.row(i).iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max)
            .max(1e-12) as f32;
        // empty filters (more filters than bins can separate) make F F^T singular
        let ridge = 1e-9 * (0..m).map(|i| g[(i, i)]).fold(0.0, f64::max).max(1e-12);
        for i in 0..m {
            g[(i, i)] += ridge;
        }
        let gram =
            Cholesky::new(g).context("the filterbank's Gram matrix is not positive definite")?;
        Ok(Self {
            bank,
            gram,
            lipschitz,
            iterations,
        })
    }

    /// The filterbank.
    pub fn bank(&self) -> &MelBank {
        &self.bank
    }

    /// One frame of mel values to `n_freqs` non-negative linear values.
    pub fn frame(&self, y: &[f32]) -> Vec<f32> {
        let bank = &self.bank;
        let z = self.gram.solve(&DVector::from_iterator(
            y.len(),
            y.iter().map(|&v| v as f64),
        ));
        let z: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        let mut x = vec![0f32; bank.n_freqs];
        bank.transpose_frame(&z, &mut x);
        x.iter_mut().for_each(|v| *v = v.max(0.0));
        let mut v = x.clone();
        let mut t = 1f32;
        let (mut r, mut g) = (vec![0f32; y.len()], vec![0f32; bank.n_freqs]);
        let step = 1.0 / self.lipschitz;
        for _ in 0..self.iterations {
            bank.apply_frame(&v, &mut r);
            r.iter_mut().zip(y).for_each(|(a, b)| *a -= b);
            bank.transpose_frame(&r, &mut g);
            let t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
            let beta = (t - 1.0) / t_next;
            for k in 0..x.len() {
                let new = (v[k] - step * g[k]).max(0.0);
                v[k] = new + beta * (new - x[k]);
                x[k] = new;
            }
            t = t_next;
        }
        x
    }

    /// Every frame of `mel` (`[frame][n_mels]`) to `[frame][n_freqs]`, frames in parallel.
    pub fn apply(&self, mel: &[f32]) -> Vec<f32> {
        let m = self.bank.n_mels();
        mel.par_chunks(m).flat_map_iter(|f| self.frame(f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mel::{MelNorm, MelScale};

    #[test]
    fn recovers_what_the_filters_can_see() {
        let bank = MelBank::new(16000, 512, 40, 0.0, 8000.0, MelScale::Htk, MelNorm::None).unwrap();
        let x: Vec<f32> = (0..257)
            .map(|k| 1.0 + (k as f32 * 0.1).sin().abs())
            .collect();
        let mut y = vec![0f32; 40];
        bank.apply_frame(&x, &mut y);
        let inv = InverseMel::new(bank.clone(), 200).unwrap();
        let est = inv.frame(&y);
        assert!(est.iter().all(|v| *v >= 0.0));
        let mut back = vec![0f32; 40];
        bank.apply_frame(&est, &mut back);
        let rel = back
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt()
            / y.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(rel < 1e-3, "residual {rel}");
    }

    #[test]
    fn refining_lowers_the_residual_of_clipped_least_squares() {
        let bank = MelBank::new(16000, 512, 64, 0.0, 8000.0, MelScale::Htk, MelNorm::None).unwrap();
        // a sparse, peaky spectrum: the min-norm solution goes negative between peaks
        let x: Vec<f32> = (0..257)
            .map(|k| if k % 17 == 0 { 5.0 } else { 0.0 })
            .collect();
        let mut y = vec![0f32; 64];
        bank.apply_frame(&x, &mut y);
        let res = |iters| {
            let e = InverseMel::new(bank.clone(), iters).unwrap().frame(&y);
            let mut b = vec![0f32; 64];
            bank.apply_frame(&e, &mut b);
            b.iter().zip(&y).map(|(a, c)| (a - c).powi(2)).sum::<f32>()
        };
        assert!(res(100) < 0.5 * res(0), "{} vs {}", res(100), res(0));
    }
}
