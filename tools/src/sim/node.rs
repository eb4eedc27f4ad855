//! A simulated storage node: the real `storaged` core over the real store (`storaged::store`:
//! sealed journal and page store groups, replay, checkpoints, node metadata, file recycling,
//! verified reads) on the lying disk (`storaged::storage::sim::SimDisk`). The disk keeps what
//! was synced and, at a crash, lands a torn prefix of what was not; it misdirects writes, rots
//! sectors, fails reads and fills up when the world says so. Nothing here decides or reads
//! bytes itself: it calls the store's steps when the daemon's tasks would (a group is written
//! when the previous one is flushed and flushed when the world's latency elapses; the
//! coalescer, scrubber and recycler run on the core's timers), and answers `ReadPage`,
//! `ReadRecords`, gossip fetches and `FloorReport` as the daemon's streams do.

use std::cell::RefCell;

use protocol::messages::{ErrorCode, ErrorReply, ReadPage};
use protocol::{AzId, Epochs, Lsn, Message, NodeId, PgRef, Record};
use storaged::core::{JournalEntry, Limits, NodeCore, NodeState, PlantedBug, RequestId};
use storaged::journal::commit::{write_group, GROUP_ENTRIES_MAX};
use storaged::journal::group::{entry_len, group_len};
use storaged::journal::writer::{Journal, WriteError};
use storaged::seal::Kek;
use storaged::storage::sim::{complete, DiskStats, SimDisk};
use storaged::store::reads::{read_page, read_planned_records, PageRead};
use storaged::store::{
    journal_write_failed, retry_space, CoreAccess, NodeStore, StoreSettings, VersionsWritten,
};

mod heal;
mod inspect;

pub use heal::HealCounts;
use heal::PeerAsk;
pub use inspect::Held;

/// Virtual milliseconds between a node's gossip rounds (the core keeps the timer).
const GOSSIP_INTERVAL_MS: u64 = 5;
/// Scrub rate: a few hundred KiB of entries per virtual second, so a pass over a node's
/// entries takes a few ms and several passes run while faults are injected.
const SCRUB_BYTES_PER_S: u64 = 64 * 1024 * 1024;
/// Rest between scrub passes.
const SCRUB_PASS_PAUSE_MS: u64 = 20;
/// Journal and page store files are small, so a run rolls, fills and recycles many of them.
const FILE_BYTES: u64 = 128 * 1024;
/// Most bytes in one journal group: half a file (the daemon's `GROUP_BYTES_MAX` is half its
/// smallest file too).
const GROUP_BYTES: usize = FILE_BYTES as usize / 2;
/// Page versions per page store group: 8 of 4 KiB fit a file many times over.
const COALESCE_JOBS: usize = 8;
/// Checkpoints come often, so restarts start from them and recycling happens.
const CHECKPOINT_INTERVAL_BYTES: u64 = 64 * 1024;
/// A small entry cache: most reads go to the disk and meet its faults.
const ENTRY_CACHE_BYTES: usize = 16 * 1024;
/// The directories whose files the disk's faults hit: the logs. (The two-copy metadata and
/// checkpoint files are left alone; see `docs/simulator.md`, "Known gaps".)
pub const FAULTY_DIRS: [&str; 2] =
    [storaged::journal::files::JOURNAL_PREFIX, storaged::journal::files::PAGES_PREFIX];

/// A message for peer `.0`, tagged `.2` if it is a request whose answer is awaited (a stream,
/// in the daemon) or the answer to one.
pub type ToPeer = (NodeId, Message, Option<u64>);

/// The core, lent to the store's steps for one call.
struct Lent<'a>(RefCell<&'a mut NodeCore>);

impl CoreAccess for Lent<'_> {
    fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }
}

/// The store of one life of the node, with its two log writers.
#[derive(Debug)]
struct Running {
    store: NodeStore<SimDisk>,
    journal: Journal<SimDisk>,
    pages: Journal<SimDisk>,
    /// The journal group written and not yet flushed: its entries, length and records.
    journal_group: Option<(Vec<JournalEntry>, u64, Vec<Lsn>)>,
    /// The page store group written and not yet flushed.
    pages_group: Option<VersionsWritten>,
    /// While out of space: the length of the group that did not fit.
    retry_len: Option<usize>,
}

