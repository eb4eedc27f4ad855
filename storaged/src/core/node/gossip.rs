//! Gossip between the segments of one PG (DESIGN §3, background step 4), as request and reply
//! (so it runs over the node's ordinary request streams):
//! 1. now and then each node sends the PG's other members its summary: SCL, newest LSN, holes
//!    (`poll_gossip`);
//! 2. a member answers with its own summary (`answer_gossip_summary`), noting the asker's SCL;
//! 3. the asker, reading that answer (`handle_gossip_summary`), fetches the records it lacks
//!    if the member is complete further (`GossipFetch`, answered from `plan_gossip_fetch`);
//! 4. it stores them durably as it stores an append (`handle_gossip_records`), and its SCL
//!    catches up without the writer's help.
//!
//! Still sans-IO: the driver carries the messages and reads the planned records.
//!
//! Safety rules:
//! - records move only between segments at the same volume and geometry epochs (the
//!   membership epoch says which segments count, not which records are valid, and one PG's
//!   members may hold different ones for a while: it is raised for the whole volume), both open (the truncation of
//!   their volume epoch stored), and only records at or below the sender's SCL: a record a new
//!   writer truncated cannot spread from a segment that has the truncation, and a segment
//!   that lacks it neither sends nor takes. Folded records still indexed are sent too: their
//!   journal file stays in use while they are indexed;
//! - fetched records pass the checks an append's do (truncated, already held, fits the page)
//!   and enter the index only once durable; nobody is acknowledged for them;
//! - an answer counts only if the segment's epochs did not change since the fetch left, and
//!   only one fetch per PG is out at a time (given up after `gossip_timeout_ms`);
//! - a segment keeps the records a live peer lacks (`Segment::register_peers`, `note_peer`);
//!   a node without the segment answers with an empty summary (SCL zero), so its peers keep
//!   every record for it until a writer opens its segment and it fetches them;
//! - nothing of a volume dropped here moves either way (`dropped`): a summary of it gets an
//!   empty answer and starts no rebuild, a fetch of it is refused.

use protocol::messages::{ErrorCode, ErrorReply, GossipFetch, GossipSummary, Records, GOSSIP_RANGES_MAX};
use protocol::{Epochs, Lsn, LsnRange, NodeId, PgRef, Record};

use super::{refusal, EntryBody, NodeCore, ReadPlan};
use crate::core::segment::{EpochRefusal, Segment};

/// Record bytes a gossip fetch asks for at once.
pub const GOSSIP_FETCH_BYTES: u32 = 1024 * 1024;

impl NodeCore {
    /// One gossip round, if one is due at `now` (every `Limits::gossip_interval_ms`; see
    /// `poll_gossip_timeout`): this node's summary of each segment, addressed to each other
    /// member of its PG (its stored membership, else `members_of`: the PG's placement, this
    /// node among them); a retired segment does not gossip. `now` is the
    /// driver's milliseconds; the first round after a start also names each segment's peers.
    pub fn poll_gossip(
        &mut self,
        now: u64,
        members_of: impl Fn(PgRef) -> Vec<NodeId>,
    ) -> Vec<(NodeId, GossipSummary)> {
        if !self.gossip_round_due(now) {
            return Vec::new();
        }
        let lease = self.limits.peer_lease_ms;
        let mut out = Vec::new();
        for segment in self.segments.values_mut().filter(|s| !s.is_retired(self.node)) {
            let peers: Vec<NodeId> =
                NodeCore::members_of(segment, &members_of).into_iter().filter(|n| *n != self.node).collect();
            segment.register_peers(peers.iter().copied(), now.saturating_add(lease));
            let summary = summary_of(self.node, segment);
            out.extend(peers.into_iter().map(|peer| (peer, summary.clone())));
        }
        out
    }

