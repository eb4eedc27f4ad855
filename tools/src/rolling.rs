//! `borealis cluster restart --rolling`: restarts a cluster one AZ at a time so that a writer
//! never loses its write quorum (`docs/operations.md`, "Upgrades"). A local cluster's nodes
//! are restarted here ([`Restarter::Local`]); a cluster on hosts by an operator's command run
//! once per node ([`Restarter::Exec`], e.g. `ssh root@$BOREALIS_NODE_ADDRESS systemctl restart
//! storaged`, which with the `Type=notify` unit returns once the node is ready again).
//!
//! Before each AZ, every PG must have its six members healthy and every node serve
//! ([`ready_for_next`]); then that AZ's nodes are stopped (SIGTERM: each drains, acknowledges
//! what it took and checkpoints) and started again, and the next AZ waits until the cluster is
//! whole again. With two segments per AZ, one AZ down leaves every PG four of six: a write
//! quorum. A restart that does not become whole within the timeout stops the roll, leaving the
//! other AZs untouched.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cluster::Launcher;
use crate::daemon::{self, DaemonError};
use crate::health::{self, ClusterHealth, MemberState};
use crate::local::LocalCluster;
use crate::probe::{self, Target};
use crate::{interrupt, procs};

/// How long the cluster may take to be whole again after an AZ restarted.
pub const WHOLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);
/// Pause between two health probes while waiting.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Each node's answer bound within one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the cluster is whole, the time a writer needs to dial the returned nodes again
/// (`client::core::links`: at most 250 ms of backoff and a handshake), so the next AZ does not
/// go down while the writer still counts the previous one as away.
pub const REDIAL_GRACE: Duration = Duration::from_secs(1);

/// Why a rolling restart stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RollingError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("nothing is running in {0}: start the cluster with `borealis cluster up`")]
    NotRunning(String),
    #[error("{when}: the cluster was not whole within {timeout:?} ({why}); stopped the roll")]
    NotWhole { when: String, timeout: Duration, why: String },
    #[error("probing the nodes: {0}")]
    Probe(#[from] probe::ProbeError),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("restart command for node {node}: {why}")]
    Exec { node: u32, why: String },
}

/// How a node is restarted.
#[derive(Clone, Debug)]
pub enum Restarter {
    /// A background local cluster (`borealis cluster up`): stop and start its processes.
    Local(Launcher),
    /// Run `sh -c COMMAND` per node, with `BOREALIS_NODE_ID`, `BOREALIS_NODE_NAME` and
    /// `BOREALIS_NODE_ADDRESS` (its QUIC IP) set; it must return once the node is restarted.
    Exec(String),
}

/// Whether the next AZ may go down: every node serves and every PG has six members serving
/// and caught up (a `lagging` member counts as healthy for `status`, but records written while
/// the next AZ is away would then have only two live copies beyond it). `Err` says what is
/// still missing.
pub fn ready_for_next(health: &ClusterHealth) -> Result<(), String> {
    if health.nodes_serving < health.nodes_total {
        return Err(format!("{} of {} nodes serving", health.nodes_serving, health.nodes_total));
    }
    if health.pgs_degraded > 0 || health.pgs_below_write_quorum > 0 {
        return Err(format!(
            "{} PG(s) below six healthy members, {} below a write quorum",
            health.pgs_degraded, health.pgs_below_write_quorum
        ));
    }
    let behind = health.pgs.iter().flat_map(|pg| &pg.members).filter(|m| m.state != MemberState::Serving);
    if let Some(member) = behind.clone().next() {
        return Err(format!(
            "{} segment(s) catching up (node {}: {})",
            behind.count(),
            member.node,
            member.state
        ));
    }
    Ok(())
}

/// Restarts `cluster`'s nodes one AZ at a time (see the module docs); `say` hears progress.
pub fn restart(
    cluster: &LocalCluster,
    restarter: &Restarter,
    timeout: Duration,
    mut say: impl FnMut(&str),
) -> Result<(), RollingError> {
    if matches!(restarter, Restarter::Local(_)) && daemon::running(cluster)?.is_empty() {
        return Err(RollingError::NotRunning(cluster.dir().display().to_string()));
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RollingError::Runtime)?;
    let zones: BTreeSet<u16> = cluster.nodes().iter().map(|n| n.az).collect();
    wait_whole(cluster, &runtime, timeout, "before the first AZ")?;
    for az in zones {
        interrupt::check().map_err(DaemonError::from)?;
        let ids: Vec<u32> = cluster.nodes().iter().filter(|n| n.az == az).map(|n| n.id).collect();
        say(&format!("AZ {az}: restarting nodes {ids:?}"));
        match restarter {
            Restarter::Local(launcher) => {
                let running = daemon::running(cluster)?;
                let stopping: Vec<procs::ProcId> =
                    ids.iter().filter_map(|id| running.get(id).copied()).collect();
                let outcome = procs::stop(&stopping, crate::cluster::STOP_TIMEOUT);
                if !outcome.killed.is_empty() {
                    say(&format!("AZ {az}: pids {:?} did not drain in time and were killed", outcome.killed));
                }
                daemon::up(cluster, launcher)?;
            }
            Restarter::Exec(command) => {
                for node in cluster.nodes().iter().filter(|n| n.az == az) {
                    run_exec(command, node)?;
                }
            }
        }
        let started = Instant::now();
        wait_whole(cluster, &runtime, timeout, &format!("after AZ {az}"))?;
        say(&format!("AZ {az}: whole again after {:.1} s", started.elapsed().as_secs_f64()));
        std::thread::sleep(REDIAL_GRACE);
    }
    Ok(())
}

/// Runs the operator's restart command for `node`.
fn run_exec(command: &str, node: &crate::local::LocalNode) -> Result<(), RollingError> {
    let status = std::process::Command::new("sh")
        .args(["-c", command])
        .env("BOREALIS_NODE_ID", node.id.to_string())
        .env("BOREALIS_NODE_NAME", &node.name)
        .env("BOREALIS_NODE_ADDRESS", node.addr.ip().to_string())
        .status()
        .map_err(|e| RollingError::Exec { node: node.id, why: e.to_string() })?;
    match status.success() {
        true => Ok(()),
        false => Err(RollingError::Exec { node: node.id, why: format!("exited with {status}") }),
    }
}

/// Probes until [`ready_for_next`] holds, or `timeout` passes; `when` names the moment in the
/// error.
pub fn wait_whole(
    cluster: &LocalCluster,
    runtime: &tokio::runtime::Runtime,
    timeout: Duration,
    when: &str,
) -> Result<(), RollingError> {
    let placement = cluster.placement().map_err(|e| RollingError::NotWhole {
        when: when.to_owned(),
        timeout,
        why: e.to_string(),
    })?;
    let targets: Vec<Target> = cluster.nodes().iter().map(Target::from).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let probes = runtime.block_on(probe::probe_all(&targets, &cluster.client_tls(), PROBE_TIMEOUT))?;
        let why = match ready_for_next(&health::assess(&placement, &probes)) {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(RollingError::NotWhole { when: when.to_owned(), timeout, why });
        }
        interrupt::check().map_err(DaemonError::from)?;
        std::thread::sleep(PROBE_EVERY);
    }
}
