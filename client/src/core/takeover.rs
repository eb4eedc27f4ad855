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
//! 3. gather: the headers (no payloads) of the responders' records above the complete point,
//!    each responder's range split in up to `GATHER_READS_PER_SEGMENT` parts read at once and
//!    paged; then, for a PG whose newest record at or below VDL they do not show, its headers in
//!    the plan's probe range;
//! 4. truncate: the plan's range at a write quorum of every PG;
//! 5. refill: each kept record above the complete point that a write quorum does not hold yet
//!    is read from a responder holding it and sent to the members lacking it, streamed
//!    (`refill::Refill`, bounded reads and batches in flight); the round ends once every such
//!    record is on a write quorum or cannot be.
//!
//! Decisions are `core::recovery::plan`'s and `core::recovery::fetches`'s: what moves grows with
//! what a write quorum lacks, not with the window.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::messages::{
    EpochBump, ReadRecordHeaders, RecordHeaders, SegmentState, Truncate, BATCH_RECORDS_MAX,
};
use protocol::placement::ClusterMap;
use protocol::quorum::{Membership, READ_QUORUM, WRITE_QUORUM};
use protocol::{Epoch, Epochs, Lsn, LsnRange, Message, NodeId, PgId, Record};

use super::recovery::{fetch_after, fetches, plan, PgEvidence, RecoveryPlan};
use super::writer::WriterStart;
use super::VolumeGeometry;

mod refill;

/// Record bytes a node reads (payloads included) per header answer while gathering.
const GATHER_READ_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Header reads in flight per responder and PG while gathering: its range is split in up to
/// this many parts, each paged on its own.
const GATHER_READS_PER_SEGMENT: u64 = 4;
/// A part of a gather range spans at least this many LSNs (small ranges are read whole).
const GATHER_PART_LSNS_MIN: u64 = BATCH_RECORDS_MAX as u64;

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

