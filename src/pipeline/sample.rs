//! Stages 2 and 3: the *seeded start* (unit noise from the seed's stream 0, or the caller's, moved
//! to the plan's starting distribution) and *sample* (batch by batch, each batch's fresh noise at
//! its global offset, a callback after every step and a stop flag checked before every model
//! call).

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::journal::{Journal, Journaled};
use super::{Generator, PipelineError, RunPlan};
use crate::rng::NoiseRng;
use crate::sampler::{self, Denoiser, SampleError, SampleStats, Step};

/// The starting state of every sample of a run, at the plan's first timestep.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    x: Vec<f32>,
}

impl Start {
    /// The state, `count * sample_len` values.
    pub fn values(&self) -> &[f32] {
        &self.x
    }
}

/// One step of one batch, as the callback of [`Generator::sample`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct StepReport<'a> {
    /// 0-based batch, of `batches`.
    pub batch: usize,
    pub batches: usize,
    pub step: &'a Step,
    /// Model evaluations of the whole run so far.
    pub nfe_total: usize,
}

/// A dual-scale model's gate weights at one step (of the first batch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateRecord {
    pub step: usize,
    pub t: f64,
    /// (global, local).
    pub gate: [f32; 2],
}

/// What sampling produced: the samples and how the run went.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// `count * sample_len` values, sample after sample.
    pub values: Vec<f32>,
    /// Steps, NFE and timesteps of one batch (every batch runs the same steps, except the
    /// adaptive sampler's: the last batch's).
    pub stats: SampleStats,
    /// Model evaluations over all batches.
    pub nfe_total: usize,
    pub gates: Vec<GateRecord>,
    pub sampling_seconds: f64,
}

impl RunPlan {
    /// What makes this run's samples what they are (model bytes, schedule, sampler, seed,
    /// sizes, start, given noise, this build): the sha256 a [`Journal`] is opened with.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let noise = self.init_noise.as_ref().map(|n| crate::manifest::sha256_hex(&crate::npy::to_bytes_f32(&[n.values.len()], &n.values)));
        h.update(
            format!(
                "{}|{}|{:?}|{:?}|{}|{}|{}|{}|{:?}|{:?}",
                env!("CARGO_PKG_VERSION"),
                self.model.sha256,
                self.schedule,
                self.sampler,
                self.seed,
                self.count,
                self.batch,
                self.threads,
                self.start,
                noise
            )
            .as_bytes(),
        );
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Stage 2: the run's starting state. Sample `k` takes normals `k L ..` of the seed's stream
    /// 0 (`rng.rs`), or the caller's noise, moved to the plan's starting distribution.
    pub fn seeded_start(&self) -> Result<Start, PipelineError> {
        let len = self.sample_len();
        let mut x = match &self.init_noise {
            Some(noise) => noise.values.clone(),
            None => {
                let mut z = vec![0f32; self.count * len];
                NoiseRng::new(self.seed).initial_noise(0, len, &mut z);
                z
            }
        };
        self.start.apply(&mut x, len).map_err(PipelineError::Sample)?;
        Ok(Start { x })
    }
}

impl Generator {
    /// Stage 3: samples the plan from `start`. `on_step` sees every finished step of every batch
    /// and may stop the run by returning `Break`; `stop` is checked before every model call, so
    /// a stop lands within one. Either way the result is [`PipelineError::Interrupted`] and no
    /// samples are returned.
    pub fn sample(
        &mut self,
        plan: &RunPlan,
        start: Start,
        on_step: &mut dyn FnMut(&StepReport) -> ControlFlow<()>,
        stop: &AtomicBool,
    ) -> Result<Samples, PipelineError> {
        self.denoiser.set_threads(plan.threads);
        sample_with(&mut self.denoiser, plan, start, on_step, stop)
    }

    /// [`Generator::sample`] that records every model evaluation in `journal` and answers from
    /// it the evaluations an interrupted run of the same plan already made, so a run resumed
    /// after a crash gives the same samples, bit for bit, as one that never stopped
    /// (`journal.rs`). Open the journal with [`RunPlan::fingerprint`].
    pub fn sample_journaled(
        &mut self,
        plan: &RunPlan,
        start: Start,
        on_step: &mut dyn FnMut(&StepReport) -> ControlFlow<()>,
        stop: &AtomicBool,
        journal: &mut Journal,
    ) -> Result<Samples, PipelineError> {
        self.denoiser.set_threads(plan.threads);
        let mut journaled = Journaled { inner: &mut self.denoiser, journal };
        sample_with(&mut journaled, plan, start, on_step, stop)
    }
}

fn sample_with(
    denoiser: &mut dyn Denoiser,
    plan: &RunPlan,
    start: Start,
    on_step: &mut dyn FnMut(&StepReport) -> ControlFlow<()>,
    stop: &AtomicBool,
) -> Result<Samples, PipelineError> {
    let len = plan.sample_len();
    let mut x = start.x;
    if x.len() != plan.count * len {
        return Err(PipelineError::Request(format!(
            "the start has {} values but the plan needs {} ({} samples of {len}); draw it with RunPlan::seeded_start",
            x.len(),
            plan.count * len,
            plan.count
        )));
    }
    let rng = NoiseRng::new(plan.seed);
    let batches = plan.batches();
    let mut gates = Vec::new();
    let mut nfe_total = 0usize;
    let mut last = None;
    let started = Instant::now();
    for (b, chunk) in x.chunks_mut(plan.batch * len).enumerate() {
        let mut noise = rng.step_noise((b * plan.batch) as u64, len);
        let nfe_before = nfe_total;
        let mut step_cb = |step: &Step| {
            if b == 0 {
                if let Some(g) = step.gate {
                    gates.push(GateRecord { step: step.index, t: step.t, gate: g });
                }
            }
            on_step(&StepReport { batch: b, batches, step, nfe_total: nfe_before + step.nfe })
        };
        let stats = sampler::sample_cancellable(denoiser, &plan.schedule, &plan.sampler, chunk, &mut noise, &mut step_cb, stop).map_err(
            |e| match e {
                SampleError::Interrupted { step } => PipelineError::Interrupted {
                    at: match sampler::planned_nfe(&plan.sampler) {
                        Some(_) => format!("step {} of {} (batch {} of {batches})", step + 1, plan.sampler.steps, b + 1),
                        None => format!("step {} (batch {} of {batches})", step + 1, b + 1),
                    },
                },
                other => PipelineError::Sample(other),
            },
        )?;
        nfe_total += stats.nfe;
        last = Some(stats);
    }
    let stats = last.ok_or_else(|| PipelineError::Request("the plan has no samples".into()))?;
    Ok(Samples { values: x, stats, nfe_total, gates, sampling_seconds: started.elapsed().as_secs_f64() })
}
