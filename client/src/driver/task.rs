//! The driver task: owns the writer core and turns its transmits into frames on per-(node, PG)
//! streams, its inputs into core calls, and connectivity into `handle_node_down/up`. It also
//! reconnects to lost nodes and repairs segments that fell behind (reads the missing records
//! from a complete segment and appends them to the lagging one), so no PG stays at 4 of 6.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use protocol::messages::{AppendBatch, ReadRecords, Records};
use protocol::{Lsn, LsnRange, Message, NodeId, PgId, Record};
use tokio::sync::{mpsc, oneshot, watch};

use super::links::{open_stream, Connections, Dialer, Event};
use super::recovery::ask;
use crate::core::floor::ReadPointRefusal;
use crate::core::writer::{AppendRefusal, NewRecord};
use crate::core::WriterCore;

/// How often idle PGs hear the VDL and repairs are considered.
pub const TICK: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A node that has left a frame unanswered this long is treated as lost (and reconnected).
pub const NODE_SILENCE_MAX: Duration = Duration::from_secs(1);
/// How long a closing writer lets its final VDL heartbeats reach the nodes.
pub const CLOSE_LINGER: Duration = Duration::from_millis(100);
/// Record bytes per repair read.
const REPAIR_READ_BYTES_MAX: u32 = 2 * 1024 * 1024;

/// What the writer handle asks of the driver.
#[derive(Debug)]
pub enum Command {
    Append {
        records: Vec<NewRecord>,
        reply: oneshot::Sender<Result<(Lsn, Lsn), AppendRefusal>>,
    },
    /// Read routing for a PG: candidate nodes, the LSN they must be complete through, epochs.
    Route {
        pg: PgId,
        reply: oneshot::Sender<(Vec<NodeId>, Lsn, protocol::Epochs)>,
    },
    /// Routing for a page read at `at`: the PG's newest LSN at or below it and the candidates
    /// (or why `at` cannot be read), and the epochs.
    RoutePage {
        pg: PgId,
        at: Lsn,
        reply: oneshot::Sender<(RouteResult, protocol::Epochs)>,
    },
    SegmentScls {
        reply: oneshot::Sender<SegmentScls>,
    },
    /// Keep versions from this LSN on readable (`None`: follow VDL).
    PinFloor {
        lsn: Option<Lsn>,
        reply: oneshot::Sender<Result<(), ReadPointRefusal>>,
    },
}

pub type SegmentScls = std::collections::BTreeMap<PgId, Vec<(NodeId, Option<Lsn>)>>;

/// The newest LSN of the PG at or below a read point, with the nodes to ask.
pub type RouteResult = Result<(Lsn, Vec<NodeId>), ReadPointRefusal>;

/// What the writer handle can watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub vdl: Lsn,
    pub pending_records: usize,
    pub fenced: bool,
    pub closed: bool,
}

#[derive(Debug)]
pub struct Driver {
    pub core: WriterCore,
    pub dialer: Dialer,
    pub connections: Connections,
    pub progress: watch::Sender<Progress>,
    pub request_timeout: Duration,
    streams: HashMap<(NodeId, PgId), mpsc::Sender<Message>>,
    generation: HashMap<NodeId, usize>,
    reconnecting: HashSet<NodeId>,
    repairs: HashSet<(PgId, NodeId)>,
    stuck: HashMap<(PgId, NodeId), Lsn>,
    /// When the oldest frame still unanswered by each node was sent.
    awaiting_since: HashMap<NodeId, tokio::time::Instant>,
    events: mpsc::UnboundedSender<Event>,
}

impl Driver {
    pub fn new(
        core: WriterCore,
        dialer: Dialer,
        connections: Connections,
        progress: watch::Sender<Progress>,
        request_timeout: Duration,
    ) -> (Driver, mpsc::UnboundedReceiver<Event>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let driver = Driver {
            core,
            dialer,
            connections,
            progress,
            request_timeout,
            streams: HashMap::new(),
            generation: HashMap::new(),
            reconnecting: HashSet::new(),
            repairs: HashSet::new(),
            stuck: HashMap::new(),
            awaiting_since: HashMap::new(),
            events,
        };
        (driver, receiver)
    }

