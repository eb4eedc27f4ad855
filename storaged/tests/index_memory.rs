//! The memory cap counts index bytes with fixed per-record, per-image and per-page estimates
//! (`RECORD_INDEX_BYTES`, `IMAGE_INDEX_BYTES`, `PAGE_INDEX_BYTES`). This measures what a
//! segment's indexes really allocate and checks the estimates are upper bounds, so the cap is
//! honest. (docs/storaged.md quotes the measured figures.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use protocol::{Epochs, Lsn, PageId, PgId, PgRef, RecordKind, VolumeId};
use storaged::core::node::{IMAGE_INDEX_BYTES, PAGE_INDEX_BYTES, RECORD_INDEX_BYTES};
use storaged::core::{IndexedRecord, Location, Segment, Stored};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn record(lsn: u64, pages: u64) -> IndexedRecord {
    IndexedRecord {
        prev_pg_lsn: Lsn(lsn - 1),
        cpl: true,
        page_id: PageId(lsn * 7919 % pages),
        kind: RecordKind::PagePatch,
        location: Location { file: lsn / 1000, offset: lsn * 100, len: 200 },
        folded: false,
    }
}

/// A segment holding `records` records spread over `pages` pages, and the bytes it allocated.
fn segment_with(records: u64, pages: u64) -> (Segment, isize) {
    let pg = PgRef { volume_id: VolumeId(1), pg_id: PgId(0) };
    let before = LIVE.load(Ordering::Relaxed);
    let mut segment = Segment::new(pg, Epochs::INITIAL);
    for lsn in 1..=records {
        segment.insert_durable(Lsn(lsn), record(lsn, pages));
    }
    let allocated = LIVE.load(Ordering::Relaxed) - before;
    (segment, allocated)
}

#[test]
fn the_index_estimates_bound_what_a_segment_allocates() {
    // Many records per page, and one record per page (the page entries weigh most).
    for (records, pages) in [(200_000u64, 2_000u64), (200_000, 200_000), (200_000, 20_000)] {
        let (_, allocated) = segment_with(records, pages);
        let estimate = records * RECORD_INDEX_BYTES + pages * PAGE_INDEX_BYTES;
        println!(
            "{records} records over {pages} pages: {:.1} bytes per record, estimate {:.1}",
            allocated as f64 / records as f64,
            estimate as f64 / records as f64
        );
        assert!(allocated as u64 <= estimate, "{allocated} bytes allocated, estimated {estimate}");
    }
    const RECORDS: u64 = 200_000;
    let (mut segment, _) = segment_with(RECORDS, 20_000);

    // One image per page, each at the page's newest record (nothing is dropped: floor zero).
    let newest: Vec<(PageId, Lsn)> =
        segment.pages().map(|(page, v)| (page, v.plan(Lsn(RECORDS)).version_lsn)).collect();
    let before_images = LIVE.load(Ordering::Relaxed);
    for (i, (page, lsn)) in newest.iter().enumerate() {
        let stored = Stored::At(Location { file: 1, offset: i as u64 * 4096, len: 4192 });
        assert!(segment.add_image(*page, *lsn, stored, &[]));
    }
    let per_image = (LIVE.load(Ordering::Relaxed) - before_images) as f64 / newest.len() as f64;
    println!("images: {per_image:.1} bytes per image; estimate {IMAGE_INDEX_BYTES}");
    assert!(per_image <= IMAGE_INDEX_BYTES as f64, "{per_image:.1} > {IMAGE_INDEX_BYTES}");
}
