//! Parity with diffusers. Every golden case in `tests/fixtures/parity/cases/` (diffusers' DDIM,
//! DDPM, Euler, DPM-Solver++(2M) and UniPC schedulers driving `tests/fixtures/parity/model.onnx`
//! under onnxruntime) is rerun here through the library: the same ONNX file loaded with tract,
//! the same initial noise (and per-step noise for DDPM / DDIM with eta > 0), the same schedule.
//! Each final sample must match diffusers' to the case's tolerance (1e-4 max abs difference),
//! and the sampler must visit the timesteps diffusers visited. A second test checks the tract
//! eval of a diffusers `UNet2DModel` export (inline and external-data weights) against
//! onnxruntime.
//!
//! The fixtures are made by `tests/fixtures/parity/make_fixtures.py` (pinned versions in
//! `requirements.txt` next to it); `NOTES.md` there lists what diffusers does that a sampler must
//! copy to pass. This file only reads fixtures; it never regenerates or rewrites them.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod common;

use dualscale::model::{LoadOptions, Model};
use dualscale::sampler::{sample, DdimPrev, Denoiser, NoiseSource, SamplerKind, SamplerOptions};
use dualscale::schedule::{BetaSchedule, PredictionType, ScheduleConfig, TimestepSpacing};

/// Values per point of the parity model (`x` is [N, 2]).
const POINT_DIM: usize = 2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One `cases/<name>.json`, as written by make_fixtures.py (keys not needed here are ignored).
#[derive(Debug, Deserialize)]
struct Case {
    sampler: String,
    steps: usize,
    eta: f64,
    schedule: CaseSchedule,
    /// The timesteps diffusers evaluated the model at, first step first.
    timesteps: Vec<f64>,
    init: String,
    noise: Option<String>,
    expected: String,
    trajectory: String,
    tolerance: f64,
    /// How far an independent f64 reimplementation (in make_fixtures.py) is from diffusers.
    f64_reference_max_abs_diff: f64,
}

#[derive(Debug, Deserialize)]
struct CaseSchedule {
    num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
    beta_schedule: BetaSchedule,
    prediction_type: PredictionType,
    timestep_spacing: TimestepSpacing,
    steps_offset: usize,
}

impl CaseSchedule {
    fn to_config(&self) -> ScheduleConfig {
        ScheduleConfig {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            trained_betas: None,
            prediction_type: self.prediction_type,
            timestep_spacing: self.timestep_spacing,
            steps_offset: self.steps_offset,
        }
    }
}

/// Reads a float32 .npy fixture, checking its shape.
fn read_npy(path: &Path, shape: &[usize]) -> Vec<f32> {
    let (got_shape, data) = dualscale::npy::read_f32_file(path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    assert_eq!(got_shape, shape, "fixture {} has shape {got_shape:?}, expected {shape:?}", path.display());
    data
}

/// The noise diffusers drew, handed out step by step: `noise[step]` is [N, 2], step 0 being the
/// step at the largest timestep. Cases without noise (deterministic samplers) hand out zeros.
struct FixtureNoise {
    data: Option<Vec<f32>>,
    steps: usize,
    per_step: usize,
    calls: Vec<usize>,
}

impl NoiseSource for FixtureNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) {
        self.calls.push(step);
        let Some(data) = &self.data else {
            out.fill(0.0);
            return;
        };
        assert!(step < self.steps, "the sampler asked for noise for step {step}, the case has {} steps", self.steps);
        assert_eq!(out.len(), self.per_step, "the sampler asked for {} noise values per step, the case has {}", out.len(), self.per_step);
        out.copy_from_slice(&data[step * self.per_step..(step + 1) * self.per_step]);
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs()).fold(0.0, f64::max)
}

struct Outcome {
    name: String,
    max_diff: f64,
    problem: Option<String>,
}

/// A case with its arrays loaded.
struct Loaded {
    name: String,
    case: Case,
    n: usize,
    init: Vec<f32>,
    expected: Vec<f32>,
    noise: Option<Vec<f32>>,
}