    /// Runs until the writer handle is dropped.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        for node in self.dialer.cluster.nodes().iter().map(|n| n.id).collect::<Vec<_>>() {
            match self.connections.get(node) {
                Some(connection) => {
                    self.generation.insert(node, connection.stable_id());
                }
                None => self.node_lost(node),
            }
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(event) = events.recv() => self.event(event),
                _ = tick.tick() => {
                    self.core.handle_tick();
                    self.drop_silent_nodes();
                    self.start_repairs();
                }
            }
            self.flush();
            self.publish(false);
        }
        // Tell every PG the final VDL, so the next writer's recovery starts from it and reads
        // almost nothing (a clean close makes a fast reopen).
        self.core.handle_tick();
        self.flush();
        tokio::time::sleep(CLOSE_LINGER).await;
        self.publish(true);
        self.dialer.endpoint.close(0u32.into(), b"writer closed");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Append { records, reply } => {
                let _ = reply.send(self.core.append(records));
            }
            Command::Route { pg, reply } => {
                let _ =
                    reply.send((self.core.read_candidates(pg), self.core.pg_vdl_lsn(pg), self.core.epochs()));
            }
            Command::RoutePage { pg, at, reply } => {
                let _ = reply.send((self.core.read_route(pg, at), self.core.epochs()));
            }
            Command::SegmentScls { reply } => {
                let scls_of = |pg: PgId| {
                    let members = self.core.members(pg);
                    members.members().iter().map(|n| (*n, self.core.known_scl(pg, *n))).collect()
                };
                let _ = reply.send(self.core.pgs().into_iter().map(|pg| (pg, scls_of(pg))).collect());
            }
            Command::PinFloor { lsn, reply } => {
                let _ = reply.send(self.core.pin_floor(lsn));
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Reply(node, message) => {
                self.awaiting_since.remove(&node);
                self.core.handle_reply(node, message);
            }
            Event::Failed(node, generation, why) => {
                if self.generation.get(&node) == Some(&generation) && self.connections.get(node).is_some() {
                    tracing::info!(%node, %why, "node lost");
                    self.node_lost(node);
                }
            }
            Event::Connected(node, connection) => {
                tracing::info!(%node, "node reachable again");
                self.reconnecting.remove(&node);
                self.generation.insert(node, connection.stable_id());
                self.connections.set(node, connection);
                self.core.handle_node_up(node);
            }
            Event::RepairDone(pg, node) => {
                self.repairs.remove(&(pg, node));
            }
        }
    }

    /// A node that stopped answering (a crashed process looks like this until QUIC's idle
    /// timeout) is dropped so its connection is rebuilt and what it missed is resent.
    fn drop_silent_nodes(&mut self) {
        let now = tokio::time::Instant::now();
        let silent: Vec<NodeId> = self
            .awaiting_since
            .iter()
            .filter(|(_, since)| now - **since > NODE_SILENCE_MAX)
            .map(|(n, _)| *n)
            .collect();
        for node in silent {
            tracing::info!(%node, "node silent; reconnecting");
            if let Some(connection) = self.connections.get(node) {
                connection.close(0u32.into(), b"silent");
            }
            self.node_lost(node);
        }
    }

    fn node_lost(&mut self, node: NodeId) {
        self.awaiting_since.remove(&node);
        self.connections.remove(node);
        self.streams.retain(|(n, _), _| *n != node);
        self.core.handle_node_down(node);
        if self.reconnecting.insert(node) {
            let dialer = self.dialer.clone();
            let events = self.events.clone();
            tokio::spawn(reconnect(dialer, node, events));
        }
    }

    /// Hands every transmit to its stream; a full queue drops the frame (the node is repaired
    /// later), a closed one means the node is gone.
    fn flush(&mut self) {
        while let Some(transmit) = self.core.poll_transmit() {
            let Some(pg) = pg_of(&transmit.message) else { continue };
            let Some(connection) = self.connections.get(transmit.node) else { continue };
            let events = self.events.clone();
            let queue = self
                .streams
                .entry((transmit.node, pg))
                .or_insert_with(|| open_stream(connection, transmit.node, pg, events));
            match queue.try_send(transmit.message) {
                Ok(()) => {
                    self.awaiting_since.entry(transmit.node).or_insert_with(tokio::time::Instant::now);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(node = %transmit.node, %pg, "stream queue full; frame dropped")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.streams.remove(&(transmit.node, pg));
                }
            }
        }
    }

    fn publish(&self, closed: bool) {
        let progress = Progress {
            vdl: self.core.vdl(),
            pending_records: self.core.pending_records(),
            fenced: self.core.is_fenced(),
            closed,
        };
        self.progress.send_if_modified(|p| {
            let changed = *p != progress;
            *p = progress;
            changed
        });
    }

    /// Starts a repair for each segment whose SCL stayed behind what is durable for two ticks.
    fn start_repairs(&mut self) {
        for pg in self.core.pgs() {
            for (node, scl) in self.core.lagging_members(pg) {
                let key = (pg, node);
                let was = self.stuck.insert(key, scl);
                if was != Some(scl) || self.repairs.contains(&key) {
                    continue;
                }
                let target = self.core.pg_durable_through(pg);
                let source = self
                    .core
                    .read_candidates(pg)
                    .into_iter()
                    .find(|n| *n != node && self.core.known_scl(pg, *n).is_some_and(|s| s >= target));
                let Some(source) = source else { continue };
                self.repairs.insert(key);
                let pg_ref = self.core.geometry().pg_ref(pg);
                let job = Repair {
                    pg: pg_ref,
                    node,
                    source,
                    from: scl,
                    target,
                    epochs: self.core.epochs(),
                    vdl: self.core.vdl(),
                    page_bytes: self.core.geometry().page_bytes,
                };
                tokio::spawn(job.run(self.connections.clone(), self.events.clone(), self.request_timeout));
            }
        }
    }
}

