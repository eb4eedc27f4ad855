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
//! - `scl` is an indexed LSN (or zero) and every indexed record at or below it is chained to it;
//!   records the coalescer folded into images stay indexed, marked `folded`, until every record
//!   below them is folded too: then they leave the index as a prefix, and `folded_through` (never
//!   above SCL) remembers where it ends. So no record at or below `folded_through` is missing,
//!   and a hole found later (a corrupt record) always lies above it, where the chain shows it;
//! - every page-changing indexed record is in its page's log (`pages`), and nothing else is;
//! - while peers are tracked, nothing above the SCL a live peer last reported is folded away
//!   (the peer still needs those records, and can only fetch records, not images).

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

use protocol::quorum::Membership;
use protocol::{Epoch, Epochs, Lsn, LsnRange, NodeId, PageId, PgRef, RecordKind};

use super::location::Location;
use super::pages::{PageVersions, Stored};

mod epochs;
mod floor;
mod images;
mod peers;
pub use epochs::EpochRefusal;
pub use floor::{FloorReporter, FLOOR_REPORTS_MAX};
use peers::PeerHold;

/// The PG's newest LSN at a reader's read point, as far as a segment can tell
/// (`Segment::newest_as_of`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    Newest(Lsn),
    /// Not provable yet: wait for more records or a VDL told.
    NotYet,
    /// The read point lies inside the prefix folded into images: too old here.
    FoldedAway,
}

/// What the segment remembers of one durable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexedRecord {
    pub prev_pg_lsn: Lsn,
    pub cpl: bool,
    pub page_id: PageId,
    pub kind: RecordKind,
    pub location: Location,
    /// An image at or below the floor carries this record's effect: no page read uses it, and
    /// it leaves the index once every record below it has too.
    pub folded: bool,
}

impl IndexedRecord {
    /// The index entry of a record stored at `location`.
    pub fn of(record: &protocol::Record, location: Location) -> IndexedRecord {
        let meta = record.meta();
        IndexedRecord {
            prev_pg_lsn: meta.prev_pg_lsn,
            cpl: meta.is_cpl(),
            page_id: meta.page_id,
            kind: meta.kind,
            location,
            folded: false,
        }
    }

    /// True unless the record is a `Marker`.
    pub fn changes_page(&self) -> bool {
        self.kind != RecordKind::Marker
    }
}

/// A segment's state. See the module docs for its invariants.
#[derive(Clone, Debug)]
pub struct Segment {
    pg: PgRef,
    epochs: Epochs,
    truncations: Vec<(Epoch, LsnRange)>,
    records: BTreeMap<Lsn, IndexedRecord>,
    scl: Lsn,
    /// The highest VDL a writer told this segment; kept in memory only (see `vdl_hint()` for
    /// the lower bound that survives a restart).
    vdl_hint: Lsn,
    /// The PG's newest LSN at or below `vdl_hint`, told along with it (see `newest_as_of`).
    told_pg_lsn: Lsn,
    /// The volume's page size, learnt from the first batch (zero until then).
    page_bytes: u32,
    pages: BTreeMap<PageId, PageVersions>,
    /// Reads below it are refused; versions only it needed are dropped. Never goes back.
    floor: Lsn,
    /// The highest floor a member's gossip summary showed: a repair read goes at or above
    /// it (a restarted segment's own floor lags until the next floor report; with no writer
    /// running, none comes). In memory only.
    peer_floor: Lsn,
    /// Live floor reports: reporter → (floor, expiry in the driver's milliseconds).
    reports: BTreeMap<floor::FloorReporter, (Lsn, u64)>,
    /// The highest LSN of a record dropped because an image covers it.
    folded_through: Lsn,
    /// The SCLs the PG's other segments reported by gossip (see `PeerHold`).
    peers: PeerHold,
    /// Indexed records per journal file, so the oldest file in use is found without a walk.
    records_per_file: BTreeMap<u64, u64>,
    /// The PG's quorum sets as the writer last stored them here (`None`: its placement).
    membership: Option<Membership>,
}

