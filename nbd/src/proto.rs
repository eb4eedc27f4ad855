//! The NBD wire vocabulary: every constant this gateway uses, named as in the protocol document
//! (`NetworkBlockDevice/nbd`, `doc/proto.md`), and the fixed-size headers with their codecs.
//!
//! Everything on the NBD wire is big-endian. The layouts this crate reads and writes:
//!
//! ```text
//! server greeting (18 bytes)            client flags (4 bytes)
//! 0  u64 NBDMAGIC                       0  u32 client flags (NBD_FLAG_C_*)
//! 8  u64 IHAVEOPT
//! 16 u16 handshake flags (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)
//!
//! option request (16 bytes + data)      option reply (20 bytes + data)
//! 0  u64 IHAVEOPT                       0  u64 NBD_OPT_REPLY_MAGIC
//! 8  u32 option (NBD_OPT_*)             8  u32 option being answered
//! 12 u32 data length                    12 u32 reply type (NBD_REP_*)
//! 16 ..  data                           16 u32 data length
//!                                       20 ..  data
//!
//! NBD_OPT_EXPORT_NAME answer (10 bytes, then 124 zero bytes unless NBD_FLAG_C_NO_ZEROES)
//! 0  u64 export size in bytes
//! 8  u16 transmission flags (NBD_FLAG_*)
//!
//! NBD_REP_INFO data: u16 info type, then NBD_INFO_EXPORT:     u64 size, u16 transmission flags
//!                                         NBD_INFO_NAME:       name bytes
//!                                         NBD_INFO_DESCRIPTION: description bytes
//!                                         NBD_INFO_BLOCK_SIZE: u32 min, u32 preferred, u32 max
//!
//! request (28 bytes, + length data bytes for NBD_CMD_WRITE)
//! 0  u32 NBD_REQUEST_MAGIC
//! 4  u16 command flags (NBD_CMD_FLAG_*)
//! 6  u16 type (NBD_CMD_*)
//! 8  u64 handle (called "cookie" in newer versions of the document)
//! 16 u64 offset
//! 24 u32 length
//!
//! simple reply (16 bytes, + length data bytes for a successful NBD_CMD_READ)
//! 0  u32 NBD_SIMPLE_REPLY_MAGIC
//! 4  u32 error (0 or NBD_E*)
//! 8  u64 handle
//! ```
//!
//! Structured replies (`NBD_STRUCTURED_REPLY_MAGIC`) and extended headers are not spoken: the
//! server answers `NBD_OPT_STRUCTURED_REPLY` with `NBD_REP_ERR_UNSUP`, so only simple replies are
//! ever sent. Decoders return a typed [`DecodeError`] for a bad magic; they never panic.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

// ---- magics ----

/// `NBDMAGIC`, the first 8 bytes the server sends (also known as `INIT_PASSWD`).
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle greeting's second magic and the magic of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every fixed-newstyle option reply.
pub const NBD_OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every transmission-phase request.
pub const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply (formerly `NBD_REPLY_MAGIC`).
pub const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk; never sent by this server (not negotiated).
pub const NBD_STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// ---- handshake flags (u16, server) and client flags (u32) ----

pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

// ---- transmission flags (u16) ----

pub const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
pub const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
pub const NBD_FLAG_ROTATIONAL: u16 = 1 << 4;
pub const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;
pub const NBD_FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const NBD_FLAG_SEND_DF: u16 = 1 << 7;
pub const NBD_FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const NBD_FLAG_SEND_RESIZE: u16 = 1 << 9;
pub const NBD_FLAG_SEND_CACHE: u16 = 1 << 10;
pub const NBD_FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// ---- option types ----

pub const NBD_OPT_EXPORT_NAME: u32 = 1;
pub const NBD_OPT_ABORT: u32 = 2;
pub const NBD_OPT_LIST: u32 = 3;
pub const NBD_OPT_PEEK_EXPORT: u32 = 4;
pub const NBD_OPT_STARTTLS: u32 = 5;
pub const NBD_OPT_INFO: u32 = 6;
pub const NBD_OPT_GO: u32 = 7;
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
pub const NBD_OPT_LIST_META_CONTEXT: u32 = 9;
pub const NBD_OPT_SET_META_CONTEXT: u32 = 10;