fn pg_of(message: &Message) -> Option<PgId> {
    match message {
        Message::AppendBatch(b) => Some(b.pg.pg_id),
        Message::EpochBump(b) => Some(b.pg.pg_id),
        Message::Truncate(t) => Some(t.pg.pg_id),
        _ => None,
    }
}

async fn reconnect(dialer: Dialer, node: NodeId, events: mpsc::UnboundedSender<Event>) {
    let mut backoff = Duration::from_millis(100);
    while !events.is_closed() {
        tokio::time::sleep(backoff).await;
        if let Ok(connection) = dialer.connect(node).await {
            let _ = events.send(Event::Connected(node, connection));
            return;
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// Copies the records a lagging segment misses from a complete one.
struct Repair {
    pg: protocol::PgRef,
    node: NodeId,
    source: NodeId,
    from: Lsn,
    target: Lsn,
    epochs: protocol::Epochs,
    vdl: Lsn,
    page_bytes: u32,
}

impl Repair {
    async fn run(self, connections: Connections, events: mpsc::UnboundedSender<Event>, timeout: Duration) {
        let pg_ref = self.pg;
        let mut from = self.from;
        while from < self.target {
            let Ok(range) = LsnRange::new(from, self.target) else { break };
            let read = Message::ReadRecords(ReadRecords {
                pg: pg_ref,
                epochs: self.epochs,
                range,
                bytes_max: REPAIR_READ_BYTES_MAX,
            });
            let Some(Message::Records(Records { records, .. })) =
                ask(&connections, self.source, &read, timeout).await
            else {
                break;
            };
            let Some(last) = records.last().map(Record::lsn) else { break };
            let batch = AppendBatch {
                pg: pg_ref,
                epochs: self.epochs,
                vdl: self.vdl,
                pg_vdl_lsn: Lsn::ZERO,
                page_bytes: self.page_bytes,
                records,
            };
            match ask(&connections, self.node, &Message::AppendBatch(batch), timeout).await {
                Some(reply) => {
                    let _ = events.send(Event::Reply(self.node, reply));
                }
                None => break,
            }
            from = last;
        }
        tracing::debug!(node = %self.node, pg = %self.pg.pg_id, from = %self.from, reached = %from, "repair finished");
        let _ = events.send(Event::RepairDone(self.pg.pg_id, self.node));
    }
}
