//! The kiosk's configuration: command-line flags over a TOML file over defaults, validated once
//! into a plain [`KioskConfig`] (no clap, no serde types past this file). Every error names
//! where the bad value came from: the flag (`--every: ...`), or the file, line and key
//! (`kiosk.toml:7: schedule.every: ...`). The file format is documented by `examples/kiosk.toml`.
//! It reads the config file and nothing else; paths are checked where they are used.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::epaper::{self, Fit, Panel};
use super::gpio::DEFAULT_DEBOUNCE;
use super::history::Retention;
use super::schedule::Schedule;
use super::server::{ServeConfig, DEFAULT_ADDR, DEFAULT_MIN_TRIGGER_INTERVAL};
use super::thermal::{Hysteresis, DEFAULT_ZONE_TYPES, PI_THROTTLED_FILE};
use crate::sampler::SamplerKind;

/// The output directory when none is given.
pub const DEFAULT_OUT: &str = "kiosk-out";
/// Pause above this SoC temperature (°C): a Pi 4/5 starts soft-throttling at 80 °C.
pub const DEFAULT_PAUSE_ABOVE: f32 = 80.0;
/// Resume below this one (°C).
pub const DEFAULT_RESUME_BELOW: f32 = 70.0;
/// e-paper `saturation`, as Pimoroni's `inky` defaults it.
pub const DEFAULT_SATURATION: f32 = 0.5;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    File { path: PathBuf, line: usize, key: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag(name) => f.write_str(name),
            Self::File { path, line, key } => write!(f, "{}:{line}: {key}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{}:{line}: {}{message}", path.display(), key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Syntax { path: PathBuf, line: usize, key: Option<String>, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: Origin, message: String },
    #[error("no schedule given; pass one of --every 10m, --cron '0 * * * *', --at 08:00,20:30 or --once (or set it in the config file's [schedule])")]
    NoSchedule,
}

/// The values the command line gave; `None` / empty / `false` where a flag was not given. Filled
/// by `cli::kiosk::KioskArgs`; plain types so this module needs no clap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub every: Option<String>,
    pub cron: Option<String>,
    pub at: Option<String>,
    pub once: bool,
    pub out: Option<PathBuf>,
    pub keep: Option<usize>,
    pub max_bytes: Option<String>,
    pub pause_above: Option<f32>,
    pub resume_below: Option<f32>,
    pub thermal_zones: Vec<String>,
    pub sysfs: Option<PathBuf>,
    pub throttle_file: Option<PathBuf>,
    /// `--serve [ADDR]`: `Some("")` when given without a value.
    pub serve: Option<String>,
    pub serve_remote: bool,
    pub button: Option<u8>,
    pub led: Option<u8>,
    pub epaper: Option<String>,
    pub epaper_fit: Option<String>,
    pub model: Option<PathBuf>,
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    pub seed: Option<u64>,
}

/// Thermal settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermalConfig {
    pub pause_above_c: f32,
    pub resume_below_c: f32,
    /// Zone types to look for, in order of preference.
    pub zone_types: Vec<String>,
    /// `/sys` on a board; a fake tree in tests.
    pub sysfs_root: PathBuf,
    /// The Pi firmware's `get_throttled` (absent elsewhere, which is fine).
    pub throttle_file: PathBuf,
}

/// GPIO pins (BCM numbers); none means no GPIO at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpioConfig {
    pub button: Option<u8>,
    pub led: Option<u8>,
    pub debounce: Duration,
}

/// Also write each image dithered for an e-paper panel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpaperConfig {
    pub panel: &'static Panel,
    pub fit: Fit,
    pub saturation: f32,
}

/// What to generate, passed on to the generation pipeline as it is. `None` is the pipeline's
/// default. `seed` is the first seed; run k uses `seed + k` (k counted over the kiosk's life).
// MERGE: when issue 8's pipeline lands, check these against its plan type (it may want more:
// count, batch, precision, device) and convert here, once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerateSpec {
    pub model: Option<PathBuf>,
    pub sampler: Option<SamplerKind>,
    pub steps: Option<usize>,
    pub seed: Option<u64>,
}

/// The validated kiosk configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct KioskConfig {
    pub schedule: Schedule,
    pub out_dir: PathBuf,
    pub retention: Retention,
    pub thermal: ThermalConfig,
    pub serve: Option<ServeConfig>,
    pub gpio: GpioConfig,
    pub epaper: Option<EpaperConfig>,
    pub generate: GenerateSpec,
}

