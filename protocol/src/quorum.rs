//! Quorum arithmetic for a protection group: 6 segments, 2 in each of 3 AZs, writes at 4 of 6,
//! reads (and fencing) at 3 of 6, and the double quorums of a membership change.
//!
//! Why these numbers (DESIGN §1, §6): any read quorum meets any write quorum (3 + 4 > 6), any two
//! write quorums meet (4 + 4 > 6), writes survive a lost AZ (6 - 2 >= 4), and reads survive a
//! lost AZ plus one node (6 - 3 >= 3). During a change from set S to set S', a write must reach 4
//! of S *and* 4 of S'; a read (or a fence) needs 3 of S *or* 3 of S', because either intersects
//! every such write.
//!
//! Counting is by distinct member: an ack from a node outside the set, or a second ack from the
//! same node, never counts twice.

use bytes::BufMut;

use crate::codec::{expect_zero, Reader};
use crate::error::{FormatError, FormatResult};
use crate::ids::{Epoch, Lsn, NodeId};
use crate::wire::Wire;

/// Segments per protection group.
pub const SEGMENTS_PER_PG: usize = 6;
/// Availability zones a PG spans.
pub const AZS_PER_PG: usize = 3;
/// Segments of one PG in each AZ.
pub const SEGMENTS_PER_AZ: usize = SEGMENTS_PER_PG / AZS_PER_PG;
/// Distinct segments that must hold a record before it counts as durable.
pub const WRITE_QUORUM: usize = 4;
/// Distinct segments whose answers together are guaranteed to include every durable record.
pub const READ_QUORUM: usize = SEGMENTS_PER_PG - WRITE_QUORUM + 1;
/// Segments that must have stored a new volume epoch before the old writer can no longer
/// collect a write quorum: the same number as a read quorum.
pub const FENCE_QUORUM: usize = SEGMENTS_PER_PG - WRITE_QUORUM + 1;

const _: () = assert!(READ_QUORUM + WRITE_QUORUM > SEGMENTS_PER_PG);
const _: () = assert!(2 * WRITE_QUORUM > SEGMENTS_PER_PG);
const _: () = assert!(SEGMENTS_PER_PG - SEGMENTS_PER_AZ >= WRITE_QUORUM);
const _: () = assert!(SEGMENTS_PER_PG - (SEGMENTS_PER_AZ + 1) >= READ_QUORUM);

/// Why a set of segments is not a valid quorum set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    #[error("{0} appears twice in one quorum set")]
    DuplicateMember(NodeId),
    #[error("a membership change must move to a different set")]
    SameSet,
}

/// Six distinct segments (named by their nodes) forming one quorum set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentSet([NodeId; SEGMENTS_PER_PG]);

impl SegmentSet {
    /// A set of six distinct nodes.
    pub fn new(members: [NodeId; SEGMENTS_PER_PG]) -> Result<SegmentSet, QuorumError> {
        for (i, member) in members.iter().enumerate() {
            if members[..i].contains(member) {
                return Err(QuorumError::DuplicateMember(*member));
            }
        }
        Ok(SegmentSet(members))
    }

    pub fn members(&self) -> &[NodeId; SEGMENTS_PER_PG] {
        &self.0
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.0.contains(&node)
    }

    /// How many distinct members of this set appear in `nodes`.
    pub fn count_in(&self, nodes: &[NodeId]) -> usize {
        self.0.iter().filter(|member| nodes.contains(member)).count()
    }

    /// The highest LSN that at least `quorum` members have reached, given each member's LSN
    /// (`None`: unknown, counted as zero). With SCLs and `WRITE_QUORUM` this is the PGCL.
    pub fn lsn_reached_by(&self, quorum: usize, lsn_of: impl Fn(NodeId) -> Option<Lsn>) -> Lsn {
        assert!((1..=SEGMENTS_PER_PG).contains(&quorum), "quorum {quorum} out of range");
        let mut lsns = self.0.map(|member| lsn_of(member).unwrap_or(Lsn::ZERO));
        lsns.sort_unstable_by(|a, b| b.cmp(a));
        lsns[quorum - 1]
    }
}

