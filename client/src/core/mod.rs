//! The client's sans-IO core: LSN allocation and backlinks, per-PG batching, quorum tracking
//! up the durable ladder (acks → PGCL → VCL → VDL), read routing, and the computations of
//! writer recovery, and the per-node connection policy (`links`). No sockets, no clock: the
//! driver feeds events and time, and carries out `Transmit`s and dials.

pub mod floor;
pub mod geometry;
pub mod ladder;
pub mod links;
pub mod recovery;
pub mod repair;
pub mod takeover;
pub mod writer;

pub use geometry::VolumeGeometry;
pub use writer::{AppendRefusal, NewRecord, Transmit, WriterCore, WriterLimits};

#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod writer_tests;
