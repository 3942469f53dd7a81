//! Samplers: small functions over a [`Denoiser`], a noise schedule and a list of timesteps, in the
//! spirit of k-diffusion's `sample_*(model, x, sigmas)`. No sampler imports tract; each is tested
//! against an analytic denoiser. The RNG is passed in; progress is reported through [`Step`].
//!
//! One file per solver family (`ddpm`, `ddim`, `euler` (Euler and Heun), `dpm_solver`, `unipc`,
//! `adaptive`), plus `run` (the model call every sampler shares: finiteness check, error wrapping,
//! prediction-type conversion, step reports) and `start` (starting states for schedules that do not
//! reach pure noise). This file holds the public surface: [`sample`], [`SamplerOptions`],
//! [`first_timestep`], [`planned_nfe`].
//!
//! Conventions: `x` is f32 in the VP parametrisation `x_t = alpha_t x0 + sigma_t eps` on input and
//! output (also for Euler/Heun, which step in the VE sigma internally); coefficients are f64; model
//! I/O is f32. Timestep semantics follow diffusers' scheduler classes (see each file for where we
//! deliberately differ). Nothing here clips x0 (diffusers' `clip_sample` is taken as false), does
//! IO, reads a clock, or owns an RNG. No sampler keeps state between calls.

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;

use crate::schedule::{self, NoiseLevel, NoiseSchedule, PredictionType, ScheduleConfig, TimestepSpacing};

mod adaptive;
mod ddim;
mod ddpm;
mod dpm_solver;
mod euler;
mod run;
mod start;
mod unipc;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use start::{start_from_data_diag, start_from_data_moments, StartDistribution, MAX_FULL_COV_DIM};

use run::Run;

/// What a denoiser returns besides its main output.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalInfo {
    /// Gate weights (global, local) of a dual-scale model at this timestep, if it has a gate.
    pub gate: Option<[f32; 2]>,
}

/// Error a denoiser may return (the model failed to run). Samplers wrap it in [`SampleError`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DenoiseError(pub String);

/// A noise-prediction network seen from the samplers: the raw model output for a batch.
pub trait Denoiser {
    /// Number of f32 values per sample (2 for points2d, C*H*W for images).
    fn sample_len(&self) -> usize;
    /// Evaluate the model on `x` (`n * sample_len()` values, row-major) at training timestep `t`
    /// (may be fractional for Euler/Heun/adaptive), writing the raw model output (epsilon, v or
    /// x0 depending on the model's prediction type) into `out` (same length as `x`).
    fn eval(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<EvalInfo, DenoiseError>;
}

/// One step of a sampler, reported to the caller's callback after the step is taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// 0-based index of the step (accepted steps only for `adaptive`).
    pub index: usize,
    /// Planned number of steps (an estimate for `adaptive`).
    pub total: usize,
    /// Timestep the step started from (training-timestep units).
    pub t: f64,
    /// Timestep the step went to; -1 at the end, meaning clean data (abar = 1, sigma = 0).
    pub t_next: f64,
    /// Model evaluations so far, rejected adaptive steps included.
    pub nfe: usize,
    /// Gate weights the model reported at the step's first evaluation, i.e. at `t` (the gate
    /// depends on the timestep only, so `(t, gate)` pairs trace the gate over the run).
    pub gate: Option<[f32; 2]>,
}

/// Why sampling stopped.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    // The cause is part of the message, not a `source`: `{:#}` would print it twice.
    #[error("the model failed at step {step} (t = {t}): {cause}")]
    Model { step: usize, t: f64, cause: DenoiseError },
    #[error("the model produced NaN or Inf at step {step} (t = {t}); the model or its precision is broken for this input - try fp32 or another model")]
    NonFinite { step: usize, t: f64 },
    #[error("sampling was interrupted at step {step}")]
    Interrupted { step: usize },
    #[error("{0}")]
    Config(String),
}

