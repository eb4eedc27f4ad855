//! Membership changes of the writer's PGs (`docs/membership.md`, Aurora 2018): replacing one
//! segment F by G moves a PG from ABCDEF through the joint step {ABCDEF, ABCDEG} to ABCDEG, or
//! back to ABCDEF if F answers again before G is complete. Every step is a `MembershipChange`
//! stored by the nodes of both sets; a step counts once a write quorum of the sets it must
//! reach stored it.
//!
//! Why the writer's counting is always safe: from the moment a change starts, batches count
//! only at a write quorum of *both* sets (stricter than either), and that stays so until the
//! final (or reversing) step itself is at a write quorum of the set that remains. A recovering
//! writer reads a read quorum of every set of the newest membership it finds (`takeover`), so
//! it sees the newest step that counted.
//!
//! Who decides: a node unreachable for `WriterLimits::replace_after_ticks` is replaced in every
//! PG it serves; `WriterCore::replace_node` replaces one at once (an operator's decision, never
//! reversed). The new member is the highest-scoring spare node of the leaving node's AZ
//! (`ClusterMap::replacement`), so a PG keeps two segments per AZ; with no spare there is no
//! change and the PG stays at five until the node returns.

use protocol::messages::{MembershipAck, MembershipChange};
use protocol::placement::{ClusterMap, MapChangeError};
use protocol::quorum::{Membership, SegmentSet, WRITE_QUORUM};
use protocol::{Epoch, Lsn, Message, NodeId, PgId};

use super::WriterCore;

/// One PG's change in progress.
#[derive(Clone, Debug)]
pub(super) struct Change {
    pub(super) leaving: NodeId,
    pub(super) joining: NodeId,
    pub(super) step: Step,
    /// The membership the current step stores.
    pub(super) target: Membership,
    /// Nodes that stored it.
    pub(super) acks: Vec<NodeId>,
    /// Ticks since the step was last sent to the nodes that have not stored it.
    pub(super) age_ticks: u32,
    /// Set once the joint step counted: the PG's last LSN then. The joining segment is
    /// complete once its SCL reaches it (every record before the change is then on it).
    pub(super) complete_at: Option<Lsn>,
    /// An operator asked for it: not reversed when the leaving node returns.
    pub(super) forced: bool,
}

/// The step a change is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Storing {old, new}; then waiting for the joining segment to be complete.
    Joint,
    /// Storing {new}.
    Final,
    /// Storing {old}: the leaving node came back first.
    Reverse,
}

/// What the writer reports of a PG's membership, for status and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeState {
    pub leaving: NodeId,
    pub joining: NodeId,
    /// True once the joint step counted (a write quorum of both sets stored it).
    pub joint_counted: bool,
    /// True while going back to the old set.
    pub reversing: bool,
}

impl WriterCore {
    /// Replaces `node` in every PG it serves now, as an operator decided: the change is not
    /// reversed if the node answers again. Returns the PGs whose change started (a PG already
    /// changing, or with no spare node in `node`'s AZ, is left as it is).
    pub fn replace_node(&mut self, node: NodeId) -> Vec<PgId> {
        if !self.retired.contains(&node) {
            self.retired.push(node);
        }
        self.replace_everywhere(node, true)
    }

    /// Takes a newer cluster map (etcd's, as it changes): only one that moves no PG
    /// (`ClusterMap::check_change`: nodes are added as spares). Returns the new nodes. A node an
    /// operator asked to replace whose PGs found no spare is replaced in them now, if the new
    /// map gives one.
    pub fn handle_map(&mut self, map: ClusterMap) -> Result<Vec<NodeId>, MapChangeError> {
        let added = self.cluster.check_change(&map)?;
        self.cluster = map;
        if !added.is_empty() {
            self.no_spare.clear();
            for node in self.retired.clone() {
                self.replace_everywhere(node, true);
            }
        }
        Ok(added)
    }

    /// A node's floor ack passes on an operator's request to replace `node` (`POST
    /// /replace-node` on its admin port): done once, as `replace_node`.
    pub(super) fn replacement_asked(&mut self, node: NodeId) {
        if self.cluster.node(node).is_some() && !self.retired.contains(&node) {
            tracing::info!(%node, "an operator asked to replace a node");
            self.replace_node(node);
        }
    }

