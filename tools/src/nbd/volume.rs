//! The block device on a Borealis volume: device page `i` is volume page `i + 1`; volume page 0
//! is the superblock, which keeps the device's size (so a later `--size` that differs is a
//! clear error, not a silently different device).
//!
//! Superblock layout (volume page 0, little endian, rest zero):
//!
//! ```text
//! 0        16       24       28
//! +--------+--------+--------+-----------
//! | magic  | size   | page   | zeroes ...
//! | 16 B   | u64 B  | u32 B  |
//! +--------+--------+--------+-----------
//! ```
//!
//! Writes (WRITE, WRITE_ZEROES, TRIM) are answered once the writer has accepted their records,
//! and kept in the gateway's [`Overlay`] until VDL covers them: a READ reads each page at VDL
//! and lays the overlay's newer ops on top, so a completed write is visible to every later READ
//! on any connection. FLUSH waits until VDL covers the highest LSN answered so far (on any
//! connection); a write with FUA waits until VDL covers its own records. The overlay is bounded:
//! above [`OVERLAY_BYTES_MAX`] a write waits for VDL to pass the overlay's oldest op first.

use std::cell::{Cell, RefCell};

use bytes::Bytes;
use client::{NewRecord, PageVersion, Writer};
use nbd::{ErrorCode, Overlay, PageOp, ReadReply};
use protocol::patch::PatchEdit;
use protocol::{Lsn, PageId, RecordKind};

/// The superblock's first bytes.
pub const SUPERBLOCK_MAGIC: &[u8; 16] = b"BOREALIS-NBD-v01";
/// Records per append: a large WRITE is split into appends of at most this many.
pub const APPEND_RECORDS_MAX: usize = 128;
/// Pages of one READ read at once (in order): a 1 MiB read is 256 pages.
pub const READ_PAGES_IN_PARALLEL: usize = 16;
/// The overlay's bound (payload plus per-op overhead) beyond which a write waits for VDL before
/// it is appended: 64 MiB is 16,384 4 KiB pages, several times what the writer makes durable
/// in one round of batches, so the bound only bites when storage falls behind.
pub const OVERLAY_BYTES_MAX: usize = 64 << 20;

