//! Scrub (DESIGN §3 background step 8, §9): the node re-verifies every entry it still refers
//! to, journal entries holding records and page store images, at a bounded rate, and heals what
//! fails from its peers.
//!
//! Calling contract (sans-IO, quinn-proto style; times are the driver's milliseconds):
//! 1. `poll_scrub(now)` hands out the next batch of stored entries to verify, in (store, file,
//!    offset) order, when the rate budget allows; `poll_scrub_timeout()` says when to ask again;
//! 2. the driver reads each entry and verifies it exactly as a read would (entry CRC32C, GCM
//!    tag, record CRCs) and reports `handle_scrubbed`, one `ScrubOutcome` per entry;
//! 3. a corrupt records entry makes the segment forget its records (SCL falls back before the
//!    first of them), so gossip fetches them again from a peer: they are verified on arrival
//!    and claimed again only once durable in a new entry;
//! 4. a corrupt image is marked damaged: no read or coalescing job uses it from then on
//!    (reads answer `ChecksumMismatch`, so a client goes to another segment), and
//!    `poll_image_repair` asks a peer for that page version; `handle_image_fetched` takes the
//!    answer, which the coalescer stores like any image (`CoalesceJob::fetched`).
//!
//! Invariants: a fault counts only if the failed entry is still referred to when the outcome
//! arrives (a file recycled meanwhile is no fault); an I/O error is not corruption (the entry is
//! tried again next pass) and never makes the node stop claiming a record; a damaged image is
//! never the base of a version this node serves or stores.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use protocol::messages::{Page, ReadPage};
use protocol::{Lsn, NodeId, PageId, PgRef};

use super::NodeCore;
use crate::core::location::Location;
use crate::core::pages::Stored;
use crate::core::planted::PlantedBug;
use crate::core::segment::Segment;

/// Most entries one scrub job lists.
pub const SCRUB_JOB_ENTRIES_MAX: usize = 256;
/// Most bytes one scrub job lists (at least one entry is always listed).
pub const SCRUB_JOB_BYTES_MAX: u64 = 1024 * 1024;
/// Default scrub rate: a full pass over a 10 GiB node takes about 11 hours, well inside a day,
/// and costs a 2-core node well under 1 % of its disk and CPU.
pub const SCRUB_BYTES_PER_S_DEFAULT: u64 = 256 * 1024;
/// Pause between two passes, so a node holding little does not re-read it without rest
/// (`Limits::scrub_pass_pause_ms`).
pub const SCRUB_PASS_PAUSE_MS: u64 = 1_000;
/// A repair asked of a peer and not answered within this long may be asked of another.
pub const IMAGE_REPAIR_TIMEOUT_MS: u64 = 10_000;

/// Which log an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Store {
    Journal,
    Pages,
}

/// Entries to verify, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrubJob {
    pub entries: Vec<(Store, Location)>,
}

/// What verifying one entry found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrubOutcome {
    /// Read back and verified.
    Verified,
    /// Read back, and its checksum, tag or decoding failed: the bytes are wrong.
    Corrupt,
    /// The read itself failed (EIO, a file gone): nothing is known; tried again next pass.
    Unreadable,
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubStats {
    pub bytes_scrubbed: u64,
    pub entries_scrubbed: u64,
    pub faults_found: u64,
    /// Faults whose records or image were fetched again and stored (or are no longer needed).
    pub faults_repaired: u64,
    pub read_errors: u64,
    pub passes_completed: u64,
    /// How long the last complete pass took, in milliseconds.
    pub last_pass_ms: u64,
}

/// A failed entry that is not repaired yet.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fault {
    /// The records it held, forgotten by their segment until fetched again.
    Records { pg: PgRef, lsns: Vec<Lsn> },
    /// A damaged image, and the peer asked for its version (with when that ask expires);
    /// `refused` once an ask failed (see `repair_read`); `failed`: the peers whose ask failed
    /// since every member was last tried (each is asked again only after all the others).
    Image {
        pg: PgRef,
        page: PageId,
        version: Lsn,
        asked: Option<(NodeId, u64)>,
        refused: bool,
        failed: Vec<NodeId>,
    },
}

