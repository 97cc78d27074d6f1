//! The Fréchet distance between Gaussians fitted to two sets of feature vectors (the FID formula,
//! here in the feature space of the dataset's own classifier):
//! `|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`.

/// Mean and covariance (divided by n - 1) of `rows` feature vectors of length `dim`.
pub fn moments(features: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = features.len() / dim;
    let mut mean = vec![0.0; dim];
    for row in features.chunks(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; dim * dim];
    let mut centred = vec![0.0; dim];
    for row in features.chunks(dim) {
        for i in 0..dim {
            centred[i] = row[i] as f64 - mean[i];
        }
        for i in 0..dim {
            let ci = centred[i];
            for j in i..dim {
                cov[i * dim + j] += ci * centred[j];
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / denom;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    (mean, cov)
}

/// Eigenvalues and eigenvectors (columns of the returned row-major matrix) of a symmetric
/// matrix (nalgebra's symmetric QR algorithm).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let e = nalgebra::DMatrix::from_row_slice(n, n, a).symmetric_eigen();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            v[i * n + k] = e.eigenvectors[(i, k)];
        }
    }
    (e.eigenvalues.iter().copied().collect(), v)
}

/// The symmetric square root of a positive semi-definite matrix (negative eigenvalues from
/// rounding are clamped to 0).
pub fn sqrt_psd(a: &[f64], n: usize) -> Vec<f64> {
    let (w, v) = symmetric_eigen(a, n);
    let v = nalgebra::DMatrix::from_row_slice(n, n, &v);
    let d = nalgebra::DMatrix::from_diagonal(&nalgebra::DVector::from_iterator(
        n,
        w.iter().map(|x| x.max(0.0).sqrt()),
    ));
    let out = &v * d * v.transpose();
    (0..n * n).map(|k| out[(k / n, k % n)]).collect()
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let out =
        nalgebra::DMatrix::from_row_slice(n, n, a) * nalgebra::DMatrix::from_row_slice(n, n, b);
    (0..n * n).map(|k| out[(k / n, k % n)]).collect()
}

/// The Fréchet distance between two Gaussians. `Tr((S_a S_b)^(1/2))` is computed as
/// `Tr((R S_b R)^(1/2))` with `R = S_a^(1/2)`, which is symmetric and so numerically stable.
pub fn frechet_distance(mu_a: &[f64], cov_a: &[f64], mu_b: &[f64], cov_b: &[f64]) -> f64 {
    let n = mu_a.len();
    let mean_term: f64 = mu_a.iter().zip(mu_b).map(|(a, b)| (a - b).powi(2)).sum();
    let r = sqrt_psd(cov_a, n);
    let m = matmul(&matmul(&r, cov_b, n), &r, n);
    let (w, _) = symmetric_eigen(&m, n);
    let tr_sqrt: f64 = w.iter().map(|x| x.max(0.0).sqrt()).sum();
    let tr: f64 = (0..n).map(|i| cov_a[i * n + i] + cov_b[i * n + i]).sum();
    (mean_term + tr - 2.0 * tr_sqrt).max(0.0)
}

/// The Fréchet distance between two sets of `dim`-dimensional features.
pub fn frechet_between(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let (ma, ca) = moments(a, dim);
    let (mb, cb) = moments(b, dim);
    frechet_distance(&ma, &ca, &mb, &cb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_reconstructs() {
        let a = vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (w, v) = symmetric_eigen(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|k| v[i * 3 + k] * w[k] * v[j * 3 + k]).sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-10);
            }
        }
        let s = sqrt_psd(&a, 3);
        let back = matmul(&s, &s, 3);
        for (x, y) in back.iter().zip(&a) {
            assert!((x - y).abs() < 1e-10);
        }
    }

    #[test]
    fn frechet_of_known_gaussians() {
        // diagonal covariances: sum (sqrt(a) - sqrt(b))^2 plus the mean term
        let (ma, mb) = (vec![0.0, 1.0], vec![1.0, 1.0]);
        let ca = vec![4.0, 0.0, 0.0, 1.0];
        let cb = vec![1.0, 0.0, 0.0, 9.0];
        let d = frechet_distance(&ma, &ca, &mb, &cb);
        let expected = 1.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((d - expected).abs() < 1e-9, "{d} vs {expected}");
        assert!(frechet_distance(&ma, &ca, &ma, &ca).abs() < 1e-9);
    }
}