impl KioskConfig {
    /// Reads `flags.config` (if any) and validates flags over file over defaults.
    pub fn load(flags: Flags) -> Result<Self, ConfigError> {
        match flags.config.clone() {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                Self::from_parts(flags, Some(Source { path, text }))
            }
            None => Self::from_parts(flags, None),
        }
    }

    /// Validates a config file's text alone (no flags); `path` is only for messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source { path: path.to_owned(), text: text.to_owned() };
        Self::from_parts(Flags::default(), Some(src))
    }

    fn from_parts(f: Flags, src: Option<Source>) -> Result<Self, ConfigError> {
        let file: File = match &src {
            None => File::default(),
            Some(src) => toml::from_str(&src.text).map_err(|e| {
                let offset = e.span().map_or(0, |s| s.start);
                ConfigError::Syntax {
                    path: src.path.clone(),
                    line: src.line(offset),
                    key: src.key_at(offset),
                    message: e.message().trim().to_owned(),
                }
            })?,
        };
        let src = src.as_ref();

        let schedule = schedule(&f, file.schedule.unwrap_or_default(), src)?;

        let out_dir = pick(f.out, "--out", file.out, "out", src).map(|(p, _)| p).unwrap_or_else(|| PathBuf::from(DEFAULT_OUT));

        let fr = file.retention.unwrap_or_default();
        let keep = match pick(f.keep, "--keep", fr.keep, "retention.keep", src) {
            Some((0, o)) => return Err(invalid(o, "keep at least 1 image (the newest is always kept)")),
            other => other.map(|(k, _)| k),
        };
        let max_bytes = match (f.max_bytes, fr.max_bytes) {
            (Some(s), _) => Some(parse_bytes(&s).map_err(|m| invalid(Origin::Flag("--max-bytes"), m))?),
            (None, Some(s)) => {
                let origin = src.map(|src| src.origin("retention.max_bytes", s.span()));
                let origin = origin.unwrap_or(Origin::Flag("--max-bytes"));
                Some(match s.into_inner() {
                    IntOrStr::Int(n) => n,
                    IntOrStr::Str(s) => parse_bytes(&s).map_err(|m| invalid(origin, m))?,
                })
            }
            (None, None) => None,
        };
        let retention = Retention { keep, max_bytes };

        let ft = file.thermal.unwrap_or_default();
        let pause = pick(f.pause_above, "--pause-above", ft.pause_above, "thermal.pause_above", src);
        let resume = pick(f.resume_below, "--resume-below", ft.resume_below, "thermal.resume_below", src);
        let (pause_above_c, resume_below_c) =
            (pause.as_ref().map_or(DEFAULT_PAUSE_ABOVE, |p| p.0), resume.as_ref().map_or(DEFAULT_RESUME_BELOW, |r| r.0));
        if let Err(e) = Hysteresis::new(pause_above_c, resume_below_c) {
            let origin = resume.or(pause).map(|(_, o)| o).unwrap_or(Origin::Flag("--resume-below"));
            return Err(invalid(origin, e));
        }
        let zones = if f.thermal_zones.is_empty() { None } else { Some(f.thermal_zones) };
        let zone_types = match pick(zones, "--thermal-zone", ft.zone_types, "thermal.zone_types", src) {
            Some((z, o)) if z.is_empty() => return Err(invalid(o, "name at least one thermal zone type, like cpu-thermal")),
            Some((z, _)) => z,
            None => DEFAULT_ZONE_TYPES.iter().map(|s| s.to_string()).collect(),
        };
        let sysfs_root = pick(f.sysfs, "--sysfs", ft.sysfs, "thermal.sysfs", src).map_or_else(|| PathBuf::from("/sys"), |(p, _)| p);
        let throttle_file = pick(f.throttle_file, "--throttle-file", ft.throttle_file, "thermal.throttle_file", src)
            .map_or_else(|| sysfs_root.join(PI_THROTTLED_FILE), |(p, _)| p);
        let thermal = ThermalConfig { pause_above_c, resume_below_c, zone_types, sysfs_root, throttle_file };

        let serve = serve(&f.serve, f.serve_remote, file.serve, src)?;

        let fg = file.gpio.unwrap_or_default();
        let button = pick(f.button, "--button", fg.button, "gpio.button", src);
        let led = pick(f.led, "--led", fg.led, "gpio.led", src);
        for (pin, what) in [(&button, "button"), (&led, "LED")] {
            if let Some((p, o)) = pin {
                if *p > 53 {
                    return Err(invalid(
                        o.clone(),
                        format!("GPIO {p} does not exist; the {what} pin is a BCM number, 0-27 on a 40-pin header"),
                    ));
                }
            }
        }
        if let (Some((b, _)), Some((l, o))) = (&button, &led) {
            if b == l {
                return Err(invalid(o.clone(), format!("the LED and the button are both on GPIO {b}; use two pins")));
            }
        }
        let debounce = match fg.debounce {
            Some(s) => {
                let origin = src.map_or(Origin::Flag("--debounce"), |src| src.origin("gpio.debounce", s.span()));
                humantime::parse_duration(s.get_ref())
                    .map_err(|_| invalid(origin, format!("`{}` is not a duration; write it like 30ms", s.get_ref())))?
            }
            None => DEFAULT_DEBOUNCE,
        };
        let gpio = GpioConfig { button: button.map(|b| b.0), led: led.map(|l| l.0), debounce };

        let epaper = epaper_config(f.epaper, f.epaper_fit, file.epaper, src)?;

        let fgen = file.generate.unwrap_or_default();
        let sampler = match pick(f.sampler, "--sampler", fgen.sampler, "generate.sampler", src) {
            Some((s, o)) => Some(s.parse::<SamplerKind>().map_err(|e| invalid(o, e))?),
            None => None,
        };
        let steps = match pick(f.steps, "--steps", fgen.steps, "generate.steps", src) {
            Some((0, o)) => return Err(invalid(o, "take at least 1 step")),
            other => other.map(|(s, _)| s),
        };
        let generate = GenerateSpec {
            model: pick(f.model, "--model", fgen.model, "generate.model", src).map(|m| m.0),
            sampler,
            steps,
            seed: pick(f.seed, "--seed", fgen.seed, "generate.seed", src).map(|s| s.0),
        };

        Ok(Self { schedule, out_dir, retention, thermal, serve, gpio, epaper, generate })
    }
}