// ---- option reply types (errors have bit 31 set) ----

const NBD_REP_FLAG_ERROR: u32 = 1 << 31;
pub const NBD_REP_ACK: u32 = 1;
pub const NBD_REP_SERVER: u32 = 2;
pub const NBD_REP_INFO: u32 = 3;
pub const NBD_REP_META_CONTEXT: u32 = 4;
pub const NBD_REP_ERR_UNSUP: u32 = NBD_REP_FLAG_ERROR | 1;
pub const NBD_REP_ERR_POLICY: u32 = NBD_REP_FLAG_ERROR | 2;
pub const NBD_REP_ERR_INVALID: u32 = NBD_REP_FLAG_ERROR | 3;
pub const NBD_REP_ERR_PLATFORM: u32 = NBD_REP_FLAG_ERROR | 4;
pub const NBD_REP_ERR_TLS_REQD: u32 = NBD_REP_FLAG_ERROR | 5;
pub const NBD_REP_ERR_UNKNOWN: u32 = NBD_REP_FLAG_ERROR | 6;
pub const NBD_REP_ERR_SHUTDOWN: u32 = NBD_REP_FLAG_ERROR | 7;
pub const NBD_REP_ERR_BLOCK_SIZE_REQD: u32 = NBD_REP_FLAG_ERROR | 8;
pub const NBD_REP_ERR_TOO_BIG: u32 = NBD_REP_FLAG_ERROR | 9;

/// True for the `NBD_REP_ERR_*` reply types.
pub const fn is_error_reply(reply_type: u32) -> bool {
    reply_type & NBD_REP_FLAG_ERROR != 0
}

// ---- NBD_REP_INFO information types ----

pub const NBD_INFO_EXPORT: u16 = 0;
pub const NBD_INFO_NAME: u16 = 1;
pub const NBD_INFO_DESCRIPTION: u16 = 2;
pub const NBD_INFO_BLOCK_SIZE: u16 = 3;

// ---- request types ----

pub const NBD_CMD_READ: u16 = 0;
pub const NBD_CMD_WRITE: u16 = 1;
pub const NBD_CMD_DISC: u16 = 2;
pub const NBD_CMD_FLUSH: u16 = 3;
pub const NBD_CMD_TRIM: u16 = 4;
pub const NBD_CMD_CACHE: u16 = 5;
pub const NBD_CMD_WRITE_ZEROES: u16 = 6;
pub const NBD_CMD_BLOCK_STATUS: u16 = 7;
pub const NBD_CMD_RESIZE: u16 = 8;

// ---- command flags (u16) ----

pub const NBD_CMD_FLAG_FUA: u16 = 1 << 0;
pub const NBD_CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const NBD_CMD_FLAG_DF: u16 = 1 << 2;
pub const NBD_CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const NBD_CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// ---- sizes ----

/// Bytes of the server greeting: two magics and the handshake flags.
pub const GREETING_BYTES: usize = 18;
/// Bytes of the client flags that answer the greeting.
pub const CLIENT_FLAGS_BYTES: usize = 4;
/// Bytes of an option request header (magic, option, length).
pub const OPTION_HEADER_BYTES: usize = 16;
/// Bytes of an option reply header (magic, option, reply type, length).
pub const OPTION_REPLY_HEADER_BYTES: usize = 20;
/// Bytes of the answer to `NBD_OPT_EXPORT_NAME` before its optional zero padding.
pub const EXPORT_NAME_REPLY_BYTES: usize = 10;
/// Reserved zero bytes after the `NBD_OPT_EXPORT_NAME` answer unless `NBD_FLAG_C_NO_ZEROES`.
pub const EXPORT_NAME_ZEROES_BYTES: usize = 124;
/// Bytes of a request header.
pub const REQUEST_HEADER_BYTES: usize = 28;
/// Bytes of a simple reply header.
pub const SIMPLE_REPLY_HEADER_BYTES: usize = 16;
/// Longest string the protocol allows (export names, descriptions, error messages).
pub const STRING_BYTES_MAX: usize = 4096;
/// Longest option reply data this server sends: an `NBD_REP_SERVER` with a name and a description.
pub const OPTION_REPLY_DATA_BYTES_MAX: usize = 4 + 2 * STRING_BYTES_MAX;