/// See the module docs.
#[derive(Debug)]
pub struct SimNode {
    pub id: NodeId,
    /// Its availability zone, as the cluster map has it.
    pub az: AzId,
    /// How many nodes the cluster has (ids 1..=nodes): the peers it may hydrate from.
    nodes: u32,
    pub up: bool,
    /// Incremented at every crash: completions of an earlier life are ignored.
    pub life: u64,
    core: NodeCore,
    disk: SimDisk,
    running: Running,
    next_request: u64,
    /// Which writer generation sent each request whose reply the core holds.
    senders: std::collections::HashMap<RequestId, u32>,
    /// Every record LSN that ever reached this disk durably (whatever happened to it since).
    written: std::collections::HashSet<protocol::Lsn>,
    /// Gossip summaries sent and not yet answered: (peer, PG).
    asked: std::collections::HashSet<(NodeId, PgRef)>,
    /// The test-only bug planted in every core of this node (`--plant`).
    planted: Option<PlantedBug>,
    /// Image repair reads and hydration asks sent to peers and not yet answered, by tag.
    asks: std::collections::BTreeMap<u64, PeerAsk>,
    /// The next tag (never reused, across lives).
    next_tag: u64,
    /// Scrub passes this life's core completed, and when the last of them started.
    scrub_passes_seen: u64,
    pub scrub_pass_started_ms: Option<u64>,
    /// Scrub and hydration counters of earlier lives (a crash resets the core's).
    past_heal: HealCounts,
    /// Per PG, the point through which a completed hydration installed page images.
    hydrated: std::collections::BTreeMap<PgRef, Lsn>,
    /// Why the node could not start, if it could not.
    pub start_failure: Option<String>,
    /// Journal and page store files recycled, over every life.
    pub files_recycled: u64,
    /// Per PG, the point through which the core had folded records into page versions when
    /// it last ran (`Segment::folded_through`).
    folded_at_crash: std::collections::BTreeMap<PgRef, Lsn>,
}

impl SimNode {
    pub fn new(id: NodeId, az: AzId, nodes: u32, planted: Option<PlantedBug>) -> SimNode {
        let disk = SimDisk::new();
        let mut core = new_core(id, az, planted);
        let running = open(&disk, &mut core, 0).expect("an empty disk opens");
        SimNode {
            id,
            az,
            nodes,
            up: true,
            life: 0,
            core,
            disk,
            running,
            next_request: 0,
            senders: std::collections::HashMap::new(),
            written: std::collections::HashSet::new(),
            asked: std::collections::HashSet::new(),
            planted,
            asks: std::collections::BTreeMap::new(),
            next_tag: 0,
            scrub_passes_seen: 0,
            scrub_pass_started_ms: None,
            past_heal: HealCounts::default(),
            hydrated: std::collections::BTreeMap::new(),
            start_failure: None,
            files_recycled: 0,
            folded_at_crash: std::collections::BTreeMap::new(),
        }
    }

