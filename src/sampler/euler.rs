//! Euler and Heun steps of the probability-flow ODE in the VE sigma (Karras et al. 2022,
//! "Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 1 with
//! S_churn = 0), as diffusers' `EulerDiscreteScheduler` and `HeunDiscreteScheduler` run them:
//! fractional timesteps passed to the model, VE sigma linearly interpolated over t, last sigma 0.
//!
//! The ODE is `dy/ds = eps(x, t(s))` with `y = x/alpha = x0 + s eps` the VE variable and
//! `s = sigma/alpha`. The state stays in the VP parametrisation between steps (`x = alpha y`); the
//! scaling by `alpha = 1/sqrt(1 + s^2)` is exactly diffusers' `scale_model_input`.
//!
//! Where we differ from diffusers: the caller draws x in VP units at the first timestep. diffusers
//! pipelines start from `randn * init_noise_sigma`, and for `linspace`/`trailing` spacing its
//! `init_noise_sigma` is `s_max` rather than `sqrt(s_max^2 + 1)`, i.e. a VP start of
//! `randn * s_max/sqrt(s_max^2 + 1)`, not `randn`. To reproduce a diffusers run, pass
//! `x = latents / sqrt(s_max^2 + 1)` where `latents` are diffusers' scaled initial latents.
//!
//! Deterministic: no noise source, no clipping, no state kept between calls.

use super::run::{store, Run};
use super::SampleError;
use crate::schedule::{NoiseLevel, NoiseSchedule};

/// The (timestep, VE sigma) points of a Karras-style run: the N timesteps, then clean data
/// (t = -1, s = 0), as diffusers appends `sigma = 0`.
fn sigma_points(sched: &NoiseSchedule, ts: &[f64]) -> Vec<(f64, f64)> {
    ts.iter().map(|&t| (t, sched.ve_sigma(t))).chain([(-1.0, 0.0)]).collect()
}

/// One Euler step in the VE sigma from `(x, s)` to `s_next` along the slope `d` (noise
/// prediction): `y_next = x/alpha + (s_next - s) d`, returned in VP units `alpha_next y_next`.
fn euler_step(x: &[f32], s: f64, s_next: f64, d: &[f64]) -> Vec<f64> {
    let alpha = NoiseLevel::from_ve_sigma(s).alpha;
    let alpha_next = NoiseLevel::from_ve_sigma(s_next).alpha;
    x.iter().zip(d).map(|(&xi, &di)| alpha_next * (xi as f64 / alpha + (s_next - s) * di)).collect()
}

/// Euler (Karras et al. 2022, Algorithm 1 without the 2nd-order correction): N model
/// evaluations over the fractional timesteps `ts`; the last step lands on s = 0 (x = x0).
pub(crate) fn euler(run: &mut Run, sched: &NoiseSchedule, ts: &[f64], x: &mut [f32]) -> Result<(), SampleError> {
    let points = sigma_points(sched, ts);
    let n = ts.len();
    for (i, pair) in points.windows(2).enumerate() {
        let [(t, s), (t_next, s_next)] = [pair[0], pair[1]];
        let pred = run.predict(x, t, NoiseLevel::from_ve_sigma(s), i)?;
        let next = euler_step(x, s, s_next, &pred.eps);
        store(x, next);
        run.finish_step(i, n, t, t_next, pred.gate)?;
    }
    Ok(())
}

/// Heun's method (Karras et al. 2022, Algorithm 1): Euler to `s_next`, evaluate the slope there,
/// redo the step with the mean slope. The last step (to s = 0) is a plain Euler step, so a run
/// costs 2N - 1 evaluations, as in diffusers (`HeunDiscreteScheduler` repeats every timestep but
/// the first).
pub(crate) fn heun(run: &mut Run, sched: &NoiseSchedule, ts: &[f64], x: &mut [f32]) -> Result<(), SampleError> {
    let points = sigma_points(sched, ts);
    let n = ts.len();
    for (i, pair) in points.windows(2).enumerate() {
        let [(t, s), (t_next, s_next)] = [pair[0], pair[1]];
        let d = run.predict(x, t, NoiseLevel::from_ve_sigma(s), i)?;
        let euler = euler_step(x, s, s_next, &d.eps);
        if s_next == 0.0 {
            store(x, euler);
            run.finish_step(i, n, t, t_next, d.gate)?;
            continue;
        }
        let mut x_euler = vec![0.0f32; x.len()];
        store(&mut x_euler, euler);
        let d_next = run.predict(&x_euler, t_next, NoiseLevel::from_ve_sigma(s_next), i)?;
        let mean: Vec<f64> = d.eps.iter().zip(&d_next.eps).map(|(a, b)| 0.5 * (a + b)).collect();
        let next = euler_step(x, s, s_next, &mean);
        store(x, next);
        run.finish_step(i, n, t, t_next, d.gate)?;
    }
    Ok(())
}
