//! One segment: this node's replica of one protection group, as an index of durable records.
//!
//! The segment knows which records it holds durably (and where), its epochs, and the
//! truncation ranges a new writer has declared. From those it derives its SCL: the highest LSN
//! through which it holds every record of the PG, proven by walking `prev_pg_lsn` backlinks
//! without a hole (DESIGN §2).
//!
//! Invariants:
//! - only durable records are indexed, so SCL never claims a record that could still be lost;
//! - no indexed record lies inside a truncation range;
//! - `scl` is an indexed LSN (or zero) and every indexed record at or below it is chained to it.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

use protocol::{Epoch, Epochs, Lsn, LsnRange, PgRef};

/// Where a durable record's bytes live: the journal entry that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Journal file number.
    pub file: u64,
    /// Byte offset of the entry in that file.
    pub offset: u64,
    /// Length of the entry in bytes.
    pub len: u32,
}

/// What the segment remembers of one durable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexedRecord {
    pub prev_pg_lsn: Lsn,
    pub cpl: bool,
    pub location: Location,
}

/// Why a segment refuses a request that relies on some epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochRefusal {
    /// The request relies on an epoch older than the segment's.
    Stale,
    /// The request's volume epoch is newer than the segment's, or not yet opened by a truncation.
    NotOpen,
}

/// A segment's state. See the module docs for its invariants.
#[derive(Clone, Debug)]
pub struct Segment {
    pg: PgRef,
    epochs: Epochs,
    truncations: Vec<(Epoch, LsnRange)>,
    records: BTreeMap<Lsn, IndexedRecord>,
    scl: Lsn,
    /// The highest VDL a writer told this segment; kept in memory only (a lower bound that
    /// recovery may use, so losing it at a restart is safe).
    vdl_hint: Lsn,
}

impl Segment {
    /// An empty segment at `epochs`.
    pub fn new(pg: PgRef, epochs: Epochs) -> Segment {
        Segment {
            pg,
            epochs,
            truncations: Vec::new(),
            records: BTreeMap::new(),
            scl: Lsn::ZERO,
            vdl_hint: Lsn::ZERO,
        }
    }

    /// A segment as a checkpoint recorded it; SCL is recomputed from the backlinks.
    pub fn restore(
        pg: PgRef,
        epochs: Epochs,
        truncations: Vec<(Epoch, LsnRange)>,
        records: Vec<(Lsn, IndexedRecord)>,
    ) -> Segment {
        let mut segment = Segment {
            pg,
            epochs,
            truncations,
            records: records.into_iter().collect(),
            scl: Lsn::ZERO,
            vdl_hint: Lsn::ZERO,
        };
        segment.advance_scl();
        segment
    }

    /// Every indexed record, in LSN order.
    pub fn all_records(&self) -> impl Iterator<Item = (Lsn, &IndexedRecord)> {
        self.records.iter().map(|(lsn, record)| (*lsn, record))
    }

    pub fn pg(&self) -> PgRef {
        self.pg
    }
    pub fn epochs(&self) -> Epochs {
        self.epochs
    }
    pub fn scl(&self) -> Lsn {
        self.scl
    }
    pub fn vdl_hint(&self) -> Lsn {
        self.vdl_hint
    }

    /// Remembers a VDL a writer piggybacked on a batch (VDL only grows).
    pub fn learn_vdl(&mut self, vdl: Lsn) {
        self.vdl_hint = self.vdl_hint.max(vdl);
    }
    pub fn truncations(&self) -> &[(Epoch, LsnRange)] {
        &self.truncations
    }
    /// The newest LSN held, chained or not.
    pub fn highest_lsn(&self) -> Lsn {
        self.records.last_key_value().map_or(Lsn::ZERO, |(lsn, _)| *lsn)
    }
    pub fn record_count(&self) -> usize {
        self.records.len()
    }
    pub fn get(&self, lsn: Lsn) -> Option<&IndexedRecord> {
        self.records.get(&lsn)
    }

