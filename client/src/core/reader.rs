//! A reader that is not the writer (`docs/client.md`, "Readers"): which read point it may use,
//! what floor it reports, and which segments its reads go to. Sans-IO: the driver feeds it the
//! nodes' `Status` and `FloorAck` answers and sends what it returns.
//!
//! A reader must not read inside an atomic group, and it does not know each PG's newest LSN
//! at a read point the way the writer does. So its read point is always a VDL some writer
//! declared: every segment reports (in each `FloorAck`) the highest VDL a writer told it, and a
//! read (`ReadPageAsOf`) leaves it to the segment to work out the PG's newest LSN at that VDL
//! (`Segment::newest_as_of` in storaged). The read point is the lowest, over the volume's PGs,
//! of the highest VDL any member of the PG was told: each PG then has a segment that can answer
//! (at once, or once complete through the point), and any VDL is a consistent point of the
//! whole volume.
//!
//! The floor: nodes keep every version a read at or above the lowest live report needs, and
//! a segment's floor never goes back. Before it has a read point the reader reports floor 0
//! (which holds every floor where it is) and then picks a read point at or above every floor
//! the segments answered; from then on it reports the oldest read point still in use, so no
//! floor passes a snapshot it holds.

use std::collections::BTreeMap;

use protocol::messages::{ErrorCode, FloorAck, FloorReport, SegmentState, Status};
use protocol::placement::ClusterMap;
use protocol::quorum::Membership;
use protocol::{Epochs, Lsn, NodeId, PgId};

use super::VolumeGeometry;

/// How long a node holds a reader's floor report that is not renewed. A reader renews every
/// tick (`READER_TICK_MS` in the driver), so it outlives many lost reports.
pub const READER_FLOOR_LEASE_MS: u32 = 10_000;

/// What one segment last answered to a floor report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Told {
    floor: Lsn,
    scl: Lsn,
    vdl: Lsn,
}

/// One PG as the reader sees it.
#[derive(Clone, Debug, Default)]
struct PgView {
    /// The newest membership a member's status showed, with the epochs it was stored at.
    membership: Option<(Epochs, Membership)>,
    told: BTreeMap<NodeId, Told>,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct ReaderCore {
    geometry: VolumeGeometry,
    cluster: ClusterMap,
    /// This reader's id in floor reports (each client's reports are kept apart).
    client: u64,
    pgs: BTreeMap<PgId, PgView>,
    /// The newest read point (zero: none yet). Never goes back.
    read_point: Lsn,
    /// A node's `Unauthorized` refusal of this reader's floor reports (the volume's ACL gives
    /// its certificate no `read`).
    refused: Option<(NodeId, ErrorCode, String)>,
}

impl ReaderCore {
    /// A reader of `geometry`'s volume; `client` must differ from every other client's id.
    pub fn new(geometry: VolumeGeometry, cluster: ClusterMap, client: u64) -> ReaderCore {
        ReaderCore { geometry, cluster, client, pgs: BTreeMap::new(), read_point: Lsn::ZERO, refused: None }
    }

    /// The newest read point: a VDL a writer declared (zero until one is known).
    pub fn read_point(&self) -> Lsn {
        self.read_point
    }

    /// A node's status: the volume's PGs it holds a segment of, and their memberships.
    pub fn handle_status(&mut self, status: &Status) {
        let ours = status.segments.iter().filter(|s| s.pg.volume_id == self.geometry.volume);
        for segment in ours.filter(|s| s.state != SegmentState::Retired) {
            let view = self.pgs.entry(segment.pg.pg_id).or_default();
            let Some(membership) = segment.membership else { continue };
            let key = |e: &Epochs, m: &Membership| (e.volume, m.epoch());
            if view.membership.as_ref().is_none_or(|(e, m)| key(e, m) < key(&segment.epochs, &membership)) {
                view.membership = Some((segment.epochs, membership));
            }
        }
    }

