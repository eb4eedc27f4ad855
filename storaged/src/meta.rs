//! Node metadata, kept as two checksummed copies (`node-meta.0`, `node-meta.1`, see `dual`):
//! which node owns the data directory and in which format version, how far the nonce counter
//! is reserved, the wrapped data keys of every volume (one per key version), and the volumes
//! dropped here for good (their tombstones: `keyring::Keyring::drop_volume`).
//!
//! Loading from a copy that may not be the newest ever stored (`dual::DualFile::proven_newest`)
//! moves the nonce reservation past anything a lost newer copy can have reserved, and stores
//! that before returning (`MetaStore::open`).
//!
//! Body (little-endian): node id u32, nonce_reserved_through u64, key count u32, then per key
//! volume u128, key version u32, nonce (12), sealed key (32), tag (16). Format version 4 only
//! (`DROPPED_VOLUMES_FORMAT`) then has dropped count u32 and the dropped volume ids u128 each,
//! ascending and unique; versions 2 and 3 end after the keys and have no dropped volume.

use crate::dual::{DualFile, Loaded};
use crate::storage::Storage;

use protocol::{KeyVersion, NodeId, VolumeId};

use crate::seal::{WrappedKey, KEY_BYTES, NONCE_BYTES, NONCE_FALLBACK_SKIP, TAG_BYTES};

/// Data directory format version this build reads and writes.
/// Version 2: journal and page store entries cover their place (`journal::format`).
pub const DATA_FORMAT_VERSION: u8 = 2;
/// The same layout, written while a volume holds more than one data key version (a data key
/// rotation under way, `keyring`): a build that knows one key per volume would seal and open
/// with the wrong one, so it must refuse the directory instead. Once the older versions are
/// destroyed the metadata is written as `DATA_FORMAT_VERSION` again.
pub const MULTI_VERSION_FORMAT: u8 = 3;
/// The same layout plus the dropped volumes' tombstones after the keys, written once any volume
/// was dropped (whatever the key versions held): a build that knows no tombstone would bring a
/// dropped volume's segments back from the checkpoint and journal, so it must refuse the
/// directory. Tombstones are permanent, so a directory never goes back to an earlier version.
pub const DROPPED_VOLUMES_FORMAT: u8 = 4;
const MAGIC: [u8; 4] = *b"BRNM";
const STEM: &str = "node-meta";
/// The two copies' paths in the data directory.
pub const COPY_PATHS: [&str; 2] = ["node-meta.0", "node-meta.1"];
/// Most data keys one node keeps (one per volume it stores).
pub const KEYS_MAX: usize = 65_536;
/// Most dropped volumes one node keeps a tombstone of (16 bytes each).
pub const DROPPED_VOLUMES_MAX: usize = 65_536;

/// Why metadata could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("both metadata copies are damaged; the directory cannot be trusted")]
    BothCopiesDamaged,
    #[error("data directory format version {found}, this build reads versions {DATA_FORMAT_VERSION}, {MULTI_VERSION_FORMAT} and {DROPPED_VOLUMES_FORMAT}")]
    FormatVersion { found: u8 },
    #[error("data directory belongs to node {found}, not node {expected}")]
    OtherNode { found: NodeId, expected: NodeId },
}

/// What the node keeps about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    pub node: NodeId,
    pub nonce_reserved_through: u64,
    pub keys: Vec<WrappedKey>,
    /// Volumes dropped here for good, ascending: no key of theirs is kept, and nothing of
    /// theirs is replayed, served or taken again.
    pub dropped: Vec<VolumeId>,
}

impl NodeMeta {
    /// Fresh metadata of `node`: no key, no reservation, nothing dropped.
    pub fn new(node: NodeId) -> NodeMeta {
        NodeMeta { node, nonce_reserved_through: 0, keys: Vec::new(), dropped: Vec::new() }
    }