/// The scrubber's state inside `NodeCore`.
#[derive(Debug)]
pub(super) struct Scrub {
    bytes_per_s: u64,
    /// Entries at or below it were handed out this pass.
    cursor: Option<(Store, Location)>,
    pass_started_ms: Option<u64>,
    /// No job before this: the last job's bytes at the rate, or the pause after a pass.
    ready_at_ms: u64,
    job_out: bool,
    faults: BTreeMap<(Store, Location), Fault>,
    /// Page versions fetched from a peer, waiting for the coalescer to store them.
    fetched: BTreeMap<(PgRef, PageId), (Location, Lsn, Bytes)>,
    stats: ScrubStats,
}

impl Scrub {
    pub(super) fn new(bytes_per_s: u64) -> Scrub {
        Scrub {
            bytes_per_s,
            cursor: None,
            pass_started_ms: None,
            ready_at_ms: 0,
            job_out: false,
            faults: BTreeMap::new(),
            fetched: BTreeMap::new(),
            stats: ScrubStats::default(),
        }
    }

    pub(super) fn is_damaged(&self, location: Location) -> bool {
        self.faults.contains_key(&(Store::Pages, location))
    }

    /// True while a fault of `pg` awaits repair.
    pub(super) fn is_repairing(&self, pg: PgRef) -> bool {
        self.faults.values().any(|fault| match fault {
            Fault::Records { pg: p, .. } | Fault::Image { pg: p, .. } => *p == pg,
        })
    }

    pub(super) fn take_fetched(&mut self, pg: PgRef, page: PageId) -> Option<(Location, Lsn, Bytes)> {
        self.fetched.remove(&(pg, page))
    }

    pub(super) fn fetched_pages(&self) -> Vec<(PgRef, PageId)> {
        self.fetched.keys().copied().collect()
    }
}

impl NodeCore {
    /// The next entries to verify, if scrubbing is on, no job is out and the rate allows.
    pub fn poll_scrub(&mut self, now: u64) -> Option<ScrubJob> {
        if self.scrub.bytes_per_s == 0 || self.scrub.job_out {
            return None;
        }
        if now < self.scrub.ready_at_ms {
            return None;
        }
        let entries = self.next_scrub_entries();
        let Some(last) = entries.last().copied() else {
            self.finish_scrub_pass(now);
            return None;
        };
        self.scrub.pass_started_ms.get_or_insert(now);
        self.scrub.cursor = Some(last);
        let bytes: u64 = entries.iter().map(|(_, l)| u64::from(l.len)).sum();
        let spread_ms = bytes.saturating_mul(1000).div_ceil(self.scrub.bytes_per_s);
        self.scrub.ready_at_ms = now.saturating_add(spread_ms);
        self.scrub.job_out = true;
        Some(ScrubJob { entries })
    }

    /// When `poll_scrub` may next hand out a job (`None`: scrubbing is off, or a job is out and
    /// its outcome will come with `handle_scrubbed`).
    pub fn poll_scrub_timeout(&self) -> Option<u64> {
        if self.scrub.bytes_per_s == 0 || self.scrub.job_out {
            return None;
        }
        Some(self.scrub.ready_at_ms)
    }

    /// The outcome of each entry of the job last handed out.
    pub fn handle_scrubbed(&mut self, outcomes: &[((Store, Location), ScrubOutcome)]) {
        self.scrub.job_out = false;
        for (entry, outcome) in outcomes {
            match outcome {
                ScrubOutcome::Verified => {
                    self.scrub.stats.bytes_scrubbed += u64::from(entry.1.len);
                    self.scrub.stats.entries_scrubbed += 1;
                }
                ScrubOutcome::Unreadable => self.scrub.stats.read_errors += 1,
                ScrubOutcome::Corrupt => self.handle_corrupt_entry(entry.0, entry.1),
            }
        }
    }

    /// Stored bytes at `location` failed verification (found by scrub or by a read): the
    /// records there are forgotten, or the image there is marked damaged, until repaired.
    pub fn handle_corrupt_entry(&mut self, store: Store, location: Location) {
        if self.scrub.faults.contains_key(&(store, location)) {
            return;
        }
        let fault = match store {
            Store::Journal => self.forget_records_at(location),
            Store::Pages => self.image_at(location),
        };
        if let Some(fault) = fault {
            self.scrub.stats.faults_found += 1;
            self.scrub.faults.insert((store, location), fault);
            // A retired segment's fault goes at once (see `settle_scrub_faults`).
            self.drop_retired_faults();
        }
    }

