//! `borealis-bench repair`: how long a node that lost everything takes to be whole again.
//!
//! On a local six-node cluster (every node holds a segment of every PG) a writer fills a
//! volume with `bytes` of full-page writes and lets the nodes' floors follow its VDL (so they
//! fold their journals into page images). Then one node is killed with SIGKILL, its data
//! directory is deleted, and it is started again empty. It rebuilds each segment from a peer
//! (hydration: page versions, then the log tail by gossip) while a foreground writer keeps
//! committing one small record at a time. The repair time runs from the restart until, for
//! every PG, the node's segment serves and its SCL reaches what a write quorum of the other
//! members holds at that moment. The commit latency p99 before and during the repair is
//! measured by the same foreground loop.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{ClientConfig, NewRecord, VolumeGeometry, Writer};
use hdrhistogram::Histogram;
use protocol::messages::{SegmentState, Status};
use protocol::{Lsn, PageId, PgRef, RecordKind, VolumeId};
use tools::cluster::Launcher;
use tools::local::{stop_all, LocalCluster};
use tools::probe::{self, Target};

const VOLUME: VolumeId = VolumeId(0x4E9A);
/// Pages per PG: 16 Ki pages (256 MiB of 16 KiB pages), so a GiB spans four PGs.
const PAGES_PER_PG: u64 = 16 * 1024;
/// Page writes per append during the fill.
const FILL_BATCH_RECORDS: usize = 32;
/// Fill appends outstanding (appended, not yet durable).
const FILL_IN_FLIGHT: usize = 8;
/// The node that loses its data.
const LOST_NODE: u32 = 6;
/// How often the repair's progress is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// A repair not finished within this long is reported as failed.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest commit latency recorded, in microseconds.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Time for the writer's floor reports (each second) to reach the nodes after the fill.
const FLOOR_SETTLE: Duration = Duration::from_secs(3);

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct RepairLoad {
    /// Page bytes written to the volume (each node holds all of it).
    pub bytes: u64,
    pub page_bytes: u32,
    /// Foreground commits measured before the node is lost.
    pub before: Duration,
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct RepairResult {
    /// Bytes in the lost node's data directory when it was killed.
    pub node_bytes: u64,
    pub fill: Duration,
    pub repair: Duration,
    /// Page bytes the node fetched by hydration (from its admin port).
    pub hydrated_bytes: u64,
    pub p99_before: Duration,
    pub p99_during: Duration,
    pub commits_before: u64,
    pub commits_during: u64,
}

/// Runs the whole measurement on a fresh cluster under `root`.
pub fn run(root: &Path, load: RepairLoad) -> Result<RepairResult, String> {
    let cluster = LocalCluster::load_or_create(&root.join("cluster")).map_err(|e| e.to_string())?;
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let mut nodes = cluster.start_all(&launcher).map_err(|e| e.to_string())?;
    let result = measure(&cluster, &mut nodes, load);
    stop_all(&mut nodes);
    result
}

fn measure(
    cluster: &LocalCluster,
    nodes: &mut [tools::cluster::NodeProcess],
    load: RepairLoad,
) -> Result<RepairResult, String> {
    let runtime = crate::current_thread()?;
    let config = ClientConfig::new(cluster.placement().map_err(|e| e.to_string())?, cluster.client_tls());
    let geometry = VolumeGeometry::new(VOLUME, load.page_bytes, PAGES_PER_PG).map_err(|e| e.to_string())?;
    let writer = runtime.block_on(Writer::open(config, geometry)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    runtime.block_on(fill(&writer, load))?;
    let fill_time = started.elapsed();
    eprintln!("borealis-bench: filled {} MiB in {:.1} s", load.bytes >> 20, fill_time.as_secs_f64());
    runtime.block_on(async { tokio::time::sleep(FLOOR_SETTLE).await });
    let (p99_before, commits_before) = runtime.block_on(commits_for(&writer, load.before))?;

    let lost = cluster.node(LOST_NODE).ok_or("no node 6 in the local cluster")?.clone();
    let index = nodes.iter().position(|n| n.spec.node_id == LOST_NODE).ok_or("node 6 not started")?;
    let node_bytes = dir_bytes(&lost.data_dir);
    nodes[index].kill9();
    std::fs::remove_dir_all(&lost.data_dir)
        .map_err(|e| format!("wiping {}: {e}", lost.data_dir.display()))?;
    eprintln!(
        "borealis-bench: node {LOST_NODE} killed and its {} MiB deleted; restarting it empty",
        node_bytes >> 20
    );
    let restarted = Instant::now();
    nodes[index].restart().map_err(|e| e.to_string())?;
    let done = Cell::new(None);
    let (during, watched) = runtime.block_on(async {
        tokio::join!(commits_until(&writer, &done), watch_repair(cluster, restarted, &done))
    });
    let repair = watched?;
    let (p99_during, commits_during) = during?;
    let hydrated_bytes = hydrated_bytes(lost.admin);
    runtime.block_on(writer.close());
    Ok(RepairResult {
        node_bytes,
        fill: fill_time,
        repair,
        hydrated_bytes,
        p99_before,
        p99_during,
        commits_before,
        commits_during,
    })
}

/// Writes `load.bytes` of whole pages, each page once.
async fn fill(writer: &Writer, load: RepairLoad) -> Result<(), String> {
    let pages = (load.bytes / u64::from(load.page_bytes)).max(1);
    let templates: Vec<Bytes> = (0..16u8).map(|b| Bytes::from(vec![b; load.page_bytes as usize])).collect();
    let mut outstanding = std::collections::VecDeque::new();
    let mut page = 0;
    while page < pages {
        let records: Vec<NewRecord> = (page..(page + FILL_BATCH_RECORDS as u64).min(pages))
            .map(|p| NewRecord {
                page: PageId(p),
                kind: RecordKind::PageImage,
                payload: templates[(p % 16) as usize].clone(),
                cpl: true,
                lsn: None,
            })
            .collect();
        page += records.len() as u64;
        outstanding.push_back(writer.append(records).await.map_err(|e| e.to_string())?);
        if outstanding.len() >= FILL_IN_FLIGHT {
            let oldest = outstanding.pop_front().expect("non-empty");
            oldest.durable().await.map_err(|e| e.to_string())?;
        }
    }
    for handle in outstanding {
        handle.durable().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())
}

/// One small commit, timed.
async fn commit(writer: &Writer, i: u64) -> Result<Duration, String> {
    let record = NewRecord {
        page: PageId(i % PAGES_PER_PG),
        kind: RecordKind::Marker,
        payload: Bytes::from_static(&[0x42; 128]),
        cpl: true,
        lsn: None,
    };
    let started = Instant::now();
    writer
        .append(vec![record])
        .await
        .map_err(|e| e.to_string())?
        .durable()
        .await
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

fn p99(histogram: &Histogram<u64>) -> Duration {
    Duration::from_micros(histogram.value_at_quantile(0.99))
}

/// Commits one record at a time for `duration`: the p99 and the count.
async fn commits_for(writer: &Writer, duration: Duration) -> Result<(Duration, u64), String> {
    let mut latency = histogram()?;
    let started = Instant::now();
    while started.elapsed() < duration {
        let took = commit(writer, latency.len()).await?;
        latency.record(took.as_micros() as u64).map_err(|e| e.to_string())?;
    }
    Ok((p99(&latency), latency.len()))
}

/// Commits one record at a time until `done` is set.
async fn commits_until(writer: &Writer, done: &Cell<Option<Duration>>) -> Result<(Duration, u64), String> {
    let mut latency = histogram()?;
    while done.get().is_none() {
        let took = commit(writer, latency.len()).await?;
        latency.record(took.as_micros() as u64).map_err(|e| e.to_string())?;
    }
    Ok((p99(&latency), latency.len()))
}

/// Probes the cluster until the lost node is whole again; sets `done` (and returns) the time
/// since `restarted`.
async fn watch_repair(
    cluster: &LocalCluster,
    restarted: Instant,
    done: &Cell<Option<Duration>>,
) -> Result<Duration, String> {
    let tls = cluster.client_tls();
    let any = cluster.nodes()[0].addr;
    let endpoint =
        transport::client_endpoint(transport::any_addr_for(any), &tls, &transport::Tuning::default())
            .map_err(|e| e.to_string())?;
    let result = loop {
        if restarted.elapsed() > REPAIR_TIMEOUT {
            break Err(format!("node {LOST_NODE} was not whole after {REPAIR_TIMEOUT:?}"));
        }
        let mut statuses = Vec::new();
        for node in cluster.nodes() {
            let status = probe::status(&endpoint, &Target::from(node), Duration::from_secs(2)).await;
            statuses.push(status.ok());
        }
        if is_whole(&statuses, LOST_NODE) {
            break Ok(restarted.elapsed());
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    };
    done.set(Some(result.clone().unwrap_or_default()));
    result
}

/// True if `lost` serves a segment of every PG of the volume the others hold, each at least as
/// complete as a write quorum of its members is.
fn is_whole(statuses: &[Option<Status>], lost: u32) -> bool {
    let Some(mine) = statuses.iter().flatten().find(|s| s.node.0 == lost) else { return false };
    let mut pgs: Vec<PgRef> =
        statuses.iter().flatten().flat_map(|s| s.segments.iter().map(|g| g.pg)).collect();
    pgs.retain(|pg| pg.volume_id == VOLUME);
    pgs.sort_by_key(|pg| pg.pg_id);
    pgs.dedup();
    !pgs.is_empty()
        && pgs.iter().all(|pg| {
            let Some(own) = mine.segments.iter().find(|g| g.pg == *pg) else { return false };
            let mut others: Vec<Lsn> = statuses
                .iter()
                .flatten()
                .filter(|s| s.node.0 != lost)
                .flat_map(|s| s.segments.iter().filter(|g| g.pg == *pg).map(|g| g.scl))
                .collect();
            others.sort_unstable_by(|a, b| b.cmp(a));
            let quorum_point = others.get(protocol::quorum::WRITE_QUORUM - 1).copied().unwrap_or(Lsn::ZERO);
            own.state == SegmentState::Serving && own.scl >= quorum_point
        })
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `borealis_hydrate_bytes_total` from a node's admin port (0 if it does not answer).
fn hydrated_bytes(admin: std::net::SocketAddr) -> u64 {
    crate::metric(admin, "borealis_hydrate_bytes_total").map_or(0, |v| v as u64)
}
