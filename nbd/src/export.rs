//! The one export a gateway serves: its name, size, page size and transmission flags, validated
//! once so the handshake and the request decoder can trust them.
//!
//! The block size constraints the server advertises follow from it: minimum [`BLOCK_BYTES_MIN`]
//! (any byte offset works, because the mapping patches partial pages instead of doing
//! read-modify-write), preferred = the volume's page size (aligned whole pages become
//! `PageImage` records), maximum [`BLOCK_BYTES_MAX`] (the largest READ, WRITE or CACHE the
//! decoder accepts, and so the largest payload it ever buffers; TRIM and WRITE_ZEROES carry
//! no payload and are bounded by the export's size only).

use thiserror::Error;

use crate::proto::{
    TransmissionFlags, NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_READ_ONLY, NBD_FLAG_ROTATIONAL, NBD_FLAG_SEND_CACHE,
    NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES, STRING_BYTES_MAX,
};

/// Smallest page a Borealis volume may have (mirrors `protocol::record::PAGE_BYTES_MIN`).
pub const PAGE_BYTES_MIN: u32 = 512;
/// Largest page a Borealis volume may have (mirrors `protocol::record::PAGE_BYTES_MAX`).
pub const PAGE_BYTES_MAX: u32 = 64 * 1024;
/// Advertised minimum block size: requests need no alignment.
pub const BLOCK_BYTES_MIN: u32 = 1;
/// Advertised maximum block size: 32 MiB, the largest request the NBD document says a client
/// should expect to be served everywhere (2^25), so no interoperable client is refused.
pub const BLOCK_BYTES_MAX: u32 = 32 * 1024 * 1024;

// The document: the preferred size (our page) is a power of two >= max(minimum, 512); the maximum
// is a multiple of the minimum and at least the preferred size.
const _: () = assert!(PAGE_BYTES_MIN >= 512 && PAGE_BYTES_MIN.is_power_of_two());
const _: () = assert!(PAGE_BYTES_MAX.is_power_of_two() && PAGE_BYTES_MAX <= BLOCK_BYTES_MAX);
const _: () = assert!(BLOCK_BYTES_MIN.is_power_of_two() && is_multiple(BLOCK_BYTES_MAX, BLOCK_BYTES_MIN));

const fn is_multiple(value: u32, of: u32) -> bool {
    value % of == 0
}

/// Transmission flags this core can honour. `NBD_FLAG_SEND_DF` needs structured replies,
/// `NBD_FLAG_SEND_FAST_ZERO` and `NBD_FLAG_SEND_RESIZE` are not implemented.
pub const SUPPORTED_FLAGS: u16 = crate::proto::NBD_FLAG_HAS_FLAGS
    | NBD_FLAG_READ_ONLY
    | NBD_FLAG_SEND_FLUSH
    | NBD_FLAG_SEND_FUA
    | NBD_FLAG_ROTATIONAL
    | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_WRITE_ZEROES
    | NBD_FLAG_CAN_MULTI_CONN
    | NBD_FLAG_SEND_CACHE;

/// The flags a read-write Borealis volume advertises by default: FLUSH (ends an atomic group with
/// a CPL and waits for VDL), FUA, TRIM, WRITE_ZEROES and CACHE. `NBD_FLAG_CAN_MULTI_CONN` is left
/// to the driver: it may add it only when every connection to the volume shares one writer, so a
/// FLUSH on one connection covers the writes acknowledged on all of them.
pub const DEFAULT_FLAGS: u16 = crate::proto::NBD_FLAG_HAS_FLAGS
    | NBD_FLAG_SEND_FLUSH
    | NBD_FLAG_SEND_FUA
    | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_WRITE_ZEROES
    | NBD_FLAG_SEND_CACHE;

/// A configuration the gateway cannot serve.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("export {what} is {bytes} bytes, longer than the protocol's {STRING_BYTES_MAX}")]
    StringTooLong { what: &'static str, bytes: usize },
    #[error("export {what} contains a NUL byte")]
    StringHasNul { what: &'static str },
    #[error("page size {page_bytes} is not a power of two in {PAGE_BYTES_MIN}..={PAGE_BYTES_MAX}")]
    PageBytes { page_bytes: u32 },
    #[error("transmission flags {unsupported:#06x} cannot be honoured by this server")]
    FlagsUnsupported { unsupported: u16 },
}

/// One validated export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    name: String,
    description: String,
    size_bytes: u64,
    page_bytes: u32,
    flags: TransmissionFlags,
}

