//! `borealis dev`: Borealis in one command. It creates the local cluster on first use (directory,
//! development CA, node and client certificates, key file), runs its nodes (3 AZs × 2 by
//! default, × `--nodes-per-az` otherwise) on loopback, streams a realistic, compressible
//! workload through the client for a bounded time with live progress, reads a sample back, and
//! summarises throughput, commit latency, VDL and node health, as a table and optionally as JSON.
//!
//! Pieces: [`nodes`] decides who runs the nodes (this command in the foreground, a background
//! cluster found running, or one started for `--keep-running`) and what becomes of them;
//! [`orders`] generates the workload (orders and their line items as CSV rows in page patches,
//! each transaction ending in a commit marker); [`workload`] drives it through a
//! [`client::Writer`] and measures it; [`sample`] picks and re-reads durable records; [`live`]
//! shows progress; [`summary`] is the result.
//!
//! Invariants: [`run`] releases the nodes on every path once it has them: foreground nodes are
//! always stopped, a background cluster found running never is, one started for
//! `--keep-running` is stopped only on an interrupt. The writer is closed before any node is
//! stopped. Every wait polls the interrupt flag (see [`crate::interrupt`]) at least every
//! [`workload::TICK`] or is bounded by a timeout, so the first Ctrl-C ends the run promptly and
//! in order; a second one kills the children at once. Nothing here writes a file except
//! through the atomic helpers, so an interrupt leaves nothing torn, and the storage nodes
//! themselves are crash-safe (`docs/operations.md`).

pub mod live;
pub mod nodes;
pub mod orders;
pub mod sample;
pub mod summary;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use client::{AppendError, ClientConfig, OpenError, VolumeGeometry, Writer};
use protocol::Lsn;

use crate::cluster::{LaunchError, Launcher};
use crate::daemon::DaemonError;
use crate::interrupt::{self, Interrupted};
use crate::local::{LocalCluster, LocalError};
use crate::probe::{self, ProbeError, Target};
use crate::procs::PidFileError;
use live::LiveLine;
use nodes::{DevNodes, Released};
use orders::{Orders, RecordBytesError};
use summary::{Parts, Summary};
use workload::{Measured, Plan};

/// Default `--duration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Shortest and longest accepted `--duration`.
pub const DURATION_MIN: Duration = Duration::from_millis(100);
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Default `--in-flight`: transactions outstanding at once.
pub const DEFAULT_IN_FLIGHT: usize = 64;
/// Largest `--in-flight`: far below the writer's pending-record bound.
pub const IN_FLIGHT_MAX: usize = 4096;
/// Default `--record-bytes`: about the size of a typical OLTP redo record.
pub const DEFAULT_RECORD_BYTES: usize = 256;
/// How long the nodes' QUIC status and `/health` may take to answer at the end.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long closing the writer may take after an interrupt or a failure (nodes may be gone:
/// on a terminal, Ctrl-C reaches the foreground nodes too, and they stop by themselves).
const CLOSE_QUICKLY: Duration = Duration::from_secs(1);
/// How often an interruptible wait checks the flag.
const INTERRUPT_POLL: Duration = Duration::from_millis(50);

/// What `borealis dev` was asked to do.
#[derive(Clone, Debug)]
pub struct DevOptions {
    pub dir: PathBuf,
    pub duration: Duration,
    pub keep_running: bool,
    pub record_bytes: usize,
    pub in_flight: usize,
    /// The writer's largest UDP payload (datagram size); the nodes' is in the cluster map.
    pub udp_payload_bytes: u16,
    /// Open loop at this many transactions per second (see `workload::Plan::rate`).
    pub rate: Option<f64>,
    /// Nodes per AZ of a cluster created by this run; `None`: an existing cluster as it is, or
    /// the default for a new one. A cluster of another layout is refused.
    pub nodes_per_az: Option<crate::local::map::NodesPerAz>,
}

