//! Small file-system helpers the local cluster relies on: atomic replacement of a file and an
//! advisory lock on a directory.
//!
//! Why: `cluster.toml`, the pid file and the key file are read by later commands, possibly after
//! this one was killed half-way. Invariants: [`write_atomically`] leaves either the old file or
//! the complete new one (written beside it, synced, renamed, directory synced), never a torn
//! one; a [`DirLock`] is held exactly as long as the value lives (the kernel drops it when the
//! process dies, so a crash never leaves a stale lock).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Suffix of the temporary file written beside its target.
const TEMP_SUFFIX: &str = ".tmp";

/// A path with [`TEMP_SUFFIX`] appended: where a file is built before it is renamed into place.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut temp = path.as_os_str().to_owned();
    temp.push(TEMP_SUFFIX);
    PathBuf::from(temp)
}

/// Replaces `path` with `contents` (file mode `mode`), atomically and durably.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let temp = temp_path(path);
    remove_if_exists(&temp)?;
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    sync_parent(path)
}

/// Removes `path`; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Syncs the directory holding `path`, so a rename or removal in it survives a crash.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// An exclusive advisory lock (`flock`) on a file, held while this value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `path` (created if missing) without waiting: `Ok(None)` if another
    /// process holds it.
    pub fn try_lock(path: &Path) -> io::Result<Option<DirLock>> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).mode(0o644).open(path)?;
        // SAFETY: flock on a descriptor we own and keep open for the life of the lock.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(DirLock { _file: file, path: path.to_owned() }));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Ok(None),
            _ => Err(error),
        }
    }

    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"one", 0o644).unwrap();
        std::fs::write(temp_path(&path), b"torn").unwrap();
        write_atomically(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = DirLock::try_lock(&path).unwrap().expect("free");
        assert!(DirLock::try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(DirLock::try_lock(&path).unwrap().is_some());
    }
}
