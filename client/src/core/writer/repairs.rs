//! Repair planning: the members of each PG lagging behind what is durable, and the repairs
//! started for them from a complete member (`core::repair`).

use protocol::{Lsn, NodeId, PgId};

use super::WriterCore;
use crate::core::repair::RepairJob;

impl WriterCore {
    /// For repair: members of `pg` whose known SCL is behind what is durable, with that SCL.
    pub fn lagging_members(&self, pg: PgId) -> Vec<(NodeId, Lsn)> {
        let Some(state) = self.pgs.get(&pg) else { return Vec::new() };
        let target = state.durable_through;
        // A joining segment is rebuilt by hydration, not by replaying the log to it.
        let joining = state.change.as_ref().map(|c| c.joining);
        state
            .members
            .nodes()
            .iter()
            .filter(|n| !self.down.contains(n) && Some(**n) != joining)
            .filter_map(|n| state.scl.get(n).map(|scl| (*n, *scl)))
            .filter(|(_, scl)| *scl < target)
            .collect()
    }

    /// Starts a repair of each segment that stayed behind what is durable since the last
    /// tick, from a member known complete through that point (`core::repair`).
    pub(super) fn plan_repairs(&mut self) {
        for pg in self.pgs() {
            let target = self.pg_durable_through(pg);
            for (node, scl) in self.lagging_members(pg) {
                if !self.repairs.lagging(pg, node, scl) {
                    continue;
                }
                let complete = |n: &NodeId| *n != node && self.known_scl(pg, *n).is_some_and(|s| s >= target);
                let Some(source) = self.read_candidates(pg).into_iter().find(complete) else { continue };
                self.repairs.start(RepairJob {
                    pg: self.geometry.pg_ref(pg),
                    node,
                    source,
                    from: scl,
                    target,
                    epochs: self.epochs,
                    vdl: self.vdl(),
                    pg_vdl_lsn: self.pg_vdl_lsn(pg),
                    page_bytes: self.geometry.page_bytes,
                });
            }
        }
    }

    /// The next repair to carry out.
    pub fn poll_repair(&mut self) -> Option<RepairJob> {
        self.repairs.poll()
    }

    /// The repair of `node`'s segment of `pg` ended; a later tick decides again if it is
    /// still behind.
    pub fn handle_repair_done(&mut self, pg: PgId, node: NodeId) {
        self.repairs.done(pg, node);
    }
}
