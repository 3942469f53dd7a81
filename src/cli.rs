//! The command line: clap's raw flags, turned once into validated configs for the commands.
//! clap types never travel past this file; the commands see [`GenerateConfig`] and friends.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cpu::Precision;
use crate::device::Device;
use crate::manifest::ScheduleOverrides;
use crate::sampler::{SamplerKind, SamplerOptions};

pub mod kiosk;

/// A usage error: bad flag values found after clap parsed them. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

#[derive(Debug, Parser)]
#[command(name = "dualscale", version, about = "Run adaptive dual-scale diffusion denoisers (ONNX) and write what they generate to disk")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate points or images from a model (the embedded dino model by default).
    Generate(GenerateArgs),
    /// Show a model's inputs, outputs, parameters, precision, schedule and sha256; or the CPU.
    Info(InfoArgs),
    /// KL divergence (bits, k-NN estimator) between generated points and a reference data set.
    Eval(EvalArgs),
    /// Time model evaluations per batch size.
    Bench(BenchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model file (.onnx). Its manifest (`NAME.json`) or `scheduler_config.json` is read from beside it. Default: the embedded dual-scale dino model.
    #[arg(long, short = 'm', value_name = "FILE.onnx")]
    pub model: Option<PathBuf>,
    /// Run a model whose sha256 does not match its manifest.
    #[arg(long)]
    pub allow_unverified: bool,
    /// Compute precision: auto (fp16 only where the CPU has native fp16 arithmetic), f32, f16.
    #[arg(long, default_value = "auto", value_name = "auto|f32|f16")]
    pub precision: String,
    /// Compute device: auto (CUDA where this build and machine have it, else the CPU), cpu, cuda.
    #[arg(long, default_value = "auto", value_name = "auto|cpu|cuda")]
    pub device: String,
    /// Override the schedule's prediction type: epsilon, v_prediction, sample.
    #[arg(long, value_name = "TYPE")]
    pub prediction_type: Option<String>,
    /// Override the beta schedule: linear, scaled_linear, squaredcos_cap_v2.
    #[arg(long, value_name = "NAME")]
    pub beta_schedule: Option<String>,
    /// Override beta_start.
    #[arg(long, value_name = "F")]
    pub beta_start: Option<f64>,
    /// Override beta_end.
    #[arg(long, value_name = "F")]
    pub beta_end: Option<f64>,
    /// Override the number of training timesteps.
    #[arg(long, value_name = "T")]
    pub train_timesteps: Option<usize>,
    /// Override the timestep spacing: leading, linspace, trailing.
    #[arg(long, value_name = "NAME")]
    pub spacing: Option<String>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sampler: ddpm, ddim, euler, heun, dpmpp-2m, dpmpp-3m, unipc, adaptive [default: unipc].
    #[arg(long, short = 's')]
    pub sampler: Option<String>,
    /// Sampling steps (default 20; the training timesteps for ddpm).
    #[arg(long, value_name = "N", conflicts_with = "time_budget")]
    pub steps: Option<usize>,
    /// Time budget for sampling (e.g. 2s, 500ms, 1m): measures one model evaluation on this machine and picks the steps (and sampler order) that fit.
    #[arg(long, value_name = "DURATION")]
    pub time_budget: Option<String>,
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Adaptive sampler: relative tolerance.
    #[arg(long, default_value_t = 0.05)]
    pub rtol: f64,
    /// Adaptive sampler: absolute tolerance.
    #[arg(long, default_value_t = 0.0078)]
    pub atol: f64,
    /// Seed of the initial noise (same seed, same noise on every platform).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Points per cloud (point models, default 10000) or number of images (image models, default 1).
    #[arg(long, short = 'n')]
    pub count: Option<usize>,
    /// Samples per model call (default: all points of a cloud; 1 image).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Output directory (must exist).
    #[arg(long, short = 'o', default_value = "out")]
    pub out: PathBuf,
    /// File name template: {model}, {seed}, {index} (or {index:04}), {time}.
    #[arg(long, default_value = "{model}-s{seed}-{index}")]
    pub name: String,
    /// Replace existing files.
    #[arg(long)]
    pub overwrite: bool,
    /// Threads: a batch is split into this many chunks run in parallel.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Start from this noise (.npy, standard normal, shape [count, ...]) instead of the seed's.
    #[arg(long, value_name = "FILE.npy")]
    pub init_noise: Option<PathBuf>,
    /// Starting distribution: auto (data moments when the schedule does not reach pure noise and the manifest has data_stats), unit (N(0,I), as diffusers), data.
    #[arg(long, default_value = "auto", value_name = "auto|unit|data")]
    pub init: String,
    /// Print JSON event lines on stdout instead of paths.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model file (.onnx); default: the embedded model.
    pub model: Option<PathBuf>,
    /// Show the CPU's capabilities instead.
    #[arg(long)]
    pub system: bool,
    /// Run a model whose sha256 does not match its manifest.
    #[arg(long)]
    pub allow_unverified: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Generated points (.npy [M,2] or .csv with header x,y).
    pub samples: PathBuf,
    /// Reference data: a .npy file, or a data set name (circle, dino, line, moons) looked up in models/data/.
    #[arg(long, short = 'r')]
    pub reference: String,
    /// Neighbours for the estimator.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes to time, comma-separated.
    #[arg(long, default_value = "1,100,1000,10000", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Timed evaluations per batch size.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Threads per evaluation.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also show the N slowest graph nodes per batch size (where the time goes on this machine).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub nodes: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the model comes from and how to load it.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    pub path: Option<PathBuf>,
    pub load: crate::model::LoadOptions,
}

