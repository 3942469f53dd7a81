//! Criterion benches of the hot path: one model evaluation of the embedded dual-scale dino model
//! at batch 1, 1,000 and 10,000 (what `--time-budget` measures at run time), and one 20-step UniPC
//! run of 1,000 points end to end. Guards against regressions in plan reuse (a plan rebuilt per
//! step would multiply the per-call time) and in the samplers' per-step overhead.
//! Run: `cargo bench --bench denoise`.

use std::ops::ControlFlow;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dualscale::model::{LoadOptions, Model};
use dualscale::rng::NoiseRng;
use dualscale::sampler::{self, Denoiser, NoiseSource, SamplerKind, SamplerOptions};

struct Seeded(NoiseRng);
impl NoiseSource for Seeded {
    fn fill(&mut self, step: usize, out: &mut [f32]) {
        self.0.fill_normal(step as u64 + 1, 0, out);
    }
}

fn model_eval(c: &mut Criterion) {
    let mut group = c.benchmark_group("dino-dualscale eval");
    group.sample_size(10);
    let mut den = Model::load_embedded(&LoadOptions::default()).unwrap().into_denoiser().unwrap();
    for batch in [1usize, 1000, 10_000] {
        den.prepare(batch).unwrap();
        let mut x = vec![0f32; batch * 2];
        NoiseRng::new(0).fill_normal(0, 0, &mut x);
        let mut out = vec![0f32; x.len()];
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| den.eval(&x, 50.0, &mut out).unwrap())
        });
    }
    group.finish();
}

fn unipc_run(c: &mut Criterion) {
    let model = Model::load_embedded(&LoadOptions::default()).unwrap();
    let cfg = model.config().schedule.clone();
    let mut den = model.into_denoiser().unwrap();
    let opts = SamplerOptions::new(SamplerKind::UniPc, 20);
    let mut group = c.benchmark_group("unipc 20 steps");
    group.sample_size(10);
    group.bench_function("1000 points", |b| {
        b.iter(|| {
            let mut x = vec![0f32; 2000];
            NoiseRng::new(1).fill_normal(0, 0, &mut x);
            sampler::sample(&mut den, &cfg, &opts, &mut x, &mut Seeded(NoiseRng::new(1)), &mut |_| ControlFlow::Continue(()))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, model_eval, unipc_run);
criterion_main!(benches);
