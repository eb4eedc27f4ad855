//! Every file SQLite opens through this VFS other than a main database — rollback journals,
//! statement journals, temporary databases, sort spills — lives in this process's memory.
//!
//! That is safe because a commit reaches the volume as one atomic group (see `pending`): the
//! volume never holds part of a transaction, so there is never a hot journal to roll back after
//! a crash, and a journal only has to serve the rollback of a transaction in this process (a
//! ROLLBACK, a failed statement), which memory does. Named files are kept by name so that
//! SQLite's `xAccess` and `xDelete` on them work across its connections in this process.
//!
//! There is never a hot journal to roll back, so `xAccess` never reports a rollback journal as
//! existing: a journal left behind by a connection whose commit failed (its volume latched, or
//! taken over by another process) must never be played back into the volume as it is now.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

/// The largest in-memory file (a journal holds a transaction's old pages, bounded anyway by
/// `pending::TRANSACTION_PAGES_MAX`; a temporary file of a large sort may be larger).
pub const MEMORY_FILE_BYTES_MAX: u64 = 1 << 30;

/// One in-memory file's bytes.
pub type Contents = Arc<Mutex<Vec<u8>>>;

/// A named file: its bytes, and whether it is a main database's rollback journal.
#[derive(Debug)]
struct Named {
    contents: Contents,
    rollback_journal: bool,
}

fn named() -> MutexGuard<'static, HashMap<String, Named>> {
    static NAMED: LazyLock<Mutex<HashMap<String, Named>>> = LazyLock::new(Mutex::default);
    NAMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a file is opened (from SQLite's open flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    pub create: bool,
    pub delete_on_close: bool,
    /// `SQLITE_OPEN_MAIN_JOURNAL`: never reported by [`exists`].
    pub rollback_journal: bool,
}

/// Why an in-memory file operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("no such file")]
    NotFound,
    #[error("an in-memory file may hold at most {MEMORY_FILE_BYTES_MAX} bytes")]
    Full,
}

/// An open in-memory file.
#[derive(Debug)]
pub struct MemoryFile {
    contents: Contents,
    name: Option<String>,
    delete_on_close: bool,
}

impl MemoryFile {
    /// Opens the file called `name` (created if `options.create`), or a new anonymous file.
    pub fn open(name: Option<&str>, options: OpenOptions) -> Result<MemoryFile, MemoryError> {
        let contents = match name {
            None => Contents::default(),
            Some(name) => {
                let mut files = named();
                match files.get(name) {
                    Some(file) => Arc::clone(&file.contents),
                    None if options.create => {
                        let file = Named {
                            contents: Contents::default(),
                            rollback_journal: options.rollback_journal,
                        };
                        Arc::clone(&files.entry(name.to_owned()).or_insert(file).contents)
                    }
                    None => return Err(MemoryError::NotFound),
                }
            }
        };
        Ok(MemoryFile { contents, name: name.map(str::to_owned), delete_on_close: options.delete_on_close })
    }

    /// Fills `buf` from `offset`; returns false if the file ended first (the rest zero-filled).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let bytes = self.bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        buf[n..].fill(0);
        n == buf.len()
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        let end = offset.checked_add(data.len() as u64).filter(|e| *e <= MEMORY_FILE_BYTES_MAX);
        let end = end.ok_or(MemoryError::Full)? as usize;
        let mut bytes = self.bytes();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    pub fn truncate(&self, size: u64) -> Result<(), MemoryError> {
        let size = usize::try_from(size).ok().filter(|s| *s as u64 <= MEMORY_FILE_BYTES_MAX);
        self.bytes().resize(size.ok_or(MemoryError::Full)?, 0);
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.bytes().len() as u64
    }

    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.contents.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        if let (true, Some(name)) = (self.delete_on_close, &self.name) {
            let mut files = named();
            if files.get(name).is_some_and(|f| Arc::ptr_eq(&f.contents, &self.contents)) {
                files.remove(name);
            }
        }
    }
}

/// True if a file called `name` exists (`xAccess`), which a rollback journal never does.
pub fn exists(name: &str) -> bool {
    named().get(name).is_some_and(|f| !f.rollback_journal)
}

/// Deletes the file called `name` (`xDelete`); handles still open keep their bytes.
pub fn delete(name: &str) {
    named().remove(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: OpenOptions = OpenOptions { create: true, delete_on_close: false, rollback_journal: false };

    #[test]
    fn a_rollback_journal_is_never_hot() {
        let journal = OpenOptions { rollback_journal: true, ..CREATE };
        let file = MemoryFile::open(Some("memfile-test-c-journal"), journal).unwrap();
        file.write(0, b"a valid journal header, say").unwrap();
        assert!(!exists("memfile-test-c-journal"), "SQLite must never play it back");
        let again = MemoryFile::open(Some("memfile-test-c-journal"), CREATE).unwrap();
        assert_eq!(again.size(), 27, "its own connection reopens it by name");
    }

    #[test]
    fn a_named_file_is_shared_until_deleted() {
        let a = MemoryFile::open(Some("memfile-test-a"), CREATE).unwrap();
        a.write(4, b"abcd").unwrap();
        let b = MemoryFile::open(Some("memfile-test-a"), OpenOptions::default()).unwrap();
        let mut buf = [9u8; 10];
        assert!(!b.read(0, &mut buf), "the file ends at 8");
        assert_eq!(&buf, b"\0\0\0\0abcd\0\0");
        assert!(exists("memfile-test-a"));
        delete("memfile-test-a");
        assert!(!exists("memfile-test-a"));
        let gone = MemoryFile::open(Some("memfile-test-a"), OpenOptions::default());
        assert_eq!(gone.unwrap_err(), MemoryError::NotFound);
    }

    #[test]
    fn a_delete_on_close_file_goes_with_its_handle() {
        let file = MemoryFile::open(Some("memfile-test-b"), OpenOptions { delete_on_close: true, ..CREATE })
            .unwrap();
        file.write(0, b"x").unwrap();
        file.truncate(0).unwrap();
        assert_eq!(file.size(), 0);
        drop(file);
        assert!(!exists("memfile-test-b"));
    }

    #[test]
    fn a_file_beyond_its_bound_is_refused() {
        let file = MemoryFile::open(None, CREATE).unwrap();
        assert_eq!(file.write(MEMORY_FILE_BYTES_MAX, b"x"), Err(MemoryError::Full));
        assert_eq!(file.truncate(MEMORY_FILE_BYTES_MAX + 1), Err(MemoryError::Full));
    }
}
