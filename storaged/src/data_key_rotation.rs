//! Rotating a volume's data key on one node (`docs/security.md`): new entries of the volume are
//! sealed under a new data key version, the older versions stay readable until no file can hold
//! an entry sealed under them, and are then destroyed.
//!
//! The steps, and who takes them:
//! 1. a new version: a random data key wrapped under the KEK, stored durably in the node
//!    metadata before any seal can pick it (`Keyring::rotate_volume`; at start or offline,
//!    [`rotate_stored`]). Seals take the newest version, opens the version an entry names;
//! 2. re-sealing: the store notes which journal and page store files may hold the older
//!    versions (every file there is when it first sees the rotation), asks both logs to roll to
//!    a new file, and compacts each of those page store files, copying its live images into
//!    groups sealed under the newest versions; the journal's files go as their records are
//!    folded into images, as always (`store::NodeStore::recycle`);
//! 3. destruction: once every one of those files is recycled, the older versions are removed
//!    from both metadata copies (`Keyring::destroy_older`).
//!
//! The operator asks for step 1 with a request file, [`REQUEST_FILE`] in the data directory
//! (one volume id per line, decimal): a running node takes it on SIGHUP ([`on_reload`]), a
//! starting one before it opens its keyring ([`at_start`]); either removes the file once every
//! volume in it is rotated. `borealis keys rotate --volume ID` writes it for every node of a
//! local cluster.
//!
//! Nonces: every version of every volume draws from the node's one nonce counter, reserved
//! durably before use (`seal::NonceCounter`), so no nonce repeats across versions, restarts or
//! rotations; a rotation touches neither the counter nor its reservation.

use std::path::Path;

use protocol::{KeyVersion, NodeId, VolumeId};

use crate::config::Config;
use crate::kek_rotation::RotationError;
use crate::keyring::Keyring;
use crate::meta::MetaStore;
use crate::seal::Kek;
use crate::storage::Storage;

/// The request file in the data directory: volume ids, one per line, decimal.
pub const REQUEST_FILE: &str = "rotate-data-keys";

/// What a rotation did for one volume on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotated {
    /// New entries are sealed under `version`; `older` versions wait to be destroyed.
    Version { volume: VolumeId, version: KeyVersion, older: usize },
    /// This node holds no key of the volume: it never sealed anything of it.
    NoKey { volume: VolumeId },
}

impl std::fmt::Display for Rotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rotated::Version { volume, version, older } => {
                write!(f, "volume={} version={} older={older}", volume.0, version.0)
            }
            Rotated::NoKey { volume } => write!(f, "volume={} no key here", volume.0),
        }
    }
}

/// The volumes a request file lists, `None` if there is none.
pub fn read_request(data_dir: &Path) -> std::io::Result<Option<Vec<VolumeId>>> {
    let text = match std::fs::read_to_string(data_dir.join(REQUEST_FILE)) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    parse_request(&text).map(Some)
}

fn parse_request(text: &str) -> std::io::Result<Vec<VolumeId>> {
    let mut volumes = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let volume = line.parse::<u128>().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{REQUEST_FILE}: {line:?}: {e}"))
        })?;
        if !volumes.contains(&VolumeId(volume)) {
            volumes.push(VolumeId(volume));
        }
    }
    Ok(volumes)
}

