//! The journal writer: preallocated files of 4 KiB-aligned groups, one write and one flush per
//! group, over any `Storage` (io_uring on a node, the lying disk in the simulator).
//!
//! Files are created whole before the first group goes in, so a full disk shows up as
//! `WriteError::NoSpace` when a file is created, never halfway through a group, and nothing
//! already written is touched. A group is written (`write`) and then made durable (`flush`):
//! two calls, so the simulator can crash a node between them; the daemon makes both at once.
//!
//! The first I/O error latches: the journal refuses every later write, so a failed flush is
//! never retried as if it had worked (redb's rule; the kernel may already have dropped the
//! dirty pages it could not write).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use super::files::{log_path, JournalPosition};
use super::group::GroupImage;
use super::replay::ReplayOutcome;
use crate::core::{Location, NodeFailure};
use crate::storage::{is_no_space, Storage};

/// Smallest journal file: one frame of records must fit in a group, and a group in a file.
pub const JOURNAL_FILE_BYTES_MIN: u64 = 16 * 1024 * 1024;

/// Journal settings.
#[derive(Clone, Copy, Debug)]
pub struct JournalConfig {
    /// The log's subdirectory of the data directory (`files::JOURNAL_PREFIX` or
    /// `files::PAGES_PREFIX`, which is also the file name prefix).
    pub prefix: &'static str,
    /// Size every journal file is preallocated to.
    pub file_bytes: u64,
}

/// Why a group was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no space for a new journal file")]
    NoSpace,
    #[error("journal failed: {0}")]
    Failed(NodeFailure),
}

/// Reads entries of a log's files while its writer writes, and deletes the files no longer
/// needed. Clones share the set of files.
#[derive(Clone)]
pub struct JournalReader<S> {
    files: Rc<RefCell<BTreeSet<u64>>>,
    /// Set by `request_roll`; the writer's next `prepare` moves to a new file and clears it.
    roll: Rc<Cell<bool>>,
    storage: S,
    prefix: &'static str,
}

impl<S: Storage> JournalReader<S> {
    /// File numbers held (not recycled), ascending.
    pub fn files(&self) -> Vec<u64> {
        self.files.borrow().iter().copied().collect()
    }

    /// Asks the writer to put its next group in a new file, even if the current one has room:
    /// after it, every file up to the current one holds only groups written before the ask
    /// (a data key rotation waits for those files to be recycled, `store::NodeStore`).
    pub fn request_roll(&self) {
        self.roll.set(true);
    }

    /// True while a roll asked for has not happened yet.
    pub fn roll_pending(&self) -> bool {
        self.roll.get()
    }

    /// True while file `file` is held (not recycled).
    pub fn has_file(&self, file: u64) -> bool {
        self.files.borrow().contains(&file)
    }

    /// Deletes a file no longer needed; the caller guarantees it is not the one being written.
    /// Reads already under way finish or fail; later ones find no file.
    pub async fn remove_file(&self, file: u64) -> std::io::Result<()> {
        self.files.borrow_mut().remove(&file);
        self.storage.remove(&log_path(self.prefix, file)).await
    }

    /// Reads the bytes of one entry.
    pub async fn read(&self, location: Location) -> std::io::Result<Vec<u8>> {
        let path = log_path(self.prefix, location.file);
        self.storage.read_at(&path, location.offset, location.len as usize).await
    }
}

impl<S> std::fmt::Debug for JournalReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalReader({} {} files)", self.prefix, self.files.borrow().len())
    }
}

/// A group written and not yet flushed.
#[derive(Debug)]
struct Unflushed {
    len: u64,
    placed: Vec<(u64, Location)>,
}

/// See the module docs.
pub struct Journal<S> {
    config: JournalConfig,
    storage: S,
    reader: JournalReader<S>,
    /// The current file exists (it is created before its first group).
    created: bool,
    current: u64,
    offset: u64,
    next_group_seq: u64,
    unflushed: Option<Unflushed>,
    failed: Option<NodeFailure>,
    bytes_written: u64,
}

impl<S> std::fmt::Debug for Journal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal(file {} offset {} next group {})", self.current, self.offset, self.next_group_seq)
    }
}