    /// A peer's summary, asking for ours: remembers what the peer holds (its records are kept
    /// for it) and returns this node's summary of the PG; an empty one (SCL zero) if this node
    /// has no segment of it, so the peer keeps everything for it.
    pub fn answer_gossip_summary(&mut self, summary: &GossipSummary, now: u64) -> GossipSummary {
        let lease = self.limits.peer_lease_ms;
        match self.segments.get_mut(&summary.pg) {
            Some(segment) => {
                // Records are held for members only: a replaced node that came back unaware of
                // it would otherwise pin them forever.
                if segment.counts_as_member(summary.node) {
                    segment.note_peer(summary.node, summary.scl, summary.floor, now.saturating_add(lease));
                }
                summary_of(self.node, segment)
            }
            None => {
                // A member of the PG without its segment (new, or its data was lost): it is
                // rebuilt from the asking peer; unless its volume was dropped here.
                let dropped = self.is_dropped(summary.pg.volume_id);
                if summary.scl > Lsn::ZERO && summary.open && !dropped {
                    self.want_hydration(summary.pg, summary.node);
                }
                GossipSummary {
                    pg: summary.pg,
                    node: self.node,
                    epochs: summary.epochs,
                    scl: Lsn::ZERO,
                    highest_lsn: Lsn::ZERO,
                    folded_through: Lsn::ZERO,
                    floor: Lsn::ZERO,
                    open: false,
                    holes: Vec::new(),
                }
            }
        }
    }

    /// A peer's summary in answer to ours: remembers what it holds, and returns a fetch for
    /// the records this segment lacks and the peer holds, if any.
    pub fn handle_gossip_summary(&mut self, summary: &GossipSummary, now: u64) -> Option<GossipFetch> {
        let lease = self.limits.peer_lease_ms;
        let hydrating = self.is_hydrating(summary.pg);
        let segment = self.segments.get_mut(&summary.pg)?;
        if segment.counts_as_member(summary.node) {
            segment.note_peer(summary.node, summary.scl, summary.floor, now.saturating_add(lease));
        }
        if hydrating || segment.is_retired(self.node) || !segment.counts_as_member(summary.node) {
            return None;
        }
        if needs_hydration(segment, summary) {
            // The peer folded records this segment lacks, or this segment was created empty
            // (by a writer's epoch bump) and knows nothing to fetch records with: records
            // cannot bring it up to date.
            self.want_hydration(summary.pg, summary.node);
            return None;
        }
        let segment = self.segments.get_mut(&summary.pg)?;
        let may_fetch = self.state == super::NodeState::Serving
            && same_records(segment.epochs(), summary.epochs)
            && segment.is_open()
            && segment.page_bytes() != 0
            && summary.scl > segment.scl();
        if !may_fetch || self.gossip_fetches.get(&summary.pg).is_some_and(|(_, _, until)| *until > now) {
            return None;
        }
        let ranges = wanted(segment, summary.scl);
        if ranges.is_empty() {
            return None;
        }
        let epochs = segment.epochs();
        let until = now.saturating_add(self.limits.gossip_timeout_ms);
        self.gossip_fetches.insert(summary.pg, (summary.node, epochs, until));
        Some(GossipFetch { pg: summary.pg, epochs, ranges, bytes_max: GOSSIP_FETCH_BYTES })
    }

    /// A fetch to `peer` got no records answer (an error, or no answer at all): another may
    /// start at once.
    pub fn handle_gossip_fetch_failed(&mut self, pg: PgRef, peer: NodeId) {
        if self.gossip_fetches.get(&pg).is_some_and(|(asked, _, _)| *asked == peer) {
            self.gossip_fetches.remove(&pg);
        }
    }

    /// The records to read to answer a peer's fetch: those held in its ranges at or below
    /// SCL, if the peer's epochs are this segment's and it is open.
    pub fn plan_gossip_fetch(&self, fetch: &GossipFetch) -> Result<ReadPlan, ErrorReply> {
        self.check_not_dropped(fetch.pg)?;
        let Some(segment) = self.segments.get(&fetch.pg) else {
            return Err(self.error(ErrorCode::EpochNotOpen, fetch.pg, "no such segment here"));
        };
        let mine = segment.epochs();
        if fetch.epochs.volume < mine.volume || fetch.epochs.geometry < mine.geometry {
            return Err(refusal(segment, EpochRefusal::Stale));
        }
        if !same_records(fetch.epochs, mine) || !segment.is_open() {
            return Err(refusal(segment, EpochRefusal::NotOpen));
        }
        let scl = segment.scl();
        let mut ranges = fetch.ranges.clone();
        ranges.sort_by_key(LsnRange::after);
        let mut wanted = Vec::new();
        let mut last = Lsn::ZERO;
        for range in ranges {
            let Ok(range) = LsnRange::new(range.after().max(last), range.through().min(scl)) else {
                continue;
            };
            last = range.through();
            wanted.extend(segment.records_in(range).map(|(lsn, r)| (lsn, r.location)));
            if wanted.len() > protocol::messages::BATCH_RECORDS_MAX {
                break;
            }
        }
        // One more than an answer holds tells the peer that more remain.
        wanted.truncate(protocol::messages::BATCH_RECORDS_MAX + 1);
        Ok(ReadPlan { pg: fetch.pg, scl, wanted, bytes_max: fetch.bytes_max })
    }