/// Which sampler [`sample`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SamplerKind {
    /// Ancestral DDPM (Ho et al. 2020), stochastic, the paper's 100-step evaluation sampler.
    #[serde(rename = "ddpm")]
    Ddpm,
    /// DDIM (Song et al. 2021); deterministic for eta = 0.
    #[serde(rename = "ddim")]
    Ddim,
    /// Euler in the VE sigma (Karras et al. 2022), diffusers `EulerDiscreteScheduler`.
    #[serde(rename = "euler")]
    Euler,
    /// Heun's 2nd order method (Karras et al. 2022), diffusers `HeunDiscreteScheduler`.
    #[serde(rename = "heun")]
    Heun,
    /// DPM-Solver++(2M) (Lu et al. 2022b), diffusers `DPMSolverMultistepScheduler`, order 2.
    #[serde(rename = "dpmpp-2m")]
    DpmPp2m,
    /// DPM-Solver++(3M) (Lu et al. 2022b), diffusers `DPMSolverMultistepScheduler`, order 3.
    #[serde(rename = "dpmpp-3m")]
    DpmPp3m,
    /// UniPC, B(h) = bh2, data prediction (Zhao et al. 2023), diffusers `UniPCMultistepScheduler`.
    #[serde(rename = "unipc")]
    UniPc,
    /// DPM-Solver-23 with adaptive step size (Lu et al. 2022a, section 5).
    #[serde(rename = "adaptive")]
    Adaptive,
}

impl SamplerKind {
    /// Every valid name, in declaration order.
    pub const NAMES: &'static [&'static str] = &["ddpm", "ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m", "unipc", "adaptive"];
    /// Every sampler, in declaration order.
    pub const ALL: [SamplerKind; 8] = [
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
        SamplerKind::Euler,
        SamplerKind::Heun,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp3m,
        SamplerKind::UniPc,
        SamplerKind::Adaptive,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
            SamplerKind::DpmPp2m => "dpmpp-2m",
            SamplerKind::DpmPp3m => "dpmpp-3m",
            SamplerKind::UniPc => "unipc",
            SamplerKind::Adaptive => "adaptive",
        }
    }

    /// Whether the sampler draws fresh noise from the [`NoiseSource`] (DDPM; DDIM with eta > 0).
    pub fn is_stochastic(self, eta: f64) -> bool {
        matches!(self, SamplerKind::Ddpm) || (self == SamplerKind::Ddim && eta > 0.0)
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown sampler name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sampler `{0}`; valid samplers: ddpm, ddim, euler, heun, dpmpp-2m, dpmpp-3m, unipc, adaptive")]
pub struct UnknownSampler(pub String);

impl FromStr for SamplerKind {
    type Err = UnknownSampler;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| UnknownSampler(s.to_string()))
    }
}

/// Where DDIM steps to after timestep t_i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum DdimPrev {
    /// The next timestep of the list, clean data after the last one (samplers.md; what DDPM does
    /// in diffusers too).
    #[default]
    #[serde(rename = "lookup")]
    Lookup,
    /// diffusers' `DDIMScheduler`: `prev_t = t - T // N`, clean data when negative. Wrong for
    /// `linspace`, and for `trailing` when N does not divide T (the state lands on a noise level
    /// the next model call does not assume); kept only to reproduce diffusers' numbers.
    #[serde(rename = "diffusers-stride")]
    DiffusersStride,
}

impl FromStr for DdimPrev {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lookup" => Ok(DdimPrev::Lookup),
            "diffusers-stride" => Ok(DdimPrev::DiffusersStride),
            _ => Err(format!("unknown DDIM previous-timestep rule `{s}`; valid: lookup, diffusers-stride")),
        }
    }
}

/// What to run: the sampler and its knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOptions {
    pub kind: SamplerKind,
    /// Number of steps N (1..=T); ignored by `adaptive`, which picks its own.
    pub steps: usize,
    /// DDIM's eta in [0, 1]: 0 is deterministic, 1 is DDPM-like.
    pub eta: f64,
    /// Adaptive: relative tolerance of the local error.
    pub rtol: f64,
    /// Adaptive: absolute tolerance of the local error.
    pub atol: f64,
    /// Adaptive: first step size, in lambda (half log-SNR).
    pub h_init: f64,
    /// Timestep spacing override; `None` takes the schedule config's.
    pub spacing: Option<TimestepSpacing>,
    /// DDIM only: where each step goes (default [`DdimPrev::Lookup`]).
    pub ddim_prev: DdimPrev,
    /// An explicit list of timesteps, high to low, in place of `steps` and `spacing` (a model's
    /// recommended list, or `--timesteps`); `steps` must equal its length. Not for `adaptive`.
    pub timesteps: Option<Vec<usize>>,
}

