//! The writers in the simulation: the current writer's connections are decided by the
//! client's link core (`client::core::links`, the policy the QUIC driver runs, scaled to the
//! simulator's time), its repairs of lagging segments by its core (`poll_repair`) and carried
//! out here as the driver does (read from the source, append to the lagging segment), and
//! takeovers run the real `Takeover` state machine while the old writer keeps going; once the
//! new one is installed, the old one is fenced and must never make a record it allocates
//! afterwards durable.

use std::time::{Duration, Instant};

use protocol::messages::Records;
use protocol::{Lsn, Message, NodeId, PageId, PgId, RecordKind};
use rand::Rng;

use client::core::links::{LinkLimits, Links, Lost};
use client::core::repair::RepairJob;
use client::core::takeover::Takeover;
use client::core::writer::{WriterCore, WriterStart};
use client::NewRecord;

use super::net::Endpoint;
use super::World;

/// The client's link policy in simulated time: network delays here are 20-300 µs, not the
/// ~100 µs to a few ms of a data centre, so every bound is scaled down alike.
const SIM_LINK_LIMITS: LinkLimits = LinkLimits {
    silence_max: Duration::from_millis(5),
    // The simulated network has no transport acknowledgements to report.
    unacked_max: Duration::from_millis(5),
    dial_backoff_min: Duration::from_millis(1),
    dial_backoff_max: Duration::from_millis(5),
    dial_attempt_min: Duration::from_millis(1),
    dial_attempt_max: Duration::from_millis(5),
};
/// The round trip a simulated dial reports (the middle of the network's delays, twice).
const SIM_RTT: Duration = Duration::from_micros(320);

/// A repair whose read or append is not answered within this is given up (the core decides
/// again at a later tick if the segment is still behind).
const REPAIR_TIMEOUT_US: u64 = 20_000;

/// A repair being carried out: its job, when its last step was sent, and whether the records
/// were read and appended (then the lagging node's ack ends it).
#[derive(Debug)]
pub struct SimRepair {
    job: RepairJob,
    since_us: u64,
    appended: bool,
}

/// A takeover round that heard nothing for this long counts its missing answers as failed (the
/// QUIC driver's request timeout: the link core's rules end most waits long before).
const ROUND_TIMEOUT_US: u64 = 20_000;

/// A takeover in progress, driven as the QUIC recovery driver drives it: its own links (handed
/// to the new writer when it is done), and its requests sent or held and still awaited.
#[derive(Debug)]
pub struct SimTakeover {
    gen: u32,
    takeover: Takeover,
    /// When its round last moved.
    since_us: u64,
    links: Links,
    sent: Vec<(NodeId, Message)>,
}
/// Per-mille chance per tick of starting a takeover, and the most takeovers per run.
const TAKEOVER_PER_MILLE: u32 = 3;
const WRITER_GENERATIONS_MAX: u32 = 8;

/// The writer a takeover replaced.
#[derive(Debug)]
pub struct OldWriter {
    pub gen: u32,
    pub core: WriterCore,
    /// The first LSN it allocated after it was replaced.
    pub fenced_from: Option<Lsn>,
}

impl World {
    /// Starts a takeover now and then, and always when the current writer found itself fenced
    /// (an earlier takeover bumped the epoch but failed to finish).
    pub(super) fn maybe_start_takeover(&mut self) {
        let wanted = self.writer.is_fenced() || self.rng.random_range(0..1000) < TAKEOVER_PER_MILLE;
        if wanted {
            self.start_takeover();
        }
    }

