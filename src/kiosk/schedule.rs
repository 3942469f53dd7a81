//! When the kiosk runs: every N (monotonic clock), a cron expression or fixed times of day (local
//! wall clock), or once. [`Schedule`] is the pure rule (`next_run(after)`); [`Scheduler`] is the
//! small state machine the kiosk loop polls, with an injectable [`Clock`] so tests are exact.
//!
//! Rules it keeps: runs never overlap (the next run is computed when a run *ends*); a wall clock
//! that jumps forward (a Pi without RTC syncing NTP late) gives at most one catch-up run, never a
//! burst; a wall clock that jumps back re-arms instead of waiting out the gap; `--every` runs off
//! the monotonic clock, so wall-clock jumps do not move it at all. This file does no IO and never
//! sleeps: the caller sleeps for what [`Scheduler::poll`] says.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The longest wait [`Scheduler::poll`] returns, so that a loop sleeping on it notices a wall
/// clock jump (and a cron time that came closer) within this time.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// A schedule that cannot be used; the message says what was wrong and what to write instead.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("`{0}` is not a duration; write it like 10m, 1h30m, 90s or 2h")]
    BadDuration(String),
    #[error("an interval of {0:?} is too short; use at least 10ms")]
    TooShort(Duration),
    #[error("`{text}` is not a cron expression: {reason}; write five fields like `0 * * * *` (minute hour day month weekday)")]
    BadCron { text: String, reason: String },
    #[error("the cron expression `{0}` never matches a date; check the day and month fields")]
    CronNeverMatches(String),
    #[error("`{0}` is not a time of day; write HH:MM (24-hour, local time), several separated by commas, like 08:00,20:30")]
    BadTime(String),
    #[error("no time of day given; write HH:MM, several separated by commas, like 08:00,20:30")]
    NoTimes,
}

/// When runs happen.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A run, then `interval` after it ended, measured on the monotonic clock. The first run
    /// starts at once.
    Every(Duration),
    /// The times a cron expression matches, in the local time zone. Boxed: croner's `Cron` is large.
    Cron(Box<croner::Cron>),
    /// Fixed times of day in the local time zone, sorted, no duplicates.
    Times(Vec<Time>),
    /// One run at once, then nothing (for a systemd timer that starts the process).
    Once,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Every(a), Self::Every(b)) => a == b,
            (Self::Cron(a), Self::Cron(b)) => a.pattern.as_str() == b.pattern.as_str(),
            (Self::Times(a), Self::Times(b)) => a == b,
            (Self::Once, Self::Once) => true,
            _ => false,
        }
    }
}

impl Schedule {
    /// `--every`: a humane duration (`10m`, `1h30m`, `90s`, `2h 15m`), at least 10 ms (short
    /// pauses make a continuous stream of images; zero would spin on a failing model).
    pub fn every(text: &str) -> Result<Self, ScheduleError> {
        let d = humantime::parse_duration(text.trim()).map_err(|_| ScheduleError::BadDuration(text.to_owned()))?;
        if d < Duration::from_millis(10) {
            return Err(ScheduleError::TooShort(d));
        }
        Ok(Self::Every(d))
    }

    /// `--cron`: five fields (minute hour day-of-month month day-of-week), an optional leading
    /// seconds field, or a nickname (`@hourly`, `@daily`). Refused if it never matches.
    pub fn cron(text: &str) -> Result<Self, ScheduleError> {
        let cron = croner::Cron::from_str(text).map_err(|e| ScheduleError::BadCron { text: text.to_owned(), reason: e.to_string() })?;
        let schedule = Self::Cron(Box::new(cron));
        // A pattern like `0 0 30 2 *` parses but has no date; say so now, not at 3 a.m.
        if schedule.next_run(Timestamp::UNIX_EPOCH, &TimeZone::UTC).is_none() {
            return Err(ScheduleError::CronNeverMatches(text.to_owned()));
        }
        Ok(schedule)
    }

    /// `--at`: times of day in local time, `HH:MM` or `HH:MM:SS`, separated by commas.
    pub fn times(text: &str) -> Result<Self, ScheduleError> {
        Self::times_from(text.split(','))
    }