impl SamplerOptions {
    /// Defaults: eta 0, rtol 0.05, atol 0.0078, h_init 0.05 (Lu et al. 2022a), spacing from the
    /// config, DDIM stepping to the next listed timestep.
    pub fn new(kind: SamplerKind, steps: usize) -> Self {
        SamplerOptions {
            kind,
            steps,
            eta: 0.0,
            rtol: 0.05,
            atol: 0.0078,
            h_init: 0.05,
            spacing: None,
            ddim_prev: DdimPrev::Lookup,
            timesteps: None,
        }
    }

    /// Runs over `list` (high to low) instead of a spaced step count.
    pub fn set_timesteps(&mut self, list: Vec<usize>) {
        self.steps = list.len();
        self.timesteps = Some(list);
    }
}

/// Checks an explicit timestep list against a schedule of `t_count` training timesteps: not
/// empty, strictly decreasing, every entry below `t_count`. The message says what to fix.
pub fn check_timestep_list(list: &[usize], t_count: usize) -> Result<(), String> {
    if list.is_empty() {
        return Err("the timestep list is empty; give at least one timestep, e.g. 999,499".into());
    }
    if let Some(&t) = list.iter().find(|&&t| t >= t_count) {
        return Err(format!("timestep {t} is not below the model's {t_count} training timesteps; use values in 0..={}", t_count - 1));
    }
    if let Some(w) = list.windows(2).find(|w| w[1] >= w[0]) {
        return Err(format!(
            "timesteps must strictly decrease, but {} is followed by {}; list them high to low without repeats",
            w[0], w[1]
        ));
    }
    Ok(())
}

/// Source of fresh Gaussian noise for stochastic samplers: `fill(step_index, out)` writes N(0,1)
/// values for the step with that index. The runtime's implementation makes noise depend on
/// (seed, step, global sample index) only.
pub trait NoiseSource {
    fn fill(&mut self, step: usize, out: &mut [f32]);
}

/// What a run of [`sample`] cost and where it went.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampleStats {
    /// Model evaluations (rejected adaptive attempts included).
    pub nfe: usize,
    /// Steps taken, one per reported [`Step`] (`adaptive`: accepted steps plus the final x0 step).
    pub steps: usize,
    /// Rejected step attempts (`adaptive` only).
    pub rejected: usize,
    /// The timestep each step started from (`Step::t`), in order.
    pub timesteps: Vec<f64>,
}

/// Converts one raw model output value into the pair (x0, eps) at noise level `level`, for the
/// model's prediction type; the one place prediction types are interpreted (samplers.md):
/// epsilon `x0 = (x - sigma eps)/alpha`; v `x0 = alpha x - sigma v`, `eps = alpha v + sigma x`;
/// sample `x0 = out`, `eps = (x - alpha x0)/sigma`. Needs sigma > 0 for `sample`.
pub fn x0_and_eps(prediction: PredictionType, level: NoiseLevel, x: f64, out: f64) -> (f64, f64) {
    let NoiseLevel { alpha, sigma } = level;
    match prediction {
        PredictionType::Epsilon => ((x - sigma * out) / alpha, out),
        PredictionType::VPrediction => (alpha * x - sigma * out, alpha * out + sigma * x),
        PredictionType::Sample => (out, (x - alpha * out) / sigma),
    }
}

/// The timestep (training-timestep units) the first model evaluation happens at, so the caller
/// can draw x at that noise level before calling [`sample`] (N(0, I) when the schedule reaches
/// pure noise, else see [`start_from_data_moments`]).
pub fn first_timestep(cfg: &ScheduleConfig, opts: &SamplerOptions) -> Result<f64, SampleError> {
    NoiseSchedule::new(cfg).map_err(config_error)?;
    let plan = Plan::new(cfg, opts)?;
    Ok(plan.first())
}

