//! `status.json`, the kiosk's heartbeat: what it is doing, when it last succeeded and failed,
//! when it runs next, the temperature and throttling flags, how many images it made. Written
//! atomically after every change and on a timer, so a reader (the display page, a monitoring
//! script) always parses a whole file and can tell a stale heartbeat by `updated`. Only this
//! struct and its writer live here; the loop decides when to write.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Serialize, Serializer};

use crate::output::write_atomic;

/// The file name in the output directory.
pub const STATUS_FILE: &str = "status.json";

/// What the kiosk is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for the next run.
    Idle,
    /// A generation is running.
    Generating,
    /// Too hot: waiting to cool below the resume temperature.
    PausedHot,
    /// Stopping after a signal.
    Stopping,
}

/// The last failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastError {
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    /// The one-line message (`{err:#}`).
    pub message: String,
}

/// The heartbeat. Times are RFC 3339 in UTC; absent values are `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub state: State,
    /// When this file was written.
    #[serde(serialize_with = "rfc3339")]
    pub updated: Timestamp,
    /// When the kiosk started.
    #[serde(serialize_with = "rfc3339")]
    pub started: Timestamp,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_success: Option<Timestamp>,
    /// The history file of the latest image (the page reloads `current.png` when it changes).
    pub last_image: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub next_run: Option<Timestamp>,
    pub last_error: Option<LastError>,
    /// Images made since the kiosk started.
    pub images_made: u64,
    /// Failed runs since the kiosk started.
    pub failures: u64,
    /// SoC temperature in °C; `null` where no thermal zone was found.
    pub temperature_c: Option<f32>,
    /// The thermal zone type the temperature comes from.
    pub thermal_zone: Option<String>,
    /// Raspberry Pi throttling flags by name (`under-voltage`, `throttled-occurred`...);
    /// `null` where the firmware file does not exist, `[]` when none is set.
    pub throttling: Option<Vec<&'static str>>,
    pub version: &'static str,
    pub pid: u32,
}

impl Status {
    /// A fresh status at `now`: idle, nothing made yet.
    pub fn new(now: Timestamp) -> Self {
        Self {
            state: State::Idle,
            updated: now,
            started: now,
            last_success: None,
            last_image: None,
            next_run: None,
            last_error: None,
            images_made: 0,
            failures: 0,
            temperature_c: None,
            thermal_zone: None,
            throttling: None,
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
        }
    }

    /// Records a successful run that stored `image` (a history file name).
    pub fn success(&mut self, at: Timestamp, image: impl Into<String>) {
        self.last_success = Some(at);
        self.last_image = Some(image.into());
        self.images_made += 1;
    }

    /// Records a failed run.
    pub fn failure(&mut self, at: Timestamp, message: impl Into<String>) {
        self.last_error = Some(LastError { at, message: message.into() });
        self.failures += 1;
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a status always serializes");
        v.push(b'\n');
        v
    }

    /// Sets `updated` to `now` and writes `DIR/status.json` atomically.
    pub fn write(&mut self, dir: &Path, now: Timestamp) -> Result<PathBuf, crate::output::OutputError> {
        self.updated = now;
        let path = dir.join(STATUS_FILE);
        write_atomic(&path, &self.to_json(), true)?;
        Ok(path)
    }
}

fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    // Whole seconds: a heartbeat needs no nanoseconds, and readers parse it more easily.
    let secs = Timestamp::from_second(t.as_second()).unwrap_or(*t);
    s.collect_str(&secs)
}

fn rfc3339_opt<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_every_field_with_readable_names() {
        let t0: Timestamp = "2026-12-06T21:00:00.123Z".parse().unwrap();
        let mut s = Status::new(t0);
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v["state"], "idle");
        assert_eq!(v["started"], "2026-12-06T21:00:00Z");
        assert!(v["last_success"].is_null() && v["throttling"].is_null());
        assert_eq!(v["images_made"], 0);

        s.state = State::PausedHot;
        s.temperature_c = Some(81.5);
        s.thermal_zone = Some("cpu-thermal".into());
        s.throttling = Some(vec!["soft-temperature-limit"]);
        s.next_run = Some("2026-12-06T22:00:00Z".parse().unwrap());
        s.success("2026-12-06T21:10:00Z".parse().unwrap(), "20261206T211000Z-s1.png");
        s.failure("2026-12-06T21:20:00Z".parse().unwrap(), "model returned NaN");
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v["state"], "paused-hot");
        assert_eq!(v["temperature_c"], 81.5);
        assert_eq!(v["throttling"][0], "soft-temperature-limit");
        assert_eq!(v["last_success"], "2026-12-06T21:10:00Z");
        assert_eq!(v["last_image"], "20261206T211000Z-s1.png");
        assert_eq!(v["next_run"], "2026-12-06T22:00:00Z");
        assert_eq!(v["last_error"]["message"], "model returned NaN");
        assert_eq!(v["last_error"]["at"], "2026-12-06T21:20:00Z");
        assert_eq!((v["images_made"].as_u64(), v["failures"].as_u64()), (Some(1), Some(1)));
        let states: Vec<String> = [State::Idle, State::Generating, State::PausedHot, State::Stopping]
            .iter()
            .map(|s| serde_json::to_value(s).unwrap().as_str().unwrap().to_owned())
            .collect();
        assert_eq!(states, ["idle", "generating", "paused-hot", "stopping"]);
    }

    #[test]
    fn write_replaces_the_file_atomically_and_stamps_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Status::new("2026-01-01T00:00:00Z".parse().unwrap());
        s.write(dir.path(), "2026-01-01T00:00:05Z".parse().unwrap()).unwrap();
        s.state = State::Generating;
        let path = s.write(dir.path(), "2026-01-01T00:00:10Z".parse().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["state"], "generating");
        assert_eq!(v["updated"], "2026-01-01T00:00:10Z");
        // Only the file itself: no temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [STATUS_FILE]);
    }
}
