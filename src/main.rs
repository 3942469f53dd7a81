//! The `dualscale` binary: parse the command line, run the command, print `error: ...` and
//! exit with a documented code (0 ok, 1 failure, 2 usage, 130 interrupted).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

fn main() -> ExitCode {
    let started = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    let cli = match dualscale::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { dualscale::commands::EXIT_USAGE } else { 0 });
        }
    };
    // The first SIGINT/SIGTERM asks the run to stop within one model call; a second one ends the
    // process at once, except while a set of outputs is being committed.
    let stop = match dualscale::signals::Stop::install() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return ExitCode::from(dualscale::commands::EXIT_FAILURE);
        }
    };
    match cli.into_config(started).and_then(|config| dualscale::commands::run(config, stop.flag())) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(dualscale::commands::exit_code(&err))
        }
    }
}

/// The error and its causes on one line.
fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}
