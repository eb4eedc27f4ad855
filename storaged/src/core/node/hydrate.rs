//! Hydration (DESIGN §9): rebuilding a segment that is new, or that lost records its peers
//! have already folded into images, from one peer's page versions plus the log tail.
//!
//! Both sides are here, sans-IO (times are the driver's milliseconds):
//! - the **source** answers `HydrateFetch` with `plan_hydrate`: it picks a read point `F` (its
//!   floor, at least its folded point) on the first ask, holds its floor there with a floor
//!   report renewed by every ask (so the versions at `F` stay buildable while the hydration
//!   runs), and lists the pages with a version at or below `F`; the driver builds each as a
//!   page read at `F` would, up to the PG's newest LSN at or below both `F` and its own SCL
//!   (an idle PG's SCL is below the volume's floor; what lies above it comes as records);
//! - the **target** decides to hydrate when a peer's gossip summary shows it folded records
//!   this segment lacks (`folded_through` above its SCL), or names a PG this node should hold
//!   and has no segment of; `poll_hydrate` asks the source, page range by page range, at a
//!   bounded rate and with a bounded number of fetched pages waiting to be stored;
//!   `handle_hydrate_pages` stores the source's epochs and truncations durably (as an epoch
//!   bump and truncation would) and hands the pages to the coalescer (`CoalesceJob::fetched`);
//!   once every page is durably stored the segment takes them (`Segment::install_hydrated`):
//!   its records at or below the PG's newest LSN at `F` give way to the images, and it claims
//!   SCL through that LSN, not beyond. The log tail above it then comes by gossip, as records.
//!
//! Invariants: nothing is claimed before every page of the hydration is durable; a hydration
//! whose source fails, times out, restarts (another read point) or changes epochs is dropped
//! whole and started again later (its stored pages are garbage the page store recycles); an
//! ask that goes unanswered (the source crashed) is retried at the same read point, so the
//! rebuild resumes once the source is back and still holds it; a crash of the target resumes
//! from its last checkpoint, which keeps each started rebuild's read point and the pages it
//! had durably stored (`HydrationCheckpoint`): the pages after the first one not yet stored
//! then are asked again, at the same read point, from the same source.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use protocol::messages::{
    ErrorCode, ErrorReply, HydrateFetch, HydratePages, HYDRATE_BYTES_MAX, HYDRATE_PAGES_MAX,
};
use protocol::{Epochs, Lsn, NodeId, PageId, PgRef};

use super::{newest_truncations, refusal, EntryBody, NodeCore};
use crate::core::location::Location;
use crate::core::pages::Stored;
use crate::core::planted::PlantedBug;
use crate::core::segment::{EpochRefusal, FloorReporter, Segment};

/// How long a source holds its floor for a hydration after each ask.
pub const HYDRATE_HOLD_MS: u64 = 30_000;
/// An ask not answered within this long is given up, and the hydration with it.
pub const HYDRATE_TIMEOUT_MS: u64 = 15_000;
/// Default hydration rate (page bytes fetched per second, per node).
pub const HYDRATE_BYTES_PER_S_DEFAULT: u64 = 256 * 1024 * 1024;
/// Fetched pages waiting to be stored before the next ask waits (bounds the target's memory).
pub const HYDRATE_PENDING_PAGES_MAX: usize = 4096;
/// After an ask went unanswered (the source crashed, the network dropped it), the same
/// source is asked again this much later, at the same read point: the rebuild resumes if the
/// source still holds it.
pub const HYDRATE_RETRY_MS: u64 = 1_000;
/// A rebuild whose source has answered nothing for this long is abandoned.
pub const HYDRATE_RESUME_MS: u64 = 60_000;
/// Rebuilds one source serves at once: the PGs of a lost node are spread over its peers.
pub const HYDRATIONS_PER_SOURCE_MAX: usize = 1;
/// Floor-report client ids of hydrations: this tag, with the asking node's id below it.
const HYDRATE_CLIENT_TAG: u64 = 0x4859_4452_0000_0000;

/// What a source must build to answer one `HydrateFetch`: each page as of `read_lsn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydratePlan {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub read_lsn: Lsn,
    pub pg_newest_lsn: Lsn,
    pub page_bytes: u32,
    pub pages: Vec<PageId>,
    pub more: bool,
    pub next_page: PageId,
    pub truncations: Vec<(protocol::Epoch, protocol::LsnRange)>,
}