    /// Writes at the segment's volume epoch are accepted once that epoch is open: the first
    /// epoch is open from the start, a later one once its writer's truncation range is stored.
    pub fn is_open(&self) -> bool {
        self.epochs.volume == Epoch::INITIAL || self.truncations.iter().any(|(e, _)| *e == self.epochs.volume)
    }

    /// May a writer relying on `epochs` append now?
    pub fn check_append(&self, epochs: &Epochs) -> Result<(), EpochRefusal> {
        self.check_not_stale(epochs)?;
        if epochs.volume > self.epochs.volume || !self.is_open() {
            return Err(EpochRefusal::NotOpen);
        }
        Ok(())
    }

    /// Refuses a request relying on any epoch older than the segment's.
    pub fn check_not_stale(&self, epochs: &Epochs) -> Result<(), EpochRefusal> {
        let stale = epochs.volume < self.epochs.volume
            || epochs.membership < self.epochs.membership
            || epochs.geometry < self.epochs.geometry;
        if stale {
            Err(EpochRefusal::Stale)
        } else {
            Ok(())
        }
    }

    /// Raises each epoch to `epochs` where that is newer (an epoch never goes back).
    pub fn raise_epochs(&mut self, epochs: &Epochs) {
        self.epochs.volume = self.epochs.volume.max(epochs.volume);
        self.epochs.membership = self.epochs.membership.max(epochs.membership);
        self.epochs.geometry = self.epochs.geometry.max(epochs.geometry);
    }

    /// True if `lsn` lies in a stored truncation range.
    pub fn is_truncated(&self, lsn: Lsn) -> bool {
        self.truncations.iter().any(|(_, range)| range.contains(lsn))
    }

    /// True if the record is held durably or must be discarded: either way, storing it again
    /// would add nothing.
    pub fn has_or_discards(&self, lsn: Lsn) -> bool {
        self.records.contains_key(&lsn) || self.is_truncated(lsn)
    }

    /// Stores a truncation range declared by the writer of `epoch`: drops every record inside
    /// it, now and on later arrival, and opens that epoch for writing.
    pub fn truncate(&mut self, epoch: Epoch, range: LsnRange) {
        self.raise_epochs(&Epochs { volume: epoch, ..self.epochs });
        if !self.truncations.contains(&(epoch, range)) {
            self.truncations.push((epoch, range));
        }
        let doomed: Vec<Lsn> = self.records_in(range).map(|(lsn, _)| lsn).collect();
        for lsn in doomed {
            self.records.remove(&lsn);
        }
        if self.scl > range.after() {
            self.scl = self.records.range(..=range.after()).next_back().map_or(Lsn::ZERO, |(l, _)| *l);
        }
        self.advance_scl();
    }

    /// Indexes a durable record; returns false (and stores nothing) if it is truncated.
    pub fn insert_durable(&mut self, lsn: Lsn, record: IndexedRecord) -> bool {
        if self.is_truncated(lsn) {
            return false;
        }
        self.records.insert(lsn, record);
        self.advance_scl();
        true
    }

    /// Drops a record whose stored copy turned out to be unreadable, so the segment no longer
    /// claims it; SCL falls back to before it and a peer can supply it.
    pub fn forget(&mut self, lsn: Lsn) {
        if self.records.remove(&lsn).is_some() && self.scl >= lsn {
            // Everything below the old SCL was chained, so the record before `lsn` still is.
            self.scl = self.records.range(..lsn).next_back().map_or(Lsn::ZERO, |(l, _)| *l);
        }
    }

    /// Records held in `range`, in LSN order.
    pub fn records_in(&self, range: LsnRange) -> impl Iterator<Item = (Lsn, &IndexedRecord)> {
        self.records.range((Excluded(range.after()), Included(range.through()))).map(|(l, r)| (*l, r))
    }

    /// Ranges above SCL whose records this segment is missing, at most `max` of them: for each
    /// held record whose predecessor is not held, `(highest held LSN below it, its predecessor]`.
    pub fn holes(&self, max: usize) -> Vec<LsnRange> {
        let mut holes = Vec::new();
        let mut last_held = self.scl;
        for (lsn, record) in self.records.range((Excluded(self.scl), Unbounded)) {
            if record.prev_pg_lsn > last_held && holes.len() < max {
                holes.extend(LsnRange::new(last_held, record.prev_pg_lsn).ok());
            }
            last_held = *lsn;
        }
        holes
    }

