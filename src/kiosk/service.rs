//! The kiosk loop: the model loaded once, runs on the schedule, on a button press or on a
//! `POST /generate`, one at a time, each through the library pipeline (never the binary), each
//! journaled so a run cut by a power loss resumes to the same image. Between model calls it
//! reads the SoC temperature and pauses above the configured threshold. A stop request (SIGTERM,
//! SIGINT) ends the run in progress within one model call, writes nothing partial, and ends the
//! loop; its journal stays, so the next start finishes that image.

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;

use super::config::KioskConfig;
use super::gpio::{Button, Led, LedMode};
use super::history::History;
use super::schedule::{Poll, Scheduler, SystemClock};
use super::server::Server;
use super::status::{State, Status};
use super::thermal::{Hysteresis, ThermalZone, Throttled};
use super::trigger::{RunGate, Wake};
use crate::model::{LoadOptions, Model, ModelKind, ModelSource};
use crate::output::{self, Upscale};
use crate::pipeline::{Generator, Journal, PipelineError, Recipe, Request, Samples, StepChoice};

/// The journal of the run in progress (`journal.rs`), in the output directory.
pub const JOURNAL: &str = ".run.journal";
/// The seed of the next run, kept across restarts so a resumed run has the interrupted one's.
pub const NEXT_SEED: &str = ".next-seed";
/// Longest sleep between two looks at the stop flag and the thermal zone.
const TICK: Duration = Duration::from_millis(200);

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Run-once mode finished, or a stop request ended the loop.
    Stopped,
}

/// The parts of a kiosk that outlive a run.
struct Kiosk<'a> {
    generator: Generator,
    history: History,
    monitor: Monitor<'a>,
}

/// What the loop watches and reports between model calls: status, heat, the stop flag, the LED.
struct Monitor<'a> {
    cfg: &'a KioskConfig,
    status: Status,
    thermal: Option<ThermalZone>,
    hysteresis: Hysteresis,
    stop: &'a AtomicBool,
    led: Arc<AtomicU8>,
}

/// Runs the kiosk until `stop` is set or run-once mode is done.
pub fn run(cfg: &KioskConfig, stop: &AtomicBool) -> anyhow::Result<Ended> {
    let source = cfg.generate.model.clone().map_or(ModelSource::Embedded, ModelSource::File);
    let model = Model::open(&source, &LoadOptions::default())?;
    log::info!("kiosk: model {} loaded once for the kiosk's life", model.info().name);
    let generator = Generator::new(model)?;
    let (history, stray) = History::open(&cfg.out_dir).with_context(|| format!("kiosk output directory {}", cfg.out_dir.display()))?;
    if stray > 0 {
        log::info!("kiosk: removed {stray} temporary file(s) left by an interrupted write");
    }
    let thermal = match ThermalZone::find(&cfg.thermal.sysfs_root, &cfg.thermal.zone_types) {
        Ok(z) => Some(z),
        Err(e) => {
            log::warn!("kiosk: no temperature ({e}); generating without heat checks");
            None
        }
    };
    let hysteresis = Hysteresis::new(cfg.thermal.pause_above_c, cfg.thermal.resume_below_c)?;
    let gate = Arc::new(RunGate::new());
    let _server = match &cfg.serve {
        Some(s) => {
            let server = Server::start(s, cfg.out_dir.clone(), Arc::clone(&gate))?;
            log::info!("kiosk: display page on http://{}/", server.addr());
            Some(server)
        }
        None => None,
    };
    let led = Arc::new(AtomicU8::new(LED_OFF));
    let _gpio = start_gpio(cfg, &gate, &led, stop)?;
    let monitor = Monitor { cfg, status: Status::new(Timestamp::now()), thermal, hysteresis, stop, led };
    let mut kiosk = Kiosk { generator, history, monitor };
    let mut scheduler = Scheduler::new(cfg.schedule.clone(), jiff::tz::TimeZone::system(), SystemClock);
    kiosk.monitor.heartbeat(&scheduler);
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match scheduler.poll() {
            Poll::Due => {
                gate.start_scheduled();
                kiosk.run_once();
                scheduler.finished();
                gate.finish();
                kiosk.monitor.idle();
            }
            Poll::Wait(d) => match gate.wait(d.min(TICK)) {
                Wake::Request => {
                    if scheduler.trigger().is_ok() {
                        kiosk.run_once();
                        scheduler.finished();
                    }
                    gate.finish();
                    kiosk.monitor.idle();
                }
                Wake::Stop => break,
                Wake::Timeout => {}
            },
            Poll::Running => {}
            Poll::Done => break,
        }
        kiosk.monitor.heartbeat(&scheduler);
    }
    gate.stop();
    kiosk.monitor.status.state = if stop.load(Ordering::SeqCst) { State::Stopping } else { State::Idle };
    kiosk.monitor.write_status();
    Ok(Ended::Stopped)
}

