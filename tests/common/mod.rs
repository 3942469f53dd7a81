//! What the integration tests share: the repository root and the binary as a command. (Each
//! test crate uses part of it.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dualscale");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary as a command. Under cross/test.sh (qemu-user) `DUALSCALE_TEST_RUNNER` names the
/// emulator and its flags, so the tests do not depend on binfmt_misc on the build machine.
pub fn command() -> Command {
    command_for(std::path::Path::new(BIN))
}

/// [`command`] for a copy of the binary elsewhere.
pub fn command_for(binary: &std::path::Path) -> Command {
    let runner = std::env::var("DUALSCALE_TEST_RUNNER").unwrap_or_default();
    let mut parts = runner.split_whitespace();
    match parts.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(parts).arg(binary);
            c
        }
        None => Command::new(binary),
    }
}
