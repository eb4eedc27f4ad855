//! The deterministic simulator: the unchanged `storaged` core and store on six simulated nodes
//! (3 AZs × 2) or nine (3 AZs × 3, the layout of `--nodes-per-az 3`: a spare for every PG in
//! each AZ), and the unchanged client `WriterCore`, under virtual time, a network that delays,
//! drops, duplicates and reorders, lying disks (`storaged::storage::sim::SimDisk`) under the real
//! journal, page store, replay, checkpoints and node metadata, and node crashes. One seed drives
//! every choice, so a seed replays exactly; the trace hash proves it. Each seed picks its layout
//! from a stream of its own (`SimConfig::nodes_per_az` fixes it).
//!
//! The workload writes page images, patches, zeroings, trims and commit markers; the nodes
//! coalesce them into images as they go, and a reader reads pages at random points in [floor,
//! VDL] from the segments the writer's routing picks.
//!
//! Faults: the network delays, drops, duplicates and reorders, and partitions a node, a whole
//! AZ, or one direction of a node's traffic, then heals; disks keep only what was synced when a
//! node crashes at any instant (of its unsynced writes a prefix lands, the next one torn at a
//! sector), misdirect a write to another file or offset of the logs, flip bits at rest, fail a
//! read, and fill up; nodes crash and restart from their checkpoint and logs; writers are taken
//! over. On nine nodes a node may also be lost for good (or come back empty, or after a long
//! outage), and the writer's core replaces nodes it has not reached for a while through
//! membership changes, which face their own faults (`changes.rs`).
//!
//! Fault budget: at most two nodes unavailable at once (down, cut off in either direction, or
//! with a full disk; more only if all in one AZ, which leaves every quorum set two short at
//! most) and at most two nodes ever damaged (rot, misdirected or failed reads, a disk lost), so
//! every acknowledged record keeps at least two intact copies of the four it was acknowledged
//! on. With `over_budget`, up to four nodes may be unavailable at once and the run ends
//! without healing: it must then stop cleanly (records simply stay not durable), never with a
//! wrong answer.
//! Nodes gossip with their PGs' other members every few milliseconds over the same faulty
//! network (the core's `poll_gossip` / `handle_gossip_*`), scrub what they store, repair
//! damaged images from peers and hydrate segments, all through the daemon's core calls
//! (`node/heal.rs`).
//!
//! Checkers: after a restart of a disk that only crashed, everything the reopened store claims
//! reads back verified; VDL never goes back, and covers a record only once four disks of its PG's quorum
//! set have it (the first set of the writer's membership: the check of a change's counting);
//! every page
//! a read returns equals the model's page at that LSN, version included; every record VDL
//! covered is, at the end, stored intact (same CRC, read back and verified from the disk, or
//! folded into a page version) on at least four nodes minus those damaged; with every node up and the network healed the writer makes everything durable
//! (progress); then, with the workload stopped, every live segment of each PG converges to
//! the same records (complete through the PG's newest record; a damaged segment below its
//! peers' folded point too, rebuilt by hydration), once every live node finished a scrub pass
//! begun after the faults stopped, no node runs a hydration, and no node claims a record or
//! image whose stored copy is damaged, and every PG's membership settled (no change left in
//! progress, one set of six in the writer, stored alike by every live member: `changes.rs`);
//! then every live member (the writer's members, not placement) serves every written page at
//! VDL as the model has it, and no scrub fault is left open. The run reports the scrub,
//! hydration and membership-change counters, so a reader sees they ran. `BOREALIS_SIM_LOG` set
//! prints membership messages, refusals to writers, crashes and takeovers as they happen.

mod changes;
pub mod net;
pub mod node;
mod settle;
mod writers;

use std::collections::{BTreeMap, HashMap};

use protocol::messages::ReadPage;
use protocol::placement::{ClusterMap, NodeInfo};
use protocol::{AzId, Lsn, Message, NodeId, PageId, PgId, RecordKind, VolumeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use client::core::writer::{WriterCore, WriterStart};
use client::{NewRecord, VolumeGeometry, WriterLimits};
use net::{Clock, Endpoint, Event};
use node::{HealCounts, SimNode};

pub use changes::{ChangeCounts, Plant};

/// Virtual microseconds between writer ticks (workload, faults, failure detection).
const TICK_US: u64 = 1_000;
/// Events one run may process; a run that needs more is stuck in a loop and fails.
const EVENTS_MAX: u64 = 2_000_000;
/// How long the healed phase may take to make everything durable.
const HEAL_US: u64 = 2_000_000;
/// Percent of ticks on which the reader reads a page.
const READ_PERCENT: u32 = 30;
/// How long, once the writer made everything durable, the segments may take to converge.
const CONVERGE_US: u64 = 1_000_000;

/// Which of a cut-off node's traffic is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Both,
    /// What the node sends.
    Outgoing,
    /// What is sent to it.
    Incoming,
}

/// A record the writer appended, as the checkers need it.
#[derive(Clone, Debug)]
struct Appended {
    pg: PgId,
    crc: u32,
    page: PageId,
    kind: RecordKind,
    payload: bytes::Bytes,
}

impl Appended {
    /// The record as far as applying it goes (backlinks do not matter there).
    fn record(&self, lsn: Lsn) -> protocol::Record {
        let meta = protocol::RecordMeta {
            flags: protocol::RecordFlags::empty(),
            ..protocol::RecordMeta::after(Lsn(lsn.0 - 1), lsn, self.kind, self.page)
        };
        protocol::Record::new(meta, self.payload.clone()).expect("the workload's records are valid")
    }
}

/// What a node's disk holds intact, indexed for the checkers.
struct Holdings {
    /// (PG, LSN, CRC of the payload) of every intact record.
    records: std::collections::HashSet<(protocol::PgRef, Lsn, u32)>,
    /// (PG, LSN) of every intact record.
    lsns: std::collections::HashSet<(protocol::PgRef, Lsn)>,
    /// The newest intact image of each page.
    images: HashMap<(protocol::PgRef, PageId), Lsn>,
    /// Per PG, the point through which the node's core folded every record into its page
    /// versions (images, or zeros for pages zeroed or trimmed) and let the records go: what
    /// the end-of-run page checks then hold it to.
    folded: HashMap<protocol::PgRef, Lsn>,
}

