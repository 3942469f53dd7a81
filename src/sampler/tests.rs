//! Cross-sampler tests against the analytic Gaussian denoiser (see `testing.rs`): convergence to
//! the exact probability-flow ODE solution, order of accuracy, prediction-type independence,
//! DDPM's distribution, error paths, and batch independence. Compiled only for tests.

use std::ops::ControlFlow;

use super::testing::{normals, FailingDenoiser, GaussianDenoiser, KeyedNoise};
use super::*;
use crate::schedule::{BetaSchedule, NoiseLevel, NoiseSchedule, PredictionType, ScheduleConfig, TimestepSpacing};

const DETERMINISTIC: [SamplerKind; 6] =
    [SamplerKind::Ddim, SamplerKind::Euler, SamplerKind::Heun, SamplerKind::DpmPp2m, SamplerKind::DpmPp3m, SamplerKind::UniPc];

fn cfg_1000(spacing: TimestepSpacing, prediction: PredictionType) -> ScheduleConfig {
    ScheduleConfig { timestep_spacing: spacing, prediction_type: prediction, ..ScheduleConfig::default() }
}

/// The 2D reference schedule: T = 100, linear 1e-4..0.02 (abar_T = 0.364).
fn cfg_100() -> ScheduleConfig {
    ScheduleConfig { num_train_timesteps: 100, ..ScheduleConfig::default() }
}

fn continue_all(_: &Step) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

struct Outcome {
    x: Vec<f32>,
    stats: SampleStats,
    steps: Vec<Step>,
    evals: Vec<f64>,
    /// The exact ODE solution from the start to clean data.
    exact: Vec<f64>,
    /// The exact ODE solution to the last evaluated timestep followed by the exact final step
    /// (the posterior mean): what the sampler computes with no integration error. Every sampler
    /// here ends with an x0 prediction, so its error splits into integration error (measured
    /// against this) and the final jump to sigma = 0 (large when the last timestep is far from 0,
    /// e.g. t = 50 for 20 multistep steps over T = 1000).
    consistent: Vec<f64>,
}

/// Runs `opts` on `n` samples of the Gaussian toy (mu, s), starting from keyed unit noise.
fn run_gaussian(cfg: &ScheduleConfig, opts: &SamplerOptions, n: usize, mu: &[f64], s: f64) -> Outcome {
    let mut model = GaussianDenoiser::new(cfg, mu.to_vec(), s);
    let t0 = first_timestep(cfg, opts).unwrap();
    let mut x = normals(11, 999, 0, n * mu.len());
    let x_start: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut steps = Vec::new();
    let mut record = |st: &Step| {
        steps.push(st.clone());
        ControlFlow::Continue(())
    };
    let stats = sample(&mut model, cfg, opts, &mut x, &mut KeyedNoise::new(5, 0), &mut record).unwrap();
    let start = model.sched.level(t0);
    let exact = model.ode_map(start, NoiseLevel::CLEAN, &x_start);
    let last = model.sched.level(*model.evals.last().unwrap());
    let consistent = model.posterior_mean(last, &model.ode_map(start, last, &x_start));
    Outcome { x, stats, steps, evals: model.evals, exact, consistent }
}

