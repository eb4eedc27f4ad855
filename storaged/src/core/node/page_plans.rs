//! The page side of `NodeCore`: planning page reads, floor reports, and the coalescer's work
//! (what to materialize, what to drop, which page store file to compact). Still sans-IO: the
//! drivers build the versions the plans describe and report back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use protocol::messages::{ErrorCode, ErrorReply, FloorAck, FloorReport, Page, ReadPage, ReadPageAsOf};
use protocol::{Lsn, Message, NodeId, PageId, PgRef, RecordKind};

use super::{
    refusal, NodeCore, FOLD_SCAN_MAX, IMAGE_INDEX_BYTES, PAGE_INDEX_BYTES, RECORD_INDEX_BYTES, REPLACE_ASK_MS,
};
use crate::core::location::Location;
use crate::core::pages::Stored;
use crate::core::segment::{AsOf, FloorReporter, Segment};

/// One page version for the coalescer to build and store: the page as of `target`, from `base`
/// (or zeros) and `records`; or, for a relocation, a copy of the image at `relocate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoalesceJob {
    pub pg: PgRef,
    pub page_id: PageId,
    pub page_bytes: u32,
    pub target: Lsn,
    pub base: Option<Location>,
    /// The page's records after the base through `target`, in LSN order.
    pub records: Vec<(Lsn, Location)>,
    /// Page store compaction: the image to copy (then `base` is it and `records` is empty).
    pub relocate: Option<Location>,
    /// A scrub repair: the page as of `target`, fetched from a peer, to store as it is.
    pub fetched: Option<Bytes>,
}

impl CoalesceJob {
    /// Storing a page version fetched from a peer, as it is.
    fn fetched(pg: PgRef, page_id: PageId, target: Lsn, bytes: Bytes) -> CoalesceJob {
        let page_bytes = u32::try_from(bytes.len()).expect("a page is at most 64 KiB");
        let (base, records, relocate) = (None, Vec::new(), None);
        CoalesceJob { pg, page_id, page_bytes, target, base, records, relocate, fetched: Some(bytes) }
    }
}

/// One image to copy out of the page store file being compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relocation {
    pg: PgRef,
    page: PageId,
    lsn: Lsn,
    location: Location,
}

impl Relocation {
    pub(super) fn pg(&self) -> PgRef {
        self.pg
    }
}

/// Where a page read starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    Zeros,
    Image(Location),
    Cached(Bytes),
}

/// A page version a driver must build to answer a `ReadPage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageBuild {
    pub pg: PgRef,
    pub page_id: PageId,
    pub read_lsn: Lsn,
    pub version_lsn: Lsn,
    pub page_bytes: u32,
    pub base: Base,
    /// The records to apply to the base, in LSN order.
    pub records: Vec<(Lsn, Location)>,
}

/// How to answer a `ReadPage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageAnswer {
    /// The version is cached (or the page reads as zeros).
    Ready(Page),
    Build(PageBuild),
    /// The segment is not yet complete through the read's `pg_newest_lsn`: wait and ask again.
    NotYet,
}

/// The longest lease a hold-only floor report gets (readers report every few seconds with a
/// 10 s lease).
pub const FLOOR_HOLD_LEASE_MS_MAX: u32 = 30_000;