impl Export {
    /// Validates an export. `flags` are raw `NBD_FLAG_*` bits; `NBD_FLAG_HAS_FLAGS` is implied.
    pub fn new(
        name: &str,
        description: &str,
        size_bytes: u64,
        page_bytes: u32,
        flags: u16,
    ) -> Result<Self, ConfigError> {
        check_string("name", name)?;
        check_string("description", description)?;
        check_page_bytes(page_bytes)?;
        let flags = TransmissionFlags::from_bits(flags);
        let unsupported = flags.bits() & !SUPPORTED_FLAGS;
        if unsupported != 0 {
            return Err(ConfigError::FlagsUnsupported { unsupported });
        }
        Ok(Self { name: name.to_owned(), description: description.to_owned(), size_bytes, page_bytes, flags })
    }

    /// The canonical export name; the empty name (the NBD "default export") also selects it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free text shown by `NBD_OPT_LIST` and `NBD_INFO_DESCRIPTION`; may be empty.
    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The volume's page size, advertised as the preferred block size.
    pub fn page_bytes(&self) -> u32 {
        self.page_bytes
    }

    pub fn flags(&self) -> TransmissionFlags {
        self.flags
    }

    /// True when a client asking for `requested` means this export: its own name or the empty
    /// default-export name.
    pub fn answers_to(&self, requested: &[u8]) -> bool {
        requested.is_empty() || requested == self.name.as_bytes()
    }
}

/// Checks a page size: a power of two in `PAGE_BYTES_MIN..=PAGE_BYTES_MAX`.
pub fn check_page_bytes(page_bytes: u32) -> Result<(), ConfigError> {
    let in_range = (PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&page_bytes);
    if in_range && page_bytes.is_power_of_two() {
        Ok(())
    } else {
        Err(ConfigError::PageBytes { page_bytes })
    }
}

fn check_string(what: &'static str, text: &str) -> Result<(), ConfigError> {
    if text.len() > STRING_BYTES_MAX {
        return Err(ConfigError::StringTooLong { what, bytes: text.len() });
    }
    if text.contains('\0') {
        return Err(ConfigError::StringHasNul { what });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{NBD_FLAG_HAS_FLAGS, NBD_FLAG_SEND_DF, NBD_FLAG_SEND_FAST_ZERO};

    #[test]
    fn export_implies_has_flags_and_answers_to_its_name_and_the_default() {
        let export = Export::new("vol", "", 1 << 20, 4096, DEFAULT_FLAGS & !NBD_FLAG_HAS_FLAGS).unwrap();
        assert!(export.flags().contains(NBD_FLAG_HAS_FLAGS));
        assert!(export.answers_to(b"vol") && export.answers_to(b""));
        assert!(!export.answers_to(b"vol2"));
    }

    #[test]
    fn export_refuses_flags_it_cannot_honour() {
        for flag in [NBD_FLAG_SEND_DF, NBD_FLAG_SEND_FAST_ZERO, 1 << 15] {
            let refused = Export::new("v", "", 0, 4096, DEFAULT_FLAGS | flag);
            assert_eq!(refused, Err(ConfigError::FlagsUnsupported { unsupported: flag }));
        }
    }

    #[test]
    fn export_refuses_bad_page_sizes_and_strings() {
        for page_bytes in [0, 256, 3000, 128 * 1024] {
            assert!(matches!(Export::new("v", "", 0, page_bytes, 0), Err(ConfigError::PageBytes { .. })));
        }
        let long = "x".repeat(STRING_BYTES_MAX + 1);
        assert!(matches!(Export::new(&long, "", 0, 512, 0), Err(ConfigError::StringTooLong { .. })));
        assert!(matches!(Export::new("a\0b", "", 0, 512, 0), Err(ConfigError::StringHasNul { .. })));
    }
}