impl Holdings {
    fn of(node: &SimNode) -> Holdings {
        let held = node.held();
        let records =
            held.records.iter().map(|(pg, r)| (*pg, r.lsn(), crc32c::crc32c(r.payload()))).collect();
        let lsns = held.records.iter().map(|(pg, r)| (*pg, r.lsn())).collect();
        let mut images: HashMap<(protocol::PgRef, PageId), Lsn> = HashMap::new();
        for (pg, page, version) in held.images {
            let newest = images.entry((pg, page)).or_default();
            *newest = version.max(*newest);
        }
        let folded = node.folded().into_iter().collect();
        Holdings { records, lsns, images, folded }
    }

    /// True if record `lsn` (`appended`) is held: itself (with its payload's CRC if
    /// `check_crc`), inside an image of its page at or above it, or folded.
    fn holds(&self, pg: protocol::PgRef, appended: &Appended, lsn: Lsn, check_crc: bool) -> bool {
        let record = if check_crc {
            self.records.contains(&(pg, lsn, appended.crc))
        } else {
            self.lsns.contains(&(pg, lsn))
        };
        record
            || self.images.get(&(pg, appended.page)).is_some_and(|version| *version >= lsn)
            || self.folded.get(&pg).is_some_and(|folded| *folded >= lsn)
    }
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Virtual time with faults, in microseconds.
    pub faulty_us: u64,
    pub drop_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub crash_per_mille: u32,
    pub rot_per_mille: u32,
    pub partition_per_mille: u32,
    pub disk_full_per_mille: u32,
    pub pages: u64,
    /// Exceed the availability budget on purpose (see the module docs).
    pub over_budget: bool,
    /// Test-only: a bug planted in every node's core or in the writer's, which the checkers
    /// must catch.
    pub planted: Option<Plant>,
    /// Nodes per AZ: 2 (six nodes, no spare) or 3 (nine: a spare per PG in each AZ, so nodes
    /// lost for good are replaced by membership changes); `None` picks per seed
    /// (`changes::nodes_per_az`).
    pub nodes_per_az: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            faulty_us: 200_000,
            drop_per_mille: 10,
            duplicate_per_mille: 10,
            crash_per_mille: 20,
            rot_per_mille: 5,
            partition_per_mille: 10,
            disk_full_per_mille: 4,
            pages: 300,
            over_budget: false,
            planted: None,
            nodes_per_az: None,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub trace_hash: u32,
    pub failures: Vec<String>,
    pub records_appended: u64,
    pub reads_checked: u64,
    /// The run ended with records that could not become durable (over-budget runs only).
    pub unavailable: bool,
    /// Scrub and hydration counters, summed over the nodes.
    pub heal: HealCounts,
    pub vdl: Lsn,
    pub events: u64,
    /// Nodes in the cluster (6, or 9 with spares).
    pub nodes: u32,
    /// Membership changes the writers started, finished (the leaving node replaced) and
    /// reversed (it came back first), as the writers' cores reported them.
    pub changes: ChangeCounts,
    /// What the nodes' disks did, summed.
    pub disk: storaged::storage::sim::DiskStats,
    /// Journal and page store files the nodes recycled.
    pub files_recycled: u64,
}

struct World {
    rng: SmallRng,
    clock: Clock,
    config: SimConfig,
    nodes: Vec<SimNode>,
    geometry: VolumeGeometry,
    cluster: ClusterMap,
    limits: WriterLimits,
    writer: WriterCore,
    /// The current writer's generation (it sends as `Endpoint::Writer(writer_gen)`).
    writer_gen: u32,
    /// A takeover in progress.
    takeover: Option<writers::SimTakeover>,
    /// The generation the next takeover will use.
    next_gen: u32,
    /// The writer a takeover replaced, still running, and the first LSN it allocated after
    /// being fenced: its VDL must never reach that LSN.
    old: Option<writers::OldWriter>,
    /// Nodes the current writer's core was told are down.
    writer_view_down: Vec<NodeId>,
    /// The current writer's connections, as the client's link core decides them.
    links: client::core::links::Links,
    /// The repairs the current writer's core decided on, being carried out.
    repairs: Vec<writers::SimRepair>,
    /// Every record appended (and not truncated by a takeover).
    appended: BTreeMap<Lsn, Appended>,
    /// Page reads checked, and reads answered with an error (not checked).
    reads_checked: u64,
    reads_refused: u64,
    /// Every ack a node sent: (node, PG, first LSN, last LSN).
    acks: Vec<(NodeId, PgId, Lsn, Lsn)>,
    /// The LSNs of each batch a node received from a writer, by (node, PG, first, last): a
    /// repair batch holds only what its source could read, so it may skip LSNs of the range.
    batches: HashMap<(NodeId, PgId, Lsn, Lsn), Vec<Lsn>>,
    rotted_nodes: Vec<NodeId>,
    /// Nodes cut off, until when, and which of their traffic is dropped.
    cut_off: BTreeMap<NodeId, (u64, Cut)>,
    /// Nodes whose disk is full, until when.
    full_until: BTreeMap<NodeId, u64>,
    /// Nodes lost for good (over-budget runs).
    dead: Vec<NodeId>,
    vdl_seen: Lsn,
    trace: u32,
    events: u64,
    failures: Vec<String>,
    faults_on: bool,
    /// The workload has stopped (the convergence phase).
    quiet: bool,
    /// Membership changes: the node lost for good, and what the writers did (`changes.rs`).
    spares: changes::Spares,
    /// `BOREALIS_SIM_LOG` is set: membership events, crashes and takeovers go to stderr.
    log_on: bool,
}

