//! `dualscale generate`: load the model, draw the initial noise from the seed (or a file), pick
//! the steps (or fit them to a time budget), sample batch by batch, then write every output file
//! atomically. Nothing is written until sampling has finished, so an interrupted or failed run
//! leaves no partial output.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::{json, Value};

use crate::cli::{GenerateConfig, InitDistribution, StepBudget, UsageError};
use crate::model::{ModelInfo, ModelKind, TractDenoiser};
use crate::output::{self, NameVars};
use crate::progress::Progress;
use crate::rng::NoiseRng;
use crate::sampler::{self, Denoiser, NoiseSource, SampleStats, SamplerKind, SamplerOptions, Step};
use crate::schedule::ScheduleConfig;

/// Default steps when neither `--steps` nor `--time-budget` is given (ddpm uses every training step).
const DEFAULT_STEPS: usize = 20;
/// Points per cloud when `--count` is not given.
const DEFAULT_POINTS: usize = 10_000;

/// Step noise for one batch: stream `step + 1` of the seed's generator, at the batch's global
/// offset, so the noise of a sample never depends on how the run was split into batches.
struct BatchNoise {
    rng: NoiseRng,
    offset: u64,
}

impl NoiseSource for BatchNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) {
        self.rng.fill_normal(step as u64 + 1, self.offset, out);
    }
}

/// One step's gate weights, for the JSON sidecar.
#[derive(Debug, Clone)]
struct GateRecord {
    step: usize,
    t: f64,
    gate: [f32; 2],
}

pub fn run(cfg: GenerateConfig, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let started = Instant::now();
    check_out_dir(&cfg.out)?;
    let model = super::load_model(&cfg.model)?;
    let info = model.info().clone();
    let schedule = model.config().schedule.clone();
    let data_stats = model.config().data_stats().cloned();
    let len = info.kind.sample_len();
    let (count, batch) = match info.kind {
        ModelKind::Points { .. } => {
            let count = cfg.count.unwrap_or(DEFAULT_POINTS);
            (count, cfg.batch.unwrap_or(count).min(count))
        }
        ModelKind::Image { .. } => {
            let count = cfg.count.unwrap_or(1);
            (count, cfg.batch.unwrap_or(1).min(count))
        }
    };
    let batches = count.div_ceil(batch);

    // Names are fixed before any work, so an existing file stops the run before minutes of compute.
    let created = SystemTime::now();
    let outputs = planned_outputs(&cfg, &info, count, created)?;

    let mut denoiser = model.into_denoiser()?;
    denoiser.set_threads(cfg.threads);
    let opts = choose_steps(&cfg, &schedule, &mut denoiser, batch, batches)?;
    let progress = Progress::new(cfg.json, (sampler::planned_nfe(&opts).map_or(opts.steps, |_| opts.steps) * batches) as u64);

    let mut x = initial_noise(&cfg, count, len, &info)?;
    let t_first = sampler::first_timestep(&schedule, &opts)?;
    let abar_first = abar_at(&schedule, t_first)?;
    let start = start_distribution(cfg.init, abar_first, data_stats.as_ref(), len)?;
    if start == "data" {
        let stats = data_stats.as_ref().context("internal: data start without data_stats")?;
        for sample in x.chunks_mut(batch * len) {
            sampler::start_from_data_moments(sample, len, abar_first, &stats.mean, &stats.cov)?;
        }
    }
    progress.event(
        "start",
        json!({"model": info.name, "sha256": info.sha256, "sampler": opts.kind.to_string(), "steps": opts.steps,
               "count": count, "batch": batch, "seed": cfg.seed, "init": start, "abar_start": abar_first,
               "device": denoiser.model().device().to_string()}),
    );

    let rng = NoiseRng::new(cfg.seed);
    let mut gates: Vec<GateRecord> = Vec::new();
    let mut nfe_total = 0usize;
    let mut last_stats: Option<SampleStats> = None;
    let sampling_started = Instant::now();
    for (b, chunk) in x.chunks_mut(batch * len).enumerate() {
        let mut noise = BatchNoise { rng, offset: (b * batch * len) as u64 };
        let nfe_before = nfe_total;
        let mut on_step = |step: &Step| {
            if b == 0 {
                if let Some(g) = step.gate {
                    gates.push(GateRecord { step: step.index, t: step.t, gate: g });
                }
            }
            progress.extend_to(((step.index + 1) * batches) as u64);
            progress.step(step, b, nfe_before + step.nfe);
            if interrupted.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let stats = sampler::sample(&mut denoiser, &schedule, &opts, chunk, &mut noise, &mut on_step);
        let stats = match stats {
            Ok(s) => s,
            Err(e) => {
                progress.finish();
                progress.event("error", json!({"message": e.to_string()}));
                return Err(e.into());
            }
        };
        nfe_total += stats.nfe;
        last_stats = Some(stats);
    }
    progress.finish();
    let sampling_s = sampling_started.elapsed().as_secs_f64();
    let stats = last_stats.context("internal: no batch was sampled")?;

    let recipe = json!({
        "dualscale_version": env!("CARGO_PKG_VERSION"),
        "model": {"name": info.name, "sha256": info.sha256, "verification": info.verification.to_string(),
                   "kind": info.kind.name(), "precision": info.precision},
        "sampler": opts.kind.to_string(), "steps": stats.steps, "nfe": stats.nfe, "nfe_total": nfe_total,
        "rejected_steps": stats.rejected, "eta": opts.eta, "rtol": opts.rtol, "atol": opts.atol,
        "seed": cfg.seed, "count": count, "batch": batch, "threads": cfg.threads,
        "device": denoiser.model().device().to_string(), "compute": format!("{:?}", denoiser.model().compute_dtype()),
        "init": start, "init_noise": cfg.init_noise.as_ref().map(|p| p.display().to_string()),
        "abar_start": abar_first, "timesteps": stats.timesteps,
        "schedule": schedule_json(&schedule),
        "gate_weights": gates.iter().map(|g| json!({"step": g.step, "t": g.t, "global": g.gate[0], "local": g.gate[1]})).collect::<Vec<_>>(),
        "sampling_seconds": sampling_s,
        "created_unix": created.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    });
    let written = write_outputs(&cfg, &info, &outputs, &x, len, &recipe)?;
    for path in &written {
        if cfg.json {
            progress.event("file", json!({"path": path.display().to_string()}));
        } else {
            println!("{}", path.display());
        }
    }
    progress.event(
        "done",
        json!({"nfe": nfe_total, "sampling_seconds": sampling_s, "total_seconds": started.elapsed().as_secs_f64(),
               "files": written.len()}),
    );
    log::info!(
        "{} x {} in {sampling_s:.2} s ({} NFE per batch, {} batches, sampler {} {} steps)",
        count,
        info.kind.name(),
        stats.nfe,
        batches,
        opts.kind,
        stats.steps
    );
    Ok(())
}

fn check_out_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!("output path {} is not a directory; pass --out DIR", dir.display()),
        Err(_) => anyhow::bail!("output directory {} does not exist; create it (mkdir -p {}) or pass --out DIR", dir.display(), dir.display()),
    }
}

