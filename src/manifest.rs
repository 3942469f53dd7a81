//! Model configuration read from disk: the project's manifest JSON (`<model>.json` beside
//! `<model>.onnx`, format documented in `models/MANIFEST.md`) or a diffusers
//! `scheduler_config.json` in the model's directory. Turns either into a [`ModelConfig`].
//!
//! This module parses and validates text; it never loads ONNX and never hashes files (the
//! caller passes the sha256 it computed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::sampler::{self, SamplerKind};
use crate::schedule::{BetaSchedule, PredictionType, ScheduleConfig, TimestepSpacing, MAX_TRAIN_TIMESTEPS};

/// Why a model's configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{path} is not valid JSON ({cause}); fix the file or remove it and pass the schedule as flags")]
    Json { path: PathBuf, cause: serde_json::Error },
    #[error("{path} lacks required key `{key}`; {}", format_help(path))]
    MissingKey { path: PathBuf, key: &'static str },
    #[error("{path}: key `{key}` has an invalid value ({detail}); {}", format_help(path))]
    BadValue { path: PathBuf, key: String, detail: String },
    #[error("model {model} has sha256 {actual} but its manifest {manifest} says {expected}; the file is corrupt or not the one the manifest describes - download it again, or pass --allow-unverified to run it anyway")]
    Sha256Mismatch { model: PathBuf, manifest: PathBuf, expected: String, actual: String },
}

/// Where the format of the file at `path` is documented.
fn format_help(path: &Path) -> &'static str {
    if path.file_name().is_some_and(|n| n == "scheduler_config.json") {
        "see the diffusers documentation of the scheduler class named by `_class_name`"
    } else {
        "see models/MANIFEST.md for the format"
    }
}

/// Data statistics a manifest can carry: mean and covariance (or per-coordinate variances) of
/// the training data, used to start sampling from the right distribution when the schedule does
/// not reach pure noise.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DataStats {
    pub mean: Vec<f64>,
    /// Full covariance, `mean.len()` rows of `mean.len()`.
    #[serde(default)]
    pub cov: Option<Vec<Vec<f64>>>,
    /// Per-coordinate variances (for large samples such as images).
    #[serde(default)]
    pub var: Option<Vec<f64>>,
}

/// The sampler a model is made for (`"sampler"` in the manifest): what `generate` runs when it
/// is not told otherwise. A few-step model names its solver and the exact timesteps it was
/// distilled or tuned for; a list's length is the model's recommended step count.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendedSampler {
    #[serde(rename = "type")]
    pub kind: SamplerKind,
    /// Explicit timesteps, high to low; the step after the last lands on clean data.
    #[serde(default)]
    pub timesteps: Option<Vec<usize>>,
    /// Step count with the schedule's spacing, where no list is given.
    #[serde(default)]
    pub steps: Option<usize>,
    /// For readers of the file; not interpreted.
    #[serde(default)]
    pub note: Option<String>,
}

impl RecommendedSampler {
    /// The recommended step count: the list's length, or `steps`.
    pub fn steps(&self) -> Option<usize> {
        self.timesteps.as_ref().map(Vec::len).or(self.steps)
    }
}

/// Input or output declared by a manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorDecl {
    pub name: String,
    #[serde(default)]
    pub shape: Vec<Value>,
    #[serde(default)]
    pub dtype: Option<String>,
}

/// The project's manifest (`dualscale-manifest/1`), as far as the runtime reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default)]
    pub inputs: Vec<TensorDecl>,
    #[serde(default)]
    pub outputs: Vec<TensorDecl>,
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub parameters: Option<u64>,
    #[serde(default)]
    pub data_stats: Option<DataStats>,
    /// The sampler and steps the model is made for, if it names them (parsed on its own, so
    /// that its errors name the key).
    #[serde(skip)]
    pub sampler: Option<RecommendedSampler>,
    /// sha256 of each external weights file (`model.onnx.data`), by its location as the
    /// `.onnx` file names it.
    #[serde(default)]
    pub external_data_sha256: BTreeMap<String, String>,
}

/// Where a model's schedule came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    Manifest(PathBuf),
    Embedded,
    SchedulerConfig(PathBuf),
    /// No file: DDPM's defaults (T = 1000, linear 1e-4..0.02, epsilon) and the flags.
    Defaults,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Manifest(p) => write!(f, "manifest {}", p.display()),
            ConfigSource::Embedded => write!(f, "embedded manifest"),
            ConfigSource::SchedulerConfig(p) => write!(f, "diffusers config {}", p.display()),
            ConfigSource::Defaults => write!(f, "defaults (no manifest or scheduler_config.json found)"),
        }
    }
}

