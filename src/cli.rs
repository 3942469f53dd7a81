//! The command line: clap's raw flags, turned once into validated configs for the commands.
//! clap types never travel past this file; the commands see [`GenerateConfig`] and friends.
//! Each flag is checked here and nowhere else; what can only be checked against a model (steps
//! beyond its schedule, sizes) is checked by the pipeline's plan.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cpu::Precision;
use crate::device::Device;
use crate::manifest::ScheduleOverrides;
use crate::model::{LoadOptions, ModelSource};
use crate::output::{Upscale, UpscaleFilter, MAX_UPSCALE};
use crate::pipeline::{InitChoice, Request, StepChoice, MAX_TIME_BUDGET};
use crate::sampler::SamplerKind;
use crate::schedule::{BetaSchedule, PredictionType, TimestepSpacing, MAX_TRAIN_TIMESTEPS};

pub mod kiosk;

/// A usage error: bad flag values found after clap parsed them. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// The library's enums as clap values: the names are the library's own (`name()`), written
/// once, and `--help` lists them.
macro_rules! value_enum {
    ($($ty:ty => $all:expr),+ $(,)?) => {$(
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &$all
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.name()))
            }
        }
    )+};
}

value_enum!(
    SamplerKind => SamplerKind::ALL,
    TimestepSpacing => TimestepSpacing::ALL,
    BetaSchedule => BetaSchedule::ALL,
    PredictionType => PredictionType::ALL,
    Precision => Precision::ALL,
    Device => Device::ALL,
    InitChoice => InitChoice::ALL,
    UpscaleFilter => UpscaleFilter::ALL,
);

