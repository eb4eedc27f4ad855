//! The async engine API over QUIC: [`Writer`] opens a volume (recovering it from whatever a
//! previous writer left), appends records and reports when they are durable, and reads records
//! back. It runs on the caller's tokio runtime (current-thread or multi-thread); the only
//! requirement is the one quinn has, a tokio runtime with time and I/O enabled.
//!
//! ```no_run
//! # async fn example(cluster: protocol::placement::ClusterMap, tls: transport::TlsFiles) -> Result<(), Box<dyn std::error::Error>> {
//! use client::{ClientConfig, NewRecord, VolumeGeometry, Writer};
//! use protocol::{PageId, RecordKind, VolumeId};
//!
//! let geometry = VolumeGeometry::new(VolumeId(42), 4096, 1024)?;
//! let writer = Writer::open(ClientConfig::new(cluster, tls), geometry).await?;
//! let commit = NewRecord { page: PageId(7), kind: RecordKind::PageImage, payload: vec![0u8; 4096].into(), cpl: true, lsn: None };
//! let appended = writer.append(vec![commit]).await?;
//! let vdl = appended.durable().await?; // the commit is durable at 4 of 6 segments
//! assert!(vdl >= appended.last);
//! writer.close().await;
//! # Ok(()) }
//! ```

pub(crate) mod error;
pub(crate) mod links;
mod map_follow;
pub(crate) mod reader;
pub(crate) mod reads;
pub(crate) mod recovery;
pub mod requests;
pub(crate) mod task;

use std::time::Duration;

use protocol::placement::{ClusterMap, MapChangeError};
use protocol::Lsn;
use tokio::sync::{mpsc, oneshot, watch};
use transport::{TlsFiles, Tuning};

pub use error::{AppendError, OpenError, ReadError};
use links::{Connections, Dialer};
pub use map_follow::EtcdSource;
use task::{Command, Driver, Progress};
pub use task::{Memberships, SegmentScls};

use crate::core::links::{LinkLimits, Links};
use crate::core::writer::{AppendRefusal, NewRecord, WriterLimits};
use crate::core::{VolumeGeometry, WriterCore};

/// How long a node stays unreachable before the writer replaces it (Aurora's choice is of the
/// same order: long enough that a restart or a network blip never moves data).
pub const REPLACE_AFTER_DEFAULT: Duration = Duration::from_secs(600);

/// Commands queued to the driver task before `append` waits.
const COMMANDS_QUEUED_MAX: usize = 1024;

/// How to reach the cluster and how patient to be.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub cluster: ClusterMap,
    pub tls: TlsFiles,
    pub tuning: Tuning,
    pub limits: WriterLimits,
    /// How long an append may take to become durable before it fails with `Timeout`.
    pub append_timeout: Duration,
    pub connect_timeout: Duration,
    /// Per request during recovery and reads.
    pub request_timeout: Duration,
    /// Shortest wait before a read is also sent to a second segment.
    pub hedge_after_min: Duration,
    /// When a node counts as silent and how it is dialled again (`connect_timeout` bounds each
    /// dial attempt).
    pub links: LinkLimits,
    /// How long a node may stay unreachable before this writer replaces it in every PG it
    /// serves by a spare node of its AZ (`docs/membership.md`); `None`: never automatically.
    pub replace_after: Option<Duration>,
    /// A directory where operators drop replacement requests (`replace-node-ID` files, what
    /// `borealis cluster replace-node` writes): the writer checks it every second, replaces
    /// the node, and answers in `replace-node-ID.done`. `None`: only `Writer::replace_node`.
    pub requests_dir: Option<std::path::PathBuf>,
    /// Follow the cluster map in etcd while the writer runs (`cluster` is then the map to open
    /// with, e.g. the one `cluster.toml` holds): nodes added there are used without reopening.
    /// `None`: the map stays `cluster`.
    pub etcd: Option<EtcdSource>,
}

impl ClientConfig {
    /// Defaults: 10 s append timeout, 5 s connect and request timeouts, hedge after 5 ms, the
    /// link limits of `core::links`.
    pub fn new(cluster: ClusterMap, tls: TlsFiles) -> ClientConfig {
        ClientConfig {
            cluster,
            tls,
            tuning: Tuning::default(),
            limits: WriterLimits::default(),
            append_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            hedge_after_min: Duration::from_millis(5),
            links: LinkLimits::default(),
            replace_after: Some(REPLACE_AFTER_DEFAULT),
            requests_dir: None,
            etcd: None,
        }
    }
}