/// Everything the runtime needs to know about a model besides its graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub schedule: ScheduleConfig,
    pub manifest: Option<Manifest>,
    pub source: ConfigSource,
    /// Keys that were present but not understood (warned about once by the caller).
    pub unknown_keys: Vec<String>,
}

impl ModelConfig {
    pub fn data_stats(&self) -> Option<&DataStats> {
        self.manifest.as_ref().and_then(|m| m.data_stats.as_ref())
    }
}

/// Flags that override the schedule read from files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleOverrides {
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub prediction_type: Option<PredictionType>,
    pub timestep_spacing: Option<TimestepSpacing>,
}

impl ScheduleOverrides {
    pub fn apply(&self, s: &mut ScheduleConfig) {
        if let Some(v) = self.num_train_timesteps {
            s.num_train_timesteps = v;
            s.trained_betas = None;
        }
        if let Some(v) = self.beta_start {
            s.beta_start = v;
        }
        if let Some(v) = self.beta_end {
            s.beta_end = v;
        }
        if let Some(v) = self.beta_schedule {
            s.beta_schedule = v;
            s.trained_betas = None;
        }
        if let Some(v) = self.prediction_type {
            s.prediction_type = v;
        }
        if let Some(v) = self.timestep_spacing {
            s.timestep_spacing = v;
        }
    }
}

/// The manifest path for a model file: `dir/name.onnx` -> `dir/name.json`.
pub fn manifest_path_for(model: &Path) -> PathBuf {
    model.with_extension("json")
}

/// Finds and reads the configuration beside `model`: its manifest if present, else a diffusers
/// `scheduler_config.json` in the same directory (or in `../scheduler/`, the diffusers pipeline
/// layout), else DDPM defaults.
pub fn discover(model: &Path) -> Result<ModelConfig, ManifestError> {
    let manifest = manifest_path_for(model);
    if manifest.is_file() {
        let text = read(&manifest)?;
        return parse_manifest(&text, ConfigSource::Manifest(manifest));
    }
    let dir = model.parent().unwrap_or(Path::new("."));
    for candidate in [dir.join("scheduler_config.json"), dir.join("../scheduler/scheduler_config.json")] {
        if candidate.is_file() {
            let text = read(&candidate)?;
            return parse_scheduler_config(&text, &candidate);
        }
    }
    Ok(ModelConfig { schedule: class_defaults(None).0, manifest: None, source: ConfigSource::Defaults, unknown_keys: vec![] })
}

fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|cause| ManifestError::Read { path: path.to_owned(), cause })
}

fn source_path(source: &ConfigSource) -> PathBuf {
    match source {
        ConfigSource::Manifest(p) | ConfigSource::SchedulerConfig(p) => p.clone(),
        ConfigSource::Embedded => PathBuf::from("<embedded manifest>"),
        ConfigSource::Defaults => PathBuf::from("<defaults>"),
    }
}

