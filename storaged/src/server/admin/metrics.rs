//! `/metrics`, encoded on the admin thread by the `prometheus-client` crate (Prometheus text
//! format 0.0.4) from two sources: the snapshot the node thread refreshes every
//! `SNAPSHOT_INTERVAL` (gauges and counters the core and the drivers keep), and `NodeMetrics`,
//! which the node thread records into as things happen (latency and size histograms, error
//! replies by kind) with relaxed atomic adds only.
//!
//! `docs/operations.md` lists every metric; `packaging/prometheus/alerts.yml` alerts on them.

use std::ffi::CString;
use std::fmt::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use protocol::messages::{ErrorCode, SegmentState, ERROR_COUNTERS};
use protocol::{Message, PgRef};

use super::{AdminFeed, SegmentMetrics, Snapshot};
use crate::core::{NodeState, ScrubStats};

/// Latency buckets: 25 µs doubling 20 times (to about 13 s), in nanoseconds.
const LATENCY_BUCKET_FIRST_NS: u64 = 25_000;
const LATENCY_BUCKETS: usize = 20;
const NANOS_PER_SECOND: f64 = 1e9;
/// Size buckets: 512 B doubling 20 times (to 256 MiB), in bytes.
const SIZE_BUCKET_FIRST_BYTES: u64 = 512;
const SIZE_BUCKETS: usize = 20;

/// The `state` label of each segment state a node reports.
pub const SEGMENT_STATES: [(SegmentState, &str); 4] = [
    (SegmentState::Serving, "serving"),
    (SegmentState::Hydrating, "hydrating"),
    (SegmentState::ScrubRepairing, "scrub_repairing"),
    (SegmentState::Retired, "retired"),
];

/// What a fetch from a peer brought, for `borealis_peer_fetch_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerFetch {
    /// Records gossip fetched to fill holes and tails.
    GossipRecords,
    /// A page version scrub's repair fetched to replace a damaged image.
    ImageRepair,
    /// Page versions a rebuild (hydration) fetched.
    HydratePages,
}

impl PeerFetch {
    /// In declaration order, so `kind as usize` indexes it.
    const ALL: [PeerFetch; 3] = [PeerFetch::GossipRecords, PeerFetch::ImageRepair, PeerFetch::HydratePages];

    fn label(self) -> &'static str {
        match self {
            PeerFetch::GossipRecords => "gossip_records",
            PeerFetch::ImageRepair => "image_repair",
            PeerFetch::HydratePages => "hydrate_pages",
        }
    }
}

/// The figures the node thread records as they happen. Recording is a few relaxed atomic adds:
/// no lock the scraper could hold, no allocation.
#[derive(Debug)]
pub struct NodeMetrics {
    journal_flush: IntHistogram,
    append_ack: IntHistogram,
    read_page: IntHistogram,
    peer_fetch: Labelled<IntHistogram, { PeerFetch::ALL.len() }>,
    error_replies: Labelled<Counter, ERROR_COUNTERS>,
    /// Nodes in the cluster map this node holds, and the etcd revision it was read at.
    map_nodes: AtomicU64,
    map_revision: AtomicU64,
    /// When the etcd watch stopped following, in milliseconds after `started`;
    /// `FOLLOWING` while it follows (and for a static map, which has nothing to follow).
    map_unfollowed_at_ms: AtomicU64,
    started: Instant,
}

/// `map_unfollowed_at_ms` while the map is followed.
const FOLLOWING: u64 = u64::MAX;

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        let error_kinds = std::array::from_fn(ErrorCode::counter_name);
        NodeMetrics {
            journal_flush: IntHistogram::latency(),
            append_ack: IntHistogram::latency(),
            read_page: IntHistogram::latency(),
            peer_fetch: Labelled::new("kind", PeerFetch::ALL.map(PeerFetch::label), IntHistogram::size),
            error_replies: Labelled::new("kind", error_kinds, Counter::default),
            map_nodes: AtomicU64::new(0),
            map_revision: AtomicU64::new(0),
            map_unfollowed_at_ms: AtomicU64::new(FOLLOWING),
            started: Instant::now(),
        }
    }
}

