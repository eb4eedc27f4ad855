//! `NodeCore`: every segment on one node, the journal queue and the acknowledgements waiting on
//! it.
//!
//! Calling contract (quinn-proto style):
//! 1. feed requests with `handle_append`, `handle_epoch_bump`, `handle_truncate`; they either
//!    refuse at once (a typed `ErrorReply`) or queue journal entries and a waiting reply;
//! 2. take entries with `poll_journal` and write them; report `handle_durable` once the write
//!    *and its flush* completed (or `handle_io_failed` / `handle_no_space`);
//! 3. drain replies with `poll_reply`.
//!
//! Invariants: a reply that confirms a change leaves only after every journal entry queued up
//! to that point is durable; records enter the segment index (and so SCL) only once durable;
//! the first I/O error latches the node into `Failed` and nothing is acknowledged after it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use protocol::messages::{AppendAck, AppendBatch, EpochAck, EpochBump, ErrorCode, ErrorReply, ReadRecords};
use protocol::messages::{
    MembershipAck, MembershipChange, SegmentState, SegmentStatus, Status, Truncate, TruncateAck,
};
use protocol::quorum::Membership;
use protocol::{AzId, Epoch, Epochs, Lsn, LsnRange, Message, NodeId, PageId, PgRef, Record, VolumeId};

mod dropped;
mod gossip;
pub(crate) mod hydrate;
mod maintain;
mod page_plans;
mod scrub;

pub use dropped::{VolumeDropped, VOLUME_DELETED};
pub use hydrate::{HydratePlan, HydrateStats, HydrationCheckpoint, HYDRATE_BYTES_PER_S_DEFAULT};
pub use maintain::{RecyclePlan, GOSSIP_INTERVAL_MS_DEFAULT, MAINTAIN_INTERVAL_MS};
use page_plans::{note_over_apply, Relocation};
pub use page_plans::{Base, CoalesceJob, PageAnswer, PageBuild};
pub use scrub::{ScrubJob, ScrubOutcome, ScrubStats, Store, SCRUB_BYTES_PER_S_DEFAULT};

use super::cache::PageCache;
use super::location::Location;
use super::pages::Stored;
use super::segment::{EpochRefusal, IndexedRecord, Segment};

/// The driver's name for a request whose reply is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Named bounds of the core.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of records queued for the journal but not yet durable; above it appends are refused
    /// with `Overloaded`, and the credit granted in acks shrinks toward zero as it fills.
    pub ingest_pending_bytes_max: u64,
    /// Estimated bytes of the record and page indexes (see `index_bytes`); above it appends are
    /// refused with `Overloaded` until coalescing and the floor free some.
    pub index_bytes_max: u64,
    /// Bytes of built page versions kept for reads.
    pub page_cache_bytes: usize,
    /// The coalescer materializes a page once this many records follow its newest image, so a
    /// read applies at most about this many (more only while the coalescer catches up).
    pub apply_max: usize,
    /// How long a segment keeps the records a peer lacks after last hearing from it by
    /// gossip; zero when the node does not gossip (nothing is then kept for peers).
    pub peer_lease_ms: u64,
    /// A gossip fetch not answered within this long is given up, and another may start.
    pub gossip_timeout_ms: u64,
    /// Time between gossip rounds (`poll_gossip` answers nothing sooner); zero: every call is
    /// a round.
    pub gossip_interval_ms: u64,
    /// Stored bytes re-verified per second by the scrubber; zero turns scrubbing off.
    pub scrub_bytes_per_s: u64,
    /// Page bytes a hydrating segment fetches per second.
    pub hydrate_bytes_per_s: u64,
    /// Rest between two scrub passes (`SCRUB_PASS_PAUSE_MS` in the daemon; the simulator's
    /// runs are shorter than one daemon pause).
    pub scrub_pass_pause_ms: u64,
    /// A started hydration whose ask went unanswered asks its source again after this long
    /// (`HYDRATE_RETRY_MS` in the daemon)...
    pub hydrate_retry_ms: u64,
    /// ...and is abandoned once it made no progress for this long (`HYDRATE_RESUME_MS`).
    pub hydrate_resume_ms: u64,
    /// Test-only: a bug planted on purpose to prove a checker catches it (`PlantedBug`).
    /// Always `None` outside tests; nothing sets it from a configuration or the environment.
    #[doc(hidden)]
    pub planted: Option<super::planted::PlantedBug>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ingest_pending_bytes_max: 64 * 1024 * 1024,
            index_bytes_max: 768 * 1024 * 1024,
            page_cache_bytes: 128 * 1024 * 1024,
            apply_max: APPLY_MAX_DEFAULT,
            peer_lease_ms: 0,
            // Above the daemon's gossip request timeout, so an answer it still waits for is
            // never thrown away for having come late.
            gossip_timeout_ms: 10_000,
            gossip_interval_ms: 0,
            // Off unless the daemon's configuration (default `SCRUB_BYTES_PER_S_DEFAULT`) or a
            // test turns it on.
            scrub_bytes_per_s: 0,
            hydrate_bytes_per_s: HYDRATE_BYTES_PER_S_DEFAULT,
            scrub_pass_pause_ms: scrub::SCRUB_PASS_PAUSE_MS,
            hydrate_retry_ms: hydrate::HYDRATE_RETRY_MS,
            hydrate_resume_ms: hydrate::HYDRATE_RESUME_MS,
            planted: None,
        }
    }
}

