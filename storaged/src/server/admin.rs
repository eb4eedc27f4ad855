//! The admin port: `GET /health` (200 when taking writes, 503 with the reason otherwise),
//! `GET /metrics` (Prometheus text), and `POST /replace-node?node=ID` (an operator asks the
//! volume's writer to replace node ID: this node passes it on in its floor acks for a minute,
//! `docs/membership.md`). It runs on its own thread with a small blocking HTTP server, reading a
//! snapshot the node thread refreshes and leaving requests for it, so a slow scraper can never
//! stall the data path.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::messages::SegmentStatus;
use protocol::NodeId;

use crate::core::{HydrateStats, NodeState, ScrubStats};

/// How often the node thread refreshes the snapshot.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);
/// Most segments listed in `/metrics` (the rest are counted, not listed).
pub const METRICS_SEGMENTS_MAX: usize = 10_000;

/// What the admin port reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub node: u32,
    pub az: u16,
    pub state: Option<NodeState>,
    pub segments: Vec<SegmentStatus>,
    pub segments_total: usize,
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

/// The snapshot shared between the node thread (writer) and the admin thread (reader).
pub type SharedSnapshot = Arc<Mutex<Snapshot>>;
/// Replacement requests the admin thread received, for the node thread to take.
pub type ReplaceAsks = Arc<Mutex<Vec<NodeId>>>;

/// Serves the admin port on a thread of its own.
pub fn start(addr: SocketAddr, snapshot: SharedSnapshot, asks: ReplaceAsks) -> Result<(), String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("admin address {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, body) = if *request.method() == tiny_http::Method::Post {
                    ask_replacement(request.url(), &asks)
                } else {
                    respond(request.url(), &snapshot.lock().expect("snapshot lock").clone())
                };
                let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(status));
            }
        })
        .map_err(|e| format!("admin thread: {e}"))?;
    Ok(())
}

/// `POST /replace-node?node=ID`: 202 once queued for the node thread, 400 for a bad id.
fn ask_replacement(url: &str, asks: &ReplaceAsks) -> (u16, String) {
    let Some(query) = url.strip_prefix("/replace-node?node=") else {
        return (404, "not found: POST /replace-node?node=ID\n".into());
    };
    match query.parse::<u32>() {
        Ok(id) if id > 0 => {
            asks.lock().expect("asks lock").push(NodeId(id));
            let text = format!(
                "asked: the volume's writer replaces node {id} in every PG it serves at its next floor report \
                 (within seconds), by a spare of its AZ; follow it with `borealis cluster status`\n"
            );
            (202, text)
        }
        _ => (
            400,
            format!("bad node id {query:?}: POST /replace-node?node=ID with ID a node of the cluster map\n"),
        ),
    }
}

fn respond(url: &str, snapshot: &Snapshot) -> (u16, String) {
    match url {
        "/health" => match &snapshot.state {
            Some(NodeState::Serving) => (200, "serving\n".into()),
            Some(NodeState::DiskFull) => (503, "disk full: writes refused, reads served\n".into()),
            Some(NodeState::Failed(reason)) => (503, format!("failed: {reason}\n")),
            None => (503, "starting\n".into()),
        },
        "/metrics" => (200, metrics(snapshot)),
        _ => (404, "not found: try /health, /metrics or POST /replace-node?node=ID\n".into()),
    }
}

