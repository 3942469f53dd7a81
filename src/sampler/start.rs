//! Starting states for schedules that do not reach pure noise.
//!
//! The reference 2D models were trained with T = 100 linear betas 1e-4..0.02, which end at
//! abar_T = 0.364: the forward process there is `x_T = 0.603 x0 + 0.797 eps`, not N(0, I). Sampling
//! from N(0, I) (what the published code did) starts off the distribution the model was trained on.
//! Given the data's mean m and covariance C, the Gaussian with the same first two moments as
//! q(x_T) is `N(sqrt(abar) m, abar C + (1 - abar) I)`; these functions map unit noise z onto it,
//! `x = sqrt(abar) m + L z` with `L L^T = abar C + (1 - abar) I` (Cholesky, f64).
//!
//! Pure math on caller-provided noise: no RNG, no IO, no model.

use super::SampleError;

/// The distribution a run's starting state x_T is drawn from, given unit Gaussian noise z.
#[derive(Debug, Clone, PartialEq)]
pub enum StartDistribution {
    /// `x = z`: N(0, I), what diffusers does; right when the schedule reaches pure noise.
    Unit,
    /// The data's mean and full covariance pushed through the forward process to `abar`
    /// ([`start_from_data_moments`]); samples of at most [`MAX_FULL_COV_DIM`] values.
    DataMoments { abar: f64, mean: Vec<f64>, cov: Vec<Vec<f64>> },
    /// The data's mean and per-coordinate variances pushed to `abar` ([`start_from_data_diag`]);
    /// any sample length (images).
    DataDiag { abar: f64, mean: Vec<f64>, var: Vec<f64> },
}

impl StartDistribution {
    /// `unit` or `data`, as the recipe records it.
    pub fn name(&self) -> &'static str {
        match self {
            StartDistribution::Unit => "unit",
            StartDistribution::DataMoments { .. } | StartDistribution::DataDiag { .. } => "data",
        }
    }

    /// Maps unit noise `z` (n samples of `sample_len` values) onto this distribution, in place.
    pub fn apply(&self, z: &mut [f32], sample_len: usize) -> Result<(), SampleError> {
        match self {
            StartDistribution::Unit => Ok(()),
            StartDistribution::DataMoments { abar, mean, cov } => start_from_data_moments(z, sample_len, *abar, mean, cov),
            StartDistribution::DataDiag { abar, mean, var } => start_from_data_diag(z, sample_len, *abar, mean, var),
        }
    }
}

/// Largest sample length [`start_from_data_moments`] takes a full covariance for; longer samples
/// (images) use per-coordinate variances ([`start_from_data_diag`]).
pub const MAX_FULL_COV_DIM: usize = 16;

fn check_common(z: &[f32], sample_len: usize, abar: f64, mean: &[f64]) -> Result<(), SampleError> {
    if sample_len == 0 || z.len() % sample_len != 0 {
        return Err(SampleError::Config(format!(
            "noise has {} values, not a multiple of the sample length {sample_len}; pass n * {sample_len} values",
            z.len()
        )));
    }
    if !(abar.is_finite() && abar > 0.0 && abar <= 1.0) {
        return Err(SampleError::Config(format!("abar = {abar} must be in (0, 1]; take it from the schedule at the first timestep")));
    }
    if mean.len() != sample_len || mean.iter().any(|m| !m.is_finite()) {
        return Err(SampleError::Config(format!(
            "data mean must have {sample_len} finite values, got {}; recompute the data moments",
            mean.len()
        )));
    }
    Ok(())
}

