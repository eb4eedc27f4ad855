//! The cluster map in etcd, end to end with a real etcd (Debian's `etcd-server`, started here):
//! `cluster init --hosts --etcd` publishes the map and writes bundles that point at it, six
//! nodes start from them, a writer follows the map, and `cluster add-host` adds a seventh host
//! while everything runs. The running nodes and the writer see it within 2 s, with no restart;
//! the writer then moves the PGs of a node that died onto it, and the new node is rebuilt by its
//! peers (gossip and hydration, which need the old nodes to know it too). Every acknowledged
//! record reads back.

mod heal;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client::{NewRecord, VolumeGeometry, Writer};
use heal::{metric, metrics, wait_for};
use protocol::{Lsn, NodeId, PageId, RecordKind, VolumeId};
use support::etcd::{init, run, EtcdCluster};
use tools::local::LocalCluster;

const VOLUME: VolumeId = VolumeId(0xe7cd);
/// Pages per PG: the pages below spread over four PGs.
const PAGES_PER_PG: u64 = 4;
const PAGES: u64 = 16;
/// What the test promises: a node added to etcd is seen this fast.
const SEEN_WITHIN: Duration = Duration::from_secs(2);
/// The node killed for good (AZ 0); the added host takes its place.
const DEAD: u32 = 1;

fn record(round: u64, page: u64) -> NewRecord {
    NewRecord {
        page: PageId(page),
        kind: RecordKind::Marker,
        payload: format!("round {round} page {page}").into_bytes().into(),
        cpl: true,
        lsn: None,
    }
}

/// Appends one round (a record per page), waits until it is durable, and remembers it.
async fn round(writer: &Writer, round: u64, written: &mut Vec<(Lsn, u64, u64)>) {
    let appended = writer.append((0..PAGES).map(|page| record(round, page)).collect()).await.unwrap();
    appended.durable().await.unwrap();
    for page in 0..PAGES {
        written.push((Lsn(appended.first.0 + page), round, page));
    }
}

