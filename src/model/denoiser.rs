//! [`TractDenoiser`]: a [`Model`] as the samplers' [`Denoiser`]. One optimized plan per concrete
//! batch size, built on first use and reused by every step; a batch split over threads.

use std::collections::HashMap;
use std::sync::Arc;

use tract_core::runtime::Runnable;
use tract_onnx::prelude::*;

use super::plan::run_plan;
use super::{Model, ModelError};
use crate::device::ResolvedDevice;
use crate::sampler::{DenoiseError, Denoiser, EvalInfo};

/// One graph node's mean wall time per evaluation.
#[derive(Debug, Clone)]
pub struct NodeTime {
    pub name: String,
    pub op: String,
    pub ms: f64,
}

/// A [`Model`] ready to run: one plan per concrete batch size, built on first use and reused.
/// With `threads > 1` a batch is split into that many chunks run on scoped threads, each with
/// its own plan (tract runs one op on one thread).
pub struct TractDenoiser {
    model: Arc<Model>,
    plans: HashMap<usize, Arc<dyn Runnable>>,
    threads: usize,
}

impl TractDenoiser {
    pub(super) fn new(model: Arc<Model>) -> Self {
        TractDenoiser { model, plans: HashMap::new(), threads: 1 }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Threads for the CPU (a GPU runs a batch whole, so there it stays 1).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = if self.model.device == ResolvedDevice::Cuda { 1 } else { threads.max(1) };
    }

    fn plan_for(&mut self, n: usize) -> Result<Arc<dyn Runnable>, ModelError> {
        if let Some(p) = self.plans.get(&n) {
            return Ok(p.clone());
        }
        let started = std::time::Instant::now();
        let plan = self.model.plan(n)?;
        log::debug!("built the plan for batch {n} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
        self.plans.insert(n, plan.clone());
        Ok(plan)
    }

    /// Wall time per graph node of `runs` evaluations of a batch of `n` (one thread), slowest
    /// first: where a model spends its time on this machine (`dualscale bench --nodes`).
    pub fn profile_nodes(&mut self, x: &[f32], t: f64, runs: usize) -> Result<Vec<NodeTime>, ModelError> {
        let n = x.len() / self.sample_len().max(1);
        let plan = self.plan_for(n)?;
        let err = |e: TractError| ModelError::Plan { batch: n, detail: format!("{e:#}") };
        let Some(simple) = plan.typed_plan() else {
            return Err(ModelError::Plan { batch: n, detail: format!("per-node timing needs the CPU runtime, not {}", self.model.device) });
        };
        let mut times = Vec::new();
        for _ in 0..runs.max(1) {
            run_plan(&plan, self.model.inputs(n, x, t).map_err(err)?, Some(&mut times)).map_err(err)?;
        }
        let graph = simple.model();
        let mut nodes: Vec<NodeTime> = times
            .iter()
            .enumerate()
            .filter(|(_, &s)| s > 0.0)
            .map(|(id, &s)| NodeTime {
                name: graph.node(id).name.clone(),
                op: graph.node(id).op.name().to_string(),
                ms: s * 1e3 / runs.max(1) as f64,
            })
            .collect();
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(nodes)
    }

    /// Builds the plans a batch of `n` will use, so that timing a run excludes plan building.
    pub fn prepare(&mut self, n: usize) -> Result<(), ModelError> {
        for size in chunk_sizes(n, self.threads, self.sample_len()) {
            self.plan_for(size)?;
        }
        Ok(())
    }
}

/// Values below which a chunk is not worth a thread of its own: 64 points, or one image.
const MIN_CHUNK_VALUES: usize = 128;

/// Sizes of the chunks a batch of `n` samples of `len` values is split into for `threads`
/// threads: at least [`MIN_CHUNK_VALUES`] values each, so points go in chunks of 64 or more and
/// images one or more per thread (independent samples on separate threads, each with its own
/// plan state, rather than a larger batch: a conv model's cost per image grows with the batch).
fn chunk_sizes(n: usize, threads: usize, len: usize) -> Vec<usize> {
    let per_chunk = MIN_CHUNK_VALUES.div_ceil(len.max(1));
    let chunks = threads.min(n.div_ceil(per_chunk)).max(1);
    let base = n / chunks;
    let extra = n % chunks;
    (0..chunks).map(|i| base + usize::from(i < extra)).filter(|&s| s > 0).collect()
}

impl Denoiser for TractDenoiser {
    fn sample_len(&self) -> usize {
        self.model.info.kind.sample_len()
    }

    fn eval(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<EvalInfo, DenoiseError> {
        let len = self.sample_len();
        if x.len() % len != 0 || out.len() != x.len() {
            return Err(DenoiseError(format!("batch of {} values is not a multiple of {len}", x.len())));
        }
        let n = x.len() / len;
        let sizes = chunk_sizes(n, self.threads, len);
        let plans = sizes.iter().map(|&s| self.plan_for(s)).collect::<Result<Vec<_>, _>>().map_err(|e| DenoiseError(e.to_string()))?;
        if sizes.len() == 1 {
            return self.model.run(&plans[0], n, x, t, out).map_err(|e| DenoiseError(format!("{e:#}")));
        }
        let model = &self.model;
        let results: Vec<TractResult<EvalInfo>> = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            let mut x_rest = x;
            let mut out_rest = &mut *out;
            for (size, plan) in sizes.iter().zip(&plans) {
                let (xc, xr) = x_rest.split_at(size * len);
                let (oc, or) = out_rest.split_at_mut(size * len);
                x_rest = xr;
                out_rest = or;
                let size = *size;
                handles.push(scope.spawn(move || model.run(plan, size, xc, t, oc)));
            }
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))).collect()
        });
        let mut info = EvalInfo::default();
        for (i, r) in results.into_iter().enumerate() {
            let r = r.map_err(|e| DenoiseError(format!("{e:#}")))?;
            if i == 0 {
                info = r;
            }
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_batch() {
        assert_eq!(chunk_sizes(10_000, 2, 2), vec![5000, 5000]);
        assert_eq!(chunk_sizes(10, 4, 2), vec![10]);
        assert_eq!(chunk_sizes(201, 3, 2), vec![67, 67, 67]);
        assert_eq!(chunk_sizes(130, 4, 2).iter().sum::<usize>(), 130);
        // Images: one per thread.
        assert_eq!(chunk_sizes(2, 2, 3 * 32 * 32), vec![1, 1]);
        assert_eq!(chunk_sizes(5, 4, 3 * 32 * 32), vec![2, 1, 1, 1]);
        assert_eq!(chunk_sizes(1, 4, 3 * 32 * 32), vec![1]);
    }
}
