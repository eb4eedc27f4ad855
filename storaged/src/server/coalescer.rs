//! The coalescer task: builds the page versions the core asks for, stores them in the page
//! store (one sealed group, one write + flush, per batch of jobs), and recycles journal and page
//! store files once a checkpoint no longer needs them.
//!
//! It yields to the foreground between jobs and has its own files and flushes, so it never holds
//! up an ack; what it costs the foreground is CPU time and disk bandwidth.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::journal_task::{commit, DISK_FULL_RETRY};
use super::pages::{build_version, report_fault, BuildFault};
use super::shared::Shared;
use crate::core::{Base, CoalesceJob, EntryBody, JournalEntry, NodeState};
use crate::journal::group::group_len;
use crate::journal::writer::{Journal, WriteError};

/// Most page versions stored in one page store group.
pub const COALESCE_JOBS_MAX: usize = 64;
/// How long an idle coalescer waits before looking for work again.
pub const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Runs until the node shuts down (or its page store fails, which latches the node).
pub async fn run(shared: Rc<Shared>, mut pages: Journal, file_bytes: u64) {
    loop {
        // The core's maintenance timer (`MAINTAIN_INTERVAL_MS`) says when.
        if shared.with_core(|core| core.poll_maintenance(shared.now_ms())) {
            maintain(&shared, &pages, file_bytes);
        }
        if matches!(shared.with_core(|core| core.state().clone()), NodeState::Failed(_)) {
            return;
        }
        let jobs = shared.with_core(|core| core.poll_coalesce(COALESCE_JOBS_MAX));
        if jobs.is_empty() {
            let _ = tokio::time::timeout(IDLE_WAIT, shared.coalesce_wake.notified()).await;
            continue;
        }
        let (built, entries) = build_jobs(&shared, jobs).await;
        if entries.is_empty() {
            // Every job failed (each was reported): do not spin on them.
            tokio::time::sleep(IDLE_WAIT).await;
            continue;
        }
        let len = group_len(&entries) as u64;
        match commit(&mut pages, &shared, &entries).await {
            Ok(placed) => {
                let position = pages.position();
                shared.with_core(|core| {
                    for (job, (_, location)) in built.iter().zip(&placed) {
                        core.handle_coalesced(job, Some(*location));
                    }
                });
                {
                    let mut checkpoints = shared.checkpoints.borrow_mut();
                    checkpoints.pages = position;
                    checkpoints.bytes_since += len;
                }
                let mut stats = shared.page_stats.get();
                stats.images_written += placed.len() as u64;
                shared.page_stats.set(stats);
                // A hydrated segment's new state is recorded at once, not at the next interval.
                let hydrated = shared.with_core(|core| core.poll_checkpoint_wanted());
                shared.checkpoint(hydrated);
            }
            Err(error) => {
                shared.with_core(|core| built.iter().for_each(|job| core.handle_coalesced(job, None)));
                match error {
                    WriteError::NoSpace => {
                        tracing::warn!("page store: no space for a new file; coalescing paused");
                        tokio::time::sleep(DISK_FULL_RETRY).await;
                    }
                    WriteError::Failed(reason) => {
                        tracing::error!(%reason, "page store failed; the node refuses writes until restarted");
                        shared.with_core(|core| core.handle_io_failed(reason));
                        return;
                    }
                }
            }
        }
    }
}

/// Builds each job's version; a job whose stored bytes fail verification is reported and
/// released.
async fn build_jobs(shared: &Shared, jobs: Vec<CoalesceJob>) -> (Vec<CoalesceJob>, Vec<JournalEntry>) {
    let mut built = Vec::with_capacity(jobs.len());
    let mut entries = Vec::with_capacity(jobs.len());
    for job in jobs {
        // Foreground work (acks, reads) runs first.
        tokio::task::yield_now().await;
        match build_job(shared, &job).await {
            Ok(page) => {
                let body = EntryBody::Image {
                    page_id: job.page_id,
                    version_lsn: job.target,
                    page: Bytes::from(page),
                };
                entries.push(JournalEntry { seq: entries.len() as u64 + 1, pg: job.pg, body });
                built.push(job);
            }
            Err(fault) => {
                report_fault(shared, job.pg, &fault);
                shared.with_core(|core| core.handle_coalesced(&job, None));
            }
        }
    }
    (built, entries)
}

async fn build_job(shared: &Shared, job: &CoalesceJob) -> Result<Vec<u8>, BuildFault> {
    if let Some(fetched) = &job.fetched {
        // A peer's version of the page, checked by the core against the page size.
        return Ok(fetched.to_vec());
    }
    let base = job.base.map_or(Base::Zeros, Base::Image);
    build_version(shared, job.page_bytes, &base, &job.records).await
}

/// After the core's maintenance pass: picks a page store file to compact, and deletes the
/// journal and page store files the core says nothing refers to any more, after a checkpoint
/// that no longer needs them.
fn maintain(shared: &Shared, pages: &Journal, file_bytes: u64) {
    let pages_head = pages.position().file;
    let journal_head = shared.checkpoints.borrow().journal.file;
    let (journal_files, page_files) = (shared.reader.files(), shared.pages_reader.files());
    let plan = shared.with_core(|core| {
        let live_images = core.image_bytes_by_file();
        core.plan_compaction(pages_head, file_bytes, &live_images);
        core.plan_recycle(&journal_files, journal_head, &page_files, pages_head, &live_images)
    });
    if plan.is_empty() {
        return;
    }
    let (journal_doomed, pages_doomed) = (plan.journal, plan.pages);
    // The checkpoint written now starts replay after every doomed file and refers to none.
    if !shared.checkpoint(true) {
        return;
    }
    let mut recycled = 0;
    for (reader, file) in journal_doomed
        .iter()
        .map(|f| (&shared.reader, *f))
        .chain(pages_doomed.iter().map(|f| (&shared.pages_reader, *f)))
    {
        match reader.remove_file(file) {
            Ok(()) => recycled += 1,
            Err(error) => tracing::warn!(file, %error, "could not delete a recycled file; will retry"),
        }
    }
    tracing::info!(journal = ?journal_doomed, pages = ?pages_doomed, "recycled files");
    let mut stats = shared.page_stats.get();
    stats.files_recycled += recycled;
    shared.page_stats.set(stats);
}