fn load_case(dir: &Path, name: &str) -> Loaded {
    let json = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("cannot read {}: {e}", json.display()));
    let case: Case = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not a parity case: {e}", json.display()));
    let init_path = dir.join(&case.init);
    let (init_shape, init) =
        dualscale::npy::read_f32_file(&init_path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", init_path.display()));
    let [n, POINT_DIM] = init_shape[..] else {
        panic!("fixture {} has shape {init_shape:?}, expected [N, {POINT_DIM}]", init_path.display());
    };
    let expected = read_npy(&dir.join(&case.expected), &[n, POINT_DIM]);
    let noise = case.noise.as_ref().map(|f| read_npy(&dir.join(f), &[case.steps, n, POINT_DIM]));
    Loaded { name: name.to_owned(), case, n, init, expected, noise }
}

/// Whether DDIM's two previous-timestep rules give the same steps for these timesteps: diffusers'
/// `t - T // N` (clean data when negative) and the next entry of the list (clean data at the end).
fn ddim_rules_agree(case: &Case) -> bool {
    let stride = (case.schedule.num_train_timesteps / case.steps) as f64;
    case.timesteps.iter().enumerate().all(|(i, &t)| match case.timesteps.get(i + 1) {
        Some(&next) => t - stride == next,
        None => t - stride < 0.0,
    })
}

/// Runs one case with `opts` and compares with diffusers. A mismatch is returned as a problem
/// (not a panic), so that one broken sampler does not hide how the others do.
fn check(den: &mut impl Denoiser, c: &Loaded, label: String, opts: &SamplerOptions) -> Outcome {
    let case = &c.case;
    let mut x = c.init.clone();
    let mut noise = FixtureNoise { data: c.noise.clone(), steps: case.steps, per_step: c.n * POINT_DIM, calls: vec![] };
    let cfg = case.schedule.to_config();
    let stats = match sample(den, &cfg, opts, &mut x, &mut noise, &mut |_step| ControlFlow::Continue(())) {
        Ok(stats) => stats,
        Err(e) => return Outcome { name: label, max_diff: f64::NAN, problem: Some(format!("sampling failed: {e}")) },
    };

    let mut problems = vec![];
    let timesteps = &stats.timesteps;
    let same_timesteps = timesteps.len() == case.timesteps.len()
        && timesteps.iter().zip(&case.timesteps).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0));
    if !same_timesteps {
        problems.push(format!("visited timesteps {timesteps:?}, diffusers visited {:?}", case.timesteps));
    }
    let max_diff = max_abs_diff(&x, &c.expected);
    if max_diff.is_nan() || max_diff > case.tolerance {
        problems.push(format!(
            "max abs difference {max_diff:.3e} > {:.0e} (an f64 reimplementation is {:.1e} from diffusers; \
             {} holds diffusers' state after every step)",
            case.tolerance, case.f64_reference_max_abs_diff, case.trajectory
        ));
    }
    if case.noise.is_some() && noise.calls.is_empty() {
        problems.push("the case has per-step noise but the sampler never asked for any".into());
    }
    Outcome { name: label, max_diff, problem: if problems.is_empty() { None } else { Some(problems.join("; ")) } }
}

/// Runs one case the way diffusers does; for DDIM also with the library's default
/// previous-timestep rule where that rule and diffusers' give the same steps.
fn run_case(den: &mut impl Denoiser, dir: &Path, name: &str) -> Vec<Outcome> {
    let c = load_case(dir, name);
    let kind: SamplerKind = match c.case.sampler.parse() {
        Ok(k) => k,
        Err(e) => {
            let problem = format!("sampler `{}` is not known to the library: {e}", c.case.sampler);
            return vec![Outcome { name: name.to_owned(), max_diff: f64::NAN, problem: Some(problem) }];
        }
    };
    let mut opts = SamplerOptions::new(kind, c.case.steps);
    opts.eta = c.case.eta;
    if kind != SamplerKind::Ddim {
        return vec![check(den, &c, c.name.clone(), &opts)];
    }
    // diffusers' DDIMScheduler steps from t to t - T // N (see NOTES.md).
    let default_rule = opts.ddim_prev;
    opts.ddim_prev = DdimPrev::DiffusersStride;
    let mut outcomes = vec![check(den, &c, c.name.clone(), &opts)];
    if ddim_rules_agree(&c.case) && default_rule != DdimPrev::DiffusersStride {
        opts.ddim_prev = default_rule;
        outcomes.push(check(den, &c, format!("{} ({default_rule:?})", c.name), &opts));
    }
    outcomes
}