    /// True if `volume` was dropped here.
    pub fn is_dropped(&self, volume: VolumeId) -> bool {
        self.dropped.binary_search(&volume).is_ok()
    }

    /// `DROPPED_VOLUMES_FORMAT` once a volume was dropped, else `MULTI_VERSION_FORMAT` while
    /// some volume holds several key versions, else `DATA_FORMAT_VERSION`.
    fn format_version(&self) -> u8 {
        if !self.dropped.is_empty() {
            return DROPPED_VOLUMES_FORMAT;
        }
        let mut seen = std::collections::HashSet::with_capacity(self.keys.len());
        if self.keys.iter().all(|key| seen.insert(key.volume)) {
            DATA_FORMAT_VERSION
        } else {
            MULTI_VERSION_FORMAT
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + self.keys.len() * WrappedKey::BYTES);
        body.extend_from_slice(&self.node.0.to_le_bytes());
        body.extend_from_slice(&self.nonce_reserved_through.to_le_bytes());
        body.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        for key in &self.keys {
            body.extend_from_slice(&key.volume.0.to_le_bytes());
            body.extend_from_slice(&key.version.0.to_le_bytes());
            body.extend_from_slice(&key.nonce);
            body.extend_from_slice(&key.sealed);
            body.extend_from_slice(&key.tag);
        }
        if !self.dropped.is_empty() {
            body.extend_from_slice(&(self.dropped.len() as u32).to_le_bytes());
            self.dropped.iter().for_each(|volume| body.extend_from_slice(&volume.0.to_le_bytes()));
        }
        body
    }

    /// The body of a copy of format `version` (one `readable` says this build reads).
    fn decode(body: &[u8], version: u8) -> Option<NodeMeta> {
        let mut r = Cursor(body);
        let node = NodeId(u32::from_le_bytes(r.take()?));
        let nonce_reserved_through = u64::from_le_bytes(r.take()?);
        let count = u32::from_le_bytes(r.take()?) as usize;
        let keys_bytes = count.checked_mul(WrappedKey::BYTES)?;
        let exact = version != DROPPED_VOLUMES_FORMAT;
        if count > KEYS_MAX || r.0.len() < keys_bytes || (exact && r.0.len() != keys_bytes) {
            return None;
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            let volume = VolumeId(u128::from_le_bytes(r.take()?));
            let version = KeyVersion(u32::from_le_bytes(r.take()?));
            let (nonce, sealed, tag) =
                (r.take::<NONCE_BYTES>()?, r.take::<KEY_BYTES>()?, r.take::<TAG_BYTES>()?);
            keys.push(WrappedKey { volume, version, nonce, sealed, tag });
        }
        let dropped = if exact { Vec::new() } else { decode_dropped(&mut r)? };
        Some(NodeMeta { node, nonce_reserved_through, keys, dropped })
    }
}

