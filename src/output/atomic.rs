//! Complete-or-absent writes: one file ([`write_atomic`]) or a whole set ([`OutputSet`]) through
//! temporary files in the target directory, fsync, rename, and an fsync of the directory.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::OutputError;

/// Bytes a temporary file's name adds to the target's: `.` + name + `.` + 6 random + `.tmp`.
const TEMP_NAME_OVERHEAD: usize = 12;

/// Longest output file name, in bytes: the 255 that Linux file systems allow (ext4, btrfs,
/// tmpfs, exFAT/vfat long names) less what the temporary file's name adds.
pub const MAX_FILE_NAME_BYTES: usize = 255 - TEMP_NAME_OVERHEAD;

/// One file of an [`OutputSet`]: where it goes and its complete contents.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Files that belong together (a point cloud's CSV, NPY, PNG and JSON; a batch of images and
/// their sidecars), written all or nothing.
///
/// [`OutputSet::write`] first stages every file as a temporary file beside its target (written,
/// flushed, fsynced); a failure there (a full disk) or a stop request leaves every target as it
/// was. Then it commits: each target is replaced by a rename, the file it replaces kept under a
/// backup name (a hard link, so the target never disappears), and if a rename fails the targets
/// already committed get their previous contents back. Finally the directories are fsynced and
/// the backups removed. A second signal during the write does not end the process
/// ([`crate::signals::Shield`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputSet {
    pub files: Vec<OutputFile>,
}

/// Where a set's write is made to fail, to test the rollback (tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    #[cfg(test)]
    Stage(usize),
    #[cfg(test)]
    Commit(usize),
}

impl OutputSet {
    /// Paths of the files, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Writes every file or none (see the type's documentation). Without `overwrite`, an
    /// existing target is an error before anything is written. `stop` is checked between the
    /// files being staged: once set, the staged files are removed and the result is
    /// [`OutputError::Interrupted`].
    pub fn write(&self, overwrite: bool, stop: &AtomicBool) -> Result<Vec<PathBuf>, OutputError> {
        self.write_with(overwrite, stop, Fault::None)
    }

