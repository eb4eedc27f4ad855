//! Journal byte layout: groups of entries, each group one write + flush (group commit).
//!
//! ```text
//! group (starts 4 KiB-aligned; length a multiple of 4 KiB, zero padded)
//!   0   [4] magic "BRJG"        4   u32 header_crc (CRC32C of bytes 8..64)
//!   8   u8 version (1)          9   u8 reserved      10  u16 entry_count
//!   12  u32 body_len            16  u64 group_seq (node-wide, +1 per group)
//!   24  u32 body_crc (CRC32C of the entries: sealed bytes, checkable without keys)
//!   28  u32 reserved            32  u64 file (journal file number: catches misdirected writes)
//!   40  [24] reserved
//!   64  entries, packed
//! entry
//!   0   u32 entry_crc (CRC32C of the entry's place, then bytes 4..entry_len)
//!   4   u8 version (2)          5   u8 kind (1 records, sealed; 2 meta, plain; 3 image, sealed)
//!   6   u16 reserved            8   u32 entry_len (header + body)
//!   12  u32 record_count        16  u128 volume_id      32  u32 pg_id
//!   36  u32 key_version         40  u64 epoch (image: page id)
//!   48  u64 first_lsn           56  u64 last_lsn (image: both the version's LSN)
//!   64  [12] nonce              76  u32 page_bytes (records: the volume's page size; meta: 0)
//!   80  body: records → ciphertext of the encoded records, then the 16-byte GCM tag;
//!             meta    → epochs (24), u32 flags (bit 0: has truncation), u32 0, range (16);
//!             image   → ciphertext of the page (page_bytes), then the 16-byte GCM tag
//! ```
//! The page store (`pages/`) uses the same group layout with image entries only.
//! The GCM associated data is entry bytes 4..80 (version, kind, lengths, volume, PG, key
//! version, epoch, LSN range and nonce) followed by the entry's place, so sealed bytes moved to
//! another volume, PG, LSN range or epoch fail to open. Encoded records keep their own CRC32C
//! inside the ciphertext (end to end).
//!
//! An entry's place (`EntryAt`: file number u64, byte offset u64 in that file, 16 bytes
//! little-endian) is covered by its CRC and its tag but not stored: an entry is valid only where
//! it was written. A write the disk misdirected to another offset or file, even one that lands
//! exactly where another entry was, fails verification there instead of passing for the entry
//! the index expects (version 1 entries did not cover their place).

use protocol::codec::Reader;
use protocol::quorum::Membership;
use protocol::wire::Wire;
use protocol::{Epoch, Epochs, KeyVersion, Lsn, LsnRange, PgId, PgRef, VolumeId};

use crate::seal::{NONCE_BYTES, TAG_BYTES};

/// Groups start at, and are padded to, multiples of this (the O_DIRECT block size).
pub const GROUP_ALIGN: usize = 4096;
pub const GROUP_HEADER_BYTES: usize = 64;
pub const ENTRY_HEADER_BYTES: usize = 80;
/// Bytes of a meta entry's body.
pub const META_BODY_BYTES: usize = 48;
/// Bytes of a membership entry's body: the epochs, then the membership (`docs/format.md`).
pub const MEMBERSHIP_BODY_BYTES: usize = Epochs::WIRE_BYTES + <Option<Membership> as Wire>::BYTES;
pub const JOURNAL_VERSION: u8 = 2;
const GROUP_MAGIC: [u8; 4] = *b"BRJG";

const _: () = assert!(GROUP_HEADER_BYTES <= GROUP_ALIGN && ENTRY_HEADER_BYTES % 8 == 0);

/// Why journal bytes were rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalFault {
    #[error("no group header here (bad magic)")]
    NoGroup,
    #[error("group header checksum mismatch")]
    GroupHeaderChecksum,
    #[error("group body checksum mismatch")]
    GroupBodyChecksum,
    #[error("entry checksum mismatch")]
    EntryChecksum,
    #[error("unsupported journal version {0}")]
    Version(u8),
    #[error("inconsistent length in {0}")]
    Length(&'static str),
    #[error("unknown entry kind {0}")]
    Kind(u8),
    #[error("entry failed to open: wrong key, context or bytes")]
    Seal,
    #[error("no data key for the entry's volume")]
    NoKey,
    #[error("sealed records do not decode: {0}")]
    Records(protocol::FormatError),
}

