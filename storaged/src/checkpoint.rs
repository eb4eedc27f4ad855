//! Checkpoints: every segment's epochs, truncation ranges, record index, page images and floor,
//! and the journal and page store positions they cover, kept as two checksummed copies
//! (`checkpoint.0/.1`, see `dual`). Journal and page store files are deleted only after a
//! checkpoint that no longer refers to them is durable.
//!
//! Restart loads the newest checkpoint and replays only the journal after its position, so
//! restart time follows the un-checkpointed tail. Replay is idempotent (records re-index to the
//! same place, epochs only rise, truncations re-apply), so a checkpoint may safely include the
//! effects of entries queued after its position.
//!
//! Body, version 3 (little-endian): journal position (file u64, offset u64, next_group_seq
//! u64), page store position (same three), segment count u32, then per segment: volume u128,
//! pg u32, epochs 3×u64, membership (60 bytes, `docs/format.md`; absent in version 2, which is
//! still read), page_bytes u32, floor u64, folded_through u64, truncation count u32
//! and per truncation epoch u64 / after u64 / through u64, record count u64 and per record
//! lsn u64, prev_pg_lsn u64, page u64, file u64, offset u64, len u32, flags u32 (bit 0: CPL,
//! bit 1: folded, bits 8..16: record kind), image count u64 and per image page u64, lsn u64, file u64,
//! offset u64, len u32, flags u32 (bit 0: zeros, nothing stored). Version 3 then lists the
//! started rebuilds (`HydrationCheckpoint`): count u32, and per rebuild volume u128, pg u32,
//! source u32, epochs 3×u64, read_lsn u64, pg_newest_lsn u64, resume_from u64, stored count u64
//! and per stored page: page u64, lsn u64, file u64, offset u64, len u32.

use bytes::{BufMut, Bytes};
use protocol::codec::Reader;
use protocol::quorum::Membership;
use protocol::wire::Wire;
use protocol::{Epoch, Epochs, FormatError, Lsn, LsnRange, NodeId, PageId, PgRef, RecordKind};

use crate::core::{HydrationCheckpoint, IndexedRecord, Location, PageState, Segment, Stored};
use crate::dual::{DualFile, Loaded};
use crate::journal::files::JournalPosition;
use crate::storage::Storage;

const MAGIC: [u8; 4] = *b"BRCP";
const VERSION: u8 = 3;
/// The version before stored memberships: read as segments without one.
const VERSION_WITHOUT_MEMBERSHIP: u8 = 2;
const RECORD_BYTES: usize = 48;
const IMAGE_BYTES: usize = 40;
const TRUNCATION_BYTES: usize = 24;
/// A rebuild's fixed part, and each of its stored pages.
const HYDRATION_BYTES: usize = 20 + 4 + 24 + 8 + 8 + 8 + 8;
const STORED_PAGE_BYTES: usize = 8 + 8 + 20;
/// Most segments and truncation ranges a checkpoint may list (bounds decoding).
pub const SEGMENTS_MAX: usize = 1 << 20;
pub const TRUNCATIONS_MAX: usize = 1 << 16;

/// A decoded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    pub position: JournalPosition,
    pub pages_position: JournalPosition,
    pub segments: Vec<Segment>,
    /// Rebuilds under way, to resume after the segments are restored and replayed.
    pub hydrations: Vec<HydrationCheckpoint>,
}

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("both checkpoint copies are damaged")]
    Damaged,
    #[error("checkpoint version {0} is not one this build reads")]
    Version(u8),
    #[error("checkpoint body: {0}")]
    Format(#[from] FormatError),
}

/// The checkpoint copies of one data directory.
#[derive(Debug)]
pub struct CheckpointStore<S> {
    file: DualFile<S>,
}

impl<S: Storage> CheckpointStore<S> {
    /// Opens the copies and decodes the newest valid one, if any.
    pub async fn open(storage: &S) -> (CheckpointStore<S>, Result<Option<Checkpoint>, CheckpointError>) {
        let (file, loaded) = DualFile::open(storage, "checkpoint", MAGIC).await;
        let checkpoint = match loaded {
            Loaded::Fresh => Ok(None),
            Loaded::Damaged => Err(CheckpointError::Damaged),
            Loaded::Copy { version, body } if version == VERSION || version == VERSION_WITHOUT_MEMBERSHIP => {
                decode(Bytes::from(body), version == VERSION).map(Some)
            }
            Loaded::Copy { version, .. } => Err(CheckpointError::Version(version)),
        };
        (CheckpointStore { file }, checkpoint)
    }

    /// Durably stores a checkpoint body made by `encode`.
    pub async fn store(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.file.store(VERSION, body).await
    }
}

