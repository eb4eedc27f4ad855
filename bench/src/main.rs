//! `borealis-bench`: measure Borealis side by side with the machine's ceilings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bench::page_reads::ReadLoad;

mod commands;
use commands::append::{append_bench, AppendGrid};
use commands::budget::budget_bench;
use commands::compare::compare_bench;
use commands::limits::limits_bench;
use commands::nbd::nbd_bench;
use commands::node::{node_bench, NodeBench};
use commands::read::read_bench;
use commands::recovery::recovery_bench;
use commands::repair::repair_bench;
use commands::sqlite::sqlite_bench;

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
    /// The whole write path: a local six-node cluster (4 of 6, every ack flushed, encrypted)
    /// started here, the `borealis dev` workload at each record size and in-flight limit,
    /// records/s, MB/s, commit latency percentiles, CPU s/GB for client and nodes, and a
    /// read-back of a sample. Each transaction is two records of the given size and a commit.
    Append {
        /// Record payload sizes to measure, in bytes.
        #[arg(long, value_delimiter = ',', default_value = "1024")]
        record_bytes: Vec<usize>,
        /// Transactions outstanding (appended, not yet durable).
        #[arg(long, value_delimiter = ',', default_value = "1,1000")]
        in_flight: Vec<usize>,
        /// Largest UDP payloads (datagram sizes) to measure with, writer and nodes alike:
        /// 1472 fits a 1500-byte Ethernet MTU; 4000 stands in for jumbo frames.
        #[arg(long, value_delimiter = ',', default_value = "1472")]
        udp_payload_bytes: Vec<u16>,
        /// Open loop: offer this many transactions per second and count each one's latency
        /// from when it was due, so stalls are not hidden (coordinated omission); the
        /// in-flight limit still caps what is outstanding. Closed loop if unset.
        #[arg(long, value_name = "PER_S")]
        rate: Option<f64>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Directory for the clusters' data (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the parameters and every figure here as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also draw each run (latency histogram, records/s over time) as SVG: this file for
        /// one run, FILE-STEM-<run>.svg beside it for several.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// The nodes' background scrub rate (bytes/s; 0 turns scrub off). Unset: the daemon's
        /// default (256 KiB/s). Compare runs with and without to see what scrub costs.
        #[arg(long, value_name = "BYTES")]
        scrub_bytes_per_s: Option<u64>,
    },
    /// Borealis next to a 3-member etcd cluster (Debian's etcd-server on loopback, started and
    /// stopped here, installed if missing and root): the same value size and value writes in
    /// flight, interleaved A/B/A/B, with the ratio of the means. A Borealis transaction holds
    /// two value records (and a small commit marker), so Borealis runs half the concurrency in
    /// transactions (at least one) and counts value writes: two per transaction. etcd counts
    /// puts. Both make every acknowledged write durable (fsync).
    Compare {
        /// Record and value size, in bytes.
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        /// Writes in flight, one comparison each.
        #[arg(long, value_delimiter = ',', default_value = "1,1000")]
        concurrency: Vec<usize>,
        /// A/B rounds per concurrency.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Directory for the data (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the parameters and every figure here as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Recovery times: a node restarted (SIGKILL) after ingesting for each duration with no
    /// checkpoint (its whole journal is the tail to replay), and a new writer's open after a
    /// writer crashed with a window of records appended and none awaited.
    Recovery {
        /// Record payload size, in bytes.
        #[arg(long, default_value_t = 1024)]
        record_bytes: usize,
        /// Seconds of ingest before each node crash.
        #[arg(long, value_delimiter = ',', default_value = "2,8")]
        ingest_seconds: Vec<u64>,
        /// Records the crashed writer appended without waiting (its LAL window), per run.
        #[arg(long, value_delimiter = ',', default_value = "1000,20000,100000")]
        window: Vec<u64>,
        /// Then one run with the writer's default LAL (10,000,000: the "full LAL") and this
        /// many records appended (0: none). A full LAL's worth of records (10 GB of 1 KiB
        /// records per replica, all held by the crashed writer) does not fit one machine.
        #[arg(long, default_value_t = 1_000_000)]
        full_lal_window: u64,
        /// Directory for the data (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the parameters and every figure here as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Self-healing: a node of a local six-node cluster holding `--gib` of segment data is
    /// killed (SIGKILL), its data directory deleted, and it is started again empty; it rebuilds
    /// every segment from its peers while a foreground writer commits one record at a time.
    /// Reports the time until the node is whole (every PG back to six complete members), the
    /// re-replication MB/s next to the disk's flushed-write ceiling measured in the same run,
    /// and the foreground commit p99 before and during the repair.
    Repair {
        /// Segment data the lost node holds, in GiB (fractions allowed, e.g. 0.1).
        #[arg(long, default_value_t = 1.0)]
        gib: f64,
        /// The volume's page size in bytes.
        #[arg(long, default_value_t = 16384)]
        page_bytes: u32,
        /// Seconds of foreground commits measured before the node is lost.
        #[arg(long, default_value_t = 5)]
        before_seconds: u64,
        /// Skip the fio disk ceiling (it needs fio installed).
        #[arg(long)]
        no_fio: bool,
        /// Directory for the data (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the parameters and every figure here as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// The machine's ceilings on the spot: fio flushed sequential writes on the data directory,
    /// AES-256-GCM sealing and CRC32C on one core, each at the given block sizes; and quinn's
    /// throughput on loopback between two processes at each datagram size.
    Limits {
        /// Block sizes, in bytes.
        #[arg(long, value_delimiter = ',', default_value = "4096,65536")]
        block_bytes: Vec<usize>,
        /// Datagram sizes (largest UDP payloads) for the QUIC ceiling.
        #[arg(long, value_delimiter = ',', default_value = "1472,4000")]
        udp_payload_bytes: Vec<u16>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Directory fio writes in (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the parameters and every figure here as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// The time budget of one commit at 1 in flight: the client's encoding, a QUIC round trip,
    /// a flushed disk write, one node's append and the whole quorum commit, each measured on
    /// its own in one run, and what is left for waiting on the 4th of 6 acks.
    Budget {
        /// Record payload size, in bytes.
        #[arg(long, default_value_t = 1024)]
        record_bytes: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Directory for the data (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The NBD gateway (`borealis nbd` on a local six-node cluster) next to qemu-nbd serving a
    /// raw file on the same disk (--cache=none --aio=io_uring), with fio's nbd engine: 4 KiB
    /// random writes and reads at iodepth 1 and 32, 1 MiB sequential writes.
    Nbd {
        /// The device's size, in bytes.
        #[arg(long, default_value_t = 256 << 20)]
        size: u64,
        /// Seconds per fio job.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Directory for the data (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the parameters and every figure here as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// SQLite through the `borealis` VFS (the borealis-sqlite extension, built beside this
    /// executable, on a local six-node cluster) next to SQLite on a local file in WAL/FULL and
    /// DELETE/FULL: single-row inserts and bank transfers at 1 and 8 connections, commits/s and
    /// p50/p99 commit latency, from Debian's /usr/bin/python3.
    Sqlite {
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Directory for the data (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the parameters and every figure here as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
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
    /// read_page latency and pages/s on one storage node, hot (cached) and cold, next to a
    /// plain pread of the same size on the same disk, measured in one run.
    Read {
        /// Pages written (as images, then patches) and read.
        #[arg(long, default_value_t = 32_768)]
        pages: u64,
        /// Page size in bytes.
        #[arg(long, default_value_t = 4096)]
        page_bytes: u32,
        /// Patch records per page after its image (a cold read applies the newest image only
        /// once the coalescer folded them).
        #[arg(long, default_value_t = 2)]
        patches: u64,
        /// Pages read again and again in the hot run.
        #[arg(long, default_value_t = 64)]
        hot_pages: u64,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Directory for the node's data and the pread file (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Receives QUIC streams and discards them (used by `limits`).
    #[command(hide = true)]
    QuicSink {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        pki_dir: PathBuf,
        #[arg(long)]
        udp_payload_bytes: u16,
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
        Command::Append {
            record_bytes,
            in_flight,
            udp_payload_bytes,
            rate,
            seconds,
            dir,
            json,
            svg,
            scrub_bytes_per_s,
        } => {
            let grid = AppendGrid { record_bytes, in_flight, udp_payload_bytes, rate, scrub_bytes_per_s };
            report(append_bench(&grid, Duration::from_secs(seconds), dir, json, svg))
        }
        Command::QuicSink { listen, pki_dir, udp_payload_bytes } => {
            let result = bench::current_thread()
                .and_then(|r| r.block_on(bench::quic_ceiling::sink(listen, &pki_dir, udp_payload_bytes)));
            report(result)
        }
        Command::Compare { value_bytes, concurrency, rounds, seconds, dir, json } => {
            let duration = Duration::from_secs(seconds);
            report(compare_bench(value_bytes, &concurrency, rounds, duration, dir, json))
        }
        Command::Recovery { record_bytes, ingest_seconds, window, full_lal_window, dir, json } => {
            report(recovery_bench(record_bytes, &ingest_seconds, &window, full_lal_window, dir, json))
        }
        Command::Repair { gib, page_bytes, before_seconds, no_fio, dir, json } => {
            let bytes = (gib * (1u64 << 30) as f64) as u64;
            let load =
                bench::repair::RepairLoad { bytes, page_bytes, before: Duration::from_secs(before_seconds) };
            report(repair_bench(load, no_fio, dir, json))
        }
        Command::Limits { block_bytes, udp_payload_bytes, seconds, dir, json } => {
            report(limits_bench(&block_bytes, &udp_payload_bytes, Duration::from_secs(seconds), dir, json))
        }
        Command::Read { pages, page_bytes, patches, hot_pages, seconds, dir } => {
            let load =
                ReadLoad { pages, page_bytes, patches, hot_pages, duration: Duration::from_secs(seconds) };
            report(read_bench(load, dir))
        }
        Command::Nbd { size, seconds, dir, json } => report(nbd_bench(size, seconds, dir, json)),
        Command::Sqlite { seconds, dir, json } => report(sqlite_bench(seconds, dir, json)),
        Command::Budget { record_bytes, seconds, dir } => report(budget_bench(record_bytes, seconds, dir)),
        Command::Node { record_bytes, in_flight, batch_records_max, seconds, dir, no_direct_io, no_fio } => {
            let settings =
                NodeBench { record_bytes, in_flight, batch_records_max, seconds, dir, no_direct_io, no_fio };
            report(node_bench(settings))
        }
    };
    std::process::exit(code);
}

fn report(result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("borealis-bench: {error}");
            1
        }
    }
}
