//! A simulated storage node: the real `storaged` core over a disk that keeps what was flushed
//! and loses what was not when the node crashes (FoundationDB's AsyncFileNonDurable model), and
//! that can rot: a rotten entry is skipped at replay, as the real replay skips an entry whose
//! checksum fails, and refused when read, as the real read path refuses bytes that fail their
//! CRC or tag. A rotten entry's bytes really are damaged (a payload byte flipped): a node that
//! served them anyway would hand out wrong data, which the read checkers catch.
//!
//! The node also runs the core's coalescer (images are stored at once, fetched versions as
//! they are) and answers `ReadPage` and `FloorReport` as the real driver does; its scrubber,
//! image repairs and hydrations are driven as the daemon drives them (`heal.rs`). Each life of
//! the node writes its own "journal file", so records from before a restart can be folded.

use bytes::Bytes;
use protocol::messages::{ErrorCode, ErrorReply, Page, ReadPage, Records};
use protocol::{AzId, Epochs, Lsn, Message, NodeId, PgRef, Record};
use storaged::core::{
    Base, CoalesceJob, EntryBody, JournalEntry, Limits, Location, NodeCore, PageAnswer, PlantedBug, ReadPlan,
    RecordsAnswer, RequestId,
};

mod heal;

pub use heal::HealCounts;
use heal::PeerAsk;

/// Virtual milliseconds between a node's gossip rounds (the core keeps the timer).
const GOSSIP_INTERVAL_MS: u64 = 5;
/// The "file" number of image locations (journal files are numbered by the node's life).
const IMAGE_FILE: u64 = u64::MAX;
/// Scrub rate: every location's `len` is 1 here, so this is 64 entries per virtual ms (a full
/// job of 256 entries every 4 ms), and a pass over a node's few hundred entries takes a few ms.
const SCRUB_BYTES_PER_S: u64 = 64_000;
/// Rest between scrub passes: several passes run while faults are injected.
const SCRUB_PASS_PAUSE_MS: u64 = 20;

/// A message for peer `.0`, tagged `.2` if it is a request whose answer is awaited (a stream,
/// in the daemon) or the answer to one.
pub type ToPeer = (NodeId, Message, Option<u64>);

/// One entry the disk holds.
#[derive(Clone, Debug)]
struct Stored {
    pg: PgRef,
    body: EntryBody,
    location: Location,
    rotten: bool,
}

/// Why stored bytes could not be used for a page.
#[derive(Debug)]
enum Fault {
    /// These records' entry failed its check.
    Records(Vec<Lsn>),
    Image,
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
    durable: Vec<Stored>,
    /// The page store: images, by location offset.
    images: Vec<Stored>,
    /// The group being flushed: lost if the node crashes first.
    flushing: Vec<JournalEntry>,
    next_request: u64,
    /// Which writer generation sent each request whose reply the core holds.
    senders: std::collections::HashMap<RequestId, u32>,
    /// The disk has no space: groups are refused instead of written.
    full: bool,
    /// Every record LSN that ever reached this disk (whatever happened to it since).
    written: std::collections::HashSet<protocol::Lsn>,
    /// The next stored entry or image a read touches fails its check once (a transient read
    /// error: the bytes at rest are fine).
    pub flaky_next_read: bool,
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
}

impl SimNode {
    pub fn new(id: NodeId, az: AzId, nodes: u32, planted: Option<PlantedBug>) -> SimNode {
        SimNode {
            id,
            az,
            nodes,
            up: true,
            life: 0,
            core: new_core(id, az, planted),
            durable: Vec::new(),
            images: Vec::new(),
            flushing: Vec::new(),
            next_request: 0,
            senders: std::collections::HashMap::new(),
            full: false,
            written: std::collections::HashSet::new(),
            flaky_next_read: false,
            asked: std::collections::HashSet::new(),
            planted,
            asks: std::collections::BTreeMap::new(),
            next_tag: 0,
            scrub_passes_seen: 0,
            scrub_pass_started_ms: None,
            past_heal: HealCounts::default(),
            hydrated: std::collections::BTreeMap::new(),
        }
    }

