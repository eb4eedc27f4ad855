//! A segment's epochs and truncation ranges: which requests it accepts (`EpochRefusal`), how
//! its epochs rise, and a new writer's truncation dropping the records in its range.

use protocol::{Epoch, Epochs, Lsn, LsnRange};

use super::Segment;

/// Why a segment refuses a request that relies on some epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochRefusal {
    /// The request relies on an epoch older than the segment's.
    Stale,
    /// The request's volume epoch is newer than the segment's, or not yet opened by a truncation.
    NotOpen,
}

impl Segment {
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

    /// May a client relying on `epochs` read? Not if its membership or geometry is stale, nor
    /// if it knows a volume epoch this segment has not opened: the truncation that opens it may
    /// still remove records this segment holds.
    pub fn check_read(&self, epochs: &Epochs) -> Result<(), EpochRefusal> {
        if self.stale_membership(epochs) || epochs.geometry < self.epochs.geometry {
            return Err(EpochRefusal::Stale);
        }
        if epochs.volume > self.epochs.volume || (epochs.volume == self.epochs.volume && !self.is_open()) {
            return Err(EpochRefusal::NotOpen);
        }
        Ok(())
    }

    /// Refuses a request relying on any epoch older than the segment's.
    pub fn check_not_stale(&self, epochs: &Epochs) -> Result<(), EpochRefusal> {
        let stale = epochs.volume < self.epochs.volume
            || self.stale_membership(epochs)
            || epochs.geometry < self.epochs.geometry;
        if stale {
            Err(EpochRefusal::Stale)
        } else {
            Ok(())
        }
    }

    /// True if `epochs` rely on an older membership than this segment holds, from the same
    /// writer: membership epochs are compared only at the same volume epoch. A newer writer
    /// supersedes whatever memberships an older one stored (it stores its own again once it
    /// runs), and an older writer still reading from a segment an unfinished takeover bumped
    /// reads as before.
    fn stale_membership(&self, epochs: &Epochs) -> bool {
        epochs.volume == self.epochs.volume && epochs.membership < self.epochs.membership
    }

    /// Raises the epochs to `epochs` where they are newer: volume and geometry never go back,
    /// nor (volume, membership) taken together: the membership epoch is the newest writer's (it
    /// follows a newer volume epoch as it is, and rises within one).
    pub fn raise_epochs(&mut self, epochs: &Epochs) {
        if epochs.volume > self.epochs.volume {
            self.epochs.volume = epochs.volume;
            self.epochs.membership = epochs.membership;
        } else if epochs.volume == self.epochs.volume {
            self.epochs.membership = self.epochs.membership.max(epochs.membership);
        }
        self.epochs.geometry = self.epochs.geometry.max(epochs.geometry);
    }

    /// True if `lsn` lies in a stored truncation range.
    pub fn is_truncated(&self, lsn: Lsn) -> bool {
        self.truncations.iter().any(|(_, range)| range.contains(lsn))
    }

    /// True if the record is held durably or must be discarded: either way, storing it again
    /// would add nothing.
    pub fn has_or_discards(&self, lsn: Lsn) -> bool {
        // Everything at or below `folded_through` (<= SCL) is held or folded into an image.
        self.records.contains_key(&lsn) || lsn <= self.folded_through || self.is_truncated(lsn)
    }

    /// Stores a truncation range declared by the writer of `epoch`: drops every record inside
    /// it, now and on later arrival, and opens that epoch for writing.
    pub fn truncate(&mut self, epoch: Epoch, range: LsnRange) {
        self.raise_epochs(&Epochs { volume: epoch, ..self.epochs });
        if !self.truncations.contains(&(epoch, range)) {
            self.truncations.push((epoch, range));
        }
        let doomed: Vec<Lsn> = self.records_in(range).map(|(lsn, _)| lsn).collect();
        for lsn in &doomed {
            self.unindex(*lsn);
        }
        for versions in self.pages.values_mut() {
            versions.retain_images(|lsn| !range.contains(lsn));
        }
        self.pages.retain(|_, v| !v.is_empty());
        // The chain breaks only where a record it held was dropped. A range seen again (a
        // writer resends it) may reach below the folded prefix: nothing is dropped there.
        if let Some(lowest) = doomed.first().filter(|lowest| **lowest <= self.scl) {
            self.scl = self.held_before(*lowest);
        }
        self.advance_scl();
    }
}
