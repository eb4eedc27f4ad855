//! Borealis operator and developer programs (the `borealis` binary) and the pieces they share.
//!
//! - [`dev`]: `borealis dev`, the local cluster with a workload streamed through the client;
//! - [`certs`]: `borealis cert issue | revoke`: client certificates from the cluster's CA, and
//!   its CRL;
//! - [`cluster`]: launch one `storaged` process as a child and wait for its ready line;
//! - [`local`]: the local development cluster (3 AZs × 2 nodes or more) under one directory
//!   (map, PKI, keys);
//! - [`daemon`]: that cluster in the background (`borealis cluster up` / `down`, pid file);
//! - [`hosts`]: a cluster on real hosts (`borealis cluster init --hosts`): CA, certificates,
//!   key and one `storaged` bundle per host;
//! - [`probe`]: ask running nodes for their status over QUIC and their admin health;
//! - [`health`]: per-PG replication health and the `HEALTH_OK`/`WARN`/`ERR` verdict;
//! - [`report`]: the text tables the commands print;
//! - [`rolling`]: `borealis cluster restart --rolling`, one AZ at a time;
//! - [`procs`]: process identity (pid + start time), stopping, the pid file;
//! - [`interrupt`]: Ctrl-C / SIGTERM handling so foreground commands leave nothing running;
//! - [`keys`]: `borealis keys rotate-kek`, the local cluster's KEK rotation;
//! - [`files`]: atomic file replacement and directory locks;
//! - [`sim`]: the deterministic simulator behind `borealis-sim`;
//! - [`volume`]: `borealis volume`: list volumes; claim, grant, revoke, write, read and inspect one.

pub mod certs;
pub mod cluster;
pub mod daemon;
pub mod dev;
pub mod files;
pub mod health;
pub mod hosts;
pub mod interrupt;
pub mod keys;
pub mod local;
pub mod nbd;
pub mod probe;
pub mod procs;
pub mod report;
pub mod rolling;
pub mod sim;
pub mod volume;