/// The writer of one volume. Dropping it (or `close`) stops its driver task.
#[derive(Debug)]
pub struct Writer {
    commands: mpsc::Sender<Command>,
    progress: watch::Receiver<Progress>,
    connections: Connections,
    geometry: VolumeGeometry,
    config: ClientConfig,
    reads: reads::ReadLatency,
    reads_in_use: reads::ReadsInUse,
}

/// Records accepted by `append`: their LSNs, and a way to wait until they are durable.
#[derive(Debug)]
pub struct Appended {
    pub first: Lsn,
    pub last: Lsn,
    progress: watch::Receiver<Progress>,
    timeout: Duration,
}

impl Appended {
    /// Resolves once VDL covers the last record (returns that VDL); fails if the writer is
    /// fenced, closed, or the append timeout passes first.
    pub async fn durable(&self) -> Result<Lsn, AppendError> {
        durable_through(self.progress.clone(), self.last, self.timeout).await
    }
}

/// Resolves once VDL reaches `lsn` (returns that VDL); fails if the writer is fenced or closed,
/// or `timeout` passes first.
async fn durable_through(
    mut progress: watch::Receiver<Progress>,
    lsn: Lsn,
    timeout: Duration,
) -> Result<Lsn, AppendError> {
    let waited = wait_for(&mut progress, timeout, |p| p.vdl >= lsn).await;
    waited.map(|p| p.vdl).map_err(|e| match e {
        AppendError::Timeout { vdl, .. } => AppendError::Timeout { lsn, vdl },
        other => other,
    })
}

impl Writer {
    /// Connects to the cluster and takes the volume over: fences any previous writer, recovers
    /// VDL and truncates what it never made durable (DESIGN §3). A volume nobody wrote starts
    /// empty at the first epoch.
    pub async fn open(config: ClientConfig, geometry: VolumeGeometry) -> Result<Writer, OpenError> {
        let dialer =
            Dialer::new(config.cluster.clone(), &config.tls, &config.tuning).map_err(OpenError::Setup)?;
        let connections = Connections::default();
        let limits = LinkLimits { dial_attempt_max: config.connect_timeout, ..config.links };
        let nodes = config.cluster.nodes().iter().map(|n| n.id);
        let mut links = Links::new(nodes, limits, recovery::now());
        let (lal, timeout) = (config.limits.lal, config.request_timeout);
        let start = recovery::recover(&dialer, &connections, &mut links, geometry, lal, timeout).await?;
        let mut limits = config.limits;
        limits.replace_after_ticks = config.replace_after.map(|after| {
            u32::try_from(after.as_millis().div_ceil(task::TICK.as_millis())).unwrap_or(u32::MAX)
        });
        let core = WriterCore::new(geometry, config.cluster.clone(), limits, start);
        let (progress_tx, progress) = watch::channel(Progress { vdl: core.vdl(), ..Progress::default() });
        let reads_in_use = reads::ReadsInUse::default();
        let (driver, events) = Driver::new(
            core,
            links,
            dialer,
            connections.clone(),
            progress_tx,
            config.request_timeout,
            reads_in_use.clone(),
        );
        let (commands, command_rx) = mpsc::channel(COMMANDS_QUEUED_MAX);
        tokio::spawn(driver.run(command_rx, events));
        if let Some(dir) = config.requests_dir.clone() {
            tokio::spawn(requests::watch(dir, commands.downgrade()));
        }
        if let Some(source) = config.etcd.clone() {
            let (start, commands) = (config.cluster.clone(), commands.downgrade());
            tokio::spawn(async move { map_follow::follow(source, &start, commands).await });
        }
        let reads = reads::ReadLatency::default();
        Ok(Writer { commands, progress, connections, geometry, config, reads, reads_in_use })
    }