/// NBD error values; the `error` field of a reply. Values are fixed by the protocol, not `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// `NBD_EPERM`: a write, trim or write-zeroes on a read-only export.
    Perm = 1,
    /// `NBD_EIO`: the storage failed.
    Io = 5,
    /// `NBD_ENOMEM`: the server SHOULD NOT return it if at all possible.
    NoMem = 12,
    /// `NBD_EINVAL`: a bad request (unknown command or flag, out-of-range read or trim, too long).
    Inval = 22,
    /// `NBD_ENOSPC`: a write or write-zeroes beyond the end of the export.
    NoSpc = 28,
    /// `NBD_EOVERFLOW`: only for `NBD_CMD_FLAG_DF`, which this server does not advertise.
    Overflow = 75,
    /// `NBD_ENOTSUP`: only for `NBD_CMD_FLAG_FAST_ZERO`, which this server does not advertise.
    NotSup = 95,
    /// `NBD_ESHUTDOWN`: the server is shutting down; the client must disconnect.
    Shutdown = 108,
}

impl ErrorCode {
    /// The value sent on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// Reads a wire value; the document tells clients to treat an unknown value as `NBD_EINVAL`.
    pub const fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Perm,
            5 => Self::Io,
            12 => Self::NoMem,
            28 => Self::NoSpc,
            75 => Self::Overflow,
            95 => Self::NotSup,
            108 => Self::Shutdown,
            _ => Self::Inval,
        }
    }
}

/// The 16 transmission flags an export advertises (`NBD_FLAG_*`, bit 0 always set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransmissionFlags(u16);

impl TransmissionFlags {
    /// Flags from raw bits; `NBD_FLAG_HAS_FLAGS` is always added, as the document requires.
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits | NBD_FLAG_HAS_FLAGS)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// True when every bit of `flag` is set.
    pub const fn contains(self, flag: u16) -> bool {
        self.0 & flag == flag
    }
}

/// Bad bytes where a fixed header was expected. Each one closes the connection: the stream can
/// no longer be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("bad option magic {found:#018x}")]
    OptionMagic { found: u64 },
    #[error("bad option reply magic {found:#018x}")]
    OptionReplyMagic { found: u64 },
    #[error("bad request magic {found:#010x}")]
    RequestMagic { found: u32 },
    #[error("bad simple reply magic {found:#010x}")]
    SimpleReplyMagic { found: u32 },
}

fn be_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// The server greeting of the fixed-newstyle handshake.
pub fn encode_greeting(handshake_flags: u16) -> [u8; GREETING_BYTES] {
    let mut out = [0; GREETING_BYTES];
    out[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..18].copy_from_slice(&handshake_flags.to_be_bytes());
    out
}

/// The header of an option request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

impl OptionHeader {
    pub fn encode(&self) -> [u8; OPTION_HEADER_BYTES] {
        let mut out = [0; OPTION_HEADER_BYTES];
        out[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        out[8..12].copy_from_slice(&self.option.to_be_bytes());
        out[12..16].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; OPTION_HEADER_BYTES]) -> Result<Self, DecodeError> {
        let magic = be_u64(bytes, 0);
        if magic != IHAVEOPT {
            return Err(DecodeError::OptionMagic { found: magic });
        }
        Ok(Self { option: be_u32(bytes, 8), length: be_u32(bytes, 12) })
    }
}

/// The header of an option reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply_type: u32,
    pub length: u32,
}

