//! The redo-log record: an 80-byte fixed header followed by its payload (DESIGN §4).
//!
//! A record is the unit of durability. Its CRC32C covers the header (from byte 4) and the
//! payload, is computed once by the writer and verified by every node on receipt and on every
//! later read: the check is end to end. Decoding slices the payload out of the input `Bytes`.
//!
//! Invariants a decoded or built [`Record`] always holds:
//! - `lsn > prev_volume_lsn >= prev_pg_lsn >= prev_page_lsn` (a page lies in one PG of one
//!   volume, so its previous record can be no newer than the PG's or the volume's);
//! - a `Marker` changes no page, so it has `prev_page_lsn == 0` and is not in any page chain;
//! - `PageZero` and `PageTrim` have empty payloads; a `PagePatch` payload parses as a patch;
//! - reserved fields and unknown flag bits are zero.

use bytes::{BufMut, Bytes};

use crate::codec::{expect_at_most, expect_crc, expect_zero, u16_at, u32_at, u64_at, Reader};
use crate::error::{FormatError, FormatResult};
use crate::ids::{Epoch, Epochs, Lsn, PageId};
use crate::patch;

/// Size of the fixed record header, in bytes.
pub const RECORD_HEADER_BYTES: usize = 80;
/// Record format version written by this build.
pub const RECORD_VERSION: u8 = 1;
/// Largest page size a volume may use.
pub const PAGE_BYTES_MAX: usize = 64 * 1024;
/// Smallest page size a volume may use.
pub const PAGE_BYTES_MIN: usize = 512;
/// Largest payload of any record: a whole page plus a full patch edit table.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = PAGE_BYTES_MAX + patch::PATCH_OVERHEAD_BYTES_MAX;

const _: () = assert!(RECORD_HEADER_BYTES % 8 == 0);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);

/// What a record does to its page. Kinds 128-255 are reserved for engine-defined redo applied
/// by a pluggable applier; this version rejects them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// The payload is the full page.
    PageImage = 1,
    /// The payload is a list of (offset, bytes) edits, see [`crate::patch`].
    PagePatch = 2,
    /// The page becomes zeros.
    PageZero = 3,
    /// The page is deallocated (reads as zeros; storage may drop its versions).
    PageTrim = 4,
    /// No page change: a commit point, a checkpoint note. The payload is the engine's.
    Marker = 5,
}

impl RecordKind {
    /// Every kind, in code order.
    pub const ALL: [RecordKind; 5] =
        [Self::PageImage, Self::PagePatch, Self::PageZero, Self::PageTrim, Self::Marker];

    /// Parses a kind byte.
    pub fn from_u8(value: u8) -> FormatResult<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u8 == value).ok_or(FormatError::UnknownRecordKind(value))
    }
}

/// Record flag bits. Bits not named here must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RecordFlags(u16);

impl RecordFlags {
    /// Consistency point: the last record of an atomic group (a mini-transaction, a commit).
    pub const CPL: RecordFlags = RecordFlags(1 << 0);
    const KNOWN: u16 = Self::CPL.0;

    pub const fn empty() -> Self {
        RecordFlags(0)
    }
    pub const fn bits(self) -> u16 {
        self.0
    }
    pub const fn contains(self, other: RecordFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn from_bits(bits: u16) -> FormatResult<Self> {
        expect_zero(u64::from(bits & !Self::KNOWN), "record flags")?;
        Ok(RecordFlags(bits))
    }
}

/// Everything in a record header except its length and checksum, which follow from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordMeta {
    pub kind: RecordKind,
    pub flags: RecordFlags,
    pub lsn: Lsn,
    pub prev_volume_lsn: Lsn,
    pub prev_pg_lsn: Lsn,
    pub prev_page_lsn: Lsn,
    pub page_id: PageId,
    /// The volume epoch of the writer that allocated this LSN.
    pub epoch: Epoch,
}

impl RecordMeta {
    /// Record `lsn` that ends its own atomic group (CPL), chained right after `prev` in the
    /// volume and in its PG, with no page backlink, at the first volume epoch: the shape tests,
    /// benchmarks and the simulator build records in (change a field with struct update
    /// syntax: `RecordMeta { epoch, ..RecordMeta::after(prev, lsn, kind, page) }`).
    pub fn after(prev: Lsn, lsn: Lsn, kind: RecordKind, page_id: PageId) -> RecordMeta {
        RecordMeta {
            kind,
            flags: RecordFlags::CPL,
            lsn,
            prev_volume_lsn: prev,
            prev_pg_lsn: prev,
            prev_page_lsn: Lsn::ZERO,
            page_id,
            epoch: Epochs::INITIAL.volume,
        }
    }

    /// True if this record ends an atomic group.
    pub fn is_cpl(&self) -> bool {
        self.flags.contains(RecordFlags::CPL)
    }

