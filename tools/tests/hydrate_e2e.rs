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

/// The writer reports its floor (its VDL) each second: once the nodes' floors moved up, a
/// rebuild takes page versions, not just records.
async fn wait_for_floor(cluster: &tools::local::LocalCluster) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while segments(cluster, 1, VOLUME).await[0].floor == protocol::Lsn::ZERO {
        assert!(tokio::time::Instant::now() < deadline, "the writer's floor never reached the nodes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills node `LOST` with SIGKILL, deletes its data directory and starts it again, empty.
fn lose_and_restart(cluster: &tools::local::LocalCluster, nodes: &mut [tools::cluster::NodeProcess]) {
    let lost = nodes.iter().position(|n| n.spec.node_id == LOST).unwrap();
    nodes[lost].kill9();
    std::fs::remove_dir_all(&cluster.node(LOST).unwrap().data_dir).unwrap();
    nodes[lost].restart().unwrap();
}

#[test]
fn a_node_that_lost_its_data_directory_is_rebuilt_from_its_peers() {
    let _serial = heal::one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let (cluster, mut nodes) = start_cluster(root.path(), &["--apply-max", "2"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The writer stays open and idle: once the node is back it reopens the node's segment (an
    // epoch bump creates it empty, without the page size), and the rebuild must not wait for
    // it to write.
    let writer = runtime.block_on(async {
        let writer = open_writer(&cluster, VOLUME).await;
        write_rounds(&writer, PAGES, ROUNDS).await;
        wait_for_floor(&cluster).await;
        writer
    });
    let peers_scl = runtime.block_on(segments(&cluster, 1, VOLUME))[0].scl;
    lose_and_restart(&cluster, &mut nodes);
    let lost = nodes.iter().position(|n| n.spec.node_id == LOST).unwrap();
    let at_start = runtime.block_on(segments(&cluster, LOST, VOLUME));
    assert!(at_start.iter().all(|s| s.scl == protocol::Lsn::ZERO), "the node starts empty: {at_start:?}");

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
    runtime.block_on(writer.close());
    stop_all(&mut nodes);
}

#[test]
fn a_node_rebuilt_while_the_writer_keeps_appending_ends_whole_and_nothing_acked_is_lost() {
    let _serial = heal::one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let (cluster, mut nodes) = start_cluster(root.path(), &["--apply-max", "2"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let writer = runtime.block_on(async {
        let writer = open_writer(&cluster, VOLUME).await;
        write_rounds(&writer, PAGES, 3).await;
        wait_for_floor(&cluster).await;
        writer
    });
    lose_and_restart(&cluster, &mut nodes);
    let rounds = 9;
    runtime.block_on(async {
        // Every round is acknowledged durable while the node rebuilds.
        for round in 3..rounds {
            writer.append(heal::writes(PAGES, round)).await.unwrap().durable().await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let peers = segments(&cluster, 1, VOLUME).await;
            let mine = segments(&cluster, LOST, VOLUME).await;
            if mine.first().zip(peers.first()).is_some_and(|(m, p)| m.scl >= p.scl) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the rebuilt node never caught up: {mine:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let vdl = writer.vdl();
        for (page, bytes) in expected(PAGES, rounds) {
            let read = writer.read_page(protocol::PageId(page), vdl).await.unwrap();
            assert_eq!(read.bytes.to_vec(), bytes, "page {page} through the writer at VDL");
        }
        writer.close().await;
    });
    assert_eq!(
        runtime.block_on(read_all(&cluster, LOST, VOLUME, PAGES)),
        expected(PAGES, rounds),
        "every page from the rebuilt node"
    );
    stop_all(&mut nodes);
}

#[test]
fn a_rebuild_interrupted_by_a_crash_of_the_rebuilt_node_resumes_where_it_stopped() {
    let _serial = heal::one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    // 8 KiB/s: two pages a second, and a checkpoint every few pages stored.
    let flags = ["--apply-max", "2", "--hydrate-bytes-per-s", "8192", "--checkpoint-interval-bytes", "16384"];
    let (cluster, mut nodes) = start_cluster(root.path(), &flags);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let writer = open_writer(&cluster, VOLUME).await;
        write_rounds(&writer, PAGES, ROUNDS).await;
        wait_for_floor(&cluster).await;
        writer.close().await;
    });
    let peers_scl = runtime.block_on(segments(&cluster, 1, VOLUME))[0].scl;
    lose_and_restart(&cluster, &mut nodes);
    let admin = cluster.node(LOST).unwrap().admin;
    wait_for("a third of the pages fetched", Duration::from_secs(60), || {
        metric(&metrics(admin), "borealis_hydrate_pages_total") >= PAGES / 3
    });
    let lost = nodes.iter().position(|n| n.spec.node_id == LOST).unwrap();
    let before_crash = metric(&metrics(admin), "borealis_hydrate_pages_total");
    nodes[lost].kill9();
    nodes[lost].restart().unwrap();
    wait_for("the rebuild to resume and finish", Duration::from_secs(90), || {
        let mine = runtime.block_on(segments(&cluster, LOST, VOLUME));
        mine.first().is_some_and(|s| s.scl >= peers_scl)
    });
    wait_for("the metrics to show it", Duration::from_secs(5), || {
        metric(&metrics(admin), "borealis_hydrations_completed_total") >= 1
    });
    let text = metrics(admin);
    assert_eq!(metric(&text, "borealis_hydrations_resumed_total"), 1, "{text}");
    assert_eq!(metric(&text, "borealis_hydrations_started_total"), 0, "not started over:\n{text}");
    let after_restart = metric(&text, "borealis_hydrate_pages_total");
    assert!(
        after_restart < PAGES && after_restart + before_crash >= PAGES,
        "{before_crash} pages before the crash, {after_restart} after: only what was not stored is fetched again"
    );
    assert_eq!(runtime.block_on(read_all(&cluster, LOST, VOLUME, PAGES)), expected(PAGES, ROUNDS));
    stop_all(&mut nodes);
}
