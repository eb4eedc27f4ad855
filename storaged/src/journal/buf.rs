//! `AlignedBuf`: a fixed-size, zero-initialised byte buffer whose start is 4 KiB-aligned, as
//! O_DIRECT requires, usable as an io_uring buffer.
//!
//! It over-allocates a `Vec<u8>` by one alignment unit and starts at the first aligned byte;
//! the `Vec` is never resized, so the start never moves while the kernel holds the buffer.

use super::format::GROUP_ALIGN;

#[derive(Debug)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes, starting on a `GROUP_ALIGN` boundary.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + GROUP_ALIGN];
        let start = storage.as_ptr().align_offset(GROUP_ALIGN);
        assert!(start < GROUP_ALIGN, "u8 pointers can always be aligned");
        AlignedBuf { storage, start, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

// SAFETY: the pointer is into `storage`, which is never reallocated after construction, and is
// owned by the buffer, so it stays valid and fixed while io_uring holds the buffer; the first
// `len` bytes from it are initialised (zeroed at construction).
unsafe impl tokio_uring::buf::IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.len
    }
}

// SAFETY: as for `IoBuf`; every byte is always initialised, so `set_init` has nothing to do.
unsafe impl tokio_uring::buf::IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_slice().as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_aligned_and_zeroed() {
        for len in [0, 1, 4096, 10_000] {
            let buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % GROUP_ALIGN, 0);
            assert!(buf.as_slice().iter().all(|b| *b == 0));
            assert_eq!(buf.len(), len);
        }
    }
}