    /// Starts a takeover unless one runs or the run used every writer generation.
    pub(super) fn start_takeover(&mut self) {
        if self.takeover.is_some() || self.next_gen > WRITER_GENERATIONS_MAX {
            return;
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        self.record_trace(&[6, gen as u8]);
        self.log(|| format!("takeover {gen} starts"));
        let takeover = Takeover::new(self.geometry, self.known_map.clone(), self.limits.lal);
        let (since_us, links, sent) = (self.clock.now_us, new_links(self.node_count()), Vec::new());
        self.takeover = Some(SimTakeover { gen, takeover, since_us, links, sent });
    }

    /// Sends the takeover's requests, times its rounds out, and installs the new writer when
    /// it is done (a failed takeover is simply dropped; a later one may succeed).
    pub(super) fn drive_takeover(&mut self) {
        let Some(mut t) = self.takeover.take() else { return };
        let now = instant(self.clock.now_us);
        self.drive_takeover_links(&mut t, now);
        let requests: Vec<(NodeId, Message)> = std::iter::from_fn(|| t.takeover.poll_request()).collect();
        if !requests.is_empty() {
            t.since_us = self.clock.now_us;
        }
        for (node, message) in requests {
            self.takeover_send(&mut t, node, message, now);
        }
        let stalled = self.clock.now_us - t.since_us > ROUND_TIMEOUT_US;
        if t.takeover.is_waiting() && !t.takeover.has_requests() && stalled {
            t.takeover.handle_timeout();
            t.since_us = self.clock.now_us;
        }
        match t.takeover.outcome().cloned() {
            None => self.takeover = Some(t),
            Some(Ok(start)) => {
                t.links.abandon_in_flight(now);
                self.install(t.gen, start, t.links);
            }
            Some(Err(error)) => {
                self.record_trace(&[4, t.gen as u8]);
                self.log(|| format!("takeover {} failed: {error:?}", t.gen));
            }
        }
    }

    /// As the recovery driver: a request goes out to a connected node, waits for a dial in
    /// flight, or fails at once.
    fn takeover_send(&mut self, t: &mut SimTakeover, node: NodeId, message: Message, now: Instant) {
        if t.links.is_connected(node) {
            t.links.on_sent(node, now);
            self.send(Endpoint::Writer(t.gen), Endpoint::Node(node), message.clone());
        } else if t.links.may_wait_for(node) {
            t.links.on_sent(node, now);
        } else {
            t.takeover.handle_failure(node, &message);
            return;
        }
        t.sent.push((node, message));
    }

    /// The takeover's link decisions: a silent node is redialled and what it owes sent again
    /// on the new connection; a node not reached fails what it owes.
    fn drive_takeover_links(&mut self, t: &mut SimTakeover, now: Instant) {
        for node in (1..=self.node_count()).map(NodeId) {
            if !self.node(node).up {
                t.links.handle_closed(node, now);
            }
        }
        t.links.handle_timeout(now);
        while let Some((node, lost)) = t.links.poll_lost() {
            if lost == Lost::Unreachable {
                fail_owed(t, node);
            }
        }
        while let Some(dial) = t.links.poll_dial(now) {
            if self.reachable(dial.node) {
                t.links.handle_connected(dial.node, SIM_RTT);
                let owed: Vec<Message> = owed(t, dial.node);
                for message in owed {
                    t.links.on_sent(dial.node, now);
                    self.send(Endpoint::Writer(t.gen), Endpoint::Node(dial.node), message);
                }
            } else {
                t.links.handle_dial_failed(dial.node, now);
                fail_owed(t, dial.node);
            }
        }
        let takeover = &t.takeover;
        t.sent.retain(|(node, message)| takeover.is_waiting_for(*node, message));
    }

    /// True if a dial of `node` would succeed now: it is up and not cut off either way.
    fn reachable(&mut self, node: NodeId) -> bool {
        self.node(node).up
            && !self.is_cut(Endpoint::Node(node), super::faults::Cut::Outgoing)
            && !self.is_cut(Endpoint::Node(node), super::faults::Cut::Incoming)
    }

    /// The new writer takes over; the old one is kept running to prove it is fenced.
    fn install(&mut self, gen: u32, start: WriterStart, links: Links) {
        self.record_trace(&[5, gen as u8]);
        self.log(|| {
            format!("writer {gen} takes over: VDL {}, memberships {:?}", start.vdl, start.memberships)
        });
        if start.vdl < self.vdl_seen {
            self.failures
                .push(format!("takeover recovered VDL {} below the reported {}", start.vdl, self.vdl_seen));
        }
        if let Some(range) = start.truncation {
            let doomed: Vec<Lsn> = self
                .appended
                .range(range.after()..=range.through())
                .map(|(l, _)| *l)
                .filter(|l| range.contains(*l))
                .collect();
            for lsn in doomed {
                self.appended.remove(&lsn);
            }
        }
        let new = WriterCore::new(self.geometry, self.known_map.clone(), self.limits, start);
        let replaced = std::mem::replace(&mut self.writer, new);
        self.old = Some(OldWriter { gen: self.writer_gen, core: replaced, fenced_from: None });
        self.writer_gen = gen;
        self.writer_view_down.clear();
        self.links = links;
        self.repairs.clear();
        // As the writer's driver takes the recovery's connections over: a node without one is
        // down until its link core dials it.
        for node in (1..=self.node_count()).map(NodeId) {
            if !self.links.is_connected(node) {
                self.writer_down(node);
            }
        }
    }

    /// Answers for a writer generation other than the current one.
    pub(super) fn deliver_to_other_writer(&mut self, gen: u32, node: NodeId, message: Message) {
        if let Some(t) = &mut self.takeover {
            if t.gen == gen {
                t.links.on_heard(node);
                t.takeover.handle_reply(node, message);
                self.drive_takeover();
                return;
            }
        }
        if let Some(old) = &mut self.old {
            if old.gen == gen {
                old.core.handle_reply(node, message);
                self.check_old_writer();
            }
        }
    }

    /// The replaced writer keeps appending now and then; nothing it allocates may become
    /// durable.
    pub(super) fn drive_old_writer(&mut self) {
        let Some(mut old) = self.old.take() else { return };
        old.core.handle_tick();
        if self.rng.random_range(0..100) < 20 {
            let page = PageId(self.rng.random_range(0..self.config.pages));
            let record = NewRecord {
                page,
                kind: RecordKind::Marker,
                payload: b"stale".to_vec().into(),
                cpl: true,
                lsn: None,
            };
            if let Ok((first, _)) = old.core.append(vec![record]) {
                old.fenced_from.get_or_insert(first);
            }
        }
        let transmits: Vec<_> = std::iter::from_fn(|| old.core.poll_transmit()).collect();
        let gen = old.gen;
        self.old = Some(old);
        for transmit in transmits {
            self.send(Endpoint::Writer(gen), Endpoint::Node(transmit.node), transmit.message);
        }
        self.check_old_writer();
    }

    fn check_old_writer(&mut self) {
        let Some(old) = &self.old else { return };
        if let Some(fenced_from) = old.fenced_from {
            if old.core.vdl() >= fenced_from {
                let failure = format!(
                    "fenced writer {} made {} durable (VDL {})",
                    old.gen,
                    fenced_from,
                    old.core.vdl()
                );
                if !self.failures.contains(&failure) {
                    self.failures.push(failure);
                }
            }
        }
    }
}

/// Virtual time as the client's cores take it: one fixed origin per process plus the
/// simulated microseconds (only differences matter, so runs stay deterministic).
pub(super) fn instant(now_us: u64) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now) + Duration::from_micros(now_us)
}

