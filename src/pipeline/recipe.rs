//! How a result was made, as one `Serialize` struct: the JSON sidecar is this struct, the PNG
//! `parameters` chunk is [`Recipe::parameters_line`], and `info` shows the same
//! [`ModelRecipe`] and [`ScheduleRecipe`].
//!
//! Fields are in alphabetical order, the order the sidecars had when they were built as
//! `serde_json::Value` maps, so that the same run writes the same bytes.

use std::time::SystemTime;

use serde::Serialize;

use super::{RunPlan, Samples};
use crate::model::{Model, ModelInfo};
use crate::schedule::ScheduleConfig;

/// The model part of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRecipe {
    pub kind: &'static str,
    pub name: String,
    pub precision: &'static str,
    pub sha256: String,
    pub verification: String,
}

impl ModelRecipe {
    pub fn new(info: &ModelInfo) -> Self {
        ModelRecipe {
            kind: info.kind.name(),
            name: info.name.clone(),
            precision: info.precision,
            sha256: info.sha256.clone(),
            verification: info.verification.to_string(),
        }
    }
}

/// The schedule part of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleRecipe {
    /// abar at the last training timestep (`info` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abar_end: Option<f64>,
    pub beta_end: f64,
    pub beta_schedule: &'static str,
    pub beta_start: f64,
    pub num_train_timesteps: usize,
    pub prediction_type: &'static str,
    pub steps_offset: usize,
    pub timestep_spacing: &'static str,
    /// Whether explicit betas replaced the named schedule.
    pub trained_betas: bool,
}

impl ScheduleRecipe {
    pub fn new(s: &ScheduleConfig) -> Self {
        ScheduleRecipe {
            abar_end: None,
            beta_end: s.beta_end,
            beta_schedule: s.beta_schedule.name(),
            beta_start: s.beta_start,
            num_train_timesteps: s.num_train_timesteps,
            prediction_type: s.prediction_type.name(),
            steps_offset: s.steps_offset,
            timestep_spacing: s.timestep_spacing.name(),
            trained_betas: s.trained_betas.is_some(),
        }
    }
}

/// One step's gate weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateWeight {
    pub global: f64,
    pub local: f64,
    pub step: usize,
    pub t: f64,
}

/// The full recipe of one run's result (the JSON sidecar).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipe {
    pub abar_start: f64,
    pub atol: f64,
    pub batch: usize,
    /// The dtype the model was computed in (`F32`, `F16`).
    pub compute: String,
    pub count: usize,
    pub created_unix: u64,
    pub device: String,
    pub dualscale_version: &'static str,
    pub eta: f64,
    /// A point cloud's sidecar: every file of the set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    pub gate_weights: Vec<GateWeight>,
    /// An image's sidecar: the image's index in the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub init: &'static str,
    pub init_noise: Option<String>,
    pub model: ModelRecipe,
    pub nfe: usize,
    pub nfe_total: usize,
    /// An image's sidecar: the PNG's `parameters` line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
    pub rejected_steps: usize,
    pub rtol: f64,
    pub sampler: &'static str,
    pub sampling_seconds: f64,
    pub schedule: ScheduleRecipe,
    pub seed: u64,
    pub steps: usize,
    pub threads: usize,
    pub timesteps: Vec<f64>,
    /// Image PNGs enlarged for display: `4x nearest` (absent when not enlarged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upscale: Option<String>,
}

impl Recipe {
    /// The recipe of `samples`, made by `model` following `plan`, created at `created`.
    pub fn new(plan: &RunPlan, model: &Model, samples: &Samples, created: SystemTime) -> Self {
        Recipe {
            abar_start: plan.abar_start,
            atol: plan.sampler.atol,
            batch: plan.batch,
            compute: format!("{:?}", model.compute_dtype()),
            count: plan.count,
            created_unix: created.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            device: model.device().to_string(),
            dualscale_version: env!("CARGO_PKG_VERSION"),
            eta: plan.sampler.eta,
            files: None,
            gate_weights: samples
                .gates
                .iter()
                .map(|g| GateWeight { global: g.gate[0].into(), local: g.gate[1].into(), step: g.step, t: g.t })
                .collect(),
            index: None,
            init: plan.start.name(),
            init_noise: plan.init_noise.as_ref().map(|n| n.source.display().to_string()),
            model: ModelRecipe::new(&plan.model),
            nfe: samples.stats.nfe,
            nfe_total: samples.nfe_total,
            parameters: None,
            rejected_steps: samples.stats.rejected,
            rtol: plan.sampler.rtol,
            sampler: plan.sampler.kind.name(),
            sampling_seconds: samples.sampling_seconds,
            schedule: ScheduleRecipe::new(&plan.schedule),
            seed: plan.seed,
            steps: samples.stats.steps,
            threads: plan.threads,
            timesteps: samples.stats.timesteps.clone(),
            upscale: None,
        }
    }

    /// The A1111-style `parameters` line stored in each PNG: of image `index`, or (`None`) of a
    /// whole point cloud.
    pub fn parameters_line(&self, index: Option<usize>) -> String {
        let which = match index {
            Some(i) => format!("Index: {i}"),
            None => format!("Points: {}", self.count),
        };
        format!(
            "Steps: {}, Sampler: {}, Seed: {}, {which}, NFE: {}, Model: {}, Model sha256: {}, Version: dualscale {}",
            self.steps, self.sampler, self.seed, self.nfe, self.model.name, self.model.sha256, self.dualscale_version
        )
    }
}