/// The tombstones of a version 4 body, after its keys: a count, then that many volume ids,
/// strictly ascending (so unique), and nothing after them. A version 4 copy always has one.
fn decode_dropped(r: &mut Cursor<'_>) -> Option<Vec<VolumeId>> {
    let count = u32::from_le_bytes(r.take()?) as usize;
    if count == 0 || count > DROPPED_VOLUMES_MAX || r.0.len() != count * 16 {
        return None;
    }
    let dropped: Vec<VolumeId> =
        (0..count).map(|_| r.take().map(|id| VolumeId(u128::from_le_bytes(id)))).collect::<Option<_>>()?;
    dropped.windows(2).all(|pair| pair[0] < pair[1]).then_some(dropped)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// The node metadata's two copies.
#[derive(Debug)]
pub struct MetaStore<S> {
    file: DualFile<S>,
}

impl<S: Storage> MetaStore<S> {
    /// Loads the newest valid copy from `dir`: `Ok(None)` for a fresh directory (no copy at
    /// all), an error if copies exist but none is valid, or if the directory belongs to another
    /// node or format version.
    pub async fn open(storage: &S, expected: NodeId) -> Result<(MetaStore<S>, Option<NodeMeta>), MetaError> {
        let (store, meta) = MetaStore::open_as_found(storage).await?;
        match meta {
            Some(meta) if meta.node != expected => Err(MetaError::OtherNode { found: meta.node, expected }),
            meta => Ok((store, meta)),
        }
    }

    /// Like `open`, for whichever node the directory belongs to (offline tools).
    pub async fn open_as_found(storage: &S) -> Result<(MetaStore<S>, Option<NodeMeta>), MetaError> {
        let (file, loaded) = DualFile::open(storage, STEM, MAGIC).await;
        let meta = match loaded {
            Loaded::Fresh => return Ok((MetaStore { file }, None)),
            Loaded::Damaged => return Err(MetaError::BothCopiesDamaged),
            Loaded::Copy { version, .. } if !readable(version) => {
                return Err(MetaError::FormatVersion { found: version })
            }
            Loaded::Copy { body, version } => {
                NodeMeta::decode(&body, version).ok_or(MetaError::BothCopiesDamaged)?
            }
        };
        let mut store = MetaStore { file };
        if !store.file.proven_newest() {
            let meta = store.skip_nonces(meta).await?;
            return Ok((store, Some(meta)));
        }
        Ok((store, Some(meta)))
    }

    /// The copy loaded may not be the newest stored (`DualFile::proven_newest`): a lost newer
    /// copy may have reserved nonces past the loaded reservation, and the last run may have
    /// used them. Moves the reservation past anything that copy can have reserved
    /// (`NONCE_FALLBACK_SKIP`) and stores it before anyone can take a nonce, so the counter
    /// resumes beyond every nonce ever handed out (`docs/security.md`).
    async fn skip_nonces(&mut self, mut meta: NodeMeta) -> Result<NodeMeta, MetaError> {
        let loaded = meta.nonce_reserved_through;
        meta.nonce_reserved_through = loaded.checked_add(NONCE_FALLBACK_SKIP).expect("nonce space exhausted");
        tracing::warn!(
            loaded,
            resumed = meta.nonce_reserved_through,
            "node metadata: the newest copy is damaged or missing, loaded the older one; the nonce \
             counter skips past anything the lost copy can have reserved"
        );
        self.store(&meta).await?;
        Ok(meta)
    }

    /// Every valid copy on disk, newest first: the one `open` loaded and, unless it is damaged
    /// or missing, the older one (which a store overwrites next).
    pub async fn copies(&self) -> Vec<NodeMeta> {
        let copies = self.file.valid_copies().await.into_iter();
        copies
            .filter(|(_, version, _)| readable(*version))
            .filter_map(|c| NodeMeta::decode(&c.2, c.1))
            .collect()
    }

    /// Durably stores `meta` over the older copy.
    pub async fn store(&mut self, meta: &NodeMeta) -> Result<(), MetaError> {
        let path = self.file.path(0);
        let stored = self.file.store(meta.format_version(), &meta.encode()).await;
        stored.map_err(|source| MetaError::Io { path, source })
    }

    /// Durably stores `meta` over both copies, one after the other, so that no copy holds an
    /// earlier body any more (a KEK rotation must leave no key wrapped under the old KEK). A
    /// crash in between leaves the new body in the newest copy and the earlier one in the
    /// other: either is whole and loads.
    pub async fn store_both(&mut self, meta: &NodeMeta) -> Result<(), MetaError> {
        self.store(meta).await?;
        self.store(meta).await
    }
}

/// The node metadata in the bytes of one copy (`node-meta.0` or `.1`), if they are a valid
/// copy of this format version.
pub fn decode_copy(bytes: &[u8]) -> Option<NodeMeta> {
    let (_, version, body) = crate::dual::parse_copy(bytes, MAGIC)?;
    readable(version).then(|| NodeMeta::decode(&body, version)).flatten()
}

/// True for the metadata format versions this build reads.
fn readable(version: u8) -> bool {
    [DATA_FORMAT_VERSION, MULTI_VERSION_FORMAT, DROPPED_VOLUMES_FORMAT].contains(&version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Kek;
    use crate::storage::sim::{complete, SimDisk};

    fn meta(node: u32, reserved: u64) -> NodeMeta {
        let (_, key) = Kek::from_bytes([1; 32]).new_data_key(VolumeId(5), KeyVersion(1)).unwrap();
        NodeMeta {
            node: NodeId(node),
            nonce_reserved_through: reserved,
            keys: vec![key],
            dropped: Vec::new(),
        }
    }

    #[test]
    fn metadata_round_trips_through_its_copies() {
        let disk = SimDisk::new();
        let (mut store, none) = complete(MetaStore::open(&disk, NodeId(1))).unwrap();
        assert!(none.is_none());
        complete(store.store(&meta(1, 10))).unwrap();
        let newest = meta(1, 20);
        complete(store.store(&newest)).unwrap();
        let (_, got) = complete(MetaStore::open(&disk, NodeId(1))).unwrap();
        assert_eq!(got.unwrap(), newest);
    }

    #[test]
    fn tombstones_make_the_copy_format_4_and_round_trip_while_earlier_copies_stay_readable() {
        let disk = SimDisk::new();
        let (mut store, _) = complete(MetaStore::open(&disk, NodeId(1))).unwrap();
        let plain = meta(1, 10);
        complete(store.store(&plain)).unwrap();
        let bytes = complete(disk.read_all("node-meta.1")).unwrap();
        assert_eq!(bytes[4], DATA_FORMAT_VERSION, "no tombstone: the format earlier builds read");
        assert_eq!(decode_copy(&bytes), Some(plain.clone()));
        let dropped = NodeMeta { dropped: vec![VolumeId(3), VolumeId(70)], ..plain };
        complete(store.store(&dropped)).unwrap();
        let bytes = complete(disk.read_all("node-meta.0")).unwrap();
        assert_eq!(bytes[4], DROPPED_VOLUMES_FORMAT);
        assert_eq!(decode_copy(&bytes), Some(dropped.clone()));
        let (_, got) = complete(MetaStore::open(&disk, NodeId(1))).unwrap();
        assert_eq!(got, Some(dropped.clone()));
        let body = dropped.encode();
        let decode = |body: &[u8]| NodeMeta::decode(body, DROPPED_VOLUMES_FORMAT);
        assert!(NodeMeta::decode(&body, MULTI_VERSION_FORMAT).is_none(), "bytes after the keys");
        let keys_end = body.len() - 4 - 2 * 16;
        let mut swapped = body[..keys_end + 4].to_vec();
        swapped.extend_from_slice(&70u128.to_le_bytes());
        swapped.extend_from_slice(&3u128.to_le_bytes());
        assert!(decode(&swapped).is_none(), "tombstones out of order");
        let mut none = body[..keys_end].to_vec();
        none.extend_from_slice(&0u32.to_le_bytes());
        assert!(decode(&none).is_none(), "a version 4 copy without a tombstone");
        assert!(decode(&body[..body.len() - 1]).is_none(), "a cut tombstone");
    }

    #[test]
    fn a_directory_of_another_node_or_with_both_copies_damaged_is_refused() {
        let disk = SimDisk::new();
        complete(complete(MetaStore::open(&disk, NodeId(1))).unwrap().0.store(&meta(1, 1))).unwrap();
        let err = complete(MetaStore::open(&disk, NodeId(2))).unwrap_err();
        assert!(err.to_string().contains("belongs to node node:1"), "{err}");
        complete(disk.put("node-meta.1", b"junk".to_vec())).unwrap();
        complete(disk.put("node-meta.0", b"junk".to_vec())).unwrap();
        assert!(matches!(complete(MetaStore::open(&disk, NodeId(1))), Err(MetaError::BothCopiesDamaged)));
    }
}
