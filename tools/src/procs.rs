//! Processes that outlive the command that started them: identity, liveness, stopping, and the
//! pid file that remembers them.
//!
//! Why: `borealis cluster up` exits and leaves its storage nodes running; `status` and `down`,
//! run later, find them through `<dir>/pids`. A bare pid may be reused by an unrelated process
//! once ours has died, so a process is identified by its pid *and* its start time (field 22 of
//! `/proc/<pid>/stat`): a [`ProcId`] is alive only if both still match, and a zombie counts as
//! dead. Signals are sent only after that check.
//!
//! Invariants: the pid file is replaced atomically (never torn); [`stop`] returns within its
//! timeouts whatever the processes do, escalating from SIGTERM to SIGKILL.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::files;

/// How long processes get to exit after SIGKILL before `stop` gives up on them.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often liveness is polled while waiting for processes to exit.
const POLL: Duration = Duration::from_millis(20);
/// First line of a pid file.
const PID_FILE_HEADER: &str = "# borealis local cluster: node pid start_ticks";

/// One process, told apart from any later process that reuses its pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId {
    pub pid: u32,
    /// Start time in clock ticks since boot, from `/proc/<pid>/stat`.
    pub start_ticks: u64,
}

impl ProcId {
    /// The identity of the live process `pid`, or `None` if there is none.
    pub fn of(pid: u32) -> Option<ProcId> {
        let (state, start_ticks) = read_stat(pid)?;
        (!is_dead_state(state)).then_some(ProcId { pid, start_ticks })
    }

    /// True while this very process runs (not a zombie, not a successor with the same pid).
    pub fn is_alive(&self) -> bool {
        ProcId::of(self.pid) == Some(*self)
    }

    /// Sends `signal` if the process is still alive; returns whether it was sent.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        // The liveness check just before the kill narrows pid reuse to a window of microseconds.
        // SAFETY: kill(2) on a pid we identified by pid and start time; no memory is involved.
        self.is_alive() && unsafe { libc::kill(self.pid as libc::pid_t, signal) } == 0
    }
}

/// The process state letter and start time from `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3 (state); starttime is field 22.
    let start_ticks = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start_ticks))
}

fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// What [`stop`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Processes that exited after SIGTERM (or were already gone).
    pub terminated: Vec<u32>,
    /// Processes that needed SIGKILL.
    pub killed: Vec<u32>,
    /// Processes still alive after SIGKILL and [`KILL_TIMEOUT`] (should never happen).
    pub survivors: Vec<u32>,
}

/// Stops every process: SIGTERM, up to `grace` for them to exit, then SIGKILL for the rest.
pub fn stop(procs: &[ProcId], grace: Duration) -> StopOutcome {
    procs.iter().for_each(|p| {
        p.signal(libc::SIGTERM);
    });
    let stubborn = wait_all_exit(procs, grace);
    stubborn.iter().for_each(|p| {
        p.signal(libc::SIGKILL);
    });
    let survivors = wait_all_exit(&stubborn, KILL_TIMEOUT);
    let pids = |list: &[ProcId]| list.iter().map(|p| p.pid).collect::<Vec<_>>();
    let terminated = procs.iter().filter(|p| !stubborn.contains(p)).map(|p| p.pid).collect();
    StopOutcome { terminated, killed: pids(&stubborn), survivors: pids(&survivors) }
}

/// Waits up to `timeout` for every process to exit; returns those still alive.
pub fn wait_all_exit(procs: &[ProcId], timeout: Duration) -> Vec<ProcId> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<ProcId> = procs.iter().copied().filter(ProcId::is_alive).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(POLL);
    }
}

/// The pid file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PidFileError {
    #[error("pid file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("pid file {path}, line {line}: expected `node pid start_ticks`")]
    Malformed { path: PathBuf, line: usize },
}

/// Node id → process, as recorded in a pid file.
pub type PidMap = BTreeMap<u32, ProcId>;

/// Reads a pid file; `Ok(None)` if there is none.
pub fn read_pid_file(path: &Path) -> Result<Option<PidMap>, PidFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PidFileError::Io { path: path.to_owned(), source }),
    };
    parse_pid_file(&text).map(Some).map_err(|line| PidFileError::Malformed { path: path.to_owned(), line })
}

/// Parses pid file text; the error is the 1-based number of the first bad line.
fn parse_pid_file(text: &str) -> Result<PidMap, usize> {
    let mut map = PidMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let numbers: Vec<u64> =
            line.split_whitespace().map(str::parse).collect::<Result<_, _>>().map_err(|_| index + 1)?;
        let &[node, pid, start_ticks] = numbers.as_slice() else { return Err(index + 1) };
        let (node, pid) =
            (u32::try_from(node).map_err(|_| index + 1)?, u32::try_from(pid).map_err(|_| index + 1)?);
        map.insert(node, ProcId { pid, start_ticks });
    }
    Ok(map)
}

/// Replaces the pid file with `map` (removes it if `map` is empty).
pub fn write_pid_file(path: &Path, map: &PidMap) -> Result<(), PidFileError> {
    let io = |source| PidFileError::Io { path: path.to_owned(), source };
    if map.is_empty() {
        return files::remove_if_exists(path).map_err(io);
    }
    let mut text = format!("{PID_FILE_HEADER}\n");
    for (node, p) in map {
        let _ = writeln!(text, "{node} {} {}", p.pid, p.start_ticks);
    }
    files::write_atomically(path, text.as_bytes(), 0o644).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcId::of(std::process::id()).expect("own /proc entry");
        assert!(me.is_alive());
        assert!(!ProcId { start_ticks: me.start_ticks + 1, ..me }.is_alive());
    }

    #[test]
    fn pid_file_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pids");
        assert!(read_pid_file(&path).unwrap().is_none());
        let map =
            PidMap::from([(1, ProcId { pid: 10, start_ticks: 7 }), (6, ProcId { pid: 11, start_ticks: 9 })]);
        write_pid_file(&path, &map).unwrap();
        assert_eq!(read_pid_file(&path).unwrap(), Some(map));
        std::fs::write(&path, "1 2\n").unwrap();
        assert!(matches!(read_pid_file(&path), Err(PidFileError::Malformed { line: 1, .. })));
        write_pid_file(&path, &PidMap::new()).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn stop_terminates_a_child() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcId::of(child.id()).unwrap();
        let reaper = std::thread::spawn(move || child.wait());
        let outcome = stop(&[id], Duration::from_secs(5));
        assert_eq!(outcome.terminated, vec![id.pid]);
        assert!(outcome.killed.is_empty() && outcome.survivors.is_empty());
        reaper.join().unwrap().unwrap();
    }
}
