//! Status codes and the per-thread error message: every C entry point returns a
//! [`BorealisStatus`]; on anything but `BOREALIS_OK` the calling thread's message says more
//! (`borealis_last_error`).

use std::cell::RefCell;
use std::ffi::{c_char, CString};

/// What a call returned. `BOREALIS_OK` is zero; every other value is an error and sets the
/// calling thread's message.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BorealisStatus {
    /// Success.
    BorealisOk = 0,
    /// A null pointer, a bad UTF-8 path, a record kind or size the volume refuses.
    BorealisInvalidArgument = 1,
    /// The cluster directory, its map or its TLS files could not be loaded.
    BorealisConfig = 2,
    /// Not enough segments answered to open the volume, or to serve a read.
    BorealisUnavailable = 3,
    /// A newer writer took the volume over: this handle may only be closed.
    BorealisFenced = 4,
    /// Not durable within the append timeout (it may still become durable).
    BorealisTimeout = 5,
    /// A read below the floor: the versions it needs may be gone (pin the floor first).
    BorealisTooOld = 6,
    /// A read above VDL: not durable yet.
    BorealisNotDurable = 7,
    /// The caller's buffer is smaller than a page.
    BorealisBufferTooSmall = 8,
    /// The writer is closed (its task stopped).
    BorealisClosed = 9,
    /// Engine LSNs must increase.
    BorealisLsnNotIncreasing = 10,
    /// A bug: Rust code panicked. The handle should be closed.
    BorealisPanic = 11,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// An error on its way to C: its status and message.
#[derive(Debug)]
pub struct Failure {
    pub status: BorealisStatus,
    pub message: String,
}

impl Failure {
    pub fn new(status: BorealisStatus, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }
}

impl From<client::AppendError> for Failure {
    fn from(error: client::AppendError) -> Failure {
        use client::AppendError as E;
        let status = match &error {
            E::Fenced => BorealisStatus::BorealisFenced,
            E::Timeout { .. } => BorealisStatus::BorealisTimeout,
            E::LsnNotIncreasing { .. } => BorealisStatus::BorealisLsnNotIncreasing,
            E::Closed => BorealisStatus::BorealisClosed,
            _ => BorealisStatus::BorealisInvalidArgument,
        };
        Failure::new(status, error.to_string())
    }
}

impl From<client::ReadError> for Failure {
    fn from(error: client::ReadError) -> Failure {
        use client::ReadError as E;
        let status = match &error {
            E::NotDurable { .. } => BorealisStatus::BorealisNotDurable,
            E::TooOld { .. } => BorealisStatus::BorealisTooOld,
            E::Closed => BorealisStatus::BorealisClosed,
            _ => BorealisStatus::BorealisUnavailable,
        };
        Failure::new(status, error.to_string())
    }
}

/// Sets the calling thread's message and returns the status.
pub fn report(failure: Failure) -> BorealisStatus {
    let text = failure.message.replace('\0', " ");
    LAST_ERROR.with(|last| *last.borrow_mut() = CString::new(text).expect("NULs replaced"));
    failure.status
}

/// The calling thread's last message (valid until its next failing call).
pub fn last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// Every status with its name as the header spells it.
const NAMES: [(BorealisStatus, &std::ffi::CStr); 12] = [
    (BorealisStatus::BorealisOk, c"BOREALIS_OK"),
    (BorealisStatus::BorealisInvalidArgument, c"BOREALIS_INVALID_ARGUMENT"),
    (BorealisStatus::BorealisConfig, c"BOREALIS_CONFIG"),
    (BorealisStatus::BorealisUnavailable, c"BOREALIS_UNAVAILABLE"),
    (BorealisStatus::BorealisFenced, c"BOREALIS_FENCED"),
    (BorealisStatus::BorealisTimeout, c"BOREALIS_TIMEOUT"),
    (BorealisStatus::BorealisTooOld, c"BOREALIS_TOO_OLD"),
    (BorealisStatus::BorealisNotDurable, c"BOREALIS_NOT_DURABLE"),
    (BorealisStatus::BorealisBufferTooSmall, c"BOREALIS_BUFFER_TOO_SMALL"),
    (BorealisStatus::BorealisClosed, c"BOREALIS_CLOSED"),
    (BorealisStatus::BorealisLsnNotIncreasing, c"BOREALIS_LSN_NOT_INCREASING"),
    (BorealisStatus::BorealisPanic, c"BOREALIS_PANIC"),
];

/// A status's name, as in the header (`BOREALIS_UNKNOWN` for a value no status has).
pub fn name(status: i32) -> &'static std::ffi::CStr {
    NAMES.iter().find(|(s, _)| *s as i32 == status).map_or(c"BOREALIS_UNKNOWN", |(_, name)| *name)
}
