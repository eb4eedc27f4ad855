//! The page side of a segment: for each page, the log records still held and the materialized
//! images, and the rule that says which of them a read in [floor, SCL] may still need.
//!
//! A read at point R of page P needs the newest image of P at or below R (its *base*) and every
//! record of P in (base, R]. So, with floor F:
//! - a record at L <= F is needed unless an image lies in [L, F];
//! - an image at X is needed unless a newer image lies at or below F.
//!
//! [`PageVersions::prune`] drops exactly what those rules allow. Records above the floor are
//! kept even where an image at their own LSN makes them useless to reads: a recovering writer
//! may still ask for them (`ReadRecords`).

use protocol::Lsn;

use super::location::Location;

/// Where a materialized page version lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stored {
    /// All zeros (the newest record folded in was a `PageZero` or `PageTrim`): nothing on disk.
    Zeros,
    /// A sealed image entry in the page store.
    At(Location),
}

/// The versions of one page a segment holds. Both lists are short (the coalescer keeps them
/// so) and sorted, so plain vectors beat trees on memory: see `docs/storaged.md`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageVersions {
    /// LSNs of the page's records still held in the journal, ascending.
    log: Vec<Lsn>,
    /// Materialized versions by LSN (the newest record each folds in), ascending.
    images: Vec<(Lsn, Stored)>,
}

/// What a read of one page at a bound needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionPlan {
    /// LSN of the newest record in the version (zero: no record, the page reads as zeros).
    pub version_lsn: Lsn,
    /// The newest image at or below the bound.
    pub base: Option<(Lsn, Stored)>,
    /// The records after the base, up to the bound, in LSN order.
    pub records: Vec<Lsn>,
}

impl PageVersions {
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.images.is_empty()
    }

    /// Notes a held record of this page.
    pub fn insert_record(&mut self, lsn: Lsn) {
        insert_sorted(&mut self.log, lsn, |l| *l);
    }

    /// Forgets a record; true if it was held.
    pub fn remove_record(&mut self, lsn: Lsn) -> bool {
        let found = self.log.binary_search(&lsn);
        found.map(|at| self.log.remove(at)).is_ok()
    }

    /// The page's records in `(after, through]`, oldest first.
    pub fn records_in(&self, after: Lsn, through: Lsn) -> Vec<Lsn> {
        let from = self.log.partition_point(|l| *l <= after);
        let to = self.log.partition_point(|l| *l <= through);
        self.log[from..to.max(from)].to_vec()
    }

    pub fn has_record(&self, lsn: Lsn) -> bool {
        self.log.binary_search(&lsn).is_ok()
    }

    /// Notes a durable image (replacing one at the same LSN).
    pub fn insert_image(&mut self, lsn: Lsn, stored: Stored) {
        match self.images.binary_search_by_key(&lsn, |(l, _)| *l) {
            Ok(at) => self.images[at].1 = stored,
            Err(at) => {
                // Pages hold one or two images: grow one slot at a time.
                self.images.reserve_exact(1);
                self.images.insert(at, (lsn, stored));
            }
        }
    }

    /// The image at exactly `lsn`.
    pub fn image(&self, lsn: Lsn) -> Option<Stored> {
        self.images.binary_search_by_key(&lsn, |(l, _)| *l).ok().map(|at| self.images[at].1)
    }

    /// The images, oldest first.
    pub fn images(&self) -> impl Iterator<Item = (Lsn, Stored)> + '_ {
        self.images.iter().copied()
    }

    pub fn image_count(&self) -> usize {
        self.images.len()
    }

    /// Keeps only the images `keep` accepts.
    pub fn retain_images(&mut self, keep: impl Fn(Lsn) -> bool) {
        self.images.retain(|(lsn, _)| keep(*lsn));
    }

    /// The newest image at or below `bound`.
    pub fn image_at_or_below(&self, bound: Lsn) -> Option<(Lsn, Stored)> {
        let count = self.images.partition_point(|(l, _)| *l <= bound);
        count.checked_sub(1).map(|at| self.images[at])
    }

    /// False if the page's history at `bound` was folded away here: its oldest version held is
    /// an image above `bound` and no record at or below it is held (a prune, a hydration or a
    /// repair dropped what came earlier: each leaves an image below every record it keeps), so
    /// the page as of `bound` is unknown, not zeros.
    pub fn knows(&self, bound: Lsn) -> bool {
        match self.images.first() {
            Some((oldest, _)) if *oldest > bound => self.log.first().is_some_and(|first| first <= oldest),
            _ => true,
        }
    }

    /// What building the page as of `bound` takes.
    pub fn plan(&self, bound: Lsn) -> VersionPlan {
        let base = self.image_at_or_below(bound);
        let after = base.map_or(Lsn::ZERO, |(lsn, _)| lsn);
        let from = self.log.partition_point(|l| *l <= after);
        let to = self.log.partition_point(|l| *l <= bound);
        let records = self.log[from..to.max(from)].to_vec();
        let version_lsn = records.last().copied().unwrap_or(after);
        VersionPlan { version_lsn, base, records }
    }

    /// The newest record at or below `bound`, if it is newer than every image at or below it:
    /// the version a coalescer should materialize for that bound.
    pub fn fold_target(&self, bound: Lsn) -> Option<Lsn> {
        let count = self.log.partition_point(|l| *l <= bound);
        let newest = self.log[..count].last().copied()?;
        let imaged = self.image_at_or_below(bound).is_some_and(|(lsn, _)| lsn >= newest);
        (!imaged).then_some(newest)
    }

    /// True if at least `count` records follow the newest image (a read of the newest version
    /// would apply that many).
    pub fn records_after_newest_image_at_least(&self, count: usize) -> bool {
        let after = self.images.last().map_or(Lsn::ZERO, |(lsn, _)| *lsn);
        self.log.len() - self.log.partition_point(|l| *l <= after) >= count
    }

    /// Drops every record and image no read at or above `floor` needs (see the module docs).
    /// Returns the records dropped, oldest first.
    pub fn prune(&mut self, floor: Lsn) -> Vec<Lsn> {
        let Some((base, _)) = self.image_at_or_below(floor) else { return Vec::new() };
        self.images.retain(|(lsn, _)| *lsn >= base);
        let folded = self.log.partition_point(|l| *l <= base);
        let dropped = self.log.drain(..folded).collect();
        self.log.shrink_to(self.log.len().max(4));
        dropped
    }
}

