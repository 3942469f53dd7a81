//! DPM-Solver-12 / DPM-Solver-23 with adaptive step size (Lu et al. 2022a, "DPM-Solver: A Fast ODE
//! Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps", section 5 and
//! Algorithms 1, 2 and 4), noise-prediction form, integrating in lambda = ln(alpha/sigma) from
//! t = T-1 to t = 0, then one last evaluation that takes x0 (as every other sampler here ends).
//!
//! Each attempt proposes a step h in lambda and computes a lower / higher order pair that share
//! evaluations: DPM-Solver-1 / -2 (r1 = 1/2) for order 2, DPM-Solver-2 / -3 (r1 = 1/3, r2 = 2/3)
//! for order 3. With `delta = max(atol, rtol max(|x_low|, |x_prev|))` and
//! `E = max over samples of ||(x_high - x_low)/delta||_2 / sqrt(D)`, the step is accepted when
//! E <= 1, and `h <- min(theta h E^{-1/order}, remaining)`, theta = 0.9.
//!
//! Where we differ from the authors' code: the evaluation at the step's start is reused after a
//! rejection (x and t have not moved), so a rejected attempt costs order - 1 evaluations, not
//! order. Timesteps are fractional (the model sees t between training timesteps, VE sigma
//! interpolated as for Euler). The step size is controlled for the whole batch (the worst sample
//! decides), as in the paper, so unlike the fixed-step samplers a sample's result depends slightly
//! on its batch-mates. No noise, no clipping, no state kept between calls.

use super::run::{store, Prediction, Run};
use super::SampleError;
use crate::schedule::{NoiseLevel, NoiseSchedule};

/// Step-size control knobs (samplers.md defaults: rtol 0.05, atol 0.0078, h_init 0.05).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
    pub h_init: f64,
}

/// Safety factor of the step-size update (Lu et al. 2022a: theta = 0.9).
const THETA: f64 = 0.9;
/// Attempts after which the solver gives up instead of crawling on forever.
const MAX_ATTEMPTS: usize = 10_000;

/// A point of the solver: fractional timestep and its noise level.
#[derive(Clone, Copy)]
struct Point {
    t: f64,
    level: NoiseLevel,
    lambda: f64,
}

impl Point {
    fn at(sched: &NoiseSchedule, t: f64) -> Point {
        let level = sched.level(t);
        Point { t, level, lambda: level.lambda() }
    }
}

/// DPM-Solver-12 (`order` 2) or DPM-Solver-23 (`order` 3, otherwise) from `t_start` to t = 0,
/// then x = x0_theta(x, 0). Reports one [`super::Step`] per accepted step plus the final one.
pub(crate) fn dpm_solver_adaptive(
    run: &mut Run,
    sched: &NoiseSchedule,
    order: usize,
    tol: Tolerance,
    t_start: f64,
    x: &mut [f32],
) -> Result<(), SampleError> {
    let order = if order == 2 { 2 } else { 3 };
    let d = run.sample_len();
    let end = Point::at(sched, 0.0);
    let mut s = Point::at(sched, t_start);
    let mut x_prev: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut h = tol.h_init;
    let mut eps_s: Option<Prediction> = None;
    let mut index = 0;
    let mut attempts = 0;
    while end.lambda - s.lambda > 1e-12 * end.lambda.abs().max(1.0) {
        attempts += 1;
        if attempts > MAX_ATTEMPTS {
            return Err(SampleError::Config(format!(
                "adaptive solver made no progress after {MAX_ATTEMPTS} attempts (t = {}, {} evaluations); loosen rtol/atol",
                s.t,
                run.nfe()
            )));
        }
        let remaining = end.lambda - s.lambda;
        let t = if h >= remaining { end } else { Point::at(sched, sched.timestep_for_lambda(s.lambda + h)) };
        let step = t.lambda - s.lambda;
        if step.is_nan() || step <= 1e-12 {
            return Err(SampleError::Config(format!(
                "adaptive step size shrank to nothing at t = {} ({} evaluations); loosen rtol/atol",
                s.t,
                run.nfe()
            )));
        }
        let e_s = match eps_s.take() {
            Some(e) => e,
            None => run.predict(x, s.t, s.level, index)?,
        };
        let (x_low, x_high) =
            if order == 2 { solver_12(run, sched, x, s, t, &e_s, index)? } else { solver_23(run, sched, x, s, t, &e_s, index)? };
        let err = error_norm(&x_low, &x_high, &x_prev, tol, d);
        if err <= 1.0 {
            store(x, x_high.iter().copied());
            x_prev = x_low;
            let estimate = index + 2 + ((end.lambda - t.lambda) / h.max(1e-12)).ceil().min(1e6) as usize;
            run.finish_step(index, estimate, s.t, t.t, e_s.gate)?;
            index += 1;
            s = t;
        } else {
            run.reject();
            eps_s = Some(e_s);
        }
        h = (THETA * h * err.powf(-1.0 / order as f64)).min(end.lambda - s.lambda);
    }
    // Denoise to zero: the last step is the x0 prediction at t = 0.
    let pred = run.predict(x, end.t, end.level, index)?;
    store(x, pred.x0.iter().copied());
    run.finish_step(index, index + 1, end.t, -1.0, pred.gate)
}

