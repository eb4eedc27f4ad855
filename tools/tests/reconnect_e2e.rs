//! Reconnection against six real storage nodes: two nodes killed (SIGKILL) and restarted while a
//! new writer opens the volume. The open must not wait out request timeouts on connections to
//! the dead processes, and the writer it returns must hold live connections to the restarted
//! nodes, so its first appends are acknowledged by all six.

use std::time::{Duration, Instant};

use client::{ClientConfig, NewRecord, VolumeGeometry, Writer};
use protocol::messages::Status;
use protocol::placement::{ClusterMap, NodeInfo};
use protocol::{AzId, Epoch, Lsn, Message, NodeId, PageId, PgId, RecordKind, VolumeId};
use tools::cluster::{ensure_key_file, free_udp_port, Launcher, NodeProcess, NodeSpec};
use transport::DevPki;

const VOLUME: VolumeId = VolumeId(0x4ec0);
const PAGES_PER_PG: u64 = 64;
/// The nodes killed and restarted during the open.
const KILLED: [u32; 2] = [5, 6];
/// How long the killed nodes stay down (the user's report: 0.3 s).
const DOWN_FOR: Duration = Duration::from_millis(300);
/// The target: the open completes within this of the killed nodes' return.
const OPEN_AFTER_RETURN_MAX: Duration = Duration::from_secs(1);
/// How long after the killed nodes' return (or after the first appends became durable, if
/// later) every member may take to acknowledge them: the same target as the open's.
const ALL_ACKS_WITHIN: Duration = Duration::from_secs(1);

/// The tests here measure time on a shared machine: they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Cluster {
    _root: tempfile::TempDir,
    pki: DevPki,
    map: ClusterMap,
    nodes: Vec<NodeProcess>,
}

impl Cluster {
    fn start() -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=6).map(|i| format!("node-{i}")).chain(["client".to_string()]).collect();
        let pki = transport::ensure_dev_pki(
            &root.path().join("pki"),
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .unwrap();
        ensure_key_file(&root.path().join("kek")).unwrap();
        let launcher =
            Launcher { exe: env!("CARGO_BIN_EXE_borealis").into(), prefix: vec!["storaged".into()] };
        let mut infos = Vec::new();
        let mut nodes = Vec::new();
        for id in 1..=6u32 {
            let spec = NodeSpec {
                node_id: id,
                az: ((id - 1) / 2) as u16,
                listen: ([127, 0, 0, 1], free_udp_port().unwrap()).into(),
                admin: None,
                data_dir: root.path().join(format!("node-{id}")),
                tls: pki.files_for(&format!("node-{id}")),
                key_file: root.path().join("kek"),
                extra: vec!["--journal-file-bytes".into(), (64u64 << 20).to_string()],
            };
            infos.push(NodeInfo {
                id: NodeId(id),
                az: AzId(spec.az),
                addr: spec.listen,
                name: format!("node-{id}"),
                spare: false,
            });
            let log = root.path().join(format!("node-{id}.log"));
            nodes.push(NodeProcess::start(&launcher, spec, log).unwrap());
        }
        Cluster { _root: root, pki, map: ClusterMap::new(infos).unwrap(), nodes }
    }

    /// The user's settings: a 3 s request timeout.
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.map.clone(), self.pki.files_for("client"));
        config.request_timeout = Duration::from_secs(3);
        config.append_timeout = Duration::from_secs(5);
        config
    }
}

fn geometry() -> VolumeGeometry {
    VolumeGeometry::new(VOLUME, 4096, PAGES_PER_PG).unwrap()
}

