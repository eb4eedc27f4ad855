//! The C side, part one: the `sqlite3_vfs` named "borealis" — registering it, opening files
//! (a main database becomes a handle on a shared [`Database`](crate::database::Database), any
//! other file a [`MemoryFile`]), names, and what goes to the default VFS (randomness, time,
//! sleep, dynamic loading). The files' methods are in [`crate::io`]. No panic crosses into
//! SQLite: each entry is guarded and a panic becomes `SQLITE_IOERR`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::AssertUnwindSafe;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

use crate::io;
use crate::lock::{Holder, LockLevel};
use crate::memfile::{self, MemoryFile, OpenOptions};
use crate::volumes::{self, OpenError, SharedDatabase, VolumeKey};

/// The name to open databases with (`?vfs=borealis`).
pub const VFS_NAME: &CStr = c"borealis";
/// The longest path name SQLite hands the VFS.
const PATHNAME_BYTES_MAX: c_int = 1024;

/// What SQLite allocates for each open file (`szOsFile` bytes): its base, then our handle.
#[repr(C)]
pub(crate) struct FileSlot {
    pub base: ffi::sqlite3_file,
    pub handle: *mut Handle,
}

pub(crate) enum Handle {
    Main(MainFile),
    Memory(MemoryFile),
}

/// One connection's handle on a main database.
pub(crate) struct MainFile {
    pub key: VolumeKey,
    pub name: String,
    pub database: SharedDatabase,
    pub holder: Holder,
    pub lock: LockLevel,
}

/// The VFS SQLite had as default when the extension loaded: randomness, time, sleep and
/// dynamic loading are its.
static BASE_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(null_mut());

/// Registers the VFS (once per process; later loads find it registered).
pub fn register_once() -> c_int {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    *REGISTERED.get_or_init(register)
}

fn register() -> c_int {
    // SAFETY: the extension's API routines are initialised (`extension_init`); a null name
    // asks for the default VFS.
    let base = unsafe { ffi::sqlite3_vfs_find(null()) };
    if base.is_null() {
        return ffi::SQLITE_ERROR;
    }
    BASE_VFS.store(base, Ordering::Release);
    let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: std::mem::size_of::<FileSlot>() as c_int,
        mxPathname: PATHNAME_BYTES_MAX,
        pNext: null_mut(),
        zName: VFS_NAME.as_ptr(),
        pAppData: null_mut(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }));
    // SAFETY: `vfs` is leaked, so it outlives the registration (the whole process).
    unsafe { ffi::sqlite3_vfs_register(vfs, 0) }
}

/// Runs `f`, turning a panic into `SQLITE_IOERR`.
pub(crate) fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(ffi::SQLITE_IOERR)
}

/// Logs through SQLite (`sqlite3_log`) and on stderr: what ends a volume or refuses an open
/// must be seen even by a program that does not install a log callback.
pub(crate) fn report(code: c_int, message: &str) {
    eprintln!("borealis-sqlite: {message}");
    let Ok(text) = std::ffi::CString::new(message) else { return };
    // SAFETY: "%s" with one NUL-terminated string argument.
    unsafe { ffi::sqlite3_log(code, c"%s".as_ptr(), text.as_ptr()) };
}

/// A copy of `text` in memory from `sqlite3_malloc` (SQLite frees it), or null.
pub fn sqlite_string(text: &str) -> *mut c_char {
    let bytes = text.as_bytes();
    let Ok(len) = c_int::try_from(bytes.len() + 1) else { return null_mut() };
    // SAFETY: the API routines are initialised; SQLite's allocator.
    let out = unsafe { ffi::sqlite3_malloc(len) }.cast::<u8>();
    if !out.is_null() {
        // SAFETY: `out` holds `len` bytes: the text and its NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len());
            *out.add(bytes.len()) = 0;
        }
    }
    out.cast()
}

/// The C string at `p` (lossy), or `None` for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives the result.
pub(crate) unsafe fn text<'a>(p: *const c_char) -> Option<std::borrow::Cow<'a, str>> {
    // SAFETY: the caller's promise.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy())
}

/// The handle of an open file.
///
/// # Safety
/// `file` is a slot `x_open` filled, not yet closed, used by one thread at a time (SQLite
/// serialises the calls on one connection's files).
pub(crate) unsafe fn handle<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Handle {
    // SAFETY: the caller's promise; `x_open` set `handle` before it set `pMethods`.
    unsafe { &mut *(*file.cast::<FileSlot>()).handle }
}

fn holder_id() -> Holder {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands a slot of `szOsFile` bytes; a null `pMethods` tells it that there
    // is nothing to close if the open fails.
    unsafe { (*file).pMethods = null() };
    guarded(|| {
        // SAFETY: `name` is null or the file's name (for a main database, with its URI
        // parameters behind it), valid during the call.
        let handle = match unsafe { open_handle(name, flags) } {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        let slot = file.cast::<FileSlot>();
        // SAFETY: the slot is ours until `x_close`; the handle is set before `pMethods`.
        unsafe {
            (*slot).handle = Box::into_raw(Box::new(handle));
            (*slot).base.pMethods = &io::IO_METHODS;
        }
        if !out_flags.is_null() {
            // SAFETY: SQLite's out-parameter.
            unsafe { *out_flags = flags };
        }
        ffi::SQLITE_OK
    })
}

/// # Safety
/// `name` is null or a filename SQLite passed to `xOpen`.
unsafe fn open_handle(name: *const c_char, flags: c_int) -> Result<Handle, c_int> {
    // SAFETY: the caller's promise.
    let display = unsafe { text(name) }.map(|n| n.into_owned()).unwrap_or_default();
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        // SAFETY: as above.
        let name = unsafe { text(name) };
        let options = OpenOptions {
            create: flags & ffi::SQLITE_OPEN_CREATE != 0,
            delete_on_close: flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0,
            rollback_journal: flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0,
        };
        return MemoryFile::open(name.as_deref(), options)
            .map(Handle::Memory)
            .map_err(|_| ffi::SQLITE_CANTOPEN);
    }
    // SAFETY: as above; `sqlite3_uri_parameter` reads the parameters behind a main
    // database's name.
    let opened = unsafe { open_main(name, &display, flags) };
    opened.map(Handle::Main).map_err(|error| {
        report(ffi::SQLITE_CANTOPEN, &format!("cannot open {display}: {error}"));
        ffi::SQLITE_CANTOPEN
    })
}

