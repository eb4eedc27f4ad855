//! The io_uring journal driver: preallocated files, one write + `fdatasync` per group.
//!
//! Files are created whole (`fallocate`) before the first group goes in, so a full disk shows
//! up as `WriteError::NoSpace` when a file is created, never halfway through a group, and
//! nothing already written is touched. Groups are written with O_DIRECT when the file system
//! allows it (4 KiB-aligned buffers and offsets), buffered otherwise; either way the ack waits
//! for `fdatasync`. Reads use a separate buffered descriptor.
//!
//! The first I/O error latches: the journal refuses every later write, so a failed flush is
//! never retried as if it had worked (redb's rule; the kernel may already have dropped the
//! dirty pages it could not write).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;

use tokio_uring::fs::File;

use super::group::GroupImage;
use super::replay::{log_file_name, ReplayOutcome};
use crate::core::{Location, NodeFailure};

/// Smallest journal file: one frame of records must fit in a group, and a group in a file.
pub const JOURNAL_FILE_BYTES_MIN: u64 = 16 * 1024 * 1024;

/// Journal settings.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// File name prefix (`replay::JOURNAL_PREFIX` or `replay::PAGES_PREFIX`).
    pub prefix: &'static str,
    /// Size every journal file is preallocated to.
    pub file_bytes: u64,
    /// Try O_DIRECT (falls back to buffered writes where the file system refuses it).
    pub direct_io: bool,
}

/// Where the next group goes: what a checkpoint covers and where replay resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalPosition {
    pub file: u64,
    pub offset: u64,
    pub next_group_seq: u64,
}

/// Why a group was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no space for a new journal file")]
    NoSpace,
    #[error("journal failed: {0}")]
    Failed(NodeFailure),
}

/// Read descriptors of every journal file, shared with the tasks that serve reads while the
/// journal task writes.
#[derive(Clone)]
pub struct JournalReader {
    files: Rc<RefCell<BTreeMap<u64, Rc<File>>>>,
    dir: PathBuf,
    prefix: &'static str,
}

impl JournalReader {
    /// File numbers held (open for reading), ascending.
    pub fn files(&self) -> Vec<u64> {
        self.files.borrow().keys().copied().collect()
    }

    /// Deletes a file no longer needed; the caller guarantees it is not the one being written.
    /// Reads already holding its descriptor finish; later ones find no file.
    pub fn remove_file(&self, file: u64) -> std::io::Result<()> {
        self.files.borrow_mut().remove(&file);
        let path = self.dir.join(log_file_name(self.prefix, file));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        crate::dual::sync_dir(&self.dir)
    }

    /// Reads the bytes of one entry.
    /// True while file `file` is open for reading (not recycled).
    pub fn has_file(&self, file: u64) -> bool {
        self.files.borrow().contains_key(&file)
    }

    pub async fn read(&self, location: Location) -> std::io::Result<Vec<u8>> {
        let file = self.files.borrow().get(&location.file).cloned();
        let file = file.ok_or_else(|| std::io::Error::other(format!("no journal file {}", location.file)))?;
        let (result, buf) = file.read_exact_at(vec![0u8; location.len as usize], location.offset).await;
        result.map(|()| buf)
    }
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalReader({} files)", self.files.borrow().len())
    }
}

/// See the module docs.
pub struct Journal {
    config: JournalConfig,
    reader: JournalReader,
    /// The write descriptor of the current file.
    writing: Option<File>,
    current: u64,
    offset: u64,
    next_group_seq: u64,
    direct: bool,
    failed: Option<NodeFailure>,
    bytes_written: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal(file {} offset {} next group {})", self.current, self.offset, self.next_group_seq)
    }
}

impl Journal {
    /// Opens the files replay found and positions writing at the tail replay chose.
    pub fn open(config: JournalConfig, replayed: &ReplayOutcome) -> std::io::Result<Journal> {
        let reader = JournalReader { files: Rc::default(), dir: config.dir.clone(), prefix: config.prefix };
        let mut journal = Journal {
            direct: config.direct_io,
            config,
            reader,
            writing: None,
            current: replayed.tail_file,
            offset: replayed.tail_offset,
            next_group_seq: replayed.next_group_seq,
            failed: None,
            bytes_written: 0,
        };
        for file in &replayed.files {
            journal.open_file(*file, *file == replayed.tail_file)?;
        }
        Ok(journal)
    }