impl HydratePlan {
    /// The page read that builds `page_id` for this plan (as of the PG's newest LSN at the
    /// read point, at the source's epochs).
    pub fn page_read(&self, page_id: PageId) -> protocol::messages::ReadPage {
        protocol::messages::ReadPage {
            pg: self.pg,
            epochs: self.epochs,
            page_id,
            read_lsn: self.read_lsn,
            pg_newest_lsn: self.pg_newest_lsn,
            page_bytes: self.page_bytes,
        }
    }

    /// The answer, once the driver built every page (in `pages` order).
    pub fn answer(self, node: NodeId, pages: Vec<protocol::messages::HydratedPage>) -> HydratePages {
        HydratePages {
            pg: self.pg,
            node,
            epochs: self.epochs,
            read_lsn: self.read_lsn,
            pg_newest_lsn: self.pg_newest_lsn,
            page_bytes: self.page_bytes,
            more: self.more,
            next_page: self.next_page,
            truncations: self.truncations,
            pages,
        }
    }
}

/// Hydration counters, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HydrateStats {
    pub started: u64,
    /// Rebuilds taken up again from a checkpoint after this node restarted.
    pub resumed: u64,
    pub completed: u64,
    pub abandoned: u64,
    pub pages_fetched: u64,
    pub bytes_fetched: u64,
}

/// A started rebuild as a checkpoint keeps it, so a restart resumes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydrationCheckpoint {
    pub pg: PgRef,
    pub source: NodeId,
    /// The source's epochs, read point and PG newest LSN at it.
    pub epochs: Epochs,
    pub read_lsn: Lsn,
    pub pg_newest_lsn: Lsn,
    /// Every page from here on is asked for again.
    pub resume_from: PageId,
    /// Pages below `resume_from` durably stored in the page store, with their versions.
    pub stored: Vec<(PageId, Lsn, Location)>,
}

/// One segment being rebuilt.
#[derive(Debug)]
struct Hydration {
    source: NodeId,
    /// Set by the first answer: the source's epochs, read point and PG newest LSN at it.
    started: Option<(Epochs, Lsn, Lsn)>,
    next_page: PageId,
    listed_all: bool,
    /// An ask is out until then.
    asked_until: Option<u64>,
    /// No ask before then (after one went unanswered).
    retry_at_ms: u64,
    /// When the source last answered (or the rebuild started).
    progress_ms: u64,
    to_store: BTreeMap<PageId, (Lsn, Bytes)>,
    storing: BTreeSet<PageId>,
    stored: BTreeMap<PageId, (Lsn, Stored)>,
}

impl Hydration {
    /// A rebuild from `source` that has asked nothing yet.
    fn new(source: NodeId, now: u64) -> Hydration {
        Hydration {
            source,
            started: None,
            next_page: PageId(0),
            listed_all: false,
            asked_until: None,
            retry_at_ms: 0,
            progress_ms: now,
            to_store: BTreeMap::new(),
            storing: BTreeSet::new(),
            stored: BTreeMap::new(),
        }
    }
}

/// The target side's state inside `NodeCore`.
#[derive(Debug)]
pub(super) struct Hydrations {
    bytes_per_s: u64,
    /// PG → the peer to hydrate from, decided from gossip, not yet started.
    wanted: BTreeMap<PgRef, NodeId>,
    running: BTreeMap<PgRef, Hydration>,
    /// No ask before this (the rate).
    ready_at_ms: u64,
    stats: HydrateStats,
    /// A hydration completed: a checkpoint should record the new segment state soon.
    checkpoint_wanted: bool,
}

impl Hydrations {
    pub(super) fn new(bytes_per_s: u64) -> Hydrations {
        Hydrations {
            bytes_per_s: bytes_per_s.max(1),
            wanted: BTreeMap::new(),
            running: BTreeMap::new(),
            ready_at_ms: 0,
            stats: HydrateStats::default(),
            checkpoint_wanted: false,
        }
    }

    fn abandon(&mut self, pg: PgRef, why: &str) {
        if self.running.remove(&pg).is_some() {
            tracing::warn!(?pg, why, "hydration abandoned; it starts again from a later summary");
            self.stats.abandoned += 1;
        }
    }