/// A segment's page state as a checkpoint records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageState {
    pub page_bytes: u32,
    pub floor: Lsn,
    pub folded_through: Lsn,
    pub images: Vec<(PageId, Lsn, Stored)>,
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
            told_pg_lsn: Lsn::ZERO,
            page_bytes: 0,
            pages: BTreeMap::new(),
            floor: Lsn::ZERO,
            peer_floor: Lsn::ZERO,
            reports: BTreeMap::new(),
            folded_through: Lsn::ZERO,
            peers: PeerHold::default(),
            records_per_file: BTreeMap::new(),
            membership: None,
        }
    }

    /// The PG's stored quorum sets (`None`: never changed, its placement).
    pub fn membership(&self) -> Option<Membership> {
        self.membership
    }

    /// Stores `membership` if it is newer than the stored one; true if it was.
    pub fn store_membership(&mut self, membership: Membership) -> bool {
        if self.membership.is_some_and(|m| m.epoch() >= membership.epoch()) {
            return false;
        }
        self.membership = Some(membership);
        true
    }

    /// True unless the stored membership leaves `node` out (without one, placement decides and
    /// the caller knows it).
    pub fn counts_as_member(&self, node: NodeId) -> bool {
        self.membership.is_none_or(|m| m.contains(node))
    }

    /// True if the stored membership leaves `node` (this segment's own) out: the segment is
    /// no longer written, read or gossiped.
    pub fn is_retired(&self, node: NodeId) -> bool {
        self.membership.is_some_and(|m| !m.contains(node))
    }

    /// The oldest journal file an indexed record is in.
    pub fn oldest_file(&self) -> Option<u64> {
        self.records_per_file.keys().next().copied()
    }

    /// Indexes `record` at `lsn` (replacing any record there), keeping the per-file counts.
    fn index(&mut self, lsn: Lsn, record: IndexedRecord) {
        if let Some(old) = self.records.insert(lsn, record) {
            self.uncount(old.location.file);
        }
        *self.records_per_file.entry(record.location.file).or_default() += 1;
    }

    /// Removes the record at `lsn` from the index, keeping the per-file counts.
    fn unindex_entry(&mut self, lsn: Lsn) -> Option<IndexedRecord> {
        let record = self.records.remove(&lsn)?;
        self.uncount(record.location.file);
        Some(record)
    }

    fn uncount(&mut self, file: u64) {
        let count = self.records_per_file.get_mut(&file).expect("an indexed record's file is counted");
        *count -= 1;
        if *count == 0 {
            self.records_per_file.remove(&file);
        }
    }

    /// The highest LSN of a record that left the index folded into an image.
    pub fn folded_through(&self) -> Lsn {
        self.folded_through
    }

    /// A segment as a checkpoint recorded it; SCL is recomputed from the backlinks.
    pub fn restore(
        pg: PgRef,
        epochs: Epochs,
        truncations: Vec<(Epoch, LsnRange)>,
        records: Vec<(Lsn, IndexedRecord)>,
        state: PageState,
    ) -> Segment {
        let mut segment = Segment::new(pg, epochs);
        segment.truncations = truncations;
        segment.page_bytes = state.page_bytes;
        segment.floor = state.floor;
        segment.folded_through = state.folded_through;
        segment.scl = state.folded_through;
        for (lsn, record) in records {
            if record.changes_page() && !record.folded {
                segment.pages.entry(record.page_id).or_default().insert_record(lsn);
            }
            segment.index(lsn, record);
        }
        for (page, lsn, stored) in state.images {
            segment.pages.entry(page).or_default().insert_image(lsn, stored);
        }
        segment.advance_scl();
        segment
    }

    /// The page state a checkpoint keeps.
    pub fn page_state(&self) -> PageState {
        let images = self
            .pages
            .iter()
            .flat_map(|(page, v)| v.images().map(move |(lsn, stored)| (*page, lsn, stored)))
            .collect();
        PageState {
            page_bytes: self.page_bytes,
            floor: self.floor,
            folded_through: self.folded_through,
            images,
        }
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
    /// A VDL a writer told this segment: every record at or below it is durable. Folding only
    /// goes up to a VDL told, and `folded_through` is checkpointed, so after a restart (which
    /// forgets what was told) it still bounds the hint from below.
    pub fn vdl_hint(&self) -> Lsn {
        self.vdl_hint.max(self.folded_through)
    }
    pub fn page_bytes(&self) -> u32 {
        self.page_bytes
    }
    pub fn floor(&self) -> Lsn {
        self.floor
    }
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }
    pub fn image_count(&self) -> usize {
        self.pages.values().map(PageVersions::image_count).sum()
    }
    pub fn page(&self, page: PageId) -> Option<&PageVersions> {
        self.pages.get(&page)
    }
    /// Every page with versions held, in page order.
    pub fn pages(&self) -> impl Iterator<Item = (PageId, &PageVersions)> {
        self.pages.iter().map(|(page, v)| (*page, v))
    }

    /// The PG's newest LSN at or below `lsn` that this segment knows: a held record, or the
    /// end of the folded prefix.
    pub fn newest_at_or_below(&self, lsn: Lsn) -> Lsn {
        let held = self.records.range(..=lsn).next_back().map_or(Lsn::ZERO, |(l, _)| *l);
        held.max(if self.folded_through <= lsn { self.folded_through } else { Lsn::ZERO })
    }

    /// The highest VDL a writer told this segment since the node started (zero if none).
    /// Unlike `vdl_hint()` it is always a VDL, never inside an atomic group, so a reader may
    /// read the volume at it.
    pub fn told_vdl(&self) -> Lsn {
        self.vdl_hint
    }

    /// Remembers a VDL a writer piggybacked on a batch, with the PG's newest LSN at or below it
    /// (VDL only grows). Any writer's, even a fenced one's: what it declared durable stays so.
    pub fn learn_vdl(&mut self, vdl: Lsn, pg_vdl_lsn: Lsn) {
        debug_assert!(pg_vdl_lsn <= vdl);
        if vdl > self.vdl_hint {
            self.vdl_hint = vdl;
            self.told_pg_lsn = pg_vdl_lsn;
        }
    }

    /// The PG's newest LSN at or below `read_lsn`, which must be a VDL some writer declared,
    /// if this segment can prove it (`AsOf::NotYet` while it cannot). Either the segment is complete through
    /// `read_lsn`, so every record it holds at or below is in the committed history (records
    /// a fenced writer left lie in truncation ranges, all above any VDL declared before the
    /// truncation and below every LSN allocated after it; a segment that missed a truncation
    /// cannot chain past those records); or a writer told it a VDL at or above `read_lsn`
    /// whose newest PG LSN is at or below `read_lsn`, which is then the answer.
    /// Below the folded prefix's end the newest record left the index: `FoldedAway`.
    pub fn newest_as_of(&self, read_lsn: Lsn) -> AsOf {
        if self.told_pg_lsn <= read_lsn && read_lsn <= self.vdl_hint {
            return AsOf::Newest(self.told_pg_lsn);
        }
        if self.scl < read_lsn {
            return AsOf::NotYet;
        }
        if read_lsn < self.folded_through {
            return AsOf::FoldedAway;
        }
        AsOf::Newest(self.newest_at_or_below(read_lsn))
    }
    pub fn truncations(&self) -> &[(Epoch, LsnRange)] {
        &self.truncations
    }
    /// The newest LSN held, chained or not, counting records folded into images (all at or
    /// below SCL): a quiet PG whose records were all folded still reports its newest.
    pub fn highest_lsn(&self) -> Lsn {
        self.records.last_key_value().map_or(Lsn::ZERO, |(lsn, _)| *lsn).max(self.scl)
    }
    pub fn record_count(&self) -> usize {
        self.records.len()
    }
    pub fn get(&self, lsn: Lsn) -> Option<&IndexedRecord> {
        self.records.get(&lsn)
    }

    /// Indexes a durable record; returns false (and stores nothing) if it is truncated.
    pub fn insert_durable(&mut self, lsn: Lsn, record: IndexedRecord) -> bool {
        if self.is_truncated(lsn) || (lsn <= self.folded_through && !self.records.contains_key(&lsn)) {
            // Truncated, or already folded into an image.
            return false;
        }
        if record.changes_page() {
            self.pages.entry(record.page_id).or_default().insert_record(lsn);
        }
        self.index(lsn, record);
        self.advance_scl();
        true
    }

    /// Drops a record whose stored copy turned out to be unreadable, so the segment no longer
    /// claims it; SCL falls back to before it and a peer can supply it.
    pub fn forget(&mut self, lsn: Lsn) {
        if self.unindex(lsn) && self.scl >= lsn {
            // Everything below the old SCL was chained, so the record before `lsn` still is.
            self.scl = self.held_before(lsn);
        }
    }

    /// The newest LSN below `lsn` the chain can stand on: a held record or a folded one.
    fn held_before(&self, lsn: Lsn) -> Lsn {
        let held = self.records.range(..lsn).next_back().map_or(Lsn::ZERO, |(l, _)| *l);
        held.max(if self.folded_through < lsn { self.folded_through } else { Lsn::ZERO })
    }

    /// Removes a record from the index and its page's log; true if it was held.
    fn unindex(&mut self, lsn: Lsn) -> bool {
        let Some(record) = self.unindex_entry(lsn) else { return false };
        if let Some(versions) = self.pages.get_mut(&record.page_id) {
            versions.remove_record(lsn);
            if versions.is_empty() {
                self.pages.remove(&record.page_id);
            }
        }
        true
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
            page_id: PageId(prev % 3),
            kind: RecordKind::PagePatch,
            location: Location { file: 0, offset: 0, len: 0 },
            folded: false,
        }
    }
    fn range(a: u64, b: u64) -> LsnRange {
        LsnRange::new(Lsn(a), Lsn(b)).unwrap()
    }

    #[test]
    fn a_reader_learns_the_newest_lsn_at_a_declared_vdl_from_the_chain_or_from_what_was_told() {
        let mut s = seg();
        s.insert_durable(Lsn(10), rec(0));
        s.insert_durable(Lsn(30), rec(20));
        assert_eq!(s.newest_as_of(Lsn(10)), AsOf::Newest(Lsn(10)), "complete through 10");
        assert_eq!(s.newest_as_of(Lsn(25)), AsOf::NotYet, "20 may lie below 25: not provable");
        // The writer declares VDL 50 with this PG's newest record at 30 (record 20 is on other
        // segments): reads in [30, 50] know their newest; below 30 they still need record 20.
        s.learn_vdl(Lsn(50), Lsn(30));
        assert_eq!(s.newest_as_of(Lsn(40)), AsOf::Newest(Lsn(30)));
        assert_eq!(s.newest_as_of(Lsn(50)), AsOf::Newest(Lsn(30)));
        assert_eq!(s.newest_as_of(Lsn(25)), AsOf::NotYet);
        assert_eq!(s.newest_as_of(Lsn(51)), AsOf::NotYet, "above every VDL told and above SCL");
        // An older VDL told later does not replace the newer pair.
        s.learn_vdl(Lsn(45), Lsn(10));
        assert_eq!((s.told_vdl(), s.newest_as_of(Lsn(46))), (Lsn(50), AsOf::Newest(Lsn(30))));
        s.insert_durable(Lsn(20), rec(10));
        assert_eq!(s.newest_as_of(Lsn(25)), AsOf::Newest(Lsn(20)), "complete through 30 now");
        assert_eq!(s.newest_as_of(Lsn(30)), AsOf::Newest(Lsn(30)));
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
    fn a_truncation_seen_again_below_the_folded_prefix_keeps_scl() {
        let mut s = seg();
        s.truncate(Epoch(2), range(5, 50));
        for (lsn, prev) in [(51, 0), (52, 51), (53, 52)] {
            s.insert_durable(Lsn(lsn), rec(prev));
        }
        s.learn_vdl(Lsn(53), Lsn(53));
        s.mark_folded(Lsn(51));
        s.mark_folded(Lsn(52));
        assert_eq!((s.folded_through(), s.scl()), (Lsn(52), Lsn(53)));
        s.truncate(Epoch(2), range(5, 50));
        assert_eq!(s.scl(), Lsn(53), "nothing the chain held was dropped");
        s.truncate(Epoch(2), range(52, 60));
        assert_eq!(s.scl(), Lsn(52), "53 was dropped; the folded prefix still stands");
    }

    #[test]
    fn the_oldest_file_in_use_follows_inserts_replacements_and_removals() {
        let mut s = seg();
        let in_file = |prev: u64, file: u64| IndexedRecord {
            location: Location { file, offset: 0, len: 0 },
            ..rec(prev)
        };
        s.insert_durable(Lsn(10), in_file(0, 3));
        s.insert_durable(Lsn(20), in_file(10, 4));
        s.insert_durable(Lsn(30), in_file(20, 5));
        assert_eq!(s.oldest_file(), Some(3));
        s.insert_durable(Lsn(10), in_file(0, 6));
        assert_eq!(s.oldest_file(), Some(4), "10 now lives in file 6");
        s.learn_vdl(Lsn(30), Lsn(30));
        s.mark_folded(Lsn(20));
        assert_eq!(s.oldest_file(), Some(4), "20 stays indexed until 10 is folded too");
        s.mark_folded(Lsn(10));
        assert_eq!(s.oldest_file(), Some(5));
        s.forget(Lsn(30));
        assert_eq!(s.oldest_file(), None);
    }

    #[test]
    fn a_quiet_segment_folded_empty_still_reports_its_newest_lsn_and_a_vdl_bound_after_restart() {
        let mut s = seg();
        s.insert_durable(Lsn(10), rec(0));
        s.insert_durable(Lsn(20), rec(10));
        s.learn_vdl(Lsn(20), Lsn(20));
        s.mark_folded(Lsn(10));
        s.mark_folded(Lsn(20));
        assert_eq!(s.record_count(), 0, "everything folded into images");
        assert_eq!((s.highest_lsn(), s.vdl_hint()), (Lsn(20), Lsn(20)));
        // A restart restores the folded prefix from the checkpoint but forgets the VDL told.
        let state = s.page_state();
        let restored = Segment::restore(s.pg(), s.epochs(), Vec::new(), Vec::new(), state);
        assert_eq!(
            (restored.scl(), restored.highest_lsn(), restored.vdl_hint()),
            (Lsn(20), Lsn(20), Lsn(20))
        );
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
    fn the_known_pg_lsn_is_the_newest_a_writer_or_a_live_peer_vouched_for() {
        let mut s = seg();
        s.insert_durable(Lsn(10), rec(0));
        assert_eq!(s.known_pg_lsn(), Lsn::ZERO, "nobody told it anything yet");
        s.learn_vdl(Lsn(40), Lsn(30));
        assert_eq!(s.known_pg_lsn(), Lsn(30), "the PG's newest at or below the VDL, not the VDL");
        s.note_peer(NodeId(2), Lsn(50), Lsn::ZERO, 100);
        assert_eq!(s.known_pg_lsn(), Lsn(50));
        s.refresh_peers(100);
        assert_eq!(s.known_pg_lsn(), Lsn(30), "an expired peer report no longer counts");
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