/// Exactly one schedule; flags replace the file's schedule as a whole.
fn schedule(f: &Flags, fs: FileSchedule, src: Option<&Source>) -> Result<Schedule, ConfigError> {
    type Maker = fn(&str) -> Result<Schedule, super::schedule::ScheduleError>;
    let mut given: Vec<(Origin, Option<(String, Maker)>)> = Vec::new();
    if let Some(s) = &f.every {
        given.push((Origin::Flag("--every"), Some((s.clone(), Schedule::every as Maker))));
    }
    if let Some(s) = &f.cron {
        given.push((Origin::Flag("--cron"), Some((s.clone(), Schedule::cron as Maker))));
    }
    if let Some(s) = &f.at {
        given.push((Origin::Flag("--at"), Some((s.clone(), Schedule::times as Maker))));
    }
    if f.once {
        given.push((Origin::Flag("--once"), None));
    }
    if given.is_empty() {
        if let Some(src) = src {
            if let Some(s) = fs.every {
                given.push((src.origin("schedule.every", s.span()), Some((s.into_inner(), Schedule::every as Maker))));
            }
            if let Some(s) = fs.cron {
                given.push((src.origin("schedule.cron", s.span()), Some((s.into_inner(), Schedule::cron as Maker))));
            }
            if let Some(s) = fs.at {
                let origin = src.origin("schedule.at", s.span());
                let text = match s.into_inner() {
                    StrOrList::Str(s) => s,
                    StrOrList::List(v) => v.join(","),
                };
                given.push((origin, Some((text, Schedule::times as Maker))));
            }
            if let Some(s) = fs.once {
                if *s.get_ref() {
                    given.push((src.origin("schedule.once", s.span()), None));
                }
            }
        }
    }
    match given.len() {
        0 => Err(ConfigError::NoSchedule),
        1 => {
            let (origin, how) = given.pop().expect("one");
            match how {
                None => Ok(Schedule::Once),
                Some((text, make)) => make(&text).map_err(|e| invalid(origin, e)),
            }
        }
        _ => {
            let names: Vec<String> = given.iter().map(|(o, _)| o.to_string()).collect();
            Err(invalid(given[1].0.clone(), format!("give one schedule, not several ({})", names.join(", "))))
        }
    }
}

