//! Ctrl-C and SIGTERM for foreground commands: ask nicely first, force on the second signal.
//!
//! Why: the default action of SIGINT/SIGTERM ends the process at once, without running the
//! code that stops the storage nodes it started, so they would outlive it. After [`install`],
//! the first signal only sets a process-wide flag ([`requested`]); long waits (a node's ready
//! line, a workload) poll it and unwind with an [`Interrupted`] error, and the ordinary stop
//! paths then end every child. A second signal means "now": every process registered with
//! [`track`] gets SIGKILL and the process exits with status 130.
//!
//! Invariants: nothing here touches a file, so an interrupt never leaves a file half-written
//! (files are replaced atomically elsewhere); a pid is tracked only while its process is ours
//! to kill (callers [`untrack`] it when the process is reaped or handed off as a daemon).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Exit status of a process ended by an interrupt (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static TRACKED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

/// The operation stopped because the user asked (SIGINT or SIGTERM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install signal handlers: {0}")]
pub struct InstallError(String);

/// Installs the SIGINT/SIGTERM handlers (once per process; later calls do nothing). Returns
/// only once the handlers are in place, so no early signal falls back to the default action.
pub fn install() -> Result<(), InstallError> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || listen(ready))
        .map_err(|e| InstallError(e.to_string()))?;
    installed.recv().map_err(|_| InstallError("signal thread ended".into()))??;
    let _ = INSTALLED.set(());
    Ok(())
}

/// True once SIGINT or SIGTERM has arrived (always false if [`install`] was never called).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps for `duration`, waking early (with an error) if a signal arrives.
pub fn sleep(duration: std::time::Duration) -> Result<(), Interrupted> {
    const SLICE: std::time::Duration = std::time::Duration::from_millis(20);
    let deadline = std::time::Instant::now() + duration;
    loop {
        check()?;
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep(SLICE.min(deadline - now));
    }
}

/// Registers a child process to be killed if a second signal forces the exit.
pub fn track(pid: u32) {
    TRACKED.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
}

/// Forgets a process registered with [`track`] (reaped, or left running on purpose).
pub fn untrack(pid: u32) {
    TRACKED.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
}

/// The signal thread: a small runtime that turns signals into the flag, then into a forced exit.
fn listen(ready: std::sync::mpsc::Sender<Result<(), InstallError>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return drop(ready.send(Err(InstallError(error.to_string())))),
    };
    runtime.block_on(async move {
        let streams = signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
        let (mut interrupt, mut terminate) = match streams {
            Ok(streams) => streams,
            Err(error) => return drop(ready.send(Err(InstallError(error.to_string())))),
        };
        let _ = ready.send(Ok(()));
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if REQUESTED.swap(true, Ordering::SeqCst) {
                force_exit();
            }
            eprintln!("borealis: stopping (press Ctrl-C again to kill at once)");
        }
    });
}

/// The second signal: SIGKILL every tracked process and leave.
fn force_exit() -> ! {
    let pids: Vec<u32> = TRACKED.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
    for &pid in &pids {
        // SAFETY: signalling a process this program started and still tracks as its own.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    eprintln!("borealis: killed {} process(es) and exiting", pids.len());
    std::process::exit(EXIT_INTERRUPTED);
}