/// Model evaluations a run of `opts` costs: exact for fixed-step samplers (N; 2N - 1 for Heun,
/// whose last step is an Euler step), `None` for `adaptive`.
pub fn planned_nfe(opts: &SamplerOptions) -> Option<usize> {
    match opts.kind {
        SamplerKind::Adaptive => None,
        SamplerKind::Heun => Some(opts.steps.saturating_mul(2).saturating_sub(1)),
        _ => Some(opts.steps),
    }
}

/// Runs the sampler `opts` on `x` (n samples of `model.sample_len()` values, drawn at
/// [`first_timestep`]'s noise level in the VP parametrisation `x_t = alpha_t x0 + sigma_t eps`),
/// leaving the generated samples in `x`. `noise` feeds the stochastic samplers; `on_step` is
/// called after every step and stops the run with [`SampleError::Interrupted`] by returning
/// `Break`. Nothing is clipped: diffusers' `clip_sample` is taken as false.
pub fn sample(
    model: &mut dyn Denoiser,
    cfg: &ScheduleConfig,
    opts: &SamplerOptions,
    x: &mut [f32],
    noise: &mut dyn NoiseSource,
    on_step: &mut dyn FnMut(&Step) -> ControlFlow<()>,
) -> Result<SampleStats, SampleError> {
    let never = AtomicBool::new(false);
    sample_cancellable(model, cfg, opts, x, noise, on_step, &never)
}

/// [`sample`] with a cancel flag, checked before every model evaluation: once it is set, the run
/// ends with [`SampleError::Interrupted`] within one model call (a step of a multistep or
/// adaptive solver can take several), with `x` holding the last finished step's state.
pub fn sample_cancellable(
    model: &mut dyn Denoiser,
    cfg: &ScheduleConfig,
    opts: &SamplerOptions,
    x: &mut [f32],
    noise: &mut dyn NoiseSource,
    on_step: &mut dyn FnMut(&Step) -> ControlFlow<()>,
    cancel: &AtomicBool,
) -> Result<SampleStats, SampleError> {
    let sched = NoiseSchedule::new(cfg).map_err(config_error)?;
    let plan = Plan::new(cfg, opts)?;
    let d = model.sample_len();
    if d == 0 || x.is_empty() || x.len() % d != 0 {
        return Err(SampleError::Config(format!(
            "x has {} values, not a positive multiple of the model's sample length {d}; pass n * {d} values",
            x.len()
        )));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(SampleError::Config("the starting x contains NaN or Inf; draw it from finite Gaussian noise".to_string()));
    }
    let mut run = Run::new(model, cfg.prediction_type, on_step, cancel);
    match &plan {
        Plan::Ddpm(ts) => ddpm::ddpm(&mut run, &sched, ts, x, noise)?,
        Plan::Ddim { ts, prev } => ddim::ddim(&mut run, &sched, ts, prev, opts.eta, x, noise)?,
        Plan::Euler(ts) => euler::euler(&mut run, &sched, ts, x)?,
        Plan::Heun(ts) => euler::heun(&mut run, &sched, ts, x)?,
        Plan::DpmPp { ts, order } => dpm_solver::dpmpp_multistep(&mut run, &sched, ts, *order, x)?,
        Plan::UniPc(ts) => unipc::unipc_bh2(&mut run, &sched, ts, 2, x)?,
        Plan::Adaptive { t_start } => {
            let tol = adaptive::Tolerance { rtol: opts.rtol, atol: opts.atol, h_init: opts.h_init };
            adaptive::dpm_solver_adaptive(&mut run, &sched, 3, tol, *t_start, x)?
        }
    }
    Ok(run.into_stats())
}

fn config_error(e: schedule::ScheduleError) -> SampleError {
    SampleError::Config(e.to_string())
}

/// Checks that `opts` (sampler, steps, spacing, tolerances) can run on this schedule, without
/// running it: the error `sample` would return before its first model evaluation.
pub fn check_options(cfg: &ScheduleConfig, opts: &SamplerOptions) -> Result<(), SampleError> {
    Plan::new(cfg, opts).map(|_| ())
}

