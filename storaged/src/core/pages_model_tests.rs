//! The model-based test of the page path (issue: step 4). Random sequences of `PageImage`,
//! `PagePatch`, `PageZero`, `PageTrim` and `Marker` records over a few pages of two PGs, with
//! floor reports, coalescing at random points (jobs that succeed, fail, or are cut short by a
//! crash after their image was written), journal and page store recycling, checkpoints and
//! node restarts. After every step that can change what is stored, every page is read at every
//! LSN in [floor, newest] and compared with a plain in-memory model; a read below the floor
//! must be refused as too old, and no read or job may touch a recycled file.
//!
//! The disk is played by hand: journal entries and images live in maps keyed by location, and
//! "recycling" a file deletes its entries, so any later use of them fails the test.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use protocol::messages::{AppendBatch, ErrorCode, FloorReport, Message, ReadPage};
use protocol::patch::{encode as encode_patch, PatchEdit};
use protocol::{
    AzId, Epochs, Lsn, NodeId, PageId, PgId, PgRef, Record, RecordFlags, RecordKind, RecordMeta, VolumeId,
};

use super::*;
use crate::journal::files::JournalPosition;

const PAGE_BYTES: u32 = 512;
const PAGES: u64 = 4;
/// Journal groups per journal file before the journal moves to the next file.
const GROUPS_PER_FILE: u64 = 3;
/// Images per page store file.
const IMAGES_PER_FILE: u64 = 4;
const IMAGE_LEN: u32 = 600;

fn pg(n: u32) -> PgRef {
    PgRef { volume_id: VolumeId(5), pg_id: PgId(n) }
}

#[derive(Clone, Debug)]
enum Op {
    /// Records for one PG: (page, kind, byte, offset) each.
    Append {
        pg: u32,
        records: Vec<(u64, u8, u8, u16)>,
    },
    /// Report a floor at this fraction (of 256) of the newest LSN.
    Floor(u8),
    /// Run the coalescer once: each job succeeds, fails (bit clear in `fail`), up to `max`.
    Coalesce {
        max: usize,
        fail: u8,
    },
    /// Coalesce, write every image, and crash before the core hears of them.
    CrashMidCoalesce {
        max: usize,
    },
    Recycle,
    Checkpoint,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (0..PAGES, 0u8..5, any::<u8>(), 0u16..520);
    prop_oneof![
        6 => (0u32..2, prop::collection::vec(record, 1..4)).prop_map(|(pg, records)| Op::Append { pg, records }),
        2 => any::<u8>().prop_map(Op::Floor),
        3 => (1usize..8, any::<u8>()).prop_map(|(max, fail)| Op::Coalesce { max, fail }),
        1 => (1usize..8).prop_map(|max| Op::CrashMidCoalesce { max }),
        2 => Just(Op::Recycle),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
    ]
}

/// One acknowledged record, as the model keeps it.
#[derive(Clone, Debug)]
struct Written {
    pg: PgRef,
    record: Record,
}

