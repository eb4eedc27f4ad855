//! `borealis-bench recovery`: how long recovery takes.
//!
//! - **Node restart**: one node takes `record_bytes` records for a while with checkpoints far
//!   apart, so its whole journal is an un-checkpointed tail; it is killed (SIGKILL) and started
//!   again, and the restart is timed until it prints its ready line (after replay). Run for
//!   several ingest durations, so the time can be read against the tail's size.
//! - **Writer takeover**: on a local six-node cluster a writer appends a window of records
//!   without waiting for any of them and then crashes (its runtime is dropped: no goodbye); a
//!   new writer's `Writer::open` (fence, gather above the VDL hint, truncate, refill) is timed.
//!   The LAL is the window, or the writer's default (`WriterLimits::default().lal`) for a
//!   "full LAL" run: then only the VDL hint bounds the gather.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{ClientConfig, NewRecord, VolumeGeometry, Writer, WriterLimits};
use protocol::{PageId, RecordKind, VolumeId};
use tools::cluster::{ensure_key_file, free_udp_port, Launcher, NodeProcess, NodeSpec};
use tools::local::{stop_all, LocalCluster};

use crate::node_ingest::{self, IngestLoad};
use crate::rows::row_payload;

/// One node restart measured.
#[derive(Clone, Copy, Debug)]
pub struct NodeRestart {
    /// Record payload bytes written before the crash: the un-checkpointed journal tail is this
    /// plus record headers and group framing.
    pub tail_payload_bytes: u64,
    pub records: u64,
    pub restart: Duration,
}

/// Restarts of one node after `ingest` of `record_bytes` records, for each duration.
pub fn node_restarts(
    root: &Path,
    record_bytes: usize,
    ingest: &[Duration],
) -> Result<Vec<NodeRestart>, String> {
    let pki =
        transport::ensure_dev_pki(&root.join("pki"), &["node-1", "client"]).map_err(|e| e.to_string())?;
    ensure_key_file(&root.join("kek")).map_err(|e| e.to_string())?;
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, duration) in ingest.iter().enumerate() {
        let data_dir = root.join(format!("restart-{i}"));
        let spec = NodeSpec {
            node_id: 1,
            az: 0,
            listen: ([127, 0, 0, 1], free_udp_port().map_err(|e| e.to_string())?).into(),
            admin: None,
            data_dir: data_dir.clone(),
            tls: pki.files_for("node-1"),
            key_file: root.join("kek"),
            // No checkpoint during the run: restart replays everything written.
            extra: vec!["--checkpoint-interval-bytes".into(), (64u64 << 30).to_string()],
        };
        let mut node = NodeProcess::start(&launcher, spec.clone(), root.join("restart.log"))
            .map_err(|e| e.to_string())?;
        let load = IngestLoad { record_bytes, in_flight: 1000, batch_records_max: 128, duration: *duration };
        let runtime = crate::current_thread()?;
        let ingested =
            runtime.block_on(node_ingest::run(spec.listen, "node-1", &pki.files_for("client"), load));
        node.kill9();
        let ingested = ingested?;
        let started = Instant::now();
        node.restart().map_err(|e| e.to_string())?;
        let restart = started.elapsed();
        node.stop();
        out.push(NodeRestart {
            tail_payload_bytes: ingested.payload_bytes,
            records: ingested.records,
            restart,
        });
    }
    Ok(out)
}

/// One writer takeover measured.
#[derive(Clone, Copy, Debug)]
pub struct Takeover {
    /// Records the crashed writer appended (none awaited).
    pub window_records: u64,
    /// The writers' LSN allocation limit.
    pub lal: u64,
    pub open: Duration,
}

/// A writer crash after appending `window` records of `record_bytes`, and the next writer's
/// open, on a fresh local cluster under `root`. The writers' LAL is `lal`, or the window if
/// `None` (then the window is exactly what the crashed writer may leave not durable).
pub fn writer_takeover(
    root: &Path,
    record_bytes: usize,
    window: u64,
    lal: Option<u64>,
) -> Result<Takeover, String> {
    let cluster = LocalCluster::load_or_create(&root.join("cluster")).map_err(|e| e.to_string())?;
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let mut nodes = cluster.start_all(&launcher).map_err(|e| e.to_string())?;
    let result = takeover_on(&cluster, record_bytes, window, lal.unwrap_or(window));
    stop_all(&mut nodes);
    result
}

fn takeover_on(
    cluster: &LocalCluster,
    record_bytes: usize,
    window: u64,
    lal: u64,
) -> Result<Takeover, String> {
    let mut config = ClientConfig::new(cluster.placement().map_err(|e| e.to_string())?, cluster.client_tls());
    // No append waits for room: the crashed writer's whole window is in flight.
    let pending_records_max = (window as usize).max(WriterLimits::default().pending_records_max);
    config.limits = WriterLimits { lal: lal.max(window), pending_records_max, ..WriterLimits::default() };
    let geometry = VolumeGeometry::new(VolumeId(0x7EC0), 4096, 1024).map_err(|e| e.to_string())?;
    let crashed = crate::current_thread()?;
    crashed.block_on(async {
        let writer = Writer::open(config.clone(), geometry).await.map_err(|e| e.to_string())?;
        // One durable record first, so the volume exists with a VDL to recover from.
        writer
            .append(vec![record(0, record_bytes)])
            .await
            .map_err(|e| e.to_string())?
            .durable()
            .await
            .map_err(|e| e.to_string())?;
        for i in 1..window {
            writer.append(vec![record(i, record_bytes)]).await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    })?;
    // Let the driver ship what was appended (the last appends returned once queued), then
    // crash: the driver task and its connections vanish without closing anything.
    crashed.block_on(async { tokio::time::sleep(SHIP_BEFORE_CRASH).await });
    crashed.shutdown_background();
    let runtime = crate::current_thread()?;
    let lal = config.limits.lal;
    let started = Instant::now();
    let writer = runtime.block_on(Writer::open(config, geometry)).map_err(|e| e.to_string())?;
    let open = started.elapsed();
    runtime.block_on(writer.close());
    Ok(Takeover { window_records: window, lal, open })
}

/// How long the writer runs after its last append before it crashes: long enough to send the
/// queued batches, far shorter than their acks over a loaded cluster.
const SHIP_BEFORE_CRASH: Duration = Duration::from_millis(20);

fn record(i: u64, record_bytes: usize) -> NewRecord {
    NewRecord {
        page: PageId(i % 4096),
        kind: RecordKind::Marker,
        payload: Bytes::from(row_payload(i, record_bytes)),
        cpl: true,
        lsn: None,
    }
}
