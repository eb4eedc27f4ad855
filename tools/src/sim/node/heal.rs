//! A simulated node's healing, driven exactly as the daemon's drivers drive it
//! (`storaged/src/server/scrub.rs`, `gossip.rs`, `hydrate.rs`): the scrubber verifies the
//! entries the core hands out at the pace the core sets; each gossip round's exchange with a
//! peer asks it for the page versions the core wants to repair, then runs the hydrations the
//! core wants from it; a peer answers a `ReadPage` with its page read and a `HydrateFetch` with
//! the core's plan, each page built as its page read builds it. Nothing here decides: it
//! carries messages, bytes and time. Every ask is tagged so its answer (or error) finds it, as
//! a stream's reply does in the daemon; one without an answer within `ASK_TIMEOUT_MS` fails,
//! as the daemon's request timeout fails it.

use protocol::messages::HydrateFetch;
use protocol::{Lsn, Message, NodeId, PageId, PgRef};
use storaged::core::{HydrateStats, ScrubStats, Stored as StoredAt};
use storaged::storage::sim::complete;
use storaged::store::reads::{answer_hydrate, verify};

use super::{SimNode, ToPeer};

/// An ask to a peer not answered within this long fails (the daemon's
/// `GOSSIP_REQUEST_TIMEOUT`, scaled like the simulator's other timers).
const ASK_TIMEOUT_MS: u64 = 20;

/// What an ask to a peer was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    ImageRepair { pg: PgRef, page: PageId },
    Hydrate { pg: PgRef },
}

/// An ask awaiting its answer.
#[derive(Clone, Copy, Debug)]
pub struct PeerAsk {
    pub peer: NodeId,
    ask: Ask,
    until_ms: u64,
}

/// Scrub and hydration counters of a node, over all its lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealCounts {
    pub scrub_passes: u64,
    pub scrub_faults_found: u64,
    pub scrub_faults_repaired: u64,
    pub hydrations_started: u64,
    pub hydrations_completed: u64,
    pub hydrations_abandoned: u64,
}

impl HealCounts {
    pub fn add(&mut self, other: HealCounts) {
        self.scrub_passes += other.scrub_passes;
        self.scrub_faults_found += other.scrub_faults_found;
        self.scrub_faults_repaired += other.scrub_faults_repaired;
        self.hydrations_started += other.hydrations_started;
        self.hydrations_completed += other.hydrations_completed;
        self.hydrations_abandoned += other.hydrations_abandoned;
    }
}

impl SimNode {
    /// The scrubber's turn at `now_ms`: a job if the core hands one out, each entry read from
    /// the disk and verified as the daemon's scrubber does (`store::reads::verify`).
    pub fn scrub(&mut self, now_ms: u64) {
        if self.core.poll_scrub_timeout().is_none_or(|at| at > now_ms) {
            return;
        }
        if let Some(job) = self.core.poll_scrub(now_ms) {
            let store = &self.running.store;
            let outcomes: Vec<_> =
                job.entries.iter().map(|entry| (*entry, complete(verify(store, entry.0, entry.1)))).collect();
            self.core.handle_scrubbed(&outcomes);
        }
        let stats = self.core.scrub_stats();
        if stats.passes_completed > self.scrub_passes_seen {
            self.scrub_passes_seen = stats.passes_completed;
            self.scrub_pass_started_ms = Some(now_ms.saturating_sub(stats.last_pass_ms));
        }
    }

    /// Starts this round's exchange with `peer` unless one of its asks is still out (the
    /// daemon skips a peer whose exchange still runs).
    pub(super) fn start_exchange(
        &mut self,
        peer: NodeId,
        now: u64,
        members_of: impl Fn(PgRef) -> Vec<NodeId>,
    ) -> Option<ToPeer> {
        if self.asks.values().any(|a| a.peer == peer) {
            return None;
        }
        self.next_image_repair(peer, now, members_of).or_else(|| self.next_hydrate_ask(peer, now))
    }

    /// The next repair read for `peer`, as `server::gossip::repair_images` asks.
    fn next_image_repair(
        &mut self,
        peer: NodeId,
        now: u64,
        members_of: impl Fn(PgRef) -> Vec<NodeId>,
    ) -> Option<ToPeer> {
        let read = self.core.poll_image_repair(peer, now, members_of)?;
        let ask = Ask::ImageRepair { pg: read.pg, page: read.page_id };
        Some(self.ask(peer, ask, Message::ReadPage(read), now))
    }

    /// The next hydration ask for `peer`, as `server::hydrate::run_from` asks.
    fn next_hydrate_ask(&mut self, peer: NodeId, now: u64) -> Option<ToPeer> {
        if !self.core.hydrating_from(peer) {
            return None;
        }
        let fetch = self.core.poll_hydrate(peer, now)?;
        let ask = Ask::Hydrate { pg: fetch.pg };
        Some(self.ask(peer, ask, Message::HydrateFetch(fetch), now))
    }

    fn ask(&mut self, peer: NodeId, ask: Ask, message: Message, now: u64) -> ToPeer {
        self.next_tag += 1;
        let until_ms = now.saturating_add(ASK_TIMEOUT_MS);
        self.asks.insert(self.next_tag, PeerAsk { peer, ask, until_ms });
        (peer, message, Some(self.next_tag))
    }