struct Harness {
    core: NodeCore,
    model: Vec<Written>,
    next_lsn: u64,
    /// Journal: (file, group) → entries of that group with their locations.
    journal: BTreeMap<Location, (PgRef, EntryBody)>,
    journal_file: u64,
    journal_group: u64,
    pages: BTreeMap<Location, (PgRef, PageId, Lsn, Bytes)>,
    pages_file: u64,
    pages_written: u64,
    checkpoint: Option<Vec<u8>>,
    floor_reported: Lsn,
    clock: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            core: new_core(),
            model: Vec::new(),
            next_lsn: 0,
            journal: BTreeMap::new(),
            journal_file: 1,
            journal_group: 0,
            pages: BTreeMap::new(),
            pages_file: 1,
            pages_written: 0,
            checkpoint: None,
            floor_reported: Lsn::ZERO,
            clock: 0,
        }
    }

    fn newest(&self) -> Lsn {
        self.model.last().map_or(Lsn::ZERO, |w| w.record.lsn())
    }

    fn newest_of(&self, pg: PgRef, at_or_below: Lsn) -> Lsn {
        let mine = self.model.iter().filter(|w| w.pg == pg && w.record.lsn() <= at_or_below);
        mine.last().map_or(Lsn::ZERO, |w| w.record.lsn())
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { pg: n, records } => self.append(pg(*n), records),
            Op::Floor(fraction) => {
                let floor = Lsn(self.newest().0 * u64::from(*fraction) / 256);
                self.clock += 10;
                for n in 0..2 {
                    let report = FloorReport { pg: pg(n), client: 7, floor, lease_ms: 1_000_000 };
                    self.core.handle_floor_report(&report, self.clock);
                }
                self.floor_reported = self.floor_reported.max(floor);
            }
            Op::Coalesce { max, fail } => {
                let jobs = self.core.poll_coalesce(*max);
                for (i, job) in jobs.iter().enumerate() {
                    let stored = (fail >> (i % 8) & 1 == 1).then(|| self.store_image(job));
                    self.core.handle_coalesced(job, stored);
                }
            }
            Op::CrashMidCoalesce { max } => {
                let jobs = self.core.poll_coalesce(*max);
                jobs.iter().for_each(|job| {
                    self.store_image(job);
                });
                self.restart();
            }
            Op::Recycle => self.recycle(),
            Op::Checkpoint => self.store_checkpoint(),
            Op::Restart => self.restart(),
        }
    }

    fn append(&mut self, pg: PgRef, specs: &[(u64, u8, u8, u16)]) {
        let mut records = Vec::new();
        for (page, kind, byte, offset) in specs {
            self.next_lsn += 1 + u64::from(*byte % 3);
            let lsn = Lsn(self.next_lsn);
            let page = PageId(*page);
            let prev_volume_lsn = self.newest();
            let prev_pg_lsn = self.newest_of(pg, Lsn(u64::MAX));
            let kind = RecordKind::ALL[usize::from(*kind)];
            let prev_page_lsn = if kind == RecordKind::Marker {
                Lsn::ZERO
            } else {
                let same = self.model.iter().filter(|w| w.pg == pg && w.record.meta().page_id == page);
                same.last().map_or(Lsn::ZERO, |w| w.record.lsn())
            };
            let payload = match kind {
                RecordKind::PageImage => Bytes::from(vec![*byte; PAGE_BYTES as usize]),
                RecordKind::PagePatch => {
                    let at = u32::from(*offset) % (PAGE_BYTES - 16);
                    let data = vec![*byte; 1 + usize::from(*byte % 15)];
                    encode_patch(&[PatchEdit { offset: at, data: &data }]).unwrap()
                }
                RecordKind::Marker => Bytes::from_static(b"commit"),
                RecordKind::PageZero | RecordKind::PageTrim => Bytes::new(),
            };
            let flags = RecordFlags::CPL;
            let meta = RecordMeta {
                kind,
                flags,
                lsn,
                prev_volume_lsn,
                prev_pg_lsn,
                prev_page_lsn,
                page_id: page,
                epoch: Epochs::INITIAL.volume,
            };
            let record = Record::new(meta, payload).unwrap();
            self.model.push(Written { pg, record: record.clone() });
            records.push(record);
        }
        // Every earlier record is durable, so VDL is the newest LSN before this batch.
        let vdl = Lsn(self.model[..self.model.len() - records.len()].last().map_or(0, |w| w.record.lsn().0));
        let pg_vdl_lsn = self.newest_of(pg, vdl);
        let batch =
            AppendBatch { pg, epochs: Epochs::INITIAL, vdl, pg_vdl_lsn, page_bytes: PAGE_BYTES, records };
        self.core.handle_append(RequestId(1), batch).expect("append accepted");
        self.write_journal();
        assert!(matches!(self.core.poll_reply(), Some((_, Message::AppendAck(_)))));
    }

    /// Writes every queued entry as one group, durably.
    fn write_journal(&mut self) {
        let entries = self.core.poll_journal_group(usize::MAX, usize::MAX, |_| 1);
        let Some(last) = entries.last().map(|e| e.seq) else { return };
        let mut placed = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let location =
                Location { file: self.journal_file, offset: self.journal_group * 1000 + i as u64, len: 1 };
            placed.push((entry.seq, location));
            self.journal.insert(location, (entry.pg, entry.body));
        }
        self.core.handle_durable(last, &placed);
        self.journal_group += 1;
        if self.journal_group % GROUPS_PER_FILE == 0 {
            self.journal_file += 1;
        }
        self.core.set_journal_head(self.journal_file);
    }

    fn store_image(&mut self, job: &CoalesceJob) -> Location {
        let base = job.base.map(Base::Image).unwrap_or(Base::Zeros);
        let bytes = self.build(job.page_bytes, &base, &job.records);
        if let Some(from) = job.relocate {
            assert_eq!(self.pages[&from].2, job.target, "a relocation copies the image it names");
        }
        let location = Location { file: self.pages_file, offset: self.pages_written, len: IMAGE_LEN };
        self.pages.insert(location, (job.pg, job.page_id, job.target, Bytes::from(bytes)));
        self.pages_written += 1;
        if self.pages_written % IMAGES_PER_FILE == 0 {
            self.pages_file += 1;
        }
        location
    }

    fn build(&self, page_bytes: u32, base: &Base, records: &[(Lsn, Location)]) -> Vec<u8> {
        let base_bytes = match base {
            Base::Zeros => None,
            Base::Cached(bytes) => Some(bytes.clone()),
            Base::Image(location) => {
                let image =
                    self.pages.get(location).unwrap_or_else(|| panic!("image at {location:?} was recycled"));
                Some(image.3.clone())
            }
        };
        let mut applied = Vec::new();
        for (lsn, location) in records {
            let Some((_, EntryBody::Records { records, .. })) = self.journal.get(location) else {
                panic!("record {lsn} at {location:?} was recycled");
            };
            applied
                .push(records.iter().find(|r| r.lsn() == *lsn).expect("the entry holds the record").clone());
        }
        protocol::apply::materialize(page_bytes, base_bytes.as_deref(), &applied).expect("records apply")
    }

    fn positions(&self) -> (JournalPosition, JournalPosition) {
        let journal =
            JournalPosition { file: self.journal_file, offset: self.journal_group * 1000, next_group_seq: 0 };
        let pages = JournalPosition { file: self.pages_file, offset: self.pages_written, next_group_seq: 0 };
        (journal, pages)
    }

    fn store_checkpoint(&mut self) {
        self.checkpoint = Some(crate::checkpoint::encode(self.positions(), self.core.segments(), &[]));
    }

    /// Deletes files nothing refers to, after a checkpoint, as the coalescer task does.
    fn recycle(&mut self) {
        let live = self.core.image_bytes_by_file();
        self.core.plan_compaction(self.pages_file, u64::from(IMAGE_LEN) * IMAGES_PER_FILE, &live);
        let in_use =
            self.core.oldest_journal_file_in_use().unwrap_or(self.journal_file).min(self.journal_file);
        self.store_checkpoint();
        self.journal.retain(|location, _| location.file >= in_use);
        let pages_file = self.pages_file;
        self.pages.retain(|location, _| location.file >= pages_file || live.contains_key(&location.file));
    }

    /// A crash: everything in memory is lost; the last checkpoint and the logs after it remain.
    fn restart(&mut self) {
        let mut core = new_core();
        let (journal_from, pages_from) = match &self.checkpoint {
            Some(bytes) => {
                let checkpoint =
                    crate::checkpoint::decode(Bytes::from(bytes.clone()), true).expect("checkpoint decodes");
                checkpoint.segments.into_iter().for_each(|s| core.restore_segment(s));
                (checkpoint.position, checkpoint.pages_position)
            }
            None => (
                JournalPosition { file: 0, offset: 0, next_group_seq: 0 },
                JournalPosition { file: 0, offset: 0, next_group_seq: 0 },
            ),
        };
        for (location, (pg, body)) in &self.journal {
            if (location.file, location.offset) >= (journal_from.file, journal_from.offset) {
                core.replay(*pg, body, *location);
            }
        }
        for (location, (pg, page_id, version_lsn, _)) in &self.pages {
            if (location.file, location.offset) >= (pages_from.file, pages_from.offset) {
                let body =
                    EntryBody::Image { page_id: *page_id, version_lsn: *version_lsn, page: Bytes::new() };
                core.replay(*pg, &body, *location);
            }
        }
        core.set_journal_head(self.journal_file);
        self.core = core;
    }

    /// Every page at every LSN in [floor, newest] equals the model; below the floor is refused.
    fn check_reads(&mut self) {
        for n in 0..2 {
            let pg = pg(n);
            let floor = self.core.segment(&pg).map_or(Lsn::ZERO, |s| s.floor());
            assert!(floor <= self.floor_reported, "the floor never passes what clients reported");
            for page in 0..PAGES {
                for at in floor.0..=self.newest().0 {
                    self.check_read(pg, PageId(page), Lsn(at));
                }
                if floor > Lsn::ZERO {
                    let below = self.read(pg, PageId(page), Lsn(floor.0 - 1));
                    assert!(matches!(below, Err(ErrorCode::TooOld)), "a read below the floor: {below:?}");
                }
            }
        }
    }

    fn check_read(&mut self, pg: PgRef, page: PageId, at: Lsn) {
        let records: Vec<Record> = self
            .model
            .iter()
            .filter(|w| w.pg == pg && w.record.meta().page_id == page && w.record.lsn() <= at)
            .filter(|w| w.record.meta().kind != RecordKind::Marker)
            .map(|w| w.record.clone())
            .collect();
        let expected = protocol::apply::materialize(PAGE_BYTES, None, &records).unwrap();
        let version = records.last().map_or(Lsn::ZERO, |r| r.lsn());
        let (got_version, got) =
            self.read(pg, page, at).unwrap_or_else(|e| panic!("read {pg:?} {page:?} at {at}: {e:?}"));
        assert_eq!(got_version, version, "version of {pg:?} {page:?} at {at}");
        assert!(got == expected, "bytes of {pg:?} {page:?} at {at}");
    }

    fn read(&mut self, pg: PgRef, page: PageId, at: Lsn) -> Result<(Lsn, Vec<u8>), ErrorCode> {
        let read = ReadPage {
            pg,
            epochs: Epochs::INITIAL,
            page_id: page,
            read_lsn: at,
            pg_newest_lsn: self.newest_of(pg, at),
            page_bytes: PAGE_BYTES,
        };
        match self.core.plan_read_page(&read).map_err(|e| e.code)? {
            PageAnswer::Ready(page) => Ok((page.version_lsn, page.bytes.to_vec())),
            PageAnswer::NotYet => panic!("every record is durable, yet {pg:?} is not complete through {at}"),
            PageAnswer::Build(build) => {
                let bytes = self.build(build.page_bytes, &build.base, &build.records);
                self.core.handle_page_built(pg, page, build.version_lsn, Bytes::from(bytes.clone()));
                Ok((build.version_lsn, bytes))
            }
        }
    }
}