impl NodeCore {
    /// How to answer a `ReadPage`: refused, not yet, ready (cached or zeros), or to build.
    pub fn plan_read_page(&mut self, read: &ReadPage) -> Result<PageAnswer, ErrorReply> {
        let zeros = |read: &ReadPage| {
            let bytes = Bytes::from(vec![0u8; read.page_bytes as usize]);
            Page {
                pg: read.pg,
                page_id: read.page_id,
                read_lsn: read.read_lsn,
                version_lsn: Lsn::ZERO,
                bytes,
            }
        };
        self.check_not_dropped(read.pg)?;
        let Some(segment) = self.segments.get(&read.pg) else {
            // No record of this PG reached this node: complete only if the PG has none yet.
            return Ok(if read.pg_newest_lsn == Lsn::ZERO {
                PageAnswer::Ready(zeros(read))
            } else {
                PageAnswer::NotYet
            });
        };
        segment.check_read(&read.epochs).map_err(|r| refusal(segment, r))?;
        if segment.page_bytes() != 0 && segment.page_bytes() != read.page_bytes {
            let message =
                format!("page size {} differs from the volume's {}", read.page_bytes, segment.page_bytes());
            return Err(self.error(ErrorCode::BadRequest, read.pg, &message));
        }
        if read.read_lsn < segment.floor() {
            let message = format!("read point {} is below the floor {}", read.read_lsn, segment.floor());
            return Err(self.error(ErrorCode::TooOld, read.pg, &message));
        }
        if segment.scl() < read.pg_newest_lsn {
            return Ok(PageAnswer::NotYet);
        }
        // Records of the PG between `pg_newest_lsn` and the read point cannot belong to the
        // committed history (a writer that was fenced before its truncation reached this node
        // may have left some), so the version is built only up to `pg_newest_lsn`.
        if segment.page(read.page_id).is_some_and(|v| !v.knows(read.pg_newest_lsn)) {
            // Only a reader whose `pg_newest_lsn` is stale asks this (a segment repairing an
            // image before it caught up): the version it names was pruned here.
            let message = format!("the page's versions at {} were folded away", read.pg_newest_lsn);
            return Err(self.error(ErrorCode::TooOld, read.pg, &message));
        }
        let plan = segment.plan_page(read.page_id, read.pg_newest_lsn);
        if plan.version_lsn == Lsn::ZERO {
            return Ok(PageAnswer::Ready(zeros(read)));
        }
        let page = |bytes| Page {
            pg: read.pg,
            page_id: read.page_id,
            read_lsn: read.read_lsn,
            version_lsn: plan.version_lsn,
            bytes,
        };
        if let Some(bytes) = self.cache.get(read.pg, read.page_id, plan.version_lsn) {
            return Ok(PageAnswer::Ready(page(bytes)));
        }
        let base_lsn = plan.base.map_or(Lsn::ZERO, |(lsn, _)| lsn);
        let cached = self.cache.newest_in(read.pg, read.page_id, base_lsn, plan.version_lsn);
        let (base, after) = match (cached, plan.base) {
            (Some((lsn, bytes)), _) => (Base::Cached(bytes), lsn),
            (None, Some((_, Stored::At(location)))) if self.scrub.is_damaged(location) => {
                let message = "the page's stored image failed verification; it is being repaired";
                return Err(self.error(ErrorCode::ChecksumMismatch, read.pg, message));
            }
            (None, Some((lsn, Stored::At(location)))) => (Base::Image(location), lsn),
            (None, Some((lsn, Stored::Zeros))) => (Base::Zeros, lsn),
            (None, None) => (Base::Zeros, Lsn::ZERO),
        };
        let records =
            plan.records.iter().filter(|l| **l > after).map(|l| (*l, located(segment, *l))).collect();
        Ok(PageAnswer::Build(PageBuild {
            pg: read.pg,
            page_id: read.page_id,
            read_lsn: read.read_lsn,
            version_lsn: plan.version_lsn,
            page_bytes: read.page_bytes,
            base,
            records,
        }))
    }

    /// A reader's page read (`ReadPageAsOf`) as the `ReadPage` the segment can answer, once it
    /// can prove the PG's newest LSN at or below the read point (`None`: not yet).
    pub fn resolve_read_as_of(&self, read: &ReadPageAsOf) -> Result<Option<ReadPage>, ErrorReply> {
        self.check_not_dropped(read.pg)?;
        let Some(segment) = self.segments.get(&read.pg) else { return Ok(None) };
        let pg_newest_lsn = match segment.newest_as_of(read.read_lsn) {
            AsOf::Newest(lsn) => lsn,
            AsOf::NotYet => return Ok(None),
            AsOf::FoldedAway => {
                let message = format!("read point {} lies in the versions folded away", read.read_lsn);
                return Err(self.error(ErrorCode::TooOld, read.pg, &message));
            }
        };
        Ok(Some(ReadPage {
            pg: read.pg,
            // A reader relies on no writer's epochs: the segment's own pass the epoch checks,
            // which still refuse a segment not open at its volume epoch.
            epochs: segment.epochs(),
            page_id: read.page_id,
            read_lsn: read.read_lsn,
            pg_newest_lsn,
            page_bytes: read.page_bytes,
        }))
    }