    fn write_with(&self, overwrite: bool, stop: &AtomicBool, fault: Fault) -> Result<Vec<PathBuf>, OutputError> {
        let _ = fault; // only tests inject faults
        let mut targets = Vec::with_capacity(self.files.len());
        for file in &self.files {
            let (dir, name) = check_target(&file.path, overwrite)?;
            if targets.iter().any(|(_, _, p): &(PathBuf, String, PathBuf)| p == &file.path) {
                return Err(OutputError::Io {
                    path: file.path.clone(),
                    cause: io::Error::other("the same path appears twice in one output set"),
                });
            }
            targets.push((dir.to_owned(), name, file.path.clone()));
        }
        // A second signal must not end the process while temporary files exist; the first one
        // stops the staging between two files.
        let _shield = crate::signals::Shield::raise();
        // Stage.
        let mut staged = Vec::with_capacity(self.files.len());
        for (i, (file, (dir, name, _))) in self.files.iter().zip(&targets).enumerate() {
            if stop.load(Ordering::SeqCst) {
                return Err(OutputError::Interrupted);
            }
            #[cfg(test)]
            if fault == Fault::Stage(i) {
                return Err(OutputError::DiskFull { path: file.path.clone() });
            }
            let _ = i;
            staged.push(stage(&file.path, name, dir, &file.bytes)?);
        }
        if stop.load(Ordering::SeqCst) {
            return Err(OutputError::Interrupted);
        }
        // Commit: renames only, quick, not interrupted.
        let mut committed: Vec<(PathBuf, Option<tempfile::NamedTempFile<()>>)> = Vec::new();
        let mut result = Ok(());
        for (i, (tmp, (dir, name, path))) in staged.into_iter().zip(&targets).enumerate() {
            let backup = match backup_of(path, name, dir) {
                Ok(b) => b,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            #[cfg(test)]
            if fault == Fault::Commit(i) {
                if backup.is_some() {
                    committed.push((path.clone(), backup));
                }
                result = Err(OutputError::DiskFull { path: path.clone() });
                break;
            }
            let _ = i;
            match persist(tmp, path, dir, overwrite) {
                Ok(()) => committed.push((path.clone(), backup)),
                Err(e) => {
                    // This target was not replaced. Its backup, if any, is a second name of the
                    // same file (restoring it changes nothing) or the file itself after the
                    // rename fallback (restoring puts it back). Without a backup there is
                    // nothing of ours to undo: a file that appeared meanwhile is not ours.
                    if backup.is_some() {
                        committed.push((path.clone(), backup));
                    }
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            for (path, backup) in committed.into_iter().rev() {
                match backup {
                    // Still the same file (never replaced): renaming a link onto itself does
                    // nothing, so just drop the backup name.
                    Some(b) if same_file(b.path(), &path) => drop(b),
                    Some(b) => {
                        if let Err(err) = b.persist(&path) {
                            log::error!("could not restore {} from its backup: {}", path.display(), err.error);
                        }
                    }
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            return Err(e);
        }
        let mut dirs: Vec<&PathBuf> = targets.iter().map(|(d, _, _)| d).collect();
        dirs.dedup();
        for dir in dirs {
            sync_dir(dir);
        }
        // Dropping the backups removes them.
        drop(committed);
        Ok(self.paths())
    }
}

/// Whether two paths name the same file (the same inode).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// The directory and file name of a target, checked: the directory exists, the target is not a
/// directory, and (without `overwrite`) does not exist.
fn check_target(path: &Path, overwrite: bool) -> Result<(&Path, String), OutputError> {
    let file_name = match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => return Err(OutputError::NotAFileName { path: path.to_owned() }),
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(OutputError::NotADir { dir: dir.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OutputError::DirMissing { dir: dir.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(OutputError::NotADir { dir: dir.to_owned() }),
        Err(e) => return Err(classify(e, path, dir)),
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(OutputError::IsADir { path: path.to_owned() }),
        Ok(_) if !overwrite => Err(OutputError::Exists { path: path.to_owned() }),
        _ => Ok((dir, file_name)),
    }
}

/// A complete, fsynced temporary file beside `path` holding `bytes`; removed when dropped.
fn stage(path: &Path, file_name: &str, dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, OutputError> {
    let prefix = format!(".{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile's default mode is 0600; outputs get the mode `File::create` would give them
    // (0666 less the umask), so that other users and services can read them.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(|e| classify(e, path, dir))?;
    // From here on, dropping `tmp` (on any early return) deletes the temporary file.
    tmp.write_all(bytes).and_then(|()| tmp.flush()).and_then(|()| tmp.as_file().sync_all()).map_err(|e| classify(e, path, dir))?;
    Ok(tmp)
}

/// A second name for an existing target (`.NAME.XXXXXX.bak`, a hard link), so that the commit
/// can restore it; `None` when there is no target. Where hard links are not supported (FAT),
/// the target is renamed to the backup name instead.
fn backup_of(path: &Path, file_name: &str, dir: &Path) -> Result<Option<tempfile::NamedTempFile<()>>, OutputError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let prefix = format!(".{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".bak");
    builder
        .make_in(dir, |p| std::fs::hard_link(path, p).or_else(|_| std::fs::rename(path, p)))
        .map(Some)
        .map_err(|e| classify(e, path, dir))
}

// ---------------------------------------------------------------------------------------------

/// Writes `bytes` to `path` so that the file is complete or absent, even across a crash or a
/// power cut: a temporary file in the same directory (`.NAME.XXXXXX.tmp`) is written, flushed,
/// fsynced, then renamed over `path` (if `overwrite`) or linked into place only if `path` does
/// not exist yet (if not), and finally the directory is fsynced. On any error the temporary
/// file is removed and `path` is untouched. The file gets the permissions `File::create` would
/// give it (a replaced file's old mode is not kept).
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), OutputError> {
    let (dir, file_name) = check_target(path, overwrite)?;
    let tmp = stage(path, &file_name, dir, bytes)?;
    persist(tmp, path, dir, overwrite)?;
    sync_dir(dir);
    Ok(())
}

/// Moves the finished temporary file to `path`. A failed rename hands the temporary file back
/// inside the error, and dropping it there deletes it.
fn persist(tmp: tempfile::NamedTempFile, path: &Path, dir: &Path, overwrite: bool) -> Result<(), OutputError> {
    let result = if overwrite { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    match result {
        Ok(_) => Ok(()),
        // Created by someone else between our check and the link.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Err(OutputError::Exists { path: path.to_owned() }),
        Err(e) if e.error.kind() == io::ErrorKind::IsADirectory => Err(OutputError::IsADir { path: path.to_owned() }),
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
            log::warn!("could not fsync directory {} after writing into it: {e}", dir.display());
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Maps an IO error met while writing `path` in `dir` to the error users see.
fn classify(err: io::Error, path: &Path, dir: &Path) -> OutputError {
    // ENOSPC = 28 and EDQUOT (Linux 122) also checked by number, for kernels/libcs whose
    // mapping to ErrorKind might lag.
    let disk_full = matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || (cfg!(target_os = "linux") && matches!(err.raw_os_error(), Some(28 | 122)));
    match err.kind() {
        _ if disk_full => OutputError::DiskFull { path: path.to_owned() },
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => OutputError::Unwritable { dir: dir.to_owned(), cause: err },
        _ => OutputError::Io { path: path.to_owned(), cause: err },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_util::entries;

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
        assert_eq!(err.to_string(), format!("{} exists; pass --overwrite to replace it", path.display()));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        assert_eq!(entries(dir.path()), vec!["out.csv"]);
    }

    #[test]
    fn losing_the_race_to_create_the_file_leaves_no_temp_file() {
        // The target appears after the existence check but before the final link.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.png");
        let mut tmp = tempfile::Builder::new().prefix(".late.png.").suffix(".tmp").tempfile_in(dir.path()).unwrap();
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
        assert_eq!(err.to_string(), format!("output directory {} does not exist; create it or pass another --out", missing.display()));
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
        assert_eq!(classify(enospc, p, d).to_string(), "disk full while writing out/a.png; free space and run again");
        assert!(matches!(classify(io::Error::from(io::ErrorKind::StorageFull), p, d), OutputError::DiskFull { .. }));
        assert!(matches!(classify(io::Error::from(io::ErrorKind::QuotaExceeded), p, d), OutputError::DiskFull { .. }));
        let eacces = classify(io::Error::from_raw_os_error(13), p, d);
        assert!(matches!(eacces, OutputError::Unwritable { .. }));
        assert!(eacces.to_string().starts_with("cannot write in output directory out ("), "{eacces}");
        let erofs = classify(io::Error::from(io::ErrorKind::ReadOnlyFilesystem), p, d);
        assert!(matches!(erofs, OutputError::Unwritable { .. }));
        let other = classify(io::Error::other("boom"), p, d);
        assert_eq!(other.to_string(), "could not write out/a.png: boom");
        for e in [eacces, erofs, other] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    fn set(dir: &Path, contents: &[&str]) -> OutputSet {
        OutputSet {
            files: contents
                .iter()
                .enumerate()
                .map(|(i, c)| OutputFile { path: dir.join(format!("f{i}.txt")), bytes: c.as_bytes().to_vec() })
                .collect(),
        }
    }

    fn read_all(dir: &Path) -> Vec<(String, String)> {
        entries(dir).into_iter().map(|n| (n.clone(), std::fs::read_to_string(dir.join(&n)).unwrap())).collect()
    }

    #[test]
    fn a_set_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let go = AtomicBool::new(false);
        let paths = set(dir.path(), &["a", "b", "c"]).write(false, &go).unwrap();
        assert_eq!(paths.len(), 3);
        assert_eq!(read_all(dir.path()), [("f0.txt".into(), "a".into()), ("f1.txt".into(), "b".into()), ("f2.txt".into(), "c".into())]);
        // Without overwrite, one existing file stops the whole set before anything is written.
        std::fs::remove_file(dir.path().join("f0.txt")).unwrap();
        let e = set(dir.path(), &["x", "y", "z"]).write(false, &go).unwrap_err();
        assert!(matches!(e, OutputError::Exists { .. }), "{e}");
        assert_eq!(entries(dir.path()), ["f1.txt", "f2.txt"]);
    }

    #[test]
    fn a_failure_at_any_point_of_an_overwrite_keeps_the_previous_set() {
        let go = AtomicBool::new(false);
        for fault in [Fault::Stage(0), Fault::Stage(2), Fault::Commit(0), Fault::Commit(1), Fault::Commit(2)] {
            let dir = tempfile::tempdir().unwrap();
            set(dir.path(), &["old0", "old1"]).write(false, &go).unwrap();
            let before = read_all(dir.path());
            // Three new files over two old ones: the third target is new.
            let e = set(dir.path(), &["new0", "new1", "new2"]).write_with(true, &go, fault).unwrap_err();
            assert!(matches!(e, OutputError::DiskFull { .. }), "{fault:?}: {e}");
            assert_eq!(read_all(dir.path()), before, "{fault:?}: the previous set changed or temporary files were left");
        }
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), &["old0", "old1"]).write(false, &go).unwrap();
        set(dir.path(), &["new0", "new1", "new2"]).write(true, &go).unwrap();
        assert_eq!(read_all(dir.path()).iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>(), ["new0", "new1", "new2"]);
    }

    #[test]
    fn a_stop_request_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(true);
        let e = set(dir.path(), &["a", "b"]).write(true, &stop).unwrap_err();
        assert!(matches!(e, OutputError::Interrupted));
        assert!(entries(dir.path()).is_empty());
    }
}