    /// Every other node of the cluster.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (1..=self.nodes).map(NodeId).filter(|p| *p != self.id)
    }

    /// True if record `lsn` ever reached this disk.
    pub fn has_written(&self, lsn: Lsn) -> bool {
        self.written.contains(&lsn)
    }

    fn note_written(&mut self, body: &EntryBody) {
        if let EntryBody::Records { records, .. } = body {
            self.written.extend(records.iter().map(Record::lsn));
        }
    }

    /// The disk fills up (`true`) or space returns (`false`), as the real journal task reports.
    pub fn set_disk_full(&mut self, full: bool) {
        self.full = full;
        if full {
            self.core.handle_no_space();
        } else {
            self.core.handle_space_available();
        }
    }

    /// Whether the next read fails its check, consuming the flag.
    fn read_fails(&mut self) -> bool {
        std::mem::take(&mut self.flaky_next_read)
    }

    pub fn core(&self) -> &NodeCore {
        &self.core
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
            Message::ReadRecords(read) => {
                return Some(match self.core.plan_read_records(&read) {
                    Ok(plan) => Message::Records(self.read(plan)),
                    Err(refusal) => Message::Error(refusal),
                })
            }
            Message::ReadPage(read) => return Some(self.read_page(&read)),
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
            Message::GossipFetch(fetch) => Some(match self.core.plan_gossip_fetch(&fetch) {
                Ok(plan) => Message::Records(self.read(plan)),
                Err(refusal) => Message::Error(refusal),
            }),
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

    /// The planned records from the disk, as the real read path serves them: a rotten entry's
    /// records are left out (and no longer claimed), the byte and count limits respected.
    fn read(&mut self, plan: ReadPlan) -> Records {
        let mut answer = RecordsAnswer::new(&plan);
        for (lsn, location) in &plan.wanted {
            if self.read_fails() {
                self.core.handle_corrupt_record(plan.pg, *lsn);
                continue;
            }
            let stored = &self.durable[location.offset as usize];
            let found = match &stored.body {
                EntryBody::Records { records, .. } if !stored.rotten => {
                    records.iter().find(|r| r.lsn() == *lsn).cloned()
                }
                _ => None,
            };
            let Some(record) = found else {
                self.core.handle_corrupt_record(plan.pg, *lsn);
                continue;
            };
            if !answer.offer(record) {
                break;
            }
        }
        let scl = self.core.segment(&plan.pg).map_or(plan.scl, |s| s.scl());
        Records { pg: plan.pg, node: self.id, scl, more: answer.more, records: answer.records }
    }

    /// A page read, as `storaged::server::streams::read_page` answers it (without the wait for
    /// SCL: a node that is not yet complete answers `NotYet` at once).
    pub fn read_page(&mut self, read: &ReadPage) -> Message {
        for _ in 0..2 {
            let build = match self.core.plan_read_page(read) {
                Err(refusal) => return Message::Error(refusal),
                Ok(PageAnswer::Ready(page)) => return Message::Page(page),
                Ok(PageAnswer::NotYet) => return self.error(ErrorCode::NotYet, read.pg, "not yet complete"),
                Ok(PageAnswer::Build(build)) => build,
            };
            match self.build(build.page_bytes, &build.base, &build.records) {
                Ok(bytes) => {
                    let bytes = Bytes::from(bytes);
                    self.core.handle_page_built(build.pg, build.page_id, build.version_lsn, bytes.clone());
                    let (pg, page_id, read_lsn, version_lsn) =
                        (build.pg, build.page_id, build.read_lsn, build.version_lsn);
                    return Message::Page(Page { pg, page_id, read_lsn, version_lsn, bytes });
                }
                Err(fault) => self.report(build.pg, fault),
            }
        }
        self.error(ErrorCode::ChecksumMismatch, read.pg, "stored page version failed verification")
    }

    /// Builds a version from the disk, refusing bytes that fail their check.
    fn build(&mut self, page_bytes: u32, base: &Base, records: &[(Lsn, Location)]) -> Result<Vec<u8>, Fault> {
        if self.read_fails() {
            return Err(records.first().map_or(Fault::Image, |(lsn, _)| Fault::Records(vec![*lsn])));
        }
        let base = match base {
            Base::Zeros => None,
            Base::Cached(bytes) => Some(bytes.clone()),
            Base::Image(location) => match self.images.get(location.offset as usize) {
                Some(Stored { body: EntryBody::Image { page, .. }, rotten: false, .. }) => Some(page.clone()),
                _ => return Err(Fault::Image),
            },
        };
        let mut applied = Vec::with_capacity(records.len());
        for (lsn, location) in records {
            let found = match self.durable.get(location.offset as usize) {
                Some(Stored { body: EntryBody::Records { records, .. }, rotten: false, .. }) => {
                    records.iter().find(|r| r.lsn() == *lsn)
                }
                _ => None,
            };
            applied.push(found.ok_or_else(|| Fault::Records(vec![*lsn]))?);
        }
        protocol::apply::materialize(page_bytes, base.as_deref(), applied).map_err(|_| Fault::Image)
    }

    fn report(&mut self, pg: PgRef, fault: Fault) {
        if let Fault::Records(lsns) = fault {
            lsns.into_iter().for_each(|lsn| self.core.handle_corrupt_record(pg, lsn));
        }
    }

    fn error(&self, code: ErrorCode, pg: PgRef, message: &str) -> Message {
        Message::Error(ErrorReply { code, pg, epochs: Epochs::default(), message: message.into() })
    }

    /// One coalescer pass of at most `max` jobs; images reach the disk at once.
    pub fn coalesce(&mut self, max: usize) {
        let jobs: Vec<CoalesceJob> = self.core.poll_coalesce(max);
        for job in jobs {
            let base = job.base.map_or(Base::Zeros, Base::Image);
            // A version fetched from a peer (hydration, scrub repair) is stored as it is.
            let built = match &job.fetched {
                Some(fetched) => Ok(fetched.to_vec()),
                None => self.build(job.page_bytes, &base, &job.records),
            };
            match built {
                Ok(page) => {
                    let location = Location { file: IMAGE_FILE, offset: self.images.len() as u64, len: 1 };
                    let body =
                        EntryBody::Image { page_id: job.page_id, version_lsn: job.target, page: page.into() };
                    self.images.push(Stored { pg: job.pg, body, location, rotten: false });
                    let completed = self.core.hydrate_stats().completed;
                    self.core.handle_coalesced(&job, Some(location));
                    self.note_hydrated(job.pg, completed);
                }
                Err(fault) => {
                    self.report(job.pg, fault);
                    self.core.handle_coalesced(&job, None);
                }
            }
        }
    }

    /// Starts a group commit if none is in flight and entries are queued; true if one started.
    pub fn start_flush(&mut self) -> bool {
        if !self.flushing.is_empty() {
            return false;
        }
        if self.full {
            // The journal could not get space: what is queued is refused, nothing is written.
            self.core.handle_no_space();
            return false;
        }
        self.flushing = std::iter::from_fn(|| self.core.poll_journal()).collect();
        !self.flushing.is_empty()
    }

    /// The group reached the disk; with `misdirected`, the write went to the wrong place: the
    /// group's own locations hold garbage, and it overwrote the `misdirected`-th stored entry
    /// (the disk reports success either way, so the core acknowledges).
    pub fn flushed(&mut self, misdirected: Option<usize>) {
        let group = std::mem::take(&mut self.flushing);
        let Some(last) = group.last().map(|e| e.seq) else { return };
        let victim = misdirected.filter(|_| !self.durable.is_empty()).map(|i| i % self.durable.len());
        let mut placed = Vec::new();
        for entry in group {
            let location = Location { file: self.life, offset: self.durable.len() as u64, len: 1 };
            self.note_written(&entry.body);
            placed.push((entry.seq, location));
            self.durable.push(Stored { pg: entry.pg, body: entry.body, location, rotten: false });
            if misdirected.is_some() {
                self.damage(self.durable.len() - 1);
            }
        }
        if let Some(victim) = victim {
            self.damage(victim);
        }
        self.core.handle_durable(last, &placed);
    }

    /// Replies the core released, with the writer generation each goes to.
    pub fn poll_replies(&mut self) -> Vec<(u32, Message)> {
        let released: Vec<(RequestId, Message)> = std::iter::from_fn(|| self.core.poll_reply()).collect();
        released
            .into_iter()
            .filter_map(|(request, message)| Some((self.senders.remove(&request)?, message)))
            .collect()
    }

    /// Crash: all memory is gone, and of the group being flushed only the first `kept` entries
    /// reached the disk (never acknowledged), the next one torn if `torn`.
    pub fn crash(&mut self, kept: usize, torn: bool) {
        self.up = false;
        let group = std::mem::take(&mut self.flushing);
        let reached = kept.min(group.len()) + usize::from(torn && kept < group.len());
        for (i, entry) in group.into_iter().take(reached).enumerate() {
            let location = Location { file: self.life, offset: self.durable.len() as u64, len: 1 };
            self.note_written(&entry.body);
            self.durable.push(Stored { pg: entry.pg, body: entry.body, location, rotten: false });
            if i == kept {
                self.damage(self.durable.len() - 1);
            }
        }
        self.life += 1;
        self.full = false;
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
            self.crash(0, false);
        }
        self.durable.clear();
        self.images.clear();
        self.hydrated.clear();
    }

    /// Restart: replay what the disk holds, skipping rotten entries (their records are then
    /// missing, as with a checksum failure).
    pub fn restart(&mut self) {
        if self.up {
            return;
        }
        self.up = true;
        self.core = new_core(self.id, self.az, self.planted);
        for stored in self.durable.iter().chain(&self.images).filter(|s| !s.rotten) {
            self.core.replay(stored.pg, &stored.body, stored.location);
        }
        self.core.set_journal_head(self.life);
    }

    /// Bit rot on the `index`-th stored entry or image (modulo the count); false if the disk
    /// is empty. The entry's bytes are damaged: each record's (or the image's) first payload
    /// byte is flipped.
    pub fn rot(&mut self, index: usize) -> bool {
        let count = self.durable.len() + self.images.len();
        if count == 0 {
            return false;
        }
        self.damage(index % count);
        true
    }

    /// Damages the `index`-th stored entry (images after the journal's entries).
    fn damage(&mut self, index: usize) {
        let stored = match self.durable.get_mut(index) {
            Some(stored) => stored,
            None => &mut self.images[index - self.durable.len()],
        };
        stored.rotten = true;
        match &mut stored.body {
            EntryBody::Records { records, .. } => records.iter_mut().for_each(|r| *r = damaged(r)),
            EntryBody::Image { page, .. } => {
                let mut bytes = page.to_vec();
                bytes[0] ^= 0x40;
                *page = bytes.into();
            }
            EntryBody::Meta { .. } | EntryBody::Membership { .. } => {}
        }
    }

    /// The stored entries, for checking (rotten ones excluded).
    pub fn readable_records(&self) -> impl Iterator<Item = (&PgRef, &protocol::Record)> {
        self.durable.iter().filter(|s| !s.rotten).flat_map(|s| match &s.body {
            EntryBody::Records { records, .. } => records.iter().map(move |r| (&s.pg, r)).collect::<Vec<_>>(),
            EntryBody::Meta { .. } | EntryBody::Membership { .. } | EntryBody::Image { .. } => Vec::new(),
        })
    }
}

/// `record` with its last payload byte flipped (what damaged bytes would decode to if a node
/// skipped the checksum).
fn damaged(record: &Record) -> Record {
    let mut payload = record.payload().to_vec();
    let Some(last) = payload.last_mut() else { return record.clone() };
    *last ^= 0x40;
    Record::new(*record.meta(), payload.into()).unwrap_or_else(|_| record.clone())
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
        planted,
        ..Limits::default()
    };
    NodeCore::new(id, az, limits)
}
