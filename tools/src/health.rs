//! Replication health for `borealis cluster status`: per PG its six members, each member's
//! state and SCL as its node reports them, and one verdict for the cluster.
//!
//! Which PGs exist: the union of the segments the answering nodes list in their status answers.
//! A PG's members are the newest membership its segments store (during a change, the set it
//! is moving to), else its placement by the cluster map, so a member that lost its segment (or
//! whose node is down) still shows where it should be.
//! A PG whose six members are all down is invisible (no answering node reports it); the
//! node-level rule below keeps the verdict at least `HEALTH_WARN` then.
//!
//! Member states ([`MemberState`]), first match wins:
//! - `down`: the node did not answer the QUIC status request;
//! - `not-writable`: it answered, but its admin `/health` is not `200` (disk full, failed);
//! - `missing`: it answered, but does not list the segment;
//! - `hydrating`, `scrub-repairing`, `unknown-state-N`: the state the node reports;
//! - `lagging`: serving, but its SCL is below the PG's quorum SCL (the highest LSN that four
//!   members' SCLs reach: what is durable at a write quorum). Records above that point may still
//!   be in flight, so a member behind the best SCL only by in-flight records is not lagging;
//! - `serving`: serving, and at or above the quorum SCL.
//!
//! Healthy members are `serving` and `lagging` ones: a lagging member holds the segment, takes
//! writes and is caught up by gossip. Every other state is a missing copy.
//!
//! The verdict ([`verdict`]): `HEALTH_ERR` if some PG has fewer than a write quorum (4) of
//! healthy members, or fewer than 4 nodes serve at all (then no PG, known or not, can reach a
//! write quorum); else `HEALTH_WARN` if some PG has fewer than 6, or some node is not serving
//! (unless it is down and *replaced*: a membership change took it out of every PG placement gave
//! it, so it costs no PG a copy); else `HEALTH_OK`.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use protocol::messages::{SegmentState, SegmentStatus};
use protocol::placement::ClusterMap;
use protocol::quorum::{SEGMENTS_PER_PG, WRITE_QUORUM};
use protocol::{Lsn, NodeId, PgRef};
use serde::{Serialize, Serializer};

use crate::probe::Probe;

/// Exit status of `cluster status` for each verdict, and when no verdict could be made.
pub const EXIT_OK: u8 = 0;
pub const EXIT_WARN: u8 = 1;
pub const EXIT_ERR: u8 = 2;
pub const EXIT_UNKNOWN: u8 = 3;

/// The cluster's health in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Err,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "HEALTH_OK",
            Verdict::Warn => "HEALTH_WARN",
            Verdict::Err => "HEALTH_ERR",
        }
    }

    /// `cluster status`'s exit status for this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => EXIT_OK,
            Verdict::Warn => EXIT_WARN,
            Verdict::Err => EXIT_ERR,
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The verdict for PGs with these numbers of healthy members, on a cluster of `nodes_total`
/// nodes of which `nodes_serving` answer and take writes (see the module docs).
pub fn verdict(healthy_per_pg: &[usize], nodes_total: usize, nodes_serving: usize) -> Verdict {
    let fewest = healthy_per_pg.iter().copied().min();
    if nodes_serving < WRITE_QUORUM || fewest.is_some_and(|healthy| healthy < WRITE_QUORUM) {
        Verdict::Err
    } else if nodes_serving < nodes_total || fewest.is_some_and(|healthy| healthy < SEGMENTS_PER_PG) {
        Verdict::Warn
    } else {
        Verdict::Ok
    }
}

/// What one member of a PG is doing (see the module docs for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Serving,
    Lagging,
    Hydrating,
    ScrubRepairing,
    UnknownState(u16),
    Missing,
    NotWritable,
    Down,
}

