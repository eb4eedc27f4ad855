//! The driver task: owns the writer core and the link core, and turns the writer's transmits
//! into frames on per-(node, PG) streams, its inputs into core calls, and connectivity into
//! `handle_node_down/up`. When to drop a silent node and when to dial one is
//! `core::links::Links`'s decision (driven by its `poll_timeout`); the driver only dials, closes
//! and moves bytes. It also carries out the repairs the writer core decides on (reads the
//! missing records from a complete segment and appends them to the lagging one), so no PG
//! stays at 4 of 6.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use protocol::messages::Records;
use protocol::placement::{ClusterMap, MapChangeError};
use protocol::{Lsn, Message, NodeId, PgId, Record};
use tokio::sync::{mpsc, oneshot, watch};

use super::links::{open_stream, watch_closed, Connections, Dialer, Event};
use super::reads::ReadsInUse;
use super::recovery::{ask, now, received, report_transport};
use crate::core::floor::ReadPointRefusal;
use crate::core::links::{Dial, Links, Lost};
use crate::core::repair::RepairJob;
use crate::core::writer::{AppendRefusal, NewRecord, Refusals};
use crate::core::WriterCore;

/// How often idle PGs hear the VDL and repairs are considered.
pub const TICK: Duration = Duration::from_millis(100);
/// How long a closing writer lets its final VDL heartbeats reach the nodes.
pub const CLOSE_LINGER: Duration = Duration::from_millis(100);

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
    /// Every PG's members with the SCL each last reported (`None`: nothing heard yet).
    SegmentScls {
        reply: oneshot::Sender<SegmentScls>,
    },
    /// Replace a node in every PG it serves (an operator's decision).
    ReplaceNode {
        node: NodeId,
        reply: oneshot::Sender<Vec<PgId>>,
    },
    /// Every PG's quorum sets as the writer counts them, and its change in progress.
    Memberships {
        reply: oneshot::Sender<Memberships>,
    },
    /// Keep versions from this LSN on readable (`None`: follow VDL).
    PinFloor {
        lsn: Option<Lsn>,
        reply: oneshot::Sender<Result<(), ReadPointRefusal>>,
    },
    /// Take a newer cluster map; answers the nodes it added.
    UpdateMap {
        map: ClusterMap,
        reply: oneshot::Sender<Result<Vec<NodeId>, MapChangeError>>,
    },
}

/// Per PG, each member and the SCL it last reported to this writer.
pub type SegmentScls = std::collections::BTreeMap<PgId, Vec<(NodeId, Option<Lsn>)>>;

/// Per PG, its quorum sets and the membership change under way, if any.
pub type Memberships = std::collections::BTreeMap<
    PgId,
    (protocol::quorum::Membership, Option<crate::core::writer::ChangeState>),
>;

/// The newest LSN of the PG at or below a read point, with the nodes to ask.
pub type RouteResult = Result<(Lsn, Vec<NodeId>), ReadPointRefusal>;

/// What the writer handle can watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub vdl: Lsn,
    pub pending_records: usize,
    pub fenced: bool,
    /// Why the nodes refuse this writer for good (`Unauthorized`, `VolumeDeleted`), if they do.
    pub refused_by: Option<protocol::messages::ErrorCode>,
    pub closed: bool,
    /// The nodes' refusals of this writer's requests so far, by code.
    pub refusals: Refusals,
}

#[derive(Debug)]
pub struct Driver {
    pub core: WriterCore,
    pub links: Links,
    pub dialer: Dialer,
    pub connections: Connections,
    pub progress: watch::Sender<Progress>,
    pub request_timeout: Duration,
    /// The read points of the handle's reads in flight and snapshots: the floor waits for them.
    reads_in_use: ReadsInUse,
    streams: HashMap<(NodeId, PgId), mpsc::Sender<Bytes>>,
    /// The last message encoded and its frame: the same batch goes to every member of its PG,
    /// one after the other, and is encoded once for all of them.
    last_encoded: Option<(Message, Bytes)>,
    /// The `stable_id` of each node's current connection: failures of older ones are stale.
    generation: HashMap<NodeId, usize>,
    events: mpsc::UnboundedSender<Event>,
}

