//! Gossip between real storage nodes: a node that was down while records were written, with
//! no writer left to repair it, catches up from its peers by itself.

use std::time::{Duration, Instant};

use client::{ClientConfig, NewRecord, VolumeGeometry, Writer};
use protocol::messages::{ErrorCode, GossipSummary, Status};
use protocol::{Lsn, Message, PageId, PgRef, RecordKind, VolumeId};
use tools::cluster::Launcher;
use tools::local::{stop_all, LocalCluster};
use tools::probe::{self, Target};

const VOLUME: VolumeId = VolumeId(0x6055);

fn records(first: u64, count: u64) -> Vec<NewRecord> {
    (first..first + count)
        .map(|i| NewRecord {
            page: PageId(i % 128),
            kind: RecordKind::Marker,
            payload: format!("row {i}\n").repeat(16).into(),
            cpl: true,
            lsn: None,
        })
        .collect()
}

async fn status(cluster: &LocalCluster, id: u32) -> Option<Status> {
    let target = Target::from(cluster.node(id)?);
    let tls = cluster.client_tls();
    let tuning = transport::Tuning::default();
    let endpoint = transport::client_endpoint(transport::any_addr_for(target.addr), &tls, &tuning).ok()?;
    probe::status(&endpoint, &target, Duration::from_secs(2)).await.ok()
}

/// Each of the volume's segments on node `id`, with its SCL.
async fn scls(cluster: &LocalCluster, id: u32) -> Vec<(PgRef, Lsn)> {
    let status = status(cluster, id).await.unwrap_or(Status {
        node: protocol::NodeId(id),
        az: protocol::AzId(0),
        segments: Vec::new(),
    });
    status.segments.iter().filter(|s| s.pg.volume_id == VOLUME).map(|s| (s.pg, s.scl)).collect()
}

#[test]
fn a_node_that_missed_records_catches_up_from_its_peers_without_a_writer() {
    let root = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::load_or_create(root.path()).unwrap();
    let launcher = Launcher { exe: env!("CARGO_BIN_EXE_borealis").into(), prefix: vec!["storaged".into()] };
    let mut nodes = cluster.start_all(&launcher).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let geometry = VolumeGeometry::new(VOLUME, 4096, 64).unwrap();
    let config = ClientConfig::new(cluster.placement().unwrap(), cluster.client_tls());
    let lagging = 6;

    runtime.block_on(async {
        let writer = Writer::open(config, geometry).await.unwrap();
        // Every node gets its segments (and the first records).
        writer.append(records(0, 20)).await.unwrap().durable().await.unwrap();
        nodes[lagging as usize - 1].kill9();
        for batch in 0..10 {
            writer.append(records(20 + batch * 20, 20)).await.unwrap().durable().await.unwrap();
        }
        // No writer is left to repair the lagging node.
        writer.close().await;
    });
    let healthy: Vec<(PgRef, Lsn)> = runtime.block_on(scls(&cluster, 1));
    assert!(!healthy.is_empty() && healthy.iter().all(|(_, scl)| *scl > Lsn(20)), "{healthy:?}");

    nodes[lagging as usize - 1].restart().unwrap();
    let behind = runtime.block_on(scls(&cluster, lagging));
    assert!(!behind.is_empty(), "the node kept its segments");
    let deadline = Instant::now() + Duration::from_secs(30);
    let caught_up = loop {
        let mut best = std::collections::BTreeMap::new();
        for id in (1..=6).filter(|id| *id != lagging) {
            for (pg, scl) in runtime.block_on(scls(&cluster, id)) {
                let entry = best.entry(pg).or_insert(Lsn::ZERO);
                *entry = (*entry).max(scl);
            }
        }
        let mine = runtime.block_on(scls(&cluster, lagging));
        if !mine.is_empty() && mine.iter().all(|(pg, scl)| best.get(pg).is_some_and(|b| scl == b)) {
            break Some(mine);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop_all(&mut nodes);
    let caught_up = caught_up.expect("the lagging node's segments reached their peers' SCL by gossip");
    assert!(
        caught_up.iter().zip(&behind).any(|((_, now), (_, before))| now > before),
        "{behind:?} -> {caught_up:?}"
    );
}

#[test]
fn a_client_certificate_cannot_speak_for_a_node_in_gossip() {
    // Else a client could claim a node holds everything, and its peers would drop records
    // that node still lacks.
    let root = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::load_or_create(root.path()).unwrap();
    let launcher = Launcher { exe: env!("CARGO_BIN_EXE_borealis").into(), prefix: vec!["storaged".into()] };
    let mut nodes = cluster.start_all(&launcher).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let forged = runtime.block_on(async {
        let node = cluster.node(1).unwrap();
        let tls = cluster.client_tls();
        let tuning = transport::Tuning::default();
        let endpoint = transport::client_endpoint(transport::any_addr_for(node.addr), &tls, &tuning).unwrap();
        let connection =
            transport::connect(&endpoint, node.addr, &node.name, Duration::from_secs(2)).await.unwrap();
        let summary = GossipSummary {
            pg: PgRef { volume_id: VOLUME, pg_id: protocol::PgId(0) },
            node: protocol::NodeId(2),
            epochs: protocol::Epochs::INITIAL,
            scl: Lsn(u64::MAX / 2),
            highest_lsn: Lsn(u64::MAX / 2),
            folded_through: Lsn::ZERO,
            floor: Lsn::ZERO,
            open: true,
            holes: Vec::new(),
        };
        transport::request(&connection, &Message::GossipSummary(summary)).await.unwrap()
    });
    stop_all(&mut nodes);
    assert!(matches!(&forged, Message::Error(e) if e.code == ErrorCode::Unauthorized), "{forged:?}");
}