    /// Image bytes per page store file of pages stored for hydrations not yet installed.
    pub(super) fn staged_bytes_by_file(&self, usage: &mut BTreeMap<u64, u64>) {
        for (_, stored) in self.running.values().flat_map(|h| h.stored.values()) {
            if let Stored::At(location) = stored {
                *usage.entry(location.file).or_insert(0) += u64::from(location.len);
            }
        }
    }
}

impl NodeCore {
    /// Source side: what to send for a peer's `HydrateFetch` (`asker` is the peer's node id).
    pub fn plan_hydrate(
        &mut self,
        fetch: &HydrateFetch,
        asker: NodeId,
        now: u64,
    ) -> Result<HydratePlan, ErrorReply> {
        self.check_not_dropped(fetch.pg)?;
        if self.is_hydrating(fetch.pg) {
            // A segment being rebuilt holds nothing it could vouch for yet.
            return Err(self.error(ErrorCode::NotYet, fetch.pg, "this segment is itself being rebuilt"));
        }
        let Some(segment) = self.segments.get_mut(&fetch.pg) else {
            return Err(self.error(ErrorCode::EpochNotOpen, fetch.pg, "no such segment here"));
        };
        // The membership epoch says who counts, not what the pages hold (see `same_records`).
        let newer = |a: Epochs, b: Epochs| a.volume > b.volume || a.geometry > b.geometry;
        if newer(fetch.epochs, segment.epochs()) || !segment.is_open() || segment.page_bytes() == 0 {
            return Err(refusal(segment, EpochRefusal::NotOpen));
        }
        let read_lsn = if fetch.read_lsn == Lsn::ZERO {
            segment.floor().max(segment.folded_through())
        } else {
            fetch.read_lsn
        };
        if read_lsn < segment.floor() {
            let message = format!("hydration read point {read_lsn} is below the floor {}", segment.floor());
            return Err(self.error(ErrorCode::TooOld, fetch.pg, &message));
        }
        // An idle PG's SCL is below the volume's floor; a lagging source's may be too. Either
        // way the pages are built as of what the source holds completely, and the target
        // claims no more than that: it fetches the rest as records.
        let pg_newest_lsn = segment.newest_at_or_below(read_lsn.min(segment.scl()));
        let page_bytes = segment.page_bytes();
        let budget = fetch.bytes_max.clamp(page_bytes, HYDRATE_BYTES_MAX.max(page_bytes));
        let pages_max = (budget / page_bytes).max(1) as usize;
        let mut pages = Vec::new();
        let mut more = false;
        let mut next_page = fetch.from_page;
        let mut unknown = None;
        for (page, versions) in segment.pages().filter(|(p, _)| *p >= fetch.from_page) {
            if !versions.knows(pg_newest_lsn) {
                // SCL fell below what was folded (a corrupt record was forgotten): the page as
                // of `pg_newest_lsn` is gone here, and leaving it out would hand it over as zeros.
                unknown = Some(page);
                break;
            }
            if versions.plan(pg_newest_lsn).version_lsn == Lsn::ZERO {
                continue;
            }
            if pages.len() == pages_max.min(HYDRATE_PAGES_MAX) {
                more = true;
                next_page = page;
                break;
            }
            pages.push(page);
        }
        if let Some(page) = unknown {
            let message =
                format!("page {page} has no version at {pg_newest_lsn} here: it was folded past SCL");
            return Err(self.error(ErrorCode::NotYet, fetch.pg, &message));
        }
        let client = HYDRATE_CLIENT_TAG | u64::from(asker.0);
        segment.report_floor(
            FloorReporter::raising(client),
            read_lsn,
            now,
            now.saturating_add(HYDRATE_HOLD_MS),
        );
        Ok(HydratePlan {
            pg: fetch.pg,
            epochs: segment.epochs(),
            read_lsn,
            pg_newest_lsn,
            page_bytes,
            pages,
            more,
            next_page,
            truncations: newest_truncations(segment),
        })
    }

    /// Stops every rebuild (wanted or running) of `volume`'s segments, which was dropped: what
    /// they stored is garbage the page store recycles. Returns how many.
    pub(super) fn forget_hydrations_of(&mut self, volume: protocol::VolumeId) -> usize {
        let (wanted, running) = (self.hydrations.wanted.len(), self.hydrations.running.len());
        self.hydrations.wanted.retain(|pg, _| pg.volume_id != volume);
        self.hydrations.running.retain(|pg, _| pg.volume_id != volume);
        wanted + running - self.hydrations.wanted.len() - self.hydrations.running.len()
    }

