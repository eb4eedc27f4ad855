//! Volume page 0: the superblock that says the volume holds a SQLite database and how many bytes
//! long the database file is. The file's pages are volume pages 1, 2, ...; the superblock is
//! rewritten in the same atomic group as the pages whenever a commit changes the size, so the
//! size read back after a crash always belongs to the pages read back.
//!
//! Layout (little endian, rest of the page zero):
//!
//! ```text
//! 0          16        24        28
//! +----------+---------+---------+-----------
//! | magic    | size    | page    | zeroes ...
//! | 16 B     | u64 B   | u32 B   |
//! +----------+---------+---------+-----------
//! ```

use bytes::Bytes;

/// The superblock's first bytes ("v01" is the layout version).
pub const MAGIC: &[u8; 16] = b"BOREALIS-SQLv01\0";
/// The volume's page size, which is also SQLite's: one database page is one volume page.
pub const PAGE_BYTES: u32 = 4096;
/// `PAGE_BYTES` as a `usize`, for slicing.
pub const PAGE: usize = PAGE_BYTES as usize;

/// The superblock's volume page.
pub const PAGE_ID: protocol::PageId = protocol::PageId(0);

const SIZE_AT: usize = 16;
const PAGE_BYTES_AT: usize = 24;
const END: usize = 28;
const _: () = assert!(END <= PAGE);

/// Why volume page 0 is not a superblock this VFS can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("volume page 0 is not a Borealis SQLite superblock (another program's volume?)")]
    NotOurs,
    #[error("the volume was written with {0}-byte pages; this VFS uses {PAGE_BYTES}")]
    PageSize(u32),
}

/// The database file's size from a stored superblock; `None` for a volume never written
/// (no record, or all zeros).
pub fn parse(page: Option<&[u8]>) -> Result<Option<u64>, SuperblockError> {
    let Some(bytes) = page.filter(|b| b.iter().any(|x| *x != 0)) else { return Ok(None) };
    if bytes.len() < END || &bytes[..SIZE_AT] != MAGIC {
        return Err(SuperblockError::NotOurs);
    }
    let size = u64::from_le_bytes(bytes[SIZE_AT..PAGE_BYTES_AT].try_into().expect("8 bytes"));
    let page_bytes = u32::from_le_bytes(bytes[PAGE_BYTES_AT..END].try_into().expect("4 bytes"));
    if page_bytes != PAGE_BYTES {
        return Err(SuperblockError::PageSize(page_bytes));
    }
    Ok(Some(size))
}

/// The superblock page of a database file of `size` bytes.
pub fn encode(size: u64) -> Bytes {
    let mut page = vec![0u8; PAGE];
    page[..SIZE_AT].copy_from_slice(MAGIC);
    page[SIZE_AT..PAGE_BYTES_AT].copy_from_slice(&size.to_le_bytes());
    page[PAGE_BYTES_AT..END].copy_from_slice(&PAGE_BYTES.to_le_bytes());
    page.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superblock_reads_back_its_size() {
        assert_eq!(parse(Some(&encode(123 * 4096))), Ok(Some(123 * 4096)));
    }

    #[test]
    fn a_volume_never_written_has_no_superblock() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some(&[0u8; PAGE])), Ok(None));
    }

    #[test]
    fn another_programs_page_zero_is_refused() {
        let mut nbd = vec![0u8; PAGE];
        nbd[..16].copy_from_slice(b"BOREALIS-NBD-v01");
        assert_eq!(parse(Some(&nbd)), Err(SuperblockError::NotOurs));
        let mut other = encode(4096).to_vec();
        other[24..28].copy_from_slice(&8192u32.to_le_bytes());
        assert_eq!(parse(Some(&other)), Err(SuperblockError::PageSize(8192)));
    }
}
