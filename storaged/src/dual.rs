//! A small file kept as two checksummed copies (`<stem>.0`, `<stem>.1`), for state that must
//! survive a crash at any instant: node metadata and checkpoints.
//!
//! A store overwrites the older copy and fsyncs it (and the directory), so at every instant at
//! least one complete copy exists; loading takes the valid copy with the highest generation.
//!
//! Generation `g` always goes to copy `g % 2`, so once both copies were stored (callers that
//! care store both when they create the pair, `store_both` style) a healthy disk holds two
//! consecutive generations. Loading says whether the copy it took is *provably* the newest one
//! ever stored ([`DualFile::proven_newest`]): it is not if the other copy is damaged, missing,
//! or not exactly one generation older, or if the loaded copy sits at the wrong index. The newest copy may then
//! have been lost (rot, a misdirected or torn write, an old copy restored), and callers whose
//! state must never go back (the nonce reservation, `meta`) must allow for it.
//!
//! Copy layout (little-endian): magic (4), format version u8, 3 zero bytes, generation u64,
//! body length u32, CRC32C of bytes 0..20 followed by the body u32, then the body.

use crate::storage::Storage;

const HEADER_BYTES: usize = 24;

/// What was found on disk.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    /// Neither copy exists.
    Fresh,
    /// The newest valid copy.
    Copy { version: u8, body: Vec<u8> },
    /// Copies exist but none is valid.
    Damaged,
}

/// The pair of copies; see the module docs.
#[derive(Debug)]
pub struct DualFile<S> {
    storage: S,
    stem: &'static str,
    magic: [u8; 4],
    generation: u64,
    proven_newest: bool,
}

impl<S: Storage> DualFile<S> {
    /// Reads both copies of `stem`.
    pub async fn open(storage: &S, stem: &'static str, magic: [u8; 4]) -> (DualFile<S>, Loaded) {
        let mut file = DualFile { storage: storage.clone(), stem, magic, generation: 0, proven_newest: true };
        let copies = [file.read_copy(0).await, file.read_copy(1).await];
        let any_file = copies.iter().any(|c| !matches!(c, Ok(None)));
        file.proven_newest = proven_newest(&copies);
        let newest =
            copies.into_iter().filter_map(|c| c.ok().flatten()).max_by_key(|(generation, _, _)| *generation);
        let loaded = match newest {
            Some((generation, version, body)) => {
                file.generation = generation;
                Loaded::Copy { version, body }
            }
            None if any_file => Loaded::Damaged,
            None => Loaded::Fresh,
        };
        (file, loaded)
    }

    /// Durably stores `body` over the older copy.
    pub async fn store(&mut self, version: u8, body: &[u8]) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len());
        bytes.extend_from_slice(&self.magic);
        bytes.extend_from_slice(&[version, 0, 0, 0]);
        bytes.extend_from_slice(&generation.to_le_bytes());
        bytes.extend_from_slice(&u32::try_from(body.len()).expect("small file").to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes), body);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(body);
        self.storage.put(&self.path((generation % 2) as u8), bytes).await?;
        self.generation = generation;
        self.proven_newest = true;
        Ok(())
    }

    /// False if the copy `open` loaded may not be the newest ever stored (see the module docs);
    /// true for a fresh pair and once a store succeeded (this handle then knows the newest).
    pub fn proven_newest(&self) -> bool {
        self.proven_newest
    }

    /// The path of copy `index` in the data directory, for error messages and tests.
    pub fn path(&self, index: u8) -> String {
        format!("{}.{index}", self.stem)
    }

    /// Every valid copy as (generation, version, body), newest first.
    pub async fn valid_copies(&self) -> Vec<(u64, u8, Vec<u8>)> {
        let mut copies: Vec<_> = [self.read_copy(0).await, self.read_copy(1).await]
            .into_iter()
            .filter_map(|c| c.ok().flatten())
            .collect();
        copies.sort_by_key(|(generation, _, _)| std::cmp::Reverse(*generation));
        copies
    }

    /// `Ok(None)` if missing, `Err(())` if damaged, else (generation, version, body).
    async fn read_copy(&self, index: u8) -> ReadCopy {
        let bytes = match self.storage.read_all(&self.path(index)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(_) => return Err(()),
        };
        parse_copy(&bytes, self.magic).map(Some).ok_or(())
    }
}

/// One copy as read: `Ok(None)` if missing, `Err(())` if damaged, else (generation, version,
/// body).
type ReadCopy = Result<Option<(u64, u8, Vec<u8>)>, ()>;

