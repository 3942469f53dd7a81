//! GPIO for the kiosk: a push button (pull-up input, pressed = low, debounced) that asks for a
//! generation, and a status LED (on while generating, blinking after an error, off when idle and
//! on exit). The pins sit behind two tiny traits so the logic is tested with fakes and an
//! injected clock; the Raspberry Pi implementation (rppal) exists only with the `gpio` feature on
//! Linux. Nothing here is needed for output: a kiosk without pins never touches this file's
//! hardware side, and a machine that is not a Pi gets a typed error, never a panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default debounce window: mechanical buttons bounce for 1-20 ms.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(30);
/// Blink half-period of the LED after an error (on 250 ms, off 250 ms).
pub const BLINK_HALF_PERIOD: Duration = Duration::from_millis(250);

/// A digital input whose level can be read.
pub trait InputPin: Send {
    /// Whether the pin reads low (a pull-up button is pressed).
    fn is_low(&self) -> bool;
}

/// A digital output.
pub trait OutputPin: Send {
    fn set(&mut self, high: bool);
}

/// Turns raw levels sampled over time into presses: a new level counts only after it has been
/// stable for the debounce window, and a press is reported once, on the stable high-to-low edge.
#[derive(Debug, Clone)]
pub struct Debouncer {
    window: Duration,
    stable_pressed: bool,
    candidate: Option<(bool, Instant)>,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Self { window, stable_pressed: false, candidate: None }
    }

    /// Feeds one sample; returns `true` once per debounced press.
    pub fn update(&mut self, pressed: bool, now: Instant) -> bool {
        if pressed == self.stable_pressed {
            self.candidate = None;
            return false;
        }
        match self.candidate {
            Some((level, since)) if level == pressed => {
                if now.saturating_duration_since(since) >= self.window {
                    self.stable_pressed = pressed;
                    self.candidate = None;
                    return pressed;
                }
                false
            }
            _ => {
                self.candidate = Some((pressed, now));
                // A zero window accepts the change at once.
                if self.window.is_zero() {
                    self.stable_pressed = pressed;
                    self.candidate = None;
                    return pressed;
                }
                false
            }
        }
    }

    pub fn is_pressed(&self) -> bool {
        self.stable_pressed
    }
}

/// A pull-up push button: poll it every few milliseconds.
pub struct Button<P: InputPin> {
    pin: P,
    debouncer: Debouncer,
}

impl<P: InputPin> Button<P> {
    pub fn new(pin: P, debounce: Duration) -> Self {
        Self { pin, debouncer: Debouncer::new(debounce) }
    }

    /// Samples the pin; `true` once per debounced press.
    pub fn poll(&mut self, now: Instant) -> bool {
        let low = self.pin.is_low();
        self.debouncer.update(low, now)
    }
}

/// What the status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedMode {
    Off,
    /// Generating.
    On,
    /// The last run failed (until the next one succeeds).
    Blink,
}

/// The status LED. Call [`Led::tick`] every ~50 ms so blinking shows; it is switched off when
/// dropped (on exit), whatever it showed.
pub struct Led<P: OutputPin> {
    pin: P,
    mode: LedMode,
    since: Instant,
    lit: bool,
}

impl<P: OutputPin> Led<P> {
    pub fn new(mut pin: P, now: Instant) -> Self {
        pin.set(false);
        Self { pin, mode: LedMode::Off, since: now, lit: false }
    }

    pub fn set_mode(&mut self, mode: LedMode, now: Instant) {
        if mode != self.mode {
            self.mode = mode;
            self.since = now;
        }
        self.tick(now);
    }

    pub fn mode(&self) -> LedMode {
        self.mode
    }

    /// Updates the pin for `now` (only writes it when the level changes).
    pub fn tick(&mut self, now: Instant) {
        let lit = match self.mode {
            LedMode::Off => false,
            LedMode::On => true,
            LedMode::Blink => {
                let half = BLINK_HALF_PERIOD.as_millis().max(1);
                (now.saturating_duration_since(self.since).as_millis() / half) % 2 == 0
            }
        };
        if lit != self.lit {
            self.pin.set(lit);
            self.lit = lit;
        }
    }
}

impl<P: OutputPin> Drop for Led<P> {
    fn drop(&mut self) {
        self.pin.set(false);
    }
}

/// A fake button for tests: set its level from the test, read it from the code under test.
#[derive(Debug, Clone, Default)]
pub struct FakeInput(pub Arc<AtomicBool>);