#[derive(Debug, Parser)]
#[command(name = "dualscale", version, about = "Run adaptive dual-scale diffusion denoisers (ONNX) and write what they generate to disk")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate points or images from a model (the embedded landscape image model by default).
    Generate(GenerateArgs),
    /// Show a model's inputs, outputs, parameters, precision, schedule and sha256; or the CPU.
    Info(InfoArgs),
    /// KL divergence (bits, k-NN estimator) between generated points and a reference data set.
    Eval(EvalArgs),
    /// Time model evaluations per batch size.
    Bench(BenchArgs),
    /// Generate on a schedule into a directory (history, current.png, status.json), with a local page, a GPIO button, e-paper output.
    Kiosk(kiosk::KioskArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model file (.onnx). Its manifest (`NAME.json`) or `scheduler_config.json` is read from beside it. Default: the embedded dual-scale landscape image model.
    #[arg(long, short = 'm', value_name = "FILE.onnx")]
    pub model: Option<PathBuf>,
    /// Run a model whose sha256 does not match its manifest.
    #[arg(long)]
    pub allow_unverified: bool,
    /// Compute precision: auto (fp16 only where the CPU has native fp16 arithmetic), f32, f16.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,
    /// Compute device: auto (CUDA where this build and machine have it, else the CPU), cpu, cuda.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Override the schedule's prediction type.
    #[arg(long, value_enum)]
    pub prediction_type: Option<PredictionType>,
    /// Override the beta schedule.
    #[arg(long, value_enum)]
    pub beta_schedule: Option<BetaSchedule>,
    /// Override beta_start.
    #[arg(long, value_name = "F")]
    pub beta_start: Option<f64>,
    /// Override beta_end.
    #[arg(long, value_name = "F")]
    pub beta_end: Option<f64>,
    /// Override the number of training timesteps.
    #[arg(long, value_name = "T")]
    pub train_timesteps: Option<usize>,
    /// Override the timestep spacing.
    #[arg(long, value_enum)]
    pub spacing: Option<TimestepSpacing>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sampler [default: the one the model's manifest recommends, else unipc].
    #[arg(long, short = 's', value_enum)]
    pub sampler: Option<SamplerKind>,
    /// Sampling steps (default: the model's recommended steps, else 20; the training timesteps for ddpm).
    #[arg(long, value_name = "N", conflicts_with = "time_budget")]
    pub steps: Option<usize>,
    /// Exact timesteps to visit, high to low, comma-separated (e.g. 999,749,499,249), in place of --steps and --spacing.
    #[arg(long, value_name = "T1,T2,...", value_delimiter = ',', num_args = 1, conflicts_with_all = ["steps", "time_budget", "spacing"])]
    pub timesteps: Option<Vec<usize>>,
    /// Time budget for the whole run (e.g. 2s, 500ms, 1m): loading counts; one model evaluation is timed on this machine and the steps (and sampler order) that fit are picked.
    #[arg(long, value_name = "DURATION")]
    pub time_budget: Option<String>,
    /// DDIM eta (0 = deterministic) [default: 0].
    #[arg(long)]
    pub eta: Option<f64>,
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
    /// Samples per model call (default: 2000 points; 1 image). Results do not depend on it.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Output directory (created with its parents if missing).
    #[arg(long, short = 'o', default_value = "out")]
    pub out: PathBuf,
    /// File name template: {model}, {seed}, {index} (or {index:04}), {time}.
    #[arg(long, default_value = "{model}-s{seed}-{index}")]
    pub name: String,
    /// Replace existing files (the whole set of a run is replaced, or none of it).
    #[arg(long)]
    pub overwrite: bool,
    /// Threads: a batch is split into this many chunks run in parallel (image models: one image per thread, and the default batch is one image per thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Start from this noise (.npy, standard normal, shape [count, ...]) instead of the seed's.
    #[arg(long, value_name = "FILE.npy")]
    pub init_noise: Option<PathBuf>,
    /// Starting distribution: auto (data moments when the schedule does not reach pure noise and the manifest has data_stats), unit (N(0,I), as diffusers), data.
    #[arg(long, value_enum, default_value_t = InitChoice::Auto)]
    pub init: InitChoice,
    /// Image models: enlarge each PNG K times for display (the .json data is not scaled).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub upscale: u32,
    /// How --upscale enlarges: nearest (crisp K x K pixel blocks) or smooth (Catmull-Rom cubic).
    #[arg(long, value_enum, default_value_t = UpscaleFilter::Nearest)]
    pub upscale_filter: UpscaleFilter,
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
    /// Generated points (.npy of shape `[M,2]`, or .csv with header x,y).
    pub samples: PathBuf,
    /// Reference data: a .npy file, or a shipped data set name (circle, dino, line, moons).
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
    /// Batch sizes to time, comma-separated. Without it: a summary for this board (each precision
    /// the CPU runs well, samples per second at the parallel width, the steps a time budget buys).
    #[arg(long, value_delimiter = ',')]
    pub batch: Option<Vec<usize>>,
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
    pub source: ModelSource,
    pub load: LoadOptions,
}

/// `dualscale generate`, validated.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub model: ModelChoice,
    /// Everything but the initial noise, which is read from `init_noise` when the run starts.
    pub request: Request,
    pub init_noise: Option<PathBuf>,
    pub out: PathBuf,
    pub name: String,
    pub overwrite: bool,
    pub upscale: Upscale,
    pub json: bool,
}

/// `dualscale info`, validated.
#[derive(Debug, Clone)]
pub enum InfoConfig {
    /// The CPU and CUDA.
    System {
        json: bool,
    },
    Model {
        model: ModelChoice,
        json: bool,
    },
}

/// `dualscale eval`, validated.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub samples: PathBuf,
    pub reference: String,
    pub k: NonZeroUsize,
    pub json: bool,
}

/// `dualscale bench`, validated.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub model: ModelChoice,
    /// Batch sizes to time; empty for the board summary.
    pub batches: Vec<NonZeroUsize>,
    pub iters: NonZeroUsize,
    pub threads: NonZeroUsize,
    pub nodes: usize,
    pub json: bool,
}