    /// The segments of `pg` as the reader knows them: its newest stored membership's sets, or
    /// its placement.
    pub fn members(&self, pg: PgId) -> Vec<NodeId> {
        match self.pgs.get(&pg).and_then(|v| v.membership.as_ref()) {
            Some((_, membership)) => membership.nodes(),
            None => self.cluster.place(self.geometry.volume, pg).members().to_vec(),
        }
    }

    /// The floor reports to send now, to every member of every PG known: `oldest_in_use` is
    /// the oldest read point a snapshot still holds.
    pub fn floor_reports(&self, oldest_in_use: Option<Lsn>) -> Vec<(NodeId, FloorReport)> {
        let floor = oldest_in_use.map_or(self.read_point, |held| held.min(self.read_point));
        let mut reports = Vec::new();
        for pg in self.pgs.keys().copied() {
            let pg_ref = self.geometry.pg_ref(pg);
            for node in self.members(pg) {
                let report =
                    FloorReport { pg: pg_ref, floor, client: self.client, lease_ms: READER_FLOOR_LEASE_MS };
                reports.push((node, report));
            }
        }
        reports
    }

    /// A node refused a floor report: an `Unauthorized` or `VolumeDeleted` refusal is kept
    /// (the first), to be what opening reports if no read point comes.
    pub fn handle_refusal(&mut self, node: NodeId, refusal: &protocol::messages::ErrorReply) {
        if super::writer::refuses_for_good(refusal.code) && refusal.pg.volume_id == self.geometry.volume {
            self.refused.get_or_insert((node, refusal.code, refusal.message.clone()));
        }
    }

    /// The `Unauthorized` or `VolumeDeleted` refusal this reader got, if any.
    pub fn refused(&self) -> Option<&(NodeId, ErrorCode, String)> {
        self.refused.as_ref()
    }

    /// A segment's answer to a floor report.
    pub fn handle_floor_ack(&mut self, ack: &FloorAck) {
        if ack.pg.volume_id != self.geometry.volume {
            return;
        }
        let told = Told { floor: ack.floor, scl: ack.scl, vdl: ack.vdl };
        self.pgs.entry(ack.pg.pg_id).or_default().told.insert(ack.node, told);
    }

    /// Moves the read point to the newest VDL every PG has a segment told of, if that is at or
    /// above every floor answered (a segment's floor stays at or below this reader's live
    /// report, so only the first read point needs the check to hold for long). Returns it.
    pub fn advance(&mut self) -> Lsn {
        let mut candidate: Option<Lsn> = None;
        let mut floors = Lsn::ZERO;
        for (pg, view) in &self.pgs {
            let members = self.members(*pg);
            let told: Vec<&Told> = members.iter().filter_map(|n| view.told.get(n)).collect();
            let Some(best) = told.iter().map(|t| t.vdl).max() else { return self.read_point };
            floors = told.iter().map(|t| t.floor).fold(floors, Lsn::max);
            candidate = Some(candidate.map_or(best, |c| c.min(best)));
        }
        if let Some(candidate) = candidate.filter(|c| *c > self.read_point && *c >= floors) {
            self.read_point = candidate;
        }
        self.read_point
    }

    /// Where a read of `pg` at `at` goes first: the members that can answer at once (told a VDL
    /// at or above `at`, or complete through it), then the others.
    pub fn candidates(&self, pg: PgId, at: Lsn) -> Vec<NodeId> {
        let view = self.pgs.get(&pg);
        let ready = |n: &NodeId| view.and_then(|v| v.told.get(n)).is_some_and(|t| t.vdl >= at || t.scl >= at);
        let (mut first, rest): (Vec<NodeId>, Vec<NodeId>) = self.members(pg).into_iter().partition(ready);
        first.extend(rest);
        first
    }

    /// The PGs known (from statuses), so the driver knows where to report.
    pub fn pg_count(&self) -> usize {
        self.pgs.len()
    }
}

#[cfg(test)]
mod tests {
    use protocol::messages::SegmentStatus;
    use protocol::quorum::SegmentSet;
    use protocol::{AzId, Epoch, PgRef, VolumeId};

