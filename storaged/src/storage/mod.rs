//! Where a node's bytes live: its data directory, behind one trait, so the same journal, page
//! store, replay, checkpoint and metadata code runs on the real disk (`uring::UringDir`,
//! io_uring) and on the simulator's lying disk (`sim::SimDisk`: torn, lost, misdirected and
//! rotten sectors, read errors, a full disk).
//!
//! Paths are relative to the data directory (`journal/journal-0000000000000001.log`,
//! `checkpoint.0`). The contract every implementation keeps, and every caller relies on:
//!
//! | call                 | durable when it returns                                   |
//! |----------------------|-----------------------------------------------------------|
//! | `create`             | the file, its full preallocated length and its name       |
//! | `write_at`           | nothing: the bytes are readable, but a crash may lose any |
//! |                      | suffix of them (whole 4 KiB sectors) until `sync`         |
//! | `sync`               | every byte written to that file before it                 |
//! | `remove`             | the removal                                               |
//! | `put`                | nothing until it returns; then the whole file             |
//!
//! A disk may also lie where no interface can tell: a write may land elsewhere, bits may flip
//! at rest. That is why every byte read is verified (CRC32C, GCM tag) before it is believed.

pub mod sim;
pub mod uring;

use std::io;

use crate::journal::buf::AlignedBuf;

/// See the module docs. The futures are not `Send`: each node runs on one thread.
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + std::fmt::Debug + 'static {
    /// Names of the files in subdirectory `dir` of the data directory, in no order. Used at
    /// start-up only (blocking is fine there).
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;

    /// Creates `path` (which must not exist) as `len` zero bytes, preallocated so later writes
    /// inside it cannot run out of space. No space: an error with `ENOSPC`.
    async fn create(&self, path: &str, len: u64) -> io::Result<()>;

    /// Reads exactly `len` bytes at `offset`.
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;

    /// Reads the whole file.
    async fn read_all(&self, path: &str) -> io::Result<Vec<u8>>;

    /// Writes `buf` at `offset` (both 4 KiB-aligned) inside the file's preallocated length.
    async fn write_at(&self, path: &str, offset: u64, buf: AlignedBuf) -> io::Result<()>;

    /// Makes every byte written to `path` so far durable.
    async fn sync(&self, path: &str) -> io::Result<()>;

    /// Deletes `path` durably; a missing file is not an error.
    async fn remove(&self, path: &str) -> io::Result<()>;

    /// Replaces the whole of the small file `path` with `bytes`, durably (the name too). Not
    /// atomic: a crash during it may leave the file torn (`dual` keeps two copies for that).
    async fn put(&self, path: &str, bytes: Vec<u8>) -> io::Result<()>;
}

/// True if `error` says the disk is full.
pub fn is_no_space(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC)
}
