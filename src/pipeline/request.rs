//! What a caller asks of a generation before it meets a model: plain typed values (no clap, no
//! sentinel zeros), the size limits every request is held to, and the defaults.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sampler::SamplerKind;
use crate::schedule::TimestepSpacing;

/// Steps when none are asked for (DDPM takes every training timestep).
pub const DEFAULT_STEPS: usize = 20;
/// Points per cloud when no count is asked for.
pub const DEFAULT_POINTS: usize = 10_000;
/// Points per model call when no batch is asked for: a bounded batch keeps memory flat for any
/// count (tract's activations grow with the batch), and results do not depend on batching.
pub const DEFAULT_POINT_BATCH: usize = 2_000;
/// Most f32 values all samples of one run may hold (256 MiB): the state, the outputs and their
/// encodings are a few times this.
pub const MAX_RUN_VALUES: usize = 1 << 26;
/// Most f32 values one model call may take (4 MiB of input; tract's activations are a few
/// hundred times this for the shipped models).
pub const MAX_BATCH_VALUES: usize = 1 << 20;
/// Longest time budget: a day.
pub const MAX_TIME_BUDGET: Duration = Duration::from_secs(86_400);

/// How many steps to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChoice {
    /// [`DEFAULT_STEPS`], or every training timestep for DDPM.
    Default,
    /// Exactly this many.
    Exactly(NonZeroUsize),
    /// As many as fit: one evaluation is timed on this machine, and the time already spent since
    /// `since` (loading the model, building plans, the timing itself) counts against the budget.
    TimeBudget { budget: Duration, since: Instant },
}

/// Which starting distribution to draw x_T from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitChoice {
    /// The data's moments when the schedule does not reach pure noise and the manifest has
    /// `data_stats`; N(0, I) otherwise.
    #[default]
    Auto,
    /// N(0, I), as diffusers does.
    Unit,
    /// The data's moments (needs `data_stats` in the manifest).
    Data,
}

impl InitChoice {
    pub const ALL: [InitChoice; 3] = [InitChoice::Auto, InitChoice::Unit, InitChoice::Data];

    pub fn name(self) -> &'static str {
        match self {
            InitChoice::Auto => "auto",
            InitChoice::Unit => "unit",
            InitChoice::Data => "data",
        }
    }
}

/// Unit Gaussian noise given instead of the seed's (`--init-noise`): `shape[0]` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct InitNoise {
    /// Where it came from, for messages and the recipe (a path).
    pub source: PathBuf,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// A generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `None`: the model's recommended sampler (manifest `sampler`), else UniPC, or what a time
    /// budget picks.
    pub sampler: Option<SamplerKind>,
    pub steps: StepChoice,
    /// DDIM's eta; `None` is 0 (deterministic). Given with another sampler, it is ignored with a
    /// warning.
    pub eta: Option<f64>,
    /// Adaptive sampler tolerances.
    pub rtol: f64,
    pub atol: f64,
    /// Timestep spacing; `None` takes the model's.
    pub spacing: Option<TimestepSpacing>,
    /// Explicit timesteps, high to low, in place of a step count (`steps` must be `Default`).
    pub timesteps: Option<Vec<usize>>,
    pub seed: u64,
    /// Points per cloud (point models) or images (image models); `None`: 10,000 points or 1 image.
    pub count: Option<NonZeroUsize>,
    /// Samples per model call; `None`: [`DEFAULT_POINT_BATCH`] points, or one image per thread.
    pub batch: Option<NonZeroUsize>,
    /// A batch is split into this many chunks run on parallel threads.
    pub threads: NonZeroUsize,
    pub init: InitChoice,
    pub init_noise: Option<InitNoise>,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            sampler: None,
            steps: StepChoice::Default,
            eta: None,
            rtol: 0.05,
            atol: 0.0078,
            spacing: None,
            timesteps: None,
            seed: 0,
            count: None,
            batch: None,
            threads: NonZeroUsize::MIN,
            init: InitChoice::Auto,
            init_noise: None,
        }
    }
}
