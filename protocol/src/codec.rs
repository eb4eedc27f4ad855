//! Little-endian, bounds-checked field readers and writers used by every format in this crate.
//!
//! [`Reader`] works over `Bytes` so that slicing a payload out of a frame shares the buffer
//! instead of copying it. Every read checks the remaining length first and returns
//! [`FormatError::Truncated`], so no decoder built on it can index out of bounds.

use bytes::{BufMut, Bytes};

use crate::error::{FormatError, FormatResult};

/// A cursor over an immutable byte buffer.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `len` bytes as a shared slice of the input (no copy).
    pub fn bytes(&mut self, len: usize, what: &'static str) -> FormatResult<Bytes> {
        self.need(len, what)?;
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> FormatResult<[u8; N]> {
        self.need(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> FormatResult<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> FormatResult<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> FormatResult<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> FormatResult<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn u128(&mut self, what: &'static str) -> FormatResult<u128> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    /// Reads a `u32` count and rejects it if above `max` or if even `min_item_bytes` per item
    /// could not fit in what remains, so a caller may reserve `count` items safely.
    pub fn count(&mut self, max: usize, min_item_bytes: usize, what: &'static str) -> FormatResult<usize> {
        let count = self.u32(what)? as usize;
        if count > max {
            return Err(FormatError::LengthOverMax { what, len: count as u64, max: max as u64 });
        }
        if count.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(FormatError::InconsistentLength { what });
        }
        Ok(count)
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(&self, what: &'static str) -> FormatResult<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(FormatError::InconsistentLength { what })
        }
    }

    fn need(&self, needed: usize, what: &'static str) -> FormatResult<()> {
        let available = self.remaining();
        if needed > available {
            return Err(FormatError::Truncated { what, needed, available });
        }
        Ok(())
    }
}

/// Fails with `ReservedNonZero` unless `value` is zero.
pub fn expect_zero(value: u64, what: &'static str) -> FormatResult<()> {
    if value == 0 {
        Ok(())
    } else {
        Err(FormatError::ReservedNonZero { what })
    }
}

/// Fails with `LengthOverMax` if `len > max`.
pub fn expect_at_most(len: usize, max: usize, what: &'static str) -> FormatResult<()> {
    if len > max {
        return Err(FormatError::LengthOverMax { what, len: len as u64, max: max as u64 });
    }
    Ok(())
}

/// Fails with `ChecksumMismatch` unless `stored == computed`.
pub fn expect_crc(stored: u32, computed: u32, what: &'static str) -> FormatResult<()> {
    if stored == computed {
        Ok(())
    } else {
        Err(FormatError::ChecksumMismatch { what, stored, computed })
    }
}

/// Writes a `u32` count; the caller has checked it against the format's maximum.
pub fn put_count(out: &mut impl BufMut, count: usize) {
    let count = u32::try_from(count).expect("count checked against its maximum by the caller");
    out.put_u32_le(count);
}

/// The little-endian `u16` at `offset` of a fixed-size header.
pub fn u16_at<const N: usize>(header: &[u8; N], offset: usize) -> u16 {
    u16::from_le_bytes([header[offset], header[offset + 1]])
}

/// The little-endian `u32` at `offset` of a fixed-size header.
pub fn u32_at<const N: usize>(header: &[u8; N], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&header[offset..offset + 4]);
    u32::from_le_bytes(b)
}

/// The little-endian `u64` at `offset` of a fixed-size header.
pub fn u64_at<const N: usize>(header: &[u8; N], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&header[offset..offset + 8]);
    u64::from_le_bytes(b)
}
