//! Stage 1, *plan the run*: a [`Request`] meets the loaded model and becomes a [`RunPlan`] in
//! which everything is resolved and checked (count, batch, sampler and its step count, spacing,
//! starting distribution, size limits) before the first model evaluation of the run itself.

use std::time::{Duration, Instant};

use super::request::*;
use super::{Generator, PipelineError};
use crate::manifest::{DataStats, RecommendedSampler};
use crate::model::{ModelInfo, ModelKind};
use crate::sampler::{self, Denoiser, SamplerKind, SamplerOptions, StartDistribution, MAX_FULL_COV_DIM};
use crate::schedule::{NoiseSchedule, ScheduleConfig};

/// What the time budget decided, for the caller to report.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetDecision {
    pub budget: Duration,
    /// Spent before sampling: loading, plan building, the timing evaluations.
    pub spent: Duration,
    /// Median time of one evaluation of one batch.
    pub per_eval: Duration,
    /// Model evaluations that fit (all batches).
    pub evals: usize,
}

/// A run with every choice made and checked; [`RunPlan::seeded_start`] draws its start.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The model's description (name, kind, sha256...).
    pub model: ModelInfo,
    /// The schedule the model was trained with (after overrides).
    pub schedule: ScheduleConfig,
    /// Sampler, steps (resolved), eta, tolerances, spacing.
    pub sampler: SamplerOptions,
    pub seed: u64,
    /// Points per cloud, or images.
    pub count: usize,
    /// Samples per model call (at most `count`).
    pub batch: usize,
    pub threads: usize,
    /// The timestep of the first evaluation and its abar.
    pub t_start: f64,
    pub abar_start: f64,
    pub start: StartDistribution,
    pub init_noise: Option<InitNoise>,
    pub budget: Option<BudgetDecision>,
}

impl RunPlan {
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.model.kind.sample_len()
    }

    /// Model calls per step: `ceil(count / batch)`.
    pub fn batches(&self) -> usize {
        self.count.div_ceil(self.batch)
    }

    /// Model evaluations of the whole run, if the sampler's count is fixed.
    pub fn planned_nfe(&self) -> Option<usize> {
        sampler::planned_nfe(&self.sampler).map(|n| n * self.batches())
    }
}

