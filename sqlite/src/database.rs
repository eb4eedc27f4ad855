//! One open volume seen as SQLite's main database file, shared by every connection of this
//! process that opened it: the file's bytes (pending writes over cached or stored pages), its
//! size, its commits and its locks. It is generic over [`PageStore`], so the same code runs on
//! a Borealis writer and, in the unit tests, on a map that can lose what was not committed.
//!
//! Reads see the transaction's pending writes first, then the page cache, then the volume at
//! VDL. Writes only fill the pending transaction. A commit happens at `xSync`, at SQLite's
//! `COMMIT_ATOMIC_WRITE`, and when the writing connection drops its write lock with writes still
//! pending (so `PRAGMA synchronous=OFF` commits too); it returns once the group is durable.
//!
//! The first failed commit, and a read that finds this process fenced, latch: every later call
//! fails with the same error, since after a fence (another writer took the volume over) or a
//! commit timeout (the outcome unknown) the file this process sees may no longer be the
//! volume's. Reopening starts afresh. Any other failed read fails only that read.
//!
//! A write that fails (a transaction beyond its bound, a header with another page size, a page
//! that could not be read for a partial write) poisons the transaction: SQLite rolls it back,
//! but its rollback may itself fail half way, so what is pending then is neither the old nor the
//! new state. A poisoned transaction is never committed: the next commit point (the rollback's
//! `xSync`, or the end of the write lock) drops it, which leaves exactly the durable state — the
//! rolled-back one.

use bytes::Bytes;
use client::NewRecord;
use protocol::PageId;

use crate::cache::{PageCache, CACHE_PAGES_MAX};
use crate::lock::{Busy, Holder, LockLevel, LockTable};
use crate::pending::{self, Pending, Source, TooBig};
use crate::superblock::{self, PAGE, PAGE_BYTES};

/// Pages read at once when reads of stored pages run sequentially (a table or index scan):
/// the read that misses the cache just after the previous miss also fetches the pages after
/// it, so a scan waits for one round trip per window instead of one per page.
pub const READAHEAD_PAGES: u64 = 32;

/// What the database needs from the volume.
pub trait PageStore {
    /// Volume pages as durable at one moment (at VDL), in order; `None` for a page never
    /// written (zeros).
    fn read(&mut self, pages: &[PageId]) -> Result<Vec<Option<Bytes>>, StoreError>;
    /// Appends `records` as one atomic group (the last is the CPL) and waits until durable.
    fn commit(&mut self, records: Vec<NewRecord>) -> Result<(), StoreError>;
    /// Moves a read-only view to the volume's newest committed state and holds it; true if
    /// it moved. A writer's view is always the newest (its own commits), so by default nothing
    /// moves.
    fn refresh(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// No read transaction is open: a read-only view stops holding its point, so the nodes'
    /// floors (and their garbage collection) are not held back by an idle connection.
    fn release(&mut self) {}
}

/// Why the volume failed an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("another writer took the volume over (this process was fenced)")]
    Fenced,
    #[error("append: {0}")]
    Append(client::AppendError),
    #[error("read: {0}")]
    Read(client::ReadError),
    #[error("the volume's writer is closed")]
    Closed,
    #[error("the database was opened read-only (mode=ro)")]
    ReadOnly,
    #[error("a read-only view was read outside a read transaction")]
    NoReadTransaction,
}

/// Why a file operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    TooBig(#[from] TooBig),
    #[error("the database header asks for {0}-byte pages; the borealis VFS uses {PAGE_BYTES} (PRAGMA page_size = {PAGE_BYTES})")]
    PageSize(u32),
    #[error(transparent)]
    Superblock(#[from] superblock::SuperblockError),
    #[error("an earlier failure stopped this volume in this process ({0}); close and reopen the database")]
    Latched(Box<FileError>),
}

/// The result of a read: whether it ran past the end of the file (the rest zero-filled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    Full,
    Short,
}

