//! The writes of the transaction in progress, held in memory until it commits, and the one
//! atomic group that commits them.
//!
//! Nothing of a transaction reaches the volume before its commit (`xSync`, SQLite's
//! `COMMIT_ATOMIC_WRITE`, or the end of the write lock): the commit appends every page written,
//! the zero pages a file extension left as holes, the trims of pages a truncation cut off and
//! the superblock (when the size changed) as ONE append whose last record is the CPL. VDL only
//! stops at a CPL, so after any crash the volume holds all of a transaction or none of it —
//! never a partial one — and SQLite's rollback journal is never needed for recovery.
//!
//! Invariants: every page in `pages` is a whole page below `size`; a file page at or above
//! `zero_from` that is not in `pages` reads as zeros (a hole, or a page cut off and grown back);
//! below it, as the volume holds it.

use std::collections::BTreeMap;

use bytes::Bytes;
use client::NewRecord;
use protocol::{PageId, RecordKind};

use crate::superblock::{self, PAGE};

/// Pages one transaction may write (128 MiB): it is held in memory until it commits, and its
/// commit is one append, which the writer accepts only below its pending-record bound
/// (100,000 records by default).
pub const TRANSACTION_PAGES_MAX: usize = 32_768;
/// Records of one commit: the transaction's pages plus holes and the superblock.
pub const COMMIT_RECORDS_MAX: usize = TRANSACTION_PAGES_MAX + 1024;
/// Pages cut off by a truncation that the commit trims; beyond it they are left as they are
/// (unreachable: a page past the size is never read, and a page the file grows back over is
/// written or zeroed by that commit).
pub const TRIM_RECORDS_MAX: usize = 4096;

/// Where a file page's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Written by the transaction in progress.
    Pending(Bytes),
    /// A hole: zeros.
    Zero,
    /// As the volume holds it (at VDL).
    Stored,
}

/// Why a write or a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooBig {
    #[error("a transaction may write at most {TRANSACTION_PAGES_MAX} pages")]
    Pages,
    #[error("a commit may hold at most {COMMIT_RECORDS_MAX} records; this one needs {0}")]
    Records(usize),
}

/// The transaction in progress on top of the durable file.
#[derive(Debug, Clone)]
pub struct Pending {
    pages: BTreeMap<u64, Bytes>,
    size: u64,
    durable_size: u64,
    zero_from: u64,
}

/// The file pages a size covers.
pub fn pages_of(size: u64) -> u64 {
    size.div_ceil(PAGE as u64)
}

/// The volume page holding file page `page` (page 0 is the superblock).
pub fn volume_page(page: u64) -> PageId {
    PageId(page + 1)
}

impl Pending {
    /// Nothing pending on a durable file of `durable_size` bytes.
    pub fn new(durable_size: u64) -> Pending {
        Pending {
            pages: BTreeMap::new(),
            size: durable_size,
            durable_size,
            zero_from: pages_of(durable_size),
        }
    }