/// Default for `Limits::apply_max`.
pub const APPLY_MAX_DEFAULT: usize = 16;
/// Estimated index bytes per held record: the segment's map entry (LSN + 48 bytes) and the
/// page log's (8 bytes), with B-tree node overhead. Measured in `docs/storaged.md`.
pub const RECORD_INDEX_BYTES: u64 = 128;
/// Estimated index bytes per materialized image (LSN + location in a B-tree).
pub const IMAGE_INDEX_BYTES: u64 = 64;
/// Estimated index bytes per page with versions held (the page map entry and its two trees).
pub const PAGE_INDEX_BYTES: u64 = 128;
/// How long an operator's replacement request (`NodeCore::ask_replacement`) is passed on to
/// the writer in floor acks: it reports its floor every second.
pub const REPLACE_ASK_MS: u64 = 60_000;
/// Records the coalescer looks at per segment and call when folding toward the floor.
pub const FOLD_SCAN_MAX: usize = 4096;

/// What one journal entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryBody {
    /// Records of one PG, written by the writer of `epoch`, for a volume of `page_bytes` pages.
    Records { epoch: Epoch, page_bytes: u32, records: Vec<Record> },
    /// A materialized page version (page store only): the page as of `version_lsn`. Replay
    /// does not open image entries, so there `page` is empty.
    Image { page_id: PageId, version_lsn: Lsn, page: Bytes },
    /// A change of the segment's stored epochs, and possibly a truncation range that the
    /// writer of `epochs.volume` declared.
    Meta { epochs: Epochs, truncation: Option<LsnRange> },
    /// The PG's quorum sets, as a step of a membership change stored them (with the epochs
    /// the segment held then).
    Membership { epochs: Epochs, membership: Membership },
}

/// One entry for the journal, in queue order (`seq` increases by one per entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub seq: u64,
    pub pg: PgRef,
    pub body: EntryBody,
}

impl JournalEntry {
    /// Record bytes this entry holds (its share of the ingest budget).
    pub fn record_bytes(&self) -> u64 {
        match &self.body {
            EntryBody::Records { records, .. } => records.iter().map(|r| r.encoded_len() as u64).sum(),
            EntryBody::Meta { .. } | EntryBody::Membership { .. } | EntryBody::Image { .. } => 0,
        }
    }
}

/// Whether the node takes new writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    Serving,
    /// The journal could not get space; reads still work; cleared by `handle_space_available`.
    DiskFull,
    /// An I/O error was latched; the node refuses writes until restarted.
    Failed(NodeFailure),
}

/// Why a node stopped taking writes until it is restarted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeFailure {
    /// An operation on a journal or page store file failed (the file or its position named in
    /// `at`): its bytes may or may not be on disk.
    #[error("{op} {at}: {kind} ({message})")]
    Io { op: &'static str, at: String, kind: std::io::ErrorKind, message: String },
    /// The keyring had prepared a volume's data key, and it was gone when sealing.
    #[error("no data key for volume {0} after preparing it")]
    NoKey(protocol::VolumeId),
    /// The keyring had reserved nonces, and they ran out when sealing.
    #[error("nonce reservation exhausted after preparing it")]
    NoNonce,
    /// The node metadata (keys, nonce reservation) could not be stored.
    #[error("node metadata: {0}")]
    Metadata(String),
}

impl NodeFailure {
    /// The failure of `op` on `at` with `error`.
    pub fn io(op: &'static str, at: impl std::fmt::Display, error: &std::io::Error) -> NodeFailure {
        NodeFailure::Io { op, at: at.to_string(), kind: error.kind(), message: error.to_string() }
    }
}

/// The records a driver must read to answer a `ReadRecords`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    pub pg: PgRef,
    pub scl: Lsn,
    /// Wanted records with the entries holding them, in LSN order.
    pub wanted: Vec<(Lsn, Location)>,
    pub bytes_max: u32,
}

/// Gathers the records of a read up to its limits: the plan's byte budget (at least one record)
/// and `BATCH_RECORDS_MAX`. Drivers feed it records in LSN order until it is full.
#[derive(Debug)]
pub struct RecordsAnswer {
    bytes_max: usize,
    bytes: usize,
    pub records: Vec<Record>,
    /// True once a record did not fit: the reader must ask again from the last one.
    pub more: bool,
}