/// A validated command.
#[derive(Debug, Clone)]
pub enum Config {
    Generate(Box<GenerateConfig>),
    Info(InfoConfig),
    Eval(EvalConfig),
    Bench(BenchConfig),
    Kiosk(Box<crate::kiosk::config::KioskConfig>),
}

impl Cli {
    /// Validates every flag; `started` is when the process started (a time budget counts from it).
    pub fn into_config(self, started: Instant) -> anyhow::Result<Config> {
        Ok(match self.command {
            Command::Generate(args) => Config::Generate(Box::new(args.to_config(started)?)),
            Command::Info(args) => Config::Info(args.to_config()),
            Command::Eval(args) => Config::Eval(args.to_config()?),
            Command::Bench(args) => Config::Bench(args.to_config()?),
            Command::Kiosk(args) => {
                Config::Kiosk(Box::new(crate::kiosk::config::KioskConfig::load(args.into_flags()).map_err(|e| usage(e.to_string()))?))
            }
        })
    }
}

fn at_least_one(flag: &str, v: usize) -> anyhow::Result<NonZeroUsize> {
    NonZeroUsize::new(v).ok_or_else(|| usage(format!("{flag} must be at least 1")))
}

impl ModelArgs {
    pub fn to_choice(&self) -> anyhow::Result<ModelChoice> {
        if let Some(t) = self.train_timesteps {
            if !(1..=MAX_TRAIN_TIMESTEPS).contains(&t) {
                return Err(usage(format!("--train-timesteps must be between 1 and {MAX_TRAIN_TIMESTEPS}, got {t}")));
            }
        }
        for (flag, v) in [("--beta-start", self.beta_start), ("--beta-end", self.beta_end)] {
            if let Some(b) = v {
                if !(b.is_finite() && b > 0.0 && b < 1.0) {
                    return Err(usage(format!("{flag} must be in (0, 1), got {b}")));
                }
            }
        }
        let overrides = ScheduleOverrides {
            num_train_timesteps: self.train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            prediction_type: self.prediction_type,
            timestep_spacing: self.spacing,
        };
        Ok(ModelChoice {
            source: self.model.clone().map_or(ModelSource::Embedded, ModelSource::File),
            load: LoadOptions { allow_unverified: self.allow_unverified, overrides, precision: Some(self.precision), device: self.device },
        })
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `2m30s`, `1h` (a bare number is seconds), up to a day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration; write e.g. 500ms, 2s, 1.5s, 1m or 1m30s");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let total = if let Ok(secs) = s.parse::<f64>() {
        secs
    } else {
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
        total
    };
    if !(total.is_finite() && total > 0.0) {
        return Err(bad());
    }
    if total > MAX_TIME_BUDGET.as_secs_f64() {
        return Err(format!("`{text}` is longer than a day; give at most 24h"));
    }
    Ok(Duration::from_secs_f64(total))
}

impl GenerateArgs {
    pub fn to_config(&self, started: Instant) -> anyhow::Result<GenerateConfig> {
        let steps = match (&self.time_budget, self.steps) {
            (Some(t), _) => {
                StepChoice::TimeBudget { budget: parse_duration(t).map_err(|e| usage(format!("--time-budget: {e}")))?, since: started }
            }
            (None, Some(n)) => StepChoice::Exactly(at_least_one("--steps", n)?),
            (None, None) => StepChoice::Default,
        };
        if let Some(eta) = self.eta {
            if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) {
                return Err(usage(format!("--eta must be in [0, 1], got {eta}")));
            }
        }
        for (flag, v) in [("--rtol", self.rtol), ("--atol", self.atol)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(usage(format!("{flag} must be a positive number, got {v}")));
            }
        }
        let request = Request {
            sampler: self.sampler,
            steps,
            eta: self.eta,
            rtol: self.rtol,
            atol: self.atol,
            // Also part of the model's schedule (overrides); here it sets aside a recommended list.
            spacing: self.model.spacing,
            timesteps: self.timesteps.clone(),
            seed: self.seed,
            count: self.count.map(|c| at_least_one("--count", c)).transpose()?,
            batch: self.batch.map(|b| at_least_one("--batch", b)).transpose()?,
            threads: at_least_one("--threads", self.threads)?,
            init: self.init,
            init_noise: None,
        };
        if !(1..=MAX_UPSCALE).contains(&self.upscale) {
            return Err(usage(format!("--upscale must be between 1 and {MAX_UPSCALE}, got {}", self.upscale)));
        }
        Ok(GenerateConfig {
            model: self.model.to_choice()?,
            upscale: Upscale { factor: self.upscale, filter: self.upscale_filter },
            request,
            init_noise: self.init_noise.clone(),
            out: self.out.clone(),
            name: self.name.clone(),
            overwrite: self.overwrite,
            json: self.json,
        })
    }
}

