//! Pages on a real node: kill -9 at random points while the coalescer works, and every page
//! version a read at or above the floor may ask for is intact afterwards; and under a long
//! write workload with an advancing floor, journal files are recycled so disk use stays
//! bounded.

mod support;

use bytes::Bytes;
use protocol::messages::{AppendBatch, FloorReport, ReadPage};
use protocol::patch::{encode as encode_patch, PatchEdit};
use protocol::{Epochs, Lsn, Message, PageId, Record, RecordKind, RecordMeta};
use support::*;

/// A single writer's view of PG 0: every acknowledged record, for the model.
struct Volume {
    page_bytes: u32,
    pages: u64,
    /// Write only whole-page images (the most bytes per record).
    images_only: bool,
    written: Vec<Record>,
    next: u64,
}

impl Volume {
    fn new(page_bytes: u32, pages: u64) -> Volume {
        Volume { page_bytes, pages, images_only: false, written: Vec::new(), next: 1 }
    }

    fn newest(&self) -> Lsn {
        self.written.last().map_or(Lsn::ZERO, Record::lsn)
    }

    /// `count` records: images, patches, zeroings and markers over the volume's pages.
    fn records(&mut self, count: u64, seed: u64) -> Vec<Record> {
        let mut prev = self.newest();
        let mut out = Vec::new();
        for i in 0..count {
            let n = seed.wrapping_mul(6364136223846793005).wrapping_add(i.wrapping_mul(1442695040888963407));
            let page = PageId((n >> 33) % self.pages);
            let lsn = Lsn(self.next);
            self.next += 1 + (n >> 60) % 3;
            let (kind, payload) = match if self.images_only { 0 } else { (n >> 20) % 8 } {
                0 => (RecordKind::PageImage, Bytes::from(vec![(n >> 8) as u8; self.page_bytes as usize])),
                1 => (RecordKind::PageZero, Bytes::new()),
                2 => (RecordKind::Marker, Bytes::from_static(b"commit")),
                _ => {
                    let at = ((n >> 40) % u64::from(self.page_bytes - 64)) as u32;
                    let text = format!("lsn {} page {};", lsn.0, page.0);
                    (
                        RecordKind::PagePatch,
                        encode_patch(&[PatchEdit { offset: at, data: text.as_bytes() }]).unwrap(),
                    )
                }
            };
            let meta =
                RecordMeta::after(prev, lsn, kind, if kind == RecordKind::Marker { PageId(0) } else { page });
            out.push(Record::new(meta, payload).unwrap());
            prev = lsn;
        }
        out
    }

    fn batch(&self, records: Vec<Record>) -> Message {
        let vdl = self.newest();
        Message::AppendBatch(AppendBatch {
            pg: PG,
            epochs: Epochs::INITIAL,
            vdl,
            pg_vdl_lsn: vdl,
            page_bytes: self.page_bytes,
            records,
        })
    }

    /// Appends and waits for the ack; the records then count as written.
    async fn append(&mut self, client: &Client, count: u64, seed: u64) {
        let records = self.records(count, seed);
        let reply = client.call(&self.batch(records.clone())).await.unwrap();
        assert!(matches!(reply, Message::AppendAck(_)), "{reply:?}");
        self.written.extend(records);
    }

    fn model(&self, page: PageId, at: Lsn) -> (Lsn, Vec<u8>) {
        let mine: Vec<&Record> = self
            .written
            .iter()
            .filter(|r| r.lsn() <= at && r.meta().kind != RecordKind::Marker && r.meta().page_id == page)
            .collect();
        let version = mine.last().map_or(Lsn::ZERO, |r| r.lsn());
        (version, protocol::apply::materialize(self.page_bytes, None, mine).unwrap())
    }

    async fn check(&self, client: &Client, page: PageId, at: Lsn) {
        let read = Message::ReadPage(ReadPage {
            pg: PG,
            epochs: Epochs::INITIAL,
            page_id: page,
            read_lsn: at,
            pg_newest_lsn: self.written.iter().rev().map(Record::lsn).find(|l| *l <= at).unwrap_or(Lsn::ZERO),
            page_bytes: self.page_bytes,
        });
        let Message::Page(got) = client.call(&read).await.unwrap() else {
            panic!("no page for {page} at {at}")
        };
        let (version, bytes) = self.model(page, at);
        assert_eq!(got.version_lsn, version, "version of {page} at {at}");
        assert!(got.bytes[..] == bytes[..], "bytes of {page} at {at}");
    }
}

