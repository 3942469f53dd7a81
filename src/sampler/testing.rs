//! Test-only helpers for the samplers: an analytic denoiser for Gaussian data (its noise
//! prediction is exact, so the probability-flow ODE has a closed-form solution), a counter-based
//! Gaussian noise source keyed by (seed, step, element index), and a model that fails on purpose.
//! Compiled only for tests; never imports tract.

use super::{DenoiseError, Denoiser, EvalInfo, NoiseSource};
use crate::schedule::{NoiseLevel, NoiseSchedule, PredictionType, ScheduleConfig};

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(key: u64) -> f64 {
    ((mix(key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// N(0,1) values for elements `first..first + n` of step `step` (Box-Muller on hashed keys):
/// each value depends on (seed, step, element index) only.
pub fn normals(seed: u64, step: usize, first: usize, n: usize) -> Vec<f32> {
    (first..first + n)
        .map(|k| {
            let key = mix(seed ^ mix(step as u64 ^ mix(k as u64)));
            let (u1, u2) = (uniform(key), uniform(key ^ 0xA5A5_A5A5));
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// Noise for a batch that starts at global element `first`: sampling a batch or its halves
/// separately draws the same numbers for the same sample.
pub struct KeyedNoise {
    pub seed: u64,
    pub first: usize,
    pub calls: Vec<usize>,
}

impl KeyedNoise {
    pub fn new(seed: u64, first: usize) -> Self {
        KeyedNoise { seed, first, calls: Vec::new() }
    }
}

impl NoiseSource for KeyedNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) {
        self.calls.push(step);
        out.copy_from_slice(&normals(self.seed, step, self.first, out.len()));
    }
}

/// Data x0 ~ N(mu, s^2 I) per coordinate. The exact noise prediction at level (alpha, sigma) is
/// `eps*(x) = sigma (x - alpha mu) / (alpha^2 s^2 + sigma^2)`; the model returns it as epsilon, v
/// or x0 according to `prediction`. Levels of fractional t come from the schedule's
/// interpolation, as the samplers assume.
pub struct GaussianDenoiser {
    pub sched: NoiseSchedule,
    pub mu: Vec<f64>,
    pub s: f64,
    pub prediction: PredictionType,
    /// Timesteps of every evaluation, in order.
    pub evals: Vec<f64>,
    /// Return NaN at this evaluation (0-based), to test error paths.
    pub nan_at: Option<usize>,
}

impl GaussianDenoiser {
    pub fn new(cfg: &ScheduleConfig, mu: Vec<f64>, s: f64) -> Self {
        GaussianDenoiser {
            sched: NoiseSchedule::new(cfg).expect("valid test schedule"),
            mu,
            s,
            prediction: cfg.prediction_type,
            evals: Vec::new(),
            nan_at: None,
        }
    }

    /// Exact eps prediction of one coordinate.
    pub fn eps(&self, level: NoiseLevel, x: f64, mu: f64) -> f64 {
        let NoiseLevel { alpha, sigma } = level;
        sigma * (x - alpha * mu) / (alpha * alpha * self.s * self.s + sigma * sigma)
    }

    /// The exact probability-flow ODE solution from `x` at noise level `from` to level `to`: the
    /// standardised coordinate `(x - alpha mu)/sqrt(alpha^2 s^2 + sigma^2)` is constant along it.
    /// `to = NoiseLevel::CLEAN` gives the ODE's clean-data end point.
    pub fn ode_map(&self, from: NoiseLevel, to: NoiseLevel, x: &[f64]) -> Vec<f64> {
        let scale = |l: NoiseLevel| (l.alpha * l.alpha * self.s * self.s + l.sigma * l.sigma).sqrt();
        let ratio = scale(to) / scale(from);
        x.iter()
            .enumerate()
            .map(|(j, &xj)| {
                let mu = self.mu[j % self.mu.len()];
                to.alpha * mu + ratio * (xj - from.alpha * mu)
            })
            .collect()
    }

    /// The posterior mean E[x0 | x_t = x] at `level`,
    /// `mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x - alpha mu)`: what the x0 prediction of an exact
    /// model is, and so where every sampler's final step (to sigma = 0) lands.
    pub fn posterior_mean(&self, level: NoiseLevel, x: &[f64]) -> Vec<f64> {
        let NoiseLevel { alpha, sigma } = level;
        let gain = alpha * self.s * self.s / (alpha * alpha * self.s * self.s + sigma * sigma);
        x.iter()
            .enumerate()
            .map(|(j, &xj)| {
                let mu = self.mu[j % self.mu.len()];
                mu + gain * (xj - alpha * mu)
            })
            .collect()
    }
}

impl Denoiser for GaussianDenoiser {
    fn sample_len(&self) -> usize {
        self.mu.len()
    }

    fn eval(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<EvalInfo, DenoiseError> {
        if self.nan_at == Some(self.evals.len()) {
            self.evals.push(t);
            out.fill(f32::NAN);
            return Ok(EvalInfo::default());
        }
        self.evals.push(t);
        let level = self.sched.level(t);
        let NoiseLevel { alpha, sigma } = level;
        for (j, (o, &xj)) in out.iter_mut().zip(x).enumerate() {
            let xj = xj as f64;
            let eps = self.eps(level, xj, self.mu[j % self.mu.len()]);
            let x0 = (xj - sigma * eps) / alpha;
            *o = match self.prediction {
                PredictionType::Epsilon => eps,
                PredictionType::VPrediction => alpha * eps - sigma * x0,
                PredictionType::Sample => x0,
            } as f32;
        }
        Ok(EvalInfo { gate: Some([t as f32, 0.0]) })
    }
}

/// A model that always fails.
pub struct FailingDenoiser;

impl Denoiser for FailingDenoiser {
    fn sample_len(&self) -> usize {
        2
    }

    fn eval(&mut self, _x: &[f32], _t: f64, _out: &mut [f32]) -> Result<EvalInfo, DenoiseError> {
        Err(DenoiseError("out of memory".to_string()))
    }
}