    use super::*;

    fn core() -> ReaderCore {
        let geometry = VolumeGeometry::new(VolumeId(7), 4096, 16).unwrap();
        ReaderCore::new(geometry, super::super::test_cluster(3), 99)
    }

    fn pg(id: u32) -> PgRef {
        PgRef { volume_id: VolumeId(7), pg_id: PgId(id) }
    }

    fn status(node: u32, pgs: &[u32], membership: Option<Membership>) -> Status {
        let segments = pgs
            .iter()
            .map(|p| SegmentStatus {
                pg: pg(*p),
                epochs: Epochs::INITIAL,
                scl: Lsn::ZERO,
                highest_lsn: Lsn::ZERO,
                floor: Lsn::ZERO,
                state: SegmentState::Serving,
                membership,
            })
            .collect();
        Status { node: NodeId(node), az: AzId(0), segments }
    }

    fn ack(p: u32, node: NodeId, floor: u64, vdl: u64) -> FloorAck {
        FloorAck { pg: pg(p), node, floor: Lsn(floor), scl: Lsn::ZERO, vdl: Lsn(vdl), replace: None }
    }

    #[test]
    fn the_read_point_is_the_lowest_over_pgs_of_the_highest_vdl_a_member_was_told() {
        let mut r = core();
        r.handle_status(&status(1, &[0, 1], None));
        let (m0, m1) = (r.members(PgId(0)), r.members(PgId(1)));
        assert_eq!(r.floor_reports(None).len(), 12, "every member of both PGs");
        assert!(r.floor_reports(None).iter().all(|(_, f)| f.floor == Lsn::ZERO), "no read point yet");
        r.handle_floor_ack(&ack(0, m0[0], 5, 40));
        assert_eq!(r.advance(), Lsn::ZERO, "PG 1 has told nothing yet");
        r.handle_floor_ack(&ack(0, m0[1], 5, 50));
        r.handle_floor_ack(&ack(1, m1[0], 5, 45));
        assert_eq!(r.advance(), Lsn(45), "PG 0 knows 50, PG 1 only 45");
        assert_eq!(r.candidates(PgId(1), Lsn(45))[0], m1[0], "the segment told 45 first");
        assert!(r.floor_reports(None).iter().all(|(_, f)| f.floor == Lsn(45)));
        assert!(r.floor_reports(Some(Lsn(30))).iter().all(|(_, f)| f.floor == Lsn(30)), "a held snapshot");
        r.handle_floor_ack(&ack(1, m1[0], 5, 20));
        assert_eq!(r.advance(), Lsn(45), "the read point never goes back");
    }

    #[test]
    fn no_read_point_below_a_floor_a_segment_answered() {
        let mut r = core();
        r.handle_status(&status(1, &[0], None));
        let m = r.members(PgId(0));
        r.handle_floor_ack(&ack(0, m[0], 60, 50));
        assert_eq!(r.advance(), Lsn::ZERO, "the writer's floor is above every VDL told so far");
        r.handle_floor_ack(&ack(0, m[1], 60, 70));
        assert_eq!(r.advance(), Lsn(70));
    }

    #[test]
    fn members_follow_the_newest_stored_membership_and_skip_other_volumes() {
        let mut r = core();
        let placed = r.members(PgId(0));
        let moved = SegmentSet::new(std::array::from_fn(|i| NodeId(100 + i as u32))).unwrap();
        r.handle_status(&status(1, &[0], Some(Membership::stable(Epoch(3), moved))));
        r.handle_status(&status(
            2,
            &[0],
            Some(Membership::stable(Epoch(2), SegmentSet::new(placed.clone().try_into().unwrap()).unwrap())),
        ));
        assert_eq!(r.members(PgId(0)), moved.members().to_vec(), "epoch 3 wins over epoch 2");
        let mut other = status(3, &[5], None);
        other.segments[0].pg.volume_id = VolumeId(8);
        r.handle_status(&other);
        assert_eq!(r.pg_count(), 1);
    }
}