impl Generator {
    /// Plans a run of `req` on this generator's model. Everything a run can fail on before its
    /// first model call is checked here; nothing is allocated in proportion to the request
    /// before its size is checked. With a time budget, one evaluation is timed (its plan built).
    pub fn plan(&mut self, req: &Request) -> Result<RunPlan, PipelineError> {
        let info = self.denoiser.model().info().clone();
        let schedule = self.denoiser.model().config().schedule.clone();
        let noise =
            NoiseSchedule::new(&schedule).map_err(|e| PipelineError::Request(format!("the model's schedule cannot be used: {e}")))?;
        let len = info.kind.sample_len();
        let (count, batch) = sizes(req, &info)?;

        if let Some(noise) = &req.init_noise {
            check_init_noise(noise, count, len, &info)?;
        }
        // The model's recommended sampler applies unless another one is asked for; its steps
        // also give way to an asked-for spacing.
        let manifest = self.denoiser.model().config().manifest.as_ref();
        let own = manifest.and_then(|m| m.sampler.clone()).filter(|r| req.sampler.is_none_or(|k| k == r.kind));
        let kind = req.sampler.or(own.as_ref().map(|r| r.kind)).unwrap_or(SamplerKind::UniPc);
        let recommended = own.filter(|_| req.spacing.is_none());
        let mut opts = SamplerOptions::new(kind, 0);
        opts.eta = req.eta.unwrap_or(0.0);
        opts.rtol = req.rtol;
        opts.atol = req.atol;
        opts.spacing = req.spacing;
        if req.eta.is_some_and(|e| e != 0.0) && kind != SamplerKind::Ddim {
            log::warn!("--eta applies to ddim only; {kind} ignores it");
        }
        let t_max = schedule.num_train_timesteps;
        let mut budget = None;
        match (req.steps, &req.timesteps) {
            (StepChoice::Default, Some(list)) => {
                sampler::check_timestep_list(list, t_max).map_err(|e| PipelineError::Request(format!("--timesteps: {e}")))?;
                opts.set_timesteps(list.clone());
            }
            (_, Some(_)) => return Err(PipelineError::Request("--timesteps replaces --steps and --time-budget; give one of them".into())),
            (StepChoice::Default, None) => match &recommended {
                Some(rec) => apply_recommended(&mut opts, rec),
                None => opts.steps = if kind == SamplerKind::Ddpm { t_max } else { DEFAULT_STEPS.min(t_max) },
            },
            (StepChoice::Exactly(n), None) => {
                if n.get() > t_max {
                    return Err(PipelineError::Request(format!(
                        "--steps {n} is more than the model's {t_max} training timesteps; use 1..={t_max}"
                    )));
                }
                opts.steps = n.get();
                // Asking for the recommended count gets the recommended list.
                if let Some(rec) = recommended.as_ref().filter(|r| r.steps() == Some(n.get())) {
                    apply_recommended(&mut opts, rec);
                }
            }
            (StepChoice::TimeBudget { budget: total, since }, None) => {
                let given = req.sampler.is_some() || recommended.is_some();
                let decision = self.fit_budget(&mut opts, given, total, since, &schedule, batch, count.div_ceil(batch))?;
                // A model's recommended steps are what it is made for: the budget buys up to them.
                if let Some(rec) = &recommended {
                    let wanted = rec.steps().unwrap_or(opts.steps);
                    if opts.steps >= wanted {
                        apply_recommended(&mut opts, rec);
                    } else {
                        log::warn!(
                            "the time budget buys {} steps, fewer than the {wanted} this model is made for; expect lower quality",
                            opts.steps
                        );
                    }
                }
                budget = Some(decision);
            }
        }
        sampler::check_options(&schedule, &opts).map_err(|e| PipelineError::Request(e.to_string()))?;
        let t_start = sampler::first_timestep(&schedule, &opts).map_err(|e| PipelineError::Request(e.to_string()))?;
        let abar_start = noise.level(t_start).abar();
        let start = start_distribution(req.init, abar_start, self.denoiser.model().config().data_stats(), len)?;
        Ok(RunPlan {
            model: info,
            schedule,
            sampler: opts,
            seed: req.seed,
            count,
            batch,
            threads: req.threads.get(),
            t_start,
            abar_start,
            start,
            init_noise: req.init_noise.clone(),
            budget,
        })
    }

    /// Picks the sampler's steps (and, if none was asked for, the solver) to fit a time budget.
    #[allow(clippy::too_many_arguments)]
    fn fit_budget(
        &mut self,
        opts: &mut SamplerOptions,
        sampler_given: bool,
        total: Duration,
        since: Instant,
        schedule: &ScheduleConfig,
        batch: usize,
        batches: usize,
    ) -> Result<BudgetDecision, PipelineError> {
        if opts.kind == SamplerKind::Adaptive {
            return Err(PipelineError::Request(
                "--time-budget picks a fixed step count and does not apply to --sampler adaptive; use --rtol/--atol".into(),
            ));
        }
        let per_eval = self.time_one_eval(batch)?;
        let spent = since.elapsed();
        // 10% of what is left is kept for the step overhead and writing the outputs.
        let left = total.saturating_sub(spent).as_secs_f64() * 0.9;
        let evals = (left / (per_eval.as_secs_f64() * batches as f64)).floor() as usize;
        if evals == 0 {
            return Err(PipelineError::Budget(format!(
                "--time-budget {:.3} s is too small: {:.3} s went to loading the model and timing it, and one model evaluation of {batch} samples takes {:.3} s here ({batches} batches); allow at least {:.3} s or lower --count",
                total.as_secs_f64(),
                spent.as_secs_f64(),
                per_eval.as_secs_f64(),
                spent.as_secs_f64() + per_eval.as_secs_f64() * batches as f64 / 0.9
            )));
        }
        if !sampler_given {
            // Multistep solvers cost one evaluation per step; third order pays off from ~8 steps.
            opts.kind = if evals >= 8 { SamplerKind::DpmPp3m } else { SamplerKind::UniPc };
        }
        let t_max = schedule.num_train_timesteps;
        let per_step = if opts.kind == SamplerKind::Heun { 2 } else { 1 };
        opts.steps = (evals / per_step).clamp(1, t_max);
        // Spacings cap the step count below T for some samplers (`leading` multistep solvers lay
        // out N+1 points): take the largest count the schedule accepts.
        while opts.steps > 1 && sampler::check_options(schedule, opts).is_err() {
            opts.steps -= 1;
        }
        Ok(BudgetDecision { budget: total, spent, per_eval, evals })
    }

