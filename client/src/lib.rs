//! The engine-facing Borealis library: ships an engine's redo log to six segments per
//! protection group, tracks when it is durable (VDL), reads it back, and takes a volume over
//! safely after a writer crash.
//!
//! `core` is sans-IO (LSN allocation, batching, quorum tracking, durable points, read routing,
//! recovery computations); `driver` runs it over QUIC on the caller's tokio runtime. See
//! `docs/client.md` for how an engine embeds it.

pub mod core;
pub mod driver;

pub use crate::core::{GeometryError, NewRecord, Refusals, VolumeGeometry, WriterLimits};
pub use driver::reader::{Reader, READER_TICK};
pub use driver::reads::{PageVersion, Snapshot};
pub use driver::{AppendError, Appended, ClientConfig, EtcdSource, OpenError, ReadError, Writer};