    /// The PG's quorum sets as this writer counts them.
    pub fn membership(&self, pg: PgId) -> Membership {
        self.pgs.get(&pg).map_or_else(
            || Membership::stable(Epoch::INITIAL, self.cluster.place(self.geometry.volume, pg)),
            |s| s.members,
        )
    }

    /// The change in progress in `pg`, if any.
    pub fn change(&self, pg: PgId) -> Option<ChangeState> {
        let change = self.pgs.get(&pg)?.change.as_ref()?;
        Some(ChangeState {
            leaving: change.leaving,
            joining: change.joining,
            joint_counted: change.complete_at.is_some(),
            reversing: change.step == Step::Reverse,
        })
    }

    /// Starts replacing `node` in each open PG it serves that is not changing already.
    fn replace_everywhere(&mut self, node: NodeId, forced: bool) -> Vec<PgId> {
        let pgs: Vec<PgId> = self
            .pgs
            .iter()
            .filter(|(_, s)| {
                s.open && s.change.is_none() && !s.members.is_joint() && s.members.contains(node)
            })
            .map(|(pg, _)| *pg)
            .collect();
        pgs.into_iter().filter(|pg| self.start_change(*pg, node, forced)).collect()
    }

    fn start_change(&mut self, pg: PgId, leaving: NodeId, forced: bool) -> bool {
        let state = &self.pgs[&pg];
        let old = *state.members.current();
        let mut excluded: Vec<NodeId> = self.down.clone();
        excluded.extend(self.retired.iter().copied());
        excluded.extend(self.held_retired.iter().filter(|(p, _)| *p == pg).map(|(_, n)| *n));
        let Some(joining) = self.cluster.replacement(self.geometry.volume, pg, &old, leaving, &excluded)
        else {
            if !self.no_spare.contains(&(pg, leaving)) {
                self.no_spare.push((pg, leaving));
                tracing::warn!(%pg, %leaving, "no spare node in the leaving node's zone: the PG stays without it");
            }
            return false;
        };
        let new = SegmentSet::new(old.members().map(|n| if n == leaving { joining } else { n }))
            .expect("the joining node is not in the set");
        let epoch = self.next_membership_epoch();
        let joint = Membership::transition(epoch, old, new).expect("the sets differ");
        tracing::info!(%pg, %leaving, %joining, forced, "membership change: joint step");
        let state = self.pgs.get_mut(&pg).expect("known PG");
        state.members = joint;
        state.change = Some(Change {
            leaving,
            joining,
            step: Step::Joint,
            target: joint,
            acks: Vec::new(),
            age_ticks: 0,
            complete_at: None,
            forced,
        });
        self.send_step(pg);
        // The joining segment takes every batch from now on; what was sent before reaches it
        // by these resends, the older records by hydration and gossip.
        self.transmit_open(pg, joining);
        self.resend_to(pg, joining);
        true
    }

    /// A membership epoch above every one this writer used, and above every one an older
    /// writer could have used (those carry a lower volume epoch in their high bits).
    pub(super) fn next_membership_epoch(&mut self) -> Epoch {
        let floor = self.epochs.volume.0 << 32;
        let next = Epoch(self.epochs.membership.0.max(floor) + 1);
        self.epochs.membership = next;
        next
    }

