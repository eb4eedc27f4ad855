//! The takeover's refill round, streamed: the records `core::recovery::fetches` says a write
//! quorum lacks are read from responders holding them and sent, in batches, to the members
//! lacking them.
//!
//! Bounds: at most `FETCHES_IN_FLIGHT_MAX` reads (one per source segment at a time, since a
//! `Records` answer does not name its range) and `BATCHES_IN_FLIGHT_MAX` batches in flight; no
//! read starts while `BATCHES_QUEUED_MAX` batches wait to be sent, so the payloads held stay
//! bounded whatever the window.
//!
//! Invariants: a record counts at a member only once that member holds it durably: it listed
//! it when gathered (a segment lists only flushed records) or acknowledged a batch carrying it.
//! A read that fails, or misses records, is asked again of the next source holding them; a
//! member that refuses a request for a PG gets nothing more of that PG.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::messages::{AppendBatch, ReadRecords, Records, BATCH_RECORDS_MAX};
use protocol::{Epochs, Lsn, LsnRange, Message, NodeId, PgId, Record};

use crate::core::recovery::{Fetch, PgEvidence};
use crate::core::VolumeGeometry;

/// Record bytes asked for per read of records to re-replicate.
pub(super) const FETCH_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// Reads of records to re-replicate in flight.
const FETCHES_IN_FLIGHT_MAX: usize = 16;
/// Re-replication batches in flight.
const BATCHES_IN_FLIGHT_MAX: usize = 64;
/// Batches built and not yet sent above which no further read starts.
const BATCHES_QUEUED_MAX: usize = 64;
/// Records per re-replication batch.
const BATCH_RECORDS: usize = 256;
const _: () = assert!(BATCH_RECORDS <= BATCH_RECORDS_MAX);

/// See the module docs.
#[derive(Debug)]
pub(super) struct Refill {
    geometry: VolumeGeometry,
    epochs: Epochs,
    /// Reads not yet asked, in order.
    pending: VecDeque<Fetch>,
    /// The read in flight at each (source, PG).
    asking: BTreeMap<(NodeId, PgId), Fetch>,
    /// Batches built, not yet sent.
    batches: VecDeque<(NodeId, AppendBatch)>,
    /// Batches in flight: (member, PG, last LSN) → the LSNs they carry.
    sent: BTreeMap<(NodeId, PgId, Lsn), Vec<Lsn>>,
    /// Every record to move: its PG and the members known to hold it durably.
    copies: BTreeMap<Lsn, (PgId, Vec<NodeId>)>,
    /// Members that refused a request for a PG.
    refused: BTreeSet<(NodeId, PgId)>,
}

impl Refill {
    pub(super) fn new(
        fetches: Vec<Fetch>,
        evidence: &BTreeMap<PgId, PgEvidence>,
        geometry: VolumeGeometry,
        epochs: Epochs,
    ) -> Refill {
        let mut copies = BTreeMap::new();
        for fetch in &fetches {
            for (lsn, _) in &fetch.wanted {
                let holders = evidence[&fetch.pg].records[lsn].holders.clone();
                copies.insert(*lsn, (fetch.pg, holders));
            }
        }
        Refill {
            geometry,
            epochs,
            pending: fetches.into(),
            asking: BTreeMap::new(),
            batches: VecDeque::new(),
            sent: BTreeMap::new(),
            copies,
            refused: BTreeSet::new(),
        }
    }

    /// Every record moved (or to be), with its PG and the members holding it now.
    pub(super) fn copies(&self) -> impl Iterator<Item = (PgId, &[NodeId])> {
        self.copies.values().map(|(pg, holders)| (*pg, holders.as_slice()))
    }

    /// The requests to send now: batches first (they free memory), then reads.
    pub(super) fn poll(&mut self) -> Vec<(NodeId, PgId, Message)> {
        let mut out = Vec::new();
        while self.sent.len() < BATCHES_IN_FLIGHT_MAX {
            let Some((node, batch)) = self.batches.pop_front() else { break };
            let pg = batch.pg.pg_id;
            if self.refused.contains(&(node, pg)) {
                continue;
            }
            let lsns: Vec<Lsn> = batch.records.iter().map(Record::lsn).collect();
            let last = *lsns.last().expect("a refill batch holds records");
            self.sent.insert((node, pg, last), lsns);
            out.push((node, pg, Message::AppendBatch(batch)));
        }
        while self.asking.len() < FETCHES_IN_FLIGHT_MAX && self.batches.len() < BATCHES_QUEUED_MAX {
            let Some((at, node)) = self.next_read() else { break };
            let fetch = self.pending.remove(at).expect("found above");
            let read = ReadRecords {
                pg: self.geometry.pg_ref(fetch.pg),
                epochs: self.epochs,
                range: fetch.range,
                bytes_max: FETCH_BYTES_MAX,
            };
            out.push((node, fetch.pg, Message::ReadRecords(read)));
            self.asking.insert((node, fetch.pg), fetch);
        }
        out
    }

