//! Read points: what a read at an LSN needs to tell a segment, and the GC floor this client
//! reports.
//!
//! A read of page P at LSN R goes to a segment complete through the newest LSN of P's PG at or
//! below R (DESIGN §3), so the client keeps, per PG, the LSNs it wrote from the newest one at or
//! below its floor on: 8 bytes per record between the floor and the newest. The floor is the
//! oldest read point this client may still use; nodes keep every version a read at or above it
//! needs. It follows VDL unless the engine pins an older one or a read still in flight (or a
//! snapshot still held) uses an older one, and never goes back.

use std::collections::{BTreeMap, VecDeque};

use protocol::{Lsn, PgId};

/// How often (in writer ticks) the floor is reported to every segment.
pub const FLOOR_REPORT_TICKS: u32 = 10;
/// How long a node holds a report that is not renewed.
pub const FLOOR_LEASE_MS: u32 = 10_000;

/// See the module docs.
#[derive(Debug)]
pub struct ReadPoints {
    /// Per PG: its LSNs in order, from the newest at or below the floor.
    history: BTreeMap<PgId, VecDeque<Lsn>>,
    floor: Lsn,
    /// The oldest read point the engine still uses, if it pinned one.
    pin: Option<Lsn>,
    /// The oldest read point of the reads in flight and snapshots held, as the driver last said.
    in_use: Option<Lsn>,
    ticks: u32,
}

/// Why a read point cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPointRefusal {
    /// Below the floor: nodes may have dropped the versions it needs.
    BelowFloor { floor: Lsn },
}

impl ReadPoints {
    /// Read points of a writer that starts at `vdl`, with each existing PG's newest LSN.
    pub fn new(vdl: Lsn, pgs: impl IntoIterator<Item = (PgId, Lsn)>) -> ReadPoints {
        let history = pgs.into_iter().map(|(pg, newest)| (pg, VecDeque::from([newest]))).collect();
        ReadPoints { history, floor: vdl, pin: None, in_use: None, ticks: 0 }
    }

    /// A record of `pg` was allocated at `lsn` (LSNs only grow).
    pub fn record(&mut self, pg: PgId, lsn: Lsn) {
        let lsns = self.history.entry(pg).or_default();
        debug_assert!(lsns.back().is_none_or(|last| *last < lsn));
        lsns.push_back(lsn);
    }

    /// The newest LSN of `pg` at or below `at`, for a read at `at` (at or above the floor).
    pub fn pg_newest_at(&self, pg: PgId, at: Lsn) -> Result<Lsn, ReadPointRefusal> {
        if at < self.floor {
            return Err(ReadPointRefusal::BelowFloor { floor: self.floor });
        }
        let Some(lsns) = self.history.get(&pg) else { return Ok(Lsn::ZERO) };
        let below = lsns.partition_point(|l| *l <= at);
        Ok(below.checked_sub(1).map_or(Lsn::ZERO, |i| lsns[i]))
    }

    pub fn floor(&self) -> Lsn {
        self.floor
    }

    /// The engine still reads at `lsn` (or, with `None`, only at VDL from now on). Refused if
    /// `lsn` is below the floor already reported.
    pub fn pin(&mut self, lsn: Option<Lsn>) -> Result<(), ReadPointRefusal> {
        if lsn.is_some_and(|l| l < self.floor) {
            return Err(ReadPointRefusal::BelowFloor { floor: self.floor });
        }
        self.pin = lsn;
        Ok(())
    }

    /// The oldest read point still in use by reads in flight or snapshots (`None`: none): the
    /// floor does not pass it, so a read that started at VDL finishes even as VDL moves on.
    pub fn hold(&mut self, oldest_in_use: Option<Lsn>) {
        self.in_use = oldest_in_use;
    }

    /// Moves the floor toward VDL (or the pin, or the oldest read point in use), trims history,
    /// and says whether a report is due this tick.
    pub fn tick(&mut self, vdl: Lsn) -> bool {
        let wanted = [self.pin, self.in_use].into_iter().flatten().fold(vdl, Lsn::min);
        self.floor = self.floor.max(wanted);
        for lsns in self.history.values_mut() {
            while lsns.len() >= 2 && lsns[1] <= self.floor {
                lsns.pop_front();
            }
        }
        self.ticks += 1;
        if self.ticks >= FLOOR_REPORT_TICKS {
            self.ticks = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_names_the_pgs_newest_lsn_at_or_below_it() {
        let mut points = ReadPoints::new(Lsn(10), [(PgId(0), Lsn(8))]);
        points.record(PgId(0), Lsn(12));
        points.record(PgId(1), Lsn(13));
        points.record(PgId(0), Lsn(20));
        assert_eq!(points.pg_newest_at(PgId(0), Lsn(11)), Ok(Lsn(8)));
        assert_eq!(points.pg_newest_at(PgId(0), Lsn(19)), Ok(Lsn(12)));
        assert_eq!(points.pg_newest_at(PgId(1), Lsn(12)), Ok(Lsn::ZERO));
        assert_eq!(
            points.pg_newest_at(PgId(0), Lsn(9)),
            Err(ReadPointRefusal::BelowFloor { floor: Lsn(10) })
        );
    }

    #[test]
    fn the_floor_follows_vdl_or_the_pin_and_never_goes_back() {
        let mut points = ReadPoints::new(Lsn(10), [(PgId(0), Lsn(8))]);
        for lsn in [12, 14, 16] {
            points.record(PgId(0), Lsn(lsn));
        }
        points.pin(Some(Lsn(13))).unwrap();
        points.tick(Lsn(16));
        assert_eq!(points.floor(), Lsn(13));
        assert_eq!(
            points.pg_newest_at(PgId(0), Lsn(13)),
            Ok(Lsn(12)),
            "the newest at or below the floor stays"
        );
        assert!(points.pin(Some(Lsn(11))).is_err());
        points.pin(None).unwrap();
        points.tick(Lsn(16));
        assert_eq!(points.floor(), Lsn(16));
        let reports = (0..FLOOR_REPORT_TICKS).filter(|_| points.tick(Lsn(16))).count();
        assert_eq!(reports, 1);
    }

    #[test]
    fn the_floor_waits_for_the_oldest_read_in_flight() {
        let mut points = ReadPoints::new(Lsn(10), [(PgId(0), Lsn(8))]);
        points.hold(Some(Lsn(12)));
        points.tick(Lsn(20));
        assert_eq!(points.floor(), Lsn(12), "a read at 12 is in flight");
        assert_eq!(points.pg_newest_at(PgId(0), Lsn(12)), Ok(Lsn(8)));
        points.pin(Some(Lsn(15))).unwrap();
        points.hold(Some(Lsn(18)));
        points.tick(Lsn(20));
        assert_eq!(points.floor(), Lsn(15), "the pin is older than the reads now");
        points.pin(None).unwrap();
        points.hold(None);
        points.tick(Lsn(20));
        assert_eq!(points.floor(), Lsn(20));
        points.hold(Some(Lsn(16)));
        points.tick(Lsn(21));
        assert_eq!(points.floor(), Lsn(20), "the floor never goes back");
    }
}
