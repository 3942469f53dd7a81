//! The model call and the step report every sampler shares: evaluate the [`Denoiser`], wrap its
//! errors in [`SampleError::Model`], reject NaN/Inf outputs with [`SampleError::NonFinite`],
//! convert the raw output into x0 and eps predictions (through [`super::x0_and_eps`], the one
//! place prediction types are read), count evaluations, and hand each finished [`Step`] to the
//! caller's callback.
//!
//! It holds counters and a scratch buffer only: no sampler state lives here between steps, and it
//! never imports tract or draws random numbers.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{x0_and_eps, Denoiser, SampleError, SampleStats, Step};
use crate::schedule::{NoiseLevel, PredictionType};

/// The model's prediction at one evaluation, both parametrisations, f64.
pub(crate) struct Prediction {
    /// Data prediction x0_theta(x_t, t).
    pub x0: Vec<f64>,
    /// Noise prediction eps_theta(x_t, t).
    pub eps: Vec<f64>,
    /// Gate weights the model reported, if any.
    pub gate: Option<[f32; 2]>,
}

/// A sampler's handle on the model and the caller: evaluations and progress reports.
pub(crate) struct Run<'a> {
    model: &'a mut dyn Denoiser,
    prediction: PredictionType,
    on_step: &'a mut dyn FnMut(&Step) -> ControlFlow<()>,
    /// Set from outside (a signal handler, a kiosk's stop request): checked before every model
    /// evaluation, so a stop lands within one model call.
    cancel: &'a AtomicBool,
    out: Vec<f32>,
    stats: SampleStats,
}

impl<'a> Run<'a> {
    pub fn new(
        model: &'a mut dyn Denoiser,
        prediction: PredictionType,
        on_step: &'a mut dyn FnMut(&Step) -> ControlFlow<()>,
        cancel: &'a AtomicBool,
    ) -> Self {
        Run { model, prediction, on_step, cancel, out: Vec::new(), stats: SampleStats::default() }
    }

    /// Values per sample (the model's `sample_len`).
    pub fn sample_len(&self) -> usize {
        self.model.sample_len()
    }

    /// Model evaluations so far.
    pub fn nfe(&self) -> usize {
        self.stats.nfe
    }

    /// Counts one rejected step attempt (adaptive step size).
    pub fn reject(&mut self) {
        self.stats.rejected += 1;
    }

    /// Evaluates the model on `x` at timestep `t` (noise level `level`) during step `step`, checks
    /// the output is finite and converts it to x0 / eps. A set cancel flag ends the run here,
    /// before the evaluation, with [`SampleError::Interrupted`].
    pub fn predict(&mut self, x: &[f32], t: f64, level: NoiseLevel, step: usize) -> Result<Prediction, SampleError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(SampleError::Interrupted { step });
        }
        self.out.clear();
        self.out.resize(x.len(), 0.0);
        let info = self.model.eval(x, t, &mut self.out).map_err(|cause| SampleError::Model { step, t, cause })?;
        self.stats.nfe += 1;
        if self.out.iter().any(|v| !v.is_finite()) {
            return Err(SampleError::NonFinite { step, t });
        }
        let (x0, eps) = x.iter().zip(&self.out).map(|(&xi, &oi)| x0_and_eps(self.prediction, level, xi as f64, oi as f64)).unzip();
        Ok(Prediction { x0, eps, gate: info.gate })
    }

    /// Records a finished step and reports it; `Break` from the callback ends the run with
    /// [`SampleError::Interrupted`].
    pub fn finish_step(&mut self, index: usize, total: usize, t: f64, t_next: f64, gate: Option<[f32; 2]>) -> Result<(), SampleError> {
        self.stats.steps += 1;
        self.stats.timesteps.push(t);
        let step = Step { index, total, t, t_next, nfe: self.stats.nfe, gate };
        match (self.on_step)(&step) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(SampleError::Interrupted { step: index }),
        }
    }

    pub fn into_stats(self) -> SampleStats {
        self.stats
    }
}

/// Writes f64 values back into the f32 state (the state is rounded to f32 after every step, as
/// diffusers casts `prev_sample` back to the model dtype).
pub(crate) fn store(x: &mut [f32], values: impl IntoIterator<Item = f64>) {
    for (xi, v) in x.iter_mut().zip(values) {
        *xi = v as f32;
    }
}
