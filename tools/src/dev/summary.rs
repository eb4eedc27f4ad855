//! The result of a `borealis dev` run: one [`Summary`], printed as a table and written as JSON.
//!
//! JSON layout (`--json FILE`), one object whose fields are all scalars except `nodes` and
//! `verify_failures`:
//!
//! | field | meaning |
//! |---|---|
//! | `dir` | the cluster directory (absolute) |
//! | `nodes_mode` | `foreground`, `background, started for --keep-running` or `background, already running` |
//! | `volume`, `page_bytes`, `pages_per_pg`, `pgs` | the dev volume's shape |
//! | `in_flight`, `record_bytes` | the options of the run |
//! | `duration_s` | seconds from the first append to the last transaction reported durable |
//! | `transactions`, `records`, `payload_bytes` | made durable (each transaction is 3 records) |
//! | `transactions_per_s`, `records_per_s`, `payload_mb_per_s` | the same over `duration_s` (MB = 10^6 bytes) |
//! | `commit_p50_ms`, `commit_p99_ms`, `commit_max_ms`, `commit_mean_ms` | append → durable, per transaction |
//! | `vdl` | the volume durable LSN at the end |
//! | `sampled`, `verified` | durable records read back, and how many matched byte for byte |
//! | `verify_failures` | the first failures, described (empty when `verified == sampled`) |
//! | `nodes_healthy` | nodes that answered over QUIC and whose `/health` said 200 |
//! | `nodes` | per node: `id`, `az`, `pid` (or null), `up` (answered over QUIC), `health_code` and `health` (the `/health` answer, or null / the error), `healthy`, `segments` (segments it holds, null if down) |
//!
//! Invariant: the table and the JSON come from the same value, so they never disagree; this
//! module formats and writes, it measures nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::live::{thousands, BYTES_PER_MB};
use super::orders::{page_bytes_for, PAGES_PER_PG, VOLUME, VOLUME_PAGES};
use super::sample::Verification;
use super::workload::Measured;
use crate::local::LocalCluster;
use crate::probe::Probe;
use crate::procs::PidMap;

/// Microseconds per millisecond, for latencies kept in µs and shown in ms.
const US_PER_MS: f64 = 1000.0;

/// Why the JSON summary could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the summary to {}: {source}", path.display())]
pub struct WriteJsonError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// See the module docs for every field.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub dir: String,
    pub nodes_mode: String,
    pub volume: u128,
    pub page_bytes: u32,
    pub pages_per_pg: u64,
    pub pgs: u64,
    pub in_flight: usize,
    pub record_bytes: usize,
    pub duration_s: f64,
    pub transactions: u64,
    pub records: u64,
    pub payload_bytes: u64,
    pub transactions_per_s: f64,
    pub records_per_s: f64,
    pub payload_mb_per_s: f64,
    pub commit_p50_ms: f64,
    pub commit_p90_ms: f64,
    pub commit_p99_ms: f64,
    pub commit_p999_ms: f64,
    pub commit_max_ms: f64,
    pub commit_mean_ms: f64,
    /// Open loop: transactions due but never appended when the time was up.
    pub backlog_at_end: u64,
    pub vdl: u64,
    pub sampled: usize,
    pub verified: usize,
    pub verify_failures: Vec<String>,
    pub nodes_healthy: usize,
    pub nodes: Vec<NodeSummary>,
    /// Commit latency histogram: (from µs, to µs, transactions), buckets doubling in width.
    #[serde(skip)]
    pub latency_buckets: Vec<(u64, u64, u64)>,
    /// (seconds since the start, records durable by then).
    #[serde(skip)]
    pub timeline: Vec<(f64, u64)>,
}

/// One node at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    pub id: u32,
    pub az: u16,
    pub pid: Option<u32>,
    pub up: bool,
    pub health_code: Option<u16>,
    pub health: String,
    pub healthy: bool,
    pub segments: Option<usize>,
}

/// Everything a summary is made of.
#[derive(Debug)]
pub struct Parts<'a> {
    pub cluster: &'a LocalCluster,
    pub nodes_mode: &'a str,
    pub in_flight: usize,
    pub record_bytes: usize,
    pub measured: &'a Measured,
    pub verification: &'a Verification,
    pub probes: &'a [Probe],
    pub pids: &'a PidMap,
}