/// True if the newest valid copy among `copies` (indexed by copy number) is provably the newest
/// ever stored: it sits at the index its generation picks, and the other copy is valid and
/// exactly one generation older. (A lone copy of generation 1 cannot be told from a pair whose
/// generation 2 was lost, so it proves nothing.) No valid copy at all: true (nothing was
/// loaded that could be stale).
fn proven_newest(copies: &[ReadCopy; 2]) -> bool {
    let generation = |c: &ReadCopy| c.as_ref().ok().and_then(|c| c.as_ref().map(|c| c.0));
    let newest = (0..2).filter_map(|i| generation(&copies[i]).map(|g| (g, i))).max();
    let Some((loaded, index)) = newest else { return true };
    let other = &copies[1 - index];
    let in_place = loaded % 2 == index as u64;
    in_place
        && match other {
            Ok(Some((older, _, _))) => older + 1 == loaded,
            Ok(None) | Err(()) => false,
        }
}

/// The (generation, version, body) of one copy's bytes, if they are a valid copy with `magic`.
pub fn parse_copy(bytes: &[u8], magic: [u8; 4]) -> Option<(u64, u8, Vec<u8>)> {
    let (header, body) = bytes.split_first_chunk::<HEADER_BYTES>()?;
    let u32_at = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let generation = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let crc_ok = crc32c::crc32c_append(crc32c::crc32c(&header[..20]), body) == u32_at(20);
    if header[..4] != magic || u32_at(16) as usize != body.len() || !crc_ok {
        return None;
    }
    Some((generation, header[4], body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{complete, SimDisk};

    #[test]
    fn the_newest_valid_copy_wins_and_a_torn_one_is_survived() {
        let disk = SimDisk::new();
        let open = || complete(DualFile::open(&disk, "state", *b"TEST"));
        let (mut file, loaded) = open();
        assert_eq!(loaded, Loaded::Fresh);
        complete(file.store(1, b"first")).unwrap();
        complete(file.store(1, b"second")).unwrap();
        assert_eq!(open().1, Loaded::Copy { version: 1, body: b"second".to_vec() });
        let newest = file.path(0);
        let bytes = disk.contents(&newest).unwrap();
        complete(disk.put(&newest, bytes[..bytes.len() - 2].to_vec())).unwrap();
        let (mut file, loaded) = open();
        assert_eq!(loaded, Loaded::Copy { version: 1, body: b"first".to_vec() });
        complete(file.store(1, b"third")).unwrap();
        assert_eq!(open().1, Loaded::Copy { version: 1, body: b"third".to_vec() });
        complete(disk.put(&file.path(0), b"junk".to_vec())).unwrap();
        complete(disk.put(&file.path(1), b"junk".to_vec())).unwrap();
        assert_eq!(open().1, Loaded::Damaged);
    }

    #[test]
    fn a_loaded_copy_is_proven_newest_only_beside_its_predecessor_or_as_the_first() {
        let disk = SimDisk::new();
        let open = || complete(DualFile::open(&disk, "state", *b"TEST")).0.proven_newest();
        let (mut file, _) = complete(DualFile::open(&disk, "state", *b"TEST"));
        assert!(open(), "fresh");
        complete(file.store(1, b"g1")).unwrap();
        assert!(!open(), "only generation 1: generation 2 may have been lost");
        complete(file.store(1, b"g2")).unwrap();
        let (g1, g2) = (disk.contents(&file.path(1)).unwrap(), disk.contents(&file.path(0)).unwrap());
        assert!(open(), "generations 2 and 1");
        complete(disk.remove(&file.path(0))).unwrap();
        assert!(!open(), "generation 2 missing");
        complete(disk.put(&file.path(0), b"junk".to_vec())).unwrap();
        assert!(!open(), "generation 2 damaged");
        complete(disk.put(&file.path(0), g1)).unwrap();
        complete(disk.remove(&file.path(1))).unwrap();
        assert!(!open(), "generation 1 in copy 0: misplaced");
        complete(disk.put(&file.path(0), g2.clone())).unwrap();
        let (mut file, _) = complete(DualFile::open(&disk, "state", *b"TEST"));
        for body in [b"g3", b"g4", b"g5", b"g6"] {
            complete(file.store(1, body)).unwrap();
        }
        assert!(open(), "generations 6 and 5");
        complete(disk.put(&file.path(0), g2)).unwrap();
        assert!(!open(), "generations 5 and 2: copy 0 restored from an older state");
    }
}
