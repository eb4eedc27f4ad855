//! Placement: which six nodes hold the segments of a protection group.
//!
//! A cluster map lists nodes with their availability zone. A PG's segments are two nodes in each
//! of three AZs, chosen by rendezvous hashing: every candidate gets a score from a hash of
//! (volume, PG, node), and the highest scores win — first the three AZs (by their best node's
//! score), then the two best nodes in each. The choice depends only on the map and the ids, so
//! every client and node computes the same placement.
//!
//! A map changes only by growing: a node added to a running cluster (`borealis cluster
//! add-host`) is a **spare**. Placement never counts spares, so no PG of any volume moves when
//! one appears; a spare takes segments only through a membership change that replaces a node
//! (`docs/membership.md`). [`ClusterMap::check_change`] is the rule every node and client
//! applies before it takes a new map.

use std::net::SocketAddr;

use crate::ids::{AzId, NodeId, PgId, VolumeId};
use crate::quorum::{SegmentSet, AZS_PER_PG, SEGMENTS_PER_AZ, SEGMENTS_PER_PG};

/// One node of the cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    pub id: NodeId,
    pub az: AzId,
    /// QUIC address.
    pub addr: SocketAddr,
    /// TLS server name (the first DNS name of the node's certificate).
    pub name: String,
    /// Holds no PG by placement; joins PGs only by replacing a member (see the module docs).
    pub spare: bool,
}

/// Why a cluster map cannot place PGs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    #[error("node {0} appears twice in the cluster map")]
    DuplicateNode(NodeId),
    #[error(
        "the cluster map has {0} availability zones with two or more nodes that are not spares; \
         placement needs 3"
    )]
    TooFewZones(usize),
}

/// Why a new cluster map may not replace the current one: it would move a PG.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapChangeError {
    #[error(
        "node {0} is missing from the new map (a node leaves its PGs by being replaced, never by removal)"
    )]
    NodeRemoved(NodeId),
    #[error("node {0} changed availability zone (a node's zone is fixed)")]
    ZoneChanged(NodeId),
    #[error("node {0} changed between spare and placed (that would move PGs)")]
    RoleChanged(NodeId),
    #[error("node {0} is new but not a spare (a node added to a running cluster must be a spare)")]
    NewNodePlaced(NodeId),
}

/// The nodes of a cluster, checked to be able to place every PG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterMap {
    nodes: Vec<NodeInfo>,
}

impl ClusterMap {
    /// `per_az` nodes (two or more) in each of three AZs: ids 1..=3 × `per_az` in AZ order,
    /// named `node-N`, all at one placeholder address. For cores run without a network: unit
    /// tests and the simulator.
    pub fn evenly(per_az: u32) -> ClusterMap {
        let nodes = (1..=3 * per_az)
            .map(|id| NodeInfo {
                id: NodeId(id),
                az: AzId(((id - 1) / per_az) as u16),
                addr: ([127, 0, 0, 1], 7000).into(),
                name: format!("node-{id}"),
                spare: false,
            })
            .collect();
        ClusterMap::new(nodes).expect("two or more nodes in each of three zones")
    }

    /// Checks that node ids are unique and that at least three AZs have two placed (not spare)
    /// nodes each.
    pub fn new(mut nodes: Vec<NodeInfo>) -> Result<ClusterMap, PlacementError> {
        nodes.sort_by_key(|n| n.id);
        if let Some(pair) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(PlacementError::DuplicateNode(pair[0].id));
        }
        let map = ClusterMap { nodes };
        let zones = map.placed_zones().count();
        if zones < AZS_PER_PG {
            return Err(PlacementError::TooFewZones(zones));
        }
        Ok(map)
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Whether `next` may replace this map: it keeps every node, in its zone and role, and adds
    /// only spares, so every PG of every volume is placed on the same six nodes by both.
    /// Addresses and names may change (a host moved). Returns the nodes `next` adds.
    pub fn check_change(&self, next: &ClusterMap) -> Result<Vec<NodeId>, MapChangeError> {
        for node in &self.nodes {
            let Some(now) = next.node(node.id) else { return Err(MapChangeError::NodeRemoved(node.id)) };
            if now.az != node.az {
                return Err(MapChangeError::ZoneChanged(node.id));
            }
            if now.spare != node.spare {
                return Err(MapChangeError::RoleChanged(node.id));
            }
        }
        let added: Vec<&NodeInfo> = next.nodes.iter().filter(|n| self.node(n.id).is_none()).collect();
        match added.iter().find(|n| !n.spare) {
            Some(placed) => Err(MapChangeError::NewNodePlaced(placed.id)),
            None => Ok(added.iter().map(|n| n.id).collect()),
        }
    }