impl FakeInput {
    /// Presses (low) or releases (high) the button.
    pub fn set_pressed(&self, pressed: bool) {
        self.0.store(pressed, Ordering::SeqCst);
    }
}

impl InputPin for FakeInput {
    fn is_low(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A fake LED for tests: records every level written.
#[derive(Debug, Clone, Default)]
pub struct FakeOutput(pub Arc<Mutex<Vec<bool>>>);

impl FakeOutput {
    pub fn writes(&self) -> Vec<bool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn level(&self) -> bool {
        self.writes().last().copied().unwrap_or(false)
    }
}

impl OutputPin for FakeOutput {
    fn set(&mut self, high: bool) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(high);
    }
}

/// GPIO could not be opened; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("GPIO pins were configured but this build has no GPIO support; rebuild with `--features gpio` (Raspberry Pi, Linux) or remove the `gpio` settings")]
    NotBuilt,
    #[error("GPIO needs a Raspberry Pi, and this machine is not one (rppal cannot identify the board); remove the `gpio` settings (--button, --led) to run without pins")]
    NotAPi,
    #[error("no GPIO pin {0} on this board; pins are BCM numbers (GPIO17 is header pin 11), 0-27 on a 40-pin header")]
    NoSuchPin(u8),
    #[error("GPIO pin {0} is already in use (button and LED on the same pin, or another program holds it); pick another pin")]
    PinBusy(u8),
    #[error("permission denied opening {0}; add the service user to the `gpio` group")]
    Permission(String),
    #[error("GPIO failed: {0}")]
    Other(String),
}

#[cfg(all(feature = "gpio", target_os = "linux"))]
mod rpi {
    use super::{GpioError, InputPin, OutputPin};

    impl From<rppal::gpio::Error> for GpioError {
        fn from(e: rppal::gpio::Error) -> Self {
            use rppal::gpio::Error as E;
            match e {
                E::UnknownModel => GpioError::NotAPi,
                E::PinNotAvailable(p) => GpioError::NoSuchPin(p),
                E::PinUsed(p) => GpioError::PinBusy(p),
                E::PermissionDenied(path) => GpioError::Permission(path),
                other => GpioError::Other(other.to_string()),
            }
        }
    }

    impl InputPin for rppal::gpio::InputPin {
        fn is_low(&self) -> bool {
            rppal::gpio::InputPin::is_low(self)
        }
    }

    impl OutputPin for rppal::gpio::OutputPin {
        fn set(&mut self, high: bool) {
            if high {
                self.set_high();
            } else {
                self.set_low();
            }
        }
    }

    /// Opens the button pin (pull-up input) and the LED pin (output, low) by BCM number.
    pub fn open(button: Option<u8>, led: Option<u8>) -> Result<(Option<rppal::gpio::InputPin>, Option<rppal::gpio::OutputPin>), GpioError> {
        let gpio = rppal::gpio::Gpio::new()?;
        let button = match button {
            Some(p) => Some(gpio.get(p)?.into_input_pullup()),
            None => None,
        };
        let led = match led {
            Some(p) => {
                let mut pin = gpio.get(p)?.into_output_low();
                // rppal restores the pin's previous mode when the pin is dropped.
                pin.set_reset_on_drop(true);
                Some(pin)
            }
            None => None,
        };
        Ok((button, led))
    }
}

/// The pins of this build: boxed so the kiosk loop does not care which implementation it has.
pub type Pins = (Option<Box<dyn InputPin>>, Option<Box<dyn OutputPin>>);

impl InputPin for Box<dyn InputPin> {
    fn is_low(&self) -> bool {
        (**self).is_low()
    }
}

impl OutputPin for Box<dyn OutputPin> {
    fn set(&mut self, high: bool) {
        (**self).set(high)
    }
}

/// Opens the configured pins: nothing when none is configured; the Pi's pins in a `gpio` build
/// on Linux; otherwise [`GpioError::NotBuilt`].
pub fn open(button: Option<u8>, led: Option<u8>) -> Result<Pins, GpioError> {
    if button.is_none() && led.is_none() {
        return Ok((None, None));
    }
    if let (Some(b), Some(l)) = (button, led) {
        if b == l {
            return Err(GpioError::PinBusy(b));
        }
    }
    open_hw(button, led)
}

#[cfg(all(feature = "gpio", target_os = "linux"))]
fn open_hw(button: Option<u8>, led: Option<u8>) -> Result<Pins, GpioError> {
    let (b, l) = rpi::open(button, led)?;
    Ok((b.map(|p| Box::new(p) as Box<dyn InputPin>), l.map(|p| Box::new(p) as Box<dyn OutputPin>)))
}

