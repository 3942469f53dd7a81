//! `dualscale bench`: times model evaluations per batch size on this machine (plan building
//! excluded), the figure `--time-budget` relies on; with `--nodes`, which graph nodes take the
//! time. Reads the model; writes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::json;

use crate::cli::{BenchArgs, UsageError};
use crate::sampler::Denoiser;

pub fn run(args: &BenchArgs, interrupted: &AtomicBool) -> anyhow::Result<()> {
    if args.iters == 0 || args.batch.contains(&0) || args.threads == 0 {
        return Err(UsageError("--iters, --threads and every --batch size must be at least 1".into()).into());
    }
    let model = super::load_model(&args.model.to_choice()?)?;
    let name = model.info().name.clone();
    let t = (model.config().schedule.num_train_timesteps / 2) as f64;
    let mut denoiser = model.into_denoiser()?;
    denoiser.set_threads(args.threads);
    let len = denoiser.sample_len();
    if !args.json {
        println!("model {name}, {} thread(s), {} timed evaluations per batch size", args.threads, args.iters);
        println!("{:>8} {:>12} {:>12} {:>14} {:>12}", "batch", "plan ms", "median ms", "per sample us", "NFE/s");
    }
    for &batch in &args.batch {
        let plan_started = Instant::now();
        denoiser.prepare(batch)?;
        let plan_ms = plan_started.elapsed().as_secs_f64() * 1e3;
        let x: Vec<f32> = (0..batch * len).map(|i| ((i % 17) as f32 - 8.0) / 4.0).collect();
        let mut out = vec![0f32; x.len()];
        denoiser.eval(&x, t, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?; // warm-up
        let mut times = Vec::with_capacity(args.iters);
        for _ in 0..args.iters {
            if interrupted.load(Ordering::Relaxed) {
                return Err(crate::sampler::SampleError::Interrupted { step: 0 }.into());
            }
            let s = Instant::now();
            denoiser.eval(&x, t, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
            times.push(s.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let nodes = if args.nodes > 0 { denoiser.profile_nodes(&x, t, args.iters)? } else { Vec::new() };
        let slowest = &nodes[..args.nodes.min(nodes.len())];
        if args.json {
            println!(
                "{}",
                json!({"model": name, "batch": batch, "threads": args.threads, "plan_ms": plan_ms, "median_ms": median * 1e3,
                       "min_ms": times[0] * 1e3, "max_ms": times[times.len() - 1] * 1e3, "iters": args.iters,
                       "nodes": slowest.iter().map(|n| json!({"name": n.name, "op": n.op, "ms": n.ms})).collect::<Vec<_>>()})
            );
        } else {
            println!(
                "{batch:>8} {plan_ms:>12.1} {:>12.3} {:>14.3} {:>12.1}",
                median * 1e3,
                median * 1e6 / batch as f64,
                1.0 / median
            );
            let total: f64 = nodes.iter().map(|n| n.ms).sum();
            for n in slowest {
                println!("{:>10.3} ms {:>5.1}%  {} ({})", n.ms, 100.0 * n.ms / total.max(f64::MIN_POSITIVE), n.name, n.op);
            }
        }
    }
    Ok(())
}