/// The quorum sets of a PG at one membership epoch: one set, or two during a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Membership {
    epoch: Epoch,
    current: SegmentSet,
    next: Option<SegmentSet>,
}

impl Membership {
    /// A PG served by one set.
    pub fn stable(epoch: Epoch, set: SegmentSet) -> Membership {
        Membership { epoch, current: set, next: None }
    }

    /// A PG moving from `from` to `to`: "4/6 of `from` and 4/6 of `to`".
    pub fn transition(epoch: Epoch, from: SegmentSet, to: SegmentSet) -> Result<Membership, QuorumError> {
        if from == to {
            return Err(QuorumError::SameSet);
        }
        Ok(Membership { epoch, current: from, next: Some(to) })
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The set the PG is leaving (or its only set).
    pub fn current(&self) -> &SegmentSet {
        &self.current
    }

    /// The set the PG is moving to, during a change.
    pub fn next(&self) -> Option<&SegmentSet> {
        self.next.as_ref()
    }

    /// True during a change (two sets).
    pub fn is_joint(&self) -> bool {
        self.next.is_some()
    }

    /// True if `node` holds a segment in either set.
    pub fn contains(&self, node: NodeId) -> bool {
        self.sets().any(|set| set.contains(node))
    }

    /// The same sets at another epoch.
    pub fn at(self, epoch: Epoch) -> Membership {
        Membership { epoch, ..self }
    }

    /// True if `answered` holds a read quorum of *every* set. A recovering writer needs this
    /// much: reading 3/6 of one set of a change can miss a write the old writer made under the
    /// next step (the final set alone), whose quorum the other set need not meet.
    pub fn read_quorum_of_every_set(&self, answered: &[NodeId]) -> bool {
        self.sets().all(|set| set.count_in(answered) >= READ_QUORUM)
    }

    /// The one or two quorum sets.
    pub fn sets(&self) -> impl Iterator<Item = &SegmentSet> {
        std::iter::once(&self.current).chain(self.next.as_ref())
    }

    /// Every node that holds a segment in either set, each once.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.current.members().to_vec();
        if let Some(next) = &self.next {
            nodes.extend(next.members().iter().filter(|n| !self.current.contains(**n)));
        }
        nodes
    }

    /// True if `acked` holds a write quorum of every set.
    pub fn write_quorum_met(&self, acked: &[NodeId]) -> bool {
        self.sets().all(|set| set.count_in(acked) >= WRITE_QUORUM)
    }

    /// True if `answered` holds a read quorum of at least one set.
    pub fn read_quorum_met(&self, answered: &[NodeId]) -> bool {
        self.sets().any(|set| set.count_in(answered) >= READ_QUORUM)
    }

    /// True once the nodes in `bumped` (which stored a newer volume epoch) leave every older
    /// writer unable to collect a write quorum: some set has `FENCE_QUORUM` of them.
    pub fn fenced_by(&self, bumped: &[NodeId]) -> bool {
        self.sets().any(|set| set.count_in(bumped) >= FENCE_QUORUM)
    }

    /// The highest LSN durable at a write quorum of every set, from each node's SCL: the PGCL.
    pub fn pgcl(&self, scl_of: impl Fn(NodeId) -> Option<Lsn> + Copy) -> Lsn {
        self.sets().map(|set| set.lsn_reached_by(WRITE_QUORUM, scl_of)).min().expect("at least one set")
    }
}

