//! What dualscale puts on disk: atomic file writes (every file is complete or absent), output
//! file names from a template, and the encodings of generated results (points as CSV or a
//! scatter-plot PNG, images as PNG with an A1111-style `parameters` text chunk).
//!
//! Only [`write_atomic`] touches the file system; the encoders return bytes. Nothing here runs a
//! model or writes anywhere but the path it is given; on any error no temporary file is left
//! behind. Bad input (a template, an option, a model output, a full disk) is an [`OutputError`],
//! never a panic; the one assertion is [`points_csv`]'s check of its caller's own array shape.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why an output could not be named, encoded or written. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output directory {} does not exist; create it or pass another --out", dir.display())]
    DirMissing { dir: PathBuf },
    #[error("output directory {} is not a directory; pass a directory to --out", dir.display())]
    NotADir { dir: PathBuf },
    #[error("cannot write in output directory {} ({source}); fix its permissions or pass another --out", dir.display())]
    Unwritable {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} exists; pass --overwrite to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("{} is a directory; name a file inside it instead", path.display())]
    IsADir { path: PathBuf },
    #[error("{} does not name a file; pass a path that ends in a file name", path.display())]
    NotAFileName { path: PathBuf },
    #[error("disk full while writing {}; free space and run again", path.display())]
    DiskFull { path: PathBuf },
    #[error("could not write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unknown placeholder {{{name}}} in the name template \"{template}\"; use {{model}}, {{seed}}, {{index}}, {{index:04}} or {{time}} (write {{{{ and }}}} for literal braces)")]
    UnknownPlaceholder { name: String, template: String },
    #[error("the name template \"{template}\" is malformed: {reason}")]
    BadTemplate { template: String, reason: String },
    #[error("the name template \"{template}\" gives \"{name}\", which {reason}; the template names a file, pass the directory with --out")]
    BadName {
        template: String,
        name: String,
        reason: &'static str,
    },
    #[error(
        "{len} coordinates do not make whole {dim}-dimensional points; pass {dim} values per point"
    )]
    RaggedPoints { len: usize, dim: usize },
    #[error("a scatter plot needs at least 2 coordinates per point, got {dim}; write the points as CSV or .npy instead")]
    PlotDim { dim: usize },
    #[error("invalid scatter plot option: {0}")]
    BadPlotOption(String),
    #[error("an image with {0} channels cannot be written as PNG; pass 1 (gray), 3 (RGB) or 4 (RGBA) channels")]
    BadChannels(usize),
    #[error("an image of {c}x{h}x{w} (CxHxW) needs {need} values but {got} were given; pass the model output for one image")]
    ImageLength {
        c: usize,
        h: usize,
        w: usize,
        need: u128,
        got: usize,
    },
    #[error("an image of {h}x{w} pixels cannot be written as PNG; both sides must be between 1 and 2^31 - 1")]
    ImageSize { h: usize, w: usize },
    #[error("could not encode the PNG: {0}")]
    Png(String),
}

// ---------------------------------------------------------------------------------------------
// Atomic writes
// ---------------------------------------------------------------------------------------------

/// Writes `bytes` to `path` so that the file is complete or absent, even across a crash or a
/// power cut: a temporary file in the same directory (`.NAME.XXXXXX.tmp`) is written, flushed,
/// fsynced, then renamed over `path` (if `overwrite`) or linked into place only if `path` does
/// not exist yet (if not), and finally the directory is fsynced. On any error the temporary
/// file is removed and `path` is untouched. The file gets the permissions `File::create` would
/// give it (a replaced file's old mode is not kept).
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), OutputError> {
    let file_name = match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => {
            return Err(OutputError::NotAFileName {
                path: path.to_owned(),
            })
        }
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(OutputError::NotADir {
                dir: dir.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(OutputError::DirMissing {
                dir: dir.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(OutputError::NotADir {
                dir: dir.to_owned(),
            })
        }
        Err(e) => return Err(classify(e, path, dir)),
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(OutputError::IsADir {
                path: path.to_owned(),
            })
        }
        Ok(_) if !overwrite => {
            return Err(OutputError::Exists {
                path: path.to_owned(),
            })
        }
        _ => {}
    }

    let prefix = format!(".{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile's default mode is 0600; outputs get the mode `File::create` would give them
    // (0666 less the umask), so that other users and services can read them.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| classify(e, path, dir))?;
    // From here on, dropping `tmp` (on any early return) deletes the temporary file.
    tmp.write_all(bytes)
        .and_then(|()| tmp.flush())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| classify(e, path, dir))?;
    persist(tmp, path, dir, overwrite)?;
    sync_dir(dir);
    Ok(())
}

/// Moves the finished temporary file to `path`. A failed rename hands the temporary file back
/// inside the error, and dropping it there deletes it.
fn persist(
    tmp: tempfile::NamedTempFile,
    path: &Path,
    dir: &Path,
    overwrite: bool,
) -> Result<(), OutputError> {
    let result = if overwrite {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    match result {
        Ok(_) => Ok(()),
        // Created by someone else between our check and the link.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Err(OutputError::Exists {
            path: path.to_owned(),
        }),
        Err(e) if e.error.kind() == io::ErrorKind::IsADirectory => Err(OutputError::IsADir {
            path: path.to_owned(),
        }),
        Err(e) => Err(classify(e.error, path, dir)),
    }
}