fn new_core() -> NodeCore {
    let limits = Limits { apply_max: 3, page_cache_bytes: 4 * PAGE_BYTES as usize, ..Limits::default() };
    NodeCore::new(NodeId(1), AzId(0), limits)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn every_read_in_floor_to_newest_equals_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
            if !matches!(op, Op::Append { .. } | Op::Floor(_)) {
                harness.check_reads();
            }
        }
        harness.check_reads();
    }
}

#[test]
fn folding_below_the_floor_lets_old_journal_files_go() {
    let mut harness = Harness::new();
    for i in 0..40u8 {
        harness
            .apply(&Op::Append { pg: u32::from(i % 2), records: vec![(u64::from(i) % PAGES, i % 3, i, 7)] });
    }
    harness.apply(&Op::Floor(255));
    harness.apply(&Op::Append { pg: 0, records: vec![(0, 4, 1, 0)] });
    for _ in 0..20 {
        harness.apply(&Op::Coalesce { max: 8, fail: 0xff });
    }
    harness.apply(&Op::Recycle);
    let oldest = harness.journal.keys().next().map(|l| l.file).unwrap();
    assert!(
        oldest >= harness.journal_file - 1,
        "journal files before the floor were recycled; oldest left {oldest}"
    );
    harness.check_reads();
    harness.apply(&Op::Restart);
    harness.check_reads();
}
