//! Building a group image from the core's journal entries (sealing records in place), and
//! taking one apart again at restart or for a read. Pure: no file access.

use bytes::{Bytes, BytesMut};
use protocol::codec::Reader;
use protocol::{Lsn, Record, VolumeId};

use super::buf::AlignedBuf;
use super::format::*;
use crate::core::{EntryBody, JournalEntry};
use crate::seal::{DataKey, NonceCounter, TAG_BYTES};

/// A group ready to write, and where each entry sits inside it.
#[derive(Debug)]
pub struct GroupImage {
    pub header: GroupHeader,
    pub bytes: AlignedBuf,
    /// `(entry seq, offset in the group, entry length)`.
    pub placed: Vec<(u64, usize, usize)>,
}

/// Why a group could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("no data key for volume {0}")]
    NoKey(VolumeId),
    #[error("nonce reservation exhausted")]
    NoNonce,
}

/// Bytes `entry` takes in a group.
pub fn entry_len(entry: &JournalEntry) -> usize {
    match &entry.body {
        EntryBody::Records { records, .. } => {
            records_entry_len(records.iter().map(Record::encoded_len).sum())
        }
        EntryBody::Meta { .. } => ENTRY_HEADER_BYTES + META_BODY_BYTES,
        EntryBody::Membership { .. } => ENTRY_HEADER_BYTES + MEMBERSHIP_BODY_BYTES,
        EntryBody::Image { page, .. } => ENTRY_HEADER_BYTES + page.len() + TAG_BYTES,
    }
}

/// Bytes a group of `entries` occupies on disk, padding included.
pub fn group_len(entries: &[JournalEntry]) -> usize {
    (GROUP_HEADER_BYTES + entries.iter().map(entry_len).sum::<usize>()).next_multiple_of(GROUP_ALIGN)
}

/// Nonces a group of `entries` consumes (one per sealed entry).
pub fn nonces_needed(entries: &[JournalEntry]) -> u64 {
    entries.iter().filter(|e| is_sealed(&e.body)).count() as u64
}

/// True for the entries sealed under a volume's data key (records and images).
pub fn is_sealed(body: &EntryBody) -> bool {
    matches!(body, EntryBody::Records { .. } | EntryBody::Image { .. })
}

/// Lays out and seals `entries` as group `group_seq`, to be written at `offset` of journal
/// file `file`.
pub fn build_group<'k>(
    group_seq: u64,
    file: u64,
    offset: u64,
    entries: &[JournalEntry],
    key_of: impl Fn(VolumeId) -> Option<&'k DataKey>,
    nonces: &mut NonceCounter,
) -> Result<GroupImage, BuildError> {
    let body_len: usize = entries.iter().map(entry_len).sum();
    let entry_count = u16::try_from(entries.len()).expect("groups hold at most u16::MAX entries");
    let header = GroupHeader { group_seq, file, entry_count, body_len: body_len as u32, body_crc: 0 };
    let mut bytes = AlignedBuf::zeroed(header.group_len());
    let mut placed = Vec::with_capacity(entries.len());
    let base = offset;
    let mut offset = GROUP_HEADER_BYTES;
    for entry in entries {
        let len = entry_len(entry);
        let at = EntryAt { file, offset: base + offset as u64 };
        write_entry(entry, at, &mut bytes.as_mut_slice()[offset..offset + len], &key_of, nonces)?;
        placed.push((entry.seq, offset, len));
        offset += len;
    }
    let body_crc = crc32c::crc32c(&bytes.as_slice()[GROUP_HEADER_BYTES..offset]);
    let header = GroupHeader { body_crc, ..header };
    bytes.as_mut_slice()[..GROUP_HEADER_BYTES].copy_from_slice(&header.encode());
    Ok(GroupImage { header, bytes, placed })
}