    /// Assigns LSNs and backlinks and ships the records; waits (up to the append timeout) while
    /// the LAL window is full. Await [`Appended::durable`] to learn when they are durable.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Appended, AppendError> {
        if records.is_empty() {
            return Err(AppendError::Empty);
        }
        let deadline = tokio::time::Instant::now() + self.config.append_timeout;
        loop {
            let (reply, answer) = oneshot::channel();
            let command = Command::Append { records: records.clone(), reply };
            self.commands.send(command).await.map_err(|_| AppendError::Closed)?;
            match answer.await.map_err(|_| AppendError::Closed)? {
                Ok((first, last)) => {
                    return Ok(Appended {
                        first,
                        last,
                        progress: self.progress.clone(),
                        timeout: self.config.append_timeout,
                    })
                }
                Err(AppendRefusal::WindowFull) => self.wait_for_room(deadline).await?,
                Err(AppendRefusal::Fenced) => return Err(AppendError::Fenced),
                Err(AppendRefusal::Unauthorized) => return Err(AppendError::Unauthorized),
                Err(AppendRefusal::VolumeDeleted) => return Err(AppendError::VolumeDeleted),
                Err(AppendRefusal::LsnNotIncreasing { lsn, last }) => {
                    return Err(AppendError::LsnNotIncreasing { lsn, last })
                }
                Err(AppendRefusal::Format(error)) => return Err(AppendError::Format(error)),
            }
        }
    }

    async fn wait_for_room(&self, deadline: tokio::time::Instant) -> Result<(), AppendError> {
        let mut progress = self.progress.clone();
        let before = progress.borrow_and_update().vdl;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let vdl = wait_for(&mut progress, remaining, |p| p.vdl > before).await?.vdl;
        debug_assert!(vdl > before);
        Ok(())
    }

    /// The volume durable LSN now.
    pub fn vdl(&self) -> Lsn {
        self.progress.borrow().vdl
    }

    /// Resolves once VDL reaches `lsn` (an LSN `append` returned), so everything appended up to
    /// it is durable; fails if the writer is fenced or closed, or the append timeout passes.
    pub async fn durable_through(&self, lsn: Lsn) -> Result<Lsn, AppendError> {
        durable_through(self.progress.clone(), lsn, self.config.append_timeout).await
    }

    /// A channel that changes whenever VDL moves (or the writer is fenced or closed).
    pub fn watch_vdl(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Every PG's members with the SCL each last reported to this writer (in acks): how far
    /// each segment is known to be complete.
    pub async fn segment_scls(&self) -> Result<SegmentScls, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::SegmentScls { reply }).await.map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)
    }

    pub fn geometry(&self) -> VolumeGeometry {
        self.geometry
    }

    /// Replaces `node` now in every PG it serves, by a spare node of its AZ (the operator's
    /// `borealis cluster replace-node`): returns the PGs whose change started. The writer keeps
    /// writing through the change; it is not reversed if the node answers again.
    pub async fn replace_node(&self, node: protocol::NodeId) -> Result<Vec<protocol::PgId>, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::ReplaceNode { node, reply }).await.map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)
    }

    /// Takes a newer cluster map now (what following etcd does by itself, `ClientConfig::etcd`):
    /// only one that moves no PG. Returns the nodes it added.
    pub async fn update_map(
        &self,
        map: ClusterMap,
    ) -> Result<Result<Vec<protocol::NodeId>, MapChangeError>, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::UpdateMap { map, reply }).await.map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)
    }

    /// Every PG's quorum sets as this writer counts them, with the change under way, if any.
    pub async fn memberships(&self) -> Result<Memberships, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Memberships { reply }).await.map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)
    }

    /// Waits (up to the append timeout) until everything appended is durable, then stops the
    /// driver and closes the connections.
    pub async fn close(self) {
        let mut progress = self.progress.clone();
        let _ = wait_for(&mut progress, self.config.append_timeout, |p| p.pending_records == 0).await;
        drop(self.commands);
        let _ = wait_for(&mut progress, Duration::from_secs(1), |p| p.closed).await;
    }
}

/// Waits until `done(progress)`, failing on fencing, closing or the timeout.
async fn wait_for(
    progress: &mut watch::Receiver<Progress>,
    timeout: Duration,
    done: impl Fn(&Progress) -> bool,
) -> Result<Progress, AppendError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = *progress.borrow_and_update();
        if done(&now) {
            return Ok(now);
        }
        if now.fenced {
            return Err(AppendError::Fenced);
        }
        if let Some(code) = now.refused_by {
            return Err(match AppendRefusal::refused(code) {
                AppendRefusal::VolumeDeleted => AppendError::VolumeDeleted,
                _ => AppendError::Unauthorized,
            });
        }
        if now.closed {
            return Err(AppendError::Closed);
        }
        match tokio::time::timeout_at(deadline, progress.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(AppendError::Closed),
            Err(_) => return Err(AppendError::Timeout { lsn: Lsn::ZERO, vdl: now.vdl }),
        }
    }
}