/// Parses a project manifest. Required keys: `name`, `kind`, `prediction_type`, `scheduler`
/// (with `num_train_timesteps`, `beta_start`, `beta_end`, `beta_schedule`).
pub fn parse_manifest(text: &str, source: ConfigSource) -> Result<ModelConfig, ManifestError> {
    let path = source_path(&source);
    let value: Value = serde_json::from_str(text).map_err(|e| ManifestError::Json { path: path.clone(), cause: e })?;
    let obj = value.as_object().ok_or_else(|| ManifestError::BadValue {
        path: path.clone(),
        key: "<root>".into(),
        detail: "expected a JSON object".into(),
    })?;
    for key in ["name", "kind", "prediction_type", "scheduler"] {
        if !obj.contains_key(key) {
            return Err(ManifestError::MissingKey { path, key });
        }
    }
    let manifest: Manifest = serde_json::from_value(value.clone()).map_err(|e| ManifestError::BadValue {
        path: path.clone(),
        key: "<manifest>".into(),
        detail: e.to_string(),
    })?;
    let name = &manifest.name;
    let bad_name = if name.is_empty() {
        Some("is empty")
    } else if name.contains(['/', '\\', '\0']) {
        Some("contains a path separator or NUL")
    } else if name == "." || name == ".." {
        Some("is not a name")
    } else if name.len() > 100 {
        Some("is longer than 100 bytes")
    } else {
        None
    };
    if let Some(why) = bad_name {
        return Err(ManifestError::BadValue {
            path,
            key: "name".into(),
            detail: format!("{name:?} {why}; the name becomes part of output file names, use the model's file stem"),
        });
    }
    if !matches!(manifest.kind.as_str(), "points2d" | "image") {
        return Err(ManifestError::BadValue {
            path,
            key: "kind".into(),
            detail: format!("`{}` is not a model kind; use `points2d` or `image`", manifest.kind),
        });
    }
    if let Some(sha) = &manifest.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ManifestError::BadValue { path, key: "sha256".into(), detail: "expected 64 hex digits".into() });
        }
    }
    if let Some(stats) = &manifest.data_stats {
        let d = stats.mean.len();
        let cov_ok = stats.cov.as_ref().is_none_or(|c| c.len() == d && c.iter().all(|row| row.len() == d));
        let var_ok = stats.var.as_ref().is_none_or(|v| v.len() == d);
        if d == 0 || !cov_ok || !var_ok || (stats.cov.is_none() && stats.var.is_none()) {
            return Err(ManifestError::BadValue {
                path,
                key: "data_stats".into(),
                detail: format!("mean has {d} entries; give cov ({d}x{d}) or var ({d} entries)"),
            });
        }
    }
    let sched = obj["scheduler"].as_object().ok_or_else(|| ManifestError::BadValue {
        path: path.clone(),
        key: "scheduler".into(),
        detail: "expected an object".into(),
    })?;
    // beta_start / beta_end only matter to the linear schedules; explicit betas replace all three.
    let cosine = sched.get("beta_schedule").and_then(Value::as_str) == Some("squaredcos_cap_v2");
    for key in ["num_train_timesteps", "beta_start", "beta_end", "beta_schedule"] {
        let given_by_trained_betas = key.starts_with("beta") && sched.contains_key("trained_betas");
        let unused = cosine && matches!(key, "beta_start" | "beta_end");
        if !sched.contains_key(key) && !given_by_trained_betas && !unused {
            return Err(ManifestError::MissingKey { path, key });
        }
    }
    let mut keys: BTreeMap<String, Value> = sched.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    keys.insert("prediction_type".into(), obj["prediction_type"].clone());
    let (schedule, unknown_keys) = schedule_from_keys(&keys, None, &path)?;
    let mut manifest = manifest;
    if let Some(block) = obj.get("sampler") {
        let bad = |detail: String| ManifestError::BadValue { path: path.clone(), key: "sampler".into(), detail };
        let rec: RecommendedSampler = serde_json::from_value(block.clone()).map_err(|e| bad(e.to_string()))?;
        check_recommended(&rec, schedule.num_train_timesteps).map_err(bad)?;
        manifest.sampler = Some(rec);
    }
    Ok(ModelConfig { schedule, manifest: Some(manifest), source, unknown_keys })
}

/// A recommended sampler must be a fixed-step one with one valid way to lay out its steps.
fn check_recommended(rec: &RecommendedSampler, t_count: usize) -> Result<(), String> {
    if rec.kind == SamplerKind::Adaptive {
        return Err("`adaptive` picks its own steps; recommend a fixed-step sampler".into());
    }
    match (&rec.timesteps, rec.steps) {
        (Some(_), Some(_)) => Err("give `timesteps` or `steps`, not both".into()),
        (None, None) => Err("give `timesteps` (a list, high to low) or `steps`".into()),
        (Some(list), None) => sampler::check_timestep_list(list, t_count),
        (None, Some(n)) if n == 0 || n > t_count => Err(format!("steps = {n} must be between 1 and {t_count}")),
        (None, Some(_)) => Ok(()),
    }
}

