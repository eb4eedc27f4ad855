//! The client's sans-IO core: LSN allocation and backlinks, per-PG batching, quorum tracking
//! up the durable ladder (acks → PGCL → VCL → VDL), read routing, and the computations of
//! writer recovery. No sockets, no clock: the driver feeds events and carries out `Transmit`s.

pub mod floor;
pub mod geometry;
pub mod ladder;
pub mod recovery;
pub mod takeover;
pub mod writer;

pub use geometry::VolumeGeometry;
pub use writer::{AppendRefusal, NewRecord, Transmit, WriterCore, WriterLimits};

#[cfg(test)]
mod writer_tests;
