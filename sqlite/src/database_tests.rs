//! The database file over a store that keeps only what was committed: random sequences of
//! writes (whole pages and odd spans), truncations, reads, commits and crashes, checked against
//! a plain byte vector; and the commit's failure paths.

use std::collections::HashMap;

use bytes::Bytes;
use client::NewRecord;
use protocol::{PageId, RecordKind};

use super::*;

/// A volume in memory: applies a commit's records all at once, keeps nothing else.
#[derive(Debug, Default)]
struct MemStore {
    pages: HashMap<u64, Bytes>,
    commits: usize,
    /// Pages read.
    reads: usize,
    fail_next: Option<StoreError>,
    fail_next_read: Option<StoreError>,
    /// As a read-only view: the next `refresh` reports that the view moved.
    moves_next: bool,
    /// As a read-only view: a point is held (between `refresh` and `release`).
    holding: bool,
}

impl PageStore for MemStore {
    fn read(&mut self, pages: &[PageId]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if let Some(error) = self.fail_next_read.take() {
            return Err(error);
        }
        self.reads += pages.len();
        Ok(pages.iter().map(|page| self.pages.get(&page.0).cloned()).collect())
    }

    fn commit(&mut self, records: Vec<NewRecord>) -> Result<(), StoreError> {
        if let Some(error) = self.fail_next.take() {
            return Err(error);
        }
        let (last, rest) = records.split_last().expect("a commit has records");
        assert!(last.cpl && rest.iter().all(|r| !r.cpl), "one group, its last record the CPL");
        for record in &records {
            match record.kind {
                RecordKind::PageImage => {
                    assert_eq!(record.payload.len(), PAGE);
                    self.pages.insert(record.page.0, record.payload.clone());
                }
                RecordKind::PageZero | RecordKind::PageTrim => {
                    self.pages.remove(&record.page.0);
                }
                other => panic!("the VFS writes no {other:?}"),
            }
        }
        self.commits += 1;
        Ok(())
    }

    fn refresh(&mut self) -> Result<bool, StoreError> {
        self.holding = true;
        Ok(std::mem::take(&mut self.moves_next))
    }

    fn release(&mut self) {
        self.holding = false;
    }
}

fn open(store: MemStore) -> Database<MemStore> {
    Database::open(store).expect("a superblock of ours")
}

/// What the file must read as: the committed bytes and the bytes with the pending writes.
#[derive(Debug, Default, Clone)]
struct Model {
    durable: Vec<u8>,
    current: Vec<u8>,
}

impl Model {
    fn write(&mut self, offset: usize, data: &[u8]) {
        if self.current.len() < offset + data.len() {
            self.current.resize(offset + data.len(), 0);
        }
        self.current[offset..offset + data.len()].copy_from_slice(data);
    }