fn rms(a: &[f32], b: &[f64]) -> f64 {
    (a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

/// RMS error of `kind` with `steps` steps against the exact ODE end point, data N(mu, s^2).
fn ode_error(cfg: &ScheduleConfig, kind: SamplerKind, steps: usize, s: f64) -> f64 {
    let o = run_gaussian(cfg, &SamplerOptions::new(kind, steps), 32, &[0.8, -1.2], s);
    rms(&o.x, &o.exact)
}

#[test]
fn deterministic_samplers_converge_to_the_exact_ode_solution() {
    for spacing in [TimestepSpacing::Linspace, TimestepSpacing::Trailing] {
        let cfg = cfg_1000(spacing, PredictionType::Epsilon);
        for kind in DETERMINISTIC {
            let errs: Vec<f64> = [5, 10, 20, 50, 200].iter().map(|&n| ode_error(&cfg, kind, n, 0.25)).collect();
            for w in errs.windows(2) {
                assert!(w[1] < w[0], "{kind} {spacing}: error does not shrink with steps: {errs:?}");
            }
            assert!(errs[4] < 0.01, "{kind} {spacing}: 200 steps still off by {errs:?}");
        }
    }
}

#[test]
fn higher_order_solvers_beat_ddim_at_equal_nfe() {
    // The 2D setting (T = 100), 20 steps.
    for spacing in [TimestepSpacing::Linspace, TimestepSpacing::Trailing] {
        let cfg = ScheduleConfig { timestep_spacing: spacing, ..cfg_100() };
        let ddim = ode_error(&cfg, SamplerKind::Ddim, 20, 0.5);
        for kind in [SamplerKind::DpmPp2m, SamplerKind::DpmPp3m, SamplerKind::UniPc] {
            let e = ode_error(&cfg, kind, 20, 0.5);
            assert!(e < 0.25 * ddim, "{kind} {spacing} at 20 steps: {e}, ddim: {ddim}");
        }
    }
}

/// Integration error over explicit timesteps 999, 999 - stride, ..., 199 (uniform in t, away
/// from small t, where uniform-in-t steps are large in lambda and no solver is in its asymptotic
/// regime), against the exact ODE solution to t = 199 followed by the exact final step.
fn controlled_error(kind: SamplerKind, stride: usize) -> f64 {
    let cfg = cfg_1000(TimestepSpacing::Linspace, PredictionType::Epsilon);
    let sched = NoiseSchedule::new(&cfg).unwrap();
    let ts: Vec<usize> = (0..=800 / stride).map(|k| 999 - k * stride).collect();
    let mut model = GaussianDenoiser::new(&cfg, vec![0.8, -1.2], 0.5);
    let mut x = normals(11, 999, 0, 64);
    let x_start: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut cb = continue_all;
    let never = std::sync::atomic::AtomicBool::new(false);
    let mut run = run::Run::new(&mut model, PredictionType::Epsilon, &mut cb, &never);
    let result = match kind {
        SamplerKind::Ddim => {
            let prev = ddim::previous_timesteps(&ts, DdimPrev::Lookup, 1000);
            ddim::ddim(&mut run, &sched, &ts, &prev, 0.0, &mut x, &mut KeyedNoise::new(0, 0))
        }
        SamplerKind::Heun => {
            let tf: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
            euler::heun(&mut run, &sched, &tf, &mut x)
        }
        SamplerKind::DpmPp2m => dpm_solver::dpmpp_multistep(&mut run, &sched, &ts, 2, &mut x),
        SamplerKind::DpmPp3m => dpm_solver::dpmpp_multistep(&mut run, &sched, &ts, 3, &mut x),
        _ => unipc::unipc_bh2(&mut run, &sched, &ts, 2, &mut x),
    };
    result.unwrap();
    let (start, last) = (sched.level_at(999).unwrap(), sched.level_at(199).unwrap());
    let reference = model.posterior_mean(last, &model.ode_map(start, last, &x_start));
    rms(&x, &reference)
}

#[test]
fn solvers_converge_at_their_order() {
    // Halving the step: error / 2^order. UniPC-2 (UniP-2 + UniC) is order 3 (Zhao et al. 2023,
    // theorem 3.2). DPM-Solver++(3M) starts with a 1st and a 2nd order step, whose local errors
    // keep its global error from reaching a clean 1/8 here; it must still beat 2M clearly.
    let ratio = |kind| controlled_error(kind, 50) / controlled_error(kind, 25);
    let r = ratio(SamplerKind::Ddim);
    assert!((1.7..2.5).contains(&r), "ddim: {r}");
    for kind in [SamplerKind::Heun, SamplerKind::DpmPp2m] {
        let r = ratio(kind);
        assert!((3.3..5.0).contains(&r), "{kind}: {r}");
    }
    let r = ratio(SamplerKind::UniPc);
    assert!((6.5..11.0).contains(&r), "unipc: {r}");
    let r = ratio(SamplerKind::DpmPp3m);
    assert!(r > 4.5, "dpmpp-3m: {r}");
    for stride in [50, 25] {
        let (e2, e3) = (controlled_error(SamplerKind::DpmPp2m, stride), controlled_error(SamplerKind::DpmPp3m, stride));
        assert!(e3 < 0.3 * e2, "stride {stride}: 3m {e3} vs 2m {e2}");
    }
}

#[test]
fn dpmpp_3m_lowers_its_order_near_the_end_like_diffusers() {
    // N <= 4: orders 1,2,(2),1 for both, so 3M == 2M; N = 5: 1,2,3,2,1 differs.
    let cfg = cfg_1000(TimestepSpacing::Trailing, PredictionType::Epsilon);
    let run = |kind, n| run_gaussian(&cfg, &SamplerOptions::new(kind, n), 4, &[0.3, 0.1], 0.5).x;
    for n in 1..=4 {
        assert_eq!(run(SamplerKind::DpmPp2m, n), run(SamplerKind::DpmPp3m, n), "N = {n}");
    }
    assert_ne!(run(SamplerKind::DpmPp2m, 5), run(SamplerKind::DpmPp3m, 5));
}

#[test]
fn prediction_types_give_the_same_samples() {
    for kind in DETERMINISTIC.iter().copied().chain([SamplerKind::Adaptive]) {
        let runs: Vec<Vec<f32>> = [PredictionType::Epsilon, PredictionType::VPrediction, PredictionType::Sample]
            .iter()
            .map(|&p| run_gaussian(&cfg_1000(TimestepSpacing::Trailing, p), &SamplerOptions::new(kind, 10), 8, &[0.3, -0.4], 0.5).x)
            .collect();
        for other in &runs[1..] {
            let diff = runs[0].iter().zip(other).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 2e-4, "{kind}: prediction types differ by {diff}");
        }
    }
}

#[test]
fn cosine_schedule_and_v_prediction_converge() {
    let cfg =
        ScheduleConfig { beta_schedule: BetaSchedule::SquaredCosCapV2, ..cfg_1000(TimestepSpacing::Linspace, PredictionType::VPrediction) };
    for kind in DETERMINISTIC {
        let (coarse, fine) = (ode_error(&cfg, kind, 10, 0.25), ode_error(&cfg, kind, 100, 0.25));
        assert!(fine < coarse && fine < 0.02, "{kind}: 10 steps {coarse}, 100 steps {fine}");
    }
}

#[test]
fn ddim_eta_zero_is_euler_in_ve_sigma() {
    // Same integer timesteps (leading), DDIM stepping to the next listed one: the same ODE step.
    let cfg = cfg_1000(TimestepSpacing::Leading, PredictionType::Epsilon);
    let a = run_gaussian(&cfg, &SamplerOptions::new(SamplerKind::Ddim, 12), 8, &[0.5, 0.1], 0.3);
    let b = run_gaussian(&cfg, &SamplerOptions::new(SamplerKind::Euler, 12), 8, &[0.5, 0.1], 0.3);
    assert_eq!(a.evals, b.evals);
    let diff = a.x.iter().zip(&b.x).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "ddim vs euler: {diff}");
}