    /// Median time of one model evaluation of `batch` samples (after building its plans).
    pub fn time_one_eval(&mut self, batch: usize) -> Result<Duration, PipelineError> {
        self.denoiser.prepare(batch)?;
        let len = self.denoiser.sample_len();
        let x = vec![0.1f32; batch * len];
        let mut out = vec![0f32; batch * len];
        let t = (self.denoiser.model().config().schedule.num_train_timesteps / 2) as f64;
        let mut times = Vec::new();
        for _ in 0..3 {
            let s = Instant::now();
            self.denoiser
                .eval(&x, t, &mut out)
                .map_err(|e| PipelineError::Model(crate::model::ModelError::Plan { batch, detail: e.to_string() }))?;
            times.push(s.elapsed());
        }
        times.sort();
        Ok(times[1])
    }
}

/// The model's recommended timesteps (or step count) in `opts`.
fn apply_recommended(opts: &mut SamplerOptions, rec: &RecommendedSampler) {
    match (&rec.timesteps, rec.steps) {
        (Some(list), _) => opts.set_timesteps(list.clone()),
        (None, Some(n)) => opts.steps = n,
        (None, None) => {}
    }
}

/// Count and batch, defaulted and checked against the size limits.
fn sizes(req: &Request, info: &ModelInfo) -> Result<(usize, usize), PipelineError> {
    let len = info.kind.sample_len();
    let (count, batch) = match info.kind {
        ModelKind::Points { .. } => {
            let count = req.count.map_or(DEFAULT_POINTS, |c| c.get());
            (count, req.batch.map_or(DEFAULT_POINT_BATCH, |b| b.get()).min(count))
        }
        ModelKind::Image { .. } => {
            // One image per thread: the threads share a model call's batch.
            let count = req.count.map_or(1, |c| c.get());
            (count, req.batch.map_or(req.threads.get(), |b| b.get()).min(count))
        }
    };
    let what = if matches!(info.kind, ModelKind::Image { .. }) { "images" } else { "points" };
    if count.checked_mul(len).is_none_or(|v| v > MAX_RUN_VALUES) {
        return Err(PipelineError::Request(format!(
            "--count {count} is too large: one run holds at most {} {what} of this model ({MAX_RUN_VALUES} values); split the work into several runs with different --seed",
            MAX_RUN_VALUES / len
        )));
    }
    if batch * len > MAX_BATCH_VALUES {
        return Err(PipelineError::Request(format!(
            "--batch {batch} is too large: one model call takes at most {} {what} of this model; lower --batch",
            MAX_BATCH_VALUES / len
        )));
    }
    Ok((count, batch))
}

