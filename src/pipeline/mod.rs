//! Generation as a library: the stages the CLI, a kiosk and a server all call in-process, in
//! the spirit of tract's `into_optimized()` / `into_runnable()`.
//!
//! 1. [`Generator::new`] takes a loaded [`Model`] once (plans are built on first use and kept);
//! 2. [`Generator::plan`] resolves a [`Request`] into a [`RunPlan`]: counts, batch, sampler,
//!    steps (or a time budget), starting distribution, all checked before any sampling;
//!    [`OutputLayout::new`] names and checks the files it will write;
//! 3. [`RunPlan::seeded_start`] draws the starting state from the seed (`rng.rs` owns the noise
//!    streams; `sampler/start.rs` the starting distributions);
//! 4. [`Generator::sample`] runs the sampler batch by batch, with a step callback and a stop flag;
//! 5. [`Recipe::new`] says how the result was made, [`OutputLayout::encode`] turns samples and
//!    recipe into an [`crate::output::OutputSet`], written all or nothing.
//!
//! This module decides the run; it does not parse flags, print, or install signal handlers.
//!
//! ```
//! use std::ops::ControlFlow;
//! use std::sync::atomic::AtomicBool;
//! use std::time::SystemTime;
//!
//! use dualscale::model::{LoadOptions, Model, ModelSource};
//! use dualscale::output::{Upscale, UpscaleFilter};
//! use dualscale::pipeline::{Generator, Naming, OutputLayout, Recipe, Request, StepChoice};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A small diffusers UNet (16x16 RGB) that ships with the tests.
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unet/model.onnx");
//! let model = Model::open(&ModelSource::File(path.into()), &LoadOptions::default())?;
//! let mut generator = Generator::new(model)?;
//!
//! let request = Request { seed: 42, steps: StepChoice::Exactly(4.try_into()?), ..Request::default() };
//! let plan = generator.plan(&request)?;
//! let dir = tempfile::tempdir()?;
//! let naming = Naming {
//!     dir: dir.path().into(),
//!     template: "picture-{index}".into(),
//!     overwrite: false,
//!     created: SystemTime::now(),
//!     upscale: Upscale { factor: 4, filter: UpscaleFilter::Nearest },
//! };
//! let layout = OutputLayout::new(&plan, &naming)?;
//!
//! let stop = AtomicBool::new(false);
//! let samples = generator.sample(&plan, plan.seeded_start()?, &mut |_| ControlFlow::Continue(()), &stop)?;
//! let recipe = Recipe::new(&plan, generator.model(), &samples, layout.created());
//! let written = layout.encode(&plan, &samples, &recipe)?.write(layout.overwrite(), &stop)?;
//! assert!(written[0].ends_with("picture-0.png"));
//! assert!(written[1].ends_with("picture-0.json"));
//! # Ok(())
//! # }
//! ```

mod journal;
mod outputs;
mod plan;
mod recipe;
mod request;
mod sample;

pub use journal::Journal;
pub use outputs::{FileRole, Naming, OutputLayout};
pub use plan::{BudgetDecision, RunPlan};
pub use recipe::{GateWeight, ModelRecipe, Recipe, ScheduleRecipe};
pub use request::{
    InitChoice, InitNoise, Request, StepChoice, DEFAULT_POINTS, DEFAULT_POINT_BATCH, DEFAULT_STEPS, MAX_BATCH_VALUES, MAX_RUN_VALUES,
    MAX_TIME_BUDGET,
};
pub use sample::{GateRecord, Samples, Start, StepReport};

use crate::model::{Model, ModelError, TractDenoiser};
use crate::output::OutputError;
use crate::sampler::SampleError;

/// Why a generation could not run. [`PipelineError::exit_code`] maps it to the CLI's codes.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request cannot run with this model (steps beyond the schedule, sizes over the
    /// limits, a bad name template...): a usage error.
    #[error("{0}")]
    Request(String),
    /// The model's results cannot be written (e.g. 5-channel images).
    #[error("{0}")]
    Unsupported(String),
    /// The time budget does not fit one step.
    #[error("{0}")]
    Budget(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sample(SampleError),
    /// Stopped by the caller's flag or callback; nothing was written.
    #[error("sampling was interrupted at {at}; no output was written")]
    Interrupted { at: String },
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl PipelineError {
    /// 2 for a request that cannot run, 130 for an interruption, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            PipelineError::Request(_) => 2,
            PipelineError::Interrupted { .. } | PipelineError::Output(OutputError::Interrupted) => 130,
            _ => 1,
        }
    }
}

/// A loaded model ready to generate, run after run: its plans (one per batch size) are built on
/// first use and kept for the generator's life.
pub struct Generator {
    denoiser: TractDenoiser,
}

impl Generator {
    pub fn new(model: Model) -> Result<Generator, PipelineError> {
        Ok(Generator { denoiser: model.into_denoiser()? })
    }

    /// The model this generator runs.
    pub fn model(&self) -> &Model {
        self.denoiser.model()
    }

    /// The model as the samplers see it (for benches and profiling).
    pub fn denoiser(&mut self) -> &mut TractDenoiser {
        &mut self.denoiser
    }
}
