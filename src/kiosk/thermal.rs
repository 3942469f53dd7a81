//! Heat: the SoC temperature from the sysfs thermal zone found by its `type` (never by its
//! number, which changes between boards and kernels), a pause/resume hysteresis, and the
//! Raspberry Pi firmware's throttling flags decoded to names. Every path is under a root the
//! caller passes (`/sys` on a board), so tests run against a fake tree on any machine. This file
//! only reads; it never changes a governor or a fan.

use std::io;
use std::path::{Path, PathBuf};

/// Zone types tried in this order when none are configured: Raspberry Pi (`cpu-thermal`),
/// Jetson (`cpu-thermal`, `CPU-therm`), Rockchip (`soc-thermal`), Allwinner (`cpu_thermal`),
/// other SoCs (`soc_thermal`), and x86 laptops (`x86_pkg_temp`, then ACPI's `acpitz`).
pub const DEFAULT_ZONE_TYPES: &[&str] =
    &["cpu-thermal", "cpu_thermal", "CPU-therm", "soc-thermal", "soc_thermal", "x86_pkg_temp", "acpitz"];

/// Where the Pi firmware driver publishes `get_throttled`, relative to the sysfs root.
pub const PI_THROTTLED_FILE: &str = "devices/platform/soc/soc:firmware/get_throttled";

#[derive(Debug, thiserror::Error)]
pub enum ThermalError {
    #[error("no thermal zone of type {wanted} under {dir} (found: {found}); set `thermal.zone_types` to one of those found")]
    NoZone { wanted: String, dir: PathBuf, found: String },
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds `{text}`, not a temperature in millidegrees Celsius")]
    BadTemperature { path: PathBuf, text: String },
    #[error("{path} holds `{text}`, not the firmware's hexadecimal throttling bits")]
    BadThrottled { path: PathBuf, text: String },
    #[error("resume temperature {resume_below} °C must be below the pause temperature {pause_above} °C")]
    BadThresholds { pause_above: f32, resume_below: f32 },
}

/// The temperature file of one thermal zone, found by type.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermalZone {
    /// The zone's `type`, as the kernel names it.
    pub zone_type: String,
    /// `<root>/class/thermal/thermal_zoneN/temp`.
    pub temp_path: PathBuf,
}

impl ThermalZone {
    /// Finds the first zone whose `type` is in `types` (in the order of `types`, not of the
    /// zone numbers) under `<sysfs_root>/class/thermal`.
    pub fn find(sysfs_root: &Path, types: &[impl AsRef<str>]) -> Result<Self, ThermalError> {
        let dir = sysfs_root.join("class/thermal");
        let mut zones: Vec<(String, PathBuf)> = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|source| ThermalError::Read { path: dir.clone(), source })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("thermal_zone") {
                continue;
            }
            let path = entry.path();
            if let Ok(t) = std::fs::read_to_string(path.join("type")) {
                zones.push((t.trim().to_owned(), path.join("temp")));
            }
        }
        zones.sort_by(|a, b| a.1.cmp(&b.1));
        for wanted in types {
            if let Some((t, p)) = zones.iter().find(|(t, _)| t == wanted.as_ref()) {
                return Ok(Self { zone_type: t.clone(), temp_path: p.clone() });
            }
        }
        let list = |v: Vec<&str>| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        Err(ThermalError::NoZone {
            wanted: list(types.iter().map(|t| t.as_ref()).collect()),
            dir,
            found: list(zones.iter().map(|(t, _)| t.as_str()).collect()),
        })
    }

    /// The current temperature in °C (the file holds millidegrees).
    pub fn read_celsius(&self) -> Result<f32, ThermalError> {
        let text =
            std::fs::read_to_string(&self.temp_path).map_err(|source| ThermalError::Read { path: self.temp_path.clone(), source })?;
        let milli: i64 =
            text.trim().parse().map_err(|_| ThermalError::BadTemperature { path: self.temp_path.clone(), text: text.trim().to_owned() })?;
        Ok(milli as f32 / 1000.0)
    }
}

/// Pause above one temperature, resume only below a lower one, so a board hovering at the
/// threshold does not start and stop every minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    pause_above: f32,
    resume_below: f32,
    paused: bool,
}

impl Hysteresis {
    pub fn new(pause_above: f32, resume_below: f32) -> Result<Self, ThermalError> {
        if resume_below.partial_cmp(&pause_above) != Some(std::cmp::Ordering::Less) {
            return Err(ThermalError::BadThresholds { pause_above, resume_below });
        }
        Ok(Self { pause_above, resume_below, paused: false })
    }

