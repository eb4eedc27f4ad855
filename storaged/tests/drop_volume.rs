//! Dropping a deleted volume from a node's store on a real data directory (io_uring): records
//! and page images of two volumes, spread over several journal and page store files; one is
//! dropped. Then, and after restarts (from the checkpoint, and from the whole journal with the
//! checkpoint gone): nothing of it is held or served, its files that held only it are gone, no
//! key in the data directory opens any entry of it still on disk, and the other volume reads
//! back entirely.

use std::cell::RefCell;
use std::path::Path;

use bytes::Bytes;
use protocol::messages::{AppendBatch, ErrorCode, ReadPage};
use protocol::{Epochs, Lsn, Message, PageId, PgId, PgRef, Record, RecordKind, RecordMeta, VolumeId};
use storaged::core::{Limits, NodeCore, RequestId, VOLUME_DELETED};
use storaged::journal::commit::{write_group, GROUP_ENTRIES_MAX};
use storaged::journal::format::{
    EntryAt, EntryHeader, EntryKind, GroupHeader, GROUP_ALIGN, GROUP_HEADER_BYTES,
};
use storaged::journal::group::{entry_len, find_entries, group_len, open_entry};
use storaged::kek_rotation::stored_keys;
use storaged::seal::Kek;
use storaged::storage::uring::UringDir;
use storaged::store::reads::{read_page, PageRead};
use storaged::store::{open, Coalesced, CoreAccess, Opened, StoreSettings};

const DROPPED: PgRef = PgRef { volume_id: VolumeId(0xDE1E7E), pg_id: PgId(0) };
const KEPT: PgRef = PgRef { volume_id: VolumeId(0x4EE9), pg_id: PgId(0) };
const PAGES: u64 = 8;
const PAGE_BYTES: u32 = 4096;
const KEK: [u8; 32] = [0x5c; 32];

struct Lent(RefCell<NodeCore>);

impl CoreAccess for Lent {
    fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }
}

/// The bytes of `page` as of `lsn` in `pg`: recognisable, so a scan could find them.
fn page_bytes(pg: PgRef, page: u64, lsn: u64) -> Vec<u8> {
    let text = format!("volume {:x} page {page} lsn {lsn};", pg.volume_id.0).into_bytes();
    text.into_iter().cycle().take(PAGE_BYTES as usize).collect()
}

/// One volume's acknowledged records: whole-page images, so a page is its newest image.
#[derive(Default)]
struct Written {
    newest: u64,
    pages: Vec<(u64, u64)>,
}

impl Written {
    fn batch(&mut self, pg: PgRef) -> AppendBatch {
        let records: Vec<Record> = (0..PAGES)
            .map(|page| {
                let (prev, lsn) = (self.newest, self.newest + 1);
                self.newest = lsn;
                self.pages.retain(|(p, _)| *p != page);
                self.pages.push((page, lsn));
                let meta = RecordMeta::after(Lsn(prev), Lsn(lsn), RecordKind::PageImage, PageId(page));
                Record::new(meta, Bytes::from(page_bytes(pg, page, lsn))).unwrap()
            })
            .collect();
        let vdl = Lsn(self.newest);
        AppendBatch { pg, epochs: Epochs::INITIAL, vdl, pg_vdl_lsn: vdl, page_bytes: PAGE_BYTES, records }
    }
}

/// Opens the store on `dir`; call it inside the io_uring runtime that then drives it.
async fn start(dir: &Path) -> (Lent, Opened<UringDir>) {
    let mut core =
        NodeCore::new(protocol::NodeId(1), protocol::AzId(0), Limits { apply_max: 1, ..Limits::default() });
    let settings = StoreSettings {
        file_bytes: 1 << 20,
        checkpoint_interval_bytes: 1 << 30,
        entry_cache_bytes: 1 << 20,
        coalesce_jobs_max: 64,
    };
    let storage = UringDir::new(dir, false);
    let opened = open(storage, &mut core, Kek::from_bytes(KEK), settings, 0).await.unwrap();
    (Lent(RefCell::new(core)), opened)
}

/// Appends a batch of every page to each of `pgs`, durably, then stores every image the
/// coalescer wants (`apply_max` 1: every page gets one).
async fn round(core: &Lent, opened: &mut Opened<UringDir>, pgs: &mut [(PgRef, &mut Written)]) {
    for (pg, written) in pgs.iter_mut() {
        core.with_core(|c| c.handle_append(RequestId(1), written.batch(*pg))).unwrap();
    }
    let entries = core.with_core(|c| c.poll_journal_group(8 << 20, GROUP_ENTRIES_MAX, entry_len));
    let len = group_len(&entries) as u64;
    write_group(&mut opened.journal, &opened.store.keyring, &entries).await.unwrap();
    let placed = opened.journal.flush().await.unwrap();
    opened.store.journal_durable(core, &opened.journal, entries, &placed, len);
    while core.with_core(|c| c.poll_reply()).is_some() {}
    while let Coalesced::Stored(_) = opened.store.coalesce(core, &mut opened.pages).await {}
}

