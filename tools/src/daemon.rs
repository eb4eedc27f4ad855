//! Background clusters: storage nodes that outlive the command that started them
//! (`borealis cluster up` / `down`), found again through the pid file.
//!
//! Each node is spawned in a session of its own (`setsid`: no controlling terminal, so neither
//! Ctrl-C in the shell nor closing it reaches the node), with stdin from /dev/null and stdout and
//! stderr appended to `logs/node-N.log`. A node is ready when its ready line appears in that log
//! after the point where this start began.
//!
//! Invariants: every operation holds the cluster directory's lock, so two commands never race on
//! the pid file; the pid file is written as soon as processes exist (a crash of `up` still leaves
//! them findable) and lists only nodes believed alive; a failed or interrupted `up` stops every
//! node it started and leaves nodes that were already running alone.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Launcher, NodeSpec, READY_TIMEOUT, STOP_TIMEOUT};
use crate::interrupt::{self, Interrupted};
use crate::local::{LocalCluster, LocalError};
use crate::procs::{self, PidFileError, PidMap, ProcId, StopOutcome};

/// How often logs and processes are polled while nodes start.
const POLL: Duration = Duration::from_millis(25);

/// Why a background cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("cluster already running (pids {})", pid_list(.0))]
    AlreadyRunning(PidMap),
    #[error("cannot start node {node}: {source}")]
    Spawn { node: u32, source: std::io::Error },
    #[error("node {node} did not become ready: {detail} (log: {})", log.display())]
    NotReady { node: u32, detail: String, log: PathBuf },
    #[error("processes {} survived SIGKILL", pid_list_u32(.0))]
    Survivors(Vec<u32>),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

/// What `up` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpReport {
    /// Nodes started by this call.
    pub started: PidMap,
    /// Nodes that were running already and were left alone.
    pub kept: PidMap,
}

/// The nodes of the pid file that are still alive (an empty map if there is no pid file).
pub fn running(cluster: &LocalCluster) -> Result<PidMap, DaemonError> {
    let recorded = procs::read_pid_file(&cluster.pid_file())?.unwrap_or_default();
    Ok(recorded.into_iter().filter(|(_, p)| p.is_alive()).collect())
}

/// Starts, in the background, every node of `cluster` that is not running, and waits until they
/// are ready. An error if all of them are running already.
pub fn up(cluster: &LocalCluster, launcher: &Launcher) -> Result<UpReport, DaemonError> {
    let _lock = cluster.lock()?;
    let kept = running(cluster)?;
    if cluster.nodes().iter().all(|n| kept.contains_key(&n.id)) {
        return Err(DaemonError::AlreadyRunning(kept));
    }
    let mut daemons = Vec::new();
    let result = start_missing(cluster, launcher, &kept, &mut daemons);
    let started: PidMap = daemons.iter().map(|d| (d.node, d.proc_id)).collect();
    if let Err(error) = result {
        // Stop what this call started; the nodes that were running before stay recorded.
        let procs: Vec<ProcId> = started.values().copied().collect();
        procs::stop(&procs, STOP_TIMEOUT);
        for daemon in &mut daemons {
            let _ = daemon.child.try_wait();
            interrupt::untrack(daemon.proc_id.pid);
        }
        procs::write_pid_file(&cluster.pid_file(), &kept)?;
        return Err(error);
    }
    // From here on the nodes are meant to outlive this process: no longer ours to kill.
    daemons.iter().for_each(|d| interrupt::untrack(d.proc_id.pid));
    Ok(UpReport { started, kept })
}

/// Spawns every node not in `kept` into `daemons`, records them, and waits until all are ready.
fn start_missing(
    cluster: &LocalCluster,
    launcher: &Launcher,
    kept: &PidMap,
    daemons: &mut Vec<Daemon>,
) -> Result<(), DaemonError> {
    for node in cluster.nodes().iter().filter(|n| !kept.contains_key(&n.id)) {
        interrupt::check()?;
        daemons.push(Daemon::spawn(launcher, &cluster.spec(node), cluster.log_path(node))?);
    }
    let mut all = kept.clone();
    all.extend(daemons.iter().map(|d| (d.node, d.proc_id)));
    procs::write_pid_file(&cluster.pid_file(), &all)?;
    wait_ready(daemons, READY_TIMEOUT)
}