/// The wire form of a PG's stored membership, or of none (the PG is still on its placement):
/// epoch u64, set count u16 (0, 1 or 2), reserved u16, then 2 × 6 node ids u32 (unused ids 0).
impl Wire for Option<Membership> {
    const BYTES: usize = Epoch::BYTES + 4 + 2 * SEGMENTS_PER_PG * NodeId::BYTES;
    fn put(&self, out: &mut impl BufMut) {
        let (epoch, count) = match self {
            None => (Epoch(0), 0u16),
            Some(m) => (m.epoch, if m.next.is_some() { 2 } else { 1 }),
        };
        epoch.put(out);
        out.put_u16_le(count);
        out.put_u16_le(0);
        let sets = [self.map(|m| m.current), self.and_then(|m| m.next)];
        for set in sets {
            let ids = set.map_or([NodeId(0); SEGMENTS_PER_PG], |s| s.0);
            for id in ids {
                id.put(out);
            }
        }
    }
    fn read(reader: &mut Reader) -> FormatResult<Self> {
        let epoch = Epoch::read(reader)?;
        let count = reader.u16("membership sets")?;
        expect_zero(u64::from(reader.u16("membership reserved")?), "membership reserved")?;
        let mut sets = [[NodeId(0); SEGMENTS_PER_PG]; 2];
        for set in &mut sets {
            for id in set.iter_mut() {
                *id = NodeId::read(reader)?;
            }
        }
        let set = |ids: [NodeId; SEGMENTS_PER_PG]| {
            SegmentSet::new(ids).map_err(|_| FormatError::Invalid { what: "membership set repeats a node" })
        };
        // An unused set is zeros: anything else would not re-encode to the same bytes.
        let unused = sets.iter().skip(usize::from(count.min(2)));
        if unused.flatten().any(|id| id.0 != 0) {
            return Err(FormatError::ReservedNonZero { what: "unused membership set" });
        }
        match count {
            0 if epoch != Epoch(0) => Err(FormatError::ReservedNonZero { what: "epoch of no membership" }),
            0 => Ok(None),
            1 => Ok(Some(Membership::stable(epoch, set(sets[0])?))),
            2 => Membership::transition(epoch, set(sets[0])?, set(sets[1])?)
                .map(Some)
                .map_err(|_| FormatError::Invalid { what: "membership change to the same set" }),
            _ => Err(FormatError::Invalid { what: "membership set count" }),
        }
    }
}

