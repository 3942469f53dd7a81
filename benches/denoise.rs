//! Criterion benches of the hot path, through the same library pipeline the CLI runs: one model
//! evaluation of the embedded dual-scale dino model at batch 1, 1,000 and 10,000 (what
//! `--time-budget` measures at run time), and one 20-step UniPC run of 1,000 points end to end
//! (plan, seeded start, sampling). Guards against regressions in plan reuse (a plan rebuilt per
//! step would multiply the per-call time) and in the samplers' per-step overhead.
//! Run: `cargo bench --bench denoise`.

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dualscale::model::{LoadOptions, Model, ModelSource};
use dualscale::pipeline::{Generator, Request, StepChoice};
use dualscale::rng::NoiseRng;
use dualscale::sampler::{Denoiser, SamplerKind};

fn generator() -> Generator {
    Generator::new(Model::open(&ModelSource::Embedded, &LoadOptions::default()).unwrap()).unwrap()
}

fn model_eval(c: &mut Criterion) {
    let mut group = c.benchmark_group("dino-dualscale eval");
    group.sample_size(10);
    let mut generator = generator();
    let den = generator.denoiser();
    for batch in [1usize, 1000, 10_000] {
        den.prepare(batch).unwrap();
        let mut x = vec![0f32; batch * 2];
        NoiseRng::new(0).initial_noise(0, 2, &mut x);
        let mut out = vec![0f32; x.len()];
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| b.iter(|| den.eval(&x, 50.0, &mut out).unwrap()));
    }
    group.finish();
}

fn unipc_run(c: &mut Criterion) {
    let mut generator = generator();
    let request = Request {
        sampler: Some(SamplerKind::UniPc),
        steps: StepChoice::Exactly(NonZeroUsize::new(20).unwrap()),
        count: NonZeroUsize::new(1000),
        batch: NonZeroUsize::new(1000),
        seed: 1,
        ..Request::default()
    };
    let plan = generator.plan(&request).unwrap();
    let stop = AtomicBool::new(false);
    let mut group = c.benchmark_group("unipc 20 steps");
    group.sample_size(10);
    group.bench_function("1000 points", |b| {
        b.iter(|| generator.sample(&plan, plan.seeded_start().unwrap(), &mut |_| ControlFlow::Continue(()), &stop).unwrap())
    });
    group.finish();
}

criterion_group!(benches, model_eval, unipc_run);
criterion_main!(benches);
