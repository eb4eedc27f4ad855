//! `borealis-bench append`: the whole write path on a local six-node cluster (the `borealis dev`
//! cluster and workload, started and stopped here), with CPU cost per gigabyte of payload for
//! the client and the nodes, read from /proc.
//!
//! CPU: the client is this process (its own user + system time); the nodes are its children,
//! whose time the kernel adds to this process's `cutime`/`cstime` once they are reaped, which
//! happens when the run stops them. So both are measured over the whole run (start-up,
//! workload, read-back), which overstates them a little for short runs.

use std::path::Path;

use tools::cluster::Launcher;

use crate::cpu::CpuTimes;
use tools::dev::summary::Summary;
use tools::dev::{self, DevOptions};
use tools::local::map::StoragedSettings;
use tools::local::LocalCluster;

/// One append run's parameters.
#[derive(Clone, Copy, Debug)]
pub struct AppendLoad {
    pub record_bytes: usize,
    pub in_flight: usize,
    pub duration: std::time::Duration,
    /// Largest UDP payload of the writer and the nodes (the datagram size).
    pub udp_payload_bytes: u16,
    /// Open loop at this many transactions per second, latency counted from when each was due
    /// (no coordinated omission); `None`: closed loop.
    pub rate: Option<f64>,
    /// The nodes' scrub rate (`None`: the daemon's default).
    pub scrub_bytes_per_s: Option<u64>,
}

/// What an append run measured.
#[derive(Debug)]
pub struct AppendResult {
    pub summary: Summary,
    pub client_cpu_s: f64,
    pub nodes_cpu_s: f64,
}

impl AppendResult {
    /// CPU seconds per GB (10^9 bytes) of payload made durable.
    pub fn cpu_s_per_gb(&self, cpu_s: f64) -> f64 {
        cpu_s / (self.summary.payload_bytes as f64 / 1e9).max(f64::EPSILON)
    }

    /// The figures as `(name, unit, value)`, for `--json`.
    pub fn figures(&self) -> Vec<(&'static str, &'static str, f64)> {
        let s = &self.summary;
        vec![
            ("records_per_s", "records/s", s.records_per_s),
            ("transactions_per_s", "transactions/s", s.transactions_per_s),
            ("payload_mb_per_s", "MB/s", s.payload_mb_per_s),
            ("commit_p50", "ms", s.commit_p50_ms),
            ("commit_p90", "ms", s.commit_p90_ms),
            ("commit_p99", "ms", s.commit_p99_ms),
            ("commit_p99.9", "ms", s.commit_p999_ms),
            ("commit_max", "ms", s.commit_max_ms),
            ("backlog_at_end", "transactions", s.backlog_at_end as f64),
            ("client_cpu_s_per_gb", "s/GB", self.cpu_s_per_gb(self.client_cpu_s)),
            ("nodes_cpu_s_per_gb", "s/GB", self.cpu_s_per_gb(self.nodes_cpu_s)),
            ("verified", "records", s.verified as f64),
            ("sampled", "records", s.sampled as f64),
        ]
    }
}

/// Runs the dev workload on a fresh local cluster under `root`.
pub fn run(root: &Path, load: AppendLoad) -> Result<AppendResult, String> {
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let options = DevOptions {
        dir: root
            .join(format!("cluster-{}-{}-{}", load.record_bytes, load.in_flight, load.udp_payload_bytes)),
        duration: load.duration,
        keep_running: false,
        record_bytes: load.record_bytes,
        in_flight: load.in_flight,
        udp_payload_bytes: load.udp_payload_bytes,
        rate: load.rate,
        nodes_per_az: None,
    };
    let mut cluster = LocalCluster::load_or_create(&options.dir).map_err(|e| e.to_string())?;
    let settings = StoragedSettings {
        max_udp_payload_bytes: Some(load.udp_payload_bytes),
        scrub_bytes_per_s: load.scrub_bytes_per_s,
        ..Default::default()
    };
    cluster.set_storaged_settings(settings).map_err(|e| e.to_string())?;
    let before = CpuTimes::now()?;
    let outcome = dev::run(&options, &launcher).map_err(|e| e.to_string())?;
    let after = CpuTimes::now()?;
    if let Some(error) = outcome.release_error {
        return Err(format!("stopping the nodes: {error}"));
    }
    let summary = outcome.result.map_err(|e| e.to_string())?;
    if !summary.verified_all() {
        return Err(format!("read-back failed: {}", summary.verify_failures.join("; ")));
    }
    Ok(AppendResult {
        summary,
        client_cpu_s: after.own_s - before.own_s,
        nodes_cpu_s: after.children_s - before.children_s,
    })
}
