//! Checkpoints: every segment's epochs, truncation ranges and record index, and the journal
//! position they cover, kept as two checksummed copies (`checkpoint.0/.1`, see `dual`).
//!
//! Restart loads the newest checkpoint and replays only the journal after its position, so
//! restart time follows the un-checkpointed tail. Replay is idempotent (records re-index to the
//! same place, epochs only rise, truncations re-apply), so a checkpoint may safely include the
//! effects of entries queued after its position.
//!
//! Body, version 1 (little-endian): tail_file u64, tail_offset u64, next_group_seq u64,
//! segment count u32, then per segment: volume u128, pg u32, epochs 3×u64, truncation count u32
//! and per truncation epoch u64 / after u64 / through u64, record count u64 and per record
//! lsn u64, prev_pg_lsn u64, file u64, offset u64, len u32, flags u32 (bit 0: CPL).

use std::path::Path;

use bytes::{BufMut, Bytes};
use protocol::codec::Reader;
use protocol::wire::Wire;
use protocol::{Epoch, Epochs, FormatError, Lsn, LsnRange, PgRef};

use crate::core::{IndexedRecord, Location, Segment};
use crate::dual::{DualFile, Loaded};
use crate::journal::writer::JournalPosition;

const MAGIC: [u8; 4] = *b"BRCP";
const VERSION: u8 = 1;
const RECORD_BYTES: usize = 40;
const TRUNCATION_BYTES: usize = 24;
/// Most segments and truncation ranges a checkpoint may list (bounds decoding).
pub const SEGMENTS_MAX: usize = 1 << 20;
pub const TRUNCATIONS_MAX: usize = 1 << 16;

/// A decoded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    pub position: JournalPosition,
    pub segments: Vec<Segment>,
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
pub struct CheckpointStore {
    file: DualFile,
}

impl CheckpointStore {
    /// Opens the copies and decodes the newest valid one, if any.
    pub fn open(dir: &Path) -> (CheckpointStore, Result<Option<Checkpoint>, CheckpointError>) {
        let (file, loaded) = DualFile::open(dir, "checkpoint", MAGIC);
        let checkpoint = match loaded {
            Loaded::Fresh => Ok(None),
            Loaded::Damaged => Err(CheckpointError::Damaged),
            Loaded::Copy { version, .. } if version != VERSION => Err(CheckpointError::Version(version)),
            Loaded::Copy { body, .. } => decode(Bytes::from(body)).map(Some),
        };
        (CheckpointStore { file }, checkpoint)
    }

    /// Durably stores a checkpoint of `segments` covering the journal up to `position`.
    pub fn store<'a>(
        &mut self,
        position: JournalPosition,
        segments: impl Iterator<Item = &'a Segment>,
    ) -> std::io::Result<()> {
        self.file.store(VERSION, &encode(position, segments))
    }
}

fn encode<'a>(position: JournalPosition, segments: impl Iterator<Item = &'a Segment>) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u64_le(position.file);
    out.put_u64_le(position.offset);
    out.put_u64_le(position.next_group_seq);
    let count_at = out.len();
    out.put_u32_le(0);
    let mut count = 0u32;
    for segment in segments {
        count += 1;
        segment.pg().put(&mut out);
        segment.epochs().put(&mut out);
        out.put_u32_le(segment.truncations().len() as u32);
        for (epoch, range) in segment.truncations() {
            epoch.put(&mut out);
            range.put(&mut out);
        }
        out.put_u64_le(segment.record_count() as u64);
        for (lsn, record) in segment.all_records() {
            lsn.put(&mut out);
            record.prev_pg_lsn.put(&mut out);
            out.put_u64_le(record.location.file);
            out.put_u64_le(record.location.offset);
            out.put_u32_le(record.location.len);
            out.put_u32_le(u32::from(record.cpl));
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    out
}

fn decode(body: Bytes) -> Result<Checkpoint, CheckpointError> {
    let r = &mut Reader::new(body);
    let position = JournalPosition {
        file: r.u64("file")?,
        offset: r.u64("offset")?,
        next_group_seq: r.u64("group seq")?,
    };
    let count = r.count(SEGMENTS_MAX, 1, "segments")?;
    let segments = (0..count).map(|_| decode_segment(r)).collect::<Result<Vec<_>, _>>()?;
    r.finish("checkpoint")?;
    Ok(Checkpoint { position, segments })
}

fn decode_segment(r: &mut Reader) -> Result<Segment, CheckpointError> {
    let pg = PgRef::read(r)?;
    let epochs = Epochs::read(r)?;
    let truncation_count = r.count(TRUNCATIONS_MAX, TRUNCATION_BYTES, "truncations")?;
    let truncations = (0..truncation_count)
        .map(|_| Ok((Epoch::read(r)?, LsnRange::read(r)?)))
        .collect::<Result<Vec<_>, FormatError>>()?;
    let record_count = usize::try_from(r.u64("record count")?).unwrap_or(usize::MAX);
    if record_count.saturating_mul(RECORD_BYTES) > r.remaining() {
        return Err(FormatError::InconsistentLength { what: "checkpoint records" }.into());
    }
    let mut records = Vec::with_capacity(record_count);
    for _ in 0..record_count {
        let lsn = Lsn::read(r)?;
        let prev_pg_lsn = Lsn::read(r)?;
        let location = Location { file: r.u64("file")?, offset: r.u64("offset")?, len: r.u32("len")? };
        let cpl = r.u32("flags")? & 1 == 1;
        records.push((lsn, IndexedRecord { prev_pg_lsn, cpl, location }));
    }
    Ok(Segment::restore(pg, epochs, truncations, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{PgId, VolumeId};

    #[test]
    fn a_checkpoint_restores_segments_exactly() {
        let pg = PgRef { volume_id: VolumeId(3), pg_id: PgId(1) };
        let mut segment = Segment::new(pg, Epochs { volume: Epoch(2), ..Epochs::INITIAL });
        let location = Location { file: 1, offset: 4096, len: 200 };
        for (lsn, prev) in [(10, 0), (20, 10), (40, 30)] {
            segment
                .insert_durable(Lsn(lsn), IndexedRecord { prev_pg_lsn: Lsn(prev), cpl: lsn == 20, location });
        }
        segment.truncate(Epoch(2), LsnRange::new(Lsn(50), Lsn(60)).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let (mut store, none) = CheckpointStore::open(dir.path());
        assert!(none.unwrap().is_none());
        let position = JournalPosition { file: 2, offset: 8192, next_group_seq: 7 };
        store.store(position, std::iter::once(&segment)).unwrap();
        let (_, loaded) = CheckpointStore::open(dir.path());
        let loaded = loaded.unwrap().unwrap();
        assert_eq!(loaded.position, position);
        let restored = &loaded.segments[0];
        assert_eq!((restored.pg(), restored.epochs(), restored.scl()), (pg, segment.epochs(), Lsn(20)));
        assert_eq!(restored.truncations(), segment.truncations());
        assert_eq!(restored.all_records().collect::<Vec<_>>(), segment.all_records().collect::<Vec<_>>());
    }
}
