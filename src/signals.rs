//! SIGINT and SIGTERM as a stop request the library can poll, for the binary and for service
//! loops (kiosk). The first signal sets [`Stop::flag`], which sampling checks before every model
//! evaluation and writing checks between files; a second signal ends the process at once with
//! exit code 130, except while a [`Shield`] is held (the commit of an output set), so that a
//! forced exit never leaves half of a set or a temporary file on disk.
//!
//! The handler does only async-signal-safe things: atomic loads and stores and `_exit`.
//! Nothing here prints, allocates in the handler, or knows about models or files.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static SHIELDS: AtomicUsize = AtomicUsize::new(0);
static LAST: AtomicI32 = AtomicI32::new(0);

/// Exit code of a process ended by a second signal (and of an interrupted command).
pub const EXIT_INTERRUPTED: i32 = 130;

/// The process-wide stop request.
#[derive(Debug, Clone, Copy)]
pub struct Stop;

impl Stop {
    /// Installs the handlers for SIGINT and SIGTERM (once per process; later calls do nothing
    /// more). Errors only if the OS refuses a handler.
    pub fn install() -> std::io::Result<Stop> {
        static INSTALLED: AtomicBool = AtomicBool::new(false);
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Ok(Stop);
        }
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // SAFETY: the action only touches atomics and calls `_exit` (through
            // signal_hook::low_level::exit), all async-signal-safe.
            unsafe {
                signal_hook::low_level::register(signal, move || on_signal(signal))?;
            }
        }
        Ok(Stop)
    }

    /// The flag a run polls: set by the first signal (or by [`Stop::request`]).
    pub fn flag(self) -> &'static AtomicBool {
        &REQUESTED
    }

    /// Asks the run to stop as a signal would, without a signal (tests, service loops).
    pub fn request(self) {
        REQUESTED.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn requested(self) -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }

    /// The last signal received (`SIGINT`, `SIGTERM`), if any.
    pub fn last_signal(self) -> Option<i32> {
        match LAST.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Clears the request (a service loop that handled one stop and goes on).
    pub fn reset(self) {
        REQUESTED.store(false, Ordering::SeqCst);
        COUNT.store(0, Ordering::SeqCst);
        LAST.store(0, Ordering::SeqCst);
    }
}

fn on_signal(signal: i32) {
    LAST.store(signal, Ordering::SeqCst);
    REQUESTED.store(true, Ordering::SeqCst);
    let seen = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if seen >= 2 && SHIELDS.load(Ordering::SeqCst) == 0 {
        signal_hook::low_level::exit(EXIT_INTERRUPTED);
    }
}

/// While alive, a second signal does not end the process (it still sets the stop flag). Hold it
/// only around short critical sections: the renames that commit a set of output files.
#[derive(Debug)]
pub struct Shield(());

impl Shield {
    pub fn raise() -> Shield {
        SHIELDS.fetch_add(1, Ordering::SeqCst);
        Shield(())
    }
}

impl Drop for Shield {
    fn drop(&mut self) {
        SHIELDS.fetch_sub(1, Ordering::SeqCst);
    }
}
