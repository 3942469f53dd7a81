//! The kiosk's output directory: every image kept in `history/` under a timestamped name with
//! its JSON metadata beside it, a stable `current.png` replaced atomically (so a viewer never sees
//! half an image), retention by count and by total bytes, and removal of temporary files a
//! killed process left behind. It never decodes or renders an image: it stores bytes it is given.
//!
//! Layout: `OUT/current.png`, `OUT/status.json` (see `status.rs`), and
//! `OUT/history/20261206T210500Z-s42.png` + `.json`; further files of the same run share the stem
//! (`20261206T210500Z-s42.epaper.png`) and are pruned with it.

use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

// `write_atomic` names its temporary files `.NAME.XXXXXX.tmp`, which is what
// `remove_stray_temp_files` below cleans up; keep the two in step.
use crate::output::write_atomic;

/// The stable name a viewer reads.
pub const CURRENT: &str = "current.png";
/// The subdirectory that holds every kept image.
pub const HISTORY_DIR: &str = "history";

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("could not create the kiosk output directory {path}: {source}; create it or pass another with --out")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{0} exists and is not a directory; pass a directory with --out")]
    NotADir(PathBuf),
    #[error("could not list {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("could not remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Write(#[from] crate::output::OutputError),
}

/// How much history to keep; `None` is no limit. The newest image is always kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many images.
    pub keep: Option<usize>,
    /// Keep at most this many bytes of history (images, metadata and their siblings).
    pub max_bytes: Option<u64>,
}

/// One kept image and the files that share its stem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `20261206T210500Z-s42`: sorts in time order.
    pub stem: String,
    /// Every file of the run (image, metadata, e-paper rendering), sorted by name.
    pub files: Vec<PathBuf>,
    /// Their total size in bytes.
    pub bytes: u64,
}

impl Entry {
    /// The image file of this entry.
    pub fn image(&self) -> Option<&Path> {
        self.files.iter().find(|p| p.file_name().is_some_and(|n| *n == *format!("{}.png", self.stem))).map(PathBuf::as_path)
    }
}

/// What [`History::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub entries: usize,
    pub bytes: u64,
}

/// The output directory.
#[derive(Debug, Clone)]
pub struct History {
    out: PathBuf,
    history: PathBuf,
}