/// Runs one seed.
pub fn run(seed: u64, config: &SimConfig) -> Outcome {
    let mut world = World::new(seed, config.clone());
    while world.clock.now_us < config.faulty_us && world.events < EVENTS_MAX {
        world.step();
    }
    if config.over_budget {
        world.lose_three_nodes();
    } else {
        world.heal();
    }
    let deadline = world.clock.now_us + HEAL_US;
    while world.clock.now_us < deadline && world.writer.pending_records() > 0 && world.events < EVENTS_MAX {
        world.step();
    }
    if world.events >= EVENTS_MAX {
        world.failures.push(format!("more than {EVENTS_MAX} events: the run is stuck in a loop"));
    }
    let unavailable = world.writer.pending_records() > 0;
    if unavailable && !config.over_budget {
        let message = format!(
            "no progress: {} records still not durable with every node up",
            world.writer.pending_records()
        );
        world.failures.push(message);
    }
    if !unavailable && !config.over_budget {
        world.converge();
    }
    world.check_durability();
    let heal = world.heal_counts();
    let nodes = world.node_count();
    Outcome {
        seed,
        trace_hash: world.trace,
        failures: world.failures,
        records_appended: world.appended.len() as u64,
        reads_checked: world.reads_checked,
        unavailable,
        heal,
        vdl: world.writer.vdl(),
        events: world.events,
        nodes,
        changes: world.spares.counts,
        disk: world.nodes.iter().fold(Default::default(), |mut sum, n| {
            sum.add(n.disk_stats());
            sum
        }),
        files_recycled: world.nodes.iter().map(|n| n.files_recycled).sum(),
    }
}

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        // Nodes 1..=N, AZ (N-1)/per_az: the layout of `borealis cluster up --nodes-per-az`.
        let per_az = changes::nodes_per_az(seed, &config);
        let az = |id: u32| AzId(((id - 1) / per_az) as u16);
        let infos: Vec<NodeInfo> = (1..=3 * per_az)
            .map(|id| NodeInfo {
                id: NodeId(id),
                az: az(id),
                addr: ([127, 0, 0, 1], 7000).into(),
                name: format!("node-{id}"),
            })
            .collect();
        let cluster = ClusterMap::new(infos).expect("two or three nodes in each of three zones");
        let geometry = VolumeGeometry::new(VolumeId(1), 4096, 64).expect("valid geometry");
        let spares = changes::Spares::new(seed, per_az, &config);
        let limits = WriterLimits {
            lal: 5_000,
            pending_records_max: 2_000,
            replace_after_ticks: spares.replace_after_ticks,
            plant_change_counts_new_set_only: config.planted == Some(Plant::ChangeCountsNewSetOnly),
            ..WriterLimits::default()
        };
        let node_bug = config.planted.and_then(Plant::node_bug);
        World {
            rng: SmallRng::seed_from_u64(seed),
            clock: Clock::default(),
            nodes: (1..=3 * per_az)
                .map(|id| SimNode::new(NodeId(id), az(id), 3 * per_az, node_bug))
                .collect(),
            writer: WriterCore::new(geometry, cluster.clone(), limits, WriterStart::fresh()),
            geometry,
            cluster,
            limits,
            writer_gen: 1,
            next_gen: 2,
            takeover: None,
            old: None,
            config,
            writer_view_down: Vec::new(),
            links: writers::new_links(3 * per_az),
            repairs: Vec::new(),
            appended: BTreeMap::new(),
            reads_checked: 0,
            reads_refused: 0,
            acks: Vec::new(),
            batches: HashMap::new(),
            rotted_nodes: Vec::new(),
            cut_off: BTreeMap::new(),
            full_until: BTreeMap::new(),
            dead: Vec::new(),
            vdl_seen: Lsn::ZERO,
            trace: 0,
            events: 0,
            failures: Vec::new(),
            faults_on: true,
            quiet: false,
            spares,
            log_on: std::env::var_os("BOREALIS_SIM_LOG").is_some(),
        }
    }

    /// How many nodes the cluster has (ids 1..=N).
    fn node_count(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// Processes events up to the next tick, then ticks.
    fn step(&mut self) {
        let tick_at = (self.clock.now_us / TICK_US + 1) * TICK_US;
        while self.clock.peek_time().is_some_and(|t| t < tick_at) {
            let event = self.clock.pop_next().expect("peeked");
            self.handle(event);
        }
        self.clock.advance_to(tick_at);
        self.tick();
    }

    fn handle(&mut self, event: Event) {
        self.events += 1;
        match event {
            Event::Deliver { from, to, message, tag } => self.deliver(from, to, message, tag),
            Event::Flushed { node, life } => {
                let n = self.node(node);
                if n.up && n.life == life {
                    n.flushed();
                    self.after_node(node);
                }
            }
            Event::Crash { node } => {
                if self.faults_on && self.node(node).up && self.may_take_down(&[node]) {
                    self.record_trace(&[8, node.0 as u8]);
                    self.log(|| format!("{node} crashes"));
                    self.crash(node);
                    let back_in = self.rng.random_range(1_000..30_000);
                    self.clock.schedule(back_in, Event::Restart { node });
                }
            }
            Event::Restart { node } if !self.node(node).up && !self.dead.contains(&node) => {
                self.record_trace(&[9, node.0 as u8]);
                self.log(|| format!("{node} restarts"));
                // The writer finds it back when its link core next dials it.
                let now_ms = self.clock.now_us / 1000;
                if !self.node(node).restart(now_ms) {
                    let why = self.node(node).start_failure.clone().unwrap_or_default();
                    self.failures.push(format!("{node} could not restart: {why}"));
                } else if !self.rotted_nodes.contains(&node) {
                    // Restart invariant: a disk that only crashed (no rot, misdirected write or
                    // failed read) holds everything the reopened store claims.
                    if let Some(claim) = self.nodes[node.0 as usize - 1].damaged_claim(|_| true) {
                        self.failures.push(format!("after a restart of an undamaged disk: {claim}"));
                    }
                }
            }
            Event::Restart { .. } => {}
            Event::SpaceBack { node } => {
                if self.full_until.get(&node).is_some_and(|until| *until <= self.clock.now_us) {
                    self.full_until.remove(&node);
                    self.node(node).set_disk_full(false);
                    self.after_node(node);
                }
            }
        }
    }

    fn deliver(&mut self, from: Endpoint, to: Endpoint, message: Message, tag: Option<u64>) {
        self.record_trace(&trace_bytes(from, to, &message));
        let refusal = matches!((&message, to), (Message::Error(_), Endpoint::Writer(_)));
        if refusal || matches!(message, Message::MembershipChange(_) | Message::MembershipAck(_)) {
            self.log(|| format!("{from:?} -> {to:?}: {message:?}"));
        }

        match to {
            Endpoint::Reader => {
                if let Endpoint::Node(node) = from {
                    self.check_page(node, message);
                }
            }
            Endpoint::Writer(gen) if gen != self.writer_gen => {
                let Endpoint::Node(node) = from else { return };
                self.deliver_to_other_writer(gen, node, message);
            }
            Endpoint::Writer(_) => {
                let Endpoint::Node(node) = from else { return };
                self.links.on_heard(node);
                if let Message::AppendAck(ack) = &message {
                    self.acks.push((node, ack.pg.pg_id, ack.first_lsn, ack.last_lsn));
                    self.repair_acked(node, ack.pg.pg_id);
                }
                if let Message::Records(records) = message {
                    self.repair_read(node, records);
                    return;
                }
                self.writer.handle_reply(node, message);
                self.check_vdl();
                self.send_writer_transmits();
            }
            Endpoint::Node(node) => {
                if !self.node(node).up {
                    return;
                }
                let now = self.clock.now_us;
                let flaky = self.faults_on
                    && matches!(
                        message,
                        Message::ReadPage(_)
                            | Message::ReadRecords(_)
                            | Message::GossipFetch(_)
                            | Message::HydrateFetch(_)
                    )
                    && self.rng.random_range(0..1000) < self.config.rot_per_mille * 4
                    && self.may_damage(node);
                if flaky {
                    self.damaged(node);
                    self.node(node).disk().fail_next_read();
                }
                if let (Endpoint::Writer(_), Message::AppendBatch(batch)) = (from, &message) {
                    let lsns: Vec<Lsn> = batch.records.iter().map(protocol::Record::lsn).collect();
                    if let (Some(first), Some(last)) = (lsns.first().copied(), lsns.last().copied()) {
                        self.batches.entry((node, batch.pg.pg_id, first, last)).or_insert(lsns);
                    }
                }
                let reply = match from {
                    Endpoint::Writer(gen) => self.node(node).receive(gen, message, now),
                    Endpoint::Reader => self.node(node).receive(0, message, now),
                    Endpoint::Node(peer) => {
                        let cluster = &self.cluster;
                        let members_of =
                            |pg: protocol::PgRef| cluster.place(pg.volume_id, pg.pg_id).members().to_vec();
                        let n = &mut self.nodes[node.0 as usize - 1];
                        for (to, message, tag) in n.receive_from_peer(peer, message, tag, now, members_of) {
                            self.send_tagged(Endpoint::Node(node), Endpoint::Node(to), message, tag);
                        }
                        None
                    }
                };
                if let Some(reply) = reply {
                    self.send(Endpoint::Node(node), from, reply);
                }
                self.after_node(node);
            }
        }
    }

    /// Sends a node's released replies and starts its next group commit (whose write may be
    /// misdirected: the disk lands it elsewhere and reports success).
    fn after_node(&mut self, node: NodeId) {
        for (gen, reply) in self.node(node).poll_replies() {
            self.send(Endpoint::Node(node), Endpoint::Writer(gen), reply);
        }
        let misdirect = self.faults_on
            && self.rng.random_range(0..1000) < self.config.rot_per_mille
            && self.may_damage(node)
            && self.node(node).core().has_unwritten();
        if misdirect {
            let pick = self.rng.random();
            self.node(node).disk().misdirect_next_write(pick, &node::FAULTY_DIRS);
            self.record_trace(&[11, node.0 as u8]);
            self.damaged(node);
        }
        let started = self.node(node).start_flush();
        if let Some((meant, landed)) = self.node(node).disk().take_misdirected() {
            self.log(|| format!("{node}: a write meant for {meant:?} landed at {landed:?}"));
        }
        if started {
            let latency = self.rng.random_range(50..400);
            let life = self.node(node).life;
            self.clock.schedule(latency, Event::Flushed { node, life });
        }
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        self.send_tagged(from, to, message, None);
    }

    fn send_tagged(&mut self, from: Endpoint, to: Endpoint, message: Message, tag: Option<u64>) {
        if self.faults_on && self.rng.random_range(0..1000) < self.config.drop_per_mille {
            return;
        }
        if self.is_cut(from, Cut::Outgoing) || self.is_cut(to, Cut::Incoming) {
            return;
        }
        let copies = if self.faults_on && self.rng.random_range(0..1000) < self.config.duplicate_per_mille {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(20..300);
            self.clock.schedule(delay, Event::Deliver { from, to, message: message.clone(), tag });
        }
    }

    fn send_writer_transmits(&mut self) {
        while let Some(transmit) = self.writer.poll_transmit() {
            self.links.on_sent(transmit.node, writers::instant(self.clock.now_us));
            self.send(Endpoint::Writer(self.writer_gen), Endpoint::Node(transmit.node), transmit.message);
        }
    }

    fn tick(&mut self) {
        self.writer.handle_tick();
        self.observe_changes();
        if self.writer.is_fenced() {
            self.maybe_start_takeover();
        }
        self.workload();
        self.read_a_page();
        let now_ms = self.clock.now_us / 1000;
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            node.coalesce(now_ms);
        }
        // Each node's core says whether its gossip round is due (`Limits::gossip_interval_ms`).
        self.gossip();
        self.drive_takeover();
        self.drive_old_writer();
        self.drive_repairs();
        if self.faults_on {
            self.faults();
        }
        self.drive_links();
        self.send_writer_transmits();
        self.check_vdl();
    }

    /// Every live node's gossip round (with its image repairs and hydration asks), over the
    /// same faulty network, after its scrubber's turn and its asks' timeouts.
    fn gossip(&mut self) {
        let now = self.clock.now_us;
        let cluster = &self.cluster;
        let members_of = |pg: protocol::PgRef| cluster.place(pg.volume_id, pg.pg_id).members().to_vec();
        let mut out = Vec::new();
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            node.scrub(now / 1000);
            node.expire_asks(now / 1000);
            for (peer, message, tag) in node.gossip(now, members_of) {
                out.push((node.id, peer, message, tag));
            }
        }
        for (from, to, message, tag) in out {
            self.send_tagged(Endpoint::Node(from), Endpoint::Node(to), message, tag);
        }
    }

    /// After healing, with the workload stopped: runs until every live segment of each PG
    /// holds the same records (gossip fills what the writer's quorum left behind, hydration
    /// rebuilds what its peers folded), claims only entries its disk holds intact, and every
    /// live node finished a scrub pass begun after the faults stopped (so all rot is found)
    /// and runs no hydration; then every node must serve every page right.
    fn converge(&mut self) {
        self.quiet = true;
        let healed_ms = self.clock.now_us / 1000;
        let deadline = self.clock.now_us + CONVERGE_US;
        while self.unsettled(healed_ms).is_some() && self.clock.now_us < deadline && self.events < EVENTS_MAX
        {
            self.step();
        }
        if let Some(unsettled) = self.unsettled(healed_ms) {
            self.failures.push(format!("segments did not converge after healing: {unsettled}"));
            return;
        }
        self.check_every_page();
        self.check_faults_repaired();
    }

    /// What still keeps the healed cluster from having converged, if anything.
    fn unsettled(&self, healed_ms: u64) -> Option<String> {
        let live = || self.nodes.iter().filter(|n| n.up && !self.dead.contains(&n.id));
        // A node that stores nothing (a spare, or a node replaced everywhere) has nothing to
        // scrub, and its scrubber counts no pass over nothing.
        let unscrubbed =
            |n: &&SimNode| n.scrub_pass_started_ms.is_none_or(|at| at < healed_ms) && !n.stores_nothing();
        if let Some(node) = live().find(unscrubbed) {
            return Some(format!(
                "{} has not finished a scrub pass begun after healing (healed at {healed_ms} ms, now {} ms, last pass started {:?}, next job at {:?}, {:?})",
                node.id,
                self.clock.now_us / 1000,
                node.scrub_pass_started_ms,
                node.core().poll_scrub_timeout(),
                node.core().scrub_stats()
            ));
        }
        if let Some(node) = live().find(|n| n.is_hydrating()) {
            return Some(format!("{} is still hydrating", node.id));
        }
        // Segments of the writer's members only: a node replaced out of a PG while it was away
        // may keep an orphan segment it was never told about (and never retired); nothing
        // reads it.
        if let Some(claim) = live().find_map(|n| n.damaged_claim(|pg| self.is_member(n.id, pg))) {
            return Some(claim);
        }
        if let Some(unsettled) = self.membership_unsettled() {
            return Some(unsettled);
        }
        self.divergence()
    }

    /// How the live segments of some PG still differ: each must be complete through the PG's
    /// newest record and hold the same records above the highest point any of them folded.
    fn divergence(&self) -> Option<String> {
        let mut newest: BTreeMap<PgId, Lsn> = BTreeMap::new();
        for (lsn, appended) in &self.appended {
            newest.insert(appended.pg, *lsn);
        }
        for (pg, newest) in newest {
            let pg_ref = self.geometry.pg_ref(pg);
            // The writer's members, not placement: a membership change may have replaced some.
            let members = self.writer.members(pg);
            let segments: Vec<(NodeId, Option<&storaged::core::Segment>)> = members
                .iter()
                .map(|id| &self.nodes[id.0 as usize - 1])
                .filter(|n| n.up && !self.dead.contains(&n.id))
                .map(|n| (n.id, n.core().segment(&pg_ref)))
                .collect();
            let mut compared = Vec::new();
            // Converged also means open at the writer's epoch: a member that missed the last
            // takeover's truncation is opened by the writer (until then it refuses its reads).
            let volume = self.writer.epochs().volume;
            // (A segment an abandoned takeover bumped above the writer's epoch refuses it; it is
            // compared by SCL only, as before.)
            let opened = |s: &storaged::core::Segment| {
                s.epochs().volume > volume || (s.epochs().volume == volume && s.is_open())
            };
            for (id, segment) in &segments {
                match segment {
                    Some(segment) if segment.scl() >= newest && opened(segment) => {
                        compared.push((*id, *segment))
                    }
                    _ => return Some(self.behind_report(pg, newest, *id, &segments)),
                }
            }
            let above = compared.iter().map(|(_, s)| s.folded_through()).max().unwrap_or(Lsn::ZERO);
            let held = |s: &storaged::core::Segment| -> Vec<Lsn> {
                s.all_records().map(|(lsn, _)| lsn).filter(|lsn| *lsn > above && *lsn <= newest).collect()
            };
            let sets: Vec<(NodeId, Vec<Lsn>)> = compared.iter().map(|(id, s)| (*id, held(s))).collect();
            if let Some((id, set)) = sets.iter().find(|(_, set)| *set != sets[0].1) {
                let (first, first_set) = &sets[0];
                let report = format!(
                    "{pg}: {id} holds {} records in ({above}, {newest}], {first} holds {}",
                    set.len(),
                    first_set.len()
                );
                return Some(report);
            }
        }
        None
    }

    /// Why the segment on `id` is behind, with its peers' state.
    fn behind_report(
        &self,
        pg: PgId,
        newest: Lsn,
        id: NodeId,
        segments: &[(NodeId, Option<&storaged::core::Segment>)],
    ) -> String {
        let segment = segments.iter().find(|(n, _)| *n == id).and_then(|(_, s)| *s);
        let state = segment.map_or("no segment".to_string(), |s| {
            let (scl, open, highest, holes) = (s.scl(), s.is_open(), s.highest_lsn(), s.holes(4));
            let next: Vec<(Lsn, Lsn)> =
                s.all_records().filter(|(l, _)| *l > scl).take(3).map(|(l, r)| (l, r.prev_pg_lsn)).collect();
            format!(
                "SCL {scl}, epochs {:?} (open: {open}), highest {highest}, holes {holes:?}, next (LSN, prev) {next:?}, truncations {:?}",
                s.epochs(),
                s.truncations()
            )
        });
        let others: Vec<String> = segments
            .iter()
            .filter_map(|(n, s)| {
                s.map(|s| {
                    let epochs = s.epochs();
                    let (volume, membership) = (epochs.volume, epochs.membership);
                    format!(
                        "{n}: SCL {}, folded {}, epochs {volume}/{membership}",
                        s.scl(),
                        s.folded_through()
                    )
                })
            })
            .collect();
        let damaged = self.rotted_nodes.contains(&id);
        format!(
            "{pg}: newest record {newest}; the segment on {id} (damaged: {damaged}): {state} [{}]",
            others.join("; ")
        )
    }

    fn workload(&mut self) {
        if self.quiet || self.rng.random_range(0..100) >= 60 {
            return;
        }
        let count = self.rng.random_range(1..=3);
        let records: Vec<NewRecord> = (0..count).map(|i| self.page_record(i == count - 1)).collect();
        let geometry = *self.writer.geometry();
        let keys: Vec<Appended> = records
            .iter()
            .map(|r| Appended {
                pg: geometry.pg_of(r.page),
                crc: crc32c::crc32c(&r.payload),
                page: r.page,
                kind: r.kind,
                payload: r.payload.clone(),
            })
            .collect();
        if let Ok((first, _)) = self.writer.append(records) {
            for (i, key) in keys.into_iter().enumerate() {
                self.appended.insert(Lsn(first.0 + i as u64), key);
            }
        }
    }

    /// A random record: mostly patches, some images, zeroings, trims and commit markers.
    fn page_record(&mut self, cpl: bool) -> NewRecord {
        let page = PageId(self.rng.random_range(0..self.config.pages));
        let page_bytes = self.geometry.page_bytes as usize;
        let byte: u8 = self.rng.random();
        let (kind, payload) = match self.rng.random_range(0..20) {
            0..=2 => (RecordKind::PageImage, vec![byte; page_bytes]),
            3 => (RecordKind::PageZero, Vec::new()),
            4 => (RecordKind::PageTrim, Vec::new()),
            5 | 6 => (RecordKind::Marker, format!("commit {byte}").into_bytes()),
            _ => {
                let offset = self.rng.random_range(0..page_bytes as u32 - 32);
                let data = vec![byte; self.rng.random_range(1..32)];
                let patch = protocol::patch::encode(&[protocol::patch::PatchEdit { offset, data: &data }]);
                (RecordKind::PagePatch, patch.expect("a valid patch").to_vec())
            }
        };
        NewRecord { page, kind, payload: payload.into(), cpl, lsn: None }
    }

    /// Now and then, reads a random written page at a random point in [floor, VDL] from the
    /// segment the writer's routing picks first; the answer is checked when it arrives.
    fn read_a_page(&mut self) {
        if self.rng.random_range(0..100) >= READ_PERCENT || self.appended.is_empty() {
            return;
        }
        let vdl = self.writer.vdl();
        let floor = self.writer.floor();
        if vdl == Lsn::ZERO || floor > vdl {
            return;
        }
        let at = Lsn(self.rng.random_range(floor.0..=vdl.0));
        let index = self.rng.random_range(0..self.appended.len());
        let page = self.appended.values().nth(index).expect("index in range").page;
        let pg = self.geometry.pg_of(page);
        let Ok((need, candidates)) = self.writer.read_route(pg, at) else { return };
        let Some(node) = candidates.first().copied() else { return };
        let read = Message::ReadPage(ReadPage {
            pg: self.geometry.pg_ref(pg),
            epochs: self.writer.epochs(),
            page_id: page,
            read_lsn: at,
            pg_newest_lsn: need,
            page_bytes: self.geometry.page_bytes,
        });
        self.send(Endpoint::Reader, Endpoint::Node(node), read);
    }

    /// A page a node returned must be the model's page at the read's LSN.
    fn check_page(&mut self, node: NodeId, reply: Message) {
        let Message::Page(page) = reply else {
            self.reads_refused += 1;
            return;
        };
        self.reads_checked += 1;
        if let Some(wrong) = self.wrong_page(node, &page) {
            self.failures.push(wrong);
        }
    }

    /// Why `page`, served by `node`, is not the model's page at its read point, if it is not.
    fn wrong_page(&self, node: NodeId, page: &protocol::messages::Page) -> Option<String> {
        let records: Vec<protocol::Record> = self
            .appended
            .range(..=page.read_lsn)
            .filter(|(_, a)| a.page == page.page_id && a.kind != RecordKind::Marker)
            .map(|(lsn, a)| a.record(*lsn))
            .collect();
        let version = records.last().map_or(Lsn::ZERO, protocol::Record::lsn);
        let expected = protocol::apply::materialize(self.geometry.page_bytes, None, &records);
        let expected = expected.expect("the workload writes records that apply");
        (page.version_lsn != version || page.bytes[..] != expected[..]).then(|| {
            format!(
                "{node} served page {} at {} as version {} (model: version {version}{})",
                page.page_id.0,
                page.read_lsn,
                page.version_lsn,
                if page.bytes[..] == expected[..] { ", same bytes" } else { ", other bytes" }
            )
        })
    }

    /// Crashes, partitions, full disks and rot, within the fault budget.
    fn faults(&mut self) {
        self.maybe_start_takeover();
        let now = self.clock.now_us;
        let count = self.node_count();
        self.cut_off.retain(|_, (until, _)| *until > now);
        if self.rng.random_range(0..1000) < self.config.crash_per_mille {
            let node = NodeId(self.rng.random_range(1..=count));
            let within = self.rng.random_range(0..TICK_US);
            self.clock.schedule(within, Event::Crash { node });
        }
        if self.rng.random_range(0..1000) < self.config.partition_per_mille {
            self.partition();
        }
        if self.rng.random_range(0..1000) < self.config.disk_full_per_mille {
            let node = NodeId(self.rng.random_range(1..=count));
            if self.node(node).up && self.may_take_down(&[node]) {
                self.record_trace(&[12, node.0 as u8]);
                let until = now + self.rng.random_range(1_000..20_000);
                self.full_until.insert(node, until);
                self.node(node).set_disk_full(true);
                self.clock.schedule(until - now, Event::SpaceBack { node });
            }
        }
        if self.rng.random_range(0..1000) < self.config.rot_per_mille {
            let node = NodeId(self.rng.random_range(1..=count));
            let index = self.rng.random();
            let rotted = self.may_damage(node).then(|| self.node(node).disk().rot(&node::FAULTY_DIRS, index));
            if let Some(Some(at)) = rotted {
                self.log(|| format!("{node}: sector {at:?} rots"));
                self.record_trace(&[7, node.0 as u8]);
                self.damaged(node);
            }
        }
        if self.spares.enabled {
            self.change_faults();
        }
    }

    /// Cuts off a node (both ways, or one direction only) or a whole AZ for a while.
    pub(crate) fn partition(&mut self) {
        let first = NodeId(self.rng.random_range(1..=self.node_count()));
        let (nodes, cut) = match self.rng.random_range(0..4) {
            0 => (vec![first], Cut::Both),
            1 => (vec![first], if self.rng.random() { Cut::Outgoing } else { Cut::Incoming }),
            _ => {
                // The node's whole AZ (nodes 1-2, 3-4, 5-6 of six; 1-3, 4-6, 7-9 of nine).
                let az = self.node(first).az;
                let mut nodes = vec![first];
                nodes.extend(self.nodes.iter().filter(|n| n.az == az && n.id != first).map(|n| n.id));
                (nodes, Cut::Both)
            }
        };
        if !self.may_take_down(&nodes) {
            return;
        }
        let until = self.clock.now_us + self.rng.random_range(2_000..40_000);
        for node in nodes {
            self.record_trace(&[10, node.0 as u8, cut as u8]);
            self.cut_off.insert(node, (until, cut));
        }
    }

    /// True if `nodes` may become unavailable without exceeding the budget: at most two nodes
    /// unavailable, or more only if all in one AZ (nine nodes: every quorum set has two nodes
    /// per AZ, so either way no set has more than two unavailable).
    fn may_take_down(&self, nodes: &[NodeId]) -> bool {
        let now = self.clock.now_us;
        let unavailable = |node: &SimNode| {
            !node.up
                || self.cut_off.get(&node.id).is_some_and(|(until, _)| *until > now)
                || self.full_until.contains_key(&node.id)
        };
        let mut down: Vec<&SimNode> = self.nodes.iter().filter(|n| unavailable(n)).collect();
        down.extend(nodes.iter().map(|id| &self.nodes[id.0 as usize - 1]).filter(|n| !unavailable(n)));
        if self.config.over_budget {
            return down.len() <= 4;
        }
        down.len() <= 2 || down.iter().all(|n| n.az == down[0].az)
    }

    /// True if `node` may be (or already was) damaged within the budget of two damaged nodes.
    fn may_damage(&self, node: NodeId) -> bool {
        self.rotted_nodes.contains(&node) || self.rotted_nodes.len() < 2
    }

    fn damaged(&mut self, node: NodeId) {
        if !self.rotted_nodes.contains(&node) {
            self.rotted_nodes.push(node);
        }
    }

    /// True if `endpoint` is a node whose traffic in `direction` is being dropped.
    fn is_cut(&self, endpoint: Endpoint, direction: Cut) -> bool {
        let Endpoint::Node(node) = endpoint else { return false };
        self.cut_off.get(&node).is_some_and(|(until, cut)| {
            *until > self.clock.now_us && (*cut == Cut::Both || *cut == direction)
        })
    }

    /// Over budget: three nodes crash and never come back, so no PG can gather a write quorum.
    /// Crashes `node`: of its writes not yet flushed, a random prefix lands, the next one torn
    /// at a random sector.
    fn crash(&mut self, node: NodeId) {
        let landed = self.rng.random_range(0..3);
        let torn_sectors = self.rng.random_range(0..4);
        self.node(node).crash(landed, torn_sectors);
    }

    fn lose_three_nodes(&mut self) {
        while self.dead.len() < 3 {
            let node = NodeId(self.rng.random_range(1..=self.node_count()));
            if !self.dead.contains(&node) {
                self.record_trace(&[13, node.0 as u8]);
                self.dead.push(node);
                if self.node(node).up {
                    self.node(node).crash(0, 0);
                }
            }
        }
    }

    fn heal(&mut self) {
        self.faults_on = false;
        // A transient read failure pending from the faulty phase ends with it.
        self.nodes.iter().for_each(|n| n.disk().clear_read_faults());
        self.cut_off.clear();
        for id in 1..=self.node_count() {
            if !self.node(NodeId(id)).up {
                self.clock.schedule(1, Event::Restart { node: NodeId(id) });
            }
            if self.full_until.remove(&NodeId(id)).is_some() {
                self.node(NodeId(id)).set_disk_full(false);
            }
        }
    }

    /// VDL never goes back, and covers a record only once a write quorum (4 of 6) of its PG's
    /// set has it on disk: the writer counted acks right. The set is the first of the writer's
    /// membership when VDL covers it (the only one, or the one a change leaves): whatever the
    /// steps since the record's batch counted, it counted at 4 of that set (4 of both during a
    /// change; after the final step, the new set's members all hold it, the joining one from
    /// the batch itself or by hydration).
    fn check_vdl(&mut self) {
        let vdl = self.writer.vdl();
        if vdl < self.vdl_seen {
            self.failures.push(format!("VDL went back from {} to {vdl}", self.vdl_seen));
        }
        let newly: Vec<(Lsn, PgId)> = if vdl > self.vdl_seen {
            self.appended.range(Lsn(self.vdl_seen.0 + 1)..=vdl).map(|(l, a)| (*l, a.pg)).collect()
        } else {
            Vec::new()
        };
        for (lsn, pg) in newly {
            let membership = self.writer.membership(pg);
            let pg_ref = self.geometry.pg_ref(pg);
            let set = membership.current().members();
            let holds = |n: &&NodeId| {
                let node = &self.nodes[n.0 as usize - 1];
                node.has_written(lsn) || node.hydrated_through(pg_ref) >= lsn
            };
            let copies = set.iter().filter(holds).count();
            if copies < 4 {
                let during = if membership.is_joint() { " (during a membership change)" } else { "" };
                let acked: Vec<NodeId> = self
                    .acks
                    .iter()
                    .filter(|(_, p, first, last)| *p == pg && *first <= lsn && lsn <= *last)
                    .map(|(n, ..)| *n)
                    .collect();
                self.failures.push(format!(
                    "VDL {vdl} covered {lsn} while only {copies} disks of {pg}'s set {set:?} had it{during} (acks from {acked:?}, written on {:?})", set.iter().filter(holds).collect::<Vec<_>>()
                ));
                break;
            }
        }
        self.vdl_seen = self.vdl_seen.max(vdl);
    }

    /// Every record VDL covered is stored intact on at least four nodes, less the ones that
    /// rotted: the record itself, or an image of its page at or above it.
    fn check_durability(&mut self) {
        let needed = 4usize.saturating_sub(self.rotted_nodes.len()).max(1);
        let held: Vec<Holdings> = self.nodes.iter().map(Holdings::of).collect();
        for (lsn, appended) in self.appended.range(..=self.vdl_seen) {
            let pg = self.geometry.pg_ref(appended.pg);
            let found = held.iter().filter(|h| h.holds(pg, appended, *lsn, true)).count();
            if found < needed {
                self.failures
                    .push(format!("acknowledged record {lsn} intact on {found} nodes, needs {needed}"));
            }
        }
        self.check_acks_were_stored(&held);
    }

    /// A node never acknowledges what it has not stored: every record of every batch a node
    /// acknowledged is on its disk at the end (unless that disk rotted), or at or below the
    /// point a hydration of its segment installed page images through. A batch is the LSNs
    /// the node received in it (a repair batch skips what its source could not read).
    fn check_acks_were_stored(&mut self, held: &[Holdings]) {
        for (node, pg, first, last) in std::mem::take(&mut self.acks) {
            if first == Lsn::ZERO || self.rotted_nodes.contains(&node) {
                continue;
            }
            let pg_ref = self.geometry.pg_ref(pg);
            let holdings = &held[node.0 as usize - 1];
            // A record a hydration brought in is held inside the images it installed.
            let hydrated = self.nodes[node.0 as usize - 1].hydrated_through(pg_ref);
            let sent = self.batches.get(&(node, pg, first, last));
            let missing = self.appended.range(first..=last).find(|(lsn, a)| {
                a.pg == pg
                    && sent.is_none_or(|lsns| lsns.contains(lsn))
                    && !holdings.holds(pg_ref, a, **lsn, false)
                    && **lsn > hydrated
            });
            if let Some((lsn, a)) = missing {
                let image = holdings.images.get(&(pg_ref, a.page)).copied();
                self.failures.push(format!(
                    "{node} acknowledged {lsn} ({:?} of page {}) but does not hold it (newest image of the page: {image:?})",
                    a.kind, a.page.0
                ));
                return;
            }
        }
    }

    /// True if the current writer counts `node` a member of `pg` (a node that is not, but holds
    /// a segment no change retired, holds an orphan: see `docs/simulator.md`).
    fn is_member(&self, node: NodeId, pg: protocol::PgRef) -> bool {
        self.writer.members(pg.pg_id).contains(&node)
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[id.0 as usize - 1]
    }

    /// With `BOREALIS_SIM_LOG` set, prints `what` with the virtual time.
    fn log(&self, what: impl FnOnce() -> String) {
        if self.log_on {
            eprintln!("[{:>7} us] {}", self.clock.now_us, what());
        }
    }

    fn record_trace(&mut self, bytes: &[u8]) {
        let mut with_time = self.clock.now_us.to_le_bytes().to_vec();
        with_time.extend_from_slice(bytes);
        self.trace = crc32c::crc32c_append(self.trace, &with_time);
    }
}

fn trace_bytes(from: Endpoint, to: Endpoint, message: &Message) -> Vec<u8> {
    let id = |e: Endpoint| match e {
        Endpoint::Writer(gen) => 100 + gen as u8,
        Endpoint::Node(n) => n.0 as u8,
        Endpoint::Reader => 99,
    };
    let lsn = match message {
        Message::AppendBatch(b) => b.records.last().map_or(0, |r| r.lsn().0),
        Message::AppendAck(a) => a.last_lsn.0 ^ (a.scl.0 << 1),
        Message::MembershipChange(c) => c.membership.epoch().0,
        Message::MembershipAck(a) => a.membership_epoch.0 ^ (a.scl.0 << 1),
        _ => 0,
    };
    let mut bytes = vec![id(from), id(to), message.type_code()];
    bytes.extend_from_slice(&lsn.to_le_bytes());
    bytes
}