    /// Feeds a reading; returns whether generation is paused now.
    pub fn update(&mut self, celsius: f32) -> bool {
        if self.paused {
            if celsius < self.resume_below {
                self.paused = false;
            }
        } else if celsius > self.pause_above {
            self.paused = true;
        }
        self.paused
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

/// The Raspberry Pi firmware's throttling bits (`get_throttled`, as `vcgencmd get_throttled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled(pub u32);

/// Bit number and name, for the bits the firmware documents.
const THROTTLE_BITS: &[(u32, &str)] = &[
    (0, "under-voltage"),
    (1, "frequency-capped"),
    (2, "throttled"),
    (3, "soft-temperature-limit"),
    (16, "under-voltage-occurred"),
    (17, "frequency-capped-occurred"),
    (18, "throttled-occurred"),
    (19, "soft-temperature-limit-occurred"),
];

impl Throttled {
    /// Parses the sysfs text (`50005`), also with a `0x` prefix or as vcgencmd prints it
    /// (`throttled=0x50005`).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let t = t.strip_prefix("throttled=").unwrap_or(t);
        let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
        if t.is_empty() {
            return None;
        }
        u32::from_str_radix(t, 16).ok().map(Self)
    }

    /// Reads the flags; `Ok(None)` where the file does not exist (not a Pi, or an old kernel).
    pub fn read(path: &Path) -> Result<Option<Self>, ThermalError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text)
                .map(Some)
                .ok_or_else(|| ThermalError::BadThrottled { path: path.to_owned(), text: text.trim().to_owned() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ThermalError::Read { path: path.to_owned(), source }),
        }
    }

    /// The names of the set bits, current conditions first; undocumented bits are left out.
    pub fn names(self) -> Vec<&'static str> {
        THROTTLE_BITS.iter().filter(|(bit, _)| self.0 & (1 << bit) != 0).map(|&(_, name)| name).collect()
    }

    /// Whether any condition is active now (bits 0-3).
    pub fn active_now(self) -> bool {
        self.0 & 0xf != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys` with the given zones (type, millidegrees), numbered in order.
    fn fake_sysfs(zones: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (i, (t, temp)) in zones.iter().enumerate() {
            let z = root.path().join(format!("class/thermal/thermal_zone{i}"));
            std::fs::create_dir_all(&z).unwrap();
            std::fs::write(z.join("type"), format!("{t}\n")).unwrap();
            std::fs::write(z.join("temp"), format!("{temp}\n")).unwrap();
        }
        // A cooling device beside the zones, as on real boards: not a zone.
        std::fs::create_dir_all(root.path().join("class/thermal/cooling_device0")).unwrap();
        root
    }

    #[test]
    fn finds_the_zone_by_type_not_number() {
        let root = fake_sysfs(&[("acpitz", "30000"), ("x86_pkg_temp", "52500"), ("cpu-thermal", "61234")]);
        let z = ThermalZone::find(root.path(), DEFAULT_ZONE_TYPES).unwrap();
        assert_eq!(z.zone_type, "cpu-thermal");
        assert!(z.temp_path.ends_with("thermal_zone2/temp"));
        assert_eq!(z.read_celsius().unwrap(), 61.234);
        // The configured order wins over the zone numbers.
        let z = ThermalZone::find(root.path(), &["x86_pkg_temp", "acpitz"]).unwrap();
        assert_eq!(z.read_celsius().unwrap(), 52.5);
    }

    #[test]
    fn missing_zone_lists_what_exists() {
        let root = fake_sysfs(&[("acpitz", "30000")]);
        let err = ThermalZone::find(root.path(), &["soc_thermal"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("soc_thermal") && msg.contains("found: acpitz"), "{msg}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(ThermalZone::find(empty.path(), &["cpu-thermal"]), Err(ThermalError::Read { .. })));
    }

    #[test]
    fn bad_temperature_text_is_an_error() {
        let root = fake_sysfs(&[("cpu-thermal", "hot")]);
        let z = ThermalZone::find(root.path(), &["cpu-thermal"]).unwrap();
        assert!(matches!(z.read_celsius(), Err(ThermalError::BadTemperature { .. })));
    }

    #[test]
    fn readings_follow_the_file() {
        let root = fake_sysfs(&[("cpu-thermal", "45000")]);
        let z = ThermalZone::find(root.path(), &["cpu-thermal"]).unwrap();
        let mut h = Hysteresis::new(80.0, 70.0).unwrap();
        let mut paused = Vec::new();
        for milli in ["45000", "80000", "80500", "75000", "70000", "69999", "81000"] {
            std::fs::write(&z.temp_path, milli).unwrap();
            paused.push(h.update(z.read_celsius().unwrap()));
        }
        assert_eq!(paused, [false, false, true, true, true, false, true]);
    }

    #[test]
    fn hysteresis_thresholds_must_be_ordered() {
        assert!(Hysteresis::new(70.0, 80.0).is_err());
        assert!(Hysteresis::new(70.0, 70.0).is_err());
        assert!(Hysteresis::new(f32::NAN, 60.0).is_err());
        assert!(!Hysteresis::new(80.0, 70.0).unwrap().is_paused());
    }

    #[test]
    fn throttled_bits_decode_to_names() {
        assert_eq!(Throttled::parse("0\n"), Some(Throttled(0)));
        assert_eq!(Throttled(0).names(), Vec::<&str>::new());
        let t = Throttled::parse("50005").unwrap();
        assert_eq!(t, Throttled(0x50005));
        assert_eq!(t.names(), ["under-voltage", "throttled", "under-voltage-occurred", "throttled-occurred"]);
        assert!(t.active_now());
        assert!(!Throttled(0x80000).active_now());
        assert_eq!(Throttled(0x80000).names(), ["soft-temperature-limit-occurred"]);
        assert_eq!(Throttled::parse("throttled=0xA"), Some(Throttled(0xa)));
        assert_eq!(Throttled(0xa).names(), ["frequency-capped", "soft-temperature-limit"]);
        assert_eq!(Throttled::parse("zz"), None);
        assert_eq!(Throttled::parse(""), None);
    }

    #[test]
    fn throttled_file_is_optional() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(PI_THROTTLED_FILE);
        assert_eq!(Throttled::read(&path).unwrap(), None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "20002\n").unwrap();
        let t = Throttled::read(&path).unwrap().unwrap();
        assert_eq!(t.names(), ["frequency-capped", "frequency-capped-occurred"]);
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(Throttled::read(&path), Err(ThermalError::BadThrottled { .. })));
    }
}
