//! Resuming an interrupted run from its journal gives the samples of a run that never stopped,
//! bit for bit (`src/pipeline/journal.rs`), for a multistep solver on an image model and for the
//! stochastic DDPM sampler on points in several batches.

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use dualscale::model::{LoadOptions, Model, ModelSource};
use dualscale::pipeline::{Generator, Journal, PipelineError, Request, StepChoice};
use dualscale::sampler::SamplerKind;

mod common;

fn check(source: ModelSource, request: Request, stop_at: (usize, usize)) {
    let mut generator = Generator::new(Model::open(&source, &LoadOptions::default()).unwrap()).unwrap();
    let plan = generator.plan(&request).unwrap();
    let go = AtomicBool::new(false);
    let whole = generator.sample(&plan, plan.seeded_start().unwrap(), &mut |_| ControlFlow::Continue(()), &go).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.journal");
    let fingerprint = plan.fingerprint();
    let mut journal = Journal::open(&path, &fingerprint).unwrap();
    let mut stop_early = |r: &dualscale::pipeline::StepReport| {
        if (r.batch, r.step.index) == stop_at {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let err = generator.sample_journaled(&plan, plan.seeded_start().unwrap(), &mut stop_early, &go, &mut journal).unwrap_err();
    assert!(matches!(err, PipelineError::Interrupted { .. }), "{err}");
    let recorded = journal.len();
    assert!(recorded > 0);
    drop(journal); // the process dies here

    let mut journal = Journal::open(&path, &fingerprint).unwrap();
    assert_eq!(journal.len(), recorded);
    let resumed =
        generator.sample_journaled(&plan, plan.seeded_start().unwrap(), &mut |_| ControlFlow::Continue(()), &go, &mut journal).unwrap();
    assert_eq!(journal.replayed(), recorded, "the evaluations before the stop are not recomputed");
    assert!(resumed.values == whole.values, "resumed samples differ from an uninterrupted run");
    assert_eq!(resumed.gates, whole.gates);
    journal.finish().unwrap();
    assert!(!path.exists());
}

#[test]
fn a_resumed_image_run_is_bit_identical() {
    let unet = common::repo().join("tests/fixtures/unet/model.onnx");
    let request = Request {
        sampler: Some(SamplerKind::UniPc),
        steps: StepChoice::Exactly(NonZeroUsize::new(6).unwrap()),
        count: NonZeroUsize::new(2),
        seed: 5,
        ..Request::default()
    };
    check(ModelSource::File(unet), request, (0, 2));
}

#[test]
fn a_resumed_stochastic_batched_run_is_bit_identical() {
    let request = Request {
        sampler: Some(SamplerKind::Ddpm),
        steps: StepChoice::Exactly(NonZeroUsize::new(10).unwrap()),
        count: NonZeroUsize::new(300),
        batch: NonZeroUsize::new(128),
        seed: 9,
        ..Request::default()
    };
    // Stops in the second batch: the journal spans a finished batch and part of another.
    let dino = common::repo().join("models/dino-dualscale.onnx");
    check(ModelSource::File(dino), request, (1, 4));
}
