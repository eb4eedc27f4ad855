//! Volumes deleted for good (`borealis volume delete`): the core's side of dropping one.
//!
//! `drop_volume` removes every segment of the volume and every trace of it in the core's
//! indexes, queues and caches (records, images, page cache, coalescing and compaction work,
//! gossip fetches, rebuilds, scrub faults and repairs, floor reports and peer holds, which live
//! in the segments), refuses the requests that waited for the journal, and keeps the volume as
//! dropped. From then on:
//! - every request naming it is refused with `VolumeDeleted` (its message starts with
//!   [`VOLUME_DELETED`]): appends, epoch bumps, truncations, membership changes, record, header
//!   and page reads, floor reports, gossip fetches and hydration asks;
//! - nothing of it comes back: a peer's gossip summary gets an empty answer and starts no
//!   rebuild here, records or pages a peer sends for it are dropped, and replay and checkpoint
//!   restore skip it (the store marks the dropped volumes, `mark_dropped`, before either);
//! - its records no longer pin journal files, nor its images page store files, so recycling
//!   deletes them as it deletes any file nothing refers to.
//!
//! The tombstone's durability (and the destruction of the volume's keys) is the store's
//! (`store::drop_volume`); the core only decides. Invariant: no segment, queued entry, rebuild
//! or fault of a dropped volume exists (`segment_entry` asserts it for segments).

use std::collections::{BTreeSet, VecDeque};

use protocol::messages::{ErrorCode, ErrorReply};
use protocol::{Message, PgRef, VolumeId};

use super::{NodeCore, Waiter};

/// The start of every refusal's message for a request naming a dropped volume.
pub const VOLUME_DELETED: &str = "volume deleted";

/// What `NodeCore::drop_volume` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeDropped {
    /// False if the volume was dropped here already (nothing else was left to remove).
    pub newly_dropped: bool,
    /// The volume's segments, in PG order.
    pub segments: Vec<PgRef>,
    /// Records and images those segments indexed.
    pub records: u64,
    pub images: u64,
    /// Requests that waited for the journal, refused now.
    pub requests_refused: usize,
    /// Journal entries queued and not yet taken by the journal, dropped unwritten.
    pub entries_unwritten: usize,
    /// Rebuilds of its segments (wanted or running) stopped.
    pub hydrations_stopped: usize,
}

impl NodeCore {
    /// Drops `volume` for good (see the module docs); idempotent.
    pub fn drop_volume(&mut self, volume: VolumeId) -> VolumeDropped {
        let mut dropped = VolumeDropped { newly_dropped: self.dropped.insert(volume), ..Default::default() };
        let of_volume = |pg: &PgRef| pg.volume_id == volume;
        let pgs: Vec<PgRef> = self.segments.keys().copied().filter(of_volume).collect();
        for pg in &pgs {
            let segment = self.segments.remove(pg).expect("listed above");
            dropped.records += segment.record_count() as u64;
            dropped.images += segment.image_count() as u64;
        }
        dropped.segments = pgs;
        dropped.entries_unwritten = self.drop_unwritten(volume);
        dropped.requests_refused = self.refuse_waiters(volume);
        dropped.hydrations_stopped = self.forget_hydrations_of(volume);
        self.forget_scrub_of(volume);
        self.cache.drop_volume(volume);
        self.coalescing.retain(|(pg, _)| !of_volume(pg));
        self.over_apply.retain(|(pg, _)| !of_volume(pg));
        self.relocations.retain(|r| !of_volume(&r.pg()));
        self.gossip_fetches.retain(|pg, _| !of_volume(pg));
        self.index_estimate = self.index_bytes();
        if dropped.newly_dropped || !dropped.segments.is_empty() {
            tracing::info!(
                volume = volume.0,
                segments = dropped.segments.len(),
                records = dropped.records,
                images = dropped.images,
                refused = dropped.requests_refused,
                "volume dropped: its segments are no longer served, gossiped, rebuilt or scrubbed"
            );
        }
        dropped
    }

    /// Marks `volume` as dropped before anything of it is restored or replayed (at start, from
    /// the tombstones the keyring keeps), so nothing of it comes back.
    pub fn mark_dropped(&mut self, volume: VolumeId) {
        assert!(
            !self.segments.keys().any(|pg| pg.volume_id == volume),
            "a volume is marked dropped before its segments could be restored"
        );
        self.dropped.insert(volume);
    }

    /// True if `volume` was dropped here.
    pub fn is_dropped(&self, volume: VolumeId) -> bool {
        self.dropped.contains(&volume)
    }

    /// Every volume dropped here, ascending.
    pub fn dropped_volumes(&self) -> impl Iterator<Item = VolumeId> + '_ {
        self.dropped.iter().copied()
    }

    /// Refuses a request naming `pg` if its volume was dropped.
    pub(super) fn check_not_dropped(&self, pg: PgRef) -> Result<(), ErrorReply> {
        if !self.is_dropped(pg.volume_id) {
            return Ok(());
        }
        let message =
            format!("{VOLUME_DELETED}: volume {:#x} was deleted and is refused for good", pg.volume_id.0);
        Err(self.error(ErrorCode::VolumeDeleted, pg, &message))
    }

    /// Removes the volume's entries the journal has not taken yet (with their budget); those it
    /// took are written, and ignored once durable (`handle_durable`). Returns how many.
    fn drop_unwritten(&mut self, volume: VolumeId) -> usize {
        let doomed: BTreeSet<u64> =
            self.unwritten.iter().filter(|e| e.pg.volume_id == volume).map(|e| e.seq).collect();
        self.unwritten.retain(|e| !doomed.contains(&e.seq));
        let freed: u64 = self.in_journal.iter().filter(|e| doomed.contains(&e.seq)).map(|e| e.bytes).sum();
        self.in_journal.retain(|e| !doomed.contains(&e.seq));
        self.pending_bytes -= freed;
        doomed.len()
    }

    /// Refuses every request of the volume waiting for the journal; the others may now be
    /// released sooner (the volume's unwritten entries are gone). Returns how many.
    fn refuse_waiters(&mut self, volume: VolumeId) -> usize {
        let (doomed, kept): (VecDeque<Waiter>, VecDeque<Waiter>) =
            std::mem::take(&mut self.waiters).into_iter().partition(|w| w.reply.pg().volume_id == volume);
        self.waiters = kept;
        for waiter in &doomed {
            let reply = self.check_not_dropped(waiter.reply.pg()).expect_err("the volume is dropped");
            self.replies.push_back((waiter.request, Message::Error(reply)));
        }
        self.release_waiters(self.durable_seq());
        doomed.len()
    }
}
