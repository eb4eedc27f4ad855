//! Text tables for operators: the nodes of a local cluster, and what a status probe found.
//!
//! Why a module: `cluster up`, `cluster status` and the later `borealis dev` print the same
//! tables, and tests check their content. Functions return strings and never print.
//!
//! Invariant: one row per node in cluster-map order, columns aligned, with every failure
//! explained on a line of its own below the table (so the table itself stays one line per node).

use std::fmt::Write as _;

use crate::local::LocalCluster;
use crate::probe::Probe;
use crate::procs::PidMap;

/// The nodes of `cluster`, with their pids where `pids` knows them.
pub fn nodes_table(cluster: &LocalCluster, pids: &PidMap) -> String {
    let mut out = format!("{:>4}  {:>2}  {:<21}  {:<21}  {:>8}  log\n", "node", "az", "quic", "admin", "pid");
    for node in cluster.nodes() {
        let pid = pids.get(&node.id).map_or_else(|| "-".to_string(), |p| p.pid.to_string());
        let _ = writeln!(
            out,
            "{:>4}  {:>2}  {:<21}  {:<21}  {:>8}  {}",
            node.id,
            node.az,
            node.addr,
            node.admin,
            pid,
            cluster.log_path(node).display()
        );
    }
    out
}

/// The status table: per node its process, whether it answered over QUIC, how many segments it
/// holds, and its health line; then one line per failure. `alive` holds the nodes whose recorded
/// process is running. Segments and their SCLs are shown per PG by [`crate::health`].
pub fn status_table(cluster: &LocalCluster, alive: &PidMap, probes: &[Probe]) -> String {
    let up = probes.iter().filter(|p| p.status.is_ok()).count();
    let mut out = format!("cluster {}: {up} of {} nodes up\n", cluster.dir().display(), probes.len());
    let _ = writeln!(
        out,
        "{:>4}  {:>2}  {:<21}  {:<13}  {:<5}  {:>8}  health",
        "node", "az", "quic", "process", "state", "segments"
    );
    let mut problems = Vec::new();
    for probe in probes {
        out.push_str(&status_row(cluster, alive, probe, &mut problems));
    }
    problems.iter().for_each(|p| {
        let _ = writeln!(out, "{p}");
    });
    out
}

/// One node's row; its failures are pushed onto `problems`.
fn status_row(cluster: &LocalCluster, alive: &PidMap, probe: &Probe, problems: &mut Vec<String>) -> String {
    let node = probe.target.node;
    let az = cluster.node(node).map_or_else(|| "?".into(), |n| n.az.to_string());
    let process = alive.get(&node).map_or_else(|| "not running".into(), |p| format!("pid {}", p.pid));
    let (state, segments) = match &probe.status {
        Ok(status) => ("up", status.segments.len().to_string()),
        Err(error) => {
            problems.push(format!("node {node}: quic: {error}"));
            ("down", "-".into())
        }
    };
    let health = match &probe.health {
        None => "-".to_string(),
        Some(Ok(health)) => format!("{} {}", health.code, health.text),
        Some(Err(error)) => {
            problems.push(format!("node {node}: admin: {error}"));
            "unreachable".to_string()
        }
    };
    let addr = probe.target.addr;
    format!("{node:>4}  {az:>2}  {addr:<21}  {process:<13}  {state:<5}  {segments:>8}  {health}\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::messages::{SegmentState, SegmentStatus, Status};
    use protocol::{AzId, Epochs, Lsn, NodeId, PgId, PgRef, VolumeId};

    use super::*;
    use crate::probe::{Health, ProbeError, Target};
    use crate::procs::ProcId;

    #[test]
    fn status_table_lists_every_node_its_segment_count_and_its_problems() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = LocalCluster::load_or_create(dir.path()).unwrap();
        let probes: Vec<Probe> = cluster
            .nodes()
            .iter()
            .map(|n| {
                let target = Target::from(n);
                let segment = SegmentStatus {
                    pg: PgRef { volume_id: VolumeId(0xb0be), pg_id: PgId(3) },
                    epochs: Epochs::INITIAL,
                    scl: Lsn(41),
                    highest_lsn: Lsn(42),
                    floor: Lsn(0),
                    state: SegmentState::Serving,
                    membership: None,
                };
                let status = match n.id {
                    2 => Err(ProbeError::Timeout(Duration::from_secs(2))),
                    _ => Ok(Status { node: NodeId(n.id), az: AzId(n.az), segments: vec![segment] }),
                };
                let health = Some(Ok(Health { code: 200, text: "serving".into() }));
                Probe { target, status, health }
            })
            .collect();
        let alive = PidMap::from([(1, ProcId { pid: 4242, start_ticks: 1 })]);
        let table = status_table(&cluster, &alive, &probes);
        assert!(table.contains("5 of 6 nodes up"), "{table}");
        assert_eq!(
            table.lines().filter(|l| l.contains(" up ") && l.contains("200 serving")).count(),
            5,
            "{table}"
        );
        assert!(table.contains("pid 4242"), "{table}");
        assert_eq!(table.matches("not running").count(), 5, "{table}");
        assert!(table.contains("node 2: quic: no answer within 2s"), "{table}");
    }
}