    /// The answer to ask `tag`; the exchange then goes on as the daemon's does: after a repair
    /// the next repair (or, with none left, the hydration asks), after a hydration answer the
    /// next ask; after a refusal the repairs stop for this round and a hydration ends.
    pub(super) fn answered(
        &mut self,
        tag: u64,
        message: Message,
        now: u64,
        members_of: impl Fn(PgRef) -> Vec<NodeId>,
    ) -> Vec<ToPeer> {
        let Some(PeerAsk { peer, ask, .. }) = self.asks.remove(&tag) else { return Vec::new() };
        let next = match (ask, message) {
            (Ask::ImageRepair { .. }, Message::Page(page)) => {
                self.core.handle_image_fetched(page);
                self.next_image_repair(peer, now, members_of).or_else(|| self.next_hydrate_ask(peer, now))
            }
            (Ask::ImageRepair { pg, page }, _) => {
                self.core.handle_image_fetch_failed(pg, page, peer);
                self.next_hydrate_ask(peer, now)
            }
            (Ask::Hydrate { pg }, Message::HydratePages(pages)) => {
                let completed = self.core.hydrate_stats().completed;
                self.core.handle_hydrate_pages(pages, now);
                self.note_hydrated(pg, completed);
                self.next_hydrate_ask(peer, now)
            }
            (Ask::Hydrate { pg }, _) => {
                self.core.handle_hydrate_failed(pg, peer);
                None
            }
        };
        next.into_iter().collect()
    }

    /// Asks whose answer did not come in time fail, as the daemon's request timeout fails them
    /// (a hydration ask as unanswered: the core may resume it from the same source).
    pub fn expire_asks(&mut self, now_ms: u64) {
        let expired: Vec<u64> =
            self.asks.iter().filter(|(_, a)| a.until_ms <= now_ms).map(|(tag, _)| *tag).collect();
        for tag in expired {
            let Some(PeerAsk { peer, ask, .. }) = self.asks.remove(&tag) else { continue };
            match ask {
                Ask::ImageRepair { pg, page } => self.core.handle_image_fetch_failed(pg, page, peer),
                Ask::Hydrate { pg } => self.core.handle_hydrate_unanswered(pg, peer, now_ms),
            }
        }
    }

    /// Source side, as the daemon's hydration driver answers: the core's plan, each listed
    /// page served as a page read at the plan's read point serves it, or the first error.
    pub(super) fn answer_hydrate(&mut self, asker: NodeId, fetch: &HydrateFetch, now: u64) -> Message {
        let plan = match self.core.plan_hydrate(fetch, asker, now) {
            Ok(plan) => plan,
            Err(refusal) => return Message::Error(refusal),
        };
        let node = self.id;
        complete(answer_hydrate(plan, node, |read| std::future::ready(self.read_page(&read))))
    }

    /// True if the core refers to no stored record or image: its scrubber has nothing to
    /// verify (and so completes no pass).
    pub fn stores_nothing(&self) -> bool {
        self.core.segments().all(|segment| {
            segment.all_records().next().is_none()
                && segment.pages().all(|(_, versions)| {
                    versions.images().all(|(_, stored)| !matches!(stored, StoredAt::At(_)))
                })
        })
    }

    /// Runs the core's periodic bookkeeping once (`handle_tick`, as its maintenance timer
    /// would), which settles scrub faults; returns the faults still open.
    pub fn settle_scrub_faults(&mut self, now_ms: u64) -> usize {
        self.core.handle_tick(now_ms);
        self.core.scrub_faults_open()
    }

    /// If a hydration of `pg` completed since the core counted `completed_before`, notes the
    /// point its page images hold the PG through (the segment's folded point).
    pub(super) fn note_hydrated(&mut self, pg: PgRef, completed_before: u64) {
        if self.core.hydrate_stats().completed == completed_before {
            return;
        }
        if let Some(folded) = self.core.segment(&pg).map(|s| s.folded_through()) {
            let through = self.hydrated.entry(pg).or_insert(folded);
            *through = folded.max(*through);
        }
    }

    /// The point through which a hydration installed `pg`'s page images here (zero if none).
    pub fn hydrated_through(&self, pg: PgRef) -> Lsn {
        self.hydrated.get(&pg).copied().unwrap_or(Lsn::ZERO)
    }

    /// True while the core wants or runs a hydration from some peer.
    pub fn is_hydrating(&self) -> bool {
        self.peers().any(|p| self.core.hydrating_from(p))
    }

    /// Scrub and hydration counters over every life of this node.
    pub fn heal_counts(&self) -> HealCounts {
        let mut counts = self.past_heal;
        if self.up {
            counts.add(counts_of(self.core.scrub_stats(), self.core.hydrate_stats()));
        }
        counts
    }

    /// The core is about to be replaced (a crash): keep its counters.
    pub(super) fn end_life(&mut self) {
        self.past_heal.add(counts_of(self.core.scrub_stats(), self.core.hydrate_stats()));
        self.scrub_passes_seen = 0;
        self.scrub_pass_started_ms = None;
    }
}

fn counts_of(scrub: ScrubStats, hydrate: HydrateStats) -> HealCounts {
    HealCounts {
        scrub_passes: scrub.passes_completed,
        scrub_faults_found: scrub.faults_found,
        scrub_faults_repaired: scrub.faults_repaired,
        hydrations_started: hydrate.started,
        hydrations_completed: hydrate.completed,
        hydrations_abandoned: hydrate.abandoned,
    }
}
