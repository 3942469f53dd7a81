//! The CLI's commands. `run` dispatches a parsed [`Cli`]; each command lives in its own file and
//! takes a validated config from `cli.rs`, never clap types. Results go to stdout, logs and
//! progress to stderr. Exit codes: 0 ok, 1 failure, 2 usage, 130 interrupted ([`exit_code`]).

mod bench;
mod eval;
mod generate;
mod info;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{Cli, Command, ModelChoice, UsageError};
use crate::model::Model;
use crate::sampler::SampleError;

/// Exit code for a successful run.
pub const EXIT_OK: u8 = 0;
/// Exit code for a failure (bad model, unwritable output, NaN from the model...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad flags or flag values.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when interrupted by SIGINT or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs a command. `interrupted` is set by the signal handler installed in `main`.
pub fn run(cli: Cli, interrupted: Arc<AtomicBool>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Generate(args) => generate::run(args.to_config()?, &interrupted)?,
        Command::Info(args) => info::run(&args)?,
        Command::Eval(args) => eval::run(&args)?,
        Command::Bench(args) => bench::run(&args, &interrupted)?,
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// The exit code for an error that ended a command.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.downcast_ref::<UsageError>().is_some()) {
        return EXIT_USAGE;
    }
    if err.chain().any(|e| matches!(e.downcast_ref::<SampleError>(), Some(SampleError::Interrupted { .. }))) {
        return EXIT_INTERRUPTED;
    }
    EXIT_FAILURE
}

/// Loads the chosen model (the embedded one when no path is given) and warns about config keys
/// that were not understood.
fn load_model(choice: &ModelChoice) -> anyhow::Result<Model> {
    let model = match &choice.path {
        Some(path) => Model::load(path, &choice.load)?,
        None => Model::load_embedded(&choice.load)?,
    };
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
