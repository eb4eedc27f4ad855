//! The segment's floor: clients' floor reports, kept while their lease lasts, raise it to the
//! minimum of the live ones; it never goes back.

use protocol::Lsn;

use super::Segment;

/// Floor reports a segment keeps at once; the oldest-expiring is dropped beyond it.
pub const FLOOR_REPORTS_MAX: usize = 1024;

impl Segment {
    /// Stores a floor report and raises the floor to the minimum of the live reports (it never
    /// goes back). `now` and `expires` are the driver's milliseconds.
    pub fn report_floor(&mut self, client: u64, floor: Lsn, now: u64, expires: u64) -> Lsn {
        self.reports.retain(|_, (_, until)| *until > now);
        self.reports.insert(client, (floor, expires));
        while self.reports.len() > FLOOR_REPORTS_MAX {
            let oldest = self.reports.iter().min_by_key(|(_, (_, until))| *until).map(|(c, _)| *c);
            self.reports.remove(&oldest.expect("non-empty"));
        }
        self.refresh_floor(now)
    }

    /// Raises the floor to `lsn` (no read below it is served from now on).
    pub fn raise_floor(&mut self, lsn: Lsn) {
        self.floor = self.floor.max(lsn);
    }

    /// Drops expired reports and raises the floor to the minimum of the live ones, if any.
    pub fn refresh_floor(&mut self, now: u64) -> Lsn {
        self.reports.retain(|_, (_, until)| *until > now);
        if let Some(min) = self.reports.values().map(|(floor, _)| *floor).min() {
            self.floor = self.floor.max(min);
        }
        self.floor
    }
}
