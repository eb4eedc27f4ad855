//! The coalescer task: runs the store's coalescer passes (`NodeStore::coalesce`: build the page
//! versions the core asks for, store them as one page store group) and, on the core's
//! maintenance timer, recycles journal and page store files (`NodeStore::recycle`).
//!
//! It yields to the foreground between jobs and has its own files and flushes, so it never holds
//! up an ack; what it costs the foreground is CPU time and disk bandwidth.

use std::rc::Rc;
use std::time::Duration;

use super::journal_task::DISK_FULL_RETRY;
use super::shared::Shared;
use crate::core::NodeState;
use crate::journal::writer::Journal;
use crate::storage::uring::UringDir;
use crate::store::Coalesced;

/// How long an idle coalescer waits before looking for work again.
pub const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Runs until the node shuts down (or its page store fails, which latches the node).
pub async fn run(shared: Rc<Shared>, mut pages: Journal<UringDir>, file_bytes: u64) {
    loop {
        // The core's maintenance timer (`MAINTAIN_INTERVAL_MS`) says when.
        if shared.with_core(|core| core.poll_maintenance(shared.now_ms())) {
            let recycled = shared.store.recycle(&*shared, pages.position().file, file_bytes).await;
            let mut stats = shared.page_stats.get();
            stats.files_recycled += recycled;
            shared.page_stats.set(stats);
        }
        if matches!(shared.with_core(|core| core.state().clone()), NodeState::Failed(_)) {
            return;
        }
        match shared.store.coalesce(&*shared, &mut pages).await {
            Coalesced::Idle => {
                let _ = tokio::time::timeout(IDLE_WAIT, shared.coalesce_wake.notified()).await;
            }
            // Do not spin on jobs that fail.
            Coalesced::AllFailed => tokio::time::sleep(IDLE_WAIT).await,
            Coalesced::Stored(count) => {
                let mut stats = shared.page_stats.get();
                stats.images_written += count as u64;
                shared.page_stats.set(stats);
            }
            Coalesced::NoSpace => tokio::time::sleep(DISK_FULL_RETRY).await,
            Coalesced::Failed => return,
        }
    }
}
