//! The node's durable state over a `Storage`: the journal and page store (writers and
//! readers), the keyring, the checkpoints and the entry cache, and every step that moves bytes
//! between them and the core: opening (checkpoint, then replay), a group becoming durable,
//! checkpointing, recycling files, coalescing, serving reads (`reads`), and dropping a deleted
//! volume for good (`drop_volume`).
//!
//! The daemon's tasks (`server`) and the simulator's nodes call these same steps, the first on
//! io_uring, the second on the lying disk; they differ only in when they call them.

pub mod drop_volume;
pub mod reads;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use protocol::{KeyVersion, VolumeId};

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::core::{CoalesceJob, EntryBody, HydrationCheckpoint, JournalEntry, NodeCore};
use crate::journal::commit::write_group;
use crate::journal::files::{JournalPosition, JOURNAL_PREFIX, PAGES_PREFIX};
use crate::journal::replay::{replay, ReplayReport};
use crate::journal::writer::{Journal, JournalConfig, JournalReader, WriteError};
use crate::keyring::{Keyring, KeyringError};
use crate::seal::Kek;
use crate::storage::Storage;
pub use drop_volume::{DropVolumeError, DroppedVolume};
use reads::{build_job, report_fault, EntryCache};

/// Most page versions stored in one page store group (the daemon's setting).
pub const COALESCE_JOBS_MAX: usize = 64;

/// Access to the node's core from code that awaits between uses: the daemon's `Shared` (which
/// also delivers the replies the core released), or the core lent for one call in the
/// simulator.
pub trait CoreAccess {
    fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T;
}

/// What opening the store needs besides the disk and the key.
#[derive(Clone, Copy, Debug)]
pub struct StoreSettings {
    /// Size every journal and page store file is preallocated to.
    pub file_bytes: u64,
    /// Journal plus page store bytes between two checkpoints.
    pub checkpoint_interval_bytes: u64,
    pub entry_cache_bytes: usize,
    /// Most page versions in one page store group (the group must fit in a file).
    pub coalesce_jobs_max: usize,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("replaying the {log}: {source}")]
    Replay { log: &'static str, source: std::io::Error },
}

/// A store just opened, with the writers of its two logs (each owned by the task that writes
/// it) and what replay saw.
#[derive(Debug)]
pub struct Opened<S> {
    pub store: NodeStore<S>,
    pub journal: Journal<S>,
    pub pages: Journal<S>,
    pub journal_report: ReplayReport,
    pub pages_report: ReplayReport,
    /// Set if the checkpoint could not be used (the whole logs were replayed instead).
    pub checkpoint_error: Option<CheckpointError>,
}

/// See the module docs.
#[derive(Debug)]
pub struct NodeStore<S> {
    pub storage: S,
    pub journal: JournalReader<S>,
    pub pages: JournalReader<S>,
    pub keyring: Keyring<S>,
    pub entry_cache: RefCell<EntryCache>,
    checkpoints: tokio::sync::Mutex<CheckpointStore<S>>,
    covered: RefCell<Covered>,
    coalesce_jobs_max: usize,
    /// Reads of stored entries (journal records, page images) that failed with an I/O error,
    /// whoever read them: page reads, the coalescer, gossip and hydration answers, scrub.
    read_errors: std::cell::Cell<u64>,
    /// Data key rotations whose older versions wait to be destroyed (`recycle`).
    rekeys: RefCell<BTreeMap<VolumeId, Rekey>>,
    /// Held by a recycling pass: the coalescer's and a volume drop's never delete the same
    /// files twice.
    recycling: tokio::sync::Mutex<()>,
    /// Size every journal and page store file is preallocated to.
    file_bytes: u64,
}

/// The files a recycling pass deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recycled {
    pub journal: Vec<u64>,
    pub pages: Vec<u64>,
}

impl Recycled {
    /// How many files were deleted.
    pub fn count(&self) -> u64 {
        (self.journal.len() + self.pages.len()) as u64
    }
}

