//! `Takeover`: writer recovery (DESIGN §3) as a sans-IO state machine, so the same protocol runs
//! over QUIC (`driver::recovery`) and in the simulator.
//!
//! Calling contract: `poll_request` yields (node, request) pairs to send; feed every answer to
//! `handle_reply`, and `handle_failure` for a request that will get none (its node is
//! unreachable: the round then stops waiting for it); when the driver's per-round timer
//! expires, call `handle_timeout` (missing answers then count as failures). `outcome` is
//! `Some` once done.
//!
//! Rounds, each waiting for every answer or the timeout:
//! 1. survey: every node's segments → the volume's PGs and newest epochs;
//! 2. bump: the new volume epoch on every member of every PG; a read quorum per PG fences the
//!    old writer;
//! 3. gather: the responders' records above the complete point (paged); then, for a PG whose
//!    newest record at or below VDL they do not show, its records in the plan's probe range;
//! 4. truncate: the plan's range at a write quorum of every PG;
//! 5. refill: the kept records above the complete point at a write quorum again.
//!
//! Decisions are `core::recovery::plan`'s.

use std::collections::{BTreeMap, VecDeque};

use protocol::messages::{
    AppendBatch, EpochBump, ReadRecords, Records, SegmentState, Truncate, BATCH_RECORDS_MAX,
};
use protocol::placement::ClusterMap;
use protocol::quorum::{Membership, READ_QUORUM, WRITE_QUORUM};
use protocol::{Epoch, Epochs, Lsn, LsnRange, Message, NodeId, PgId, Record};

use super::recovery::{fetch_after, plan, PgEvidence, RecoveryPlan};
use super::writer::WriterStart;
use super::VolumeGeometry;

/// Record bytes asked for per read while gathering.
const GATHER_READ_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// Records per re-replication batch.
const REFILL_BATCH_RECORDS: usize = 256;
const _: () = assert!(REFILL_BATCH_RECORDS <= BATCH_RECORDS_MAX);

/// Why a takeover failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TakeoverError {
    #[error("PG {pg}: only {answered} of its segments answered; recovery needs {needed}")]
    Unavailable { pg: PgId, answered: usize, needed: usize },
    #[error("recovery: {0}")]
    Inconsistent(super::recovery::RecoveryError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    Survey,
    Bump,
    Gather,
    Probe,
    Truncate,
    Refill,
}

/// What an answer is an answer to: (kind, node, PG, last LSN for a batch).
type Waiting = (Ask, NodeId, PgId, Lsn);

/// See the module docs.
#[derive(Debug)]
pub struct Takeover {
    geometry: VolumeGeometry,
    cluster: ClusterMap,
    lal: u64,
    round: Round,
    outbox: VecDeque<(NodeId, Message)>,
    waiting: Vec<Waiting>,
    answered: Vec<NodeId>,
    pg_count: u32,
    /// PGs below this have been sent the new epoch.
    bumped_through: u32,
    seen: Option<Epochs>,
    epochs: Epochs,
    evidence: BTreeMap<PgId, PgEvidence>,
    responders: BTreeMap<PgId, Vec<NodeId>>,
    /// Responders whose records were read completely (their last page said no more).
    gathered: BTreeMap<PgId, Vec<NodeId>>,
    /// PGs being probed, with their range, and the responders that answered the probe.
    probing: BTreeMap<PgId, LsnRange>,
    probed: BTreeMap<PgId, Vec<NodeId>>,
    plan: Option<RecoveryPlan>,
    /// Positive answers per (PG, batch last LSN or zero for a truncate).
    acks: BTreeMap<(PgId, Lsn), Vec<NodeId>>,
    /// Per PG, the newest stored membership any node reported (none: its placement).
    memberships: BTreeMap<PgId, Membership>,
    /// (PG, node) pairs whose node reported a retired segment of the PG.
    retired: Vec<(PgId, NodeId)>,
    outcome: Option<Result<WriterStart, TakeoverError>>,
}

