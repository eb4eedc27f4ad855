//! Membership changes in the simulation (`docs/membership.md`): on nine nodes (three per AZ,
//! so every PG has one spare node in each AZ) the writer's core replaces a node it has not
//! reached for `WriterLimits::replace_after_ticks` by a spare, through the joint step, and back
//! if the node returns first. Nothing here decides a change: the writer's core does, the
//! nodes' cores store each step (`MembershipChange`, routed as every writer request is) and
//! the joining segment is rebuilt by their hydration and gossip. This file only brings the
//! faults that cause changes and stress them, and checks that every change ends.
//!
//! Faults (nine-node runs only, within the fault budget of `World::may_take_down` and the
//! damage budget of `World::may_damage`): one node may be lost during the run, for good (the
//! machine and its disk: it never comes back), or to come back later with an empty disk (a
//! new machine under the same id) or with its disk (a long outage, so it often returns while
//! the change that replaces it is under way, and the change is reversed). While a change is
//! under way the joining node crashes now and then mid-hydration, the writer is taken over
//! (the new writer must adopt the membership the nodes stored) and partitions are more
//! frequent.
//!
//! Some nine-node runs start as a cluster of six that grows: the third node of each AZ is a spare
//! (`NodeInfo::spare`) the writers do not know until an operator publishes it at a drawn moment
//! (as `borealis cluster add-host` does through etcd), when the writer's core takes the grown
//! map (`WriterCore::handle_map`). Until then a lost node cannot be replaced; after it, the new
//! spares are the replacements. Placement is the same under both maps, so the nodes never notice.
//!
//! Checked at the end of a healed run (`membership_unsettled`, part of `World::unsettled`):
//! no change is left in progress, every PG's membership in the writer is one set of six, and
//! every live member's segment stores exactly that membership (or none, if the PG never
//! changed: its placement). The writer's counting during a change is checked as every count
//! is, by `World::check_vdl`.

use std::collections::BTreeMap;

use protocol::placement::ClusterMap;
use protocol::quorum::Membership;
use protocol::{NodeId, PgId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use storaged::core::PlantedBug;

use super::net::Event;
use super::{SimConfig, World};

/// Salts of the seed for the streams that pick a run's layout and its membership faults' plan,
/// apart from the stream that drives the run (so a six-node run draws what it always drew).
const LAYOUT_STREAM: u64 = 0x05ee_d0f5_a4e5;
const SPARES_STREAM: u64 = 0xc4a4_e6e5;
/// Percent of seeds run on nine nodes when `SimConfig::nodes_per_az` is `None`.
const NINE_NODES_PERCENT: u64 = 50;
/// A node unreachable for this many writer ticks (virtual ms) is replaced: drawn per seed,
/// short enough that ordinary crashes (down 1-30 ms) cause changes too.
const REPLACE_AFTER_TICKS: std::ops::RangeInclusive<u32> = 6..=24;
/// Percent of nine-node seeds that lose a node.
const LOSS_PERCENT: u64 = 85;
/// Percent of nine-node seeds whose third node per AZ is a spare published during the run.
const GROWN_PERCENT: u64 = 40;
/// Percent of the nodes lost with their disk that an operator replaces at once
/// (`WriterCore::replace_node`: a forced change, never reversed) rather than the writer after
/// `replace_after_ticks`.
const OPERATOR_REPLACES_PERCENT: u32 = 30;
/// Per-mille chances per tick, while some PG's change is under way, of crashing its joining
/// node (much higher while it hydrates: a hydration takes a few ticks), of a takeover, and of
/// an extra partition.
const JOINING_CRASH_PER_MILLE: u32 = 10;
const HYDRATING_CRASH_PER_MILLE: u32 = 250;
const CHANGE_TAKEOVER_PER_MILLE: u32 = 15;
const CHANGE_PARTITION_PER_MILLE: u32 = 20;

/// A bug planted on purpose (test-only), which the checkers must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// In every node's core.
    Node(PlantedBug),
    /// In the writer's core: during a membership change, a batch counts durable at a write
    /// quorum of the new set alone (`WriterLimits::plant_change_counts_new_set_only`). Runs on
    /// nine nodes, where changes happen.
    ChangeCountsNewSetOnly,
}