/// Every page of `pg` at its newest LSN reads back as its newest image.
async fn assert_reads_back(core: &Lent, opened: &Opened<UringDir>, pg: PgRef, written: &Written) {
    for (page, lsn) in &written.pages {
        let read = ReadPage {
            pg,
            epochs: Epochs::INITIAL,
            page_id: PageId(*page),
            read_lsn: Lsn(written.newest),
            pg_newest_lsn: Lsn(written.newest),
            page_bytes: PAGE_BYTES,
        };
        let answer = read_page(&opened.store, core, &read, &mut 0).await;
        let PageRead::Answer(Message::Page(got)) = answer else { panic!("page {page}: {answer:?}") };
        assert_eq!(got.version_lsn, Lsn(*lsn), "page {page}");
        assert!(got.bytes[..] == page_bytes(pg, *page, *lsn)[..], "bytes of page {page}");
    }
}

/// Every request of a reader or writer naming `DROPPED` is refused as deleted.
fn assert_refused(core: &Lent) {
    let mut append = Written::default().batch(DROPPED);
    append.records.truncate(1);
    let refused = core.with_core(|c| c.handle_append(RequestId(7), append)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::VolumeDeleted);
    assert!(refused.message.starts_with(VOLUME_DELETED), "{refused:?}");
    let read = ReadPage {
        pg: DROPPED,
        epochs: Epochs::INITIAL,
        page_id: PageId(0),
        read_lsn: Lsn(1),
        pg_newest_lsn: Lsn(1),
        page_bytes: PAGE_BYTES,
    };
    let refused = core.with_core(|c| c.plan_read_page(&read)).unwrap_err();
    assert!(refused.message.starts_with(VOLUME_DELETED), "{refused:?}");
    assert!(core.with_core(|c| c.segments().all(|s| s.pg().volume_id != DROPPED.volume_id)));
}

/// A sealed entry found in a log file: where, its header and its bytes.
struct Found {
    at: EntryAt,
    header: EntryHeader,
    bytes: Vec<u8>,
}

/// The sealed entries of `volume` in every journal and page store file (groups found at their
/// aligned starts, entries by their CRC-checked headers, as a scrubber without keys would).
fn sealed_entries(data_dir: &Path, volume: VolumeId) -> Vec<Found> {
    let mut found = Vec::new();
    for log in ["journal", "pages"] {
        for entry in std::fs::read_dir(data_dir.join(log)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let mut at = 0;
            while at + GROUP_HEADER_BYTES <= bytes.len() {
                let Ok(group) = GroupHeader::decode(bytes[at..at + GROUP_HEADER_BYTES].try_into().unwrap())
                else {
                    at += GROUP_ALIGN;
                    continue;
                };
                let (entries, _) = find_entries(&bytes[at..], &group, at as u64);
                for entry in entries {
                    let Ok(header) = entry.header else { continue };
                    let sealed = matches!(header.kind, EntryKind::Records | EntryKind::Image);
                    if sealed && header.pg.volume_id == volume {
                        let start = at + entry.offset;
                        let bytes = bytes[start..start + header.entry_len as usize].to_vec();
                        found.push(Found {
                            at: EntryAt { file: group.file, offset: start as u64 },
                            header,
                            bytes,
                        });
                    }
                }
                at += group.group_len();
            }
        }
    }
    found
}

/// Whether any data key in the data directory's metadata (every version of every volume, both
/// copies) opens `entry`.
fn opens_under_a_stored_key(data_dir: &Path, entry: &Found) -> bool {
    let kek = Kek::from_bytes(KEK);
    let copies = stored_keys(data_dir).unwrap();
    copies.iter().flat_map(|copy| &copy.keys).any(|wrapped| {
        let key = kek.unwrap(wrapped).unwrap();
        open_entry(&entry.bytes, &entry.header, entry.at, Some(&key)).is_ok()
    })
}

