//! `borealis-bench sqlite`: SQLite transactions through the `borealis` VFS (the
//! `borealis-sqlite` loadable extension on a local six-node cluster) next to SQLite on a local
//! file in `journal_mode=WAL, synchronous=FULL` and `journal_mode=DELETE, synchronous=FULL`,
//! in one run: single-row inserts and bank transfers, at 1 and 8 connections. The workload is
//! `sqlite_bench.py` run by Debian's `/usr/bin/python3` (whose `sqlite3` module loads
//! extensions); it checks `integrity_check` and, for the bank, that the balances still sum up.

use std::path::{Path, PathBuf};
use std::process::Command;

use tools::cluster::Launcher;
use tools::local::{stop_all, LocalCluster};

/// The workload script, written next to the data for each run.
const SCRIPT: &str = include_str!("sqlite_bench.py");
/// The Python whose `sqlite3` module can load extensions.
pub const PYTHON: &str = "/usr/bin/python3";
/// The extension's file name, beside this executable (`cargo build --release -p borealis-sqlite`).
pub const EXTENSION_FILE: &str = "libborealis_sqlite.so";

/// Where the database lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A local file, `journal_mode=WAL`, `synchronous=FULL`.
    LocalWal,
    /// A local file, `journal_mode=DELETE`, `synchronous=FULL`.
    LocalDelete,
    /// A Borealis volume through the `borealis` VFS, `synchronous=FULL`.
    Borealis,
}

/// One run: a workload at a number of connections.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub workload: &'static str,
    pub connections: usize,
}

/// The runs, in order, on each target.
pub const RUNS: [Run; 4] = [
    Run { workload: "insert", connections: 1 },
    Run { workload: "insert", connections: 8 },
    Run { workload: "bank", connections: 1 },
    Run { workload: "bank", connections: 8 },
];

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    pub commits_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: f64,
}

/// The extension built beside this executable.
pub fn extension() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(EXTENSION_FILE);
    if !path.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release -p borealis-sqlite`",
            path.display()
        ));
    }
    Ok(path)
}

/// Every run on every target, under `root`: (target, run, figures) in order.
pub fn measure(root: &Path, seconds: u64) -> Result<Vec<(Target, Run, Measured)>, String> {
    if !Path::new(PYTHON).exists() {
        crate::debian::ensure_installed("python3", "python3")?;
    }
    let extension = extension()?;
    let script = root.join("sqlite_bench.py");
    std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
    let dir = root.join("cluster");
    let cluster = LocalCluster::load_or_create(&dir).map_err(|e| e.to_string())?;
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let mut nodes = cluster.start_all(&launcher).map_err(|e| e.to_string())?;
    let mut measured = Vec::new();
    let mut outcome = Ok(());
    'all: for (i, run) in RUNS.iter().enumerate() {
        for target in [Target::LocalWal, Target::LocalDelete, Target::Borealis] {
            let (db, journal_mode) = match target {
                Target::LocalWal => {
                    (format!("file:{}", root.join(format!("wal-{i}.db")).display()), Some("wal"))
                }
                Target::LocalDelete => {
                    (format!("file:{}", root.join(format!("delete-{i}.db")).display()), Some("delete"))
                }
                Target::Borealis => (format!("file:bench-{i}.db?vfs=borealis&volume={}", 0x5e00 + i), None),
            };
            let mut command = Command::new(PYTHON);
            command.arg(&script).args(["--db", &db, "--workload", run.workload]);
            command.args(["--connections", &run.connections.to_string(), "--seconds", &seconds.to_string()]);
            if let Some(mode) = journal_mode {
                command.args(["--journal-mode", mode]);
            }
            if target == Target::Borealis {
                command.arg("--extension").arg(&extension).env("BOREALIS_CLUSTER", &dir);
            }
            match run_one(command) {
                Ok(m) => measured.push((target, *run, m)),
                Err(error) => {
                    outcome = Err(format!("{target:?} {} x{}: {error}", run.workload, run.connections));
                    break 'all;
                }
            }
        }
    }
    stop_all(&mut nodes);
    outcome.map(|()| measured)
}

fn run_one(mut command: Command) -> Result<Measured, String> {
    let output = command.output().map_err(|e| format!("{PYTHON}: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("workload output ({e}): {}", String::from_utf8_lossy(&output.stdout)))?;
    if json["integrity"] != "ok" {
        return Err(format!("integrity_check: {}", json["integrity"]));
    }
    let number = |key: &str| json[key].as_f64().ok_or_else(|| format!("workload output lacks {key}"));
    Ok(Measured {
        commits_per_s: number("commits_per_s")?,
        p50_ms: number("p50_ms")?,
        p99_ms: number("p99_ms")?,
        errors: number("errors")?,
    })
}