impl Plant {
    /// Every planted bug, with the name `borealis-sim --plant` takes.
    pub fn all() -> Vec<(&'static str, Plant)> {
        let mut all: Vec<(&'static str, Plant)> =
            PlantedBug::ALL.iter().map(|(name, bug)| (*name, Plant::Node(*bug))).collect();
        all.push(("change-counts-new-set-only", Plant::ChangeCountsNewSetOnly));
        all
    }

    /// The bug named `name` (see `all`).
    pub fn from_name(name: &str) -> Option<Plant> {
        Self::all().into_iter().find(|(n, _)| *n == name).map(|(_, plant)| plant)
    }

    pub fn name(self) -> &'static str {
        Self::all().into_iter().find(|(_, p)| *p == self).map_or("?", |(name, _)| name)
    }

    /// The bug to plant in the nodes' cores, if it is one of theirs.
    pub fn node_bug(self) -> Option<PlantedBug> {
        match self {
            Plant::Node(bug) => Some(bug),
            Plant::ChangeCountsNewSetOnly => None,
        }
    }
}

/// Nodes per AZ for a run: as configured, else two over budget (that mode loses three of six),
/// three for a planted change bug, else three in `NINE_NODES_PERCENT` of the seeds, drawn from
/// a stream of its own so a six-node seed's history is the one it had before spares existed.
pub(super) fn nodes_per_az(seed: u64, config: &SimConfig) -> u32 {
    if let Some(per_az) = config.nodes_per_az {
        return per_az;
    }
    if config.over_budget {
        return 2;
    }
    if config.planted == Some(Plant::ChangeCountsNewSetOnly) {
        return 3;
    }
    let mut rng = SmallRng::seed_from_u64(seed ^ LAYOUT_STREAM);
    if rng.random_range(0..100) < NINE_NODES_PERCENT {
        3
    } else {
        2
    }
}

/// Membership changes the writers made, as their cores' memberships showed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    /// PGs that entered a joint step.
    pub started: u64,
    /// Changes that ended in the new set.
    pub completed: u64,
    /// Changes that went back to the old set.
    pub reversed: u64,
    /// Nodes lost (for good, or to return empty or after a long outage).
    pub lost_nodes: u64,
    /// Runs whose spares were published to the writer mid-run.
    pub grown: u64,
}

impl ChangeCounts {
    pub fn add(&mut self, other: ChangeCounts) {
        self.started += other.started;
        self.completed += other.completed;
        self.reversed += other.reversed;
        self.lost_nodes += other.lost_nodes;
        self.grown += other.grown;
    }
}

/// What happens to the node a run loses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Lost with its disk, never back.
    Gone,
    /// Back after this long with an empty disk.
    BackEmpty { after_us: u64 },
    /// Back after this long with its disk.
    BackIntact { after_us: u64 },
}

/// The loss a run plans: when, and what becomes of the node.
#[derive(Clone, Copy, Debug)]
struct Loss {
    at_us: u64,
    fate: Fate,
    done: bool,
}

/// A run's membership-change setup and what was seen of its changes.
#[derive(Debug, Default)]
pub(super) struct Spares {
    /// Nine nodes: changes can happen and their faults are injected.
    pub enabled: bool,
    pub replace_after_ticks: Option<u32>,
    loss: Option<Loss>,
    pub counts: ChangeCounts,
    /// Each PG's membership in the writer at the last look.
    seen: BTreeMap<PgId, Membership>,
    /// A grown cluster: when its spares are published to the writers (`None`: all nine nodes
    /// are placed and known from the start, or the spares are published already).
    pub publish_at_us: Option<u64>,
}

impl Spares {
    pub(super) fn new(seed: u64, per_az: u32, config: &SimConfig) -> Spares {
        if per_az < 3 {
            return Spares::default();
        }
        let mut rng = SmallRng::seed_from_u64(seed ^ SPARES_STREAM);
        let replace_after_ticks = Some(rng.random_range(REPLACE_AFTER_TICKS));
        let loss = (rng.random_range(0..100) < LOSS_PERCENT).then(|| {
            let faulty = config.faulty_us.max(10_000);
            let at_us = rng.random_range(faulty / 10..faulty * 3 / 5);
            let after_us = rng.random_range(5_000..60_000);
            let fate = match rng.random_range(0..10) {
                0..=3 => Fate::Gone,
                4..=6 => Fate::BackEmpty { after_us },
                _ => Fate::BackIntact { after_us },
            };
            Loss { at_us, fate, done: false }
        });
        // Drawn after the draws above, so runs that do not grow keep the history they had.
        let publish_at_us = (rng.random_range(0..100) < GROWN_PERCENT).then(|| {
            let faulty = config.faulty_us.max(10_000);
            rng.random_range(faulty / 10..faulty * 4 / 5)
        });
        Spares { enabled: true, replace_after_ticks, loss, publish_at_us, ..Spares::default() }
    }

