//! `borealis`: the developer and operator command for Borealis.
//!
//! `borealis dev` (the main command) runs the local cluster with a workload streamed through the
//! client and prints a summary; see `borealis dev --help` and [`tools::dev`].
//!
//! `borealis cluster up|status|down` manages a local cluster (3 AZs × 2 nodes by default,
//! `--nodes-per-az` more) in the background, all of its state in one directory
//! (`./borealis-dev` by default). A hidden `storaged` subcommand runs a storage node, so the
//! cluster needs no separately built `storaged` binary: nodes are this executable run as
//! `borealis storaged ...`.
//!
//! Exit status: 0 on success, 1 on an error (one line on stderr, `borealis: ...`), 130 when
//! interrupted; `cluster status` exits with its verdict (0 `HEALTH_OK`, 1 `HEALTH_WARN`,
//! 2 `HEALTH_ERR`, 3 when it could not tell).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use tools::cluster::Launcher;
use tools::daemon::{self, DaemonError};
use tools::dev::{self, DevError, DevOptions};
use tools::health;
use tools::interrupt::{self, Interrupted};
use tools::local::map::NodesPerAz;
use tools::local::{LocalCluster, LocalError, DEFAULT_DIR};
use tools::probe::{self, Target};
use tools::report;

#[derive(Debug, Parser)]
#[command(name = "borealis", version, about = "Run and inspect a local Borealis storage cluster.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the local cluster (6 nodes by default), streams a workload through the client for
    /// a while, verifies reads and prints a summary.
    #[command(after_long_help = DEV_AFTER_HELP)]
    Dev(DevArgs),
    /// A local cluster of storage nodes on loopback in 3 simulated AZs (2 per AZ by default).
    Cluster(ClusterArgs),
    /// Serves a volume as a Network Block Device (qemu, qemu-img, nbdcopy, fio, nbd-client)
    /// over TCP (nbd://127.0.0.1:10809/NAME by default) or a Unix socket. The cluster's nodes
    /// must be running (`borealis cluster up --dir DIR`). Writes are answered once appended
    /// (and read back from the gateway until durable); FLUSH, FUA and disconnecting wait until
    /// they are on 4 of 6 segments. Every connection shares one writer, so FLUSH anywhere
    /// covers all.
    Nbd(NbdArgs),
    /// Volumes by hand: ls, create (claim), grant/revoke roles, write a file to pages, read
    /// pages back, info (ACL, VDL, PGs, members). --as NAME acts with pki/NAME.pem. ACLs need
    /// the cluster map in etcd (docs/security.md).
    Volume(tools::volume::VolumeArgs),
    /// The cluster's encryption keys: `keys rotate-kek` makes a new key-encryption key and
    /// re-wraps every node's data keys under it (docs/security.md).
    Keys(tools::keys::KeysArgs),
    /// Client certificates from the cluster's CA: issue one (its identity is
    /// borealis://client/NAME), or revoke one (DIR/pki/crl.pem; nodes given it as `tls.crl`
    /// refuse it from their next SIGHUP).
    Cert(tools::certs::CertArgs),
    /// Runs a storage node (used by the cluster commands; see `storaged --help`).
    #[command(hide = true, disable_help_flag = true)]
    Storaged {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// `borealis dev --help`, after the flags.
const DEV_AFTER_HELP: &str = "\
What it does:
  1. Creates DIR on first use: cluster.toml (nodes and loopback ports), a development CA with
     node and client certificates (pki/), the nodes' key file (kek), data and log directories.
  2. Runs the storage nodes, --nodes-per-az in each of 3 simulated AZs (6 nodes by default),
     as children of this command, stopped at the end. If a background cluster (`borealis
     cluster up`) is running in DIR, it is used instead and left running.
  3. Opens volume 1 (4096-byte pages, 256 pages per PG, 4 PGs) and streams transactions for
     --duration: each is a page patch appending CSV rows to an orders table, one appending
     their line items to an order_lines table, and a commit marker; up to --in-flight at once.
     Progress goes to stderr (redrawn on a terminal, a line per second otherwise).
  4. Reads 200 durable records, sampled across the run, back from the nodes and compares
     them byte for byte.
  5. Prints the summary on stdout: records/s, payload MB/s, commit latency p50/p99/max
     (append to durable at 4 of 6 segments), final VDL, reads verified, and per node its AZ,
     pid, QUIC state, /health and segment count. --json FILE writes the same as JSON.

Ctrl-C (or SIGTERM) stops the workload, closes the writer, stops the nodes this command
started (with --keep-running too) and exits 130; a second Ctrl-C kills the foreground nodes
at once and exits (nodes started with --keep-running then stay up: `borealis cluster down`).
Node data is crash-safe either way.

Exit status: 0 when every sampled record read back as written; 1 on an error or a mismatch;
130 when interrupted.";

#[derive(Debug, Args)]
struct NbdArgs {
    /// A `borealis dev` / `cluster` directory: the cluster map and the client certificate.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// The volume to serve (created on first use).
    #[arg(long, value_name = "ID", default_value_t = 0x4e42)]
    volume: u64,
    /// The device's size in bytes (a multiple of 512): needed when the volume is new; kept in
    /// the volume, and a different size later is refused.
    #[arg(long, value_name = "BYTES")]
    size: Option<u64>,
    /// TCP address to listen on (default 127.0.0.1:10809, NBD's port).
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "socket")]
    listen: Option<std::net::SocketAddr>,
    /// Unix socket to listen on instead of TCP.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The export's name (clients may also ask for the default export, "").
    #[arg(long, value_name = "NAME", default_value = "borealis")]
    export: String,
    /// Serve Prometheus `GET /metrics` here (requests, bytes and latency by command, in
    /// flight, connections, VDL and how far it trails).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// The cluster's directory: map, certificates, key, data, logs (created on first use).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// How long to stream the workload, e.g. 10s, 1500ms, 2m (a bare number is seconds).
    /// Outstanding transactions are then waited for, so the run lasts a little longer.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = dev::parse_duration)]
    duration: Duration,
    /// Also writes the summary as JSON to FILE: flat fields (records, records_per_s,
    /// payload_mb_per_s, commit_p50_ms, commit_p99_ms, commit_max_ms, vdl, sampled, verified,
    /// nodes_healthy, ...) and a `nodes` list (id, az, pid, up, health, healthy, segments).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Leaves the nodes running when the run ends. They are then started in the background,
    /// as `borealis cluster up` starts them (own session, pid file, logs in DIR/logs), because
    /// nodes started as children of this command cannot outlive it; `borealis cluster status`
    /// and `borealis cluster down` manage them afterwards. An interrupt still stops them.
    #[arg(long)]
    keep_running: bool,
    /// Target payload size of each data record, in bytes: as many whole CSV rows as fit (at
    /// least one). Each transaction carries two such records and a short commit marker.
    /// 64..=4000.
    #[arg(long, value_name = "N", default_value_t = dev::DEFAULT_RECORD_BYTES,
          value_parser = record_bytes)]
    record_bytes: usize,
    /// Transactions appended and not yet durable, at most: the workload's concurrency.
    /// Commit latency includes the wait behind the others in flight. 1..=4096.
    #[arg(long, value_name = "N", default_value_t = dev::DEFAULT_IN_FLIGHT, value_parser = in_flight)]
    in_flight: usize,
    #[command(flatten)]
    layout: LayoutArgs,
}

