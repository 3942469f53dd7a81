//! Loading ONNX denoisers with tract and running them as a [`Denoiser`].
//!
//! A [`Model`] is a parsed ONNX graph plus its configuration (manifest or diffusers
//! `scheduler_config.json`) and what its inputs say about it ([`ModelKind`]). `into_denoiser`
//! turns it into a [`TractDenoiser`] that builds one optimized plan per concrete batch size
//! (a symbolic batch costs about 2x in tract) and reuses it for every step.
//!
//! This is the only module that imports tract. It never samples, never touches the RNG and
//! never writes files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_core::runtime::Runnable;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceModelExt;

use crate::cpu::{ComputeDtype, Precision};
use crate::device::{Device, DeviceError, ResolvedDevice};
use crate::manifest::{self, ConfigSource, ManifestError, ModelConfig, ScheduleOverrides};
use crate::sampler::{DenoiseError, Denoiser, EvalInfo};

/// The default model, embedded in the binary so `dualscale generate` works with no files.
pub const EMBEDDED_NAME: &str = "dino-dualscale";
static EMBEDDED_ONNX: &[u8] = include_bytes!("../models/dino-dualscale.onnx");
static EMBEDDED_MANIFEST: &str = include_str!("../models/dino-dualscale.json");

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {0} not found; pass --model with the path of an .onnx file (or omit it to use the embedded default model)")]
    NotFound(PathBuf),
    #[error("cannot read model file {path}: {source}; check the path and its permissions")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an ONNX model ({detail}); pass an .onnx file exported with torch.onnx.export or optimum")]
    NotOnnx { path: PathBuf, detail: String },
    #[error("{path} could not be read as an ONNX graph ({detail}); the file may be truncated or use operators tract does not support - re-export it (opset 17+) or check it with onnxruntime")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    UnsupportedInputs { path: PathBuf, detail: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("cannot prepare the model for batch size {batch}: {detail}")]
    Plan { batch: usize, detail: String },
}

/// What the model generates, read from its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Input `[N, dim]`: point clouds (`points2d` when dim = 2).
    Points { dim: usize },
    /// Input `[N, C, H, W]`.
    Image { channels: usize, height: usize, width: usize },
}

impl ModelKind {
    pub fn sample_len(&self) -> usize {
        match *self {
            ModelKind::Points { dim } => dim,
            ModelKind::Image { channels, height, width } => channels * height * width,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Points { dim: 2 } => "points2d",
            ModelKind::Points { .. } => "points",
            ModelKind::Image { .. } => "image",
        }
    }
    fn sample_shape(&self, n: usize) -> TVec<usize> {
        match *self {
            ModelKind::Points { dim } => tvec![n, dim],
            ModelKind::Image { channels, height, width } => tvec![n, channels, height, width],
        }
    }
}

/// How the timestep input is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepShape {
    /// A scalar `[]`.
    Scalar,
    /// `[1]`: one value broadcast over the batch.
    One,
    /// `[N]`: one value per sample.
    PerSample,
}

/// One declared input or output of the ONNX graph.
#[derive(Debug, Clone, PartialEq)]
pub struct IoInfo {
    pub name: String,
    pub dtype: DatumType,
    /// Dimensions; `None` for a symbolic one (shown with its name when it has one).
    pub shape: Vec<Option<usize>>,
    pub dim_names: Vec<String>,
}

impl IoInfo {
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .zip(&self.dim_names)
            .map(|(d, n)| d.map(|v| v.to_string()).unwrap_or_else(|| if n.is_empty() { "?".into() } else { n.clone() }))
            .collect();
        format!("[{}]", dims.join(","))
    }
}

/// Whether the model file matched the sha256 in its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified,
    /// The manifest had a different sha256 and `--allow-unverified` was given.
    Mismatch { expected: String },
    /// No manifest, or a manifest without a sha256.
    NoHash,
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::Verified => write!(f, "verified against the manifest"),
            Verification::Mismatch { expected } => {
                write!(f, "MISMATCH (manifest says {expected}; running anyway, --allow-unverified)")
            }
            Verification::NoHash => write!(f, "not verified (no sha256 in a manifest)"),
        }
    }
}

/// What `dualscale info` shows about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub path: Option<PathBuf>,
    pub sha256: String,
    pub verification: Verification,
    pub kind: ModelKind,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    pub parameters: u64,
    /// fp32, fp16 or int8, from the weights' types.
    pub precision: &'static str,
    pub external_data: bool,
    pub has_gate: bool,
    pub file_bytes: u64,
}