/// The files one run writes, grouped per output (one group for a point cloud, one per image).
fn planned_outputs(cfg: &GenerateConfig, info: &ModelInfo, count: usize, created: SystemTime) -> anyhow::Result<Vec<Vec<PathBuf>>> {
    let groups = match info.kind {
        ModelKind::Points { .. } => 1,
        ModelKind::Image { .. } => count,
    };
    let exts: &[&str] = match info.kind {
        ModelKind::Points { .. } => &["csv", "npy", "png", "json"],
        ModelKind::Image { .. } => &["png", "json"],
    };
    let mut planned = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for index in 0..groups {
        let vars = NameVars { model: info.name.clone(), seed: cfg.seed, index: index as u64, time: created };
        let stem = output::expand_name(&cfg.name, &vars).map_err(|e| UsageError(format!("--name: {e}")))?;
        let mut group = Vec::new();
        for ext in exts {
            let path = cfg.out.join(format!("{stem}.{ext}"));
            if !seen.insert(path.clone()) {
                return Err(UsageError(format!(
                    "--name `{}` gives the same file name {} for several outputs; add {{index}}",
                    cfg.name,
                    path.display()
                ))
                .into());
            }
            if !cfg.overwrite && path.exists() {
                anyhow::bail!("{} exists; pass --overwrite to replace it or choose another --name/--out", path.display());
            }
            group.push(path);
        }
        planned.push(group);
    }
    Ok(planned)
}