impl Summary {
    pub fn new(parts: &Parts<'_>) -> Summary {
        let m = parts.measured;
        let seconds = m.elapsed.as_secs_f64().max(f64::EPSILON);
        let ms = |us: u64| us as f64 / US_PER_MS;
        let nodes: Vec<NodeSummary> =
            parts.probes.iter().map(|p| node_summary(parts.cluster, parts.pids, p)).collect();
        Summary {
            dir: parts.cluster.dir().display().to_string(),
            nodes_mode: parts.nodes_mode.to_string(),
            volume: VOLUME.get(),
            page_bytes: page_bytes_for(parts.record_bytes),
            pages_per_pg: PAGES_PER_PG,
            pgs: VOLUME_PAGES.div_ceil(PAGES_PER_PG),
            in_flight: parts.in_flight,
            record_bytes: parts.record_bytes,
            duration_s: m.elapsed.as_secs_f64(),
            transactions: m.transactions,
            records: m.records,
            payload_bytes: m.payload_bytes,
            transactions_per_s: m.transactions as f64 / seconds,
            records_per_s: m.records as f64 / seconds,
            payload_mb_per_s: m.payload_bytes as f64 / seconds / BYTES_PER_MB,
            commit_p50_ms: ms(m.latency_us.value_at_quantile(0.50)),
            commit_p90_ms: ms(m.latency_us.value_at_quantile(0.90)),
            commit_p99_ms: ms(m.latency_us.value_at_quantile(0.99)),
            commit_p999_ms: ms(m.latency_us.value_at_quantile(0.999)),
            commit_max_ms: ms(m.latency_us.max()),
            commit_mean_ms: m.latency_us.mean() / US_PER_MS,
            backlog_at_end: m.backlog_at_end,
            vdl: m.vdl.get(),
            sampled: parts.verification.sampled,
            verified: parts.verification.verified,
            verify_failures: parts.verification.failures.clone(),
            nodes_healthy: nodes.iter().filter(|n| n.healthy).count(),
            nodes,
            latency_buckets: log2_buckets(&m.latency_us),
            timeline: m.timeline.clone(),
        }
    }

    /// True if every sampled record read back as written.
    pub fn verified_all(&self) -> bool {
        self.verified == self.sampled
    }

    /// The summary as an aligned text table, ending with a newline.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let line = &mut out;
        let _ =
            writeln!(line, "borealis dev: {} nodes ({}) in {}", self.nodes.len(), self.nodes_mode, self.dir);
        let _ = writeln!(
            line,
            "volume {}: {} PGs x {} pages of {} bytes; {} transactions in flight, each 2 records of ~{} bytes of CSV rows and a commit",
            self.volume, self.pgs, self.pages_per_pg, self.page_bytes, self.in_flight, self.record_bytes,
        );
        let row = |out: &mut String, what: &str, value: String| {
            let _ = writeln!(out, "  {what:<16} {value}");
        };
        row(line, "duration", format!("{:.2} s", self.duration_s));
        row(
            line,
            "transactions",
            format!("{:>12}  {:>10}/s", thousands(self.transactions), rate(self.transactions_per_s)),
        );
        row(line, "records", format!("{:>12}  {:>10}/s", thousands(self.records), rate(self.records_per_s)));
        let mb = self.payload_bytes as f64 / BYTES_PER_MB;
        row(line, "payload", format!("{mb:>9.2} MB  {:>10.2} MB/s", self.payload_mb_per_s));
        row(
            line,
            "commit latency",
            format!(
                "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (mean {:.2} ms)",
                self.commit_p50_ms, self.commit_p99_ms, self.commit_max_ms, self.commit_mean_ms
            ),
        );
        row(line, "VDL", self.vdl.to_string());
        let verdict =
            if self.verified_all() { "read back byte for byte, with their page versions" } else { "FAILED" };
        row(line, "verified", format!("{}/{} sampled records {verdict}", self.verified, self.sampled));
        for failure in &self.verify_failures {
            let _ = writeln!(line, "    {failure}");
        }
        out.push_str(&self.nodes_table());
        out
    }

    fn nodes_table(&self) -> String {
        let mut out = format!(
            "nodes: {} of {} healthy\n  {:>4}  {:>2}  {:>8}  {:<5}  {:<28}  {:>8}\n",
            self.nodes_healthy,
            self.nodes.len(),
            "node",
            "az",
            "pid",
            "state",
            "health",
            "segments"
        );
        for n in &self.nodes {
            let pid = n.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
            let state = if n.up { "up" } else { "down" };
            let segments = n.segments.map_or_else(|| "-".to_string(), |s| s.to_string());
            let _ = writeln!(
                out,
                "  {:>4}  {:>2}  {pid:>8}  {state:<5}  {:<28}  {segments:>8}",
                n.id, n.az, n.health
            );
        }
        out
    }

    /// Writes the summary as pretty JSON to `path`, replacing any file there atomically.
    pub fn write_json(&self, path: &Path) -> Result<(), WriteJsonError> {
        let mut text = serde_json::to_string_pretty(self).expect("a summary always serializes");
        text.push('\n');
        crate::files::write_atomically(path, text.as_bytes(), 0o644)
            .map_err(|source| WriteJsonError { path: path.to_owned(), source })
    }
}