    /// A page version to ask `peer` for, repairing a damaged image of a PG `peer` is a member
    /// of (its stored membership, else `members_of`: its placement), if one is not asked of
    /// anyone already.
    pub fn poll_image_repair(
        &mut self,
        peer: NodeId,
        now: u64,
        members_of: impl Fn(PgRef) -> Vec<NodeId>,
    ) -> Option<ReadPage> {
        let (segments, node) = (&self.segments, self.node);
        // Every member but this node failed since the last full round: start a new round.
        let all_failed =
            |members: &[NodeId], failed: &[NodeId]| members.iter().all(|m| *m == node || failed.contains(m));
        let (_, fault) = self.scrub.faults.iter_mut().find(|(_, fault)| match fault {
            Fault::Image { pg, asked, failed, .. } => {
                let members =
                    segments.get(pg).map(|s| NodeCore::members_of(s, &members_of)).unwrap_or_default();
                asked.is_none_or(|(_, until)| until <= now)
                    && members.contains(&peer)
                    && (!failed.contains(&peer) || all_failed(&members, failed))
            }
            Fault::Records { .. } => false,
        })?;
        let Fault::Image { pg, page, version, asked, refused, failed } = fault else {
            unreachable!("matched above")
        };
        let segment = segments.get(pg)?;
        if failed.contains(&peer) {
            failed.clear();
        }
        *asked = Some((peer, now.saturating_add(IMAGE_REPAIR_TIMEOUT_MS)));
        Some(repair_read(segment, *page, *version, *refused))
    }

    /// A peer's answer to a repair read: kept for the coalescer to store, if it is the version
    /// asked for (or a newer one no read below the floor could tell apart) and the right size.
    pub fn handle_image_fetched(&mut self, page: Page) {
        let found = self.scrub.faults.iter().find_map(|(key, fault)| match fault {
            Fault::Image { pg, page: p, version, .. } if *pg == page.pg && *p == page.page_id => {
                Some((key.1, *version))
            }
            _ => None,
        });
        let Some((location, version)) = found else { return };
        let Some(segment) = self.segments.get(&page.pg) else { return };
        let fits = page.bytes.len() == segment.page_bytes() as usize
            && page.version_lsn >= version
            && page.version_lsn <= page.read_lsn;
        if !fits {
            // Not a version this segment can install: the ask failed (it would otherwise
            // wait out its timeout), so another peer is asked.
            if let Some(Fault::Image { asked: Some((peer, _)), .. }) =
                self.scrub.faults.get(&(Store::Pages, location))
            {
                self.handle_image_fetch_failed(page.pg, page.page_id, *peer);
            }
            return;
        }
        self.scrub.fetched.insert((page.pg, page.page_id), (location, page.version_lsn, page.bytes));
        if let Some(Fault::Image { asked, .. }) = self.scrub.faults.get_mut(&(Store::Pages, location)) {
            *asked = None;
        }
    }

    /// A repair read of `peer` failed: the image may be asked of another peer at once (of
    /// `peer` again once every other member failed too), from then on as of the newest point
    /// this segment holds completely (see `repair_read`).
    pub fn handle_image_fetch_failed(&mut self, pg: PgRef, page: PageId, peer: NodeId) {
        for fault in self.scrub.faults.values_mut() {
            if let Fault::Image { pg: p, page: q, asked, refused, failed, .. } = fault {
                if *p == pg && *q == page {
                    *asked = None;
                    *refused = true;
                    if !failed.contains(&peer) {
                        failed.push(peer);
                    }
                }
            }
        }
    }

    /// Scrub counters, for `/metrics`.
    pub fn scrub_stats(&self) -> ScrubStats {
        self.scrub.stats
    }

    /// Faults found and not yet repaired.
    pub fn scrub_faults_open(&self) -> usize {
        self.scrub.faults.len()
    }