const LED_OFF: u8 = 0;
const LED_ON: u8 = 1;
const LED_BLINK: u8 = 2;

/// The button and LED thread (`--button`, `--led`): a press requests a run; the LED follows the
/// loop's state. Ends (switching the LED off) when the kiosk stops.
fn start_gpio(cfg: &KioskConfig, gate: &Arc<RunGate>, led: &Arc<AtomicU8>, stop: &AtomicBool) -> anyhow::Result<Option<GpioThread>> {
    let (button, led_pin) = super::gpio::open(cfg.gpio.button, cfg.gpio.led)?;
    if button.is_none() && led_pin.is_none() {
        return Ok(None);
    }
    let (gate, mode, debounce) = (Arc::clone(gate), Arc::clone(led), cfg.gpio.debounce);
    let done = Arc::new(AtomicBool::new(stop.load(Ordering::SeqCst)));
    let done_thread = Arc::clone(&done);
    let handle = std::thread::spawn(move || {
        let now = Instant::now();
        let mut button = button.map(|p| Button::new(p, debounce));
        let mut led = led_pin.map(|p| Led::new(p, now));
        while !done_thread.load(Ordering::SeqCst) {
            let now = Instant::now();
            if let Some(b) = &mut button {
                if b.poll(now) && gate.request().is_err() {
                    log::info!("kiosk: button pressed during a run; ignored");
                }
            }
            if let Some(l) = &mut led {
                let want = match mode.load(Ordering::SeqCst) {
                    LED_ON => LedMode::On,
                    LED_BLINK => LedMode::Blink,
                    _ => LedMode::Off,
                };
                if l.mode() != want {
                    l.set_mode(want, now);
                }
                l.tick(now);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    Ok(Some(GpioThread { done, handle: Some(handle) }))
}

/// Stops and joins the GPIO thread (its LED switches off when dropped).
struct GpioThread {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GpioThread {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Monitor<'_> {
    /// After a run and after the run-gate is open again: state idle, written. (A reader who sees
    /// the run's result in `status.json` can start the next one.)
    fn idle(&mut self) {
        self.status.state = State::Idle;
        self.write_status();
    }

    fn write_status(&mut self) {
        if let Err(e) = self.status.write(&self.cfg.out_dir, Timestamp::now()) {
            log::warn!("kiosk: cannot write status.json: {e}");
        }
    }

    /// Reads the temperature and throttling flags into the status and writes it.
    fn heartbeat(&mut self, scheduler: &Scheduler<SystemClock>) {
        self.read_sensors();
        self.status.next_run = scheduler.next_run();
        self.write_status();
    }

    fn read_sensors(&mut self) -> Option<f32> {
        let celsius = self.thermal.as_ref().and_then(|z| z.read_celsius().ok());
        self.status.temperature_c = celsius;
        self.status.thermal_zone = self.thermal.as_ref().map(|z| z.zone_type.clone());
        self.status.throttling = Throttled::read(&self.cfg.thermal.throttle_file).ok().flatten().map(|t| t.names());
        celsius
    }

    /// Blocks while the SoC is too hot (hysteresis), keeping the status current; returns early
    /// on a stop request.
    fn cool_down(&mut self) {
        loop {
            let Some(c) = self.read_sensors() else { return };
            if !self.hysteresis.update(c) {
                if self.status.state == State::PausedHot {
                    log::info!("kiosk: {c:.1} °C, resuming");
                    self.status.state = State::Generating;
                    self.write_status();
                }
                return;
            }
            if self.status.state != State::PausedHot {
                log::warn!(
                    "kiosk: {c:.1} °C is above {:.1} °C; pausing until below {:.1} °C",
                    self.cfg.thermal.pause_above_c,
                    self.cfg.thermal.resume_below_c
                );
                self.status.state = State::PausedHot;
            }
            self.write_status();
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(TICK);
        }
    }
}

impl Kiosk<'_> {
    /// One generation into the history; failures are recorded, not fatal.
    fn run_once(&mut self) {
        let m = &mut self.monitor;
        m.led.store(LED_ON, Ordering::SeqCst);
        m.status.state = State::Generating;
        m.write_status();
        let result = self.generate();
        let now = Timestamp::now();
        let m = &mut self.monitor;
        match result {
            Ok(image) => {
                m.status.success(now, image);
                m.status.last_error = None;
                m.led.store(LED_OFF, Ordering::SeqCst);
            }
            Err(e) if is_interrupted(&e) => {
                log::info!("kiosk: the run was stopped; its journal stays for the next start");
                m.led.store(LED_OFF, Ordering::SeqCst);
            }
            Err(e) => {
                let message = format!("{e:#}").replace('\n', " ");
                log::error!("kiosk: generation failed: {message}");
                m.status.failure(now, message);
                m.led.store(LED_BLINK, Ordering::SeqCst);
            }
        }
    }

    /// Plans, samples (journaled, pausing when hot) and stores one result; returns the history
    /// file name of its image.
    fn generate(&mut self) -> anyhow::Result<String> {
        let cfg = self.monitor.cfg;
        let out = cfg.out_dir.clone();
        let seed = read_next_seed(&out)?.or(cfg.generate.seed).unwrap_or(0);
        let request = Request {
            sampler: cfg.generate.sampler,
            steps: cfg.generate.steps.and_then(NonZeroUsize::new).map_or(StepChoice::Default, StepChoice::Exactly),
            seed,
            count: NonZeroUsize::new(1),
            ..Request::default()
        };
        let plan = self.generator.plan(&request)?;
        let journal_path = out.join(JOURNAL);
        let mut journal =
            Journal::open(&journal_path, &plan.fingerprint()).with_context(|| format!("journal {}", journal_path.display()))?;
        if !journal.is_empty() {
            log::info!("kiosk: resuming seed {seed} from {} journaled model evaluations", journal.len());
        }
        let start = plan.seeded_start()?;
        let stop = self.monitor.stop;
        let monitor = &mut self.monitor;
        let mut on_step = |_: &crate::pipeline::StepReport| {
            monitor.cool_down();
            ControlFlow::Continue(())
        };
        let samples = self.generator.sample_journaled(&plan, start, &mut on_step, stop, &mut journal)?;
        let recipe = Recipe::new(&plan, self.generator.model(), &samples, std::time::SystemTime::now());
        let png = result_png(&plan.model.kind, &samples, &recipe)?;
        let json = serde_json::to_vec_pretty(&recipe)?;
        let entry = self.history.record(Timestamp::now(), seed, &png, &json)?;
        if let Some(ep) = &cfg.epaper {
            let rgb = image::load_from_memory(&png).context("decoding the image for the e-paper panel")?.to_rgb8();
            let bytes = ep.panel.render_png(&rgb, ep.fit, ep.saturation).map_err(|e| anyhow::anyhow!("e-paper PNG: {e}"))?;
            self.history.add_file(&entry, "epaper.png", &bytes)?;
            output::write_atomic(&out.join("epaper.png"), &bytes, true)?;
        }
        output::write_atomic(&out.join(NEXT_SEED), format!("{}\n", seed.wrapping_add(1)).as_bytes(), true)?;
        journal.finish().with_context(|| format!("removing the finished journal {}", journal_path.display()))?;
        let pruned = self.history.prune(&cfg.retention)?;
        if pruned.entries > 0 {
            log::info!("kiosk: retention removed {} old image(s), {} bytes", pruned.entries, pruned.bytes);
        }
        Ok(entry.image().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or(entry.stem))
    }
}

/// The PNG shown for a result: the image (first of the run), or a point cloud's scatter plot.
fn result_png(kind: &ModelKind, samples: &Samples, recipe: &Recipe) -> anyhow::Result<Vec<u8>> {
    Ok(match *kind {
        ModelKind::Image { channels, height, width } => output::image_png_upscaled(
            &samples.values[..channels * height * width],
            channels,
            height,
            width,
            &recipe.parameters_line(Some(0)),
            Upscale::default(),
        )?,
        ModelKind::Points { dim } => output::scatter_png(&samples.values, dim, &recipe.parameters_line(None))?,
    })
}

fn read_next_seed(out: &Path) -> anyhow::Result<Option<u64>> {
    let path: PathBuf = out.join(NEXT_SEED);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{} is not a seed; delete it to start from the configured seed", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<PipelineError>(), Some(PipelineError::Interrupted { .. })))
}
