//! The journal task: group commit. It takes everything the core queued while the previous
//! write + flush was in flight, seals it into one group, writes and flushes it
//! (`journal::commit`), and tells the core (`NodeStore::journal_durable`). Nothing waits on a
//! timer: a group grows exactly while the previous one is on its way. Checkpoints are written
//! by their own task, so an ack never waits for one.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::NodeState;
use crate::journal::commit::{write_group, GROUP_BYTES_MAX, GROUP_ENTRIES_MAX};
use crate::journal::group::{entry_len, group_len};
use crate::journal::writer::{Journal, WriteError};
use crate::storage::uring::UringDir;
use crate::store::{journal_write_failed, retry_space};

use super::shared::Shared;

/// What the journal task has done so far, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalStats {
    /// Bytes written and flushed.
    pub bytes_written: u64,
    /// Group commits (write + flush).
    pub groups_written: u64,
    /// Time from a group's first write to its flush's completion, summed over groups.
    pub write_flush_us: u64,
}

/// How often a node that ran out of space checks whether space returned.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);

/// Runs until the node shuts down.
pub async fn run(shared: Rc<Shared>, mut journal: Journal<UringDir>) {
    let mut retry_len = None;
    loop {
        if shared.with_core(|core| *core.state() == NodeState::DiskFull) {
            tokio::time::sleep(DISK_FULL_RETRY).await;
            retry_space(&*shared, &mut journal, &mut retry_len).await;
            continue;
        }
        let entries =
            shared.with_core(|core| core.poll_journal_group(GROUP_BYTES_MAX, GROUP_ENTRIES_MAX, entry_len));
        if entries.is_empty() {
            shared.journal_wake.notified().await;
            continue;
        }
        let len = group_len(&entries);
        let started = Instant::now();
        let written = match write_group(&mut journal, &shared.store.keyring, &entries).await {
            Ok(()) => journal.flush().await,
            Err(error) => Err(error),
        };
        match written {
            Ok(placed) => {
                let elapsed = started.elapsed();
                shared.metrics.group_committed(elapsed);
                shared.store.journal_durable(&*shared, &journal, entries, &placed, len as u64);
                shared.checkpoint_wake.notify_one();
                shared.durable.notify_waiters();
                shared.coalesce_wake.notify_one();
                let stats = shared.journal_stats.get();
                shared.journal_stats.set(JournalStats {
                    bytes_written: journal.bytes_written(),
                    groups_written: stats.groups_written + 1,
                    write_flush_us: stats.write_flush_us + elapsed.as_micros() as u64,
                });
            }
            Err(error) => {
                if matches!(error, WriteError::NoSpace) {
                    retry_len = Some(len);
                }
                journal_write_failed(&*shared, error);
            }
        }
    }
}

/// The checkpoint task: writes a checkpoint whenever enough was made durable since the last.
pub async fn checkpoints(shared: Rc<Shared>) {
    loop {
        shared.checkpoint_wake.notified().await;
        shared.store.checkpoint(&*shared, false).await;
    }
}
