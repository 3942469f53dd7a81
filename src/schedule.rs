//! Noise schedules: what a diffusers `scheduler_config.json` means, as numbers. Betas, alphas_cumprod
//! (`abar`), the noise level of an integer or fractional training timestep, and the timestep lists
//! each spacing (`leading`, `linspace`, `trailing`) gives for N sampling steps.
//!
//! Pure math: no IO, no RNG, no model. Everything is computed in f64, because f16/f32 collapse abar
//! near 1 (sigma -> 0, lambda -> inf). Conventions follow `../shared/reference/samplers.md`, and
//! diffusers' schedulers where that is silent; every deliberate difference is written next to the
//! code that makes it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How betas are laid out over the training timesteps (diffusers `beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `betas = linspace(beta_start, beta_end, T)` (Ho et al. 2020).
    #[serde(rename = "linear")]
    Linear,
    /// `betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (latent diffusion).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// Cosine schedule of Nichol & Dhariwal 2021, each beta capped at 0.999; ignores beta_start/end.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredCosCapV2,
}

/// What the network predicts (diffusers `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PredictionType {
    /// The noise: `x0 = (x - sigma_t eps) / alpha_t`.
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The velocity `v = alpha_t eps - sigma_t x0`: `x0 = alpha_t x - sigma_t v`.
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The clean sample itself: `x0 = output`.
    #[serde(rename = "sample")]
    Sample,
}

/// How N sampling timesteps are picked among the T training timesteps (diffusers
/// `timestep_spacing`; Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
/// Flawed", table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimestepSpacing {
    #[serde(rename = "leading")]
    Leading,
    #[serde(rename = "linspace")]
    Linspace,
    #[serde(rename = "trailing")]
    Trailing,
}

macro_rules! named_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// Every valid name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name used in `scheduler_config.json` and on the command line.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = ScheduleError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(ScheduleError::UnknownName {
                        what: $what,
                        got: s.to_string(),
                        valid: Self::NAMES.join(", "),
                    }),
                }
            }
        }
    };
}

named_enum!(BetaSchedule, "beta_schedule", [
    Linear => "linear",
    ScaledLinear => "scaled_linear",
    SquaredCosCapV2 => "squaredcos_cap_v2",
]);
named_enum!(PredictionType, "prediction_type", [
    Epsilon => "epsilon",
    VPrediction => "v_prediction",
    Sample => "sample",
]);
named_enum!(TimestepSpacing, "timestep_spacing", [
    Leading => "leading",
    Linspace => "linspace",
    Trailing => "trailing",
]);

/// Most training timesteps a schedule may have. Real models use 1,000 (a few, 4,000); beyond
/// this a config is a typo, and its tables would take gigabytes.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// A model's noise schedule, as its `scheduler_config.json` states it. Keys the runtime does not
/// use (`clip_sample`, `set_alpha_to_one`, ...) are not represented: see the samplers for the fixed
/// choices they make.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// T, the number of training timesteps (timesteps run 0..T-1).
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas (length T); replaces `beta_schedule` when present.
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    /// Added to `leading` timesteps (Stable Diffusion uses 1).
    pub steps_offset: usize,
}