/// How many nodes a new cluster gets.
#[derive(Debug, Args)]
struct LayoutArgs {
    /// Nodes in each of the 3 AZs when DIR has no cluster yet: 2 (6 nodes, the default) up to
    /// 8 (24 nodes). Each PG is placed on 6 of them, 2 per AZ, by rendezvous hashing, so with
    /// 3 (9 nodes) every node holds about two thirds of the PGs. A cluster that exists keeps
    /// its size: leave the flag out to use it; giving another number is refused.
    #[arg(long, value_name = "N")]
    nodes_per_az: Option<NodesPerAz>,
}

/// `borealis cluster status --help`, after the flags.
const STATUS_AFTER_HELP: &str = "\
Which PGs: every PG some answering node holds a segment of. Its members are the 6 nodes
placement names from the cluster map (2 in each of 3 AZs), whether they answer or not.

Member states (shown as node:state:scl):
  serving          holds the segment, at or above the PG's quorum SCL (the LSN 4 members reach)
  lagging          serving but below the quorum SCL; gossip catches it up; counted healthy
  hydrating        being rebuilt from a peer
  scrub-repairing  scrub found bad entries; they are being fetched again
  missing          the node answers but does not hold the segment
  not-writable     the node answers but /health is not 200 (disk full, failed)
  down             the node does not answer
