//! `WriterCore`: the one writer of a volume, without I/O.
//!
//! Calling contract (quinn-proto style): `append` allocates LSNs and backlinks and queues the
//! records in their PG; `poll_transmit` yields the messages to send (append batches to each of
//! a PG's six segments, PG-opening requests); the driver feeds back `handle_reply` for each
//! answer and `handle_node_down` / `handle_node_up` for connectivity, and calls `handle_tick`
//! now and then (resends, idle-PG heartbeats, repair decisions). `poll_repair` yields the
//! repairs of lagging segments to carry out (`core::repair`), each reported back with
//! `handle_repair_done`. `vdl()` is the volume durable LSN.
//!
//! Batching: a PG sends its queued records at once when nothing of it is in flight; otherwise
//! they wait (the batch grows) until a batch in flight becomes durable or a full batch is ready,
//! up to `batches_in_flight_max`. No timer is involved.
//!
//! Invariants: LSNs strictly increase; each record's backlinks are the previous record of the
//! volume, of its PG and of its page known to this writer; a batch counts as durable only once
//! a write quorum of *distinct* members of its PG acknowledged it; VDL never goes back.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use protocol::messages::{
    AppendAck, AppendBatch, EpochBump, ErrorCode, ErrorReply, FloorReport, Truncate, TruncateAck,
};
use protocol::placement::ClusterMap;
use protocol::quorum::Membership;
use protocol::{
    Epoch, Epochs, Lsn, LsnRange, Message, NodeId, PageId, PgId, Record, RecordFlags, RecordKind, RecordMeta,
};

use super::floor::{ReadPointRefusal, ReadPoints, FLOOR_LEASE_MS};
use super::geometry::VolumeGeometry;
use super::ladder::Ladder;
use super::repair::{RepairJob, Repairs};

mod membership;
use membership::Change;
pub use membership::ChangeState;

/// One record as the engine hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub page: PageId,
    pub kind: RecordKind,
    pub payload: Bytes,
    /// Ends an atomic group (a mini-transaction, a commit).
    pub cpl: bool,
    /// The engine's own LSN (strictly increasing), or `None` to let the writer allocate.
    pub lsn: Option<Lsn>,
}

/// Named bounds of the writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterLimits {
    /// LSN allocation limit: no LSN above VDL + `lal` is allocated.
    pub lal: u64,
    /// Records allocated and not yet covered by VDL.
    pub pending_records_max: usize,
    pub batch_bytes_max: usize,
    pub batch_records_max: usize,
    pub batches_in_flight_max: usize,
    /// Pages whose last LSN is remembered for `prev_page_lsn` (beyond it the map restarts).
    pub page_backlinks_max: usize,
    /// Ticks after which a batch (or a PG opening) without a write quorum is sent again to the
    /// members that have not answered: frames dropped on the way (a full queue, a lost
    /// connection) must not stall a PG.
    pub resend_after_ticks: u32,
    /// Ticks a node stays unreachable before the writer replaces it in every PG it serves
    /// (`writer::membership`); `None`: only `WriterCore::replace_node` replaces one.
    pub replace_after_ticks: Option<u32>,
    /// Test-only (the simulator's `--plant change-counts-new-set-only`): during a membership
    /// change, count a batch durable at a write quorum of the new set alone. Never set
    /// outside tests.
    #[doc(hidden)]
    pub plant_change_counts_new_set_only: bool,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            lal: 10_000_000,
            pending_records_max: 100_000,
            batch_bytes_max: 2 * 1024 * 1024,
            batch_records_max: protocol::messages::BATCH_RECORDS_MAX,
            batches_in_flight_max: 8,
            page_backlinks_max: 1 << 20,
            resend_after_ticks: 5,
            replace_after_ticks: None,
            plant_change_counts_new_set_only: false,
        }
    }
}

/// Why an append was not accepted now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendRefusal {
    #[error("the allocation window (VDL + LAL) or the pending-record bound is full: wait for VDL")]
    WindowFull,
    #[error("this writer is fenced: a newer writer holds the volume")]
    Fenced,
    #[error("engine LSN {lsn} is not above the last LSN {last}")]
    LsnNotIncreasing { lsn: Lsn, last: Lsn },
    #[error("record rejected: {0}")]
    Format(protocol::FormatError),
}