impl Default for ScheduleConfig {
    /// diffusers' `DDPMScheduler` defaults: T = 1000, linear betas 1e-4..0.02, epsilon, leading.
    fn default() -> Self {
        ScheduleConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

/// Why a schedule or a timestep list could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("num_train_timesteps is 0; the scheduler config must give at least 1 training timestep")]
    NoTimesteps,
    #[error("num_train_timesteps is {0}, more than the {MAX_TRAIN_TIMESTEPS} dualscale accepts; fix the scheduler config")]
    TooManyTimesteps(usize),
    #[error("beta_end = {end} is smaller than beta_start = {start}: the noise would shrink with t; swap them in the scheduler config")]
    BetasDecrease { start: f64, end: f64 },
    #[error("beta_start = {start} and beta_end = {end} must both be finite and in (0, 1); fix them in the scheduler config")]
    BetaRange { start: f64, end: f64 },
    #[error("beta[{index}] = {value} is outside (0, 1); fix beta_start/beta_end or trained_betas in the scheduler config")]
    BadBeta { index: usize, value: f64 },
    #[error("trained_betas has {got} values but num_train_timesteps is {expected}; give one beta per training timestep")]
    TrainedBetasLen { expected: usize, got: usize },
    #[error("steps must be between 1 and {max} (the model's num_train_timesteps), got {steps}")]
    Steps { steps: usize, max: usize },
    #[error(
        "`{spacing}` spacing with {steps} steps over {train} training timesteps repeats timesteps; use fewer steps or `trailing` spacing"
    )]
    RepeatedTimesteps { spacing: TimestepSpacing, steps: usize, train: usize },
    #[error("steps_offset {offset} moves timestep {t} past the last training timestep {last}; lower steps_offset or steps")]
    OffsetTooLarge { offset: usize, t: usize, last: usize },
    #[error("unknown {what} `{got}`; valid values: {valid}")]
    UnknownName { what: &'static str, got: String, valid: String },
}

/// Noise level of one point of the forward process in the VP parametrisation
/// `x_t = alpha_t x0 + sigma_t eps` (samplers.md notation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// alpha_t = sqrt(abar_t).
    pub alpha: f64,
    /// sigma_t = sqrt(1 - abar_t).
    pub sigma: f64,
}

impl NoiseLevel {
    /// Clean data: alpha = 1, sigma = 0 (lambda = +inf). Where every sampler ends.
    pub const CLEAN: NoiseLevel = NoiseLevel { alpha: 1.0, sigma: 0.0 };

    /// From abar = alpha^2.
    pub fn from_abar(abar: f64) -> Self {
        NoiseLevel { alpha: abar.sqrt(), sigma: (1.0 - abar).sqrt() }
    }

    /// From the VE sigma s = sigma/alpha: alpha = 1/sqrt(1+s^2), sigma = s alpha (diffusers'
    /// `_sigma_to_alpha_sigma_t`).
    pub fn from_ve_sigma(s: f64) -> Self {
        let alpha = 1.0 / (1.0 + s * s).sqrt();
        NoiseLevel { alpha, sigma: s * alpha }
    }

    /// abar = alpha^2.
    pub fn abar(self) -> f64 {
        self.alpha * self.alpha
    }

    /// VE sigma s = sigma/alpha = exp(-lambda) (Karras et al. 2022's sigma).
    pub fn ve_sigma(self) -> f64 {
        self.sigma / self.alpha
    }

    /// Half log-SNR lambda = ln(alpha) - ln(sigma) (Lu et al. 2022); +inf for clean data.
    pub fn lambda(self) -> f64 {
        self.alpha.ln() - self.sigma.ln()
    }
}

/// Betas and alphas_cumprod of a validated [`ScheduleConfig`], in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// VE sigma of every training timestep, `sqrt((1 - abar)/abar)`, strictly increasing.
    ve_sigmas: Vec<f64>,
}

impl NoiseSchedule {
    /// Builds the schedule, checking T >= 1, every beta in (0, 1) and `trained_betas` of length T.
    pub fn new(cfg: &ScheduleConfig) -> Result<Self, ScheduleError> {
        let t_count = cfg.num_train_timesteps;
        if t_count == 0 {
            return Err(ScheduleError::NoTimesteps);
        }
        if t_count > MAX_TRAIN_TIMESTEPS {
            return Err(ScheduleError::TooManyTimesteps(t_count));
        }
        let betas = match &cfg.trained_betas {
            Some(b) => {
                if b.len() != t_count {
                    return Err(ScheduleError::TrainedBetasLen { expected: t_count, got: b.len() });
                }
                b.clone()
            }
            None => match cfg.beta_schedule {
                BetaSchedule::Linear | BetaSchedule::ScaledLinear => {
                    let (start, end) = (cfg.beta_start, cfg.beta_end);
                    let ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
                    if !ok(start) || !ok(end) {
                        return Err(ScheduleError::BetaRange { start, end });
                    }
                    if end < start {
                        return Err(ScheduleError::BetasDecrease { start, end });
                    }
                    if cfg.beta_schedule == BetaSchedule::Linear {
                        linspace(start, end, t_count)
                    } else {
                        linspace(start.sqrt(), end.sqrt(), t_count).into_iter().map(|b| b * b).collect()
                    }
                }
                BetaSchedule::SquaredCosCapV2 => squaredcos_cap_v2_betas(t_count),
            },
        };
        if let Some((index, &value)) = betas.iter().enumerate().find(|(_, &b)| !(b.is_finite() && b > 0.0 && b < 1.0)) {
            return Err(ScheduleError::BadBeta { index, value });
        }
        let mut alphas_cumprod = Vec::with_capacity(t_count);
        let mut abar = 1.0;
        for &beta in &betas {
            abar *= 1.0 - beta;
            alphas_cumprod.push(abar);
        }
        let ve_sigmas = alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        Ok(NoiseSchedule { betas, alphas_cumprod, ve_sigmas })
    }

