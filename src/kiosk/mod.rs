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
//! | `service.rs` | the loop: model loaded once, runs through the pipeline, journal, heat, GPIO, page |
//!
//! # How a run goes (`service.rs`)
//!
//! The schedule, a button press or `POST /generate` starts a run (the run-gate allows one at a
//! time). Its seed is `.next-seed` in the output directory (the configured seed the first
//! time), so a restarted kiosk gives an interrupted run the seed it had. The pipeline plans it,
//! and samples it through a journal (`.run.journal`, `pipeline/journal.rs`) that records every
//! model evaluation: after a power cut the next start replays the journal and finishes the same
//! image, bit for bit. Between steps the loop reads the SoC temperature and waits, state
//! `paused-hot`, while it is above the pause threshold until it is below the resume one. The
//! image (or a point cloud's scatter plot) and its recipe go to `history/` and `current.png`
//! (complete files only), then the e-paper rendering, retention, and `status.json`. SIGTERM or
//! SIGINT stop the run within one model call, leave its journal, and end the loop (exit 0 for
//! SIGTERM, 130 for SIGINT).

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