/// A data key rotation of one volume, as the store follows it: the older versions may be in
/// any file up to the ones noted, and are destroyed once all of those are recycled.
///
/// The files are every file there was when the store first saw the rotation (at its first
/// maintenance pass after `Keyring::rotate_volume`, or after a start): a seal picks the newest
/// version from the moment the rotation is stored, so any entry under an older version was
/// sealed before, into a file that existed by then (a group's file is created before it is
/// sealed). Not stored: a restart notes the files there are then, which include all those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rekey {
    /// The version every new entry of the volume is sealed under.
    pub newest: KeyVersion,
    /// The highest journal file that may hold an older version (`None`: there was none).
    pub journal_through: Option<u64>,
    /// The highest page store file that may hold an older version (`None`: there was none).
    pub pages_through: Option<u64>,
}

impl Rekey {
    /// True once no file it waits for is held any more.
    fn files_gone(&self, journal_files: &[u64], page_files: &[u64]) -> bool {
        let gone = |through: Option<u64>, files: &[u64]| {
            through.is_none_or(|t| files.first().is_none_or(|f| *f > t))
        };
        gone(self.journal_through, journal_files) && gone(self.pages_through, page_files)
    }
}

/// The positions a checkpoint taken now covers: each moves only once the core has taken in
/// everything before it.
#[derive(Clone, Copy, Debug)]
struct Covered {
    journal: JournalPosition,
    pages: JournalPosition,
    /// Journal plus page store bytes made durable since the last checkpoint.
    bytes_since: u64,
    interval_bytes: u64,
}

/// Page versions written to the page store, waiting for their flush.
#[derive(Debug)]
pub struct VersionsWritten {
    built: Vec<CoalesceJob>,
    len: u64,
}

impl VersionsWritten {
    /// The PGs whose versions these are.
    pub fn pgs(&self) -> Vec<protocol::PgRef> {
        let mut pgs: Vec<_> = self.built.iter().map(|job| job.pg).collect();
        pgs.sort();
        pgs.dedup();
        pgs
    }
}

/// What one coalescer pass did.
#[derive(Debug, PartialEq, Eq)]
pub enum Coalesced {
    /// The core wanted no page version.
    Idle,
    /// Every job failed (each was reported).
    AllFailed,
    /// This many versions were stored.
    Stored(usize),
    /// No space for a page store file: the jobs were released.
    NoSpace,
    /// The page store failed: the node is latched failed.
    Failed,
}

/// Opens the store on `storage` into `core`: the newest checkpoint's segments, then the
/// journal and page store written after it, then the rebuilds the checkpoint kept (resumed at
/// `now_ms`).
pub async fn open<S: Storage>(
    storage: S,
    core: &mut NodeCore,
    kek: Kek,
    settings: StoreSettings,
    now_ms: u64,
) -> Result<Opened<S>, OpenError> {
    let keyring = Keyring::open(&storage, core.node(), kek).await?;
    // Before anything is restored or replayed: nothing of a dropped volume comes back.
    keyring.dropped_volumes().into_iter().for_each(|volume| core.mark_dropped(volume));
    let (checkpoints, checkpoint) = CheckpointStore::open(&storage).await;
    let (mut start, mut rebuilds, mut checkpoint_error) = ((None, None), Vec::new(), None);
    match checkpoint {
        Ok(Some(checkpoint)) => {
            checkpoint.segments.into_iter().for_each(|segment| core.restore_segment(segment));
            rebuilds = checkpoint.hydrations;
            start = (Some(checkpoint.position), Some(checkpoint.pages_position));
        }
        Ok(None) => {}
        Err(error) => checkpoint_error = Some(error),
    }
    // Records first: an image found in the page store tail applies only to records held.
    let mut visit = |pg, body: &_, location| core.replay(pg, body, location);
    let replayed = replay(&storage, JOURNAL_PREFIX, &keyring, start.0, &mut visit)
        .await
        .map_err(|source| OpenError::Replay { log: "journal", source })?;
    let pages_replayed = replay(&storage, PAGES_PREFIX, &keyring, start.1, &mut visit)
        .await
        .map_err(|source| OpenError::Replay { log: "page store", source })?;
    let config = |prefix| JournalConfig { prefix, file_bytes: settings.file_bytes };
    let journal = Journal::open(storage.clone(), config(JOURNAL_PREFIX), &replayed)
        .await
        .map_err(|source| OpenError::Replay { log: "journal", source })?;
    let pages = Journal::open(storage.clone(), config(PAGES_PREFIX), &pages_replayed)
        .await
        .map_err(|source| OpenError::Replay { log: "page store", source })?;
    core.set_journal_head(journal.position().file);
    // Rebuilds a crash interrupted go on where the checkpoint left them.
    rebuilds.into_iter().for_each(|kept| core.resume_hydration(kept, now_ms));
    let covered = Covered {
        journal: journal.position(),
        pages: pages.position(),
        bytes_since: 0,
        interval_bytes: settings.checkpoint_interval_bytes,
    };
    let store = NodeStore {
        journal: journal.reader(),
        pages: pages.reader(),
        storage,
        keyring,
        entry_cache: RefCell::new(EntryCache::new(settings.entry_cache_bytes)),
        checkpoints: tokio::sync::Mutex::new(checkpoints),
        covered: RefCell::new(covered),
        coalesce_jobs_max: settings.coalesce_jobs_max,
        read_errors: std::cell::Cell::new(0),
        rekeys: RefCell::new(BTreeMap::new()),
        recycling: tokio::sync::Mutex::new(()),
        file_bytes: settings.file_bytes,
    };
    Ok(Opened {
        store,
        journal,
        pages,
        journal_report: replayed.report,
        pages_report: pages_replayed.report,
        checkpoint_error,
    })
}