fn serve(
    flag: &Option<String>,
    remote_flag: bool,
    fs: Option<FileServe>,
    src: Option<&Source>,
) -> Result<Option<ServeConfig>, ConfigError> {
    let enabled = flag.is_some() || fs.is_some();
    if !enabled {
        if remote_flag {
            return Err(invalid(Origin::Flag("--serve-remote"), "only makes sense with --serve ADDR"));
        }
        return Ok(None);
    }
    let fs = fs.unwrap_or_default();
    let addr_flag = flag.clone().filter(|s| !s.is_empty());
    let (text, origin) =
        pick(addr_flag, "--serve", fs.addr, "serve.addr", src).unwrap_or_else(|| (DEFAULT_ADDR.to_owned(), Origin::Flag("--serve")));
    let addr = parse_addr(&text).map_err(|m| invalid(origin.clone(), m))?;
    let allow_remote = remote_flag || fs.allow_remote.is_some_and(|b| *b.get_ref());
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(invalid(
            origin,
            format!("{addr} is reachable from the network; add --serve-remote (or `allow_remote = true` under [serve]) to allow that, or serve on 127.0.0.1"),
        ));
    }
    let min_trigger_interval = match fs.min_trigger_interval {
        Some(s) => {
            let o = src.map_or(Origin::Flag("--serve"), |src| src.origin("serve.min_trigger_interval", s.span()));
            humantime::parse_duration(s.get_ref())
                .map_err(|_| invalid(o, format!("`{}` is not a duration; write it like 10s", s.get_ref())))?
        }
        None => DEFAULT_MIN_TRIGGER_INTERVAL,
    };
    Ok(Some(ServeConfig { addr, allow_remote, min_trigger_interval }))
}

/// `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`, `0.0.0.0:80`, or a bare port (loopback).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(port) = t.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    // A host name: resolved once, here (no DNS at serve time).
    match t.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) if t.contains(':') => Ok(a),
        _ => Err(format!("`{text}` is not an address to serve on; write it like 127.0.0.1:8080 or just a port")),
    }
}

fn epaper_config(
    panel_flag: Option<String>,
    fit_flag: Option<String>,
    fe: Option<FileEpaper>,
    src: Option<&Source>,
) -> Result<Option<EpaperConfig>, ConfigError> {
    let fe = fe.unwrap_or_default();
    let Some((id, origin)) = pick(panel_flag, "--epaper", fe.panel, "epaper.panel", src) else {
        if let Some(f) = fit_flag {
            return Err(invalid(Origin::Flag("--epaper-fit"), format!("`{f}` needs --epaper PANEL")));
        }
        return Ok(None);
    };
    let panel = epaper::panel(&id)
        .ok_or_else(|| invalid(origin, format!("unknown e-paper panel `{id}`; known panels: {}", epaper::panel_ids())))?;
    let fit = match pick(fit_flag, "--epaper-fit", fe.fit, "epaper.fit", src) {
        Some((f, o)) => f.parse::<Fit>().map_err(|m| invalid(o, m))?,
        None => Fit::default(),
    };
    let saturation = match fe.saturation {
        Some(s) => {
            let v = *s.get_ref();
            if !(0.0..=1.0).contains(&v) {
                let o = src.map_or(Origin::Flag("--epaper"), |src| src.origin("epaper.saturation", s.span()));
                return Err(invalid(o, format!("saturation {v} is outside 0..1 (0: ideal colours, 1: the panel's measured inks)")));
            }
            v
        }
        None => DEFAULT_SATURATION,
    };
    Ok(Some(EpaperConfig { panel, fit, saturation }))
}

/// A size in bytes: `500MB`, `1.5 GB`, `64KiB`, `1000` (bytes). Decimal units are powers of
/// 1000, `KiB`/`MiB`/`GiB`/`TiB` powers of 1024; case does not matter.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size; write it like 500MB, 2GB or 750MiB");
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = (value * mult).round();
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

mod file;