/// A per-second rate, rounded, with thousands separators.
fn rate(per_second: f64) -> String {
    thousands(per_second.round() as u64)
}

/// `histogram`'s counts in buckets of doubling width from 1 µs up to its maximum.
fn log2_buckets(histogram: &hdrhistogram::Histogram<u64>) -> Vec<(u64, u64, u64)> {
    let mut from = 0;
    histogram
        .iter_log(1, 2.0)
        .map(|v| {
            let to = v.value_iterated_to();
            let bucket = (from, to, v.count_since_last_iteration());
            from = to + 1;
            bucket
        })
        .collect()
}

fn node_summary(cluster: &LocalCluster, pids: &PidMap, probe: &Probe) -> NodeSummary {
    let id = probe.target.node;
    let (health_code, health) = match &probe.health {
        None => (None, "no admin port".to_string()),
        Some(Ok(h)) => (Some(h.code), format!("{} {}", h.code, h.text)),
        Some(Err(error)) => (None, format!("unreachable: {error}")),
    };
    let up = probe.status.is_ok();
    NodeSummary {
        id,
        az: cluster.node(id).map_or(0, |n| n.az),
        pid: pids.get(&id).map(|p| p.pid),
        up,
        health_code,
        health,
        healthy: up && health_code == Some(200),
        segments: probe.status.as_ref().ok().map(|s| s.segments.len()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;
    use protocol::messages::Status;
    use protocol::{AzId, Lsn, NodeId};

    use super::*;
    use crate::probe::{Health, ProbeError, Target};

    #[test]
    fn the_summary_computes_rates_and_lists_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = LocalCluster::load_or_create(dir.path()).unwrap();
        let mut latency_us = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        (1..=100u64).for_each(|ms| latency_us.record(ms * 1000).unwrap());
        let measured = Measured {
            transactions: 1000,
            records: 3000,
            payload_bytes: 2_000_000,
            elapsed: Duration::from_secs(2),
            latency_us,
            vdl: Lsn(3000),
            sample: Vec::new(),
            timeline: Vec::new(),
            backlog_at_end: 0,
        };
        let verification = Verification { sampled: 200, verified: 200, failures: Vec::new() };
        let probes: Vec<Probe> = cluster
            .nodes()
            .iter()
            .map(|n| Probe {
                target: Target::from(n),
                status: match n.id {
                    4 => Err(ProbeError::Timeout(Duration::from_secs(2))),
                    _ => Ok(Status { node: NodeId(n.id), az: AzId(n.az), segments: Vec::new() }),
                },
                health: Some(Ok(Health { code: 200, text: "serving".into() })),
            })
            .collect();
        let summary = Summary::new(&Parts {
            cluster: &cluster,
            nodes_mode: "foreground",
            in_flight: 64,
            record_bytes: 256,
            measured: &measured,
            verification: &verification,
            probes: &probes,
            pids: &PidMap::new(),
        });
        assert_eq!(summary.records_per_s, 1500.0);
        assert_eq!(summary.payload_mb_per_s, 1.0);
        assert!((49.9..=50.1).contains(&summary.commit_p50_ms), "{}", summary.commit_p50_ms);
        assert!(
            summary.commit_p50_ms <= summary.commit_p99_ms && summary.commit_p99_ms <= summary.commit_max_ms
        );
        assert_eq!(summary.nodes_healthy, 5);
        assert!(summary.verified_all());
        let table = summary.table();
        assert!(table.contains("200/200 sampled records read back"), "{table}");
        assert!(table.contains("5 of 6 healthy"), "{table}");
        assert_eq!(table.lines().filter(|l| l.contains("200 serving")).count(), 6, "{table}");
        let json_path = dir.path().join("summary.json");
        summary.write_json(&json_path).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        assert_eq!(json["records"], 3000);
        assert_eq!(json["nodes"][3]["up"], false);
        assert_eq!(json["nodes"][3]["segments"], serde_json::Value::Null);
    }
}
