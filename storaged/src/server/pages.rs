//! Building page versions from stored bytes: the one place that reads images from the page
//! store and records from the journal and applies them. Serves both `ReadPage` and the
//! coalescer. Every byte is verified on the way (GCM tag, record CRC); what fails is reported
//! to the core and never applied.

use std::rc::Rc;

use bytes::Bytes;
use protocol::{Lsn, PageId, PgRef, Record};

use super::shared::Shared;
use crate::core::{Base, EntryBody, Location};
use crate::journal::format::{EntryHeader, JournalFault};
use crate::journal::group::open_entry;
use crate::journal::writer::JournalReader;

/// Decoded journal entries kept for reads and the coalescer: one entry holds a whole batch, and
/// consecutive pages of a fold usually come from the same few entries.
pub type EntryCache = crate::core::cache::Lru<Location, Rc<Vec<Record>>>;

/// Why a version could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildFault {
    #[error("page store image at {location:?}: {reason}")]
    Image { location: Location, reason: String },
    #[error("journal entry at {location:?}: {reason}")]
    Records { location: Location, lsns: Vec<Lsn>, reason: String },
    #[error("record {lsn} does not apply: {reason}")]
    Apply { lsn: Lsn, reason: String },
}

/// The page as of the last of `records`, from `base`.
pub async fn build_version(
    shared: &Shared,
    page_bytes: u32,
    base: &Base,
    records: &[(Lsn, Location)],
) -> Result<Vec<u8>, BuildFault> {
    let mut page = match base {
        Base::Zeros => vec![0u8; page_bytes as usize],
        Base::Cached(bytes) => bytes.to_vec(),
        Base::Image(location) => read_image(shared, *location).await?.1.to_vec(),
    };
    if page.len() != page_bytes as usize {
        let reason = format!("base of {} bytes for a {page_bytes}-byte page", page.len());
        return Err(BuildFault::Apply { lsn: Lsn::ZERO, reason });
    }
    let mut index = 0;
    while index < records.len() {
        let location = records[index].1;
        let same_entry = records[index..].iter().take_while(|(_, l)| *l == location).count();
        let wanted = &records[index..index + same_entry];
        index += same_entry;
        let entry = read_records(shared, location).await.map_err(|reason| BuildFault::Records {
            location,
            lsns: wanted.iter().map(|(l, _)| *l).collect(),
            reason,
        })?;
        for (lsn, _) in wanted {
            let record = entry.iter().find(|r| r.lsn() == *lsn).ok_or_else(|| BuildFault::Records {
                location,
                lsns: vec![*lsn],
                reason: "the entry does not hold the record".into(),
            })?;
            protocol::apply::apply(&mut page, record)
                .map_err(|e| BuildFault::Apply { lsn: *lsn, reason: e.to_string() })?;
        }
    }
    Ok(page)
}

/// Reads and opens one page store image: its page id and bytes.
pub async fn read_image(shared: &Shared, location: Location) -> Result<(PageId, Bytes), BuildFault> {
    let fault = |reason: String| BuildFault::Image { location, reason };
    match read_entry(shared, &shared.pages_reader, location).await.map_err(fault)? {
        EntryBody::Image { page_id, page, .. } => Ok((page_id, page)),
        _ => Err(fault("not an image entry".into())),
    }
}

/// The records of one journal entry, from the entry cache or the disk.
pub async fn read_records(shared: &Shared, location: Location) -> Result<Rc<Vec<Record>>, String> {
    if let Some(records) = shared.entry_cache.borrow_mut().get(&location) {
        return Ok(records);
    }
    match read_entry(shared, &shared.reader, location).await? {
        EntryBody::Records { records, .. } => {
            let records = Rc::new(records);
            shared.entry_cache.borrow_mut().insert(location, Rc::clone(&records), location.len as usize);
            Ok(records)
        }
        _ => Err("a record's location holds another kind of entry".into()),
    }
}

/// Why stored bytes could not be had: the read failed (nothing is known about the bytes), or
/// they were read and failed verification (they are wrong).
#[derive(Debug, thiserror::Error)]
pub enum ReadFault {
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed verification: {0}")]
    Corrupt(#[from] JournalFault),
}

async fn read_entry(
    shared: &Shared,
    reader: &JournalReader,
    location: Location,
) -> Result<EntryBody, String> {
    read_verified(shared, reader, location).await.map_err(|e| e.to_string())
}

/// Reads one entry and verifies it (entry CRC32C, GCM tag, record CRCs), as every read does.
pub async fn read_verified(
    shared: &Shared,
    reader: &JournalReader,
    location: Location,
) -> Result<EntryBody, ReadFault> {
    let bytes = reader.read(location).await?;
    let header = EntryHeader::decode(&bytes)?;
    let body = shared.with_keys(|keys| open_entry(&bytes, &header, keys.get(&header.pg.volume_id)))?;
    Ok(body)
}

/// Tells the core about stored bytes that failed verification, so it stops claiming them.
pub fn report_fault(shared: &Shared, pg: PgRef, fault: &BuildFault) {
    tracing::error!(?pg, %fault, "stored bytes failed verification");
    if let BuildFault::Records { lsns, .. } = fault {
        shared.with_core(|core| lsns.iter().for_each(|lsn| core.handle_corrupt_record(pg, *lsn)));
    }
}
