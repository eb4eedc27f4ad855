//! The sans-IO heart of `storaged`: segments, durable points and every decision about what to
//! write, acknowledge or refuse. It never touches a file, socket or clock: drivers feed it
//! requests and I/O completions (`handle_*`) and drain what it decided (`poll_*`), so the same
//! code runs under io_uring and QUIC and under the deterministic simulator.

pub mod access;
pub(crate) mod cache;
pub mod location;
pub mod node;
pub mod pages;
pub mod planted;
pub mod segment;

pub use location::Location;
pub use node::{Base, CoalesceJob, PageAnswer, PageBuild};
pub use node::{
    EntryBody, JournalEntry, Limits, NodeCore, NodeFailure, NodeState, ReadPlan, RecordsAnswer, RequestId,
};
pub use node::{HydratePlan, HydrateStats, HydrationCheckpoint, HYDRATE_BYTES_PER_S_DEFAULT};
pub use node::{RecyclePlan, GOSSIP_INTERVAL_MS_DEFAULT, MAINTAIN_INTERVAL_MS};
pub use node::{ScrubJob, ScrubOutcome, ScrubStats, Store, SCRUB_BYTES_PER_S_DEFAULT};
pub use node::{VolumeDropped, VOLUME_DELETED};
pub use pages::{PageVersions, Stored, VersionPlan};
pub use planted::PlantedBug;
pub use segment::{AsOf, IndexedRecord, PageState, Segment};

#[cfg(test)]
mod dropped_tests;
#[cfg(test)]
mod gossip_tests;
#[cfg(test)]
mod hydrate_tests;
#[cfg(test)]
pub(crate) mod node_tests;
#[cfg(test)]
mod pages_model_tests;
#[cfg(test)]
mod scrub_tests;