/// The shared state of one open volume.
#[derive(Debug)]
pub struct Database<S> {
    store: S,
    pending: Pending,
    /// The pending transaction and whether it was poisoned, as they were at
    /// `BEGIN_ATOMIC_WRITE`, while a batch is open.
    batch_start: Option<(Pending, bool)>,
    cache: PageCache,
    /// A write of the pending transaction failed: it is dropped, never committed.
    poisoned: bool,
    /// The last page a cache miss read from the store: a miss on the page after it reads ahead.
    last_miss: Option<u64>,
    locks: LockTable,
    failed: Option<FileError>,
    /// A read-only view moved and the file size at its new point is not read yet (the read
    /// failed): the next read transaction reads it before anything else.
    view_stale: bool,
}

impl<S: PageStore> Database<S> {
    /// Reads the superblock; a volume never written is an empty file.
    pub fn open(mut store: S) -> Result<Database<S>, OpenFailure> {
        let size = stored_size(&mut store)?;
        store.release();
        Ok(Database {
            store,
            pending: Pending::new(size),
            batch_start: None,
            cache: PageCache::new(CACHE_PAGES_MAX),
            poisoned: false,
            last_miss: None,
            locks: LockTable::default(),
            failed: None,
            view_stale: false,
        })
    }

    /// The store, for closing it.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The file's size, with the pending transaction's writes.
    pub fn size(&self) -> Result<u64, FileError> {
        self.check()?;
        Ok(self.pending.size())
    }