    /// A driver built a page version: keep it for later reads.
    pub fn handle_page_built(&mut self, pg: PgRef, page: PageId, version: Lsn, bytes: Bytes) {
        // A read that was under way when its volume was dropped keeps nothing.
        if !self.is_dropped(pg.volume_id) {
            self.cache.insert(pg, page, version, bytes);
        }
    }

    /// A client's oldest read point, from a client that may raise the floor (a writer; see
    /// `segment::floor`); `now` is the driver's clock in milliseconds.
    pub fn handle_floor_report(&mut self, report: &FloorReport, now: u64) -> Message {
        self.handle_floor_report_as(report, now, FloorReporter::raising(report.client))
    }

    /// A floor report from a client that may only hold the floor (it may read the volume, not
    /// write it). Its lease is cut to `FLOOR_HOLD_LEASE_MS_MAX`: a reader renews it every few
    /// seconds, and a longer one would let it keep versions (space) long after it left.
    pub fn handle_floor_hold(&mut self, report: &FloorReport, now: u64) -> Message {
        let report = FloorReport { lease_ms: report.lease_ms.min(FLOOR_HOLD_LEASE_MS_MAX), ..*report };
        self.handle_floor_report_as(&report, now, FloorReporter::holding(report.client))
    }

    fn handle_floor_report_as(&mut self, report: &FloorReport, now: u64, reporter: FloorReporter) -> Message {
        let node = self.node;
        let replace = self.replacement_asked.filter(|(_, until)| now < *until).map(|(node, _)| node);
        if let Err(refusal) = self.check_not_dropped(report.pg) {
            return Message::Error(refusal);
        }
        let Some(segment) = self.segments.get_mut(&report.pg) else {
            let (floor, scl, vdl) = (Lsn::ZERO, Lsn::ZERO, Lsn::ZERO);
            return Message::FloorAck(FloorAck { pg: report.pg, node, floor, scl, vdl, replace });
        };
        let expires = now.saturating_add(u64::from(report.lease_ms));
        let floor = segment.report_floor(reporter, report.floor, now, expires);
        let (scl, vdl) = (segment.scl(), segment.told_vdl());
        Message::FloorAck(FloorAck { pg: report.pg, node, floor, scl, vdl, replace })
    }

    /// An operator asks (through the admin port) to have `node` replaced: every floor ack for
    /// the next `REPLACE_ASK_MS` says so, and the volume's writer, which reports its floor each
    /// second, replaces it (`docs/membership.md`).
    pub fn ask_replacement(&mut self, node: NodeId, now: u64) {
        self.replacement_asked = Some((node, now.saturating_add(REPLACE_ASK_MS)));
    }

    /// Lets floor reports expire and recounts the index estimate; call about once a second.
    pub fn handle_tick(&mut self, now: u64) {
        self.segments.values_mut().for_each(|s| {
            s.refresh_floor(now);
            s.refresh_peers(now);
        });
        self.index_estimate = self.index_bytes();
        self.settle_scrub_faults();
    }

    /// The journal moved on to file `file`: records in older files may be folded.
    pub fn set_journal_head(&mut self, file: u64) {
        self.journal_head = file;
    }

