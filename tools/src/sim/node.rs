//! A simulated storage node: the real `storaged` core over a disk that keeps what was flushed
//! and loses what was not when the node crashes (FoundationDB's AsyncFileNonDurable model), and
//! that can rot: a rotten entry is skipped at replay, as the real replay skips an entry whose
//! checksum fails.

use protocol::messages::Records;
use protocol::{AzId, Message, NodeId, PgRef};
use storaged::core::{
    EntryBody, JournalEntry, Limits, Location, NodeCore, ReadPlan, RecordsAnswer, RequestId,
};

/// One entry the disk holds.
#[derive(Clone, Debug)]
struct Stored {
    pg: PgRef,
    body: EntryBody,
    location: Location,
    rotten: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct SimNode {
    pub id: NodeId,
    pub up: bool,
    /// Incremented at every crash: completions of an earlier life are ignored.
    pub life: u64,
    core: NodeCore,
    durable: Vec<Stored>,
    /// The group being flushed: lost if the node crashes first.
    flushing: Vec<JournalEntry>,
    next_request: u64,
    /// Which writer generation sent each request whose reply the core holds.
    senders: std::collections::HashMap<RequestId, u32>,
}

impl SimNode {
    pub fn new(id: NodeId) -> SimNode {
        SimNode {
            id,
            up: true,
            life: 0,
            core: new_core(id),
            durable: Vec::new(),
            flushing: Vec::new(),
            next_request: 0,
            senders: std::collections::HashMap::new(),
        }
    }

    pub fn core(&self) -> &NodeCore {
        &self.core
    }

    /// A request from writer generation `from`; returns an immediate answer, if any.
    pub fn receive(&mut self, from: u32, message: Message) -> Option<Message> {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        let result = match message {
            Message::AppendBatch(b) => self.core.handle_append(request, b),
            Message::EpochBump(b) => self.core.handle_epoch_bump(request, b),
            Message::Truncate(t) => self.core.handle_truncate(request, t),
            Message::StatusRequest => return Some(Message::Status(self.core.status())),
            Message::ReadRecords(read) => {
                return Some(match self.core.plan_read_records(&read) {
                    Ok(plan) => Message::Records(self.read(plan)),
                    Err(refusal) => Message::Error(refusal),
                })
            }
            _ => return None,
        };
        match result {
            Ok(()) => {
                self.senders.insert(request, from);
                None
            }
            Err(reply) => Some(Message::Error(reply)),
        }
    }

    /// The planned records from the disk, as the real read path serves them: a rotten entry's
    /// records are left out (and no longer claimed), the byte and count limits respected.
    fn read(&mut self, plan: ReadPlan) -> Records {
        let mut answer = RecordsAnswer::new(&plan);
        for (lsn, location) in &plan.wanted {
            let stored = &self.durable[location.offset as usize];
            let found = match &stored.body {
                EntryBody::Records { records, .. } if !stored.rotten => {
                    records.iter().find(|r| r.lsn() == *lsn).cloned()
                }
                _ => None,
            };
            let Some(record) = found else {
                self.core.handle_corrupt_record(plan.pg, *lsn);
                continue;
            };
            if !answer.offer(record) {
                break;
            }
        }
        let scl = self.core.segment(&plan.pg).map_or(plan.scl, |s| s.scl());
        Records { pg: plan.pg, node: self.id, scl, more: answer.more, records: answer.records }
    }

    /// Starts a group commit if none is in flight and entries are queued; true if one started.
    pub fn start_flush(&mut self) -> bool {
        if !self.flushing.is_empty() {
            return false;
        }
        self.flushing = std::iter::from_fn(|| self.core.poll_journal()).collect();
        !self.flushing.is_empty()
    }

    /// The group reached the disk.
    pub fn flushed(&mut self) {
        let group = std::mem::take(&mut self.flushing);
        let Some(last) = group.last().map(|e| e.seq) else { return };
        let mut placed = Vec::new();
        for entry in group {
            let location = Location { file: self.life, offset: self.durable.len() as u64, len: 1 };
            placed.push((entry.seq, location));
            self.durable.push(Stored { pg: entry.pg, body: entry.body, location, rotten: false });
        }
        self.core.handle_durable(last, &placed);
    }

    /// Replies the core released, with the writer generation each goes to.
    pub fn poll_replies(&mut self) -> Vec<(u32, Message)> {
        let released: Vec<(RequestId, Message)> = std::iter::from_fn(|| self.core.poll_reply()).collect();
        released
            .into_iter()
            .filter_map(|(request, message)| Some((self.senders.remove(&request)?, message)))
            .collect()
    }

    /// Crash: the unflushed group and all memory are gone.
    pub fn crash(&mut self) {
        self.up = false;
        self.life += 1;
        self.flushing.clear();
        self.senders.clear();
        self.core = new_core(self.id);
    }

    /// Restart: replay what the disk holds, skipping rotten entries (their records are then
    /// missing, as with a checksum failure).
    pub fn restart(&mut self) {
        if self.up {
            return;
        }
        self.up = true;
        self.core = new_core(self.id);
        for stored in self.durable.iter().filter(|s| !s.rotten) {
            self.core.replay(stored.pg, &stored.body, stored.location);
        }
    }

    /// Bit rot on the `index`-th stored entry (modulo the count); false if the disk is empty.
    pub fn rot(&mut self, index: usize) -> bool {
        let count = self.durable.len();
        if count == 0 {
            return false;
        }
        self.durable[index % count].rotten = true;
        true
    }

    /// The stored entries, for checking (rotten ones excluded).
    pub fn readable_records(&self) -> impl Iterator<Item = (&PgRef, &protocol::Record)> {
        self.durable.iter().filter(|s| !s.rotten).flat_map(|s| match &s.body {
            EntryBody::Records { records, .. } => records.iter().map(move |r| (&s.pg, r)).collect::<Vec<_>>(),
            EntryBody::Meta { .. } | EntryBody::Image { .. } => Vec::new(),
        })
    }
}

fn new_core(id: NodeId) -> NodeCore {
    NodeCore::new(id, AzId(((id.0 - 1) / 2) as u16), Limits::default())
}