/// A verified group header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupHeader {
    pub group_seq: u64,
    pub file: u64,
    pub entry_count: u16,
    pub body_len: u32,
    pub body_crc: u32,
}

impl GroupHeader {
    /// Bytes the group occupies on disk, padding included.
    pub fn group_len(&self) -> usize {
        (GROUP_HEADER_BYTES + self.body_len as usize).next_multiple_of(GROUP_ALIGN)
    }

    pub fn encode(&self) -> [u8; GROUP_HEADER_BYTES] {
        let mut out = [0u8; GROUP_HEADER_BYTES];
        out[..4].copy_from_slice(&GROUP_MAGIC);
        out[8] = JOURNAL_VERSION;
        out[10..12].copy_from_slice(&self.entry_count.to_le_bytes());
        out[12..16].copy_from_slice(&self.body_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.group_seq.to_le_bytes());
        out[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        out[32..40].copy_from_slice(&self.file.to_le_bytes());
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; GROUP_HEADER_BYTES]) -> Result<GroupHeader, JournalFault> {
        if bytes[..4] != GROUP_MAGIC {
            return Err(JournalFault::NoGroup);
        }
        if u32_at(bytes, 4) != crc32c::crc32c(&bytes[8..]) {
            return Err(JournalFault::GroupHeaderChecksum);
        }
        if bytes[8] != JOURNAL_VERSION {
            return Err(JournalFault::Version(bytes[8]));
        }
        Ok(GroupHeader {
            entry_count: u16::from_le_bytes([bytes[10], bytes[11]]),
            body_len: u32_at(bytes, 12),
            group_seq: u64_at(bytes, 16),
            body_crc: u32_at(bytes, 24),
            file: u64_at(bytes, 32),
        })
    }
}

/// Where an entry was written: part of what its CRC and tag cover (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryAt {
    pub file: u64,
    pub offset: u64,
}

impl EntryAt {
    pub fn bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.file.to_le_bytes());
        out[8..].copy_from_slice(&self.offset.to_le_bytes());
        out
    }
}

/// Entry kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    Records = 1,
    Meta = 2,
    Image = 3,
    Membership = 4,
}

/// A verified entry header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub kind: EntryKind,
    pub entry_len: u32,
    pub record_count: u32,
    pub pg: PgRef,
    pub key_version: KeyVersion,
    pub epoch: Epoch,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub nonce: [u8; NONCE_BYTES],
    pub page_bytes: u32,
}

impl EntryHeader {
    /// Header bytes with the CRC field zero; bytes 4.. are the sealing's associated data.
    pub fn encode(&self) -> [u8; ENTRY_HEADER_BYTES] {
        let mut out = [0u8; ENTRY_HEADER_BYTES];
        out[4] = JOURNAL_VERSION;
        out[5] = self.kind as u8;
        out[8..12].copy_from_slice(&self.entry_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.record_count.to_le_bytes());
        out[16..32].copy_from_slice(&self.pg.volume_id.0.to_le_bytes());
        out[32..36].copy_from_slice(&self.pg.pg_id.0.to_le_bytes());
        out[36..40].copy_from_slice(&self.key_version.0.to_le_bytes());
        out[40..48].copy_from_slice(&self.epoch.0.to_le_bytes());
        out[48..56].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        out[56..64].copy_from_slice(&self.last_lsn.0.to_le_bytes());
        out[64..76].copy_from_slice(&self.nonce);
        out[76..80].copy_from_slice(&self.page_bytes.to_le_bytes());
        out
    }

    /// The sealing's associated data: header bytes 4.. and the entry's place.
    pub fn associated_data(&self, at: EntryAt) -> [u8; ENTRY_HEADER_BYTES - 4 + 16] {
        let mut out = [0u8; ENTRY_HEADER_BYTES - 4 + 16];
        out[..ENTRY_HEADER_BYTES - 4].copy_from_slice(&self.encode()[4..]);
        out[ENTRY_HEADER_BYTES - 4..].copy_from_slice(&at.bytes());
        out
    }

