//! The samplers' own cost, with an analytic denoiser instead of a model (for a Gaussian data
//! distribution the ideal noise prediction is linear in x), so that only the solver arithmetic,
//! the prediction-type conversion and the step reports are timed: every solver, 20 steps, 10,000
//! 2-D points. Guards the per-step overhead a fast model would expose (allocation per step, f64
//! conversions, history copies in multistep solvers).
//! Run: `cargo bench --bench sampler`.

use std::ops::ControlFlow;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dualscale::rng::NoiseRng;
use dualscale::sampler::{self, DenoiseError, Denoiser, EvalInfo, SamplerKind, SamplerOptions};
use dualscale::schedule::{NoiseSchedule, ScheduleConfig};

/// Data ~ N(0, s^2 I): the exact eps prediction at timestep t is
/// `eps = sigma_t x / (alpha_t^2 s^2 + sigma_t^2)`.
struct Gaussian {
    schedule: NoiseSchedule,
    s2: f64,
}

impl Denoiser for Gaussian {
    fn sample_len(&self) -> usize {
        2
    }
    fn eval(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<EvalInfo, DenoiseError> {
        let level = self.schedule.level(t);
        let k = (level.sigma / (level.alpha * level.alpha * self.s2 + level.sigma * level.sigma)) as f32;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = k * v;
        }
        Ok(EvalInfo::default())
    }
}

struct StepNoise(NoiseRng);
impl sampler::NoiseSource for StepNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) {
        self.0.fill_normal(step as u64 + 1, 0, out);
    }
}

fn solvers(c: &mut Criterion) {
    let cfg = ScheduleConfig { num_train_timesteps: 1000, ..ScheduleConfig::default() };
    let mut model = Gaussian { schedule: NoiseSchedule::new(&cfg).unwrap(), s2: 2.0 };
    let mut group = c.benchmark_group("sampler overhead, 10000 points, 20 steps");
    group.sample_size(20);
    for kind in SamplerKind::ALL {
        let opts = SamplerOptions::new(kind, 20);
        group.bench_with_input(BenchmarkId::from_parameter(kind), &kind, |b, _| {
            b.iter(|| {
                let mut x = vec![0f32; 20_000];
                NoiseRng::new(3).initial_noise(0, 2, &mut x);
                sampler::sample(&mut model, &cfg, &opts, &mut x, &mut StepNoise(NoiseRng::new(3)), &mut |_| ControlFlow::Continue(()))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, solvers);
criterion_main!(benches);
