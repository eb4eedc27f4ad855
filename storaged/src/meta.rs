//! Node metadata kept as two checksummed copies (`node-meta.0`, `node-meta.1`).
//!
//! A store overwrites the older copy and fsyncs it, so at every instant at least one copy is
//! complete: a crash mid-write leaves the other, and loading picks the valid copy with the
//! highest generation. The metadata says which node owns the data directory and in which format
//! version, how far the nonce counter is reserved, and the wrapped data key of every volume.
//!
//! Copy layout (little-endian): magic `BRNM` (4), format version u8, 3 reserved zero bytes,
//! generation u64, body length u32, CRC32C of bytes 0..20 and the body u32, body. Body:
//! node id u32, nonce_reserved_through u64, key count u32, then `WrappedKey::BYTES` per key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use protocol::{KeyVersion, NodeId, VolumeId};

use crate::seal::{WrappedKey, KEY_BYTES, NONCE_BYTES, TAG_BYTES};

/// Data directory format version this build reads and writes.
pub const DATA_FORMAT_VERSION: u8 = 1;
const MAGIC: [u8; 4] = *b"BRNM";
const HEADER_BYTES: usize = 24;
/// Most data keys one node keeps (one per volume it stores).
pub const KEYS_MAX: usize = 65_536;

/// Why metadata could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{dir}: both metadata copies are damaged; the directory cannot be trusted")]
    BothCopiesDamaged { dir: PathBuf },
    #[error("{dir}: data directory format version {found}, this build reads version {DATA_FORMAT_VERSION}")]
    FormatVersion { dir: PathBuf, found: u8 },
    #[error("{dir}: data directory belongs to node {found}, not node {expected}")]
    OtherNode { dir: PathBuf, found: NodeId, expected: NodeId },
}

/// What the node keeps about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    pub node: NodeId,
    pub nonce_reserved_through: u64,
    pub keys: Vec<WrappedKey>,
}

impl NodeMeta {
    /// The wrapped key of `volume`, if the node has one.
    pub fn key_of(&self, volume: VolumeId) -> Option<&WrappedKey> {
        self.keys.iter().rev().find(|k| k.volume == volume)
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
        body
    }

    fn decode(body: &[u8]) -> Option<NodeMeta> {
        let mut r = Cursor(body);
        let node = NodeId(u32::from_le_bytes(r.take()?));
        let nonce_reserved_through = u64::from_le_bytes(r.take()?);
        let count = u32::from_le_bytes(r.take()?) as usize;
        if count > KEYS_MAX || r.0.len() != count * WrappedKey::BYTES {
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
        Some(NodeMeta { node, nonce_reserved_through, keys })
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// The two copies in one directory.
#[derive(Debug)]
pub struct MetaStore {
    dir: PathBuf,
    generation: u64,
}

impl MetaStore {
    /// Loads the newest valid copy from `dir`: `Ok(None)` for a fresh directory (no copy at
    /// all), an error if copies exist but none is valid, or if the directory belongs to another
    /// node or format version.
    pub fn open(dir: &Path, expected: NodeId) -> Result<(MetaStore, Option<NodeMeta>), MetaError> {
        let copies = [0, 1].map(|i| read_copy(&copy_path(dir, i)));
        let any_file = copies.iter().any(|c| !matches!(c, Ok(None)));
        let mut valid: Vec<(u64, u8, NodeMeta)> =
            copies.into_iter().filter_map(|c| c.ok().flatten()).collect();
        valid.sort_by_key(|(generation, _, _)| *generation);
        let store = |generation| MetaStore { dir: dir.to_path_buf(), generation };
        let Some((generation, version, meta)) = valid.pop() else {
            return if any_file {
                Err(MetaError::BothCopiesDamaged { dir: dir.to_path_buf() })
            } else {
                Ok((store(0), None))
            };
        };
        if version != DATA_FORMAT_VERSION {
            return Err(MetaError::FormatVersion { dir: dir.to_path_buf(), found: version });
        }
        if meta.node != expected {
            return Err(MetaError::OtherNode { dir: dir.to_path_buf(), found: meta.node, expected });
        }
        Ok((store(generation), Some(meta)))
    }

    /// Durably stores `meta` over the older copy.
    pub fn store(&mut self, meta: &NodeMeta) -> Result<(), MetaError> {
        let generation = self.generation + 1;
        let body = meta.encode();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&[DATA_FORMAT_VERSION, 0, 0, 0]);
        bytes.extend_from_slice(&generation.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes), &body);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&body);
        let path = copy_path(&self.dir, (generation % 2) as u8);
        write_synced(&path, &bytes).map_err(|source| MetaError::Io { path, source })?;
        sync_dir(&self.dir).map_err(|source| MetaError::Io { path: self.dir.clone(), source })?;
        self.generation = generation;
        Ok(())
    }
}

