//! Read routing and the floor: which members serve a read at a read point, and the floor this
//! writer reports to every open PG.

use protocol::messages::FloorReport;
use protocol::{Lsn, Message, NodeId, PgId};

use super::WriterCore;
use crate::core::floor::{ReadPointRefusal, FLOOR_LEASE_MS};

impl WriterCore {
    /// The members of `pg` ordered for a read at or below VDL: those known complete through the
    /// PG's VDL LSN first (highest SCL first), unreachable ones left out.
    pub fn read_candidates(&self, pg: PgId) -> Vec<NodeId> {
        self.read_candidates_for(pg, self.pg_vdl_lsn(pg))
    }

    /// Where a read of `pg` at `at` (at most VDL) goes: the PG's newest LSN at or below `at`
    /// (what a segment must be complete through) and the members ordered as for
    /// `read_candidates`.
    pub fn read_route(&self, pg: PgId, at: Lsn) -> Result<(Lsn, Vec<NodeId>), ReadPointRefusal> {
        let need = self.read_points.pg_newest_at(pg, at)?;
        Ok((need, self.read_candidates_for(pg, need)))
    }

    /// Keeps versions from `lsn` on readable (or, with `None`, lets the floor follow VDL).
    pub fn pin_floor(&mut self, lsn: Option<Lsn>) -> Result<(), ReadPointRefusal> {
        self.read_points.pin(lsn)
    }

    /// The oldest read point the driver's reads in flight and snapshots use (`None`: none);
    /// the floor stays at or below it from the next tick on.
    pub fn hold_reads(&mut self, oldest_in_use: Option<Lsn>) {
        self.read_points.hold(oldest_in_use);
    }

    /// The oldest read point this writer may use.
    pub fn floor(&self) -> Lsn {
        self.read_points.floor()
    }

    /// Tells every member of every open PG this writer's floor. The writer's client id is its
    /// volume epoch: unique among writers, and the same across the writer's reports.
    pub(super) fn report_floor(&mut self) {
        let floor = self.read_points.floor();
        let open: Vec<(PgId, Vec<NodeId>)> =
            self.pgs.iter().filter(|(_, s)| s.open).map(|(pg, s)| (*pg, s.members.nodes())).collect();
        for (pg, members) in open {
            let report = Message::FloorReport(FloorReport {
                pg: self.geometry.pg_ref(pg),
                client: self.epochs.volume.0,
                floor,
                lease_ms: FLOOR_LEASE_MS,
            });
            for node in members {
                self.push(node, report.clone());
            }
        }
    }

    fn read_candidates_for(&self, pg: PgId, need: Lsn) -> Vec<NodeId> {
        let mut candidates: Vec<(bool, Lsn, NodeId)> = self
            .members(pg)
            .iter()
            .filter(|n| !self.down.contains(n))
            .map(|n| {
                let scl = self.known_scl(pg, *n).unwrap_or(Lsn::ZERO);
                (scl >= need, scl, *n)
            })
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        candidates.into_iter().map(|(_, _, n)| n).collect()
    }
}