    /// Times of day from separate strings (a TOML array).
    pub fn times_from<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, ScheduleError> {
        let mut times = Vec::new();
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            times.push(parse_time_of_day(item)?);
        }
        if times.is_empty() {
            return Err(ScheduleError::NoTimes);
        }
        times.sort();
        times.dedup();
        Ok(Self::Times(times))
    }

    /// The first time after `after` (strictly) that this schedule names, for the wall-clock
    /// schedules; `None` for [`Schedule::Every`] and [`Schedule::Once`], which do not follow
    /// the wall clock, and for a cron expression with no further match.
    pub fn next_run(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Self::Every(_) | Self::Once => None,
            Self::Cron(cron) => cron.find_next_occurrence(&after.to_zoned(tz.clone()), false).ok().map(|z| z.timestamp()),
            Self::Times(times) => {
                let mut date = after.to_zoned(tz.clone()).date();
                // A time that falls in a DST gap resolves to the instant after the gap
                // (jiff's "compatible" rule); three days cover any gap or fold.
                for _ in 0..3 {
                    for &t in times {
                        let at = date.to_datetime(t).to_zoned(tz.clone()).ok()?.timestamp();
                        if at > after {
                            return Some(at);
                        }
                    }
                    date = date.tomorrow().ok()?;
                }
                None
            }
        }
    }

    /// Whether the schedule follows the wall clock (cron, times of day).
    fn is_wall(&self) -> bool {
        matches!(self, Self::Cron(_) | Self::Times(_))
    }
}

fn parse_time_of_day(text: &str) -> Result<Time, ScheduleError> {
    let bad = || ScheduleError::BadTime(text.to_owned());
    let mut parts = text.split(':');
    let mut field = |max: i8| -> Result<Option<i8>, ScheduleError> {
        match parts.next() {
            None => Ok(None),
            Some(p) if (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                let v: i8 = p.parse().map_err(|_| bad())?;
                if v > max {
                    return Err(bad());
                }
                Ok(Some(v))
            }
            Some(_) => Err(bad()),
        }
    };
    let h = field(23)?.ok_or_else(bad)?;
    let m = field(59)?.ok_or_else(bad)?;
    let s = field(59)?.unwrap_or(0);
    if parts.next().is_some() {
        return Err(bad());
    }
    Time::new(h, m, s, 0).map_err(|_| bad())
}

/// Where the scheduler reads the time: the wall clock (for cron and times of day, and for what
/// `status.json` shows) and the monotonic clock (for `--every`).
pub trait Clock {
    fn wall(&self) -> Timestamp;
    fn monotonic(&self) -> Instant;
}

/// The real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn wall(&self) -> Timestamp {
        (**self).wall()
    }
    fn monotonic(&self) -> Instant {
        (**self).monotonic()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn wall(&self) -> Timestamp {
        (**self).wall()
    }
    fn monotonic(&self) -> Instant {
        (**self).monotonic()
    }
}

/// A clock that moves only when told to, for tests: [`ManualClock::advance`] moves both clocks
/// together (time passing), [`ManualClock::jump_wall`] moves only the wall clock (an NTP step).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<(Timestamp, Instant)>,
}

impl ManualClock {
    pub fn new(wall: Timestamp) -> Self {
        Self { now: Mutex::new((wall, Instant::now())) }
    }
    /// Time passes: both clocks move by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        now.0 = now.0.checked_add(d).expect("manual clock overflow");
        now.1 += d;
    }
    /// The wall clock is set to `to`; the monotonic clock does not move.
    pub fn jump_wall(&self, to: Timestamp) {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).0 = to;
    }
}

impl Clock for ManualClock {
    fn wall(&self) -> Timestamp {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn monotonic(&self) -> Instant {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// What the kiosk loop should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Start a run now; the scheduler counts it as running until [`Scheduler::finished`].
    Due,
    /// Sleep this long (at most [`MAX_WAIT`]), then poll again.
    Wait(Duration),
    /// A run is in progress; nothing is due until it finishes.
    Running,
    /// Run-once mode, and the run is done: exit.
    Done,
}

/// A run is already in progress (the answer to a manual trigger during a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a generation is already running")]
pub struct AlreadyRunning;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Due when the monotonic clock reaches `at`.
    Mono {
        at: Instant,
    },
    /// Due when the wall clock reaches `at`; `armed` is the wall time it was computed at, to
    /// notice a clock that went back.
    Wall {
        at: Timestamp,
        armed: Timestamp,
    },
    Running,
    Done,
}

/// The schedule's state machine: poll it, start a run when it says [`Poll::Due`], and call
/// [`Scheduler::finished`] when the run ends (success or failure alike).
#[derive(Debug)]
pub struct Scheduler<C: Clock> {
    schedule: Schedule,
    tz: TimeZone,
    clock: C,
    state: State,
}

impl<C: Clock> Scheduler<C> {
    /// Arms the schedule from now: `Every` and `Once` are due at once, the wall-clock schedules
    /// at their next time.
    pub fn new(schedule: Schedule, tz: TimeZone, clock: C) -> Self {
        let mut s = Self { schedule, tz, clock, state: State::Done };
        s.state = match s.schedule {
            Schedule::Every(_) | Schedule::Once => State::Mono { at: s.clock.monotonic() },
            _ => s.arm_wall(),
        };
        s
    }

