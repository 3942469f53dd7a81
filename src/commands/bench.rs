//! `dualscale bench`: what a model costs on this board. Without `--batch`, a summary: for each
//! precision the CPU runs well, one evaluation at the batch `generate` uses, samples per second
//! at the parallel width (all cores), and the steps `--time-budget` would choose for a few
//! budgets. With `--batch`, the median time per batch size (plan building excluded), and with
//! `--nodes`, which graph nodes take the time. Reads the model; writes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::json;

use super::Out;
use crate::cli::BenchConfig;
use crate::pipeline::{Generator, PipelineError};
use crate::sampler::Denoiser;

pub fn run(cfg: &BenchConfig, stop: &AtomicBool) -> anyhow::Result<()> {
    if cfg.batches.is_empty() {
        return summary(cfg, stop);
    }
    let out = Out::stdout();
    let (threads, iters) = (cfg.threads.get(), cfg.iters.get());
    let mut generator = Generator::new(super::load_model(&cfg.model)?)?;
    let name = generator.model().info().name.clone();
    let t = (generator.model().config().schedule.num_train_timesteps / 2) as f64;
    let denoiser = generator.denoiser();
    denoiser.set_threads(threads);
    let len = denoiser.sample_len();
    if !cfg.json {
        out.line(format_args!("model {name}, {threads} thread(s), {iters} timed evaluations per batch size"))?;
        out.line(format_args!("{:>8} {:>12} {:>12} {:>14} {:>12}", "batch", "plan ms", "median ms", "per sample us", "NFE/s"))?;
    }
    for batch in cfg.batches.iter().map(|b| b.get()) {
        if batch.saturating_mul(len) > crate::pipeline::MAX_BATCH_VALUES {
            return Err(PipelineError::Request(format!(
                "--batch {batch} is too large: one model call takes at most {} samples of this model",
                crate::pipeline::MAX_BATCH_VALUES / len
            ))
            .into());
        }
        let plan_started = Instant::now();
        denoiser.prepare(batch)?;
        let plan_ms = plan_started.elapsed().as_secs_f64() * 1e3;
        let times = timed_evals(denoiser, batch, t, iters, stop)?;
        let median = times[times.len() / 2];
        let nodes = if cfg.nodes > 0 { denoiser.profile_nodes(&bench_input(batch * len), t, iters)? } else { Vec::new() };
        let slowest = &nodes[..cfg.nodes.min(nodes.len())];
        if cfg.json {
            out.line(json!({"model": name, "batch": batch, "threads": threads, "plan_ms": plan_ms, "median_ms": median * 1e3,
                            "min_ms": times[0] * 1e3, "max_ms": times[times.len() - 1] * 1e3, "iters": iters,
                            "nodes": slowest.iter().map(|n| json!({"name": n.name, "op": n.op, "ms": n.ms})).collect::<Vec<_>>()}))?;
        } else {
            out.line(format_args!(
                "{batch:>8} {plan_ms:>12.1} {:>12.3} {:>14.3} {:>12.1}",
                median * 1e3,
                median * 1e6 / batch as f64,
                1.0 / median
            ))?;
            let total: f64 = nodes.iter().map(|n| n.ms).sum();
            for n in slowest {
                out.line(format_args!("{:>10.3} ms {:>5.1}%  {} ({})", n.ms, 100.0 * n.ms / total.max(f64::MIN_POSITIVE), n.name, n.op))?;
            }
        }
    }
    Ok(())
}

/// Budgets the summary fits steps to.
const BUDGETS_S: [f64; 4] = [1.0, 5.0, 30.0, 120.0];

/// A fixed, varied input of `n` values.
fn bench_input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 17) as f32 - 8.0) / 4.0).collect()
}

