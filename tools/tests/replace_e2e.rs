//! Node replacement on real storage nodes (`docs/membership.md`): on a nine-node cluster, a
//! node killed with SIGKILL and its data directory deleted is replaced in every PG it served by
//! a spare of its AZ while appends run, and `cluster status` ends at HEALTH_OK with every
//! acknowledged page readable byte for byte; and a replacement is reversed when the node
//! answers again while its replacement is still being rebuilt.

mod heal;

use std::time::{Duration, Instant};

use client::Writer;
use heal::{
    cluster_status, expected, open_writer_replacing, read_all, segments, start_cluster_of, wait_for, writes,
};
use protocol::messages::SegmentState;
use protocol::{Lsn, NodeId, PageId, PgId, VolumeId};
use tools::cluster::NodeProcess;
use tools::local::{stop_all, LocalCluster};

/// 96 pages of 64 per PG: two PGs.
const PAGES: u64 = 96;
const REPLACE_AFTER: Duration = Duration::from_secs(1);
/// A round must never take this long: appends go on through every step of a change.
const ROUND_MAX: Duration = Duration::from_secs(5);

/// Appends round `round` and waits until it is durable; returns how long that took.
async fn round(writer: &Writer, round: u64) -> Duration {
    let started = Instant::now();
    writer.append(writes(PAGES, round)).await.unwrap().durable().await.unwrap();
    started.elapsed()
}

/// The members the writer counts PG `pg` against, and whether a change is under way.
async fn members(writer: &Writer, pg: u32) -> (Vec<NodeId>, bool) {
    let all = writer.memberships().await.unwrap();
    let (membership, change) = all[&PgId(pg)];
    let mut nodes = membership.nodes();
    nodes.sort();
    (nodes, change.is_some())
}

/// Every page at VDL through the writer, as the last round wrote it.
async fn check_pages(writer: &Writer, rounds: u64) {
    let vdl = writer.vdl();
    for (page, bytes) in expected(PAGES, rounds) {
        let read = writer.read_page(PageId(page), vdl).await.unwrap();
        assert_eq!(read.bytes.to_vec(), bytes, "page {page} through the writer at VDL");
    }
}

