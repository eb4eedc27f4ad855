//! The `borealis dev` workload: an engine inserting orders into two tables, as the redo records
//! it would ship. Each transaction is three records:
//!
//! 1. a `PagePatch` of an `orders` heap page appending CSV rows
//!    (`order_id,customer,amount,status,created_at`), as many whole rows as fit in the record
//!    size (at least one);
//! 2. a `PagePatch` of an `order_lines` heap page appending that batch's line items
//!    (`order_id,line_no,sku,product,quantity,unit_price`), same size;
//! 3. a `Marker` (the commit, `cpl = true`) on the orders page, naming the transaction.
//!
//! Why text rows: real redo is mostly row images, repetitive and compressible, and storage
//! cost, encryption and checksums behave differently on it than on random bytes.
//!
//! Layout: a volume of [`VOLUME_PAGES`] pages of [`PAGE_BYTES`], [`PAGES_PER_PG`] per PG, so
//! [`VOLUME_PAGES`] / [`PAGES_PER_PG`] PGs. Each table owns half the volume, split into
//! [`STREAMS_PER_TABLE`] insert streams (like concurrent sessions each filling its own page);
//! transaction `n` uses stream `n % STREAMS_PER_TABLE`, so every PG takes writes from the first
//! transactions on. A stream appends behind the last row it wrote and moves to its next page
//! when the page is full, wrapping around its slice.
//!
//! Invariants: every patch lies inside one page (`offset + len <= PAGE_BYTES`, after a
//! notional page header) and is a valid [`protocol::patch`] payload; everything is a pure
//! function of the transaction number, so a run is reproducible.

use std::fmt::Write;

use bytes::Bytes;
use client::NewRecord;
use protocol::patch::PatchEdit;
use protocol::{PageId, RecordKind, VolumeId};

/// The volume `borealis dev` writes.
pub const VOLUME: VolumeId = VolumeId(1);
/// Page size of the dev volume, unless a record needs a larger page (see `page_bytes_for`).
pub const PAGE_BYTES: u32 = 4096;
/// Pages per protection group: small, so the workload spans several PGs.
pub const PAGES_PER_PG: u64 = 256;
/// Pages the workload touches (four PGs).
pub const VOLUME_PAGES: u64 = 1024;
/// Insert streams per table; each owns an equal slice of the table's pages.
pub const STREAMS_PER_TABLE: u64 = 4;
/// Records per transaction: two page patches and the commit marker.
pub const RECORDS_PER_TRANSACTION: usize = 3;
/// Bytes at the start of each page left to a (notional) page header: rows never overwrite it.
const PAGE_HEADER_BYTES: u32 = 24;
/// Smallest accepted `--record-bytes`: about one row.
pub const RECORD_BYTES_MIN: usize = 64;
/// Largest accepted `--record-bytes`: a patch must fit in the largest page after its header.
pub const RECORD_BYTES_MAX: usize = protocol::record::PAGE_BYTES_MAX - PAGE_HEADER_BYTES as usize;

/// The dev volume's page size for records of `record_bytes`: [`PAGE_BYTES`], or the smallest
/// power of two that holds one record's rows after the page header.
pub fn page_bytes_for(record_bytes: usize) -> u32 {
    let needed = (record_bytes + PAGE_HEADER_BYTES as usize).next_power_of_two();
    u32::try_from(needed).unwrap_or(u32::MAX).max(PAGE_BYTES)
}
/// First order id, so ids have a realistic width.
const FIRST_ORDER_ID: u64 = 100_000;
/// `created_at` of the first order: 2025-01-01T00:00:00Z.
const FIRST_ORDER_UNIX_S: u64 = 1_735_689_600;
/// Seconds between consecutive orders' `created_at`.
const ORDER_SPACING_S: u64 = 7;
/// Line items per order are drawn from 1..=this.
const LINES_PER_ORDER_MAX: u64 = 4;

const CUSTOMERS: [&str; 12] = [
    "acme-corp",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark-industries",
    "wayne-enterprises",
    "wonka-industries",
    "soylent",
    "tyrell",
    "cyberdyne",
    "northwind-traders",
];
const STATUSES: [&str; 5] = ["new", "paid", "packed", "shipped", "delivered"];
const PRODUCTS: [&str; 8] = [
    "ceramic mug 350ml",
    "steel water bottle",
    "notebook a5 dotted",
    "usb-c cable 1m",
    "desk lamp led",
    "wool socks pair",
    "espresso beans 1kg",
    "canvas tote bag",
];

/// A `--record-bytes` value outside [`RECORD_BYTES_MIN`]..=[`RECORD_BYTES_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record size {0} is outside {RECORD_BYTES_MIN}..={RECORD_BYTES_MAX} bytes")]
pub struct RecordBytesError(pub usize);

/// One transaction's records and their payload bytes.
#[derive(Clone, Debug)]
pub struct Transaction {
    pub records: Vec<NewRecord>,
    pub payload_bytes: u64,
}

