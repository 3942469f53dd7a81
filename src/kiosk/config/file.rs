//! The kiosk config file as serde reads it: every leaf spanned, so an error can name its line,
//! and the `pick` rule (a flag over the file over the default) with the origin it reports.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Origin};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) out: Option<Spanned<PathBuf>>,
    pub(super) schedule: Option<FileSchedule>,
    pub(super) retention: Option<FileRetention>,
    pub(super) thermal: Option<FileThermal>,
    pub(super) serve: Option<FileServe>,
    pub(super) gpio: Option<FileGpio>,
    pub(super) epaper: Option<FileEpaper>,
    pub(super) generate: Option<FileGenerate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSchedule {
    pub(super) every: Option<Spanned<String>>,
    pub(super) cron: Option<Spanned<String>>,
    pub(super) at: Option<Spanned<StrOrList>>,
    pub(super) once: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum StrOrList {
    Str(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum IntOrStr {
    Int(u64),
    Str(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRetention {
    pub(super) keep: Option<Spanned<usize>>,
    pub(super) max_bytes: Option<Spanned<IntOrStr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileThermal {
    pub(super) pause_above: Option<Spanned<f32>>,
    pub(super) resume_below: Option<Spanned<f32>>,
    pub(super) zone_types: Option<Spanned<Vec<String>>>,
    pub(super) sysfs: Option<Spanned<PathBuf>>,
    pub(super) throttle_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServe {
    pub(super) addr: Option<Spanned<String>>,
    pub(super) allow_remote: Option<Spanned<bool>>,
    pub(super) min_trigger_interval: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGpio {
    pub(super) button: Option<Spanned<u8>>,
    pub(super) led: Option<Spanned<u8>>,
    pub(super) debounce: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEpaper {
    pub(super) panel: Option<Spanned<String>>,
    pub(super) fit: Option<Spanned<String>>,
    pub(super) saturation: Option<Spanned<f32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGenerate {
    pub(super) model: Option<Spanned<PathBuf>>,
    pub(super) sampler: Option<Spanned<String>>,
    pub(super) steps: Option<Spanned<usize>>,
    pub(super) seed: Option<Spanned<u64>>,
}

/// The file's text and path, to turn spans into lines.
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) text: String,
}

impl Source {
    pub(super) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    pub(super) fn origin(&self, key: &str, span: Range<usize>) -> Origin {
        Origin::File { path: self.path.clone(), line: self.line(span.start), key: key.to_owned() }
    }

    /// The dotted key on the line at `offset` (`retention.keep`), for toml's own errors, which
    /// point at a span but do not say which key it belongs to.
    pub(super) fn key_at(&self, offset: usize) -> Option<String> {
        let end = offset.min(self.text.len());
        let line_start = self.text[..end].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("");
        let key = line.split_once('=').map(|(k, _)| k.trim())?;
        let table = self.text[..line_start].lines().rev().find_map(|l| {
            let l = l.trim();
            l.strip_prefix('[').and_then(|l| l.strip_suffix(']')).map(|t| t.trim().to_owned())
        });
        Some(match table {
            Some(t) => format!("{t}.{key}"),
            None => key.to_owned(),
        })
    }
}

/// A value from a flag (wins) or the file, with where it came from.
pub(super) fn pick<T>(
    flag: Option<T>,
    flag_name: &'static str,
    file: Option<Spanned<T>>,
    key: &str,
    src: Option<&Source>,
) -> Option<(T, Origin)> {
    if let Some(v) = flag {
        return Some((v, Origin::Flag(flag_name)));
    }
    let s = file?;
    let span = s.span();
    let origin = match src {
        Some(src) => src.origin(key, span),
        None => Origin::Flag(flag_name),
    };
    Some((s.into_inner(), origin))
}

pub(super) fn invalid(origin: Origin, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { origin, message: message.to_string() }
}
