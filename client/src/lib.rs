//! The engine-facing Borealis library: ships an engine's redo log to six segments per
//! protection group, tracks when it is durable (VDL), reads it back, and takes a volume over
//! safely after a writer crash.
//!
//! `core` is sans-IO (LSN allocation, batching, quorum tracking, durable points, read routing,
//! recovery computations); `driver` runs it over QUIC on the caller's tokio runtime.

pub mod core;
