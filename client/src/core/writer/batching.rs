//! Batching and quorum counting: a PG's queued records go out as batches under the batching
//! rule, and a batch acknowledged by a write quorum is durable and moves the ladder.

use protocol::messages::{AppendAck, AppendBatch};
use protocol::{Lsn, Message, NodeId, PgId, Record};

use super::{Batch, WriterCore};

impl WriterCore {
    /// Sends batches from `pg`'s queue while the batching rule allows.
    pub(super) fn flush_pg(&mut self, pg: PgId) {
        loop {
            let limits = self.limits;
            let state = self.pgs.get_mut(&pg).expect("known PG");
            let full_batch_ready = state.unsent_bytes >= limits.batch_bytes_max
                || state.unsent.len() >= limits.batch_records_max;
            let may_send = state.open
                && !state.unsent.is_empty()
                && state.in_flight.len() < limits.batches_in_flight_max
                && (state.in_flight.is_empty() || full_batch_ready);
            if !may_send {
                return;
            }
            let mut records = Vec::new();
            let mut bytes = 0;
            while let Some(next) = state.unsent.front() {
                let fits = records.is_empty()
                    || (bytes + next.encoded_len() <= limits.batch_bytes_max
                        && records.len() < limits.batch_records_max);
                if !fits {
                    break;
                }
                bytes += next.encoded_len();
                records.push(state.unsent.pop_front().expect("front checked"));
            }
            state.unsent_bytes -= bytes;
            let last = records.last().expect("non-empty").lsn();
            state.in_flight.insert(last, Batch { records, acked: Vec::new(), age_ticks: 0 });
            self.send_batch(pg, last, None);
        }
    }

    /// Sends the in-flight batch ending at `last` to every member (or just `only`).
    pub(super) fn send_batch(&mut self, pg: PgId, last: Lsn, only: Option<NodeId>) {
        let state = &self.pgs[&pg];
        let batch = &state.in_flight[&last];
        let message = Message::AppendBatch(AppendBatch {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            vdl: self.ladder.vdl(),
            pg_vdl_lsn: state.vdl_lsn,
            page_bytes: self.geometry.page_bytes,
            records: batch.records.clone(),
        });
        let targets: Vec<NodeId> = state
            .members
            .nodes()
            .into_iter()
            .filter(|n| only.is_none_or(|o| o == *n) && !batch.acked.contains(n))
            .collect();
        for node in targets {
            self.push(node, message.clone());
        }
    }

    pub(super) fn handle_ack(&mut self, node: NodeId, ack: AppendAck) {
        let pg = ack.pg.pg_id;
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        let scl = state.scl.entry(node).or_insert(Lsn::ZERO);
        *scl = (*scl).max(ack.scl);
        // A first writer's segment is open once it takes a batch (a recovered writer's, once it
        // acknowledged every truncation range).
        if self.truncation.is_none() && !state.opening_acks.contains(&node) {
            self.opened_by(pg, node);
        }
        if ack.last_lsn == Lsn::ZERO {
            return;
        }
        let Some(state) = self.pgs.get_mut(&pg) else { return };
        let Some(batch) = state.in_flight.get_mut(&ack.last_lsn) else { return };
        if !batch.acked.contains(&node) {
            batch.acked.push(node);
        }
        let members = state.members;
        if self.quorum_met(&members, &self.pgs[&pg].in_flight[&ack.last_lsn].acked) {
            self.batch_durable(pg, ack.last_lsn);
        }
    }

    /// A batch reached a write quorum: its records are durable; move the ladder.
    pub(super) fn batch_durable(&mut self, pg: PgId, last: Lsn) {
        let state = self.pgs.get_mut(&pg).expect("known PG");
        let batch = state.in_flight.remove(&last).expect("in flight");
        // Batches may become durable out of order: everything before the oldest batch still in
        // flight is durable.
        let through = match state.in_flight.values().next() {
            Some(oldest) => oldest.records[0].meta().prev_pg_lsn,
            None => last,
        };
        state.durable_through = state.durable_through.max(through);
        let lsns: Vec<Lsn> = batch.records.iter().map(Record::lsn).collect();
        let covered = self.ladder.mark_durable(lsns.into_iter());
        for (covered_pg, newest) in covered {
            if let Some(s) = self.pgs.get_mut(&covered_pg) {
                s.vdl_lsn = s.vdl_lsn.max(newest);
            }
        }
        self.flush_pg(pg);
    }

    pub(super) fn resend_to(&mut self, pg: PgId, node: NodeId) {
        let lasts: Vec<Lsn> = self.pgs[&pg].in_flight.keys().copied().collect();
        for last in lasts {
            self.send_batch(pg, last, Some(node));
        }
    }
}