#[test]
fn samplers_match_diffusers() {
    let dir = fixtures().join("parity/cases");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}; the parity fixtures are committed, restore them", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
        .collect();
    names.sort();
    // Every sampler the issue names, with a v-prediction, a trailing and a cosine case among them.
    for needle in ["ddim-", "ddpm-", "euler-", "dpmpp-2m", "unipc", "vpred", "trailing", "cosine"] {
        assert!(names.iter().any(|n| n.contains(needle)), "no parity case named *{needle}* in {}", dir.display());
    }

    let model_path = fixtures().join("parity/model.onnx");
    let model = Model::load(&model_path, &LoadOptions::default()).expect("load the parity model");
    let mut den = model.into_denoiser().expect("make the parity model runnable");

    let outcomes: Vec<Outcome> = names.iter().flat_map(|name| run_case(&mut den, &dir, name)).collect();
    println!("parity with diffusers ({} runs of {} cases):", outcomes.len(), names.len());
    for o in &outcomes {
        let status = if o.problem.is_none() { "ok  " } else { "FAIL" };
        println!("  {status} {:32} max abs diff {:.3e}", o.name, o.max_diff);
    }
    let failures: Vec<String> = outcomes.iter().filter_map(|o| o.problem.as_ref().map(|p| format!("{}: {p}", o.name))).collect();
    assert!(failures.is_empty(), "{} of {} runs differ from diffusers:\n{}", failures.len(), outcomes.len(), failures.join("\n"));
}

/// `unet_io/case.json`: a fixed UNet input, timestep and onnxruntime's output.
#[derive(Debug, Deserialize)]
struct UnetCase {
    models: Vec<String>,
    sample: String,
    timestep: f64,
    out_sample: String,
    tolerance: f64,
}

#[test]
fn unet2d_export_evaluates_like_onnxruntime() {
    let dir = fixtures().join("parity/unet_io");
    let text = std::fs::read_to_string(dir.join("case.json")).expect("read unet_io/case.json");
    let case: UnetCase = serde_json::from_str(&text).expect("parse unet_io/case.json");
    let shape = [2, 3, 16, 16];
    let sample = read_npy(&dir.join(&case.sample), &shape);
    let want = read_npy(&dir.join(&case.out_sample), &shape);
    for rel in &case.models {
        let path = dir.join(rel);
        let model = Model::load(&path, &LoadOptions::default()).unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
        let mut den = model.into_denoiser().unwrap_or_else(|e| panic!("prepare {}: {e}", path.display()));
        assert_eq!(den.sample_len(), 3 * 16 * 16, "{} should be seen as a 3x16x16 image model", path.display());
        let mut got = vec![0.0f32; sample.len()];
        den.eval(&sample, case.timestep, &mut got).unwrap_or_else(|e| panic!("eval {}: {e}", path.display()));
        let diff = max_abs_diff(&got, &want);
        println!("{rel}: tract vs onnxruntime max abs diff {diff:.3e}");
        assert!(diff <= case.tolerance, "{rel}: tract differs from onnxruntime by {diff:.3e} > {:.0e}", case.tolerance);
    }
}

/// `fewstep/<model>/expected.json`, as written by `models/train/fewstep.py fixture` (point models)
/// or `models/train/image_fewstep.py fixture` (image models, `kind: image`).
#[derive(Debug, Deserialize)]
struct FewStepCase {
    model: String,
    #[serde(default)]
    kind: Option<String>,
    sampler: String,
    timesteps: Vec<usize>,
    count: usize,
    tolerance_abs: f64,
}

/// Image side of a case: pixels per channel of the 32x32 RGB image models.
const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];