/// Why the volume could not be opened as a block device.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("the volume holds a {stored}-byte device; --size {asked} differs")]
    SizeMismatch { stored: u64, asked: u64 },
    #[error("the volume's page size is {stored} bytes; this gateway uses {asked}")]
    PageSizeMismatch { stored: u32, asked: u32 },
    #[error("the volume is new: give --size")]
    SizeNeeded,
    #[error("--size {0} is not a positive multiple of 512 bytes")]
    BadSize(u64),
    #[error("volume page 0 is not a Borealis NBD superblock (another program's volume?)")]
    NotOurs,
    #[error("append: {0}")]
    Append(#[from] client::AppendError),
    #[error("read: {0}")]
    Read(#[from] client::ReadError),
}

/// A Borealis volume seen as a block device of `size_bytes`.
#[derive(Debug)]
pub struct BlockVolume {
    pub writer: Writer,
    pub size_bytes: u64,
    pub geometry: nbd::PageGeometry,
    /// Set once an append found a newer writer (another gateway took the volume over): from
    /// then on every request is refused and every connection closes.
    fenced: Cell<bool>,
    fenced_now: tokio::sync::Notify,
    /// What was appended and answered but is not yet durable.
    overlay: RefCell<Overlay>,
    /// The highest LSN of any write answered: a FLUSH waits for VDL to reach it.
    answered_through: Cell<Lsn>,
}

impl BlockVolume {
    /// Reads the superblock, or writes it for a new volume (then `size` is needed).
    pub async fn open(writer: Writer, size: Option<u64>) -> Result<BlockVolume, VolumeError> {
        let page_bytes = writer.geometry().page_bytes;
        let geometry = nbd::PageGeometry::new(page_bytes).expect("the gateway's page size is valid");
        if let Some(size) = size.filter(|s| *s == 0 || s % 512 != 0) {
            return Err(VolumeError::BadSize(size));
        }
        let superblock = writer.read_page(PageId(0), writer.vdl()).await?;
        let size_bytes = match parse(&superblock)? {
            Some((stored, stored_page)) => {
                if stored_page != page_bytes {
                    return Err(VolumeError::PageSizeMismatch { stored: stored_page, asked: page_bytes });
                }
                if let Some(asked) = size.filter(|a| *a != stored) {
                    return Err(VolumeError::SizeMismatch { stored, asked });
                }
                stored
            }
            None => {
                let size = size.ok_or(VolumeError::SizeNeeded)?;
                let mut page = vec![0u8; page_bytes as usize];
                page[..16].copy_from_slice(SUPERBLOCK_MAGIC);
                page[16..24].copy_from_slice(&size.to_le_bytes());
                page[24..28].copy_from_slice(&page_bytes.to_le_bytes());
                let record = NewRecord {
                    page: PageId(0),
                    kind: RecordKind::PageImage,
                    payload: page.into(),
                    cpl: true,
                    lsn: None,
                };
                writer.append(vec![record]).await?.durable().await?;
                size
            }
        };
        Ok(BlockVolume {
            writer,
            size_bytes,
            geometry,
            fenced: Cell::new(false),
            fenced_now: tokio::sync::Notify::new(),
            overlay: RefCell::new(Overlay::new()),
            answered_through: Cell::new(Lsn::ZERO),
        })
    }

    /// Appends the records of `ops` and keeps them in the overlay; with `fua`, also waits until
    /// they are durable. The ops are taken `APPEND_RECORDS_MAX` at a time, so a TRIM or
    /// WRITE_ZEROES of a whole device never holds more than one append's records (the writer's
    /// own bounds and the overlay's pace the appends).
    pub async fn apply(&self, ops: impl Iterator<Item = PageOp>, fua: bool) -> Result<(), VolumeError> {
        let applied = self.append_all(ops, fua).await;
        self.note_fence(&applied);
        applied
    }

    /// Resolves once every write answered so far (on any connection) is durable.
    pub async fn flush(&self) -> Result<(), VolumeError> {
        let flushed = self.writer.durable_through(self.answered_through.get()).await.map(drop);
        let flushed = flushed.map_err(VolumeError::from);
        self.note_fence(&flushed);
        flushed
    }

    fn note_fence(&self, result: &Result<(), VolumeError>) {
        if matches!(result, Err(VolumeError::Append(client::AppendError::Fenced))) && !self.fenced.get() {
            eprintln!("borealis nbd: another writer took the volume over; refusing every request");
            self.fenced.set(true);
            self.fenced_now.notify_waiters();
        }
    }

    /// Bytes the overlay holds (payload plus per-op overhead), after dropping what is durable.
    pub fn overlay_bytes(&self) -> usize {
        let mut overlay = self.overlay.borrow_mut();
        overlay.prune(self.writer.vdl().0);
        overlay.bytes()
    }

    /// True once another writer took the volume over.
    pub fn is_fenced(&self) -> bool {
        self.fenced.get()
    }

    /// Resolves once another writer took the volume over.
    pub async fn fenced_wait(&self) {
        let fenced_now = self.fenced_now.notified();
        if !self.fenced.get() {
            fenced_now.await;
        }
    }

    async fn append_all(&self, mut ops: impl Iterator<Item = PageOp>, fua: bool) -> Result<(), VolumeError> {
        let mut last = Lsn::ZERO;
        loop {
            let chunk: Vec<PageOp> = ops.by_ref().take(APPEND_RECORDS_MAX).collect();
            if chunk.is_empty() {
                break;
            }
            self.make_room().await?;
            let mut records: Vec<NewRecord> = chunk.iter().map(record_of).collect();
            records.last_mut().expect("not empty").cpl = true;
            let appended = self.writer.append(records).await?;
            assert_eq!(appended.last.0 - appended.first.0 + 1, chunk.len() as u64, "one LSN per record");
            let mut overlay = self.overlay.borrow_mut();
            for (lsn, op) in (appended.first.0..).zip(chunk) {
                overlay.insert(lsn, op);
            }
            last = appended.last;
        }
        if last > self.answered_through.get() {
            self.answered_through.set(last);
        }
        if fua {
            self.writer.durable_through(last).await?;
        }
        Ok(())
    }

    /// Waits while the overlay is above its bound, for VDL to pass its oldest op.
    async fn make_room(&self) -> Result<(), VolumeError> {
        loop {
            let oldest = {
                let mut overlay = self.overlay.borrow_mut();
                overlay.prune(self.writer.vdl().0);
                if overlay.bytes() <= OVERLAY_BYTES_MAX {
                    return Ok(());
                }
                overlay.oldest().expect("an overlay above its bound holds ops")
            };
            self.writer.durable_through(Lsn(oldest)).await?;
        }
    }

    /// A READ's reply: every span's bytes from its page at VDL (zeroes for a page never
    /// written), up to `READ_PAGES_IN_PARALLEL` pages read at once.
    pub async fn read(&self, handle: u64, offset: u64, length: u32) -> Result<Bytes, VolumeError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        // VDL now, kept readable until every page of the reply is read.
        let snapshot = self.writer.snapshot();
        let vdl = snapshot.lsn();
        let spans = nbd::mapping::read_spans(self.geometry, offset, u64::from(length));
        // Storage at `vdl` has every op up to it; the overlay's ops above it are taken now, in
        // the same instant. Writes answered after this point are concurrent with the READ.
        let views: Vec<_> = {
            let mut overlay = self.overlay.borrow_mut();
            overlay.prune(vdl.0);
            spans.map(|span| (span, overlay.view(span.page, vdl.0))).collect()
        };
        let page_bytes = self.geometry.page_bytes();
        let mut pages = stream::iter(views)
            .map(|(span, view)| async move {
                let stored = match view.needs_base() {
                    true => Some(self.writer.read_page(device_page(span.page), vdl).await?),
                    false => None,
                };
                Ok::<_, VolumeError>((span, view, stored))
            })
            .buffered(READ_PAGES_IN_PARALLEL);
        let mut reply = ReadReply::new(handle, length);
        while let Some((span, view, stored)) = pages.try_next().await? {
            let stored = stored.filter(|p| p.lsn != Lsn::ZERO && !p.bytes.is_empty());
            if view.is_empty() {
                match stored {
                    Some(page) => reply.push(&page.bytes[span.in_page()]),
                    None => reply.push_zeroes(span.length as usize),
                }
            } else {
                let page = view.apply(stored.as_ref().map(|p| &p.bytes[..]), page_bytes);
                reply.push(&page[span.in_page()]);
            }
        }
        Ok(reply.finish())
    }
}