impl InfoArgs {
    pub fn to_config(&self) -> InfoConfig {
        if self.system {
            return InfoConfig::System { json: self.json };
        }
        let source = self.model.clone().map_or(ModelSource::Embedded, ModelSource::File);
        let load = LoadOptions { allow_unverified: self.allow_unverified, ..LoadOptions::default() };
        InfoConfig::Model { model: ModelChoice { source, load }, json: self.json }
    }
}

impl EvalArgs {
    pub fn to_config(&self) -> anyhow::Result<EvalConfig> {
        Ok(EvalConfig {
            samples: self.samples.clone(),
            reference: self.reference.clone(),
            k: at_least_one("--k", self.k)?,
            json: self.json,
        })
    }
}

impl BenchArgs {
    pub fn to_config(&self) -> anyhow::Result<BenchConfig> {
        Ok(BenchConfig {
            model: self.model.to_choice()?,
            batches: self.batch.iter().flatten().map(|&b| at_least_one("every --batch size", b)).collect::<anyhow::Result<_>>()?,
            iters: at_least_one("--iters", self.iters)?,
            threads: at_least_one("--threads", self.threads)?,
            nodes: self.nodes,
            json: self.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(args: &[&str]) -> anyhow::Result<GenerateConfig> {
        let cli = Cli::try_parse_from([&["dualscale", "generate"], args].concat()).unwrap();
        let Command::Generate(g) = cli.command else { panic!("expected generate") };
        g.to_config(Instant::now())
    }

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
        // Once a panic in Duration::from_secs_f64.
        assert!(parse_duration("1e20").unwrap_err().contains("longer than a day"));
        assert!(parse_duration("inf").is_err());
    }

    #[test]
    fn bad_generate_flags_are_usage_errors() {
        for (args, needle) in [
            (&["--steps", "0"][..], "--steps"),
            (&["--rtol", "NaN"], "--rtol"),
            (&["--rtol", "0"], "--rtol"),
            (&["--count", "0"], "--count"),
            (&["--eta", "2"], "--eta"),
            (&["--train-timesteps", "1000000000"], "--train-timesteps"),
            (&["--beta-start", "1.5"], "--beta-start"),
            (&["--time-budget", "1e20"], "--time-budget"),
        ] {
            let err = generate(args).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{args:?}: {err}");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
        // Unknown enum values are clap's errors, and list the valid ones.
        let err = Cli::try_parse_from(["dualscale", "generate", "--sampler", "magic"]).unwrap_err();
        assert!(err.to_string().contains("dpmpp-2m"), "{err}");
    }

    #[test]
    fn help_lists_the_values_of_every_enum() {
        let help = Cli::try_parse_from(["dualscale", "generate", "--help"]).unwrap_err().to_string();
        for value in ["unipc", "adaptive", "trailing", "squaredcos_cap_v2", "v_prediction", "f16", "cuda", "data"] {
            assert!(help.contains(value), "--help lacks {value}: {help}");
        }
    }
}
