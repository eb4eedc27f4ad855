//! Borealis's shared language: identifiers, the redo-record format, the framed messages nodes
//! and clients exchange, and quorum arithmetic.
//!
//! No I/O, no async: everything here is a pure function of its inputs, so the same code runs in
//! `storaged`, the client, the simulator and the fuzzers. Every decoder takes untrusted bytes and
//! returns a typed [`FormatError`] for anything malformed; none panics or allocates beyond the
//! bound its format states (see `docs/format.md` for every byte layout).

pub mod apply;
pub mod codec;
pub mod error;
pub mod frame;
pub mod ids;
pub mod messages;
pub mod patch;
pub mod placement;
pub mod quorum;
pub mod record;
pub mod wire;

pub use error::{FormatError, FormatResult};
pub use frame::{decode_frame, decode_frame_exact, encode_frame, frame_bytes, FrameHeader};
pub use ids::{AzId, Epoch, Epochs, KeyVersion, Lsn, NodeId, PageId, PgId, VolumeId};
pub use messages::Message;
pub use record::{Record, RecordFlags, RecordKind, RecordMeta};
pub use wire::{LsnRange, PgRef};