    fn arm_wall(&self) -> State {
        let now = self.clock.wall();
        match self.schedule.next_run(now, &self.tz) {
            Some(at) => State::Wall { at, armed: now },
            None => State::Done,
        }
    }

    /// Whether a run is due, how long to wait, or that a run is in progress. On `Due` the
    /// scheduler moves to running: polling again returns `Running` until `finished`.
    pub fn poll(&mut self) -> Poll {
        match self.state {
            State::Running => Poll::Running,
            State::Done => Poll::Done,
            State::Mono { at } => {
                let now = self.clock.monotonic();
                if now >= at {
                    self.state = State::Running;
                    Poll::Due
                } else {
                    Poll::Wait((at - now).min(MAX_WAIT))
                }
            }
            State::Wall { at, armed } => {
                let now = self.clock.wall();
                if now < armed {
                    // The wall clock went back: the old target may be days away. Re-arm from
                    // the new now.
                    self.state = self.arm_wall();
                    return self.poll();
                }
                if now >= at {
                    // However many times were missed (a forward jump), this is one run; the
                    // next target is computed when it ends.
                    self.state = State::Running;
                    Poll::Due
                } else {
                    Poll::Wait(duration_between(now, at).min(MAX_WAIT))
                }
            }
        }
    }

    /// A manual trigger (button, `POST /generate`): starts a run now unless one is running.
    /// The scheduled time stays what it was for cron and times of day; `--every` counts its
    /// interval from the end of this run.
    pub fn trigger(&mut self) -> Result<(), AlreadyRunning> {
        match self.state {
            State::Running => Err(AlreadyRunning),
            _ => {
                self.state = State::Running;
                Ok(())
            }
        }
    }

    /// A run ended (well or not): computes the next run from now.
    pub fn finished(&mut self) {
        self.state = match self.schedule {
            Schedule::Every(d) => State::Mono { at: self.clock.monotonic() + d },
            Schedule::Once => State::Done,
            _ => self.arm_wall(),
        };
    }

    /// Whether a run is in progress.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running)
    }

    /// The wall-clock time of the next run, for `status.json`; `None` while running, when done,
    /// or in run-once mode. For `--every` it is now plus the monotonic time left.
    pub fn next_run(&self) -> Option<Timestamp> {
        match self.state {
            State::Wall { at, .. } => Some(at),
            State::Mono { at } if !matches!(self.schedule, Schedule::Once) => {
                let left = at.saturating_duration_since(self.clock.monotonic());
                self.clock.wall().checked_add(left).ok()
            }
            _ => None,
        }
    }

    /// The schedule this scheduler follows.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Whether the wall clock matters to this schedule (cron, times of day).
    pub fn follows_wall_clock(&self) -> bool {
        self.schedule.is_wall()
    }
}