    /// The file number and sequence number the next group will carry, after creating the
    /// current file or rolling to a new one if `len` bytes do not fit.
    pub fn prepare(&mut self, len: usize) -> Result<(u64, u64), WriteError> {
        self.check_failed()?;
        assert!(len as u64 <= self.config.file_bytes, "a group never exceeds a journal file");
        if self.writing.is_none() {
            self.create_file(self.current)?;
        }
        if self.offset + len as u64 > self.config.file_bytes {
            self.create_file(self.current + 1)?;
            self.current += 1;
            self.offset = 0;
        }
        Ok((self.current, self.next_group_seq))
    }

    /// Writes and flushes a group built for the position `prepare` returned; returns where each
    /// entry landed.
    pub async fn write(&mut self, image: GroupImage) -> Result<Vec<(u64, Location)>, WriteError> {
        self.check_failed()?;
        assert_eq!((image.header.file, image.header.group_seq), (self.current, self.next_group_seq));
        let file = self.writing.as_ref().expect("prepare opened the current file for writing");
        let base = self.offset;
        let placed: Vec<(u64, Location)> = image
            .placed
            .iter()
            .map(|(seq, at, len)| {
                (*seq, Location { file: self.current, offset: base + *at as u64, len: *len as u32 })
            })
            .collect();
        let len = image.bytes.len() as u64;
        let (written, _) = file.write_all_at(image.bytes, base).await;
        let result = match written {
            Ok(()) => file.sync_data().await,
            Err(e) => Err(e),
        };
        if let Err(error) = result {
            let at = format!("{} at offset {base}", self.path(self.current).display());
            return Err(self.latch(NodeFailure::io("write", at, &error)));
        }
        self.offset += len;
        self.bytes_written += len;
        self.next_group_seq += 1;
        Ok(placed)
    }

    /// Where the next group goes.
    pub fn position(&self) -> JournalPosition {
        JournalPosition { file: self.current, offset: self.offset, next_group_seq: self.next_group_seq }
    }

    /// Bytes written since this journal was opened.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// A handle for reading entries while this journal writes.
    pub fn reader(&self) -> JournalReader {
        self.reader.clone()
    }

    /// True if writes go through O_DIRECT.
    pub fn direct_io(&self) -> bool {
        self.direct
    }

    fn check_failed(&self) -> Result<(), WriteError> {
        match &self.failed {
            Some(reason) => Err(WriteError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn path(&self, file: u64) -> PathBuf {
        self.config.dir.join(log_file_name(self.config.prefix, file))
    }

    /// Creates and preallocates a journal file, durably (the directory entry too).
    fn create_file(&mut self, file: u64) -> Result<(), WriteError> {
        let path = self.path(file);
        let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
        let created = created.map_err(|e| self.latch(NodeFailure::io("create", path.display(), &e)))?;
        // SAFETY: fallocate on a descriptor we own, with a length that fits in off_t.
        let rc = unsafe { libc::fallocate(created.as_raw_fd(), 0, 0, self.config.file_bytes as libc::off_t) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            drop(created);
            let _ = std::fs::remove_file(&path);
            if error.raw_os_error() == Some(libc::ENOSPC) {
                return Err(WriteError::NoSpace);
            }
            return Err(self.latch(NodeFailure::io("preallocate", path.display(), &error)));
        }
        let synced = created.sync_all().and_then(|()| crate::dual::sync_dir(&self.config.dir));
        synced.map_err(|e| self.latch(NodeFailure::io("sync", path.display(), &e)))?;
        self.open_file(file, true).map_err(|e| self.latch(NodeFailure::io("open", path.display(), &e)))
    }

    fn open_file(&mut self, file: u64, writable: bool) -> std::io::Result<()> {
        let path = self.path(file);
        let read = Rc::new(File::from_std(std::fs::File::open(&path)?));
        if writable {
            // Only the newest file is ever written; the previous write descriptor closes here.
            self.writing = Some(self.open_for_writing(&path)?);
        }
        self.reader.files.borrow_mut().insert(file, read);
        Ok(())
    }

    fn open_for_writing(&mut self, path: &std::path::Path) -> std::io::Result<File> {
        if self.direct {
            match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
                Ok(file) => return Ok(File::from_std(file)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(path = %path.display(), "file system refuses O_DIRECT; journal writes are buffered");
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(File::from_std(std::fs::OpenOptions::new().write(true).open(path)?))
    }

    fn latch(&mut self, reason: NodeFailure) -> WriteError {
        self.failed = Some(reason.clone());
        WriteError::Failed(reason)
    }
}