/// Writes a request file for `volumes` (beside, synced, renamed into place, directory synced),
/// adding to any request already there.
pub fn write_request(data_dir: &Path, volumes: &[VolumeId]) -> std::io::Result<()> {
    use std::io::Write;
    let mut all = read_request(data_dir)?.unwrap_or_default();
    for volume in volumes {
        if !all.contains(volume) {
            all.push(*volume);
        }
    }
    let text: String = all.iter().map(|v| format!("{}\n", v.0)).collect();
    let path = data_dir.join(REQUEST_FILE);
    let temp = data_dir.join(format!("{REQUEST_FILE}.tmp"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes the request file, durably.
fn remove_request(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(REQUEST_FILE)) {
        Ok(()) => std::fs::File::open(data_dir)?.sync_all(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Adds a new data key version of each of `volumes` to the stored metadata (wrapped under
/// `kek`, which must open the keys there) with one durable store: the start and offline path,
/// before any keyring holds the metadata. `node`: the node the directory must belong to.
pub(crate) async fn rotate_stored<S: Storage>(
    storage: &S,
    node: Option<NodeId>,
    kek: &Kek,
    volumes: &[VolumeId],
) -> Result<Vec<Rotated>, RotationError> {
    let (mut store, meta) = match node {
        Some(node) => MetaStore::open(storage, node).await?,
        None => MetaStore::open_as_found(storage).await?,
    };
    let Some(mut meta) = meta else {
        return Ok(volumes.iter().map(|volume| Rotated::NoKey { volume: *volume }).collect());
    };
    let mut rotated = Vec::with_capacity(volumes.len());
    for volume in volumes {
        let versions: Vec<KeyVersion> =
            meta.keys.iter().filter(|k| k.volume == *volume).map(|k| k.version).collect();
        let Some(newest) = versions.iter().max().copied() else {
            rotated.push(Rotated::NoKey { volume: *volume });
            continue;
        };
        if let Some(key) = meta.keys.iter().find(|k| k.volume == *volume && !kek.opens(k)) {
            return Err(RotationError::Unopenable { volume: key.volume, tried: 1 });
        }
        let next = newest.0.checked_add(1).map(KeyVersion).ok_or(RotationError::DataDir {
            dir: String::new(),
            reason: format!("volume {}: no data key version after {}", volume.0, newest.0),
        })?;
        let (_, wrapped) = kek.new_data_key(*volume, next)?;
        meta.keys.push(wrapped);
        rotated.push(Rotated::Version { volume: *volume, version: next, older: versions.len() });
    }
    if rotated.iter().any(|r| matches!(r, Rotated::Version { .. })) {
        store.store(&meta).await?;
    }
    Ok(rotated)
}

/// The start path: takes a request file, if any, before the keyring opens.
pub(crate) async fn at_start<S: Storage>(
    storage: &S,
    config: &Config,
    kek: &Kek,
) -> Result<(), RotationError> {
    let data_dir = &config.data_dir;
    let fail = |reason: String| RotationError::DataDir { dir: data_dir.display().to_string(), reason };
    let Some(volumes) = read_request(data_dir).map_err(|e| fail(e.to_string()))? else { return Ok(()) };
    for rotated in rotate_stored(storage, Some(config.node_id), kek, &volumes).await? {
        tracing::info!(%rotated, "data key rotated at start");
    }
    remove_request(data_dir).map_err(|e| fail(e.to_string()))
}

/// The SIGHUP path: takes a request file, if any (`Keyring::rotate_volume`). Failures are
/// logged and leave the file for the next SIGHUP or start.
pub(crate) async fn on_reload<S: Storage>(config: &Config, keyring: &Keyring<S>) {
    let volumes = match read_request(&config.data_dir) {
        Ok(Some(volumes)) => volumes,
        Ok(None) => return,
        Err(error) => return tracing::error!(%error, "reload: data key rotation request unusable"),
    };
    for volume in volumes {
        let rotated = match keyring.rotate_volume(volume).await {
            Ok(Some(r)) => Rotated::Version { volume, version: r.version, older: r.older },
            Ok(None) => Rotated::NoKey { volume },
            Err(error) => {
                return tracing::error!(%error, volume = volume.0, "reload: data key rotation failed; request kept")
            }
        };
        tracing::info!(%rotated, "reload: data key rotated");
    }
    if let Err(error) = remove_request(&config.data_dir) {
        tracing::error!(%error, "reload: data keys rotated, but the request file stays (a second SIGHUP rotates again)");
    }
}

/// The offline path: the node stopped, adds a new version of each of `volumes` to the metadata
/// in `data_dir` under `kek`, holding the directory's lock. Runs its own io_uring runtime: call
/// it outside of one.
pub fn rotate_data_dir(
    data_dir: &Path,
    kek: &Kek,
    volumes: &[VolumeId],
) -> Result<Vec<Rotated>, RotationError> {
    let fail = |reason: String| RotationError::DataDir { dir: data_dir.display().to_string(), reason };
    let _lock = crate::server::lock_data_dir(data_dir).map_err(|e| fail(e.to_string()))?;
    let storage = crate::storage::uring::UringDir::new(data_dir, false);
    tokio_uring::start(rotate_stored(&storage, None, kek, volumes))
}

/// The data key versions of `volume` in each valid metadata copy of `data_dir` (plain file
/// reads: a running node's directory can be inspected too).
pub fn stored_versions(data_dir: &Path, volume: VolumeId) -> std::io::Result<Vec<Vec<KeyVersion>>> {
    let copies = crate::kek_rotation::stored_keys(data_dir)?;
    Ok(copies
        .iter()
        .map(|copy| {
            let mut versions: Vec<_> =
                copy.keys.iter().filter(|k| k.volume == volume).map(|k| k.version).collect();
            versions.sort_unstable();
            versions
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lists_volumes_once_and_adds_to_one_already_there() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_request(dir.path()).unwrap(), None);
        write_request(dir.path(), &[VolumeId(7), VolumeId(7)]).unwrap();
        write_request(dir.path(), &[VolumeId(9), VolumeId(7)]).unwrap();
        assert_eq!(read_request(dir.path()).unwrap(), Some(vec![VolumeId(7), VolumeId(9)]));
        assert!(parse_request("12\n# a comment\n\nx1\n").is_err());
        remove_request(dir.path()).unwrap();
        assert_eq!(read_request(dir.path()).unwrap(), None);
    }
}