    /// Sends the current step to every node that should store it and has not.
    fn send_step(&mut self, pg: PgId) {
        let state = &self.pgs[&pg];
        let Some(change) = &state.change else { return };
        let message = Message::MembershipChange(MembershipChange {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            membership: change.target,
        });
        // Every node of the joint sets hears each step: the leaving (or joining) one learns it
        // is out, if it is reachable.
        let mut nodes = state.members.nodes();
        for node in [change.leaving, change.joining] {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        let targets: Vec<NodeId> = nodes.into_iter().filter(|n| !change.acks.contains(n)).collect();
        for node in targets {
            self.push(node, message.clone());
        }
    }

    pub(super) fn handle_membership_ack(&mut self, node: NodeId, ack: MembershipAck) {
        let pg = ack.pg.pg_id;
        let Some(members) = self.pgs.get(&pg).map(|s| s.members) else { return };
        if members.contains(node) {
            self.note_scl(pg, node, ack.scl);
        }
        let current = members.epoch();
        self.untold.retain(|(p, n)| !(*p == pg && *n == node && ack.membership_epoch >= current));
        let Some(change) = self.pgs.get_mut(&pg).and_then(|s| s.change.as_mut()) else { return };
        if ack.membership_epoch >= change.target.epoch() && !change.acks.contains(&node) {
            change.acks.push(node);
        }
        self.advance_change(pg);
    }

    /// Moves `pg`'s change on as far as its acks and the joining segment's SCL allow.
    pub(super) fn advance_change(&mut self, pg: PgId) {
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        let Some(change) = state.change.as_mut() else { return };
        let counted = |set: &SegmentSet, acks: &[NodeId]| set.count_in(acks) >= WRITE_QUORUM;
        match change.step {
            Step::Joint => {
                if change.complete_at.is_none() && state.members.sets().all(|set| counted(set, &change.acks))
                {
                    change.complete_at = Some(state.last_lsn);
                    tracing::info!(%pg, complete_at = %state.last_lsn, "membership change: joint step counted");
                }
                let returned = !change.forced && !self.down.contains(&change.leaving);
                // A joining node lost for as long as a member is replaced after: back to the
                // old set (the leaving node, if it is gone too, is then replaced anew).
                let joining_lost = self.limits.replace_after_ticks.is_some_and(|after| {
                    self.down_since
                        .get(&change.joining)
                        .is_some_and(|since| self.ticks - since >= u64::from(after))
                });
                let joining_scl = state.scl.get(&change.joining).copied().unwrap_or(Lsn::ZERO);
                let complete = change.complete_at.is_some_and(|at| joining_scl >= at);
                let (old, new) = (*state.members.current(), *state.members.next().expect("joint"));
                let next = if complete {
                    Some((Step::Final, new))
                } else if (returned || joining_lost) && change.complete_at.is_some() {
                    Some((Step::Reverse, old))
                } else {
                    None
                };
                if let Some((step, set)) = next {
                    let epoch = self.next_membership_epoch();
                    let state = self.pgs.get_mut(&pg).expect("known PG");
                    let change = state.change.as_mut().expect("changing");
                    tracing::info!(%pg, ?step, "membership change: next step");
                    change.step = step;
                    change.target = Membership::stable(epoch, set);
                    change.acks.clear();
                    change.age_ticks = 0;
                    self.send_step(pg);
                }
            }
            Step::Final | Step::Reverse => {
                if !counted(change.target.current(), &change.acks) {
                    return;
                }
                tracing::info!(%pg, step = ?change.step, "membership change: done");
                let gone = if change.step == Step::Final { change.leaving } else { change.joining };
                self.held_retired.insert((pg, gone));
                // Nodes that did not store the step (down, or their answer lost) are told until
                // they do: a member keeping the joint sets would gossip with the node that left,
                // and the node that left would go on gossiping a segment nobody counts.
                let mut untold: Vec<NodeId> = change.target.nodes();
                untold.push(gone);
                for node in untold {
                    if !change.acks.contains(&node) && !self.untold.contains(&(pg, node)) {
                        self.untold.push((pg, node));
                    }
                }
                state.members = change.target;
                state.change = None;
                state.scl.remove(&gone);
                state.opening_acks.retain(|n| *n != gone);
                for batch in state.in_flight.values_mut() {
                    batch.acked.retain(|n| *n != gone);
                }
                // Batches that waited for the stricter joint count may be durable now.
                let members = state.members;
                let lasts: Vec<Lsn> = state.in_flight.keys().copied().collect();
                for last in lasts {
                    let ready = self.pgs[&pg]
                        .in_flight
                        .get(&last)
                        .is_some_and(|b| self.quorum_met(&members, &b.acked));
                    if ready {
                        self.batch_durable(pg, last);
                    }
                }
            }
        }
    }

    /// A recovered writer's memberships: its membership epoch, volume epoch in its high bits,
    /// is above any step an older writer stored, seen by recovery or not, so every member takes
    /// its requests; and every member of every PG is told the PG's sets again at that epoch (one
    /// small message per segment, once per recovery), so a step the old writer left half-stored
    /// is overwritten everywhere, also on a node that was away during recovery.
    pub(super) fn restore_memberships(&mut self, adopted: Vec<(PgId, Membership)>) {
        let epoch = self.next_membership_epoch();
        for state in self.pgs.values_mut() {
            state.members = state.members.at(epoch);
        }
        for (pg, membership) in adopted {
            if let Some(state) = self.pgs.get_mut(&pg) {
                state.members = membership.at(epoch);
                state.change = adopted_change(membership.at(epoch));
            }
        }
        let stable = self.pgs.iter().filter(|(_, s)| s.change.is_none());
        let untold: Vec<(PgId, NodeId)> =
            stable.flat_map(|(pg, s)| s.members.nodes().into_iter().map(move |node| (*pg, node))).collect();
        self.untold.extend(untold);
    }

    /// `node` answers again. It may have come back empty (a lost disk), or holding a step an
    /// older writer never counted (it was away during recovery): each PG whose membership was
    /// changed or adopted tells it its sets again.
    pub(super) fn tell_returned(&mut self, node: NodeId) {
        for (pg, state) in &self.pgs {
            let changed = state.members.epoch() > Epoch::INITIAL && state.change.is_none();
            if changed && state.members.contains(node) && !self.untold.contains(&(*pg, node)) {
                self.untold.push((*pg, node));
            }
        }
        self.tell_untold(Some(node));
    }

    /// Sends the PG's current membership to `node` wherever a finished change has not been
    /// stored by it (`None`: to every such node that is not down).
    pub(super) fn tell_untold(&mut self, node: Option<NodeId>) {
        let pairs: Vec<(PgId, NodeId)> = self
            .untold
            .iter()
            .copied()
            .filter(|(_, n)| node.is_none_or(|only| only == *n) && !self.down.contains(n))
            .collect();
        for (pg, node) in pairs {
            let message = Message::MembershipChange(MembershipChange {
                pg: self.geometry.pg_ref(pg),
                epochs: self.epochs,
                membership: self.pgs[&pg].members,
            });
            self.push(node, message);
        }
    }

    /// Periodic work of changes: starts the replacement of nodes down too long, resends steps
    /// not yet stored, asks the joining segment where it stands.
    pub(super) fn tick_changes(&mut self) {
        if self.ticks % u64::from(self.limits.resend_after_ticks.max(1)) == 0 {
            self.tell_untold(None);
        }
        if let Some(after) = self.limits.replace_after_ticks {
            let overdue: Vec<NodeId> = self
                .down_since
                .iter()
                .filter(|(_, since)| self.ticks.saturating_sub(**since) >= u64::from(after))
                .map(|(node, _)| *node)
                .collect();
            for node in overdue {
                self.replace_everywhere(node, false);
            }
        }
        let changing: Vec<PgId> =
            self.pgs.iter().filter(|(_, s)| s.change.is_some()).map(|(pg, _)| *pg).collect();
        for pg in changing {
            self.advance_change(pg);
            let after = self.limits.resend_after_ticks;
            let Some(change) = self.pgs.get_mut(&pg).and_then(|s| s.change.as_mut()) else { continue };
            change.age_ticks += 1;
            if change.age_ticks < after {
                continue;
            }
            change.age_ticks = 0;
            let joining = change.joining;
            let waiting_for_joining = change.step == Step::Joint && change.complete_at.is_some();
            self.send_step(pg);
            if waiting_for_joining {
                let heartbeat = self.heartbeat(pg);
                self.push(joining, heartbeat);
            }
        }
    }

    /// True if `acked` makes a batch durable under `members`. The planted bug (tests only)
    /// counts a change's new set alone.
    pub(super) fn quorum_met(&self, members: &Membership, acked: &[NodeId]) -> bool {
        match members.next() {
            Some(next) if self.limits.plant_change_counts_new_set_only => {
                next.count_in(acked) >= WRITE_QUORUM
            }
            _ => members.write_quorum_met(acked),
        }
    }
}

/// A joint membership recovery found, taken up as a change under way (completed, unless its
/// joining node is lost: then it goes back, as any change does); `None` for one set.
fn adopted_change(membership: Membership) -> Option<Change> {
    let (current, next) = (membership.current(), membership.next()?);
    let leaving = current.members().iter().copied().find(|n| !next.contains(*n))?;
    let joining = next.members().iter().copied().find(|n| !current.contains(*n))?;
    Some(Change {
        leaving,
        joining,
        step: Step::Joint,
        target: membership,
        acks: Vec::new(),
        age_ticks: 0,
        complete_at: None,
        // Why it started is not known.
        forced: true,
    })
}