impl OptionReplyHeader {
    pub fn encode(&self) -> [u8; OPTION_REPLY_HEADER_BYTES] {
        let mut out = [0; OPTION_REPLY_HEADER_BYTES];
        out[0..8].copy_from_slice(&NBD_OPT_REPLY_MAGIC.to_be_bytes());
        out[8..12].copy_from_slice(&self.option.to_be_bytes());
        out[12..16].copy_from_slice(&self.reply_type.to_be_bytes());
        out[16..20].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; OPTION_REPLY_HEADER_BYTES]) -> Result<Self, DecodeError> {
        let magic = be_u64(bytes, 0);
        if magic != NBD_OPT_REPLY_MAGIC {
            return Err(DecodeError::OptionReplyMagic { found: magic });
        }
        Ok(Self { option: be_u32(bytes, 8), reply_type: be_u32(bytes, 12), length: be_u32(bytes, 16) })
    }
}

/// Appends one option reply (header and data) to `out`.
pub fn put_option_reply(out: &mut BytesMut, option: u32, reply_type: u32, data: &[u8]) {
    assert!(data.len() <= OPTION_REPLY_DATA_BYTES_MAX, "option reply data is bounded by the handshake");
    let length = data.len() as u32;
    out.put_slice(&OptionReplyHeader { option, reply_type, length }.encode());
    out.put_slice(data);
}

/// The data of an `NBD_REP_INFO` reply of type `NBD_INFO_EXPORT`.
pub fn info_export(size_bytes: u64, flags: TransmissionFlags) -> [u8; 12] {
    let mut out = [0; 12];
    out[0..2].copy_from_slice(&NBD_INFO_EXPORT.to_be_bytes());
    out[2..10].copy_from_slice(&size_bytes.to_be_bytes());
    out[10..12].copy_from_slice(&flags.bits().to_be_bytes());
    out
}

/// The data of an `NBD_REP_INFO` reply of type `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> [u8; 14] {
    let mut out = [0; 14];
    out[0..2].copy_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
    out[2..6].copy_from_slice(&minimum.to_be_bytes());
    out[6..10].copy_from_slice(&preferred.to_be_bytes());
    out[10..14].copy_from_slice(&maximum.to_be_bytes());
    out
}

/// The data of an `NBD_REP_INFO` reply carrying a string (`NBD_INFO_NAME`, `NBD_INFO_DESCRIPTION`).
pub fn info_string(info_type: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&info_type.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The answer to `NBD_OPT_EXPORT_NAME`, with the 124 reserved zeroes unless `no_zeroes`.
pub fn encode_export_name_reply(size_bytes: u64, flags: TransmissionFlags, no_zeroes: bool) -> Bytes {
    let zeroes = if no_zeroes { 0 } else { EXPORT_NAME_ZEROES_BYTES };
    let mut out = BytesMut::with_capacity(EXPORT_NAME_REPLY_BYTES + zeroes);
    out.put_u64(size_bytes);
    out.put_u16(flags.bits());
    out.put_bytes(0, zeroes);
    out.freeze()
}

/// The header of a transmission-phase request, as sent; nothing about it is validated but the
/// magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub command_type: u16,
    pub handle: u64,
    pub offset: u64,
    pub length: u32,
}

impl RequestHeader {
    pub fn encode(&self) -> [u8; REQUEST_HEADER_BYTES] {
        let mut out = [0; REQUEST_HEADER_BYTES];
        out[0..4].copy_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.command_type.to_be_bytes());
        out[8..16].copy_from_slice(&self.handle.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; REQUEST_HEADER_BYTES]) -> Result<Self, DecodeError> {
        let magic = be_u32(bytes, 0);
        if magic != NBD_REQUEST_MAGIC {
            return Err(DecodeError::RequestMagic { found: magic });
        }
        Ok(Self {
            flags: be_u16(bytes, 4),
            command_type: be_u16(bytes, 6),
            handle: be_u64(bytes, 8),
            offset: be_u64(bytes, 16),
            length: be_u32(bytes, 24),
        })
    }
}