    /// The six nodes holding `pg` of `volume`, two per AZ.
    pub fn place(&self, volume: VolumeId, pg: PgId) -> SegmentSet {
        let score = |node: &NodeInfo| rendezvous_score(volume, pg, node.id);
        let mut zones: Vec<(u32, AzId)> = self
            .placed_zones()
            .map(|az| (self.placed_in_zone(az).map(score).max().expect("zone has nodes"), az))
            .collect();
        zones.sort_by(|a, b| b.cmp(a));
        let mut members = Vec::with_capacity(SEGMENTS_PER_PG);
        for (_, az) in zones.into_iter().take(AZS_PER_PG) {
            let mut candidates: Vec<(u32, NodeId)> =
                self.placed_in_zone(az).map(|n| (score(n), n.id)).collect();
            candidates.sort_by(|a, b| b.cmp(a));
            members.extend(candidates.into_iter().take(SEGMENTS_PER_AZ).map(|(_, id)| id));
        }
        let members: [NodeId; SEGMENTS_PER_PG] = members.try_into().expect("three zones of two");
        SegmentSet::new(members).expect("node ids are unique in a cluster map")
    }

    /// The node that takes `leaving`'s segment of `pg` in `set`: the highest-scoring node of
    /// `leaving`'s AZ (placed or spare) that is not in `set` and not in `excluded` (down or
    /// retired nodes), so the PG keeps two segments per AZ. `None` if that AZ has no other node.
    pub fn replacement(
        &self,
        volume: VolumeId,
        pg: PgId,
        set: &SegmentSet,
        leaving: NodeId,
        excluded: &[NodeId],
    ) -> Option<NodeId> {
        let az = self.node(leaving)?.az;
        self.in_zone(az)
            .filter(|n| !set.contains(n.id) && !excluded.contains(&n.id))
            .max_by_key(|n| (rendezvous_score(volume, pg, n.id), n.id))
            .map(|n| n.id)
    }

    fn zones(&self) -> Vec<AzId> {
        let mut zones: Vec<AzId> = self.nodes.iter().map(|n| n.az).collect();
        zones.sort();
        zones.dedup();
        zones
    }

    fn in_zone(&self, az: AzId) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(move |n| n.az == az)
    }

    fn placed_in_zone(&self, az: AzId) -> impl Iterator<Item = &NodeInfo> {
        self.in_zone(az).filter(|n| !n.spare)
    }

    /// The zones with enough placed nodes to hold a PG's two segments there.
    fn placed_zones(&self) -> impl Iterator<Item = AzId> + '_ {
        self.zones().into_iter().filter(|az| self.placed_in_zone(*az).count() >= SEGMENTS_PER_AZ)
    }
}