#[test]
fn a_host_added_through_etcd_is_seen_by_nodes_and_writer_within_2_s_and_takes_a_dead_node_s_place() {
    let mut cluster = EtcdCluster::start(7);
    let (out, endpoint) = (cluster.out.clone(), cluster.etcd.endpoint());
    assert!(cluster.init.stdout.contains("published to etcd"), "{:?}", cluster.init);
    let bundle = std::fs::read_to_string(out.join("hosts/host-1.test/storaged.toml")).unwrap();
    assert!(bundle.contains(&endpoint) && !bundle.contains("peers"), "bundles point at etcd:\n{bundle}");
    // A second cluster cannot take the same prefix.
    let again = init(&cluster.hosts_file(), &out.with_extension("2"), &endpoint, false);
    let out_arg = out.to_str().unwrap().to_owned();
    assert!(again.code != Some(0) && again.stderr.contains("already"), "{again:?}");
    let hosts = cluster.hosts.clone();
    let mut config = LocalCluster::load(&out).unwrap().client_config().unwrap();
    assert!(config.etcd.is_some(), "clients of the cluster follow etcd");
    config.replace_after = None;
    let geometry = VolumeGeometry::new(VOLUME, 4096, PAGES_PER_PG).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let writer = Writer::open(config, geometry).await.unwrap();
        writer.pin_floor(Some(writer.vdl())).await.unwrap();
        let mut written = Vec::new();
        for r in 0..20 {
            round(&writer, r, &mut written).await;
        }
        // Node 1 dies for good. The writer keeps writing at five of six, and an operator's
        // request to replace it finds no spare in its AZ.
        cluster.nodes[0] = None;
        for r in 20..40 {
            round(&writer, r, &mut written).await;
        }
        let started = writer.replace_node(NodeId(DEAD)).await.unwrap();
        assert!(started.is_empty(), "no spare yet, so no change: {started:?}");

        // The operator adds a seventh host in AZ 0.
        let new = &hosts[6];
        let (address, admin) = (new.address.to_string(), new.admin.to_string());
        let data_dir = new.data_dir.to_str().unwrap();
        let args = ["cluster", "add-host", "--dir", &out_arg, "--name", &new.name, "--address", &address];
        let args: Vec<String> = [&args[..], &["--az", "0", "--admin", &admin, "--data-dir", data_dir]]
            .concat()
            .into_iter()
            .map(String::from)
            .collect();
        let asked = Instant::now();
        let added = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
        .await
        .unwrap();
        let at = Instant::now();
        assert!(added.code == Some(0) && added.stdout.contains("node 7"), "{added:?}");

        // Seen by every running node (its map gauge) and by the writer (it starts moving node
        // 1's PGs to node 7), without a restart.
        let live_admins: Vec<SocketAddr> = hosts[1..6].iter().map(|h| h.admin).collect();
        let mut nodes_saw = None;
        let mut writer_saw = None;
        while (nodes_saw.is_none() || writer_saw.is_none()) && at.elapsed() < 2 * SEEN_WITHIN {
            if nodes_saw.is_none()
                && live_admins.iter().all(|a| metric(&metrics(*a), "borealis_cluster_map_nodes") == 7)
            {
                nodes_saw = Some(at.elapsed());
            }
            let joining = writer.memberships().await.unwrap().values().any(|(_, change)| {
                change.as_ref().is_some_and(|c| c.joining == NodeId(7) && c.leaving == NodeId(DEAD))
            });
            if writer_saw.is_none() && joining {
                writer_saw = Some(at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "node 7 seen by the five running nodes {nodes_saw:?} and by the writer {writer_saw:?} after \
             `cluster add-host` returned ({:?} after it started)",
            at - asked
        );
        assert!(nodes_saw.is_some_and(|t| t < SEEN_WITHIN), "nodes saw node 7 after {nodes_saw:?}");
        assert!(writer_saw.is_some_and(|t| t < SEEN_WITHIN), "the writer saw node 7 after {writer_saw:?}");

        // The new host starts from its bundle; its peers rebuild it and the change completes
        // while appends go on.
        let seventh = cluster.start_node(7);
        cluster.nodes.push(Some(seventh));
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut r = 40;
        loop {
            round(&writer, r, &mut written).await;
            r += 1;
            let memberships = writer.memberships().await.unwrap();
            let done = memberships.values().all(|(sets, change)| {
                change.is_none() && !sets.is_joint() && !sets.current().contains(NodeId(DEAD))
            });
            if done && memberships.values().any(|(sets, _)| sets.current().contains(NodeId(7))) {
                break;
            }
            assert!(Instant::now() < deadline, "node 1's PGs did not move to node 7: {memberships:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("node 1's PGs moved to node 7 after {} rounds; {} records written", r - 40, written.len());
        for (lsn, r, page) in &written {
            let got = writer.read_records(PageId(*page), Lsn(lsn.0 - 1), *lsn).await.unwrap();
            assert_eq!(
                got[0].payload()[..],
                format!("round {r} page {page}").into_bytes()[..],
                "LSN {lsn:?}"
            );
        }
        writer.close().await;
    });
    // Node 7 holds segments and serves, known to its peers by the map alone.
    wait_for("node 7 to report segments", Duration::from_secs(10), || {
        metric(&metrics(hosts[6].admin), "borealis_segments") > 0
    });
    let file_map = LocalCluster::load(&out).unwrap();
    assert!(file_map.node(7).is_some_and(|n| n.spare), "cluster.toml lists the new host as a spare");

    // etcd down, a node says how old its map may be; etcd back, it follows again.
    let stale = |admin: SocketAddr| {
        metrics(admin)
            .lines()
            .find_map(|l| l.strip_prefix("borealis_cluster_map_stale_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("borealis_cluster_map_stale_seconds on /metrics")
    };
    assert_eq!(stale(hosts[1].admin), 0.0, "following etcd");
    cluster.etcd.kill();
    wait_for("node 2 to report its map stale", Duration::from_secs(20), || stale(hosts[1].admin) >= 1.0);
    cluster.etcd.restart().expect("restart etcd");
    wait_for("node 2 to follow etcd again", Duration::from_secs(20), || stale(hosts[1].admin) == 0.0);
}
