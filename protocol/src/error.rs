//! The one error type every decoder (and every builder of a format value) returns.
//!
//! Decoders never panic on any input: every way bytes can be wrong maps to a variant here, and
//! each variant names the field it concerns so a log line says exactly what was rejected.

/// Why bytes were rejected by a decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ended before `what` was complete.
    #[error("truncated {what}: needed {needed} bytes, {available} available")]
    Truncated { what: &'static str, needed: usize, available: usize },
    /// A frame did not start with the magic bytes `BRLS`.
    #[error("bad magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    /// A format version this build does not speak.
    #[error("unsupported {what} version {found}")]
    UnsupportedVersion { what: &'static str, found: u8 },
    /// A CRC32C did not match the bytes it covers.
    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { what: &'static str, stored: u32, computed: u32 },
    /// A length or count above the maximum the format allows.
    #[error("{what} of {len} is over its maximum of {max}")]
    LengthOverMax { what: &'static str, len: u64, max: u64 },
    /// A record kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownRecordKind(u8),
    /// A frame message type this build does not know.
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    /// Lengths that contradict each other (a body longer or shorter than its parts).
    #[error("inconsistent lengths in {what}")]
    InconsistentLength { what: &'static str },
    /// A reserved field or flag bit that must be zero was not.
    #[error("reserved bits set in {what}")]
    ReservedNonZero { what: &'static str },
    /// A field whose value breaks a format rule (for example a backlink not below its LSN).
    #[error("invalid {what}")]
    Invalid { what: &'static str },
}

/// Shorthand for decoder results.
pub type FormatResult<T> = Result<T, FormatError>;
