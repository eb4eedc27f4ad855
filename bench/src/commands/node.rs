//! `borealis-bench node`: one storage node's durable ingest (started here) next to fio's flushed
//! sequential writes of the same block size, printed as a table.

use std::path::PathBuf;
use std::time::Duration;

use bench::node_ingest::{self, IngestLoad};
use tools::cluster::{ensure_key_file, free_udp_port, Launcher, NodeProcess, NodeSpec};

pub(crate) struct NodeBench {
    pub(crate) record_bytes: Vec<usize>,
    pub(crate) in_flight: Vec<usize>,
    pub(crate) batch_records_max: usize,
    pub(crate) seconds: u64,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) no_direct_io: bool,
    pub(crate) no_fio: bool,
}

pub(crate) fn node_bench(s: NodeBench) -> Result<(), String> {
    let temp = bench::scratch_dir(s.dir.clone())?;
    let root = temp.path();
    let pki =
        transport::ensure_dev_pki(&root.join("pki"), &["node-1", "client"]).map_err(|e| e.to_string())?;
    ensure_key_file(&root.join("kek")).map_err(|e| e.to_string())?;
    let duration = Duration::from_secs(s.seconds);
    println!(
        "{:>12} {:>9} | {:>12} {:>10} {:>9} {:>9} | {:>12} {:>10} | {:>7}",
        "record bytes",
        "in flight",
        "records/s",
        "MB/s",
        "p50 us",
        "p99 us",
        "fio writes/s",
        "fio MB/s",
        "ratio"
    );
    for &record_bytes in &s.record_bytes {
        for &in_flight in &s.in_flight {
            let port = free_udp_port().map_err(|e| e.to_string())?;
            let mut extra = vec!["--journal-file-bytes".to_string(), (256u64 << 20).to_string()];
            if s.no_direct_io {
                extra.push("--no-direct-io".into());
            }
            let spec = NodeSpec {
                node_id: 1,
                az: 0,
                listen: ([127, 0, 0, 1], port).into(),
                admin: None,
                data_dir: root.join(format!("node-{record_bytes}-{in_flight}")),
                tls: pki.files_for("node-1"),
                key_file: root.join("kek"),
                extra,
            };
            let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
            let mut node = NodeProcess::start(&launcher, spec.clone(), root.join("node.log"))
                .map_err(|e| e.to_string())?;
            let load =
                IngestLoad { record_bytes, in_flight, batch_records_max: s.batch_records_max, duration };
            let runtime = bench::current_thread()?;
            let result =
                runtime.block_on(node_ingest::run(spec.listen, "node-1", &pki.files_for("client"), load))?;
            node.stop();
            let fio = if s.no_fio {
                None
            } else {
                Some(bench::fio::flushed_sequential_write(
                    root,
                    record_bytes,
                    record_bytes % 4096 == 0,
                    duration,
                )?)
            };
            let mb = |b: f64| b / 1e6;
            let (fio_ops, fio_mb, ratio) = fio.map_or((f64::NAN, f64::NAN, f64::NAN), |f| {
                (f.writes_per_s, mb(f.bytes_per_s), result.payload_bytes_per_s() / f.bytes_per_s)
            });
            println!(
                "{record_bytes:>12} {in_flight:>9} | {:>12.0} {:>10.1} {:>9} {:>9} | {fio_ops:>12.0} {fio_mb:>10.1} | {ratio:>7.2}",
                result.records_per_s(),
                mb(result.payload_bytes_per_s()),
                result.latency_us.value_at_quantile(0.5),
                result.latency_us.value_at_quantile(0.99),

            );
        }
    }
    Ok(())
}