/// Parses a diffusers `scheduler_config.json`: diffusers' keys with the defaults of the class
/// named by `_class_name`; keys starting with `_` are metadata; unknown keys are returned so the
/// caller can warn (they are not an error).
pub fn parse_scheduler_config(text: &str, path: &Path) -> Result<ModelConfig, ManifestError> {
    let text = replace_non_finite_tokens(text);
    let value: Value = serde_json::from_str(&text).map_err(|e| ManifestError::Json { path: path.to_owned(), cause: e })?;
    let obj = value.as_object().ok_or_else(|| ManifestError::BadValue {
        path: path.to_owned(),
        key: "<root>".into(),
        detail: "expected a JSON object".into(),
    })?;
    let class = obj.get("_class_name").and_then(Value::as_str);
    let keys: BTreeMap<String, Value> = obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (schedule, unknown_keys) = schedule_from_keys(&keys, class, path)?;
    Ok(ModelConfig { schedule, manifest: None, source: ConfigSource::SchedulerConfig(path.to_owned()), unknown_keys })
}

/// Python's `json` writes `Infinity`, `-Infinity` and `NaN` (diffusers' DPM-Solver config has
/// `"lambda_min_clipped": -Infinity`), which is not JSON. Outside strings, these tokens become
/// `null`: every key dualscale applies must be finite anyway, and is then reported as invalid.
fn replace_non_finite_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"].iter().find(|t| rest.starts_with(**t)) {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Diffusers keys that exist on some scheduler class but that dualscale does not apply.
const KNOWN_UNUSED_KEYS: &[&str] = &[
    "clip_sample",
    "clip_sample_range",
    "set_alpha_to_one",
    "variance_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "skip_prk_steps",
    "rescale_betas_zero_snr",
    "solver_order",
    "solver_type",
    "algorithm_type",
    "lower_order_final",
    "euler_at_final",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "final_sigmas_type",
    "lambda_min_clipped",
    "variance_type",
    "timestep_type",
    "interpolation_type",
    "sigma_min",
    "sigma_max",
    "predict_x0",
    "disable_corrector",
    "solver_p",
    "use_flow_sigmas",
    "flow_shift",
    "original_inference_steps",
    "timestep_scaling",
];

/// Class defaults: (schedule, class is known). `None` means DDPMScheduler.
fn class_defaults(class: Option<&str>) -> (ScheduleConfig, bool) {
    let leading = matches!(class, None | Some("DDPMScheduler" | "DDIMScheduler" | "PNDMScheduler" | "LCMScheduler"));
    let known = matches!(
        class,
        None | Some(
            "DDPMScheduler"
                | "DDIMScheduler"
                | "PNDMScheduler"
                | "LCMScheduler"
                | "EulerDiscreteScheduler"
                | "EulerAncestralDiscreteScheduler"
                | "HeunDiscreteScheduler"
                | "DPMSolverMultistepScheduler"
                | "DPMSolverSinglestepScheduler"
                | "UniPCMultistepScheduler"
                | "DEISMultistepScheduler"
                | "LMSDiscreteScheduler"
                | "KDPM2DiscreteScheduler"
        )
    );
    let lcm = class == Some("LCMScheduler");
    let schedule = ScheduleConfig {
        num_train_timesteps: 1000,
        beta_start: if lcm { 0.00085 } else { 0.0001 },
        beta_end: if lcm { 0.012 } else { 0.02 },
        beta_schedule: if lcm { BetaSchedule::ScaledLinear } else { BetaSchedule::Linear },
        trained_betas: None,
        prediction_type: PredictionType::Epsilon,
        timestep_spacing: if leading { TimestepSpacing::Leading } else { TimestepSpacing::Linspace },
        steps_offset: 0,
    };
    (schedule, known)
}

fn bad(path: &Path, key: &str, detail: impl Into<String>) -> ManifestError {
    ManifestError::BadValue { path: path.to_owned(), key: key.to_owned(), detail: detail.into() }
}

fn as_f64(path: &Path, key: &str, v: &Value) -> Result<f64, ManifestError> {
    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| bad(path, key, format!("expected a number, got {v}")))
}

fn as_usize(path: &Path, key: &str, v: &Value) -> Result<usize, ManifestError> {
    let x = v.as_u64().ok_or_else(|| bad(path, key, format!("expected a non-negative integer, got {v}")))?;
    usize::try_from(x).map_err(|_| bad(path, key, format!("{x} is too large for this machine")))
}

fn as_str<'a>(path: &Path, key: &str, v: &'a Value) -> Result<&'a str, ManifestError> {
    v.as_str().ok_or_else(|| bad(path, key, format!("expected a string, got {v}")))
}

