//! A tract plan for one concrete batch size, and one evaluation of it: the model's inputs built
//! from `x` and `t`, the run (through [`run_plan`], which applies the x86 register workaround),
//! and the outputs read back (`eps`, and the gate of a dual-scale model).

use std::sync::Arc;

use tract_core::runtime::Runnable;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceModelExt;

use super::x86::{avx_present, clear_upper_vector_halves};
use super::{Model, ModelError, TimestepShape};
use crate::cpu::ComputeDtype;
use crate::sampler::EvalInfo;

impl Model {
    /// Builds the optimized plan for a concrete batch size.
    pub(super) fn plan(&self, n: usize) -> Result<Arc<dyn Runnable>, ModelError> {
        let plan_err = |e: TractError| ModelError::Plan { batch: n, detail: format!("{e:#}") };
        let mut g = self.graph.clone();
        let x = &self.info.inputs[self.sample_input];
        g.set_input_fact(self.sample_input, InferenceFact::dt_shape(x.dtype, self.info.kind.sample_shape(n))).map_err(plan_err)?;
        let t = &self.info.inputs[self.timestep_input];
        let t_shape: TVec<usize> = match self.timestep_shape {
            TimestepShape::Scalar => tvec![],
            TimestepShape::One => tvec![1],
            TimestepShape::PerSample => tvec![n],
        };
        g.set_input_fact(self.timestep_input, InferenceFact::dt_shape(t.dtype, t_shape)).map_err(plan_err)?;
        let mut typed = g.into_typed().map_err(plan_err)?;
        // Upcast an f16 model computed in f32, narrow an f32 model computed in f16 (inputs
        // included: `inputs` then feeds f16 tensors).
        let transform = match (self.compute, self.info.precision) {
            (ComputeDtype::F32, "fp16") => Some("f16_to_f32"),
            _ if self.narrowed() => Some("f32_to_f16"),
            _ => None,
        };
        if let Some(name) = transform {
            let t = tract_core::transform::get_transform(name)
                .map_err(plan_err)?
                .ok_or_else(|| ModelError::Plan { batch: n, detail: format!("tract lacks the {name} transform") })?;
            t.transform(&mut typed).map_err(plan_err)?;
        }
        // The CPU runtime optimizes the graph for this batch size; tract-cuda also moves the ops
        // it supports to the GPU (only registered in `cuda` builds).
        let runtime = tract_core::runtime::runtime_for_name(self.device.tract_runtime_name())
            .map_err(plan_err)?
            .ok_or_else(|| ModelError::Plan { batch: n, detail: format!("tract has no `{}` runtime in this build", self.device) })?;
        Ok(Arc::from(runtime.prepare(typed).map_err(plan_err)?))
    }

    /// Whether an f32 model's graph is narrowed to f16 (`--precision f16`).
    pub(super) fn narrowed(&self) -> bool {
        self.compute == ComputeDtype::F16 && self.info.precision == "fp32" && self.info.inputs[self.sample_input].dtype == DatumType::F32
    }

