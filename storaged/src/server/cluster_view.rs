//! The cluster map as this node knows it now: its peers' ids, zones, addresses and certificate
//! names. It starts from the static `peers` list or from the etcd map (`map` in the config), and
//! changes while the node runs: a SIGHUP that re-read the peers, or etcd's watch. Gossip dials
//! and the check that a connection speaks for a peer node both read it each time, so a node
//! added to the cluster is reached and recognised without a restart.
//!
//! A new map is taken only if [`ClusterMap::check_change`] accepts it (it moves no PG: nodes are
//! only added, as spares); a refused one is logged and the old map stays.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::core::access::Acls;
use protocol::placement::{ClusterMap, MapChangeError, NodeInfo};
use protocol::NodeId;

/// The view every task of the node shares (the node is one thread).
pub type SharedView = Rc<RefCell<ClusterView>>;

/// This node and the others.
#[derive(Debug)]
pub struct ClusterView {
    me: NodeId,
    /// `None`: no peers (a node alone, no gossip).
    map: Option<ClusterMap>,
    /// The etcd revision the map was read at (0: a static map).
    revision: i64,
    /// The volumes' ACLs (`core::access`); `None` for a static map, which keeps none.
    acls: Option<Acls>,
    /// How many times the map changed: what connections cache who they are against.
    changes: u64,
    /// ACLs this node wrote to etcd itself (claims, `AclChange`), with the etcd revision of the
    /// write: a snapshot read before that revision does not undo them.
    noted: HashMap<protocol::VolumeId, (i64, etcdmap::Acl)>,
    /// The connection to etcd, where the map is kept there: claims of unclaimed volumes are
    /// written through it (`map_source::claim`).
    etcd: Option<etcdmap::EtcdMap>,
}

/// What [`ClusterView::apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The map is the one already held.
    Same,
    /// The map changed; these nodes are new.
    Changed { added: Vec<NodeId> },
}

impl ClusterView {
    pub fn new(me: NodeId, map: Option<ClusterMap>, revision: i64) -> ClusterView {
        ClusterView { me, map, revision, acls: None, changes: 0, noted: HashMap::new(), etcd: None }
    }

    /// The volumes' ACLs as etcd held them at `revision` (always taken: an ACL change moves no
    /// PG), but for ACLs this node wrote after that revision, and tombstones, which are never
    /// undone.
    pub fn set_acls(&mut self, mut acls: Acls, revision: i64) {
        self.noted.retain(|_, (at, _)| *at > revision);
        for (volume, (_, acl)) in &self.noted {
            acls.volumes.insert(*volume, acl.clone());
        }
        if let Some(old) = &self.acls {
            acls.deleted.extend(old.deleted.iter().copied());
        }
        self.acls = Some(acls);
    }

    /// The ACL etcd returned for a claim (the watch brings the same a moment later).
    pub fn note_acl(&mut self, volume: protocol::VolumeId, acl: etcdmap::Acl, revision: i64) {
        if let Some(acls) = &mut self.acls {
            acls.volumes.insert(volume, acl.clone());
            self.noted.insert(volume, (revision, acl));
        }
    }

    /// A volume this node just deleted in etcd (the watch brings the tombstone a moment later).
    pub fn note_deleted(&mut self, volume: protocol::VolumeId) {
        if let Some(acls) = &mut self.acls {
            acls.deleted.insert(volume);
        }
    }

    pub fn set_etcd(&mut self, etcd: etcdmap::EtcdMap) {
        self.etcd = Some(etcd);
    }

    /// A handle on the etcd connection (cheap: the connection is shared).
    pub fn etcd(&self) -> Option<etcdmap::EtcdMap> {
        self.etcd.clone()
    }

    pub fn acls(&self) -> Option<&Acls> {
        self.acls.as_ref()
    }

    pub fn shared(self) -> SharedView {
        Rc::new(RefCell::new(self))
    }

    /// The whole map, this node included.
    pub fn map(&self) -> Option<&ClusterMap> {
        self.map.as_ref()
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// A number that changes whenever the map does.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every node but this one.
    pub fn peers(&self) -> impl Iterator<Item = &NodeInfo> {
        let me = self.me;
        self.map.iter().flat_map(|m| m.nodes()).filter(move |n| n.id != me)
    }

    pub fn peer(&self, id: NodeId) -> Option<&NodeInfo> {
        self.peers().find(|n| n.id == id)
    }

    /// The peer node whose certificate carries `name`, if any: only such a connection may speak
    /// for a node in gossip and hydration.
    pub fn peer_named(&self, name: &str) -> Option<NodeId> {
        self.peers().find(|n| n.name == name).map(|n| n.id)
    }

    /// Takes `next` if it keeps every PG where it is (see the module docs).
    pub fn apply(&mut self, next: ClusterMap, revision: i64) -> Result<Applied, MapChangeError> {
        let added = match &self.map {
            Some(map) if *map == next => {
                self.revision = revision.max(self.revision);
                return Ok(Applied::Same);
            }
            Some(map) => map.check_change(&next)?,
            None => next.nodes().iter().map(|n| n.id).filter(|id| *id != self.me).collect(),
        };
        self.map = Some(next);
        self.revision = revision;
        self.changes += 1;
        Ok(Applied::Changed { added })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare(map: &ClusterMap, id: u32, az: u16) -> ClusterMap {
        let mut nodes = map.nodes().to_vec();
        let addr = ([127, 0, 0, 1], 9000 + id as u16).into();
        nodes.push(NodeInfo {
            id: NodeId(id),
            az: protocol::AzId(az),
            addr,
            name: format!("node-{id}"),
            spare: true,
        });
        ClusterMap::new(nodes).unwrap()
    }

    #[test]
    fn a_snapshot_read_before_this_node_s_own_acl_write_does_not_undo_it_nor_a_tombstone() {
        let mut view = ClusterView::new(NodeId(1), Some(ClusterMap::evenly(2)), 5);
        view.set_acls(Acls::default(), 5);
        let volume = protocol::VolumeId(9);
        view.note_acl(volume, etcdmap::Acl::owned_by("borealis://client/a"), 8);
        view.note_deleted(protocol::VolumeId(4));
        view.set_acls(Acls::default(), 7);
        let acls = view.acls().unwrap();
        assert!(acls.volumes.contains_key(&volume), "a snapshot at 7 predates the claim at 8");
        assert!(acls.deleted.contains(&protocol::VolumeId(4)), "a tombstone is never undone");
        view.set_acls(Acls::default(), 8);
        assert!(!view.acls().unwrap().volumes.contains_key(&volume), "a snapshot at 8 decides");
    }

    #[test]
    fn a_spare_is_taken_and_known_by_name_and_a_change_moving_a_pg_is_refused() {
        let six = ClusterMap::evenly(2);
        let mut view = ClusterView::new(NodeId(1), Some(six.clone()), 5);
        assert_eq!(view.peer_named("node-7"), None);
        assert_eq!(view.peer_named("node-1"), None, "this node is not its own peer");
        let seven = spare(&six, 7, 0);
        assert_eq!(view.apply(seven.clone(), 6), Ok(Applied::Changed { added: vec![NodeId(7)] }));
        assert_eq!((view.peer_named("node-7"), view.revision()), (Some(NodeId(7)), 6));
        assert_eq!(view.apply(seven.clone(), 7), Ok(Applied::Same));
        assert_eq!(view.apply(six, 8), Err(MapChangeError::NodeRemoved(NodeId(7))));
        assert_eq!(view.map(), Some(&seven), "a refused map leaves the old one");
    }
}
