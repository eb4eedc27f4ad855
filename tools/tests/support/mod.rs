//! Running the `borealis` binary in tests: bounded in time, and never leaving a cluster behind.

#![allow(dead_code)]

pub mod delay;
pub mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tools::procs::{read_pid_file, PidMap};

/// Longest any one `borealis` command may take in a test.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub const BOREALIS: &str = env!("CARGO_BIN_EXE_borealis");

/// Output of one command, as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `borealis <args> --dir <dir>`, killing it if it outlives [`COMMAND_TIMEOUT`].
pub fn borealis(dir: &Path, args: &[&str]) -> Run {
    let child = Command::new(BOREALIS)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn borealis");
    finish(child, args)
}

/// Waits for `child` (with [`COMMAND_TIMEOUT`]) and collects its output.
pub fn finish(child: std::process::Child, what: &[&str]) -> Run {
    let pid = child.id();
    let (done, output) = std::sync::mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let output = match output.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => output.expect("wait for borealis"),
        Err(_) => {
            // SAFETY: killing the child this test spawned and has not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("borealis {what:?} took longer than {COMMAND_TIMEOUT:?}");
        }
    };
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The processes recorded in `dir`'s pid file (empty if there is none).
pub fn recorded(dir: &Path) -> PidMap {
    read_pid_file(&dir.join("pids")).expect("readable pid file").unwrap_or_default()
}

/// A cluster directory whose nodes are stopped when the test ends, pass or fail.
pub struct ClusterDir {
    pub temp: tempfile::TempDir,
}

impl ClusterDir {
    pub fn new() -> ClusterDir {
        ClusterDir { temp: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> PathBuf {
        self.temp.path().to_owned()
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        // Best effort: SIGKILL whatever is still recorded, so a failed test leaves nothing behind.
        for proc_id in recorded(self.temp.path()).values() {
            proc_id.signal(libc::SIGKILL);
        }
    }
}

/// `borealis cluster init --hosts ROOT/hosts.toml --out ROOT/cluster` for `hosts` (a hosts
/// file's text); returns the output directory and what the command said.
pub fn init_hosts(root: &Path, hosts: &str) -> (PathBuf, Run) {
    let (file, out) = (root.join("hosts.toml"), root.join("cluster"));
    std::fs::write(&file, hosts).expect("write hosts file");
    let child = std::process::Command::new(BOREALIS)
        .args(["cluster", "init", "--hosts"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn borealis");
    let run = finish(child, &["cluster", "init"]);
    (out, run)
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` (a storaged, its stderr to `log`) and waits for its ready line.
pub fn start_storaged(mut command: std::process::Command, log: &Path) -> Killed {
    use std::io::BufRead;
    let stderr = std::fs::File::create(log).expect("log file");
    let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn storaged");
    let first = std::io::BufReader::new(child.stdout.take().expect("piped")).lines().next();
    let child = Killed(child);
    match first {
        Some(Ok(line)) if line.contains("ready") => child,
        other => {
            panic!("storaged did not start ({other:?}): {}", std::fs::read_to_string(log).unwrap_or_default())
        }
    }
}