    /// Decodes the header of the entry at the start of `bytes` (which holds at least the
    /// rest of the group body), written at `at`, and verifies the entry CRC over its place and
    /// full length.
    pub fn decode(bytes: &[u8], at: EntryAt) -> Result<EntryHeader, JournalFault> {
        let header: &[u8; ENTRY_HEADER_BYTES] =
            bytes.first_chunk().ok_or(JournalFault::Length("entry header"))?;
        let entry_len = u32_at(header, 8) as usize;
        if entry_len < ENTRY_HEADER_BYTES || entry_len > bytes.len() {
            return Err(JournalFault::Length("entry"));
        }
        if u32_at(header, 0) != entry_crc(at, &bytes[4..entry_len]) {
            return Err(JournalFault::EntryChecksum);
        }
        if header[4] != JOURNAL_VERSION {
            return Err(JournalFault::Version(header[4]));
        }
        let kind = match header[5] {
            1 => EntryKind::Records,
            2 => EntryKind::Meta,
            3 => EntryKind::Image,
            4 => EntryKind::Membership,
            other => return Err(JournalFault::Kind(other)),
        };
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&header[64..76]);
        Ok(EntryHeader {
            kind,
            entry_len: entry_len as u32,
            record_count: u32_at(header, 12),
            pg: PgRef {
                volume_id: VolumeId(u128::from_le_bytes(header[16..32].try_into().expect("16 bytes"))),
                pg_id: PgId(u32_at(header, 32)),
            },
            key_version: KeyVersion(u32_at(header, 36)),
            epoch: Epoch(u64_at(header, 40)),
            first_lsn: Lsn(u64_at(header, 48)),
            last_lsn: Lsn(u64_at(header, 56)),
            nonce,
            page_bytes: u32_at(header, 76),
        })
    }
}

/// Encodes a meta entry's body.
pub fn encode_meta(epochs: &Epochs, truncation: Option<LsnRange>) -> [u8; META_BODY_BYTES] {
    let mut out = [0u8; META_BODY_BYTES];
    out[..8].copy_from_slice(&epochs.volume.0.to_le_bytes());
    out[8..16].copy_from_slice(&epochs.membership.0.to_le_bytes());
    out[16..24].copy_from_slice(&epochs.geometry.0.to_le_bytes());
    if let Some(range) = truncation {
        out[24] = 1;
        out[32..40].copy_from_slice(&range.after().0.to_le_bytes());
        out[40..48].copy_from_slice(&range.through().0.to_le_bytes());
    }
    out
}

/// Decodes a meta entry's body.
pub fn decode_meta(body: &[u8]) -> Result<(Epochs, Option<LsnRange>), JournalFault> {
    let body: &[u8; META_BODY_BYTES] = body.try_into().map_err(|_| JournalFault::Length("meta body"))?;
    let epochs = Epochs {
        volume: Epoch(u64_at(body, 0)),
        membership: Epoch(u64_at(body, 8)),
        geometry: Epoch(u64_at(body, 16)),
    };
    let truncation = match u32_at(body, 24) {
        0 => None,
        1 => Some(
            LsnRange::new(Lsn(u64_at(body, 32)), Lsn(u64_at(body, 40)))
                .map_err(|_| JournalFault::Length("meta range"))?,
        ),
        _ => return Err(JournalFault::Length("meta flags")),
    };
    Ok((epochs, truncation))
}

/// Encodes a membership entry's body.
pub fn encode_membership(epochs: &Epochs, membership: &Membership) -> [u8; MEMBERSHIP_BODY_BYTES] {
    let mut out = Vec::with_capacity(MEMBERSHIP_BODY_BYTES);
    epochs.put(&mut out);
    Some(*membership).put(&mut out);
    out.try_into().expect("fixed size")
}

/// Decodes a membership entry's body.
pub fn decode_membership(body: &[u8]) -> Result<(Epochs, Membership), JournalFault> {
    if body.len() != MEMBERSHIP_BODY_BYTES {
        return Err(JournalFault::Length("membership body"));
    }
    let r = &mut Reader::new(bytes::Bytes::copy_from_slice(body));
    let epochs = Epochs::read(r).map_err(|_| JournalFault::Length("membership epochs"))?;
    match Option::<Membership>::read(r) {
        Ok(Some(membership)) => Ok((epochs, membership)),
        _ => Err(JournalFault::Length("membership sets")),
    }
}

/// Bytes a records entry of `plaintext` bytes occupies.
pub fn records_entry_len(plaintext: usize) -> usize {
    ENTRY_HEADER_BYTES + plaintext + TAG_BYTES
}

/// The CRC of an entry written at `at` whose bytes after the CRC field are `rest`.
pub fn entry_crc(at: EntryAt, rest: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&at.bytes()), rest)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