fn files(data_dir: &Path, log: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join(log))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_dropped_volume_leaves_nothing_readable_and_the_other_volume_reads_back_after_restarts() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    for log in ["journal", "pages"] {
        std::fs::create_dir_all(dir.join(log)).unwrap();
    }
    let (mut dropped_volume, mut kept) = (Written::default(), Written::default());

    tokio_uring::start(async {
        let (core, mut opened) = start(&dir).await;
        // Journal and page store files 1: the dropped volume only; files 2: both; files 3
        // (the heads): the kept volume only.
        round(&core, &mut opened, &mut [(DROPPED, &mut dropped_volume)]).await;
        opened.store.journal.request_roll();
        opened.store.pages.request_roll();
        round(&core, &mut opened, &mut [(DROPPED, &mut dropped_volume), (KEPT, &mut kept)]).await;
        opened.store.journal.request_roll();
        opened.store.pages.request_roll();
        round(&core, &mut opened, &mut [(KEPT, &mut kept)]).await;
    });
    let before = sealed_entries(&dir, DROPPED.volume_id);
    assert!(before.iter().any(|e| e.header.kind == EntryKind::Records), "records of it on disk");
    assert!(before.iter().any(|e| e.header.kind == EntryKind::Image), "images of it on disk");
    assert!(before.iter().all(|e| opens_under_a_stored_key(&dir, e)), "its key opens them before the drop");
    assert_eq!(files(&dir, "journal").len(), 3);
    assert_eq!(files(&dir, "pages").len(), 3);
    let wrapped: Vec<[u8; 32]> = stored_keys(&dir)
        .unwrap()
        .iter()
        .flat_map(|copy| copy.keys.iter().filter(|k| k.volume == DROPPED.volume_id).map(|k| k.sealed))
        .collect();
    assert_eq!(wrapped.len(), 2, "one version, in both metadata copies");

    tokio_uring::start(async {
        let (core, opened) = start(&dir).await;
        let dropped = opened.store.drop_volume(&core, DROPPED.volume_id).await.unwrap();
        eprintln!("{dropped:?}");
        assert!(dropped.newly_tombstoned && dropped.checkpointed);
        assert_eq!(dropped.segments, vec![DROPPED]);
        assert_eq!(dropped.records, 2 * PAGES, "both batches still held: no floor let them fold");
        assert!(dropped.images >= 2 * PAGES, "{dropped:?}");
        assert_eq!(dropped.keys_destroyed, vec![protocol::KeyVersion(1)]);
        assert_eq!((dropped.journal_files_removed, dropped.page_files_removed), (vec![1], vec![1]));
        assert_refused(&core);
        assert_reads_back(&core, &opened, KEPT, &kept).await;
        let again = opened.store.drop_volume(&core, DROPPED.volume_id).await.unwrap();
        assert!(!again.newly_tombstoned && again.segments.is_empty() && again.keys_destroyed.is_empty());
    });

    // Restart from the checkpoint.
    tokio_uring::start(async {
        let (core, opened) = start(&dir).await;
        assert_refused(&core);
        assert_reads_back(&core, &opened, KEPT, &kept).await;
    });

    // Restart from the whole journal: its entries there are skipped as dropped, not damaged.
    std::fs::remove_file(dir.join("checkpoint.0")).unwrap();
    std::fs::remove_file(dir.join("checkpoint.1")).unwrap();
    tokio_uring::start(async {
        let (core, opened) = start(&dir).await;
        assert_refused(&core);
        let (journal, pages) = (&opened.journal_report, &opened.pages_report);
        assert!(journal.dropped_entries > 0 && journal.corrupt_entries == 0, "{journal:?}");
        assert!(pages.dropped_entries > 0 && pages.corrupt_entries == 0, "{pages:?}");
        assert_reads_back(&core, &opened, KEPT, &kept).await;
    });

    // On disk: files 1 (only the dropped volume) are gone; files 2 still hold some of its
    // entries, and no key in the data directory opens any of them.
    assert_eq!(files(&dir, "journal"), ["journal-0000000000000002.log", "journal-0000000000000003.log"]);
    assert_eq!(files(&dir, "pages"), ["pages-0000000000000002.log", "pages-0000000000000003.log"]);
    let left = sealed_entries(&dir, DROPPED.volume_id);
    assert!(!left.is_empty(), "files shared with the kept volume still hold some of it");
    assert!(left.iter().all(|e| e.at.file == 2), "only in the shared files");
    assert!(left.iter().all(|e| !opens_under_a_stored_key(&dir, e)), "a stored key opens an entry of it");
    for copy in stored_keys(&dir).unwrap() {
        assert!(copy.keys.iter().all(|k| k.volume != DROPPED.volume_id), "{:?} keeps its key", copy.path);
    }
    for path in [dir.join("node-meta.0"), dir.join("node-meta.1")] {
        let bytes = std::fs::read(&path).unwrap();
        assert!(wrapped.iter().all(|sealed| !contains(&bytes, sealed)), "{path:?} holds its wrapped key");
    }
}