/// Options for loading a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub allow_unverified: bool,
    pub overrides: ScheduleOverrides,
    pub precision: Option<Precision>,
    /// The device asked for; resolved (CUDA probed) when the model is loaded.
    pub device: Device,
}

/// A parsed model with its configuration; `into_denoiser` makes it runnable.
pub struct Model {
    graph: InferenceModel,
    info: ModelInfo,
    config: ModelConfig,
    sample_input: usize,
    timestep_input: usize,
    timestep_shape: TimestepShape,
    compute: ComputeDtype,
    device: ResolvedDevice,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

impl Model {
    /// Loads an ONNX file and the configuration beside it, verifying the manifest's sha256.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ModelError::NotFound(path.to_owned())
            } else if source.kind() == std::io::ErrorKind::IsADirectory || path.is_dir() {
                ModelError::Unreadable {
                    path: path.to_owned(),
                    source: std::io::Error::other("it is a directory, not an .onnx file"),
                }
            } else {
                ModelError::Unreadable { path: path.to_owned(), source }
            }
        })?;
        let config = manifest::discover(path)?;
        let name = config
            .manifest
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| default_name(path));
        Self::from_bytes(&bytes, Some(path), name, config, opts)
    }

    /// Loads the model embedded in the binary (the dual-scale dino model).
    pub fn load_embedded(opts: &LoadOptions) -> Result<Model, ModelError> {
        let config = manifest::parse_manifest(EMBEDDED_MANIFEST, ConfigSource::Embedded)?;
        Self::from_bytes(EMBEDDED_ONNX, None, EMBEDDED_NAME.to_owned(), config, opts)
    }

    fn from_bytes(
        bytes: &[u8],
        path: Option<&Path>,
        name: String,
        mut config: ModelConfig,
        opts: &LoadOptions,
    ) -> Result<Model, ModelError> {
        let shown = path.map(Path::to_owned).unwrap_or_else(|| PathBuf::from("<embedded model>"));
        let sha256 = manifest::sha256_hex(bytes);
        let verification = verify(&config, &sha256, &shown, opts.allow_unverified)?;
        opts.overrides.apply(&mut config.schedule);

        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| ModelError::NotOnnx { path: shown.clone(), detail: format!("protobuf decode failed: {e}") })?;
        let graph_proto = proto.graph.as_ref().filter(|g| !g.node.is_empty()).ok_or_else(|| ModelError::NotOnnx {
            path: shown.clone(),
            detail: "it has no graph nodes".into(),
        })?;
        let (inputs, outputs) = declared_io(graph_proto);
        let external_data = graph_proto
            .initializer
            .iter()
            .any(|t| t.data_location == Some(pb::tensor_proto::DataLocation::External as i32));
        let (parameters, precision) = weight_summary(graph_proto);
        let (kind, sample_input, timestep_input, timestep_shape) = classify(&inputs, &shown)?;
        if let Some(m) = &config.manifest {
            if m.kind != kind.name() && !(m.kind == "points2d" && matches!(kind, ModelKind::Points { .. })) {
                return Err(ModelError::UnsupportedInputs {
                    path: shown,
                    detail: format!(
                        "the manifest says kind `{}` but the model's input `{}` is {} ({}); fix the manifest",
                        m.kind,
                        inputs[sample_input].name,
                        inputs[sample_input].shape_string(),
                        kind.name()
                    ),
                });
            }
        }
        if outputs.is_empty() {
            return Err(ModelError::UnsupportedInputs { path: shown, detail: "the model declares no output".into() });
        }
        let has_gate = outputs.iter().skip(1).any(|o| o.name == "gate");

        let dir = path.and_then(Path::parent).map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
        let dir_str = dir.and_then(Path::to_str);
        // Value infos with a symbolic batch (onnx shape inference and onnxruntime's quantizer
        // write `N`) refuse the concrete batch each plan sets: parse without them (tract infers
        // every shape anyway).
        let symbolic_value_info =
            graph_proto.value_info.iter().any(|v| io_info(v).dim_names.iter().any(|name| !name.is_empty()));
        let parse = |ignore_value_info: bool| onnx.clone().with_ignore_value_info(ignore_value_info).parse(&proto, dir_str);
        // Without symbolic ones, value infos tract cannot reconcile with the graph get the same remedy.
        let graph = parse(symbolic_value_info)
            .or_else(|e| if symbolic_value_info { Err(e) } else { parse(true) })
            .map_err(|e| ModelError::Parse { path: shown.clone(), detail: format!("{e:#}") })?
            .model;

        let device = crate::device::resolve(opts.device)?;
        let cpu = crate::cpu::detect();
        let model_is_f16 = inputs[sample_input].dtype == DatumType::F16 || precision == "fp16";
        let (compute, reason) =
            crate::cpu::compute_precision(opts.precision.unwrap_or(Precision::Auto), model_is_f16, &cpu);
        if model_is_f16 {
            log::info!("fp16 model: computing in {compute:?} ({reason})");
        }

        let info = ModelInfo {
            name,
            path: path.map(Path::to_owned),
            sha256,
            verification,
            kind,
            inputs,
            outputs,
            parameters,
            precision,
            external_data,
            has_gate,
            file_bytes: bytes.len() as u64,
        };
        Ok(Model { graph, info, config, sample_input, timestep_input, timestep_shape, compute, device })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The dtype the model is computed in (after `--precision`).
    pub fn compute_dtype(&self) -> ComputeDtype {
        self.compute
    }

    /// The device the model's plans run on.
    pub fn device(&self) -> ResolvedDevice {
        self.device
    }

    /// Builds a runnable denoiser (plans are built lazily, one per batch size).
    pub fn into_denoiser(self) -> Result<TractDenoiser, ModelError> {
        Ok(TractDenoiser { model: Arc::new(self), plans: HashMap::new(), threads: 1 })
    }

    /// Builds the optimized plan for a concrete batch size.
    fn plan(&self, n: usize) -> Result<Arc<dyn Runnable>, ModelError> {
        let plan_err = |e: TractError| ModelError::Plan { batch: n, detail: format!("{e:#}") };
        let mut g = self.graph.clone();
        let x = &self.info.inputs[self.sample_input];
        g.set_input_fact(self.sample_input, InferenceFact::dt_shape(x.dtype, self.info.kind.sample_shape(n)))
            .map_err(plan_err)?;
        let t = &self.info.inputs[self.timestep_input];
        let t_shape: TVec<usize> = match self.timestep_shape {
            TimestepShape::Scalar => tvec![],
            TimestepShape::One => tvec![1],
            TimestepShape::PerSample => tvec![n],
        };
        g.set_input_fact(self.timestep_input, InferenceFact::dt_shape(t.dtype, t_shape)).map_err(plan_err)?;
        let mut typed = g.into_typed().map_err(plan_err)?;
        if self.compute == ComputeDtype::F32 && self.info.precision == "fp16" {
            let upcast = tract_core::transform::get_transform("f16_to_f32")
                .map_err(plan_err)?
                .ok_or_else(|| ModelError::Plan { batch: n, detail: "tract lacks the f16_to_f32 transform".into() })?;
            upcast.transform(&mut typed).map_err(plan_err)?;
        }
        // The CPU runtime optimizes the graph for this batch size; tract-cuda also moves the ops
        // it supports to the GPU (only registered in `cuda` builds).
        let runtime = tract_core::runtime::runtime_for_name(self.device.tract_runtime_name())
            .map_err(plan_err)?
            .ok_or_else(|| ModelError::Plan { batch: n, detail: format!("tract has no `{}` runtime in this build", self.device) })?;
        Ok(Arc::from(runtime.prepare(typed).map_err(plan_err)?))
    }

    /// The model's inputs for a batch of `n`: `x` as the sample input, `t` as every timestep.
    fn inputs(&self, n: usize, x: &[f32], t: f64) -> TractResult<TVec<TValue>> {
        let x_in = &self.info.inputs[self.sample_input];
        let x_tensor = Tensor::from_shape(&self.info.kind.sample_shape(n), x)?;
        let x_tensor = if x_in.dtype == DatumType::F32 { x_tensor } else { x_tensor.cast_to_dt(x_in.dtype)?.into_owned() };
        let t_in = &self.info.inputs[self.timestep_input];
        let count = match self.timestep_shape {
            TimestepShape::Scalar | TimestepShape::One => 1,
            TimestepShape::PerSample => n,
        };
        let t_tensor = match t_in.dtype {
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
    fn run(&self, plan: &Arc<dyn Runnable>, n: usize, x: &[f32], t: f64, out: &mut [f32]) -> TractResult<EvalInfo> {
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
fn run_plan(plan: &Arc<dyn Runnable>, inputs: TVec<TValue>, times: Option<&mut Vec<f64>>) -> TractResult<TVec<TValue>> {
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

#[cfg(target_arch = "x86_64")]
fn avx_present() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx_present() -> bool {
    false
}

/// VZEROUPPER; a no-op where AVX is absent (callers check `avx_present` first anyway).
#[cfg(target_arch = "x86_64")]
fn clear_upper_vector_halves() {
    if avx_present() {
        // SAFETY: AVX is present, which is all VZEROUPPER needs.
        unsafe { vzeroupper() }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn clear_upper_vector_halves() {}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn vzeroupper() {
    std::arch::x86_64::_mm256_zeroupper()
}

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
        for size in chunk_sizes(n, self.threads) {
            self.plan_for(size)?;
        }
        Ok(())
    }
}

/// Sizes of the chunks a batch of `n` is split into for `threads` threads (at least 64 per chunk).
fn chunk_sizes(n: usize, threads: usize) -> Vec<usize> {
    let chunks = threads.min(n.div_ceil(64)).max(1);
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
        let sizes = chunk_sizes(n, self.threads);
        let plans = sizes
            .iter()
            .map(|&s| self.plan_for(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DenoiseError(e.to_string()))?;
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

fn default_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "model" {
        // diffusers layout: unet/model.onnx -> name of the parent folder
        if let Some(parent) = path.parent().and_then(Path::file_name).and_then(|s| s.to_str()) {
            return parent.to_owned();
        }
    }
    stem.to_owned()
}

fn verify(config: &ModelConfig, actual: &str, model: &Path, allow: bool) -> Result<Verification, ModelError> {
    let Some(expected) = config.manifest.as_ref().and_then(|m| m.sha256.clone()) else {
        return Ok(Verification::NoHash);
    };
    if expected.eq_ignore_ascii_case(actual) {
        return Ok(Verification::Verified);
    }
    if allow {
        log::warn!("{} does not match the sha256 in its manifest; running it because of --allow-unverified", model.display());
        return Ok(Verification::Mismatch { expected });
    }
    let manifest = match &config.source {
        ConfigSource::Manifest(p) => p.clone(),
        other => PathBuf::from(other.to_string()),
    };
    Err(ManifestError::Sha256Mismatch { model: model.to_owned(), manifest, expected, actual: actual.to_owned() }.into())
}

fn onnx_dtype(elem_type: i32) -> DatumType {
    use pb::tensor_proto::DataType as D;
    match D::try_from(elem_type) {
        Ok(D::Float) => DatumType::F32,
        Ok(D::Float16) => DatumType::F16,
        Ok(D::Double) => DatumType::F64,
        Ok(D::Int64) => DatumType::I64,
        Ok(D::Int32) => DatumType::I32,
        Ok(D::Int8) => DatumType::I8,
        Ok(D::Uint8) => DatumType::U8,
        Ok(D::Bool) => DatumType::Bool,
        _ => DatumType::String,
    }
}

fn io_info(v: &pb::ValueInfoProto) -> IoInfo {
    let mut info = IoInfo { name: v.name.clone(), dtype: DatumType::String, shape: vec![], dim_names: vec![] };
    if let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        info.dtype = onnx_dtype(t.elem_type);
        if let Some(shape) = &t.shape {
            for d in &shape.dim {
                match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                        info.shape.push(Some(*v as usize));
                        info.dim_names.push(String::new());
                    }
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                        info.shape.push(None);
                        info.dim_names.push(p.clone());
                    }
                    _ => {
                        info.shape.push(None);
                        info.dim_names.push(String::new());
                    }
                }
            }
        }
    }
    info
}

/// Graph inputs that are not initializers (older exporters list weights as inputs), and outputs.
fn declared_io(g: &pb::GraphProto) -> (Vec<IoInfo>, Vec<IoInfo>) {
    let weights: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g.input.iter().filter(|i| !weights.contains(i.name.as_str())).map(io_info).collect();
    let outputs = g.output.iter().map(io_info).collect();
    (inputs, outputs)
}

/// Parameter count and precision name from the initializers.
fn weight_summary(g: &pb::GraphProto) -> (u64, &'static str) {
    use pb::tensor_proto::DataType as D;
    let mut total = 0u64;
    let mut by_type: HashMap<i32, u64> = HashMap::new();
    for t in &g.initializer {
        let count: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>().max(1);
        if count > 1 {
            total += count;
        }
        *by_type.entry(t.data_type).or_default() += count;
    }
    let count_of = |d: D| by_type.get(&(d as i32)).copied().unwrap_or(0);
    let precision = if count_of(D::Int8) + count_of(D::Uint8) > count_of(D::Float) / 4 {
        "int8"
    } else if count_of(D::Float16) > count_of(D::Float) {
        "fp16"
    } else {
        "fp32"
    };
    (total, precision)
}

const TIMESTEP_NAMES: &[&str] = &["t", "timestep", "timesteps", "time", "sigma"];

/// Decides the model kind from its inputs: (kind, sample input, timestep input, timestep shape).
fn classify(inputs: &[IoInfo], path: &Path) -> Result<(ModelKind, usize, usize, TimestepShape), ModelError> {
    let unsupported = |detail: String| ModelError::UnsupportedInputs { path: path.to_owned(), detail };
    let listing = inputs.iter().map(|i| format!("`{}` {}", i.name, i.shape_string())).collect::<Vec<_>>().join(", ");
    if inputs.len() != 2 {
        return Err(unsupported(format!(
            "the model has {} inputs ({listing}); dualscale runs denoisers with two: a sample [N,D] or [N,C,H,W] and a timestep [N] or scalar",
            inputs.len()
        )));
    }
    let t_ix = inputs
        .iter()
        .position(|i| TIMESTEP_NAMES.contains(&i.name.as_str()))
        .or_else(|| inputs.iter().position(|i| i.shape.len() <= 1))
        .ok_or_else(|| unsupported(format!("no input looks like a timestep ({listing}); name it `t` or `timestep`, shape [N] or scalar")))?;
    let x_ix = 1 - t_ix;
    let (x, t) = (&inputs[x_ix], &inputs[t_ix]);
    if !matches!(t.dtype, DatumType::F32 | DatumType::F64 | DatumType::F16 | DatumType::I64 | DatumType::I32) {
        return Err(unsupported(format!("timestep input `{}` has type {:?}; expected a float or integer", t.name, t.dtype)));
    }
    let t_shape = match t.shape.as_slice() {
        [] => TimestepShape::Scalar,
        [Some(1)] => TimestepShape::One,
        [_] => TimestepShape::PerSample,
        _ => {
            return Err(unsupported(format!(
                "timestep input `{}` has shape {}; expected [N], [1] or a scalar",
                t.name,
                t.shape_string()
            )))
        }
    };
    if !matches!(x.dtype, DatumType::F32 | DatumType::F16) {
        return Err(unsupported(format!("sample input `{}` has type {:?}; expected float32 or float16", x.name, x.dtype)));
    }
    let kind = match x.shape.as_slice() {
        [_, Some(d)] => ModelKind::Points { dim: *d },
        [_, Some(c), Some(h), Some(w)] => ModelKind::Image { channels: *c, height: *h, width: *w },
        _ => {
            return Err(unsupported(format!(
                "sample input `{}` has shape {}; dualscale supports [N,D] point models and [N,C,H,W] image models with fixed D, C, H, W",
                x.name,
                x.shape_string()
            )))
        }
    };
    Ok((kind, x_ix, t_ix, t_shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(name: &str, dtype: DatumType, shape: &[Option<usize>]) -> IoInfo {
        IoInfo { name: name.into(), dtype, shape: shape.to_vec(), dim_names: vec![String::new(); shape.len()] }
    }

    #[test]
    fn classifies_points_and_images() {
        let p = Path::new("m.onnx");
        let (k, x, t, s) = classify(&[io("x", DatumType::F32, &[None, Some(2)]), io("t", DatumType::F32, &[None])], p).unwrap();
        assert_eq!((k, x, t, s), (ModelKind::Points { dim: 2 }, 0, 1, TimestepShape::PerSample));
        let (k, x, t, s) = classify(
            &[io("timestep", DatumType::I64, &[]), io("sample", DatumType::F32, &[None, Some(3), Some(16), Some(16)])],
            p,
        )
        .unwrap();
        assert_eq!((k, x, t, s), (ModelKind::Image { channels: 3, height: 16, width: 16 }, 1, 0, TimestepShape::Scalar));
    }

    #[test]
    fn rejects_models_that_fit_no_kind() {
        let p = Path::new("m.onnx");
        let err = classify(&[io("input", DatumType::F32, &[None, Some(3), Some(4)])], p).unwrap_err();
        assert!(err.to_string().contains("has 1 inputs"), "{err}");
        let err = classify(&[io("x", DatumType::F32, &[None, Some(3), Some(4)]), io("t", DatumType::F32, &[None])], p).unwrap_err();
        assert!(err.to_string().contains("[N,D] point models"), "{err}");
    }

    #[test]
    fn chunks_cover_the_batch() {
        assert_eq!(chunk_sizes(10_000, 2), vec![5000, 5000]);
        assert_eq!(chunk_sizes(10, 4), vec![10]);
        assert_eq!(chunk_sizes(201, 3), vec![67, 67, 67]);
        assert_eq!(chunk_sizes(130, 4).iter().sum::<usize>(), 130);
    }
}
