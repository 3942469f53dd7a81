//! Stage 4, *outputs*: the files a run will write, named and checked before sampling
//! ([`OutputLayout`]), then encoded from the samples and the [`Recipe`] into an [`OutputSet`]
//! that is written all or nothing.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{PipelineError, Recipe, RunPlan, Samples};
use crate::model::ModelKind;
use crate::output::{self, NameVars, OutputFile, OutputSet, Upscale, MAX_FILE_NAME_BYTES, MAX_UPSCALE};

/// Where and how a run's files are named.
#[derive(Debug, Clone, PartialEq)]
pub struct Naming {
    /// The output directory; created (with its parents) if missing.
    pub dir: PathBuf,
    /// File-name template: `{model}`, `{seed}`, `{index}` (`{index:04}`), `{time}`.
    pub template: String,
    /// Replace existing files.
    pub overwrite: bool,
    /// The time `{time}` and the recipe record.
    pub created: SystemTime,
    /// Enlargement of image PNGs for display (the `.npy`/sidecar data is never scaled).
    pub upscale: Upscale,
}

/// What one file of a run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A point cloud as CSV (`x,y` header).
    PointsCsv,
    /// A point cloud as `.npy` float32 `[count, dim]`.
    PointsNpy,
    /// A point cloud as a scatter-plot PNG (2-D and higher).
    Scatter,
    /// Image `index` as PNG.
    Image { index: usize },
    /// The recipe as JSON: of the point cloud (`None`) or of image `index`.
    Sidecar { index: Option<usize> },
}

/// The files a plan will write, named and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputLayout {
    files: Vec<(FileRole, PathBuf)>,
    overwrite: bool,
    created: SystemTime,
    upscale: Upscale,
}

impl OutputLayout {
    /// Names every file of `plan` and checks, before any sampling, what writing will need: a
    /// template that gives distinct, valid names short enough for the file system, a directory
    /// (created here if missing), no existing file unless overwriting, and results that can be
    /// encoded (PNG needs 1, 3 or 4 channels).
    pub fn new(plan: &RunPlan, naming: &Naming) -> Result<OutputLayout, PipelineError> {
        if !(1..=MAX_UPSCALE).contains(&naming.upscale.factor) {
            return Err(PipelineError::Request(format!("--upscale {} is outside 1..={MAX_UPSCALE}", naming.upscale.factor)));
        }
        prepare_dir(&naming.dir)?;
        let roles: Vec<Vec<FileRole>> = match plan.model.kind {
            ModelKind::Points { dim } => {
                let mut group = vec![FileRole::PointsCsv, FileRole::PointsNpy];
                if dim >= 2 {
                    group.push(FileRole::Scatter);
                } else {
                    log::info!("1-D points: no scatter plot, CSV and .npy only");
                }
                group.push(FileRole::Sidecar { index: None });
                vec![group]
            }
            ModelKind::Image { channels, .. } => {
                if !matches!(channels, 1 | 3 | 4) {
                    return Err(PipelineError::Unsupported(format!(
                        "the model makes {channels}-channel images, which cannot be written as PNG (1 gray, 3 RGB or 4 RGBA channels); use a model with 1, 3 or 4 output channels"
                    )));
                }
                (0..plan.count).map(|i| vec![FileRole::Image { index: i }, FileRole::Sidecar { index: Some(i) }]).collect()
            }
        };
        let mut files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (index, group) in roles.into_iter().enumerate() {
            let vars = NameVars { model: plan.model.name.clone(), seed: plan.seed, index: index as u64, time: naming.created };
            let stem = output::expand_name(&naming.template, &vars).map_err(|e| PipelineError::Request(format!("--name: {e}")))?;
            for role in group {
                let name = format!("{stem}.{}", extension(role));
                if name.len() > MAX_FILE_NAME_BYTES {
                    return Err(PipelineError::Request(format!(
                        "--name gives the file name {name:?} of {} bytes; file names can have at most {MAX_FILE_NAME_BYTES} (255 less room for the temporary file); use a shorter --name",
                        name.len()
                    )));
                }
                let path = naming.dir.join(&name);
                if !seen.insert(path.clone()) {
                    return Err(PipelineError::Request(format!(
                        "--name `{}` gives the same file name {} for several outputs; add {{index}}",
                        naming.template,
                        path.display()
                    )));
                }
                if !naming.overwrite && path.exists() {
                    return Err(PipelineError::Output(output::OutputError::Exists { path }));
                }
                files.push((role, path));
            }
        }
        Ok(OutputLayout { files, overwrite: naming.overwrite, created: naming.created, upscale: naming.upscale })
    }