/// Why a `dev` run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    #[error(
        "nodes {running} of the background cluster in {} are running but {stopped} are not: \
         `borealis cluster up --dir {0}` restarts them, `borealis cluster down --dir {0}` stops them",
        dir.display()
    )]
    PartlyRunning { dir: PathBuf, running: String, stopped: String },
    #[error(transparent)]
    RecordBytes(#[from] RecordBytesError),
    #[error("cluster map: {0}")]
    Placement(#[from] protocol::placement::PlacementError),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("opening the dev volume: {0}")]
    Open(#[from] OpenError),
    #[error("append: {0}")]
    Append(#[from] AppendError),
    #[error("the transaction ending at {lsn} was not durable after {waited:?} (VDL {vdl}): is a quorum of nodes up?")]
    NotDurable { lsn: Lsn, vdl: Lsn, waited: Duration },
    #[error("probing the nodes: {0}")]
    Probe(#[from] ProbeError),
    #[error("keeping the run's page versions readable: {0}")]
    Floor(#[from] client::ReadError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

impl DevError {
    /// True if the run stopped because the user asked (SIGINT or SIGTERM).
    pub fn is_interrupted(&self) -> bool {
        match self {
            DevError::Interrupted(_)
            | DevError::Daemon(DaemonError::Interrupted(_))
            | DevError::Local(LocalError::Launch(LaunchError::Interrupted(_))) => true,
            DevError::Daemon(DaemonError::Local(LocalError::Launch(LaunchError::Interrupted(_)))) => true,
            _ => interrupt::requested(),
        }
    }
}

/// A run that got as far as having nodes: its result, and what became of the nodes.
#[derive(Debug)]
pub struct DevOutcome {
    pub result: Result<Summary, DevError>,
    pub released: Released,
    /// An error while stopping the nodes (reported after the result).
    pub release_error: Option<DevError>,
}

/// Runs `borealis dev`: an error before the nodes are in hand (nothing of this command is then
/// running), else the outcome. The caller installs the interrupt handlers first.
pub fn run(options: &DevOptions, launcher: &Launcher) -> Result<DevOutcome, DevError> {
    let orders = Orders::new(options.record_bytes)?;
    let cluster = LocalCluster::load_or_create_with(&options.dir, options.nodes_per_az)?;
    let nodes = DevNodes::acquire(&cluster, launcher, options.keep_running)?;
    let pids = nodes.pids(&cluster);
    let result = exercise(&cluster, options, orders).map(|(measured, verification, probes)| {
        Summary::new(&Parts {
            cluster: &cluster,
            nodes_mode: nodes.describe(),
            in_flight: options.in_flight,
            record_bytes: options.record_bytes,
            measured: &measured,
            verification: &verification,
            probes: &probes,
            pids: &pids,
        })
    });
    let interrupted = result.as_ref().err().is_some_and(DevError::is_interrupted) || interrupt::requested();
    let (released, release_error) = match nodes.release(&cluster, interrupted) {
        Ok(released) => (released, None),
        // What is known: foreground nodes are stopped by now whatever failed after.
        Err(error) => (Released::Stopped(0), Some(error)),
    };
    Ok(DevOutcome { result, released, release_error })
}

type Exercised = (Measured, sample::Verification, Vec<probe::Probe>);

/// Everything done against running nodes: the workload, the read-back, closing the writer,
/// and probing the nodes.
fn exercise(cluster: &LocalCluster, options: &DevOptions, mut orders: Orders) -> Result<Exercised, DevError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DevError::Runtime)?;
    runtime.block_on(async {
        let mut config = ClientConfig::new(cluster.placement()?, cluster.client_tls());
        config.tuning.max_udp_payload_bytes = options.udp_payload_bytes;
        config.requests_dir = Some(cluster.requests_dir());
        let plan = Plan {
            duration: options.duration,
            in_flight: options.in_flight,
            patience: config.append_timeout,
            rate: options.rate,
        };
        let geometry = VolumeGeometry::new(orders::VOLUME, orders.page_bytes(), orders::PAGES_PER_PG)
            .expect("the dev geometry is valid");
        let writer = interruptible(Writer::open(config, geometry)).await??;
        let checked = measure_and_verify(&writer, &mut orders, &plan).await;
        match &checked {
            Ok(_) => writer.close().await,
            // Pending appends may never become durable now: do not wait the full append timeout.
            Err(_) => drop(tokio::time::timeout(CLOSE_QUICKLY, writer.close()).await),
        }
        let (measured, verification) = checked?;
        let targets: Vec<Target> = cluster.nodes().iter().map(Target::from).collect();
        let probes = probe::probe_all(&targets, &cluster.client_tls(), PROBE_TIMEOUT).await?;
        Ok((measured, verification, probes))
    })
}

async fn measure_and_verify(
    writer: &Writer,
    orders: &mut Orders,
    plan: &Plan,
) -> Result<(Measured, sample::Verification), DevError> {
    // Every version written from here on stays readable until the sample is checked.
    writer.pin_floor(Some(writer.vdl())).await?;
    let mut live = LiveLine::on_stderr();
    let measured = workload::drive(writer, orders, plan, &mut live).await;
    live.finish();
    let measured = measured?;
    let verification = sample::verify(writer, &measured.sample).await?;
    writer.pin_floor(None).await?;
    Ok((measured, verification))
}

/// Runs `work` unless the user interrupts first (then the work is dropped).
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Result<T, Interrupted> {
    tokio::select! {
        done = work => Ok(done),
        () = until_interrupted() => Err(Interrupted),
    }
}

async fn until_interrupted() {
    while !interrupt::requested() {
        tokio::time::sleep(INTERRUPT_POLL).await;
    }
}

/// Parses a `--duration`: a number with a unit `ms`, `s`, `m` or `h` (`10s`, `1500ms`, `2m`,
/// `0.5s`), or a bare number of seconds; within [`DURATION_MIN`]..=[`DURATION_MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration like 10s, 1500ms or 2m"))?;
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    let duration = Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|e| e.to_string())?;
    if !(DURATION_MIN..=DURATION_MAX).contains(&duration) {
        return Err(format!("{duration:?} is outside {DURATION_MIN:?}..={DURATION_MAX:?}"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1ms").unwrap_err().contains("outside"));
        assert!(parse_duration("2d").is_err());
    }

    #[test]
    fn interrupts_are_recognised_through_every_wrapper() {
        let launch = LocalError::Launch(LaunchError::Interrupted(Interrupted));
        assert!(DevError::Local(launch).is_interrupted());
        assert!(DevError::Daemon(DaemonError::Interrupted(Interrupted)).is_interrupted());
        assert!(DevError::Interrupted(Interrupted).is_interrupted());
    }
}