async fn report_floor(client: &Client, floor: Lsn) {
    let report = Message::FloorReport(FloorReport { pg: PG, client: 1, floor, lease_ms: 600_000 });
    assert!(matches!(client.call(&report).await.unwrap(), Message::FloorAck(_)));
}

/// The page store half of each restart's replay report, colours stripped.
fn page_store_replays(stderr: &str) -> Vec<String> {
    let plain = |line: &str| {
        let mut out = String::new();
        let mut escape = false;
        for c in line.chars() {
            match (escape, c) {
                (false, '\u{1b}') => escape = true,
                (true, 'm') => escape = false,
                (false, c) => out.push(c),
                (true, _) => {}
            }
        }
        out
    };
    stderr
        .lines()
        .filter(|l| l.contains("journal and page store replayed"))
        .filter_map(|l| plain(l).split("pages=").nth(1).map(str::to_string))
        .collect()
}

#[test]
fn killing_the_node_while_it_coalesces_loses_no_page_version() {
    let mut node = TestNode::new();
    // A page gets an image after every second record, so the coalescer is always at work.
    node.push_arg("--apply-max");
    node.push_arg("2");
    let rt = runtime();
    let mut volume = Volume::new(4096, 12);
    let mut floor = Lsn::ZERO;
    for round in 0..10u64 {
        node.start();
        rt.block_on(async {
            let client = Client::connect(&node, &node.client_files()).await.unwrap();
            // Everything written before the crash reads back exactly, from the floor up.
            let newest = volume.newest();
            for page in 0..volume.pages {
                for k in 0..24u64 {
                    let at = floor.0 + (page * 7919 + k * 104_729) % (newest.0 - floor.0 + 1).max(1);
                    volume.check(&client, PageId(page), Lsn(at)).await;
                }
                volume.check(&client, PageId(page), newest).await;
            }
            report_floor(&client, floor).await;
            for b in 0..(20 + round * 3) {
                volume.append(&client, 8, round * 1000 + b).await;
            }
            floor = Lsn(volume.newest().0 / 2);
            report_floor(&client, floor).await;
            volume.append(&client, 8, round * 1000 + 999).await;
        });
        // Crash at a random point of the coalescer's work on what was just written.
        std::thread::sleep(std::time::Duration::from_micros(round * 2_371 % 40_000));
        node.kill9();
    }
    let reports = page_store_replays(&node.stderr());
    let with_images = reports.iter().filter(|r| !r.starts_with("ReplayReport { groups: 0,")).count();
    assert!(
        with_images > 0,
        "no restart found images written after the last checkpoint:\n{}",
        reports.join("\n")
    );
}

/// How many files `dir` holds, and the highest file number among them.
fn dir_files(dir: &std::path::Path) -> (usize, u64) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let number = |name: &String| name.split(['-', '.']).nth(1).and_then(|n| n.parse::<u64>().ok());
    (names.len(), names.iter().filter_map(number).max().unwrap_or(0))
}

#[test]
fn journal_files_are_recycled_while_the_floor_advances() {
    const MIB: u64 = 1024 * 1024;
    let mut node = TestNode::new();
    node.push_arg("--checkpoint-interval-bytes");
    node.push_arg(&(4 * MIB).to_string());
    node.start();
    let rt = runtime();
    let mut volume = Volume::new(8192, 64);
    volume.images_only = true;
    let (mut most_journal, mut most_pages) = (0, 0);
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        // About 130 MiB of records: eight journal files' worth.
        for b in 0..1000u64 {
            volume.append(&client, 16, b).await;
            if b % 10 == 9 {
                report_floor(&client, volume.newest()).await;
                most_journal = most_journal.max(dir_files(&node.data_dir.join("journal")).0);
                most_pages = most_pages.max(dir_files(&node.data_dir.join("pages")).0);
            }
        }
        report_floor(&client, volume.newest()).await;
    });
    let (_, journal_files_made) = dir_files(&node.data_dir.join("journal"));
    assert!(journal_files_made >= 8, "only {journal_files_made} journal files were ever needed");
    assert!(most_journal <= 4, "journal files on disk peaked at {most_journal}: not recycled");
    assert!(most_pages <= 4, "page store files on disk peaked at {most_pages}");
    node.kill9();
    node.start();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        for page in 0..volume.pages {
            volume.check(&client, PageId(page), volume.newest()).await;
        }
    });
}