    /// Every other node of the cluster.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (1..=self.nodes).map(NodeId).filter(|p| *p != self.id)
    }

    /// True if record `lsn` ever reached this disk durably.
    pub fn has_written(&self, lsn: Lsn) -> bool {
        self.written.contains(&lsn)
    }

    /// The disk, for the world's faults.
    pub fn disk(&self) -> &SimDisk {
        &self.disk
    }

    /// What the disk did, over every life.
    pub fn disk_stats(&self) -> DiskStats {
        self.disk.stats()
    }

    /// The disk fills up (`true`) or space returns (`false`); the node finds out as the
    /// daemon does, when it next creates a file (and, while out of space, on every tick).
    pub fn set_disk_full(&mut self, full: bool) {
        self.disk.set_full(full);
    }

    pub fn core(&self) -> &NodeCore {
        &self.core
    }

    /// Runs one store step with the core lent to it.
    fn with_store<T>(&mut self, step: impl FnOnce(&mut Running, &Lent) -> T) -> T {
        let lent = Lent(RefCell::new(&mut self.core));
        step(&mut self.running, &lent)
    }

    /// A request from writer generation `from` at virtual time `now_us`; returns an immediate
    /// answer, if any.
    pub fn receive(&mut self, from: u32, message: Message, now_us: u64) -> Option<Message> {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        let result = match message {
            Message::AppendBatch(b) => self.core.handle_append(request, b),
            Message::EpochBump(b) => self.core.handle_epoch_bump(request, b),
            Message::MembershipChange(c) => self.core.handle_membership_change(request, c),
            Message::Truncate(t) => self.core.handle_truncate(request, t),
            Message::StatusRequest => return Some(Message::Status(self.core.status())),
            Message::ReadRecords(read) => return Some(self.read_records(self.core.plan_read_records(&read))),
            Message::ReadRecordHeaders(read) => {
                let answer = self.read_records(self.core.plan_read_records(&read.as_read()));
                return Some(protocol::messages::RecordHeaders::answer(&read, answer));
            }
            Message::ReadPage(read) => return Some(self.read_page(&read)),
            Message::ReadPageAsOf(read) => {
                return Some(match self.core.resolve_read_as_of(&read) {
                    Ok(Some(resolved)) => self.read_page(&resolved),
                    Err(refusal) => Message::Error(refusal),
                    Ok(None) => Message::Error(ErrorReply {
                        code: ErrorCode::NotYet,
                        pg: read.pg,
                        epochs: Epochs::default(),
                        message: "newest LSN at the read point not yet known".into(),
                    }),
                });
            }
            Message::FloorReport(report) => {
                return Some(self.core.handle_floor_report(&report, now_us / 1000));
            }
            _ => return None,
        };
        match result {
            Ok(()) => {
                self.senders.insert(request, from);
                None
            }
            Err(reply) => Some(Message::Error(reply)),
        }
    }

    /// This node's gossip round, if its core says one is due (as the daemon sleeps until
    /// `poll_gossip_timeout`): a summary of each segment for each other member of its PG, then,
    /// as each exchange of the daemon's does, the first image repair or hydration ask for each
    /// peer that has no ask of this node outstanding (`heal.rs`).
    pub fn gossip(&mut self, now_us: u64, members_of: impl Fn(PgRef) -> Vec<NodeId> + Copy) -> Vec<ToPeer> {
        let now = now_us / 1000;
        if self.core.poll_gossip_timeout().is_none_or(|at| at > now) {
            return Vec::new();
        }
        let summaries = self.core.poll_gossip(now, members_of);
        self.asked.extend(summaries.iter().map(|(peer, s)| (*peer, s.pg)));
        let mut peers: Vec<NodeId> = summaries.iter().map(|(peer, _)| *peer).collect();
        let mut out: Vec<ToPeer> = summaries
            .into_iter()
            .map(|(peer, summary)| (peer, Message::GossipSummary(summary), None))
            .collect();
        // A node rebuilding a segment it does not hold yet has no summary of it to send, but
        // still runs an exchange with the peer it hydrates from.
        peers.extend(self.peers().filter(|p| self.core.hydrating_from(*p)));
        peers.sort();
        peers.dedup();
        for peer in peers {
            out.extend(self.start_exchange(peer, now, members_of));
        }
        out
    }

    /// A message from peer `from` (tagged `tag` if it is a request awaiting an answer, or the
    /// answer to one of this node's); returns what to send. A summary is a reply if this node
    /// asked that peer about that PG (as a stream's order tells the real driver), else a
    /// request to answer.
    pub fn receive_from_peer(
        &mut self,
        from: NodeId,
        message: Message,
        tag: Option<u64>,
        now_us: u64,
        members_of: impl Fn(PgRef) -> Vec<NodeId> + Copy,
    ) -> Vec<ToPeer> {
        let now = now_us / 1000;
        if let Some(tag) = tag.filter(|t| self.asks.get(t).is_some_and(|a| a.peer == from)) {
            return self.answered(tag, message, now, members_of);
        }
        let answer = match message {
            Message::ReadPage(read) => Some(self.read_page(&read)),
            Message::HydrateFetch(fetch) => Some(self.answer_hydrate(from, &fetch, now)),
            other => self.receive_gossip(from, other, now),
        };
        answer.map(|message| (from, message, tag)).into_iter().collect()
    }

    /// Gossip from peer `from`: the answer to send back to it, if any.
    fn receive_gossip(&mut self, from: NodeId, message: Message, now: u64) -> Option<Message> {
        match message {
            Message::GossipSummary(summary) if self.asked.remove(&(from, summary.pg)) => {
                self.core.handle_gossip_summary(&summary, now).map(Message::GossipFetch)
            }
            Message::GossipSummary(summary) => {
                Some(Message::GossipSummary(self.core.answer_gossip_summary(&summary, now)))
            }
            Message::GossipFetch(fetch) => Some(self.read_records(self.core.plan_gossip_fetch(&fetch))),
            Message::Error(refusal) => {
                self.core.handle_gossip_fetch_failed(refusal.pg, from);
                None
            }
            Message::Records(records) => {
                self.core.handle_gossip_records(records, now).map(Message::GossipFetch)
            }
            _ => None,
        }
    }

    /// The planned records, read and verified as the daemon reads them.
    fn read_records(&mut self, plan: Result<storaged::core::ReadPlan, ErrorReply>) -> Message {
        match plan {
            Ok(plan) => self.with_store(|r, core| complete(read_planned_records(&r.store, core, plan))),
            Err(refusal) => Message::Error(refusal),
        }
    }

    /// A page read, as the daemon answers it (without the wait for SCL: a node that is not
    /// yet complete answers `NotYet` at once).
    pub fn read_page(&mut self, read: &ReadPage) -> Message {
        let mut faults = 0;
        match self.with_store(|r, core| complete(read_page(&r.store, core, read, &mut faults))) {
            PageRead::Answer(message) => message,
            PageRead::NotYet => Message::Error(ErrorReply {
                code: ErrorCode::NotYet,
                pg: read.pg,
                epochs: Epochs::default(),
                message: "not yet complete".into(),
            }),
        }
    }

    /// The coalescer's turn: flushes the page store group written on its previous turn, then
    /// writes the next (so a crash can fall between a write and its flush), and recycles files
    /// when the core's maintenance timer says so.
    pub fn coalesce(&mut self, now_ms: u64) {
        if self.core.poll_maintenance(now_ms) {
            let recycled = self
                .with_store(|r, core| complete(r.store.recycle(core, r.pages.position().file, FILE_BYTES)));
            self.files_recycled += recycled;
        }
        if let Some(written) = self.running.pages_group.take() {
            let pgs = written.pgs();
            let completed = self.core.hydrate_stats().completed;
            self.with_store(|r, core| complete(r.store.flush_versions(core, &mut r.pages, written)));
            pgs.into_iter().for_each(|pg| self.note_hydrated(pg, completed));
        }
        if matches!(self.core.state(), NodeState::Failed(_)) {
            return;
        }
        if let Ok(written) = self.with_store(|r, core| complete(r.store.write_versions(core, &mut r.pages))) {
            self.running.pages_group = Some(written);
        }
    }

    /// Writes the next journal group if none is in flight and entries are queued (group
    /// commit, as the journal task does); true if one was written and waits for its flush.
    /// While out of space, first tries to make room, as the journal task does.
    pub fn start_flush(&mut self) -> bool {
        if self.running.journal_group.is_some() {
            return false;
        }
        if *self.core.state() == NodeState::DiskFull {
            self.with_store(|r, core| complete(retry_space(core, &mut r.journal, &mut r.retry_len)));
            if *self.core.state() == NodeState::DiskFull {
                return false;
            }
        }
        let entries = self.core.poll_journal_group(GROUP_BYTES, GROUP_ENTRIES_MAX, entry_len);
        if entries.is_empty() {
            return false;
        }
        let len = group_len(&entries) as u64;
        let lsns: Vec<Lsn> = entries
            .iter()
            .flat_map(|e| match &e.body {
                storaged::core::EntryBody::Records { records, .. } => {
                    records.iter().map(Record::lsn).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        match self.with_store(|r, _| complete(write_group(&mut r.journal, &r.store.keyring, &entries))) {
            Ok(()) => {
                self.running.journal_group = Some((entries, len, lsns));
                true
            }
            Err(error) => {
                if matches!(error, WriteError::NoSpace) {
                    self.running.retry_len = Some(len as usize);
                }
                self.with_store(|_, core| journal_write_failed(core, error));
                false
            }
        }
    }

    /// The journal group in flight is flushed: the core learns where its entries are (and
    /// acknowledges them), and a checkpoint follows if one is due.
    pub fn flushed(&mut self) {
        let Some((entries, len, lsns)) = self.running.journal_group.take() else { return };
        match self.with_store(|r, _| complete(r.journal.flush())) {
            Ok(placed) => {
                self.written.extend(lsns);
                self.with_store(|r, core| {
                    r.store.journal_durable(core, &r.journal, entries, &placed, len);
                    complete(r.store.checkpoint(core, false));
                });
            }
            Err(error) => self.with_store(|_, core| journal_write_failed(core, error)),
        }
    }

    /// Replies the core released, with the writer generation each goes to.
    pub fn poll_replies(&mut self) -> Vec<(u32, Message)> {
        let released: Vec<(RequestId, Message)> = std::iter::from_fn(|| self.core.poll_reply()).collect();
        released
            .into_iter()
            .filter_map(|(request, message)| Some((self.senders.remove(&request)?, message)))
            .collect()
    }

    /// Crash: all memory is gone; of the writes not yet flushed, the first `landed` reach the
    /// disk and the next one only its first `torn_sectors` sectors (never acknowledged).
    pub fn crash(&mut self, landed: usize, torn_sectors: usize) {
        self.folded_at_crash = self.folded();
        self.up = false;
        self.disk.crash(landed, torn_sectors);
        self.life += 1;
        self.senders.clear();
        self.asked.clear();
        self.asks.clear();
        self.end_life();
        self.core = new_core(self.id, self.az, self.planted);
    }

    /// The machine is lost with its disk (it crashes first if it runs): if it ever runs again
    /// under its id, it starts empty, as a replacement machine would. What reached the disk
    /// before still counts as written (`has_written`): the writer counted acks of it.
    pub fn wipe(&mut self) {
        if self.up {
            self.crash(0, 0);
        }
        self.disk.wipe();
        self.hydrated.clear();
        self.folded_at_crash.clear();
    }

    /// Per PG, the point through which the core folded every record into page versions (as
    /// it last ran, if the node is down): records at or below it may have left the disk.
    pub fn folded(&self) -> std::collections::BTreeMap<PgRef, Lsn> {
        if !self.up {
            return self.folded_at_crash.clone();
        }
        self.core.segments().map(|s| (s.pg(), s.folded_through())).collect()
    }

    /// Restart: the store opens as the daemon's does (checkpoint, then replay of the logs
    /// after it); false if it could not (the reason is kept in `start_failure`).
    pub fn restart(&mut self, now_ms: u64) -> bool {
        if self.up {
            return true;
        }
        self.core = new_core(self.id, self.az, self.planted);
        match open(&self.disk, &mut self.core, now_ms) {
            Ok(running) => {
                self.running = running;
                self.up = true;
                // A group in flight at the crash may have landed: what replay found is written.
                let found = self
                    .core
                    .segments()
                    .flat_map(|s| s.all_records().map(|(lsn, _)| lsn))
                    .collect::<Vec<_>>();
                self.written.extend(found);
                true
            }
            Err(error) => {
                self.start_failure = Some(error);
                false
            }
        }
    }
}

/// Opens the store of a node on `disk` into `core`, as the daemon's start does.
fn open(disk: &SimDisk, core: &mut NodeCore, now_ms: u64) -> Result<Running, String> {
    let settings = StoreSettings {
        file_bytes: FILE_BYTES,
        checkpoint_interval_bytes: CHECKPOINT_INTERVAL_BYTES,
        entry_cache_bytes: ENTRY_CACHE_BYTES,
        coalesce_jobs_max: COALESCE_JOBS,
    };
    let kek = Kek::from_bytes([core.node().0 as u8; 32]);
    let opened = complete(storaged::store::open(disk.clone(), core, kek, settings, now_ms));
    let opened = opened.map_err(|e| e.to_string())?;
    Ok(Running {
        store: opened.store,
        journal: opened.journal,
        pages: opened.pages,
        journal_group: None,
        pages_group: None,
        retry_len: None,
    })
}

fn new_core(id: NodeId, az: AzId, planted: Option<PlantedBug>) -> NodeCore {
    // A small apply bound makes the coalescer image pages often within a short run.
    // Peers' records are kept for 100 ms of virtual time: longer than any outage the fault
    // budget allows.
    let limits = Limits {
        apply_max: 4,
        peer_lease_ms: 100,
        gossip_timeout_ms: 20,
        gossip_interval_ms: GOSSIP_INTERVAL_MS,
        scrub_bytes_per_s: SCRUB_BYTES_PER_S,
        scrub_pass_pause_ms: SCRUB_PASS_PAUSE_MS,
        // A resumed rebuild whose source went away asks again soon and gives up within the
        // run (the daemon's are a second and a minute).
        hydrate_retry_ms: 10,
        hydrate_resume_ms: 60,
        planted,
        ..Limits::default()
    };
    NodeCore::new(id, az, limits)
}
