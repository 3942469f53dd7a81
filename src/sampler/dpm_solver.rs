//! DPM-Solver++ multistep, orders 2 and 3 (Lu et al. 2022b, "DPM-Solver++: Fast Solver for
//! Guided Sampling of Diffusion Probabilistic Models", Algorithm 2 for 2M; 3M as in the authors'
//! code), data-prediction form, as diffusers' `DPMSolverMultistepScheduler` runs it with
//! `algorithm_type = "dpmsolver++"`, `solver_type = "midpoint"`, `lower_order_final = true`,
//! `final_sigmas_type = "zero"`.
//!
//! Notation: lambda = ln(alpha/sigma), h = lambda_t - lambda_s0, m_k the x0 predictions at the
//! last timesteps s0, s1, s2 (newest first), r_k = h_k / h. The previous x0 predictions are
//! passed along as plain data inside the loop; no scheduler object, no noise, no clipping.

use super::run::{store, Run};
use super::SampleError;
use crate::schedule::{NoiseLevel, NoiseSchedule};

/// DPM-Solver++(order M) over the integer timesteps `ts`, ending at clean data.
/// Order per step (diffusers' rule): 1 at the first step and at the last (`final_sigmas_type =
/// "zero"` always forces it), at most the number of x0 predictions available, and for order 3 the
/// second-to-last step uses order 2 when N < 15.
pub(crate) fn dpmpp_multistep(run: &mut Run, sched: &NoiseSchedule, ts: &[usize], order: usize, x: &mut [f32]) -> Result<(), SampleError> {
    let n = ts.len();
    let levels: Vec<NoiseLevel> = ts.iter().map(|&t| NoiseLevel::from_abar(sched.alphas_cumprod()[t])).chain([NoiseLevel::CLEAN]).collect();
    // x0 predictions m_i, m_{i-1}, ... (newest first), at most `order` kept.
    let mut m: Vec<Vec<f64>> = Vec::with_capacity(order);
    for (i, &t) in ts.iter().enumerate() {
        let pred = run.predict(x, t as f64, levels[i], i)?;
        m.insert(0, pred.x0);
        m.truncate(order);

        let last = i + 1 == n;
        let second_last = i + 2 == n && n < 15;
        let this_order = if last {
            1
        } else if second_last {
            m.len().min(2)
        } else {
            m.len()
        };
        let lambda = |k: usize| levels[k].lambda();
        let next = match this_order {
            1 => first_order(x, levels[i], levels[i + 1], &m[0]),
            2 => {
                let r0 = (lambda(i) - lambda(i - 1)) / (lambda(i + 1) - lambda(i));
                second_order(x, levels[i], levels[i + 1], r0, &m[0], &m[1])
            }
            _ => {
                let h = lambda(i + 1) - lambda(i);
                let r0 = (lambda(i) - lambda(i - 1)) / h;
                let r1 = (lambda(i - 1) - lambda(i - 2)) / h;
                third_order(x, levels[i], levels[i + 1], (r0, r1), [&m[0], &m[1], &m[2]])
            }
        };
        store(x, next);
        let t_next = ts.get(i + 1).map_or(-1.0, |&p| p as f64);
        run.finish_step(i, n, t as f64, t_next, pred.gate)?;
    }
    Ok(())
}

/// `sigma_t/sigma_s0` and `alpha_t (e^{-h} - 1)`, finite also for the clean end point
/// (sigma_t = 0, h = inf: 0 and -1).
fn coefficients(s0: NoiseLevel, t: NoiseLevel) -> (f64, f64, f64) {
    let h = t.lambda() - s0.lambda();
    (t.sigma / s0.sigma, t.alpha * (-h).exp_m1(), h)
}

/// DPM-Solver++ 1st order (= DDIM): `x_t = (sigma_t/sigma_s0) x - alpha_t (e^{-h} - 1) m0`.
fn first_order(x: &[f32], s0: NoiseLevel, t: NoiseLevel, m0: &[f64]) -> Vec<f64> {
    let (ratio, a_phi, _) = coefficients(s0, t);
    x.iter().zip(m0).map(|(&xi, &m0)| ratio * xi as f64 - a_phi * m0).collect()
}

/// DPM-Solver++(2M), midpoint form: `D1 = (m0 - m1)/r0`,
/// `x_t = (sigma_t/sigma_s0) x - alpha_t (e^{-h} - 1) m0 - 0.5 alpha_t (e^{-h} - 1) D1`.
fn second_order(x: &[f32], s0: NoiseLevel, t: NoiseLevel, r0: f64, m0: &[f64], m1: &[f64]) -> Vec<f64> {
    let (ratio, a_phi, _) = coefficients(s0, t);
    x.iter()
        .zip(m0.iter().zip(m1))
        .map(|(&xi, (&m0, &m1))| {
            let d1 = (m0 - m1) / r0;
            ratio * xi as f64 - a_phi * m0 - 0.5 * a_phi * d1
        })
        .collect()
}

/// DPM-Solver++(3M): `D1_0 = (m0 - m1)/r0`, `D1_1 = (m1 - m2)/r1`,
/// `D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1)`, `D2 = (D1_0 - D1_1)/(r0 + r1)`,
/// `x_t = (sigma_t/sigma_s0) x - alpha_t (e^{-h} - 1) m0 + alpha_t ((e^{-h} - 1)/h + 1) D1
///        - alpha_t ((e^{-h} - 1 + h)/h^2 - 0.5) D2`.
fn third_order(x: &[f32], s0: NoiseLevel, t: NoiseLevel, r: (f64, f64), m: [&[f64]; 3]) -> Vec<f64> {
    let (ratio, a_phi, h) = coefficients(s0, t);
    let phi = (-h).exp_m1();
    let c1 = t.alpha * (phi / h + 1.0);
    let c2 = t.alpha * ((phi + h) / (h * h) - 0.5);
    let (r0, r1) = r;
    (0..x.len())
        .map(|j| {
            let (m0, m1, m2) = (m[0][j], m[1][j], m[2][j]);
            let d1_0 = (m0 - m1) / r0;
            let d1_1 = (m1 - m2) / r1;
            let d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1);
            let d2 = (d1_0 - d1_1) / (r0 + r1);
            ratio * x[j] as f64 - a_phi * m0 + c1 * d1 - c2 * d2
        })
        .collect()
}
