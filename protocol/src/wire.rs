//! Fixed-width fields shared by the message bodies: ids, epochs, LSN ranges and PG references.
//!
//! [`Wire`] is implemented once per field type so every message encodes a given field the same
//! way, with the same checks, and `docs/format.md` can draw each field once.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::{FormatError, FormatResult};
use crate::ids::{AzId, Epoch, Epochs, Lsn, NodeId, PageId, PgId, VolumeId};

/// A fixed-width field with a checked decoder.
pub trait Wire: Sized {
    /// Bytes on the wire.
    const BYTES: usize;
    fn put(&self, out: &mut impl BufMut);
    fn read(reader: &mut Reader) -> FormatResult<Self>;
}

macro_rules! wire_int {
    ($name:ident, $put:ident, $get:ident, $what:literal) => {
        impl Wire for $name {
            const BYTES: usize = $name::WIRE_BYTES;
            fn put(&self, out: &mut impl BufMut) {
                out.$put(self.0);
            }
            fn read(reader: &mut Reader) -> FormatResult<Self> {
                reader.$get($what).map($name)
            }
        }
    };
}

wire_int!(Lsn, put_u64_le, u64, "lsn");
wire_int!(PageId, put_u64_le, u64, "page_id");
wire_int!(PgId, put_u32_le, u32, "pg_id");
wire_int!(VolumeId, put_u128_le, u128, "volume_id");
wire_int!(NodeId, put_u32_le, u32, "node_id");
wire_int!(AzId, put_u16_le, u16, "az_id");
wire_int!(Epoch, put_u64_le, u64, "epoch");

impl Wire for Epochs {
    const BYTES: usize = Epochs::WIRE_BYTES;
    fn put(&self, out: &mut impl BufMut) {
        self.volume.put(out);
        self.membership.put(out);
        self.geometry.put(out);
    }
    fn read(reader: &mut Reader) -> FormatResult<Self> {
        Ok(Epochs {
            volume: Epoch::read(reader)?,
            membership: Epoch::read(reader)?,
            geometry: Epoch::read(reader)?,
        })
    }
}

/// One protection group of one volume: the address of a segment's data on any node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PgRef {
    pub volume_id: VolumeId,
    pub pg_id: PgId,
}

impl Wire for PgRef {
    const BYTES: usize = VolumeId::WIRE_BYTES + PgId::WIRE_BYTES;
    fn put(&self, out: &mut impl BufMut) {
        self.volume_id.put(out);
        self.pg_id.put(out);
    }
    fn read(reader: &mut Reader) -> FormatResult<Self> {
        Ok(PgRef { volume_id: VolumeId::read(reader)?, pg_id: PgId::read(reader)? })
    }
}

/// A non-empty LSN range `(after, through]`: exclusive start, inclusive end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LsnRange {
    after: Lsn,
    through: Lsn,
}

impl LsnRange {
    /// The range `(after, through]`; fails if it would be empty.
    pub fn new(after: Lsn, through: Lsn) -> FormatResult<LsnRange> {
        if after >= through {
            return Err(FormatError::Invalid { what: "empty lsn range" });
        }
        Ok(LsnRange { after, through })
    }
    pub fn after(&self) -> Lsn {
        self.after
    }
    pub fn through(&self) -> Lsn {
        self.through
    }
    /// True if `lsn` lies in `(after, through]`.
    pub fn contains(&self, lsn: Lsn) -> bool {
        self.after < lsn && lsn <= self.through
    }
}

impl Wire for LsnRange {
    const BYTES: usize = 2 * Lsn::WIRE_BYTES;
    fn put(&self, out: &mut impl BufMut) {
        self.after.put(out);
        self.through.put(out);
    }
    fn read(reader: &mut Reader) -> FormatResult<Self> {
        LsnRange::new(Lsn::read(reader)?, Lsn::read(reader)?)
    }
}

macro_rules! wire_tuple {
    ($($t:ident),+) => {
        impl<$($t: Wire),+> Wire for ($($t,)+) {
            const BYTES: usize = 0 $(+ $t::BYTES)+;
            #[allow(non_snake_case)]
            fn put(&self, out: &mut impl BufMut) {
                let ($($t,)+) = self;
                $($t.put(out);)+
            }
            fn read(reader: &mut Reader) -> FormatResult<Self> {
                Ok(($($t::read(reader)?,)+))
            }
        }
    };
}

wire_tuple!(A, B);
wire_tuple!(A, B, C);
wire_tuple!(A, B, C, D);
wire_tuple!(A, B, C, D, E);
wire_tuple!(A, B, C, D, E, F);

/// Reads a `u32`-counted list of at most `max` items.
pub fn get_list<T: Wire>(reader: &mut Reader, max: usize, what: &'static str) -> FormatResult<Vec<T>> {
    let count = reader.count(max, T::BYTES, what)?;
    (0..count).map(|_| T::read(reader)).collect()
}

/// Writes a `u32`-counted list; the caller has checked its length against the format maximum.
pub fn put_list<T: Wire>(out: &mut impl BufMut, items: &[T]) {
    crate::codec::put_count(out, items.len());
    items.iter().for_each(|item| item.put(out));
}
