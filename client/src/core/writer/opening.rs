//! Creating and opening PGs: new PGs are created in order and opened at this writer's epoch
//! (an empty batch, or a recovered writer's truncation ranges) until a write quorum acknowledged.

use std::collections::{BTreeMap, HashMap, VecDeque};

use protocol::messages::{AppendBatch, EpochBump, Truncate, TruncateAck};
use protocol::quorum::Membership;
use protocol::{Epoch, Epochs, Lsn, Message, NodeId, PgId};

use super::{PgState, WriterCore};

impl WriterCore {
    /// PGs are created in order, so recovery can find them all: opening PG `pg` opens every
    /// lower one that does not exist yet.
    pub(super) fn ensure_pgs_through(&mut self, pg: PgId) {
        for id in 0..=pg.0 {
            if !self.pgs.contains_key(&PgId(id)) {
                let state = self.new_pg(PgId(id), false, Lsn::ZERO);
                self.pgs.insert(PgId(id), state);
                self.send_open(PgId(id));
            }
        }
    }

    pub(super) fn new_pg(&self, pg: PgId, open: bool, newest: Lsn) -> PgState {
        PgState {
            members: Membership::stable(Epoch::INITIAL, self.cluster.place(self.geometry.volume, pg)),
            change: None,
            open,
            opening_acks: Vec::new(),
            last_lsn: newest,
            vdl_lsn: newest,
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            in_flight: BTreeMap::new(),
            durable_through: newest,
            scl: HashMap::new(),
            told_vdl: Lsn::ZERO,
            open_age_ticks: 0,
            truncate_acks: HashMap::new(),
        }
    }

    /// A new PG's segments: at the first epoch an empty batch creates them; later, the
    /// writer's epoch and truncation range open them.
    fn send_open(&mut self, pg: PgId) {
        for node in self.pgs[&pg].members.nodes() {
            self.transmit_open(pg, node);
        }
    }

    pub(super) fn transmit_open(&mut self, pg: PgId, node: NodeId) {
        let pg_ref = self.geometry.pg_ref(pg);
        match self.truncation {
            None => self.push(node, self.heartbeat(pg)),
            Some(range) => {
                self.push(node, Message::EpochBump(EpochBump { pg: pg_ref, epochs: self.epochs }));
                for (volume, range) in self.earlier_truncations.clone() {
                    let epochs = Epochs { volume, ..self.epochs };
                    self.push(node, Message::Truncate(Truncate { pg: pg_ref, epochs, range }));
                }
                self.push(node, Message::Truncate(Truncate { pg: pg_ref, epochs: self.epochs, range }));
            }
        }
    }

    pub(super) fn heartbeat(&self, pg: PgId) -> Message {
        let pg_vdl_lsn = self.pgs.get(&pg).map_or(Lsn::ZERO, |s| s.vdl_lsn);
        let batch = AppendBatch {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            vdl: self.ladder.vdl(),
            pg_vdl_lsn,
            page_bytes: self.geometry.page_bytes,
            records: Vec::new(),
        };
        Message::AppendBatch(batch)
    }

    pub(super) fn handle_truncate_ack(&mut self, node: NodeId, ack: TruncateAck) {
        let Some(own) = self.truncation else { return };
        let pg = ack.pg.pg_id;
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        let acked = state.truncate_acks.entry(node).or_default();
        if !acked.contains(&ack.range) {
            acked.push(ack.range);
        }
        let all = std::iter::once(own).chain(self.earlier_truncations.iter().map(|(_, r)| *r));
        let all_acked = all.into_iter().all(|range| acked.contains(&range));
        if all_acked {
            self.opened_by(pg, node);
        }
    }

    pub(super) fn opened_by(&mut self, pg: PgId, node: NodeId) {
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        if !state.opening_acks.contains(&node) {
            state.opening_acks.push(node);
        }
        if !state.open && state.members.write_quorum_met(&state.opening_acks) {
            state.open = true;
            self.flush_pg(pg);
        }
    }
}