#[test]
fn ddim_prev_rules() {
    let cfg = cfg_1000(TimestepSpacing::Leading, PredictionType::Epsilon);
    // N divides T with leading spacing: both rules step to the same timesteps.
    let mut opts = SamplerOptions::new(SamplerKind::Ddim, 10);
    let lookup = run_gaussian(&cfg, &opts, 4, &[0.0, 0.0], 1.0);
    opts.ddim_prev = DdimPrev::DiffusersStride;
    let stride = run_gaussian(&cfg, &opts, 4, &[0.0, 0.0], 1.0);
    assert_eq!(lookup.x, stride.x);
    // linspace: timesteps 999, 888, ... but diffusers steps by T // N = 100 (999 -> 899).
    let cfg = cfg_1000(TimestepSpacing::Linspace, PredictionType::Epsilon);
    let stride = run_gaussian(&cfg, &opts, 4, &[0.0, 0.0], 1.0);
    assert_eq!(stride.steps[0].t_next, 899.0);
    assert_eq!(stride.steps[9].t_next, -1.0);
    opts.ddim_prev = DdimPrev::Lookup;
    let lookup = run_gaussian(&cfg, &opts, 4, &[0.0, 0.0], 1.0);
    assert_eq!(lookup.steps[0].t_next, 888.0);
}