impl MemberState {
    /// Counts toward the PG's healthy members.
    pub fn is_healthy(self) -> bool {
        matches!(self, MemberState::Serving | MemberState::Lagging)
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberState::Serving => f.write_str("serving"),
            MemberState::Lagging => f.write_str("lagging"),
            MemberState::Hydrating => f.write_str("hydrating"),
            MemberState::ScrubRepairing => f.write_str("scrub-repairing"),
            MemberState::UnknownState(code) => write!(f, "unknown-state-{code}"),
            MemberState::Missing => f.write_str("missing"),
            MemberState::NotWritable => f.write_str("not-writable"),
            MemberState::Down => f.write_str("down"),
        }
    }
}

impl Serialize for MemberState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One member of a PG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub node: u32,
    pub az: u16,
    pub state: MemberState,
    /// `None` when the node did not answer or does not list the segment.
    pub scl: Option<u64>,
    pub highest_lsn: Option<u64>,
}

/// One PG: its members in (AZ, node) order and how many are healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PgHealth {
    /// The volume id in hex, as in `/metrics` (128 bits do not fit a JSON number).
    pub volume: String,
    pub pg: u32,
    pub healthy: usize,
    pub members: Vec<Member>,
    /// Nodes that list the segment although placement does not make them members.
    pub strays: Vec<u32>,
}

/// One node, as far as the verdict is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeHealth {
    pub id: u32,
    pub az: u16,
    /// Answered the QUIC status request.
    pub up: bool,
    /// Up, and its `/health` is 200 (or its admin port could not be asked).
    pub serving: bool,
    /// Segments it listed; `None` if it did not answer.
    pub segments: Option<usize>,
    /// Down, and replaced by a membership change in every PG placement gave it: its loss no
    /// longer costs any PG a copy, so it does not hold the verdict at `HEALTH_WARN`.
    pub replaced: bool,
}

/// Everything `cluster status` says about replication; serialized as its `--json` file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterHealth {
    pub health: Verdict,
    pub pgs_total: usize,
    /// PGs with 6 healthy members.
    pub pgs_fully_replicated: usize,
    /// PGs with 4 or 5.
    pub pgs_degraded: usize,
    /// PGs with fewer than 4: writes to them stop.
    pub pgs_below_write_quorum: usize,
    pub nodes_total: usize,
    pub nodes_serving: usize,
    pub nodes: Vec<NodeHealth>,
    pub pgs: Vec<PgHealth>,
}

/// Why the `--json` file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {source}", path.display())]
pub struct WriteJsonError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Assesses the cluster of `map` from its nodes' `probes` (a node without a probe is down).
pub fn assess(map: &ClusterMap, probes: &[Probe]) -> ClusterHealth {
    let nodes: Vec<NodeHealth> = map.nodes().iter().map(|n| node_health(n.id, n.az.0, probes)).collect();
    let reports = segment_reports(probes);
    let pgs: Vec<PgHealth> = reports.iter().map(|(pg, held)| pg_health(map, &nodes, *pg, held)).collect();
    let mut nodes = nodes;
    for node in &mut nodes {
        let member_somewhere = pgs.iter().any(|p| p.members.iter().any(|m| m.node == node.id));
        let placed_somewhere =
            reports.keys().any(|pg| map.place(pg.volume_id, pg.pg_id).contains(NodeId(node.id)));
        node.replaced = !node.up && placed_somewhere && !member_somewhere;
    }
    let healthy: Vec<usize> = pgs.iter().map(|p| p.healthy).collect();
    let nodes_serving = nodes.iter().filter(|n| n.serving).count();
    let nodes_counted = nodes.iter().filter(|n| !n.replaced).count();
    ClusterHealth {
        health: verdict(&healthy, nodes_counted, nodes_serving),
        pgs_total: pgs.len(),
        pgs_fully_replicated: healthy.iter().filter(|h| **h >= SEGMENTS_PER_PG).count(),
        pgs_degraded: healthy.iter().filter(|h| (WRITE_QUORUM..SEGMENTS_PER_PG).contains(*h)).count(),
        pgs_below_write_quorum: healthy.iter().filter(|h| **h < WRITE_QUORUM).count(),
        nodes_total: nodes.len(),
        nodes_serving,
        nodes,
        pgs,
    }
}