fn copy_path(dir: &Path, index: u8) -> PathBuf {
    dir.join(format!("node-meta.{index}"))
}

/// One copy: `Ok(None)` if missing, `Err(())` if damaged, else (generation, version, meta).
fn read_copy(path: &Path) -> Result<Option<(u64, u8, NodeMeta)>, ()> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    let (header, body) = bytes.split_first_chunk::<HEADER_BYTES>().ok_or(())?;
    let field = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let generation = u64::from_le_bytes(header[8..16].try_into().map_err(drop)?);
    let crc_ok = crc32c::crc32c_append(crc32c::crc32c(&header[..20]), body) == field(20);
    if header[..4] != MAGIC || field(16) as usize != body.len() || !crc_ok {
        return Err(());
    }
    let meta = NodeMeta::decode(body).ok_or(())?;
    Ok(Some((generation, header[4], meta)))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a directory entry (a new file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Kek;

    fn meta(node: u32, reserved: u64) -> NodeMeta {
        let (_, key) = Kek::from_bytes([1; 32]).new_data_key(VolumeId(5), KeyVersion(1)).unwrap();
        NodeMeta { node: NodeId(node), nonce_reserved_through: reserved, keys: vec![key] }
    }

    #[test]
    fn the_newest_valid_copy_wins_and_a_damaged_one_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, none) = MetaStore::open(dir.path(), NodeId(1)).unwrap();
        assert!(none.is_none());
        store.store(&meta(1, 10)).unwrap();
        store.store(&meta(1, 20)).unwrap();
        let (_, got) = MetaStore::open(dir.path(), NodeId(1)).unwrap();
        assert_eq!(got.unwrap().nonce_reserved_through, 20);
        // Tear the newest copy: the older one is used.
        let newest = copy_path(dir.path(), 0);
        let len = fs::metadata(&newest).unwrap().len();
        fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(len - 3).unwrap();
        let (mut store, got) = MetaStore::open(dir.path(), NodeId(1)).unwrap();
        assert_eq!(got.unwrap().nonce_reserved_through, 10);
        store.store(&meta(1, 30)).unwrap();
        assert_eq!(MetaStore::open(dir.path(), NodeId(1)).unwrap().1.unwrap().nonce_reserved_through, 30);
    }

    #[test]
    fn a_directory_of_another_node_or_with_both_copies_damaged_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        MetaStore::open(dir.path(), NodeId(1)).unwrap().0.store(&meta(1, 1)).unwrap();
        let err = MetaStore::open(dir.path(), NodeId(2)).unwrap_err();
        assert!(err.to_string().contains("belongs to node node:1"), "{err}");
        fs::write(copy_path(dir.path(), 1), b"junk").unwrap();
        fs::write(copy_path(dir.path(), 0), b"junk").unwrap();
        assert!(matches!(MetaStore::open(dir.path(), NodeId(1)), Err(MetaError::BothCopiesDamaged { .. })));
    }
}