    /// The cluster of a run: `per_az` nodes per AZ, the third of each a spare if the run grows.
    pub(super) fn cluster(&self, per_az: u32) -> ClusterMap {
        let mut nodes = ClusterMap::evenly(per_az).nodes().to_vec();
        if self.publish_at_us.is_some() {
            nodes.iter_mut().filter(|n| n.id.0 % per_az == 0).for_each(|n| n.spare = true);
        }
        ClusterMap::new(nodes).expect("two placed nodes in each of three zones")
    }

    /// The map the writers start with: the cluster without its unpublished spares.
    pub(super) fn known_map(&self, cluster: &ClusterMap) -> ClusterMap {
        let known = cluster.nodes().iter().filter(|n| self.publish_at_us.is_none() || !n.spare).cloned();
        ClusterMap::new(known.collect()).expect("the placed nodes place every PG")
    }
}

impl World {
    /// The faults of membership changes (nine-node runs, during the faulty phase): the planned
    /// loss of a node, and while a change is under way, crashes of its joining node
    /// mid-hydration, takeovers and partitions.
    pub(super) fn change_faults(&mut self) {
        self.publish_spares();
        self.lose_a_node();
        let pgs = self.writer.pgs();
        let joining: Vec<NodeId> =
            pgs.iter().filter_map(|pg| self.writer.change(*pg)).map(|c| c.joining).collect();
        if joining.is_empty() {
            return;
        }
        let node = joining[self.rng.random_range(0..joining.len())];
        let hydrating = self.node(node).up && self.node(node).is_hydrating();
        let chance = if hydrating { HYDRATING_CRASH_PER_MILLE } else { JOINING_CRASH_PER_MILLE };
        if self.rng.random_range(0..1000) < chance && self.node(node).up && self.may_take_down(&[node]) {
            self.record_trace(&[14, node.0 as u8]);
            self.log(|| format!("joining {node} crashes (hydrating: {hydrating})"));
            self.crash(node);
            let back_in = self.rng.random_range(1_000..30_000);
            self.clock.schedule(back_in, Event::Restart { node });
        }
        if self.rng.random_range(0..1000) < CHANGE_TAKEOVER_PER_MILLE {
            self.start_takeover();
        }
        if self.rng.random_range(0..1000) < CHANGE_PARTITION_PER_MILLE {
            self.partition();
        }
    }

    /// Publishes a grown cluster's spares once it is time: the current writer takes the whole map
    /// (it must: it only adds spares), and takeovers from now on start from it.
    fn publish_spares(&mut self) {
        if self.spares.publish_at_us.is_none_or(|at| at > self.clock.now_us) {
            return;
        }
        self.spares.publish_at_us = None;
        self.spares.counts.grown += 1;
        self.known_map = self.cluster.clone();
        let added = self.writer.handle_map(self.cluster.clone()).expect("a map grown by spares is taken");
        self.record_trace(&[17, added.len() as u8]);
        self.log(|| format!("an operator publishes spares {added:?}; the writer takes the map"));
    }

    /// Loses the planned node once it is time and the budget allows: a node that is up, taken
    /// down within the availability budget, and (if its disk goes) within the damage budget,
    /// since its copies of what it acknowledged are gone.
    fn lose_a_node(&mut self) {
        let Some(loss) = self.spares.loss.filter(|l| !l.done && l.at_us <= self.clock.now_us) else {
            return;
        };
        let node = NodeId(self.rng.random_range(1..=self.node_count()));
        let wipes = !matches!(loss.fate, Fate::BackIntact { .. });
        if !self.node(node).up || !self.may_take_down(&[node]) || (wipes && !self.may_damage(node)) {
            return;
        }
        self.spares.loss = Some(Loss { done: true, ..loss });
        self.spares.counts.lost_nodes += 1;
        self.log(|| format!("{node} is lost: {:?}", loss.fate));
        match loss.fate {
            Fate::Gone => {
                self.record_trace(&[15, node.0 as u8, 0]);
                self.dead.push(node);
                self.node(node).wipe();
                self.damaged(node);
                self.maybe_operator_replaces(node);
            }
            Fate::BackEmpty { after_us } => {
                self.record_trace(&[15, node.0 as u8, 1]);
                self.node(node).wipe();
                self.damaged(node);
                self.clock.schedule(after_us, Event::Restart { node });
                self.maybe_operator_replaces(node);
            }
            Fate::BackIntact { after_us } => {
                self.record_trace(&[15, node.0 as u8, 2]);
                self.crash(node);
                self.clock.schedule(after_us, Event::Restart { node });
            }
        }
    }