    /// Faults found in `pg`'s segment and not yet repaired.
    pub fn scrub_faults_open_in(&self, pg: PgRef) -> usize {
        let of = |fault: &&Fault| match fault {
            Fault::Records { pg: p, .. } | Fault::Image { pg: p, .. } => *p == pg,
        };
        self.scrub.faults.values().filter(of).count()
    }

    /// True while `pg` has records or an image lost to a fault and not yet fetched again.
    pub fn is_repairing(&self, pg: PgRef) -> bool {
        self.scrub.is_repairing(pg)
    }

    /// Forgets the faults and fetched repairs of `volume`'s segments (it was dropped): nothing of
    /// it is repaired or counted as open any more.
    pub(super) fn forget_scrub_of(&mut self, volume: protocol::VolumeId) {
        self.scrub.faults.retain(|_, fault| match fault {
            Fault::Records { pg, .. } | Fault::Image { pg, .. } => pg.volume_id != volume,
        });
        self.scrub.fetched.retain(|(pg, _), _| pg.volume_id != volume);
    }

    /// Counts the faults whose records are held again (or no longer needed); call on ticks.
    pub(super) fn settle_scrub_faults(&mut self) {
        self.drop_retired_faults();
        let segments = &self.segments;
        let before = self.scrub.faults.len();
        self.scrub.faults.retain(|(_, location), fault| match fault {
            Fault::Records { pg, lsns } => {
                segments.get(pg).is_some_and(|s| lsns.iter().any(|lsn| !s.has_or_discards(*lsn)))
            }
            Fault::Image { pg, page, version, .. } => segments
                .get(pg)
                .and_then(|s| s.page(*page))
                .is_some_and(|v| v.image(*version) == Some(Stored::At(*location))),
        });
        self.scrub.stats.faults_repaired += (before - self.scrub.faults.len()) as u64;
    }

    /// A retired segment is served to nobody and repaired by nobody: its faults go. A damaged
    /// image stays claimed (its records are folded into it): should the segment ever serve
    /// again, a read of it fails verification and the next scrub pass finds it again. (Dropping
    /// it made a segment that served again build the page without those records: found by the
    /// simulator, seed 113434.)
    fn drop_retired_faults(&mut self) {
        let node = self.node;
        let segments = &self.segments;
        self.scrub.faults.retain(|_, fault| {
            let pg = match fault {
                Fault::Records { pg, .. } | Fault::Image { pg, .. } => pg,
            };
            segments.get(pg).is_none_or(|s| !s.is_retired(node))
        });
    }

    /// The repaired image stored at `stored`: it replaces the damaged one.
    pub(super) fn install_repaired_image(&mut self, pg: PgRef, page: PageId, version: Lsn, stored: Location) {
        let Some(key) = self.scrub.faults.iter().find_map(|(key, fault)| match fault {
            Fault::Image { pg: p, page: q, .. } if *p == pg && *q == page => Some(*key),
            _ => None,
        }) else {
            return;
        };
        let Some(Fault::Image { version: damaged, .. }) = self.scrub.faults.get(&key).cloned() else {
            return;
        };
        let Some(segment) = self.segments.get_mut(&pg) else { return };
        let folded: Vec<Lsn> = segment.page(page).map(|v| v.records_in(damaged, version)).unwrap_or_default();
        if segment.add_image(page, version, Stored::At(stored), &folded) && version != damaged {
            segment.drop_image(page, damaged);
            // Below the new version the page would now be built without the damaged image,
            // from older versions that lack the records it had folded: no read goes there.
            segment.raise_floor(version);
        }
        self.settle_scrub_faults();
    }

    fn finish_scrub_pass(&mut self, now: u64) {
        if let Some(started) = self.scrub.pass_started_ms.take() {
            self.scrub.stats.passes_completed += 1;
            self.scrub.stats.last_pass_ms = now.saturating_sub(started);
        }
        self.scrub.cursor = None;
        self.scrub.ready_at_ms = now.saturating_add(self.limits.scrub_pass_pause_ms);
    }

