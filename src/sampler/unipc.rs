//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
//! Diffusion Models", Algorithms 1-2 / UniP-p and UniC-p with B(h) = e^h - 1, "bh2"), in data
//! prediction form, as diffusers' `UniPCMultistepScheduler` runs it with `predict_x0 = true`,
//! `solver_type = "bh2"`, `lower_order_final = true`, `disable_corrector = []`,
//! `final_sigmas_type = "zero"`.
//!
//! Each step i: evaluate the model at the predicted x_i (x0 prediction m_i), correct x_i with UniC
//! using m_i (except at i = 0), then predict x_{i+1} from the corrected x_i with UniP. The model
//! output kept for later steps is the one at the *uncorrected* x_i, as in the paper and diffusers;
//! the final prediction is not corrected (that would cost one more evaluation), so N steps cost N
//! evaluations. UniP-2 with bh2 equals DPM-Solver++(2M).
//!
//! No noise, no clipping, no state kept between calls.

use super::run::{store, Run};
use super::SampleError;
use crate::schedule::{NoiseLevel, NoiseSchedule};

/// UniPC-bh2 of order `order` (diffusers' `solver_order`, 2 by default) over the integer
/// timesteps `ts`, ending at clean data. Predictor order at step i:
/// `min(order, N - i, i + 1)`; the corrector at step i uses the predictor order of step i-1.
pub(crate) fn unipc_bh2(run: &mut Run, sched: &NoiseSchedule, ts: &[usize], order: usize, x: &mut [f32]) -> Result<(), SampleError> {
    let n = ts.len();
    let levels: Vec<NoiseLevel> = ts.iter().map(|&t| NoiseLevel::from_abar(sched.alphas_cumprod()[t])).chain([NoiseLevel::CLEAN]).collect();
    let lambdas: Vec<f64> = levels.iter().map(|l| l.lambda()).collect();
    // x0 predictions m_i, m_{i-1}, ... (newest first), at most `order` kept.
    let mut m: Vec<Vec<f64>> = Vec::with_capacity(order + 1);
    // x_{i-1} (corrected) and the predictor order used from it.
    let mut last: Option<(Vec<f32>, usize)> = None;
    for (i, &t) in ts.iter().enumerate() {
        let pred = run.predict(x, t as f64, levels[i], i)?;
        if let Some((x_last, p)) = &last {
            // UniC-p: correct the step (i-1 -> i) with the new model output m_i.
            let corrected = uni_c(x_last, &levels, &lambdas, i - 1, *p, &m, &pred.x0);
            store(x, corrected);
        }
        m.insert(0, pred.x0);
        m.truncate(order);

        let p = order.min(n - i).min(m.len());
        let next = uni_p(x, &levels, &lambdas, i, p, &m);
        last = Some((x.to_vec(), p));
        store(x, next);
        let t_next = ts.get(i + 1).map_or(-1.0, |&q| q as f64);
        run.finish_step(i, n, t as f64, t_next, pred.gate)?;
    }
    Ok(())
}

/// The B(h) coefficients of UniPC with hh = -h (data prediction): `h phi_1 = e^{hh} - 1`,
/// `B(h) = e^{hh} - 1` (bh2), and the right-hand side `b_k = h phi_{k+1}(hh) k! / B(h)`,
/// k = 1..=p, with `phi_{k+1}` from the recursion `phi_{k+1} = (phi_k - 1/k!)/hh`.
struct Bh2 {
    h_phi_1: f64,
    b_h: f64,
    b: Vec<f64>,
}