/// A message for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub node: NodeId,
    pub message: Message,
}

#[derive(Debug)]
struct Batch {
    records: Vec<Record>,
    acked: Vec<NodeId>,
    /// Ticks since the batch was last sent.
    age_ticks: u32,
}

#[derive(Debug)]
struct PgState {
    /// The quorum sets batches are counted against: two during a change.
    members: Membership,
    /// The membership change in progress, if any.
    change: Option<Change>,
    /// True once a write quorum holds the PG's segment; records wait until then.
    open: bool,
    /// Members known to hold the segment open at this writer's epoch (they acknowledged its
    /// opening or any batch); the others are sent the opening again now and then.
    opening_acks: Vec<NodeId>,
    /// Ticks since the opening was last sent again to members missing from `opening_acks`.
    open_age_ticks: u32,
    /// Per member, the truncation ranges it acknowledged (recovered writers).
    truncate_acks: HashMap<NodeId, Vec<LsnRange>>,
    last_lsn: Lsn,
    /// Newest LSN of this PG covered by VDL.
    vdl_lsn: Lsn,
    unsent: VecDeque<Record>,
    unsent_bytes: usize,
    in_flight: BTreeMap<Lsn, Batch>,
    /// Highest LSN through which every batch of this PG is durable.
    durable_through: Lsn,
    scl: HashMap<NodeId, Lsn>,
    told_vdl: Lsn,
}

/// See the module docs.
#[derive(Debug)]
pub struct WriterCore {
    geometry: VolumeGeometry,
    cluster: ClusterMap,
    epochs: Epochs,
    limits: WriterLimits,
    /// The truncation range of this writer's recovery, sent to PGs it opens later.
    truncation: Option<LsnRange>,
    /// Earlier recoveries' ranges, sent before it: a segment is open for this writer once it
    /// acknowledged them all.
    earlier_truncations: Vec<(Epoch, LsnRange)>,
    /// The previous record of the volume (the next record's `prev_volume_lsn`).
    last_lsn: Lsn,
    /// No LSN at or below this is allocated (the end of this writer's truncation range).
    lsn_floor: Lsn,
    pgs: BTreeMap<PgId, PgState>,
    page_last: HashMap<PageId, Lsn>,
    ladder: Ladder,
    down: Vec<NodeId>,
    stale: HashMap<PgId, Vec<NodeId>>,
    fenced: bool,
    transmits: VecDeque<Transmit>,
    read_points: ReadPoints,
    repairs: Repairs,
    /// Ticks since this writer started.
    ticks: u64,
    /// When each unreachable node went down (in ticks); ordered, so decisions replay.
    down_since: BTreeMap<NodeId, u64>,
    /// Nodes an operator asked to replace: never chosen as a new member.
    retired: Vec<NodeId>,
    /// (PG, node) pairs where the node holds a retired segment of the PG (a change left it
    /// out): its stale records and images must not come back, so it never joins that PG again.
    held_retired: std::collections::BTreeSet<(PgId, NodeId)>,
    /// (PG, node) pairs already reported as having no spare to replace them.
    no_spare: Vec<(PgId, NodeId)>,
    /// (PG, node) pairs where a finished change's membership is not yet stored by the node
    /// (a member, or the node it left out).
    untold: Vec<(PgId, NodeId)>,
}

/// Where a writer starts: a new volume, or what recovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterStart {
    pub epochs: Epochs,
    pub vdl: Lsn,
    /// The first LSN this writer may allocate (above the truncation range).
    pub next_lsn: Lsn,
    pub truncation: Option<LsnRange>,
    /// Earlier recoveries' truncation ranges, passed on with this writer's own.
    pub earlier_truncations: Vec<(Epoch, LsnRange)>,
    /// Each existing PG with its newest LSN at or below VDL.
    pub pgs: Vec<(PgId, Lsn)>,
    /// PGs whose stored membership is not their placement (a change happened or is under way).
    pub memberships: Vec<(PgId, Membership)>,
    /// (PG, node) pairs where the node reported a retired segment of the PG.
    pub retired: Vec<(PgId, NodeId)>,
}

