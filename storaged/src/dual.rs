//! A small file kept as two checksummed copies (`<stem>.0`, `<stem>.1`), for state that must
//! survive a crash at any instant: node metadata and checkpoints.
//!
//! A store overwrites the older copy and fsyncs it (and the directory), so at every instant at
//! least one complete copy exists; loading takes the valid copy with the highest generation.
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
}

impl<S: Storage> DualFile<S> {
    /// Reads both copies of `stem`.
    pub async fn open(storage: &S, stem: &'static str, magic: [u8; 4]) -> (DualFile<S>, Loaded) {
        let mut file = DualFile { storage: storage.clone(), stem, magic, generation: 0 };
        let copies = [file.read_copy(0).await, file.read_copy(1).await];
        let any_file = copies.iter().any(|c| !matches!(c, Ok(None)));
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
        Ok(())
    }

    /// The path of copy `index` in the data directory, for error messages and tests.
    pub fn path(&self, index: u8) -> String {
        format!("{}.{index}", self.stem)
    }

    /// `Ok(None)` if missing, `Err(())` if damaged, else (generation, version, body).
    async fn read_copy(&self, index: u8) -> Result<Option<(u64, u8, Vec<u8>)>, ()> {
        let bytes = match self.storage.read_all(&self.path(index)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(_) => return Err(()),
        };
        let (header, body) = bytes.split_first_chunk::<HEADER_BYTES>().ok_or(())?;
        let u32_at =
            |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let generation = u64::from_le_bytes(header[8..16].try_into().map_err(drop)?);
        let crc_ok = crc32c::crc32c_append(crc32c::crc32c(&header[..20]), body) == u32_at(20);
        if header[..4] != self.magic || u32_at(16) as usize != body.len() || !crc_ok {
            return Err(());
        }
        Ok(Some((generation, header[4], body.to_vec())))
    }
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
}
