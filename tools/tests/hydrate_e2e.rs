//! Hydration on real storage nodes: a node whose data directory is lost (killed with SIGKILL,
//! directory deleted, started again empty) rebuilds its segments from its peers' page versions
//! and the log tail, reaches their SCL, and serves every page byte for byte.

mod heal;

use std::time::Duration;

use heal::{
    expected, metric, metrics, open_writer, read_all, segments, start_cluster, wait_for, write_rounds,
};
use protocol::VolumeId;
use tools::local::stop_all;

const VOLUME: VolumeId = VolumeId(0x4d7a);
const PAGES: u64 = 32;
const ROUNDS: u64 = 6;
const LOST: u32 = 5;

/// `borealis cluster status --dir DIR`: its output, and its exit status must be 0 (HEALTH_OK).
fn cluster_status(dir: &std::path::Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_borealis"))
        .args(["cluster", "status", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&output.stderr));
    text
}

#[test]
fn a_node_that_lost_its_data_directory_is_rebuilt_from_its_peers() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, mut nodes) = start_cluster(root.path(), &["--apply-max", "2"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let writer = open_writer(&cluster, VOLUME).await;
        write_rounds(&writer, PAGES, ROUNDS).await;
        // The writer reports its floor (its VDL) each second: the nodes' floors move up, so a
        // rebuild takes page versions, not just records.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while segments(&cluster, 1, VOLUME).await[0].floor == protocol::Lsn::ZERO {
            assert!(tokio::time::Instant::now() < deadline, "the writer's floor never reached the nodes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        writer.close().await;
    });
    let peers_scl = runtime.block_on(segments(&cluster, 1, VOLUME))[0].scl;
    let lost = nodes.iter().position(|n| n.spec.node_id == LOST).unwrap();
    nodes[lost].kill9();
    let data_dir = cluster.node(LOST).unwrap().data_dir.clone();
    std::fs::remove_dir_all(&data_dir).unwrap();
    nodes[lost].restart().unwrap();
    assert!(runtime.block_on(segments(&cluster, LOST, VOLUME)).is_empty(), "the node starts empty");

    let admin = cluster.node(LOST).unwrap().admin;
    wait_for("the lost node to reach its peers' SCL", Duration::from_secs(60), || {
        let mine = runtime.block_on(segments(&cluster, LOST, VOLUME));
        mine.first().is_some_and(|s| s.scl >= peers_scl)
    });
    // The admin port's snapshot is refreshed twice a second.
    wait_for("the rebuild to show in the metrics", Duration::from_secs(5), || {
        metric(&metrics(admin), "borealis_hydrations_completed_total") >= 1
    });
    let text = metrics(admin);
    assert_eq!(metric(&text, "borealis_hydrate_pages_total"), PAGES, "every page came from a peer:\n{text}");
    assert_eq!(
        runtime.block_on(read_all(&cluster, LOST, VOLUME, PAGES)),
        expected(PAGES, ROUNDS),
        "every page byte for byte from the rebuilt node"
    );
    let status = cluster_status(root.path());
    assert!(status.contains("HEALTH_OK"), "cluster status after the rebuild:\n{status}");
    nodes[lost].kill9();
    nodes[lost].restart().unwrap();
    assert_eq!(
        runtime.block_on(read_all(&cluster, LOST, VOLUME, PAGES)),
        expected(PAGES, ROUNDS),
        "and after a restart, from what it stored"
    );
    stop_all(&mut nodes);
}
