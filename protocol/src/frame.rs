//! The frame: a 20-byte header that can be trusted before the body is read, then the body.
//!
//! ```text
//! 0   [4]  magic           b"BRLS"
//! 4   u8   version         FRAME_VERSION
//! 5   u8   message type    see `Message::type_code`
//! 6   u16  reserved        0
//! 8   u32  body_len        <= FRAME_BODY_BYTES_MAX
//! 12  u32  body_crc32c     CRC32C of the body
//! 16  u32  header_crc32c   CRC32C of bytes 0..16
//! ```
//! A stream reader reads 20 bytes, calls [`FrameHeader::decode`] (which bounds `body_len`), reads
//! exactly `body_len` more bytes and calls [`decode_body`]. So a reader never buffers more than
//! `FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX` for one frame, whatever a peer sends.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{expect_at_most, expect_crc, expect_zero, u16_at, u32_at};
use crate::error::{FormatError, FormatResult};
use crate::messages::Message;

/// The four bytes every frame starts with.
pub const FRAME_MAGIC: [u8; 4] = *b"BRLS";
/// Frame format version written by this build (and the number in the ALPN name).
pub const FRAME_VERSION: u8 = 1;
/// ALPN protocol name for QUIC connections speaking this frame version.
pub const ALPN: &[u8] = b"borealis/1";
/// Size of the frame header.
pub const FRAME_HEADER_BYTES: usize = 20;
/// Largest frame body: bounds every buffer a reader allocates for one frame.
pub const FRAME_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

const _: () = assert!(FRAME_BODY_BYTES_MAX <= u32::MAX as usize);

/// A verified frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub type_code: u8,
    pub body_len: u32,
    pub body_crc: u32,
}

impl FrameHeader {
    /// Verifies magic, version, reserved bits, header checksum and the body length bound.
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES]) -> FormatResult<FrameHeader> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != FRAME_MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        expect_crc(u32_at(bytes, 16), crc32c::crc32c(&bytes[..16]), "frame header")?;
        if bytes[4] != FRAME_VERSION {
            return Err(FormatError::UnsupportedVersion { what: "frame", found: bytes[4] });
        }
        expect_zero(u64::from(u16_at(bytes, 6)), "frame reserved")?;
        let body_len = u32_at(bytes, 8);
        expect_at_most(body_len as usize, FRAME_BODY_BYTES_MAX, "frame body")?;
        Ok(FrameHeader { type_code: bytes[5], body_len, body_crc: u32_at(bytes, 12) })
    }

    fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut out = [0u8; FRAME_HEADER_BYTES];
        let mut w = &mut out[..];
        w.put_slice(&FRAME_MAGIC);
        w.put_u8(FRAME_VERSION);
        w.put_u8(self.type_code);
        w.put_u16_le(0);
        w.put_u32_le(self.body_len);
        w.put_u32_le(self.body_crc);
        let header_crc = crc32c::crc32c(&out[..16]);
        out[16..].copy_from_slice(&header_crc.to_le_bytes());
        out
    }
}

/// Encodes `message` as one frame appended to `out`. Fails if the message breaks a format rule
/// or its body would exceed `FRAME_BODY_BYTES_MAX`; `out` is then left as it was.
pub fn encode_frame(message: &Message, out: &mut BytesMut) -> FormatResult<()> {
    message.check()?;
    let start = out.len();
    out.put_bytes(0, FRAME_HEADER_BYTES);
    message.encode_body(out);
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    if let Err(error) = expect_at_most(body_len, FRAME_BODY_BYTES_MAX, "frame body") {
        out.truncate(start);
        return Err(error);
    }
    let body_crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
    let header = FrameHeader { type_code: message.type_code(), body_len: body_len as u32, body_crc };
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header.encode());
    Ok(())
}

/// Encodes `message` as a frame of its own.
pub fn frame_bytes(message: &Message) -> FormatResult<Bytes> {
    let mut out = BytesMut::new();
    encode_frame(message, &mut out)?;
    Ok(out.freeze())
}

/// Verifies the body checksum and decodes the body of a frame whose header was verified.
pub fn decode_body(header: &FrameHeader, body: Bytes) -> FormatResult<Message> {
    if body.len() != header.body_len as usize {
        return Err(FormatError::InconsistentLength { what: "frame body" });
    }
    expect_crc(header.body_crc, crc32c::crc32c(&body), "frame body")?;
    Message::decode_body(header.type_code, body)
}

/// Takes one whole frame off the front of `buf`, if it holds one. Returns `Ok(None)` when more
/// bytes are needed; after an error the stream is broken and must be closed.
pub fn decode_frame(buf: &mut BytesMut) -> FormatResult<Option<Message>> {
    let Some(header_bytes) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let header = FrameHeader::decode(header_bytes)?;
    let frame_len = FRAME_HEADER_BYTES + header.body_len as usize;
    if buf.len() < frame_len {
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_len).freeze();
    let body = frame.split_off(FRAME_HEADER_BYTES);
    decode_body(&header, body).map(Some)
}

/// Decodes a buffer that must hold exactly one frame.
pub fn decode_frame_exact(frame: Bytes) -> FormatResult<Message> {
    let header_bytes = frame.first_chunk::<FRAME_HEADER_BYTES>().ok_or(FormatError::Truncated {
        what: "frame header",
        needed: FRAME_HEADER_BYTES,
        available: frame.len(),
    })?;
    let header = FrameHeader::decode(header_bytes)?;
    decode_body(&header, frame.slice(FRAME_HEADER_BYTES..))
}