/// Builds a schedule from diffusers-style keys on top of the class defaults.
fn schedule_from_keys(
    keys: &BTreeMap<String, Value>,
    class: Option<&str>,
    path: &Path,
) -> Result<(ScheduleConfig, Vec<String>), ManifestError> {
    let (mut s, known_class) = class_defaults(class);
    let mut unknown = Vec::new();
    if let (Some(c), false) = (class, known_class) {
        unknown.push(format!("_class_name={c} (DDPM defaults used for missing keys)"));
    }
    for (key, v) in keys {
        match key.as_str() {
            k if k.starts_with('_') => {}
            "num_train_timesteps" => s.num_train_timesteps = as_usize(path, key, v)?,
            "beta_start" => s.beta_start = as_f64(path, key, v)?,
            "beta_end" => s.beta_end = as_f64(path, key, v)?,
            "beta_schedule" => s.beta_schedule = as_str(path, key, v)?.parse().map_err(|e| bad(path, key, format!("{e}")))?,
            "trained_betas" if v.is_null() => {}
            "trained_betas" => {
                let arr = v.as_array().ok_or_else(|| bad(path, key, "expected a list of numbers"))?;
                let betas = arr.iter().map(|b| as_f64(path, key, b)).collect::<Result<Vec<_>, _>>()?;
                s.trained_betas = Some(betas);
            }
            "prediction_type" => s.prediction_type = as_str(path, key, v)?.parse().map_err(|e| bad(path, key, format!("{e}")))?,
            "timestep_spacing" => s.timestep_spacing = as_str(path, key, v)?.parse().map_err(|e| bad(path, key, format!("{e}")))?,
            "steps_offset" => s.steps_offset = as_usize(path, key, v)?,
            k if KNOWN_UNUSED_KEYS.contains(&k) => {
                log::debug!("{}: `{k}` is a diffusers key dualscale does not apply", path.display())
            }
            other => unknown.push(other.to_owned()),
        }
    }
    if let Some(betas) = &s.trained_betas {
        s.num_train_timesteps = betas.len();
    }
    if s.num_train_timesteps == 0 {
        return Err(bad(path, "num_train_timesteps", "must be at least 1"));
    }
    if s.num_train_timesteps > MAX_TRAIN_TIMESTEPS {
        return Err(bad(
            path,
            "num_train_timesteps",
            format!("{} is more than the {MAX_TRAIN_TIMESTEPS} dualscale accepts", s.num_train_timesteps),
        ));
    }
    Ok((s, unknown))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
        "format": "dualscale-manifest/1", "name": "dino-dualscale", "kind": "points2d",
        "file": "dino-dualscale.onnx", "sha256": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "prediction_type": "epsilon",
        "scheduler": {"num_train_timesteps": 100, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"},
        "data_stats": {"mean": [0.1, -0.2], "cov": [[1.0, 0.1], [0.1, 2.0]]}
    }"#;

    #[test]
    fn reads_a_project_manifest() {
        let c = parse_manifest(MANIFEST, ConfigSource::Embedded).unwrap();
        assert_eq!(c.schedule.num_train_timesteps, 100);
        assert_eq!(c.schedule.beta_schedule, BetaSchedule::Linear);
        assert_eq!(c.data_stats().unwrap().mean, vec![0.1, -0.2]);
        assert!(c.unknown_keys.is_empty());
    }

    /// MANIFEST with a `sampler` block.
    fn with_sampler(block: &str) -> Result<ModelConfig, ManifestError> {
        let text = MANIFEST.replacen("\"data_stats\"", &format!("\"sampler\": {block},\n        \"data_stats\""), 1);
        parse_manifest(&text, ConfigSource::Embedded)
    }

    #[test]
    fn reads_a_recommended_sampler() {
        let c = with_sampler(r#"{"type": "dpmpp-2m", "timesteps": [99, 59, 31, 15, 7, 3, 1, 0], "note": "tuned"}"#).unwrap();
        let rec = c.manifest.unwrap().sampler.unwrap();
        assert_eq!((rec.kind, rec.steps()), (SamplerKind::DpmPp2m, Some(8)));
        let c = with_sampler(r#"{"type": "ddim", "steps": 10}"#).unwrap();
        assert_eq!(c.manifest.unwrap().sampler.unwrap().steps(), Some(10));
    }

    #[test]
    fn a_bad_recommended_sampler_says_what_to_fix() {
        for (block, says) in [
            (r#"{"type": "ddim", "timesteps": [99, 99]}"#, "strictly decrease"),
            (r#"{"type": "ddim", "timesteps": [100, 50]}"#, "not below the model's 100"),
            (r#"{"type": "ddim", "timesteps": []}"#, "empty"),
            (r#"{"type": "ddim"}"#, "give `timesteps`"),
            (r#"{"type": "ddim", "steps": 4, "timesteps": [9, 1, 0, 2]}"#, "not both"),
            (r#"{"type": "adaptive", "steps": 4}"#, "fixed-step"),
            (r#"{"type": "ddim", "steps": 101}"#, "between 1 and 100"),
            (r#"{"type": "magic", "steps": 4}"#, "magic"),
            (r#"{"type": "ddim", "steps": 4, "eta": 1}"#, "eta"),
        ] {
            let err = with_sampler(block).unwrap_err().to_string();
            assert!(err.contains("`sampler`") || err.contains("sampler"), "{block}: {err}");
            assert!(err.contains(says), "{block}: {err}");
        }
    }

    #[test]
    fn manifest_missing_key_is_named() {
        let text = MANIFEST.replace("\"prediction_type\": \"epsilon\",", "");
        let err = parse_manifest(&text, ConfigSource::Embedded).unwrap_err();
        assert!(err.to_string().contains("`prediction_type`"), "{err}");
    }

    #[test]
    fn manifest_bad_sha_and_bad_json_are_errors() {
        let text = MANIFEST.replace("00112233", "zz");
        assert!(parse_manifest(&text, ConfigSource::Embedded).unwrap_err().to_string().contains("sha256"));
        let err = parse_manifest("{not json", ConfigSource::Embedded).unwrap_err();
        assert!(matches!(err, ManifestError::Json { .. }));
    }

    #[test]
    fn diffusers_class_defaults_and_unknown_keys() {
        let text = r#"{"_class_name": "DDIMScheduler", "_diffusers_version": "0.30.0", "num_train_timesteps": 1000,
                       "clip_sample": false, "brand_new_key": 3}"#;
        let c = parse_scheduler_config(text, Path::new("scheduler_config.json")).unwrap();
        assert_eq!(c.schedule.timestep_spacing, TimestepSpacing::Leading);
        assert_eq!(c.unknown_keys, vec!["brand_new_key".to_string()]);
        let text = r#"{"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "prediction_type": "v_prediction"}"#;
        let c = parse_scheduler_config(text, Path::new("scheduler_config.json")).unwrap();
        assert_eq!(c.schedule.timestep_spacing, TimestepSpacing::Linspace);
        assert_eq!(c.schedule.prediction_type, PredictionType::VPrediction);
        assert_eq!(c.schedule.beta_schedule, BetaSchedule::ScaledLinear);
    }

    #[test]
    fn python_infinity_tokens_are_accepted() {
        let text = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                       "note": "NaN stays text", "beta_end": 0.012}"#;
        let c = parse_scheduler_config(text, Path::new("s.json")).unwrap();
        assert_eq!(c.schedule.beta_end, 0.012);
        assert_eq!(c.unknown_keys, vec!["note".to_string()]);
        let err = parse_scheduler_config(r#"{"beta_start": NaN}"#, Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("beta_start"), "{err}");
    }

    #[test]
    fn trained_betas_set_the_length() {
        let text = r#"{"trained_betas": [0.1, 0.2, 0.3]}"#;
        let c = parse_scheduler_config(text, Path::new("s.json")).unwrap();
        assert_eq!(c.schedule.num_train_timesteps, 3);
    }

    #[test]
    fn bad_enum_value_is_explained() {
        let text = r#"{"beta_schedule": "cosine-ish"}"#;
        let err = parse_scheduler_config(text, Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("beta_schedule"), "{err}");
    }

    #[test]
    fn a_cosine_schedule_needs_no_beta_range() {
        let text = r#"{"name": "m", "kind": "image", "prediction_type": "v_prediction",
            "scheduler": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "trailing"}}"#;
        let cfg = parse_manifest(text, ConfigSource::Embedded).unwrap();
        assert_eq!(cfg.schedule.beta_schedule, BetaSchedule::SquaredCosCapV2);
        assert_eq!(cfg.schedule.timestep_spacing, TimestepSpacing::Trailing);
        let linear = text.replace("squaredcos_cap_v2", "linear");
        assert!(matches!(parse_manifest(&linear, ConfigSource::Embedded), Err(ManifestError::MissingKey { key: "beta_start", .. })));
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