/// True if a segment whose SCL is `scl` can serve a read at `read_lsn`, where `pg_newest_lsn` is
/// the PG's newest LSN at or below `read_lsn` and `gc_floor` the oldest read point still kept.
/// No record of the PG lies in `(pg_newest_lsn, read_lsn]`, so completeness through
/// `pg_newest_lsn` is enough (DESIGN §3).
pub fn segment_serves_read(scl: Lsn, pg_newest_lsn: Lsn, read_lsn: Lsn, gc_floor: Lsn) -> bool {
    debug_assert!(pg_newest_lsn <= read_lsn);
    read_lsn >= gc_floor && scl >= pg_newest_lsn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: [u32; 6]) -> SegmentSet {
        SegmentSet::new(ids.map(NodeId)).unwrap()
    }
    fn nodes(ids: &[u32]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn write_quorum_is_four_distinct_members_of_six() {
        let m = Membership::stable(Epoch(1), set([1, 2, 3, 4, 5, 6]));
        assert!(!m.write_quorum_met(&nodes(&[1, 2, 3])));
        assert!(m.write_quorum_met(&nodes(&[1, 2, 3, 4])));
        assert!(!m.write_quorum_met(&nodes(&[1, 1, 2, 3])), "a duplicate ack must not count twice");
        assert!(!m.write_quorum_met(&nodes(&[1, 2, 3, 9])), "a non-member must not count");
    }

    #[test]
    fn read_quorum_and_fencing_are_three_of_six() {
        let m = Membership::stable(Epoch(1), set([1, 2, 3, 4, 5, 6]));
        assert!(!m.read_quorum_met(&nodes(&[1, 2])));
        assert!(m.read_quorum_met(&nodes(&[4, 5, 6])));
        assert!(m.fenced_by(&nodes(&[1, 5, 6])));
        assert!(!m.fenced_by(&nodes(&[1, 5, 5])));
    }

    #[test]
    fn a_membership_change_needs_four_of_each_set_to_write_and_three_of_either_to_read() {
        let m = Membership::transition(Epoch(2), set([1, 2, 3, 4, 5, 6]), set([1, 2, 3, 4, 5, 7])).unwrap();
        assert!(m.write_quorum_met(&nodes(&[1, 2, 3, 4])));
        assert!(!m.write_quorum_met(&nodes(&[1, 2, 3, 6])), "6 is not in the new set");
        assert!(m.write_quorum_met(&nodes(&[1, 2, 6, 7, 5])));
        assert!(m.read_quorum_met(&nodes(&[1, 2, 7])));
        assert_eq!(m.nodes().len(), 7);
        assert!(Membership::transition(Epoch(2), set([1, 2, 3, 4, 5, 6]), set([1, 2, 3, 4, 5, 6])).is_err());
    }

    #[test]
    fn every_read_quorum_meets_every_write_quorum() {
        // Exhaustive over subsets of one set: the arithmetic, not just the constants.
        let m = Membership::stable(Epoch(1), set([1, 2, 3, 4, 5, 6]));
        let subset =
            |mask: u32| (0..6).filter(|i| mask & (1 << i) != 0).map(|i| NodeId(i + 1)).collect::<Vec<_>>();
        for w in 0..64u32 {
            for r in 0..64u32 {
                if m.write_quorum_met(&subset(w)) && m.read_quorum_met(&subset(r)) {
                    assert_ne!(w & r, 0, "write {w:06b} and read {r:06b} do not meet");
                }
            }
        }
    }

    #[test]
    fn memberships_round_trip_on_the_wire() {
        use bytes::Bytes;
        let stable = Membership::stable(Epoch(3), set([1, 2, 3, 4, 5, 6]));
        let joint =
            Membership::transition(Epoch(4), set([1, 2, 3, 4, 5, 6]), set([1, 2, 3, 4, 5, 7])).unwrap();
        for m in [None, Some(stable), Some(joint)] {
            let mut out = Vec::new();
            m.put(&mut out);
            assert_eq!(out.len(), <Option<Membership> as Wire>::BYTES);
            assert_eq!(Option::<Membership>::read(&mut Reader::new(Bytes::from(out))).unwrap(), m);
        }
        let mut out = Vec::new();
        Some(stable).put(&mut out);
        out[8] = 3;
        assert!(Option::<Membership>::read(&mut Reader::new(Bytes::from(out))).is_err());
        let mut out = Vec::new();
        Some(stable).put(&mut out);
        out[40] = 1;
        assert!(
            Option::<Membership>::read(&mut Reader::new(Bytes::from(out))).is_err(),
            "a stray id in the unused set"
        );
    }

    #[test]
    fn recovery_during_a_change_needs_a_read_quorum_of_both_sets() {
        let m = Membership::transition(Epoch(2), set([1, 2, 3, 4, 5, 6]), set([1, 2, 3, 4, 5, 7])).unwrap();
        assert!(m.read_quorum_met(&nodes(&[4, 5, 6])));
        assert!(!m.read_quorum_of_every_set(&nodes(&[4, 5, 6])), "7's set has only 4 and 5");
        assert!(m.read_quorum_of_every_set(&nodes(&[4, 5, 6, 7])));
    }

    #[test]
    fn pgcl_is_the_fourth_highest_scl_and_the_lower_of_two_sets() {
        let scl = |n: NodeId| Some(Lsn(u64::from(n.0) * 10));
        let m = Membership::stable(Epoch(1), set([1, 2, 3, 4, 5, 6]));
        assert_eq!(m.pgcl(scl), Lsn(30));
        let t = Membership::transition(Epoch(2), set([1, 2, 3, 4, 5, 6]), set([1, 2, 3, 4, 5, 7])).unwrap();
        let only_old = |n: NodeId| (n.0 != 7).then(|| Lsn(u64::from(n.0) * 10));
        assert_eq!(t.pgcl(only_old), Lsn(20), "7 knows nothing yet, so the new set's 4th is 20");
    }

    #[test]
    fn a_segment_serves_a_read_when_complete_through_the_pgs_newest_lsn() {
        assert!(segment_serves_read(Lsn(10), Lsn(10), Lsn(50), Lsn(0)));
        assert!(!segment_serves_read(Lsn(9), Lsn(10), Lsn(50), Lsn(0)));
        assert!(!segment_serves_read(Lsn(10), Lsn(10), Lsn(50), Lsn(51)), "below the GC floor");
    }
}