impl<S: Storage> Journal<S> {
    /// Takes over the files replay found and positions writing at the tail replay chose.
    /// Files after the tail's hold no group replay accepted (it looks for valid groups in
    /// every later file before it ends the log): they were created for groups a crash lost,
    /// and are deleted, so the next roll creates them afresh.
    pub async fn open(
        storage: S,
        config: JournalConfig,
        replayed: &ReplayOutcome,
    ) -> std::io::Result<Journal<S>> {
        let (kept, unused): (Vec<u64>, Vec<u64>) =
            replayed.files.iter().partition(|f| **f <= replayed.tail_file);
        for file in unused {
            tracing::info!(file, prefix = config.prefix, "deleting a file created for groups a crash lost");
            storage.remove(&log_path(config.prefix, file)).await?;
        }
        let files = Rc::new(RefCell::new(kept.iter().copied().collect()));
        let roll = Rc::new(Cell::new(false));
        let reader = JournalReader { files, roll, storage: storage.clone(), prefix: config.prefix };
        Ok(Journal {
            created: replayed.files.contains(&replayed.tail_file),
            config,
            storage,
            reader,
            current: replayed.tail_file,
            offset: replayed.tail_offset,
            next_group_seq: replayed.next_group_seq,
            unflushed: None,
            failed: None,
            bytes_written: 0,
        })
    }

    /// Where the next group goes (file, offset) and the sequence number it carries, after
    /// creating the current file or rolling to a new one if `len` bytes do not fit or a roll
    /// was asked for (`JournalReader::request_roll`).
    pub async fn prepare(&mut self, len: usize) -> Result<JournalPosition, WriteError> {
        self.check_failed()?;
        assert!(self.unflushed.is_none(), "one group in flight at a time");
        assert!(len as u64 <= self.config.file_bytes, "a group never exceeds a journal file");
        if !self.created {
            self.create_file(self.current).await?;
            self.created = true;
            // A file created now holds nothing written before any ask to roll.
            self.reader.roll.set(false);
        }
        if self.reader.roll.get() || self.offset + len as u64 > self.config.file_bytes {
            self.create_file(self.current + 1).await?;
            self.current += 1;
            self.offset = 0;
            self.reader.roll.set(false);
        }
        Ok(self.position())
    }

    /// Writes a group built for the position `prepare` returned. Nothing of it is durable
    /// until `flush`.
    pub async fn write(&mut self, image: GroupImage) -> Result<(), WriteError> {
        self.check_failed()?;
        assert!(self.unflushed.is_none(), "one group in flight at a time");
        assert_eq!((image.header.file, image.header.group_seq), (self.current, self.next_group_seq));
        let base = self.offset;
        let placed = image
            .placed
            .iter()
            .map(|(seq, at, len)| {
                (*seq, Location { file: self.current, offset: base + *at as u64, len: *len as u32 })
            })
            .collect();
        let len = image.bytes.len() as u64;
        let path = log_path(self.config.prefix, self.current);
        if let Err(error) = self.storage.write_at(&path, base, image.bytes).await {
            return Err(self.latch(NodeFailure::io("write", format!("{path} at offset {base}"), &error)));
        }
        self.unflushed = Some(Unflushed { len, placed });
        Ok(())
    }

    /// Makes the written group durable; returns where each of its entries landed.
    pub async fn flush(&mut self) -> Result<Vec<(u64, Location)>, WriteError> {
        self.check_failed()?;
        let Unflushed { len, placed } = self.unflushed.take().expect("a group was written");
        let path = log_path(self.config.prefix, self.current);
        if let Err(error) = self.storage.sync(&path).await {
            return Err(self.latch(NodeFailure::io("flush", path, &error)));
        }
        self.offset += len;
        self.bytes_written += len;
        self.next_group_seq += 1;
        Ok(placed)
    }

    /// Where the next group goes (after the group in flight, once it is flushed).
    pub fn position(&self) -> JournalPosition {
        JournalPosition { file: self.current, offset: self.offset, next_group_seq: self.next_group_seq }
    }

    /// Bytes written since this journal was opened.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// A handle for reading entries while this journal writes.
    pub fn reader(&self) -> JournalReader<S> {
        self.reader.clone()
    }

    fn check_failed(&self) -> Result<(), WriteError> {
        match &self.failed {
            Some(reason) => Err(WriteError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Creates and preallocates a journal file, durably (the directory entry too).
    async fn create_file(&mut self, file: u64) -> Result<(), WriteError> {
        let path = log_path(self.config.prefix, file);
        match self.storage.create(&path, self.config.file_bytes).await {
            Ok(()) => {
                self.reader.files.borrow_mut().insert(file);
                Ok(())
            }
            Err(error) if is_no_space(&error) => Err(WriteError::NoSpace),
            Err(error) => Err(self.latch(NodeFailure::io("create", path, &error))),
        }
    }

    fn latch(&mut self, reason: NodeFailure) -> WriteError {
        self.failed = Some(reason.clone());
        WriteError::Failed(reason)
    }
}