fn node_health(id: NodeId, az: u16, probes: &[Probe]) -> NodeHealth {
    let probe = probes.iter().find(|p| p.target.node == id.0);
    let status = probe.and_then(|p| p.status.as_ref().ok());
    let refuses =
        probe.and_then(|p| p.health.as_ref()).is_some_and(|h| h.as_ref().is_ok_and(|h| h.code != 200));
    NodeHealth {
        id: id.0,
        az,
        up: status.is_some(),
        serving: status.is_some() && !refuses,
        replaced: false,
        segments: status.map(|s| s.segments.len()),
    }
}

/// Every PG some answering node lists, with each listing node's entry.
fn segment_reports(probes: &[Probe]) -> BTreeMap<PgRef, BTreeMap<u32, SegmentStatus>> {
    let mut reports: BTreeMap<PgRef, BTreeMap<u32, SegmentStatus>> = BTreeMap::new();
    for probe in probes {
        for segment in probe.status.iter().flat_map(|s| &s.segments) {
            reports.entry(segment.pg).or_default().insert(probe.target.node, *segment);
        }
    }
    reports
}

fn pg_health(
    map: &ClusterMap,
    nodes: &[NodeHealth],
    pg: PgRef,
    held: &BTreeMap<u32, SegmentStatus>,
) -> PgHealth {
    // The PG's members: the newest membership its segments store (the set a change is moving
    // to, while it is under way), else its placement.
    let stored = held.values().filter_map(|s| s.membership).max_by_key(|m| m.epoch());
    let set = stored.map_or_else(|| map.place(pg.volume_id, pg.pg_id), |m| *m.next().unwrap_or(m.current()));
    let quorum_scl = set.lsn_reached_by(WRITE_QUORUM, |id| held.get(&id.0).map(|s| s.scl));
    let mut members: Vec<Member> = set
        .members()
        .iter()
        .map(|id| {
            let node = nodes.iter().find(|n| n.id == id.0);
            let segment = held.get(&id.0);
            Member {
                node: id.0,
                az: node.map_or(0, |n| n.az),
                state: member_state(node, segment, quorum_scl),
                scl: segment.filter(|_| node.is_some_and(|n| n.up)).map(|s| s.scl.get()),
                highest_lsn: segment.filter(|_| node.is_some_and(|n| n.up)).map(|s| s.highest_lsn.get()),
            }
        })
        .collect();
    members.sort_by_key(|m| (m.az, m.node));
    let strays = held.keys().copied().filter(|id| !set.contains(NodeId(*id))).collect();
    PgHealth {
        volume: format!("{:x}", pg.volume_id.get()),
        pg: pg.pg_id.get(),
        healthy: members.iter().filter(|m| m.state.is_healthy()).count(),
        members,
        strays,
    }
}

/// A member's state, first match wins (see the module docs).
fn member_state(node: Option<&NodeHealth>, segment: Option<&SegmentStatus>, quorum_scl: Lsn) -> MemberState {
    match (node, segment) {
        (None, _) => MemberState::Down,
        (Some(node), _) if !node.up => MemberState::Down,
        (Some(node), _) if !node.serving => MemberState::NotWritable,
        (_, None) => MemberState::Missing,
        (_, Some(segment)) => match segment.state {
            SegmentState::Serving if segment.scl < quorum_scl => MemberState::Lagging,
            SegmentState::Serving => MemberState::Serving,
            SegmentState::Hydrating => MemberState::Hydrating,
            SegmentState::ScrubRepairing => MemberState::ScrubRepairing,
            // A member by the newest membership, retired by an older one it still holds: it has
            // not stored the step that named it again.
            SegmentState::Retired => MemberState::Missing,
            SegmentState::Unknown(code) => MemberState::UnknownState(code),
        },
    }
}

