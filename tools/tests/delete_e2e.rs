//! Deleting a volume for good (`borealis volume delete`), with real processes: six nodes
//! following the cluster map in a real etcd (authentication on). Only the volume's admin may
//! delete it; once deleted, every running node drops its segments and refuses every request
//! naming it, a node that was down drops it as it comes back, a restart brings nothing back, the
//! id is never claimed again, and another volume is untouched.

mod support;

use std::time::{Duration, Instant};

use protocol::VolumeId;
use support::etcd::EtcdCluster;
use tools::local::LocalCluster;

const DELETED: u128 = 0xde1;
const KEPT: u128 = 0xde2;
/// A node that comes back drops a volume deleted while it was down within this.
const DROPPED_WITHIN: Duration = Duration::from_secs(20);

/// How many segments of `volume` node `node` holds; panics if it does not answer (so a zero
/// is never a silent node).
fn holds(local: &LocalCluster, node: u32, volume: u128) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local_node = local.node(node).unwrap();
    let target = tools::probe::Target::from(local_node);
    let status = runtime
        .block_on(async {
            let endpoint = transport::client_endpoint(
                transport::any_addr_for(local_node.addr),
                &local.client_tls(),
                &transport::Tuning::default(),
            )
            .unwrap();
            tools::probe::status(&endpoint, &target, Duration::from_secs(5)).await
        })
        .unwrap_or_else(|e| panic!("node {node} did not answer its status: {e}"));
    status.segments.iter().filter(|s| s.pg.volume_id == VolumeId(volume)).count()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn a_deleted_volume_is_dropped_by_every_node_even_one_that_was_down_and_never_comes_back() {
    let mut cluster = EtcdCluster::start_with_auth(6);
    for name in ["alice", "bob"] {
        let issued = cluster.borealis(&["cert", "issue", "--name", name]);
        assert!(issued.code == Some(0), "{issued:?}");
    }
    let local = LocalCluster::load(&cluster.out).unwrap();
    let (deleted, kept) = (format!("{DELETED:#x}"), format!("{KEPT:#x}"));
    let data: Vec<u8> = (0..8 * 4096u32).map(|i| (i % 253) as u8).collect();
    let file = cluster.root.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    for volume in [&deleted, &kept] {
        let wrote = cluster.borealis(&[
            "volume",
            "--as",
            "alice",
            "write",
            "--volume",
            volume,
            "--file",
            file.to_str().unwrap(),
        ]);
        assert!(wrote.code == Some(0) && wrote.stdout.contains("wrote 8 pages"), "{wrote:?}");
    }
    for node in 1..=6 {
        assert!(holds(&local, node, DELETED) > 0, "node {node} holds the volume before");
    }

    // Node 6 is down while the volume is deleted.
    cluster.nodes[5] = None;

    // Only the volume's admin deletes it, and only when told twice.
    let bob = cluster.borealis(&["volume", "--as", "bob", "delete", "--volume", &deleted, "--yes"]);
    assert!(bob.code != Some(0) && bob.stderr.contains("Unauthorized"), "{bob:?}");
    let unconfirmed = cluster.borealis(&["volume", "--as", "alice", "delete", "--volume", &deleted]);
    assert!(unconfirmed.code != Some(0) && unconfirmed.stderr.contains("--yes"), "{unconfirmed:?}");
    for node in 1..=5 {
        assert!(holds(&local, node, DELETED) > 0, "a refused delete dropped nothing (node {node})");
    }
    let started = Instant::now();
    let gone = cluster.borealis(&["volume", "--as", "alice", "delete", "--volume", &deleted, "--yes"]);
    assert!(gone.code == Some(0), "{gone:?}");
    assert!(gone.stdout.contains("no node holds a segment of it any more (5 of 6 answered"), "{gone:?}");
    println!("the five running nodes dropped the volume {:?} after the delete started", started.elapsed());
    for node in 1..=5 {
        assert_eq!(holds(&local, node, DELETED), 0, "node {node} dropped the volume");
    }

    // Nothing of it is served, and its id is never claimed again; the other volume reads back.
    let read = cluster.borealis(&["volume", "--as", "alice", "read", "--volume", &deleted, "--count", "1"]);
    assert!(read.code != Some(0), "a deleted volume was read: {read:?}");
    let rewrite = cluster.borealis(&[
        "volume",
        "--as",
        "bob",
        "write",
        "--volume",
        &deleted,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(rewrite.code != Some(0) && rewrite.stderr.contains("volume deleted"), "{rewrite:?}");
    let out = cluster.root.path().join("kept.bin");
    let kept_read = cluster.borealis(&[
        "volume",
        "--as",
        "alice",
        "read",
        "--volume",
        &kept,
        "--count",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(kept_read.code == Some(0), "{kept_read:?}");
    assert_eq!(std::fs::read(&out).unwrap(), data, "the other volume is untouched");
    let listed = cluster.borealis(&["volume", "ls"]);
    assert!(
        listed.stdout.contains(&format!("volume {deleted}: ")) && listed.stdout.contains("DELETED"),
        "{listed:?}"
    );

    // Node 6 comes back and drops it from the map it reads at start; node 1 restarts and
    // nothing comes back (its tombstone is on disk).
    cluster.nodes[5] = Some(cluster.start_node(6));
    let took =
        wait_until("node 6 to drop the deleted volume", DROPPED_WITHIN, || holds(&local, 6, DELETED) == 0);
    println!("node 6, down during the delete, dropped the volume {took:?} after it was ready");
    assert!(holds(&local, 6, KEPT) > 0, "node 6 keeps the other volume");
    cluster.nodes[0] = None;
    cluster.nodes[0] = Some(cluster.start_node(1));
    assert_eq!(holds(&local, 1, DELETED), 0, "a restart brings nothing of the volume back");
    assert!(holds(&local, 1, KEPT) > 0);
    // Gossip among the six nodes brings nothing back either.
    std::thread::sleep(Duration::from_secs(3));
    for node in 1..=6 {
        assert_eq!(holds(&local, node, DELETED), 0, "node {node} after a while");
    }
}
