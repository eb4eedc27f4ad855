//! `libborealis_sqlite.so`: a SQLite VFS named `borealis` that keeps a database on a Borealis
//! volume, as a loadable extension for an unmodified SQLite (Debian's `sqlite3` shell, Python's
//! `sqlite3` module, any program that can load extensions).
//!
//! ```text
//! sqlite> .load /path/to/libborealis_sqlite.so
//! sqlite> .open file:bank.db?vfs=borealis&volume=7          -- cluster from $BOREALIS_CLUSTER
//! sqlite> .open file:bank.db?vfs=borealis&volume=7&cluster=/path/to/cluster-dir
//! ```
//!
//! The mapping, and what it promises:
//! - The main database file is the volume's page space: file offset `o` is in volume page
//!   `o / 4096 + 1`; volume page 0 is a superblock holding the file's size ([`superblock`]).
//!   SQLite's page size must be 4096 (`PRAGMA page_size` with another value is refused).
//! - A transaction's writes stay in this process until it commits; the commit (`xSync`, or
//!   `SQLITE_FCNTL_COMMIT_ATOMIC_WRITE` where SQLite uses batch-atomic writes) appends all of
//!   them, with the superblock if the size changed, as one atomic group whose last record is a
//!   CPL, and returns once VDL covers it ([`pending`]). After a crash the volume holds each
//!   transaction entirely or not at all, so journals are never needed for recovery and live in
//!   process memory ([`memfile`]).
//! - Reads see the transaction's own writes, then a bounded page cache, then the volume at VDL.
//! - Locks are kept in process memory ([`lock`]): connections of one process share one writer
//!   per volume. A second process that opens the volume takes it over (the client fences the
//!   first writer); the first then fails its next commit with an I/O error, never corrupting.
//! - WAL is refused; read-only opens (`mode=ro`) read through a `client::Reader`, at the newest
//!   VDL a writer declared when each read transaction starts, and never fence the writer.
//!
//! The C side is [`vfs`] (the VFS object, opening files) and [`io`] (the files' methods); the
//! database file itself is [`database`], over the Borealis writer of [`store`], shared per
//! volume by [`volumes`].
//!
//! The extension stays loaded for the life of the process (`SQLITE_OK_LOAD_PERMANENTLY`) so the
//! VFS outlives the connection that loaded it. SQLite finds the entry point as
//! `sqlite3_extension_init` or, from the file name, `sqlite3_borealissqlite_init`.

pub mod cache;
pub mod database;
pub mod io;
pub mod lock;
pub mod memfile;
pub mod pending;
pub mod store;
pub mod superblock;
pub mod vfs;
pub mod volumes;

use std::ffi::{c_char, c_int};

use libsqlite3_sys as ffi;

/// Loads the extension: takes SQLite's API routines and registers the VFS.
///
/// # Safety
/// Called by SQLite's extension loader, with its `sqlite3_api_routines`.
unsafe fn extension_init(error: *mut *mut c_char, api: *mut ffi::sqlite3_api_routines) -> c_int {
    let fail = |code: c_int, message: String| {
        if !error.is_null() {
            // SAFETY: SQLite's out-parameter for a message from `sqlite3_malloc`.
            unsafe { *error = vfs::sqlite_string(&message) };
        }
        code
    };
    if api.is_null() {
        return ffi::SQLITE_ERROR;
    }
    // SAFETY: `api` is SQLite's routine table, which lives as long as the library.
    if let Err(init) = unsafe { ffi::rusqlite_extension_init2(api) } {
        // No `sqlite3_malloc` to build the message with: nothing to say but the code.
        eprintln!("borealis-sqlite: {init}");
        return ffi::SQLITE_ERROR;
    }
    let registered = std::panic::catch_unwind(vfs::register_once).unwrap_or(ffi::SQLITE_ERROR);
    if registered != ffi::SQLITE_OK {
        return fail(registered, format!("registering the borealis VFS failed ({registered})"));
    }
    ffi::SQLITE_OK_LOAD_PERMANENTLY
}

/// The entry point SQLite derives from the file name `libborealis_sqlite.so`.
///
/// # Safety
/// Called by SQLite's extension loader.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_borealissqlite_init(
    _db: *mut ffi::sqlite3,
    error: *mut *mut c_char,
    api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: the loader's arguments, passed on.
    unsafe { extension_init(error, api) }
}

/// The entry point SQLite tries first, whatever the file is called.
///
/// # Safety
/// Called by SQLite's extension loader.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_extension_init(
    _db: *mut ffi::sqlite3,
    error: *mut *mut c_char,
    api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: the loader's arguments, passed on.
    unsafe { extension_init(error, api) }
}