/// Inserts `item` into the sorted `list` (records almost always arrive in order: a push).
fn insert_sorted<T>(list: &mut Vec<T>, item: T, key: impl Fn(&T) -> Lsn) {
    let lsn = key(&item);
    match list.last() {
        Some(last) if key(last) >= lsn => {
            let at = list.partition_point(|x| key(x) < lsn);
            if list.get(at).is_none_or(|x| key(x) != lsn) {
                list.insert(at, item);
            }
        }
        _ => list.push(item),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Stored {
        Stored::At(Location { file: 1, offset, len: 100 })
    }

    fn versions(log: &[u64], images: &[u64]) -> PageVersions {
        PageVersions {
            log: log.iter().map(|l| Lsn(*l)).collect(),
            images: images.iter().map(|l| (Lsn(*l), at(*l))).collect(),
        }
    }

    #[test]
    fn records_and_images_stay_sorted_whatever_the_arrival_order() {
        let mut v = PageVersions::default();
        for lsn in [30, 10, 20, 20, 40] {
            v.insert_record(Lsn(lsn));
        }
        assert_eq!(v.log, [10, 20, 30, 40].map(Lsn).to_vec());
        v.insert_image(Lsn(30), Stored::Zeros);
        v.insert_image(Lsn(10), at(10));
        assert_eq!(v.images().map(|(l, _)| l).collect::<Vec<_>>(), vec![Lsn(10), Lsn(30)]);
        assert!(v.remove_record(Lsn(20)) && !v.remove_record(Lsn(20)));
    }

    #[test]
    fn a_read_starts_from_the_newest_image_at_or_below_its_bound() {
        let v = versions(&[10, 20, 30, 40], &[20]);
        let plan = v.plan(Lsn(35));
        assert_eq!(plan.base, Some((Lsn(20), at(20))));
        assert_eq!(plan.records, vec![Lsn(30)]);
        assert_eq!(plan.version_lsn, Lsn(30));
        let plan = v.plan(Lsn(15));
        assert_eq!((plan.base, plan.records, plan.version_lsn), (None, vec![Lsn(10)], Lsn(10)));
        assert_eq!(v.plan(Lsn(5)).version_lsn, Lsn::ZERO);
    }

    #[test]
    fn history_folded_into_an_image_is_unknown_below_it_not_zeros() {
        let mut v = versions(&[10, 20, 30], &[20]);
        assert!(v.knows(Lsn(5)) && v.knows(Lsn(15)), "every record from the first is held");
        v.prune(Lsn(25));
        assert_eq!(v.plan(Lsn(15)).version_lsn, Lsn::ZERO, "the plan alone would say zeros");
        assert!(!v.knows(Lsn(15)) && !v.knows(Lsn(5)), "but the records below 20 are gone");
        assert!(v.knows(Lsn(20)) && v.knows(Lsn(35)));
        let hydrated = versions(&[40], &[30]);
        assert!(!hydrated.knows(Lsn(29)) && hydrated.knows(Lsn(30)));
        let coalesced = versions(&[10], &[10]);
        assert!(coalesced.knows(Lsn(5)), "the image folds a record still held: zeros below it");
    }

    #[test]
    fn prune_keeps_exactly_what_reads_at_or_above_the_floor_need() {
        let mut v = versions(&[10, 20, 30, 40, 50], &[20, 40]);
        assert!(v.prune(Lsn(15)).is_empty(), "no image at or below the floor");
        let dropped = v.prune(Lsn(45));
        assert_eq!(dropped, [10, 20, 30, 40].map(Lsn).to_vec());
        assert_eq!(v.images().map(|(l, _)| l).collect::<Vec<_>>(), vec![Lsn(40)]);
        assert_eq!(v.plan(Lsn(45)).base, Some((Lsn(40), at(40))));
        assert_eq!(v.plan(Lsn(60)).records, vec![Lsn(50)]);
    }

    #[test]
    fn the_fold_target_is_the_newest_record_not_yet_imaged() {
        let v = versions(&[10, 20, 30], &[20]);
        assert_eq!(v.fold_target(Lsn(25)), None, "the image at 20 covers the bound");
        assert_eq!(v.fold_target(Lsn(35)), Some(Lsn(30)));
        assert!(v.records_after_newest_image_at_least(1));
        assert!(!v.records_after_newest_image_at_least(2));
    }
}
