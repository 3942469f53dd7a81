//! The CLI's commands. `run` dispatches a validated [`Config`]; each command lives in its own file
//! and takes its config from `cli.rs`, never clap types. Results go to stdout, logs and progress
//! to stderr. Exit codes: 0 ok, 1 failure, 2 usage, 130 interrupted ([`exit_code`]).

mod bench;
mod eval;
mod generate;
mod info;
mod kiosk;

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use crate::cli::{Config, ModelChoice, UsageError};
use crate::model::Model;
use crate::output::OutputError;
use crate::pipeline::PipelineError;
use crate::sampler::SampleError;

/// Exit code for a successful run.
pub const EXIT_OK: u8 = 0;
/// Exit code for a failure (bad model, unwritable output, NaN from the model...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad flags or flag values.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when interrupted by SIGINT or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs a command. `stop` is set by the signal handler installed in `main`.
pub fn run(config: Config, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    match config {
        Config::Generate(cfg) => generate::run(*cfg, stop)?,
        Config::Info(cfg) => info::run(&cfg)?,
        Config::Eval(cfg) => eval::run(&cfg)?,
        Config::Bench(cfg) => bench::run(&cfg, stop)?,
        Config::Kiosk(cfg) => return kiosk::run(&cfg, stop),
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// The exit code for an error that ended a command.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return EXIT_USAGE;
        }
        if let Some(e) = cause.downcast_ref::<PipelineError>() {
            return e.exit_code();
        }
        if matches!(cause.downcast_ref::<SampleError>(), Some(SampleError::Interrupted { .. }))
            || matches!(cause.downcast_ref::<OutputError>(), Some(OutputError::Interrupted))
        {
            return EXIT_INTERRUPTED;
        }
    }
    EXIT_FAILURE
}

/// Results on stdout. A closed pipe (`| head`) ends the output quietly; any other failure (a full
/// disk behind a redirect) is an error, never a panic.
pub(crate) struct Out(());

impl Out {
    pub fn stdout() -> Out {
        Out(())
    }

    pub fn line(&self, text: impl Display) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("cannot write to standard output: {e}")),
            _ => Ok(()),
        }
    }
}

/// Loads the chosen model and warns about config keys that were not understood.
fn load_model(choice: &ModelChoice) -> anyhow::Result<Model> {
    let model = Model::open(&choice.source, &choice.load)?;
    let config = model.config();
    for key in &config.unknown_keys {
        log::warn!("{}: unknown key `{key}` ignored", config.source);
    }
    log::info!(
        "model {} ({}, {} parameters, {}), schedule from {}",
        model.info().name,
        model.info().kind.name(),
        model.info().parameters,
        model.info().verification,
        config.source
    );
    Ok(model)
}
