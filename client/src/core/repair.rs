//! Repair of lagging segments, as decisions: which member of a PG has fallen behind what is
//! durable for long enough to be repaired, from which member, over which LSN range. The driver
//! carries a `RepairJob` out (reads the records from `source`, appends them to `node`) and
//! reports it done; the writer core decides, so every driver repairs the same way.
//!
//! Rule: a member whose known SCL is below the PG's durable point, and was at that same SCL at
//! the previous tick (not merely behind because batches are on their way), is repaired from a
//! reachable member known complete through the durable point. At most one repair per (PG,
//! member) runs at a time, so at most `members × PGs` jobs exist.

use std::collections::{HashMap, HashSet, VecDeque};

use protocol::messages::{AppendBatch, ReadRecords};
use protocol::{Epochs, Lsn, LsnRange, NodeId, PgId, PgRef, Record};

/// Copy the records `node` misses in `(from, target]` of `pg` from `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairJob {
    pub pg: PgRef,
    pub node: NodeId,
    pub source: NodeId,
    pub from: Lsn,
    pub target: Lsn,
    /// What the appended batches carry.
    pub epochs: Epochs,
    pub vdl: Lsn,
    /// The PG's newest LSN at or below `vdl`: a node keeps the pair, and a reader that is not
    /// the writer relies on it (`Segment::newest_as_of`).
    pub pg_vdl_lsn: Lsn,
    pub page_bytes: u32,
}

/// Record bytes one repair read asks for.
pub const REPAIR_READ_BYTES_MAX: u32 = 2 * 1024 * 1024;

impl RepairJob {
    /// The read of the records the node still misses after `from` (`None` once `from`
    /// reaches the target).
    pub fn read_after(&self, from: Lsn) -> Option<ReadRecords> {
        let range = LsnRange::new(from, self.target).ok()?;
        Some(ReadRecords { pg: self.pg, epochs: self.epochs, range, bytes_max: REPAIR_READ_BYTES_MAX })
    }

    /// The batch that appends `records`, read from the source, to the lagging node.
    pub fn batch(&self, records: Vec<Record>) -> AppendBatch {
        let (pg, epochs, vdl, pg_vdl_lsn) = (self.pg, self.epochs, self.vdl, self.pg_vdl_lsn);
        AppendBatch { pg, epochs, vdl, pg_vdl_lsn, page_bytes: self.page_bytes, records }
    }
}

/// What the repair rule remembers between ticks.
#[derive(Debug, Default)]
pub struct Repairs {
    /// Each lagging member's SCL at the previous tick.
    stuck: HashMap<(PgId, NodeId), Lsn>,
    running: HashSet<(PgId, NodeId)>,
    jobs: VecDeque<RepairJob>,
}

impl Repairs {
    /// A tick saw `node` of `pg` lagging at `scl`: true if it is due a repair (it was at the
    /// same SCL a tick ago and none runs for it).
    pub fn lagging(&mut self, pg: PgId, node: NodeId, scl: Lsn) -> bool {
        let key = (pg, node);
        let was = self.stuck.insert(key, scl);
        was == Some(scl) && !self.running.contains(&key)
    }

    pub fn start(&mut self, job: RepairJob) {
        assert!(self.running.insert((job.pg.pg_id, job.node)), "one repair per segment at a time");
        self.jobs.push_back(job);
    }

    pub fn poll(&mut self) -> Option<RepairJob> {
        self.jobs.pop_front()
    }

    /// The repair of `node`'s segment of `pg` ended (whatever it reached: a later tick decides
    /// again).
    pub fn done(&mut self, pg: PgId, node: NodeId) {
        self.running.remove(&(pg, node));
    }

    pub fn is_running(&self, pg: PgId, node: NodeId) -> bool {
        self.running.contains(&(pg, node))
    }
}