/// The recipe's samples [count, 3, 32, 32] in [-1, 1] as the 8-bit RGB pixels (HWC) the runtime's
/// PNG writer makes of them: round((x + 1) / 2 * 255), clamped.
fn recipe_pixels(out: &[f32], index: usize) -> Vec<u8> {
    let [c, h, w] = IMAGE_SHAPE;
    let img = &out[index * c * h * w..(index + 1) * c * h * w];
    let mut hwc = vec![0u8; c * h * w];
    for ch in 0..c {
        for i in 0..h * w {
            hwc[i * c + ch] = ((f64::from(img[ch * h * w + i]) + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
        }
    }
    hwc
}

/// The few-step models (and the image models, whose manifests name a sampler too) run with their
/// manifest's recommended sampler and timesteps by default (no sampler flags), through the real
/// binary, and land where the recipe's sampler lands from the same unit noise: points within the
/// case's tolerance; images as the same 8-bit pixels, where a value within the tolerance of a
/// rounding boundary may land one level apart.
#[test]
fn fewstep_models_run_their_recommended_sampler_like_the_recipe() {
    let root = fixtures().join("fewstep");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}; the fixtures are committed, restore them", root.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "expected the shipped few-step model's fixture and the distilled draft's, found {names:?}");
    for name in names {
        let dir = root.join(&name);
        let text = std::fs::read_to_string(dir.join("expected.json")).expect("read expected.json");
        let case: FewStepCase = serde_json::from_str(&text).expect("parse expected.json");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = [repo.join("models").join(&case.model), repo.join("models/fewstep").join(&case.model)]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name}: model {} is neither in models/ nor in models/fewstep/", case.model));
        let out = tempfile::tempdir().expect("temp dir");
        let run = common::command()
            .args(["generate", "--count"])
            .arg(case.count.to_string())
            .arg("--model")
            .arg(&model)
            .arg("--init-noise")
            .arg(dir.join("noise.npy"))
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("run dualscale");
        assert!(run.status.success(), "{name}: generate failed: {}", String::from_utf8_lossy(&run.stderr));
        let stem = format!("{}-s0-0", case.model.trim_end_matches(".onnx"));
        let diff = if case.kind.as_deref() == Some("image") {
            let want = read_npy(&dir.join("out.npy"), &[case.count, IMAGE_SHAPE[0], IMAGE_SHAPE[1], IMAGE_SHAPE[2]]);
            let mut worst = 0u8;
            let mut off = 0usize;
            for i in 0..case.count {
                let png = out.path().join(format!("{}-s0-{i}.png", case.model.trim_end_matches(".onnx")));
                let got = image::open(&png).unwrap_or_else(|e| panic!("{name}: read {}: {e}", png.display())).to_rgb8();
                for (g, w) in got.as_raw().iter().zip(recipe_pixels(&want, i)) {
                    worst = worst.max(g.abs_diff(w));
                    off += usize::from(g != &w);
                }
            }
            let total = case.count * IMAGE_SHAPE.iter().product::<usize>();
            println!("{name}: {off} of {total} pixel values one level off the recipe's");
            assert!(worst <= 1, "{name}: a pixel differs from the recipe's by {worst} levels");
            assert!(off * 100 <= total, "{name}: {off} of {total} pixel values differ from the recipe's (> 1%)");
            None
        } else {
            let got = read_npy(&out.path().join(format!("{stem}.npy")), &[case.count, POINT_DIM]);
            let want = read_npy(&dir.join("out.npy"), &[case.count, POINT_DIM]);
            Some(max_abs_diff(&got, &want))
        };
        let sidecar: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{stem}.json"))).expect("sidecar"))
                .expect("sidecar json");
        let visited: Vec<usize> =
            sidecar["timesteps"].as_array().expect("timesteps").iter().map(|t| t.as_f64().unwrap() as usize).collect();
        println!("{name}: {} over {visited:?}", sidecar["sampler"]);
        assert_eq!(sidecar["sampler"], case.sampler.as_str(), "{name}: not the manifest's sampler");
        assert_eq!(visited, case.timesteps, "{name}: not the manifest's timesteps");
        if let Some(diff) = diff {
            println!("{name}: max abs diff to the recipe {diff:.3e}");
            assert!(diff <= case.tolerance_abs, "{name}: differs from the recipe's sampler by {diff:.3e} > {:.0e}", case.tolerance_abs);
        }
    }
}