/// `E = max_n sqrt(mean_j ((x_high - x_low)/delta)^2)`,
/// `delta = max(atol, rtol max(|x_low|, |x_prev|))`, per sample of `d` values.
fn error_norm(x_low: &[f64], x_high: &[f64], x_prev: &[f64], tol: Tolerance, d: usize) -> f64 {
    let d = d.max(1);
    let mut worst: f64 = 0.0;
    for ((lo, hi), prev) in x_low.chunks(d).zip(x_high.chunks(d)).zip(x_prev.chunks(d)) {
        let sum: f64 = lo
            .iter()
            .zip(hi)
            .zip(prev)
            .map(|((&l, &h), &p)| {
                let delta = tol.atol.max(tol.rtol * l.abs().max(p.abs()));
                ((h - l) / delta).powi(2)
            })
            .sum();
        worst = worst.max((sum / lo.len() as f64).sqrt());
    }
    worst
}

/// DPM-Solver-1 from s to u: `u = (alpha_u/alpha_s) x - sigma_u (e^{lambda_u - lambda_s} - 1) eps_s`.
fn first_order_to(x: &[f32], s: Point, u: Point, eps_s: &[f64]) -> Vec<f64> {
    let ratio = u.level.alpha / s.level.alpha;
    let phi = (u.lambda - s.lambda).exp_m1();
    x.iter().zip(eps_s).map(|(&xi, &e)| ratio * xi as f64 - u.level.sigma * phi * e).collect()
}

/// Evaluates the model at an intermediate point `u` reached by the state `values`.
fn eval_at(run: &mut Run, values: &[f64], u: Point, index: usize) -> Result<Prediction, SampleError> {
    let mut xu = vec![0.0f32; values.len()];
    store(&mut xu, values.iter().copied());
    run.predict(&xu, u.t, u.level, index)
}

/// DPM-Solver-1 (low) and DPM-Solver-2 with r1 = 1/2 (high, Algorithm 1), one new evaluation:
/// `x_high = (alpha_t/alpha_s) x - sigma_t (e^h - 1) eps_s - sigma_t/(2 r1) (e^h - 1) (eps_u - eps_s)`.
fn solver_12(
    run: &mut Run,
    sched: &NoiseSchedule,
    x: &[f32],
    s: Point,
    t: Point,
    e_s: &Prediction,
    index: usize,
) -> Result<(Vec<f64>, Vec<f64>), SampleError> {
    let h = t.lambda - s.lambda;
    let u = Point::at(sched, sched.timestep_for_lambda(s.lambda + 0.5 * h));
    let r1 = (u.lambda - s.lambda) / h;
    let x_low = first_order_to(x, s, t, &e_s.eps);
    let e_u = eval_at(run, &first_order_to(x, s, u, &e_s.eps), u, index)?;
    let c = t.level.sigma / (2.0 * r1) * h.exp_m1();
    let x_high = x_low.iter().zip(e_u.eps.iter().zip(&e_s.eps)).map(|(&lo, (&eu, &es))| lo - c * (eu - es)).collect();
    Ok((x_low, x_high))
}

/// DPM-Solver-2 with r1 = 1/3 (low) and DPM-Solver-3 with r1 = 1/3, r2 = 2/3 (high, Algorithm 2),
/// sharing the evaluation at u1; two new evaluations:
/// `D1 = eps(u1) - eps_s`,
/// `u2 = (alpha_u2/alpha_s) x - sigma_u2 (e^{r2 h} - 1) eps_s - sigma_u2 r2/r1 ((e^{r2 h} - 1)/(r2 h) - 1) D1`,
/// `D2 = eps(u2) - eps_s`,
/// `x_high = (alpha_t/alpha_s) x - sigma_t (e^h - 1) eps_s - sigma_t/r2 ((e^h - 1)/h - 1) D2`.
fn solver_23(
    run: &mut Run,
    sched: &NoiseSchedule,
    x: &[f32],
    s: Point,
    t: Point,
    e_s: &Prediction,
    index: usize,
) -> Result<(Vec<f64>, Vec<f64>), SampleError> {
    let h = t.lambda - s.lambda;
    let u1 = Point::at(sched, sched.timestep_for_lambda(s.lambda + h / 3.0));
    let u2 = Point::at(sched, sched.timestep_for_lambda(s.lambda + 2.0 * h / 3.0));
    let (r1, r2) = ((u1.lambda - s.lambda) / h, (u2.lambda - s.lambda) / h);
    let x_first = first_order_to(x, s, t, &e_s.eps);
    let e_u1 = eval_at(run, &first_order_to(x, s, u1, &e_s.eps), u1, index)?;
    let d1: Vec<f64> = e_u1.eps.iter().zip(&e_s.eps).map(|(a, b)| a - b).collect();

    let c_low = t.level.sigma / (2.0 * r1) * h.exp_m1();
    let x_low: Vec<f64> = x_first.iter().zip(&d1).map(|(&f, &d)| f - c_low * d).collect();

    let r2h = r2 * h;
    let c_u2 = u2.level.sigma * r2 / r1 * (r2h.exp_m1() / r2h - 1.0);
    let x_u2: Vec<f64> = first_order_to(x, s, u2, &e_s.eps).iter().zip(&d1).map(|(&f, &d)| f - c_u2 * d).collect();
    let e_u2 = eval_at(run, &x_u2, u2, index)?;

    let c_high = t.level.sigma / r2 * (h.exp_m1() / h - 1.0);
    let x_high = x_first.iter().zip(e_u2.eps.iter().zip(&e_s.eps)).map(|(&f, (&e2, &es))| f - c_high * (e2 - es)).collect();
    Ok((x_low, x_high))
}
