//! `dualscale kiosk` as a service runs it: the real binary, the small diffusers UNet (16x16 RGB)
//! so runs are quick, real signals, a fake sysfs tree for heat, real HTTP for the page.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{command, repo};

fn unet() -> String {
    repo().join("tests/fixtures/unet/model.onnx").to_str().unwrap().to_owned()
}

fn kiosk(args: &[&str]) -> Child {
    command().arg("kiosk").args(args).env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn status(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join("status.json")).ok()?).ok()
}

/// Waits (up to 120 s, qemu included) until `ok` holds.
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn history_images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("history"))
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "png")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn no_temporary_files(dir: &Path) {
    for d in [dir.to_path_buf(), dir.join("history")] {
        for e in std::fs::read_dir(&d).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "temporary file {name} left in {}", d.display());
        }
    }
}

fn signal(child: &Child, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

#[test]
fn once_writes_history_current_and_status() {
    let out = tempfile::tempdir().unwrap();
    let o = command().args(["kiosk", "--once", "--model", &unet(), "--steps", "3", "--out"]).arg(out.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(history_images(out.path()).len(), 1);
    let current = std::fs::read(out.path().join("current.png")).unwrap();
    assert_eq!(current, std::fs::read(&history_images(out.path())[0]).unwrap());
    assert_eq!(image::load_from_memory(&current).unwrap().width(), 16);
    let s = status(out.path()).unwrap();
    assert_eq!(s["images_made"], 1, "{s}");
    assert_eq!(s["state"], "idle", "{s}");
    assert!(s["last_error"].is_null(), "{s}");
    no_temporary_files(out.path());
}

#[test]
fn sigterm_stops_cleanly_with_0_and_sigint_with_130() {
    for (sig, code) in [("-TERM", 0), ("-INT", 130)] {
        let out = tempfile::tempdir().unwrap();
        let child = kiosk(&["--every", "1s", "--model", &unet(), "--steps", "2", "--out", out.path().to_str().unwrap()]);
        wait_for("two images", || status(out.path()).is_some_and(|s| s["images_made"].as_u64() >= Some(2)));
        signal(&child, sig);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{sig}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
        let images = history_images(out.path());
        assert!(images.len() >= 2, "{sig}");
        for img in &images {
            image::open(img).unwrap_or_else(|e| panic!("{sig}: {} is not a complete PNG: {e}", img.display()));
        }
        assert_eq!(status(out.path()).unwrap()["state"], "stopping");
        no_temporary_files(out.path());
    }
}

#[test]
fn a_run_killed_mid_way_resumes_to_the_same_image() {
    let args = |dir: &Path| -> Vec<String> {
        ["--once", "--model", &unet(), "--sampler", "ddim", "--steps", "40", "--seed", "7", "--out", dir.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    // The image of an uninterrupted run.
    let reference = tempfile::tempdir().unwrap();
    let o = command().arg("kiosk").args(args(reference.path())).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = std::fs::read(reference.path().join("current.png")).unwrap();

    // The same run, killed (SIGKILL, as a power cut) once the journal holds some evaluations.
    let out = tempfile::tempdir().unwrap();
    let mut child = command().arg("kiosk").args(args(out.path())).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let journal = out.path().join(".run.journal");
    wait_for("a journal of a few evaluations", || std::fs::metadata(&journal).is_ok_and(|m| m.len() > 5 * 3 * 16 * 16 * 4));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(history_images(out.path()).is_empty(), "the run finished before the kill; make it longer");

    let o = command().arg("kiosk").args(args(out.path())).env("RUST_LOG", "info").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming seed 7 from"), "{}", stderr(&o));
    assert!(std::fs::read(out.path().join("current.png")).unwrap() == want, "the resumed image differs from the uninterrupted one");
    assert!(!journal.exists(), "the journal of a finished run is removed");
    no_temporary_files(out.path());
}

#[test]
fn heat_pauses_generation_until_the_soc_cools_down() {
    let dir = tempfile::tempdir().unwrap();
    // A fake sysfs: zone 0 is something else, zone 3 the SoC (found by type, not number).
    for (n, kind, temp) in [(0, "acpitz-not-this", "20000"), (3, "cpu-thermal", "85000")] {
        let z = dir.path().join(format!("sys/class/thermal/thermal_zone{n}"));
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(z.join("temp"), format!("{temp}\n")).unwrap();
    }
    let throttled = dir.path().join("get_throttled");
    std::fs::write(&throttled, "0x50005\n").unwrap();
    let out = dir.path().join("out");
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "out = {out:?}\n[schedule]\nonce = true\n[thermal]\npause_above = 80.0\nresume_below = 70.0\nzone_types = [\"cpu-thermal\"]\nsysfs = {:?}\nthrottle_file = {throttled:?}\n",
            dir.path().join("sys")
        ),
    )
    .unwrap();
    let child = kiosk(&["--config", config.to_str().unwrap(), "--model", &unet(), "--steps", "3"]);
    wait_for("the paused-hot state", || status(&out).is_some_and(|s| s["state"] == "paused-hot"));
    let s = status(&out).unwrap();
    assert_eq!(s["temperature_c"], 85.0, "{s}");
    assert_eq!(s["thermal_zone"], "cpu-thermal", "{s}");
    let flags: Vec<String> = s["throttling"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    assert!(flags.iter().any(|f| f.contains("under-voltage")), "{flags:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(history_images(&out).is_empty(), "generated while hot");
    // 75 °C is below the pause threshold but above the resume one: still paused.
    std::fs::write(dir.path().join("sys/class/thermal/thermal_zone3/temp"), "75000\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&out).unwrap()["state"], "paused-hot");
    std::fs::write(dir.path().join("sys/class/thermal/thermal_zone3/temp"), "60000\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(history_images(&out).len(), 1);
}

/// One HTTP/1.0 request on loopback; the status code and body.
fn http(addr: &str, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, buf[head_end + 4..].to_vec())
}

/// A kiosk that serves its page on a port the OS picks (read from its log), images every hour
/// (the first at once).
fn served_kiosk(out: &Path) -> (Child, String) {
    let mut child = kiosk(&["--every", "1h", "--serve", "127.0.0.1:0", "--model", &unet(), "--steps", "2", "--out", out.to_str().unwrap()]);
    let mut err = child.stderr.take().unwrap();
    let addr = {
        let mut text = String::new();
        let mut byte = [0u8; 1];
        while !text.contains("display page on http://") || !text.ends_with('\n') {
            assert_eq!(err.read(&mut byte).unwrap(), 1, "kiosk ended: {text}");
            text.push(byte[0] as char);
        }
        let line = text.lines().find(|l| l.contains("display page on http://")).unwrap();
        line.split("http://").nth(1).unwrap().trim_end_matches('/').to_owned()
    };
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    (child, addr)
}

#[test]
fn the_page_serves_status_and_its_button_starts_a_run() {
    let out = tempfile::tempdir().unwrap();
    let (mut child, addr) = served_kiosk(out.path());
    wait_for("the first image", || status(out.path()).is_some_and(|s| s["images_made"] == 1));
    let (code, page) = http(&addr, "GET", "/");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&page).contains("current.png"));
    let (code, body) = http(&addr, "GET", "/status.json");
    assert_eq!(code, 200);
    let s: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s["images_made"], 1);
    let (code, png) = http(&addr, "GET", "/current.png");
    assert_eq!(code, 200);
    assert!(image::load_from_memory(&png).is_ok());
    // The page's button: a second image an hour before the schedule's.
    let (code, _) = http(&addr, "POST", "/generate");
    assert_eq!(code, 202);
    wait_for("the requested image", || status(out.path()).is_some_and(|s| s["images_made"] == 2));
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// A WebDriver session with headless Chromium (Debian's `chromium` and `chromium-driver`),
/// spoken over plain HTTP.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Option<Browser> {
        let which = |b: &str| std::process::Command::new("which").arg(b).output().is_ok_and(|o| o.status.success());
        if !which("chromedriver") || !which("chromium") {
            eprintln!("skipped: needs Debian's chromium and chromium-driver (.ci/run installs them)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("127.0.0.1:{port}");
        wait_for("chromedriver", || std::net::TcpStream::connect(&base).is_ok());
        let profile = tempfile::tempdir().unwrap();
        let args = serde_json::json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let mut b = Browser { driver, base, session: String::new(), _profile: profile };
        let r = b.call("POST", "/session", &caps);
        b.session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_owned();
        Some(b)
    }

    fn call(&self, method: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(&self.base).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", self.base, body.len()).unwrap();
        // Read the head, then exactly Content-Length bytes (the driver may keep the socket open).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "chromedriver closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "chromedriver closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(serde_json::Value::Null)
    }

    fn session_call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(method, &format!("/session/{}{path}", self.session), &body)
    }

    fn script(&self, js: &str) -> serde_json::Value {
        self.session_call("POST", "/execute/sync", serde_json::json!({"script": js, "args": []}))["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.session_call("DELETE", "", serde_json::json!({}));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn in_chromium_the_page_shows_the_image_and_its_button_brings_a_new_one() {
    let out = tempfile::tempdir().unwrap();
    let (child, addr) = served_kiosk(out.path());
    let Some(browser) = Browser::start() else {
        signal(&child, "-TERM");
        return;
    };
    wait_for("the first image", || status(out.path()).is_some_and(|s| s["images_made"] == 1));
    browser.session_call("POST", "/url", serde_json::json!({"url": format!("http://{addr}/")}));
    let shown = || browser.script("const i = document.getElementById('img'); return [i.src, i.complete ? i.naturalWidth : 0];");
    wait_for("the image on the page", || {
        let v = shown();
        v[0].as_str().is_some_and(|s| s.contains("current.png")) && v[1] == 16
    });
    let first = shown()[0].as_str().unwrap().to_owned();
    // The on-screen button: a run, then the new image replaces the old one on the page.
    let button = browser.session_call("POST", "/element", serde_json::json!({"using": "css selector", "value": "#gen"}));
    let id = button["value"].as_object().and_then(|o| o.values().next()).and_then(|v| v.as_str()).unwrap().to_owned();
    browser.session_call("POST", &format!("/element/{id}/click"), serde_json::json!({}));
    wait_for("the requested image", || status(out.path()).is_some_and(|s| s["images_made"] == 2));
    wait_for("the new image on the page", || {
        let v = shown();
        v[0].as_str().is_some_and(|s| s.contains("current.png") && s != first) && v[1] == 16
    });
    drop(browser);
    signal(&child, "-TERM");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
}

/// Resident memory (kB) and open file descriptors of a process, from /proc.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (rss, fds)
}

/// Under qemu (ARM CI) a generation is ~50x slower: fewer of them.
fn scaled(native: u64, emulated: u64) -> u64 {
    if std::env::var_os("DUALSCALE_TEST_RUNNER").is_some() {
        emulated
    } else {
        native
    }
}

#[test]
fn soak_memory_and_file_descriptors_stay_flat() {
    let out = tempfile::tempdir().unwrap();
    let total = scaled(200, 20);
    let child = kiosk(&["--every", "10ms", "--keep", "10", "--model", &unet(), "--steps", "1", "--out", out.path().to_str().unwrap()]);
    let made = || status(out.path()).and_then(|s| s["images_made"].as_u64()).unwrap_or(0);
    wait_for("5 images", || made() >= 5);
    let (rss0, fds0) = rss_and_fds(child.id());
    let start = Instant::now();
    while made() < total {
        assert!(start.elapsed() < Duration::from_secs(600), "only {} of {total} images", made());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (rss1, fds1) = rss_and_fds(child.id());
    eprintln!("soak: {} images; RSS {rss0} kB after 5, {rss1} kB after {total}; open fds {fds0} -> {fds1}", made());
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(rss1 < rss0 + 8 * 1024, "resident memory grew from {rss0} kB to {rss1} kB");
    assert!(fds1 <= fds0 + 2, "open file descriptors grew from {fds0} to {fds1}");
    // Retention kept at most 10 images, all complete.
    let images = history_images(out.path());
    assert!(images.len() <= 10, "{} images kept", images.len());
    for img in &images {
        image::open(img).unwrap();
    }
    no_temporary_files(out.path());
}

#[test]
fn sigterm_and_kill_at_random_points_never_leave_partial_files() {
    let out = tempfile::tempdir().unwrap();
    let rounds = scaled(24, 4);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut terms, mut kills) = (0, 0);
    for round in 0..rounds {
        let mut child = command()
            .args(["kiosk", "--every", "10ms", "--model", &unet(), "--steps", "8", "--out", out.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Signals before the handlers exist would kill it by default: wait until it runs.
        let pid = child.id();
        wait_for("the kiosk to start", || status(out.path()).is_some_and(|s| s["pid"] == pid));
        // xorshift: a delay of 20-400 ms (times 20 under qemu) into the run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis((20 + rng % 380) * scaled(1, 20));
        std::thread::sleep(delay);
        if round % 2 == 0 {
            signal(&child, "-TERM");
            let code = child.wait().unwrap().code();
            assert_eq!(code, Some(0), "round {round}: SIGTERM after {delay:?}");
            terms += 1;
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        // Whatever the moment: current.png, if any, and every history image are complete PNGs;
        // the only temporary files a kill may leave are cleaned at the next start.
        if let Ok(bytes) = std::fs::read(out.path().join("current.png")) {
            image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("round {round}: current.png is not a complete PNG: {e}"));
        }
        for img in history_images(out.path()) {
            image::open(&img).unwrap_or_else(|e| panic!("round {round}: {} is not a complete PNG: {e}", img.display()));
        }
    }
    // One last start cleans what a kill left and finishes normally.
    let o =
        command().args(["kiosk", "--once", "--model", &unet(), "--steps", "2", "--out", out.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    no_temporary_files(out.path());
    eprintln!(
        "faults: {terms} SIGTERM and {kills} SIGKILL at random points; {} complete images, no partial file",
        history_images(out.path()).len()
    );
}
