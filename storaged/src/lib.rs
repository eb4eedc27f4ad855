//! The Borealis storage daemon: a sans-IO core (`core`) that decides what to store, acknowledge
//! and refuse, driven by thin drivers for the io_uring journal and the QUIC endpoint.

pub mod checkpoint;
pub mod config;
pub mod core;
pub mod dual;
pub mod journal;
pub mod keyring;
pub mod meta;
pub mod seal;
pub mod server;