Only serving and lagging members are healthy.

Verdict (the last line):
  HEALTH_OK    every PG has 6 healthy members and every node serves
  HEALTH_WARN  some PG has 4 or 5 healthy members, or some node does not serve
  HEALTH_ERR   some PG has fewer than 4 (a write quorum): writes to it stop; or fewer
               than 4 nodes serve at all

Exit status: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR, 3 when no verdict could be made
(no cluster in DIR, an unreadable cluster map, a usage error).";

fn record_bytes(text: &str) -> Result<usize, String> {
    bounded(text, dev::orders::RECORD_BYTES_MIN, dev::orders::RECORD_BYTES_MAX)
}

fn in_flight(text: &str) -> Result<usize, String> {
    bounded(text, 1, dev::IN_FLIGHT_MAX)
}

fn bounded(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let value: usize = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is outside {min}..={max}"))
    }
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// The cluster's directory: map, certificates, key, data, logs (created on first `up`).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    #[command(subcommand)]
    action: ClusterAction,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Makes a cluster of real hosts from a TOML list of them ([[host]] tables: name,
    /// address, az, optional data_dir and admin): a CA, a certificate per host and for
    /// clients, the key-encryption key, and per host a bundle (hosts/NAME: storaged.toml, tls/,
    /// kek) to copy to /etc/borealis there. OUT is then a cluster directory for clients
    /// (`--dir OUT`, BOREALIS_CLUSTER=OUT). See docs/operations.md, "Deploying on hosts".
    Init {
        /// The hosts file.
        #[arg(long, value_name = "FILE")]
        hosts: PathBuf,
        /// Where to write the cluster directory (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Keep the cluster map in etcd (an endpoint URL such as http://10.0.0.5:2379; repeat
        /// for each etcd member): the map is published there, bundles point the nodes at it,
        /// and `cluster add-host` can grow the running cluster. Without it, each bundle lists
        /// its peers.
        #[arg(long = "etcd", value_name = "URL")]
        etcd: Vec<String>,
        /// The etcd key prefix of the map.
        #[arg(long, value_name = "PREFIX", default_value = etcdmap::DEFAULT_PREFIX, requires = "etcd")]
        etcd_prefix: String,
        /// Turn on etcd's authentication (its authentication must still be off): a `root`
        /// user for operators, a node user that may read and write the map's prefix, a client
        /// user that may only read it, with new passwords in OUT/etcd/ (the nodes' in their
        /// bundles). Without it, anyone who can reach etcd can change the cluster map and ACLs.
        #[arg(long, requires = "etcd")]
        etcd_auth: bool,
        /// etcd speaks TLS (https:// endpoints): the CA certificate (PEM) that signed its server
        /// certificates. Copied into OUT/etcd/ca.pem and every bundle.
        #[arg(long, value_name = "FILE", requires = "etcd")]
        etcd_ca: Option<PathBuf>,
    },
    /// Adds a host to a running cluster whose map is in etcd (`init --hosts --etcd`): signs
    /// its certificate with the cluster's CA (DIR/pki), writes its bundle to DIR/hosts/NAME and
    /// adds it to the map as a spare. Running nodes and writers see it at once, without a
    /// restart; it holds no PG until it replaces a node (automatically after a node stays down,
    /// or `replace-node`). Start storaged on it with the bundle. See docs/operations.md.
    AddHost {
        /// The host's DNS name (its certificate's name).
        #[arg(long)]
        name: String,
        /// Its IP or IP:PORT (QUIC; port 7001 by default).
        #[arg(long)]
        address: String,
        /// Its availability zone.
        #[arg(long)]
        az: u16,
        /// Its data directory (default /var/lib/borealis).
        #[arg(long, value_name = "PATH")]
        data_dir: Option<PathBuf>,
        /// Its admin address (default 127.0.0.1:7101: loopback only).
        #[arg(long, value_name = "ADDRESS")]
        admin: Option<String>,
    },
    /// Starts the nodes in the background (restarting any that stopped) and prints them.
    Up {
        #[command(flatten)]
        layout: LayoutArgs,
    },
    /// Shows each node (process, QUIC answer, segments, admin health), then per PG its six
    /// members with their state and SCL, then a one-line verdict. Exits 0 HEALTH_OK,
    /// 1 HEALTH_WARN, 2 HEALTH_ERR, 3 if no verdict could be made.
    #[command(after_long_help = STATUS_AFTER_HELP)]
    Status {
        /// How long to wait for each node's answers, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 2000)]
        timeout_ms: u64,
        /// Also writes the assessment as JSON to FILE: health, pgs_total,
        /// pgs_fully_replicated, pgs_degraded, pgs_below_write_quorum, nodes_total,
        /// nodes_serving, `nodes` (id, az, up, serving, segments) and `pgs` (volume, pg,
        /// healthy, strays, members: node, az, state, scl, highest_lsn).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Stops the nodes: SIGTERM (each drains), then SIGKILL for any still running after 15 s.
    Down,
    /// Restarts the running nodes (e.g. onto a new binary). With --rolling, one AZ at a time:
    /// each AZ waits until every node serves and every PG has six healthy members again, so a
    /// writer keeps its write quorum throughout. Without it, all at once (down, then up).
    Restart {
        /// One AZ at a time, keeping every PG writable.
        #[arg(long)]
        rolling: bool,
        /// How long the cluster may take to be whole again after each AZ, in seconds.
        #[arg(long, value_name = "S", default_value_t = tools::rolling::WHOLE_TIMEOUT_DEFAULT.as_secs())]
        timeout_s: u64,
        /// For a cluster on hosts (`cluster init --hosts`): the shell command that restarts one
        /// node and returns once it is ready, run per node with BOREALIS_NODE_ID,
        /// BOREALIS_NODE_NAME and BOREALIS_NODE_ADDRESS set, e.g.
        /// 'ssh root@$BOREALIS_NODE_ADDRESS systemctl restart storaged'. Needs --rolling.
        #[arg(long, value_name = "COMMAND", requires = "rolling")]
        exec: Option<String>,
    },
    /// Replaces a node in every PG it serves by a spare node of its AZ (clusters of more than
    /// six nodes: `up --nodes-per-az 3`). The volume's writer decides and runs the change
    /// while it keeps writing: this command leaves the request in DIR/requests, where a
    /// writer opened on this cluster finds it within a second, and waits for its answer. A
    /// request no writer takes stays queued for the next one. See docs/membership.md.
    ReplaceNode {
        /// The node to replace (its id in the cluster map, as `status` shows it).
        node: u32,
        /// How long to wait for a writer to take the request, in seconds.
        #[arg(long, value_name = "S", default_value_t = 30)]
        wait_s: u64,
        /// Instead of the request file, ask node ID (any node serving the volume; over QUIC,
        /// with a cluster administrator's certificate): for a minute it passes the request on
        /// to the writer in its floor acks. For clusters on hosts, where no writer reads DIR.
        #[arg(long, value_name = "ID")]
        via_node: Option<u32>,
        /// The certificate to ask with (pki/NAME.pem; default: the cluster's client certificate).
        #[arg(long = "as", value_name = "NAME", requires = "via_node")]
        as_name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() && is_cluster_status(std::env::args().skip(1)) => {
            // A usage error of `cluster status` must not exit 2, its HEALTH_ERR.
            let _ = error.print();
            return ExitCode::from(health::EXIT_UNKNOWN);
        }
        Err(error) => error.exit(),
    };
    let result = match cli.command {
        Command::Storaged { args } => {
            let code = storaged::cli_main(std::iter::once("storaged".into()).chain(args));
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Command::Cluster(args) => cluster(args),
        Command::Volume(args) => tools::volume::run(args),
        Command::Keys(args) => tools::keys::run(args),
        Command::Cert(args) => tools::certs::run(args),
        Command::Dev(args) => dev_command(args),
        Command::Nbd(args) => {
            let options = tools::nbd::NbdOptions {
                dir: args.dir,
                volume: args.volume,
                size: args.size,
                listen: args.listen,
                socket: args.socket,
                export: args.export,
                metrics: args.metrics,
            };
            tools::nbd::run(&options).map(|()| ExitCode::SUCCESS).map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) if error.downcast_ref::<Interrupted>().is_some() || interrupted(&error) => {
            eprintln!("borealis: interrupted; nothing left running");
            ExitCode::from(interrupt::EXIT_INTERRUPTED as u8)
        }
        Err(error) => {
            eprintln!("borealis: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// True if the command line (without the program name) asks for `cluster status`.
fn is_cluster_status(mut args: impl Iterator<Item = String>) -> bool {
    args.next().as_deref() == Some("cluster") && args.any(|arg| arg == "status")
}

/// True if `error` is an interrupt wrapped in one of the library's error types.
fn interrupted(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<DaemonError>(), Some(DaemonError::Interrupted(_)))
        || matches!(
            error.downcast_ref::<LocalError>(),
            Some(LocalError::Launch(tools::cluster::LaunchError::Interrupted(_)))
        )
        || error.downcast_ref::<DevError>().is_some_and(DevError::is_interrupted)
}

fn dev_command(args: DevArgs) -> anyhow::Result<ExitCode> {
    interrupt::install()?;
    let options = DevOptions {
        dir: args.dir,
        duration: args.duration,
        keep_running: args.keep_running,
        record_bytes: args.record_bytes,
        in_flight: args.in_flight,
        udp_payload_bytes: transport::Tuning::default().max_udp_payload_bytes,
        rate: None,
        nodes_per_az: args.layout.nodes_per_az,
    };
    let launcher = Launcher::this_exe("storaged")?;
    // An error here means none of this command's nodes are running.
    let outcome = dev::run(&options, &launcher)?;
    if let Some(error) = &outcome.release_error {
        eprintln!("borealis: stopping the nodes: {error}");
    }
    let summary = match outcome.result {
        Ok(summary) => summary,
        Err(error) if error.is_interrupted() => {
            eprintln!("borealis: interrupted; {}", outcome.released);
            return Ok(ExitCode::from(interrupt::EXIT_INTERRUPTED as u8));
        }
        Err(error) => {
            eprintln!("borealis: {error}");
            eprintln!("borealis: {}", outcome.released);
            return Ok(ExitCode::FAILURE);
        }
    };
    print!("{}", summary.table());
    if let Some(path) = &args.json {
        summary.write_json(path)?;
        println!("summary written to {}", path.display());
    }
    if interrupt::requested() {
        // The run was complete when the signal came; the nodes were released as for one.
        eprintln!("borealis: interrupted; {}", outcome.released);
        return Ok(ExitCode::from(interrupt::EXIT_INTERRUPTED as u8));
    }
    println!("{}", outcome.released);
    if !summary.verified_all() {
        let failed = summary.sampled - summary.verified;
        eprintln!("borealis: {failed} of {} sampled records did not read back as written", summary.sampled);
        return Ok(ExitCode::FAILURE);
    }
    Ok(if outcome.release_error.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn cluster(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    // `up` and `down` start or stop processes: a signal must let them finish or undo that.
    // `status` changes nothing, so Ctrl-C may end it at once.
    if !matches!(args.action, ClusterAction::Status { .. }) {
        interrupt::install()?;
    }
    match args.action {
        ClusterAction::Init { hosts, out, etcd, etcd_prefix, etcd_auth, etcd_ca } => {
            let etcd = (!etcd.is_empty()).then_some(tools::local::map::EtcdSection {
                endpoints: etcd,
                prefix: etcd_prefix,
                auth: etcd_auth,
                ca: etcd_ca,
            });
            cluster_init(&hosts, &out, etcd)
        }
        ClusterAction::AddHost { name, address, az, data_dir, admin } => {
            let entry = tools::hosts::HostEntry { name, address, az, data_dir, admin };
            add_host(&args.dir, entry)
        }
        ClusterAction::Up { layout } => cluster_up(&args.dir, layout.nodes_per_az),
        ClusterAction::Status { timeout_ms, json } => {
            // A verdict is the exit status: a failure to reach one must not look like a WARN.
            match cluster_status(&args.dir, Duration::from_millis(timeout_ms), json.as_deref()) {
                Ok(code) => Ok(code),
                Err(error) => {
                    eprintln!("borealis: {error:#}");
                    Ok(ExitCode::from(health::EXIT_UNKNOWN))
                }
            }
        }
        ClusterAction::Down => cluster_down(&args.dir),
        ClusterAction::Restart { rolling, timeout_s, exec } => {
            cluster_restart(&args.dir, rolling, Duration::from_secs(timeout_s), exec)
        }
        ClusterAction::ReplaceNode { node, wait_s, via_node: Some(via), as_name } => {
            ask_replacement(&args.dir, node, via, as_name.as_deref(), Duration::from_secs(wait_s))
        }
        ClusterAction::ReplaceNode { node, wait_s, via_node: None, .. } => {
            replace_node(&args.dir, node, Duration::from_secs(wait_s))
        }
    }
}

/// `replace-node --via-node`: the request over QUIC to one node, which passes it on.
fn ask_replacement(
    dir: &std::path::Path,
    node: u32,
    via: u32,
    as_name: Option<&str>,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(dir)?;
    if cluster.node(node).is_none() {
        anyhow::bail!("no node {node} in the cluster map of {}", dir.display());
    }
    let Some(target) = cluster.node(via) else {
        anyhow::bail!("no node {via} in the cluster map of {}", dir.display());
    };
    let tls = as_name.map_or_else(|| cluster.client_tls(), |name| cluster.client_tls_as(name));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let target = tools::probe::Target::from(target);
    match runtime.block_on(tools::probe::ask_replacement(&tls, &target, node, wait)) {
        Ok(()) => {
            println!(
                "node {via} took the request: the volume's writer replaces node {node} at its next floor report \
                 (within seconds); follow it with `borealis cluster status`"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => anyhow::bail!("node {via} refused the request: {error}"),
    }
}

fn replace_node(dir: &std::path::Path, node: u32, wait: Duration) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(dir)?;
    if cluster.node(node).is_none() {
        let ids: Vec<String> = cluster.nodes().iter().map(|n| n.id.to_string()).collect();
        anyhow::bail!("no node {node} in the cluster map of {} (nodes: {})", dir.display(), ids.join(", "));
    }
    let requests = cluster.requests_dir();
    std::fs::create_dir_all(&requests)?;
    let (request, answer) = (
        client::driver::requests::replace_request(&requests, protocol::NodeId(node)),
        client::driver::requests::replace_answer(&requests, protocol::NodeId(node)),
    );
    let _ = std::fs::remove_file(&answer);
    std::fs::write(&request, b"")?;
    println!("asked the writer to replace node {node} ({})", request.display());
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if interrupt::requested() {
            anyhow::bail!(Interrupted);
        }
        if let Ok(text) = std::fs::read_to_string(&answer) {
            let pgs: Vec<&str> = text.lines().collect();
            if pgs.is_empty() {
                println!("the writer serves no PG of node {node} that it could move (no spare in its AZ, or a change already under way)");
            } else {
                println!("the writer started replacing node {node} in PG(s) {}; follow it with `borealis cluster status`", pgs.join(", "));
            }
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "borealis: no writer took the request within {}s; it stays queued in {} for the next writer opened on this cluster",
        wait.as_secs(),
        request.display()
    );
    Ok(ExitCode::FAILURE)
}

fn add_host(dir: &std::path::Path, entry: tools::hosts::HostEntry) -> anyhow::Result<ExitCode> {
    let report = tools::hosts::add_host(dir, entry)?;
    let host = &report.host;
    println!(
        "node {} {} (AZ {}, {}) added to the map as a spare (generation {}, etcd revision {})",
        host.id, host.name, host.az, host.listen, report.generation, report.revision
    );
    println!("  copy {} to /etc/borealis on it and start storaged there", report.bundle.display());
    Ok(ExitCode::SUCCESS)
}

fn cluster_init(
    hosts: &std::path::Path,
    out: &std::path::Path,
    etcd: Option<tools::local::map::EtcdSection>,
) -> anyhow::Result<ExitCode> {
    let in_etcd = etcd.as_ref().map(|e| format!(" (map published to etcd under {})", e.prefix));
    let report = tools::hosts::init(hosts, out, etcd)?;
    println!(
        "cluster of {} hosts written to {}{}",
        report.hosts.len(),
        out.display(),
        in_etcd.unwrap_or_default()
    );
    for (host, bundle) in report.hosts.iter().zip(&report.bundles) {
        println!(
            "  node {} {} (AZ {}, {}): copy {} to /etc/borealis on it",
            host.id,
            host.name,
            host.az,
            host.listen,
            bundle.display()
        );
    }
    println!(
        "keep {} and {} offline once the hosts have their bundles",
        out.join("pki/ca.key").display(),
        out.join("kek").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cluster_up(dir: &std::path::Path, nodes_per_az: Option<NodesPerAz>) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load_or_create_with(dir, nodes_per_az)?;
    let launcher = Launcher::this_exe("storaged")?;
    let report = daemon::up(&cluster, &launcher)?;
    let mut pids = report.kept.clone();
    pids.extend(report.started.iter().map(|(node, p)| (*node, *p)));
    if !report.kept.is_empty() {
        let kept: Vec<String> = report.kept.keys().map(u32::to_string).collect();
        println!("nodes {} were already running", kept.join(", "));
    }
    println!("started {} node(s) in {}", report.started.len(), cluster.dir().display());
    print!("{}", report::nodes_table(&cluster, &pids));
    println!("client certificate: {}", cluster.client_tls().cert.display());
    Ok(ExitCode::SUCCESS)
}

fn cluster_status(
    dir: &std::path::Path,
    timeout: Duration,
    json: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(dir)?;
    let placement = cluster.placement().context("cluster map")?;
    let alive = daemon::running(&cluster)?;
    let targets: Vec<Target> = cluster.nodes().iter().map(Target::from).collect();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let probes = runtime.block_on(probe::probe_all(&targets, &cluster.client_tls(), timeout))?;
    let assessment = health::assess(&placement, &probes);
    print!("{}", report::status_table(&cluster, &alive, &probes));
    print!("{}", assessment.pg_table());
    if let Some(path) = json {
        assessment.write_json(path)?;
        println!("status written to {}", path.display());
    }
    println!("{}", assessment.verdict_line());
    Ok(ExitCode::from(assessment.health.exit_code()))
}

fn cluster_restart(
    dir: &std::path::Path,
    rolling: bool,
    timeout: Duration,
    exec: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(dir)?;
    let launcher = Launcher::this_exe("storaged")?;
    if rolling {
        let restarter = match exec {
            Some(command) => tools::rolling::Restarter::Exec(command),
            None => tools::rolling::Restarter::Local(launcher),
        };
        tools::rolling::restart(&cluster, &restarter, timeout, |line| println!("{line}"))?;
        println!("restarted every AZ of {}; every PG kept its write quorum", cluster.dir().display());
    } else {
        // Only a local cluster's own processes are restarted here: a cluster on hosts would
        // otherwise be started on this machine.
        if daemon::running(&cluster)?.is_empty() {
            anyhow::bail!(
                "nothing of {} runs on this machine: start a local cluster with `cluster up`, or restart hosts with --rolling --exec",
                cluster.dir().display()
            );
        }
        daemon::down(&cluster)?;
        let report = daemon::up(&cluster, &launcher)?;
        println!("restarted {} node(s) in {}", report.started.len(), cluster.dir().display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cluster_down(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(dir)?;
    let outcome = daemon::down(&cluster)?;
    let stopped = outcome.terminated.len() + outcome.killed.len();
    if stopped == 0 {
        println!("nothing running in {}", cluster.dir().display());
    } else if outcome.killed.is_empty() {
        println!("stopped {stopped} node(s)");
    } else {
        let killed: Vec<String> = outcome.killed.iter().map(u32::to_string).collect();
        println!(
            "stopped {stopped} node(s); killed pids {} after {:?}",
            killed.join(" "),
            tools::cluster::STOP_TIMEOUT
        );
    }
    Ok(ExitCode::SUCCESS)
}