/// `iters` timed evaluations of `batch` samples after a warm-up, in seconds, sorted.
fn timed_evals(
    denoiser: &mut crate::model::TractDenoiser,
    batch: usize,
    t: f64,
    iters: usize,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<f64>> {
    denoiser.prepare(batch)?;
    let x = bench_input(batch * denoiser.sample_len());
    let mut y = vec![0f32; x.len()];
    denoiser.eval(&x, t, &mut y).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        if stop.load(Ordering::Relaxed) {
            return Err(PipelineError::Interrupted { at: format!("timing batch {batch}") }.into());
        }
        let s = Instant::now();
        denoiser.eval(&x, t, &mut y).map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Median of `iters` evaluations of `batch` samples, in seconds.
fn median_eval(denoiser: &mut crate::model::TractDenoiser, batch: usize, t: f64, iters: usize, stop: &AtomicBool) -> anyhow::Result<f64> {
    let times = timed_evals(denoiser, batch, t, iters, stop)?;
    Ok(times[times.len() / 2])
}

/// The board summary (no `--batch`).
fn summary(cfg: &BenchConfig, stop: &AtomicBool) -> anyhow::Result<()> {
    use crate::cpu::Precision;
    use crate::model::ModelKind;
    use crate::pipeline::{DEFAULT_POINTS, DEFAULT_POINT_BATCH};
    let out = Out::stdout();
    let cpu = crate::cpu::detect();
    let width = std::thread::available_parallelism().map_or(1, |n| n.get());
    let iters = cfg.iters.get();
    // f16 only where the CPU computes it natively (elsewhere tract's f16 is ~230x slower).
    let precisions: Vec<Precision> = if cpu.native_f16 { vec![Precision::F32, Precision::F16] } else { vec![Precision::F32] };
    if !cfg.json {
        out.line(format_args!(
            "{} ({}), {width} core(s), native f16: {}",
            cpu.model_name.as_deref().unwrap_or("unknown CPU"),
            cpu.arch,
            cpu.native_f16
        ))?;
    }
    for precision in precisions {
        let mut choice = cfg.model.clone();
        choice.load.precision = Some(precision);
        let load_started = Instant::now();
        let mut generator = Generator::new(super::load_model(&choice)?)?;
        let load_s = load_started.elapsed().as_secs_f64();
        let info = generator.model().info().clone();
        let t_max = generator.model().config().schedule.num_train_timesteps;
        let t = (t_max / 2) as f64;
        // What `generate` runs by default: a cloud of 10,000 points in batches, or one image.
        let (count, batch, what) = match info.kind {
            ModelKind::Points { .. } => (DEFAULT_POINTS, DEFAULT_POINT_BATCH.min(DEFAULT_POINTS), "points"),
            ModelKind::Image { .. } => (1, 1, "images"),
        };
        let den = generator.denoiser();
        den.set_threads(1);
        let plan_started = Instant::now();
        den.prepare(batch)?;
        let plan_ms = plan_started.elapsed().as_secs_f64() * 1e3;
        let one = median_eval(den, batch, t, iters, stop)?;
        // The parallel width: a batch split over every core (points), or as many images as cores.
        let wide_batch = if matches!(info.kind, ModelKind::Image { .. }) { width } else { batch };
        den.set_threads(width);
        let wide = median_eval(den, wide_batch, t, iters, stop)?;
        let per_second = wide_batch as f64 / wide;
        let batches = count.div_ceil(batch);
        // A model's recommended steps are the most a budget buys it (as `generate` does).
        let most = generator.model().config().manifest.as_ref().and_then(|m| m.sampler.as_ref()).and_then(|r| r.steps()).unwrap_or(t_max);
        let budgets: Vec<(f64, usize)> = BUDGETS_S
            .iter()
            .map(|&b| {
                let evals = ((b - load_s - plan_ms / 1e3) * 0.9 / (one * batches as f64)).max(0.0).floor() as usize;
                (b, evals.min(most))
            })
            .collect();
        if cfg.json {
            out.line(
                json!({"model": info.name, "precision": precision.name(), "compute": format!("{:?}", generator.model().compute_dtype()),
                            "load_ms": load_s * 1e3, "plan_ms": plan_ms, "batch": batch, "eval_ms": one * 1e3,
                            "width": width, "wide_batch": wide_batch, "samples_per_s": per_second, "what": what,
                            "budget_steps": budgets.iter().map(|(b, n)| json!({"budget_s": b, "steps": n})).collect::<Vec<_>>()}),
            )?;
            continue;
        }
        out.line(format_args!("model {} ({}), precision {precision}", info.name, info.kind.name()))?;
        out.line(format_args!("  load {:.0} ms, plan for batch {batch} {plan_ms:.0} ms", load_s * 1e3))?;
        out.line(format_args!("  one evaluation of {batch} {what}: {:.3} ms (1 thread)", one * 1e3))?;
        out.line(format_args!("  {per_second:.1} {what}-evaluations per second on {width} thread(s) (batch {wide_batch})"))?;
        let steps: Vec<String> = budgets.iter().map(|(b, n)| format!("{b:.0} s -> {n}")).collect();
        out.line(format_args!("  --time-budget for {count} {what}: {} model evaluations per sample", steps.join(", ")))?;
    }
    Ok(())
}