impl RecordsAnswer {
    pub fn new(plan: &ReadPlan) -> RecordsAnswer {
        RecordsAnswer { bytes_max: plan.bytes_max as usize, bytes: 0, records: Vec::new(), more: false }
    }

    /// Takes `record` if it fits; returns false (and remembers that more remain) if it does not.
    pub fn offer(&mut self, record: Record) -> bool {
        let full = self.records.len() == protocol::messages::BATCH_RECORDS_MAX
            || (self.bytes > 0 && self.bytes + record.encoded_len() > self.bytes_max);
        if full {
            self.more = true;
            return false;
        }
        self.bytes += record.encoded_len();
        self.records.push(record);
        true
    }
}

#[derive(Clone, Copy, Debug)]
enum PendingReply {
    Append { pg: PgRef, first_lsn: Lsn, last_lsn: Lsn },
    Epoch { pg: PgRef },
    Truncate { pg: PgRef, range: LsnRange },
    Membership { pg: PgRef },
}

impl PendingReply {
    fn pg(&self) -> PgRef {
        match *self {
            PendingReply::Append { pg, .. }
            | PendingReply::Epoch { pg }
            | PendingReply::Membership { pg }
            | PendingReply::Truncate { pg, .. } => pg,
        }
    }
}

#[derive(Debug)]
struct Waiter {
    seq: u64,
    request: RequestId,
    reply: PendingReply,
}

#[derive(Debug)]
struct InJournal {
    seq: u64,
    pg: PgRef,
    bytes: u64,
    /// The index entry of each record (its location still unset), indexed once durable.
    records: Vec<(Lsn, IndexedRecord)>,
}

/// All segments of one node; see the module docs for the calling contract.
#[derive(Debug)]
pub struct NodeCore {
    node: NodeId,
    az: AzId,
    limits: Limits,
    segments: BTreeMap<PgRef, Segment>,
    state: NodeState,
    /// Sequence number of the last entry queued.
    queued_seq: u64,
    unwritten: VecDeque<JournalEntry>,
    in_journal: VecDeque<InJournal>,
    pending_bytes: u64,
    waiters: VecDeque<Waiter>,
    replies: VecDeque<(RequestId, Message)>,
    cache: PageCache,
    /// Pages with a coalescing job out.
    coalescing: BTreeSet<(PgRef, PageId)>,
    /// The journal file being written: only records in older files are folded toward the floor,
    /// so a page changed many times within one file gets one image.
    journal_head: u64,
    /// Pages whose newest version needs an image (`apply_max` records after the newest).
    over_apply: BTreeSet<(PgRef, PageId)>,
    /// The page store file being compacted, if any.
    compacting: Option<u64>,
    /// The images still to copy out of `compacting`, listed by one walk over every image when
    /// the file was picked (and again after each maintenance pass, for what was missed); each
    /// is checked again when its turn comes.
    relocations: VecDeque<Relocation>,
    /// The file `relocations` was listed for (`None`: list again).
    relocations_of: Option<u64>,
    /// Per PG, the gossip fetch in flight: the peer asked, the segment's epochs then, and
    /// when it is given up (the driver's milliseconds).
    gossip_fetches: BTreeMap<PgRef, (NodeId, Epochs, u64)>,
    /// `index_bytes()` as of the last tick, plus the records indexed since: appends check the
    /// memory cap against it without walking every page.
    index_estimate: u64,
    scrub: scrub::Scrub,
    hydrations: hydrate::Hydrations,
    /// A node an operator asked to have replaced, until when (driver milliseconds).
    replacement_asked: Option<(NodeId, u64)>,
    /// The node is shutting down (`begin_drain`): it takes no new writes, so what it already
    /// took can become durable and be acknowledged before it stops.
    draining: bool,
    /// Volumes dropped here for good (`dropped`): nothing of theirs is held, taken or served.
    dropped: BTreeSet<VolumeId>,
    timers: maintain::Timers,
}