/// Stops every running node of the pid file (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) and
/// removes the pid file. Nothing running is not an error: the outcome is then empty.
pub fn down(cluster: &LocalCluster) -> Result<StopOutcome, DaemonError> {
    let _lock = cluster.lock()?;
    let alive: Vec<ProcId> = running(cluster)?.into_values().collect();
    let outcome = procs::stop(&alive, STOP_TIMEOUT);
    if !outcome.survivors.is_empty() {
        return Err(DaemonError::Survivors(outcome.survivors));
    }
    procs::write_pid_file(&cluster.pid_file(), &PidMap::new())?;
    Ok(outcome)
}

/// One node spawned in the background by this process.
#[derive(Debug)]
struct Daemon {
    node: u32,
    proc_id: ProcId,
    /// Kept to learn of an early exit (and to reap it); dropped without waiting on success.
    child: Child,
    log: PathBuf,
    /// Length of the log when the node was spawned: its ready line comes after this.
    log_start: u64,
    ready: bool,
}

impl Daemon {
    fn spawn(launcher: &Launcher, spec: &NodeSpec, log: PathBuf) -> Result<Daemon, DaemonError> {
        let node = spec.node_id;
        let fail = |source| DaemonError::Spawn { node, source };
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(fail)?;
        let log_start = out.metadata().map_err(fail)?.len();
        let mut command = Command::new(&launcher.exe);
        command
            .args(&launcher.prefix)
            .args(spec.args())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(fail)?)
            .stderr(out);
        // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
        // which is async-signal-safe; it allocates nothing and touches no lock.
        unsafe {
            command.pre_exec(|| match libc::setsid() {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            })
        };
        let child = command.spawn().map_err(fail)?;
        interrupt::track(child.id());
        let proc_id = ProcId::of(child.id())
            .ok_or_else(|| fail(std::io::Error::other(format!("process {} vanished at once", child.id()))))?;
        Ok(Daemon { node, proc_id, child, log, log_start, ready: false })
    }

    /// Polls once: `Ok(true)` once the ready line is in the log; an error if the node exited.
    fn poll_ready(&mut self) -> Result<bool, DaemonError> {
        if !self.ready {
            self.ready = is_ready_line_in(&self.log_since_start());
        }
        if self.ready {
            return Ok(true);
        }
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.not_ready(format!("exited ({status})"))),
            Ok(None) => Ok(false),
            Err(error) => Err(self.not_ready(error.to_string())),
        }
    }

    fn log_since_start(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.seek(SeekFrom::Start(self.log_start)).and_then(|_| file.read_to_string(&mut text));
        }
        text
    }

    fn not_ready(&self, why: String) -> DaemonError {
        let log = self.log_since_start();
        let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)");
        DaemonError::NotReady {
            node: self.node,
            detail: format!("{why}: {}", last.trim()),
            log: self.log.clone(),
        }
    }
}

/// Waits until every daemon is ready, one exits, `timeout` passes, or the user interrupts.
fn wait_ready(daemons: &mut [Daemon], timeout: Duration) -> Result<(), DaemonError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all_ready = true;
        for daemon in daemons.iter_mut() {
            all_ready &= daemon.poll_ready()?;
        }
        if all_ready {
            return Ok(());
        }
        if let Some(late) = daemons.iter().find(|d| !d.ready).filter(|_| Instant::now() >= deadline) {
            return Err(late.not_ready(format!("no ready line within {timeout:?}")));
        }
        interrupt::sleep(POLL)?;
    }
}

/// True if `log` holds storaged's ready line (`storaged <node> ready on <addr> ...`, the first
/// line it prints on stdout; see docs/operations.md).
fn is_ready_line_in(log: &str) -> bool {
    log.lines().any(|line| line.starts_with("storaged ") && line.contains(" ready on "))
}

fn pid_list(map: &PidMap) -> String {
    pid_list_u32(&map.values().map(|p| p.pid).collect::<Vec<_>>())
}

fn pid_list_u32(pids: &[u32]) -> String {
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}
