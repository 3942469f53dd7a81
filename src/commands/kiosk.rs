//! `dualscale kiosk`: the CLI's adapter over the kiosk loop (`crate::kiosk::service`). Exit
//! codes: 0 when run-once mode is done or after a clean stop on SIGTERM (what systemd expects of
//! a service it stops), 130 after a stop on SIGINT (Ctrl-C at a terminal).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use crate::kiosk::config::KioskConfig;
use crate::signals::Stop;

pub fn run(cfg: &KioskConfig, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    crate::kiosk::service::run(cfg, stop)?;
    Ok(match Stop.last_signal() {
        Some(signal_hook::consts::SIGINT) => ExitCode::from(super::EXIT_INTERRUPTED),
        _ => ExitCode::from(super::EXIT_OK),
    })
}