/// Picks the sampler's steps from `--steps`, the default, or the time budget.
fn choose_steps(
    cfg: &GenerateConfig,
    schedule: &ScheduleConfig,
    denoiser: &mut TractDenoiser,
    batch: usize,
    batches: usize,
) -> anyhow::Result<SamplerOptions> {
    let t_max = schedule.num_train_timesteps;
    let mut opts = cfg.sampler.clone();
    match &cfg.budget {
        StepBudget::Steps(0) => {
            opts.steps = if opts.kind == SamplerKind::Ddpm { t_max } else { DEFAULT_STEPS.min(t_max) };
        }
        StepBudget::Steps(n) => {
            if *n > t_max {
                return Err(UsageError(format!(
                    "--steps {n} is more than the model's {t_max} training timesteps; use 1..={t_max}"
                ))
                .into());
            }
            opts.steps = *n;
        }
        StepBudget::Time { budget, sampler_given } => {
            if opts.kind == SamplerKind::Adaptive {
                return Err(UsageError(
                    "--time-budget picks a fixed step count and does not apply to --sampler adaptive; use --rtol/--atol".into(),
                )
                .into());
            }
            let per_eval = time_one_eval(denoiser, batch, schedule)?;
            let evals = (budget.as_secs_f64() * 0.9 / (per_eval.as_secs_f64() * batches as f64)).floor() as usize;
            if evals == 0 {
                anyhow::bail!(
                    "--time-budget {:.3} s is too small: one model evaluation of {batch} samples takes {:.3} s here ({batches} batches); allow at least {:.3} s or lower --count",
                    budget.as_secs_f64(),
                    per_eval.as_secs_f64(),
                    per_eval.as_secs_f64() * batches as f64 / 0.9
                );
            }
            if !sampler_given {
                // Multistep solvers cost one evaluation per step; third order pays off from ~8 steps.
                opts.kind = if evals >= 8 { SamplerKind::DpmPp3m } else { SamplerKind::UniPc };
            }
            let per_step = if opts.kind == SamplerKind::Heun { 2 } else { 1 };
            opts.steps = (evals / per_step).clamp(1, t_max);
            if opts.kind == SamplerKind::Heun && evals < 2 {
                opts.steps = 1;
            }
            // Spacings cap the step count below T for some samplers (`leading` multistep solvers
            // lay out N+1 points): take the largest count the schedule accepts.
            while opts.steps > 1 && sampler::check_options(schedule, &opts).is_err() {
                opts.steps -= 1;
            }
            log::info!(
                "time budget {:.3} s: one evaluation of {batch} samples takes {:.2} ms; chose {} with {} steps",
                budget.as_secs_f64(),
                per_eval.as_secs_f64() * 1e3,
                opts.kind,
                opts.steps
            );
            if cfg.json {
                println!(
                    "{}",
                    json!({"event": "budget", "budget_s": budget.as_secs_f64(), "eval_ms": per_eval.as_secs_f64() * 1e3,
                           "sampler": opts.kind.to_string(), "steps": opts.steps})
                );
            } else {
                eprintln!(
                    "time budget {:.2} s: {:.2} ms per evaluation -> {} with {} steps",
                    budget.as_secs_f64(),
                    per_eval.as_secs_f64() * 1e3,
                    opts.kind,
                    opts.steps
                );
            }
        }
    }
    Ok(opts)
}

/// Median time of one model evaluation at this batch size (after building its plan).
fn time_one_eval(denoiser: &mut TractDenoiser, batch: usize, schedule: &ScheduleConfig) -> anyhow::Result<Duration> {
    denoiser.prepare(batch)?;
    let len = denoiser.sample_len();
    let x = vec![0.1f32; batch * len];
    let mut out = vec![0f32; batch * len];
    let t = (schedule.num_train_timesteps / 2) as f64;
    let mut times = Vec::new();
    for _ in 0..3 {
        let s = Instant::now();
        denoiser.eval(&x, t, &mut out).map_err(|e| anyhow::anyhow!("timing the model failed: {e}"))?;
        times.push(s.elapsed());
    }
    times.sort();
    Ok(times[1])
}

/// Unit Gaussian noise from the seed, or from `--init-noise`.
fn initial_noise(cfg: &GenerateConfig, count: usize, len: usize, info: &ModelInfo) -> anyhow::Result<Vec<f32>> {
    let Some(path) = &cfg.init_noise else {
        let mut z = vec![0f32; count * len];
        NoiseRng::new(cfg.seed).fill_normal(0, 0, &mut z);
        return Ok(z);
    };
    let (shape, data) = crate::npy::read_f32_file(path).with_context(|| format!("--init-noise {}", path.display()))?;
    if data.len() != count * len || shape.first() != Some(&count) {
        anyhow::bail!(
            "--init-noise {} has shape {:?}, but {count} samples of this {} model need [{count}, {}]; pass --count {} or another file",
            path.display(),
            shape,
            info.kind.name(),
            info.inputs.iter().find(|i| i.shape.len() >= 2).map(|i| i.shape_string()).unwrap_or_default(),
            shape.first().copied().unwrap_or(0)
        );
    }
    if data.iter().any(|v| !v.is_finite()) {
        anyhow::bail!("--init-noise {} contains NaN or Inf", path.display());
    }
    Ok(data)
}

