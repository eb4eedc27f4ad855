//! The faults the world injects, within the fault budget: crashes, partitions (both ways or
//! one direction), full disks and rot; losing nodes over budget; and the healing that ends
//! the faulty phase.

use protocol::NodeId;
use rand::Rng;

use super::net::{Endpoint, Event};
use super::node::{self, SimNode};
use super::{World, TICK_US};

/// Which of a cut-off node's traffic is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    Both,
    /// What the node sends.
    Outgoing,
    /// What is sent to it.
    Incoming,
}

impl World {
    /// Crashes, partitions, full disks and rot, within the fault budget.
    pub(super) fn faults(&mut self) {
        self.maybe_start_takeover();
        let now = self.clock.now_us;
        let count = self.node_count();
        self.cut_off.retain(|_, (until, _)| *until > now);
        if self.rng.random_range(0..1000) < self.config.crash_per_mille {
            let node = NodeId(self.rng.random_range(1..=count));
            let within = self.rng.random_range(0..TICK_US);
            self.clock.schedule(within, Event::Crash { node });
        }
        if self.rng.random_range(0..1000) < self.config.partition_per_mille {
            self.partition();
        }
        if self.rng.random_range(0..1000) < self.config.disk_full_per_mille {
            let node = NodeId(self.rng.random_range(1..=count));
            if self.node(node).up && self.may_take_down(&[node]) {
                self.record_trace(&[12, node.0 as u8]);
                let until = now + self.rng.random_range(1_000..20_000);
                self.full_until.insert(node, until);
                self.node(node).set_disk_full(true);
                self.clock.schedule(until - now, Event::SpaceBack { node });
            }
        }
        if self.rng.random_range(0..1000) < self.config.rot_per_mille {
            let node = NodeId(self.rng.random_range(1..=count));
            let index = self.rng.random();
            let rotted = self.may_damage(node).then(|| self.node(node).disk().rot(&node::FAULTY_DIRS, index));
            if let Some(Some(at)) = rotted {
                self.log(|| format!("{node}: sector {at:?} rots"));
                self.record_trace(&[7, node.0 as u8]);
                self.damaged(node);
            }
        }
        if self.spares.enabled {
            self.change_faults();
        }
    }

    /// Cuts off a node (both ways, or one direction only) or a whole AZ for a while.
    pub(crate) fn partition(&mut self) {
        let first = NodeId(self.rng.random_range(1..=self.node_count()));
        let (nodes, cut) = match self.rng.random_range(0..4) {
            0 => (vec![first], Cut::Both),
            1 => (vec![first], if self.rng.random() { Cut::Outgoing } else { Cut::Incoming }),
            _ => {
                // The node's whole AZ (nodes 1-2, 3-4, 5-6 of six; 1-3, 4-6, 7-9 of nine).
                let az = self.node(first).az;
                let mut nodes = vec![first];
                nodes.extend(self.nodes.iter().filter(|n| n.az == az && n.id != first).map(|n| n.id));
                (nodes, Cut::Both)
            }
        };
        if !self.may_take_down(&nodes) {
            return;
        }
        let until = self.clock.now_us + self.rng.random_range(2_000..40_000);
        for node in nodes {
            self.record_trace(&[10, node.0 as u8, cut as u8]);
            self.cut_off.insert(node, (until, cut));
        }
    }

    /// True if `nodes` may become unavailable without exceeding the budget: at most two nodes
    /// unavailable, or more only if all in one AZ (nine nodes: every quorum set has two nodes
    /// per AZ, so either way no set has more than two unavailable).
    pub(super) fn may_take_down(&self, nodes: &[NodeId]) -> bool {
        let now = self.clock.now_us;
        let unavailable = |node: &SimNode| {
            !node.up
                || self.cut_off.get(&node.id).is_some_and(|(until, _)| *until > now)
                || self.full_until.contains_key(&node.id)
        };
        let mut down: Vec<&SimNode> = self.nodes.iter().filter(|n| unavailable(n)).collect();
        down.extend(nodes.iter().map(|id| &self.nodes[id.0 as usize - 1]).filter(|n| !unavailable(n)));
        if self.config.over_budget {
            return down.len() <= 4;
        }
        down.len() <= 2 || down.iter().all(|n| n.az == down[0].az)
    }

    /// True if `node` may be (or already was) damaged within the budget of two damaged nodes.
    pub(super) fn may_damage(&self, node: NodeId) -> bool {
        self.rotted_nodes.contains(&node) || self.rotted_nodes.len() < 2
    }

    pub(super) fn damaged(&mut self, node: NodeId) {
        if !self.rotted_nodes.contains(&node) {
            self.rotted_nodes.push(node);
        }
    }

    /// True if `endpoint` is a node whose traffic in `direction` is being dropped.
    pub(super) fn is_cut(&self, endpoint: Endpoint, direction: Cut) -> bool {
        let Endpoint::Node(node) = endpoint else { return false };
        self.cut_off.get(&node).is_some_and(|(until, cut)| {
            *until > self.clock.now_us && (*cut == Cut::Both || *cut == direction)
        })
    }

    /// Over budget: three nodes crash and never come back, so no PG can gather a write quorum.
    /// Crashes `node`: of its writes not yet flushed, a random prefix lands, the next one torn
    /// at a random sector.
    pub(super) fn crash(&mut self, node: NodeId) {
        let landed = self.rng.random_range(0..3);
        let torn_sectors = self.rng.random_range(0..4);
        self.node(node).crash(landed, torn_sectors);
    }

    pub(super) fn lose_three_nodes(&mut self) {
        while self.dead.len() < 3 {
            let node = NodeId(self.rng.random_range(1..=self.node_count()));
            if !self.dead.contains(&node) {
                self.record_trace(&[13, node.0 as u8]);
                self.dead.push(node);
                if self.node(node).up {
                    self.node(node).crash(0, 0);
                }
            }
        }
    }

    pub(super) fn heal(&mut self) {
        self.faults_on = false;
        // A transient read failure pending from the faulty phase ends with it.
        self.nodes.iter().for_each(|n| n.disk().clear_read_faults());
        self.cut_off.clear();
        for id in 1..=self.node_count() {
            if !self.node(NodeId(id)).up {
                self.clock.schedule(1, Event::Restart { node: NodeId(id) });
            }
            if self.full_until.remove(&NodeId(id)).is_some() {
                self.node(NodeId(id)).set_disk_full(false);
            }
        }
    }
}
