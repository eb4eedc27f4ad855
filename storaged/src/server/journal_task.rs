//! The journal task: group commit. It takes everything the core queued while the previous
//! write + flush was in flight, seals it into one group, writes and flushes it, and tells the
//! core. Nothing waits on a timer: a group grows exactly while the previous one is on its way.

use std::rc::Rc;
use std::time::Duration;

use crate::core::{JournalEntry, NodeFailure, NodeState};
use crate::journal::format::GROUP_ALIGN;
use crate::journal::group::{build_group, entry_len, group_len, is_sealed, nonces_needed, BuildError};
use crate::journal::writer::{Journal, WriteError};
use crate::keyring::KeyringError;
use crate::meta::MetaError;

use super::shared::Shared;

/// Most record bytes in one group: bounds the sealing buffer and one write.
pub const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most entries in one group (the header's count is a u16).
pub const GROUP_ENTRIES_MAX: usize = u16::MAX as usize;
/// How often a node that ran out of space checks whether space returned.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);

/// Runs until the node shuts down.
pub async fn run(shared: Rc<Shared>, mut journal: Journal) {
    let mut retry_len = None;
    loop {
        if shared.with_core(|core| *core.state() == NodeState::DiskFull) {
            tokio::time::sleep(DISK_FULL_RETRY).await;
            retry_space(&shared, &mut journal, &mut retry_len);
            continue;
        }
        let entries =
            shared.with_core(|core| core.poll_journal_group(GROUP_BYTES_MAX, GROUP_ENTRIES_MAX, entry_len));
        if entries.is_empty() {
            shared.journal_wake.notified().await;
            continue;
        }
        let len = group_len(&entries);
        match commit(&mut journal, &shared, &entries).await {
            Ok(placed) => {
                let last = entries.last().expect("non-empty").seq;
                let position = journal.position();
                shared.with_core(|core| {
                    core.handle_durable(last, &placed);
                    core.set_journal_head(position.file);
                });
                {
                    let mut checkpoints = shared.checkpoints.borrow_mut();
                    checkpoints.journal = position;
                    checkpoints.bytes_since += len as u64;
                }
                shared.checkpoint(false);
                shared.durable.notify_waiters();
                shared.coalesce_wake.notify_one();
                let mut stats = shared.journal_stats.borrow_mut();
                *stats = (journal.bytes_written(), stats.1 + 1);
            }
            Err(WriteError::NoSpace) => {
                tracing::warn!("journal: no space for a new file; refusing writes until space returns");
                retry_len = Some(len);
                shared.with_core(|core| core.handle_no_space());
            }
            Err(WriteError::Failed(reason)) => {
                tracing::error!(%reason, "journal failed; the node refuses writes until restarted");
                shared.with_core(|core| core.handle_io_failed(reason));
            }
        }
    }
}

/// Seals and writes one group (of the journal or the page store); returns where each entry
/// landed.
pub async fn commit(
    journal: &mut Journal,
    shared: &Shared,
    entries: &[JournalEntry],
) -> Result<Vec<(u64, crate::core::Location)>, WriteError> {
    let image = {
        let mut keyring = shared.keyring.borrow_mut();
        let volumes = entries.iter().filter(|e| is_sealed(&e.body)).map(|e| e.pg.volume_id);
        keyring.prepare(volumes, nonces_needed(entries)).map_err(keyring_error)?;
        let (file, group_seq) = journal.prepare(group_len(entries))?;
        let (keys, nonces) = keyring.sealing();
        build_group(group_seq, file, entries, |v| keys.get(&v), nonces).map_err(|e| match e {
            BuildError::NoKey(v) => WriteError::Failed(NodeFailure::NoKey(v)),
            BuildError::NoNonce => WriteError::Failed(NodeFailure::NoNonce),
        })?
    };
    journal.write(image).await
}

fn keyring_error(error: KeyringError) -> WriteError {
    let no_space = matches!(&error, KeyringError::Meta(MetaError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC));
    if no_space {
        WriteError::NoSpace
    } else {
        WriteError::Failed(NodeFailure::Metadata(error.to_string()))
    }
}

fn retry_space(shared: &Shared, journal: &mut Journal, retry_len: &mut Option<usize>) {
    match journal.prepare(retry_len.unwrap_or(GROUP_ALIGN)) {
        Ok(_) => {
            tracing::info!("journal: space returned; taking writes again");
            *retry_len = None;
            shared.with_core(|core| core.handle_space_available());
        }
        Err(WriteError::NoSpace) => {}
        Err(WriteError::Failed(reason)) => shared.with_core(|core| core.handle_io_failed(reason)),
    }
}