impl<S: Storage> NodeStore<S> {
    /// Reads of stored bytes that failed with an I/O error so far (nothing is given up for
    /// them), for `/metrics`.
    pub fn read_errors(&self) -> u64 {
        self.read_errors.get()
    }

    fn note_read_error(&self) {
        self.read_errors.set(self.read_errors.get() + 1);
    }
    /// A journal group (`entries`, `len` bytes, placed at `placed`) is durable: the core
    /// learns where its entries are, and the next checkpoint covers it. Its records stay in
    /// the entry cache (within its bound), so the coalescer folds them from memory instead of
    /// reading the journal back.
    pub fn journal_durable(
        &self,
        core: &impl CoreAccess,
        journal: &Journal<S>,
        entries: Vec<JournalEntry>,
        placed: &[(u64, crate::core::Location)],
        len: u64,
    ) {
        assert_eq!(entries.len(), placed.len(), "every entry of the group was placed");
        let last_seq = entries.last().map_or(0, |e| e.seq);
        let position = journal.position();
        let dropped: Vec<bool> = core.with_core(|core| {
            core.handle_durable(last_seq, placed);
            core.set_journal_head(position.file);
            entries.iter().map(|e| core.is_dropped(e.pg.volume_id)).collect()
        });
        let mut cache = self.entry_cache.borrow_mut();
        for ((entry, (seq, location)), dropped) in entries.into_iter().zip(placed).zip(dropped) {
            assert_eq!(entry.seq, *seq, "entries are placed in order");
            // A dropped volume's records the journal had already taken: nothing refers to them.
            if dropped {
                continue;
            }
            if let EntryBody::Records { records, .. } = entry.body {
                cache.insert(*location, Rc::new(records), location.len as usize);
            }
        }
        drop(cache);
        let mut covered = self.covered.borrow_mut();
        covered.journal = position;
        covered.bytes_since += len;
    }

