//! [`Reader`]: reads a volume's pages at VDLs its writer declared, without taking the volume
//! over, so it runs beside a live writer (or with none). The decisions are `core::reader`'s;
//! this drives it: it dials the nodes, asks their status now and then, sends floor reports
//! every tick and reads with `ReadPageAsOf`, hedged like the writer's reads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::messages::ReadPageAsOf;
use protocol::{Lsn, Message, NodeId, PageId};
use tokio::task::JoinSet;

use super::error::{OpenError, ReadError};
use super::links::{Connections, Dialer};
use super::reads::{page_answer, Asking, PageVersion, ReadLatency, ReadsInUse, Snapshot};
use super::recovery::ask;
use super::ClientConfig;
use crate::core::reader::ReaderCore;
use crate::core::VolumeGeometry;

/// How often the reader renews its floor reports and moves its read point.
pub const READER_TICK: Duration = Duration::from_secs(1);
/// How often (in ticks) it asks every node's status again, to learn new PGs and memberships.
pub const STATUS_EVERY_TICKS: u32 = 5;
/// Pause between the rounds of `open` while no read point is known yet.
const OPEN_ROUND_PAUSE: Duration = Duration::from_millis(100);
/// Times a read is sent around the PG's segments before it fails (`NotYet` answers clear
/// once a segment learns the VDL, at the writer's next heartbeat).
const READ_ROUNDS_MAX: u32 = 3;

/// A read-only view of one volume (see the module docs). Dropping it (or `close`) stops its
/// background task; its floor reports then expire after `READER_FLOOR_LEASE_MS`.
#[derive(Debug)]
pub struct Reader {
    core: Arc<Mutex<ReaderCore>>,
    connections: Connections,
    geometry: VolumeGeometry,
    config: ClientConfig,
    latency: ReadLatency,
    reads_in_use: ReadsInUse,
    task: tokio::task::JoinHandle<()>,
}

/// What a round of the reader's background work needs.
#[derive(Clone)]
struct Rounds {
    core: Arc<Mutex<ReaderCore>>,
    dialer: Dialer,
    connections: Connections,
    reads_in_use: ReadsInUse,
    config: ClientConfig,
}

impl Reader {
    /// Connects to the cluster and finds a first read point. Fails with `NoReadPoint` if no
    /// PG of the volume shows a declared VDL within the connect and request timeouts (a
    /// volume no writer opened yet, or too few nodes up).
    pub async fn open(config: ClientConfig, geometry: VolumeGeometry) -> Result<Reader, OpenError> {
        let dialer =
            Dialer::new(config.cluster.clone(), &config.tls, &config.tuning).map_err(OpenError::Setup)?;
        let core = Arc::new(Mutex::new(ReaderCore::new(geometry, config.cluster.clone(), reader_id())));
        let rounds = Rounds {
            core: Arc::clone(&core),
            dialer,
            connections: Connections::default(),
            reads_in_use: ReadsInUse::default(),
            config: config.clone(),
        };
        let deadline = tokio::time::Instant::now() + config.connect_timeout + config.request_timeout;
        let mut round = 0;
        while rounds.run(round % STATUS_EVERY_TICKS == 0).await == Lsn::ZERO {
            if let Some((node, code, detail)) = core.lock().expect("never poisoned").refused().cloned() {
                return Err(OpenError::refused(code, node, detail));
            }
            if tokio::time::Instant::now() >= deadline {
                let pgs = core.lock().expect("never poisoned").pg_count();
                return Err(OpenError::NoReadPoint { pgs });
            }
            tokio::time::sleep(OPEN_ROUND_PAUSE).await;
            round += 1;
        }
        let background = rounds.clone();
        let task = tokio::spawn(async move {
            let mut ticks = 1u32;
            loop {
                tokio::time::sleep(READER_TICK).await;
                background.run(ticks % STATUS_EVERY_TICKS == 0).await;
                ticks = ticks.wrapping_add(1);
            }
        });
        let Rounds { connections, reads_in_use, .. } = rounds;
        let latency = ReadLatency::default();
        Ok(Reader { core, connections, geometry, config, latency, reads_in_use, task })
    }

    /// The newest read point: a VDL a writer declared. It moves on every tick while a writer
    /// runs.
    pub fn read_point(&self) -> Lsn {
        self.core.lock().expect("never poisoned").read_point()
    }

