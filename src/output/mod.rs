//! What dualscale puts on disk: atomic file writes (every file is complete or absent), output
//! file names from a template, and the encodings of generated results (points as CSV or a
//! scatter-plot PNG, images as PNG with an A1111-style `parameters` text chunk).
//!
//! Files: `atomic` (complete-or-absent writes, and whole sets of files committed all or nothing),
//! `names` (file-name templates), `points` (CSV), `scatter` (point clouds as PNG), `png` (images
//! as PNG with a `parameters` text chunk).
//!
//! Only `atomic` touches the file system; the encoders return bytes. Nothing here runs a
//! model or writes anywhere but the path it is given; on any error no temporary file is left
//! behind. Bad input (a template, an option, a model output, a full disk) is an [`OutputError`],
//! never a panic; the one assertion is [`points_csv`]'s check of its caller's own array shape.

use std::io;
use std::path::PathBuf;

mod atomic;
mod names;
mod png;
mod points;
mod scatter;

pub use atomic::{write_atomic, OutputFile, OutputSet, MAX_FILE_NAME_BYTES};
pub use names::{expand_name, NameVars};
pub use png::{image_png, image_png_upscaled, Upscale, UpscaleFilter, MAX_UPSCALE};
pub use points::points_csv;
pub use scatter::{scatter_png, scatter_png_with, ScatterOptions, View};

/// Why an output could not be named, encoded or written. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output directory {} does not exist; create it or pass another --out", dir.display())]
    DirMissing { dir: PathBuf },
    #[error("output directory {} is not a directory; pass a directory to --out", dir.display())]
    NotADir { dir: PathBuf },
    #[error("cannot write in output directory {} ({cause}); fix its permissions or pass another --out", dir.display())]
    Unwritable { dir: PathBuf, cause: io::Error },
    #[error("{} exists; pass --overwrite to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("{} is a directory; name a file inside it instead", path.display())]
    IsADir { path: PathBuf },
    #[error("{} does not name a file; pass a path that ends in a file name", path.display())]
    NotAFileName { path: PathBuf },
    #[error("disk full while writing {}; free space and run again", path.display())]
    DiskFull { path: PathBuf },
    #[error("could not write {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("unknown placeholder {{{name}}} in the name template \"{template}\"; use {{model}}, {{seed}}, {{index}}, {{index:04}} or {{time}} (write {{{{ and }}}} for literal braces)")]
    UnknownPlaceholder { name: String, template: String },
    #[error("the name template \"{template}\" is malformed: {reason}")]
    BadTemplate { template: String, reason: String },
    #[error("the name template \"{template}\" gives \"{name}\", which {reason}; the template names a file, pass the directory with --out")]
    BadName { template: String, name: String, reason: &'static str },
    #[error("{len} coordinates do not make whole {dim}-dimensional points; pass {dim} values per point")]
    RaggedPoints { len: usize, dim: usize },
    #[error("a scatter plot needs at least 2 coordinates per point, got {dim}; write the points as CSV or .npy instead")]
    PlotDim { dim: usize },
    #[error("invalid scatter plot option: {0}")]
    BadPlotOption(String),
    #[error("an image with {0} channels cannot be written as PNG; pass 1 (gray), 3 (RGB) or 4 (RGBA) channels")]
    BadChannels(usize),
    #[error("an image of {c}x{h}x{w} (CxHxW) needs {need} values but {got} were given; pass the model output for one image")]
    ImageLength { c: usize, h: usize, w: usize, need: u128, got: usize },
    #[error("an image of {h}x{w} pixels cannot be written as PNG; both sides must be between 1 and 65536")]
    ImageSize { h: usize, w: usize },
    #[error("could not encode the PNG: {0}")]
    Png(String),
    #[error("cannot create output directory {} ({detail}); pass another --out", dir.display())]
    CreateDir { dir: PathBuf, detail: String },
    #[error("--upscale {0} is too large; use 1 to 32")]
    BadUpscale(u32),
    #[error("interrupted while writing the outputs; nothing was written")]
    Interrupted,
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::Path;

    /// The names in a directory, sorted.
    pub fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    pub fn decode(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>, png::Info<'static>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        buf.truncate(frame.buffer_size());
        reader.finish().unwrap();
        (frame, buf, reader.info().clone())
    }
}