    /// The segment of `pg` no longer wants rebuilding (it was retired).
    pub(super) fn stop_hydration(&mut self, pg: PgRef) {
        self.hydrations.wanted.remove(&pg);
        self.hydrations.abandon(pg, "the segment was retired");
    }

    /// Target side: gossip shows `peer` can rebuild `pg` here (called by the gossip decisions).
    /// A PG waiting for a source moves to a less busy peer that can serve it too. Never for a
    /// volume dropped here.
    pub(super) fn want_hydration(&mut self, pg: PgRef, peer: NodeId) {
        if self.hydrations.running.contains_key(&pg) || self.is_dropped(pg.volume_id) {
            return;
        }
        let load = |h: &Hydrations, node: NodeId| {
            h.running.values().filter(|r| r.source == node).count()
                + h.wanted.values().filter(|w| **w == node).count()
        };
        let current = self.hydrations.wanted.get(&pg).copied();
        let better =
            current.is_none_or(|p| p != peer && load(&self.hydrations, p) > load(&self.hydrations, peer) + 1);
        if better {
            self.hydrations.wanted.insert(pg, peer);
        }
    }

    /// True if a hydration from `peer` is wanted or running: its driver should keep asking.
    pub fn hydrating_from(&self, peer: NodeId) -> bool {
        self.hydrations.wanted.values().any(|p| *p == peer)
            || self.hydrations.running.values().any(|h| h.source == peer)
    }