/// A checkpoint of `segments` and rebuilds, covering the journal and page store up to
/// `positions`.
pub fn encode<'a>(
    (position, pages_position): (JournalPosition, JournalPosition),
    segments: impl Iterator<Item = &'a Segment>,
    hydrations: &[HydrationCheckpoint],
) -> Vec<u8> {
    let mut out = Vec::new();
    for p in [position, pages_position] {
        out.put_u64_le(p.file);
        out.put_u64_le(p.offset);
        out.put_u64_le(p.next_group_seq);
    }
    let count_at = out.len();
    out.put_u32_le(0);
    let mut count = 0u32;
    for segment in segments {
        count += 1;
        segment.pg().put(&mut out);
        segment.epochs().put(&mut out);
        segment.membership().put(&mut out);
        let pages = segment.page_state();
        out.put_u32_le(pages.page_bytes);
        pages.floor.put(&mut out);
        pages.folded_through.put(&mut out);
        out.put_u32_le(segment.truncations().len() as u32);
        for (epoch, range) in segment.truncations() {
            epoch.put(&mut out);
            range.put(&mut out);
        }
        out.put_u64_le(segment.record_count() as u64);
        for (lsn, record) in segment.all_records() {
            lsn.put(&mut out);
            record.prev_pg_lsn.put(&mut out);
            out.put_u64_le(record.page_id.0);
            put_location(&mut out, record.location);
            let flags =
                u32::from(record.cpl) | u32::from(record.folded) << 1 | u32::from(record.kind as u8) << 8;
            out.put_u32_le(flags);
        }
        out.put_u64_le(pages.images.len() as u64);
        for (page, lsn, stored) in &pages.images {
            out.put_u64_le(page.0);
            lsn.put(&mut out);
            match stored {
                Stored::Zeros => {
                    put_location(&mut out, Location { file: 0, offset: 0, len: 0 });
                    out.put_u32_le(1);
                }
                Stored::At(location) => {
                    put_location(&mut out, *location);
                    out.put_u32_le(0);
                }
            }
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    out.put_u32_le(hydrations.len() as u32);
    for h in hydrations {
        h.pg.put(&mut out);
        h.source.put(&mut out);
        h.epochs.put(&mut out);
        h.read_lsn.put(&mut out);
        h.pg_newest_lsn.put(&mut out);
        out.put_u64_le(h.resume_from.0);
        out.put_u64_le(h.stored.len() as u64);
        for (page, lsn, location) in &h.stored {
            out.put_u64_le(page.0);
            lsn.put(&mut out);
            put_location(&mut out, *location);
        }
    }
    out
}

pub(crate) fn decode(body: Bytes, with_membership: bool) -> Result<Checkpoint, CheckpointError> {
    let r = &mut Reader::new(body);
    let position = get_position(r)?;
    let pages_position = get_position(r)?;
    let count = r.count(SEGMENTS_MAX, 1, "segments")?;
    let segments = (0..count).map(|_| decode_segment(r, with_membership)).collect::<Result<Vec<_>, _>>()?;
    let hydrations = if with_membership { decode_hydrations(r)? } else { Vec::new() };
    r.finish("checkpoint")?;
    Ok(Checkpoint { position, pages_position, segments, hydrations })
}

fn decode_hydrations(r: &mut Reader) -> Result<Vec<HydrationCheckpoint>, CheckpointError> {
    let count = r.count(SEGMENTS_MAX, HYDRATION_BYTES, "hydrations")?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let pg = PgRef::read(r)?;
        let source = NodeId::read(r)?;
        let epochs = Epochs::read(r)?;
        let (read_lsn, pg_newest_lsn) = (Lsn::read(r)?, Lsn::read(r)?);
        let resume_from = PageId(r.u64("resume_from")?);
        let stored_count = get_count(r, STORED_PAGE_BYTES, "hydration pages")?;
        let mut stored = Vec::with_capacity(stored_count);
        for _ in 0..stored_count {
            let page = PageId(r.u64("page")?);
            stored.push((page, Lsn::read(r)?, get_location(r)?));
        }
        out.push(HydrationCheckpoint { pg, source, epochs, read_lsn, pg_newest_lsn, resume_from, stored });
    }
    Ok(out)
}

fn get_position(r: &mut Reader) -> Result<JournalPosition, FormatError> {
    Ok(JournalPosition {
        file: r.u64("file")?,
        offset: r.u64("offset")?,
        next_group_seq: r.u64("group seq")?,
    })
}

fn put_location(out: &mut Vec<u8>, location: Location) {
    out.put_u64_le(location.file);
    out.put_u64_le(location.offset);
    out.put_u32_le(location.len);
}

fn get_location(r: &mut Reader) -> Result<Location, FormatError> {
    Ok(Location { file: r.u64("file")?, offset: r.u64("offset")?, len: r.u32("len")? })
}

/// Reads a u64 count of items of `item_bytes` each, refusing one the body cannot hold.
fn get_count(r: &mut Reader, item_bytes: usize, what: &'static str) -> Result<usize, FormatError> {
    let count = usize::try_from(r.u64(what)?).unwrap_or(usize::MAX);
    if count.saturating_mul(item_bytes) > r.remaining() {
        return Err(FormatError::InconsistentLength { what });
    }
    Ok(count)
}

fn decode_segment(r: &mut Reader, with_membership: bool) -> Result<Segment, CheckpointError> {
    let pg = PgRef::read(r)?;
    let epochs = Epochs::read(r)?;
    let membership: Option<Membership> = if with_membership { Wire::read(r)? } else { None };
    let page_bytes = r.u32("page_bytes")?;
    let floor = Lsn::read(r)?;
    let folded_through = Lsn::read(r)?;
    let truncation_count = r.count(TRUNCATIONS_MAX, TRUNCATION_BYTES, "truncations")?;
    let truncations = (0..truncation_count)
        .map(|_| Ok((Epoch::read(r)?, LsnRange::read(r)?)))
        .collect::<Result<Vec<_>, FormatError>>()?;
    let record_count = get_count(r, RECORD_BYTES, "checkpoint records")?;
    let mut records = Vec::with_capacity(record_count);
    for _ in 0..record_count {
        let lsn = Lsn::read(r)?;
        let prev_pg_lsn = Lsn::read(r)?;
        let page_id = PageId(r.u64("page")?);
        let location = get_location(r)?;
        let flags = r.u32("flags")?;
        let kind = RecordKind::from_u8((flags >> 8) as u8)?;
        let (cpl, folded) = (flags & 1 == 1, flags & 2 == 2);
        records.push((lsn, IndexedRecord { prev_pg_lsn, cpl, page_id, kind, location, folded }));
    }
    let image_count = get_count(r, IMAGE_BYTES, "checkpoint images")?;
    let mut images = Vec::with_capacity(image_count);
    for _ in 0..image_count {
        let page = PageId(r.u64("page")?);
        let lsn = Lsn::read(r)?;
        let location = get_location(r)?;
        let stored = if r.u32("image flags")? & 1 == 1 { Stored::Zeros } else { Stored::At(location) };
        images.push((page, lsn, stored));
    }
    let state = PageState { page_bytes, floor, folded_through, images };
    let mut segment = Segment::restore(pg, epochs, truncations, records, state);
    if let Some(membership) = membership {
        segment.store_membership(membership);
    }
    Ok(segment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::complete;
    use protocol::{PgId, VolumeId};

    #[test]
    fn a_checkpoint_restores_segments_exactly() {
        let pg = PgRef { volume_id: VolumeId(3), pg_id: PgId(1) };
        let mut segment = Segment::new(pg, Epochs { volume: Epoch(2), ..Epochs::INITIAL });
        let location = Location { file: 1, offset: 4096, len: 200 };
        for (lsn, prev) in [(10, 0), (20, 10), (40, 30)] {
            let record = IndexedRecord {
                prev_pg_lsn: Lsn(prev),
                cpl: lsn == 20,
                page_id: PageId(lsn % 7),
                kind: RecordKind::PagePatch,
                location,
                folded: false,
            };
            segment.insert_durable(Lsn(lsn), record);
        }
        assert!(segment.learn_page_bytes(4096));
        segment.report_floor(crate::core::segment::FloorReporter::raising(1), Lsn(10), 0, 1000);
        assert!(segment.add_image(
            PageId(3),
            Lsn(10),
            Stored::At(Location { file: 4, offset: 0, len: 4192 }),
            &[]
        ));
        segment.truncate(Epoch(2), LsnRange::new(Lsn(50), Lsn(60)).unwrap());
        let set = |ids: [u32; 6]| protocol::quorum::SegmentSet::new(ids.map(protocol::NodeId)).unwrap();
        let joint =
            Membership::transition(Epoch(5), set([1, 2, 3, 4, 5, 6]), set([1, 2, 3, 4, 5, 7])).unwrap();
        assert!(segment.store_membership(joint));
        let disk = crate::storage::sim::SimDisk::new();
        let (mut store, none) = complete(CheckpointStore::open(&disk));
        assert!(none.unwrap().is_none());
        let position = JournalPosition { file: 2, offset: 8192, next_group_seq: 7 };
        let pages_position = JournalPosition { file: 4, offset: 8192, next_group_seq: 3 };
        let rebuild = HydrationCheckpoint {
            pg,
            source: protocol::NodeId(4),
            epochs: segment.epochs(),
            read_lsn: Lsn(30),
            pg_newest_lsn: Lsn(20),
            resume_from: PageId(9),
            stored: vec![(PageId(2), Lsn(20), Location { file: 5, offset: 8192, len: 4192 })],
        };
        let body =
            encode((position, pages_position), std::iter::once(&segment), std::slice::from_ref(&rebuild));
        complete(store.store(&body)).unwrap();
        let (_, loaded) = complete(CheckpointStore::open(&disk));
        let loaded = loaded.unwrap().unwrap();
        assert_eq!((loaded.position, loaded.pages_position), (position, pages_position));
        let restored = &loaded.segments[0];
        assert_eq!((restored.pg(), restored.epochs(), restored.scl()), (pg, segment.epochs(), Lsn(20)));
        assert_eq!(restored.truncations(), segment.truncations());
        assert_eq!(restored.all_records().collect::<Vec<_>>(), segment.all_records().collect::<Vec<_>>());
        assert_eq!(restored.page_state(), segment.page_state());
        assert_eq!(restored.floor(), Lsn(10));
        assert_eq!(restored.membership(), Some(joint));
        assert_eq!(loaded.hydrations, vec![rebuild]);
    }
}
