//! Borealis operator and developer programs. `cluster` launches `storaged` processes on this
//! machine (used by `borealis dev` and by the benchmarks).

pub mod cluster;
