//! The admin port: `GET /health` (200 when taking writes, 503 with the reason otherwise) and
//! `GET /metrics` (Prometheus text, `metrics`). It only reads: plain HTTP has no client
//! certificate, so nothing that changes state is served here (`POST` answers 403 and names the
//! QUIC request that does it with an administrator's certificate, `ReplaceNodeAsk`). It runs on
//! its own thread with a small blocking HTTP server, reading a snapshot the node thread
//! refreshes and the figures the node thread records as they happen (atomics), so a slow scraper
//! can never stall the data path.

mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use protocol::messages::SegmentState;
use protocol::{Lsn, PgRef};

use crate::core::{HydrateStats, NodeState, ScrubStats};

pub use metrics::{NodeMetrics, PeerFetch, SEGMENT_STATES};

/// How often the node thread refreshes the snapshot.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);
/// Most segments listed in `/metrics` (the rest are counted, not listed).
pub const METRICS_SEGMENTS_MAX: usize = 10_000;
/// Every metric name starts with it.
const METRICS_PREFIX: &str = "borealis";

/// What the admin port reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub node: u32,
    pub az: u16,
    pub state: Option<NodeState>,
    /// At most `METRICS_SEGMENTS_MAX`.
    pub segments: Vec<SegmentMetrics>,
    pub segments_total: usize,
    /// Every segment (listed or not) by state, in `SEGMENT_STATES` order.
    pub segments_by_state: [u64; SEGMENT_STATES.len()],
    pub journal_bytes_written: u64,
    pub journal_groups_written: u64,
    pub journal_write_flush_us: u64,
    pub credit_bytes: u32,
    pub pages: PageMetrics,
    pub scrub: ScrubStats,
    pub hydrate: HydrateStats,
    /// Scrub faults found and not yet repaired.
    pub scrub_faults_open: u64,
}

/// One segment, for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct SegmentMetrics {
    pub pg: PgRef,
    pub state: SegmentState,
    pub scl: Lsn,
    pub highest_lsn: Lsn,
    pub floor: Lsn,
    /// The PG's newest LSN the segment knows some member holds (`Segment::known_pg_lsn`).
    pub known_pg_lsn: Lsn,
}

/// The page side of a node, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct PageMetrics {
    pub index_bytes: u64,
    pub page_cache_bytes: u64,
    pub page_cache_hits: u64,
    pub page_cache_misses: u64,
    pub records_held_for_floor: u64,
    pub journal_files: u64,
    pub page_store_files: u64,
    pub images_written: u64,
    pub files_recycled: u64,
    /// Reads of stored entries that failed with an I/O error.
    pub read_errors: u64,
}

/// The latest snapshot, shared between the node thread (which replaces it) and the admin
/// thread (which reads it). Only an `Arc` is swapped or cloned under the lock, so neither side
/// ever waits for the other's work.
pub type SharedSnapshot = Arc<Mutex<Arc<Snapshot>>>;

/// What the admin thread serves from: the node thread's latest snapshot, and the figures the
/// node thread records as they happen.
#[derive(Clone, Debug)]
pub struct AdminFeed {
    pub snapshot: SharedSnapshot,
    pub live: Arc<NodeMetrics>,
}

impl AdminFeed {
    /// The latest snapshot.
    fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Serves the admin port on a thread of its own. `data_dir` is the node's data directory, whose
/// file system's free space `/metrics` reports.
pub fn start(addr: SocketAddr, feed: AdminFeed, data_dir: PathBuf) -> Result<(), String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("admin address {addr}: {e}"))?;
    let metrics_type = tiny_http::Header::from_bytes("Content-Type", prometheus_text::CONTENT_TYPE)
        .map_err(|()| "admin port: bad Content-Type header".to_string())?;
    let mut registry = Registry::with_prefix(METRICS_PREFIX);
    registry.register_collector(Box::new(metrics::NodeCollector::new(feed.clone(), data_dir)));
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if *request.method() != tiny_http::Method::Get {
                    tiny_http::Response::from_string(CHANGES_REFUSED).with_status_code(403)
                } else if request.url() == "/metrics" {
                    let mut text = String::new();
                    match prometheus_text::encode(&mut text, &registry) {
                        Ok(()) => tiny_http::Response::from_string(text).with_header(metrics_type.clone()),
                        Err(error) => {
                            tiny_http::Response::from_string(format!("encoding the metrics: {error}\n"))
                                .with_status_code(500)
                        }
                    }
                } else {
                    let (status, body) = respond(request.url(), &feed.latest());
                    tiny_http::Response::from_string(body).with_status_code(status)
                };
                let _ = request.respond(response);
            }
        })
        .map_err(|e| format!("admin thread: {e}"))?;
    Ok(())
}

/// The answer to anything but a `GET`.
const CHANGES_REFUSED: &str =
    "the admin port only reads (/health, /metrics): changes need a client certificate; \
     to have a node replaced: borealis cluster replace-node NODE --via-node ID (docs/operations.md)\n";

/// `GET` of anything but `/metrics`.
fn respond(url: &str, snapshot: &Snapshot) -> (u16, String) {
    match url {
        "/health" => match &snapshot.state {
            Some(NodeState::Serving) => (200, "serving\n".into()),
            Some(NodeState::DiskFull) => (503, "disk full: writes refused, reads served\n".into()),
            Some(NodeState::Failed(reason)) => (503, format!("failed: {reason}\n")),
            None => (503, "starting\n".into()),
        },
        _ => (404, "not found: try /health or /metrics\n".into()),
    }
}
