//! `borealis-bench nbd`: fio's `nbd` engine against `borealis nbd` on a local six-node cluster,
//! and against `qemu-nbd` serving a raw file on the same disk (`--cache=none --aio=io_uring`,
//! flushes honoured), side by side in one run: 4 KiB random writes and reads at iodepth 1 and 32,
//! and 1 MiB sequential writes.
//!
//! After each job the bench waits until the server's processes are idle and reports how
//! long that took (`cpu::Settler`): the gateway answers a write once appended, and the cluster's
//! share of the work (the two slower replicas catching up, coalescing) may go on after fio
//! stops. `sustained_iops` charges that time to the job: every I/O over runtime plus settle.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tools::cluster::Launcher;
use tools::local::{stop_all, LocalCluster};
use tools::nbd::NbdOptions;

/// One fio job.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub name: &'static str,
    pub rw: &'static str,
    pub block_bytes: usize,
    pub iodepth: usize,
}

/// The jobs, in the order they run on each server.
pub const JOBS: [Job; 5] = [
    Job { name: "randwrite_4k_qd1", rw: "randwrite", block_bytes: 4096, iodepth: 1 },
    Job { name: "randwrite_4k_qd32", rw: "randwrite", block_bytes: 4096, iodepth: 32 },
    Job { name: "randread_4k_qd1", rw: "randread", block_bytes: 4096, iodepth: 1 },
    Job { name: "randread_4k_qd32", rw: "randread", block_bytes: 4096, iodepth: 32 },
    Job { name: "write_1m_qd4", rw: "write", block_bytes: 1 << 20, iodepth: 4 },
];

/// What fio measured for one job.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub iops: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Seconds the server stayed busy after the job ended.
    pub settle_s: f64,
    /// Every I/O of the job over its runtime plus `settle_s`.
    pub sustained_iops: f64,
}

/// Runs every job in turn against `uri`, each followed by a wait until `pids` are idle.
pub fn jobs(uri: &str, size: u64, seconds: u64, pids: Vec<String>) -> Result<Vec<Measured>, String> {
    let settler = crate::cpu::Settler::new(pids);
    let mut measured = Vec::new();
    for job in JOBS {
        let mut m = fio(uri, job, size, seconds)?;
        let settle = settler.settle().as_secs_f64();
        m.sustained_iops = m.sustained_iops * seconds as f64 / (seconds as f64 + settle);
        m.settle_s = settle;
        measured.push(m);
    }
    Ok(measured)
}

/// Runs `job` for `seconds` against `uri` over `size` bytes (`settle_s` zero, and
/// `sustained_iops` every I/O over the runtime alone).
pub fn fio(uri: &str, job: Job, size: u64, seconds: u64) -> Result<Measured, String> {
    let fio = crate::debian::ensure_installed("fio", "fio")?;
    let output = Command::new(fio)
        .arg(format!("--name={}", job.name))
        .args(["--ioengine=nbd", "--output-format=json", "--time_based", "--randrepeat=0"])
        .arg(format!("--uri={uri}"))
        .arg(format!("--rw={}", job.rw))
        .arg(format!("--bs={}", job.block_bytes))
        .arg(format!("--iodepth={}", job.iodepth))
        .arg(format!("--size={size}"))
        .arg(format!("--runtime={seconds}"))
        .output()
        .map_err(|e| format!("fio: {e}"))?;
    if !output.status.success() {
        return Err(format!("fio {} failed: {}", job.name, String::from_utf8_lossy(&output.stderr).trim()));
    }
    // The nbd engine prints "fio: connected to NBD server" before the JSON.
    let start = output.stdout.iter().position(|b| *b == b'{').ok_or("fio printed no JSON")?;
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout[start..]).map_err(|e| format!("fio output: {e}"))?;
    let side = if job.rw.contains("read") { "read" } else { "write" };
    let stats = &json["jobs"][0][side];
    let number =
        |v: &serde_json::Value, what: &str| v.as_f64().ok_or_else(|| format!("fio output lacks {what}"));
    let percentile = |p: &str| number(&stats["clat_ns"]["percentile"][p], p).map(|ns| ns / 1000.0);
    Ok(Measured {
        iops: number(&stats["iops"], "iops")?,
        mb_per_s: number(&stats["bw_bytes"], "bw_bytes")? / 1e6,
        p50_us: percentile("50.000000")?,
        p99_us: percentile("99.000000")?,
        settle_s: 0.0,
        sustained_iops: number(&stats["total_ios"], "total_ios")? / seconds as f64,
    })
}

/// Waits until `path` exists (a server's socket), or fails after `timeout`.
fn wait_for_socket(path: &Path, child: &mut Child, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited ({status}) before listening on {}", path.display()));
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listened on {} within {timeout:?}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Every job against `qemu-nbd` serving a raw file of `size` bytes under `root`.
pub fn qemu_nbd(root: &Path, size: u64, seconds: u64) -> Result<Vec<Measured>, String> {
    let qemu_nbd = crate::debian::ensure_installed("qemu-nbd", "qemu-utils")?;
    let image = root.join("qemu-nbd.raw");
    let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
    file.set_len(size).map_err(|e| e.to_string())?;
    let socket = root.join("qemu-nbd.sock");
    let mut server = Command::new(qemu_nbd)
        .args(["--format=raw", "--cache=none", "--aio=io_uring", "--persistent", "--shared=8"])
        .arg(format!("--socket={}", socket.display()))
        .arg(&image)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("qemu-nbd: {e}"))?;
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    let pids = vec![server.id().to_string()];
    let measured = wait_for_socket(&socket, &mut server, Duration::from_secs(10))
        .and_then(|()| jobs(&uri, size, seconds, pids));
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&image);
    measured
}

/// Every job against `borealis nbd` on a fresh local six-node cluster under `root`; the
/// gateway runs on a thread of this process.
pub fn borealis(root: &Path, size: u64, seconds: u64) -> Result<Vec<Measured>, String> {
    let dir = root.join("cluster");
    let cluster = LocalCluster::load_or_create(&dir).map_err(|e| e.to_string())?;
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let mut nodes = cluster.start_all(&launcher).map_err(|e| e.to_string())?;
    let socket = root.join("borealis-nbd.sock");
    let options = NbdOptions {
        dir,
        volume: 0xbe7c,
        size: Some(size),
        listen: None,
        socket: Some(socket.clone()),
        export: "borealis".into(),
        metrics: None,
    };
    // The gateway serves until the process exits.
    std::thread::spawn(move || {
        if let Err(error) = tools::nbd::run(&options) {
            eprintln!("borealis-bench: the gateway stopped: {error}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let uri = format!("nbd+unix:///borealis?socket={}", socket.display());
    // The gateway is a thread of this process.
    let pids: Vec<String> =
        nodes.iter().filter_map(|n| n.pid()).map(|p| p.to_string()).chain(["self".to_string()]).collect();
    let measured = if socket.exists() {
        jobs(&uri, size, seconds, pids)
    } else {
        Err("the gateway never listened".into())
    };
    stop_all(&mut nodes);
    measured
}