fn check_init_noise(noise: &InitNoise, count: usize, len: usize, info: &ModelInfo) -> Result<(), PipelineError> {
    let want = format!("[{count}, {}]", shape_tail(info));
    if noise.values.len() != count * len || noise.shape.first() != Some(&count) {
        let hint = match noise.shape.first() {
            Some(&n) if n != count && n > 0 && noise.values.len() == n * len => format!("pass --count {n} or another file"),
            _ => format!("pass a file of shape {want}"),
        };
        return Err(PipelineError::Request(format!(
            "--init-noise {} has shape {:?}, but {count} samples of this {} model need {want}; {hint}",
            noise.source.display(),
            noise.shape,
            info.kind.name(),
        )));
    }
    if noise.values.iter().any(|v| !v.is_finite()) {
        return Err(PipelineError::Request(format!(
            "--init-noise {} contains NaN or Inf; pass finite Gaussian noise",
            noise.source.display()
        )));
    }
    Ok(())
}

/// The per-sample shape written as `2` or `3, 32, 32`.
fn shape_tail(info: &ModelInfo) -> String {
    match info.kind {
        ModelKind::Points { dim } => dim.to_string(),
        ModelKind::Image { channels, height, width } => format!("{channels}, {height}, {width}"),
    }
}

/// The starting distribution a request gets with this model (see [`InitChoice`]).
fn start_distribution(init: InitChoice, abar: f64, stats: Option<&DataStats>, len: usize) -> Result<StartDistribution, PipelineError> {
    let data = stats.filter(|s| s.mean.len() == len).and_then(|s| data_start(s, abar, len));
    match (init, data) {
        (InitChoice::Unit, _) => Ok(StartDistribution::Unit),
        (InitChoice::Data, Some(d)) => Ok(d),
        (InitChoice::Data, None) => Err(PipelineError::Request(
            "--init data needs `data_stats` (mean, and cov or var, of the sample's size) in the model's manifest; use --init unit".into(),
        )),
        (InitChoice::Auto, Some(d)) if abar > 1e-3 => Ok(d),
        (InitChoice::Auto, _) => {
            if abar > 0.01 {
                log::warn!(
                    "the schedule starts at abar = {abar:.3}, so x_T is not pure noise, but the model has no data_stats; starting from N(0, I) anyway"
                );
            }
            Ok(StartDistribution::Unit)
        }
    }
}

/// The data start the manifest's statistics allow: the full covariance for small samples, the
/// per-coordinate variances (given, or the covariance's diagonal) for any size.
fn data_start(stats: &DataStats, abar: f64, len: usize) -> Option<StartDistribution> {
    let mean = stats.mean.clone();
    match (&stats.cov, &stats.var) {
        (Some(cov), _) if len <= MAX_FULL_COV_DIM => Some(StartDistribution::DataMoments { abar, mean, cov: cov.clone() }),
        (_, Some(var)) => Some(StartDistribution::DataDiag { abar, mean, var: var.clone() }),
        (Some(cov), None) => Some(StartDistribution::DataDiag { abar, mean, var: (0..len).map(|i| cov[i][i]).collect() }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_samples_start_from_the_diagonal() {
        let len = 20;
        let cov: Vec<Vec<f64>> = (0..len).map(|i| (0..len).map(|j| if i == j { 2.0 } else { 0.1 }).collect()).collect();
        let stats = DataStats { mean: vec![0.0; len], cov: Some(cov), var: None };
        let d = start_distribution(InitChoice::Auto, 0.5, Some(&stats), len).unwrap();
        assert_eq!(d, StartDistribution::DataDiag { abar: 0.5, mean: vec![0.0; len], var: vec![2.0; len] });
        let small = DataStats { mean: vec![0.0; 2], cov: Some(vec![vec![1.0, 0.0], vec![0.0, 1.0]]), var: None };
        assert!(matches!(start_distribution(InitChoice::Auto, 0.5, Some(&small), 2).unwrap(), StartDistribution::DataMoments { .. }));
        // Pure noise at the start: auto takes N(0, I); --init data still honours the request.
        assert_eq!(start_distribution(InitChoice::Auto, 1e-5, Some(&small), 2).unwrap(), StartDistribution::Unit);
        assert!(matches!(start_distribution(InitChoice::Data, 1e-5, Some(&small), 2).unwrap(), StartDistribution::DataMoments { .. }));
        assert!(start_distribution(InitChoice::Data, 0.5, None, 2).is_err());
    }
}
