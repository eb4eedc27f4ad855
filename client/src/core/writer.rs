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
use protocol::messages::{ErrorCode, ERROR_COUNTERS};
use protocol::placement::ClusterMap;
use protocol::quorum::Membership;
use protocol::{Epoch, Epochs, Lsn, LsnRange, Message, NodeId, PageId, PgId, Record, RecordKind};

use super::floor::ReadPoints;
use super::geometry::VolumeGeometry;
use super::ladder::Ladder;
use super::repair::Repairs;

mod append;
mod batching;
mod events;
mod membership;
mod opening;
mod reads;
mod repairs;
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
    /// Enough nodes refused this writer's certificate the volume (its `write` was revoked)
    /// that no write quorum can form.
    #[error("unauthorized: the volume's ACL no longer gives this writer write")]
    Unauthorized,
    #[error("the volume was deleted")]
    VolumeDeleted,
    #[error("engine LSN {lsn} is not above the last LSN {last}")]
    LsnNotIncreasing { lsn: Lsn, last: Lsn },
    #[error("record rejected: {0}")]
    Format(protocol::FormatError),
}

/// Whether a node's refusal with `code` is final for this client on the volume: its
/// certificate may not (`Unauthorized`), or the volume is gone (`VolumeDeleted`).
pub(crate) fn refuses_for_good(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Unauthorized | ErrorCode::VolumeDeleted)
}

impl AppendRefusal {
    /// The refusal of a writer the nodes refused for good with `code` (`refuses_for_good`).
    pub(crate) fn refused(code: ErrorCode) -> AppendRefusal {
        match code {
            ErrorCode::VolumeDeleted => AppendRefusal::VolumeDeleted,
            _ => AppendRefusal::Unauthorized,
        }
    }
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
    /// Per PG, the nodes that refused this writer `Unauthorized`.
    refused: HashMap<PgId, Vec<NodeId>>,
    /// Enough nodes of a PG refused (`Unauthorized` or `VolumeDeleted`, the code of the last
    /// refusal) that no write quorum can form: nothing more becomes durable.
    refused_by: Option<ErrorCode>,
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
    /// The nodes' refusals of this writer's requests, by code.
    refusals: Refusals,
}

/// How many of a writer's requests the nodes refused, by error code
/// (`ErrorCode::counter_index`): a writer's errors by kind, for an engine's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals([u64; ERROR_COUNTERS]);

impl Refusals {
    pub fn count(&mut self, code: ErrorCode) {
        self.0[code.counter_index()] += 1;
    }
    /// Every kind (`ErrorCode::name`) with its count, zeros included.
    pub fn by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().enumerate().map(|(index, count)| (ErrorCode::counter_name(index), *count))
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
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
            refused: HashMap::new(),
            refused_by: None,
            transmits: VecDeque::new(),
            read_points: ReadPoints::new(start.vdl, start.pgs.iter().copied()),
            repairs: Repairs::default(),
            ticks: 0,
            down_since: BTreeMap::new(),
            retired: Vec::new(),
            held_retired: start.retired.iter().copied().collect(),
            no_spare: Vec::new(),
            untold: Vec::new(),
            refusals: Refusals::default(),
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
    /// The nodes' refusals so far, by code.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }
    /// Why enough nodes refused this writer that it can write no more (`Unauthorized`: its
    /// certificate lost `write`; `VolumeDeleted`), if they did.
    pub fn refused_by(&self) -> Option<ErrorCode> {
        self.refused_by
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

    fn push(&mut self, node: NodeId, message: Message) {
        if !self.down.contains(&node) {
            self.transmits.push_back(Transmit { node, message });
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The epoch this writer writes at.
    pub fn volume_epoch(&self) -> Epoch {
        self.epochs.volume
    }
}