fn bh2(h: f64, p: usize) -> Bh2 {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1.0;
    let mut b = Vec::with_capacity(p);
    for k in 1..=p {
        b.push(h_phi_k * factorial / b_h);
        factorial *= (k + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    Bh2 { h_phi_1, b_h, b }
}

/// The ratios `r_k = (lambda_{s_k} - lambda_s0)/h` (k = 1..p-1, looking back from step `s0`) and
/// the differences `D1_k = (m_k - m0)/r_k`, per element: returns (r, D1 row-major [k][j]).
fn differences(lambdas: &[f64], s0: usize, h: f64, p: usize, m: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    (1..p)
        .map(|k| {
            let r = (lambdas[s0 - k] - lambdas[s0]) / h;
            let d: Vec<f64> = m[k].iter().zip(&m[0]).map(|(mk, m0)| (mk - m0) / r).collect();
            (r, d)
        })
        .unzip()
}

/// UniP-p (predictor) from step `s0` to `s0 + 1`, data prediction:
/// `x_t = (sigma_t/sigma_s0) x - alpha_t h phi_1 m0 - alpha_t B(h) sum_k rho_k D1_k`,
/// with rho = 0.5 for p = 2 and rho solving `R[:-1,:-1] rho = b[:-1]` for p > 2.
fn uni_p(x: &[f32], levels: &[NoiseLevel], lambdas: &[f64], s0: usize, p: usize, m: &[Vec<f64>]) -> Vec<f64> {
    let (ls0, lt) = (levels[s0], levels[s0 + 1]);
    let h = lambdas[s0 + 1] - lambdas[s0];
    let c = bh2(h, p);
    let (r, d1) = differences(lambdas, s0, h, p, m);
    let rho: Vec<f64> = match p {
        0 | 1 => Vec::new(),
        2 => vec![0.5],
        _ => solve(vandermonde(&r, p - 1), c.b[..p - 1].to_vec()),
    };
    (0..x.len())
        .map(|j| {
            let base = lt.sigma / ls0.sigma * x[j] as f64 - lt.alpha * c.h_phi_1 * m[0][j];
            let res: f64 = rho.iter().zip(&d1).map(|(rk, dk)| rk * dk[j]).sum();
            base - lt.alpha * c.b_h * res
        })
        .collect()
}

/// UniC-p (corrector) of the step `s0 -> s0 + 1` taken from `x_last`, given the model's x0
/// prediction `m_t` at the predicted point: rho solves `R rho = b` (rho = 0.5 for p = 1) and
/// `x_t = (sigma_t/sigma_s0) x_last - alpha_t h phi_1 m0
///        - alpha_t B(h) (sum_{k<p} rho_k D1_k + rho_p (m_t - m0))`.
fn uni_c(x_last: &[f32], levels: &[NoiseLevel], lambdas: &[f64], s0: usize, p: usize, m: &[Vec<f64>], m_t: &[f64]) -> Vec<f64> {
    let (ls0, lt) = (levels[s0], levels[s0 + 1]);
    let h = lambdas[s0 + 1] - lambdas[s0];
    let c = bh2(h, p);
    let (r, d1) = differences(lambdas, s0, h, p, m);
    let rho = if p == 1 {
        vec![0.5]
    } else {
        let mut rks = r.clone();
        rks.push(1.0);
        solve(vandermonde(&rks, p), c.b.clone())
    };
    let rho_t = rho[rho.len() - 1];
    (0..x_last.len())
        .map(|j| {
            let base = lt.sigma / ls0.sigma * x_last[j] as f64 - lt.alpha * c.h_phi_1 * m[0][j];
            let res: f64 = rho.iter().zip(&d1).map(|(rk, dk)| rk * dk[j]).sum();
            base - lt.alpha * c.b_h * (res + rho_t * (m_t[j] - m[0][j]))
        })
        .collect()
}

/// The p x p matrix `R[i][k] = r_k^i` (rows i = 0..p; columns the first p ratios).
fn vandermonde(r: &[f64], p: usize) -> Vec<Vec<f64>> {
    (0..p).map(|i| r[..p].iter().map(|rk| rk.powi(i as i32)).collect()).collect()
}

/// Solves the small dense system `a y = b` by Gaussian elimination with partial pivoting
/// (p <= 3 here; the matrix is a Vandermonde matrix of distinct ratios, so it is regular).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut y = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * y[k]).sum();
        y[row] = (b[row] - s) / a[row][row];
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_small_systems() {
        let a = vec![vec![2.0, 1.0, -1.0], vec![-3.0, -1.0, 2.0], vec![-2.0, 1.0, 2.0]];
        let y = solve(a, vec![8.0, -11.0, -3.0]);
        for (yi, e) in y.iter().zip([2.0, 3.0, -1.0]) {
            assert!((yi - e).abs() < 1e-12, "{y:?}");
        }
    }

    #[test]
    fn bh2_coefficients_match_closed_form() {
        // b_1 = (e^{hh} - 1 - hh)/hh / B(h), b_2 = 2 ((e^{hh} - 1 - hh)/hh^2 - 1/2) / B(h).
        let h = 0.7;
        let hh = -h;
        let c = bh2(h, 2);
        let bh = hh.exp_m1();
        assert!((c.b[0] - (hh.exp_m1() / hh - 1.0) / bh).abs() < 1e-14);
        let phi3 = (hh.exp_m1() / hh - 1.0) / hh - 0.5;
        assert!((c.b[1] - 2.0 * phi3 / bh).abs() < 1e-14);
    }
}