use file::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<KioskConfig, ConfigError> {
        KioskConfig::from_toml(Path::new("kiosk.toml"), text)
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kiosk.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = KioskConfig::from_toml(&path, &text).unwrap();
        assert_eq!(c.schedule, Schedule::every("30m").unwrap());
        assert!(c.serve.is_some());
    }

    #[test]
    fn a_full_file_validates_into_plain_values() {
        let c = load(
            r#"
out = "/var/lib/dualscale-kiosk"

[schedule]
at = ["20:30", "08:00"]

[retention]
keep = 100
max_bytes = "500MB"

[thermal]
pause_above = 75
resume_below = 65.5
zone_types = ["soc_thermal"]
sysfs = "/tmp/fake-sys"

[serve]
addr = "0.0.0.0:9000"
allow_remote = true
min_trigger_interval = "1m"

[gpio]
button = 17
led = 27
debounce = "50ms"

[epaper]
panel = "inky-impression-7.3"
fit = "crop"
saturation = 0.7

[generate]
model = "models/moons-dualscale.onnx"
sampler = "dpmpp-2m"
steps = 8
seed = 42
"#,
        )
        .unwrap();
        assert_eq!(c.schedule, Schedule::times("08:00,20:30").unwrap());
        assert_eq!(c.out_dir, PathBuf::from("/var/lib/dualscale-kiosk"));
        assert_eq!(c.retention, Retention { keep: Some(100), max_bytes: Some(500_000_000) });
        assert_eq!((c.thermal.pause_above_c, c.thermal.resume_below_c), (75.0, 65.5));
        assert_eq!(c.thermal.zone_types, ["soc_thermal"]);
        assert_eq!(c.thermal.throttle_file, Path::new("/tmp/fake-sys").join(PI_THROTTLED_FILE));
        let s = c.serve.unwrap();
        assert_eq!((s.addr.to_string().as_str(), s.allow_remote), ("0.0.0.0:9000", true));
        assert_eq!(s.min_trigger_interval, Duration::from_secs(60));
        assert_eq!(c.gpio, GpioConfig { button: Some(17), led: Some(27), debounce: Duration::from_millis(50) });
        let e = c.epaper.unwrap();
        assert_eq!((e.panel.width, e.fit, e.saturation), (800, Fit::Crop, 0.7));
        assert_eq!(c.generate.sampler, Some(SamplerKind::DpmPp2m));
        assert_eq!((c.generate.steps, c.generate.seed), (Some(8), Some(42)));
    }

    #[test]
    fn defaults_with_only_a_schedule() {
        let c = load("[schedule]\nonce = true\n").unwrap();
        assert_eq!(c.schedule, Schedule::Once);
        assert_eq!(c.out_dir, PathBuf::from(DEFAULT_OUT));
        assert_eq!(c.retention, Retention::default());
        assert_eq!(c.thermal.pause_above_c, DEFAULT_PAUSE_ABOVE);
        assert_eq!(c.thermal.zone_types[0], "cpu-thermal");
        assert_eq!(c.serve, None);
        assert_eq!(c.gpio.button, None);
        assert_eq!(c.epaper, None);
        assert_eq!(c.generate, GenerateSpec::default());
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        assert_eq!(
            err("[schedule]\nevery = \"10x\"\n"),
            "kiosk.toml:2: schedule.every: `10x` is not a duration; write it like 10m, 1h30m, 90s or 2h"
        );
        let e = err("[schedule]\nevery = \"1m\"\n\n[retention]\nmax_bytes = \"lots\"\n");
        assert!(e.starts_with("kiosk.toml:5: retention.max_bytes: `lots` is not a size"), "{e}");
        // Wrong type: toml's message, our line and key.
        let e = err("[schedule]\nonce = true\n[retention]\nkeep = \"ten\"\n");
        assert!(e.starts_with("kiosk.toml:4: retention.keep: invalid type"), "{e}");
        // Unknown key.
        let e = err("[schedule]\nonce = true\n[gpio]\nbuton = 17\n");
        assert!(e.starts_with("kiosk.toml:4: gpio.buton: unknown field `buton`"), "{e}");
        // Syntax error.
        let e = err("[schedule]\nonce = tru\n");
        assert!(e.starts_with("kiosk.toml:2: schedule.once: "), "{e}");
        // Value checks.
        let e = err("[schedule]\nonce = true\n[thermal]\npause_above = 60\nresume_below = 70\n");
        assert!(e.starts_with("kiosk.toml:5: thermal.resume_below: resume temperature 70"), "{e}");
        let e = err("[schedule]\nonce = true\n[epaper]\npanel = \"kindle\"\n");
        assert!(e.contains("kiosk.toml:4: epaper.panel: unknown e-paper panel `kindle`; known panels: inky"), "{e}");
        let e = err("[schedule]\nonce = true\n[generate]\nsampler = \"dpm\"\n");
        assert!(e.starts_with("kiosk.toml:4: generate.sampler: unknown sampler `dpm`"), "{e}");
        let e = err("[schedule]\nonce = true\n[serve]\naddr = \"0.0.0.0:80\"\n");
        assert!(e.starts_with("kiosk.toml:4: serve.addr: 0.0.0.0:80 is reachable from the network"), "{e}");
        let e = err("[schedule]\nonce = true\n[gpio]\nbutton = 4\nled = 4\n");
        assert!(e.starts_with("kiosk.toml:5: gpio.led: the LED and the button are both on GPIO 4"), "{e}");
        let e = err("[schedule]\nevery = \"1h\"\ncron = \"0 * * * *\"\n");
        assert!(e.contains("give one schedule, not several (kiosk.toml:2: schedule.every, kiosk.toml:3: schedule.cron)"), "{e}");
        assert!(matches!(load("out = \"x\"\n"), Err(ConfigError::NoSchedule)));
    }

    #[test]
    fn flags_override_the_file_and_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "out = \"from-file\"\n[schedule]\ncron = \"0 * * * *\"\n[generate]\nsteps = 4\n").unwrap();
        let flags =
            Flags { config: Some(path.clone()), every: Some("5m".into()), steps: Some(9), serve: Some(String::new()), ..Flags::default() };
        let c = KioskConfig::load(flags).unwrap();
        assert_eq!(c.schedule, Schedule::every("5m").unwrap()); // the flag replaces the file's cron
        assert_eq!(c.out_dir, PathBuf::from("from-file"));
        assert_eq!(c.generate.steps, Some(9));
        assert_eq!(c.serve.unwrap().addr.to_string(), DEFAULT_ADDR);

        let bad = |f: Flags| KioskConfig::load(f).unwrap_err().to_string();
        let once = || Flags { once: true, ..Flags::default() };
        assert_eq!(
            bad(Flags { every: Some("soon".into()), ..Flags::default() }),
            "--every: `soon` is not a duration; write it like 10m, 1h30m, 90s or 2h"
        );
        assert!(bad(Flags { cron: Some("* *".into()), ..Flags::default() }).starts_with("--cron: `* *` is not a cron expression"));
        assert!(bad(Flags { keep: Some(0), ..once() }).starts_with("--keep: keep at least 1"));
        assert!(bad(Flags { serve: Some("0.0.0.0:80".into()), ..once() }).starts_with("--serve: 0.0.0.0:80 is reachable"));
        assert!(KioskConfig::load(Flags { serve: Some("0.0.0.0:80".into()), serve_remote: true, ..once() }).is_ok());
        assert!(bad(Flags { serve_remote: true, ..once() }).starts_with("--serve-remote: only makes sense"));
        assert!(bad(Flags { steps: Some(0), ..once() }).starts_with("--steps: take at least 1 step"));
        assert!(bad(Flags { button: Some(99), ..once() }).starts_with("--button: GPIO 99 does not exist"));
        assert!(bad(Flags { epaper_fit: Some("crop".into()), ..once() }).starts_with("--epaper-fit: `crop` needs --epaper PANEL"));
        assert!(bad(Flags { once: true, at: Some("08:00".into()), ..Flags::default() }).contains("give one schedule"));
        let missing = bad(Flags { config: Some(dir.path().join("nope.toml")), ..once() });
        assert!(missing.starts_with("could not read the config file"), "{missing}");
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("8081").unwrap().to_string(), "127.0.0.1:8081");
        assert_eq!(parse_addr("localhost:8082").unwrap().to_string(), "127.0.0.1:8082");
        assert_eq!(parse_addr("[::1]:8083").unwrap().to_string(), "[::1]:8083");
        assert!(parse_addr("here").is_err());
        assert!(parse_addr("127.0.0.1:99999").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("2gib"), Ok(2 << 30));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "MB", "-5MB", "5 parsecs", "0", "1e3"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        let c = load("[schedule]\nonce = true\n[retention]\nmax_bytes = 123456\n").unwrap();
        assert_eq!(c.retention.max_bytes, Some(123_456));
    }
}