    fn check(&self, payload: &[u8]) -> FormatResult<()> {
        let ordered = self.lsn > self.prev_volume_lsn
            && self.prev_volume_lsn >= self.prev_pg_lsn
            && self.prev_pg_lsn >= self.prev_page_lsn;
        if !ordered {
            return Err(FormatError::Invalid {
                what: "record backlinks (need lsn > prev_volume >= prev_pg >= prev_page)",
            });
        }
        expect_at_most(payload.len(), RECORD_PAYLOAD_BYTES_MAX, "record payload")?;
        match self.kind {
            RecordKind::PageImage => expect_at_most(payload.len(), PAGE_BYTES_MAX, "page image"),
            RecordKind::PagePatch => patch::validate(payload),
            RecordKind::PageZero | RecordKind::PageTrim => {
                expect_zero(payload.len() as u64, "zero/trim payload")
            }
            RecordKind::Marker => expect_zero(self.prev_page_lsn.get(), "marker prev_page_lsn"),
        }
    }
}

/// A checked record: header fields, payload and the CRC32C that covers both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    meta: RecordMeta,
    crc: u32,
    payload: Bytes,
}

impl Record {
    /// Builds a record, checking every format rule and computing its CRC32C.
    pub fn new(meta: RecordMeta, payload: Bytes) -> FormatResult<Record> {
        meta.check(&payload)?;
        let header = encode_header(&meta, payload.len() as u32, 0);
        let crc = record_crc(&header, &payload);
        Ok(Record { meta, crc, payload })
    }

    pub fn meta(&self) -> &RecordMeta {
        &self.meta
    }
    pub fn lsn(&self) -> Lsn {
        self.meta.lsn
    }
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
    /// The CRC32C over header bytes 4..80 and the payload.
    pub fn crc(&self) -> u32 {
        self.crc
    }
    /// Header plus payload, in bytes.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }

    /// The 80 header bytes, checksum included.
    pub fn header_bytes(&self) -> [u8; RECORD_HEADER_BYTES] {
        encode_header(&self.meta, self.payload.len() as u32, self.crc)
    }

    /// Appends the header and payload to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_slice(&self.header_bytes());
        out.put_slice(&self.payload);
    }

    /// Decodes one record from `reader`: header, then the payload as a slice of the input.
    /// Verifies version, kind, flags, reserved fields, lengths, CRC and backlinks.
    pub fn decode(reader: &mut Reader) -> FormatResult<Record> {
        let header: [u8; RECORD_HEADER_BYTES] = reader.array("record header")?;
        let version = header[4];
        if version != RECORD_VERSION {
            return Err(FormatError::UnsupportedVersion { what: "record", found: version });
        }
        let meta = RecordMeta {
            kind: RecordKind::from_u8(header[5])?,
            flags: RecordFlags::from_bits(u16_at(&header, 6))?,
            lsn: Lsn(u64_at(&header, 8)),
            prev_volume_lsn: Lsn(u64_at(&header, 16)),
            prev_pg_lsn: Lsn(u64_at(&header, 24)),
            prev_page_lsn: Lsn(u64_at(&header, 32)),
            page_id: PageId(u64_at(&header, 40)),
            epoch: Epoch(u64_at(&header, 48)),
        };
        let payload_len = u32_at(&header, 56) as usize;
        let reserved = u64::from(u32_at(&header, 60)) | u64_at(&header, 64) | u64_at(&header, 72);
        expect_zero(reserved, "record key_version/reserved")?;
        expect_at_most(payload_len, RECORD_PAYLOAD_BYTES_MAX, "record payload")?;
        let payload = reader.bytes(payload_len, "record payload")?;
        let stored_crc = u32_at(&header, 0);
        expect_crc(stored_crc, record_crc(&header, &payload), "record")?;
        meta.check(&payload)?;
        Ok(Record { meta, crc: stored_crc, payload })
    }
}

/// CRC32C of header bytes 4..80 (everything after the checksum field) and the payload.
fn record_crc(header: &[u8; RECORD_HEADER_BYTES], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[4..]), payload)
}

fn encode_header(meta: &RecordMeta, payload_len: u32, crc: u32) -> [u8; RECORD_HEADER_BYTES] {
    let mut out = [0u8; RECORD_HEADER_BYTES];
    let mut w = &mut out[..];
    w.put_u32_le(crc);
    w.put_u8(RECORD_VERSION);
    w.put_u8(meta.kind as u8);
    w.put_u16_le(meta.flags.bits());
    for value in [
        meta.lsn.0,
        meta.prev_volume_lsn.0,
        meta.prev_pg_lsn.0,
        meta.prev_page_lsn.0,
        meta.page_id.0,
        meta.epoch.0,
    ] {
        w.put_u64_le(value);
    }
    w.put_u32_le(payload_len);
    // key_version (4 bytes) and 16 reserved bytes stay zero in this version.
    out
}
