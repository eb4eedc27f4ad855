//! `borealis-bench`: measure Borealis side by side with the machine's ceilings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bench::node_ingest::{self, IngestLoad};
use tools::cluster::{ensure_key_file, free_udp_port, Launcher, NodeProcess, NodeSpec};

#[derive(Debug, Parser)]
#[command(
    name = "borealis-bench",
    version,
    about = "Measure Borealis side by side with the machine's ceilings."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Durable ingest of one storage node (started here) next to fio's flushed sequential
    /// writes of the same block size on the same directory, measured in one run.
    Node {
        /// Record payload sizes to measure, in bytes.
        #[arg(long, value_delimiter = ',', default_value = "1024,16384")]
        record_bytes: Vec<usize>,
        /// Records outstanding (sent, not yet acked) to measure with.
        #[arg(long, value_delimiter = ',', default_value = "1,1000")]
        in_flight: Vec<usize>,
        /// Most records per batch.
        #[arg(long, default_value_t = 128)]
        batch_records_max: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Directory for the node's data and fio's file (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Journal writes buffered instead of O_DIRECT.
        #[arg(long)]
        no_direct_io: bool,
        /// Skip the fio comparison.
        #[arg(long)]
        no_fio: bool,
    },
    /// Runs a storage node (used by `node`; see `storaged --help`).
    #[command(hide = true, disable_help_flag = true)]
    Storaged {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Storaged { args } => storaged::cli_main(std::iter::once("storaged".into()).chain(args)),
        Command::Node { record_bytes, in_flight, batch_records_max, seconds, dir, no_direct_io, no_fio } => {
            let settings =
                NodeBench { record_bytes, in_flight, batch_records_max, seconds, dir, no_direct_io, no_fio };
            match node_bench(settings) {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("borealis-bench: {error}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

struct NodeBench {
    record_bytes: Vec<usize>,
    in_flight: Vec<usize>,
    batch_records_max: usize,
    seconds: u64,
    dir: Option<PathBuf>,
    no_direct_io: bool,
    no_fio: bool,
}

fn node_bench(s: NodeBench) -> Result<(), String> {
    let temp =
        tempfile::tempdir_in(s.dir.clone().unwrap_or_else(std::env::temp_dir)).map_err(|e| e.to_string())?;
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
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
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