/// A writer's links to the `nodes` nodes before its first dials (made at its next tick).
pub(super) fn new_links(nodes: u32) -> Links {
    Links::new((1..=nodes).map(NodeId), SIM_LINK_LIMITS, instant(0))
}

impl World {
    /// The writer's view of liveness, formed by the link core as the real driver forms it: a
    /// crashed node's connection closes; a node that leaves a frame unanswered too long is
    /// dropped; dials succeed only to a node that is up and not cut off, and a node found
    /// again gets what it missed.
    pub(super) fn drive_links(&mut self) {
        let now = instant(self.clock.now_us);
        for node in (1..=self.node_count()).map(NodeId) {
            if !self.node(node).up && self.links.handle_closed(node, now) {
                self.writer_down(node);
            }
        }
        self.links.handle_timeout(now);
        while let Some((node, lost)) = self.links.poll_lost() {
            if lost == Lost::Silent {
                self.writer_down(node);
            }
        }
        while let Some(dial) = self.links.poll_dial(now) {
            if self.reachable(dial.node) {
                self.links.handle_connected(dial.node, SIM_RTT);
                self.writer_up(dial.node);
            } else {
                self.links.handle_dial_failed(dial.node, now);
                self.writer_down(dial.node);
            }
        }
    }

    fn writer_down(&mut self, node: NodeId) {
        if !self.writer_view_down.contains(&node) {
            self.log(|| format!("the writer finds {node} down"));
            self.writer_view_down.push(node);
            self.writer.handle_node_down(node);
        }
    }