    /// Moves SCL forward while the next held record links back to it. Within a PG, records
    /// form one chain in LSN order (truncated ones are never indexed), so the successor of SCL
    /// is the next held LSN, and it is chained exactly when its backlink is SCL.
    fn advance_scl(&mut self) {
        while let Some((lsn, record)) = self.records.range((Excluded(self.scl), Unbounded)).next() {
            if record.prev_pg_lsn != self.scl {
                break;
            }
            self.scl = *lsn;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{PgId, VolumeId};

    fn seg() -> Segment {
        Segment::new(PgRef { volume_id: VolumeId(1), pg_id: PgId(0) }, Epochs::INITIAL)
    }
    fn rec(prev: u64) -> IndexedRecord {
        IndexedRecord {
            prev_pg_lsn: Lsn(prev),
            cpl: false,
            location: Location { file: 0, offset: 0, len: 0 },
        }
    }
    fn range(a: u64, b: u64) -> LsnRange {
        LsnRange::new(Lsn(a), Lsn(b)).unwrap()
    }

    #[test]
    fn scl_advances_only_over_an_unbroken_backlink_chain() {
        let mut s = seg();
        s.insert_durable(Lsn(10), rec(0));
        s.insert_durable(Lsn(30), rec(20));
        assert_eq!(s.scl(), Lsn(10), "20 is missing");
        assert_eq!(s.holes(8), vec![range(10, 20)]);
        s.insert_durable(Lsn(20), rec(10));
        assert_eq!(s.scl(), Lsn(30), "the hole is filled out of order");
        assert!(s.holes(8).is_empty());
    }

    #[test]
    fn truncation_drops_records_now_and_later_and_pulls_scl_back() {
        let mut s = seg();
        for (lsn, prev) in [(10, 0), (20, 10), (30, 20)] {
            s.insert_durable(Lsn(lsn), rec(prev));
        }
        s.raise_epochs(&Epochs { volume: Epoch(2), ..Epochs::INITIAL });
        assert!(!s.is_open(), "epoch 2 opens only with its truncation");
        s.truncate(Epoch(2), range(15, 100));
        assert!(s.is_open());
        assert_eq!(s.scl(), Lsn(10));
        assert!(s.get(Lsn(20)).is_none() && s.get(Lsn(30)).is_none());
        assert!(!s.insert_durable(Lsn(25), rec(20)), "a late record inside the range is discarded");
        s.insert_durable(Lsn(101), rec(10));
        assert_eq!(s.scl(), Lsn(101), "the new writer's chain skips the range");
    }

    #[test]
    fn stale_and_unopened_epochs_are_refused() {
        let mut s = seg();
        s.raise_epochs(&Epochs { volume: Epoch(3), ..Epochs::INITIAL });
        assert_eq!(s.check_append(&Epochs::INITIAL), Err(EpochRefusal::Stale));
        assert_eq!(
            s.check_append(&Epochs { volume: Epoch(3), ..Epochs::INITIAL }),
            Err(EpochRefusal::NotOpen)
        );
        assert_eq!(
            s.check_append(&Epochs { volume: Epoch(4), ..Epochs::INITIAL }),
            Err(EpochRefusal::NotOpen)
        );
        s.truncate(Epoch(3), range(0, 5));
        assert_eq!(s.check_append(&Epochs { volume: Epoch(3), ..Epochs::INITIAL }), Ok(()));
    }

    #[test]
    fn forgetting_a_corrupt_record_pulls_scl_back_before_it() {
        let mut s = seg();
        for (lsn, prev) in [(10, 0), (20, 10), (30, 20)] {
            s.insert_durable(Lsn(lsn), rec(prev));
        }
        s.forget(Lsn(20));
        assert_eq!(s.scl(), Lsn(10));
        assert_eq!(s.holes(8), vec![range(10, 20)]);
    }
}