    /// Stores a checkpoint if `force` or enough bytes were made durable since the last one. A
    /// failure is logged and false returned: the logs still hold everything.
    pub async fn checkpoint(&self, core: &impl CoreAccess, force: bool) -> bool {
        let mut checkpoints = self.checkpoints.lock().await;
        let covered = *self.covered.borrow();
        if !force && covered.bytes_since < covered.interval_bytes {
            return true;
        }
        let body = core.with_core(|core| {
            let rebuilds: Vec<HydrationCheckpoint> = core.hydration_checkpoints();
            crate::checkpoint::encode((covered.journal, covered.pages), core.segments(), &rebuilds)
        });
        match checkpoints.store(&body).await {
            Ok(()) => {
                let mut now = self.covered.borrow_mut();
                now.bytes_since = now.bytes_since.saturating_sub(covered.bytes_since);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "checkpoint not written; will retry");
                false
            }
        }
    }

    /// One coalescer pass (`write_versions`, then `flush_versions`).
    pub async fn coalesce(&self, core: &impl CoreAccess, pages: &mut Journal<S>) -> Coalesced {
        match self.write_versions(core, pages).await {
            Ok(written) => self.flush_versions(core, pages, written).await,
            Err(outcome) => outcome,
        }
    }

    /// A coalescer pass's first half: builds up to `coalesce_jobs_max` versions the core asks
    /// for and writes them to the page store as one group (not yet durable). `Err` says why
    /// nothing was written.
    pub async fn write_versions(
        &self,
        core: &impl CoreAccess,
        pages: &mut Journal<S>,
    ) -> Result<VersionsWritten, Coalesced> {
        let jobs = core.with_core(|core| core.poll_coalesce(self.coalesce_jobs_max));
        if jobs.is_empty() {
            return Err(Coalesced::Idle);
        }
        let mut built: Vec<CoalesceJob> = Vec::with_capacity(jobs.len());
        let mut entries = Vec::with_capacity(jobs.len());
        for job in jobs {
            // Foreground work (acks, reads) runs first.
            tokio::task::yield_now().await;
            match build_job(self, &job).await {
                Ok(page) => {
                    let body =
                        EntryBody::Image { page_id: job.page_id, version_lsn: job.target, page: page.into() };
                    entries.push(JournalEntry { seq: entries.len() as u64 + 1, pg: job.pg, body });
                    built.push(job);
                }
                Err(fault) => {
                    report_fault(core, job.pg, &fault);
                    core.with_core(|core| core.handle_coalesced(&job, None));
                }
            }
        }
        if entries.is_empty() {
            return Err(Coalesced::AllFailed);
        }
        let len = crate::journal::group::group_len(&entries) as u64;
        match write_group(pages, &self.keyring, &entries).await {
            Ok(()) => Ok(VersionsWritten { built, len }),
            Err(error) => Err(self.versions_failed(core, &built, error)),
        }
    }

    /// A coalescer pass's second half: flushes the page store group, tells the core where each
    /// version is, and checkpoints at once if a hydrated segment waits for it.
    pub async fn flush_versions(
        &self,
        core: &impl CoreAccess,
        pages: &mut Journal<S>,
        written: VersionsWritten,
    ) -> Coalesced {
        let VersionsWritten { built, len } = written;
        let placed = match pages.flush().await {
            Ok(placed) => placed,
            Err(error) => return self.versions_failed(core, &built, error),
        };
        core.with_core(|core| {
            for (job, (_, location)) in built.iter().zip(&placed) {
                core.handle_coalesced(job, Some(*location));
            }
        });
        {
            let mut covered = self.covered.borrow_mut();
            covered.pages = pages.position();
            covered.bytes_since += len;
        }
        // A hydrated segment's new state is recorded at once, not at the next interval.
        let hydrated = core.with_core(|core| core.poll_checkpoint_wanted());
        self.checkpoint(core, hydrated).await;
        Coalesced::Stored(placed.len())
    }

    fn versions_failed(&self, core: &impl CoreAccess, built: &[CoalesceJob], error: WriteError) -> Coalesced {
        core.with_core(|core| built.iter().for_each(|job| core.handle_coalesced(job, None)));
        match error {
            WriteError::NoSpace => {
                tracing::warn!("page store: no space for a new file; coalescing paused");
                Coalesced::NoSpace
            }
            WriteError::Failed(reason) => {
                tracing::error!(%reason, "page store failed; the node refuses writes until restarted");
                core.with_core(|core| core.handle_io_failed(reason));
                Coalesced::Failed
            }
        }
    }

    /// After the core's maintenance pass: picks a page store file to compact, and deletes the
    /// journal and page store files the core says nothing refers to any more, after a
    /// checkpoint that no longer needs them. Returns how many files were deleted.
    ///
    /// While a data key rotation is under way (`Rekey`), the page store file to compact is the
    /// oldest one that may hold an older key version and still holds a live image, whatever
    /// its live bytes; once every file the rotation waits for is gone, the older versions are
    /// destroyed (`Keyring::destroy_older`).
    pub async fn recycle(&self, core: &impl CoreAccess, pages_head: u64, file_bytes: u64) -> u64 {
        self.recycle_files(core, pages_head, file_bytes).await.count()
    }

    /// `recycle`, saying which files it deleted. One pass at a time.
    pub async fn recycle_files(&self, core: &impl CoreAccess, pages_head: u64, file_bytes: u64) -> Recycled {
        let _one_at_a_time = self.recycling.lock().await;
        self.recycle_held(core, pages_head, file_bytes).await
    }

    /// `recycle_files` for a caller that holds `recycling` already.
    async fn recycle_held(&self, core: &impl CoreAccess, pages_head: u64, file_bytes: u64) -> Recycled {
        let rekey_pages = self.follow_rekeys();
        let journal_head = self.covered.borrow().journal.file;
        let (journal_files, page_files) = (self.journal.files(), self.pages.files());
        let plan = core.with_core(|core| {
            let live_images = core.image_bytes_by_file();
            let resealing =
                rekey_pages.and_then(|through| live_images.range(..=through).next().map(|(f, _)| *f));
            match resealing {
                Some(file) => core.compact_file(file),
                None => core.plan_compaction(pages_head, file_bytes, &live_images),
            }
            core.plan_recycle(&journal_files, journal_head, &page_files, pages_head, &live_images)
        });
        if plan.is_empty() {
            self.destroy_retired_keys().await;
            return Recycled::default();
        }
        // The checkpoint written now starts replay after every doomed file and refers to none.
        if !self.checkpoint(core, true).await {
            return Recycled::default();
        }
        let recycled = Recycled {
            journal: remove_files(&self.journal, &plan.journal).await,
            pages: remove_files(&self.pages, &plan.pages).await,
        };
        tracing::info!(journal = ?plan.journal, pages = ?plan.pages, "recycled files");
        self.destroy_retired_keys().await;
        recycled
    }

    /// The data key rotations under way, as the store follows them (`Rekey`).
    pub fn rekeys(&self) -> Vec<(VolumeId, Rekey)> {
        self.rekeys.borrow().iter().map(|(v, r)| (*v, *r)).collect()
    }

    /// Notes the files each new data key rotation waits for (every file there is now) and asks
    /// both logs to roll, so that those files stop taking groups; forgets rotations that are
    /// done. Returns the highest page store file any rotation waits for.
    fn follow_rekeys(&self) -> Option<u64> {
        let under_way = self.keyring.rotations_under_way();
        let mut rekeys = self.rekeys.borrow_mut();
        rekeys.retain(|volume, _| under_way.iter().any(|(v, _)| v == volume));
        for (volume, newest) in under_way {
            if rekeys.get(&volume).is_some_and(|r| r.newest == newest) {
                continue;
            }
            let rekey = Rekey {
                newest,
                journal_through: self.journal.files().last().copied(),
                pages_through: self.pages.files().last().copied(),
            };
            if rekey.journal_through.is_some() {
                self.journal.request_roll();
            }
            if rekey.pages_through.is_some() {
                self.pages.request_roll();
            }
            tracing::info!(
                volume = volume.0,
                version = newest.0,
                journal_through = ?rekey.journal_through,
                pages_through = ?rekey.pages_through,
                "data key rotation: re-sealing; the older versions are destroyed once these files are recycled"
            );
            rekeys.insert(volume, rekey);
        }
        rekeys.values().filter_map(|r| r.pages_through).max()
    }

    /// Destroys the older data key versions of every rotation whose files are all recycled.
    async fn destroy_retired_keys(&self) {
        let (journal_files, page_files) = (self.journal.files(), self.pages.files());
        let done: Vec<(VolumeId, Rekey)> = self
            .rekeys
            .borrow()
            .iter()
            .filter(|(_, r)| r.files_gone(&journal_files, &page_files))
            .map(|(v, r)| (*v, *r))
            .collect();
        for (volume, rekey) in done {
            match self.keyring.destroy_older(volume, rekey.newest).await {
                Ok(destroyed) => {
                    self.rekeys.borrow_mut().remove(&volume);
                    let destroyed: Vec<u32> = destroyed.iter().map(|v| v.0).collect();
                    tracing::info!(
                        volume = volume.0,
                        version = rekey.newest.0,
                        ?destroyed,
                        "data key rotation done: no file holds an older version; destroyed them in both metadata copies"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, volume = volume.0, "data key rotation: older versions not destroyed; will retry")
                }
            }
        }
    }
}