    /// Up to `max` page versions for the coalescer to build, most urgent first: pages a read
    /// would apply too many records to, then the oldest records at or below the floor (so
    /// journal files can be recycled), then copies out of a page store file being compacted.
    /// Pages whose newest record below the floor is a `PageZero`/`PageTrim`, and `Marker`
    /// records, are folded here without any I/O.
    pub fn poll_coalesce(&mut self, max: usize) -> Vec<CoalesceJob> {
        let mut jobs = Vec::new();
        self.repair_jobs(max, &mut jobs);
        while jobs.len() < max {
            let Some((pg, page)) = self.over_apply.pop_first() else { break };
            if let Some(job) = self.bound_job(pg, page) {
                jobs.push(job);
            }
        }
        let pgs: Vec<PgRef> = self.segments.keys().copied().collect();
        for pg in pgs {
            if jobs.len() >= max {
                break;
            }
            self.fold_jobs(pg, max, &mut jobs);
        }
        if jobs.len() < max {
            self.relocation_jobs(max, &mut jobs);
        }
        jobs
    }

    /// The coalescer stored (or failed to store) a job's version.
    pub fn handle_coalesced(&mut self, job: &CoalesceJob, stored: Option<Location>) {
        self.coalescing.remove(&(job.pg, job.page_id));
        if let Some(bytes) = &job.fetched {
            if !self.handle_hydrated_page_stored(job.pg, job.page_id, job.target, bytes, stored) {
                if let Some(location) = stored {
                    self.install_repaired_image(job.pg, job.page_id, job.target, location);
                }
            }
            return;
        }
        let (Some(location), Some(segment)) = (stored, self.segments.get_mut(&job.pg)) else { return };
        match job.relocate {
            Some(from) => {
                segment.move_image(job.page_id, job.target, Stored::At(from), Stored::At(location));
            }
            None => {
                let folded: Vec<Lsn> = job.records.iter().map(|(l, _)| *l).collect();
                segment.add_image(job.page_id, job.target, Stored::At(location), &folded);
            }
        }
        note_over_apply(&mut self.over_apply, segment, job.page_id, self.limits.apply_max);
    }

    /// Picks a page store file to compact: the non-head file with the least live bytes, if
    /// under half of `file_bytes` are live. Its live images are copied out by later jobs.
    /// `live` is `image_bytes_by_file()` (a walk over every image the caller makes once).
    pub fn plan_compaction(&mut self, page_store_head: u64, file_bytes: u64, live: &BTreeMap<u64, u64>) {
        // Whatever the pick, the images to copy are listed again at the next job: once per
        // maintenance pass, not once per coalescer pass.
        self.relocations_of = None;
        if self.compacting.is_some_and(|f| live.get(&f).is_some_and(|b| *b > 0)) {
            return;
        }
        self.compacting = live
            .iter()
            .filter(|(file, bytes)| **file < page_store_head && **bytes < file_bytes / 2)
            .min_by_key(|(_, bytes)| **bytes)
            .map(|(file, _)| *file);
    }

    /// Compacts page store file `file` whatever its live bytes (even the head, if the page
    /// store was asked to roll first): every live image in it is copied out by later jobs, into
    /// a group sealed under each volume's newest data key. A data key rotation uses it to
    /// re-seal the images of files that may hold older key versions (`store::NodeStore`).
    pub fn compact_file(&mut self, file: u64) {
        // Listed again at the next job, as `plan_compaction` does: once per maintenance pass.
        self.compacting = Some(file);
        self.relocations_of = None;
    }

    /// Live image bytes per page store file (files with none are absent).
    pub fn image_bytes_by_file(&self) -> BTreeMap<u64, u64> {
        let mut usage = BTreeMap::new();
        for segment in self.segments.values() {
            for (_, versions) in segment.pages() {
                for (_, stored) in versions.images() {
                    if let Stored::At(location) = stored {
                        *usage.entry(location.file).or_insert(0) += u64::from(location.len);
                    }
                }
            }
        }
        // Pages a hydration stored but has not installed yet are live too.
        self.hydrations.staged_bytes_by_file(&mut usage);
        usage
    }