/// Makes the rename durable. Failure here is only logged: the file is already complete and in
/// place, and some file systems (FAT on SD cards via some drivers, network mounts) cannot fsync
/// a directory at all.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    {
        if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            log::warn!(
                "could not fsync directory {} after writing into it: {e}",
                dir.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Maps an IO error met while writing `path` in `dir` to the error users see.
fn classify(err: io::Error, path: &Path, dir: &Path) -> OutputError {
    // ENOSPC = 28 and EDQUOT (Linux 122) also checked by number, for kernels/libcs whose
    // mapping to ErrorKind might lag.
    let disk_full = matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || (cfg!(target_os = "linux")
        && matches!(err.raw_os_error(), Some(28 | 122)));
    match err.kind() {
        _ if disk_full => OutputError::DiskFull {
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            OutputError::Unwritable {
                dir: dir.to_owned(),
                source: err,
            }
        }
        _ => OutputError::Io {
            path: path.to_owned(),
            source: err,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Output names
// ---------------------------------------------------------------------------------------------

/// The values a name template can use.
#[derive(Clone, Debug)]
pub struct NameVars {
    /// `{model}`: the model's name (a file stem, no `/`).
    pub model: String,
    /// `{seed}`: the generation seed.
    pub seed: u64,
    /// `{index}`: the output's number within the run.
    pub index: u64,
    /// `{time}`: when the output was made, written in UTC as `YYYYMMDDTHHMMSSZ`.
    pub time: SystemTime,
}

/// Expands a file-name template: `{model}`, `{seed}`, `{index}`, `{time}`; numbers take an
/// optional zero pad (`{index:04}`, `{seed:08}`); `{{` and `}}` are literal braces. An unknown
/// placeholder is an error, and so is a result that is not a plain file name (empty, `.`, `..`,
/// or containing `/` or NUL).
pub fn expand_name(template: &str, vars: &NameVars) -> Result<String, OutputError> {
    let bad = |reason: String| OutputError::BadTemplate {
        template: template.to_owned(),
        reason,
    };
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let brace = &rest[pos..pos + 1];
        let after = &rest[pos + 1..];
        if after.starts_with(brace) {
            out.push_str(brace);
            rest = &after[1..];
            continue;
        }
        if brace == "}" {
            return Err(bad(
                "a '}' without a matching '{' (write '}}' for a literal brace)".into(),
            ));
        }
        let end = after
            .find(['}', '{'])
            .filter(|&e| after.as_bytes()[e] == b'}')
            .ok_or_else(|| {
                bad("a '{' without a closing '}' (write '{{' for a literal brace)".into())
            })?;
        let inner = &after[..end];
        let (name, spec) = match inner.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (inner, None),
        };
        let number = match name {
            "seed" => Some(vars.seed),
            "index" => Some(vars.index),
            _ => None,
        };
        match (name, number, spec) {
            (_, Some(v), None) => {
                let _ = write!(out, "{v}");
            }
            (_, Some(v), Some(spec)) => {
                let width = zero_pad_width(spec).ok_or_else(|| {
                    bad(format!("{{{inner}}} has format '{spec}'; the only format is a zero pad such as {{{name}:04}}"))
                })?;
                let _ = write!(out, "{v:0width$}");
            }
            ("model" | "time", _, Some(spec)) => {
                return Err(bad(format!("{{{name}}} takes no format, got ':{spec}'")));
            }
            ("model", _, None) => out.push_str(&vars.model),
            ("time", _, None) => out.push_str(&utc_stamp(vars.time)),
            _ => {
                return Err(OutputError::UnknownPlaceholder {
                    name: inner.to_owned(),
                    template: template.to_owned(),
                })
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let reason = if out.is_empty() {
        Some("is empty")
    } else if out.contains('/') {
        Some("contains '/'")
    } else if out.contains('\0') {
        Some("contains a NUL character")
    } else if out == "." || out == ".." {
        Some("is not a file name")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(OutputError::BadName {
            template: template.to_owned(),
            name: out,
            reason,
        }),
        None => Ok(out),
    }
}

/// `0N` with 1 <= N <= 64 -> N.
fn zero_pad_width(spec: &str) -> Option<usize> {
    let digits = spec.strip_prefix('0')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&w| (1..=64).contains(&w))
}

/// `t` in UTC as `YYYYMMDDTHHMMSSZ` (times before 1970 included; sub-seconds dropped).
fn utc_stamp(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Before the epoch: round down to the whole second.
        Err(e) => {
            let d = e.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -s - i64::from(d.subsec_nanos() > 0)
        }
    };
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Proleptic Gregorian (year, month, day) of the day `days` after 1970-01-01
/// (Howard Hinnant's `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------------------------
// Points
// ---------------------------------------------------------------------------------------------

/// Points (flat, row-major, `dim` values per point) as CSV: a header (`x` / `x,y` / `x,y,z`, or
/// `x0,x1,...` beyond 3 dimensions), then one line per point. Each value is written in the
/// shortest form that parses back to the same f32 (scientific notation only for very large or
/// small magnitudes; `NaN`, `inf`, `-inf` as such).
///
/// # Panics
///
/// If `dim` is 0 or `points.len()` is not a multiple of `dim`: the caller derives both from the
/// same array, so a mismatch is a bug in the caller, not bad input.
pub fn points_csv(points: &[f32], dim: usize) -> Vec<u8> {
    assert!(
        dim > 0 && points.len() % dim == 0,
        "points_csv: {} values are not whole {dim}-dimensional points",
        points.len()
    );
    let mut s = String::with_capacity(16 + points.len() * 12);
    match dim {
        1 => s.push('x'),
        2 => s.push_str("x,y"),
        3 => s.push_str("x,y,z"),
        _ => {
            let names: Vec<String> = (0..dim).map(|i| format!("x{i}")).collect();
            s.push_str(&names.join(","));
        }
    }
    s.push('\n');
    for p in points.chunks_exact(dim) {
        for (i, v) in p.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{v:?}");
        }
        s.push('\n');
    }
    s.into_bytes()
}

/// The region of the plane a scatter plot shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum View {
    /// Exactly these ranges (points outside are not drawn).
    Fixed { x: (f32, f32), y: (f32, f32) },
    /// A square around the finite points, with a 5% margin (equal scale on both axes).
    Fit,
}

/// How [`scatter_png_with`] draws.
#[derive(Clone, Debug, PartialEq)]
pub struct ScatterOptions {
    /// Width and height in pixels (16 to 4096; the canvas takes 12 bytes per pixel while drawing).
    pub size: u32,
    /// The region shown.
    pub view: View,
    /// Point radius in pixels (0.3 to 20).
    pub point_radius: f32,
    /// Opacity of one point (above 0, at most 1); overlapping points darken, showing density.
    pub alpha: f32,
}

impl Default for ScatterOptions {
    /// 800x800, the square [-6, 6]^2 (every reference data set fits), radius 1.5 px, alpha 0.3.
    fn default() -> Self {
        ScatterOptions {
            size: 800,
            view: View::Fixed {
                x: (-6.0, 6.0),
                y: (-6.0, 6.0),
            },
            point_radius: 1.5,
            alpha: 0.3,
        }
    }
}

const BACKGROUND: [f32; 3] = [1.0, 1.0, 1.0];
const BOX_GRAY: [f32; 3] = [0.75, 0.75, 0.75];
const ZERO_GRAY: [f32; 3] = [0.88, 0.88, 0.88];
const INK: [f32; 3] = [0.09, 0.15, 0.32];

/// A scatter plot of points (flat, row-major, `dim` values per point) as PNG bytes, drawn with
/// [`ScatterOptions::default`]: 800x800, the square [-6, 6]^2. See [`scatter_png_with`].
pub fn scatter_png(points: &[f32], dim: usize) -> Result<Vec<u8>, OutputError> {
    scatter_png_with(points, dim, &ScatterOptions::default())
}

/// A scatter plot of points (flat, row-major, `dim` values per point; the first two coordinates
/// are plotted) as PNG bytes: white background, a light frame around the plotted region and
/// light lines at x = 0 and y = 0, and each point a small anti-aliased dark disk blended over
/// what is below it, so dense regions show darker. Non-finite points and points outside the
/// view are not drawn.
pub fn scatter_png_with(
    points: &[f32],
    dim: usize,
    opts: &ScatterOptions,
) -> Result<Vec<u8>, OutputError> {
    if dim < 2 {
        return Err(OutputError::PlotDim { dim });
    }
    if points.len() % dim != 0 {
        return Err(OutputError::RaggedPoints {
            len: points.len(),
            dim,
        });
    }
    if dim > 2 {
        let xy: Vec<f32> = points
            .chunks_exact(dim)
            .flat_map(|p| [p[0], p[1]])
            .collect();
        return scatter_xy(&xy, opts);
    }
    scatter_xy(points, opts)
}

/// [`scatter_png_with`] for flat `x, y` pairs (even length).
fn scatter_xy(points: &[f32], opts: &ScatterOptions) -> Result<Vec<u8>, OutputError> {
    let bad = |s: String| Err(OutputError::BadPlotOption(s));
    if !(16..=4096).contains(&opts.size) {
        return bad(format!("size {} is outside 16..=4096 pixels", opts.size));
    }
    if !(opts.point_radius >= 0.3 && opts.point_radius <= 20.0) {
        return bad(format!(
            "point radius {} is outside 0.3..=20 pixels",
            opts.point_radius
        ));
    }
    if !(opts.alpha > 0.0 && opts.alpha <= 1.0) {
        return bad(format!("alpha {} is outside (0, 1]", opts.alpha));
    }
    let ((x0, x1), (y0, y1)) = match opts.view {
        View::Fixed { x, y } => {
            for (axis, (lo, hi)) in [("x", x), ("y", y)] {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return bad(format!(
                        "the {axis} range ({lo}, {hi}) must be finite with min < max"
                    ));
                }
            }
            (
                (f64::from(x.0), f64::from(x.1)),
                (f64::from(y.0), f64::from(y.1)),
            )
        }
        View::Fit => fit_view(points),
    };

    let size = opts.size as usize;
    let mut px = vec![BACKGROUND; size * size];
    let margin = (size / 20).max(2);
    let (lo, hi) = (margin as f64, (size - margin) as f64); // plot area in pixel coordinates
    let to_px = |x: f64| lo + (x - x0) / (x1 - x0) * (hi - lo);
    let to_py = |y: f64| hi - (y - y0) / (y1 - y0) * (hi - lo);

    // Zero lines, then the frame, both one pixel wide.
    if x0 < 0.0 && 0.0 < x1 {
        let c = to_px(0.0).floor() as usize;
        for r in margin..=size - margin {
            px[r * size + c] = ZERO_GRAY;
        }
    }
    if y0 < 0.0 && 0.0 < y1 {
        let r = to_py(0.0).floor() as usize;
        for c in margin..=size - margin {
            px[r * size + c] = ZERO_GRAY;
        }
    }
    for i in margin..=size - margin {
        for (r, c) in [
            (margin, i),
            (size - margin, i),
            (i, margin),
            (i, size - margin),
        ] {
            px[r * size + c] = BOX_GRAY;
        }
    }

    let radius = f64::from(opts.point_radius);
    let alpha = opts.alpha;
    for p in points.chunks_exact(2) {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        if !(x >= x0 && x <= x1 && y >= y0 && y <= y1) {
            continue; // outside the view, or NaN
        }
        let (cx, cy) = (to_px(x), to_py(y));
        let c_min = (cx - radius - 1.0).floor().max(lo) as usize;
        let c_max = (cx + radius + 1.0).ceil().min(hi) as usize;
        let r_min = (cy - radius - 1.0).floor().max(lo) as usize;
        let r_max = (cy + radius + 1.0).ceil().min(hi) as usize;
        for r in r_min..=r_max {
            for c in c_min..=c_max {
                // Pixel (r, c) covers [c, c+1) x [r, r+1); coverage from its centre's distance.
                let (dx, dy) = (c as f64 + 0.5 - cx, r as f64 + 0.5 - cy);
                let coverage = (radius + 0.5 - (dx * dx + dy * dy).sqrt()).clamp(0.0, 1.0) as f32;
                if coverage > 0.0 {
                    let a = alpha * coverage;
                    let dst = &mut px[r * size + c];
                    for (d, ink) in dst.iter_mut().zip(INK) {
                        *d = *d * (1.0 - a) + ink * a;
                    }
                }
            }
        }
    }

    let rgb: Vec<u8> = px
        .iter()
        .flat_map(|p| p.map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8))
        .collect();
    encode_png(opts.size, opts.size, png::ColorType::Rgb, &rgb, None)
}

