//! Block → page mapping: pure functions that turn an NBD byte range into per-page work on a
//! volume of fixed-size pages.
//!
//! - WRITE: a page the range covers whole becomes [`PageOp::Image`]; a page it covers in part
//!   becomes [`PageOp::Patch`] of just those bytes. No read-modify-write: a Borealis `PagePatch`
//!   record carries the edit and storage applies it to whatever version the page has.
//! - WRITE_ZEROES: whole pages become [`PageOp::Zero`], partial ones a `Patch` of zeroes. The
//!   `NBD_CMD_FLAG_NO_HOLE` flag changes nothing: a `PageZero` record reads back as zeroes and
//!   never makes a later write fail for lack of space.
//! - TRIM: whole pages become [`PageOp::Trim`]; partial ones a `Patch` of zeroes. The document
//!   lets a server ignore a trim, or round it inward, because after a TRIM the client "MUST NOT
//!   make any assumptions about the contents" until it writes again. We zero the partial ends
//!   instead so that a trimmed range always reads back as zeroes, the same as a `PageTrim` page:
//!   TRIM and WRITE_ZEROES are then observably identical, a client that wrongly assumes
//!   discard-zeroes-data stays correct, and the cost is at most two small patches per request.
//! - READ: [`Spans`], one (page, range in page) per page touched, in order, to assemble.
//!
//! Every function is lazy: a 4 GiB TRIM on 512-byte pages is an iterator of 8 Mi ops, not a
//! vector, so the driver bounds how many it keeps in flight. Ops come out in ascending page order,
//! one per page, and WRITE data is sliced from the request's `Bytes`, never copied. Ranges must not
//! overflow `u64`; the request decoder has already checked them against the export size.

use std::ops::Range;

use bytes::Bytes;

use crate::export::{check_page_bytes, ConfigError, PAGE_BYTES_MAX};

/// Zeroes for partial-page patches, shared and never copied.
static ZEROES: [u8; PAGE_BYTES_MAX as usize] = [0; PAGE_BYTES_MAX as usize];

/// The page size of a volume: a power of two in `PAGE_BYTES_MIN..=PAGE_BYTES_MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageGeometry {
    page_bytes: u32,
}

impl PageGeometry {
    pub fn new(page_bytes: u32) -> Result<Self, ConfigError> {
        check_page_bytes(page_bytes)?;
        Ok(Self { page_bytes })
    }

    pub fn page_bytes(self) -> u32 {
        self.page_bytes
    }

    /// The pages `length` bytes at `offset` touch, in order.
    pub fn spans(self, offset: u64, length: u64) -> Spans {
        assert!(length <= u64::MAX - offset, "request range overflows u64");
        Spans { start: offset, next: offset, end: offset + length, page_bytes: self.page_bytes }
    }
}

/// The part of one page a byte range covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub page: u64,
    /// First byte inside the page.
    pub offset: u32,
    /// Bytes inside the page, at least 1.
    pub length: u32,
    /// Where this span starts relative to the start of the request.
    pub request_offset: u64,
    /// The span covers the whole page.
    pub whole: bool,
}

impl Span {
    /// The covered bytes as a range of the page.
    pub fn in_page(&self) -> Range<usize> {
        self.offset as usize..(self.offset + self.length) as usize
    }

    /// The covered bytes as a range of the request's data.
    pub fn in_request(&self) -> Range<usize> {
        let start = self.request_offset as usize;
        start..start + self.length as usize
    }
}

/// Iterator over the [`Span`]s of a byte range; knows its exact length.
#[derive(Clone, Debug)]
pub struct Spans {
    start: u64,
    next: u64,
    end: u64,
    page_bytes: u32,
}

impl Iterator for Spans {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        if self.next >= self.end {
            return None;
        }
        let page_bytes = u64::from(self.page_bytes);
        let offset = self.next % page_bytes;
        let length = (page_bytes - offset).min(self.end - self.next);
        let span = Span {
            page: self.next / page_bytes,
            offset: offset as u32,
            length: length as u32,
            request_offset: self.next - self.start,
            whole: length == page_bytes,
        };
        self.next += length;
        Some(span)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let pages = if self.next >= self.end {
            0
        } else {
            let page_bytes = u64::from(self.page_bytes);
            (self.end - 1) / page_bytes - self.next / page_bytes + 1
        };
        let pages = usize::try_from(pages).unwrap_or(usize::MAX);
        (pages, Some(pages))
    }
}

impl ExactSizeIterator for Spans {}

/// One change to one page; the records the driver appends through the Borealis writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageOp {
    /// The whole page (`data.len() == page_bytes`): a `PageImage` record.
    Image { page: u64, data: Bytes },
    /// `data` at `offset` inside the page, rest unchanged: a `PagePatch` record with one edit.
    Patch { page: u64, offset: u32, data: Bytes },
    /// The page reads as zeroes: a `PageZero` record.
    Zero { page: u64 },
    /// The page is deallocated and reads as zeroes: a `PageTrim` record.
    Trim { page: u64 },
}

impl PageOp {
    pub fn page(&self) -> u64 {
        match self {
            Self::Image { page, .. }
            | Self::Patch { page, .. }
            | Self::Zero { page }
            | Self::Trim { page } => *page,
        }
    }
}

/// The ops of a WRITE of `data` at `offset`.
pub fn write_ops(geometry: PageGeometry, offset: u64, data: Bytes) -> WriteOps {
    WriteOps { spans: geometry.spans(offset, data.len() as u64), data }
}

/// The ops of a WRITE_ZEROES of `length` bytes at `offset`.
pub fn write_zeroes_ops(geometry: PageGeometry, offset: u64, length: u64) -> ZeroOps {
    ZeroOps { spans: geometry.spans(offset, length), whole: WholePage::Zero }
}

/// The ops of a TRIM of `length` bytes at `offset` (partial pages zeroed, see the module docs).
pub fn trim_ops(geometry: PageGeometry, offset: u64, length: u64) -> ZeroOps {
    ZeroOps { spans: geometry.spans(offset, length), whole: WholePage::Trim }
}

/// The spans a READ of `length` bytes at `offset` assembles, in order.
pub fn read_spans(geometry: PageGeometry, offset: u64, length: u64) -> Spans {
    geometry.spans(offset, length)
}

/// Iterator over the ops of a WRITE.
#[derive(Clone, Debug)]
pub struct WriteOps {
    spans: Spans,
    data: Bytes,
}

impl Iterator for WriteOps {
    type Item = PageOp;

    fn next(&mut self) -> Option<PageOp> {
        let span = self.spans.next()?;
        let data = self.data.slice(span.in_request());
        Some(if span.whole {
            PageOp::Image { page: span.page, data }
        } else {
            PageOp::Patch { page: span.page, offset: span.offset, data }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for WriteOps {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WholePage {
    Zero,
    Trim,
}

/// Iterator over the ops of a WRITE_ZEROES or a TRIM.
#[derive(Clone, Debug)]
pub struct ZeroOps {
    spans: Spans,
    whole: WholePage,
}

impl Iterator for ZeroOps {
    type Item = PageOp;

    fn next(&mut self) -> Option<PageOp> {
        let span = self.spans.next()?;
        let page = span.page;
        Some(match (span.whole, self.whole) {
            (true, WholePage::Zero) => PageOp::Zero { page },
            (true, WholePage::Trim) => PageOp::Trim { page },
            (false, _) => {
                let data = Bytes::from_static(&ZEROES[..span.length as usize]);
                PageOp::Patch { page, offset: span.offset, data }
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for ZeroOps {}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