    /// Fills `buf` from `offset`; past the end of the file with zeros.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome, FileError> {
        // SQLite reads the header once without a lock when it opens a database: such a read
        // is a read transaction of its own (a read-only view moves and holds its point just
        // for it).
        if !self.locks.idle() {
            return self.read_locked(offset, buf);
        }
        self.begin_read()?;
        let read = self.read_locked(offset, buf);
        self.store.release();
        read
    }

    fn read_locked(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome, FileError> {
        self.check()?;
        let size = self.pending.size();
        let mut outcome = ReadOutcome::Full;
        for (page, in_page, out) in spans(offset, buf) {
            let page_start = page * PAGE as u64;
            if page_start + in_page as u64 + out.len() as u64 > size {
                outcome = ReadOutcome::Short;
            }
            if page_start >= size {
                out.fill(0);
                continue;
            }
            let bytes = self.page(page)?;
            out.copy_from_slice(&bytes[in_page..in_page + out.len()]);
            // Bytes past the end of a partial last page read as zeros, like a short file.
            let valid = size.saturating_sub(page_start + in_page as u64).min(out.len() as u64) as usize;
            out[valid..].fill(0);
        }
        Ok(outcome)
    }

    /// Writes `data` at `offset` into the pending transaction.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), FileError> {
        self.check()?;
        let written = self.write_pages(offset, data);
        self.poison_on_failure(written)
    }

    fn write_pages(&mut self, offset: u64, data: &[u8]) -> Result<(), FileError> {
        if offset == 0 {
            check_header(data)?;
        }
        let mut rest = data;
        let mut at = offset;
        while !rest.is_empty() {
            let (page, in_page) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let n = rest.len().min(PAGE - in_page);
            let bytes = if n == PAGE {
                Bytes::copy_from_slice(&rest[..n])
            } else {
                let mut whole = self.page_or_zeros(page)?.to_vec();
                whole[in_page..in_page + n].copy_from_slice(&rest[..n]);
                whole.into()
            };
            self.pending.put(page, bytes, at + n as u64)?;
            rest = &rest[n..];
            at += n as u64;
        }
        Ok(())
    }

    /// Sets the file's size (in the pending transaction).
    pub fn truncate(&mut self, size: u64) -> Result<(), FileError> {
        self.check()?;
        let truncated = self.truncate_pages(size);
        self.poison_on_failure(truncated)
    }

    fn truncate_pages(&mut self, size: u64) -> Result<(), FileError> {
        let tail = (size % PAGE as u64) as usize;
        if tail != 0 && size < self.pending.size() {
            // The bytes after the new end must read as zeros if the file grows back.
            let page = size / PAGE as u64;
            let mut whole = self.page_or_zeros(page)?.to_vec();
            whole[tail..].fill(0);
            self.pending.truncate(size);
            self.pending.put(page, whole.into(), size)?;
        } else {
            self.pending.truncate(size);
        }
        Ok(())
    }

    /// Commits the pending transaction as one atomic group and waits until it is durable (a
    /// poisoned one is dropped instead).
    pub fn commit(&mut self) -> Result<(), FileError> {
        self.check()?;
        if std::mem::take(&mut self.poisoned) {
            self.pending = Pending::new(self.pending.durable_size());
            self.batch_start = None;
            return Ok(());
        }
        let records = self.poison_on_failure(self.pending.records().map_err(FileError::from))?;
        if records.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.store.commit(records) {
            return Err(self.latch(error.into()));
        }
        let (pages, zero_from) = self.pending.committed();
        self.cache.remove_from(zero_from);
        for (page, bytes) in pages {
            self.cache.insert(page, bytes);
        }
        Ok(())
    }

    /// `SQLITE_FCNTL_BEGIN_ATOMIC_WRITE`: remembers where the batch started.
    pub fn begin_batch(&mut self) -> Result<(), FileError> {
        self.check()?;
        self.batch_start = Some((self.pending.clone(), self.poisoned));
        Ok(())
    }

    /// `SQLITE_FCNTL_COMMIT_ATOMIC_WRITE`: commits everything pending, the batch included.
    pub fn commit_batch(&mut self) -> Result<(), FileError> {
        self.batch_start = None;
        self.commit()
    }

    /// `SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE`: forgets the batch's writes, and so the poison of
    /// one that failed (SQLite sends it after a failed write): the batch left nothing to drop,
    /// and a poison left behind would drop the next transaction at its commit.
    pub fn rollback_batch(&mut self) {
        if let Some((pending, poisoned)) = self.batch_start.take() {
            self.pending = pending;
            self.poisoned = poisoned;
        }
    }

    /// A connection starts a read transaction (takes SHARED from no lock): when no other
    /// connection of the process holds a lock, a read-only view moves to the volume's newest
    /// committed state, and what was cached of the older one is dropped. SQLite reads the
    /// header next and drops its own cache when the change counter moved.
    pub fn begin_read(&mut self) -> Result<(), FileError> {
        self.check()?;
        if !self.locks.idle() {
            return Ok(());
        }
        if self.store.refresh()? {
            debug_assert!(!self.pending.is_dirty(), "a read-only view never has writes pending");
            self.cache = PageCache::new(CACHE_PAGES_MAX);
            self.last_miss = None;
            self.view_stale = true;
        }
        if self.view_stale {
            let size = stored_size(&mut self.store).map_err(|e| match e {
                OpenFailure::Store(e) => FileError::Store(e),
                OpenFailure::Superblock(e) => FileError::Superblock(e),
            })?;
            self.pending = Pending::new(size);
            self.view_stale = false;
        }
        Ok(())
    }

    pub fn lock(&mut self, who: Holder, held: LockLevel, want: LockLevel) -> Result<LockLevel, Busy> {
        self.locks.lock(who, held, want)
    }

    /// Lowers a lock; a writer that leaves with writes pending commits them first (a
    /// connection that never syncs, `PRAGMA synchronous=OFF`, still commits at its end).
    pub fn unlock(
        &mut self,
        who: Holder,
        held: LockLevel,
        to: LockLevel,
    ) -> (LockLevel, Result<(), FileError>) {
        let committed = match held > LockLevel::Shared && to <= LockLevel::Shared && self.pending.is_dirty() {
            true => self.commit(),
            false => Ok(()),
        };
        let level = self.locks.unlock(who, held, to);
        if self.locks.idle() {
            self.store.release();
        }
        (level, committed)
    }

    pub fn reserved(&self) -> bool {
        self.locks.reserved()
    }

    /// The first failure, if one latched.
    pub fn failure(&self) -> Option<&FileError> {
        self.failed.as_ref()
    }

    /// Marks the transaction poisoned if `result` is a failure.
    fn poison_on_failure<T>(&mut self, result: Result<T, FileError>) -> Result<T, FileError> {
        self.poisoned |= result.is_err();
        result
    }

    fn check(&self) -> Result<(), FileError> {
        match &self.failed {
            Some(error) => Err(FileError::Latched(Box::new(error.clone()))),
            None => Ok(()),
        }
    }

    fn latch(&mut self, error: FileError) -> FileError {
        self.failed.get_or_insert(error.clone());
        error
    }

    /// File page `page` within the file's pages.
    fn page(&mut self, page: u64) -> Result<Bytes, FileError> {
        match self.pending.source(page) {
            Source::Pending(bytes) => Ok(bytes),
            Source::Zero => Ok(zeros()),
            Source::Stored => match self.cache.get(page) {
                Some(bytes) => Ok(bytes),
                None => self.read_stored(page),
            },
        }
    }

    /// Reads `page` from the store into the cache, with the pages after it if reads run
    /// sequentially.
    fn read_stored(&mut self, page: u64) -> Result<Bytes, FileError> {
        let window = match self.last_miss == page.checked_sub(1) {
            true => READAHEAD_PAGES,
            false => 1,
        };
        let end = (page + window).min(pending::pages_of(self.pending.durable_size())).max(page + 1);
        let wanted: Vec<u64> = std::iter::once(page)
            .chain(
                (page + 1..end)
                    .filter(|p| self.pending.source(*p) == Source::Stored && !self.cache.contains(*p)),
            )
            .collect();
        let volume_pages: Vec<PageId> = wanted.iter().map(|p| pending::volume_page(*p)).collect();
        let stored = match self.store.read(&volume_pages) {
            Ok(stored) => stored,
            // A fenced writer's cache may be stale: nothing more is read. Any other failure
            // fails this read only (the caller may try again).
            Err(StoreError::Fenced) => return Err(self.latch(StoreError::Fenced.into())),
            Err(error) => return Err(error.into()),
        };
        self.last_miss = wanted.last().copied();
        let mut pages = wanted
            .into_iter()
            .zip(stored)
            .map(|(p, b)| (p, b.filter(|b| b.len() == PAGE).unwrap_or_else(zeros)));
        let (_, first) = pages.next().expect("the page asked for is read");
        // Read ahead last, so the page asked for is the most recently used.
        for (p, bytes) in pages {
            self.cache.insert(p, bytes);
        }
        self.cache.insert(page, first.clone());
        Ok(first)
    }

    /// File page `page`, zeros if it lies past the end of the file.
    fn page_or_zeros(&mut self, page: u64) -> Result<Bytes, FileError> {
        match page < pending::pages_of(self.pending.size()) {
            true => self.page(page),
            false => Ok(zeros()),
        }
    }
}

