//! `dualscale generate`: the CLI's adapter over the library pipeline (`crate::pipeline`): load
//! the model, plan, name the outputs, sample with a progress bar or JSON events, write the set.
//! Every rule about the run itself lives in the pipeline; this file only reports.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use serde_json::json;

use super::Out;
use crate::cli::GenerateConfig;
use crate::pipeline::{Generator, InitNoise, Naming, OutputLayout, Recipe, RunPlan, StepReport};
use crate::progress::Progress;

pub fn run(cfg: GenerateConfig, stop: &AtomicBool) -> anyhow::Result<()> {
    let progress = Progress::new(cfg.json, 0);
    let result = generate(&cfg, &progress, stop);
    progress.finish();
    if let Err(e) = &result {
        progress.event("error", json!({"message": format!("{e:#}").replace('\n', " ")}));
    }
    result
}

fn generate(cfg: &GenerateConfig, progress: &Progress, stop: &AtomicBool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut request = cfg.request.clone();
    if let Some(path) = &cfg.init_noise {
        request.init_noise = Some(read_init_noise(path)?);
    }
    let model = super::load_model(&cfg.model)?;
    let device = model.device();
    let mut generator = Generator::new(model)?;
    let plan = generator.plan(&request)?;
    let naming = Naming {
        dir: cfg.out.clone(),
        template: cfg.name.clone(),
        overwrite: cfg.overwrite,
        created: SystemTime::now(),
        upscale: cfg.upscale,
    };
    let layout = OutputLayout::new(&plan, &naming)?;
    if let Some(b) = &plan.budget {
        report_budget(cfg.json, &plan, b)?;
    }
    progress.extend_to((plan.sampler.steps * plan.batches()) as u64);
    progress.event(
        "start",
        json!({"model": plan.model.name, "sha256": plan.model.sha256, "sampler": plan.sampler.kind.to_string(), "steps": plan.sampler.steps,
               "count": plan.count, "batch": plan.batch, "seed": plan.seed, "init": plan.start.name(), "abar_start": plan.abar_start,
               "device": device.to_string()}),
    );

    let start = plan.seeded_start()?;
    let mut on_step = |r: &StepReport| {
        progress.extend_to(((r.step.index + 1) * r.batches) as u64);
        progress.step(r.step, r.batch, r.nfe_total);
        ControlFlow::Continue(())
    };
    let samples = generator.sample(&plan, start, &mut on_step, stop)?;
    progress.finish();

    // From here to the end of the write, a second signal does not end the process: the first
    // one makes the write stop cleanly, with nothing on disk, and says so.
    let _shield = crate::signals::Shield::raise();
    progress.event("write", json!({"files": layout.files().len()}));
    let recipe = Recipe::new(&plan, generator.model(), &samples, layout.created());
    let written = layout.encode(&plan, &samples, &recipe)?.write(layout.overwrite(), stop)?;
    let out = Out::stdout();
    for path in &written {
        if cfg.json {
            progress.event("file", json!({"path": path.display().to_string()}));
        } else {
            out.line(path.display())?;
        }
    }
    progress.event(
        "done",
        json!({"nfe": samples.nfe_total, "sampling_seconds": samples.sampling_seconds, "total_seconds": started.elapsed().as_secs_f64(),
               "files": written.len()}),
    );
    progress.check().context("the files were written, but writing their list to stdout failed")?;
    log::info!(
        "{} x {} in {:.2} s ({} NFE per batch, {} batches, sampler {} {} steps)",
        plan.count,
        plan.model.kind.name(),
        samples.sampling_seconds,
        samples.stats.nfe,
        plan.batches(),
        plan.sampler.kind,
        samples.stats.steps
    );
    Ok(())
}

fn read_init_noise(path: &Path) -> anyhow::Result<InitNoise> {
    let (shape, values) = crate::npy::read_f32_file(path).with_context(|| format!("--init-noise {}", path.display()))?;
    Ok(InitNoise { source: path.to_owned(), shape, values })
}

/// Tells what the time budget chose (stderr, or a `budget` event with `--json`).
fn report_budget(json: bool, plan: &RunPlan, b: &crate::pipeline::BudgetDecision) -> anyhow::Result<()> {
    let (budget_s, spent_s, eval_ms) = (b.budget.as_secs_f64(), b.spent.as_secs_f64(), b.per_eval.as_secs_f64() * 1e3);
    log::info!(
        "time budget {budget_s:.3} s: {spent_s:.3} s spent loading and timing; one evaluation of {} samples takes {eval_ms:.2} ms; chose {} with {} steps",
        plan.batch,
        plan.sampler.kind,
        plan.sampler.steps
    );
    if json {
        Out::stdout().line(json!({"event": "budget", "budget_s": budget_s, "spent_s": spent_s, "eval_ms": eval_ms,
                                  "sampler": plan.sampler.kind.to_string(), "steps": plan.sampler.steps}))?;
    } else {
        eprintln!(
            "time budget {budget_s:.2} s: {eval_ms:.2} ms per evaluation, {spent_s:.2} s already spent -> {} with {} steps",
            plan.sampler.kind, plan.sampler.steps
        );
    }
    Ok(())
}