/// The generator: transaction after transaction, deterministic.
#[derive(Clone, Debug)]
pub struct Orders {
    record_bytes: usize,
    page_bytes: u32,
    next_transaction: u64,
    next_order: u64,
    orders: Table,
    lines: Table,
}

impl Orders {
    /// A generator whose data records carry about `record_bytes` of rows each.
    pub fn new(record_bytes: usize) -> Result<Orders, RecordBytesError> {
        if !(RECORD_BYTES_MIN..=RECORD_BYTES_MAX).contains(&record_bytes) {
            return Err(RecordBytesError(record_bytes));
        }
        let half = VOLUME_PAGES / 2;
        let page_bytes = page_bytes_for(record_bytes);
        Ok(Orders {
            record_bytes,
            page_bytes,
            next_transaction: 0,
            next_order: FIRST_ORDER_ID,
            orders: Table::new(0, half, page_bytes),
            lines: Table::new(half, half, page_bytes),
        })
    }

    /// The volume's page size (see [`page_bytes_for`]).
    pub fn page_bytes(&self) -> u32 {
        self.page_bytes
    }

    /// The next transaction's records: orders rows, their line items, the commit.
    pub fn next_transaction(&mut self) -> Transaction {
        let txn = self.next_transaction;
        self.next_transaction += 1;
        let first_order = self.next_order;
        let rows = fill_rows(self.record_bytes, |out, i| order_row(out, first_order + i));
        let orders_in_batch = rows.count;
        self.next_order += orders_in_batch;
        let lines =
            fill_rows(self.record_bytes, |out, i| line_row(out, first_order + i % orders_in_batch, i));
        let (orders_page, orders_patch) = self.orders.append(txn, &rows.text);
        let (lines_page, lines_patch) = self.lines.append(txn, &lines.text);
        let last_order = first_order + orders_in_batch - 1;
        let commit = format!(
            "COMMIT txn={txn} orders={first_order}..{last_order} order_lines={} pages={orders_page},{lines_page}\n",
            lines.count
        );
        let records = vec![
            record(orders_page, RecordKind::PagePatch, orders_patch, false),
            record(lines_page, RecordKind::PagePatch, lines_patch, false),
            record(orders_page, RecordKind::Marker, Bytes::from(commit), true),
        ];
        let payload_bytes = records.iter().map(|r| r.payload.len() as u64).sum();
        Transaction { records, payload_bytes }
    }
}

fn record(page: PageId, kind: RecordKind, payload: Bytes, cpl: bool) -> NewRecord {
    NewRecord { page, kind, payload, cpl, lsn: None }
}

/// The pages of one table and where each of its insert streams writes next.
#[derive(Clone, Debug)]
struct Table {
    first_page: u64,
    pages_per_stream: u64,
    page_bytes: u32,
    /// Per stream: page index within its slice, and the byte offset of the next row.
    cursors: Vec<(u64, u32)>,
}

impl Table {
    fn new(first_page: u64, pages: u64, page_bytes: u32) -> Table {
        let cursors = vec![(0, PAGE_HEADER_BYTES); STREAMS_PER_TABLE as usize];
        Table { first_page, pages_per_stream: pages / STREAMS_PER_TABLE, page_bytes, cursors }
    }

    /// Appends `rows` on transaction `txn`'s stream: the page written and the patch doing it.
    fn append(&mut self, txn: u64, rows: &str) -> (PageId, Bytes) {
        let len = u32::try_from(rows.len()).expect("rows are at most RECORD_BYTES_MAX long");
        let stream = txn % STREAMS_PER_TABLE;
        let (page_in_slice, offset) = &mut self.cursors[stream as usize];
        if *offset + len > self.page_bytes {
            *page_in_slice = (*page_in_slice + 1) % self.pages_per_stream;
            *offset = PAGE_HEADER_BYTES;
        }
        let page = PageId(self.first_page + stream * self.pages_per_stream + *page_in_slice);
        let edit = PatchEdit { offset: *offset, data: rows.as_bytes() };
        *offset += len;
        // Cannot fail: one edit, inside the page (record bytes + header <= page_bytes).
        let patch = protocol::patch::encode(&[edit]).expect("an in-page single-edit patch is valid");
        (page, patch)
    }
}

/// Rows appended until the next would pass `limit` bytes (at least one row).
#[derive(Debug)]
struct Rows {
    text: String,
    count: u64,
}

fn fill_rows(limit: usize, row: impl Fn(&mut String, u64)) -> Rows {
    // Rows are written in place (no string per row): the generator runs on the client's
    // thread, and allocating and growing a string per row cost it a tenth of its CPU.
    let mut text = String::with_capacity(limit + ROW_BYTES_MAX);
    row(&mut text, 0);
    let mut count = 1;
    loop {
        let before = text.len();
        row(&mut text, count);
        if text.len() > limit {
            text.truncate(before);
            return Rows { text, count };
        }
        count += 1;
    }
}