    fn writer_up(&mut self, node: NodeId) {
        if self.writer_view_down.contains(&node) {
            self.log(|| format!("the writer finds {node} up"));
            self.writer_view_down.retain(|n| *n != node);
            self.writer.handle_node_up(node);
        }
    }
}

impl World {
    /// Starts the repairs the writer core decided on (a read from the source) and gives up
    /// those not answered in time.
    pub(super) fn drive_repairs(&mut self) {
        let now = self.clock.now_us;
        let (expired, running): (Vec<SimRepair>, Vec<SimRepair>) =
            std::mem::take(&mut self.repairs).into_iter().partition(|r| now - r.since_us > REPAIR_TIMEOUT_US);
        self.repairs = running;
        for repair in expired {
            self.writer.handle_repair_done(repair.job.pg.pg_id, repair.job.node);
        }
        while let Some(job) = self.writer.poll_repair() {
            let Some(read) = job.read_after(job.from) else {
                self.writer.handle_repair_done(job.pg.pg_id, job.node);
                continue;
            };
            self.send(
                Endpoint::Writer(self.writer_gen),
                Endpoint::Node(job.source),
                Message::ReadRecords(read),
            );
            self.repairs.push(SimRepair { job, since_us: now, appended: false });
        }
    }

    /// A repair's read answered: append what it returned to the lagging segment.
    pub(super) fn repair_read(&mut self, source: NodeId, answer: Records) {
        let pg = answer.pg.pg_id;
        let Some(repair) =
            self.repairs.iter_mut().find(|r| !r.appended && r.job.source == source && r.job.pg.pg_id == pg)
        else {
            return;
        };
        let job = repair.job;
        if answer.records.is_empty() {
            self.repair_over(pg, job.node);
            return;
        }
        repair.appended = true;
        repair.since_us = self.clock.now_us;
        let batch = job.batch(answer.records);
        self.send(Endpoint::Writer(self.writer_gen), Endpoint::Node(job.node), Message::AppendBatch(batch));
    }

    /// The lagging node acknowledged an append of `pg`: a repair that appended to it is over.
    pub(super) fn repair_acked(&mut self, node: NodeId, pg: PgId) {
        if self.repairs.iter().any(|r| r.appended && r.job.node == node && r.job.pg.pg_id == pg) {
            self.repair_over(pg, node);
        }
    }

    fn repair_over(&mut self, pg: PgId, node: NodeId) {
        self.repairs.retain(|r| !(r.job.node == node && r.job.pg.pg_id == pg));
        self.writer.handle_repair_done(pg, node);
    }
}

/// The requests `node` still owes the takeover an answer to.
fn owed(t: &SimTakeover, node: NodeId) -> Vec<Message> {
    let waiting = |(n, m): &&(NodeId, Message)| *n == node && t.takeover.is_waiting_for(node, m);
    t.sent.iter().filter(waiting).map(|(_, m)| m.clone()).collect()
}

/// Every request `node` still owes the takeover fails.
fn fail_owed(t: &mut SimTakeover, node: NodeId) {
    for message in owed(t, node) {
        t.takeover.handle_failure(node, &message);
    }
    t.sent.retain(|(n, _)| *n != node);
}