    /// A peer's answer to this node's fetch: its new records are queued for the journal and
    /// indexed once durable. Returns the next fetch if the answer was cut short.
    pub fn handle_gossip_records(&mut self, answer: Records, now: u64) -> Option<GossipFetch> {
        let (peer, epochs, _) = *self.gossip_fetches.get(&answer.pg)?;
        if peer != answer.node {
            return None;
        }
        self.gossip_fetches.remove(&answer.pg);
        if self.state != super::NodeState::Serving || self.index_estimate > self.limits.index_bytes_max {
            return None;
        }
        let segment = self.segments.get(&answer.pg)?;
        if !same_records(segment.epochs(), epochs) || !segment.is_open() {
            return None;
        }
        let page_bytes = segment.page_bytes();
        let records: Vec<Record> = answer
            .records
            .iter()
            .filter(|r| answer.scl >= r.lsn() && !segment.has_or_discards(r.lsn()))
            .filter(|r| protocol::apply::check_fits(r, page_bytes).is_ok())
            .cloned()
            .collect();
        let bytes: u64 = records.iter().map(|r| r.encoded_len() as u64).sum();
        if bytes > 0 && self.pending_bytes + bytes > self.limits.ingest_pending_bytes_max {
            // No room now: stop here rather than fetch past what was not stored; a later
            // round asks again.
            return None;
        }
        if bytes > 0 {
            self.queue(answer.pg, EntryBody::Records { epoch: epochs.volume, page_bytes, records });
        }
        let last = answer.records.last().map(Record::lsn)?;
        let rest = LsnRange::new(last, answer.scl).ok().filter(|_| answer.more)?;
        let until = now.saturating_add(self.limits.gossip_timeout_ms);
        self.gossip_fetches.insert(answer.pg, (peer, epochs, until));
        Some(GossipFetch { pg: answer.pg, epochs, ranges: vec![rest], bytes_max: GOSSIP_FETCH_BYTES })
    }
}

/// A segment's summary for its peers.
fn summary_of(node: NodeId, segment: &Segment) -> GossipSummary {
    GossipSummary {
        pg: segment.pg(),
        node,
        epochs: segment.epochs(),
        scl: segment.scl(),
        highest_lsn: segment.highest_lsn(),
        folded_through: segment.folded_through(),
        floor: segment.floor(),
        open: segment.is_open(),
        holes: segment.holes(GOSSIP_RANGES_MAX),
    }
}

/// True if `peer`'s summary shows it folded records this segment lacks (so only its page
/// versions can bring the segment up to date), or this segment is empty and does not know the
/// volume's page size (a writer's epoch bump created it after the node lost its data: records
/// need the page size, hydration brings it), and the peer is not behind in any epoch.
fn needs_hydration(segment: &Segment, peer: &GossipSummary) -> bool {
    let (mine, theirs) = (segment.epochs(), peer.epochs);
    let not_older = theirs.volume >= mine.volume && theirs.geometry >= mine.geometry;
    let empty_and_blind = segment.page_bytes() == 0 && segment.scl() == Lsn::ZERO && peer.scl > Lsn::ZERO;
    not_older && peer.open && (peer.folded_through > segment.scl() || empty_and_blind)
}

/// The ranges this segment lacks records in, up to a peer's SCL: its holes, then everything
/// after its newest record.
fn wanted(segment: &Segment, peer_scl: Lsn) -> Vec<LsnRange> {
    let mut ranges: Vec<LsnRange> = segment
        .holes(GOSSIP_RANGES_MAX - 1)
        .into_iter()
        .filter_map(|hole| LsnRange::new(hole.after(), hole.through().min(peer_scl)).ok())
        .collect();
    let newest = segment.highest_lsn();
    ranges.extend(LsnRange::new(newest, peer_scl).ok());
    ranges
}

/// True if records may move between segments at `a` and `b`: the same volume epoch (the same
/// truncations open it) and geometry. The membership epoch is left out: it names who counts,
/// and the writer raises it volume-wide, so members of one PG may differ in it for a while.
pub(super) fn same_records(a: Epochs, b: Epochs) -> bool {
    a.volume == b.volume && a.geometry == b.geometry
}