impl NodeCore {
    pub fn new(node: NodeId, az: AzId, limits: Limits) -> NodeCore {
        NodeCore {
            node,
            az,
            limits,
            segments: BTreeMap::new(),
            state: NodeState::Serving,
            queued_seq: 0,
            unwritten: VecDeque::new(),
            in_journal: VecDeque::new(),
            pending_bytes: 0,
            waiters: VecDeque::new(),
            replies: VecDeque::new(),
            cache: PageCache::new(limits.page_cache_bytes),
            coalescing: BTreeSet::new(),
            journal_head: 0,
            over_apply: BTreeSet::new(),
            compacting: None,
            relocations: VecDeque::new(),
            relocations_of: None,
            gossip_fetches: BTreeMap::new(),
            index_estimate: 0,
            scrub: scrub::Scrub::new(limits.scrub_bytes_per_s),
            hydrations: hydrate::Hydrations::new(limits.hydrate_bytes_per_s),
            replacement_asked: None,
            draining: false,
            dropped: BTreeSet::new(),
            timers: maintain::Timers::default(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }
    pub fn az(&self) -> AzId {
        self.az
    }
    pub fn state(&self) -> &NodeState {
        &self.state
    }
    pub fn segment(&self, pg: &PgRef) -> Option<&Segment> {
        self.segments.get(pg)
    }
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values()
    }

    /// An append batch: refused at once, or queued with its ack waiting on durability.
    pub fn handle_append(&mut self, request: RequestId, batch: AppendBatch) -> Result<(), ErrorReply> {
        self.check_not_dropped(batch.pg)?;
        self.check_writable(batch.pg)?;
        let node = self.node;
        let segment = self.segment_for(batch.pg, &batch.epochs)?;
        segment.check_append(&batch.epochs).map_err(|r| refusal(segment, r))?;
        if segment.is_retired(node) {
            return Err(refusal(segment, EpochRefusal::Stale));
        }
        if !segment.learn_page_bytes(batch.page_bytes) {
            let message =
                format!("page size {} differs from the volume's {}", batch.page_bytes, segment.page_bytes());
            return Err(ErrorReply {
                code: ErrorCode::BadRequest,
                pg: batch.pg,
                epochs: segment.epochs(),
                message: truncate_message(&message),
            });
        }
        if let Some((record, error)) = batch
            .records
            .iter()
            .find_map(|r| protocol::apply::check_fits(r, batch.page_bytes).err().map(|e| (r.lsn(), e)))
        {
            let message =
                format!("record {record} cannot apply to a {}-byte page: {error}", batch.page_bytes);
            return Err(self.error(ErrorCode::BadRequest, batch.pg, &message));
        }
        // The VDL a writer sends is durable whatever happens to this batch, and folding needs
        // it: it is learnt even from a batch refused below (or the cap could never clear).
        segment.learn_vdl(batch.vdl, batch.pg_vdl_lsn);
        let records: Vec<Record> =
            batch.records.iter().filter(|r| !segment.has_or_discards(r.lsn())).cloned().collect();
        let bytes: u64 = records.iter().map(|r| r.encoded_len() as u64).sum();
        if bytes > 0 && self.index_estimate > self.limits.index_bytes_max {
            let message = "index memory cap reached: waiting for coalescing and the floor to free some";
            return Err(self.error(ErrorCode::Overloaded, batch.pg, message));
        }
        if bytes > 0 && self.pending_bytes + bytes > self.limits.ingest_pending_bytes_max {
            return Err(self.error(ErrorCode::Overloaded, batch.pg, "ingest queue full: wait for acks"));
        }
        self.raise_epochs(batch.pg, &batch.epochs);
        if !records.is_empty() {
            let page_bytes = batch.page_bytes;
            self.queue(batch.pg, EntryBody::Records { epoch: batch.epochs.volume, page_bytes, records });
        }
        let (first_lsn, last_lsn) = batch_bounds(&batch);
        self.wait(request, PendingReply::Append { pg: batch.pg, first_lsn, last_lsn });
        Ok(())
    }

    /// A new writer's epoch bump: stored durably, then acknowledged with the segment's state.
    pub fn handle_epoch_bump(&mut self, request: RequestId, bump: EpochBump) -> Result<(), ErrorReply> {
        self.check_not_dropped(bump.pg)?;
        self.check_writable(bump.pg)?;
        self.check_not_retired(bump.pg)?;
        let segment = self.segment_entry(bump.pg, bump.epochs);
        segment.check_not_stale(&bump.epochs).map_err(|r| refusal(segment, r))?;
        segment.raise_epochs(&bump.epochs);
        self.queue(bump.pg, EntryBody::Meta { epochs: bump.epochs, truncation: None });
        self.wait(request, PendingReply::Epoch { pg: bump.pg });
        Ok(())
    }

    /// A new writer's truncation range: stored durably, applied at once, then acknowledged.
    /// An earlier volume epoch's range (a later writer passes on those it learnt) is taken too:
    /// no writer ever commits inside a truncation range, so each stays binding.
    pub fn handle_truncate(&mut self, request: RequestId, truncate: Truncate) -> Result<(), ErrorReply> {
        self.check_not_dropped(truncate.pg)?;
        self.check_writable(truncate.pg)?;
        self.check_not_retired(truncate.pg)?;
        let segment = self.segment_entry(truncate.pg, truncate.epochs);
        let volume = segment.epochs().volume.max(truncate.epochs.volume);
        segment.check_not_stale(&Epochs { volume, ..truncate.epochs }).map_err(|r| refusal(segment, r))?;
        segment.raise_epochs(&truncate.epochs);
        segment.truncate(truncate.epochs.volume, truncate.range);
        self.cache.drop_above(truncate.pg, truncate.range.after());
        self.queue(
            truncate.pg,
            EntryBody::Meta { epochs: truncate.epochs, truncation: Some(truncate.range) },
        );
        self.wait(request, PendingReply::Truncate { pg: truncate.pg, range: truncate.range });
        Ok(())
    }

    /// A step of a membership change: the PG's new quorum sets, stored durably, then
    /// acknowledged with the segment's state. A node named for the first time gets an empty
    /// segment, which gossip and hydration then fill (`docs/membership.md`).
    pub fn handle_membership_change(
        &mut self,
        request: RequestId,
        change: MembershipChange,
    ) -> Result<(), ErrorReply> {
        self.check_not_dropped(change.pg)?;
        self.check_writable(change.pg)?;
        if !change.membership.contains(self.node) && !self.segments.contains_key(&change.pg) {
            return Err(self.error(ErrorCode::BadRequest, change.pg, "not a member of that membership"));
        }
        let node = self.node;
        let segment = self.segment_entry(change.pg, change.epochs);
        segment.check_not_stale(&change.epochs).map_err(|r| refusal(segment, r))?;
        if segment.membership().is_some_and(|m| m.epoch() > change.membership.epoch()) {
            return Err(refusal(segment, EpochRefusal::Stale));
        }
        segment.raise_epochs(&change.epochs);
        segment.store_membership(change.membership);
        let retired = segment.is_retired(node);
        let epochs = segment.epochs();
        if retired {
            // Replaced, or the change that named this node was reversed: nothing to rebuild.
            self.stop_hydration(change.pg);
        }
        self.queue(change.pg, EntryBody::Membership { epochs, membership: change.membership });
        self.wait(request, PendingReply::Membership { pg: change.pg });
        Ok(())
    }

    /// The records to read for a `ReadRecords`, or a refusal.
    pub fn plan_read_records(&self, read: &ReadRecords) -> Result<ReadPlan, ErrorReply> {
        self.check_not_dropped(read.pg)?;
        let Some(segment) = self.segments.get(&read.pg) else {
            return Ok(ReadPlan {
                pg: read.pg,
                scl: Lsn::ZERO,
                wanted: Vec::new(),
                bytes_max: read.bytes_max,
            });
        };
        segment.check_not_stale(&read.epochs).map_err(|r| refusal(segment, r))?;
        // An answer holds at most BATCH_RECORDS_MAX records; one more in the plan tells the
        // reader that more remain. Listing the whole range would make every page of a long read
        // walk everything after it.
        let wanted = segment
            .records_in(read.range)
            .take(protocol::messages::BATCH_RECORDS_MAX + 1)
            .map(|(lsn, r)| (lsn, r.location))
            .collect();
        Ok(ReadPlan { pg: read.pg, scl: segment.scl(), wanted, bytes_max: read.bytes_max })
    }

    /// The next journal entry to write, in queue order.
    /// True if entries wait to be written to the journal.
    pub fn has_unwritten(&self) -> bool {
        !self.unwritten.is_empty()
    }

    pub fn poll_journal(&mut self) -> Option<JournalEntry> {
        self.unwritten.pop_front()
    }

    /// The entries for the next group commit: everything queued, up to `bytes_max` bytes (as
    /// measured by `len_of`) and `entries_max` entries, but always at least one entry if any.
    pub fn poll_journal_group(
        &mut self,
        bytes_max: usize,
        entries_max: usize,
        len_of: impl Fn(&JournalEntry) -> usize,
    ) -> Vec<JournalEntry> {
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(entry) = self.unwritten.front() {
            let len = len_of(entry);
            if !group.is_empty() && (bytes + len > bytes_max || group.len() == entries_max) {
                break;
            }
            bytes += len;
            group.push(self.unwritten.pop_front().expect("front checked"));
        }
        group
    }

    /// Entries up to and including `through_seq` are written and flushed; `placed` says where
    /// each landed. Indexes their records and releases the replies that waited on them.
    pub fn handle_durable(&mut self, through_seq: u64, placed: &[(u64, Location)]) {
        while self.in_journal.front().is_some_and(|e| e.seq <= through_seq) {
            let entry = self.in_journal.pop_front().expect("front checked");
            let location = placed.iter().find(|(seq, _)| *seq == entry.seq).map(|(_, l)| *l);
            let location =
                location.unwrap_or_else(|| panic!("entry {} durable without a location", entry.seq));
            self.pending_bytes -= entry.bytes;
            let Some(segment) = self.segments.get_mut(&entry.pg) else {
                // The journal had taken it when its volume was dropped: written, never indexed.
                assert!(self.dropped.contains(&entry.pg.volume_id), "a queued entry's segment exists");
                continue;
            };
            self.index_estimate += entry.records.len() as u64 * RECORD_INDEX_BYTES;
            for (lsn, record) in entry.records {
                segment.insert_durable(lsn, IndexedRecord { location, ..record });
                note_over_apply(&mut self.over_apply, segment, record.page_id, self.limits.apply_max);
            }
        }
        self.release_waiters(through_seq);
    }

    /// The journal failed: latch, and refuse every waiting and future write.
    pub fn handle_io_failed(&mut self, reason: NodeFailure) {
        self.state = NodeState::Failed(reason.clone());
        self.abandon_unwritten(ErrorCode::NodeFailed, &format!("node failed: {reason}"));
    }

    /// The journal could not get space for the queued entries: refuse them and further writes
    /// until `handle_space_available`. Nothing durable is touched.
    pub fn handle_no_space(&mut self) {
        if self.state == NodeState::Serving {
            self.state = NodeState::DiskFull;
        }
        self.abandon_unwritten(ErrorCode::DiskFull, "disk full: no space for the journal");
    }

    /// Space returned: take writes again.
    pub fn handle_space_available(&mut self) {
        if self.state == NodeState::DiskFull {
            self.state = NodeState::Serving;
        }
    }

    /// A stored record turned out unreadable (checksum or tag): stop claiming it.
    pub fn handle_corrupt_record(&mut self, pg: PgRef, lsn: Lsn) {
        if let Some(segment) = self.segments.get_mut(&pg) {
            segment.forget(lsn);
        }
    }

    /// Installs a segment restored from a checkpoint (before replaying the journal after it).
    pub fn restore_segment(&mut self, mut segment: Segment) {
        if self.is_dropped(segment.pg().volume_id) {
            return;
        }
        if self.limits.peer_lease_ms > 0 {
            segment.track_peers();
        }
        self.segments.insert(segment.pg(), segment);
    }

    /// Rebuilds state from one journal entry found at restart, in journal order.
    pub fn replay(&mut self, pg: PgRef, body: &EntryBody, location: Location) {
        if self.is_dropped(pg.volume_id) {
            return;
        }
        match body {
            EntryBody::Records { epoch, page_bytes, records } => {
                let epochs = Epochs { volume: *epoch, ..Epochs::INITIAL };
                self.segment_entry(pg, epochs);
                let segment = self.segments.get_mut(&pg).expect("created above");
                segment.learn_page_bytes(*page_bytes);
                for r in records {
                    segment.insert_durable(r.lsn(), IndexedRecord::of(r, location));
                    note_over_apply(&mut self.over_apply, segment, r.meta().page_id, self.limits.apply_max);
                }
            }
            EntryBody::Image { page_id, version_lsn, .. } => {
                // An image found after the checkpoint: it was durable before the crash, so it
                // is as good as one the coalescer just stored.
                if let Some(segment) = self.segments.get_mut(&pg) {
                    segment.add_image(*page_id, *version_lsn, Stored::At(location), &[]);
                }
            }
            EntryBody::Meta { epochs, truncation } => {
                let segment = self.segment_entry(pg, *epochs);
                segment.raise_epochs(epochs);
                if let Some(range) = truncation {
                    segment.truncate(epochs.volume, *range);
                }
            }
            EntryBody::Membership { epochs, membership } => {
                let segment = self.segment_entry(pg, *epochs);
                segment.raise_epochs(epochs);
                segment.store_membership(*membership);
            }
        }
    }

    /// The next reply to send.
    pub fn poll_reply(&mut self) -> Option<(RequestId, Message)> {
        self.replies.pop_front()
    }

    /// Bytes of further records this node will take now.
    pub fn credit_bytes(&self) -> u32 {
        let free = self.limits.ingest_pending_bytes_max.saturating_sub(self.pending_bytes);
        u32::try_from(free).unwrap_or(u32::MAX)
    }

    /// This node's state for a status request, at most `STATUS_SEGMENTS_MAX` segments.
    pub fn status(&self) -> Status {
        let status = |s: &Segment| SegmentStatus {
            pg: s.pg(),
            epochs: s.epochs(),
            scl: s.scl(),
            highest_lsn: s.highest_lsn(),
            floor: s.floor(),
            state: self.segment_state(s),
            membership: s.membership(),
        };
        let segments =
            self.segments.values().take(protocol::messages::STATUS_SEGMENTS_MAX).map(status).collect();
        Status { node: self.node, az: self.az, segments }
    }

    /// Every segment with what it is doing, as status answers report it (for `/metrics`, which
    /// lists more segments than a status answer carries).
    pub fn segments_with_state(&self) -> impl Iterator<Item = (&Segment, SegmentState)> {
        self.segments.values().map(|s| (s, self.segment_state(s)))
    }

    /// What `segment` is doing, for status answers: hydrating while it is rebuilt from a peer;
    /// repairing while scrub found stored bytes of it that failed verification and they are
    /// not fetched again yet.
    fn segment_state(&self, segment: &Segment) -> SegmentState {
        if segment.is_retired(self.node) {
            SegmentState::Retired
        } else if self.is_hydrating(segment.pg()) {
            SegmentState::Hydrating
        } else if self.is_repairing(segment.pg()) {
            SegmentState::ScrubRepairing
        } else {
            SegmentState::Serving
        }
    }

    /// A retired segment takes no epoch bump or truncation: its answer would report a stale
    /// SCL as if the segment were current.
    fn check_not_retired(&self, pg: PgRef) -> Result<(), ErrorReply> {
        match self.segments.get(&pg) {
            Some(segment) if segment.is_retired(self.node) => Err(refusal(segment, EpochRefusal::Stale)),
            _ => Ok(()),
        }
    }

    fn check_writable(&self, pg: PgRef) -> Result<(), ErrorReply> {
        if self.draining {
            return Err(self.error(ErrorCode::Overloaded, pg, "node shutting down: writes refused"));
        }
        match &self.state {
            NodeState::Serving => Ok(()),
            NodeState::DiskFull => {
                Err(self.error(ErrorCode::DiskFull, pg, "disk full: writes refused, reads served"))
            }
            NodeState::Failed(reason) => {
                Err(self.error(ErrorCode::NodeFailed, pg, &format!("node failed: {reason}")))
            }
        }
    }

    /// The segment for an append, created for the first writer's first batch. A later epoch
    /// must open the segment with `EpochBump`/`Truncate` first.
    fn segment_for(&mut self, pg: PgRef, epochs: &Epochs) -> Result<&mut Segment, ErrorReply> {
        if !self.segments.contains_key(&pg) {
            // A fenced writer must not grow the volume either: a new segment is refused to a
            // writer older than any segment of the same volume this node holds.
            let volume_epoch = self
                .segments
                .values()
                .filter(|s| s.pg().volume_id == pg.volume_id)
                .map(|s| s.epochs().volume)
                .max();
            if volume_epoch.is_some_and(|newest| epochs.volume < newest) {
                return Err(self.error(
                    ErrorCode::StaleEpoch,
                    pg,
                    "stale epoch: a newer writer holds this volume",
                ));
            }
            if epochs.volume != Epoch::INITIAL {
                let reply =
                    self.error(ErrorCode::EpochNotOpen, pg, "unknown segment: send EpochBump and Truncate");
                return Err(reply);
            }
            self.segment_entry(pg, *epochs);
            self.queue(pg, EntryBody::Meta { epochs: *epochs, truncation: None });
        }
        Ok(self.segments.get_mut(&pg).expect("inserted above"))
    }

    /// The segment of `pg`, created empty at `epochs` if this node has none.
    fn segment_entry(&mut self, pg: PgRef, epochs: Epochs) -> &mut Segment {
        assert!(!self.dropped.contains(&pg.volume_id), "no segment of a dropped volume is made");
        let track_peers = self.limits.peer_lease_ms > 0;
        self.segments.entry(pg).or_insert_with(|| {
            let mut segment = Segment::new(pg, epochs);
            if track_peers {
                segment.track_peers();
            }
            segment
        })
    }

    /// The members of `segment`'s PG: its stored membership, or else its placement as
    /// `placement` names it.
    fn members_of(segment: &Segment, placement: impl Fn(PgRef) -> Vec<NodeId>) -> Vec<NodeId> {
        match segment.membership() {
            Some(membership) => membership.nodes(),
            None => placement(segment.pg()),
        }
    }

    /// Raises stored membership/geometry epochs to a request's, durably.
    fn raise_epochs(&mut self, pg: PgRef, epochs: &Epochs) {
        let segment = self.segments.get_mut(&pg).expect("segment exists");
        let before = segment.epochs();
        segment.raise_epochs(epochs);
        if segment.epochs() != before {
            let epochs = segment.epochs();
            self.queue(pg, EntryBody::Meta { epochs, truncation: None });
        }
    }

    fn queue(&mut self, pg: PgRef, body: EntryBody) {
        self.queued_seq += 1;
        let entry = JournalEntry { seq: self.queued_seq, pg, body };
        let bytes = entry.record_bytes();
        let unplaced = Location { file: 0, offset: 0, len: 0 };
        let records = match &entry.body {
            EntryBody::Records { records, .. } => {
                records.iter().map(|r| (r.lsn(), IndexedRecord::of(r, unplaced))).collect()
            }
            EntryBody::Meta { .. } | EntryBody::Membership { .. } | EntryBody::Image { .. } => Vec::new(),
        };
        self.pending_bytes += bytes;
        self.in_journal.push_back(InJournal { seq: entry.seq, pg, bytes, records });
        self.unwritten.push_back(entry);
    }

    /// The node is shutting down: from now on it refuses writes (appends, epoch bumps,
    /// truncations, membership changes), so the journal empties and every write it took is
    /// acknowledged (`is_drained`). The writer counts on the other segments meanwhile.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Nothing is waiting for the journal, and every reply that waited for it went out to the
    /// driver.
    pub fn is_drained(&self) -> bool {
        self.unwritten.is_empty()
            && self.in_journal.is_empty()
            && self.waiters.is_empty()
            && self.replies.is_empty()
    }

    /// The reply waits until everything queued so far is durable.
    fn wait(&mut self, request: RequestId, reply: PendingReply) {
        self.waiters.push_back(Waiter { seq: self.queued_seq, request, reply });
        let durable = self.durable_seq();
        self.release_waiters(durable);
    }

    fn durable_seq(&self) -> u64 {
        self.in_journal.front().map_or(self.queued_seq, |e| e.seq - 1)
    }

    fn release_waiters(&mut self, durable_seq: u64) {
        while self.waiters.front().is_some_and(|w| w.seq <= durable_seq) {
            let waiter = self.waiters.pop_front().expect("front checked");
            let message = self.confirmation(waiter.reply);
            self.replies.push_back((waiter.request, message));
        }
    }

    fn confirmation(&self, reply: PendingReply) -> Message {
        let node = self.node;
        let segment = |pg: &PgRef| self.segments.get(pg).expect("a waiter's segment exists");
        match reply {
            PendingReply::Append { pg, first_lsn, last_lsn } => {
                let s = segment(&pg);
                let credit_bytes = self.credit_bytes();
                Message::AppendAck(AppendAck {
                    pg,
                    node,
                    epochs: s.epochs(),
                    first_lsn,
                    last_lsn,
                    scl: s.scl(),
                    credit_bytes,
                })
            }
            PendingReply::Epoch { pg } => {
                let s = segment(&pg);
                Message::EpochAck(EpochAck {
                    pg,
                    node,
                    epochs: s.epochs(),
                    scl: s.scl(),
                    highest_lsn: s.highest_lsn(),
                    vdl_hint: s.vdl_hint(),
                    truncations: newest_truncations(s),
                })
            }
            PendingReply::Truncate { pg, range } => {
                Message::TruncateAck(TruncateAck { pg, node, epochs: segment(&pg).epochs(), range })
            }
            PendingReply::Membership { pg } => {
                let s = segment(&pg);
                let membership_epoch = s.membership().map_or(Epoch(0), |m| m.epoch());
                Message::MembershipAck(MembershipAck {
                    pg,
                    node,
                    epochs: s.epochs(),
                    membership_epoch,
                    scl: s.scl(),
                })
            }
        }
    }

    /// Drops every entry not yet durable and fails the replies that waited on them.
    fn abandon_unwritten(&mut self, code: ErrorCode, message: &str) {
        self.unwritten.clear();
        self.in_journal.clear();
        self.pending_bytes = 0;
        while let Some(waiter) = self.waiters.pop_front() {
            let reply = self.error(code, waiter.reply.pg(), message);
            self.replies.push_back((waiter.request, Message::Error(reply)));
        }
    }

    fn error(&self, code: ErrorCode, pg: PgRef, message: &str) -> ErrorReply {
        let epochs = self.segments.get(&pg).map_or(Epochs::default(), |s| s.epochs());
        let message = truncate_message(message);
        ErrorReply { code, pg, epochs, message }
    }
}

fn refusal(segment: &Segment, refusal: EpochRefusal) -> ErrorReply {
    let (code, text) = match refusal {
        EpochRefusal::Stale => {
            (ErrorCode::StaleEpoch, "stale epoch: a newer writer or membership holds this segment")
        }
        EpochRefusal::NotOpen => {
            (ErrorCode::EpochNotOpen, "epoch not open: send EpochBump and Truncate first")
        }
    };
    ErrorReply { code, pg: segment.pg(), epochs: segment.epochs(), message: text.to_string() }
}

/// The segment's newest truncation ranges, as many as an epoch ack carries.
fn newest_truncations(segment: &Segment) -> Vec<(Epoch, LsnRange)> {
    let all = segment.truncations();
    all[all.len().saturating_sub(protocol::messages::TRUNCATIONS_REPORTED_MAX)..].to_vec()
}

fn batch_bounds(batch: &AppendBatch) -> (Lsn, Lsn) {
    let first = batch.records.first().map_or(Lsn::ZERO, Record::lsn);
    let last = batch.records.last().map_or(Lsn::ZERO, Record::lsn);
    (first, last)
}

/// `message` cut to at most `ERROR_MESSAGE_BYTES_MAX` bytes on a character boundary.
pub fn truncate_message(message: &str) -> String {
    let max = protocol::messages::ERROR_MESSAGE_BYTES_MAX;
    let mut end = message.len().min(max);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}
