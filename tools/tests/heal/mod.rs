//! Helpers for the healing tests (scrub, hydration): a node's metrics, direct page reads from
//! one node, and waiting with a deadline.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use client::{ClientConfig, NewRecord, VolumeGeometry, Writer};
use protocol::messages::{ReadPage, SegmentStatus};
use protocol::{Message, PageId, PgId, PgRef, RecordKind, VolumeId};
use tools::cluster::{Launcher, NodeProcess};
use tools::local::LocalCluster;
use tools::probe::{self, Target};

pub const PAGE_BYTES: u32 = 4096;

/// Held for a whole test: the tests of one binary run on threads of one process, and a local
/// cluster picks its ports when it is created, so a cluster created while another test's node
/// is down (or not yet listening) could pick that node's port. One test at a time avoids it.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static CLUSTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CLUSTERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The byte every position of `page` holds after write round `round`.
pub fn fill(page: u64, round: u64) -> u8 {
    (page * 16 + round) as u8
}

/// One full-page write of each of `pages` pages for round `round`.
pub fn writes(pages: u64, round: u64) -> Vec<NewRecord> {
    (0..pages)
        .map(|page| NewRecord {
            page: PageId(page),
            kind: RecordKind::PageImage,
            payload: vec![fill(page, round); PAGE_BYTES as usize].into(),
            cpl: true,
            lsn: None,
        })
        .collect()
}

/// What every page holds after `rounds` rounds.
pub fn expected(pages: u64, rounds: u64) -> Vec<(u64, Vec<u8>)> {
    (0..pages).map(|p| (p, vec![fill(p, rounds - 1); PAGE_BYTES as usize])).collect()
}

/// A local six-node cluster under `root`, every node started with `flags` besides its own.
pub fn start_cluster(root: &std::path::Path, flags: &[&str]) -> (LocalCluster, Vec<NodeProcess>) {
    start_cluster_of(root, 2, flags)
}

/// A local cluster of `per_az` nodes in each of three AZs under `root`, every node started
/// with `flags` besides its own.
pub fn start_cluster_of(
    root: &std::path::Path,
    per_az: u32,
    flags: &[&str],
) -> (LocalCluster, Vec<NodeProcess>) {
    let per_az = tools::local::map::NodesPerAz::new(per_az).unwrap();
    let cluster = LocalCluster::load_or_create_with(root, Some(per_az)).unwrap();
    let prefix = std::iter::once("storaged").chain(flags.iter().copied()).map(String::from).collect();
    let launcher = Launcher { exe: env!("CARGO_BIN_EXE_borealis").into(), prefix };
    let nodes = cluster.start_all(&launcher).unwrap();
    (cluster, nodes)
}

/// A writer of `volume` (4 KiB pages, 64 pages per PG) on the local cluster.
pub async fn open_writer(cluster: &LocalCluster, volume: VolumeId) -> Writer {
    open_writer_replacing(cluster, volume, None).await
}

/// A writer as `open_writer`, replacing a node that stays unreachable for `replace_after`.
pub async fn open_writer_replacing(
    cluster: &LocalCluster,
    volume: VolumeId,
    replace_after: Option<Duration>,
) -> Writer {
    let geometry = VolumeGeometry::new(volume, PAGE_BYTES, 64).unwrap();
    let mut config = ClientConfig::new(cluster.placement().unwrap(), cluster.client_tls());
    config.replace_after = replace_after;
    config.requests_dir = Some(cluster.requests_dir());
    Writer::open(config, geometry).await.unwrap()
}

/// `borealis cluster status --dir DIR`: its exit status and output.
pub fn cluster_status(dir: &std::path::Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_borealis"))
        .args(["cluster", "status", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// `rounds` rounds of full-page writes of `pages` pages, each round durable before the next.
pub async fn write_rounds(writer: &Writer, pages: u64, rounds: u64) {
    for round in 0..rounds {
        writer.append(writes(pages, round)).await.unwrap().durable().await.unwrap();
    }
}

/// Prometheus text from a node's admin port (empty if it does not answer).
pub fn metrics(admin: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&admin, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// One unlabelled metric's value (zero if absent).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A client endpoint for requests to `node`.
pub fn endpoint(cluster: &LocalCluster, node: u32) -> quinn::Endpoint {
    let addr = cluster.node(node).unwrap().addr;
    let tls = cluster.client_tls();
    transport::client_endpoint(transport::any_addr_for(addr), &tls, &transport::Tuning::default()).unwrap()
}

/// The node's segments of `volume` (none if it does not answer).
pub async fn segments(cluster: &LocalCluster, node: u32, volume: VolumeId) -> Vec<SegmentStatus> {
    let target = Target::from(cluster.node(node).unwrap());
    match probe::status(&endpoint(cluster, node), &target, Duration::from_secs(2)).await {
        Ok(status) => status.segments.into_iter().filter(|s| s.pg.volume_id == volume).collect(),
        Err(_) => Vec::new(),
    }
}

/// Reads pages `0..pages` of PG 0 of `volume` from `node` itself, at its SCL (or at its floor,
/// where the floor is above: another PG's records moved it, and this segment, caught up,
/// holds nothing of its own between the two).
pub async fn read_all(
    cluster: &LocalCluster,
    node: u32,
    volume: VolumeId,
    pages: u64,
) -> Vec<(u64, Vec<u8>)> {
    let pg = PgRef { volume_id: volume, pg_id: PgId(0) };
    let segment = segments(cluster, node, volume).await.into_iter().find(|s| s.pg == pg).expect("segment");
    let info = cluster.node(node).unwrap();
    let connection =
        transport::connect(&endpoint(cluster, node), info.addr, &info.name, Duration::from_secs(2))
            .await
            .unwrap();
    let mut out = Vec::new();
    for page in 0..pages {
        let read = ReadPage {
            pg,
            epochs: segment.epochs,
            page_id: PageId(page),
            read_lsn: segment.scl.max(segment.floor),
            pg_newest_lsn: segment.scl,
            page_bytes: PAGE_BYTES,
        };
        match transport::request(&connection, &Message::ReadPage(read)).await.unwrap() {
            Message::Page(answer) => out.push((page, answer.bytes.to_vec())),
            other => panic!("page {page} from node {node}: {other:?}"),
        }
    }
    out
}