    fn read(&self, offset: usize, len: usize) -> (Vec<u8>, ReadOutcome) {
        let mut out = vec![0u8; len];
        let end = self.current.len().min(offset + len);
        if offset < end {
            out[..end - offset].copy_from_slice(&self.current[offset..end]);
        }
        let outcome = if offset + len > self.current.len() { ReadOutcome::Short } else { ReadOutcome::Full };
        (out, outcome)
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One random operation on both; returns the database (a crash reopens it).
fn step(rng: &mut Rng, mut db: Database<MemStore>, model: &mut Model, round: u64) -> Database<MemStore> {
    let page = PAGE as u64;
    let size = model.current.len() as u64;
    match rng.below(20) {
        0..=7 => {
            // Mostly what SQLite does: whole pages at page boundaries; sometimes an odd span.
            let (offset, len) = match rng.below(4) {
                0 => (rng.below(size + 2 * page), 1 + rng.below(2 * page)),
                _ => (rng.below(size / page + 3) * page, page * (1 + rng.below(2))),
            };
            // Offset 0 holds SQLite's header: keep its page size field (16..18) at 4096.
            let mut data: Vec<u8> = (0..len).map(|i| (round as u8).wrapping_add(i as u8) | 1).collect();
            if offset < 18 && offset + len > 16 {
                for (i, b) in [0x10u8, 0x00].iter().enumerate() {
                    let at = 16 + i as u64;
                    if at >= offset && at < offset + len {
                        data[(at - offset) as usize] = *b;
                    }
                }
            }
            db.write(offset, &data).unwrap();
            model.write(offset as usize, &data);
        }
        8..=9 => {
            let to = rng.below(size + page);
            db.truncate(to).unwrap();
            model.current.resize(to as usize, 0);
        }
        10..=14 => {
            let (offset, len) = (rng.below(size + page), 1 + rng.below(3 * page));
            let mut buf = vec![0xEEu8; len as usize];
            let outcome = db.read(offset, &mut buf).unwrap();
            let (want, want_outcome) = model.read(offset as usize, len as usize);
            assert!(buf == want, "round {round}: read {offset}+{len} differs");
            assert_eq!(outcome, want_outcome, "round {round}: read {offset}+{len}");
        }
        15..=17 => {
            db.commit().unwrap();
            model.durable = model.current.clone();
        }
        _ => {
            // A crash: what was not committed is gone.
            db = open(db.into_store());
            model.current = model.durable.clone();
        }
    }
    assert_eq!(db.size().unwrap(), model.current.len() as u64, "round {round}: size");
    db
}

#[test]
fn random_writes_truncations_commits_and_crashes_read_back_as_a_plain_file() {
    for seed in 1..=64u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut db = open(MemStore::default());
        let mut model = Model::default();
        for round in 0..400 {
            db = step(&mut rng, db, &mut model, round);
        }
        // After a last crash, everything committed and nothing else.
        let mut db = open(db.into_store());
        let mut all = vec![0u8; model.durable.len()];
        assert_eq!(db.read(0, &mut all).unwrap(), ReadOutcome::Full);
        assert!(all == model.durable, "seed {seed}: the durable file differs");
    }
}

#[test]
fn a_transaction_reaches_the_store_only_at_its_commit_and_a_crash_before_loses_all_of_it() {
    let mut db = open(MemStore::default());
    db.write(0, &header_page()).unwrap();
    db.write(PAGE as u64, &[7u8; PAGE]).unwrap();
    assert_eq!(db.store.commits, 0);
    let mut db = open(db.into_store());
    assert_eq!(db.size().unwrap(), 0, "nothing of the transaction survives");
    db.write(0, &header_page()).unwrap();
    db.write(PAGE as u64, &[7u8; PAGE]).unwrap();
    db.commit().unwrap();
    assert_eq!(db.store.commits, 1, "one transaction, one append");
    let mut db = open(db.into_store());
    let mut page = [0u8; PAGE];
    db.read(PAGE as u64, &mut page).unwrap();
    assert_eq!(page, [7u8; PAGE]);
    assert_eq!(db.size().unwrap(), 2 * PAGE as u64);
}

#[test]
fn the_end_of_a_write_lock_commits_what_is_pending() {
    let mut db = open(MemStore::default());
    assert_eq!(db.lock(1, LockLevel::None, LockLevel::Shared), Ok(LockLevel::Shared));
    assert_eq!(db.lock(1, LockLevel::Shared, LockLevel::Exclusive), Ok(LockLevel::Exclusive));
    db.write(0, &header_page()).unwrap();
    let (level, committed) = db.unlock(1, LockLevel::Exclusive, LockLevel::Shared);
    assert_eq!((level, committed), (LockLevel::Shared, Ok(())));
    assert_eq!(db.store.commits, 1);
    let (_, again) = db.unlock(1, LockLevel::Shared, LockLevel::None);
    assert_eq!((again, db.store.commits), (Ok(()), 1), "a reader's unlock commits nothing");
}

#[test]
fn a_rolled_back_batch_leaves_nothing_pending() {
    let mut db = open(MemStore::default());
    db.begin_batch().unwrap();
    db.write(0, &header_page()).unwrap();
    db.rollback_batch();
    assert_eq!(db.size().unwrap(), 0);
    db.begin_batch().unwrap();
    db.write(0, &header_page()).unwrap();
    db.commit_batch().unwrap();
    assert_eq!((db.store.commits, db.size().unwrap()), (1, PAGE as u64));
}

#[test]
fn a_batch_whose_write_failed_rolls_back_and_the_next_batch_commits() {
    let mut db = open(MemStore::default());
    db.write(0, &header_page()).unwrap();
    db.commit().unwrap();
    db.begin_batch().unwrap();
    db.write(PAGE as u64, &[1u8; PAGE]).unwrap();
    let mut page = header_page();
    page[16..18].copy_from_slice(&8192u16.to_be_bytes());
    assert_eq!(db.write(0, &page), Err(FileError::PageSize(8192)));
    db.rollback_batch();
    db.begin_batch().unwrap();
    db.write(PAGE as u64, &[2u8; PAGE]).unwrap();
    db.commit_batch().unwrap();
    assert_eq!((db.store.commits, db.size().unwrap()), (2, 2 * PAGE as u64));
    let mut db = open(db.into_store());
    let mut page = [0u8; PAGE];
    db.read(PAGE as u64, &mut page).unwrap();
    assert_eq!(page, [2u8; PAGE], "the batch after the failed one is durable");
}

#[test]
fn a_failed_commit_latches_and_the_store_keeps_the_last_commit() {
    let mut db = open(MemStore::default());
    db.write(0, &header_page()).unwrap();
    db.commit().unwrap();
    db.store.fail_next = Some(StoreError::Fenced);
    db.write(PAGE as u64, &[1u8; PAGE]).unwrap();
    assert_eq!(db.commit(), Err(FileError::Store(StoreError::Fenced)));
    let mut buf = [0u8; 16];
    assert!(matches!(db.read(0, &mut buf), Err(FileError::Latched(_))));
    assert!(matches!(db.write(0, &header_page()), Err(FileError::Latched(_))));
    let db = open(db.into_store());
    assert_eq!(db.size().unwrap(), PAGE as u64);
}

#[test]
fn a_failed_read_fails_alone_unless_it_finds_the_writer_fenced() {
    let mut db = open(MemStore::default());
    db.write(0, &header_page()).unwrap();
    db.write(PAGE as u64, &[5u8; PAGE]).unwrap();
    db.commit().unwrap();
    let mut db = open(db.into_store());
    let unavailable = StoreError::Read(client::ReadError::Closed);
    db.store.fail_next_read = Some(unavailable.clone());
    let mut page = [0u8; PAGE];
    assert_eq!(db.read(PAGE as u64, &mut page), Err(FileError::Store(unavailable)));
    assert_eq!(db.read(PAGE as u64, &mut page), Ok(ReadOutcome::Full), "the next read works");
    assert_eq!(page, [5u8; PAGE]);

    let mut db = open(db.into_store());
    db.store.fail_next_read = Some(StoreError::Fenced);
    assert_eq!(db.read(PAGE as u64, &mut page), Err(FileError::Store(StoreError::Fenced)));
    assert!(matches!(db.read(PAGE as u64, &mut page), Err(FileError::Latched(_))));
}

#[test]
fn a_write_that_fails_on_a_read_poisons_its_transaction() {
    let mut db = open(MemStore::default());
    db.write(0, &header_page()).unwrap();
    db.write(PAGE as u64, &[5u8; PAGE]).unwrap();
    db.commit().unwrap();
    let mut db = open(db.into_store());
    db.write(2 * PAGE as u64, &[6u8; PAGE]).unwrap();
    db.store.fail_next_read = Some(StoreError::Read(client::ReadError::Closed));
    assert!(db.write(PAGE as u64 + 10, b"partial").is_err(), "a partial write reads its page first");
    db.commit().unwrap();
    assert_eq!((db.store.commits, db.size().unwrap()), (1, 2 * PAGE as u64), "the transaction was dropped");
}

#[test]
fn a_header_with_another_page_size_is_refused() {
    let mut db = open(MemStore::default());
    let mut page = header_page();
    page[16..18].copy_from_slice(&8192u16.to_be_bytes());
    assert_eq!(db.write(0, &page), Err(FileError::PageSize(8192)));
    page[16..18].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(db.write(0, &page), Err(FileError::PageSize(65_536)));
}

#[test]
fn a_transaction_too_big_for_memory_is_refused_with_the_disk_full_error() {
    let mut db = open(MemStore::default());
    let page = [3u8; PAGE];
    for n in 0..pending::TRANSACTION_PAGES_MAX as u64 {
        db.write((n + 1) * PAGE as u64, &page).unwrap();
    }
    let over = db.write((pending::TRANSACTION_PAGES_MAX as u64 + 1) * PAGE as u64, &page);
    assert_eq!(over, Err(FileError::TooBig(TooBig::Pages)));
}

#[test]
fn a_sequential_scan_reads_ahead_and_a_random_read_does_not() {
    let mut db = open(MemStore::default());
    db.write(0, &header_page()).unwrap();
    for n in 1..100u64 {
        db.write(n * PAGE as u64, &[n as u8; PAGE]).unwrap();
    }
    db.commit().unwrap();
    let mut db = open(db.into_store());
    db.store.reads = 0;
    let mut page = [0u8; PAGE];
    db.read(50 * PAGE as u64, &mut page).unwrap();
    assert_eq!(db.store.reads, 1, "a read out of sequence reads one page");
    db.read(51 * PAGE as u64, &mut page).unwrap();
    let window = READAHEAD_PAGES as usize;
    assert_eq!(db.store.reads, 1 + window, "the next page reads a window");
    for n in 52..51 + READAHEAD_PAGES {
        db.read(n * PAGE as u64, &mut page).unwrap();
        assert_eq!(page, [n as u8; PAGE]);
    }
    assert_eq!(db.store.reads, 1 + window, "served from the cache");
    db.read((51 + READAHEAD_PAGES) * PAGE as u64, &mut page).unwrap();
    assert_eq!(db.store.reads, 1 + window + 17, "the next window stops at the end of the file");
}

#[test]
fn a_transaction_refused_half_way_is_dropped_even_when_its_rollback_is_refused_too() {
    let mut db = open(MemStore::default());
    db.write(0, &header_page()).unwrap();
    db.write(PAGE as u64, &[1u8; PAGE]).unwrap();
    db.commit().unwrap();
    let page = [9u8; PAGE];
    for n in 0..pending::TRANSACTION_PAGES_MAX as u64 {
        db.write((n + 1) * PAGE as u64, &page).unwrap();
    }
    let over = (pending::TRANSACTION_PAGES_MAX as u64 + 1) * PAGE as u64;
    assert!(db.write(over, &page).is_err());
    // SQLite's rollback writes the old page 1 back, then fails on a page it never spilled.
    db.write(PAGE as u64, &[1u8; PAGE]).unwrap();
    assert!(db.write(over + PAGE as u64, &page).is_err());
    let (_, committed) = db.unlock(1, LockLevel::Exclusive, LockLevel::Shared);
    assert_eq!((committed, db.store.commits), (Ok(()), 1), "nothing of it committed");
    let mut read = [0u8; PAGE];
    assert_eq!(db.read(2 * PAGE as u64, &mut read).unwrap(), ReadOutcome::Short, "page 2 is gone");
    assert_eq!(db.size().unwrap(), 2 * PAGE as u64, "the durable size again");
    db.read(PAGE as u64, &mut read).unwrap();
    assert_eq!(read, [1u8; PAGE]);
}

/// A first page whose header says 4096-byte pages.
fn header_page() -> Vec<u8> {
    let mut page = vec![0u8; PAGE];
    page[..16].copy_from_slice(b"SQLite format 3\0");
    page[16..18].copy_from_slice(&4096u16.to_be_bytes());
    page
}

#[test]
fn a_read_only_view_reloads_the_size_after_a_failed_move_and_holds_its_point_only_in_a_transaction() {
    let mut writer = open(MemStore::default());
    writer.write(0, &header_page()).unwrap();
    writer.write(PAGE as u64, &[7u8; PAGE]).unwrap();
    writer.commit().unwrap();
    let mut store = writer.into_store();
    store.pages.remove(&superblock::PAGE_ID.0);
    let mut view = open(store);
    assert!(!view.store.holding, "an open view holds no point until a read transaction");
    assert_eq!(view.size(), Ok(0), "opened before the commit reached it");
    // The view moves, but the new size cannot be read: the transaction fails, and the next
    // one reads the size before anything else, though the view does not move again.
    let mut again = open(MemStore::default());
    again.write(0, &header_page()).unwrap();
    again.write(PAGE as u64, &[7u8; PAGE]).unwrap();
    again.commit().unwrap();
    let committed = again.into_store();
    view.store.pages = committed.pages;
    view.store.moves_next = true;
    view.store.fail_next_read = Some(StoreError::Read(client::ReadError::Closed));
    assert!(view.begin_read().is_err());
    view.begin_read().unwrap();
    assert_eq!(view.size(), Ok(2 * PAGE as u64));
    assert_eq!(view.lock(1, LockLevel::None, LockLevel::Shared), Ok(LockLevel::Shared));
    assert!(view.store.holding, "a read transaction holds the view's point");
    let (level, unlocked) = view.unlock(1, LockLevel::Shared, LockLevel::None);
    assert_eq!((level, unlocked), (LockLevel::None, Ok(())));
    assert!(!view.store.holding, "released once no connection holds a lock");
}