impl Driver {
    pub fn new(
        core: WriterCore,
        links: Links,
        dialer: Dialer,
        connections: Connections,
        progress: watch::Sender<Progress>,
        request_timeout: Duration,
        reads_in_use: ReadsInUse,
    ) -> (Driver, mpsc::UnboundedReceiver<Event>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let driver = Driver {
            core,
            links,
            dialer,
            connections,
            progress,
            request_timeout,
            reads_in_use,
            streams: HashMap::new(),
            last_encoded: None,
            generation: HashMap::new(),
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
        self.take_over_connections();
        let mut tick = tokio::time::interval(TICK);
        loop {
            let timer = self.links.poll_timeout().map(tokio::time::Instant::from_std);
            let link_timer = async {
                if let Some(at) = timer {
                    tokio::time::sleep_until(at).await;
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(event) = events.recv() => self.event(event),
                _ = tick.tick() => {
                    self.core.hold_reads(self.reads_in_use.oldest());
                    self.core.handle_tick();
                    self.start_repairs();
                }
                () = link_timer, if timer.is_some() => {}
            }
            self.drive_links();
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

    /// The connections recovery left: live ones are watched, nodes without one are down until
    /// the link core has them dialled.
    fn take_over_connections(&mut self) {
        for node in self.dialer.cluster().nodes().iter().map(|n| n.id).collect::<Vec<_>>() {
            match self.connections.get(node).filter(|_| self.links.is_connected(node)) {
                Some(connection) => {
                    self.generation.insert(node, connection.stable_id());
                    watch_closed(connection, node, self.events.clone());
                }
                None => {
                    self.connections.remove(node);
                    self.core.handle_node_down(node);
                }
            }
        }
        self.drive_links();
    }

    /// Carries out the link core's decisions: silent nodes dropped, due dials started.
    fn drive_links(&mut self) {
        let now = now();
        report_transport(&self.connections, &mut self.links, now);
        self.links.handle_timeout(now);
        while let Some((node, lost)) = self.links.poll_lost() {
            // Nothing waits on a node that is not connected: the core does not send to it.
            if lost == Lost::Silent {
                tracing::info!(%node, "node silent; reconnecting");
                self.disconnect(node, b"silent");
            }
        }
        while let Some(dial) = self.links.poll_dial(now) {
            tokio::spawn(dial_once(self.dialer.clone(), dial, self.events.clone()));
        }
    }

    /// Drops `node`'s connection and streams, and stops the core's traffic to it.
    fn disconnect(&mut self, node: NodeId, why: &'static [u8]) {
        if let Some(connection) = self.connections.get(node) {
            connection.close(0u32.into(), why);
        }
        self.connections.remove(node);
        self.streams.retain(|(n, _), _| *n != node);
        self.core.handle_node_down(node);
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
                let _ = reply.send(self.segment_scls());
            }
            Command::PinFloor { lsn, reply } => {
                let _ = reply.send(self.core.pin_floor(lsn));
            }
            Command::UpdateMap { map, reply } => {
                let result = self.core.handle_map(map.clone());
                if let Ok(added) = &result {
                    self.dialer.set_cluster(map);
                    for node in added {
                        tracing::info!(%node, "cluster map: a node was added");
                        self.links.add_node(*node, now());
                    }
                }
                let _ = reply.send(result);
            }
            Command::ReplaceNode { node, reply } => {
                let _ = reply.send(self.core.replace_node(node));
            }
            Command::Memberships { reply } => {
                let core = &self.core;
                let all =
                    core.pgs().into_iter().map(|pg| (pg, (core.membership(pg), core.change(pg)))).collect();
                let _ = reply.send(all);
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Reply(node, message) => {
                self.links.on_heard(node);
                self.core.handle_reply(node, message);
            }
            Event::Failed(node, generation, why) => {
                let current = self.generation.get(&node) == Some(&generation);
                if current && self.links.handle_closed(node, now()) {
                    tracing::info!(%node, %why, "node lost");
                    self.disconnect(node, b"failed");
                }
            }
            Event::Connected(node, connection) => {
                tracing::info!(%node, "node reachable again");
                self.links.handle_connected(node, connection.rtt());
                self.generation.insert(node, connection.stable_id());
                self.connections.set(node, connection.clone());
                watch_closed(connection, node, self.events.clone());
                self.core.handle_node_up(node);
            }
            Event::DialFailed(node) => self.links.handle_dial_failed(node, now()),
            Event::RepairDone(pg, node) => self.core.handle_repair_done(pg, node),
        }
    }

    /// Hands every transmit to its stream, encoded (once for the members of a PG that are sent
    /// the same batch); a full queue drops the frame (the node is repaired later), a closed one
    /// means the node is gone.
    fn flush(&mut self) {
        while let Some(transmit) = self.core.poll_transmit() {
            let Some(pg) = pg_of(&transmit.message) else { continue };
            let Some(connection) = self.connections.get(transmit.node) else { continue };
            let frame = match &self.last_encoded {
                Some((message, frame)) if same_message(message, &transmit.message) => frame.clone(),
                _ => match protocol::frame::frame_bytes(&transmit.message) {
                    Ok(frame) => {
                        self.last_encoded = Some((transmit.message, frame.clone()));
                        frame
                    }
                    Err(error) => {
                        tracing::error!(node = %transmit.node, %pg, %error, "a message could not be encoded; dropped");
                        continue;
                    }
                },
            };
            let (events, received) = (self.events.clone(), received(&connection));
            let queue = self
                .streams
                .entry((transmit.node, pg))
                .or_insert_with(|| open_stream(connection, transmit.node, pg, events));
            match queue.try_send(frame) {
                Ok(()) => self.links.on_sent_counted(transmit.node, now(), received),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(node = %transmit.node, %pg, "stream queue full; frame dropped")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.streams.remove(&(transmit.node, pg));
                }
            }
        }
    }

    fn segment_scls(&self) -> SegmentScls {
        let scls_of = |pg: PgId| {
            let members = self.core.members(pg);
            members.iter().map(|n| (*n, self.core.known_scl(pg, *n))).collect()
        };
        self.core.pgs().into_iter().map(|pg| (pg, scls_of(pg))).collect()
    }

    fn publish(&self, closed: bool) {
        let progress = Progress {
            vdl: self.core.vdl(),
            pending_records: self.core.pending_records(),
            fenced: self.core.is_fenced(),
            refused_by: self.core.refused_by(),
            closed,
            refusals: self.core.refusals(),
        };
        self.progress.send_if_modified(|p| {
            let changed = *p != progress;
            *p = progress;
            changed
        });
    }

    /// Carries out the repairs the core decided on.
    fn start_repairs(&mut self) {
        while let Some(job) = self.core.poll_repair() {
            tokio::spawn(repair(job, self.connections.clone(), self.events.clone(), self.request_timeout));
        }
    }
}

/// The PG whose stream carries `message`: every transmit of the writer core names one (a
/// kind missing here would be dropped silently, as floor reports once were).
fn pg_of(message: &Message) -> Option<PgId> {
    match message {
        Message::AppendBatch(b) => Some(b.pg.pg_id),
        Message::EpochBump(b) => Some(b.pg.pg_id),
        Message::MembershipChange(c) => Some(c.pg.pg_id),
        Message::Truncate(t) => Some(t.pg.pg_id),
        Message::FloorReport(f) => Some(f.pg.pg_id),
        _ => None,
    }
}

/// One dial attempt, as the link core asked; its outcome goes back as an event.
async fn dial_once(dialer: Dialer, dial: Dial, events: mpsc::UnboundedSender<Event>) {
    let event = match dialer.connect_within(dial.node, dial.timeout).await {
        Ok(connection) => Event::Connected(dial.node, connection),
        Err(error) => {
            tracing::debug!(node = %dial.node, %error, "dial failed");
            Event::DialFailed(dial.node)
        }
    };
    let _ = events.send(event);
}

/// Copies the records a lagging segment misses from a complete one, as `job` says, and
/// reports it done whatever it reached.
async fn repair(
    job: RepairJob,
    connections: Connections,
    events: mpsc::UnboundedSender<Event>,
    timeout: Duration,
) {
    let mut from = job.from;
    while from < job.target {
        let Some(read) = job.read_after(from).map(Message::ReadRecords) else { break };
        let Some(Message::Records(Records { records, .. })) =
            ask(&connections, job.source, &read, timeout).await
        else {
            break;
        };
        let Some(last) = records.last().map(Record::lsn) else { break };
        match ask(&connections, job.node, &Message::AppendBatch(job.batch(records)), timeout).await {
            Some(reply) => {
                let _ = events.send(Event::Reply(job.node, reply));
            }
            None => break,
        }
        from = last;
    }
    tracing::debug!(node = %job.node, pg = %job.pg.pg_id, from = %job.from, reached = %from, "repair finished");
    let _ = events.send(Event::RepairDone(job.pg.pg_id, job.node));
}

/// True if `a` and `b` are the same message, told cheaply: two append batches of equal header
/// whose records have equal metadata and share their payload bytes (the writer clones one
/// batch for every member of its PG); any other message is never taken for another.
fn same_message(a: &Message, b: &Message) -> bool {
    let (Message::AppendBatch(a), Message::AppendBatch(b)) = (a, b) else { return false };
    let header = |x: &protocol::messages::AppendBatch| (x.pg, x.epochs, x.vdl, x.pg_vdl_lsn, x.page_bytes);
    header(a) == header(b)
        && a.records.len() == b.records.len()
        && a.records.iter().zip(&b.records).all(|(x, y)| {
            let (px, py) = (x.payload(), y.payload());
            x.meta() == y.meta() && px.as_ptr() == py.as_ptr() && px.len() == py.len()
        })
}

#[cfg(test)]
mod tests {
    use protocol::messages::AppendBatch;
    use protocol::{Epochs, PageId, PgRef, RecordKind, RecordMeta, VolumeId};

    use super::*;

    fn batch(payload: &Bytes) -> Message {
        let meta = RecordMeta::after(Lsn(0), Lsn(1), RecordKind::Marker, PageId(3));
        Message::AppendBatch(AppendBatch {
            pg: PgRef { volume_id: VolumeId(1), pg_id: PgId(0) },
            epochs: Epochs::INITIAL,
            vdl: Lsn(0),
            pg_vdl_lsn: Lsn(0),
            page_bytes: 4096,
            records: vec![Record::new(meta, payload.clone()).unwrap()],
        })
    }

    #[test]
    fn a_batch_cloned_for_each_member_is_the_same_message_and_nothing_else_is() {
        let payload = Bytes::from(vec![7u8; 1024]);
        let sent = batch(&payload);
        assert!(same_message(&sent, &sent.clone()), "a clone shares its payloads");
        let equal_copy = batch(&Bytes::from(payload.to_vec()));
        assert!(!same_message(&sent, &equal_copy), "equal bytes elsewhere are encoded again");
        let Message::AppendBatch(mut later) = sent.clone() else { unreachable!() };
        later.vdl = Lsn(1);
        assert!(!same_message(&sent, &Message::AppendBatch(later)), "another header");
        assert!(!same_message(&Message::StatusRequest, &Message::StatusRequest), "only batches");
    }
}