impl WriterStart {
    /// A volume nobody has written.
    pub fn fresh() -> WriterStart {
        WriterStart {
            epochs: Epochs::INITIAL,
            vdl: Lsn::ZERO,
            next_lsn: Lsn(1),
            truncation: None,
            earlier_truncations: Vec::new(),
            pgs: Vec::new(),
            memberships: Vec::new(),
            retired: Vec::new(),
        }
    }
}

impl WriterCore {
    pub fn new(
        geometry: VolumeGeometry,
        cluster: ClusterMap,
        limits: WriterLimits,
        start: WriterStart,
    ) -> WriterCore {
        let mut core = WriterCore {
            geometry,
            cluster,
            epochs: start.epochs,
            limits,
            truncation: start.truncation,
            earlier_truncations: start.earlier_truncations,
            last_lsn: start.vdl,
            lsn_floor: Lsn(start.next_lsn.0.saturating_sub(1)),
            pgs: BTreeMap::new(),
            page_last: HashMap::new(),
            ladder: Ladder::starting_at(start.vdl),
            down: Vec::new(),
            stale: HashMap::new(),
            fenced: false,
            transmits: VecDeque::new(),
            read_points: ReadPoints::new(start.vdl, start.pgs.iter().copied()),
            repairs: Repairs::default(),
            ticks: 0,
            down_since: BTreeMap::new(),
            retired: Vec::new(),
            held_retired: start.retired.iter().copied().collect(),
            no_spare: Vec::new(),
            untold: Vec::new(),
        };
        for (pg, newest) in start.pgs {
            let state = core.new_pg(pg, true, newest);
            core.pgs.insert(pg, state);
        }
        if core.truncation.is_some() {
            core.restore_memberships(start.memberships);
        }
        core
    }

