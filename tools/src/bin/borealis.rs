//! `borealis`: the developer and operator command for Borealis.
//!
//! `borealis cluster up|status|down` manages a six-node local cluster in the background, all of
//! its state in one directory (`./borealis-dev` by default). A hidden `storaged` subcommand runs
//! a storage node, so the cluster needs no separately built `storaged` binary: nodes are this
//! executable run as `borealis storaged ...`.
//!
//! Exit status: 0 on success, 1 on an error (one line on stderr, `borealis: ...`), 130 when
//! interrupted; `cluster status` exits 1 unless every node is up.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use tools::cluster::Launcher;
use tools::daemon::{self, DaemonError};
use tools::interrupt::{self, Interrupted};
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
    /// A local cluster of 6 storage nodes on loopback, 2 in each of 3 simulated AZs.
    Cluster(ClusterArgs),
    /// Runs a storage node (used by the cluster commands; see `storaged --help`).
    #[command(hide = true, disable_help_flag = true)]
    Storaged {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
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
    /// Starts the nodes in the background (restarting any that stopped) and prints them.
    Up,
    /// Shows each node: process, QUIC status (segments and their SCL), admin health.
    /// Exits 1 unless every node is up.
    Status {
        /// How long to wait for each node's answers, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Stops the nodes: SIGTERM, then SIGKILL for any still running after 10 s.
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Storaged { args } => {
            let code = storaged::cli_main(std::iter::once("storaged".into()).chain(args));
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Command::Cluster(args) => cluster(args),
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

/// True if `error` is an interrupt wrapped in one of the library's error types.
fn interrupted(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<DaemonError>(), Some(DaemonError::Interrupted(_)))
        || matches!(
            error.downcast_ref::<LocalError>(),
            Some(LocalError::Launch(tools::cluster::LaunchError::Interrupted(_)))
        )
}

fn cluster(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    // `up` and `down` start or stop processes: a signal must let them finish or undo that.
    // `status` changes nothing, so Ctrl-C may end it at once.
    if !matches!(args.action, ClusterAction::Status { .. }) {
        interrupt::install()?;
    }
    match args.action {
        ClusterAction::Up => cluster_up(&args.dir),
        ClusterAction::Status { timeout_ms } => cluster_status(&args.dir, Duration::from_millis(timeout_ms)),
        ClusterAction::Down => cluster_down(&args.dir),
    }
}

fn cluster_up(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load_or_create(dir)?;
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

fn cluster_status(dir: &std::path::Path, timeout: Duration) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(dir)?;
    let alive = daemon::running(&cluster)?;
    let targets: Vec<Target> = cluster.nodes().iter().map(Target::from).collect();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let probes = runtime.block_on(probe::probe_all(&targets, &cluster.client_tls(), timeout))?;
    print!("{}", report::status_table(&cluster, &alive, &probes));
    let all_up = probes.iter().all(|p| p.status.is_ok());
    Ok(if all_up { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