/// abar at a (possibly fractional) timestep, interpolated as the samplers do.
fn abar_at(schedule: &ScheduleConfig, t: f64) -> anyhow::Result<f64> {
    Ok(crate::schedule::NoiseSchedule::new(schedule)?.level(t).abar())
}

/// Which starting distribution to use: "unit" (N(0, I)) or "data" (the data's moments pushed
/// through the forward process to the first timestep).
fn start_distribution(
    mode: InitDistribution,
    abar: f64,
    stats: Option<&crate::manifest::DataStats>,
    len: usize,
) -> anyhow::Result<&'static str> {
    let fits = stats.is_some_and(|s| s.mean.len() == len);
    match mode {
        InitDistribution::Unit => Ok("unit"),
        InitDistribution::DataMoments if fits => Ok("data"),
        InitDistribution::DataMoments => Err(UsageError(
            "--init data needs `data_stats` (mean and cov of the sample's size) in the model's manifest; use --init unit".into(),
        )
        .into()),
        InitDistribution::Auto if fits && abar > 1e-3 => Ok("data"),
        InitDistribution::Auto => {
            if abar > 0.01 {
                log::warn!(
                    "the schedule starts at abar = {abar:.3}, so x_T is not pure noise, but the model has no data_stats; starting from N(0, I) anyway"
                );
            }
            Ok("unit")
        }
    }
}

fn schedule_json(s: &ScheduleConfig) -> Value {
    json!({
        "num_train_timesteps": s.num_train_timesteps, "beta_start": s.beta_start, "beta_end": s.beta_end,
        "beta_schedule": s.beta_schedule.to_string(), "trained_betas": s.trained_betas.is_some(),
        "prediction_type": s.prediction_type.to_string(), "timestep_spacing": s.timestep_spacing.to_string(),
        "steps_offset": s.steps_offset,
    })
}

/// Writes all outputs; if one fails, removes the ones this run already wrote.
fn write_outputs(
    cfg: &GenerateConfig,
    info: &ModelInfo,
    planned: &[Vec<PathBuf>],
    x: &[f32],
    len: usize,
    recipe: &Value,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for (index, group) in planned.iter().enumerate() {
            let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
            match info.kind {
                ModelKind::Points { dim } => {
                    let count = x.len() / len;
                    let mut sidecar = recipe.clone();
                    sidecar["files"] = json!(group.iter().map(|p| p.display().to_string()).collect::<Vec<_>>());
                    files.push((group[0].clone(), output::points_csv(x, dim)));
                    files.push((group[1].clone(), crate::npy::to_bytes_f32(&[count, dim], x)));
                    files.push((group[2].clone(), output::scatter_png(x, dim)?));
                    files.push((group[3].clone(), serde_json::to_vec_pretty(&sidecar)?));
                }
                ModelKind::Image { channels, height, width } => {
                    let image = &x[index * len..(index + 1) * len];
                    let params = parameters_line(recipe, info, index);
                    let mut sidecar = recipe.clone();
                    sidecar["index"] = json!(index);
                    sidecar["parameters"] = json!(params);
                    files.push((group[0].clone(), output::image_png(image, channels, height, width, &params)?));
                    files.push((group[1].clone(), serde_json::to_vec_pretty(&sidecar)?));
                }
            }
            for (path, bytes) in files {
                output::write_atomic(&path, &bytes, cfg.overwrite)?;
                written.push(path);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    Ok(written)
}

/// The A1111-style `parameters` line stored in each PNG.
fn parameters_line(recipe: &Value, info: &ModelInfo, index: usize) -> String {
    format!(
        "Steps: {}, Sampler: {}, Seed: {}, Index: {index}, NFE: {}, Model: {}, Model sha256: {}, Version: dualscale {}",
        recipe["steps"], recipe["sampler"].as_str().unwrap_or("?"), recipe["seed"], recipe["nfe"], info.name, info.sha256,
        env!("CARGO_PKG_VERSION")
    )
}