    /// T, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// abar_t = prod_{i <= t} (1 - beta_i), t = 0..T-1.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// VE sigma `sqrt((1 - abar_t)/abar_t)` of every training timestep (increasing in t).
    pub fn ve_sigmas(&self) -> &[f64] {
        &self.ve_sigmas
    }

    /// Noise level of integer training timestep `t` straight from abar; `None` if t >= T.
    pub fn level_at(&self, t: usize) -> Option<NoiseLevel> {
        self.alphas_cumprod.get(t).map(|&abar| NoiseLevel::from_abar(abar))
    }

    /// VE sigma of a fractional timestep: linear interpolation of the VE sigma over t, as
    /// diffusers' Euler/Heun schedulers do (`np.interp`, `interpolation_type="linear"`). Like
    /// `np.interp`, t is clamped to [0, T-1].
    pub fn ve_sigma(&self, t: f64) -> f64 {
        let last = self.ve_sigmas.len() - 1;
        if t.is_nan() {
            return f64::NAN;
        }
        if t <= 0.0 {
            return self.ve_sigmas[0];
        }
        if t >= last as f64 {
            return self.ve_sigmas[last];
        }
        let k = t.floor() as usize;
        let w = t - k as f64;
        if w == 0.0 {
            return self.ve_sigmas[k];
        }
        self.ve_sigmas[k] + w * (self.ve_sigmas[k + 1] - self.ve_sigmas[k])
    }

    /// Noise level of a (possibly fractional) timestep through [`Self::ve_sigma`]. At integer t it
    /// equals [`Self::level_at`] up to rounding.
    pub fn level(&self, t: f64) -> NoiseLevel {
        NoiseLevel::from_ve_sigma(self.ve_sigma(t))
    }

    /// alpha_t of a (possibly fractional) timestep.
    pub fn alpha(&self, t: f64) -> f64 {
        self.level(t).alpha
    }

    /// sigma_t of a (possibly fractional) timestep.
    pub fn sigma(&self, t: f64) -> f64 {
        self.level(t).sigma
    }

    /// lambda_t = ln(alpha_t / sigma_t) = -ln(VE sigma) of a (possibly fractional) timestep.
    pub fn lambda(&self, t: f64) -> f64 {
        -self.ve_sigma(t).ln()
    }

    /// Inverse of [`Self::lambda`] on [0, T-1]: the fractional timestep whose interpolated VE sigma
    /// is `exp(-lambda)`; clamped to the ends of the schedule.
    pub fn timestep_for_lambda(&self, lambda: f64) -> f64 {
        let s = (-lambda).exp();
        let sig = &self.ve_sigmas;
        let last = sig.len() - 1;
        if s.is_nan() {
            return f64::NAN;
        }
        if s <= sig[0] {
            return 0.0;
        }
        if s >= sig[last] {
            return last as f64;
        }
        // First index whose sigma is > s; the segment is [k-1, k].
        let k = sig.partition_point(|&v| v <= s);
        let (lo, hi) = (sig[k - 1], sig[k]);
        (k - 1) as f64 + (s - lo) / (hi - lo)
    }
}

