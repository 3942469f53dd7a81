//! The local display page (`--serve`): `/` a self-contained page that shows `current.png`
//! full-screen and the kiosk's status, and reloads the image when `status.json` names a new one;
//! `/current.png` and `/status.json` straight from the output directory; `POST /generate`, the
//! on-screen button, which asks the kiosk loop for a run through the [`RunGate`] (409 while one
//! runs, 429 when asked too often). One thread, tiny_http, no JavaScript framework. It never
//! generates or writes anything itself, and it binds to a non-loopback address only when told to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response};

use super::history::CURRENT;
use super::status::STATUS_FILE;
use super::trigger::RunGate;

/// The default address of `--serve` without a value.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The default least time between two accepted `POST /generate`.
pub const DEFAULT_MIN_TRIGGER_INTERVAL: Duration = Duration::from_secs(10);

/// Where and how to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Serving on a non-loopback address is allowed only with this set (`--serve-remote`).
    pub allow_remote: bool,
    /// `POST /generate` sooner than this after the last accepted one gets 429.
    pub min_trigger_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing to serve on {0}: it is not a loopback address, so anyone on the network could see the page and start generations; add --serve-remote (`serve.allow_remote = true`) if that is what you want")]
    NotLoopback(SocketAddr),
    #[error("could not listen on {addr}: {message}; pick another port with --serve 127.0.0.1:PORT")]
    Bind { addr: SocketAddr, message: String },
}