    /// The next ask for `peer`, if a hydration from it may ask now.
    pub fn poll_hydrate(&mut self, peer: NodeId, now: u64) -> Option<HydrateFetch> {
        self.expire_hydrate_asks(now);
        if self.state != super::NodeState::Serving || now < self.hydrations.ready_at_ms {
            return None;
        }
        let serving = self.hydrations.running.values().filter(|h| h.source == peer).count();
        let starting: Vec<PgRef> = self
            .hydrations
            .wanted
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(pg, _)| *pg)
            .take(HYDRATIONS_PER_SOURCE_MAX.saturating_sub(serving))
            .collect();
        for pg in starting {
            self.hydrations.wanted.remove(&pg);
            let hydration = Hydration::new(peer, now);
            self.hydrations.running.insert(pg, hydration);
            self.hydrations.stats.started += 1;
        }
        let (pg, hydration) = self.hydrations.running.iter_mut().find(|(_, h)| {
            h.source == peer
                && h.asked_until.is_none()
                && h.retry_at_ms <= now
                && !h.listed_all
                && h.to_store.len() < HYDRATE_PENDING_PAGES_MAX
        })?;
        hydration.asked_until = Some(now.saturating_add(HYDRATE_TIMEOUT_MS));
        let (epochs, read_lsn) = match hydration.started {
            Some((epochs, read_lsn, _)) => (epochs, read_lsn),
            None => (self.segments.get(pg).map_or(Epochs::INITIAL, Segment::epochs), Lsn::ZERO),
        };
        let rate_bytes = u32::try_from(self.hydrations.bytes_per_s).unwrap_or(u32::MAX);
        Some(HydrateFetch {
            pg: *pg,
            epochs,
            read_lsn,
            from_page: hydration.next_page,
            bytes_max: HYDRATE_BYTES_MAX.min(rate_bytes),
        })
    }

    /// The source's answer: its state is stored durably, its pages queued for the coalescer.
    pub fn handle_hydrate_pages(&mut self, answer: HydratePages, now: u64) {
        let pg = answer.pg;
        let Some(hydration) = self.hydrations.running.get_mut(&pg) else { return };
        if hydration.source != answer.node || hydration.asked_until.is_none() {
            return;
        }
        hydration.asked_until = None;
        hydration.progress_ms = now;
        let point = (answer.epochs, answer.read_lsn, answer.pg_newest_lsn);
        let same_point = |(epochs, read, newest): (Epochs, Lsn, Lsn)| {
            super::gossip::same_records(epochs, answer.epochs)
                && (read, newest) == (answer.read_lsn, answer.pg_newest_lsn)
        };
        match hydration.started {
            Some(started) if !same_point(started) => {
                return self.hydrations.abandon(pg, "the source's read point or epochs changed");
            }
            Some(_) => {}
            None => {
                hydration.started = Some(point);
                self.adopt_source_state(&answer);
            }
        }
        let Some(hydration) = self.hydrations.running.get_mut(&pg) else { return };
        let bytes: u64 = answer.pages.iter().map(|p| p.bytes.len() as u64).sum();
        self.hydrations.stats.pages_fetched += answer.pages.len() as u64;
        for page in answer.pages {
            // A page with no version at the read point reads as zeros: nothing to store.
            if page.version_lsn != Lsn::ZERO {
                hydration.to_store.insert(page.page_id, (page.version_lsn, page.bytes));
            }
        }
        hydration.next_page = answer.next_page;
        hydration.listed_all = !answer.more;
        self.hydrations.stats.bytes_fetched += bytes;
        let spread_ms = bytes.saturating_mul(1000) / self.hydrations.bytes_per_s;
        self.hydrations.ready_at_ms = now.saturating_add(spread_ms);
        self.install_if_hydrated(pg);
    }

    /// An ask got no answer (no connection, a timeout): a rebuild under way keeps what it
    /// stored and asks the same source again after `HYDRATE_RETRY_MS`, at the same read point
    /// (it resumes if the source, perhaps restarted, still holds it); one that has not started,
    /// or heard nothing for `HYDRATE_RESUME_MS`, is abandoned.
    pub fn handle_hydrate_unanswered(&mut self, pg: PgRef, peer: NodeId, now: u64) {
        let Some(hydration) = self.hydrations.running.get_mut(&pg).filter(|h| h.source == peer) else {
            return;
        };
        let stale = now.saturating_sub(hydration.progress_ms) >= self.limits.hydrate_resume_ms;
        if hydration.started.is_none() || stale {
            return self.hydrations.abandon(pg, "the source did not answer");
        }
        hydration.asked_until = None;
        hydration.retry_at_ms = now.saturating_add(self.limits.hydrate_retry_ms);
    }

    /// The source answered an ask with an error (it refuses, or no longer holds the read
    /// point): the rebuild starts over later.
    pub fn handle_hydrate_failed(&mut self, pg: PgRef, peer: NodeId) {
        if self.hydrations.running.get(&pg).is_some_and(|h| h.source == peer) {
            self.hydrations.abandon(pg, "the source refused or did not answer");
        }
        if self.hydrations.wanted.get(&pg) == Some(&peer) {
            self.hydrations.wanted.remove(&pg);
        }
    }

    /// The started rebuilds, for a checkpoint: where each resumes after a restart.
    pub fn hydration_checkpoints(&self) -> Vec<HydrationCheckpoint> {
        let mut out = Vec::new();
        for (pg, h) in &self.hydrations.running {
            let Some((epochs, read_lsn, pg_newest_lsn)) = h.started else { continue };
            // Pages listed but not yet durable are asked again, and everything after them.
            let pending = h.to_store.keys().chain(h.storing.iter()).min().copied();
            let resume_from = pending.map_or(h.next_page, |p| p.min(h.next_page));
            let stored = h
                .stored
                .range(..resume_from)
                .filter_map(|(page, (version, stored))| match stored {
                    Stored::At(location) => Some((*page, *version, *location)),
                    Stored::Zeros => None,
                })
                .collect();
            out.push(HydrationCheckpoint {
                pg: *pg,
                source: h.source,
                epochs,
                read_lsn,
                pg_newest_lsn,
                resume_from,
                stored,
            });
        }
        out
    }

    /// Takes up a rebuild a checkpoint kept (after `restore_segment` and replay, before
    /// serving): it asks its source again from `resume_from`, at the same read point. Dropped
    /// if the segment is gone or retired.
    pub fn resume_hydration(&mut self, kept: HydrationCheckpoint, now: u64) {
        let node = self.node;
        if self.segments.get(&kept.pg).is_none_or(|s| s.is_retired(node)) {
            return;
        }
        let stored = kept.stored.into_iter().map(|(page, version, at)| (page, (version, Stored::At(at))));
        let hydration = Hydration {
            started: Some((kept.epochs, kept.read_lsn, kept.pg_newest_lsn)),
            next_page: kept.resume_from,
            stored: stored.collect(),
            ..Hydration::new(kept.source, now)
        };
        tracing::info!(pg = ?kept.pg, source = %kept.source, pages = hydration.stored.len(), "hydration resumed");
        self.hydrations.running.insert(kept.pg, hydration);
        self.hydrations.stats.resumed += 1;
    }

    /// Hydration counters, for `/metrics`.
    pub fn hydrate_stats(&self) -> HydrateStats {
        self.hydrations.stats
    }

    /// True while `pg` is being hydrated here.
    pub fn is_hydrating(&self, pg: PgRef) -> bool {
        self.hydrations.running.contains_key(&pg)
    }

    /// True once after a hydration completed: the driver should write a checkpoint now.
    pub fn poll_checkpoint_wanted(&mut self) -> bool {
        std::mem::take(&mut self.hydrations.checkpoint_wanted)
    }

    /// Fetched page versions (hydration first, then scrub repairs) for the coalescer to store
    /// as they are, at most `max`.
    pub(super) fn take_hydrated_pages(&mut self, max: usize) -> Vec<(PgRef, PageId, Lsn, Bytes)> {
        let mut out = Vec::new();
        for (pg, hydration) in &mut self.hydrations.running {
            while out.len() < max {
                let Some((page, (version, bytes))) = hydration.to_store.pop_first() else { break };
                hydration.storing.insert(page);
                out.push((*pg, page, version, bytes));
            }
        }
        out
    }

    /// The coalescer stored (or failed to store) a hydrated page; true if it was one.
    pub(super) fn handle_hydrated_page_stored(
        &mut self,
        pg: PgRef,
        page: PageId,
        version: Lsn,
        bytes: &Bytes,
        stored: Option<Location>,
    ) -> bool {
        let Some(hydration) = self.hydrations.running.get_mut(&pg) else { return false };
        if !hydration.storing.remove(&page) {
            return false;
        }
        match stored {
            Some(location) => {
                hydration.stored.insert(page, (version, Stored::At(location)));
            }
            None => {
                hydration.to_store.insert(page, (version, bytes.clone()));
            }
        }
        self.install_if_hydrated(pg);
        true
    }

    /// Creates the segment if needed and stores the source's epochs and truncation ranges
    /// durably, exactly as an epoch bump and the truncations would.
    fn adopt_source_state(&mut self, answer: &HydratePages) {
        let pg = answer.pg;
        let segment = self.segment_entry(pg, answer.epochs);
        segment.learn_page_bytes(answer.page_bytes);
        segment.raise_epochs(&answer.epochs);
        let epochs = segment.epochs();
        for (epoch, range) in &answer.truncations {
            segment.truncate(*epoch, *range);
        }
        self.queue(pg, EntryBody::Meta { epochs, truncation: None });
        for (epoch, range) in &answer.truncations {
            let epochs = Epochs { volume: *epoch, ..epochs };
            self.queue(pg, EntryBody::Meta { epochs, truncation: Some(*range) });
        }
    }

    fn install_if_hydrated(&mut self, pg: PgRef) {
        let Some(hydration) = self.hydrations.running.get(&pg) else { return };
        let early = self.limits.planted == Some(PlantedBug::HydrateClaimsEarly);
        let done =
            early || hydration.listed_all && hydration.to_store.is_empty() && hydration.storing.is_empty();
        let Some((_, _, base)) = hydration.started.filter(|_| done) else { return };
        let hydration = self.hydrations.running.remove(&pg).expect("looked up above");
        let images: Vec<(PageId, Lsn, Stored)> =
            hydration.stored.into_iter().map(|(page, (version, stored))| (page, version, stored)).collect();
        let pages = images.len();
        if let Some(segment) = self.segments.get_mut(&pg) {
            segment.install_hydrated(base, images);
            tracing::info!(?pg, %base, pages, scl = %segment.scl(), "segment hydrated");
        }
        self.cache.drop_above(pg, Lsn::ZERO);
        self.hydrations.stats.completed += 1;
        self.hydrations.checkpoint_wanted = true;
    }

    fn expire_hydrate_asks(&mut self, now: u64) {
        let expired: Vec<PgRef> = self
            .hydrations
            .running
            .iter()
            .filter(|(_, h)| h.asked_until.is_some_and(|until| until <= now))
            .map(|(pg, _)| *pg)
            .collect();
        for pg in expired {
            let source = self.hydrations.running[&pg].source;
            self.handle_hydrate_unanswered(pg, source, now);
        }
    }
}
