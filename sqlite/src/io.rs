//! The C side, part two: the `sqlite3_io_methods` of the borealis VFS's files. A main
//! database's calls go to its shared [`Database`] (locked for the call); every other file is a
//! [`MemoryFile`](crate::memfile::MemoryFile). A failure is logged once, mapped to its
//! `SQLITE_IOERR_*` code, and — if the volume failed — makes later opens take the volume over
//! afresh.
//!
//! The methods are version 1: no `xShmMap`, so SQLite cannot use WAL with shared memory, and
//! `PRAGMA journal_mode=WAL` is refused outright ([`pragma_refusal`]) so that WAL's heap-memory
//! variant (`locking_mode=EXCLUSIVE`) cannot keep commits away from the volume either. The main
//! database advertises `SQLITE_IOCAP_BATCH_ATOMIC` and handles the `*_ATOMIC_WRITE` file
//! controls (SQLite sends them only when built with `SQLITE_ENABLE_BATCH_ATOMIC_WRITE`, which
//! Debian's 3.40 is not; there a commit is `xSync`).

use std::ffi::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::MutexGuard;

use libsqlite3_sys as ffi;

use crate::database::{Database, FileError, ReadOutcome, StoreError};
use crate::lock::LockLevel;
use crate::memfile::MemoryError;
use crate::store::BorealisStore;
use crate::superblock::{PAGE, PAGE_BYTES};
use crate::vfs::{guarded, handle, report, sqlite_string, text, FileSlot, Handle, MainFile};
use crate::volumes;

pub(crate) static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    guarded(|| {
        let slot = file.cast::<FileSlot>();
        // SAFETY: `x_open` filled the slot; after `xClose` SQLite never uses it again, so the
        // handle is taken back exactly once.
        let handle = unsafe { Box::from_raw((*slot).handle) };
        // SAFETY: as above.
        unsafe { (*slot).handle = null_mut() };
        match *handle {
            Handle::Memory(file) => drop(file),
            Handle::Main(mut main) => {
                let rc = main_unlock(&mut main, LockLevel::None);
                volumes::close(&main.key, &main.name, main.database);
                return rc;
            }
        }
        ffi::SQLITE_OK
    })
}

/// Locks the main file's database; a poisoned lock (a panic inside) refuses the call.
fn database(main: &MainFile) -> Result<MutexGuard<'_, Database<BorealisStore>>, c_int> {
    main.database.lock().map_err(|_| ffi::SQLITE_IOERR)
}

/// The SQLite code for a failed operation of kind `io` (an `SQLITE_IOERR_*`).
fn code_of(error: &FileError, io: c_int) -> c_int {
    match error {
        FileError::TooBig(_) => ffi::SQLITE_FULL,
        FileError::Latched(inner) => code_of(inner, io),
        FileError::Store(StoreError::ReadOnly) => ffi::SQLITE_READONLY,
        FileError::PageSize(_) | FileError::Superblock(_) | FileError::Store(_) => io,
    }
}

/// Reports a failure; one that latched the volume also makes later opens start afresh.
fn failed(main: &MainFile, error: &FileError, io: c_int) -> c_int {
    let code = code_of(error, io);
    if !matches!(error, FileError::Latched(_)) {
        report(code, &format!("{}: {error}", main.key));
        if database(main).is_ok_and(|db| db.failure().is_some()) {
            volumes::forget_failed(&main.key, &main.database);
        }
    }
    code
}

/// Runs `f` on an open file's handle.
///
/// # Safety
/// As for [`handle`].
unsafe fn with_file(file: *mut ffi::sqlite3_file, f: impl FnOnce(&mut Handle) -> c_int) -> c_int {
    // SAFETY: the caller's promise.
    let handle = unsafe { handle(file) };
    guarded(|| f(handle))
}

/// The code for a main-file operation's result.
fn main_result(main: &MainFile, result: Result<Result<(), FileError>, c_int>, io: c_int) -> c_int {
    match result {
        Err(code) => code,
        Ok(Ok(())) => ffi::SQLITE_OK,
        Ok(Err(error)) => failed(main, &error, io),
    }
}