fn metrics(s: &Snapshot) -> String {
    let mut out = String::new();
    let state = match &s.state {
        Some(NodeState::Serving) => "serving",
        Some(NodeState::DiskFull) => "disk_full",
        Some(NodeState::Failed(_)) => "failed",
        None => "starting",
    };
    let _ = writeln!(out, "# HELP borealis_node_info This node's identity and state.");
    let _ = writeln!(out, "# TYPE borealis_node_info gauge");
    let _ = writeln!(out, "borealis_node_info{{node=\"{}\",az=\"{}\",state=\"{state}\"}} 1", s.node, s.az);
    gauge(&mut out, "borealis_segments", "Segments held.", s.segments_total as u64);
    gauge(
        &mut out,
        "borealis_ingest_credit_bytes",
        "Record bytes this node would take now.",
        u64::from(s.credit_bytes),
    );
    counter(
        &mut out,
        "borealis_journal_bytes_written_total",
        "Journal bytes written and flushed.",
        s.journal_bytes_written,
    );
    counter(
        &mut out,
        "borealis_journal_groups_written_total",
        "Group commits (write + flush).",
        s.journal_groups_written,
    );
    let _ = writeln!(
        out,
        "# HELP borealis_journal_write_flush_seconds_total Time from each group's write to its flush's completion, summed.\n\
         # TYPE borealis_journal_write_flush_seconds_total counter\n\
         borealis_journal_write_flush_seconds_total {}",
        s.journal_write_flush_us as f64 / 1e6
    );
    let p = &s.pages;
    let page_gauges = [
        ("borealis_index_bytes", "Estimated bytes of the record and page indexes.", p.index_bytes),
        ("borealis_page_cache_bytes", "Bytes of built page versions cached.", p.page_cache_bytes),
        (
            "borealis_records_held_for_floor",
            "Records in the complete chain kept only because the GC floor is below them.",
            p.records_held_for_floor,
        ),
        ("borealis_journal_files", "Journal files on disk.", p.journal_files),
        ("borealis_page_store_files", "Page store files on disk.", p.page_store_files),
    ];
    for (name, help, value) in page_gauges {
        gauge(&mut out, name, help, value);
    }
    let page_counters = [
        ("borealis_page_cache_hits_total", "Page reads served from the cache.", p.page_cache_hits),
        ("borealis_page_cache_misses_total", "Page reads that built their version.", p.page_cache_misses),
        ("borealis_images_written_total", "Page images the coalescer stored.", p.images_written),
        ("borealis_files_recycled_total", "Journal and page store files deleted.", p.files_recycled),
        (
            "borealis_stored_read_errors_total",
            "Reads of stored journal entries and page images (page reads, coalescer, gossip, hydration, \
             scrub) that failed with an I/O error; the records stay claimed.",
            p.read_errors,
        ),
    ];
    for (name, help, value) in page_counters {
        counter(&mut out, name, help, value);
    }
    scrub_metrics(&mut out, &s.scrub, s.scrub_faults_open);
    let h = &s.hydrate;
    let hydrate_counters = [
        ("borealis_hydrations_started_total", "Segments this node began to rebuild from a peer.", h.started),
        ("borealis_hydrations_completed_total", "Segments rebuilt from a peer.", h.completed),
        (
            "borealis_hydrations_resumed_total",
            "Rebuilds taken up again after this node restarted.",
            h.resumed,
        ),
        ("borealis_hydrations_abandoned_total", "Rebuilds dropped (source failed or moved on).", h.abandoned),
        ("borealis_hydrate_pages_total", "Page versions fetched by rebuilds.", h.pages_fetched),
        ("borealis_hydrate_bytes_total", "Page bytes fetched by rebuilds.", h.bytes_fetched),
    ];
    for (name, help, value) in hydrate_counters {
        counter(&mut out, name, help, value);
    }
    let _ = writeln!(out, "# HELP borealis_segment_floor GC floor.\n# TYPE borealis_segment_floor gauge");
    for seg in &s.segments {
        let _ = writeln!(
            out,
            "borealis_segment_floor{{volume=\"{:x}\",pg=\"{}\"}} {}",
            seg.pg.volume_id.0, seg.pg.pg_id.0, seg.floor.0
        );
    }
    let _ =
        writeln!(out, "# HELP borealis_segment_scl Segment complete LSN.\n# TYPE borealis_segment_scl gauge");
    for seg in &s.segments {
        let _ = writeln!(
            out,
            "borealis_segment_scl{{volume=\"{:x}\",pg=\"{}\"}} {}",
            seg.pg.volume_id.0, seg.pg.pg_id.0, seg.scl.0
        );
    }
    let _ = writeln!(
        out,
        "# HELP borealis_segment_highest_lsn Newest LSN held.\n# TYPE borealis_segment_highest_lsn gauge"
    );
    for seg in &s.segments {
        let _ = writeln!(
            out,
            "borealis_segment_highest_lsn{{volume=\"{:x}\",pg=\"{}\"}} {}",
            seg.pg.volume_id.0, seg.pg.pg_id.0, seg.highest_lsn.0
        );
    }
    out
}

fn scrub_metrics(out: &mut String, scrub: &ScrubStats, faults_open: u64) {
    let counters = [
        ("borealis_scrub_bytes_total", "Stored bytes re-read and verified by scrub.", scrub.bytes_scrubbed),
        (
            "borealis_scrub_entries_total",
            "Stored entries re-read and verified by scrub.",
            scrub.entries_scrubbed,
        ),
        ("borealis_scrub_faults_found_total", "Stored entries that failed verification.", scrub.faults_found),
        (
            "borealis_scrub_faults_repaired_total",
            "Failed entries whose records or image were fetched again and stored.",
            scrub.faults_repaired,
        ),
        ("borealis_scrub_read_errors_total", "Scrub reads that failed with an I/O error.", scrub.read_errors),
        (
            "borealis_scrub_passes_total",
            "Complete scrub passes over everything stored.",
            scrub.passes_completed,
        ),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value);
    }
    gauge(out, "borealis_scrub_faults_open", "Failed entries not yet repaired.", faults_open);
    gauge(
        out,
        "borealis_scrub_last_pass_ms",
        "Duration of the last complete scrub pass.",
        scrub.last_pass_ms,
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}
