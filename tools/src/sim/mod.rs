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
mod checks;
mod faults;
pub mod net;
pub mod node;
mod settle;
mod workload;
mod writers;

use std::collections::{BTreeMap, HashMap};

use protocol::placement::ClusterMap;
use protocol::{Lsn, Message, NodeId, PgId, VolumeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use client::core::writer::{WriterCore, WriterStart};
use client::{VolumeGeometry, WriterLimits};
use faults::Cut;
use net::{Clock, Endpoint, Event};
use node::{HealCounts, SimNode};
use workload::Appended;

pub use changes::{ChangeCounts, Plant};

/// Virtual microseconds between writer ticks (workload, faults, failure detection).
const TICK_US: u64 = 1_000;
/// Events one run may process; a run that needs more is stuck in a loop and fails.
const EVENTS_MAX: u64 = 2_000_000;
/// How long the healed phase may take to make everything durable.
const HEAL_US: u64 = 2_000_000;
/// Percent of ticks on which the reader reads a page.
const READ_PERCENT: u32 = 30;
/// Declared VDLs kept as read points for the reader that is not the writer.
const DECLARED_VDLS_KEPT: usize = 64;
/// How long, once the writer made everything durable, the segments may take to converge.
const CONVERGE_US: u64 = 1_000_000;

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
    /// Of those, pages read by a reader that is not the writer (`ReadPageAsOf`).
    pub as_of_reads_checked: u64,
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
    /// Every node; placement is computed from it.
    cluster: ClusterMap,
    /// The map writers know: `cluster` less the spares not yet published (`changes`).
    known_map: ClusterMap,
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
    /// Of the pages checked, those a reader other than the writer read (`ReadPageAsOf`).
    as_of_reads_checked: u64,
    /// The latest VDLs the writers reached (at most `DECLARED_VDLS_KEPT`): read points for the
    /// reader that is not the writer.
    declared_vdls: std::collections::VecDeque<Lsn>,
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
        as_of_reads_checked: world.as_of_reads_checked,
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
        let spares = changes::Spares::new(seed, per_az, &config);
        let cluster = spares.cluster(per_az);
        let known_map = spares.known_map(&cluster);
        let geometry = VolumeGeometry::new(VolumeId(1), 4096, 64).expect("valid geometry");
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
            nodes: cluster.nodes().iter().map(|n| SimNode::new(n.id, n.az, 3 * per_az, node_bug)).collect(),
            writer: WriterCore::new(geometry, known_map.clone(), limits, WriterStart::fresh()),
            geometry,
            cluster,
            known_map,
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
            as_of_reads_checked: 0,
            declared_vdls: std::collections::VecDeque::new(),
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
            Endpoint::Reader | Endpoint::AsOfReader => {
                if let Endpoint::Node(node) = from {
                    if to == Endpoint::AsOfReader && matches!(message, Message::Page(_)) {
                        self.as_of_reads_checked += 1;
                    }
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
                            | Message::ReadRecordHeaders(_)
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
                    Endpoint::Reader | Endpoint::AsOfReader => self.node(node).receive(0, message, now),
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
        Endpoint::AsOfReader => 98,
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