    /// The entries after the cursor, smallest first, within the job bounds. Walks every
    /// record and image the node holds (a job is rare: one per `SCRUB_JOB_BYTES_MAX` at the
    /// scrub rate).
    fn next_scrub_entries(&self) -> Vec<(Store, Location)> {
        let cursor = self.scrub.cursor;
        let after = |entry: &(Store, Location)| cursor.is_none_or(|c| *entry > c);
        let mut found = BTreeSet::new();
        let mut offer = |entry: (Store, Location)| {
            // Once the job is full, only a smaller entry gets in: a comparison rejects most
            // (the records of one entry come one after another), where inserting each and
            // popping the largest cost a few percent of a busy node's CPU.
            let full = found.len() == SCRUB_JOB_ENTRIES_MAX;
            if full && found.last().is_some_and(|last| entry >= *last) {
                return;
            }
            if after(&entry) && !self.scrub.faults.contains_key(&entry) {
                found.insert(entry);
                if found.len() > SCRUB_JOB_ENTRIES_MAX {
                    found.pop_last();
                }
            }
        };
        for segment in self.segments.values() {
            segment.all_records().for_each(|(_, r)| offer((Store::Journal, r.location)));
            for (_, versions) in segment.pages() {
                for (_, stored) in versions.images() {
                    if let Stored::At(location) = stored {
                        offer((Store::Pages, location));
                    }
                }
            }
        }
        let mut bytes = 0;
        found
            .into_iter()
            .take_while(|(_, l)| {
                let first = bytes == 0;
                bytes += u64::from(l.len);
                first || bytes <= SCRUB_JOB_BYTES_MAX
            })
            .collect()
    }

    /// Forgets every record stored at `location`; the fault, if any was held there.
    fn forget_records_at(&mut self, location: Location) -> Option<Fault> {
        let (pg, lsns) = self.segments.values().find_map(|s| {
            let lsns: Vec<Lsn> =
                s.all_records().filter(|(_, r)| r.location == location).map(|(l, _)| l).collect();
            (!lsns.is_empty()).then(|| (s.pg(), lsns))
        })?;
        tracing::warn!(
            ?pg,
            ?location,
            records = lsns.len(),
            "journal entry failed verification: fetching its records again"
        );
        if self.limits.planted != Some(PlantedBug::ScrubServesFailed) {
            lsns.iter().for_each(|lsn| self.handle_corrupt_record(pg, *lsn));
        }
        Some(Fault::Records { pg, lsns })
    }

    /// The image stored at `location`, as a fault.
    fn image_at(&self, location: Location) -> Option<Fault> {
        self.segments.values().find_map(|s| {
            s.pages().find_map(|(page, versions)| {
                versions.images().find(|(_, stored)| *stored == Stored::At(location)).map(|(version, _)| {
                    tracing::warn!(pg = ?s.pg(), ?page, %version, "page image failed verification: fetching it from a peer");
                    Fault::Image { pg: s.pg(), page, version, asked: None, refused: false, failed: Vec::new() }
                })
            })
        })
    }
}

/// The read that fetches the damaged image's version of `page` from a peer: as of the image's
/// LSN, or as of the floor if that is above it (no read below the floor is served, and the page
/// does not change between the two unless this segment holds the records that change it; those
/// the fetched version then covers). Once an ask was `refused` (a peer's floor may be above
/// this segment's, which a restarted segment has not learnt yet, and a read below it is
/// refused forever), it asks as of the newest point this segment holds completely, at a read
/// point at least the newest VDL it was told and every floor its peers showed in gossip; the
/// floor then rises to the version installed. A peer that pruned the version as of that
/// point refuses (`PageVersions::knows`) until gossip brings this segment's SCL up.
fn repair_read(segment: &Segment, page: PageId, version: Lsn, refused: bool) -> ReadPage {
    let low = version.max(segment.floor());
    let complete = segment.scl().max(version);
    let (read_lsn, newest) = if refused {
        let above = segment.vdl_hint().max(segment.peer_floor());
        (low.max(above).max(complete), segment.newest_at_or_below(complete))
    } else {
        let read_lsn = low.min(complete);
        (read_lsn, segment.newest_at_or_below(read_lsn))
    };
    ReadPage {
        pg: segment.pg(),
        epochs: segment.epochs(),
        page_id: page,
        read_lsn,
        pg_newest_lsn: newest,
        page_bytes: segment.page_bytes(),
    }
}
