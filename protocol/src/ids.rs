//! Identifier and position newtypes shared by every crate.
//!
//! Each is a transparent wrapper over a fixed-width integer so that an `Lsn` can never be passed
//! where a `PageId` is expected. Their wire width is the width of the wrapped integer, always
//! little-endian (see `docs/format.md`).

use std::fmt;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl $name {
            /// Width on the wire, in bytes.
            pub const WIRE_BYTES: usize = std::mem::size_of::<$inner>();

            /// The wrapped integer.
            #[inline]
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

id_newtype!(
    /// Log sequence number. Allocated by the writer, strictly increasing across a volume, not
    /// necessarily dense. `Lsn::ZERO` means "no record" (the backlink of a first record).
    Lsn(u64), "lsn:"
);
id_newtype!(
    /// A page's index in its volume's page space.
    PageId(u64), "page:"
);
id_newtype!(
    /// A protection group's index in its volume: PG `n` holds pages `[n*P, (n+1)*P)` for the
    /// volume's pages-per-PG `P`.
    PgId(u32), "pg:"
);
id_newtype!(
    /// A volume's 128-bit identity.
    VolumeId(u128), "vol:"
);
id_newtype!(
    /// A storage node (one `storaged` process).
    NodeId(u32), "node:"
);
id_newtype!(
    /// An availability zone: a failure domain.
    AzId(u16), "az:"
);
id_newtype!(
    /// A monotonically increasing epoch (volume, membership or geometry). A node rejects a
    /// request that relies on an epoch older than the one it has stored.
    Epoch(u64), "epoch:"
);
id_newtype!(
    /// Version of a data key used to seal bytes at rest; 0 means "not sealed" (on the wire).
    KeyVersion(u32), "keyv:"
);

impl Lsn {
    /// "No record": the backlink of the first record of a volume, PG or page.
    pub const ZERO: Lsn = Lsn(0);
    /// The largest LSN.
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// The LSN `n` after this one, or `None` on overflow.
    pub fn checked_add(self, n: u64) -> Option<Lsn> {
        self.0.checked_add(n).map(Lsn)
    }
}

impl Epoch {
    /// The epoch every volume starts at.
    pub const INITIAL: Epoch = Epoch(1);

    /// The next epoch. Panics on overflow, which would take 2^64 writer changes.
    pub fn next(self) -> Epoch {
        Epoch(self.0.checked_add(1).expect("epoch overflow"))
    }
}

/// The three epochs a request relies on (DESIGN §1): which writer may write, which six segments
/// form the PG, and how many PGs the volume has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Epochs {
    pub volume: Epoch,
    pub membership: Epoch,
    pub geometry: Epoch,
}

impl Epochs {
    /// Width on the wire, in bytes.
    pub const WIRE_BYTES: usize = 3 * Epoch::WIRE_BYTES;

    /// The epochs of a freshly created volume.
    pub const INITIAL: Epochs =
        Epochs { volume: Epoch::INITIAL, membership: Epoch::INITIAL, geometry: Epoch::INITIAL };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newtypes_order_and_print_like_their_integers() {
        assert!(Lsn(3) < Lsn(4));
        assert_eq!(format!("{}", PageId(7)), "page:7");
        assert_eq!(Lsn::WIRE_BYTES, 8);
        assert_eq!(VolumeId::WIRE_BYTES, 16);
        assert_eq!(Epoch::INITIAL.next(), Epoch(2));
        assert_eq!(Lsn::MAX.checked_add(1), None);
    }
}
