//! The meeting point of everything that can ask for a generation (the GPIO button, `POST
//! /generate`) and the kiosk loop that runs them: a run-gate that admits at most one request
//! while a run is running or pending (the second is told "already running"), and wakes the loop
//! from its sleep for a request or a stop. No policy lives here (rate limits are the server's,
//! schedules the scheduler's); only the one-at-a-time rule and the wake-up.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub use super::schedule::AlreadyRunning;

#[derive(Debug, Default)]
struct GateState {
    running: bool,
    pending: bool,
    stop: bool,
}

/// Shared (behind an `Arc`) by the loop, the server thread and the button thread.
#[derive(Debug, Default)]
pub struct RunGate {
    state: Mutex<GateState>,
    wake: Condvar,
}

/// Why [`RunGate::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A run was requested; the gate now counts it as running.
    Request,
    /// [`RunGate::stop`] was called (a signal): finish up and exit.
    Stop,
    /// The timeout passed: poll the schedule again.
    Timeout,
}

impl RunGate {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a run (button, HTTP). Refused while one runs or one is already pending.
    pub fn request(&self) -> Result<(), AlreadyRunning> {
        let mut s = self.lock();
        if s.running || s.pending {
            return Err(AlreadyRunning);
        }
        s.pending = true;
        self.wake.notify_all();
        Ok(())
    }

    /// Asks the loop to stop; wakes it.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.lock().stop
    }

    /// Whether a run is running or pending.
    pub fn is_busy(&self) -> bool {
        let s = self.lock();
        s.running || s.pending
    }

    /// The loop sleeps here until a request, a stop, or the timeout. A request moves the gate
    /// to running.
    pub fn wait(&self, timeout: Duration) -> Wake {
        let s = self.lock();
        let (mut s, _) = self.wake.wait_timeout_while(s, timeout, |s| !s.pending && !s.stop).unwrap_or_else(|e| e.into_inner());
        if s.stop {
            Wake::Stop
        } else if s.pending {
            s.pending = false;
            s.running = true;
            Wake::Request
        } else {
            Wake::Timeout
        }
    }

    /// The loop starts a scheduled run: the gate counts it as running, and a request that was
    /// pending is served by it.
    pub fn start_scheduled(&self) {
        let mut s = self.lock();
        s.running = true;
        s.pending = false;
    }

    /// The run ended.
    pub fn finish(&self) {
        self.lock().running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_request_at_a_time() {
        let g = RunGate::new();
        assert_eq!(g.wait(Duration::ZERO), Wake::Timeout);
        assert_eq!(g.request(), Ok(()));
        assert_eq!(g.request(), Err(AlreadyRunning)); // pending
        assert_eq!(g.wait(Duration::ZERO), Wake::Request);
        assert_eq!(g.request(), Err(AlreadyRunning)); // running
        assert!(g.is_busy());
        g.finish();
        assert!(!g.is_busy());
        assert_eq!(g.request(), Ok(()));
        g.start_scheduled(); // a scheduled run serves the pending request
        assert_eq!(g.wait(Duration::ZERO), Wake::Timeout);
        g.finish();
        assert_eq!(g.request(), Ok(()));
    }

    #[test]
    fn request_and_stop_wake_a_sleeping_loop() {
        let g = Arc::new(RunGate::new());
        let g2 = Arc::clone(&g);
        let t = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let w = g2.wait(Duration::from_secs(30));
            (w, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        g.request().unwrap();
        let (w, waited) = t.join().unwrap();
        assert_eq!(w, Wake::Request);
        assert!(waited < Duration::from_secs(10));
        g.finish();
        let g2 = Arc::clone(&g);
        let t = std::thread::spawn(move || g2.wait(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        g.stop();
        assert_eq!(t.join().unwrap(), Wake::Stop);
        assert!(g.is_stopping());
    }
}
