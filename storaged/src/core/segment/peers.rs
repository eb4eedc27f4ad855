//! What a segment keeps for its peers: the SCLs the PG's other segments reported by gossip
//! (`PeerHold`), so records a lagging peer still lacks are not folded away.

use std::collections::BTreeMap;

use protocol::{Lsn, NodeId};

use super::Segment;

/// What a segment knows of its peers' SCLs, so it keeps the records a lagging peer still
/// lacks: a peer can catch up by fetching records, not images.
#[derive(Clone, Debug, Default)]
pub(super) struct PeerHold {
    /// Off (the default) when the node does not gossip: nothing is held for peers.
    tracked: bool,
    /// True once the PG's members are known; until then every record is held.
    registered: bool,
    /// Peer → (its SCL, when that report expires in the driver's milliseconds).
    heard: BTreeMap<NodeId, (Lsn, u64)>,
}

impl PeerHold {
    /// The highest LSN through which every live peer holds the PG's records.
    pub(super) fn need(&self) -> Lsn {
        match (self.tracked, self.registered) {
            (false, _) => Lsn::MAX,
            (true, false) => Lsn::ZERO,
            (true, true) => self.heard.values().map(|(scl, _)| *scl).min().unwrap_or(Lsn::MAX),
        }
    }

    /// The highest SCL a peer reported and that has not expired (zero if none).
    fn highest(&self) -> Lsn {
        self.heard.values().map(|(scl, _)| *scl).max().unwrap_or(Lsn::ZERO)
    }
}

impl Segment {
    /// From now on, keep the records that the PG's other segments still lack (the node
    /// gossips). Until `register_peers` names them, every record is kept.
    pub fn track_peers(&mut self) {
        self.peers.tracked = true;
    }

    /// The PG's other members, named once after the segment is loaded: one not yet heard from
    /// counts as holding nothing until `expires` (the driver's milliseconds), so records are
    /// kept for it that long. Later calls change nothing.
    pub fn register_peers(&mut self, peers: impl IntoIterator<Item = NodeId>, expires: u64) {
        if self.peers.registered {
            return;
        }
        for peer in peers {
            self.peers.heard.entry(peer).or_insert((Lsn::ZERO, expires));
        }
        self.peers.registered = true;
    }

    /// A peer reported its SCL and floor; its records are kept for it until `expires`.
    pub fn note_peer(&mut self, peer: NodeId, scl: Lsn, floor: Lsn, expires: u64) {
        self.peers.heard.insert(peer, (scl, expires));
        self.peer_floor = self.peer_floor.max(floor);
    }

    /// The highest floor a member showed in gossip (see the field).
    pub fn peer_floor(&self) -> Lsn {
        self.peer_floor
    }

    /// Forgets peers not heard from since their report expired: a peer gone that long is
    /// rebuilt from images (hydration), not kept up by records.
    pub fn refresh_peers(&mut self, now: u64) {
        self.peers.heard.retain(|_, (_, until)| *until > now);
    }

    /// The PG's newest LSN this segment knows some member holds: the newest at or below the
    /// VDL a writer told it, or a peer's SCL from gossip (zero if neither, e.g. just after a
    /// restart). Its SCL below it means the segment lacks records another member has: how far
    /// it trails, for `/metrics`.
    pub fn known_pg_lsn(&self) -> Lsn {
        self.told_pg_lsn.max(self.peers.highest())
    }

    /// The highest LSN through which every folded record may go: its peers hold them all.
    pub fn peer_need(&self) -> Lsn {
        self.peers.need()
    }
}