/// Turns unit Gaussian noise `z` (n samples of `sample_len` values) into
/// `x_t ~ N(sqrt(abar) mean, abar cov + (1 - abar) I)` per sample, in place. `cov` is the data's
/// full covariance (`sample_len` rows of `sample_len`, symmetric positive semi-definite);
/// `sample_len` may be at most [`MAX_FULL_COV_DIM`].
pub fn start_from_data_moments(z: &mut [f32], sample_len: usize, abar: f64, mean: &[f64], cov: &[Vec<f64>]) -> Result<(), SampleError> {
    if sample_len > MAX_FULL_COV_DIM {
        return Err(SampleError::Config(format!(
            "a full data covariance is supported up to {MAX_FULL_COV_DIM} dimensions, samples have {sample_len}; pass per-coordinate variances (start_from_data_diag)"
        )));
    }
    check_common(z, sample_len, abar, mean)?;
    let d = sample_len;
    if cov.len() != d || cov.iter().any(|row| row.len() != d || row.iter().any(|c| !c.is_finite())) {
        return Err(SampleError::Config(format!("data covariance must be {d} x {d} finite values; recompute the data moments")));
    }
    let scale = cov.iter().enumerate().map(|(i, row)| row[i].abs()).fold(1.0, f64::max);
    let asymmetric = (0..d).flat_map(|i| (0..i).map(move |j| (i, j))).find(|&(i, j)| (cov[i][j] - cov[j][i]).abs() > 1e-9 * scale);
    if let Some((i, j)) = asymmetric {
        return Err(SampleError::Config(format!(
            "data covariance is not symmetric (cov[{i}][{j}] = {}, cov[{j}][{i}] = {}); recompute the data moments",
            cov[i][j], cov[j][i]
        )));
    }
    let target: Vec<Vec<f64>> =
        (0..d).map(|i| (0..d).map(|j| abar * cov[i][j] + if i == j { 1.0 - abar } else { 0.0 }).collect()).collect();
    let l = cholesky(&target).ok_or_else(|| {
        SampleError::Config(
            "abar * cov + (1 - abar) I is not positive definite (the data covariance has negative eigenvalues); recompute the data moments"
                .to_string(),
        )
    })?;
    let shift: Vec<f64> = mean.iter().map(|m| abar.sqrt() * m).collect();
    for chunk in z.chunks_mut(d) {
        let zs: Vec<f64> = chunk.iter().map(|&v| v as f64).collect();
        for (i, out) in chunk.iter_mut().enumerate() {
            let lz: f64 = (0..=i).map(|k| l[i][k] * zs[k]).sum();
            *out = (shift[i] + lz) as f32;
        }
    }
    Ok(())
}

/// As [`start_from_data_moments`] with a diagonal covariance `var` (per-coordinate variances of
/// the data), any sample length: `x_j = sqrt(abar) mean_j + sqrt(abar var_j + 1 - abar) z_j`.
pub fn start_from_data_diag(z: &mut [f32], sample_len: usize, abar: f64, mean: &[f64], var: &[f64]) -> Result<(), SampleError> {
    check_common(z, sample_len, abar, mean)?;
    if var.len() != sample_len || var.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(SampleError::Config(format!(
            "data variances must be {sample_len} finite values >= 0, got {}; recompute the data moments",
            var.len()
        )));
    }
    let std: Vec<f64> = var.iter().map(|v| (abar * v + 1.0 - abar).sqrt()).collect();
    for chunk in z.chunks_mut(sample_len) {
        for ((out, m), s) in chunk.iter_mut().zip(mean).zip(&std) {
            *out = (abar.sqrt() * m + s * *out as f64) as f32;
        }
    }
    Ok(())
}