/// How to pick the number of steps.
#[derive(Debug, Clone, PartialEq)]
pub enum StepBudget {
    Steps(usize),
    Time { budget: Duration, sampler_given: bool },
}

/// How the starting state is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitDistribution {
    Auto,
    Unit,
    DataMoments,
}

/// `dualscale generate`, validated.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub model: ModelChoice,
    pub sampler: SamplerOptions,
    pub budget: StepBudget,
    pub seed: u64,
    pub count: Option<usize>,
    pub batch: Option<usize>,
    pub out: PathBuf,
    pub name: String,
    pub overwrite: bool,
    pub threads: usize,
    pub init_noise: Option<PathBuf>,
    pub init: InitDistribution,
    pub json: bool,
}

impl ModelArgs {
    pub fn to_choice(&self) -> anyhow::Result<ModelChoice> {
        let parse = |what: &str, v: &Option<String>| -> anyhow::Result<()> {
            if let Some(v) = v {
                if v.is_empty() {
                    return Err(usage(format!("--{what} needs a value")));
                }
            }
            Ok(())
        };
        parse("prediction-type", &self.prediction_type)?;
        let overrides = ScheduleOverrides {
            num_train_timesteps: self.train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule.as_deref().map(str::parse).transpose().map_err(|e| usage(format!("--beta-schedule: {e}")))?,
            prediction_type: self
                .prediction_type
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| usage(format!("--prediction-type: {e}")))?,
            timestep_spacing: self.spacing.as_deref().map(str::parse).transpose().map_err(|e| usage(format!("--spacing: {e}")))?,
        };
        if overrides.num_train_timesteps == Some(0) {
            return Err(usage("--train-timesteps must be at least 1"));
        }
        let precision: Precision = self.precision.parse().map_err(|e| usage(format!("--precision: {e}")))?;
        let device: Device = self.device.parse().map_err(|e| usage(format!("--device: {e}")))?;
        Ok(ModelChoice {
            path: self.model.clone(),
            load: crate::model::LoadOptions { allow_unverified: self.allow_unverified, overrides, precision: Some(precision), device },
        })
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `2m30s` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration; write e.g. 500ms, 2s, 1.5s, 1m or 1m30s");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return if secs.is_finite() && secs > 0.0 { Ok(Duration::from_secs_f64(secs)) } else { Err(bad()) };
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if total > 0.0 && total.is_finite() {
        Ok(Duration::from_secs_f64(total))
    } else {
        Err(bad())
    }
}

impl GenerateArgs {
    pub fn to_config(&self) -> anyhow::Result<GenerateConfig> {
        let kind: SamplerKind = match &self.sampler {
            Some(name) => name.parse().map_err(|e| usage(format!("--sampler: {e}")))?,
            None => SamplerKind::UniPc,
        };
        let budget = match (&self.time_budget, self.steps) {
            (Some(t), _) => StepBudget::Time {
                budget: parse_duration(t).map_err(|e| usage(format!("--time-budget: {e}")))?,
                sampler_given: self.sampler.is_some(),
            },
            (None, Some(0)) => return Err(usage("--steps must be at least 1")),
            (None, Some(n)) => StepBudget::Steps(n),
            (None, None) => StepBudget::Steps(0), // resolved against the model: 20, or T for ddpm
        };
        let mut sampler = SamplerOptions::new(kind, 0);
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(usage(format!("--eta must be in [0, 1], got {}", self.eta)));
        }
        if self.rtol <= 0.0 || self.atol <= 0.0 {
            return Err(usage("--rtol and --atol must be positive"));
        }
        sampler.eta = self.eta;
        sampler.rtol = self.rtol;
        sampler.atol = self.atol;
        if self.count == Some(0) {
            return Err(usage("--count must be at least 1"));
        }
        if self.batch == Some(0) {
            return Err(usage("--batch must be at least 1"));
        }
        if self.threads == 0 {
            return Err(usage("--threads must be at least 1"));
        }
        let init = match self.init.as_str() {
            "auto" => InitDistribution::Auto,
            "unit" => InitDistribution::Unit,
            "data" => InitDistribution::DataMoments,
            other => return Err(usage(format!("--init: `{other}` is not one of auto, unit, data"))),
        };
        Ok(GenerateConfig {
            model: self.model.to_choice()?,
            sampler,
            budget,
            seed: self.seed,
            count: self.count,
            batch: self.batch,
            out: self.out.clone(),
            name: self.name.clone(),
            overwrite: self.overwrite,
            threads: self.threads,
            init_noise: self.init_noise.clone(),
            init,
            json: self.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn bad_generate_flags_are_usage_errors() {
        let cli = Cli::try_parse_from(["dualscale", "generate", "--steps", "0"]).unwrap();
        let Command::Generate(g) = cli.command else { panic!("expected generate") };
        let err = g.to_config().unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        let cli = Cli::try_parse_from(["dualscale", "generate", "--sampler", "magic"]).unwrap();
        let Command::Generate(g) = cli.command else { panic!("expected generate") };
        assert!(g.to_config().unwrap_err().to_string().contains("--sampler"));
    }
}
