//! Dropping a deleted volume from the node's durable state: the one step the daemon (and any
//! other driver) calls when the cluster says a volume was deleted, while running or at start
//! after replay. Idempotent: a second call, or one for a volume this node never held, does
//! what is left (often nothing) and says so.
//!
//! The order, and why:
//! 1. the core drops the volume (`NodeCore::drop_volume`): from here on nothing of it is
//!    served, taken, gossiped, rebuilt or scrubbed, and its records and images no longer pin
//!    any file; the entry cache forgets every decoded record (they do not say their volume);
//! 2. the keyring stores the volume's tombstone and destroys its data keys, in one metadata
//!    body over both copies (`Keyring::drop_volume`): every byte of it left in a journal or
//!    page store file is unreadable from then on, and replay skips its entries as dropped,
//!    not damaged. This is the durable step: once it returned, no restart brings the volume
//!    back;
//! 3. a checkpoint without its segments is stored, and the files nothing refers to any more
//!    are deleted (`NodeStore::recycle_files`): page store files that held only its images and
//!    journal files that held only its records (or records already folded) go at once; files
//!    shared with other volumes go as those are folded and compacted, as always, and meanwhile
//!    hold only the volume's unreadable bytes.
//!
//! A failure at step 2 leaves the volume dropped in memory but not durably: the caller calls
//! again (the core part is then a no-op). A failed checkpoint or deletion is only logged: the
//! tombstone makes restore and replay skip the volume, and recycling retries every second.

use protocol::{KeyVersion, PgRef, VolumeId};

use super::{CoreAccess, NodeStore};
use crate::keyring::KeyringError;
use crate::storage::Storage;

/// What dropping a volume did on this node (`NodeStore::drop_volume`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DroppedVolume {
    pub volume: VolumeId,
    /// False if the tombstone was already stored (an earlier call did the durable part).
    pub newly_tombstoned: bool,
    /// The volume's segments dropped now, in PG order (none on a repeated call).
    pub segments: Vec<PgRef>,
    /// Records and images those segments indexed.
    pub records: u64,
    pub images: u64,
    /// Requests of the volume that waited for the journal, refused.
    pub requests_refused: usize,
    /// The data key versions destroyed now.
    pub keys_destroyed: Vec<KeyVersion>,
    /// Node metadata copies stored.
    pub metadata_copies_stored: usize,
    /// Whether the checkpoint without the volume's segments was stored.
    pub checkpointed: bool,
    /// Journal and page store files deleted because nothing refers to them any more.
    pub journal_files_removed: Vec<u64>,
    pub page_files_removed: Vec<u64>,
}

/// Why a volume could not be dropped durably. The node refuses the volume already; call again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DropVolumeError {
    #[error("volume {volume}: its tombstone and key destruction could not be stored: {source}")]
    Keyring { volume: VolumeId, source: KeyringError },
}

impl DropVolumeError {
    /// True if the metadata could not be stored because the disk is full.
    pub fn is_no_space(&self) -> bool {
        match self {
            DropVolumeError::Keyring { source, .. } => source.is_no_space(),
        }
    }
}

impl<S: Storage> NodeStore<S> {
    /// Drops every segment of `volume` this node holds and makes sure none comes back (see the
    /// module docs).
    pub async fn drop_volume(
        &self,
        core: &impl CoreAccess,
        volume: VolumeId,
    ) -> Result<DroppedVolume, DropVolumeError> {
        // No recycling pass deletes a file the drop frees before its tombstone is durable.
        let _no_recycling = self.recycling.lock().await;
        let dropped = core.with_core(|core| core.drop_volume(volume));
        // Decoded records do not say their volume, and a drop is rare: the entry cache forgets
        // everything, so no plaintext of the volume stays in memory.
        self.entry_cache.borrow_mut().remove_where(|_| true);
        let keys = self
            .keyring
            .drop_volume(volume)
            .await
            .map_err(|source| DropVolumeError::Keyring { volume, source })?;
        let checkpointed = self.checkpoint(core, true).await;
        let recycled = self.recycle_held(core, self.pages_head(), self.file_bytes).await;
        let done = DroppedVolume {
            volume,
            newly_tombstoned: keys.tombstoned,
            segments: dropped.segments,
            records: dropped.records,
            images: dropped.images,
            requests_refused: dropped.requests_refused,
            keys_destroyed: keys.destroyed,
            metadata_copies_stored: keys.copies_stored,
            checkpointed,
            journal_files_removed: recycled.journal,
            page_files_removed: recycled.pages,
        };
        tracing::info!(?done, "volume dropped for good");
        Ok(done)
    }

    /// The page store file being written, as far as the store knows without the writer: the
    /// newest file held (the writer creates files in order and writes only its newest), or the
    /// position of the last flush if that is further.
    fn pages_head(&self) -> u64 {
        let newest = self.pages.files().last().copied().unwrap_or(0);
        newest.max(self.covered.borrow().pages.file)
    }
}

#[cfg(test)]
#[path = "drop_volume_tests.rs"]
mod tests;
