//! Kiosk mode: unattended generation on a schedule into an output directory (history, an
//! atomically replaced `current.png`, a `status.json` heartbeat), with heat awareness, a local
//! display page, a GPIO button and LED, and e-paper renderings. This folder holds the building
//! blocks, each testable alone; it never spawns `dualscale generate` and never imports tract
//! (the model is the pipeline's business).
//!
//! | file | holds |
//! |---|---|
//! | `schedule.rs` | `--every` / cron / times of day / once, and the no-overlap, no-burst scheduler |
//! | `config.rs` | flags over a TOML file over defaults -> `KioskConfig`; errors name flag or file line and key |
//! | `history.rs` | `history/` files, `current.png`, retention, stray temp file cleanup |
//! | `status.rs` | the `status.json` heartbeat |
//! | `thermal.rs` | thermal zone by type, pause/resume hysteresis, Pi throttling flags |
//! | `epaper.rs` | panels and palettes as data, nearest-neighbour fit, Floyd-Steinberg |
//! | `gpio.rs` | button (debounced) and LED traits, fakes, the rppal implementation (`gpio` feature) |
//! | `server.rs` | the display page, `/current.png`, `/status.json`, `POST /generate` |
//! | `trigger.rs` | the run-gate: one run at a time, wakes the loop for a request or a stop |
//!
//! # How the loop will drive the pipeline (to be wired once issue 8's pipeline lands)
//!
//! ```text
//! config = KioskConfig::load(flags)?            // cli::kiosk::KioskArgs -> Flags
//! model  = load once (pipeline), for the kiosk's whole life
//! (history, stray) = History::open(out)?        // removes .*.tmp left by a kill
//! gate = Arc<RunGate>; server = Server::start(.., gate) if serve; button thread -> gate.request()
//! signal-hook: SIGTERM / SIGINT -> cancel flag (AtomicBool) + gate.stop()
//! loop {
//!     thermal: read zone, Throttled::read; Hysteresis::update -> state paused-hot: wait, retry
//!     match scheduler.poll() {
//!         Due => { gate.start_scheduled(); run() }
//!         Wait(d) => match gate.wait(d) { Request => { scheduler.trigger(); run() }, Stop => break, Timeout => {} }
//!         Running => unreachable (runs are synchronous), Done => break
//!     }
//!     status.write(out) after every change and at least every MAX_WAIT (heartbeat)
//! }
//! run():  LED on; status generating
//!         plan = pipeline.plan(model, spec with seed = first_seed + images_made)
//!         start = plan.seeded_start()
//!         x = plan.sample(start, on_step: |step| { thermal check between steps (pause in
//!             place when hot: sleep until below resume, the sampler state stays in memory);
//!             checkpoint }, cancel_flag)
//!         outputs = plan.outputs(x) -> image PNG + JSON sidecar bytes
//!         entry = history.record(now, seed, png, json)      // history first, then current.png
//!         epaper: panel.render_png(decoded image) -> history.add_file(entry, "epaper.png") and
//!                 write_atomic(out/"epaper.png")
//!         history.prune(retention); status.success(..); scheduler.finished(); gate.finish()
//!         on error: status.failure(..), LED blink, scheduler.finished(), gate.finish()
//! exit:   SIGTERM -> the sampler stops at the next model call (cancel flag), nothing partial is
//!         written (history only writes complete files), status "stopping", exit 0; SIGINT -> 130.
//!         LED off (Led's Drop), server dropped (joins its thread).
//! ```
//!
//! Resume after a power cut (kill -9) needs the pipeline: after each sampler step, write a
//! checkpoint `OUT/.checkpoint.json` + `.npy` atomically (the plan's recipe and seed, the step
//! index, the sampler state `x` and, for multistep solvers, the previous model outputs). On start,
//! a checkpoint whose recipe matches the config resumes at that step; since every step's noise
//! is its own Philox stream (`rng.rs`: stream k + 1 for step k), the resumed run gives the same
//! image bit for bit as an uninterrupted one. A checkpoint that does not match is deleted.

pub mod config;
pub mod epaper;
pub mod gpio;
pub mod history;
pub mod schedule;
pub mod server;
pub mod service;
pub mod status;
pub mod thermal;
pub mod trigger;
