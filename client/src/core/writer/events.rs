//! The driver's inputs: replies (each to its handler), refusals, nodes going down and up, and
//! ticks with their periodic work (overdue resends, idle-PG heartbeats).

use protocol::messages::{ErrorCode, ErrorReply};
use protocol::{Lsn, Message, NodeId, PgId};

use super::WriterCore;

impl WriterCore {
    /// A reply from `node`.
    pub fn handle_reply(&mut self, node: NodeId, reply: Message) {
        match reply {
            Message::AppendAck(ack) => self.handle_ack(node, ack),
            Message::TruncateAck(ack) => self.handle_truncate_ack(node, ack),
            // A member that missed this writer's opening (it was down) reports where it
            // stands, so it is repaired even if nothing is in flight for it.
            Message::EpochAck(ack) => self.note_scl(ack.pg.pg_id, node, ack.scl),
            Message::FloorAck(ack) => {
                self.note_scl(ack.pg.pg_id, node, ack.scl);
                // A node that restarted forgot the VDL an idle PG's heartbeat told it, and is
                // told again only when VDL moves: tell it now (readers pick their read point
                // from it). A busy PG's batches carry VDL anyway.
                let forgot = self
                    .pgs
                    .get(&ack.pg.pg_id)
                    .is_some_and(|s| s.open && s.members.contains(node) && ack.vdl < s.told_vdl);
                if forgot {
                    let heartbeat = self.heartbeat(ack.pg.pg_id);
                    self.push(node, heartbeat);
                }
                // An operator asked a node's admin port to have a node replaced.
                if let Some(asked) = ack.replace {
                    self.replacement_asked(asked);
                }
            }
            Message::MembershipAck(ack) => self.handle_membership_ack(node, ack),
            Message::Error(error) => self.handle_error(node, error),
            other => tracing::debug!(%node, kind = other.type_code(), "unexpected reply"),
        }
    }

    pub(super) fn note_scl(&mut self, pg: PgId, node: NodeId, reported: Lsn) {
        if let Some(state) = self.pgs.get_mut(&pg) {
            let scl = state.scl.entry(node).or_insert(Lsn::ZERO);
            *scl = (*scl).max(reported);
        }
    }

    fn handle_error(&mut self, node: NodeId, error: ErrorReply) {
        self.refusals.count(error.code);
        let pg = error.pg.pg_id;
        match error.code {
            // Only a newer volume epoch fences this writer; a segment retired by a membership
            // change refuses too, and is simply no longer written.
            ErrorCode::StaleEpoch if error.epochs.volume > self.epochs.volume => {
                let members = self.membership(pg);
                let stale = self.stale.entry(pg).or_default();
                if !stale.contains(&node) {
                    stale.push(node);
                }
                if members.fenced_by(stale) {
                    self.fenced = true;
                }
            }
            // The volume's ACL no longer gives this writer `write` (or it never did), or the
            // volume was deleted: once as many nodes refuse as would fence it, no write quorum
            // is left.
            code if super::refuses_for_good(code) => {
                let members = self.membership(pg);
                let refused = self.refused.entry(pg).or_default();
                if !refused.contains(&node) {
                    refused.push(node);
                }
                if members.fenced_by(refused) && self.refused_by.is_none() {
                    tracing::warn!(%node, message = %error.message, "the nodes refuse this writer the volume");
                    self.refused_by = Some(error.code);
                }
            }
            ErrorCode::EpochNotOpen if self.pgs.get(&pg).is_some_and(|s| s.members.contains(node)) => {
                // The node missed this writer's recovery: open its segment, then resend.
                self.transmit_open(pg, node);
                self.resend_to(pg, node);
            }
            code => tracing::debug!(%node, ?code, message = %error.message, "append refused"),
        }
    }

    /// `node` is unreachable: stop sending to it (its PGs still reach quorum without it).
    pub fn handle_node_down(&mut self, node: NodeId) {
        if !self.down.contains(&node) {
            self.down.push(node);
            self.down_since.insert(node, self.ticks);
        }
        self.transmits.retain(|t| t.node != node);
    }

    /// `node` is reachable again: resend what it has not acknowledged.
    pub fn handle_node_up(&mut self, node: NodeId) {
        self.down.retain(|n| *n != node);
        self.down_since.remove(&node);
        self.tell_returned(node);
        let pgs: Vec<PgId> =
            self.pgs.iter().filter(|(_, s)| s.members.contains(node)).map(|(pg, _)| *pg).collect();
        for pg in pgs {
            if !self.pgs[&pg].open || self.truncation.is_some() {
                self.transmit_open(pg, node);
            }
            self.resend_to(pg, node);
        }
    }

    /// Periodic work: resends what has waited too long for a quorum, tells idle PGs the VDL,
    /// decides repairs.
    pub fn handle_tick(&mut self) {
        self.ticks += 1;
        self.resend_overdue();
        self.tick_changes();
        self.plan_repairs();
        let vdl = self.ladder.vdl();
        if self.read_points.tick(vdl) {
            self.report_floor();
        }
        let idle: Vec<PgId> = self
            .pgs
            .iter()
            .filter(|(_, s)| s.open && s.in_flight.is_empty() && s.unsent.is_empty() && s.told_vdl < vdl)
            .map(|(pg, _)| *pg)
            .collect();
        for pg in idle {
            let heartbeat = self.heartbeat(pg);
            for node in self.pgs[&pg].members.nodes() {
                self.push(node, heartbeat.clone());
            }
            self.pgs.get_mut(&pg).expect("known").told_vdl = vdl;
        }
    }

    fn resend_overdue(&mut self) {
        let after = self.limits.resend_after_ticks;
        let mut overdue_batches = Vec::new();
        let mut overdue_opens = Vec::new();
        for (pg, state) in &mut self.pgs {
            for (last, batch) in &mut state.in_flight {
                batch.age_ticks += 1;
                if batch.age_ticks >= after {
                    batch.age_ticks = 0;
                    overdue_batches.push((*pg, *last));
                }
            }
            if !state.open {
                overdue_opens.push(*pg);
            } else if state.opening_acks.len() < state.members.nodes().len() {
                // A member that missed the opening (down, or its reply lost) would otherwise
                // hear of it only from a batch it refuses, and an idle PG sends none.
                state.open_age_ticks += 1;
                if state.open_age_ticks >= after {
                    state.open_age_ticks = 0;
                    overdue_opens.push(*pg);
                }
            }
        }
        for (pg, last) in overdue_batches {
            self.send_batch(pg, last, None);
        }
        for pg in overdue_opens {
            let waiting: Vec<NodeId> = self.pgs[&pg]
                .members
                .nodes()
                .into_iter()
                .filter(|n| !self.pgs[&pg].opening_acks.contains(n))
                .collect();
            for node in waiting {
                self.transmit_open(pg, node);
            }
        }
    }
}