#[cfg(not(all(feature = "gpio", target_os = "linux")))]
fn open_hw(_button: Option<u8>, _led: Option<u8>) -> Result<Pins, GpioError> {
    Err(GpioError::NotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bounces_are_one_press() {
        let t0 = Instant::now();
        let input = FakeInput::default();
        let mut b = Button::new(input.clone(), DEFAULT_DEBOUNCE);
        let mut presses = 0;
        // Contact bounce for 8 ms, held 100 ms, bounce on release, released; sampled every 2 ms.
        let level = |t: u64| match t {
            0..=9 => t % 4 < 2,
            10..=109 => true,
            110..=117 => t % 4 >= 2,
            _ => false,
        };
        for t in (0..300).step_by(2) {
            input.set_pressed(level(t));
            presses += b.poll(t0 + t as u32 * MS) as usize;
        }
        assert_eq!(presses, 1);
        assert!(!b.debouncer.is_pressed());
    }

    #[test]
    fn glitches_shorter_than_the_window_are_ignored() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(30 * MS);
        // Low for 20 ms (a glitch), then high.
        for t in (0..20).step_by(5) {
            assert!(!d.update(true, t0 + t * MS));
        }
        assert!(!d.update(false, t0 + 20 * MS));
        assert!(!d.update(true, t0 + 40 * MS));
        assert!(!d.update(true, t0 + 69 * MS));
        assert!(d.update(true, t0 + 70 * MS)); // stable for 30 ms: a press
        assert!(!d.update(true, t0 + 200 * MS)); // held: still one press
                                                 // Two presses separated by a stable release are two.
        assert!(!d.update(false, t0 + 300 * MS));
        assert!(!d.update(false, t0 + 330 * MS));
        assert!(!d.update(true, t0 + 400 * MS));
        assert!(d.update(true, t0 + 430 * MS));
    }

    #[test]
    fn zero_window_reports_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO);
        assert!(d.update(true, t0));
        assert!(!d.update(true, t0));
        assert!(!d.update(false, t0));
        assert!(d.update(true, t0));
    }

    #[test]
    fn led_on_while_generating_blinks_on_error_and_is_off_on_drop() {
        let t0 = Instant::now();
        let out = FakeOutput::default();
        let mut led = Led::new(out.clone(), t0);
        assert!(!out.level());
        led.set_mode(LedMode::On, t0);
        assert!(out.level());
        led.tick(t0 + 1000 * MS);
        assert!(out.level());
        led.set_mode(LedMode::Blink, t0 + 2000 * MS);
        let mut levels = Vec::new();
        for k in 0..8 {
            led.tick(t0 + 2000 * MS + k * 125 * MS);
            levels.push(out.level());
        }
        assert_eq!(levels, [true, true, false, false, true, true, false, false]);
        led.set_mode(LedMode::Off, t0 + 3000 * MS);
        assert!(!out.level());
        led.set_mode(LedMode::On, t0 + 3100 * MS);
        let writes_before = out.writes().len();
        led.tick(t0 + 3200 * MS); // no change, no write
        assert_eq!(out.writes().len(), writes_before);
        drop(led);
        assert!(!out.level());
    }

    #[test]
    fn no_pins_needs_no_hardware_and_same_pin_twice_is_refused() {
        let (b, l) = open(None, None).unwrap();
        assert!(b.is_none() && l.is_none());
        assert!(matches!(open(Some(17), Some(17)), Err(GpioError::PinBusy(17))));
    }

    /// On this machine (not a Pi): a `gpio` build says so; a build without it says how to get it.
    #[test]
    fn asking_for_pins_off_a_pi_is_a_clear_error() {
        let is_pi = std::fs::read_to_string("/proc/device-tree/model").map(|m| m.contains("Raspberry Pi")).unwrap_or(false);
        if is_pi {
            eprintln!("skipped: this machine is a Raspberry Pi");
            return;
        }
        let err = open(Some(17), Some(27)).err().expect("GPIO off a Pi must fail");
        eprintln!("error: {err}");
        if cfg!(all(feature = "gpio", target_os = "linux")) {
            assert!(matches!(err, GpioError::NotAPi | GpioError::Permission(_)), "{err}");
        } else {
            assert!(matches!(err, GpioError::NotBuilt), "{err}");
        }
        assert!(!err.to_string().contains('\n'));
    }
}