/// Deletes `files` of a log; returns those deleted (a failure is logged and retried later).
async fn remove_files<S: Storage>(reader: &JournalReader<S>, files: &[u64]) -> Vec<u64> {
    let mut deleted = Vec::with_capacity(files.len());
    for file in files.iter().copied() {
        match reader.remove_file(file).await {
            Ok(()) => deleted.push(file),
            Err(error) => tracing::warn!(file, %error, "could not delete a recycled file; will retry"),
        }
    }
    deleted
}

/// What the journal task does with a write error: tell the core (which refuses or fails).
pub fn journal_write_failed(core: &impl CoreAccess, error: WriteError) {
    match error {
        WriteError::NoSpace => {
            tracing::warn!("journal: no space for a new file; refusing writes until space returns");
            core.with_core(|core| core.handle_no_space());
        }
        WriteError::Failed(reason) => {
            tracing::error!(%reason, "journal failed; the node refuses writes until restarted");
            core.with_core(|core| core.handle_io_failed(reason));
        }
    }
}

/// While the node is out of space: tries to make room for the next group (`retry_len`
/// bytes, or one alignment unit) and tells the core once space has returned.
pub async fn retry_space<S: Storage>(
    core: &impl CoreAccess,
    journal: &mut Journal<S>,
    retry_len: &mut Option<usize>,
) {
    match journal.prepare(retry_len.unwrap_or(crate::journal::format::GROUP_ALIGN)).await {
        Ok(_) => {
            tracing::info!("journal: space returned; taking writes again");
            *retry_len = None;
            core.with_core(|core| core.handle_space_available());
        }
        Err(WriteError::NoSpace) => {}
        Err(WriteError::Failed(reason)) => core.with_core(|core| core.handle_io_failed(reason)),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use protocol::{AzId, Lsn, NodeId};

    use super::*;
    use crate::core::node_tests::{batch, PG};
    use crate::core::{Limits, RequestId};
    use crate::journal::commit::GROUP_ENTRIES_MAX;
    use crate::journal::group::entry_len;
    use crate::storage::sim::{complete, SimDisk};

    struct Lent(RefCell<NodeCore>);

    impl CoreAccess for Lent {
        fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T {
            f(&mut self.0.borrow_mut())
        }
    }

    #[test]
    fn records_just_made_durable_are_read_from_memory_not_the_journal() {
        let disk = SimDisk::new();
        let mut core = NodeCore::new(NodeId(1), AzId(0), Limits::default());
        let settings = StoreSettings {
            file_bytes: 1 << 20,
            checkpoint_interval_bytes: 1 << 20,
            entry_cache_bytes: 1 << 20,
            coalesce_jobs_max: 8,
        };
        let opened = complete(open(disk.clone(), &mut core, Kek::from_bytes([7; 32]), settings, 0)).unwrap();
        let (store, mut journal) = (opened.store, opened.journal);
        core.handle_append(RequestId(1), batch(1, &[(1, 0), (2, 1)])).unwrap();
        let entries = core.poll_journal_group(1 << 20, GROUP_ENTRIES_MAX, entry_len);
        let len = crate::journal::group::group_len(&entries) as u64;
        complete(write_group(&mut journal, &store.keyring, &entries)).unwrap();
        let placed = complete(journal.flush()).unwrap();
        let core = Lent(RefCell::new(core));
        store.journal_durable(&core, &journal, entries, &placed, len);
        let location = core.with_core(|c| c.segment(&PG).unwrap().get(Lsn(2)).unwrap().location);
        disk.fail_next_read();
        let records = complete(reads::read_records(&store, location)).expect("served from memory");
        assert_eq!(records.iter().map(|r| r.lsn()).collect::<Vec<_>>(), vec![Lsn(1), Lsn(2)]);
        assert_eq!(store.read_errors(), 0, "the journal was not read");
    }
}