/// `numpy.linspace(start, stop, n)`: `start + i * (stop - start)/(n - 1)`, last value exactly `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// `numpy.arange(start, 0, -step)` for start > 0: numpy fills `start + i * delta` with
/// `delta = (start - step) - start`, for `ceil(start/step)` values. Truncated to `max_len`
/// (see [`timesteps`] on why).
fn arange_down(start: f64, step: f64, max_len: usize) -> Vec<f64> {
    let len = (start / step).ceil().max(0.0) as usize;
    let delta = (start - step) - start;
    (0..len.min(max_len)).map(|i| start + i as f64 * delta).collect()
}

/// Glide's cosine schedule (Nichol & Dhariwal 2021): `beta_i = min(1 - f((i+1)/T)/f(i/T), 0.999)`
/// with `f(t) = cos^2((t + 0.008)/1.008 * pi/2)`.
fn squaredcos_cap_v2_betas(t_count: usize) -> Vec<f64> {
    let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    (0..t_count)
        .map(|i| {
            let t1 = i as f64 / t_count as f64;
            let t2 = (i + 1) as f64 / t_count as f64;
            (1.0 - f(t2) / f(t1)).min(0.999)
        })
        .collect()
}

fn check_steps(steps: usize, t_count: usize) -> Result<(), ScheduleError> {
    if steps == 0 || steps > t_count {
        return Err(ScheduleError::Steps { steps, max: t_count });
    }
    Ok(())
}

/// Rounds like numpy (half to even), checks strictly decreasing and inside [0, T-1].
fn to_timesteps(values: &[f64], spacing: TimestepSpacing, t_count: usize, steps_offset: usize) -> Result<Vec<usize>, ScheduleError> {
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        let r = v.round_ties_even();
        // Every value is >= 0 by construction (trailing's smallest is round(T/N) - 1 >= 0).
        let t = r.max(0.0) as usize;
        if t >= t_count {
            return Err(ScheduleError::OffsetTooLarge { offset: steps_offset, t, last: t_count - 1 });
        }
        if out.last().is_some_and(|&prev| t >= prev) {
            return Err(ScheduleError::RepeatedTimesteps { spacing, steps: values.len(), train: t_count });
        }
        out.push(t);
    }
    Ok(out)
}