/// Why a volume could not be opened as a database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Superblock(#[from] superblock::SuperblockError),
}

/// The file size the volume's superblock records (0 for a volume never written).
fn stored_size<S: PageStore>(store: &mut S) -> Result<u64, OpenFailure> {
    let superblock = store.read(&[superblock::PAGE_ID])?.pop().flatten();
    Ok(superblock::parse(superblock.as_deref())?.unwrap_or(0))
}

fn zeros() -> Bytes {
    Bytes::from(vec![0u8; PAGE])
}

/// Refuses a database header whose page size is not the volume's: SQLite stores the page size
/// big-endian at bytes 16-17 (1 meaning 65536).
fn check_header(data: &[u8]) -> Result<(), FileError> {
    let Some(field) = data.get(16..18) else { return Ok(()) };
    let page_bytes = match u16::from_be_bytes([field[0], field[1]]) {
        1 => 65_536,
        n => u32::from(n),
    };
    match page_bytes == PAGE_BYTES || page_bytes == 0 {
        true => Ok(()),
        false => Err(FileError::PageSize(page_bytes)),
    }
}

/// `buf` cut at page boundaries: (file page, offset in the page, the part of `buf`).
fn spans(offset: u64, buf: &mut [u8]) -> impl Iterator<Item = (u64, usize, &mut [u8])> {
    let first = (PAGE - (offset % PAGE as u64) as usize).min(buf.len());
    let (head, tail) = buf.split_at_mut(first);
    let head_page = offset / PAGE as u64;
    let head_span = (!head.is_empty()).then(|| (head_page, (offset % PAGE as u64) as usize, head));
    let next = head_page + 1;
    head_span
        .into_iter()
        .chain(tail.chunks_mut(PAGE).enumerate().map(move |(i, chunk)| (next + i as u64, 0, chunk)))
}

#[cfg(test)]
#[path = "database_tests.rs"]
mod tests;