/// The header of a simple reply; `error` is `None` for success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimpleReplyHeader {
    pub error: Option<ErrorCode>,
    pub handle: u64,
}

impl SimpleReplyHeader {
    pub fn encode(&self) -> [u8; SIMPLE_REPLY_HEADER_BYTES] {
        let mut out = [0; SIMPLE_REPLY_HEADER_BYTES];
        out[0..4].copy_from_slice(&NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&self.error.map_or(0, ErrorCode::code).to_be_bytes());
        out[8..16].copy_from_slice(&self.handle.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; SIMPLE_REPLY_HEADER_BYTES]) -> Result<Self, DecodeError> {
        let magic = be_u32(bytes, 0);
        if magic != NBD_SIMPLE_REPLY_MAGIC {
            return Err(DecodeError::SimpleReplyMagic { found: magic });
        }
        let code = be_u32(bytes, 4);
        let error = (code != 0).then(|| ErrorCode::from_code(code));
        Ok(Self { error, handle: be_u64(bytes, 8) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_spell_their_ascii_names() {
        assert_eq!(&NBDMAGIC.to_be_bytes(), b"NBDMAGIC");
        assert_eq!(&IHAVEOPT.to_be_bytes(), b"IHAVEOPT");
        assert_eq!(NBD_REP_ERR_UNSUP, 0x8000_0001);
        assert_eq!(NBD_REP_ERR_TOO_BIG, 0x8000_0009);
        assert!(is_error_reply(NBD_REP_ERR_UNKNOWN) && !is_error_reply(NBD_REP_INFO));
    }

    #[test]
    fn request_header_round_trips_and_rejects_a_bad_magic() {
        let header = RequestHeader {
            flags: NBD_CMD_FLAG_FUA,
            command_type: NBD_CMD_WRITE,
            handle: 7,
            offset: 9,
            length: 3,
        };
        let mut bytes = header.encode();
        assert_eq!(RequestHeader::decode(&bytes), Ok(header));
        bytes[0] ^= 1;
        assert!(matches!(RequestHeader::decode(&bytes), Err(DecodeError::RequestMagic { .. })));
    }

    #[test]
    fn simple_reply_round_trips_and_maps_unknown_errors_to_einval() {
        let ok = SimpleReplyHeader { error: None, handle: u64::MAX };
        assert_eq!(SimpleReplyHeader::decode(&ok.encode()), Ok(ok));
        let mut odd = SimpleReplyHeader { error: Some(ErrorCode::NoSpc), handle: 1 }.encode();
        assert_eq!(&odd[4..8], &28u32.to_be_bytes());
        odd[4..8].copy_from_slice(&4242u32.to_be_bytes());
        assert_eq!(SimpleReplyHeader::decode(&odd).unwrap().error, Some(ErrorCode::Inval));
    }

    #[test]
    fn error_codes_have_the_documented_values() {
        let all = [
            (ErrorCode::Perm, 1),
            (ErrorCode::Io, 5),
            (ErrorCode::NoMem, 12),
            (ErrorCode::Inval, 22),
            (ErrorCode::NoSpc, 28),
            (ErrorCode::Overflow, 75),
            (ErrorCode::NotSup, 95),
            (ErrorCode::Shutdown, 108),
        ];
        for (error, code) in all {
            assert_eq!(error.code(), code);
            assert_eq!(ErrorCode::from_code(code), error);
        }
    }

    #[test]
    fn option_headers_round_trip() {
        let header = OptionHeader { option: NBD_OPT_GO, length: 12 };
        assert_eq!(OptionHeader::decode(&header.encode()), Ok(header));
        let reply = OptionReplyHeader { option: NBD_OPT_GO, reply_type: NBD_REP_ACK, length: 0 };
        assert_eq!(OptionReplyHeader::decode(&reply.encode()), Ok(reply));
        assert_eq!(encode_export_name_reply(1, TransmissionFlags::from_bits(0), false).len(), 134);
        assert_eq!(encode_export_name_reply(1, TransmissionFlags::from_bits(0), true).len(), 10);
    }
}
