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
//! Writes are answered once durable (VDL covers them), so a completed WRITE is visible to every
//! later READ on any connection (reads are at VDL) and a FLUSH has nothing left to wait for.

use bytes::Bytes;
use client::{NewRecord, PageVersion, Writer};
use nbd::{ErrorCode, PageOp, ReadReply};
use protocol::patch::PatchEdit;
use protocol::{Lsn, PageId, RecordKind};

/// The superblock's first bytes.
pub const SUPERBLOCK_MAGIC: &[u8; 16] = b"BOREALIS-NBD-v01";
/// Records per append: a large WRITE is split into appends of at most this many.
pub const APPEND_RECORDS_MAX: usize = 128;
/// Pages of one READ read at once (in order): a 1 MiB read is 256 pages.
pub const READ_PAGES_IN_PARALLEL: usize = 16;

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
    fenced: std::cell::Cell<bool>,
    fenced_now: tokio::sync::Notify,
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
            fenced: std::cell::Cell::new(false),
            fenced_now: tokio::sync::Notify::new(),
        })
    }

    /// Appends the records of `ops` and waits until they are durable. The ops are taken
    /// `APPEND_RECORDS_MAX` at a time, so a TRIM or WRITE_ZEROES of a whole device never holds
    /// more than one append's records (the writer's own bounds pace the appends).
    pub async fn apply(&self, ops: impl Iterator<Item = PageOp>) -> Result<(), VolumeError> {
        let applied = self.append_all(ops).await;
        if matches!(applied, Err(VolumeError::Append(client::AppendError::Fenced))) && !self.fenced.get() {
            eprintln!("borealis nbd: another writer took the volume over; refusing every request");
            self.fenced.set(true);
            self.fenced_now.notify_waiters();
        }
        applied
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

    async fn append_all(&self, mut ops: impl Iterator<Item = PageOp>) -> Result<(), VolumeError> {
        let mut last = None;
        loop {
            let mut chunk: Vec<NewRecord> = ops.by_ref().take(APPEND_RECORDS_MAX).map(record_of).collect();
            let Some(end) = chunk.last_mut() else { break };
            end.cpl = true;
            last = Some(self.writer.append(chunk).await?);
        }
        if let Some(appended) = last {
            // VDL passes CPLs in LSN order: the last chunk durable means every chunk is.
            appended.durable().await?;
        }
        Ok(())
    }

    /// A READ's reply: every span's bytes from its page at VDL (zeroes for a page never
    /// written), up to `READ_PAGES_IN_PARALLEL` pages read at once.
    pub async fn read(&self, handle: u64, offset: u64, length: u32) -> Result<Bytes, VolumeError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let vdl = self.writer.vdl();
        let spans = nbd::mapping::read_spans(self.geometry, offset, u64::from(length));
        let mut pages = stream::iter(spans)
            .map(|span| async move {
                let page = self.writer.read_page(device_page(span.page), vdl).await?;
                Ok::<_, VolumeError>((span, page))
            })
            .buffered(READ_PAGES_IN_PARALLEL);
        let mut reply = ReadReply::new(handle, length);
        while let Some((span, page)) = pages.try_next().await? {
            if page.lsn == Lsn::ZERO || page.bytes.is_empty() {
                reply.push_zeroes(span.length as usize);
            } else {
                reply.push(&page.bytes[span.in_page()]);
            }
        }
        Ok(reply.finish())
    }
}

/// The volume page holding device page `page`.
fn device_page(page: u64) -> PageId {
    PageId(page + 1)
}

fn record_of(op: PageOp) -> NewRecord {
    let record = |page: u64, kind, payload| NewRecord {
        page: device_page(page),
        kind,
        payload,
        cpl: false,
        lsn: None,
    };
    match op {
        PageOp::Image { page, data } => record(page, RecordKind::PageImage, data),
        PageOp::Patch { page, offset, data } => {
            let patch = protocol::patch::encode(&[PatchEdit { offset, data: &data }])
                .expect("a span inside one page is a valid patch");
            record(page, RecordKind::PagePatch, patch)
        }
        PageOp::Zero { page } => record(page, RecordKind::PageZero, Bytes::new()),
        PageOp::Trim { page } => record(page, RecordKind::PageTrim, Bytes::new()),
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