/// Lower-triangular L with `L L^T = a`, or `None` when `a` is not positive definite.
fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d.is_nan() || d <= 0.0 {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_noise(n: usize, seed: u64) -> Vec<f32> {
        crate::sampler::testing::normals(seed, 0, 0, n)
    }

    #[test]
    fn cholesky_reconstructs() {
        let a = vec![vec![4.0, 2.0, 0.6], vec![2.0, 5.0, 1.0], vec![0.6, 1.0, 3.0]];
        let l = cholesky(&a).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i][k] * l[j][k]).sum();
                assert!((v - a[i][j]).abs() < 1e-12);
            }
        }
        assert!(cholesky(&[vec![1.0, 2.0], vec![2.0, 1.0]]).is_none());
    }

    #[test]
    fn moments_of_the_start_state() {
        let (abar, mean, cov) = (0.364, [1.0, -2.0], vec![vec![0.5, 0.3], vec![0.3, 2.0]]);
        let n = 200_000;
        let mut z = gaussian_noise(2 * n, 7);
        start_from_data_moments(&mut z, 2, abar, &mean, &cov).unwrap();
        let (mut m, mut c) = ([0.0f64; 2], [[0.0f64; 2]; 2]);
        for p in z.chunks(2) {
            for i in 0..2 {
                m[i] += p[i] as f64 / n as f64;
            }
        }
        for p in z.chunks(2) {
            for i in 0..2 {
                for j in 0..2 {
                    c[i][j] += (p[i] as f64 - m[i]) * (p[j] as f64 - m[j]) / n as f64;
                }
            }
        }
        for i in 0..2 {
            assert!((m[i] - abar.sqrt() * mean[i]).abs() < 0.01, "mean {m:?}");
            for j in 0..2 {
                let expect = abar * cov[i][j] + if i == j { 1.0 - abar } else { 0.0 };
                assert!((c[i][j] - expect).abs() < 0.02, "cov {c:?}");
            }
        }
    }

    #[test]
    fn diag_matches_full_with_diagonal_cov() {
        let z0 = gaussian_noise(8, 3);
        let (mut a, mut b) = (z0.clone(), z0);
        start_from_data_moments(&mut a, 2, 0.5, &[0.1, 0.2], &[vec![2.0, 0.0], vec![0.0, 0.3]]).unwrap();
        start_from_data_diag(&mut b, 2, 0.5, &[0.1, 0.2], &[2.0, 0.3]).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn start_distribution_dispatches_to_the_maps() {
        let z0 = gaussian_noise(40, 5);
        let mut unit = z0.clone();
        StartDistribution::Unit.apply(&mut unit, 20).unwrap();
        assert_eq!(unit, z0);
        let (mean, var) = (vec![0.5; 20], vec![2.0; 20]);
        let mut diag = z0.clone();
        let dist = StartDistribution::DataDiag { abar: 0.3, mean: mean.clone(), var: var.clone() };
        dist.apply(&mut diag, 20).unwrap();
        let mut direct = z0;
        start_from_data_diag(&mut direct, 20, 0.3, &mean, &var).unwrap();
        assert_eq!(diag, direct);
        assert_eq!(dist.name(), "data");
        assert_eq!(StartDistribution::Unit.name(), "unit");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut z = vec![0.0f32; 6];
        let cov2 = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert!(start_from_data_moments(&mut z, 4, 0.5, &[0.0; 4], &cov2).is_err());
        assert!(start_from_data_moments(&mut z, 2, 0.0, &[0.0; 2], &cov2).is_err());
        assert!(start_from_data_moments(&mut z, 2, 0.5, &[0.0; 3], &cov2).is_err());
        let asym = vec![vec![1.0, 0.5], vec![0.0, 1.0]];
        assert!(start_from_data_moments(&mut z, 2, 0.5, &[0.0; 2], &asym).is_err());
        let negative = vec![vec![-5.0, 0.0], vec![0.0, 1.0]];
        assert!(start_from_data_moments(&mut z, 2, 0.5, &[0.0; 2], &negative).is_err());
        let mut big = vec![0.0f32; 17];
        let e = start_from_data_moments(&mut big, 17, 0.5, &[0.0; 17], &[]).unwrap_err();
        assert!(e.to_string().contains("start_from_data_diag"), "{e}");
        assert!(start_from_data_diag(&mut big, 17, 0.5, &[0.0; 17], &[1.0; 17]).is_ok());
        assert!(start_from_data_diag(&mut z, 2, 0.5, &[0.0; 2], &[-1.0, 1.0]).is_err());
        // abar = 1 with a singular covariance cannot be factored.
        assert!(start_from_data_moments(&mut z, 2, 1.0, &[0.0; 2], &[vec![1.0, 1.0], vec![1.0, 1.0]]).is_err());
    }
}
