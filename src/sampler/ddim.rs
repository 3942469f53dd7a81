//! DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 with sigma_t(eta) of
//! eq. 16), as diffusers' `DDIMScheduler` runs it with `set_alpha_to_one = true` (the last step
//! lands on abar = 1) and `clip_sample = false`.
//!
//! Where we deliberately differ from diffusers: by default step i goes to the next *listed*
//! timestep ([`DdimPrev::Lookup`], samplers.md), not to `t - T // N`, which is a different noise
//! level than the next model call assumes for `linspace` spacing and for `trailing` when N does not
//! divide T. [`DdimPrev::DiffusersStride`] reproduces diffusers exactly for parity checks. We never
//! clip x0 (diffusers' class default `clip_sample = true`).
//!
//! Noise (eta > 0) comes from the caller's [`NoiseSource`]; nothing here owns an RNG.

use super::run::{store, Run};
use super::{DdimPrev, NoiseSource, SampleError};
use crate::schedule::{NoiseLevel, NoiseSchedule};

/// Where each step of DDIM goes: `Some(t_prev)` or `None` for clean data (abar = 1).
pub(crate) fn previous_timesteps(ts: &[usize], rule: DdimPrev, num_train_timesteps: usize) -> Vec<Option<usize>> {
    match rule {
        DdimPrev::Lookup => (0..ts.len()).map(|i| ts.get(i + 1).copied()).collect(),
        DdimPrev::DiffusersStride => {
            let stride = num_train_timesteps / ts.len();
            ts.iter().map(|&t| t.checked_sub(stride)).collect()
        }
    }
}

/// DDIM over `ts` (high to low), step i going to `prev[i]`:
/// `s = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)`,
/// `x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z`.
/// With eta = 0 this is an Euler step of the probability-flow ODE in the VE sigma.
/// `z` for step i is `noise.fill(i, ..)`, drawn only when s > 0.
pub(crate) fn ddim(
    run: &mut Run,
    sched: &NoiseSchedule,
    ts: &[usize],
    prev: &[Option<usize>],
    eta: f64,
    x: &mut [f32],
    noise: &mut dyn NoiseSource,
) -> Result<(), SampleError> {
    let abar = sched.alphas_cumprod();
    let n = ts.len();
    let mut z = vec![0.0f32; x.len()];
    for (i, (&t, &t_prev)) in ts.iter().zip(prev).enumerate() {
        let abar_t = abar[t];
        let abar_prev = t_prev.map_or(1.0, |p| abar[p]);
        let pred = run.predict(x, t as f64, NoiseLevel::from_abar(abar_t), i)?;

        let s = eta * ((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)).sqrt();
        let c_x0 = abar_prev.sqrt();
        let c_eps = (1.0 - abar_prev - s * s).max(0.0).sqrt();
        let c_z = if s > 0.0 {
            noise.fill(i, &mut z);
            s
        } else {
            0.0
        };
        let next: Vec<f64> =
            pred.x0.iter().zip(&pred.eps).zip(&z).map(|((&x0, &eps), &zi)| c_x0 * x0 + c_eps * eps + c_z * zi as f64).collect();
        store(x, next);
        let t_next = t_prev.map_or(-1.0, |p| p as f64);
        run.finish_step(i, n, t as f64, t_next, pred.gate)?;
    }
    Ok(())
}