    pub fn vdl(&self) -> Lsn {
        self.ladder.vdl()
    }
    pub fn vcl(&self) -> Lsn {
        self.ladder.vcl()
    }
    pub fn epochs(&self) -> Epochs {
        self.epochs
    }
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }
    pub fn geometry(&self) -> &VolumeGeometry {
        &self.geometry
    }
    pub fn cluster(&self) -> &ClusterMap {
        &self.cluster
    }
    /// Records allocated and not yet covered by VDL.
    pub fn pending_records(&self) -> usize {
        self.ladder.tracked()
    }

    /// Every node holding a segment of `pg` this writer writes to: six, or seven during a
    /// membership change.
    pub fn members(&self, pg: PgId) -> Vec<NodeId> {
        self.membership(pg).nodes()
    }

    /// The last SCL each member of `pg` reported.
    pub fn known_scl(&self, pg: PgId, node: NodeId) -> Option<Lsn> {
        self.pgs.get(&pg).and_then(|s| s.scl.get(&node).copied())
    }

    /// The newest LSN of `pg` covered by VDL: a segment complete through it can serve any read
    /// at or below VDL.
    pub fn pg_vdl_lsn(&self, pg: PgId) -> Lsn {
        self.pgs.get(&pg).map_or(Lsn::ZERO, |s| s.vdl_lsn)
    }

    /// Highest LSN of `pg` through which every batch is durable (what a lagging segment is
    /// repaired up to).
    pub fn pg_durable_through(&self, pg: PgId) -> Lsn {
        self.pgs.get(&pg).map_or(Lsn::ZERO, |s| s.durable_through)
    }

    /// Every PG this writer knows.
    pub fn pgs(&self) -> Vec<PgId> {
        self.pgs.keys().copied().collect()
    }

    /// Allocates LSNs and backlinks for `records` (all or none) and queues them. Returns the
    /// first and last LSN.
    pub fn append(&mut self, records: Vec<NewRecord>) -> Result<(Lsn, Lsn), AppendRefusal> {
        if self.fenced {
            return Err(AppendRefusal::Fenced);
        }
        if self.ladder.tracked() + records.len() > self.limits.pending_records_max {
            return Err(AppendRefusal::WindowFull);
        }
        let built = self.build(&records)?;
        let (first, last) = (built[0].lsn(), built[built.len() - 1].lsn());
        for record in built {
            self.enqueue(record);
        }
        let touched: Vec<PgId> = records.iter().map(|r| self.geometry.pg_of(r.page)).collect();
        for pg in dedup(touched) {
            self.flush_pg(pg);
        }
        Ok((first, last))
    }

    /// Builds the records with their LSNs and backlinks without changing any state.
    fn build(&self, records: &[NewRecord]) -> Result<Vec<Record>, AppendRefusal> {
        assert!(!records.is_empty(), "append needs at least one record");
        let mut last = self.last_lsn;
        let mut pg_last: HashMap<PgId, Lsn> = HashMap::new();
        let mut page_last: HashMap<PageId, Lsn> = HashMap::new();
        // After a recovery the window starts at the end of the truncation range: the first
        // LSNs allocated lie above it while VDL is still below it.
        let window_end = self.ladder.vdl().max(self.lsn_floor).0.saturating_add(self.limits.lal);
        let mut built = Vec::with_capacity(records.len());
        for new in records {
            let floor = last.max(self.lsn_floor);
            let lsn = new.lsn.unwrap_or(Lsn(floor.0 + 1));
            if lsn <= floor {
                return Err(AppendRefusal::LsnNotIncreasing { lsn, last: floor });
            }
            if lsn.0 > window_end {
                return Err(AppendRefusal::WindowFull);
            }
            let pg = self.geometry.pg_of(new.page);
            let prev_pg =
                *pg_last.entry(pg).or_insert_with(|| self.pgs.get(&pg).map_or(Lsn::ZERO, |s| s.last_lsn));
            let prev_page = match new.kind {
                RecordKind::Marker => Lsn::ZERO,
                _ => *page_last
                    .entry(new.page)
                    .or_insert_with(|| self.page_last.get(&new.page).copied().unwrap_or(Lsn::ZERO)),
            };
            let meta = RecordMeta {
                kind: new.kind,
                flags: if new.cpl { RecordFlags::CPL } else { RecordFlags::empty() },
                lsn,
                prev_volume_lsn: last,
                prev_pg_lsn: prev_pg,
                prev_page_lsn: prev_page,
                page_id: new.page,
                epoch: self.epochs.volume,
            };
            built.push(Record::new(meta, new.payload.clone()).map_err(AppendRefusal::Format)?);
            last = lsn;
            pg_last.insert(pg, lsn);
            if new.kind != RecordKind::Marker {
                page_last.insert(new.page, lsn);
            }
        }
        Ok(built)
    }

    fn enqueue(&mut self, record: Record) {
        let meta = *record.meta();
        let pg = self.geometry.pg_of(meta.page_id);
        self.ensure_pgs_through(pg);
        self.last_lsn = meta.lsn;
        if meta.kind != RecordKind::Marker {
            if self.page_last.len() >= self.limits.page_backlinks_max {
                self.page_last.clear();
            }
            self.page_last.insert(meta.page_id, meta.lsn);
        }
        self.ladder.allocate(meta.lsn, pg, meta.is_cpl());
        self.read_points.record(pg, meta.lsn);
        let state = self.pgs.get_mut(&pg).expect("ensured above");
        state.last_lsn = meta.lsn;
        state.unsent_bytes += record.encoded_len();
        state.unsent.push_back(record);
    }

    /// PGs are created in order, so recovery can find them all: opening PG `pg` opens every
    /// lower one that does not exist yet.
    fn ensure_pgs_through(&mut self, pg: PgId) {
        for id in 0..=pg.0 {
            if !self.pgs.contains_key(&PgId(id)) {
                let state = self.new_pg(PgId(id), false, Lsn::ZERO);
                self.pgs.insert(PgId(id), state);
                self.send_open(PgId(id));
            }
        }
    }

    fn new_pg(&self, pg: PgId, open: bool, newest: Lsn) -> PgState {
        PgState {
            members: Membership::stable(Epoch::INITIAL, self.cluster.place(self.geometry.volume, pg)),
            change: None,
            open,
            opening_acks: Vec::new(),
            last_lsn: newest,
            vdl_lsn: newest,
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            in_flight: BTreeMap::new(),
            durable_through: newest,
            scl: HashMap::new(),
            told_vdl: Lsn::ZERO,
            open_age_ticks: 0,
            truncate_acks: HashMap::new(),
        }
    }

    /// A new PG's segments: at the first epoch an empty batch creates them; later, the
    /// writer's epoch and truncation range open them.
    fn send_open(&mut self, pg: PgId) {
        for node in self.pgs[&pg].members.nodes() {
            self.transmit_open(pg, node);
        }
    }

    fn transmit_open(&mut self, pg: PgId, node: NodeId) {
        let pg_ref = self.geometry.pg_ref(pg);
        match self.truncation {
            None => self.push(node, self.heartbeat(pg)),
            Some(range) => {
                self.push(node, Message::EpochBump(EpochBump { pg: pg_ref, epochs: self.epochs }));
                for (volume, range) in self.earlier_truncations.clone() {
                    let epochs = Epochs { volume, ..self.epochs };
                    self.push(node, Message::Truncate(Truncate { pg: pg_ref, epochs, range }));
                }
                self.push(node, Message::Truncate(Truncate { pg: pg_ref, epochs: self.epochs, range }));
            }
        }
    }

    fn heartbeat(&self, pg: PgId) -> Message {
        let pg_vdl_lsn = self.pgs.get(&pg).map_or(Lsn::ZERO, |s| s.vdl_lsn);
        let batch = AppendBatch {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            vdl: self.ladder.vdl(),
            pg_vdl_lsn,
            page_bytes: self.geometry.page_bytes,
            records: Vec::new(),
        };
        Message::AppendBatch(batch)
    }

    fn push(&mut self, node: NodeId, message: Message) {
        if !self.down.contains(&node) {
            self.transmits.push_back(Transmit { node, message });
        }
    }

    /// Sends batches from `pg`'s queue while the batching rule allows.
    fn flush_pg(&mut self, pg: PgId) {
        loop {
            let limits = self.limits;
            let state = self.pgs.get_mut(&pg).expect("known PG");
            let full_batch_ready = state.unsent_bytes >= limits.batch_bytes_max
                || state.unsent.len() >= limits.batch_records_max;
            let may_send = state.open
                && !state.unsent.is_empty()
                && state.in_flight.len() < limits.batches_in_flight_max
                && (state.in_flight.is_empty() || full_batch_ready);
            if !may_send {
                return;
            }
            let mut records = Vec::new();
            let mut bytes = 0;
            while let Some(next) = state.unsent.front() {
                let fits = records.is_empty()
                    || (bytes + next.encoded_len() <= limits.batch_bytes_max
                        && records.len() < limits.batch_records_max);
                if !fits {
                    break;
                }
                bytes += next.encoded_len();
                records.push(state.unsent.pop_front().expect("front checked"));
            }
            state.unsent_bytes -= bytes;
            let last = records.last().expect("non-empty").lsn();
            state.in_flight.insert(last, Batch { records, acked: Vec::new(), age_ticks: 0 });
            self.send_batch(pg, last, None);
        }
    }

    /// Sends the in-flight batch ending at `last` to every member (or just `only`).
    fn send_batch(&mut self, pg: PgId, last: Lsn, only: Option<NodeId>) {
        let state = &self.pgs[&pg];
        let batch = &state.in_flight[&last];
        let message = Message::AppendBatch(AppendBatch {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            vdl: self.ladder.vdl(),
            pg_vdl_lsn: state.vdl_lsn,
            page_bytes: self.geometry.page_bytes,
            records: batch.records.clone(),
        });
        let targets: Vec<NodeId> = state
            .members
            .nodes()
            .into_iter()
            .filter(|n| only.is_none_or(|o| o == *n) && !batch.acked.contains(n))
            .collect();
        for node in targets {
            self.push(node, message.clone());
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// A reply from `node`.
    pub fn handle_reply(&mut self, node: NodeId, reply: Message) {
        match reply {
            Message::AppendAck(ack) => self.handle_ack(node, ack),
            Message::TruncateAck(ack) => self.handle_truncate_ack(node, ack),
            // A member that missed this writer's opening (it was down) reports where it
            // stands, so it is repaired even if nothing is in flight for it.
            Message::EpochAck(ack) => self.note_scl(ack.pg.pg_id, node, ack.scl),
            Message::FloorAck(ack) => {
                self.note_scl(ack.pg.pg_id, node, ack.scl);
                // An operator asked a node's admin port to have a node replaced.
                if let Some(asked) = ack.replace {
                    self.replacement_asked(asked);
                }
            }
            Message::MembershipAck(ack) => self.handle_membership_ack(node, ack),
            Message::Error(error) => self.handle_error(node, error),
            other => tracing::debug!(%node, kind = other.type_code(), "unexpected reply"),
        }
    }

    fn note_scl(&mut self, pg: PgId, node: NodeId, reported: Lsn) {
        if let Some(state) = self.pgs.get_mut(&pg) {
            let scl = state.scl.entry(node).or_insert(Lsn::ZERO);
            *scl = (*scl).max(reported);
        }
    }

    fn handle_ack(&mut self, node: NodeId, ack: AppendAck) {
        let pg = ack.pg.pg_id;
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        let scl = state.scl.entry(node).or_insert(Lsn::ZERO);
        *scl = (*scl).max(ack.scl);
        // A first writer's segment is open once it takes a batch (a recovered writer's, once it
        // acknowledged every truncation range).
        if self.truncation.is_none() && !state.opening_acks.contains(&node) {
            self.opened_by(pg, node);
        }
        if ack.last_lsn == Lsn::ZERO {
            return;
        }
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        let Some(batch) = state.in_flight.get_mut(&ack.last_lsn) else { return };
        if !batch.acked.contains(&node) {
            batch.acked.push(node);
        }
        let members = state.members;
        if self.quorum_met(&members, &self.pgs[&pg].in_flight[&ack.last_lsn].acked) {
            self.batch_durable(pg, ack.last_lsn);
        }
    }

    fn handle_truncate_ack(&mut self, node: NodeId, ack: TruncateAck) {
        let Some(own) = self.truncation else { return };
        let pg = ack.pg.pg_id;
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        let acked = state.truncate_acks.entry(node).or_default();
        if !acked.contains(&ack.range) {
            acked.push(ack.range);
        }
        let all = std::iter::once(own).chain(self.earlier_truncations.iter().map(|(_, r)| *r));
        let all_acked = all.into_iter().all(|range| acked.contains(&range));
        if all_acked {
            self.opened_by(pg, node);
        }
    }

    fn opened_by(&mut self, pg: PgId, node: NodeId) {
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        if !state.opening_acks.contains(&node) {
            state.opening_acks.push(node);
        }
        if !state.open && state.members.write_quorum_met(&state.opening_acks) {
            state.open = true;
            self.flush_pg(pg);
        }
    }

    /// A batch reached a write quorum: its records are durable; move the ladder.
    fn batch_durable(&mut self, pg: PgId, last: Lsn) {
        let state = self.pgs.get_mut(&pg).expect("known PG");
        let batch = state.in_flight.remove(&last).expect("in flight");
        // Batches may become durable out of order: everything before the oldest batch still in
        // flight is durable.
        let through = match state.in_flight.values().next() {
            Some(oldest) => oldest.records[0].meta().prev_pg_lsn,
            None => last,
        };
        state.durable_through = state.durable_through.max(through);
        let lsns: Vec<Lsn> = batch.records.iter().map(Record::lsn).collect();
        let covered = self.ladder.mark_durable(lsns.into_iter());
        for (covered_pg, newest) in covered {
            if let Some(s) = self.pgs.get_mut(&covered_pg) {
                s.vdl_lsn = s.vdl_lsn.max(newest);
            }
        }
        self.flush_pg(pg);
    }

    fn handle_error(&mut self, node: NodeId, error: ErrorReply) {
        let pg = error.pg.pg_id;
        match error.code {
            // Only a newer volume epoch fences this writer; a segment retired by a membership
            // change refuses too, and is simply no longer written.
            ErrorCode::StaleEpoch if error.epochs.volume > self.epochs.volume => {
                let members = self.membership(pg);
                let stale = self.stale.entry(pg).or_default();
                if !stale.contains(&node) {
                    stale.push(node);
                }
                if members.fenced_by(stale) {
                    self.fenced = true;
                }
            }
            ErrorCode::EpochNotOpen if self.pgs.get(&pg).is_some_and(|s| s.members.contains(node)) => {
                // The node missed this writer's recovery: open its segment, then resend.
                self.transmit_open(pg, node);
                self.resend_to(pg, node);
            }
            code => tracing::debug!(%node, ?code, message = %error.message, "append refused"),
        }
    }

    /// `node` is unreachable: stop sending to it (its PGs still reach quorum without it).
    pub fn handle_node_down(&mut self, node: NodeId) {
        if !self.down.contains(&node) {
            self.down.push(node);
            self.down_since.insert(node, self.ticks);
        }
        self.transmits.retain(|t| t.node != node);
    }

    /// `node` is reachable again: resend what it has not acknowledged.
    pub fn handle_node_up(&mut self, node: NodeId) {
        self.down.retain(|n| *n != node);
        self.down_since.remove(&node);
        self.tell_returned(node);
        let pgs: Vec<PgId> =
            self.pgs.iter().filter(|(_, s)| s.members.contains(node)).map(|(pg, _)| *pg).collect();
        for pg in pgs {
            if !self.pgs[&pg].open || self.truncation.is_some() {
                self.transmit_open(pg, node);
            }
            self.resend_to(pg, node);
        }
    }

    fn resend_to(&mut self, pg: PgId, node: NodeId) {
        let lasts: Vec<Lsn> = self.pgs[&pg].in_flight.keys().copied().collect();
        for last in lasts {
            self.send_batch(pg, last, Some(node));
        }
    }

    /// Periodic work: resends what has waited too long for a quorum, tells idle PGs the VDL,
    /// decides repairs.
    pub fn handle_tick(&mut self) {
        self.ticks += 1;
        self.resend_overdue();
        self.tick_changes();
        self.plan_repairs();
        let vdl = self.ladder.vdl();
        if self.read_points.tick(vdl) {
            self.report_floor();
        }
        let idle: Vec<PgId> = self
            .pgs
            .iter()
            .filter(|(_, s)| s.open && s.in_flight.is_empty() && s.unsent.is_empty() && s.told_vdl < vdl)
            .map(|(pg, _)| *pg)
            .collect();
        for pg in idle {
            let heartbeat = self.heartbeat(pg);
            for node in self.pgs[&pg].members.nodes() {
                self.push(node, heartbeat.clone());
            }
            self.pgs.get_mut(&pg).expect("known").told_vdl = vdl;
        }
    }

    fn resend_overdue(&mut self) {
        let after = self.limits.resend_after_ticks;
        let mut overdue_batches = Vec::new();
        let mut overdue_opens = Vec::new();
        for (pg, state) in &mut self.pgs {
            for (last, batch) in &mut state.in_flight {
                batch.age_ticks += 1;
                if batch.age_ticks >= after {
                    batch.age_ticks = 0;
                    overdue_batches.push((*pg, *last));
                }
            }
            if !state.open {
                overdue_opens.push(*pg);
            } else if state.opening_acks.len() < state.members.nodes().len() {
                // A member that missed the opening (down, or its reply lost) would otherwise
                // hear of it only from a batch it refuses, and an idle PG sends none.
                state.open_age_ticks += 1;
                if state.open_age_ticks >= after {
                    state.open_age_ticks = 0;
                    overdue_opens.push(*pg);
                }
            }
        }
        for (pg, last) in overdue_batches {
            self.send_batch(pg, last, None);
        }
        for pg in overdue_opens {
            let waiting: Vec<NodeId> = self.pgs[&pg]
                .members
                .nodes()
                .into_iter()
                .filter(|n| !self.pgs[&pg].opening_acks.contains(n))
                .collect();
            for node in waiting {
                self.transmit_open(pg, node);
            }
        }
    }

    /// The members of `pg` ordered for a read at or below VDL: those known complete through the
    /// PG's VDL LSN first (highest SCL first), unreachable ones left out.
    pub fn read_candidates(&self, pg: PgId) -> Vec<NodeId> {
        self.read_candidates_for(pg, self.pg_vdl_lsn(pg))
    }

    /// Where a read of `pg` at `at` (at most VDL) goes: the PG's newest LSN at or below `at`
    /// (what a segment must be complete through) and the members ordered as for
    /// `read_candidates`.
    pub fn read_route(&self, pg: PgId, at: Lsn) -> Result<(Lsn, Vec<NodeId>), ReadPointRefusal> {
        let need = self.read_points.pg_newest_at(pg, at)?;
        Ok((need, self.read_candidates_for(pg, need)))
    }

    /// Keeps versions from `lsn` on readable (or, with `None`, lets the floor follow VDL).
    pub fn pin_floor(&mut self, lsn: Option<Lsn>) -> Result<(), ReadPointRefusal> {
        self.read_points.pin(lsn)
    }

    /// The oldest read point this writer may use.
    pub fn floor(&self) -> Lsn {
        self.read_points.floor()
    }

    /// Tells every member of every open PG this writer's floor. The writer's client id is its
    /// volume epoch: unique among writers, and the same across the writer's reports.
    fn report_floor(&mut self) {
        let floor = self.read_points.floor();
        let open: Vec<(PgId, Vec<NodeId>)> =
            self.pgs.iter().filter(|(_, s)| s.open).map(|(pg, s)| (*pg, s.members.nodes())).collect();
        for (pg, members) in open {
            let report = Message::FloorReport(FloorReport {
                pg: self.geometry.pg_ref(pg),
                client: self.epochs.volume.0,
                floor,
                lease_ms: FLOOR_LEASE_MS,
            });
            for node in members {
                self.push(node, report.clone());
            }
        }
    }

    fn read_candidates_for(&self, pg: PgId, need: Lsn) -> Vec<NodeId> {
        let mut candidates: Vec<(bool, Lsn, NodeId)> = self
            .members(pg)
            .iter()
            .filter(|n| !self.down.contains(n))
            .map(|n| {
                let scl = self.known_scl(pg, *n).unwrap_or(Lsn::ZERO);
                (scl >= need, scl, *n)
            })
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        candidates.into_iter().map(|(_, _, n)| n).collect()
    }

    /// For repair: members of `pg` whose known SCL is behind what is durable, with that SCL.
    pub fn lagging_members(&self, pg: PgId) -> Vec<(NodeId, Lsn)> {
        let Some(state) = self.pgs.get(&pg) else { return Vec::new() };
        let target = state.durable_through;
        // A joining segment is rebuilt by hydration, not by replaying the log to it.
        let joining = state.change.as_ref().map(|c| c.joining);
        state
            .members
            .nodes()
            .iter()
            .filter(|n| !self.down.contains(n) && Some(**n) != joining)
            .filter_map(|n| state.scl.get(n).map(|scl| (*n, *scl)))
            .filter(|(_, scl)| *scl < target)
            .collect()
    }

    /// Starts a repair of each segment that stayed behind what is durable since the last
    /// tick, from a member known complete through that point (`core::repair`).
    fn plan_repairs(&mut self) {
        for pg in self.pgs() {
            let target = self.pg_durable_through(pg);
            for (node, scl) in self.lagging_members(pg) {
                if !self.repairs.lagging(pg, node, scl) {
                    continue;
                }
                let complete = |n: &NodeId| *n != node && self.known_scl(pg, *n).is_some_and(|s| s >= target);
                let Some(source) = self.read_candidates(pg).into_iter().find(complete) else { continue };
                self.repairs.start(RepairJob {
                    pg: self.geometry.pg_ref(pg),
                    node,
                    source,
                    from: scl,
                    target,
                    epochs: self.epochs,
                    vdl: self.vdl(),
                    page_bytes: self.geometry.page_bytes,
                });
            }
        }
    }

    /// The next repair to carry out.
    pub fn poll_repair(&mut self) -> Option<RepairJob> {
        self.repairs.poll()
    }

    /// The repair of `node`'s segment of `pg` ended; a later tick decides again if it is
    /// still behind.
    pub fn handle_repair_done(&mut self, pg: PgId, node: NodeId) {
        self.repairs.done(pg, node);
    }

    /// The epoch this writer writes at.
    pub fn volume_epoch(&self) -> Epoch {
        self.epochs.volume
    }
}

fn dedup(mut pgs: Vec<PgId>) -> Vec<PgId> {
    pgs.sort();
    pgs.dedup();
    pgs
}