impl Takeover {
    /// Starts with the survey round.
    pub fn new(geometry: VolumeGeometry, cluster: ClusterMap, lal: u64) -> Takeover {
        let mut takeover = Takeover {
            geometry,
            cluster,
            lal,
            round: Round::Survey,
            outbox: VecDeque::new(),
            waiting: Vec::new(),
            answered: Vec::new(),
            pg_count: 0,
            bumped_through: 0,
            seen: None,
            epochs: Epochs::INITIAL,
            evidence: BTreeMap::new(),
            responders: BTreeMap::new(),
            gathered: BTreeMap::new(),
            probing: BTreeMap::new(),
            probed: BTreeMap::new(),
            plan: None,
            acks: BTreeMap::new(),
            memberships: BTreeMap::new(),
            retired: Vec::new(),
            outcome: None,
        };
        let nodes: Vec<NodeId> = takeover.cluster.nodes().iter().map(|n| n.id).collect();
        for node in nodes {
            takeover.request(node, PgId(0), Message::StatusRequest);
        }
        takeover
    }

    pub fn poll_request(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    /// True if requests wait to be sent.
    pub fn has_requests(&self) -> bool {
        !self.outbox.is_empty()
    }

    pub fn outcome(&self) -> Option<&Result<WriterStart, TakeoverError>> {
        self.outcome.as_ref()
    }

    /// The plan, once decided (for logs and checkers).
    pub fn plan(&self) -> Option<&RecoveryPlan> {
        self.plan.as_ref()
    }

    /// The epochs the new writer writes at.
    pub fn epochs(&self) -> Epochs {
        self.epochs
    }

    /// True while answers of the current round are outstanding.
    pub fn is_waiting(&self) -> bool {
        self.outcome.is_none() && !self.waiting.is_empty()
    }

    pub fn handle_reply(&mut self, node: NodeId, reply: Message) {
        if self.outcome.is_some() {
            return;
        }
        let Some(key) = self.answer_key(node, &reply) else { return };
        let Some(at) = self.waiting.iter().position(|w| *w == key) else { return };
        self.waiting.swap_remove(at);
        self.absorb(node, reply);
        if self.waiting.is_empty() {
            self.finish_round();
        }
    }

    /// `request`, sent to `node`, will not be answered (the node is unreachable): it counts as
    /// failed now, so the round does not wait for it.
    pub fn handle_failure(&mut self, node: NodeId, request: &Message) {
        if self.outcome.is_some() {
            return;
        }
        let key = request_key(node, request);
        let Some(at) = self.waiting.iter().position(|w| *w == key) else { return };
        self.waiting.swap_remove(at);
        if self.waiting.is_empty() {
            self.finish_round();
        }
    }

    /// True while `request`, sent to `node`, still awaits its answer (a driver resends it on a
    /// new connection, or fails it, only then).
    pub fn is_waiting_for(&self, node: NodeId, request: &Message) -> bool {
        self.outcome.is_none() && self.waiting.contains(&request_key(node, request))
    }

    /// The round's timer expired: what has not answered counts as failed.
    pub fn handle_timeout(&mut self) {
        if self.outcome.is_none() {
            self.waiting.clear();
            self.finish_round();
        }
    }

    fn request(&mut self, node: NodeId, pg: PgId, message: Message) {
        let key = request_key(node, &message);
        assert_eq!(key.2, pg, "a request names the PG it is for");
        self.waiting.push(key);
        self.outbox.push_back((node, message));
    }

    /// Which request `reply` answers.
    fn answer_key(&self, node: NodeId, reply: &Message) -> Option<Waiting> {
        let (asked, pg, last) = match reply {
            Message::Status(_) => (Ask::Status, PgId(0), Lsn::ZERO),
            Message::EpochAck(a) => (Ask::Bump, a.pg.pg_id, Lsn::ZERO),
            Message::Records(r) => (Ask::Read, r.pg.pg_id, Lsn::ZERO),
            Message::TruncateAck(t) => (Ask::Truncate, t.pg.pg_id, Lsn::ZERO),
            Message::AppendAck(a) => (Ask::Batch, a.pg.pg_id, a.last_lsn),
            Message::Error(e) => {
                let pg = e.pg.pg_id;
                return self.waiting.iter().copied().find(|(_, n, p, _)| *n == node && *p == pg);
            }
            _ => return None,
        };
        Some((asked, node, pg, last))
    }

    fn absorb(&mut self, node: NodeId, reply: Message) {
        match (self.round, reply) {
            (Round::Survey, Message::Status(status)) => {
                self.answered.push(node);
                for segment in status.segments.iter().filter(|s| s.pg.volume_id == self.geometry.volume) {
                    self.pg_count = self.pg_count.max(segment.pg.pg_id.0 + 1);
                    let e = self.seen.get_or_insert(segment.epochs);
                    e.volume = e.volume.max(segment.epochs.volume);
                    e.membership = e.membership.max(segment.epochs.membership);
                    e.geometry = e.geometry.max(segment.epochs.geometry);
                    if segment.state == SegmentState::Retired
                        && !self.retired.contains(&(segment.pg.pg_id, node))
                    {
                        self.retired.push((segment.pg.pg_id, node));
                    }
                    if let Some(found) = segment.membership {
                        let known = self.memberships.entry(segment.pg.pg_id).or_insert(found);
                        if found.epoch() > known.epoch() {
                            *known = found;
                        }
                    }
                }
            }
            (Round::Bump, Message::EpochAck(ack)) => {
                let pg = ack.pg.pg_id;
                self.responders.entry(pg).or_default().push(node);
                let e = self.evidence.entry(pg).or_default();
                e.highest.push(ack.highest_lsn);
                e.vdl_hints.push(ack.vdl_hint);
                e.scls.push(ack.scl);
                e.truncations.extend(ack.truncations);
            }
            (Round::Gather | Round::Probe, Message::Records(Records { pg, records, more, .. })) => {
                let next = records.last().map(Record::lsn);
                let probe = self.probing.get(&pg.pg_id).copied();
                self.evidence.entry(pg.pg_id).or_default().records.extend(records);
                match (more, next, probe) {
                    (true, Some(from), None) => self.read(node, pg.pg_id, from),
                    (true, Some(from), Some(range)) => self.read_range(node, pg.pg_id, from, range.through()),
                    (_, _, None) => self.gathered.entry(pg.pg_id).or_default().push(node),
                    (_, _, Some(_)) => self.probed.entry(pg.pg_id).or_default().push(node),
                }
            }
            (Round::Truncate, Message::TruncateAck(ack)) => {
                self.acks.entry((ack.pg.pg_id, Lsn::ZERO)).or_default().push(node)
            }
            (Round::Refill, Message::AppendAck(ack)) => {
                self.acks.entry((ack.pg.pg_id, ack.last_lsn)).or_default().push(node)
            }
            _ => {}
        }
    }

    fn finish_round(&mut self) {
        let next = match self.round {
            Round::Survey => self.after_survey(),
            Round::Bump => self.after_bump(),
            Round::Gather => self.after_gather(),
            Round::Probe => self.after_probe(),
            Round::Truncate => self.after_truncate(),
            Round::Refill => self.after_refill(),
        };
        if let Err(error) = next {
            self.outcome = Some(Err(error));
        }
    }

    /// After the first survey, bump every PG found. The old writer may have created a PG
    /// while the bumps were on their way, so after each bump round the survey runs again, and
    /// newly found PGs are bumped too, until a survey finds nothing new. (Once a node holds
    /// the new epoch for any segment of the volume it refuses to create another one for an
    /// older writer.)
    fn after_survey(&mut self) -> Result<(), TakeoverError> {
        // A volume nobody has written still gets a new epoch, on PG 0: a writer that created it
        // a moment ago is fenced like any other.
        let seen = match self.seen {
            Some(seen) => seen,
            None => {
                self.pg_count = self.pg_count.max(1);
                Epochs::INITIAL
            }
        };
        // PGs are created in order: the one after the last seen must be absent at a read quorum.
        self.require(PgId(self.pg_count), &self.answered.clone(), READ_QUORUM)?;
        if self.bumped_through == 0 {
            // The membership epoch stays: a takeover that never finishes must not leave nodes
            // refusing the live writer's reads. The new writer raises it once it runs
            // (`WriterCore::new`).
            self.epochs = Epochs { volume: seen.volume.next(), ..seen };
        } else if self.bumped_through == self.pg_count {
            return self.start_gather();
        }
        self.round = Round::Bump;
        let first_new = self.bumped_through;
        self.bumped_through = self.pg_count;
        for pg in (first_new..self.pg_count).map(PgId) {
            let bump = Message::EpochBump(EpochBump { pg: self.geometry.pg_ref(pg), epochs: self.epochs });
            for node in self.members(pg) {
                self.request(node, pg, bump.clone());
            }
        }
        Ok(())
    }

    fn after_bump(&mut self) -> Result<(), TakeoverError> {
        for pg in (0..self.pg_count).map(PgId) {
            // The old writer may have been counting under either set of a change: it is
            // fenced only once a fence quorum of every set holds the new epoch.
            let responders = self.responders.get(&pg).cloned().unwrap_or_default();
            self.require(pg, &responders, READ_QUORUM)?;
        }
        self.answered.clear();
        self.round = Round::Survey;
        let nodes: Vec<NodeId> = self.cluster.nodes().iter().map(|n| n.id).collect();
        for node in nodes {
            self.request(node, PgId(0), Message::StatusRequest);
        }
        Ok(())
    }

    fn start_gather(&mut self) -> Result<(), TakeoverError> {
        let after = fetch_after(&self.evidence, self.lal);
        self.round = Round::Gather;
        for (pg, nodes) in self.responders.clone() {
            for node in nodes {
                self.read(node, pg, after);
            }
        }
        if self.waiting.is_empty() {
            return self.after_gather();
        }
        Ok(())
    }

    fn read(&mut self, node: NodeId, pg: PgId, after: Lsn) {
        self.read_range(node, pg, after, Lsn::MAX);
    }

    fn read_range(&mut self, node: NodeId, pg: PgId, after: Lsn, through: Lsn) {
        let Ok(range) = LsnRange::new(after, through) else { return };
        let read = ReadRecords {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            range,
            bytes_max: GATHER_READ_BYTES_MAX,
        };
        self.request(node, pg, Message::ReadRecords(read));
    }

    fn after_gather(&mut self) -> Result<(), TakeoverError> {
        // Every durable record is on at least one of any three segments: only a complete read
        // of a read quorum may decide what the volume holds.
        for pg in (0..self.pg_count).map(PgId) {
            let gathered = self.gathered.get(&pg).cloned().unwrap_or_default();
            self.require(pg, &gathered, READ_QUORUM)?;
        }
        let plan = plan(&self.evidence, self.lal).map_err(TakeoverError::Inconsistent)?;
        if !plan.probe.is_empty() {
            return self.start_probe(&plan.probe);
        }
        self.round = Round::Truncate;
        for pg in (0..self.pg_count).map(PgId) {
            let truncate = Message::Truncate(Truncate {
                pg: self.geometry.pg_ref(pg),
                epochs: self.epochs,
                range: plan.truncation,
            });
            for node in self.members(pg) {
                self.request(node, pg, truncate.clone());
            }
        }
        self.plan = Some(plan);
        Ok(())
    }

    /// Reads every responder's records of each PG in its probe range.
    fn start_probe(&mut self, probe: &[(PgId, LsnRange)]) -> Result<(), TakeoverError> {
        self.round = Round::Probe;
        for (pg, range) in probe {
            self.probing.insert(*pg, *range);
            self.evidence.entry(*pg).or_default().probed = true;
            for node in self.gathered.get(pg).cloned().unwrap_or_default() {
                self.read_range(node, *pg, range.after(), range.through());
            }
        }
        if self.waiting.is_empty() {
            return self.after_probe();
        }
        Ok(())
    }

    /// The probed ranges were read as completely as the gather: plan again.
    fn after_probe(&mut self) -> Result<(), TakeoverError> {
        for pg in self.probing.keys().copied().collect::<Vec<_>>() {
            let probed = self.probed.get(&pg).cloned().unwrap_or_default();
            self.require(pg, &probed, READ_QUORUM)?;
        }
        self.after_gather()
    }

    fn after_truncate(&mut self) -> Result<(), TakeoverError> {
        for pg in (0..self.pg_count).map(PgId) {
            let acked = self.acks.get(&(pg, Lsn::ZERO)).cloned().unwrap_or_default();
            self.require(pg, &acked, WRITE_QUORUM)?;
        }
        let plan = self.plan.clone().expect("planned before truncating");
        self.round = Round::Refill;
        for (pg, records) in &plan.refill {
            for chunk in records.chunks(REFILL_BATCH_RECORDS) {
                // The refill is what makes the plan's VDL durable, so it must not tell a node
                // that VDL yet: a later recovery would take every record below it as durable.
                let batch = AppendBatch {
                    pg: self.geometry.pg_ref(*pg),
                    epochs: self.epochs,
                    vdl: Lsn::ZERO,
                    pg_vdl_lsn: Lsn::ZERO,
                    page_bytes: self.geometry.page_bytes,
                    records: chunk.to_vec(),
                };
                for node in self.members(*pg) {
                    self.request(node, *pg, Message::AppendBatch(batch.clone()));
                }
            }
        }
        if self.waiting.is_empty() {
            return self.after_refill();
        }
        Ok(())
    }

    fn after_refill(&mut self) -> Result<(), TakeoverError> {
        let plan = self.plan.clone().expect("planned before refilling");
        for (pg, records) in &plan.refill {
            for chunk in records.chunks(REFILL_BATCH_RECORDS) {
                let last = chunk.last().map_or(Lsn::ZERO, Record::lsn);
                let acked = self.acks.get(&(*pg, last)).cloned().unwrap_or_default();
                self.require(*pg, &acked, WRITE_QUORUM)?;
            }
        }
        self.outcome = Some(Ok(WriterStart {
            epochs: self.epochs,
            vdl: plan.vdl,
            next_lsn: plan.next_lsn,
            truncation: Some(plan.truncation),
            earlier_truncations: plan.earlier_truncations,
            pgs: plan.pg_newest,
            memberships: self.memberships.iter().map(|(pg, m)| (*pg, *m)).collect(),
            retired: self.retired.clone(),
        }));
        Ok(())
    }

    /// The PG's quorum sets: the newest stored membership found, else its placement.
    fn membership(&self, pg: PgId) -> Membership {
        self.memberships.get(&pg).copied().unwrap_or_else(|| {
            Membership::stable(Epoch::INITIAL, self.cluster.place(self.geometry.volume, pg))
        })
    }

    fn members(&self, pg: PgId) -> Vec<NodeId> {
        self.membership(pg).nodes()
    }

    /// `needed` (a read or a write quorum) distinct members of *every* set of the PG's
    /// membership in `answered`: during a change a read of one set could miss what the old
    /// writer wrote under the next step.
    fn require(&self, pg: PgId, answered: &[NodeId], needed: usize) -> Result<(), TakeoverError> {
        let membership = self.membership(pg);
        let count = membership.sets().map(|set| set.count_in(answered)).min().expect("one set at least");
        if count < needed {
            return Err(TakeoverError::Unavailable { pg, answered: count, needed });
        }
        Ok(())
    }
}

/// The kinds of request a takeover makes, to match answers to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Status,
    Bump,
    Read,
    Truncate,
    Batch,
}

/// What an answer to `request` from `node` will be matched against.
fn request_key(node: NodeId, request: &Message) -> Waiting {
    let (pg, last) = match request {
        Message::StatusRequest => (PgId(0), Lsn::ZERO),
        Message::EpochBump(b) => (b.pg.pg_id, Lsn::ZERO),
        Message::ReadRecords(r) => (r.pg.pg_id, Lsn::ZERO),
        Message::Truncate(t) => (t.pg.pg_id, Lsn::ZERO),
        Message::AppendBatch(b) => (b.pg.pg_id, b.records.last().map_or(Lsn::ZERO, Record::lsn)),
        other => unreachable!("a takeover never sends {other:?}"),
    };
    (kind(request), node, pg, last)
}

fn kind(request: &Message) -> Ask {
    match request {
        Message::StatusRequest => Ask::Status,
        Message::EpochBump(_) => Ask::Bump,
        Message::ReadRecords(_) => Ask::Read,
        Message::Truncate(_) => Ask::Truncate,
        Message::AppendBatch(_) => Ask::Batch,
        other => unreachable!("a takeover never sends {other:?}"),
    }
}
