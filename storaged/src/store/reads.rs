//! Reading stored bytes: the one place that reads records from the journal and images from the
//! page store, verifies them (entry CRC32C, GCM tag, record CRCs) and applies them. It serves
//! `ReadRecords` and gossip fetches, `ReadPage` and hydration, the coalescer and the scrubber,
//! for the daemon and the simulator alike. What fails verification is reported to the core
//! and never served; what merely could not be read (I/O, a recycled file) is not held against
//! the bytes.

use std::rc::Rc;

use bytes::Bytes;
use protocol::messages::{ErrorCode, ErrorReply, HydratedPage, Page, ReadPage, Records};
use protocol::{Epochs, Lsn, Message, PageId, PgRef, Record};

use super::{CoreAccess, NodeStore};
use crate::core::{Base, CoalesceJob, EntryBody, HydratePlan, Location, PageAnswer, PageBuild, ReadPlan};
use crate::core::{RecordsAnswer, ScrubOutcome, Store};
use crate::journal::format::{EntryAt, EntryHeader, JournalFault};
use crate::journal::group::open_entry;
use crate::journal::writer::JournalReader;
use crate::storage::Storage;

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
pub async fn build_version<S: Storage>(
    store: &NodeStore<S>,
    page_bytes: u32,
    base: &Base,
    records: &[(Lsn, Location)],
) -> Result<Vec<u8>, BuildFault> {
    let mut page = match base {
        Base::Zeros => vec![0u8; page_bytes as usize],
        Base::Cached(bytes) => bytes.to_vec(),
        Base::Image(location) => read_image(store, *location).await?.1.to_vec(),
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
        let entry = read_records(store, location).await.map_err(|fault| BuildFault::Records {
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
pub async fn read_image<S: Storage>(
    store: &NodeStore<S>,
    location: Location,
) -> Result<(PageId, Bytes), BuildFault> {
    let fault = |fault: ReadFault| BuildFault::Image { location, fault };
    match read_verified(store, &store.pages, location).await.map_err(fault)? {
        EntryBody::Image { page_id, page, .. } => Ok((page_id, page)),
        _ => Err(fault(ReadFault::WrongKind { expected: "page image" })),
    }
}

/// The records of one journal entry, from the entry cache or the disk.
pub async fn read_records<S: Storage>(
    store: &NodeStore<S>,
    location: Location,
) -> Result<Rc<Vec<Record>>, ReadFault> {
    if let Some(records) = store.entry_cache.borrow_mut().get(&location) {
        return Ok(records);
    }
    match read_verified(store, &store.journal, location).await? {
        EntryBody::Records { records, .. } => {
            let records = Rc::new(records);
            store.entry_cache.borrow_mut().insert(location, Rc::clone(&records), location.len as usize);
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
/// An I/O error is counted for `/metrics` (`borealis_stored_read_errors_total`).
pub async fn read_verified<S: Storage>(
    store: &NodeStore<S>,
    reader: &JournalReader<S>,
    location: Location,
) -> Result<EntryBody, ReadFault> {
    if !reader.has_file(location.file) {
        return Err(ReadFault::Recycled(location.file));
    }
    let bytes = reader.read(location).await.inspect_err(|_| store.note_read_error())?;
    let at = EntryAt { file: location.file, offset: location.offset };
    let header = EntryHeader::decode(&bytes, at)?;
    let body = store.keyring.with_keys(|keys| {
        open_entry(&bytes, &header, at, keys.opening(header.pg.volume_id, header.key_version))
    })?;
    Ok(body)
}

/// Tells the core about stored records proved wrong, so it stops claiming them; a read that
/// merely failed (I/O, a recycled file) is logged and nothing is given up.
pub fn report_fault(core: &impl CoreAccess, pg: PgRef, fault: &BuildFault) {
    match fault {
        BuildFault::Records { lsns, .. } if fault.records_are_corrupt() => {
            tracing::error!(?pg, %fault, "stored records failed verification; no longer claimed");
            core.with_core(|core| lsns.iter().for_each(|lsn| core.handle_corrupt_record(pg, *lsn)));
        }
        _ => tracing::warn!(?pg, %fault, "a page version could not be built"),
    }
}

/// An error answer, its message cut to what the wire allows.
fn refusal(code: ErrorCode, pg: PgRef, epochs: Epochs, message: &str) -> Message {
    let message = crate::core::node::truncate_message(message);
    Message::Error(ErrorReply { code, pg, epochs, message })
}

/// A coalescer job's page version: a peer's (fetched by hydration or a scrub repair, checked by
/// the core against the page size) or one built from the stored base and records.
pub async fn build_job<S: Storage>(store: &NodeStore<S>, job: &CoalesceJob) -> Result<Vec<u8>, BuildFault> {
    if let Some(fetched) = &job.fetched {
        return Ok(fetched.to_vec());
    }
    let base = job.base.map_or(Base::Zeros, Base::Image);
    build_version(store, job.page_bytes, &base, &job.records).await
}

/// Reads the planned records, entry by entry, up to the plan's limits: the answer to a
/// `ReadRecords` or a gossip fetch. A record whose entry fails verification is reported to the
/// core (which stops claiming it) and left out; an entry unreadable now fails the whole read,
/// since its records are still claimed and a partial answer could pass for a complete one.
pub async fn read_planned_records<S: Storage>(
    store: &NodeStore<S>,
    core: &impl CoreAccess,
    plan: ReadPlan,
) -> Message {
    let mut answer = RecordsAnswer::new(&plan);
    let mut index = 0;
    while index < plan.wanted.len() {
        let location = plan.wanted[index].1;
        let same_entry = plan.wanted[index..].iter().take_while(|(_, l)| *l == location).count();
        let wanted = &plan.wanted[index..index + same_entry];
        index += same_entry;
        match read_records(store, location).await {
            Ok(found) => {
                let mut wanted_found =
                    found.iter().filter(|r| wanted.iter().any(|(lsn, _)| *lsn == r.lsn())).cloned();
                if !wanted_found.all(|record| answer.offer(record)) {
                    break;
                }
            }
            Err(fault) if fault.is_corruption() => {
                tracing::error!(?location, %fault, "stored records failed verification; no longer claimed");
                core.with_core(|core| {
                    wanted.iter().for_each(|(lsn, _)| core.handle_corrupt_record(plan.pg, *lsn))
                });
            }
            Err(fault) => {
                tracing::warn!(?location, %fault, "stored records could not be read");
                let message = format!("stored records could not be read now: {fault}");
                let epochs =
                    core.with_core(|core| core.segment(&plan.pg).map_or(Epochs::default(), |s| s.epochs()));
                return refusal(ErrorCode::Internal, plan.pg, epochs, &message);
            }
        }
    }
    let (scl, node) =
        core.with_core(|core| (core.segment(&plan.pg).map_or(plan.scl, |s| s.scl()), core.node()));
    Message::Records(Records { pg: plan.pg, node, scl, more: answer.more, records: answer.records })
}

/// Where a page read stands.
#[derive(Debug)]
pub enum PageRead {
    /// The answer: the page, or why not.
    Answer(Message),
    /// The segment is not yet complete through the read's `pg_newest_lsn`: wait for more
    /// records to become durable and call again (with the same fault count).
    NotYet,
}

/// Page read faults after which a read gives up with `ChecksumMismatch`.
pub const PAGE_READ_FAULTS_MAX: u32 = 2;

/// Serves a `ReadPage` from the cache or builds it. A build that meets bad bytes reports them
/// and plans again (a concurrent fold may have moved the version); after
/// `PAGE_READ_FAULTS_MAX` faults (counted in `faults` across calls) the asker is told to go
/// elsewhere.
pub async fn read_page<S: Storage>(
    store: &NodeStore<S>,
    core: &impl CoreAccess,
    read: &ReadPage,
    faults: &mut u32,
) -> PageRead {
    loop {
        let build = match core.with_core(|core| core.plan_read_page(read)) {
            Err(reply) => return PageRead::Answer(Message::Error(reply)),
            Ok(PageAnswer::Ready(page)) => return PageRead::Answer(Message::Page(page)),
            Ok(PageAnswer::NotYet) => return PageRead::NotYet,
            Ok(PageAnswer::Build(build)) => build,
        };
        match build_version(store, build.page_bytes, &build.base, &build.records).await {
            Ok(bytes) => {
                let bytes = Bytes::from(bytes);
                core.with_core(|core| {
                    core.handle_page_built(build.pg, build.page_id, build.version_lsn, bytes.clone())
                });
                let PageBuild { pg, page_id, read_lsn, version_lsn, .. } = build;
                return PageRead::Answer(Message::Page(Page { pg, page_id, read_lsn, version_lsn, bytes }));
            }
            Err(fault) => {
                report_fault(core, build.pg, &fault);
                *faults += 1;
                if *faults >= PAGE_READ_FAULTS_MAX {
                    let message = format!("stored page version: {fault}");
                    return PageRead::Answer(refusal(
                        ErrorCode::ChecksumMismatch,
                        read.pg,
                        Epochs::default(),
                        &message,
                    ));
                }
            }
        }
    }
}

/// A hydration source's answer: every page of `plan`, each as `read_page` (a page read at the
/// plan's read point) serves it, or the first error.
pub async fn answer_hydrate<F, Fut>(plan: HydratePlan, node: protocol::NodeId, mut read_page: F) -> Message
where
    F: FnMut(ReadPage) -> Fut,
    Fut: std::future::Future<Output = Message>,
{
    let mut pages = Vec::with_capacity(plan.pages.len());
    for page_id in plan.pages.iter().copied() {
        match read_page(plan.page_read(page_id)).await {
            Message::Page(page) => {
                pages.push(HydratedPage { page_id, version_lsn: page.version_lsn, bytes: page.bytes })
            }
            Message::Error(error) => return Message::Error(error),
            other => {
                let message = format!("page {page_id} answered with message type {}", other.type_code());
                return refusal(ErrorCode::Internal, plan.pg, Epochs::default(), &message);
            }
        }
    }
    Message::HydratePages(plan.answer(node, pages))
}

/// The scrubber's check of one entry: read from disk (never from a cache), it must verify and
/// be of its log's kind (a misdirected write verifies but is another kind).
pub async fn verify<S: Storage>(store: &NodeStore<S>, log: Store, location: Location) -> ScrubOutcome {
    let reader = match log {
        Store::Journal => &store.journal,
        Store::Pages => &store.pages,
    };
    match read_verified(store, reader, location).await {
        Ok(EntryBody::Records { .. }) if log == Store::Journal => ScrubOutcome::Verified,
        Ok(EntryBody::Image { .. }) if log == Store::Pages => ScrubOutcome::Verified,
        Ok(_) => ScrubOutcome::Corrupt,
        Err(fault) if fault.is_corruption() => {
            tracing::warn!(?log, ?location, %fault, "stored entry failed verification");
            ScrubOutcome::Corrupt
        }
        Err(fault) => {
            tracing::warn!(?log, ?location, %fault, "scrub read failed; tried again next pass");
            ScrubOutcome::Unreadable
        }
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
