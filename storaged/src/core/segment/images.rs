//! The page side of a segment: page reads planned, images installed (built, hydrated, moved) or
//! dropped, and versions no read needs pruned, their records folded into images.

use protocol::{Lsn, PageId};

use super::{IndexedRecord, Segment};
use crate::core::pages::{Stored, VersionPlan};

impl Segment {
    /// Learns the volume's page size from a batch; false if it differs from the one known.
    pub fn learn_page_bytes(&mut self, page_bytes: u32) -> bool {
        if self.page_bytes == 0 {
            self.page_bytes = page_bytes;
        }
        self.page_bytes == page_bytes
    }

    /// What reading `page` as of `bound` (at most the SCL) takes.
    pub fn plan_page(&self, page: PageId, bound: Lsn) -> VersionPlan {
        debug_assert!(bound <= self.scl, "a page is built only from a complete chain");
        self.pages
            .get(&page)
            .map_or(VersionPlan { version_lsn: Lsn::ZERO, base: None, records: Vec::new() }, |v| {
                v.plan(bound)
            })
    }

    /// Installs a durable image of `page` as of `lsn` and drops what it makes unneeded.
    /// Returns false (and stores nothing) if `lsn` or any of `folded` is no longer held: a
    /// truncation or a corrupt record overtook the build.
    pub fn add_image(&mut self, page: PageId, lsn: Lsn, stored: Stored, folded: &[Lsn]) -> bool {
        let held = |l: &Lsn| self.records.get(l).is_some_and(|r| r.page_id == page);
        let current = self.pages.get(&page).is_some_and(|v| v.image(lsn).is_some() || v.has_record(lsn));
        if !current || !folded.iter().all(held) {
            return false;
        }
        self.pages.entry(page).or_default().insert_image(lsn, stored);
        self.prune_page(page);
        true
    }

    /// Takes a hydration's page versions: `images` hold every page of the PG as of `base` (the
    /// PG's newest LSN at the source's read point), durably stored. Records and images at or
    /// below `base` give way to them; the segment then holds everything through `base` (folded),
    /// so SCL reaches at least `base` and continues through the records held above it.
    pub fn install_hydrated(&mut self, base: Lsn, images: Vec<(PageId, Lsn, Stored)>) {
        let covered: Vec<Lsn> = self.records.range(..=base).map(|(lsn, _)| *lsn).collect();
        for lsn in covered {
            self.unindex(lsn);
        }
        for versions in self.pages.values_mut() {
            versions.retain_images(|lsn| lsn > base);
        }
        self.pages.retain(|_, v| !v.is_empty());
        for (page, version, stored) in images {
            assert!(version <= base, "a hydrated version {version} above its base {base}");
            self.pages.entry(page).or_default().insert_image(version, stored);
        }
        self.folded_through = self.folded_through.max(base);
        self.scl = self.scl.max(base);
        self.floor = self.floor.max(base);
        self.advance_scl();
    }

    /// Removes the image of `page` at `lsn` (a damaged one a newer repaired image replaced).
    pub fn drop_image(&mut self, page: PageId, lsn: Lsn) {
        if let Some(versions) = self.pages.get_mut(&page) {
            versions.retain_images(|l| l != lsn);
            if versions.is_empty() {
                self.pages.remove(&page);
            }
        }
    }

    /// Replaces the location of an image that was copied elsewhere (page store compaction).
    pub fn move_image(&mut self, page: PageId, lsn: Lsn, from: Stored, to: Stored) -> bool {
        match self.pages.get_mut(&page) {
            Some(versions) if versions.image(lsn) == Some(from) => {
                versions.insert_image(lsn, to);
                true
            }
            _ => false,
        }
    }

    /// The point up to which versions may be dropped: the floor, but never above the VDL a
    /// writer told this segment, since a recovering writer reads the records above it, nor
    /// above what a live peer holds, since it fetches the records it lacks from its peers.
    pub fn gc_floor(&self) -> Lsn {
        self.floor.min(self.vdl_hint).min(self.peers.need())
    }

    /// Drops the records and images of `page` that no read at or above the floor needs.
    pub fn prune_page(&mut self, page: PageId) {
        let gc_floor = self.gc_floor();
        let Some(versions) = self.pages.get_mut(&page) else { return };
        let dropped = versions.prune(gc_floor);
        if versions.is_empty() {
            self.pages.remove(&page);
        }
        for lsn in dropped {
            self.mark_folded(lsn);
        }
    }

    /// Marks a record whose effect a durable image (or nothing: a `Marker`) now carries, and
    /// drops the folded prefix of the index.
    pub fn mark_folded(&mut self, lsn: Lsn) {
        if let Some(record) = self.records.get_mut(&lsn) {
            record.folded = true;
        }
        while let Some((&lsn, first)) = self.records.first_key_value() {
            // Never past SCL: a hole below a folded record must stay visible to the chain.
            if !first.folded || lsn > self.scl {
                break;
            }
            self.unindex_entry(lsn);
            self.folded_through = lsn;
        }
    }

    /// Held records not yet folded.
    pub fn unfolded_records(&self) -> impl Iterator<Item = (Lsn, &IndexedRecord)> {
        self.all_records().filter(|(_, r)| !r.folded)
    }
}
