//! The flags of `dualscale kiosk` (clap), turned into the plain [`Flags`] that
//! `kiosk::config` validates. Part of `cli`: clap types stop here. Not yet a subcommand: wiring
//! adds `Kiosk(KioskArgs)` to `cli::Command` when the kiosk loop exists.

use std::path::PathBuf;

use clap::Args;

use crate::kiosk::config::Flags;

/// Generate on a schedule into a directory; show the result on a local page, an e-paper panel.
#[derive(Debug, Args, Clone, Default)]
pub struct KioskArgs {
    /// A TOML config file (see examples/kiosk.toml); flags override its values.
    #[arg(long, short = 'c', value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Run, then again this long after each run ends: 10m, 1h30m, 90s.
    #[arg(long, value_name = "DURATION", group = "schedule")]
    pub every: Option<String>,
    /// Run at the times a cron expression names (local time): '0 * * * *', @daily.
    #[arg(long, value_name = "EXPR", group = "schedule")]
    pub cron: Option<String>,
    /// Run at fixed times of day (local time): 08:00,20:30.
    #[arg(long, value_name = "HH:MM,...", group = "schedule")]
    pub at: Option<String>,
    /// Run once and exit (for a systemd timer).
    #[arg(long, group = "schedule")]
    pub once: bool,
    /// Output directory: history/, current.png, status.json [default: kiosk-out].
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Keep at most this many images in history/.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Keep at most this much history: 500MB, 2GB, 750MiB.
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<String>,
    /// Pause generating above this SoC temperature, °C [default: 80].
    #[arg(long, value_name = "CELSIUS")]
    pub pause_above: Option<f32>,
    /// Resume below this SoC temperature, °C [default: 70].
    #[arg(long, value_name = "CELSIUS")]
    pub resume_below: Option<f32>,
    /// Thermal zone type to read (repeatable; first found wins) [default: cpu-thermal, soc_thermal, x86_pkg_temp, ...].
    #[arg(long = "thermal-zone", value_name = "TYPE")]
    pub thermal_zones: Vec<String>,
    /// Serve the display page; loopback only unless --serve-remote [default address: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
    pub serve: Option<String>,
    /// Allow --serve on an address other machines can reach.
    #[arg(long)]
    pub serve_remote: bool,
    /// GPIO (BCM) pin of a push button to ground that starts a generation (needs --features gpio).
    #[arg(long, value_name = "PIN")]
    pub button: Option<u8>,
    /// GPIO (BCM) pin of a status LED: on while generating, blinking after an error.
    #[arg(long, value_name = "PIN")]
    pub led: Option<u8>,
    /// Also write each image dithered for this e-paper panel (inky-impression-7.3, waveshare-4.2-bwr, ...).
    #[arg(long, value_name = "PANEL")]
    pub epaper: Option<String>,
    /// How the image fits the panel: letterbox or crop [default: letterbox].
    #[arg(long, value_name = "FIT")]
    pub epaper_fit: Option<String>,
    /// Model file (.onnx) [default: the embedded dual-scale landscape model].
    #[arg(long, short = 'm', value_name = "FILE.onnx")]
    pub model: Option<PathBuf>,
    /// Sampler [default: the model's].
    #[arg(long, value_enum)]
    pub sampler: Option<crate::sampler::SamplerKind>,
    /// Sampling steps.
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// First seed; each run takes the next.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl KioskArgs {
    /// The flag values, for `KioskConfig::load`.
    pub fn into_flags(self) -> Flags {
        Flags {
            config: self.config,
            every: self.every,
            cron: self.cron,
            at: self.at,
            once: self.once,
            out: self.out,
            keep: self.keep,
            max_bytes: self.max_bytes,
            pause_above: self.pause_above,
            resume_below: self.resume_below,
            thermal_zones: self.thermal_zones,
            sysfs: None,
            throttle_file: None,
            serve: self.serve,
            serve_remote: self.serve_remote,
            button: self.button,
            led: self.led,
            epaper: self.epaper,
            epaper_fit: self.epaper_fit,
            model: self.model,
            sampler: self.sampler.map(|k| k.name().to_owned()),
            steps: self.steps,
            seed: self.seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiosk::config::KioskConfig;
    use crate::kiosk::schedule::Schedule;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: KioskArgs,
    }

    fn parse(argv: &[&str]) -> Result<Flags, clap::Error> {
        Wrap::try_parse_from(std::iter::once("kiosk").chain(argv.iter().copied())).map(|w| w.args.into_flags())
    }

    #[test]
    fn flags_reach_the_config() {
        let f = parse(&["--every", "10m", "--serve", "--thermal-zone", "soc_thermal", "--seed", "7"]).unwrap();
        assert_eq!(f.serve.as_deref(), Some(""));
        let c = KioskConfig::load(f).unwrap();
        assert_eq!(c.schedule, Schedule::every("10m").unwrap());
        assert_eq!(c.serve.unwrap().addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.thermal.zone_types, ["soc_thermal"]);
        assert_eq!(c.generate.seed, Some(7));
        let f = parse(&["--once", "--serve", "127.0.0.1:9999"]).unwrap();
        assert_eq!(KioskConfig::load(f).unwrap().serve.unwrap().addr.port(), 9999);
    }

    #[test]
    fn two_schedules_are_a_usage_error() {
        let e = parse(&["--every", "10m", "--once"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