impl NodeMetrics {
    /// One group commit's journal write + flush took `elapsed`.
    pub fn group_committed(&self, elapsed: Duration) {
        self.journal_flush.observe_duration(elapsed);
    }

    /// `reply` went out on a stream whose request arrived at `arrived`: an append's ack and a
    /// page read's page are timed, an error is counted by its code.
    pub fn replied(&self, reply: &Message, arrived: Instant) {
        match reply {
            Message::AppendAck(_) => self.append_ack.observe_duration(arrived.elapsed()),
            Message::Page(_) => self.read_page.observe_duration(arrived.elapsed()),
            Message::Error(error) => {
                self.error_replies.get(error.code.counter_index()).inc();
            }
            _ => {}
        }
    }

    /// A fetch of `kind` brought `bytes` (records or page versions) from a peer.
    pub fn fetched(&self, kind: PeerFetch, bytes: usize) {
        self.peer_fetch.get(kind as usize).observe(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// The node now holds a cluster map of `nodes` nodes, read at etcd `revision` (0: static).
    pub fn map_known(&self, nodes: usize, revision: i64) {
        self.map_nodes.store(nodes as u64, Ordering::Relaxed);
        self.map_revision.store(u64::try_from(revision).unwrap_or(0), Ordering::Relaxed);
    }

    /// The etcd watch follows the map (`following`) since `since`, or stopped following then.
    pub fn map_followed(&self, following: bool, since: Instant) {
        let at = match following {
            true => FOLLOWING,
            false => u64::try_from(since.saturating_duration_since(self.started).as_millis()).unwrap_or(0),
        };
        self.map_unfollowed_at_ms.store(at, Ordering::Relaxed);
    }

    /// How long the node's view of the etcd map may have been out of date: 0 while its watch
    /// follows etcd (or the map is static).
    fn map_stale(&self) -> Duration {
        match self.map_unfollowed_at_ms.load(Ordering::Relaxed) {
            FOLLOWING => Duration::ZERO,
            at => self.started.elapsed().saturating_sub(Duration::from_millis(at)),
        }
    }

    fn encode(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let nodes = self.map_nodes.load(Ordering::Relaxed);
        gauge(out, "cluster_map_nodes", "Nodes in the cluster map this node holds (0: no peers).", nodes)?;
        let revision = self.map_revision.load(Ordering::Relaxed);
        let help = "The etcd revision of the cluster map this node holds (0: a static map).";
        gauge(out, "cluster_map_revision", help, revision)?;
        let help = "Seconds since this node's watch of the etcd cluster map broke (0 while it follows \
                    etcd, or for a static map): its map and ACLs may be that old.";
        gauge(out, "cluster_map_stale_seconds", help, self.map_stale().as_secs_f64())?;
        let histograms = [
            (
                "journal_flush_seconds",
                "Time of each group commit: the journal write and its flush, before the acks it carries.",
                &self.journal_flush,
            ),
            (
                "append_ack_seconds",
                "Time from an append batch's arrival (frame read) to its ack being sent.",
                &self.append_ack,
            ),
            (
                "read_page_seconds",
                "Time from a page read's arrival to the page being sent (clients' reads and peers' \
                 repair reads; errors are counted in borealis_error_replies_total instead).",
                &self.read_page,
            ),
        ];
        for (name, help, histogram) in histograms {
            histogram.encode(out.encode_descriptor(name, help, None, MetricType::Histogram)?)?;
        }
        let help = "Bytes each fetch from a peer brought: records by gossip, a page version by scrub's \
                    repair, page versions by a rebuild (hydration).";
        self.peer_fetch.encode(out.encode_descriptor(
            "peer_fetch_bytes",
            help,
            None,
            MetricType::Histogram,
        )?)?;
        let help = "Error replies this node sent, by error code.";
        self.error_replies.encode(out.encode_descriptor("error_replies", help, None, MetricType::Counter)?)
    }
}

/// A Prometheus histogram of integer observations (nanoseconds, bytes) with fixed bounds, which
/// the node thread records into with two relaxed atomic adds. prometheus-client's own
/// `Histogram` sits behind a mutex that the scraper takes too while it copies the buckets: an
/// admin thread descheduled while holding it would stall the data path.
#[derive(Debug)]
struct IntHistogram {
    /// Inclusive upper bounds, ascending; one more bucket counts everything above the last.
    bounds: Box<[u64]>,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Observed units per exported unit (nanoseconds per second).
    per_unit: f64,
}

impl IntHistogram {
    /// `buckets` bounds from `first`, each twice the previous.
    fn doubling(first: u64, buckets: usize, per_unit: f64) -> IntHistogram {
        let bounds: Box<[u64]> =
            std::iter::successors(Some(first), |bound| bound.checked_mul(2)).take(buckets).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        IntHistogram { bounds, counts, sum: AtomicU64::new(0), per_unit }
    }

    /// Nanoseconds, exported in seconds.
    fn latency() -> IntHistogram {
        IntHistogram::doubling(LATENCY_BUCKET_FIRST_NS, LATENCY_BUCKETS, NANOS_PER_SECOND)
    }

    fn size() -> IntHistogram {
        IntHistogram::doubling(SIZE_BUCKET_FIRST_BYTES, SIZE_BUCKETS, 1.0)
    }

    fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl TypedMetric for IntHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for IntHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        // The count is the buckets' total, so a scrape between two adds stays consistent.
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                count += n;
                (self.bounds.get(i).map_or(f64::INFINITY, |bound| *bound as f64 / self.per_unit), n)
            })
            .collect();
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.per_unit;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One metric per value of a label, the values fixed when built: found by index, with no map
/// or lock on the way.
#[derive(Debug)]
struct Labelled<M, const N: usize> {
    label: &'static str,
    members: [(&'static str, M); N],
}

impl<M, const N: usize> Labelled<M, N> {
    fn new(label: &'static str, values: [&'static str; N], make: impl Fn() -> M) -> Labelled<M, N> {
        Labelled { label, members: values.map(|value| (value, make())) }
    }

    fn get(&self, index: usize) -> &M {
        &self.members[index].1
    }
}

impl<M: EncodeMetric + TypedMetric, const N: usize> EncodeMetric for Labelled<M, N> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (value, metric) in &self.members {
            metric.encode(encoder.encode_family(&[(self.label, *value)])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// Encodes every metric on each scrape.
#[derive(Debug)]
pub struct NodeCollector {
    feed: AdminFeed,
    data_dir: PathBuf,
}

impl NodeCollector {
    pub fn new(feed: AdminFeed, data_dir: PathBuf) -> NodeCollector {
        NodeCollector { feed, data_dir }
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.feed.latest();
        node_metrics(&mut out, &snapshot)?;
        page_metrics(&mut out, &snapshot)?;
        scrub_metrics(&mut out, &snapshot.scrub, snapshot.scrub_faults_open)?;
        hydrate_metrics(&mut out, &snapshot)?;
        segment_metrics(&mut out, &snapshot)?;
        self.feed.live.encode(&mut out)?;
        disk_metrics(&mut out, &self.data_dir)
    }
}

fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
    ConstGauge::new(value).encode(out.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// `name` gets the `_total` suffix.
fn counter(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    ConstCounter::new(value).encode(out.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// `borealis_node_info{node,az,state}`.
#[derive(Debug, EncodeLabelSet)]
struct NodeLabels {
    node: u32,
    az: u16,
    state: &'static str,
}

fn node_metrics(out: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let state = match &s.state {
        Some(NodeState::Serving) => "serving",
        Some(NodeState::DiskFull) => "disk_full",
        Some(NodeState::Failed(_)) => "failed",
        None => "starting",
    };
    let labels = NodeLabels { node: s.node, az: s.az, state };
    let mut info =
        out.encode_descriptor("node_info", "This node's identity and state.", None, MetricType::Gauge)?;
    ConstGauge::new(1u32).encode(info.encode_family(&labels)?)?;
    gauge(out, "segments", "Segments held.", s.segments_total)?;
    gauge(out, "ingest_credit_bytes", "Record bytes this node would take now.", s.credit_bytes)?;
    counter(out, "journal_bytes_written", "Journal bytes written and flushed.", s.journal_bytes_written)?;
    counter(out, "journal_groups_written", "Group commits (write + flush).", s.journal_groups_written)?;
    counter(
        out,
        "journal_write_flush_seconds",
        "Time from each group's write to its flush's completion, summed.",
        s.journal_write_flush_us as f64 / 1e6,
    )
}

fn page_metrics(out: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let p = &s.pages;
    let gauges = [
        ("index_bytes", "Estimated bytes of the record and page indexes.", p.index_bytes),
        ("page_cache_bytes", "Bytes of built page versions cached.", p.page_cache_bytes),
        (
            "records_held_for_floor",
            "Records in the complete chain kept only because the GC floor is below them.",
            p.records_held_for_floor,
        ),
        ("journal_files", "Journal files on disk.", p.journal_files),
        ("page_store_files", "Page store files on disk.", p.page_store_files),
    ];
    for (name, help, value) in gauges {
        gauge(out, name, help, value)?;
    }
    let counters = [
        ("page_cache_hits", "Page reads served from the cache.", p.page_cache_hits),
        ("page_cache_misses", "Page reads that built their version.", p.page_cache_misses),
        ("images_written", "Page images the coalescer stored.", p.images_written),
        ("files_recycled", "Journal and page store files deleted.", p.files_recycled),
        (
            "stored_read_errors",
            "Reads of stored journal entries and page images (page reads, coalescer, gossip, hydration, \
             scrub) that failed with an I/O error; the records stay claimed.",
            p.read_errors,
        ),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value)?;
    }
    Ok(())
}

fn scrub_metrics(out: &mut DescriptorEncoder, scrub: &ScrubStats, faults_open: u64) -> fmt::Result {
    let counters = [
        ("scrub_bytes", "Stored bytes re-read and verified by scrub.", scrub.bytes_scrubbed),
        ("scrub_entries", "Stored entries re-read and verified by scrub.", scrub.entries_scrubbed),
        ("scrub_faults_found", "Stored entries that failed verification.", scrub.faults_found),
        (
            "scrub_faults_repaired",
            "Failed entries whose records or image were fetched again and stored.",
            scrub.faults_repaired,
        ),
        ("scrub_read_errors", "Scrub reads that failed with an I/O error.", scrub.read_errors),
        ("scrub_passes", "Complete scrub passes over everything stored.", scrub.passes_completed),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value)?;
    }
    gauge(out, "scrub_faults_open", "Failed entries not yet repaired.", faults_open)?;
    let last_pass_s = scrub.last_pass_ms as f64 / 1e3;
    gauge(out, "scrub_last_pass_seconds", "Duration of the last complete scrub pass.", last_pass_s)
}

fn hydrate_metrics(out: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let h = &s.hydrate;
    let counters = [
        ("hydrations_started", "Segments this node began to rebuild from a peer.", h.started),
        ("hydrations_completed", "Segments rebuilt from a peer.", h.completed),
        ("hydrations_resumed", "Rebuilds taken up again after this node restarted.", h.resumed),
        ("hydrations_abandoned", "Rebuilds dropped (source failed or moved on).", h.abandoned),
        ("hydrate_pages", "Page versions fetched by rebuilds.", h.pages_fetched),
        ("hydrate_bytes", "Page bytes fetched by rebuilds.", h.bytes_fetched),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value)?;
    }
    Ok(())
}

/// A volume id, as `borealis cluster status` shows it (hex).
#[derive(Debug)]
struct VolumeHex(u128);

impl EncodeLabelValue for VolumeHex {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        write!(encoder, "{:x}", self.0)
    }
}

/// `{volume,pg}` of a per-segment metric.
#[derive(Debug, EncodeLabelSet)]
struct SegmentLabels {
    volume: VolumeHex,
    pg: u32,
}

impl SegmentLabels {
    fn of(pg: PgRef) -> SegmentLabels {
        SegmentLabels { volume: VolumeHex(pg.volume_id.0), pg: pg.pg_id.0 }
    }
}

/// What a per-segment gauge shows of a segment.
type SegmentValue = fn(&SegmentMetrics) -> u64;

fn segment_metrics(out: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let help = "Segments held, by state (every segment, listed or not).";
    let mut by_state = out.encode_descriptor("segments_by_state", help, None, MetricType::Gauge)?;
    for ((_, state), count) in SEGMENT_STATES.iter().zip(s.segments_by_state) {
        ConstGauge::new(count).encode(by_state.encode_family(&[("state", *state)])?)?;
    }
    let per_segment: [(&str, &str, SegmentValue); 4] = [
        ("segment_floor", "GC floor.", |seg| seg.floor.0),
        ("segment_scl", "Segment complete LSN.", |seg| seg.scl.0),
        ("segment_highest_lsn", "Newest LSN held.", |seg| seg.highest_lsn.0),
        (
            "segment_scl_lag",
            "How far (in LSN) the SCL trails the PG's newest LSN the segment knows a member holds \
             (the newest at or below the VDL a writer told it, or a peer's SCL from gossip); 0 when \
             caught up.",
            |seg| seg.known_pg_lsn.0.saturating_sub(seg.scl.0),
        ),
    ];
    for (name, help, value) in per_segment {
        let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for seg in &s.segments {
            ConstGauge::new(value(seg)).encode(family.encode_family(&SegmentLabels::of(seg.pg))?)?;
        }
    }
    let help = "1 for the state each listed segment is in (serving, hydrating, scrub_repairing, retired), \
                0 for the others.";
    let mut family = out.encode_descriptor("segment_state", help, None, MetricType::Gauge)?;
    for seg in &s.segments {
        for (state, name) in SEGMENT_STATES {
            let labels = (SegmentLabels::of(seg.pg), [("state", name)]);
            ConstGauge::new(u64::from(seg.state == state)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The data directory's file system: the bytes an unprivileged process may still allocate, and
/// its size.
struct DiskSpace {
    free_bytes: u64,
    size_bytes: u64,
}

fn disk_space(dir: &Path) -> std::io::Result<DiskSpace> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statvfs is a valid value for the call to fill in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs reads a NUL-terminated path and writes into a statvfs we own.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let block = stat.f_frsize as u64;
    Ok(DiskSpace {
        free_bytes: (stat.f_bavail as u64).saturating_mul(block),
        size_bytes: (stat.f_blocks as u64).saturating_mul(block),
    })
}

/// Read on the admin thread at each scrape: fresh, and never a system call on the data path.
/// Left out (and logged) if the file system cannot be asked.
fn disk_metrics(out: &mut DescriptorEncoder, data_dir: &Path) -> fmt::Result {
    let space = match disk_space(data_dir) {
        Ok(space) => space,
        Err(error) => {
            tracing::warn!(%error, dir = %data_dir.display(), "statvfs of the data directory failed");
            return Ok(());
        }
    };
    let help = "Bytes still free for the node's files on the data directory's file system.";
    gauge(out, "data_dir_free_bytes", help, space.free_bytes)?;
    gauge(out, "data_dir_size_bytes", "Size of the data directory's file system.", space.size_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_and_segment_state_of_the_protocol_has_its_own_label() {
        // A code or state added to the protocol must get a label, not fall into `unknown`.
        for code in 1..=u16::MAX {
            let error = ErrorCode::from_u16(code);
            if matches!(error, ErrorCode::Unknown(_)) {
                assert_eq!(usize::from(code), ERROR_COUNTERS, "codes are dense");
                break;
            }
            assert_eq!(ErrorCode::counter_name(error.counter_index()), error.name());
            assert_ne!(error.name(), "unknown", "{error:?} has no label");
        }
        for state in 1..=u16::MAX {
            let state = SegmentState::from_u16(state);
            if matches!(state, SegmentState::Unknown(_)) {
                break;
            }
            assert!(SEGMENT_STATES.iter().any(|(s, _)| *s == state), "{state:?} has no label");
        }
    }

    #[test]
    fn a_histogram_counts_each_observation_in_the_first_bucket_that_holds_it() {
        let histogram = IntHistogram::doubling(10, 3, 1.0);
        for value in [0, 10, 11, 40, 41, u64::MAX / 2] {
            histogram.observe(value);
        }
        let counts: Vec<u64> = histogram.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, [2, 1, 1, 2], "le 10, le 20, le 40, +Inf");
    }

    #[test]
    fn a_peer_fetch_kind_indexes_its_own_histogram() {
        for (i, kind) in PeerFetch::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
        }
    }
}