/// Longer than any row: room to write one more before checking the limit.
const ROW_BYTES_MAX: usize = 256;

/// `order_id,customer,amount,status,created_at`
fn order_row(out: &mut String, order: u64) {
    let mut random = SplitMix(order);
    let customer = CUSTOMERS[random.below(CUSTOMERS.len() as u64) as usize];
    let cents = 500 + random.below(250_000);
    let status = STATUSES[random.below(STATUSES.len() as u64) as usize];
    let _ = write!(out, "{order},{customer},{}.{:02},{status},", cents / 100, cents % 100);
    write_timestamp(out, FIRST_ORDER_UNIX_S + (order - FIRST_ORDER_ID) * ORDER_SPACING_S);
    out.push('\n');
}

/// `order_id,line_no,sku,product,quantity,unit_price`
fn line_row(out: &mut String, order: u64, index: u64) {
    let mut random = SplitMix(order.wrapping_mul(31).wrapping_add(index));
    let product = random.below(PRODUCTS.len() as u64);
    let line_no = 1 + index % LINES_PER_ORDER_MAX;
    let quantity = 1 + random.below(5);
    let cents = 199 + random.below(9_800);
    let name = PRODUCTS[product as usize];
    let _ = writeln!(
        out,
        "{order},{line_no},SKU-{:05},{name},{quantity},{}.{:02}",
        product * 1009,
        cents / 100,
        cents % 100
    );
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
#[cfg(test)]
fn timestamp(unix_s: u64) -> String {
    let mut out = String::new();
    write_timestamp(&mut out, unix_s);
    out
}

/// Writes `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (proleptic Gregorian, days-to-civil
/// conversion). Writing to a `String` cannot fail.
fn write_timestamp(out: &mut String, unix_s: u64) {
    let (days, secs) = (unix_s / 86_400, unix_s % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let _ = write!(out, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z");
}

/// SplitMix64: a tiny, good-enough generator seeded per row, so rows depend only on their ids.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`; the slight modulo bias does not matter here).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn transactions_are_two_valid_in_page_patches_and_a_commit() {
        for record_bytes in [RECORD_BYTES_MIN, 256, 4000, 16384, RECORD_BYTES_MAX] {
            let mut orders = Orders::new(record_bytes).unwrap();
            let page_bytes = orders.page_bytes();
            for _ in 0..2000 {
                let txn = orders.next_transaction();
                assert_eq!(txn.records.len(), RECORDS_PER_TRANSACTION);
                let cpls: Vec<bool> = txn.records.iter().map(|r| r.cpl).collect();
                assert_eq!(cpls, [false, false, true]);
                for record in &txn.records[..2] {
                    assert_eq!(record.kind, RecordKind::PagePatch);
                    let patch = protocol::patch::Patch::parse(&record.payload).unwrap();
                    for edit in patch.edits() {
                        assert!(edit.offset >= PAGE_HEADER_BYTES);
                        assert!(edit.offset as usize + edit.data.len() <= page_bytes as usize);
                        assert!(edit.data.len() <= record_bytes.max(128), "{}", edit.data.len());
                        assert!(std::str::from_utf8(edit.data).unwrap().ends_with('\n'));
                    }
                    assert!(record.page.0 < VOLUME_PAGES);
                }
                assert_eq!(txn.records[2].kind, RecordKind::Marker);
                assert!(txn.records[2].payload.starts_with(b"COMMIT txn="));
            }
        }
    }

    #[test]
    fn rows_are_csv_text_and_the_workload_spans_every_pg() {
        let mut orders = Orders::new(256).unwrap();
        let first = orders.next_transaction();
        let patch = protocol::patch::Patch::parse(&first.records[0].payload).unwrap();
        let rows = std::str::from_utf8(patch.edits().next().unwrap().data).unwrap().to_string();
        let row = rows.lines().next().unwrap();
        assert_eq!(row.split(',').count(), 5, "{row}");
        assert!(row.starts_with("100000,") && row.ends_with("2025-01-01T00:00:00Z"), "{row}");
        let mut pgs = BTreeSet::new();
        for _ in 0..STREAMS_PER_TABLE {
            for record in orders.next_transaction().records {
                pgs.insert(record.page.0 / PAGES_PER_PG);
            }
        }
        assert_eq!(pgs.len() as u64, VOLUME_PAGES / PAGES_PER_PG, "{pgs:?}");
    }

    #[test]
    fn timestamps_are_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(FIRST_ORDER_UNIX_S), "2025-01-01T00:00:00Z");
        assert_eq!(timestamp(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn record_sizes_outside_the_bounds_are_refused() {
        assert_eq!(Orders::new(RECORD_BYTES_MIN - 1).unwrap_err(), RecordBytesError(RECORD_BYTES_MIN - 1));
        assert!(Orders::new(RECORD_BYTES_MAX + 1).is_err());
    }
}