#[test]
fn timesteps_nfe_and_reports_match_the_plan() {
    let cfg = cfg_1000(TimestepSpacing::Linspace, PredictionType::Epsilon);
    for kind in DETERMINISTIC.iter().copied().chain([SamplerKind::Ddpm]) {
        let opts = SamplerOptions::new(kind, 7);
        let o = run_gaussian(&cfg, &opts, 2, &[0.0, 0.0], 1.0);
        assert_eq!(Some(o.stats.nfe), planned_nfe(&opts), "{kind}");
        assert_eq!(o.evals.len(), o.stats.nfe, "{kind}");
        assert_eq!(o.evals[0], first_timestep(&cfg, &opts).unwrap(), "{kind}");
        assert_eq!(o.stats.steps, 7, "{kind}");
        assert_eq!(o.steps.len(), 7, "{kind}");
        assert_eq!(o.stats.timesteps, o.steps.iter().map(|s| s.t).collect::<Vec<_>>());
        assert_eq!(o.steps.last().unwrap().t_next, -1.0, "{kind}");
        assert_eq!(o.steps.last().unwrap().nfe, o.stats.nfe, "{kind}");
        assert!(o.steps.iter().enumerate().all(|(i, s)| s.index == i && s.total == 7), "{kind}");
        assert!(o.steps.windows(2).all(|w| w[0].t_next == w[1].t), "{kind}");
        // The gate comes from the evaluation at the step's t (the test model reports [t, 0]).
        assert!(o.steps.iter().all(|s| s.gate == Some([s.t as f32, 0.0])), "{kind}");
    }
    // Diffusers' timesteps per class.
    let o = run_gaussian(&cfg, &SamplerOptions::new(SamplerKind::DpmPp2m, 4), 1, &[0.0], 1.0);
    assert_eq!(o.evals, vec![999.0, 749.0, 500.0, 250.0]); // round(linspace(0, 999, 5)) = 0, 250, 500, 749, 999
    let o = run_gaussian(&cfg, &SamplerOptions::new(SamplerKind::Ddim, 4), 1, &[0.0], 1.0);
    assert_eq!(o.evals, vec![999.0, 666.0, 333.0, 0.0]);
    let o = run_gaussian(&cfg, &SamplerOptions::new(SamplerKind::Euler, 4), 1, &[0.0], 1.0);
    assert_eq!(o.evals, vec![999.0, 666.0, 333.0, 0.0]);
    let o = run_gaussian(&cfg, &SamplerOptions::new(SamplerKind::Heun, 3), 1, &[0.0], 1.0);
    assert_eq!(o.evals, vec![999.0, 499.5, 499.5, 0.0, 0.0]);
    // Spacing override beats the config.
    let mut opts = SamplerOptions::new(SamplerKind::Ddim, 4);
    opts.spacing = Some(TimestepSpacing::Trailing);
    assert_eq!(first_timestep(&cfg, &opts).unwrap(), 999.0);
    opts.spacing = Some(TimestepSpacing::Leading);
    assert_eq!(first_timestep(&cfg, &opts).unwrap(), 750.0);
    assert_eq!(planned_nfe(&SamplerOptions::new(SamplerKind::Adaptive, 0)), None);
}

#[test]
fn ddpm_reproduces_the_data_distribution() {
    // The 2D setting: T = 100, all 100 steps; start from the exact marginal at t = 99.
    let cfg = cfg_100();
    let (mu, s) = ([1.0, -2.0], 0.5);
    let n = 20_000;
    let mut model = GaussianDenoiser::new(&cfg, mu.to_vec(), s);
    let abar = model.sched.alphas_cumprod()[99];
    let mut x = normals(3, 1_000_000, 0, 2 * n);
    start_from_data_diag(&mut x, 2, abar, &mu, &[s * s, s * s]).unwrap();
    let opts = SamplerOptions::new(SamplerKind::Ddpm, 100);
    let mut noise = KeyedNoise::new(9, 0);
    let stats = sample(&mut model, &cfg, &opts, &mut x, &mut noise, &mut continue_all).unwrap();
    assert_eq!(stats.nfe, 100);
    // Fresh noise at every step but the last.
    assert_eq!(noise.calls, (0..99).collect::<Vec<_>>());
    for (k, &m) in mu.iter().enumerate() {
        let vals: Vec<f64> = x.iter().skip(k).step_by(2).map(|&v| v as f64).collect();
        let mean = vals.iter().sum::<f64>() / n as f64;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((mean - m).abs() < 0.02, "coordinate {k}: mean {mean} vs {m}");
        assert!((std / s - 1.0).abs() < 0.05, "coordinate {k}: std {std} vs {s}");
    }
}