/// The running server; stops (and joins its thread) when dropped.
pub struct Server {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Server {
    /// The address it listens on (the port the OS chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Binds and starts serving `out_dir` in a thread.
    pub fn start(cfg: &ServeConfig, out_dir: PathBuf, gate: Arc<RunGate>) -> Result<Self, ServerError> {
        if !cfg.addr.ip().is_loopback() && !cfg.allow_remote {
            return Err(ServerError::NotLoopback(cfg.addr));
        }
        let http = tiny_http::Server::http(cfg.addr).map_err(|e| ServerError::Bind { addr: cfg.addr, message: e.to_string() })?;
        let addr = http.server_addr().to_ip().unwrap_or(cfg.addr);
        let http = Arc::new(http);
        let mut handler = Handler { out_dir, gate, min_interval: cfg.min_trigger_interval, last_trigger: None };
        let server = Arc::clone(&http);
        let thread = std::thread::Builder::new()
            .name("kiosk-http".into())
            .spawn(move || {
                // Ends when `unblock` is called (on drop).
                for rq in server.incoming_requests() {
                    handler.handle(rq);
                }
            })
            .map_err(|e| ServerError::Bind { addr, message: e.to_string() })?;
        Ok(Self { http, thread: Some(thread), addr })
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Handler {
    out_dir: PathBuf,
    gate: Arc<RunGate>,
    min_interval: Duration,
    last_trigger: Option<Instant>,
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header names and values are ASCII")
}

fn request_header<'a>(rq: &'a Request, name: &'static str) -> Option<&'a str> {
    rq.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str())
}

type Reply = Response<std::io::Cursor<Vec<u8>>>;

fn text(code: u16, body: &str) -> Reply {
    Response::from_string(format!("{body}\n")).with_status_code(code).with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

impl Handler {
    fn handle(&mut self, rq: Request) {
        let path = rq.url().split('?').next().unwrap_or("/").to_owned();
        let reply = match (rq.method(), path.as_str()) {
            (Method::Get | Method::Head, "/") => Response::from_string(PAGE)
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header("Cache-Control", "no-cache")),
            (Method::Get | Method::Head, "/current.png") => self.file(&rq, CURRENT, "image/png"),
            (Method::Get | Method::Head, "/status.json") => self.file(&rq, STATUS_FILE, "application/json"),
            (Method::Post, "/generate") => self.generate(&rq),
            (_, "/" | "/current.png" | "/status.json" | "/generate") => text(405, "method not allowed"),
            _ => text(404, "not found"),
        };
        let reply = reply.with_header(header("X-Content-Type-Options", "nosniff"));
        // A client that went away is not our problem.
        let _ = rq.respond(reply);
    }

    /// A file of the output directory, with an ETag (size and mtime) so polling costs a 304.
    fn file(&self, rq: &Request, name: &str, mime: &str) -> Reply {
        let path = self.out_dir.join(name);
        let etag = match etag(&path) {
            Some(e) => e,
            None => return text(404, &format!("no {name} yet")),
        };
        if request_header(rq, "If-None-Match") == Some(etag.as_str()) {
            return Response::from_data(Vec::new()).with_status_code(304).with_header(header("ETag", &etag));
        }
        match std::fs::read(&path) {
            // The file is replaced by rename, so this read sees one whole version.
            Ok(bytes) => Response::from_data(bytes)
                .with_header(header("Content-Type", mime))
                .with_header(header("Cache-Control", "no-cache"))
                .with_header(header("ETag", &etag)),
            Err(_) => text(404, &format!("no {name} yet")),
        }
    }

    fn generate(&mut self, rq: &Request) -> Reply {
        // A page from another site may POST here (no preflight for a bodiless POST); browsers
        // say where it came from, and only this page's own origin may trigger.
        if let Some(origin) = request_header(rq, "Origin") {
            let host = request_header(rq, "Host").unwrap_or("");
            let origin_host = origin.split("://").nth(1).unwrap_or("");
            if origin_host != host {
                return text(403, "cross-origin request refused");
            }
        }
        let now = Instant::now();
        if let Some(last) = self.last_trigger {
            let since = now.saturating_duration_since(last);
            if since < self.min_interval {
                let wait = (self.min_interval - since).as_secs().max(1);
                return text(429, &format!("too many requests; try again in {wait} s"))
                    .with_header(header("Retry-After", &wait.to_string()));
            }
        }
        match self.gate.request() {
            Ok(()) => {
                self.last_trigger = Some(now);
                text(202, "generation requested")
            }
            Err(e) => text(409, &e.to_string()),
        }
    }
}

fn etag(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!("\"{:x}-{:x}\"", meta.len(), mtime.as_nanos()))
}

/// The display page: the image full-screen (object-fit: contain), a status line and a button at
/// the bottom; polls `status.json` every 3 s and swaps the image when `last_image` changes.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dualscale kiosk</title>
<style>
  html, body { margin: 0; height: 100%; background: #000; color: #ccc; font: 14px system-ui, sans-serif; overflow: hidden; }
  #img { position: fixed; inset: 0; width: 100vw; height: 100vh; object-fit: contain; image-rendering: pixelated; }
  #bar { position: fixed; left: 0; right: 0; bottom: 0; padding: 6px 10px; background: rgba(0,0,0,.55); display: flex; gap: 12px; align-items: center; }
  #info { flex: 1; }
  button { font: inherit; padding: 4px 12px; }
</style>
</head>
<body>
<img id="img" alt="">
<div id="bar"><span id="info">starting…</span><button id="gen" type="button">Generate</button></div>
<script>
const img = document.getElementById('img'), info = document.getElementById('info');
let shown = null;
async function tick() {
  try {
    const r = await fetch('status.json', { cache: 'no-store' });
    if (!r.ok) { info.textContent = 'waiting for the first status'; return; }
    const s = await r.json();
    const key = s.last_image || '';
    if (key && key !== shown) { shown = key; img.src = 'current.png?v=' + encodeURIComponent(key); }
    info.textContent = [
      s.state,
      s.images_made + ' made',
      s.temperature_c != null ? s.temperature_c.toFixed(1) + ' °C' : '',
      (s.throttling && s.throttling.length) ? s.throttling.join(', ') : '',
      s.next_run ? 'next ' + new Date(s.next_run).toLocaleTimeString() : '',
      s.last_error ? 'last error: ' + s.last_error.message : ''
    ].filter(Boolean).join(' · ');
  } catch (e) { info.textContent = 'kiosk not reachable'; }
}
document.getElementById('gen').onclick = async () => {
  const r = await fetch('generate', { method: 'POST' });
  info.textContent = { 202: 'generation requested', 409: 'already running', 429: 'wait a moment' }[r.status] || ('error ' + r.status);
  setTimeout(tick, 500);
};
tick();
setInterval(tick, 3000);
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    struct Reply {
        status: u16,
        headers: String,
        body: Vec<u8>,
    }

    /// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
    fn http(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Reply {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        Reply { status, headers: head.to_ascii_lowercase(), body: raw[split + 4..].to_vec() }
    }

    fn start(dir: &Path, min: Duration) -> (Server, Arc<RunGate>) {
        let gate = Arc::new(RunGate::new());
        let cfg = ServeConfig { addr: "127.0.0.1:0".parse().unwrap(), allow_remote: false, min_trigger_interval: min };
        (Server::start(&cfg, dir.to_owned(), Arc::clone(&gate)).unwrap(), gate)
    }

    #[test]
    fn serves_the_page_the_image_and_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let (server, _) = start(dir.path(), DEFAULT_MIN_TRIGGER_INTERVAL);
        let a = server.local_addr();
        let page = http(a, "GET", "/", "");
        assert_eq!(page.status, 200);
        assert!(page.headers.contains("content-type: text/html"));
        let html = String::from_utf8(page.body).unwrap();
        assert!(html.contains("current.png") && html.contains("status.json") && html.contains("'generate'"));
        // Nothing generated yet.
        assert_eq!(http(a, "GET", "/current.png", "").status, 404);
        assert_eq!(http(a, "GET", "/status.json", "").status, 404);

        std::fs::write(dir.path().join("current.png"), b"\x89PNG one").unwrap();
        std::fs::write(dir.path().join("status.json"), b"{\"state\":\"idle\"}").unwrap();
        let img = http(a, "GET", "/current.png?v=1", "");
        assert_eq!(img.status, 200);
        assert_eq!(img.body, b"\x89PNG one");
        assert!(img.headers.contains("content-type: image/png"));
        let etag = img.headers.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_owned();
        // Unchanged: 304 with no body. Replaced: 200 with the new bytes.
        let again = http(a, "GET", "/current.png", &format!("If-None-Match: {etag}\r\n"));
        assert_eq!((again.status, again.body.len()), (304, 0));
        std::fs::write(dir.path().join("current.png"), b"\x89PNG two, longer").unwrap();
        let new = http(a, "GET", "/current.png", &format!("If-None-Match: {etag}\r\n"));
        assert_eq!((new.status, new.body.as_slice()), (200, &b"\x89PNG two, longer"[..]));
        let st = http(a, "GET", "/status.json", "");
        assert_eq!(st.body, b"{\"state\":\"idle\"}");
        assert!(st.headers.contains("content-type: application/json"));

        assert_eq!(http(a, "GET", "/nope", "").status, 404);
        assert_eq!(http(a, "GET", "/generate", "").status, 405);
        assert_eq!(http(a, "GET", "/../etc/passwd", "").status, 404);
    }

    #[test]
    fn generate_is_one_at_a_time_and_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let (server, gate) = start(dir.path(), Duration::from_secs(3600));
        let a = server.local_addr();
        assert_eq!(http(a, "POST", "/generate", "").status, 202);
        assert!(gate.is_busy());
        let limited = http(a, "POST", "/generate", "");
        assert_eq!(limited.status, 429);
        assert!(limited.headers.contains("retry-after: "));
        drop(server);

        let (server, gate) = start(dir.path(), Duration::ZERO);
        let a = server.local_addr();
        assert_eq!(http(a, "POST", "/generate", "").status, 202);
        // Pending, then running: a second request is refused, not queued.
        assert_eq!(http(a, "POST", "/generate", "").status, 409);
        assert_eq!(gate.wait(Duration::ZERO), super::super::trigger::Wake::Request);
        let busy = http(a, "POST", "/generate", "");
        assert_eq!(busy.status, 409);
        assert!(String::from_utf8(busy.body).unwrap().contains("already running"));
        gate.finish();
        assert_eq!(http(a, "POST", "/generate", "").status, 202);
    }

