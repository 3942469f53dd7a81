//! One model evaluation, for every shipped model and precision (the fp32, fp16 and int8 files of
//! `models/`; `auto` precision, so an fp16 file is upcast where the CPU has no native f16), at
//! the batch sizes the CLI uses: points at 2,000 (the default batch) and 10,000; images at 1 and
//! at the parallel width. Guards the per-evaluation cost that every step pays: plan reuse (a plan rebuilt per
//! call would multiply it), the x86 AVX register workaround (without it, 5x slower at 10k
//! points), and a tract upgrade or export change that slows a model down.
//! Run: `cargo bench --bench eval`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dualscale::model::{ModelKind, ModelSource};
use dualscale::rng::NoiseRng;
use dualscale::sampler::Denoiser;

mod common;

fn evaluations(c: &mut Criterion) {
    let width = std::thread::available_parallelism().map_or(1, |n| n.get());
    for path in common::shipped_models() {
        let mut generator = common::generator(ModelSource::File(path.clone()));
        let kind = generator.model().info().kind;
        let t = (generator.model().config().schedule.num_train_timesteps / 2) as f64;
        let (batches, threads): (Vec<usize>, usize) = match kind {
            ModelKind::Points { .. } => (vec![2_000, 10_000], 1),
            ModelKind::Image { .. } => (vec![1, width], width),
        };
        let mut group = c.benchmark_group(format!("eval {}", common::stem(&path)));
        group.sample_size(10);
        let den = generator.denoiser();
        den.set_threads(threads);
        for batch in batches {
            let len = den.sample_len();
            den.prepare(batch).unwrap();
            let mut x = vec![0f32; batch * len];
            NoiseRng::new(0).initial_noise(0, len, &mut x);
            let mut out = vec![0f32; x.len()];
            group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| b.iter(|| den.eval(&x, t, &mut out).unwrap()));
        }
        group.finish();
    }
}

criterion_group!(benches, evaluations);
criterion_main!(benches);
