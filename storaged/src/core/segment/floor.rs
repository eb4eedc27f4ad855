//! The segment's floor: clients' floor reports, kept while their lease lasts, raise it to the
//! minimum of the live ones; it never goes back.
//!
//! A report either may raise the floor (a writer's, a node's hydration hold, any report where
//! no ACLs are kept) or only holds it (a client whose certificate may read the volume but not
//! write it): holds count in the minimum, so they keep versions readable, but the floor rises
//! only while at least one report that may raise it is live. So a reader cannot push the floor
//! up and make other readers' reads too old; at worst its hold keeps versions longer, until its
//! lease ends. Holds and raising reports are kept apart (a hold never replaces a writer's
//! report of the same client id), and a hold never evicts a raising report.

use protocol::Lsn;

use super::Segment;

/// Floor reports a segment keeps at once; the oldest-expiring is dropped beyond it.
pub const FLOOR_REPORTS_MAX: usize = 1024;

/// Who reported a floor: the client id it gave, and whether its report only holds the floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FloorReporter {
    pub holds_only: bool,
    pub client: u64,
}

impl FloorReporter {
    /// A report that may raise the floor.
    pub fn raising(client: u64) -> FloorReporter {
        FloorReporter { holds_only: false, client }
    }

    /// A report that only holds the floor.
    pub fn holding(client: u64) -> FloorReporter {
        FloorReporter { holds_only: true, client }
    }
}

impl Segment {
    /// Stores a floor report and raises the floor to the minimum of the live reports, if one of
    /// them may raise it (it never goes back). `now` and `expires` are the driver's
    /// milliseconds.
    pub fn report_floor(&mut self, reporter: FloorReporter, floor: Lsn, now: u64, expires: u64) -> Lsn {
        self.reports.retain(|_, (_, until)| *until > now);
        self.reports.insert(reporter, (floor, expires));
        while self.reports.len() > FLOOR_REPORTS_MAX {
            // A hold makes room among holds only; a raising report among all.
            let oldest = self
                .reports
                .iter()
                .filter(|(r, _)| r.holds_only || !reporter.holds_only)
                .min_by_key(|(_, (_, until))| *until)
                .map(|(r, _)| *r);
            self.reports.remove(&oldest.expect("the new report itself qualifies"));
        }
        self.refresh_floor(now)
    }

    /// Raises the floor to `lsn` (no read below it is served from now on).
    pub fn raise_floor(&mut self, lsn: Lsn) {
        self.floor = self.floor.max(lsn);
    }

    /// Drops expired reports and raises the floor to the minimum of the live ones, if one of
    /// them may raise it.
    pub fn refresh_floor(&mut self, now: u64) -> Lsn {
        self.reports.retain(|_, (_, until)| *until > now);
        if self.reports.keys().any(|r| !r.holds_only) {
            let min = self.reports.values().map(|(floor, _)| *floor).min().expect("one is live");
            self.floor = self.floor.max(min);
        }
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Epochs, PgId, PgRef, VolumeId};

    use super::*;

    fn segment() -> Segment {
        Segment::new(PgRef { volume_id: VolumeId(1), pg_id: PgId(0) }, Epochs::INITIAL)
    }

    #[test]
    fn a_hold_keeps_the_floor_down_but_never_raises_it_nor_replaces_or_evicts_a_writer_s_report() {
        let mut s = segment();
        // A reader alone cannot push the floor up.
        assert_eq!(s.report_floor(FloorReporter::holding(7), Lsn(1_000_000), 0, 100), Lsn::ZERO);
        // The writer raises it, but not past the reader's hold.
        assert_eq!(s.report_floor(FloorReporter::raising(2), Lsn(50), 1, 100), Lsn(50));
        assert_eq!(s.report_floor(FloorReporter::holding(9), Lsn(40), 2, 100), Lsn(50), "never back");
        assert_eq!(s.report_floor(FloorReporter::raising(2), Lsn(80), 3, 100), Lsn(50), "held at 40");
        // A hold under the writer's client id does not replace the writer's report.
        s.report_floor(FloorReporter::holding(2), Lsn(1_000_000), 4, 100);
        assert!(s.reports.contains_key(&FloorReporter::raising(2)));
        // A flood of holds evicts holds only.
        for client in 100..100 + FLOOR_REPORTS_MAX as u64 {
            s.report_floor(FloorReporter::holding(client), Lsn(1_000_000), 5, 1000 + client);
        }
        assert_eq!(s.reports.len(), FLOOR_REPORTS_MAX);
        assert!(s.reports.contains_key(&FloorReporter::raising(2)), "the writer's report stays");
        // Once the early holds expire, the floor follows the writer.
        assert_eq!(s.refresh_floor(101), Lsn(80));
    }
}