/// The volume page holding device page `page`.
fn device_page(page: u64) -> PageId {
    PageId(page + 1)
}

fn record_of(op: &PageOp) -> NewRecord {
    let record = |page: u64, kind, payload| NewRecord {
        page: device_page(page),
        kind,
        payload,
        cpl: false,
        lsn: None,
    };
    match op {
        PageOp::Image { page, data } => record(*page, RecordKind::PageImage, data.clone()),
        PageOp::Patch { page, offset, data } => {
            let patch = protocol::patch::encode(&[PatchEdit { offset: *offset, data }])
                .expect("a span inside one page is a valid patch");
            record(*page, RecordKind::PagePatch, patch)
        }
        PageOp::Zero { page } => record(*page, RecordKind::PageZero, Bytes::new()),
        PageOp::Trim { page } => record(*page, RecordKind::PageTrim, Bytes::new()),
    }
}

/// (size, page size) from a superblock; `None` for a volume never written.
fn parse(page: &PageVersion) -> Result<Option<(u64, u32)>, VolumeError> {
    if page.lsn == Lsn::ZERO || page.bytes.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let bytes = &page.bytes;
    if bytes.len() < 28 || &bytes[..16] != SUPERBLOCK_MAGIC {
        return Err(VolumeError::NotOurs);
    }
    let size = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let page_bytes = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    Ok(Some((size, page_bytes)))
}

/// The NBD error for a failed request.
pub fn nbd_error(error: &VolumeError) -> ErrorCode {
    match error {
        VolumeError::Append(client::AppendError::Fenced) => ErrorCode::Shutdown,
        _ => ErrorCode::Io,
    }
}