    /// The newest read point, held readable until the snapshot is dropped: every
    /// [`Reader::read_page`] with it sees the volume as of one committed moment.
    pub fn snapshot(&self) -> Snapshot {
        self.reads_in_use.snapshot(|| self.read_point())
    }

    /// `page` as of `snapshot`. One segment that can tell the PG's newest LSN at that point
    /// answers, hedged to another when it is slow; the page's CRC32C is verified on receipt.
    pub async fn read_page(&self, page: PageId, snapshot: &Snapshot) -> Result<PageVersion, ReadError> {
        let at = snapshot.lsn();
        let pg = self.geometry.pg_of(page);
        let read = Message::ReadPageAsOf(ReadPageAsOf {
            pg: self.geometry.pg_ref(pg),
            page_id: page,
            read_lsn: at,
            page_bytes: self.geometry.page_bytes,
        });
        let asking = Asking { connections: &self.connections, latency: &self.latency, config: &self.config };
        let mut failed = None;
        for _ in 0..READ_ROUNDS_MAX {
            let candidates = self.core.lock().expect("never poisoned").candidates(pg, at);
            let accept = page_answer(page, at, self.geometry.page_bytes);
            let answer = asking.hedged(&candidates, &read, accept).await;
            match answer {
                Ok(version) => return Ok(version),
                Err(failure) => failed = Some(failure),
            }
        }
        Err(failed.expect("READ_ROUNDS_MAX > 0").unavailable(pg))
    }

    /// Stops the background task (as dropping does); the floor reports expire on their own.
    pub fn close(self) {
        self.task.abort();
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rounds {
    /// One round: dials the nodes not connected, asks their status if `with_status`, reports
    /// the floor to every segment known and moves the read point. Returns the read point.
    async fn run(&self, with_status: bool) -> Lsn {
        self.connect().await;
        if with_status {
            let nodes: Vec<NodeId> = self.config.cluster.nodes().iter().map(|n| n.id).collect();
            let asks = nodes.into_iter().map(|node| (node, Message::StatusRequest));
            for (_, reply) in self.ask_all(asks).await {
                if let Message::Status(status) = reply {
                    self.core.lock().expect("never poisoned").handle_status(&status);
                }
            }
        }
        let reports = self.core.lock().expect("never poisoned").floor_reports(self.reads_in_use.oldest());
        let asks = reports.into_iter().map(|(node, report)| (node, Message::FloorReport(report)));
        let acks = self.ask_all(asks).await;
        let mut core = self.core.lock().expect("never poisoned");
        for (node, reply) in acks {
            match reply {
                Message::FloorAck(ack) => core.handle_floor_ack(&ack),
                Message::Error(refusal) => core.handle_refusal(node, &refusal),
                _ => {}
            }
        }
        core.advance()
    }

    /// Dials, in parallel, every node without a live connection (each within the connect
    /// timeout); a node that cannot be reached is tried again next round.
    async fn connect(&self) {
        let mut dials = JoinSet::new();
        for node in self.config.cluster.nodes().iter().map(|n| n.id) {
            let live = self.connections.get(node).is_some_and(|c| c.close_reason().is_none());
            if !live {
                let (dialer, timeout) = (self.dialer.clone(), self.config.connect_timeout);
                dials.spawn(async move { (node, dialer.connect_within(node, timeout).await) });
            }
        }
        while let Some(done) = dials.join_next().await {
            match done {
                Ok((node, Ok(connection))) => self.connections.set(node, connection),
                Ok((node, Err(error))) => tracing::debug!(%node, %error, "reader dial failed"),
                Err(error) => tracing::debug!(%error, "reader dial task failed"),
            }
        }
    }

    /// Sends every request in parallel, each within the request timeout; returns the answers.
    async fn ask_all(&self, asks: impl Iterator<Item = (NodeId, Message)>) -> Vec<(NodeId, Message)> {
        let mut requests = JoinSet::new();
        for (node, message) in asks {
            let (connections, timeout) = (self.connections.clone(), self.config.request_timeout);
            requests.spawn(async move { (node, ask(&connections, node, &message, timeout).await) });
        }
        let mut answers = Vec::new();
        while let Some(done) = requests.join_next().await {
            if let Ok((node, Some(answer))) = done {
                answers.push((node, answer));
            }
        }
        answers
    }
}

/// An id for this reader's floor reports: apart from every writer's (a writer reports as its
/// volume epoch, a small number) by the top bit, and from other readers' by process and time.
fn reader_id() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (1 << 63) | ((u64::from(std::process::id()) << 32) ^ nanos) & !(1 << 63)
}