/// The rendezvous score of `node` for `pg` of `volume`: CRC32C of the three ids. A hash for
/// spreading load, not for security.
fn rendezvous_score(volume: VolumeId, pg: PgId, node: NodeId) -> u32 {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&volume.0.to_le_bytes());
    key[16..20].copy_from_slice(&pg.0.to_le_bytes());
    key[20..].copy_from_slice(&node.0.to_le_bytes());
    crc32c::crc32c(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(per_az: &[u32]) -> ClusterMap {
        ClusterMap::new(nodes(per_az)).unwrap()
    }

    fn nodes(per_az: &[u32]) -> Vec<NodeInfo> {
        let mut nodes = Vec::new();
        for (az, count) in per_az.iter().enumerate() {
            for _ in 0..*count {
                let id = NodeId(nodes.len() as u32 + 1);
                nodes.push(NodeInfo {
                    id,
                    az: AzId(az as u16),
                    addr: ([127, 0, 0, 1], 7000 + id.0 as u16).into(),
                    name: format!("node-{}", id.0),
                    spare: false,
                });
            }
        }
        nodes
    }

    #[test]
    fn every_pg_gets_two_nodes_in_each_of_three_zones() {
        let map = map(&[3, 4, 2, 5]);
        for pg in 0..200 {
            let set = map.place(VolumeId(7), PgId(pg));
            let mut zones: Vec<AzId> = set.members().iter().map(|id| map.node(*id).unwrap().az).collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3);
            for az in &zones {
                assert_eq!(set.members().iter().filter(|id| map.node(**id).unwrap().az == *az).count(), 2);
            }
        }
    }

    #[test]
    fn placement_is_deterministic_and_spreads_pgs() {
        let (a, b) = (map(&[4, 4, 4]), map(&[4, 4, 4]));
        let sets: Vec<SegmentSet> = (0..300).map(|pg| a.place(VolumeId(1), PgId(pg))).collect();
        assert!(sets.iter().enumerate().all(|(pg, set)| b.place(VolumeId(1), PgId(pg as u32)) == *set));
        for node in a.nodes() {
            let share = sets.iter().filter(|s| s.contains(node.id)).count();
            assert!((100..=200).contains(&share), "node {} holds {share} of 300 PGs (expect ~150)", node.id);
        }
    }

    #[test]
    fn a_replacement_is_a_spare_of_the_leaving_nodes_zone() {
        let map = map(&[3, 3, 3]);
        for pg in 0..50 {
            let set = map.place(VolumeId(4), PgId(pg));
            let leaving = set.members()[0];
            let az = map.node(leaving).unwrap().az;
            let spare = map.replacement(VolumeId(4), PgId(pg), &set, leaving, &[]).unwrap();
            assert!(!set.contains(spare));
            assert_eq!(map.node(spare).unwrap().az, az);
            assert_eq!(
                map.replacement(VolumeId(4), PgId(pg), &set, leaving, &[spare]),
                None,
                "one spare per zone"
            );
        }
        let six = self::map(&[2, 2, 2]);
        let set = six.place(VolumeId(4), PgId(0));
        assert_eq!(six.replacement(VolumeId(4), PgId(0), &set, set.members()[0], &[]), None);
    }

    #[test]
    fn maps_that_cannot_place_are_refused() {
        assert!(matches!(ClusterMap::new(nodes(&[2, 2, 1])), Err(PlacementError::TooFewZones(2))));
        let mut nodes = map(&[2, 2, 2]).nodes().to_vec();
        nodes.push(nodes[0].clone());
        assert!(matches!(ClusterMap::new(nodes), Err(PlacementError::DuplicateNode(_))));
    }

    fn with_spares(map: &ClusterMap, spares: &[u16]) -> ClusterMap {
        let mut nodes = map.nodes().to_vec();
        for (i, az) in spares.iter().enumerate() {
            let id = NodeId(100 + i as u32);
            let addr = ([127, 0, 0, 1], 8000 + i as u16).into();
            nodes.push(NodeInfo { id, az: AzId(*az), addr, name: format!("spare-{i}"), spare: true });
        }
        ClusterMap::new(nodes).unwrap()
    }

    #[test]
    fn spares_move_no_pg_and_are_the_replacements_of_their_zone() {
        let before = map(&[2, 2, 2]);
        let after = with_spares(&before, &[0, 1, 2, 2]);
        assert_eq!(before.check_change(&after).unwrap().len(), 4, "the four spares are the nodes added");
        for volume in 0..20u128 {
            for pg in 0..50 {
                let set = before.place(VolumeId(volume), PgId(pg));
                assert_eq!(after.place(VolumeId(volume), PgId(pg)), set, "volume {volume} PG {pg} moved");
                let leaving = set.members()[0];
                let spare = after.replacement(VolumeId(volume), PgId(pg), &set, leaving, &[]).unwrap();
                assert!(after.node(spare).unwrap().spare);
                assert_eq!(after.node(spare).unwrap().az, after.node(leaving).unwrap().az);
            }
        }
        // A map of spares alone cannot place.
        let mut only = nodes(&[2, 2, 2]);
        only.iter_mut().take(2).for_each(|n| n.spare = true);
        assert!(matches!(ClusterMap::new(only), Err(PlacementError::TooFewZones(2))));
    }

    #[test]
    fn a_change_that_would_move_a_pg_is_refused() {
        let before = map(&[3, 3, 3]);
        let mut grown = with_spares(&before, &[0]).nodes().to_vec();
        grown.last_mut().unwrap().spare = false;
        let grown = ClusterMap::new(grown).unwrap();
        assert_eq!(before.check_change(&grown), Err(MapChangeError::NewNodePlaced(NodeId(100))));
        let spare = with_spares(&before, &[1]);
        let mut back = spare.nodes().to_vec();
        back.retain(|n| n.id != NodeId(100));
        assert_eq!(
            spare.check_change(&ClusterMap::new(back).unwrap()),
            Err(MapChangeError::NodeRemoved(NodeId(100)))
        );
        let mut moved = spare.nodes().to_vec();
        moved[0].az = AzId(1);
        assert_eq!(
            spare.check_change(&ClusterMap::new(moved).unwrap()),
            Err(MapChangeError::ZoneChanged(NodeId(1)))
        );
        let mut placed = spare.nodes().to_vec();
        placed.last_mut().unwrap().spare = false;
        assert_eq!(
            spare.check_change(&ClusterMap::new(placed).unwrap()),
            Err(MapChangeError::RoleChanged(NodeId(100)))
        );
        let mut readdressed = spare.nodes().to_vec();
        readdressed[2].addr = ([10, 0, 0, 3], 7001).into();
        assert_eq!(spare.check_change(&ClusterMap::new(readdressed).unwrap()), Ok(Vec::new()));
    }
}
