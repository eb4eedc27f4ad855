//! Rotating a volume's data key on a real `storaged`: after the rotation request (a request
//! file and SIGHUP), more writes, and the coalescer and recycling at work, a scan of every
//! journal and page store file finds no entry sealed under the old version, the old version is
//! gone from both metadata copies, and every page still reads back, also after a restart.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::messages::{AppendBatch, FloorReport, ReadPage};
use protocol::{Epochs, KeyVersion, Lsn, Message, PageId, Record, RecordKind, RecordMeta};
use storaged::data_key_rotation::{stored_versions, write_request};
use storaged::journal::format::{EntryKind, GroupHeader, GROUP_ALIGN, GROUP_HEADER_BYTES};
use storaged::journal::group::find_entries;
use support::*;

const PAGES: u64 = 16;
const PAGE_BYTES: u32 = 4096;
const RECORDS_PER_BATCH: u64 = 16;
/// Longest wait for the rotation to finish (the old version destroyed).
const ROTATION_WAIT: Duration = Duration::from_secs(90);

/// Every acknowledged record: whole-page images, so a page is its newest image.
#[derive(Default)]
struct Volume {
    written: Vec<Record>,
}

impl Volume {
    fn newest(&self) -> Lsn {
        self.written.last().map_or(Lsn::ZERO, Record::lsn)
    }

    async fn append(&mut self, client: &Client) {
        let mut prev = self.newest();
        let records: Vec<Record> = (1..=RECORDS_PER_BATCH)
            .map(|i| {
                let lsn = Lsn(prev.0 + 1);
                let page = PageId((prev.0 * 7 + i) % PAGES);
                let fill = format!("lsn {} page {};", lsn.0, page.0).into_bytes();
                let bytes: Vec<u8> = fill.iter().copied().cycle().take(PAGE_BYTES as usize).collect();
                let meta = RecordMeta::after(prev, lsn, RecordKind::PageImage, page);
                prev = lsn;
                Record::new(meta, Bytes::from(bytes)).unwrap()
            })
            .collect();
        let vdl = prev;
        let batch = Message::AppendBatch(AppendBatch {
            pg: PG,
            epochs: Epochs::INITIAL,
            vdl,
            pg_vdl_lsn: vdl,
            page_bytes: PAGE_BYTES,
            records: records.clone(),
        });
        let reply = client.call(&batch).await.unwrap();
        assert!(matches!(reply, Message::AppendAck(_)), "{reply:?}");
        self.written.extend(records);
        let report =
            Message::FloorReport(FloorReport { pg: PG, client: 1, floor: self.newest(), lease_ms: 600_000 });
        assert!(matches!(client.call(&report).await.unwrap(), Message::FloorAck(_)));
    }

    /// Every page at the newest LSN reads back as its newest image.
    async fn check(&self, client: &Client) {
        let newest = self.newest();
        for page in (0..PAGES).map(PageId) {
            let read = Message::ReadPage(ReadPage {
                pg: PG,
                epochs: Epochs::INITIAL,
                page_id: page,
                read_lsn: newest,
                pg_newest_lsn: newest,
                page_bytes: PAGE_BYTES,
            });
            let Message::Page(got) = client.call(&read).await.unwrap() else { panic!("no page {page}") };
            let want = self.written.iter().rev().find(|r| r.meta().page_id == page);
            let (version, bytes) =
                want.map_or((Lsn::ZERO, vec![0; PAGE_BYTES as usize]), |r| (r.lsn(), r.payload().to_vec()));
            assert_eq!(got.version_lsn, version, "version of {page}");
            assert!(got.bytes[..] == bytes[..], "bytes of {page}");
        }
    }
}