/// The writer reports its floor each second: once the nodes' floors move, a rebuild takes
/// page versions, not just records.
async fn wait_for_floor(cluster: &LocalCluster, node: u32, volume: VolumeId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while segments(cluster, node, volume).await.iter().all(|s| s.floor == Lsn::ZERO) {
        assert!(tokio::time::Instant::now() < deadline, "the writer's floor never reached the nodes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends rounds from `rounds` on until PG 0 no longer counts `node` and no change is under
/// way there (within 60 s, else `what` failed); then reads every page back. Returns the next
/// round.
async fn rounds_until_replaced(writer: &Writer, node: u32, mut rounds: u64, what: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        round(writer, rounds).await;
        rounds += 1;
        let (now, changing) = members(writer, 0).await;
        if !changing && !now.contains(&NodeId(node)) {
            break;
        }
        assert!(Instant::now() < deadline, "{what} never completed: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_pages(writer, rounds).await;
    rounds
}

fn process(nodes: &mut [NodeProcess], id: u32) -> &mut NodeProcess {
    nodes.iter_mut().find(|n| n.spec.node_id == id).unwrap()
}

/// A nine-node cluster started with `flags`, and a writer replacing a node unreachable for
/// `replace_after` that wrote three rounds and waited for the nodes' floor: with PG 0's
/// members before any change.
struct Started {
    root: tempfile::TempDir,
    cluster: LocalCluster,
    nodes: Vec<NodeProcess>,
    runtime: tokio::runtime::Runtime,
    writer: Writer,
    before: Vec<NodeId>,
}

fn start(volume: VolumeId, flags: &[&str], replace_after: Option<Duration>) -> Started {
    let root = tempfile::tempdir().unwrap();
    let (cluster, nodes) = start_cluster_of(root.path(), 3, flags);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (writer, before) = runtime.block_on(async {
        let writer = open_writer_replacing(&cluster, volume, replace_after).await;
        for r in 0..3 {
            round(&writer, r).await;
        }
        let (before, _) = members(&writer, 0).await;
        wait_for_floor(&cluster, before[0].0, volume).await;
        (writer, before)
    });
    Started { root, cluster, nodes, runtime, writer, before }
}

#[test]
fn a_dead_node_is_replaced_while_appends_run_and_the_cluster_ends_healthy() {
    let _serial = heal::one_at_a_time();
    const VOLUME: VolumeId = VolumeId(0x7e91);
    let Started { root, cluster, mut nodes, runtime, writer, before } =
        start(VOLUME, &["--apply-max", "2"], Some(REPLACE_AFTER));
    let (dead, mut rounds) = (before[1].0, 3);
    // Lost for good: killed, its data directory deleted, never started again.
    process(&mut nodes, dead).kill9();
    std::fs::remove_dir_all(&cluster.node(dead).unwrap().data_dir).unwrap();

    let after = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut slowest = Duration::ZERO;
        loop {
            slowest = slowest.max(round(&writer, rounds).await);
            rounds += 1;
            let (now0, changing0) = members(&writer, 0).await;
            let (now1, changing1) = members(&writer, 1).await;
            let gone = !now0.contains(&NodeId(dead)) && !now1.contains(&NodeId(dead));
            if gone && !changing0 && !changing1 {
                assert!(slowest < ROUND_MAX, "a round took {slowest:?} during the change");
                break now0;
            }
            assert!(Instant::now() < deadline, "the replacement never completed: {now0:?} {now1:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(after.len(), 6);
    let joined: Vec<NodeId> = after.iter().copied().filter(|n| !before.contains(n)).collect();
    assert_eq!(joined.len(), 1, "one new member in PG 0: {before:?} -> {after:?}");
    let joined = joined[0].0;
    assert_eq!(cluster.node(joined).unwrap().az, cluster.node(dead).unwrap().az, "a spare of the same AZ");

    runtime.block_on(check_pages(&writer, rounds));
    // Every PG back at six healthy members; the dead node no longer holds the cluster at WARN.
    let mut last = String::new();
    wait_for("HEALTH_OK after the replacement", Duration::from_secs(60), || {
        let (code, text) = cluster_status(root.path());
        last = text;
        code == Some(0)
    });
    assert!(last.contains("HEALTH_OK"), "{last}");
    runtime.block_on(writer.close());
    // The last round may have been acknowledged without the new member: gossip brings it.
    let pg0_scl = |node: u32| {
        let all = runtime.block_on(segments(&cluster, node, VOLUME));
        all.into_iter().find(|s| s.pg.pg_id == PgId(0)).map_or(Lsn::ZERO, |s| s.scl)
    };
    let peer = after.iter().find(|n| n.0 != joined).unwrap().0;
    wait_for("the new member to catch up by gossip", Duration::from_secs(30), || {
        pg0_scl(joined) >= pg0_scl(peer)
    });
    assert_eq!(
        runtime.block_on(read_all(&cluster, joined, VOLUME, 64)),
        expected(PAGES, rounds)[..64].to_vec(),
        "PG 0 byte for byte from the new member itself"
    );
    stop_all(&mut nodes);
}

#[test]
fn a_replacement_is_reversed_when_the_node_returns_during_the_rebuild() {
    let _serial = heal::one_at_a_time();
    const VOLUME: VolumeId = VolumeId(0x7e92);
    // A slow rebuild (16 KiB/s: 64 pages of 4 KiB take 16 s), so the node is back before it ends.
    let Started { root, cluster, mut nodes, runtime, writer, before } =
        start(VOLUME, &["--apply-max", "2", "--hydrate-bytes-per-s", "16384"], Some(REPLACE_AFTER));
    let (away, mut rounds) = (before[2].0, 3);
    process(&mut nodes, away).kill9();
    let joining = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            round(&writer, rounds).await;
            rounds += 1;
            let all = writer.memberships().await.unwrap();
            if let (_, Some(change)) = all[&PgId(0)] {
                if change.joint_counted {
                    assert_eq!(change.leaving, NodeId(away));
                    break change.joining;
                }
            }
            assert!(Instant::now() < deadline, "no change started for the node that went away");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Back, with its data, while the joining node is still being rebuilt.
    // (Had the rebuild finished first, the change would complete instead of going back, and
    // the membership checked below would not be the old one.)
    let pg0 = |segments: Vec<protocol::messages::SegmentStatus>| {
        segments.into_iter().find(|s| s.pg.pg_id == PgId(0))
    };
    let peer = runtime.block_on(segments(&cluster, before[0].0, VOLUME));
    let mine = runtime.block_on(segments(&cluster, joining.0, VOLUME));
    let (peer, mine) = (pg0(peer).unwrap(), pg0(mine).unwrap());
    assert!(mine.scl < peer.scl, "not rebuilt yet: {mine:?} (a member: {peer:?})");
    process(&mut nodes, away).restart().unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let slow = round(&writer, rounds).await;
            assert!(slow < ROUND_MAX, "a round took {slow:?} during the reversal");
            rounds += 1;
            let (now, changing) = members(&writer, 0).await;
            if !changing && now == before {
                break;
            }
            assert!(!changing || !now.is_empty());
            assert!(Instant::now() < deadline, "the change was never reversed: {now:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        check_pages(&writer, rounds).await;
        let retired = segments(&cluster, joining.0, VOLUME).await;
        let pg0 = retired.iter().find(|s| s.pg.pg_id == PgId(0)).expect("the joining node's segment");
        assert_eq!(pg0.state, SegmentState::Retired, "the joining node's segment is out: {pg0:?}");
        writer.close().await;
    });
    let mut last = String::new();
    wait_for("HEALTH_OK after the reversal", Duration::from_secs(60), || {
        let (code, text) = cluster_status(root.path());
        last = text;
        code == Some(0)
    });
    stop_all(&mut nodes);
}

#[test]
fn an_operator_replaces_a_live_node_with_the_cli() {
    let _serial = heal::one_at_a_time();
    const VOLUME: VolumeId = VolumeId(0x7e93);
    let root = tempfile::tempdir().unwrap();
    let (cluster, mut nodes) = start_cluster_of(root.path(), 3, &["--apply-max", "2"]);
    let dir = root.path().to_path_buf();
    let borealis = move |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_borealis"))
            .args(["cluster", "--dir"])
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), text)
    };
    let (code, text) = borealis(&["replace-node", "42", "--wait-s", "1"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no node 42"), "{text}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let writer = runtime.block_on(open_writer_replacing(&cluster, VOLUME, None));
    let mut rounds = 0;
    runtime.block_on(async {
        round(&writer, rounds).await;
        rounds += 1;
    });
    let (before, _) = runtime.block_on(members(&writer, 0));
    let target = before[4].0;
    // The CLI blocks until the writer answers: run it beside the writer's runtime.
    let cli = std::thread::spawn({
        let dir = root.path().to_path_buf();
        move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_borealis"))
                .args(["cluster", "--dir"])
                .arg(dir)
                .args(["replace-node", &target.to_string()])
                .output()
                .unwrap();
            (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
        }
    });
    runtime.block_on(rounds_until_replaced(&writer, target, rounds, "the operator's replacement"));
    let (code, text) = cli.join().unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("started replacing node {target} in PG(s) 0")), "{text}");
    wait_for("HEALTH_OK after the operator's replacement", Duration::from_secs(60), || {
        cluster_status(root.path()).0 == Some(0)
    });
    runtime.block_on(writer.close());
    // A closed writer takes no more requests (nothing of it keeps running), while its
    // runtime goes on.
    let next = before[0].0.to_string();
    let (code, text) = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || borealis(&["replace-node", &next, "--wait-s", "3"]))
            .await
            .unwrap()
    });
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no writer took the request"), "{text}");
    stop_all(&mut nodes);
}

