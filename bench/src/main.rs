//! `borealis-bench`: measure Borealis side by side with the machine's ceilings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bench::node_ingest::{self, IngestLoad};
use bench::page_reads::{ReadLoad, Reader};
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
        #[arg(long, value_delimiter = ',', default_value = "1000,20000")]
        window: Vec<u64>,
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
        Command::Recovery { record_bytes, ingest_seconds, window, dir, json } => {
            report(recovery_bench(record_bytes, &ingest_seconds, &window, dir, json))
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

/// The append runs to make: every combination.
struct AppendGrid {
    record_bytes: Vec<usize>,
    in_flight: Vec<usize>,
    udp_payload_bytes: Vec<u16>,
    rate: Option<f64>,
    scrub_bytes_per_s: Option<u64>,
}

fn append_bench(
    grid: &AppendGrid,
    duration: Duration,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    let temp = bench::scratch_dir(dir)?;
    let runs = grid.record_bytes.len() * grid.in_flight.len() * grid.udp_payload_bytes.len();
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for &udp_payload_bytes in &grid.udp_payload_bytes {
        for &record_bytes in &grid.record_bytes {
            for &in_flight in &grid.in_flight {
                eprintln!(
                    "borealis-bench: append, {record_bytes}-byte records, {in_flight} in flight, {udp_payload_bytes}-byte datagrams"
                );
                let load = bench::append::AppendLoad {
                    record_bytes,
                    in_flight,
                    duration,
                    udp_payload_bytes,
                    rate: grid.rate,
                    scrub_bytes_per_s: grid.scrub_bytes_per_s,
                };
                let result = bench::append::run(temp.path(), load)?;
                let tag = format!("{record_bytes}B_{in_flight}_dgram{udp_payload_bytes}");
                for (name, unit, value) in result.figures() {
                    figures.push((format!("append_{tag}_{name}"), unit, value));
                }
                if let Some(svg) = &svg {
                    let title = format!(
                        "append: {record_bytes}-byte records, {in_flight} in flight, {udp_payload_bytes}-byte datagrams"
                    );
                    let s = &result.summary;
                    let picture = bench::svg::RunPicture {
                        title,
                        latency_buckets: &s.latency_buckets,
                        timeline: &s.timeline,
                    };
                    bench::svg::draw(&bench::svg::path_for(svg, &tag, runs), &picture)?;
                }
                rows.push((record_bytes, in_flight, udp_payload_bytes, result));
            }
        }
    }
    println!(
        "append: 6 local nodes (3 AZs x 2), write quorum 4 of 6, every ack flushed, AES-256-GCM at rest"
    );
    println!(
        "{:>7} {:>9} {:>6} | {:>10} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>7} | {:>9} {:>9} | {:>8}",
        "bytes",
        "in flight",
        "dgram",
        "records/s",
        "MB/s",
        "p50 ms",
        "p90",
        "p99",
        "p99.9",
        "max",
        "client s/GB",
        "nodes s/GB",
        "verified"
    );
    for (bytes, in_flight, dgram, r) in &rows {
        let s = &r.summary;
        println!(
            "{bytes:>7} {in_flight:>9} {dgram:>6} | {:>10.0} {:>8.2} | {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} | {:>11.1} {:>10.1} | {:>4}/{:<4}",
            s.records_per_s,
            s.payload_mb_per_s,
            s.commit_p50_ms,
            s.commit_p90_ms,
            s.commit_p99_ms,
            s.commit_p999_ms,
            s.commit_max_ms,
            r.cpu_s_per_gb(r.client_cpu_s),
            r.cpu_s_per_gb(r.nodes_cpu_s),
            s.verified,
            s.sampled
        );
        if s.backlog_at_end > 0 {
            println!(
                "{:>24} open loop: {} transactions were due but never appended (the in-flight limit held them); no latency counts them",
                "", s.backlog_at_end
            );
        }
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "append", "record_bytes": grid.record_bytes, "in_flight": grid.in_flight,
            "udp_payload_bytes": grid.udp_payload_bytes, "rate_per_s": grid.rate,
            "seconds": duration.as_secs(), "nodes": 6, "write_quorum": 4,
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}

/// Value records per transaction of the dev workload (its third record is the commit marker).
const VALUES_PER_TRANSACTION: usize = 2;

fn compare_bench(
    value_bytes: usize,
    concurrency: &[usize],
    rounds: usize,
    duration: Duration,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    bench::etcd::ensure_installed()?;
    let temp = bench::scratch_dir(dir)?;
    let runtime = bench::current_thread()?;
    let mut etcd = bench::etcd::EtcdCluster::start(&temp.path().join("etcd"))?;
    let mut figures = Vec::new();
    let mut table = Vec::new();
    for &conc in concurrency {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!(
                "borealis-bench: compare, {value_bytes} bytes, {conc} in flight, round {}: Borealis",
                round + 1
            );
            let load = bench::append::AppendLoad {
                record_bytes: value_bytes,
                in_flight: conc.div_ceil(VALUES_PER_TRANSACTION),
                duration,
                udp_payload_bytes: transport::Tuning::default().max_udp_payload_bytes,
                rate: None,
                scrub_bytes_per_s: None,
            };
            let root = temp.path().join(format!("borealis-{conc}-{round}"));
            let a = bench::append::run(&root, load)?;
            eprintln!(
                "borealis-bench: compare, {value_bytes} bytes, {conc} in flight, round {}: etcd",
                round + 1
            );
            let load = bench::etcd::EtcdLoad { value_bytes, concurrency: conc, duration };
            let b = runtime.block_on(bench::etcd::run_puts(&etcd, load))?;
            let values_per_s = a.summary.transactions_per_s * VALUES_PER_TRANSACTION as f64;
            ours.push((values_per_s, a.summary.commit_p50_ms, a.summary.commit_p99_ms));
            let ms = |us: u64| us as f64 / 1e3;
            theirs.push((
                b.puts_per_s(),
                ms(b.latency_us.value_at_quantile(0.5)),
                ms(b.latency_us.value_at_quantile(0.99)),
            ));
        }
        let mean = |v: &[(f64, f64, f64)]| v.iter().map(|x| x.0).sum::<f64>() / v.len().max(1) as f64;
        let ratio = mean(&ours) / mean(&theirs).max(f64::EPSILON);
        figures.push((
            format!("compare_{value_bytes}B_{conc}_borealis_value_writes_per_s"),
            "writes/s",
            mean(&ours),
        ));
        figures.push((format!("compare_{value_bytes}B_{conc}_etcd_puts_per_s"), "puts/s", mean(&theirs)));
        figures.push((format!("compare_{value_bytes}B_{conc}_ratio"), "x", ratio));
        table.push((conc, ours, theirs, ratio));
    }
    etcd.stop();
    println!("compare: Borealis (6 nodes, 4 of 6, flushed) vs etcd 3.4 (3 members, fsync), {value_bytes}-byte writes, rounds interleaved");
    println!(
        "{:>9} {:>5} | {:>17} {:>7} {:>7} | {:>10} {:>7} {:>7}",
        "in flight", "round", "Borealis writes/s", "p50 ms", "p99 ms", "etcd puts/s", "p50 ms", "p99 ms"
    );
    for (conc, ours, theirs, ratio) in &table {
        for (round, (a, b)) in ours.iter().zip(theirs).enumerate() {
            println!(
                "{conc:>9} {:>5} | {:>17.0} {:>7.2} {:>7.2} | {:>10.0} {:>7.2} {:>7.2}",
                round + 1,
                a.0,
                a.1,
                a.2,
                b.0,
                b.1,
                b.2
            );
        }
        println!("{conc:>9} ratio of the means, Borealis value writes/s over etcd puts/s: {ratio:.1}x");
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "compare", "value_bytes": value_bytes, "concurrency": concurrency,
            "rounds": rounds, "seconds": duration.as_secs(),
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}

fn recovery_bench(
    record_bytes: usize,
    ingest_seconds: &[u64],
    windows: &[u64],
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    let temp = bench::scratch_dir(dir)?;
    let durations: Vec<Duration> = ingest_seconds.iter().map(|s| Duration::from_secs(*s)).collect();
    eprintln!("borealis-bench: node restarts after {ingest_seconds:?} s of ingest");
    let restarts = bench::recovery::node_restarts(temp.path(), record_bytes, &durations)?;
    let mut takeovers = Vec::new();
    for (i, window) in windows.iter().enumerate() {
        eprintln!("borealis-bench: writer crash with {window} records appended, then a new writer");
        let root = temp.path().join(format!("takeover-{i}"));
        takeovers.push(bench::recovery::writer_takeover(&root, record_bytes, *window)?);
    }
    let mut figures = Vec::new();
    println!("node restart (SIGKILL, no checkpoint: replay the whole journal), {record_bytes}-byte records");
    println!("{:>12} {:>12} {:>12} {:>14}", "records", "payload MiB", "restart ms", "MiB/s replayed");
    for (r, seconds) in restarts.iter().zip(ingest_seconds) {
        let mib = r.tail_payload_bytes as f64 / (1 << 20) as f64;
        let ms = r.restart.as_secs_f64() * 1e3;
        println!("{:>12} {mib:>12.1} {ms:>12.0} {:>14.0}", r.records, mib / r.restart.as_secs_f64());
        figures.push((format!("node_restart_after_{seconds}s_ingest_ms"), "ms", ms));
        figures.push((format!("node_restart_after_{seconds}s_ingest_payload_mib"), "MiB", mib));
    }
    println!("writer takeover on 6 local nodes: Writer::open after the old writer crashed");
    println!("{:>14} {:>12}", "window records", "open ms");
    for t in &takeovers {
        let ms = t.open.as_secs_f64() * 1e3;
        println!("{:>14} {ms:>12.0}", t.window_records);
        figures.push((format!("writer_takeover_{}_records_ms", t.window_records), "ms", ms));
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "recovery", "record_bytes": record_bytes,
            "ingest_seconds": ingest_seconds, "window": windows,
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}

fn repair_bench(
    load: bench::repair::RepairLoad,
    no_fio: bool,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    let temp = bench::scratch_dir(dir)?;
    let ceiling = if no_fio {
        None
    } else {
        let fio = bench::fio::flushed_sequential_write(temp.path(), 65536, true, Duration::from_secs(3))?;
        Some(fio.bytes_per_s)
    };
    let r = bench::repair::run(temp.path(), load)?;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let repair_s = r.repair.as_secs_f64();
    let repair_mb_per_s = mb(load.bytes) / repair_s;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "repair of one node holding {:.0} MB of segment data ({} B pages), 6 local nodes",
        mb(load.bytes),
        load.page_bytes
    );
    println!(
        "  fill: {:.1} s; the node's data directory held {:.0} MB",
        r.fill.as_secs_f64(),
        mb(r.node_bytes)
    );
    println!("  repair: {repair_s:.2} s until every PG had six complete members again");
    println!(
        "  re-replication: {repair_mb_per_s:.0} MB/s ({:.0} MB fetched as page versions)",
        mb(r.hydrated_bytes)
    );
    if let Some(ceiling) = ceiling {
        println!("  disk ceiling (fio 64 KiB write + fdatasync, same run): {:.0} MB/s", ceiling / 1e6);
    }
    println!(
        "  foreground commit p99: {:.2} ms before ({} commits), {:.2} ms during the repair ({} commits)",
        ms(r.p99_before),
        r.commits_before,
        ms(r.p99_during),
        r.commits_during
    );
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "repair", "bytes": load.bytes, "page_bytes": load.page_bytes,
            "before_seconds": load.before.as_secs(),
        });
        let mut figures = vec![
            ("repair_seconds".to_string(), "s", repair_s),
            ("repair_mb_per_s".to_string(), "MB/s", repair_mb_per_s),
            ("hydrated_mb".to_string(), "MB", mb(r.hydrated_bytes)),
            ("fill_seconds".to_string(), "s", r.fill.as_secs_f64()),
            ("p99_before_ms".to_string(), "ms", ms(r.p99_before)),
            ("p99_during_ms".to_string(), "ms", ms(r.p99_during)),
        ];
        if let Some(ceiling) = ceiling {
            figures.push(("disk_ceiling_mb_per_s".to_string(), "MB/s", ceiling / 1e6));
        }
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}