/// A square view around the finite points with a 5% margin; [-1, 1]^2 around them if they
/// are all one point, and [-6, 6]^2 if there are none.
fn fit_view(points: &[f32]) -> ((f64, f64), (f64, f64)) {
    let mut b = [
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for p in points.chunks_exact(2) {
        if p[0].is_finite() && p[1].is_finite() {
            let (x, y) = (f64::from(p[0]), f64::from(p[1]));
            b = [b[0].min(x), b[1].max(x), b[2].min(y), b[3].max(y)];
        }
    }
    if b[0] > b[1] {
        return ((-6.0, 6.0), (-6.0, 6.0));
    }
    let (cx, cy) = ((b[0] + b[1]) / 2.0, (b[2] + b[3]) / 2.0);
    let half = (b[1] - b[0]).max(b[3] - b[2]) / 2.0 * 1.05;
    let half = if half > 0.0 { half } else { 1.0 };
    ((cx - half, cx + half), (cy - half, cy + half))
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

/// A model output image (`c` x `h` x `w`, channel-major, values in [-1, 1]) as 8-bit PNG bytes,
/// with the generation recipe in a text chunk with keyword `parameters`, as AUTOMATIC1111 and
/// its readers expect. Each value maps to `round((x + 1) / 2 * 255)` clamped to 0..=255 (NaN
/// becomes 0). `c` is 1 (gray), 3 (RGB) or 4 (RGBA). The chunk is `tEXt` when the text is
/// Latin-1, as PNG requires, and `iTXt` (UTF-8) otherwise, as Pillow does.
pub fn image_png(
    chw: &[f32],
    c: usize,
    h: usize,
    w: usize,
    parameters: &str,
) -> Result<Vec<u8>, OutputError> {
    let color = match c {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        _ => return Err(OutputError::BadChannels(c)),
    };
    let max_side = (1usize << 31) - 1;
    if h == 0 || w == 0 || h > max_side || w > max_side {
        return Err(OutputError::ImageSize { h, w });
    }
    let need = c as u128 * h as u128 * w as u128;
    if need != chw.len() as u128 {
        return Err(OutputError::ImageLength {
            c,
            h,
            w,
            need,
            got: chw.len(),
        });
    }
    let plane = h * w;
    let mut hwc = vec![0u8; chw.len()];
    for ch in 0..c {
        for (i, &x) in chw[ch * plane..(ch + 1) * plane].iter().enumerate() {
            // `as u8` saturates and maps NaN to 0.
            hwc[i * c + ch] = ((x + 1.0) * 0.5 * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    encode_png(
        w as u32,
        h as u32,
        color,
        &hwc,
        Some(("parameters", parameters)),
    )
}

/// PNG bytes of 8-bit pixels `data` (row-major, interleaved), with an optional text chunk.
fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    data: &[u8],
    text: Option<(&str, &str)>,
) -> Result<Vec<u8>, OutputError> {
    let png_err = |e: png::EncodingError| OutputError::Png(e.to_string());
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        if let Some((keyword, value)) = text {
            let latin1 = value.chars().all(|ch| u32::from(ch) <= 0xFF);
            if latin1 {
                enc.add_text_chunk(keyword.to_owned(), value.to_owned())
                    .map_err(png_err)?;
            } else {
                enc.add_itxt_chunk(keyword.to_owned(), value.to_owned())
                    .map_err(png_err)?;
            }
        }
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(data).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        write_atomic(&path, b"first", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        write_atomic(&path, b"", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(entries(dir.path()), vec!["a.png"]);
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_gives_the_mode_file_create_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ours, reference) = (dir.path().join("ours"), dir.path().join("reference"));
        write_atomic(&ours, b"x", false).unwrap();
        std::fs::File::create(&reference).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&reference));
    }

    #[test]
    fn overwrite_is_refused_without_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, b"keep me").unwrap();
        let err = write_atomic(&path, b"new", false).unwrap_err();
        assert!(matches!(err, OutputError::Exists { .. }));
        assert_eq!(
            err.to_string(),
            format!("{} exists; pass --overwrite to replace it", path.display())
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        assert_eq!(entries(dir.path()), vec!["out.csv"]);
    }

    #[test]
    fn losing_the_race_to_create_the_file_leaves_no_temp_file() {
        // The target appears after the existence check but before the final link.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.png");
        let mut tmp = tempfile::Builder::new()
            .prefix(".late.png.")
            .suffix(".tmp")
            .tempfile_in(dir.path())
            .unwrap();
        tmp.write_all(b"ours").unwrap();
        std::fs::write(&path, b"theirs").unwrap();
        let err = persist(tmp, &path, dir.path(), false).unwrap_err();
        assert!(matches!(err, OutputError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        assert_eq!(entries(dir.path()), vec!["late.png"]);
    }

    #[test]
    fn missing_directory_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = write_atomic(&missing.join("a.png"), b"x", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "output directory {} does not exist; create it or pass another --out",
                missing.display()
            )
        );
        assert_eq!(entries(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn parent_that_is_a_file_is_explained_and_nothing_is_left() {
        // Tests run as root, so a read-only directory would still be writable; a regular file
        // in place of the directory is unwritable for everyone.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err = write_atomic(&file.join("a.png"), b"x", true).unwrap_err();
        assert!(matches!(err, OutputError::NotADir { .. }), "{err}");
        assert!(err.to_string().contains("is not a directory"), "{err}");
        // Deeper: a path through the file.
        let err = write_atomic(&file.join("sub").join("a.png"), b"x", true).unwrap_err();
        assert!(matches!(err, OutputError::NotADir { .. }), "{err}");
        assert_eq!(entries(dir.path()), vec!["plain"]);
    }

    #[test]
    fn directory_as_target_and_pathless_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let err = write_atomic(&dir.path().join("d"), b"x", true).unwrap_err();
        assert!(matches!(err, OutputError::IsADir { .. }), "{err}");
        let err = write_atomic(&dir.path().join(".."), b"x", true).unwrap_err();
        assert!(matches!(err, OutputError::NotAFileName { .. }), "{err}");
        assert_eq!(entries(dir.path()), vec!["d"]);
    }

    #[test]
    fn io_errors_map_to_the_messages_users_see() {
        let (p, d) = (Path::new("out/a.png"), Path::new("out"));
        let enospc = io::Error::from_raw_os_error(28);
        assert_eq!(
            classify(enospc, p, d).to_string(),
            "disk full while writing out/a.png; free space and run again"
        );
        assert!(matches!(
            classify(io::Error::from(io::ErrorKind::StorageFull), p, d),
            OutputError::DiskFull { .. }
        ));
        assert!(matches!(
            classify(io::Error::from(io::ErrorKind::QuotaExceeded), p, d),
            OutputError::DiskFull { .. }
        ));
        let eacces = classify(io::Error::from_raw_os_error(13), p, d);
        assert!(matches!(eacces, OutputError::Unwritable { .. }));
        assert!(
            eacces
                .to_string()
                .starts_with("cannot write in output directory out ("),
            "{eacces}"
        );
        let erofs = classify(io::Error::from(io::ErrorKind::ReadOnlyFilesystem), p, d);
        assert!(matches!(erofs, OutputError::Unwritable { .. }));
        let other = classify(io::Error::other("boom"), p, d);
        assert_eq!(other.to_string(), "could not write out/a.png: boom");
        for e in [eacces, erofs, other] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    fn vars(time: SystemTime) -> NameVars {
        NameVars {
            model: "moons-dual".into(),
            seed: 42,
            index: 7,
            time,
        }
    }

    #[test]
    fn name_templates_expand() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = vars(t);
        assert_eq!(
            expand_name("{model}-{seed}-{index:04}.png", &v).unwrap(),
            "moons-dual-42-0007.png"
        );
        assert_eq!(
            expand_name("{index}_{seed:08}.csv", &v).unwrap(),
            "7_00000042.csv"
        );
        assert_eq!(
            expand_name("{time}.png", &v).unwrap(),
            "20231114T221320Z.png"
        );
        assert_eq!(expand_name("{{{model}}}", &v).unwrap(), "{moons-dual}");
        assert_eq!(expand_name("plain.png", &v).unwrap(), "plain.png");
        assert_eq!(
            expand_name(
                "{index:01}",
                &NameVars {
                    index: 1234,
                    ..v.clone()
                }
            )
            .unwrap(),
            "1234"
        );
        assert_eq!(expand_name("ünï{index}", &v).unwrap(), "ünï7");
    }

    #[test]
    fn name_template_errors() {
        let v = vars(UNIX_EPOCH);
        let err = |t: &str| expand_name(t, &v).unwrap_err().to_string();
        let e = err("{model}-{steps}.png");
        assert!(
            e.starts_with(
                "unknown placeholder {steps} in the name template \"{model}-{steps}.png\""
            ),
            "{e}"
        );
        assert!(err("{index:4}").contains("zero pad"));
        assert!(err("{index:}").contains("zero pad"));
        assert!(err("{index:0}").contains("zero pad"));
        assert!(err("{index:0x}").contains("zero pad"));
        assert!(err("{model:04}").contains("takes no format"));
        assert!(err("{model").contains("without a closing"));
        assert!(err("{mo{del}").contains("without a closing"));
        assert!(err("a}b").contains("without a matching"));
        assert!(err("").contains("is empty"));
        assert!(err("..").contains("not a file name"));
        assert!(err("out/{index}.png").contains("contains '/'"));
        let slash = NameVars {
            model: "models/moons".into(),
            ..v.clone()
        };
        let e = expand_name("{model}.png", &slash).unwrap_err().to_string();
        assert!(
            e.contains("gives \"models/moons.png\", which contains '/'"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn utc_stamps_and_calendar() {
        let at = |s: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::from_secs(s as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs((-s) as u64)
            }
        };
        assert_eq!(utc_stamp(at(0)), "19700101T000000Z");
        assert_eq!(utc_stamp(at(-1)), "19691231T235959Z");
        assert_eq!(
            utc_stamp(UNIX_EPOCH - Duration::from_millis(1)),
            "19691231T235959Z"
        );
        assert_eq!(utc_stamp(at(951_782_400)), "20000229T000000Z"); // leap day of a /400 year
        assert_eq!(utc_stamp(at(1_709_208_000)), "20240229T120000Z");
        assert_eq!(utc_stamp(at(4_102_444_799)), "20991231T235959Z");
        assert_eq!(utc_stamp(at(4_107_542_400)), "21000301T000000Z"); // 2100 is not a leap year
        assert_eq!(utc_stamp(at(253_402_300_799)), "99991231T235959Z");
        // Every day from 1900 to 2100 follows the previous one.
        let month_len = |y: i64, m: u32| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = civil_from_days(-25_567); // 1900-01-01
        assert_eq!(prev, (1900, 1, 1));
        for day in -25_566..47_482 {
            let cur = civil_from_days(day);
            let want = if prev.2 < month_len(prev.0, prev.1) {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!(cur, want, "day {day}");
            prev = cur;
        }
        assert_eq!(prev, (2099, 12, 31));
    }

    #[test]
    fn csv_round_trips_every_value() {
        let pts = [
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            0.1,
            1e-7,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            123456.79,
            f32::NAN,
            f32::NEG_INFINITY,
        ];
        let csv = String::from_utf8(points_csv(&pts, 2)).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("x,y"));
        let back: Vec<f32> = lines
            .flat_map(|l| {
                l.split(',')
                    .map(|v| v.parse::<f32>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(back.len(), pts.len());
        for (a, b) in pts.iter().zip(&back) {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{a} -> {b}"
            );
        }
        assert!(csv.contains("\n0.1,1e-7\n"), "{csv}");
        assert!(csv.ends_with("NaN,-inf\n"));
        assert_eq!(points_csv(&[], 2), b"x,y\n");
    }

    #[test]
    fn csv_headers_for_other_dimensions() {
        assert_eq!(points_csv(&[1.0, 2.0], 1), b"x\n1.0\n2.0\n");
        assert_eq!(points_csv(&[1.0, 2.0, 3.0], 3), b"x,y,z\n1.0,2.0,3.0\n");
        assert_eq!(points_csv(&[0.5; 4], 4), b"x0,x1,x2,x3\n0.5,0.5,0.5,0.5\n");
    }

    #[test]
    #[should_panic(expected = "not whole 2-dimensional points")]
    fn csv_with_a_ragged_array_is_a_caller_bug() {
        points_csv(&[1.0, 2.0, 3.0], 2);
    }

    fn decode(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>, png::Info<'static>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        buf.truncate(frame.buffer_size());
        reader.finish().unwrap();
        (frame, buf, reader.info().clone())
    }

    #[test]
    fn scatter_decodes_and_shows_density() {
        // A dense cluster at (2, 2) and one point at (-3, -3), default 800x800 view [-6, 6]^2.
        let mut pts = Vec::new();
        for i in 0..2000 {
            let (a, r) = (i as f32 * 0.1, 0.04 * i as f32 / 2000.0); // a filled spiral
            pts.extend_from_slice(&[2.0 + r * a.cos(), 2.0 + r * a.sin()]);
        }
        pts.extend_from_slice(&[-3.0, -3.0, f32::NAN, 0.0, 100.0, 100.0]);
        let (info, rgb, _) = decode(&scatter_png(&pts, 2).unwrap());
        assert_eq!(
            (info.width, info.height, info.color_type),
            (800, 800, png::ColorType::Rgb)
        );
        let at = |x: f64, y: f64| {
            // Same mapping as the plot: margin 40, area 40..760.
            let c = (40.0 + (x + 6.0) / 12.0 * 720.0) as usize;
            let r = (760.0 - (y + 6.0) / 12.0 * 720.0) as usize;
            let i = (r * 800 + c) * 3;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        assert_eq!(at(-5.0, 5.0), [255, 255, 255], "background is white");
        let dense = at(2.0, 2.0);
        let single = at(-3.0, -3.0);
        assert!(dense[0] < 40, "dense cluster is dark: {dense:?}");
        assert!(
            single[0] < 255 && single[0] > dense[0] + 60,
            "lone point is light: {single:?}"
        );
        assert_eq!(
            &rgb[..3],
            &[255, 255, 255],
            "corner outside the frame is white"
        );
        assert_eq!(rgb[(40 * 800 + 400) * 3], 191, "frame is light gray");
    }

    #[test]
    fn scatter_fit_view_and_bad_options() {
        let pts = [10.0f32, 10.0, 12.0, 11.0];
        let opts = ScatterOptions {
            size: 64,
            view: View::Fit,
            ..ScatterOptions::default()
        };
        let (info, rgb, _) = decode(&scatter_png_with(&pts, 2, &opts).unwrap());
        assert_eq!((info.width, info.height), (64, 64));
        assert!(rgb.iter().any(|&v| v < 200), "the points are drawn");
        // 3-D points plot their first two coordinates: the same picture.
        let pts3 = [10.0f32, 10.0, -99.0, 12.0, 11.0, 7.0];
        let (_, rgb3, _) = decode(&scatter_png_with(&pts3, 3, &opts).unwrap());
        assert_eq!(rgb3, rgb);
        // Degenerate and empty inputs still draw.
        assert!(scatter_png_with(&[1.0, 1.0], 2, &opts).is_ok());
        assert!(scatter_png_with(&[], 2, &opts).is_ok());
        assert!(scatter_png_with(&[f32::NAN, 1.0], 2, &opts).is_ok());

        let bad = |o: ScatterOptions| scatter_png_with(&pts, 2, &o).unwrap_err().to_string();
        let d = ScatterOptions::default();
        assert!(bad(ScatterOptions {
            size: 8,
            ..d.clone()
        })
        .contains("size 8"));
        assert!(bad(ScatterOptions {
            alpha: 0.0,
            ..d.clone()
        })
        .contains("alpha"));
        assert!(bad(ScatterOptions {
            point_radius: f32::NAN,
            ..d.clone()
        })
        .contains("radius"));
        let e = bad(ScatterOptions {
            view: View::Fixed {
                x: (1.0, 1.0),
                y: (0.0, 1.0),
            },
            ..d.clone()
        });
        assert!(e.contains("x range"), "{e}");
        assert!(matches!(
            scatter_png(&[1.0, 2.0, 3.0], 2),
            Err(OutputError::RaggedPoints { len: 3, dim: 2 })
        ));
        let e = scatter_png(&[1.0, 2.0], 1).unwrap_err().to_string();
        assert!(
            e.starts_with("a scatter plot needs at least 2 coordinates per point, got 1"),
            "{e}"
        );
        assert!(matches!(
            scatter_png(&[], 0),
            Err(OutputError::PlotDim { dim: 0 })
        ));
    }

    #[test]
    fn image_png_maps_values_and_embeds_parameters() {
        let params = "a photo of a moon\nSteps: 20, Sampler: DDIM, Seed: 42, Model: moons-dual";
        // 3 x 2 x 2 (C x H x W), channel-major.
        let chw = [
            -1.0,
            0.0,
            1.0,
            2.0,
            /* G */ -2.0,
            0.5,
            -0.5,
            f32::NAN,
            /* B */ 0.0,
            0.0,
            0.0,
            0.0,
        ];
        let bytes = image_png(&chw, 3, 2, 2, params).unwrap();
        let (info, px, meta) = decode(&bytes);
        assert_eq!(
            (info.width, info.height, info.color_type),
            (2, 2, png::ColorType::Rgb)
        );
        assert_eq!(
            px,
            vec![0, 0, 128, 128, 191, 128, 255, 64, 128, 255, 0, 128]
        );
        let text: Vec<_> = meta
            .uncompressed_latin1_text
            .iter()
            .map(|t| (t.keyword.as_str(), t.text.as_str()))
            .collect();
        assert_eq!(text, vec![("parameters", params)]);

        let (info, px, _) = decode(&image_png(&[-1.0, 1.0, 0.0], 1, 1, 3, "").unwrap());
        assert_eq!(
            (info.width, info.height, info.color_type),
            (3, 1, png::ColorType::Grayscale)
        );
        assert_eq!(px, vec![0, 255, 128]);
        let rgba = vec![1.0f32; 4 * 3 * 5];
        let (info, px, _) = decode(&image_png(&rgba, 4, 3, 5, "x").unwrap());
        assert_eq!(
            (info.width, info.height, info.color_type),
            (5, 3, png::ColorType::Rgba)
        );
        assert!(px.iter().all(|&v| v == 255));
    }

    #[test]
    fn image_png_non_latin1_parameters_go_to_itxt() {
        let params = "prompt: 月 🌙";
        let (_, _, meta) = decode(&image_png(&[0.0], 1, 1, 1, params).unwrap());
        assert!(meta.uncompressed_latin1_text.is_empty());
        let chunk = meta
            .utf8_text
            .iter()
            .find(|t| t.keyword == "parameters")
            .unwrap();
        assert_eq!(chunk.get_text().unwrap(), params);
    }

    #[test]
    fn image_png_rejects_bad_shapes() {
        assert!(matches!(
            image_png(&[0.0; 4], 2, 1, 2, ""),
            Err(OutputError::BadChannels(2))
        ));
        let e = image_png(&[0.0; 11], 3, 2, 2, "").unwrap_err().to_string();
        assert_eq!(e, "an image of 3x2x2 (CxHxW) needs 12 values but 11 were given; pass the model output for one image");
        assert!(matches!(
            image_png(&[], 3, 0, 2, ""),
            Err(OutputError::ImageSize { .. })
        ));
        assert!(matches!(
            image_png(&[], 1, usize::MAX, usize::MAX, ""),
            Err(OutputError::ImageSize { .. })
        ));
    }

    #[test]
    fn outputs_written_atomically_decode() {
        let dir = tempfile::tempdir().unwrap();
        let name = expand_name("{model}-{index:03}.png", &vars(UNIX_EPOCH)).unwrap();
        let path = dir.path().join(&name);
        write_atomic(&path, &image_png(&[0.0; 12], 3, 2, 2, "p").unwrap(), false).unwrap();
        let (info, _, _) = decode(&std::fs::read(&path).unwrap());
        assert_eq!((info.width, info.height), (2, 2));
        assert_eq!(entries(dir.path()), vec!["moons-dual-007.png"]);
    }
}