    /// Now and then an operator who saw the disk go asks the writer to replace the node now.
    fn maybe_operator_replaces(&mut self, node: NodeId) {
        if self.rng.random_range(0..100) < OPERATOR_REPLACES_PERCENT {
            let pgs = self.writer.replace_node(node);
            self.record_trace(&[16, node.0 as u8, pgs.len() as u8]);
            self.log(|| format!("an operator replaces {node}: changes start in {pgs:?}"));
        }
    }

    /// Counts the changes the writer's memberships show since the last look.
    pub(super) fn observe_changes(&mut self) {
        if !self.spares.enabled {
            return;
        }
        for pg in self.writer.pgs() {
            let now = self.writer.membership(pg);
            let Some(before) = self.spares.seen.insert(pg, now) else { continue };
            if before == now {
                continue;
            }
            self.log(|| {
                format!("{pg}: the writer's membership is now {now:?}, {:?}", self.writer.change(pg))
            });
            match (before.is_joint(), now.is_joint()) {
                (false, true) => self.spares.counts.started += 1,
                (true, false) if now.current() == before.current() => self.spares.counts.reversed += 1,
                (true, false) => self.spares.counts.completed += 1,
                _ => {}
            }
        }
    }

    /// What keeps some PG's membership from having settled, if anything: a change in progress,
    /// a joint membership, or a live member whose segment is missing or stores another
    /// membership than the writer's (none is right only for a PG that never changed).
    pub(super) fn membership_unsettled(&self) -> Option<String> {
        for pg in self.writer.pgs() {
            if let Some(change) = self.writer.change(pg) {
                let joining = &self.nodes[change.joining.0 as usize - 1];
                let pg_ref = self.geometry.pg_ref(pg);
                let segment = joining.core().segment(&pg_ref);
                let newest = self.appended.iter().rev().find(|(_, a)| a.pg == pg).map(|(lsn, _)| *lsn);
                let others: Vec<String> = self
                    .writer
                    .members(pg)
                    .iter()
                    .map(|id| {
                        let scl = self.nodes[id.0 as usize - 1].core().segment(&pg_ref).map(|s| s.scl());
                        format!("{id}: SCL {scl:?} (writer: {:?})", self.writer.known_scl(pg, *id))
                    })
                    .collect();
                return Some(format!(
                    "{pg}: a membership change is still in progress: {change:?}, {:?}; the joining node's segment: \
                     {:?} (up: {}, hydrating: {}); the PG's newest record {newest:?}, VDL {}; members {}; divergence: {:?}",
                    self.writer.membership(pg),
                    segment.map(|s| (s.scl(), s.epochs(), s.membership())),
                    joining.up,
                    joining.is_hydrating(),
                    self.writer.vdl(),
                    others.join(", "),
                    self.divergence()
                ));
            }
            let membership = self.writer.membership(pg);
            if membership.is_joint() {
                return Some(format!("{pg}: the writer's membership is still joint: {membership:?}"));
            }
            let pg_ref = self.geometry.pg_ref(pg);
            // Nodes agree on the sets; the epoch a node stored them at may be an older one (a
            // recovered writer counts a PG's sets at its own epoch), and storing none is being
            // on placement.
            let placement = self.cluster.place(pg_ref.volume_id, pg);
            let on_placement = membership.current() == &placement && !membership.is_joint();
            let same_sets =
                |m: &Membership| m.current() == membership.current() && m.next() == membership.next();
            let live = membership
                .nodes()
                .into_iter()
                .map(|id| &self.nodes[id.0 as usize - 1])
                .filter(|n| n.up && !self.dead.contains(&n.id));
            for node in live {
                let Some(segment) = node.core().segment(&pg_ref) else {
                    if on_placement {
                        // Never changed: a member that has no segment is one the PG's records
                        // never reached (the convergence check asks for them where there are).
                        continue;
                    }
                    return Some(format!("{pg}: member {} holds no segment of {membership:?}", node.id));
                };
                if segment.epochs().volume > self.writer.epochs().volume {
                    // An abandoned takeover bumped it: it refuses this writer, which cannot tell it
                    // anything (a known limitation, not a membership one).
                    continue;
                }
                let stored = segment.membership();
                if !stored.as_ref().map_or(on_placement, same_sets) {
                    return Some(format!(
                        "{pg}: member {} stores membership {stored:?}, the writer has {membership:?}",
                        node.id
                    ));
                }
            }
        }
        None
    }
}