    #[test]
    fn cross_origin_trigger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (server, gate) = start(dir.path(), Duration::ZERO);
        let a = server.local_addr();
        let r = http(a, "POST", "/generate", "Origin: http://evil.example\r\n");
        assert_eq!(r.status, 403);
        assert!(!gate.is_busy());
        let own = http(a, "POST", "/generate", &format!("Origin: http://{a}\r\n"));
        assert_eq!(own.status, 202);
    }

    #[test]
    fn non_loopback_needs_an_explicit_opt_in() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(RunGate::new());
        let mut cfg = ServeConfig { addr: "0.0.0.0:0".parse().unwrap(), allow_remote: false, min_trigger_interval: Duration::ZERO };
        let err = Server::start(&cfg, dir.path().to_owned(), Arc::clone(&gate)).err().unwrap();
        assert!(matches!(err, ServerError::NotLoopback(_)));
        assert!(err.to_string().contains("--serve-remote"));
        cfg.allow_remote = true;
        let server = Server::start(&cfg, dir.path().to_owned(), gate).unwrap();
        assert!(server.local_addr().port() != 0);
    }

    #[test]
    fn a_port_in_use_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (first, gate) = start(dir.path(), Duration::ZERO);
        let cfg = ServeConfig { addr: first.local_addr(), allow_remote: false, min_trigger_interval: Duration::ZERO };
        let err = Server::start(&cfg, dir.path().to_owned(), gate).err().unwrap();
        assert!(matches!(err, ServerError::Bind { .. }), "{err}");
    }
}
