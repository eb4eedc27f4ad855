//! The state the driver tasks share on the node's single thread: the core, and the reply
//! channels of requests the core is holding. Borrowed only between awaits, never across one.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use protocol::messages::{ErrorCode, ErrorReply};
use protocol::{Epochs, Message, PgId, PgRef, VolumeId};
use tokio::sync::{oneshot, Notify};

use super::admin::{
    AdminFeed, NodeMetrics, PageMetrics, SegmentMetrics, Snapshot, METRICS_SEGMENTS_MAX, SEGMENT_STATES,
    SNAPSHOT_INTERVAL,
};
use super::journal_task::JournalStats;
use crate::core::node::truncate_message;
use crate::core::{NodeCore, RequestId};
use crate::storage::uring::UringDir;
use crate::store::{CoreAccess, DropVolumeError, DroppedVolume, NodeStore};

/// Admin snapshots between two counts of the records held for the floor (a walk over them).
const HELD_RECOUNT_SNAPSHOTS: u64 = 10;

/// A reply that is ready now or will be sent on a channel.
#[derive(Debug)]
pub enum Pending {
    Ready(Message),
    Waiting(oneshot::Receiver<Message>),
}

impl Pending {
    /// The reply; a dropped sender means the node is shutting down.
    pub async fn resolve(self) -> Option<Message> {
        match self {
            Pending::Ready(message) => Some(message),
            Pending::Waiting(receiver) => receiver.await.ok(),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Shared {
    core: RefCell<NodeCore>,
    waiting: RefCell<HashMap<RequestId, oneshot::Sender<Message>>>,
    next_request: RefCell<u64>,
    /// Wakes the journal task when the core has queued entries.
    pub journal_wake: Notify,
    /// Wakes the checkpoint task when enough was written since the last checkpoint.
    pub checkpoint_wake: Notify,
    /// The journal and page store readers, keys, checkpoints and entry cache.
    pub store: NodeStore<UringDir>,
    /// What the admin port shows; refreshed by `admin_snapshot`'s task.
    pub journal_stats: Cell<JournalStats>,
    /// Notified (all waiters) whenever journal entries become durable: page reads waiting for
    /// a segment to become complete check again.
    pub durable: Notify,
    /// Wakes the coalescer when new records are durable.
    pub coalesce_wake: Notify,
    pub page_stats: Cell<PageStats>,
    /// What the drivers record as it happens (latencies, fetch sizes, error replies), for
    /// `/metrics`; shared with the admin thread.
    pub metrics: Arc<NodeMetrics>,
    started: Instant,
}

/// Counters the coalescer keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageStats {
    pub images_written: u64,
    pub files_recycled: u64,
}

impl Shared {
    pub fn new(core: NodeCore, store: NodeStore<UringDir>) -> Rc<Shared> {
        Rc::new(Shared {
            core: RefCell::new(core),
            waiting: RefCell::new(HashMap::new()),
            next_request: RefCell::new(0),
            journal_wake: Notify::new(),
            checkpoint_wake: Notify::new(),
            store,
            journal_stats: Cell::new(JournalStats::default()),
            durable: Notify::new(),
            coalesce_wake: Notify::new(),
            page_stats: Cell::new(PageStats::default()),
            metrics: Arc::default(),
            started: Instant::now(),
        })
    }

    /// Milliseconds since the node started: the clock the core's floor leases run on.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Starts refreshing a snapshot for the admin port every `SNAPSHOT_INTERVAL`; the count of
    /// records held for the floor (a walk over the held records) only every
    /// `HELD_RECOUNT_SNAPSHOTS`-th time.
    pub fn admin_snapshot(self: Rc<Self>) -> AdminFeed {
        let feed = AdminFeed { snapshot: Default::default(), live: Arc::clone(&self.metrics) };
        let writer = Arc::clone(&feed.snapshot);
        tokio::task::spawn_local(async move {
            let mut rounds = 0u64;
            let mut held = 0;
            loop {
                if rounds % HELD_RECOUNT_SNAPSHOTS == 0 {
                    held = self.core.borrow().records_held_for_floor();
                }
                rounds += 1;
                let fresh = self.with_core(|core| {
                    let journal = self.journal_stats.get();
                    let (segments, segments_by_state) = segment_metrics(core);
                    Snapshot {
                        node: core.node().0,
                        az: core.az().0,
                        state: Some(core.state().clone()),
                        segments_total: core.segments().count(),
                        segments,
                        segments_by_state,
                        journal_bytes_written: journal.bytes_written,
                        journal_groups_written: journal.groups_written,
                        journal_write_flush_us: journal.write_flush_us,
                        credit_bytes: core.credit_bytes(),
                        pages: self.page_metrics(core, held),
                        scrub: core.scrub_stats(),
                        hydrate: core.hydrate_stats(),
                        scrub_faults_open: core.scrub_faults_open() as u64,
                    }
                });
                let fresh = Arc::new(fresh);
                let old =
                    std::mem::replace(&mut *writer.lock().unwrap_or_else(PoisonError::into_inner), fresh);
                // Freed after the lock is released: the admin thread never waits for it.
                drop(old);
                tokio::time::sleep(SNAPSHOT_INTERVAL).await;
            }
        });
        feed
    }

    fn page_metrics(&self, core: &NodeCore, records_held_for_floor: u64) -> PageMetrics {
        let (page_cache_bytes, (page_cache_hits, page_cache_misses)) = core.cache_stats();
        let stats = self.page_stats.get();
        PageMetrics {
            index_bytes: core.index_estimate(),
            page_cache_bytes: page_cache_bytes as u64,
            page_cache_hits,
            page_cache_misses,
            records_held_for_floor,
            journal_files: self.store.journal.files().len() as u64,
            page_store_files: self.store.pages.files().len() as u64,
            images_written: stats.images_written,
            files_recycled: stats.files_recycled,
            read_errors: self.store.read_errors(),
        }
    }

    /// Runs `f` on the core, then delivers every reply it released.
    pub fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T {
        let result = f(&mut self.core.borrow_mut());
        self.deliver();
        result
    }

    /// Submits a request whose reply the core may hold until the journal is durable.
    pub fn submit(&self, f: impl FnOnce(&mut NodeCore, RequestId) -> Result<(), ErrorReply>) -> Pending {
        let request = {
            let mut next = self.next_request.borrow_mut();
            *next += 1;
            RequestId(*next)
        };
        let (sender, receiver) = oneshot::channel();
        self.waiting.borrow_mut().insert(request, sender);
        match self.with_core(|core| f(core, request)) {
            Ok(()) => {
                self.journal_wake.notify_one();
                Pending::Waiting(receiver)
            }
            Err(reply) => {
                self.waiting.borrow_mut().remove(&request);
                Pending::Ready(Message::Error(reply))
            }
        }
    }

    fn deliver(&self) {
        loop {
            let Some((request, message)) = self.core.borrow_mut().poll_reply() else { return };
            if let Some(sender) = self.waiting.borrow_mut().remove(&request) {
                // The requester may have gone away; its reply is simply dropped.
                let _ = sender.send(message);
            }
        }
    }
}

/// The first `METRICS_SEGMENTS_MAX` segments, and every segment counted by state (in
/// `SEGMENT_STATES` order).
fn segment_metrics(core: &NodeCore) -> (Vec<SegmentMetrics>, [u64; SEGMENT_STATES.len()]) {
    let mut listed = Vec::new();
    let mut by_state = [0; SEGMENT_STATES.len()];
    for (segment, state) in core.segments_with_state() {
        if let Some(i) = SEGMENT_STATES.iter().position(|(s, _)| *s == state) {
            by_state[i] += 1;
        }
        if listed.len() < METRICS_SEGMENTS_MAX {
            listed.push(SegmentMetrics {
                pg: segment.pg(),
                state,
                scl: segment.scl(),
                highest_lsn: segment.highest_lsn(),
                floor: segment.floor(),
                known_pg_lsn: segment.known_pg_lsn(),
            });
        }
    }
    (listed, by_state)
}

impl CoreAccess for Shared {
    fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T {
        Shared::with_core(self, f)
    }
}

/// Drops every segment of `volume` this node holds and makes sure none comes back: the node
/// refuses the volume from the first step on, its tombstone and the destruction of its data
/// keys are durable once this returns `Ok`, and the files nothing refers to any more are
/// deleted (`store::drop_volume`). Call it when the cluster says the volume was deleted, while
/// running or at start (after replay, once the node serves); calling it again, or for a volume
/// this node never held, is fine. On an error the volume is refused but its tombstone may not
/// be durable: call again.
pub async fn drop_volume(shared: &Rc<Shared>, volume: VolumeId) -> Result<DroppedVolume, DropVolumeError> {
    let dropped = shared.store.drop_volume(&**shared, volume).await;
    // Page reads waiting for one of its segments to catch up look again, and are refused.
    shared.durable.notify_waiters();
    dropped
}

/// An error reply to a request that names no PG (or before its PG is known).
pub(super) fn error_reply(code: ErrorCode, message: &str) -> Message {
    let pg = PgRef { volume_id: VolumeId(0), pg_id: PgId(0) };
    Message::Error(ErrorReply { code, pg, epochs: Epochs::default(), message: truncate_message(message) })
}
