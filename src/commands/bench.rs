//! `dualscale bench`: times model evaluations per batch size on this machine (plan building
//! excluded), the figure `--time-budget` relies on; with `--nodes`, which graph nodes take the
//! time. Reads the model; writes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::json;

use super::Out;
use crate::cli::BenchConfig;
use crate::pipeline::{Generator, PipelineError};
use crate::sampler::Denoiser;

pub fn run(cfg: &BenchConfig, stop: &AtomicBool) -> anyhow::Result<()> {
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
        let x: Vec<f32> = (0..batch * len).map(|i| ((i % 17) as f32 - 8.0) / 4.0).collect();
        let mut y = vec![0f32; x.len()];
        denoiser.eval(&x, t, &mut y).map_err(|e| anyhow::anyhow!("{e}"))?; // warm-up
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            if stop.load(Ordering::Relaxed) {
                return Err(PipelineError::Interrupted { at: format!("batch size {batch}") }.into());
            }
            let s = Instant::now();
            denoiser.eval(&x, t, &mut y).map_err(|e| anyhow::anyhow!("{e}"))?;
            times.push(s.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let nodes = if cfg.nodes > 0 { denoiser.profile_nodes(&x, t, iters)? } else { Vec::new() };
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