fn records(first: u64, count: u64, payload_bytes: usize, cpl: bool) -> Vec<NewRecord> {
    (first..first + count)
        .map(|i| NewRecord {
            page: PageId(i % (4 * PAGES_PER_PG)),
            kind: RecordKind::Marker,
            payload: vec![(i % 251) as u8; payload_bytes].into(),
            cpl,
            lsn: None,
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A first writer leaves durable records and then, without a consistency point, 1 MiB more
/// that the next writer's recovery must read from every segment (and truncate): an open that
/// takes long enough for nodes to die under it (more would make the reading itself, not the
/// reconnection, what the test measures on a loaded machine).
fn leave_a_crashed_writer(cluster: &Cluster) {
    runtime().block_on(async {
        let writer = Writer::open(cluster.config(), geometry()).await.unwrap();
        for group in 0..10 {
            writer.append(records(group * 8, 8, 256, true)).await.unwrap().durable().await.unwrap();
        }
        for chunk in 0..8 {
            writer.append(records(1000 + chunk * 32, 32, 4000, false)).await.unwrap();
        }
        // Let the unfinished group reach the disks, then crash (no close, no final VDL).
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(writer);
    });
}

/// A status connection of the test's own to one node.
struct StatusProbe {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
}

impl StatusProbe {
    async fn connect(cluster: &Cluster, node: NodeId) -> StatusProbe {
        let info = cluster.map.node(node).unwrap().clone();
        let files = cluster.pki.files_for("client");
        let endpoint =
            transport::client_endpoint(transport::any_addr_for(info.addr), &files, &Default::default())
                .unwrap();
        let connection =
            transport::connect(&endpoint, info.addr, &info.name, Duration::from_secs(5)).await.unwrap();
        StatusProbe { _endpoint: endpoint, connection }
    }

    async fn status(&self) -> Status {
        match transport::request(&self.connection, &Message::StatusRequest).await.unwrap() {
            Message::Status(status) => status,
            other => panic!("{other:?}"),
        }
    }
}

fn volume_epoch(status: &Status) -> Epoch {
    status
        .segments
        .iter()
        .filter(|s| s.pg.volume_id == VOLUME)
        .map(|s| s.epochs.volume)
        .max()
        .unwrap_or(Epoch(0))
}

/// Kills the nodes of `KILLED` (SIGKILL) off the runtime thread; returns them.
async fn kill(mut nodes: Vec<NodeProcess>) -> Vec<NodeProcess> {
    tokio::task::spawn_blocking(move || {
        nodes.iter_mut().for_each(NodeProcess::kill9);
        nodes
    })
    .await
    .unwrap()
}

/// Restarts them (each waits for its ready line) off the runtime thread.
async fn restart(mut nodes: Vec<NodeProcess>) -> Vec<NodeProcess> {
    tokio::task::spawn_blocking(move || {
        nodes.iter_mut().for_each(|n| n.restart().unwrap());
        nodes
    })
    .await
    .unwrap()
}

/// Waits until every member of every PG the records touched reported an SCL at or above the
/// PG's last record among them; returns the members that did not in time.
async fn members_behind(
    writer: &Writer,
    appended: &[NewRecord],
    first: Lsn,
    deadline: Instant,
) -> Vec<(PgId, NodeId, Option<Lsn>)> {
    let mut newest: std::collections::BTreeMap<PgId, Lsn> = Default::default();
    for (i, record) in (0..).zip(appended) {
        newest.insert(geometry().pg_of(record.page), Lsn(first.0 + i));
    }
    loop {
        let scls = writer.segment_scls().await.unwrap();
        let behind: Vec<(PgId, NodeId, Option<Lsn>)> = newest
            .iter()
            .flat_map(|(pg, need)| {
                scls[pg]
                    .iter()
                    .filter(|(_, scl)| scl.is_none_or(|s| s < *need))
                    .map(|(n, scl)| (*pg, *n, *scl))
            })
            .collect();
        if behind.is_empty() || Instant::now() > deadline {
            return behind;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn two_nodes_killed_and_restarted_during_open_are_redialled_and_acknowledge_the_first_appends() {
    let _alone = one_at_a_time();
    let mut cluster = Cluster::start();
    leave_a_crashed_writer(&cluster);
    let config = cluster.config();
    let victims: Vec<NodeProcess> =
        KILLED.iter().rev().map(|id| cluster.nodes.remove(*id as usize - 1)).collect();
    let (open_took_after_return, behind) = runtime().block_on(async {
        let probe = StatusProbe::connect(&cluster, NodeId(1)).await;
        let old_epoch = volume_epoch(&probe.status().await);
        let started = Instant::now();
        let open = tokio::spawn(async move {
            let writer = Writer::open(config, geometry()).await;
            (writer, Instant::now())
        });
        // The writer has connected to every node once its epoch bump reaches node 1.
        while volume_epoch(&probe.status().await) == old_epoch {
            assert!(started.elapsed() < Duration::from_secs(10), "the open never bumped the epoch");
        }
        let victims = kill(victims).await;
        assert!(!open.is_finished(), "the open finished before the kill: the test proves nothing");
        tokio::time::sleep(DOWN_FOR).await;
        let victims = restart(victims).await;
        let returned = Instant::now();
        let (writer, opened) = open.await.unwrap();
        let writer = writer.unwrap();
        let after_return = opened.saturating_duration_since(returned);
        eprintln!(
            "open took {:?} in all; the killed nodes returned {:?} after it began, the open ended {:?} after that",
            opened - started,
            returned - started,
            after_return
        );
        let first_appends = records(5000, 16, 256, true);
        let appended = writer.append(first_appends.clone()).await.unwrap();
        appended.durable().await.unwrap();
        let deadline = returned.max(Instant::now()) + ALL_ACKS_WITHIN;
        let behind = members_behind(&writer, &first_appends, appended.first, deadline).await;
        eprintln!("every member acknowledged the first appends {:?} after the return", Instant::now() - returned);
        writer.close().await;
        cluster.nodes.extend(victims);
        (after_return, behind)
    });
    assert!(
        open_took_after_return <= OPEN_AFTER_RETURN_MAX,
        "the open completed {open_took_after_return:?} after the killed nodes returned"
    );
    assert!(behind.is_empty(), "members that did not acknowledge the first appends: {behind:?}");
}

/// The target again: with a read quorum of every PG reachable from the start, the open
/// completes within this, however long dialling the missing node would take.
const OPEN_WITH_A_NODE_DOWN_MAX: Duration = Duration::from_secs(1);

#[test]
fn a_node_down_when_the_writer_opens_does_not_hold_the_open_for_the_connect_timeout() {
    let _alone = one_at_a_time();
    let mut cluster = Cluster::start();
    cluster.nodes[5].kill9();
    let took = runtime().block_on(async {
        let started = Instant::now();
        let writer = Writer::open(cluster.config(), geometry()).await.unwrap();
        let took = started.elapsed();
        eprintln!("open with node 6 down took {took:?}");
        writer.append(records(0, 8, 256, true)).await.unwrap().durable().await.unwrap();
        writer.close().await;
        took
    });
    assert!(took <= OPEN_WITH_A_NODE_DOWN_MAX, "the open took {took:?} with one node down");
}
