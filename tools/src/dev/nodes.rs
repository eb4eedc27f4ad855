//! Who runs the nodes while `borealis dev` works, and what becomes of them afterwards.
//!
//! Three cases, decided under the cluster directory's lock from its pid file:
//! - a background cluster (`borealis cluster up`) is running: it is used as it is and never
//!   stopped ([`DevNodes::Found`]);
//! - none is running and `--keep-running` was not given: the nodes run as children of this
//!   command ([`LocalCluster::start_all`]) and are stopped at the end, whatever happens
//!   ([`DevNodes::Foreground`]);
//! - none is running and `--keep-running` was given: the nodes are started as a background
//!   cluster ([`daemon::up`]), exactly as `borealis cluster up` would, and left running when
//!   the run completes ([`DevNodes::Started`]). Foreground children cannot be handed over:
//!   they share this command's session and terminal, so they are never started that way when
//!   they are meant to outlive it.
//!
//! Invariants: while foreground nodes run, this command holds the directory's lock (so neither
//! `cluster up` nor `cluster down` nor a second `dev` can start or stop nodes on the same ports
//! meanwhile) and records them in the pid file, so that if this command is killed outright
//! `borealis cluster down` still finds them; the pid file is emptied once they are stopped. An
//! interrupt stops every node this command started, `--keep-running` or not; a cluster found
//! running is left exactly as found. A background cluster that is only partly running is
//! refused rather than repaired or half-used.

use std::fmt;
use std::path::PathBuf;

use crate::cluster::{Launcher, NodeProcess};
use crate::daemon::{self, DaemonError};
use crate::files::DirLock;
use crate::local::{stop_all, LocalCluster};
use crate::procs::{self, PidMap, ProcId};

use super::DevError;

/// The nodes a `dev` run uses.
#[derive(Debug)]
pub enum DevNodes {
    /// Children of this command; the lock is held until they are stopped.
    Foreground { nodes: Vec<NodeProcess>, lock: DirLock },
    /// A background cluster this command started for `--keep-running`.
    Started,
    /// A background cluster that was running before this command.
    Found,
}

/// What became of the nodes at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Released {
    /// The command stopped the nodes it had started.
    Stopped(usize),
    /// The background cluster the command started is still running (`--keep-running`).
    LeftRunning(PathBuf),
    /// The background cluster that was running before is still running, untouched.
    Untouched(PathBuf),
}

impl fmt::Display for Released {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Released::Stopped(count) => write!(f, "stopped the {count} nodes this command started"),
            Released::LeftRunning(dir) => write!(
                f,
                "the nodes keep running in the background (--keep-running): `borealis cluster status --dir {0}`, \
                 `borealis cluster down --dir {0}`",
                dir.display()
            ),
            Released::Untouched(dir) => write!(
                f,
                "the background cluster that was already running keeps running: `borealis cluster down --dir {}` \
                 stops it",
                dir.display()
            ),
        }
    }
}

impl DevNodes {
    /// Finds or starts the nodes of `cluster` as the module docs describe. Interrupting the
    /// start stops whatever had started.
    pub fn acquire(
        cluster: &LocalCluster,
        launcher: &Launcher,
        keep_running: bool,
    ) -> Result<DevNodes, DevError> {
        let lock = cluster.lock()?;
        let running = daemon::running(cluster)?;
        if !running.is_empty() {
            return found(cluster, &running);
        }
        if !keep_running {
            return start_foreground(cluster, launcher, lock);
        }
        // `daemon::up` takes the lock itself; another command may slip in between, which `up`
        // reports as a cluster already running: then that one is used.
        drop(lock);
        match daemon::up(cluster, launcher) {
            Ok(_) => Ok(DevNodes::Started),
            Err(DaemonError::AlreadyRunning(running)) => found(cluster, &running),
            Err(error) => Err(error.into()),
        }
    }

    /// How the summary describes where the nodes run.
    pub fn describe(&self) -> &'static str {
        match self {
            DevNodes::Foreground { .. } => "foreground",
            DevNodes::Started => "background, started for --keep-running",
            DevNodes::Found => "background, already running",
        }
    }

    /// Node id → process, for the summary.
    pub fn pids(&self, cluster: &LocalCluster) -> PidMap {
        match self {
            DevNodes::Foreground { nodes, .. } => foreground_pids(nodes),
            DevNodes::Started | DevNodes::Found => daemon::running(cluster).unwrap_or_default(),
        }
    }

    /// Ends the run's use of the nodes: foreground nodes are stopped (SIGTERM, then SIGKILL
    /// after the stop timeout); a background cluster this command started is stopped only if
    /// the run was `interrupted`; a cluster found running is left alone.
    pub fn release(self, cluster: &LocalCluster, interrupted: bool) -> Result<Released, DevError> {
        match self {
            DevNodes::Foreground { mut nodes, lock } => {
                stop_all(&mut nodes);
                procs::write_pid_file(&cluster.pid_file(), &PidMap::new())?;
                drop(lock);
                Ok(Released::Stopped(nodes.len()))
            }
            DevNodes::Started if interrupted => {
                let outcome = daemon::down(cluster)?;
                Ok(Released::Stopped(outcome.terminated.len() + outcome.killed.len()))
            }
            DevNodes::Started => Ok(Released::LeftRunning(cluster.dir().to_owned())),
            DevNodes::Found => Ok(Released::Untouched(cluster.dir().to_owned())),
        }
    }
}

/// Uses the background cluster if every node of it is running.
fn found(cluster: &LocalCluster, running: &PidMap) -> Result<DevNodes, DevError> {
    let stopped: Vec<u32> =
        cluster.nodes().iter().map(|n| n.id).filter(|id| !running.contains_key(id)).collect();
    if stopped.is_empty() {
        return Ok(DevNodes::Found);
    }
    let list =
        |ids: &mut dyn Iterator<Item = u32>| ids.map(|id| id.to_string()).collect::<Vec<_>>().join(", ");
    Err(DevError::PartlyRunning {
        dir: cluster.dir().to_owned(),
        running: list(&mut running.keys().copied()),
        stopped: list(&mut stopped.into_iter()),
    })
}

/// Starts every node as a child, and records them in the pid file.
fn start_foreground(
    cluster: &LocalCluster,
    launcher: &Launcher,
    lock: DirLock,
) -> Result<DevNodes, DevError> {
    let nodes = cluster.start_all(launcher)?;
    // Should writing fail, returning drops `nodes`, which kills them: nothing is left unrecorded.
    procs::write_pid_file(&cluster.pid_file(), &foreground_pids(&nodes))?;
    Ok(DevNodes::Foreground { nodes, lock })
}

fn foreground_pids(nodes: &[NodeProcess]) -> PidMap {
    nodes.iter().filter_map(|n| Some((n.spec.node_id, ProcId::of(n.pid()?)?))).collect()
}