impl ClusterHealth {
    /// The one-line verdict, e.g. `HEALTH_WARN: 3 of 4 PGs fully replicated, 1 degraded (4-5
    /// healthy members), 0 below a write quorum; 8 of 9 nodes serving`.
    pub fn verdict_line(&self) -> String {
        format!(
            "{}: {} of {} PGs fully replicated, {} degraded ({WRITE_QUORUM}-{} healthy members), {} below a \
             write quorum; {} of {} nodes serving",
            self.health.name(),
            self.pgs_fully_replicated,
            self.pgs_total,
            self.pgs_degraded,
            SEGMENTS_PER_PG - 1,
            self.pgs_below_write_quorum,
            self.nodes_serving,
            self.nodes_total
        )
    }

    /// One line per PG: its healthy count and its members as `node:state:scl`, then a line per
    /// stray segment.
    pub fn pg_table(&self) -> String {
        let mut out =
            format!("{:>8}  {:>4}  {:>7}  members (node:state:scl, by AZ)\n", "volume", "pg", "healthy");
        for pg in &self.pgs {
            let members: Vec<String> = pg
                .members
                .iter()
                .map(|m| {
                    format!("{}:{}:{}", m.node, m.state, m.scl.map_or_else(|| "-".into(), |s| s.to_string()))
                })
                .collect();
            let healthy = format!("{}/{SEGMENTS_PER_PG}", pg.healthy);
            let _ = writeln!(out, "{:>8}  {:>4}  {healthy:>7}  {}", pg.volume, pg.pg, members.join(" "));
        }
        for pg in self.pgs.iter().filter(|p| !p.strays.is_empty()) {
            let strays: Vec<String> = pg.strays.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "volume {} pg {}: nodes {} hold a segment but are not members by placement",
                pg.volume,
                pg.pg,
                strays.join(", ")
            );
        }
        out
    }

    /// Writes the assessment as pretty JSON to `path`, replacing any file there atomically.
    pub fn write_json(&self, path: &Path) -> Result<(), WriteJsonError> {
        let mut text = serde_json::to_string_pretty(self).expect("plain data always serializes");
        text.push('\n');
        crate::files::write_atomically(path, text.as_bytes(), 0o644)
            .map_err(|source| WriteJsonError { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::messages::Status;
    use protocol::placement::NodeInfo;
    use protocol::{AzId, Epochs, PgId, VolumeId};

    use super::*;
    use crate::probe::{Health, ProbeError, Target};

    #[test]
    fn every_verdict_case() {
        // Every PG at 6, every node serving.
        assert_eq!(verdict(&[6, 6, 6], 9, 9), Verdict::Ok);
        // No volume yet and every node serving: nothing is missing.
        assert_eq!(verdict(&[], 6, 6), Verdict::Ok);
        // Some PG at 5 or 4: degraded, still writable.
        assert_eq!(verdict(&[6, 5, 6], 9, 9), Verdict::Warn);
        assert_eq!(verdict(&[4, 6], 9, 9), Verdict::Warn);
        // Every PG at 6, but a node down (it holds no segment, or one of an invisible PG).
        assert_eq!(verdict(&[6, 6], 9, 8), Verdict::Warn);
        assert_eq!(verdict(&[], 6, 5), Verdict::Warn);
        // Some PG below a write quorum.
        assert_eq!(verdict(&[6, 3, 5], 9, 9), Verdict::Err);
        assert_eq!(verdict(&[0], 6, 6), Verdict::Err);
        // Fewer than 4 nodes serving: no PG can be written, whatever is known of them.
        assert_eq!(verdict(&[], 6, 3), Verdict::Err);
        assert_eq!(verdict(&[], 6, 0), Verdict::Err);
        assert_eq!(
            [Verdict::Ok, Verdict::Warn, Verdict::Err].map(Verdict::exit_code),
            [EXIT_OK, EXIT_WARN, EXIT_ERR]
        );
    }

    fn map(nodes: u32) -> ClusterMap {
        let info = |id: u32| NodeInfo {
            id: NodeId(id),
            az: AzId(((id - 1) * 3 / nodes) as u16),
            addr: ([127, 0, 0, 1], 7000 + id as u16).into(),
            name: format!("node-{id}"),
            spare: false,
        };
        ClusterMap::new((1..=nodes).map(info).collect()).unwrap()
    }

    const PG: PgRef = PgRef { volume_id: VolumeId(0xb0), pg_id: PgId(0) };

    fn segment(scl: u64, state: SegmentState) -> SegmentStatus {
        SegmentStatus {
            pg: PG,
            epochs: Epochs::INITIAL,
            scl: Lsn(scl),
            highest_lsn: Lsn(scl + 5),
            floor: Lsn(0),
            state,
            membership: None,
        }
    }

    /// Probes of every node of `map`: members of [`PG`] hold it with `scl_of(node)` unless
    /// `held` says otherwise; nodes in `down` time out.
    fn probes(map: &ClusterMap, held: impl Fn(u32) -> Option<SegmentStatus>, down: &[u32]) -> Vec<Probe> {
        let members = map.place(PG.volume_id, PG.pg_id);
        map.nodes()
            .iter()
            .map(|n| {
                let target = Target { node: n.id.0, addr: n.addr, name: n.name.clone(), admin: None };
                let segments = held(n.id.0).filter(|_| members.contains(n.id)).into_iter().collect();
                let status = if down.contains(&n.id.0) {
                    Err(ProbeError::Timeout(Duration::from_millis(5)))
                } else {
                    Ok(Status { node: n.id, az: n.az, segments })
                };
                Probe { target, status, health: None }
            })
            .collect()
    }

    #[test]
    fn a_pg_with_six_serving_members_is_ok_and_nine_nodes_place_it() {
        let map = map(9);
        let health = assess(&map, &probes(&map, |_| Some(segment(100, SegmentState::Serving)), &[]));
        assert_eq!((health.health, health.pgs_total, health.pgs_fully_replicated), (Verdict::Ok, 1, 1));
        let pg = &health.pgs[0];
        assert_eq!((pg.volume.as_str(), pg.pg, pg.healthy, pg.members.len()), ("b0", 0, 6, 6));
        assert!(pg.members.iter().all(|m| m.state == MemberState::Serving && m.scl == Some(100)));
        assert!(pg.members.windows(2).all(|w| (w[0].az, w[0].node) < (w[1].az, w[1].node)));
        assert_eq!(health.nodes.len(), 9);
        assert!(health.verdict_line().starts_with("HEALTH_OK: 1 of 1 PGs fully replicated"));
    }

    #[test]
    fn down_missing_hydrating_and_repairing_members_are_told_apart_and_not_healthy() {
        let map = map(6);
        let members = map.place(PG.volume_id, PG.pg_id).members().map(|id| id.0);
        let [down, missing, hydrating, repairing, _, _] = members;
        let held = move |id: u32| match id {
            _ if id == missing => None,
            _ if id == hydrating => Some(segment(0, SegmentState::Hydrating)),
            _ if id == repairing => Some(segment(90, SegmentState::ScrubRepairing)),
            _ => Some(segment(120, SegmentState::Serving)),
        };
        let health = assess(&map, &probes(&map, held, &[down]));
        let state = |id: u32| health.pgs[0].members.iter().find(|m| m.node == id).unwrap().state;
        assert_eq!(state(down), MemberState::Down);
        assert_eq!(state(missing), MemberState::Missing);
        assert_eq!(state(hydrating), MemberState::Hydrating);
        assert_eq!(state(repairing), MemberState::ScrubRepairing);
        assert_eq!(health.pgs[0].healthy, 2);
        assert_eq!((health.health, health.pgs_below_write_quorum), (Verdict::Err, 1));
        let down_member = health.pgs[0].members.iter().find(|m| m.node == down).unwrap();
        assert_eq!((down_member.scl, down_member.highest_lsn), (None, None));
        assert!(health.pg_table().contains(&format!("{down}:down:-")), "{}", health.pg_table());
        assert!(
            health.pg_table().contains(&format!("{repairing}:scrub-repairing:90")),
            "{}",
            health.pg_table()
        );
    }

    #[test]
    fn a_member_below_the_quorum_scl_is_lagging_and_still_healthy() {
        let map = map(6);
        let members = map.place(PG.volume_id, PG.pg_id).members().map(|id| id.0);
        // Sorted SCLs 120, 120, 110, 100, 100, 10: four members reach 100.
        let scls = [120, 120, 110, 100, 100, 10];
        let held = move |id: u32| {
            let index = members.iter().position(|m| *m == id)?;
            Some(segment(scls[index], SegmentState::Serving))
        };
        let health = assess(&map, &probes(&map, held, &[]));
        let state = |id: u32| health.pgs[0].members.iter().find(|m| m.node == id).unwrap().state;
        assert_eq!(state(members[2]), MemberState::Serving, "behind the best only by what is in flight");
        assert_eq!(state(members[5]), MemberState::Lagging);
        assert_eq!((health.pgs[0].healthy, health.health), (6, Verdict::Ok));
    }

    #[test]
    fn one_node_down_warns_and_its_members_are_down_in_the_json() {
        let map = map(9);
        let members = map.place(PG.volume_id, PG.pg_id).members().map(|id| id.0);
        let mut probes = probes(&map, |_| Some(segment(7, SegmentState::Serving)), &[members[0]]);
        // A node whose /health refuses writes counts as not serving.
        let refusing = probes.iter_mut().find(|p| p.target.node == members[1]).unwrap();
        refusing.health = Some(Ok(Health { code: 503, text: "disk full".into() }));
        let health = assess(&map, &probes);
        assert_eq!((health.health, health.pgs_degraded, health.nodes_serving), (Verdict::Warn, 1, 7));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        health.write_json(&path).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["health"], "HEALTH_WARN");
        assert_eq!((json["pgs_total"].as_u64(), json["pgs_fully_replicated"].as_u64()), (Some(1), Some(0)));
        let member = |id: u32| {
            json["pgs"][0]["members"].as_array().unwrap().iter().find(|m| m["node"] == id).unwrap().clone()
        };
        assert_eq!(member(members[0])["state"], "down");
        assert_eq!(member(members[0])["scl"], serde_json::Value::Null);
        assert_eq!(member(members[1])["state"], "not-writable");
        assert_eq!(member(members[2])["state"], "serving");
        assert_eq!(member(members[2])["scl"], 7);
        assert!(member(members[2])["az"].is_u64());
    }

    #[test]
    fn a_segment_on_a_node_outside_the_placement_is_a_stray() {
        let map = map(9);
        let set = map.place(PG.volume_id, PG.pg_id);
        let outsider = map.nodes().iter().map(|n| n.id.0).find(|id| !set.contains(NodeId(*id))).unwrap();
        let mut probes = probes(&map, |_| Some(segment(3, SegmentState::Serving)), &[]);
        let probe = probes.iter_mut().find(|p| p.target.node == outsider).unwrap();
        probe.status.as_mut().unwrap().segments.push(segment(3, SegmentState::Serving));
        let health = assess(&map, &probes);
        assert_eq!(health.pgs[0].strays, [outsider]);
        assert!(
            health.pg_table().contains(&format!("nodes {outsider} hold a segment")),
            "{}",
            health.pg_table()
        );
    }
}