/// Sealed entries of `PG`'s volume in every journal and page store file, by (log, key
/// version): each file's groups are found at their 4 KiB-aligned starts and their entry
/// headers (which carry the key version in the clear, CRC-checked) are read.
fn sealed_entries(data_dir: &Path) -> Vec<(&'static str, KeyVersion)> {
    let mut found = Vec::new();
    for log in ["journal", "pages"] {
        for path in journal_files(&data_dir.join(log)) {
            let bytes = std::fs::read(&path).unwrap();
            let file = path.file_name().unwrap().to_str().unwrap();
            let number: u64 = file.split(['-', '.']).nth(1).unwrap().parse().unwrap();
            let mut at = 0;
            while at + GROUP_HEADER_BYTES <= bytes.len() {
                let header = bytes[at..at + GROUP_HEADER_BYTES].try_into().unwrap();
                let Ok(group) = GroupHeader::decode(header) else {
                    at += GROUP_ALIGN;
                    continue;
                };
                assert_eq!(group.file, number, "{file}: a group of another file");
                let (entries, body_ok) = find_entries(&bytes[at..], &group, at as u64);
                assert!(body_ok, "{file} at {at}: group body checksum");
                for entry in entries {
                    let header = entry.header.unwrap();
                    let sealed = matches!(header.kind, EntryKind::Records | EntryKind::Image);
                    if sealed && header.pg.volume_id == PG.volume_id {
                        found.push((log, header.key_version));
                    }
                }
                at += group.group_len();
            }
        }
    }
    found
}

fn count(entries: &[(&str, KeyVersion)], log: &str, version: u32) -> usize {
    entries.iter().filter(|(l, v)| *l == log && v.0 == version).count()
}

#[test]
fn after_a_data_key_rotation_no_file_holds_the_old_version_and_every_page_reads_back() {
    let mut node = TestNode::new();
    // Images all along (so the page store holds old-version images), frequent checkpoints.
    for arg in ["--apply-max", "2", "--checkpoint-interval-bytes", "1048576"] {
        node.push_arg(arg);
    }
    node.start();
    let rt = runtime();
    let mut volume = Volume::default();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        for _ in 0..40 {
            volume.append(&client).await;
        }
        // Let the coalescer store images under version 1.
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(&sealed_entries(&node.data_dir), "pages", 1) == 0 {
            assert!(Instant::now() < deadline, "no image stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let before = sealed_entries(&node.data_dir);
    assert!(count(&before, "journal", 1) > 0 && count(&before, "pages", 1) > 0, "{before:?}");
    let versions = stored_versions(&node.data_dir, PG.volume_id).unwrap();
    assert!(versions.contains(&vec![KeyVersion(1)]), "{versions:?}");

    write_request(&node.data_dir, &[PG.volume_id]).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) }, 0);
    wait_for_log(&node, &["reload: data key rotated", &format!("volume={}", PG.volume_id.0), "version=2"]);
    assert!(!node.data_dir.join("rotate-data-keys").exists(), "the request is taken");
    let versions = stored_versions(&node.data_dir, PG.volume_id).unwrap();
    assert!(versions.iter().any(|v| v == &[KeyVersion(1), KeyVersion(2)]), "{versions:?}");

    // More writes, the floor following them: the coalescer folds and re-seals, files recycle.
    let started = Instant::now();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        while !node.stderr().contains("data key rotation done") {
            assert!(
                started.elapsed() < ROTATION_WAIT,
                "old version not destroyed within {ROTATION_WAIT:?}:\n{}",
                node.stderr()
            );
            volume.append(&client).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        volume.check(&client).await;
    });
    eprintln!("rotation done in {:?}", started.elapsed());
    for line in node.stderr().lines().filter(|l| l.contains("data key") || l.contains("recycled")) {
        eprintln!("{line}");
    }
    let after = sealed_entries(&node.data_dir);
    let old: Vec<_> = after.iter().filter(|(_, v)| v.0 != 2).collect();
    assert!(old.is_empty(), "entries under another version than 2 remain: {old:?}");
    assert!(count(&after, "journal", 2) > 0 && count(&after, "pages", 2) > 0, "{after:?}");
    assert_eq!(stored_versions(&node.data_dir, PG.volume_id).unwrap(), vec![vec![KeyVersion(2)]; 2]);

    node.kill9();
    node.start();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        volume.check(&client).await;
        volume.append(&client).await;
        volume.check(&client).await;
    });
    let restarted = sealed_entries(&node.data_dir);
    assert!(restarted.iter().all(|(_, v)| v.0 == 2), "{restarted:?}");
}

/// Waits until the node's log holds a line with every one of `words`.
fn wait_for_log(node: &TestNode, words: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = node.stderr();
        if log.lines().any(|l| words.iter().all(|w| l.contains(w))) {
            return;
        }
        assert!(Instant::now() < deadline, "no log line with {words:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