/// # Safety
/// `name` is a main database's filename SQLite passed to `xOpen`.
unsafe fn open_main(name: *const c_char, display: &str, flags: c_int) -> Result<MainFile, OpenError> {
    let parameter = |key: &CStr| {
        // SAFETY: the caller's promise; SQLite returns null or a string that lives as long
        // as the filename.
        unsafe { text(ffi::sqlite3_uri_parameter(name, key.as_ptr())) }
    };
    let (volume, cluster) = (parameter(c"volume"), parameter(c"cluster"));
    let read_only = flags & ffi::SQLITE_OPEN_READONLY != 0;
    let key = VolumeKey::new(volume.as_deref(), cluster.as_deref(), read_only)?;
    let database = volumes::open(&key, display)?;
    Ok(MainFile { key, name: display.to_owned(), database, holder: holder_id(), lock: LockLevel::None })
}

unsafe extern "C" fn x_delete(_vfs: *mut ffi::sqlite3_vfs, name: *const c_char, _sync_dir: c_int) -> c_int {
    guarded(|| {
        // SAFETY: SQLite passes a file name.
        if let Some(name) = unsafe { text(name) } {
            memfile::delete(&name);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    guarded(|| {
        // SAFETY: SQLite passes a file name.
        let exists = unsafe { text(name) }.is_some_and(|n| memfile::exists(&n));
        // SAFETY: SQLite's out-parameter.
        unsafe { *out = c_int::from(exists) };
        ffi::SQLITE_OK
    })
}

/// A name is its own full path: a main database is named by its volume, the rest live in
/// memory under the names SQLite derives from it.
unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    out_bytes: c_int,
    out: *mut c_char,
) -> c_int {
    guarded(|| {
        // SAFETY: SQLite passes a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
        if name.len() > usize::try_from(out_bytes).unwrap_or(0) {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: `out` holds `out_bytes` bytes, at least the name's.
        unsafe { std::ptr::copy_nonoverlapping(name.as_ptr().cast(), out, name.len()) };
        ffi::SQLITE_OK
    })
}

/// The default VFS, to which the non-file methods go.
fn base() -> *mut ffi::sqlite3_vfs {
    BASE_VFS.load(Ordering::Acquire)
}

unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, path: *const c_char) -> *mut c_void {
    // SAFETY: `base()` is the default VFS registered before ours, which lives for the process.
    unsafe { (*base()).xDlOpen.map_or(null_mut(), |f| f(base(), path)) }
}

unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, bytes: c_int, out: *mut c_char) {
    // SAFETY: as in `x_dl_open`.
    unsafe {
        if let Some(f) = (*base()).xDlError {
            f(base(), bytes, out);
        }
    }
}

type DlSymbol = Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>;

unsafe extern "C" fn x_dl_sym(
    _vfs: *mut ffi::sqlite3_vfs,
    lib: *mut c_void,
    symbol: *const c_char,
) -> DlSymbol {
    // SAFETY: as in `x_dl_open`.
    unsafe { (*base()).xDlSym.and_then(|f| f(base(), lib, symbol)) }
}

unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, lib: *mut c_void) {
    // SAFETY: as in `x_dl_open`.
    unsafe {
        if let Some(f) = (*base()).xDlClose {
            f(base(), lib);
        }
    }
}

unsafe extern "C" fn x_randomness(_vfs: *mut ffi::sqlite3_vfs, bytes: c_int, out: *mut c_char) -> c_int {
    // SAFETY: as in `x_dl_open`.
    unsafe { (*base()).xRandomness.map_or(0, |f| f(base(), bytes, out)) }
}

unsafe extern "C" fn x_sleep(_vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as in `x_dl_open`.
    unsafe { (*base()).xSleep.map_or(0, |f| f(base(), micros)) }
}

unsafe extern "C" fn x_current_time(_vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as in `x_dl_open`.
    unsafe { (*base()).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(base(), out)) }
}

unsafe extern "C" fn x_get_last_error(_vfs: *mut ffi::sqlite3_vfs, bytes: c_int, out: *mut c_char) -> c_int {
    // SAFETY: as in `x_dl_open`.
    unsafe { (*base()).xGetLastError.map_or(0, |f| f(base(), bytes, out)) }
}

unsafe extern "C" fn x_current_time_int64(
    _vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as in `x_dl_open`; a version-1 default VFS has no `xCurrentTimeInt64`.
    unsafe {
        let base = base();
        if (*base).iVersion >= 2 {
            if let Some(f) = (*base).xCurrentTimeInt64 {
                return f(base, out);
            }
        }
        let mut days = 0f64;
        let rc = x_current_time(base, &mut days);
        *out = (days * 86_400_000.0) as ffi::sqlite3_int64;
        rc
    }
}