fn limits_bench(
    block_bytes: &[usize],
    udp_payload_bytes: &[u16],
    duration: Duration,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    let temp = bench::scratch_dir(dir)?;
    println!("limits on {}: one core for AES-256-GCM and CRC32C", temp.path().display());
    println!(
        "{:>10} | {:>14} {:>12} | {:>14} | {:>14}",
        "block", "fio writes/s", "fio MB/s", "AES-GCM MB/s", "CRC32C MB/s"
    );
    let mut figures = Vec::new();
    for &block in block_bytes {
        let fio = bench::fio::flushed_sequential_write(temp.path(), block, block % 4096 == 0, duration)?;
        let aes = bench::limits::aes_gcm_bytes_per_s(block, duration);
        let crc = bench::limits::crc32c_bytes_per_s(block, duration);
        println!(
            "{block:>10} | {:>14.0} {:>12.1} | {:>14.0} | {:>14.0}",
            fio.writes_per_s,
            fio.bytes_per_s / 1e6,
            aes / 1e6,
            crc / 1e6
        );
        figures.push((format!("fio_{block}B_writes_per_s"), "writes/s", fio.writes_per_s));
        figures.push((format!("fio_{block}B_mb_per_s"), "MB/s", fio.bytes_per_s / 1e6));
        figures.push((format!("aes_gcm_{block}B_mb_per_s"), "MB/s", aes / 1e6));
        figures.push((format!("crc32c_{block}B_mb_per_s"), "MB/s", crc / 1e6));
    }
    println!("{:>10} | {:>14}", "datagram", "QUIC MB/s");
    for &dgram in udp_payload_bytes {
        let rate = bench::quic_ceiling::throughput(temp.path(), dgram, duration)?;
        println!("{dgram:>10} | {:>14.0}", rate / 1e6);
        figures.push((format!("quic_loopback_dgram{dgram}_mb_per_s"), "MB/s", rate / 1e6));
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "limits", "block_bytes": block_bytes, "udp_payload_bytes": udp_payload_bytes,
            "seconds": duration.as_secs(),
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}

fn read_bench(load: ReadLoad, dir: Option<PathBuf>) -> Result<(), String> {
    let temp = bench::scratch_dir(dir)?;
    let root = temp.path();
    let pki =
        transport::ensure_dev_pki(&root.join("pki"), &["node-1", "client"]).map_err(|e| e.to_string())?;
    ensure_key_file(&root.join("kek")).map_err(|e| e.to_string())?;
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
    let spec = NodeSpec {
        node_id: 1,
        az: 0,
        listen: ([127, 0, 0, 1], free_udp_port().map_err(|e| e.to_string())?).into(),
        admin: Some(admin),
        data_dir: root.join("node"),
        tls: pki.files_for("node-1"),
        key_file: root.join("kek"),
        // A small page cache, so the cold run misses it.
        extra: vec!["--memory-bytes-max".into(), (64u64 << 20).to_string()],
    };
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let mut node =
        NodeProcess::start(&launcher, spec.clone(), root.join("node.log")).map_err(|e| e.to_string())?;
    let runtime = bench::current_thread()?;
    let data_bytes = load.pages * u64::from(load.page_bytes);
    let pread_file = root.join("pread.bin");
    bench::page_reads::make_pread_file(&pread_file, data_bytes)?;
    let results = runtime.block_on(async {
        let mut reader = Reader::connect(spec.listen, "node-1", &pki.files_for("client"), load).await?;
        eprintln!(
            "borealis-bench: writing {} pages of {} bytes and {} patches each",
            load.pages, load.page_bytes, load.patches
        );
        reader.load().await?;
        eprintln!("borealis-bench: waiting for the coalescer to fold the log into page images");
        wait_for_folding(admin, Duration::from_secs(120)).await?;
        let round_trips = reader.run_round_trips().await?;
        let hot = reader.run(u64::MAX, |i| i % load.hot_pages).await?;
        let page_len = load.page_bytes as usize;
        let pread_hot = bench::page_reads::pread_run(&pread_file, page_len, load.duration, load.hot_pages)?;
        let dropped = bench::page_reads::drop_kernel_caches();
        let cold = reader.run(load.pages, |i| bench::page_reads::scatter(i, load.pages)).await?;
        bench::page_reads::drop_kernel_caches();
        let pread_cold = bench::page_reads::pread_run(&pread_file, page_len, load.duration, 0)?;
        Ok::<_, String>((round_trips, hot, pread_hot, cold, pread_cold, dropped))
    });
    node.stop();
    let (round_trips, hot, pread_hot, cold, pread_cold, dropped) = results?;
    println!(
        "read_page vs pread, {} bytes, QD1, {} pages ({} MiB) on {}",
        load.page_bytes,
        load.pages,
        data_bytes >> 20,
        root.display()
    );
    println!(
        "{:>6} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>12}",
        "", "pages/s", "p50 us", "p99 us", "pread/s", "p50 us", "p99 us", "pages/pread"
    );
    for (name, ours, theirs) in [("hot", &hot, &pread_hot), ("cold", &cold, &pread_cold)] {
        println!(
            "{name:>6} | {:>10.0} {:>8} {:>8} | {:>10.0} {:>8} {:>8} | {:>12.3}",
            ours.per_s(),
            ours.p(0.5),
            ours.p(0.99),
            theirs.per_s(),
            theirs.p(0.5),
            theirs.p(0.99),
            ours.per_s() / theirs.per_s()
        );
    }
    println!(
        "   rpc | {:>10.0} {:>8} {:>8} |  (a status request: the QUIC round trip every read pays)",
        round_trips.per_s(),
        round_trips.p(0.5),
        round_trips.p(0.99)
    );
    if !dropped {
        println!("note: could not drop the kernel's page cache (needs root): cold reads may hit it");
    }
    Ok(())
}

/// Waits until the node's journal holds only its head file (everything else folded and
/// recycled), reading its admin metrics.
async fn wait_for_folding(admin: std::net::SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let metrics = http_get(admin, "/metrics").unwrap_or_default();
        let value =
            |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        if value("borealis_journal_files ") == Some(1) && value("borealis_records_held_for_floor ") == Some(0)
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the coalescer did not fold the log within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

fn free_tcp_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
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
