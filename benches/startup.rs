//! Start-up: what happens before the first step of a run, for every shipped model: reading and
//! parsing the ONNX file (and its manifest and sha256), building the optimized plan for the
//! CLI's default batch, and the first evaluation. A kiosk pays it once, `dualscale generate`
//! every run (goal: under 100 ms, issue 12). Guards model loading and plan building.
//! Run: `cargo bench --bench startup`.

use criterion::{criterion_group, criterion_main, Criterion};
use dualscale::model::{LoadOptions, Model, ModelKind, ModelSource};
use dualscale::pipeline::{Generator, DEFAULT_POINT_BATCH};
use dualscale::sampler::Denoiser;

mod common;

fn startup(c: &mut Criterion) {
    let mut group = c.benchmark_group("load + plan + first evaluation");
    group.sample_size(10);
    for path in common::shipped_models() {
        group.bench_function(common::stem(&path), |b| {
            b.iter(|| {
                let model = Model::open(&ModelSource::File(path.clone()), &LoadOptions::default()).unwrap();
                let batch = match model.info().kind {
                    ModelKind::Points { .. } => DEFAULT_POINT_BATCH,
                    ModelKind::Image { .. } => 1,
                };
                let mut generator = Generator::new(model).unwrap();
                let den = generator.denoiser();
                let x = vec![0.1f32; batch * den.sample_len()];
                let mut out = vec![0f32; x.len()];
                den.eval(&x, 10.0, &mut out).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, startup);
criterion_main!(benches);
