//! Group commit's write half: everything the core queued while the previous group was on its
//! way is sealed into one group image and written (`write_group`); `Journal::flush` then makes
//! it durable. The journal and the page store both commit this way.

use super::group::{build_group, group_len, is_sealed, nonces_needed, BuildError};
use super::writer::{Journal, WriteError};
use crate::core::{JournalEntry, NodeFailure};
use crate::keyring::{Keyring, KeyringError};
use crate::storage::Storage;

/// Most record bytes in one group: bounds the sealing buffer and one write.
pub const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most entries in one group (the header's count is a u16).
pub const GROUP_ENTRIES_MAX: usize = u16::MAX as usize;

/// Seals `entries` into the next group of `journal` and writes it (not yet durable).
pub async fn write_group<S: Storage>(
    journal: &mut Journal<S>,
    keyring: &Keyring<S>,
    entries: &[JournalEntry],
) -> Result<(), WriteError> {
    let at = journal.prepare(group_len(entries)).await?;
    let volumes = entries.iter().filter(|e| is_sealed(&e.body)).map(|e| e.pg.volume_id);
    let image = keyring
        .seal(volumes, nonces_needed(entries), |keys, nonces| {
            build_group(at.next_group_seq, at.file, at.offset, entries, |v| keys.sealing(v), nonces)
        })
        .await
        .map_err(keyring_write_error)?
        .map_err(|e| match e {
            BuildError::NoKey(v) => WriteError::Failed(NodeFailure::NoKey(v)),
            BuildError::NoNonce => WriteError::Failed(NodeFailure::NoNonce),
        })?;
    journal.write(image).await
}

/// A keyring failure as a write error: a full disk pauses writes, anything else fails the node.
fn keyring_write_error(error: KeyringError) -> WriteError {
    if error.is_no_space() {
        WriteError::NoSpace
    } else {
        WriteError::Failed(NodeFailure::Metadata(error.to_string()))
    }
}