    /// The first pending read with a source free to ask.
    fn next_read(&self) -> Option<(usize, NodeId)> {
        self.pending.iter().enumerate().find_map(|(at, fetch)| {
            let free = |n: &&NodeId| {
                !self.asking.contains_key(&(**n, fetch.pg)) && !self.refused.contains(&(**n, fetch.pg))
            };
            fetch.sources.iter().find(free).map(|n| (at, *n))
        })
    }

    /// `node` answered its read: the records wanted go into batches for the members lacking
    /// them; the rest are read on (a page cut short) or asked of another source.
    pub(super) fn fetched(&mut self, node: NodeId, answer: Records) {
        let pg = answer.pg.pg_id;
        let Some(fetch) = self.asking.remove(&(node, pg)) else { return };
        let mut wanted: BTreeMap<Lsn, Vec<NodeId>> = fetch.wanted.into_iter().collect();
        let mut per_member: BTreeMap<NodeId, Vec<Record>> = BTreeMap::new();
        let last = answer.records.last().map(Record::lsn);
        for record in answer.records {
            let Some(members) = wanted.remove(&record.lsn()) else { continue };
            for member in members.into_iter().filter(|m| !self.refused.contains(&(*m, pg))) {
                per_member.entry(member).or_default().push(record.clone());
            }
        }
        for (member, records) in per_member {
            for run in chained_runs(records) {
                for chunk in run.chunks(BATCH_RECORDS) {
                    self.batches.push_back((member, self.batch(pg, chunk.to_vec())));
                }
            }
        }
        let sources = fetch.sources;
        match last.filter(|_| answer.more) {
            // Cut short: what lies beyond the page is read on from the same source, what it
            // skipped below is asked of another.
            Some(last) => {
                let beyond = wanted.split_off(&Lsn(last.0.saturating_add(1)));
                self.retry(pg, sources.clone(), Some(node), wanted);
                let mut first = vec![node];
                first.extend(sources.into_iter().filter(|n| *n != node));
                self.retry(pg, first, None, beyond);
            }
            None => self.retry(pg, sources, Some(node), wanted),
        }
    }

    /// `node`'s read of `pg` will not be answered: its records are asked of the next source.
    pub(super) fn fetch_failed(&mut self, node: NodeId, pg: PgId) {
        if let Some(fetch) = self.asking.remove(&(node, pg)) {
            self.retry(pg, fetch.sources, Some(node), fetch.wanted.into_iter().collect());
        }
    }

    pub(super) fn acked(&mut self, node: NodeId, pg: PgId, last: Lsn) {
        for lsn in self.sent.remove(&(node, pg, last)).unwrap_or_default() {
            if let Some((_, holders)) = self.copies.get_mut(&lsn) {
                if !holders.contains(&node) {
                    holders.push(node);
                }
            }
        }
    }

    pub(super) fn batch_failed(&mut self, node: NodeId, pg: PgId, last: Lsn) {
        self.sent.remove(&(node, pg, last));
    }

    /// `node` refused a request for `pg` (the caller stops waiting for the others): nothing
    /// more of that PG is asked of it or sent to it.
    pub(super) fn refused(&mut self, node: NodeId, pg: PgId) {
        self.refused.insert((node, pg));
        self.sent.retain(|(n, p, _), _| (*n, *p) != (node, pg));
        self.batches.retain(|(n, b)| (*n, b.pg.pg_id) != (node, pg));
        self.fetch_failed(node, pg);
    }

    /// Queues a read of `wanted` (first in line) from `sources` less `tried`; with no source
    /// left they stay short, which the round's end reports.
    fn retry(
        &mut self,
        pg: PgId,
        mut sources: Vec<NodeId>,
        tried: Option<NodeId>,
        wanted: BTreeMap<Lsn, Vec<NodeId>>,
    ) {
        sources.retain(|n| Some(*n) != tried);
        let (Some(first), Some(last)) = (wanted.keys().next(), wanted.keys().next_back()) else { return };
        if sources.is_empty() {
            return;
        }
        let range = LsnRange::new(Lsn(first.0 - 1), *last).expect("LSNs are above zero");
        self.pending.push_front(Fetch { pg, range, sources, wanted: wanted.into_iter().collect() });
    }

    fn batch(&self, pg: PgId, records: Vec<Record>) -> AppendBatch {
        // The refill is what makes the plan's VDL durable, so it must not tell a node that
        // VDL yet: a later recovery would take every record below it as durable.
        AppendBatch {
            pg: self.geometry.pg_ref(pg),
            epochs: self.epochs,
            vdl: Lsn::ZERO,
            pg_vdl_lsn: Lsn::ZERO,
            page_bytes: self.geometry.page_bytes,
            records,
        }
    }
}

/// `records` (in LSN order) cut where one does not chain to the previous by `prev_pg_lsn`: a
/// batch must be one chain.
fn chained_runs(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut runs: Vec<Vec<Record>> = Vec::new();
    for record in records {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|r| r.lsn() == record.meta().prev_pg_lsn) => run.push(record),
            _ => runs.push(vec![record]),
        }
    }
    runs
}