    /// The oldest journal file any held record is in (`None`: no record held).
    pub fn oldest_journal_file_in_use(&self) -> Option<u64> {
        self.segments.values().filter_map(Segment::oldest_file).min()
    }

    /// The index estimate the memory cap checks: `index_bytes()` as of the last tick plus the
    /// records indexed since (cheap: no walk over the pages).
    pub fn index_estimate(&self) -> u64 {
        self.index_estimate
    }

    /// Estimated bytes of the indexes (records, images, pages); see the `*_INDEX_BYTES` bounds.
    pub fn index_bytes(&self) -> u64 {
        self.segments
            .values()
            .map(|s| {
                s.record_count() as u64 * RECORD_INDEX_BYTES
                    + s.image_count() as u64 * IMAGE_INDEX_BYTES
                    + s.page_count() as u64 * PAGE_INDEX_BYTES
            })
            .sum()
    }

    /// Bytes held by the page cache, and its (hits, misses).
    pub fn cache_stats(&self) -> (usize, (u64, u64)) {
        (self.cache.bytes(), self.cache.hits_and_misses())
    }

    /// Records held at or below each segment's SCL that only the floor keeps from being folded
    /// (they are above it): what the floor is holding, for status.
    pub fn records_held_for_floor(&self) -> u64 {
        let held =
            |s: &Segment| s.unfolded_records().filter(|(l, _)| *l > s.floor() && *l <= s.scl()).count();
        self.segments.values().map(|s| held(s) as u64).sum()
    }

    fn bound_job(&mut self, pg: PgRef, page: PageId) -> Option<CoalesceJob> {
        if self.coalescing.contains(&(pg, page)) {
            return None;
        }
        let segment = self.segments.get(&pg)?;
        let target = segment.page(page)?.fold_target(segment.scl())?;
        self.page_job(pg, page, target)
    }

    /// Folds the segment's oldest records, if they are in a journal file older than the head
    /// and at or below `min(floor, SCL, VDL)`.
    fn fold_jobs(&mut self, pg: PgRef, max: usize, jobs: &mut Vec<CoalesceJob>) {
        let head = self.journal_head;
        let Some(segment) = self.segments.get_mut(&pg) else { return };
        // VDL bounds folding too: a record above it may still be truncated by a new writer, or
        // asked for by one that recovers.
        let limit = segment.gc_floor().min(segment.scl());
        let mut candidates = Vec::new();
        // The cap counts every record looked at: folded ones still indexed behind an unfolded
        // one (the index drops folded records only as a prefix) must not make each call walk
        // them all again.
        let scanned = segment.all_records().take(FOLD_SCAN_MAX).filter(|(_, r)| !r.folded);
        for (lsn, record) in scanned {
            if lsn > limit {
                break;
            }
            if record.location.file >= head {
                continue;
            }
            candidates.push((lsn, record.page_id, record.changes_page()));
        }
        let mut seen = BTreeSet::new();
        for (lsn, page, changes_page) in candidates {
            if jobs.len() >= max {
                return;
            }
            let segment = self.segments.get_mut(&pg).expect("looked up above");
            if !changes_page {
                segment.mark_folded(lsn);
                continue;
            }
            if !seen.insert(page) || self.coalescing.contains(&(pg, page)) {
                continue;
            }
            segment.prune_page(page);
            let Some(versions) = segment.page(page) else { continue };
            let Some(target) = versions.fold_target(limit) else { continue };
            let zeroed = segment
                .get(target)
                .is_some_and(|r| matches!(r.kind, RecordKind::PageZero | RecordKind::PageTrim));
            if zeroed {
                segment.add_image(page, target, Stored::Zeros, &[]);
                continue;
            }
            jobs.extend(self.page_job(pg, page, target));
        }
    }