#[test]
fn ddim_with_eta_draws_noise_and_still_matches_moments() {
    let cfg = cfg_100();
    let (mu, s) = ([0.5], 0.4);
    let n = 20_000;
    let mut model = GaussianDenoiser::new(&cfg, mu.to_vec(), s);
    let abar = model.sched.alphas_cumprod()[99];
    let mut x = normals(4, 1_000_000, 0, n);
    start_from_data_diag(&mut x, 1, abar, &mu, &[s * s]).unwrap();
    let mut opts = SamplerOptions::new(SamplerKind::Ddim, 50);
    opts.eta = 1.0;
    opts.spacing = Some(TimestepSpacing::Trailing);
    let mut noise = KeyedNoise::new(1, 0);
    sample(&mut model, &cfg, &opts, &mut x, &mut noise, &mut continue_all).unwrap();
    assert_eq!(noise.calls.len(), 49, "no noise on the step to clean data");
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let std = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    assert!((mean - mu[0]).abs() < 0.02 && (std / s - 1.0).abs() < 0.06, "mean {mean} std {std}");
}

#[test]
fn batches_are_independent() {
    let cfg = cfg_1000(TimestepSpacing::Trailing, PredictionType::Epsilon);
    let d = 3;
    let start = normals(21, 0, 0, 4 * d);
    let mut ddim_eta = SamplerOptions::new(SamplerKind::Ddim, 10);
    ddim_eta.eta = 0.7;
    let kinds = DETERMINISTIC.iter().map(|&k| SamplerOptions::new(k, 8));
    for opts in kinds.chain([SamplerOptions::new(SamplerKind::Ddpm, 10), ddim_eta]) {
        let run = |first_sample: usize, count: usize| {
            let mut model = GaussianDenoiser::new(&cfg, vec![0.2, -0.3, 1.0], 0.6);
            let mut x = start[first_sample * d..(first_sample + count) * d].to_vec();
            let mut noise = KeyedNoise::new(77, first_sample * d);
            sample(&mut model, &cfg, &opts, &mut x, &mut noise, &mut continue_all).unwrap();
            x
        };
        let together = run(0, 4);
        let apart: Vec<f32> = [run(0, 1), run(1, 2), run(3, 1)].concat();
        assert_eq!(together, apart, "{}", opts.kind);
    }
}

#[test]
fn non_finite_model_output_names_the_step() {
    let cfg = cfg_1000(TimestepSpacing::Linspace, PredictionType::Epsilon);
    // (sampler, failing evaluation, expected step)
    let cases = [
        (SamplerKind::Ddim, 3, 3),
        (SamplerKind::Ddpm, 0, 0),
        (SamplerKind::DpmPp2m, 4, 4),
        (SamplerKind::UniPc, 2, 2),
        (SamplerKind::Heun, 3, 1), // evaluations 0,1 = step 0; 2,3 = step 1
        (SamplerKind::Adaptive, 0, 0),
    ];
    for (kind, eval, step) in cases {
        let mut model = GaussianDenoiser::new(&cfg, vec![0.0, 0.0], 1.0);
        model.nan_at = Some(eval);
        let mut x = normals(1, 0, 0, 4);
        let opts = SamplerOptions::new(kind, 8);
        let err = sample(&mut model, &cfg, &opts, &mut x, &mut KeyedNoise::new(0, 0), &mut continue_all);
        match err {
            Err(SampleError::NonFinite { step: s, t }) => {
                assert_eq!(s, step, "{kind}");
                assert_eq!(t, model.evals[eval], "{kind}");
            }
            other => panic!("{kind}: expected NonFinite, got {other:?}"),
        }
    }
}