    /// The file's size with the transaction's writes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn durable_size(&self) -> u64 {
        self.durable_size
    }

    /// True if a commit has something to append.
    pub fn is_dirty(&self) -> bool {
        !self.pages.is_empty() || self.size != self.durable_size
    }

    /// Where file page `page`'s bytes come from (the page may lie past the size: the caller
    /// decides what a read there means).
    pub fn source(&self, page: u64) -> Source {
        match self.pages.get(&page) {
            Some(bytes) => Source::Pending(bytes.clone()),
            None if page >= self.zero_from => Source::Zero,
            None => Source::Stored,
        }
    }

    /// Takes a whole page's new bytes; the file grows to `size_at_least` if it is shorter.
    pub fn put(&mut self, page: u64, bytes: Bytes, size_at_least: u64) -> Result<(), TooBig> {
        assert_eq!(bytes.len(), PAGE, "pending pages are whole pages");
        assert!(pages_of(size_at_least) > page, "the size covers the page written");
        if !self.pages.contains_key(&page) && self.pages.len() >= TRANSACTION_PAGES_MAX {
            return Err(TooBig::Pages);
        }
        self.pages.insert(page, bytes);
        self.size = self.size.max(size_at_least);
        Ok(())
    }

    /// Sets the size to `size`; pages past it are dropped and read as zeros if the file grows
    /// back over them. The caller zeroes the tail of a last page cut in the middle.
    pub fn truncate(&mut self, size: u64) {
        let pages = pages_of(size);
        self.pages.retain(|page, _| *page < pages);
        self.zero_from = self.zero_from.min(pages);
        self.size = size;
    }

    /// The commit's atomic group (empty if nothing is pending): page images, zero pages for the
    /// holes, trims of what was cut off, the superblock if the size changed; the last is the CPL.
    pub fn records(&self) -> Result<Vec<NewRecord>, TooBig> {
        if !self.is_dirty() {
            return Ok(Vec::new());
        }
        let record = |page: u64, kind, payload| NewRecord {
            page: volume_page(page),
            kind,
            payload,
            cpl: false,
            lsn: None,
        };
        let pages = pages_of(self.size);
        let mut records: Vec<NewRecord> =
            self.pages.iter().map(|(p, b)| record(*p, RecordKind::PageImage, b.clone())).collect();
        let holes = (self.zero_from..pages).filter(|p| !self.pages.contains_key(p));
        records.extend(holes.map(|p| record(p, RecordKind::PageZero, Bytes::new())));
        let cut = pages..pages_of(self.durable_size);
        if (cut.end.saturating_sub(cut.start) as usize) <= TRIM_RECORDS_MAX {
            records.extend(cut.map(|p| record(p, RecordKind::PageTrim, Bytes::new())));
        }
        if self.size != self.durable_size {
            let payload = superblock::encode(self.size);
            records.push(NewRecord {
                page: superblock::PAGE_ID,
                kind: RecordKind::PageImage,
                payload,
                cpl: false,
                lsn: None,
            });
        }
        if records.len() > COMMIT_RECORDS_MAX {
            return Err(TooBig::Records(records.len()));
        }
        records.last_mut().expect("a dirty transaction has a record").cpl = true;
        Ok(records)
    }

    /// After the commit of `records()` became durable: the pages it wrote (for the cache), the
    /// first page whose cached bytes it may have changed otherwise, and nothing left pending.
    pub fn committed(&mut self) -> (BTreeMap<u64, Bytes>, u64) {
        let zero_from = self.zero_from;
        let pages = std::mem::take(&mut self.pages);
        *self = Pending::new(self.size);
        (pages, zero_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(b: u8) -> Bytes {
        Bytes::from(vec![b; PAGE])
    }

    fn kinds(records: &[NewRecord]) -> Vec<(u64, RecordKind, bool)> {
        records.iter().map(|r| (r.page.0, r.kind, r.cpl)).collect()
    }

    #[test]
    fn a_transaction_that_grows_the_file_commits_its_pages_then_the_superblock_as_the_cpl() {
        let mut p = Pending::new(2 * PAGE as u64);
        p.put(1, page(1), 2 * PAGE as u64).unwrap();
        p.put(2, page(2), 3 * PAGE as u64).unwrap();
        assert_eq!(p.size(), 3 * PAGE as u64);
        let records = p.records().unwrap();
        assert_eq!(
            kinds(&records),
            [
                (2, RecordKind::PageImage, false),
                (3, RecordKind::PageImage, false),
                (0, RecordKind::PageImage, true)
            ]
        );
        assert_eq!(superblock::parse(Some(&records[2].payload)), Ok(Some(3 * PAGE as u64)));
    }

    #[test]
    fn a_transaction_that_keeps_the_size_ends_on_its_last_page() {
        let mut p = Pending::new(4 * PAGE as u64);
        p.put(3, page(3), PAGE as u64 * 4).unwrap();
        p.put(0, page(0), PAGE as u64).unwrap();
        assert_eq!(
            kinds(&p.records().unwrap()),
            [(1, RecordKind::PageImage, false), (4, RecordKind::PageImage, true)]
        );
    }

    #[test]
    fn nothing_pending_commits_nothing() {
        assert!(Pending::new(0).records().unwrap().is_empty());
    }

    #[test]
    fn a_truncation_trims_what_it_cut_off_and_reads_it_back_as_zeros() {
        let mut p = Pending::new(4 * PAGE as u64);
        p.put(3, page(3), 4 * PAGE as u64).unwrap();
        p.truncate(2 * PAGE as u64);
        assert_eq!(p.source(3), Source::Zero);
        assert_eq!(p.source(1), Source::Stored);
        assert_eq!(
            kinds(&p.records().unwrap()),
            [
                (3, RecordKind::PageTrim, false),
                (4, RecordKind::PageTrim, false),
                (0, RecordKind::PageImage, true)
            ]
        );
    }

    #[test]
    fn a_file_cut_and_grown_back_zeroes_the_pages_it_did_not_write() {
        let mut p = Pending::new(4 * PAGE as u64);
        p.truncate(PAGE as u64);
        p.put(3, page(3), 4 * PAGE as u64).unwrap();
        assert_eq!(p.source(2), Source::Zero, "not the stale page the volume still holds");
        assert_eq!(
            kinds(&p.records().unwrap()),
            [
                (4, RecordKind::PageImage, false),
                (2, RecordKind::PageZero, false),
                (3, RecordKind::PageZero, true)
            ]
        );
    }

    #[test]
    fn a_commit_leaves_nothing_pending_and_reports_what_to_cache() {
        let mut p = Pending::new(PAGE as u64);
        p.truncate(0);
        p.put(0, page(7), PAGE as u64).unwrap();
        let (pages, zero_from) = p.committed();
        assert_eq!(pages.into_iter().collect::<Vec<_>>(), [(0, page(7))]);
        assert_eq!(zero_from, 0);
        assert!(!p.is_dirty());
        assert_eq!(p.durable_size(), PAGE as u64);
        assert_eq!(p.source(0), Source::Stored);
        assert_eq!(p.source(1), Source::Zero);
    }

    #[test]
    fn a_transaction_above_its_bound_is_refused() {
        let size = (TRANSACTION_PAGES_MAX as u64 + 1) * PAGE as u64;
        let mut p = Pending::new(size);
        for page_no in 0..TRANSACTION_PAGES_MAX as u64 {
            p.put(page_no, page(1), size).unwrap();
        }
        assert_eq!(p.put(TRANSACTION_PAGES_MAX as u64, page(1), size), Err(TooBig::Pages));
        p.put(0, page(2), size).unwrap();
    }
}