fn memory_result(result: Result<(), MemoryError>, io: c_int) -> c_int {
    match result {
        Ok(()) => ffi::SQLITE_OK,
        Err(MemoryError::Full) => ffi::SQLITE_FULL,
        Err(MemoryError::NotFound) => io,
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let len = usize::try_from(amount).unwrap_or(0);
    // SAFETY: SQLite hands a buffer of `amount` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    let offset = offset as u64;
    let read = |handle: &mut Handle| match handle {
        Handle::Main(main) => match database(main).map(|mut db| db.read(offset, buf)) {
            Err(code) => code,
            Ok(Ok(ReadOutcome::Full)) => ffi::SQLITE_OK,
            Ok(Ok(ReadOutcome::Short)) => ffi::SQLITE_IOERR_SHORT_READ,
            Ok(Err(error)) => failed(main, &error, ffi::SQLITE_IOERR_READ),
        },
        Handle::Memory(memory) => match memory.read(offset, buf) {
            true => ffi::SQLITE_OK,
            false => ffi::SQLITE_IOERR_SHORT_READ,
        },
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    unsafe { with_file(file, read) }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let len = usize::try_from(amount).unwrap_or(0);
    // SAFETY: SQLite hands `amount` bytes.
    let data = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    let offset = offset as u64;
    let write = |handle: &mut Handle| match handle {
        Handle::Main(main) => {
            let written = database(main).map(|mut db| db.write(offset, data));
            main_result(main, written, ffi::SQLITE_IOERR_WRITE)
        }
        Handle::Memory(memory) => memory_result(memory.write(offset, data), ffi::SQLITE_IOERR_WRITE),
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    unsafe { with_file(file, write) }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let size = size.max(0) as u64;
    let truncate = |handle: &mut Handle| match handle {
        Handle::Main(main) => {
            let truncated = database(main).map(|mut db| db.truncate(size));
            main_result(main, truncated, ffi::SQLITE_IOERR_TRUNCATE)
        }
        Handle::Memory(memory) => memory_result(memory.truncate(size), ffi::SQLITE_IOERR_TRUNCATE),
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    unsafe { with_file(file, truncate) }
}

/// The commit: everything the transaction wrote, as one atomic group, durable on return.
unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    let sync = |handle: &mut Handle| match handle {
        Handle::Main(main) => commit(main, |db| db.commit()),
        Handle::Memory(_) => ffi::SQLITE_OK,
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    unsafe { with_file(file, sync) }
}

fn commit(
    main: &mut MainFile,
    f: impl FnOnce(&mut Database<BorealisStore>) -> Result<(), FileError>,
) -> c_int {
    let committed = database(main).map(|mut db| f(&mut db));
    main_result(main, committed, ffi::SQLITE_IOERR_FSYNC)
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    let mut size = 0u64;
    let file_size = |handle: &mut Handle| match handle {
        Handle::Main(main) => match database(main).map(|db| db.size()) {
            Err(code) => code,
            Ok(Ok(bytes)) => {
                size = bytes;
                ffi::SQLITE_OK
            }
            Ok(Err(error)) => failed(main, &error, ffi::SQLITE_IOERR_FSTAT),
        },
        Handle::Memory(memory) => {
            size = memory.size();
            ffi::SQLITE_OK
        }
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    let rc = unsafe { with_file(file, file_size) };
    // SAFETY: SQLite's out-parameter.
    unsafe { *out = size as i64 };
    rc
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let Some(want) = LockLevel::from_sqlite(level) else { return ffi::SQLITE_MISUSE };
    let lock = |handle: &mut Handle| {
        let Handle::Main(main) = handle else { return ffi::SQLITE_OK };
        let locked = database(main).map(|mut db| {
            let read = match main.lock {
                LockLevel::None => db.begin_read(),
                _ => Ok(()),
            };
            read.map(|()| db.lock(main.holder, main.lock, want))
        });
        match locked {
            Err(code) => code,
            Ok(Err(error)) => failed(main, &error, ffi::SQLITE_IOERR_LOCK),
            Ok(Ok(locked)) => match locked {
                Ok(level) => {
                    main.lock = level;
                    ffi::SQLITE_OK
                }
                Err(busy) => {
                    main.lock = busy.held;
                    ffi::SQLITE_BUSY
                }
            },
        }
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    unsafe { with_file(file, lock) }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let Some(to) = LockLevel::from_sqlite(level) else { return ffi::SQLITE_MISUSE };
    let unlock = |handle: &mut Handle| match handle {
        Handle::Main(main) => main_unlock(main, to),
        Handle::Memory(_) => ffi::SQLITE_OK,
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    unsafe { with_file(file, unlock) }
}

/// Lowers the connection's lock, committing what its transaction left pending.
fn main_unlock(main: &mut MainFile, to: LockLevel) -> c_int {
    let unlocked = database(main).map(|mut db| db.unlock(main.holder, main.lock, to));
    match unlocked {
        Err(code) => code,
        Ok((level, committed)) => {
            main.lock = level;
            main_result(main, Ok(committed), ffi::SQLITE_IOERR_UNLOCK)
        }
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let mut reserved = false;
    let check = |handle: &mut Handle| {
        let Handle::Main(main) = handle else { return ffi::SQLITE_OK };
        match database(main) {
            Err(code) => code,
            Ok(db) => {
                reserved = db.reserved();
                ffi::SQLITE_OK
            }
        }
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    let rc = unsafe { with_file(file, check) };
    // SAFETY: SQLite's out-parameter.
    unsafe { *out = c_int::from(reserved) };
    rc
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    let control = |handle: &mut Handle| {
        let Handle::Main(main) = handle else { return ffi::SQLITE_NOTFOUND };
        match op {
            ffi::SQLITE_FCNTL_BEGIN_ATOMIC_WRITE => commit(main, |db| db.begin_batch()),
            ffi::SQLITE_FCNTL_COMMIT_ATOMIC_WRITE => commit(main, |db| db.commit_batch()),
            ffi::SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE => commit(main, |db| {
                db.rollback_batch();
                Ok(())
            }),
            // SAFETY: for this op SQLite passes `char *azArg[3]`: message out, name, value.
            ffi::SQLITE_FCNTL_PRAGMA => unsafe { pragma(arg.cast::<*mut c_char>()) },
            _ => ffi::SQLITE_NOTFOUND,
        }
    };
    // SAFETY: SQLite calls this on a file `x_open` opened.
    unsafe { with_file(file, control) }
}

/// `SQLITE_FCNTL_PRAGMA` on a main database: refuses what the VFS cannot honour, leaves the
/// rest to SQLite.
///
/// # Safety
/// `args` is SQLite's `char *azArg[3]` for this op.
unsafe fn pragma(args: *mut *mut c_char) -> c_int {
    // SAFETY: the caller's promise: [1] is the pragma's name, [2] its value or null.
    let (name, value) = unsafe { (text(*args.add(1)), text(*args.add(2))) };
    let Some(name) = name else { return ffi::SQLITE_NOTFOUND };
    match pragma_refusal(&name, value.as_deref()) {
        None => ffi::SQLITE_NOTFOUND,
        Some(message) => {
            // SAFETY: [0] is where SQLite takes an error message from `sqlite3_malloc`.
            unsafe { *args = sqlite_string(&message) };
            ffi::SQLITE_ERROR
        }
    }
}

/// The message refusing `PRAGMA name = value`, if this VFS cannot honour it: a page size other
/// than the volume's, and WAL (whose log would live outside the volume).
pub fn pragma_refusal(name: &str, value: Option<&str>) -> Option<String> {
    let value = value?.trim().trim_matches(|c| c == '\'' || c == '"');
    match name.to_ascii_lowercase().as_str() {
        "page_size" if value.parse::<u32>().ok() != Some(PAGE_BYTES) => Some(format!(
            "the borealis VFS stores one database page per {PAGE_BYTES}-byte volume page: page_size must be {PAGE_BYTES}, not {value}"
        )),
        "journal_mode" if value.eq_ignore_ascii_case("wal") => Some(
            "the borealis VFS does not support WAL: every commit is one atomic append to the volume, \
             so the rollback-journal modes are crash-safe without it"
                .to_owned(),
        ),
        _ => None,
    }
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    PAGE as c_int
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this on a file `x_open` opened.
    let handle = unsafe { handle(file) };
    match handle {
        // A commit is one atomic group; a write never touches bytes around it.
        Handle::Main(_) => ffi::SQLITE_IOCAP_BATCH_ATOMIC | ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE,
        Handle::Memory(_) => {
            ffi::SQLITE_IOCAP_ATOMIC
                | ffi::SQLITE_IOCAP_SAFE_APPEND
                | ffi::SQLITE_IOCAP_SEQUENTIAL
                | ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_size_other_than_the_volumes_is_refused() {
        assert!(pragma_refusal("page_size", Some("8192")).is_some_and(|m| m.contains("must be 4096")));
        assert!(pragma_refusal("PAGE_SIZE", Some("'1024'")).is_some());
        assert_eq!(pragma_refusal("page_size", Some("4096")), None);
        assert_eq!(pragma_refusal("page_size", None), None, "reading it is fine");
    }

    #[test]
    fn wal_is_refused_and_the_rollback_modes_are_not() {
        assert!(pragma_refusal("journal_mode", Some("WAL")).is_some_and(|m| m.contains("WAL")));
        for mode in ["delete", "truncate", "persist", "memory", "off"] {
            assert_eq!(pragma_refusal("journal_mode", Some(mode)), None);
        }
        assert_eq!(pragma_refusal("cache_size", Some("wal")), None);
    }
}
