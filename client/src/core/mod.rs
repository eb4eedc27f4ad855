//! The client's sans-IO core: LSN allocation and backlinks, per-PG batching, quorum tracking
//! up the durable ladder (acks → PGCL → VCL → VDL), read routing, and the computations of
//! writer recovery, and the per-node connection policy (`links`). No sockets, no clock: the
//! driver feeds events and time, and carries out `Transmit`s and dials.

pub(crate) mod floor;
pub(crate) mod geometry;
pub mod ladder;
pub mod links;
pub mod reader;
pub(crate) mod recovery;
pub mod repair;
pub mod takeover;
pub mod writer;

pub use geometry::{GeometryError, VolumeGeometry};
pub use writer::{AppendRefusal, NewRecord, Refusals, Transmit, WriterCore, WriterLimits};

/// A cluster map for tests: `per_az` nodes in each of three AZs, ids from 1, AZ by id.
#[cfg(test)]
pub(crate) fn test_cluster(per_az: u32) -> protocol::placement::ClusterMap {
    protocol::placement::ClusterMap::evenly(per_az)
}

#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod writer_tests;