    /// The model's inputs for a batch of `n`: `x` as the sample input, `t` as every timestep.
    pub(super) fn inputs(&self, n: usize, x: &[f32], t: f64) -> TractResult<TVec<TValue>> {
        let x_in = &self.info.inputs[self.sample_input];
        let x_tensor = Tensor::from_shape(&self.info.kind.sample_shape(n), x)?;
        let narrowed = self.narrowed();
        let x_dtype = if narrowed { DatumType::F16 } else { x_in.dtype };
        let x_tensor = if x_dtype == DatumType::F32 { x_tensor } else { x_tensor.cast_to_dt(x_dtype)?.into_owned() };
        let t_in = &self.info.inputs[self.timestep_input];
        let count = match self.timestep_shape {
            TimestepShape::Scalar | TimestepShape::One => 1,
            TimestepShape::PerSample => n,
        };
        let t_dtype = if narrowed && t_in.dtype == DatumType::F32 { DatumType::F16 } else { t_in.dtype };
        let t_tensor = match t_dtype {
            DatumType::I64 => Tensor::from_shape(&[count], &vec![t.round() as i64; count])?,
            DatumType::I32 => Tensor::from_shape(&[count], &vec![t.round() as i32; count])?,
            DatumType::F64 => Tensor::from_shape(&[count], &vec![t; count])?,
            dt => Tensor::from_shape(&[count], &vec![t as f32; count])?.cast_to_dt(dt)?.into_owned(),
        };
        let t_tensor = if self.timestep_shape == TimestepShape::Scalar { t_tensor.into_shape(&[])? } else { t_tensor };
        let mut inputs: TVec<TValue> = tvec![];
        for ix in 0..self.info.inputs.len() {
            if ix == self.sample_input {
                inputs.push(x_tensor.clone().into());
            } else {
                inputs.push(t_tensor.clone().into());
            }
        }
        Ok(inputs)
    }

    /// Runs one batch: `x` holds `n * sample_len` values, `t` the timestep for all samples.
    pub(super) fn run(&self, plan: &Arc<dyn Runnable>, n: usize, x: &[f32], t: f64, out: &mut [f32]) -> TractResult<EvalInfo> {
        let outputs = run_plan(plan, self.inputs(n, x, t)?, None)?;
        let eps = outputs[0].cast_to::<f32>()?;
        let eps = eps.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        if eps.len() != out.len() {
            anyhow::bail!(
                "output `{}` has {} values for a batch of {n} ({} expected); the model's output must have the shape of its input",
                self.info.outputs[0].name,
                eps.len(),
                out.len()
            );
        }
        out.copy_from_slice(&eps);
        let mut info = EvalInfo::default();
        if self.info.has_gate {
            if let Some(ix) = self.info.outputs.iter().position(|o| o.name == "gate") {
                if let Some(g) = outputs.get(ix) {
                    let g = g.cast_to::<f32>()?;
                    let g = g.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
                    if g.len() >= 2 {
                        info.gate = Some([g[0], g[1]]);
                    }
                }
            }
        }
        Ok(info)
    }
}

/// Runs a plan once.
///
/// On x86_64 with AVX this clears the upper halves of the vector registers (VZEROUPPER) before
/// every node and after the last: tract 0.23.9's AVX-512 / FMA matrix kernels return with them
/// dirty, and then every legacy-SSE instruction that follows (libm's `sinf`/`cosf` in tract's
/// Sin and Cos, its scalar element-wise loops, our sampler code) pays a state-transition penalty.
/// Measured on this project's Xeon: a 10,000 x 64 Sin took 2.5 ms alone and 80 ms after a matrix
/// product; one dino-dualscale evaluation at batch 10,000 went from 1,300 ms to 270 ms. ARM has
/// no such penalty, and plans of other runtimes (CUDA) run as they are.
///
/// With `times`, each node's wall time is added to `times[node id]` (CPU plans only).
pub(super) fn run_plan(plan: &Arc<dyn Runnable>, inputs: TVec<TValue>, times: Option<&mut Vec<f64>>) -> TractResult<TVec<TValue>> {
    let clear_upper = avx_present();
    let Some(simple) = plan.typed_plan().filter(|_| clear_upper || times.is_some()) else {
        return plan.run(inputs);
    };
    let mut times = times;
    let outputs = simple.spawn()?.run_plan_with_eval(inputs, |session, state, node, inputs| {
        if clear_upper {
            clear_upper_vector_halves();
        }
        let started = std::time::Instant::now();
        let out = tract_core::plan::eval(session, state, node, inputs);
        if let Some(times) = times.as_deref_mut() {
            if times.len() <= node.id {
                times.resize(node.id + 1, 0.0);
            }
            times[node.id] += started.elapsed().as_secs_f64();
        }
        out
    });
    if clear_upper {
        clear_upper_vector_halves();
    }
    outputs
}