impl History {
    /// Opens (creating it and `history/` if needed) the output directory, and removes the
    /// temporary files an interrupted write left in either; returns how many it removed.
    pub fn open(out: impl Into<PathBuf>) -> Result<(Self, usize), HistoryError> {
        let out = out.into();
        let history = out.join(HISTORY_DIR);
        for dir in [&out, &history] {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(HistoryError::NotADir(dir.clone())),
                Err(_) => std::fs::create_dir_all(dir).map_err(|source| HistoryError::CreateDir { path: dir.clone(), source })?,
            }
        }
        let mut removed = remove_stray_temp_files(&out)?;
        removed += remove_stray_temp_files(&history)?;
        Ok((Self { out, history }, removed))
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.out
    }

    /// `OUT/current.png`.
    pub fn current(&self) -> PathBuf {
        self.out.join(CURRENT)
    }

    /// Stores one run: the image and its metadata under a name made of `when` (UTC) and `seed`,
    /// then replaces `current.png`. Each file is complete or absent. A name already taken (two
    /// runs in one second) gets `-2`, `-3`... Returns the entry.
    pub fn record(&self, when: Timestamp, seed: u64, png: &[u8], metadata_json: &[u8]) -> Result<Entry, HistoryError> {
        let base = format!("{}-s{seed}", stamp(when));
        let mut n = 1;
        let stem = loop {
            let stem = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            let image = self.history.join(format!("{stem}.png"));
            // The metadata first: an image in the history always has its recipe beside it.
            match write_atomic(&self.history.join(format!("{stem}.json")), metadata_json, false) {
                Ok(()) => {}
                Err(crate::output::OutputError::Exists { .. }) => {
                    n += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            write_atomic(&image, png, false)?;
            break stem;
        };
        write_atomic(&self.current(), png, true)?;
        let files = vec![self.history.join(format!("{stem}.json")), self.history.join(format!("{stem}.png"))];
        let bytes = (png.len() + metadata_json.len()) as u64;
        Ok(Entry { stem, files, bytes })
    }

    /// Writes another file of a run (`STEM.SUFFIX`, e.g. `epaper.png`) into the history.
    pub fn add_file(&self, entry: &Entry, suffix: &str, bytes: &[u8]) -> Result<PathBuf, HistoryError> {
        let path = self.history.join(format!("{}.{suffix}", entry.stem));
        write_atomic(&path, bytes, true)?;
        Ok(path)
    }

    /// Every kept run, oldest first.
    pub fn entries(&self) -> Result<Vec<Entry>, HistoryError> {
        let list_err = |source| HistoryError::List { path: self.history.clone(), source };
        let mut by_stem: std::collections::BTreeMap<String, Entry> = Default::default();
        for item in std::fs::read_dir(&self.history).map_err(list_err)? {
            let item = item.map_err(list_err)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // temporary files
            }
            let meta = item.metadata().map_err(list_err)?;
            if !meta.is_file() {
                continue;
            }
            let stem = name.split('.').next().unwrap_or(&name).to_owned();
            let e = by_stem.entry(stem.clone()).or_insert_with(|| Entry { stem, files: Vec::new(), bytes: 0 });
            e.files.push(item.path());
            e.bytes += meta.len();
        }
        let mut entries: Vec<Entry> = by_stem.into_values().collect();
        for e in &mut entries {
            e.files.sort();
        }
        Ok(entries)
    }

    /// Removes the oldest runs until at most `keep` remain and their total size is at most
    /// `max_bytes`; never the newest run, and never `current.png` (which is outside `history/`).
    pub fn prune(&self, retention: &Retention) -> Result<Pruned, HistoryError> {
        let entries = self.entries()?;
        let mut count = entries.len();
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut pruned = Pruned::default();
        // All but the newest are candidates, oldest first.
        for e in entries.iter().take(entries.len().saturating_sub(1)) {
            let over_count = retention.keep.is_some_and(|k| count > k);
            let over_bytes = retention.max_bytes.is_some_and(|b| total > b);
            if !over_count && !over_bytes {
                break;
            }
            for f in &e.files {
                match std::fs::remove_file(f) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(HistoryError::Remove { path: f.clone(), source }),
                }
            }
            count -= 1;
            total -= e.bytes;
            pruned.entries += 1;
            pruned.bytes += e.bytes;
        }
        Ok(pruned)
    }
}

