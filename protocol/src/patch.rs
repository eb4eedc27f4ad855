//! `PagePatch` payloads: an ordered list of (offset, bytes) edits to one page.
//!
//! Layout (little-endian):
//! ```text
//! 0   u16  edit_count        1..=PATCH_EDITS_MAX
//! 2   u16  reserved          0
//! 4   edit_count × { u32 offset, u32 len (>= 1), len bytes }
//! ```
//! Each edit must lie inside the largest page (`offset + len <= PAGE_BYTES_MAX`); whether it lies
//! inside the volume's page size is checked when the patch is applied. Edits apply in order, so a
//! later edit wins where two overlap.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{expect_at_most, expect_zero};
use crate::error::{FormatError, FormatResult};
use crate::record::PAGE_BYTES_MAX;

/// Most edits one patch may carry.
pub const PATCH_EDITS_MAX: usize = 1024;
const PATCH_HEADER_BYTES: usize = 4;
const EDIT_HEADER_BYTES: usize = 8;
/// Patch bytes that are not page bytes, at most.
pub const PATCH_OVERHEAD_BYTES_MAX: usize = PATCH_HEADER_BYTES + PATCH_EDITS_MAX * EDIT_HEADER_BYTES;

/// One edit: write `data` at `offset` of the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchEdit<'a> {
    pub offset: u32,
    pub data: &'a [u8],
}

/// A validated patch: every edit is well formed and the edits fill the payload exactly.
#[derive(Clone, Copy, Debug)]
pub struct Patch<'a> {
    edit_bytes: &'a [u8],
}

impl<'a> Patch<'a> {
    /// Validates `payload` as a patch.
    pub fn parse(payload: &'a [u8]) -> FormatResult<Patch<'a>> {
        let (header, mut rest) = take(payload, PATCH_HEADER_BYTES, "patch header")?;
        let count = usize::from(u16::from_le_bytes([header[0], header[1]]));
        expect_zero(u64::from(u16::from_le_bytes([header[2], header[3]])), "patch reserved")?;
        if count == 0 {
            return Err(FormatError::Invalid { what: "patch with no edits" });
        }
        expect_at_most(count, PATCH_EDITS_MAX, "patch edit count")?;
        let edit_bytes = rest;
        for _ in 0..count {
            let (_, tail) = next_edit(rest)?;
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(FormatError::InconsistentLength { what: "patch" });
        }
        Ok(Patch { edit_bytes })
    }

    /// The edits, in the order they apply.
    pub fn edits(&self) -> impl Iterator<Item = PatchEdit<'a>> {
        let mut rest = self.edit_bytes;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let (edit, tail) = next_edit(rest).expect("patch validated by Patch::parse");
            rest = tail;
            Some(edit)
        })
    }
}

/// Checks that `payload` is a well-formed patch.
pub fn validate(payload: &[u8]) -> FormatResult<()> {
    Patch::parse(payload).map(drop)
}

/// Encodes `edits` as a patch payload.
pub fn encode(edits: &[PatchEdit<'_>]) -> FormatResult<Bytes> {
    if edits.is_empty() {
        return Err(FormatError::Invalid { what: "patch with no edits" });
    }
    expect_at_most(edits.len(), PATCH_EDITS_MAX, "patch edit count")?;
    let data_bytes: usize = edits.iter().map(|e| e.data.len()).sum();
    let mut out = BytesMut::with_capacity(PATCH_HEADER_BYTES + edits.len() * EDIT_HEADER_BYTES + data_bytes);
    out.put_u16_le(edits.len() as u16);
    out.put_u16_le(0);
    for edit in edits {
        check_edit_bounds(edit.offset, edit.data.len(), PAGE_BYTES_MAX)?;
        out.put_u32_le(edit.offset);
        out.put_u32_le(edit.data.len() as u32);
        out.put_slice(edit.data);
    }
    Ok(out.freeze())
}

/// Applies the patch in `payload` to `page`. Fails, leaving `page` untouched, if the patch is
/// malformed or an edit falls outside the page.
pub fn apply(page: &mut [u8], payload: &[u8]) -> FormatResult<()> {
    let patch = Patch::parse(payload)?;
    for edit in patch.edits() {
        check_edit_bounds(edit.offset, edit.data.len(), page.len())?;
    }
    for edit in patch.edits() {
        let start = edit.offset as usize;
        page[start..start + edit.data.len()].copy_from_slice(edit.data);
    }
    Ok(())
}

fn check_edit_bounds(offset: u32, len: usize, page_bytes: usize) -> FormatResult<()> {
    if len == 0 {
        return Err(FormatError::Invalid { what: "empty patch edit" });
    }
    match (offset as usize).checked_add(len) {
        Some(end) if end <= page_bytes => Ok(()),
        _ => Err(FormatError::Invalid { what: "patch edit outside the page" }),
    }
}

fn next_edit(bytes: &[u8]) -> FormatResult<(PatchEdit<'_>, &[u8])> {
    let (head, rest) = take(bytes, EDIT_HEADER_BYTES, "patch edit header")?;
    let offset = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    check_edit_bounds(offset, len, PAGE_BYTES_MAX)?;
    let (data, rest) = take(rest, len, "patch edit data")?;
    Ok((PatchEdit { offset, data }, rest))
}

fn take<'a>(bytes: &'a [u8], len: usize, what: &'static str) -> FormatResult<(&'a [u8], &'a [u8])> {
    if len > bytes.len() {
        return Err(FormatError::Truncated { what, needed: len, available: bytes.len() });
    }
    Ok(bytes.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_round_trips_and_applies_in_order() {
        let payload =
            encode(&[PatchEdit { offset: 2, data: b"abcd" }, PatchEdit { offset: 4, data: b"XY" }]).unwrap();
        let mut page = vec![0u8; 512];
        apply(&mut page, &payload).unwrap();
        assert_eq!(&page[..8], b"\0\0abXY\0\0");
        assert_eq!(Patch::parse(&payload).unwrap().edits().count(), 2);
    }

    #[test]
    fn patch_outside_the_page_is_rejected_and_leaves_the_page_untouched() {
        let payload =
            encode(&[PatchEdit { offset: 0, data: b"ok" }, PatchEdit { offset: 510, data: b"abc" }]).unwrap();
        let mut page = vec![0u8; 512];
        assert!(apply(&mut page, &payload).is_err());
        assert!(page.iter().all(|b| *b == 0));
    }

    #[test]
    fn malformed_patches_are_typed_errors() {
        assert!(matches!(validate(&[]), Err(FormatError::Truncated { .. })));
        assert!(matches!(validate(&[0, 0, 0, 0]), Err(FormatError::Invalid { .. })));
        let good = encode(&[PatchEdit { offset: 0, data: b"a" }]).unwrap();
        let mut trailing = good.to_vec();
        trailing.push(9);
        assert!(matches!(validate(&trailing), Err(FormatError::InconsistentLength { .. })));
        assert!(matches!(validate(&good[..good.len() - 1]), Err(FormatError::Truncated { .. })));
    }
}