/// The N integer timesteps DDIM and DDPM visit, high to low (diffusers `DDIMScheduler` /
/// `DDPMScheduler.set_timesteps`):
/// - `leading`: `arange(N) * (T // N)`, reversed, `+ steps_offset`;
/// - `linspace`: `round(linspace(0, T-1, N))`, reversed;
/// - `trailing`: `round(arange(T, 0, -T/N)) - 1`.
///
/// Differs from diffusers on purpose in one corner: numpy's float `arange` gives N+1 values for
/// some (T, N) (e.g. T = 100, N = 29), so diffusers' `trailing` list then ends with timestep -1
/// (which indexes abar[T-1]); we always return exactly N timesteps, equal to diffusers' first N.
pub fn timesteps(
    spacing: TimestepSpacing,
    steps: usize,
    num_train_timesteps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>, ScheduleError> {
    check_steps(steps, num_train_timesteps)?;
    let t_count = num_train_timesteps as f64;
    let values: Vec<f64> = match spacing {
        TimestepSpacing::Leading => {
            let ratio = num_train_timesteps / steps;
            (0..steps).rev().map(|i| (i * ratio).saturating_add(steps_offset) as f64).collect()
        }
        TimestepSpacing::Linspace => linspace(0.0, t_count - 1.0, steps).into_iter().rev().collect(),
        TimestepSpacing::Trailing => trailing_values(num_train_timesteps, steps),
    };
    to_timesteps(&values, spacing, num_train_timesteps, steps_offset)
}

/// `round(arange(T, 0, -T/N)) - 1` before rounding, exactly N values.
fn trailing_values(num_train_timesteps: usize, steps: usize) -> Vec<f64> {
    let t_count = num_train_timesteps as f64;
    arange_down(t_count, t_count / steps as f64, steps).into_iter().map(|v| v.round_ties_even() - 1.0).collect()
}

/// The N integer timesteps of the multistep solvers (diffusers `DPMSolverMultistepScheduler` and
/// `UniPCMultistepScheduler`), which lay out N+1 points and drop the last:
/// - `leading`: `arange(N+1) * (T // (N+1))`, reversed, last dropped, `+ steps_offset`;
/// - `linspace`: `round(linspace(0, T-1, N+1))`, reversed, last dropped;
/// - `trailing`: as [`timesteps`].
///
/// Repeated timesteps (`leading` with N >= T, `linspace` with N = T) are an error here;
/// diffusers silently steps with h = 0.
pub fn timesteps_multistep(
    spacing: TimestepSpacing,
    steps: usize,
    num_train_timesteps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>, ScheduleError> {
    check_steps(steps, num_train_timesteps)?;
    let t_count = num_train_timesteps as f64;
    let values: Vec<f64> = match spacing {
        TimestepSpacing::Leading => {
            let ratio = num_train_timesteps / (steps + 1);
            (1..=steps).rev().map(|i| (i * ratio).saturating_add(steps_offset) as f64).collect()
        }
        TimestepSpacing::Linspace => linspace(0.0, t_count - 1.0, steps + 1).into_iter().rev().take(steps).collect(),
        TimestepSpacing::Trailing => trailing_values(num_train_timesteps, steps),
    };
    to_timesteps(&values, spacing, num_train_timesteps, steps_offset)
}

/// The N fractional timesteps of the Karras-style samplers (diffusers `EulerDiscreteScheduler`,
/// `HeunDiscreteScheduler`): `linspace(0, T-1, N)` reversed and *not* rounded; `leading` and
/// `trailing` as [`timesteps`]. Values are rounded to f32, as diffusers stores them, so the model
/// sees the same t.
pub fn timesteps_fractional(
    spacing: TimestepSpacing,
    steps: usize,
    num_train_timesteps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>, ScheduleError> {
    match spacing {
        TimestepSpacing::Linspace => {
            check_steps(steps, num_train_timesteps)?;
            let last = num_train_timesteps as f64 - 1.0;
            Ok(linspace(0.0, last, steps).into_iter().rev().map(|t| t as f32 as f64).collect())
        }
        _ => Ok(timesteps(spacing, steps, num_train_timesteps, steps_offset)?.into_iter().map(|t| t as f64).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(t: usize) -> ScheduleConfig {
        ScheduleConfig { num_train_timesteps: t, ..ScheduleConfig::default() }
    }

    #[test]
    fn linear_100_ends_at_0364() {
        // tiny-diffusion's schedule: T = 100, betas 1e-4..0.02 (paper.md: abar[99] is only 0.364).
        let s = NoiseSchedule::new(&linear(100)).unwrap();
        assert_eq!(s.num_train_timesteps(), 100);
        let abar = s.alphas_cumprod();
        // numpy f64: cumprod(1 - linspace(1e-4, 0.02, 100))[-1] = 0.36356324805549.
        assert!((abar[99] - 0.363_563_248_055_49).abs() < 1e-12, "abar[99] = {}", abar[99]);
        assert!((abar[0] - 0.9999).abs() < 1e-12);
        assert!((s.betas()[99] - 0.02).abs() < 1e-15);
        // Strictly decreasing, VE sigma strictly increasing.
        assert!(abar.windows(2).all(|w| w[1] < w[0]));
        assert!(s.ve_sigmas().windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn linear_1000_known_values() {
        // DDPM default: numpy f64 gives abar[999] = 4.035829765375676e-05.
        let s = NoiseSchedule::new(&linear(1000)).unwrap();
        let a = s.alphas_cumprod()[999];
        assert!((a - 4.035_829_765_375_676e-5).abs() < 1e-15, "abar[999] = {a}");
    }

    #[test]
    fn scaled_linear_betas() {
        let cfg =
            ScheduleConfig { beta_start: 0.00085, beta_end: 0.012, beta_schedule: BetaSchedule::ScaledLinear, ..ScheduleConfig::default() };
        let s = NoiseSchedule::new(&cfg).unwrap();
        assert!((s.betas()[0] - 0.00085).abs() < 1e-15);
        assert!((s.betas()[999] - 0.012).abs() < 1e-15);
        let mid = (0.00085f64.sqrt() + (0.012f64.sqrt() - 0.00085f64.sqrt()) * 500.0 / 999.0).powi(2);
        assert!((s.betas()[500] - mid).abs() < 1e-15);
        // SD 1.x (numpy f64): abar[999] = 0.004660098513077238.
        let a = s.alphas_cumprod()[999];
        assert!((a - 0.004_660_098_513_077_238).abs() < 1e-14, "{a}");
    }

    #[test]
    fn squaredcos_cap_v2_matches_formula_and_cap() {
        let cfg = ScheduleConfig { beta_schedule: BetaSchedule::SquaredCosCapV2, ..linear(1000) };
        let s = NoiseSchedule::new(&cfg).unwrap();
        let f = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        // abar follows f(t)/f(0) closely except where the cap bites.
        let abar = s.alphas_cumprod();
        for t in [0usize, 100, 500, 900] {
            let expect = f((t + 1) as f64 / 1000.0) / f(0.0);
            assert!((abar[t] - expect).abs() < 1e-9, "t={t}: {} vs {expect}", abar[t]);
        }
        // f(1) = cos^2(pi/2) ~ 0, so the last beta is capped at 0.999.
        assert_eq!(s.betas()[999], 0.999);
        assert!(s.betas().iter().all(|&b| b <= 0.999));
        // beta_start/end are ignored.
        let other = ScheduleConfig { beta_start: 0.3, beta_end: 0.4, ..cfg };
        assert_eq!(NoiseSchedule::new(&other).unwrap().betas(), s.betas());
    }

    #[test]
    fn trained_betas_replace_schedule() {
        let cfg = ScheduleConfig { trained_betas: Some(vec![0.1, 0.2, 0.5]), ..linear(3) };
        let s = NoiseSchedule::new(&cfg).unwrap();
        let abar = s.alphas_cumprod();
        assert!((abar[0] - 0.9).abs() < 1e-15);
        assert!((abar[1] - 0.72).abs() < 1e-15);
        assert!((abar[2] - 0.36).abs() < 1e-15);
    }

    #[test]
    fn invalid_configs_are_errors() {
        assert_eq!(NoiseSchedule::new(&linear(0)), Err(ScheduleError::NoTimesteps));
        // Once a 800 GB allocation and an abort.
        assert_eq!(NoiseSchedule::new(&linear(1_000_000_000)), Err(ScheduleError::TooManyTimesteps(1_000_000_000)));
        let decreasing = ScheduleConfig { beta_start: 0.02, beta_end: 0.0001, ..linear(10) };
        assert!(matches!(NoiseSchedule::new(&decreasing), Err(ScheduleError::BetasDecrease { .. })));
        let short = ScheduleConfig { trained_betas: Some(vec![0.1]), ..linear(3) };
        assert_eq!(NoiseSchedule::new(&short), Err(ScheduleError::TrainedBetasLen { expected: 3, got: 1 }));
        let bad = ScheduleConfig { trained_betas: Some(vec![0.1, 1.0, 0.2]), ..linear(3) };
        assert_eq!(NoiseSchedule::new(&bad), Err(ScheduleError::BadBeta { index: 1, value: 1.0 }));
        let zero = ScheduleConfig { beta_start: 0.0, ..linear(10) };
        assert!(matches!(NoiseSchedule::new(&zero), Err(ScheduleError::BetaRange { .. })));
        let nan = ScheduleConfig { beta_end: f64::NAN, ..linear(10) };
        assert!(matches!(NoiseSchedule::new(&nan), Err(ScheduleError::BetaRange { .. })));
        for e in [ScheduleError::NoTimesteps, ScheduleError::Steps { steps: 0, max: 10 }] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn names_round_trip_and_errors_list_valid_values() {
        for &n in BetaSchedule::NAMES {
            assert_eq!(n.parse::<BetaSchedule>().unwrap().to_string(), n);
        }
        for &n in PredictionType::NAMES {
            assert_eq!(n.parse::<PredictionType>().unwrap().name(), n);
        }
        for &n in TimestepSpacing::NAMES {
            assert_eq!(n.parse::<TimestepSpacing>().unwrap().name(), n);
        }
        let e = "cosine".parse::<BetaSchedule>().unwrap_err().to_string();
        assert!(e.contains("linear, scaled_linear, squaredcos_cap_v2"), "{e}");
        let e = "eps".parse::<PredictionType>().unwrap_err().to_string();
        assert!(e.contains("epsilon, v_prediction, sample"), "{e}");
        // serde names are the same strings.
        let p: PredictionType = serde_json::from_str("\"v_prediction\"").unwrap();
        assert_eq!(p, PredictionType::VPrediction);
        let b: BetaSchedule = serde_json::from_str("\"squaredcos_cap_v2\"").unwrap();
        assert_eq!(b, BetaSchedule::SquaredCosCapV2);
        assert_eq!(serde_json::to_string(&TimestepSpacing::Trailing).unwrap(), "\"trailing\"");
    }

    #[test]
    fn spacings_match_hand_computed_lists() {
        use TimestepSpacing::*;
        // leading: arange(10) * 10 reversed + 1.
        assert_eq!(timesteps(Leading, 10, 100, 1).unwrap(), vec![91, 81, 71, 61, 51, 41, 31, 21, 11, 1]);
        assert_eq!(timesteps(Leading, 4, 10, 0).unwrap(), vec![6, 4, 2, 0]);
        // linspace: round(linspace(0, 99, 10)) reversed; spacing 11 exactly.
        assert_eq!(timesteps(Linspace, 10, 100, 7).unwrap(), vec![99, 88, 77, 66, 55, 44, 33, 22, 11, 0]);
        // linspace(0, 999, 4) = 0, 333, 666, 999.
        assert_eq!(timesteps(Linspace, 4, 1000, 0).unwrap(), vec![999, 666, 333, 0]);
        // trailing: round(arange(100, 0, -33.33)) - 1 = [100, 67, 33] - 1.
        assert_eq!(timesteps(Trailing, 3, 100, 0).unwrap(), vec![99, 66, 32]);
        assert_eq!(timesteps(Trailing, 7, 1000, 0).unwrap(), vec![999, 856, 713, 570, 428, 285, 142]);
        // trailing with 12.5-steps: numpy rounds ties to even (87.5 -> 88, 62.5 -> 62).
        assert_eq!(timesteps(Trailing, 8, 100, 0).unwrap(), vec![99, 87, 74, 61, 49, 37, 24, 11]);
        // T = 100, N = 29: numpy's arange gives 30 values (last -1); we give 29.
        let t = timesteps(Trailing, 29, 100, 0).unwrap();
        assert_eq!(t.len(), 29);
        assert_eq!((t[0], t[28]), (99, 2));
        // Every step over every timestep.
        let all: Vec<usize> = (0..100).rev().collect();
        for s in [Leading, Linspace, Trailing] {
            assert_eq!(timesteps(s, 100, 100, 0).unwrap(), all, "{s}");
        }
    }

    #[test]
    fn multistep_spacings_use_n_plus_one_points() {
        use TimestepSpacing::*;
        // round(linspace(0, 99, 11)) = 0,10,20,30,40,50 (49.5 -> 50, ties to even),59,69,79,89,99.
        assert_eq!(timesteps_multistep(Linspace, 10, 100, 0).unwrap(), vec![99, 89, 79, 69, 59, 50, 40, 30, 20, 10]);
        // leading: arange(11) * (100 // 11 = 9), reversed, drop 0, + 1.
        assert_eq!(timesteps_multistep(Leading, 10, 100, 1).unwrap(), vec![91, 82, 73, 64, 55, 46, 37, 28, 19, 10]);
        assert_eq!(timesteps_multistep(Trailing, 3, 100, 0).unwrap(), vec![99, 66, 32]);
        assert_eq!(timesteps_multistep(Linspace, 1, 1000, 0).unwrap(), vec![999]);
        // N = T: linspace over N+1 points repeats, and leading's ratio T // (N+1) is 0.
        assert!(matches!(timesteps_multistep(Linspace, 100, 100, 0), Err(ScheduleError::RepeatedTimesteps { .. })));
        assert!(matches!(timesteps_multistep(Leading, 100, 100, 0), Err(ScheduleError::RepeatedTimesteps { .. })));
        // leading with N = 60: ratio 1, timesteps 60..1.
        assert_eq!(timesteps_multistep(Leading, 60, 100, 0).unwrap(), (1..=60).rev().collect::<Vec<_>>());
    }

    #[test]
    fn fractional_spacing_keeps_fractions_in_f32() {
        let t = timesteps_fractional(TimestepSpacing::Linspace, 50, 1000, 0).unwrap();
        assert_eq!(t[0], 999.0);
        assert_eq!(t[1], 978.612_24_f32 as f64);
        assert_eq!(t[49], 0.0);
        let l = timesteps_fractional(TimestepSpacing::Leading, 10, 100, 1).unwrap();
        assert_eq!(l[0], 91.0);
    }

    #[test]
    fn step_count_errors_say_the_range() {
        for steps in [0, 101] {
            let e = timesteps(TimestepSpacing::Leading, steps, 100, 0).unwrap_err();
            assert_eq!(e, ScheduleError::Steps { steps, max: 100 });
            assert!(e.to_string().contains("between 1 and 100"), "{e}");
            assert!(timesteps_multistep(TimestepSpacing::Trailing, steps, 100, 0).is_err());
            assert!(timesteps_fractional(TimestepSpacing::Linspace, steps, 100, 0).is_err());
        }
        let e = timesteps(TimestepSpacing::Leading, 100, 100, 1).unwrap_err();
        assert!(matches!(e, ScheduleError::OffsetTooLarge { offset: 1, t: 100, last: 99 }), "{e:?}");
        // An absurd offset is an error, not an overflow.
        assert!(timesteps(TimestepSpacing::Leading, 10, 100, usize::MAX).is_err());
        assert!(timesteps_multistep(TimestepSpacing::Leading, 10, 100, usize::MAX).is_err());
    }

    #[test]
    fn fractional_levels_interpolate_ve_sigma() {
        let s = NoiseSchedule::new(&linear(100)).unwrap();
        for t in [0usize, 1, 50, 99] {
            let exact = s.level_at(t).unwrap();
            let interp = s.level(t as f64);
            assert!((exact.alpha - interp.alpha).abs() < 1e-14);
            assert!((exact.sigma - interp.sigma).abs() < 1e-14);
            assert!((exact.lambda() - s.lambda(t as f64)).abs() < 1e-12);
        }
        let mid = s.ve_sigma(10.25);
        let v = s.ve_sigmas();
        assert!((mid - (0.75 * v[10] + 0.25 * v[11])).abs() < 1e-15);
        // alpha^2 + sigma^2 = 1 everywhere.
        let l = s.level(37.3);
        assert!((l.alpha * l.alpha + l.sigma * l.sigma - 1.0).abs() < 1e-14);
        // Clamped like np.interp.
        assert_eq!(s.ve_sigma(-3.0), v[0]);
        assert_eq!(s.ve_sigma(1e9), v[99]);
        assert!(s.level_at(100).is_none());
        // lambda inverts.
        for t in [0.0, 0.5, 12.75, 98.999, 99.0] {
            let back = s.timestep_for_lambda(s.lambda(t));
            assert!((back - t).abs() < 1e-9, "{t} -> {back}");
        }
        assert_eq!(NoiseLevel::CLEAN.lambda(), f64::INFINITY);
        assert_eq!(NoiseLevel::CLEAN.ve_sigma(), 0.0);
    }
}