fn write_entry<'k>(
    entry: &JournalEntry,
    at: EntryAt,
    out: &mut [u8],
    key_of: &impl Fn(VolumeId) -> Option<&'k DataKey>,
    nonces: &mut NonceCounter,
) -> Result<(), BuildError> {
    let (header_bytes, body) = out.split_at_mut(ENTRY_HEADER_BYTES);
    let header = match &entry.body {
        EntryBody::Records { epoch, page_bytes, records } => {
            let key = key_of(entry.pg.volume_id).ok_or(BuildError::NoKey(entry.pg.volume_id))?;
            let nonce = nonces.take().ok_or(BuildError::NoNonce)?;
            let header = EntryHeader {
                page_bytes: *page_bytes,
                kind: EntryKind::Records,
                entry_len: out_len(header_bytes, body),
                record_count: records.len() as u32,
                pg: entry.pg,
                key_version: key.version(),
                epoch: *epoch,
                first_lsn: records.first().map_or(Lsn::ZERO, Record::lsn),
                last_lsn: records.last().map_or(Lsn::ZERO, Record::lsn),
                nonce,
            };
            let (plain, tag_out) = body.split_at_mut(body.len() - TAG_BYTES);
            let mut cursor = &mut plain[..];
            records.iter().for_each(|r| r.encode(&mut cursor));
            assert!(cursor.is_empty(), "entry length matches its records");
            let tag = key.seal(&nonce, &header.associated_data(at), plain);
            tag_out.copy_from_slice(&tag);
            header
        }
        EntryBody::Image { page_id, version_lsn, page } => {
            let key = key_of(entry.pg.volume_id).ok_or(BuildError::NoKey(entry.pg.volume_id))?;
            let nonce = nonces.take().ok_or(BuildError::NoNonce)?;
            let header = EntryHeader {
                kind: EntryKind::Image,
                entry_len: out_len(header_bytes, body),
                record_count: 0,
                pg: entry.pg,
                key_version: key.version(),
                epoch: protocol::Epoch(page_id.0),
                first_lsn: *version_lsn,
                last_lsn: *version_lsn,
                nonce,
                page_bytes: page.len() as u32,
            };
            let (plain, tag_out) = body.split_at_mut(body.len() - TAG_BYTES);
            plain.copy_from_slice(page);
            let tag = key.seal(&nonce, &header.associated_data(at), plain);
            tag_out.copy_from_slice(&tag);
            header
        }
        EntryBody::Meta { epochs, truncation } => {
            body.copy_from_slice(&encode_meta(epochs, *truncation));
            unsealed_header(EntryKind::Meta, entry, epochs.volume, out_len(header_bytes, body))
        }
        EntryBody::Membership { epochs, membership } => {
            body.copy_from_slice(&encode_membership(epochs, membership));
            unsealed_header(EntryKind::Membership, entry, epochs.volume, out_len(header_bytes, body))
        }
    };
    header_bytes.copy_from_slice(&header.encode());
    let crc = crc32c::crc32c_append(entry_crc(at, &header_bytes[4..]), body);
    header_bytes[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The header of an entry stored in the clear (epochs and memberships are not secret; the
/// entry CRC still covers them).
fn unsealed_header(
    kind: EntryKind,
    entry: &JournalEntry,
    epoch: protocol::Epoch,
    entry_len: u32,
) -> EntryHeader {
    EntryHeader {
        kind,
        entry_len,
        record_count: 0,
        pg: entry.pg,
        key_version: protocol::KeyVersion(0),
        epoch,
        first_lsn: Lsn::ZERO,
        last_lsn: Lsn::ZERO,
        nonce: [0; 12],
        page_bytes: 0,
    }
}

fn out_len(header: &[u8], body: &[u8]) -> u32 {
    (header.len() + body.len()) as u32
}

/// One entry found in a group: where it is and its header, or why it is unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEntry {
    pub offset: usize,
    pub header: Result<EntryHeader, JournalFault>,
}

/// The entries of a group whose header verified (`group` starts at the header, written at
/// `offset` of its file, and holds at least the group body), and whether the group's body CRC
/// matched. Walks entry lengths. After
/// an entry that fails its checksum the walk goes on at its stated length when that is
/// plausible: the next entry's own checksum then proves or disproves it. An implausible length
/// ends the walk.
pub fn find_entries(group: &[u8], header: &GroupHeader, offset: u64) -> (Vec<FoundEntry>, bool) {
    let body_end = GROUP_HEADER_BYTES + header.body_len as usize;
    let Some(body) = group.get(GROUP_HEADER_BYTES..body_end) else {
        return (
            vec![FoundEntry { offset: GROUP_HEADER_BYTES, header: Err(JournalFault::Length("group body")) }],
            false,
        );
    };
    let body_ok = crc32c::crc32c(body) == header.body_crc;
    let mut found = Vec::new();
    let mut at = 0;
    while at < body.len() && found.len() < usize::from(header.entry_count) {
        let place = EntryAt { file: header.file, offset: offset + (GROUP_HEADER_BYTES + at) as u64 };
        let parsed = EntryHeader::decode(&body[at..], place);
        let len = match &parsed {
            Ok(header) => Some(header.entry_len as usize),
            Err(JournalFault::EntryChecksum) => Some(stated_entry_len(&body[at..])),
            Err(_) => None,
        };
        found.push(FoundEntry { offset: GROUP_HEADER_BYTES + at, header: parsed });
        match len {
            Some(len) => at += len,
            None => break,
        }
    }
    (found, body_ok)
}

/// The length an entry's header states; `EntryHeader::decode` has checked it is plausible.
fn stated_entry_len(entry: &[u8]) -> usize {
    u32::from_le_bytes(entry[8..12].try_into().expect("header present")) as usize
}

/// Opens one entry written at `at`: verifies and decrypts a records entry (then decodes and
/// CRC-checks each record), or decodes a meta entry. `entry` is exactly the entry's bytes.
pub fn open_entry(
    entry: &[u8],
    header: &EntryHeader,
    at: EntryAt,
    key: Option<&DataKey>,
) -> Result<EntryBody, JournalFault> {
    let body = &entry[ENTRY_HEADER_BYTES..];
    match header.kind {
        EntryKind::Meta => {
            let (epochs, truncation) = decode_meta(body)?;
            Ok(EntryBody::Meta { epochs, truncation })
        }
        EntryKind::Membership => {
            let (epochs, membership) = decode_membership(body)?;
            Ok(EntryBody::Membership { epochs, membership })
        }
        EntryKind::Records => {
            let plain = open_sealed(body, header, at, key)?;
            let records = decode_records(plain, header.record_count)?;
            Ok(EntryBody::Records { epoch: header.epoch, page_bytes: header.page_bytes, records })
        }
        EntryKind::Image => {
            let page = open_sealed(body, header, at, key)?;
            if page.len() != header.page_bytes as usize {
                return Err(JournalFault::Length("image"));
            }
            Ok(EntryBody::Image { page_id: image_page(header), version_lsn: header.first_lsn, page })
        }
    }
}

/// The page id an image entry's header carries (in the epoch field).
pub fn image_page(header: &EntryHeader) -> protocol::PageId {
    protocol::PageId(header.epoch.0)
}

/// Verifies and decrypts a sealed entry body (ciphertext then tag).
fn open_sealed(
    body: &[u8],
    header: &EntryHeader,
    at: EntryAt,
    key: Option<&DataKey>,
) -> Result<Bytes, JournalFault> {
    let key = key.ok_or(JournalFault::NoKey)?;
    let tag_at = body.len().checked_sub(TAG_BYTES).ok_or(JournalFault::Length("sealed body"))?;
    let tag: [u8; TAG_BYTES] = body[tag_at..].try_into().expect("tag length");
    let mut plain = BytesMut::from(&body[..tag_at]);
    key.open(&header.nonce, &header.associated_data(at), &mut plain, &tag).map_err(|_| JournalFault::Seal)?;
    Ok(plain.freeze())
}

fn decode_records(plain: Bytes, count: u32) -> Result<Vec<Record>, JournalFault> {
    let mut reader = Reader::new(plain);
    let records = (0..count).map(|_| Record::decode(&mut reader)).collect::<Result<Vec<_>, _>>();
    let records = records.map_err(JournalFault::Records)?;
    if reader.remaining() != 0 {
        return Err(JournalFault::Length("sealed records"));
    }
    Ok(records)
}