/// What an answer is an answer to: (kind, node, PG, last LSN for a batch or end of the range
/// for a header read).
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
    /// Each responder's highest LSN per PG (from its epoch ack), to split its gather range.
    highest: BTreeMap<(PgId, NodeId), Lsn>,
    /// Header reads (parts) not yet read to their end, per PG and responder of this round.
    parts_left: BTreeMap<(PgId, NodeId), u64>,
    /// PG and responder pairs of this round one of whose reads failed.
    parts_failed: BTreeSet<(PgId, NodeId)>,
    /// Responders whose records were read completely (their last page said no more).
    gathered: BTreeMap<PgId, Vec<NodeId>>,
    /// PGs being probed, with their range, and the responders that answered the probe.
    probing: BTreeMap<PgId, LsnRange>,
    probed: BTreeMap<PgId, Vec<NodeId>>,
    plan: Option<RecoveryPlan>,
    /// Nodes that stored the truncation, per PG.
    truncated: BTreeMap<PgId, Vec<NodeId>>,
    refill: Option<refill::Refill>,
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
            highest: BTreeMap::new(),
            parts_left: BTreeMap::new(),
            parts_failed: BTreeSet::new(),
            gathered: BTreeMap::new(),
            probing: BTreeMap::new(),
            probed: BTreeMap::new(),
            plan: None,
            truncated: BTreeMap::new(),
            refill: None,
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
        self.absorb(node, key, reply);
        self.pump_refill();
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
        self.failed(key);
        self.pump_refill();
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
            Message::RecordHeaders(h) => (Ask::Headers, h.pg.pg_id, h.range.through()),
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

    fn absorb(&mut self, node: NodeId, key: Waiting, reply: Message) {
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
                self.highest.insert((pg, node), ack.highest_lsn);
                let e = self.evidence.entry(pg).or_default();
                e.highest.push(ack.highest_lsn);
                e.vdl_hints.push(ack.vdl_hint);
                e.scls.push(ack.scl);
                e.truncations.extend(ack.truncations);
            }
            (Round::Gather | Round::Probe, Message::RecordHeaders(headers)) => {
                self.absorb_headers(node, headers)
            }
            (Round::Gather | Round::Probe | Round::Refill, Message::Error(refusal)) => {
                // A refusal names no request: every read (or batch) of that node for that PG
                // counts as failed.
                let pg = refusal.pg.pg_id;
                let mine = |w: &Waiting| w.1 == node && w.2 == pg && w.0 != Ask::Status;
                let others: Vec<Waiting> = self.waiting.iter().copied().filter(mine).collect();
                self.waiting.retain(|w| !mine(w));
                match self.refill.as_mut() {
                    Some(refill) => refill.refused(node, pg),
                    None => {
                        self.failed(key);
                        others.into_iter().for_each(|w| self.failed(w));
                    }
                }
            }
            (Round::Truncate, Message::TruncateAck(ack)) => {
                self.truncated.entry(ack.pg.pg_id).or_default().push(node)
            }
            (Round::Refill, Message::AppendAck(ack)) => {
                if let Some(refill) = self.refill.as_mut() {
                    refill.acked(node, ack.pg.pg_id, ack.last_lsn);
                }
            }
            (Round::Refill, Message::Records(records)) => {
                if let Some(refill) = self.refill.as_mut() {
                    refill.fetched(node, records);
                }
            }
            _ => {}
        }
    }

    /// A page of a responder's headers: noted, and the part read on or finished.
    fn absorb_headers(&mut self, node: NodeId, answer: RecordHeaders) {
        let pg = answer.pg.pg_id;
        let next = answer.headers.last().map(|h| h.meta.lsn);
        let evidence = self.evidence.entry(pg).or_default();
        for header in answer.headers {
            evidence.add(node, header);
        }
        match next.filter(|_| answer.more).and_then(|from| LsnRange::new(from, answer.range.through()).ok()) {
            Some(rest) => self.read_headers(node, pg, rest),
            None => self.part_done(node, pg),
        }
    }

    fn part_done(&mut self, node: NodeId, pg: PgId) {
        let left = self.parts_left.entry((pg, node)).or_default();
        *left = left.saturating_sub(1);
        if *left > 0 || self.parts_failed.contains(&(pg, node)) {
            return;
        }
        let done = if self.round == Round::Probe { &mut self.probed } else { &mut self.gathered };
        done.entry(pg).or_default().push(node);
    }

    /// A request that will not be answered.
    fn failed(&mut self, (ask, node, pg, last): Waiting) {
        match (ask, self.refill.as_mut()) {
            (Ask::Headers, _) => {
                self.parts_failed.insert((pg, node));
            }
            (Ask::Read, Some(refill)) => refill.fetch_failed(node, pg),
            (Ask::Batch, Some(refill)) => refill.batch_failed(node, pg, last),
            _ => {}
        }
    }

    /// The refill's next reads and batches, within its bounds.
    fn pump_refill(&mut self) {
        let Some(refill) = self.refill.as_mut() else { return };
        for (node, pg, message) in refill.poll() {
            self.request(node, pg, message);
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
                let highest = self.highest.get(&(pg, node)).copied().unwrap_or(Lsn::ZERO);
                let parts = gather_parts(after, highest);
                self.parts_left.insert((pg, node), parts.len() as u64);
                for part in parts {
                    self.read_headers(node, pg, part);
                }
            }
        }
        if self.waiting.is_empty() {
            return self.after_gather();
        }
        Ok(())
    }

    fn read_headers(&mut self, node: NodeId, pg: PgId, range: LsnRange) {
        let read = ReadRecordHeaders {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            range,
            bytes_max: GATHER_READ_BYTES_MAX,
        };
        self.request(node, pg, Message::ReadRecordHeaders(read));
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

    /// Reads every responder's headers of each PG in its probe range.
    fn start_probe(&mut self, probe: &[(PgId, LsnRange)]) -> Result<(), TakeoverError> {
        self.round = Round::Probe;
        self.parts_left.clear();
        self.parts_failed.clear();
        for (pg, range) in probe {
            self.probing.insert(*pg, *range);
            self.evidence.entry(*pg).or_default().probed = true;
            for node in self.gathered.get(pg).cloned().unwrap_or_default() {
                self.parts_left.insert((*pg, node), 1);
                self.read_headers(node, *pg, *range);
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
            let acked = self.truncated.get(&pg).cloned().unwrap_or_default();
            self.require(pg, &acked, WRITE_QUORUM)?;
        }
        let plan = self.plan.as_ref().expect("planned before truncating");
        let reads = fetches(plan, &self.evidence, |pg| self.membership(pg), refill::FETCH_BYTES_MAX as usize);
        self.round = Round::Refill;
        self.refill = Some(refill::Refill::new(reads, &self.evidence, self.geometry, self.epochs));
        self.pump_refill();
        if self.waiting.is_empty() {
            return self.after_refill();
        }
        Ok(())
    }

    fn after_refill(&mut self) -> Result<(), TakeoverError> {
        let plan = self.plan.clone().expect("planned before refilling");
        let refill = self.refill.take().expect("refilled after truncating");
        for (pg, holders) in refill.copies() {
            self.require(pg, holders, WRITE_QUORUM)?;
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
    Headers,
    Read,
    Truncate,
    Batch,
}

/// A responder's gather range `(after, ∞)` in parts read at once: up to
/// `GATHER_READS_PER_SEGMENT` spans of its held range `(after, highest]`, each at least
/// `GATHER_PART_LSNS_MIN` wide, the last one open-ended.
fn gather_parts(after: Lsn, highest: Lsn) -> Vec<LsnRange> {
    let span = highest.0.saturating_sub(after.0);
    let count = span.div_ceil(GATHER_PART_LSNS_MIN).clamp(1, GATHER_READS_PER_SEGMENT);
    let width = span.div_ceil(count).max(1);
    let ends = (1..count).map(|i| Lsn(after.0 + i * width)).chain(std::iter::once(Lsn::MAX));
    let mut from = after;
    let mut parts = Vec::new();
    for end in ends {
        parts.extend(LsnRange::new(from, end).ok());
        from = end;
    }
    parts
}

/// What an answer to `request` from `node` will be matched against.
fn request_key(node: NodeId, request: &Message) -> Waiting {
    let (pg, last) = match request {
        Message::StatusRequest => (PgId(0), Lsn::ZERO),
        Message::EpochBump(b) => (b.pg.pg_id, Lsn::ZERO),
        Message::ReadRecordHeaders(r) => (r.pg.pg_id, r.range.through()),
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
        Message::ReadRecordHeaders(_) => Ask::Headers,
        Message::ReadRecords(_) => Ask::Read,
        Message::Truncate(_) => Ask::Truncate,
        Message::AppendBatch(_) => Ask::Batch,
        other => unreachable!("a takeover never sends {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(after: u64, through: u64) -> LsnRange {
        LsnRange::new(Lsn(after), Lsn(through)).unwrap()
    }

    #[test]
    fn a_long_gather_range_is_read_in_parts_at_once_and_a_short_one_whole() {
        assert_eq!(gather_parts(Lsn(100), Lsn(50)), vec![part(100, u64::MAX)], "nothing held above");
        assert_eq!(gather_parts(Lsn(0), Lsn(100)), vec![part(0, u64::MAX)]);
        assert_eq!(
            gather_parts(Lsn(0), Lsn(40_000)),
            vec![part(0, 10_000), part(10_000, 20_000), part(20_000, 30_000), part(30_000, u64::MAX)]
        );
        assert_eq!(gather_parts(Lsn(10), Lsn(10 + 5_000)), vec![part(10, 2_510), part(2_510, u64::MAX)]);
    }
}
