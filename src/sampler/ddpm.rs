//! Ancestral DDPM sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
//! Algorithm 2, with the x0-parametrised posterior mean of eq. 7), as diffusers'
//! `DDPMScheduler` runs it with `variance_type = "fixed_small"`. The reference paper's evaluation
//! sampler (100 steps over T = 100).
//!
//! Stochastic: fresh noise comes from the caller's [`NoiseSource`], never from an RNG owned here.
//! Does not clip x0 (diffusers' default `clip_sample = true` is deliberately not followed: the 2D
//! data is not in [-1, 1]).

use super::run::{store, Run};
use super::{NoiseSource, SampleError};
use crate::schedule::{NoiseLevel, NoiseSchedule};

/// DDPM over the timesteps `ts` (high to low). Step i goes from `ts[i]` to `ts[i+1]` (the next
/// listed timestep, as diffusers' `previous_timestep` looks it up), the last step to clean data
/// (abar = 1):
///
/// - `beta'_t = 1 - abar_t / abar_prev`;
/// - `mean = sqrt(abar_prev) beta'_t / (1 - abar_t) x0 + sqrt(abar_t/abar_prev) (1 - abar_prev) / (1 - abar_t) x_t`;
/// - `x_prev = mean + sqrt(max((1 - abar_prev)/(1 - abar_t) beta'_t, 1e-20)) z`, no noise at the last step.
///
/// `z` for step i is `noise.fill(i, ..)`. diffusers adds noise whenever `t > 0`, so at a last
/// timestep > 0 (leading spacing with `steps_offset`) it adds `1e-10 z`; we add none there.
pub(crate) fn ddpm(
    run: &mut Run,
    sched: &NoiseSchedule,
    ts: &[usize],
    x: &mut [f32],
    noise: &mut dyn NoiseSource,
) -> Result<(), SampleError> {
    let abar = sched.alphas_cumprod();
    let n = ts.len();
    let mut z = vec![0.0f32; x.len()];
    for (i, &t) in ts.iter().enumerate() {
        let last = i + 1 == n;
        let abar_t = abar[t];
        let abar_prev = if last { 1.0 } else { abar[ts[i + 1]] };
        let level = NoiseLevel::from_abar(abar_t);
        let pred = run.predict(x, t as f64, level, i)?;

        let beta_t = 1.0 - abar_t / abar_prev;
        let c_x0 = abar_prev.sqrt() * beta_t / (1.0 - abar_t);
        let c_xt = (abar_t / abar_prev).sqrt() * (1.0 - abar_prev) / (1.0 - abar_t);
        let std = ((1.0 - abar_prev) / (1.0 - abar_t) * beta_t).max(1e-20).sqrt();
        if !last {
            noise.fill(i, &mut z);
        }
        let noise_scale = if last { 0.0 } else { std };
        let next: Vec<f64> =
            x.iter().zip(&pred.x0).zip(&z).map(|((&xt, &x0), &zi)| c_x0 * x0 + c_xt * xt as f64 + noise_scale * zi as f64).collect();
        store(x, next);
        let t_next = if last { -1.0 } else { ts[i + 1] as f64 };
        run.finish_step(i, n, t as f64, t_next, pred.gate)?;
    }
    Ok(())
}
