//! Progress for people and for supervisors: a progress bar on stderr when it is a terminal
//! (steps, NFE/s, ETA), or one JSON event per line on stdout with `--json`. Never both, and
//! nothing at all when stderr is not a terminal and `--json` is off (logs still go to stderr).

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::sampler::Step;

/// Reports sampling progress.
pub struct Progress {
    json: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    /// The first failure to write an event (other than a closed pipe), reported by `check`.
    failed: RefCell<Option<std::io::Error>>,
}

impl Progress {
    /// `total` is the number of steps expected over the whole run (an estimate for `adaptive`).
    pub fn new(json: bool, total: u64) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let colour = std::env::var_os("NO_COLOR").is_none();
            let template = if colour {
                "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} steps  {msg}  ETA {eta}"
            } else {
                "[{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}  ETA {eta}"
            };
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress { json, bar, started: Instant::now(), failed: RefCell::new(None) }
    }

    /// Prints one JSON event line on stdout (only with `--json`).
    pub fn event(&self, kind: &str, mut fields: Value) {
        if !self.json {
            return;
        }
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), Value::String(kind.into()));
            map.insert("elapsed_s".into(), json!(self.started.elapsed().as_secs_f64()));
        }
        let mut out = std::io::stdout().lock();
        // A closed or full stdout must not abort a generation (the files still get written); a
        // full one is reported by `check` at the end, a closed pipe (`| head`) is not an error.
        if let Err(e) = writeln!(out, "{fields}").and_then(|()| out.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                self.failed.borrow_mut().get_or_insert(e);
            }
        }
    }

    /// The first error met writing events to stdout, if any (a closed pipe is not one).
    pub fn check(&self) -> std::io::Result<()> {
        match self.failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reports a finished step; `nfe_total` counts evaluations over all batches so far.
    pub fn step(&self, step: &Step, batch: usize, nfe_total: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let rate = nfe_total as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let gate = step.gate.map(|g| format!("  gate g={:.2} l={:.2}", g[0], g[1])).unwrap_or_default();
            bar.set_message(format!("{rate:.1} NFE/s{gate}"));
        }
        if self.json {
            self.event(
                "step",
                json!({
                    "batch": batch, "index": step.index, "total": step.total, "t": step.t, "t_next": step.t_next,
                    "nfe": step.nfe, "gate": step.gate.map(|g| json!({"global": g[0], "local": g[1]})),
                }),
            );
        }
    }

    /// Grows the bar's length (the adaptive sampler only knows its step count at the end).
    pub fn extend_to(&self, total: u64) {
        if let Some(bar) = &self.bar {
            if bar.length().unwrap_or(0) < total {
                bar.set_length(total);
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