    fn relocation_jobs(&mut self, max: usize, jobs: &mut Vec<CoalesceJob>) {
        let Some(file) = self.compacting else { return };
        if self.relocations_of != Some(file) {
            self.relocations = self.images_in(file);
            self.relocations_of = Some(file);
        }
        let mut busy = Vec::new();
        while jobs.len() < max {
            let Some(relocation) = self.relocations.pop_front() else { break };
            let Relocation { pg, page, lsn, location } = relocation;
            // Still there? A newer fold, a prune or a move since the listing drops it.
            let Some(segment) = self.segments.get(&pg) else { continue };
            let still = segment.page(page).and_then(|v| v.image(lsn)) == Some(Stored::At(location));
            if !still || self.scrub.is_damaged(location) {
                continue;
            }
            if !self.coalescing.insert((pg, page)) {
                busy.push(relocation);
                continue;
            }
            let job = CoalesceJob {
                pg,
                page_id: page,
                page_bytes: segment.page_bytes(),
                target: lsn,
                base: Some(location),
                records: Vec::new(),
                relocate: Some(location),
                fetched: None,
            };
            jobs.push(job);
        }
        // A page with a job out is tried again after the rest.
        self.relocations.extend(busy);
    }

    /// Every image stored in page store file `file`.
    fn images_in(&self, file: u64) -> VecDeque<Relocation> {
        let mut found = VecDeque::new();
        for segment in self.segments.values() {
            for (page, versions) in segment.pages() {
                for (lsn, stored) in versions.images() {
                    if let Stored::At(location) = stored {
                        if location.file == file {
                            found.push_back(Relocation { pg: segment.pg(), page, lsn, location });
                        }
                    }
                }
            }
        }
        found
    }

    /// Page versions fetched from peers (hydration, and scrub repairs of damaged images):
    /// stored first, as they are.
    fn repair_jobs(&mut self, max: usize, jobs: &mut Vec<CoalesceJob>) {
        let hydrated = self.take_hydrated_pages(max);
        jobs.extend(
            hydrated
                .into_iter()
                .map(|(pg, page, target, bytes)| CoalesceJob::fetched(pg, page, target, bytes)),
        );
        for (pg, page_id) in self.scrub.fetched_pages() {
            if jobs.len() >= max || self.coalescing.contains(&(pg, page_id)) {
                continue;
            }
            let Some((_, target, bytes)) = self.scrub.take_fetched(pg, page_id) else { continue };
            self.coalescing.insert((pg, page_id));
            jobs.push(CoalesceJob::fetched(pg, page_id, target, bytes));
        }
    }

    /// A job building `page` as of `target` from its newest image below and the records after.
    fn page_job(&mut self, pg: PgRef, page: PageId, target: Lsn) -> Option<CoalesceJob> {
        let segment = self.segments.get(&pg)?;
        let plan = segment.plan_page(page, target);
        assert_eq!(plan.version_lsn, target, "a fold target is the page's newest record below it");
        let base = match plan.base {
            // Nothing is built on a damaged image: the page waits for its repair.
            Some((_, Stored::At(location))) if self.scrub.is_damaged(location) => return None,
            Some((_, Stored::At(location))) => Some(location),
            Some((_, Stored::Zeros)) | None => None,
        };
        let records = plan.records.iter().map(|l| (*l, located(segment, *l))).collect();
        let job = CoalesceJob {
            pg,
            page_id: page,
            page_bytes: segment.page_bytes(),
            target,
            base,
            records,
            relocate: None,
            fetched: None,
        };
        self.coalescing.insert((pg, page));
        Some(job)
    }
}

/// Where a held record is; the plans that call this list only held records.
fn located(segment: &Segment, lsn: Lsn) -> Location {
    segment.get(lsn).expect("planned records are held").location
}

/// Queues `page` for an image if a read of its newest version would apply `apply_max` records.
pub(super) fn note_over_apply(
    over: &mut BTreeSet<(PgRef, PageId)>,
    segment: &Segment,
    page: PageId,
    apply_max: usize,
) {
    if segment.page(page).is_some_and(|v| v.records_after_newest_image_at_least(apply_max)) {
        over.insert((segment.pg(), page));
    }
}
