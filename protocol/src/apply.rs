//! Applying records to a page: the storage side of the engine-agnostic record kinds.
//!
//! A page version is a function of the records of that page, in LSN order: `PageImage` replaces
//! the whole page, `PagePatch` overwrites byte ranges, `PageZero` and `PageTrim` make it zeros
//! (a trimmed page reads as zeros; storage may drop its older versions), `Marker` changes
//! nothing. A page no record has touched reads as zeros. Nothing here knows the engine.

use crate::error::{FormatError, FormatResult};
use crate::record::{Record, RecordKind, PAGE_BYTES_MAX, PAGE_BYTES_MIN};

/// Checks a volume page size: a power of two in `PAGE_BYTES_MIN..=PAGE_BYTES_MAX`.
pub fn check_page_bytes(page_bytes: u32) -> FormatResult<()> {
    let len = page_bytes as usize;
    if len.is_power_of_two() && (PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&len) {
        Ok(())
    } else {
        Err(FormatError::Invalid { what: "page size" })
    }
}

/// True if the record changes a page (every kind but `Marker`).
pub fn changes_page(record: &Record) -> bool {
    record.meta().kind != RecordKind::Marker
}

/// Checks that `record` applies to a page of `page_bytes` (an image of exactly that size, patch
/// edits inside it), so a node can refuse at ingest what it could never apply.
pub fn check_fits(record: &Record, page_bytes: u32) -> FormatResult<()> {
    match record.meta().kind {
        RecordKind::PageImage if record.payload().len() != page_bytes as usize => {
            Err(FormatError::Invalid { what: "page image of another page size" })
        }
        RecordKind::PagePatch => {
            let patch = crate::patch::Patch::parse(record.payload())?;
            let inside = patch.edits().all(|e| e.offset as usize + e.data.len() <= page_bytes as usize);
            if inside {
                Ok(())
            } else {
                Err(FormatError::Invalid { what: "patch edit outside the page" })
            }
        }
        _ => Ok(()),
    }
}

/// Applies `record` to `page` (exactly the volume's page size). Fails, leaving `page` untouched,
/// if the record cannot apply to a page of this size: an image of another length, or a patch
/// edit beyond the page.
pub fn apply(page: &mut [u8], record: &Record) -> FormatResult<()> {
    match record.meta().kind {
        RecordKind::PageImage => {
            if record.payload().len() != page.len() {
                return Err(FormatError::Invalid { what: "page image of another page size" });
            }
            page.copy_from_slice(record.payload());
        }
        RecordKind::PagePatch => crate::patch::apply(page, record.payload())?,
        RecordKind::PageZero | RecordKind::PageTrim => page.fill(0),
        RecordKind::Marker => {}
    }
    Ok(())
}

/// The page as of the newest of `records`: `base` (or zeros) with each record applied in order.
/// `records` must be the page's records after `base`'s version, in LSN order.
pub fn materialize<'a>(
    page_bytes: u32,
    base: Option<&[u8]>,
    records: impl IntoIterator<Item = &'a Record>,
) -> FormatResult<Vec<u8>> {
    check_page_bytes(page_bytes)?;
    let mut page = match base {
        Some(bytes) if bytes.len() == page_bytes as usize => bytes.to_vec(),
        Some(_) => return Err(FormatError::Invalid { what: "base image of another page size" }),
        None => vec![0; page_bytes as usize],
    };
    for record in records {
        apply(&mut page, record)?;
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{encode, PatchEdit};
    use crate::{Lsn, PageId, RecordFlags, RecordMeta};
    use bytes::Bytes;

    fn record(lsn: u64, kind: RecordKind, payload: Bytes) -> Record {
        let meta = RecordMeta {
            flags: RecordFlags::empty(),
            prev_page_lsn: if kind == RecordKind::Marker { Lsn(0) } else { Lsn(lsn - 1) },
            ..RecordMeta::after(Lsn(lsn - 1), Lsn(lsn), kind, PageId(7))
        };
        Record::new(meta, payload).unwrap()
    }

    #[test]
    fn each_kind_applies_as_documented() {
        let image = record(1, RecordKind::PageImage, Bytes::from(vec![5u8; 512]));
        let patch =
            record(2, RecordKind::PagePatch, encode(&[PatchEdit { offset: 1, data: b"xy" }]).unwrap());
        let marker = record(3, RecordKind::Marker, Bytes::from_static(b"commit"));
        let page = materialize(512, None, [&image, &patch, &marker]).unwrap();
        assert_eq!(&page[..4], &[5, b'x', b'y', 5]);
        let zero = record(4, RecordKind::PageZero, Bytes::new());
        assert!(materialize(512, Some(&page), [&zero]).unwrap().iter().all(|b| *b == 0));
        let trim = record(5, RecordKind::PageTrim, Bytes::new());
        assert!(materialize(512, Some(&page), [&trim]).unwrap().iter().all(|b| *b == 0));
        assert!(!changes_page(&marker) && changes_page(&trim));
    }

    #[test]
    fn records_that_do_not_fit_the_page_size_are_refused() {
        let image = record(1, RecordKind::PageImage, Bytes::from(vec![5u8; 1024]));
        assert!(materialize(512, None, [&image]).is_err());
        let patch =
            record(2, RecordKind::PagePatch, encode(&[PatchEdit { offset: 600, data: b"xy" }]).unwrap());
        assert!(materialize(512, None, [&patch]).is_err());
        assert!(materialize(1000, None, []).is_err(), "not a power of two");
    }
}