/// The timesteps a sampler visits, checked against the schedule and the options.
enum Plan {
    Ddpm(Vec<usize>),
    /// `prev[i]`: where step i goes, `None` for clean data (abar = 1).
    Ddim {
        ts: Vec<usize>,
        prev: Vec<Option<usize>>,
    },
    Euler(Vec<f64>),
    Heun(Vec<f64>),
    DpmPp {
        ts: Vec<usize>,
        order: usize,
    },
    UniPc(Vec<usize>),
    /// From `t_start` = T-1 down to 0, step sizes chosen on the way.
    Adaptive {
        t_start: f64,
    },
}

impl Plan {
    fn new(cfg: &ScheduleConfig, opts: &SamplerOptions) -> Result<Plan, SampleError> {
        let t_count = cfg.num_train_timesteps;
        let spacing = opts.spacing.unwrap_or(cfg.timestep_spacing);
        let (n, offset) = (opts.steps, cfg.steps_offset);
        if let Some(list) = &opts.timesteps {
            check_timestep_list(list, t_count).map_err(SampleError::Config)?;
            if list.len() != n {
                return Err(SampleError::Config(format!("steps = {n} but the timestep list has {} entries", list.len())));
            }
            if opts.kind == SamplerKind::Adaptive {
                return Err(SampleError::Config(
                    "the adaptive sampler picks its own timesteps; an explicit list applies to the fixed-step samplers".into(),
                ));
            }
        }
        let explicit = || opts.timesteps.clone();
        let integer = || explicit().map_or_else(|| schedule::timesteps(spacing, n, t_count, offset).map_err(config_error), Ok);
        let fractional = || match explicit() {
            Some(list) => Ok(list.into_iter().map(|t| t as f64).collect()),
            None => schedule::timesteps_fractional(spacing, n, t_count, offset).map_err(config_error),
        };
        let multistep = || explicit().map_or_else(|| schedule::timesteps_multistep(spacing, n, t_count, offset).map_err(config_error), Ok);
        Ok(match opts.kind {
            SamplerKind::Ddpm => Plan::Ddpm(integer()?),
            SamplerKind::Ddim => {
                if !(opts.eta.is_finite() && (0.0..=1.0).contains(&opts.eta)) {
                    return Err(SampleError::Config(format!(
                        "DDIM eta = {} must be between 0 (deterministic) and 1 (DDPM-like)",
                        opts.eta
                    )));
                }
                let ts = integer()?;
                let prev = ddim::previous_timesteps(&ts, opts.ddim_prev, t_count);
                Plan::Ddim { ts, prev }
            }
            SamplerKind::Euler => Plan::Euler(fractional()?),
            SamplerKind::Heun => Plan::Heun(fractional()?),
            SamplerKind::DpmPp2m => Plan::DpmPp { ts: multistep()?, order: 2 },
            SamplerKind::DpmPp3m => Plan::DpmPp { ts: multistep()?, order: 3 },
            SamplerKind::UniPc => Plan::UniPc(multistep()?),
            SamplerKind::Adaptive => {
                let ok = |v: f64| v.is_finite() && v >= 0.0;
                if !ok(opts.rtol) || !ok(opts.atol) || opts.rtol + opts.atol <= 0.0 {
                    return Err(SampleError::Config(format!(
                        "adaptive tolerances rtol = {} and atol = {} must be finite, >= 0 and not both 0; try rtol 0.05, atol 0.0078",
                        opts.rtol, opts.atol
                    )));
                }
                if !(opts.h_init.is_finite() && opts.h_init > 0.0) {
                    return Err(SampleError::Config(format!(
                        "adaptive h_init = {} must be a positive step in log-SNR; try 0.05",
                        opts.h_init
                    )));
                }
                Plan::Adaptive { t_start: t_count.saturating_sub(1) as f64 }
            }
        })
    }

    fn first(&self) -> f64 {
        match self {
            Plan::Ddpm(ts) | Plan::Ddim { ts, .. } | Plan::DpmPp { ts, .. } | Plan::UniPc(ts) => ts[0] as f64,
            Plan::Euler(ts) | Plan::Heun(ts) => ts[0],
            Plan::Adaptive { t_start } => *t_start,
        }
    }
}