#[test]
fn break_from_the_callback_interrupts() {
    let cfg = cfg_100();
    for kind in DETERMINISTIC.iter().copied().chain([SamplerKind::Ddpm, SamplerKind::Adaptive]) {
        let mut model = GaussianDenoiser::new(&cfg, vec![0.0, 0.0], 1.0);
        let mut x = normals(1, 0, 0, 4);
        let mut stop_at_2 = |s: &Step| {
            if s.index == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let opts = SamplerOptions::new(kind, 10);
        let err = sample(&mut model, &cfg, &opts, &mut x, &mut KeyedNoise::new(0, 0), &mut stop_at_2);
        assert!(matches!(err, Err(SampleError::Interrupted { step: 2 })), "{kind}: {err:?}");
        if kind != SamplerKind::Adaptive {
            let per_step = if kind == SamplerKind::Heun { 2 } else { 1 };
            assert_eq!(model.evals.len(), 3 * per_step, "{kind}: ran past the break");
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let cfg = cfg_100();
    let mut model = GaussianDenoiser::new(&cfg, vec![0.0, 0.0], 1.0);
    let mut noise = KeyedNoise::new(0, 0);
    let mut go = |opts: &SamplerOptions, x: &mut [f32]| sample(&mut model, &cfg, opts, x, &mut noise, &mut continue_all);
    for kind in DETERMINISTIC.iter().copied().chain([SamplerKind::Ddpm]) {
        for steps in [0, 101] {
            let e = go(&SamplerOptions::new(kind, steps), &mut [0.0; 4]).unwrap_err();
            assert!(matches!(e, SampleError::Config(_)), "{kind}");
            assert!(e.to_string().contains("between 1 and 100"), "{kind}: {e}");
        }
    }
    // x not a multiple of the sample length, empty, or not finite.
    for x in [&mut [0.0f32; 3][..], &mut [][..], &mut [0.0, f32::NAN][..]] {
        assert!(matches!(go(&SamplerOptions::new(SamplerKind::Ddim, 5), x), Err(SampleError::Config(_))));
    }
    let mut opts = SamplerOptions::new(SamplerKind::Ddim, 5);
    opts.eta = 1.5;
    assert!(matches!(go(&opts, &mut [0.0; 2]), Err(SampleError::Config(_))));
    let mut opts = SamplerOptions::new(SamplerKind::Adaptive, 0);
    opts.h_init = 0.0;
    assert!(matches!(go(&opts, &mut [0.0; 2]), Err(SampleError::Config(_))));
    opts.h_init = 0.05;
    opts.rtol = f64::NAN;
    assert!(matches!(go(&opts, &mut [0.0; 2]), Err(SampleError::Config(_))));
    // A broken schedule is a config error, as is first_timestep's.
    let bad = ScheduleConfig { num_train_timesteps: 0, ..cfg_100() };
    assert!(matches!(first_timestep(&bad, &SamplerOptions::new(SamplerKind::Ddim, 1)), Err(SampleError::Config(_))));
    // A failing model is wrapped with its step.
    let mut x = [0.0f32; 2];
    let e = sample(
        &mut FailingDenoiser,
        &cfg,
        &SamplerOptions::new(SamplerKind::UniPc, 5),
        &mut x,
        &mut KeyedNoise::new(0, 0),
        &mut continue_all,
    )
    .unwrap_err();
    assert!(matches!(e, SampleError::Model { step: 0, .. }), "{e:?}");
    assert!(e.to_string().contains("out of memory"), "{e}");
}

#[test]
fn adaptive_meets_its_tolerance_and_counts_rejections() {
    let cfg = cfg_1000(TimestepSpacing::Linspace, PredictionType::Epsilon);
    let (mu, s) = ([0.8, -1.2], 0.25);
    let run = |rtol: f64, atol: f64, h_init: f64| {
        let mut opts = SamplerOptions::new(SamplerKind::Adaptive, 0);
        (opts.rtol, opts.atol, opts.h_init) = (rtol, atol, h_init);
        run_gaussian(&cfg, &opts, 32, &mu, s)
    };
    let default = run(0.05, 0.0078, 0.05);
    let tight = run(1e-4, 1e-5, 0.05);
    // Integration error (the final x0 step from t = 0 is exact for this model).
    let (e_default, e_tight) = (rms(&default.x, &default.consistent), rms(&tight.x, &tight.consistent));
    assert!(e_default < 0.01, "default tolerance error {e_default}");
    assert!(e_tight < 1e-4, "tight tolerance error {e_tight}");
    eprintln!("adaptive: default {e_default:.2e} ({} nfe), tight {e_tight:.2e} ({} nfe)", default.stats.nfe, tight.stats.nfe);
    assert!(tight.stats.nfe > default.stats.nfe);
    // Starts at T-1, ends with the x0 evaluation at t = 0, timesteps decrease.
    assert_eq!(default.evals[0], 999.0);
    assert_eq!(*default.evals.last().unwrap(), 0.0);
    assert!(default.steps.windows(2).all(|w| w[1].t < w[0].t && w[0].t_next == w[1].t));
    assert_eq!(default.steps.last().unwrap().t_next, -1.0);
    // A far too large first step is rejected; every evaluation is counted. DPM-Solver-23:
    // one evaluation at each accepted start, two per attempt, one final x0 evaluation.
    let big = run(0.05, 0.0078, 5.0);
    assert!(big.stats.rejected > 0);
    let accepted = big.stats.steps - 1;
    let attempts = accepted + big.stats.rejected;
    assert_eq!(big.stats.nfe, accepted + 2 * attempts + 1);
    assert_eq!(big.evals.len(), big.stats.nfe);
    assert!(rms(&big.x, &big.exact) < 0.02);
    for o in [&default, &tight, &big] {
        assert_eq!(o.steps.last().unwrap().nfe, o.stats.nfe);
        assert!(o.steps.iter().all(|s| s.gate == Some([s.t as f32, 0.0])));
    }
}

#[test]
fn sampler_names_round_trip() {
    assert_eq!(SamplerKind::ALL.map(SamplerKind::name).as_slice(), SamplerKind::NAMES);
    for &name in SamplerKind::NAMES {
        let kind: SamplerKind = name.parse().unwrap();
        assert_eq!(kind.to_string(), name);
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
    }
    let e = "dpm++".parse::<SamplerKind>().unwrap_err().to_string();
    assert!(e.contains("ddpm, ddim, euler, heun, dpmpp-2m, dpmpp-3m, unipc, adaptive"), "{e}");
    assert_eq!("diffusers-stride".parse::<DdimPrev>(), Ok(DdimPrev::DiffusersStride));
    assert!(SamplerKind::Ddpm.is_stochastic(0.0) && !SamplerKind::Ddim.is_stochastic(0.0));
}

#[test]
fn x0_and_eps_are_consistent() {
    let sched = NoiseSchedule::new(&cfg_100()).unwrap();
    let level = sched.level_at(40).unwrap();
    let (x, x0, eps) = (0.7, -0.2, 1.3);
    let x = level.alpha * x0 + level.sigma * eps + 0.0 * x;
    let v = level.alpha * eps - level.sigma * x0;
    for (p, out) in [(PredictionType::Epsilon, eps), (PredictionType::VPrediction, v), (PredictionType::Sample, x0)] {
        let (a, b) = x0_and_eps(p, level, x, out);
        assert!((a - x0).abs() < 1e-12 && (b - eps).abs() < 1e-12, "{p}");
    }
}

/// Sets a cancel flag on its `at`-th evaluation (1-based), like a signal arriving mid-call.
struct CancelDuring<'a> {
    inner: GaussianDenoiser,
    flag: &'a std::sync::atomic::AtomicBool,
    at: usize,
    calls: usize,
}

impl Denoiser for CancelDuring<'_> {
    fn sample_len(&self) -> usize {
        self.inner.sample_len()
    }
    fn eval(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<EvalInfo, DenoiseError> {
        self.calls += 1;
        if self.calls == self.at {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.eval(x, t, out)
    }
}

#[test]
fn a_stop_lands_within_one_model_call_even_inside_a_step() {
    let cfg = cfg_100();
    // Heun takes 2 evaluations per step, adaptive 2-3 per attempt: a stop during the first
    // evaluation of a step must not let the step's other evaluations run.
    for kind in [SamplerKind::Heun, SamplerKind::Adaptive, SamplerKind::UniPc, SamplerKind::Ddpm] {
        let flag = std::sync::atomic::AtomicBool::new(false);
        let inner = GaussianDenoiser::new(&cfg, vec![0.0, 0.0], 1.0);
        let mut model = CancelDuring { inner, flag: &flag, at: 3, calls: 0 };
        let mut x = normals(1, 0, 0, 4);
        let err = super::sample_cancellable(
            &mut model,
            &cfg,
            &SamplerOptions::new(kind, 10),
            &mut x,
            &mut KeyedNoise::new(0, 0),
            &mut continue_all,
            &flag,
        );
        assert!(matches!(err, Err(SampleError::Interrupted { .. })), "{kind}: {err:?}");
        assert_eq!(model.calls, 3, "{kind}: evaluations ran after the stop");
    }
}