/// `to - from` as a std duration (zero if `to` is not after `from`).
fn duration_between(from: Timestamp, to: Timestamp) -> Duration {
    let ms = to.as_millisecond().saturating_sub(from.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const H: Duration = Duration::from_secs(3600);
    const M: Duration = Duration::from_secs(60);

    #[test]
    fn parses_humane_intervals_and_refuses_bad_ones() {
        assert_eq!(Schedule::every("10m").unwrap(), Schedule::Every(10 * M));
        assert_eq!(Schedule::every("1h30m").unwrap(), Schedule::Every(90 * M));
        assert_eq!(Schedule::every(" 90s ").unwrap(), Schedule::Every(90 * M / 60));
        assert_eq!(Schedule::every("10x").unwrap_err(), ScheduleError::BadDuration("10x".into()));
        assert!(matches!(Schedule::every("5ms").unwrap_err(), ScheduleError::TooShort(_)));
        assert!(Schedule::every("500ms").is_ok());
        assert!(Schedule::every("").is_err());
    }

    #[test]
    fn parses_times_of_day() {
        let s = Schedule::times("20:30, 08:00,08:00").unwrap();
        assert_eq!(s, Schedule::Times(vec![Time::new(8, 0, 0, 0).unwrap(), Time::new(20, 30, 0, 0).unwrap()]));
        assert!(Schedule::times("07:05:30").is_ok());
        for bad in ["24:00", "8", "08:60", "8h", "08:00:00:00", "-1:00", "08:+5"] {
            assert_eq!(Schedule::times(bad).unwrap_err(), ScheduleError::BadTime(bad.into()), "{bad}");
        }
        assert_eq!(Schedule::times(" , ").unwrap_err(), ScheduleError::NoTimes);
    }

    #[test]
    fn cron_parses_and_refuses_impossible_dates() {
        assert!(Schedule::cron("0 * * * *").is_ok());
        assert!(Schedule::cron("@daily").is_ok());
        assert!(matches!(Schedule::cron("61 * * * *").unwrap_err(), ScheduleError::BadCron { .. }));
        assert!(matches!(Schedule::cron("every hour").unwrap_err(), ScheduleError::BadCron { .. }));
        assert_eq!(Schedule::cron("0 0 30 2 *").unwrap_err(), ScheduleError::CronNeverMatches("0 0 30 2 *".into()));
    }

    #[test]
    fn next_run_of_cron_and_times_is_strictly_after_in_local_time() {
        let tz = TimeZone::fixed(jiff::tz::offset(2)); // UTC+2
        let cron = Schedule::cron("30 8 * * *").unwrap(); // 08:30 local = 06:30 UTC
        assert_eq!(cron.next_run(ts("2026-01-01T05:00:00Z"), &tz), Some(ts("2026-01-01T06:30:00Z")));
        // Exactly at a match: the next one, not the same instant.
        assert_eq!(cron.next_run(ts("2026-01-01T06:30:00Z"), &tz), Some(ts("2026-01-02T06:30:00Z")));
        let times = Schedule::times("08:00,20:30").unwrap();
        assert_eq!(
            times.next_run(ts("2026-01-01T07:00:00Z"), &tz), // 09:00 local
            Some(ts("2026-01-01T18:30:00Z"))
        );
        assert_eq!(
            times.next_run(ts("2026-01-01T18:30:00Z"), &tz), // 20:30 local: tomorrow 08:00
            Some(ts("2026-01-02T06:00:00Z"))
        );
        assert_eq!(Schedule::Every(M).next_run(ts("2026-01-01T00:00:00Z"), &tz), None);
        assert_eq!(Schedule::Once.next_run(ts("2026-01-01T00:00:00Z"), &tz), None);
    }

    #[test]
    fn times_of_day_follow_daylight_saving_time() {
        // Central Europe: 2026-03-29 02:00 CET -> 03:00 CEST.
        let tz = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let s = Schedule::times("08:00,02:30").unwrap();
        // 08:00 on the 28th is 07:00 UTC (CET), on the 29th 06:00 UTC (CEST).
        assert_eq!(
            s.next_run(ts("2026-03-28T07:00:00Z"), &tz),
            // 02:30 on the 29th does not exist; it runs right after the gap, 03:30 CEST.
            Some(ts("2026-03-29T01:30:00Z"))
        );
        assert_eq!(s.next_run(ts("2026-03-29T01:30:00Z"), &tz), Some(ts("2026-03-29T06:00:00Z")));
    }

    fn due_count<C: Clock>(s: &mut Scheduler<C>) -> usize {
        let mut n = 0;
        while s.poll() == Poll::Due {
            n += 1;
        }
        n
    }

    #[test]
    fn every_runs_at_start_then_interval_after_each_end() {
        let clock = ManualClock::new(ts("2026-01-01T00:00:00Z"));
        let mut s = Scheduler::new(Schedule::Every(10 * M), TimeZone::UTC, &clock);
        assert_eq!(s.poll(), Poll::Due);
        assert_eq!(s.poll(), Poll::Running);
        assert_eq!(s.next_run(), None);
        clock.advance(3 * M); // the run takes 3 minutes
        assert_eq!(s.poll(), Poll::Running); // never a second run while one runs
        s.finished();
        assert_eq!(s.next_run(), Some(ts("2026-01-01T00:13:00Z")));
        assert_eq!(s.poll(), Poll::Wait(MAX_WAIT));
        clock.advance(10 * M - Duration::from_secs(5));
        assert_eq!(s.poll(), Poll::Wait(Duration::from_secs(5)));
        clock.advance(Duration::from_secs(5));
        assert_eq!(s.poll(), Poll::Due);
    }

    #[test]
    fn every_ignores_wall_clock_jumps() {
        let clock = ManualClock::new(ts("1970-01-01T00:01:00Z")); // a Pi before NTP
        let mut s = Scheduler::new(Schedule::Every(10 * M), TimeZone::UTC, &clock);
        assert_eq!(due_count(&mut s), 1);
        s.finished();
        clock.advance(M);
        clock.jump_wall(ts("2026-06-01T12:00:00Z")); // NTP: 56 years forward
        assert_eq!(due_count(&mut s), 0);
        // The next run is still 9 minutes away, shown on the new wall clock.
        assert_eq!(s.next_run(), Some(ts("2026-06-01T12:09:00Z")));
        clock.jump_wall(ts("2026-05-01T12:00:00Z")); // and back a month
        assert_eq!(due_count(&mut s), 0);
        clock.advance(9 * M);
        assert_eq!(due_count(&mut s), 1);
    }

    #[test]
    fn forward_wall_jump_gives_one_catch_up_run_not_a_burst() {
        let clock = ManualClock::new(ts("2026-01-01T10:00:30Z"));
        let mut s = Scheduler::new(Schedule::cron("0 * * * *").unwrap(), TimeZone::UTC, &clock);
        assert_eq!(s.next_run(), Some(ts("2026-01-01T11:00:00Z")));
        assert_eq!(s.poll(), Poll::Wait(MAX_WAIT));
        // The clock steps forward three days: 75 hourly times were missed.
        clock.jump_wall(ts("2026-01-04T14:20:00Z"));
        assert_eq!(due_count(&mut s), 1);
        clock.advance(5 * M);
        s.finished();
        // Next from the end of the catch-up run, not from the missed times.
        assert_eq!(s.next_run(), Some(ts("2026-01-04T15:00:00Z")));
        assert_eq!(due_count(&mut s), 0);
        clock.advance(35 * M);
        assert_eq!(due_count(&mut s), 1);
    }

    #[test]
    fn backward_wall_jump_rearms_instead_of_waiting_out_the_gap() {
        let clock = ManualClock::new(ts("2026-01-10T10:00:30Z"));
        let mut s = Scheduler::new(Schedule::times("12:00").unwrap(), TimeZone::UTC, &clock);
        assert_eq!(s.next_run(), Some(ts("2026-01-10T12:00:00Z")));
        clock.jump_wall(ts("2026-01-01T11:59:45Z")); // nine days back
        assert_eq!(s.poll(), Poll::Wait(Duration::from_secs(15)));
        assert_eq!(s.next_run(), Some(ts("2026-01-01T12:00:00Z")));
        clock.advance(Duration::from_secs(15));
        assert_eq!(due_count(&mut s), 1);
    }

    #[test]
    fn a_run_longer_than_the_period_skips_missed_times() {
        let clock = ManualClock::new(ts("2026-01-01T09:59:00Z"));
        let mut s = Scheduler::new(Schedule::cron("0 * * * *").unwrap(), TimeZone::UTC, &clock);
        clock.advance(M);
        assert_eq!(due_count(&mut s), 1);
        clock.advance(150 * M); // 2.5 hours: 11:00 and 12:00 pass during the run
        assert_eq!(s.poll(), Poll::Running);
        s.finished();
        assert_eq!(s.next_run(), Some(ts("2026-01-01T13:00:00Z")));
        assert_eq!(due_count(&mut s), 0);
    }

    #[test]
    fn manual_trigger_never_overlaps_a_run() {
        let clock = ManualClock::new(ts("2026-01-01T10:00:00Z"));
        let mut s = Scheduler::new(Schedule::times("12:00").unwrap(), TimeZone::UTC, &clock);
        assert_eq!(s.trigger(), Ok(()));
        assert!(s.is_running());
        assert_eq!(s.trigger(), Err(AlreadyRunning));
        assert_eq!(s.poll(), Poll::Running);
        s.finished();
        assert_eq!(s.next_run(), Some(ts("2026-01-01T12:00:00Z")));
        assert_eq!(s.trigger(), Ok(()));
    }

    #[test]
    fn once_runs_once_then_is_done() {
        let clock = ManualClock::new(ts("2026-01-01T10:00:00Z"));
        let mut s = Scheduler::new(Schedule::Once, TimeZone::UTC, &clock);
        assert_eq!(s.next_run(), None);
        assert_eq!(due_count(&mut s), 1);
        s.finished();
        assert_eq!(s.poll(), Poll::Done);
        clock.advance(H);
        assert_eq!(s.poll(), Poll::Done);
    }
}
