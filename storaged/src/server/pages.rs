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
    #[error("page store image at {location:?}: {fault}")]
    Image { location: Location, fault: ReadFault },
    #[error("journal entry at {location:?}: {fault}")]
    Records { location: Location, lsns: Vec<Lsn>, fault: ReadFault },
    #[error("record {lsn} does not apply: {error}")]
    Apply { lsn: Lsn, error: protocol::FormatError },
    #[error("a base of {found} bytes for a {page_bytes}-byte page")]
    BaseSize { found: usize, page_bytes: u32 },
}

impl BuildFault {
    /// True if stored records were read and proved wrong: only then may the node stop
    /// claiming them (an I/O error or a recycled file says nothing about the bytes).
    pub fn records_are_corrupt(&self) -> bool {
        matches!(self, BuildFault::Records { fault, .. } if fault.is_corruption())
    }
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
        return Err(BuildFault::BaseSize { found: page.len(), page_bytes });
    }
    let mut index = 0;
    while index < records.len() {
        let location = records[index].1;
        let same_entry = records[index..].iter().take_while(|(_, l)| *l == location).count();
        let wanted = &records[index..index + same_entry];
        index += same_entry;
        let entry = read_records(shared, location).await.map_err(|fault| BuildFault::Records {
            location,
            lsns: wanted.iter().map(|(l, _)| *l).collect(),
            fault,
        })?;
        for (lsn, _) in wanted {
            let record = entry.iter().find(|r| r.lsn() == *lsn).ok_or(BuildFault::Records {
                location,
                lsns: vec![*lsn],
                fault: ReadFault::RecordMissing(*lsn),
            })?;
            protocol::apply::apply(&mut page, record)
                .map_err(|error| BuildFault::Apply { lsn: *lsn, error })?;
        }
    }
    Ok(page)
}

/// Reads and opens one page store image: its page id and bytes.
pub async fn read_image(shared: &Shared, location: Location) -> Result<(PageId, Bytes), BuildFault> {
    let fault = |fault: ReadFault| BuildFault::Image { location, fault };
    match read_verified(shared, &shared.pages_reader, location).await.map_err(fault)? {
        EntryBody::Image { page_id, page, .. } => Ok((page_id, page)),
        _ => Err(fault(ReadFault::WrongKind { expected: "page image" })),
    }
}

/// The records of one journal entry, from the entry cache or the disk.
pub async fn read_records(shared: &Shared, location: Location) -> Result<Rc<Vec<Record>>, ReadFault> {
    if let Some(records) = shared.entry_cache.borrow_mut().get(&location) {
        return Ok(records);
    }
    match read_verified(shared, &shared.reader, location).await? {
        EntryBody::Records { records, .. } => {
            let records = Rc::new(records);
            shared.entry_cache.borrow_mut().insert(location, Rc::clone(&records), location.len as usize);
            Ok(records)
        }
        _ => Err(ReadFault::WrongKind { expected: "records" }),
    }
}

/// Why stored bytes could not be had. An I/O error or a file recycled under the reader says
/// nothing about the bytes (try again, or elsewhere); the others prove them wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReadFault {
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal or page store file {0} is gone (recycled under the reader)")]
    Recycled(u64),
    #[error("failed verification: {0}")]
    Corrupt(#[from] JournalFault),
    #[error("the entry verifies but is not {expected} (a misdirected write)")]
    WrongKind { expected: &'static str },
    #[error("the entry verifies but does not hold record {0}")]
    RecordMissing(Lsn),
}

impl ReadFault {
    /// True if the bytes were read and proved wrong (not merely unreadable now).
    pub fn is_corruption(&self) -> bool {
        matches!(self, ReadFault::Corrupt(_) | ReadFault::WrongKind { .. } | ReadFault::RecordMissing(_))
    }
}

/// Reads one entry and verifies it (entry CRC32C, GCM tag, record CRCs), as every read does.
pub async fn read_verified(
    shared: &Shared,
    reader: &JournalReader,
    location: Location,
) -> Result<EntryBody, ReadFault> {
    if !reader.has_file(location.file) {
        return Err(ReadFault::Recycled(location.file));
    }
    let bytes = reader.read(location).await?;
    let header = EntryHeader::decode(&bytes)?;
    let body = shared.with_keys(|keys| open_entry(&bytes, &header, keys.get(&header.pg.volume_id)))?;
    Ok(body)
}

/// Tells the core about stored records proved wrong, so it stops claiming them; a read that
/// merely failed (I/O, a recycled file) is logged and nothing is given up.
pub fn report_fault(shared: &Shared, pg: PgRef, fault: &BuildFault) {
    match fault {
        BuildFault::Records { lsns, .. } if fault.records_are_corrupt() => {
            tracing::error!(?pg, %fault, "stored records failed verification; no longer claimed");
            shared.with_core(|core| lsns.iter().for_each(|lsn| core.handle_corrupt_record(pg, *lsn)));
        }
        _ => tracing::warn!(?pg, %fault, "a page version could not be built"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_proved_wrong_give_records_up() {
        let location = Location { file: 3, offset: 0, len: 4096 };
        let records = |fault| BuildFault::Records { location, lsns: vec![Lsn(7)], fault };
        let unreadable = [ReadFault::Io(std::io::Error::other("EIO")), ReadFault::Recycled(3)];
        for fault in unreadable {
            assert!(!fault.is_corruption(), "{fault}");
            assert!(!records(fault).records_are_corrupt());
        }
        let wrong = [
            ReadFault::Corrupt(JournalFault::EntryChecksum),
            ReadFault::WrongKind { expected: "records" },
            ReadFault::RecordMissing(Lsn(7)),
        ];
        for fault in wrong {
            assert!(fault.is_corruption(), "{fault}");
            assert!(records(fault).records_are_corrupt());
        }
        let image = BuildFault::Image { location, fault: ReadFault::Corrupt(JournalFault::EntryChecksum) };
        assert!(!image.records_are_corrupt(), "a damaged image is scrub's to repair, no record is given up");
    }
}
