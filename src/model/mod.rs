//! Loading ONNX denoisers with tract and running them as a [`Denoiser`].
//!
//! A [`Model`] is a parsed ONNX graph plus its configuration (manifest or diffusers
//! `scheduler_config.json`) and what its inputs say about it ([`ModelKind`]). `into_denoiser`
//! turns it into a [`TractDenoiser`] that builds one optimized plan per concrete batch size
//! (a symbolic batch costs about 2x in tract) and reuses it for every step.
//!
//! Files: `onnx` (reading the graph's declared inputs, outputs and weights; the model kind),
//! `verify` (sha256 against the manifest, external weights included), `plan` (tract plans per
//! batch size and one evaluation), `x86` (the AVX register workaround between nodes),
//! `denoiser` ([`TractDenoiser`]: plan cache and thread splitting).
//!
//! This is the only module that imports tract (with `cpu.rs` and `device.rs`). It never
//! samples, never touches the RNG and never writes files.

mod denoiser;
mod onnx;
mod plan;
mod verify;
mod x86;

pub use denoiser::{NodeTime, TractDenoiser};
pub use verify::Verification;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::cpu::{ComputeDtype, Precision};
use crate::device::{Device, DeviceError, ResolvedDevice};
use crate::manifest::{self, ConfigSource, ManifestError, ModelConfig, ScheduleOverrides};
use onnx::{classify, declared_io, default_name, has_integer_products, io_info, weight_summary};
use verify::verify;

/// The default model, embedded in the binary so `dualscale generate` works with no files: the
/// 4-step landscape image model (distilled from the 10-step one; its manifest names DDIM over 4
/// timesteps) stored in fp16 (565 KB, 54% of the fp32 file), upcast at load where the CPU has no
/// f16 arithmetic, computed in f16 where it has (its images are within a level or two of 255 of
/// the fp32 model's either way; models/MANIFEST.md, "fp16 variants").
pub const EMBEDDED_NAME: &str = "landscape-dualscale-fewstep-fp16";
static EMBEDDED_ONNX: &[u8] = include_bytes!("../../models/landscape-dualscale-fewstep-fp16.onnx");
static EMBEDDED_MANIFEST: &str = include_str!("../../models/landscape-dualscale-fewstep-fp16.json");

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {0} not found; pass --model with the path of an .onnx file (or omit it to use the embedded default model)")]
    NotFound(PathBuf),
    #[error("cannot read model file {path}: {cause}; check the path and its permissions")]
    Unreadable { path: PathBuf, cause: std::io::Error },
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

/// What `dualscale info` shows about a model.
#[derive(Debug, Clone, PartialEq)]
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
    /// The graph multiplies in integers (MatMulInteger, ConvInteger, QLinear*); an int8 file
    /// without such operators only stores its weights in int8.
    pub integer_products: bool,
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

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelSource {
    /// The model embedded in the binary.
    #[default]
    Embedded,
    /// An `.onnx` file, with its manifest or `scheduler_config.json` beside it.
    File(PathBuf),
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
    /// Loads the model `source` names.
    pub fn open(source: &ModelSource, opts: &LoadOptions) -> Result<Model, ModelError> {
        match source {
            ModelSource::Embedded => Self::load_embedded(opts),
            ModelSource::File(path) => Self::load(path, opts),
        }
    }

    /// Loads an ONNX file and the configuration beside it, verifying the manifest's sha256.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ModelError::NotFound(path.to_owned())
            } else if source.kind() == std::io::ErrorKind::IsADirectory || path.is_dir() {
                ModelError::Unreadable { path: path.to_owned(), cause: std::io::Error::other("it is a directory, not an .onnx file") }
            } else {
                ModelError::Unreadable { path: path.to_owned(), cause: source }
            }
        })?;
        let config = manifest::discover(path)?;
        let name = config.manifest.as_ref().map(|m| m.name.clone()).unwrap_or_else(|| default_name(path));
        Self::from_bytes(&bytes, Some(path), name, config, opts)
    }

    /// Loads the model embedded in the binary (the dual-scale landscape image model).
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
        // The .onnx file first, so a corrupt file is reported as such rather than as bad ONNX.
        let dir = path.and_then(Path::parent).map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
        verify(&config, &sha256, &shown, &[], dir, opts.allow_unverified)?;
        opts.overrides.apply(&mut config.schedule);

        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| ModelError::NotOnnx { path: shown.clone(), detail: format!("protobuf decode failed: {e}") })?;
        let graph_proto = proto
            .graph
            .as_ref()
            .filter(|g| !g.node.is_empty())
            .ok_or_else(|| ModelError::NotOnnx { path: shown.clone(), detail: "it has no graph nodes".into() })?;
        let (inputs, outputs) = declared_io(graph_proto);
        let mut external_files: Vec<String> = graph_proto
            .initializer
            .iter()
            .filter(|t| t.data_location == Some(pb::tensor_proto::DataLocation::External as i32))
            .flat_map(|t| t.external_data.iter().filter(|e| e.key == "location").map(|e| e.value.clone()))
            .collect();
        external_files.sort();
        external_files.dedup();
        let external_data = !external_files.is_empty();
        let verification = verify(&config, &sha256, &shown, &external_files, dir, opts.allow_unverified)?;
        let (parameters, precision) = weight_summary(graph_proto);
        let integer_products = has_integer_products(graph_proto);
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

        let dir_str = dir.and_then(Path::to_str);
        // Value infos with a symbolic batch (onnx shape inference and onnxruntime's quantizer
        // write `N`) refuse the concrete batch each plan sets: parse without them (tract infers
        // every shape anyway).
        let symbolic_value_info = graph_proto.value_info.iter().any(|v| io_info(v).dim_names.iter().any(|name| !name.is_empty()));
        let parse = |ignore_value_info: bool| onnx.clone().with_ignore_value_info(ignore_value_info).parse(&proto, dir_str);
        // Without symbolic ones, value infos tract cannot reconcile with the graph get the same remedy.
        let graph = parse(symbolic_value_info)
            .or_else(|e| if symbolic_value_info { Err(e) } else { parse(true) })
            .map_err(|e| ModelError::Parse { path: shown.clone(), detail: format!("{e:#}") })?
            .model;

        let device = crate::device::resolve(opts.device)?;
        let cpu = crate::cpu::detect();
        let model_is_f16 = inputs[sample_input].dtype == DatumType::F16 || precision == "fp16";
        let (compute, reason) = crate::cpu::compute_precision(opts.precision.unwrap_or(Precision::Auto), model_is_f16, &cpu);
        if model_is_f16 {
            log::info!("fp16 model: computing in {compute:?} ({reason})");
        } else if compute == ComputeDtype::F16 {
            log::info!("fp32 model narrowed to f16 ({reason})");
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
            integer_products,
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
        Ok(TractDenoiser::new(Arc::new(self)))
    }
}