/// Removes `.NAME.XXXXXX.tmp` files (what [`write_atomic`] writes before its rename) left in
/// `dir` by a process that was killed mid-write. Only call it on a directory this process owns
/// and before it writes there.
pub fn remove_stray_temp_files(dir: &Path) -> Result<usize, HistoryError> {
    let list_err = |source| HistoryError::List { path: dir.to_owned(), source };
    let mut removed = 0;
    for item in std::fs::read_dir(dir).map_err(list_err)? {
        let item = item.map_err(list_err)?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") && item.path().is_file() {
            std::fs::remove_file(item.path()).map_err(|source| HistoryError::Remove { path: item.path(), source })?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// `YYYYMMDDTHHMMSSZ` in UTC: sorts in time order and has no `:` (FAT, Windows shares).
fn stamp(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn record_writes_history_pair_and_replaces_current() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a/b"); // created with its parents
        let (h, removed) = History::open(&out).unwrap();
        assert_eq!(removed, 0);
        let e1 = h.record(ts("2026-12-06T21:05:00Z"), 42, b"png-1", b"{\"seed\":42}").unwrap();
        assert_eq!(e1.stem, "20261206T210500Z-s42");
        assert_eq!(e1.image().unwrap(), out.join("history/20261206T210500Z-s42.png"));
        assert_eq!(std::fs::read(h.current()).unwrap(), b"png-1");
        // Same second, same seed: a suffix, never an overwrite.
        let e2 = h.record(ts("2026-12-06T21:05:00.5Z"), 42, b"png-2", b"{}").unwrap();
        assert_eq!(e2.stem, "20261206T210500Z-s42-2");
        assert_eq!(std::fs::read(h.current()).unwrap(), b"png-2");
        assert_eq!(std::fs::read(out.join("history/20261206T210500Z-s42.png")).unwrap(), b"png-1");
        h.add_file(&e2, "epaper.png", b"ep").unwrap();
        assert_eq!(
            names(&out.join("history")),
            [
                "20261206T210500Z-s42-2.epaper.png",
                "20261206T210500Z-s42-2.json",
                "20261206T210500Z-s42-2.png",
                "20261206T210500Z-s42.json",
                "20261206T210500Z-s42.png",
            ]
        );
        assert_eq!(names(&out), ["current.png", "history"]);
        let entries = h.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].bytes, 5 + 2 + 2);
    }

    #[test]
    fn open_removes_stray_temp_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("history")).unwrap();
        std::fs::write(tmp.path().join(".current.png.a1B2c3.tmp"), b"half").unwrap();
        std::fs::write(tmp.path().join("history/.x.png.zzzzzz.tmp"), b"half").unwrap();
        std::fs::write(tmp.path().join("current.png"), b"whole").unwrap();
        std::fs::write(tmp.path().join("notes.tmp"), b"not ours").unwrap();
        let (_, removed) = History::open(tmp.path()).unwrap();
        assert_eq!(removed, 2);
        assert_eq!(names(tmp.path()), ["current.png", "history", "notes.tmp"]);
        assert!(names(&tmp.path().join("history")).is_empty());
    }

    #[test]
    fn out_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("file");
        std::fs::write(&f, b"").unwrap();
        assert!(matches!(History::open(&f), Err(HistoryError::NotADir(_))));
    }

    fn fill(h: &History, n: usize, size: usize) {
        for i in 0..n {
            let when = ts("2026-01-01T00:00:00Z").checked_add(jiff::SignedDuration::from_secs(60 * i as i64)).unwrap();
            h.record(when, i as u64, &vec![b'x'; size], b"{}").unwrap();
        }
    }

    #[test]
    fn retention_by_count_removes_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let (h, _) = History::open(tmp.path()).unwrap();
        fill(&h, 5, 10);
        let p = h.prune(&Retention { keep: Some(2), max_bytes: None }).unwrap();
        assert_eq!(p, Pruned { entries: 3, bytes: 36 });
        let left: Vec<String> = h.entries().unwrap().into_iter().map(|e| e.stem).collect();
        assert_eq!(left, ["20260101T000300Z-s3", "20260101T000400Z-s4"]);
        assert!(h.current().exists());
        // Nothing more to do.
        assert_eq!(h.prune(&Retention { keep: Some(2), max_bytes: None }).unwrap(), Pruned::default());
    }

    #[test]
    fn retention_by_bytes_keeps_the_newest_even_if_too_big() {
        let tmp = tempfile::tempdir().unwrap();
        let (h, _) = History::open(tmp.path()).unwrap();
        fill(&h, 4, 98); // 100 bytes per entry with its "{}"
        let p = h.prune(&Retention { keep: None, max_bytes: Some(250) }).unwrap();
        assert_eq!(p.entries, 2);
        assert_eq!(h.entries().unwrap().len(), 2);
        // A limit below one image still keeps the newest, and current.png.
        h.prune(&Retention { keep: Some(0), max_bytes: Some(1) }).unwrap();
        let left = h.entries().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].stem, "20260101T000300Z-s3");
        assert_eq!(std::fs::read(h.current()).unwrap().len(), 98);
    }
}