    /// Every file, in writing order.
    pub fn files(&self) -> &[(FileRole, PathBuf)] {
        &self.files
    }

    /// Whether existing files are replaced.
    pub fn overwrite(&self) -> bool {
        self.overwrite
    }

    /// The enlargement of image PNGs.
    pub fn upscale(&self) -> Upscale {
        self.upscale
    }

    /// When the run was made (`{time}`, `created_unix`).
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Encodes every file from the samples and the recipe.
    pub fn encode(&self, plan: &RunPlan, samples: &Samples, recipe: &Recipe) -> Result<OutputSet, PipelineError> {
        let len = plan.sample_len();
        let x = &samples.values;
        let mut scaled;
        let recipe = if self.upscale.factor > 1 && matches!(plan.model.kind, ModelKind::Image { .. }) {
            scaled = recipe.clone();
            scaled.upscale = Some(format!("{}x {}", self.upscale.factor, self.upscale.filter.name()));
            &scaled
        } else {
            recipe
        };
        let mut set = OutputSet::default();
        for (role, path) in &self.files {
            let bytes = match (*role, plan.model.kind) {
                (FileRole::PointsCsv, ModelKind::Points { dim }) => output::points_csv(x, dim),
                (FileRole::PointsNpy, ModelKind::Points { dim }) => {
                    crate::npy::try_to_bytes_f32(&[plan.count, dim], x).map_err(|e| PipelineError::Unsupported(e.to_string()))?
                }
                (FileRole::Scatter, ModelKind::Points { dim }) => output::scatter_png(x, dim, &recipe.parameters_line(None))?,
                (FileRole::Sidecar { index: None }, _) => {
                    let mut r = recipe.clone();
                    r.files = Some(self.files.iter().map(|(_, p)| p.display().to_string()).collect());
                    sidecar(&r)?
                }
                (FileRole::Image { index }, ModelKind::Image { channels, height, width }) => {
                    let image = &x[index * len..(index + 1) * len];
                    output::image_png_upscaled(image, channels, height, width, &recipe.parameters_line(Some(index)), self.upscale)?
                }
                (FileRole::Sidecar { index: Some(index) }, _) => {
                    let mut r = recipe.clone();
                    r.index = Some(index);
                    r.parameters = Some(recipe.parameters_line(Some(index)));
                    sidecar(&r)?
                }
                (role, kind) => {
                    return Err(PipelineError::Unsupported(format!("internal: no {role:?} for a {} model", kind.name())));
                }
            };
            set.files.push(OutputFile { path: path.clone(), bytes });
        }
        Ok(set)
    }
}

fn sidecar(recipe: &Recipe) -> Result<Vec<u8>, PipelineError> {
    serde_json::to_vec_pretty(recipe).map_err(|e| PipelineError::Unsupported(format!("cannot encode the recipe as JSON: {e}")))
}

fn extension(role: FileRole) -> &'static str {
    match role {
        FileRole::PointsCsv => "csv",
        FileRole::PointsNpy => "npy",
        FileRole::Scatter | FileRole::Image { .. } => "png",
        FileRole::Sidecar { .. } => "json",
    }
}

/// Creates the output directory and its parents (`mkdir -p`), refusing a path that exists and is
/// not a directory.
fn prepare_dir(dir: &Path) -> Result<(), PipelineError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(PipelineError::Output(output::OutputError::NotADir { dir: dir.to_owned() })),
        Err(_) => {}
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        let detail = match e.kind() {
            std::io::ErrorKind::NotADirectory => "a part of the path is a file".to_string(),
            _ => e.to_string(),
        };
        PipelineError::Output(output::OutputError::CreateDir { dir: dir.to_owned(), detail })
    })
}
