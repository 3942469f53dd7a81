//! A whole `generate` through the library pipeline, as the CLI and the kiosk run it: plan,
//! seeded start, 20 UniPC steps, recipe, encoding of every output file, and the all-or-nothing
//! write into a temporary directory. 10,000 points of the dual-scale dino model (the CLI's
//! default cloud) in its default batches. Guards what sits around the model calls: batching,
//! noise, the samplers' f64 arithmetic, CSV/PNG/JSON encoding and the fsyncs of the write.
//! Run: `cargo bench --bench generate`.

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use dualscale::model::ModelSource;
use dualscale::output::Upscale;
use dualscale::pipeline::{Naming, OutputLayout, Recipe, Request, StepChoice};
use dualscale::sampler::SamplerKind;

mod common;

fn whole_generate(c: &mut Criterion) {
    let dino = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/dino-dualscale.onnx");
    let mut generator = common::generator(ModelSource::File(dino));
    let request =
        Request { sampler: Some(SamplerKind::UniPc), steps: StepChoice::Exactly(NonZeroUsize::new(20).unwrap()), ..Request::default() };
    let plan = generator.plan(&request).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    group.bench_function("dino 10000 points unipc 20", |b| {
        b.iter(|| {
            let naming = Naming {
                dir: dir.path().into(),
                template: "bench".into(),
                overwrite: true,
                created: SystemTime::now(),
                upscale: Upscale::default(),
            };
            let layout = OutputLayout::new(&plan, &naming).unwrap();
            let samples = generator.sample(&plan, plan.seeded_start().unwrap(), &mut |_| ControlFlow::Continue(()), &stop).unwrap();
            let recipe = Recipe::new(&plan, generator.model(), &samples, layout.created());
            layout.encode(&plan, &samples, &recipe).unwrap().write(true, &stop).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, whole_generate);
criterion_main!(benches);