#[test]
fn a_writer_that_crashes_mid_change_is_followed_by_one_that_completes_it() {
    let _serial = heal::one_at_a_time();
    const VOLUME: VolumeId = VolumeId(0x7e94);
    let root = tempfile::tempdir().unwrap();
    let (cluster, mut nodes) =
        start_cluster_of(root.path(), 3, &["--apply-max", "2", "--hydrate-bytes-per-s", "16384"]);
    let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (before, leaving, rounds) = first.block_on(async {
        let writer = open_writer_replacing(&cluster, VOLUME, None).await;
        for r in 0..3 {
            round(&writer, r).await;
        }
        let (before, _) = members(&writer, 0).await;
        wait_for_floor(&cluster, before[0].0, VOLUME).await;
        let leaving = before[3];
        assert!(writer.replace_node(leaving).await.unwrap().contains(&PgId(0)));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut rounds = 3;
        loop {
            round(&writer, rounds).await;
            rounds += 1;
            let all = writer.memberships().await.unwrap();
            if all[&PgId(0)].1.is_some_and(|c| c.joint_counted) {
                break;
            }
            assert!(Instant::now() < deadline, "the joint step never counted");
        }
        std::mem::forget(writer);
        (before, leaving, rounds)
    });
    // The writer dies mid-change: its tasks stop where they are, nothing is closed cleanly.
    first.shutdown_background();

    let second = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    second.block_on(async {
        let writer = open_writer_replacing(&cluster, VOLUME, None).await;
        let all = writer.memberships().await.unwrap();
        let (membership, change) = all[&PgId(0)];
        assert!(membership.is_joint(), "recovery found the change under way: {membership:?}");
        assert_eq!(change.map(|c| c.leaving), Some(leaving));
        let mut rounds = rounds;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            round(&writer, rounds).await;
            rounds += 1;
            let (now, changing) = members(&writer, 0).await;
            if !changing && !now.contains(&leaving) {
                assert_eq!(now.iter().filter(|n| !before.contains(n)).count(), 1);
                break;
            }
            assert!(Instant::now() < deadline, "the new writer never completed the change: {now:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        check_pages(&writer, rounds).await;
        writer.close().await;
    });
    stop_all(&mut nodes);
}

/// An HTTP `POST` to a node's admin port: the status line and the whole answer.
fn post_replace(admin: std::net::SocketAddr, node: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2)).unwrap();
    let request =
        format!("POST /replace-node?node={node} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, text)
}

#[test]
fn an_admin_request_to_any_node_reaches_the_writer_and_replaces_the_node() {
    let _serial = heal::one_at_a_time();
    const VOLUME: VolumeId = VolumeId(0x7e95);
    let Started { root: _root, cluster, mut nodes, runtime, writer, before } =
        start(VOLUME, &["--apply-max", "2"], None);
    let target = before[2].0;
    // The admin port only reads: a POST changes nothing and says where changes go.
    let via = before[0].0;
    let (status, text) = post_replace(cluster.node(via).unwrap().admin, &target.to_string());
    assert!(status.contains("403") && text.contains("--via-node"), "{text}");
    // Any node that serves the volume will do (the writer hears it in that node's floor acks).
    let asked = std::process::Command::new(env!("CARGO_BIN_EXE_borealis"))
        .args(["cluster", "--dir"])
        .arg(cluster.dir())
        .args(["replace-node", &target.to_string(), "--via-node", &via.to_string()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&asked.stdout);
    assert!(asked.status.success() && said.contains("took the request"), "{asked:?}");
    runtime.block_on(async {
        rounds_until_replaced(&writer, target, 3, "the replacement the admin request asked for").await;
        writer.close().await;
    });
    stop_all(&mut nodes);
}
