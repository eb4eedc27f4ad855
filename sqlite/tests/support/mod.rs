//! What the end-to-end tests share: a local six-node cluster started with the `borealis`
//! binary (stopped when the test ends, pass or fail), where the extension and the programs that
//! load it are, and running those programs with a time bound.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// Debian's SQLite shell and Python (the pyenv `python3` first on PATH cannot load extensions).
pub const SQLITE3: &str = "/usr/bin/sqlite3";
pub const PYTHON3: &str = "/usr/bin/python3";
/// Longest any one program may take in a test.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Held for a whole test: a local cluster picks its ports when it is created, so two clusters
/// created at once (tests of one binary run on threads) could pick the same port.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static CLUSTERS: Mutex<()> = Mutex::new(());
    CLUSTERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `target/debug` (or the profile's directory): the test binary runs from its `deps`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_owned()
}

/// The `borealis` binary, built (once per test binary) by the cargo that runs the tests, with
/// the test profile as `cargo test -p borealis-tools` builds it (optimised: unoptimised nodes
/// make a VACUUM's commit of thousands of pages crawl on a busy machine). A test of another
/// package cannot name it with `CARGO_BIN_EXE_*`.
pub fn borealis_exe() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--profile", "test", "-p", "borealis-tools", "--bin", "borealis"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(
                status.success(),
                "cargo build --profile test -p borealis-tools --bin borealis: {status}"
            );
            let exe = target_dir().join("borealis");
            assert!(exe.exists(), "{} was not built", exe.display());
            exe
        })
        .clone()
}

/// The extension, `libborealis_sqlite.so`, which `cargo test` builds beside the test binaries
/// (in `deps`; `cargo build` copies it up to `target/<profile>`).
pub fn extension() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let lib = exe.with_file_name("libborealis_sqlite.so");
    assert!(lib.exists(), "{} is missing: cargo test -p borealis-sqlite builds it", lib.display());
    lib
}

/// A Python script of `tests/py`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(name)
}

/// A local cluster (`borealis cluster up --dir`) in a temporary directory; `cluster down` and,
/// failing that, SIGKILL of every recorded node when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn up() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = run(Command::new(borealis_exe()).args(["cluster", "up", "--dir"]).arg(dir.path()), None);
        assert!(out.status.success(), "borealis cluster up: {}", text(&out));
        Cluster { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file:NAME?vfs=borealis&volume=N` (the cluster comes from `BOREALIS_CLUSTER`).
    pub fn uri(&self, name: &str, volume: u64) -> String {
        format!("file:{name}?vfs=borealis&volume={volume}")
    }

    /// A command with `BOREALIS_CLUSTER` set to this cluster.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("BOREALIS_CLUSTER", self.path());
        command
    }

    /// `bank.py EXT URI args...` with Debian's Python.
    pub fn bank(&self, volume: u64, args: &[&str]) -> Command {
        let mut command = self.command(PYTHON3);
        command.arg(script("bank.py")).arg(extension()).arg(self.uri("bank.db", volume)).args(args);
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(borealis_exe())
            .args(["cluster", "down", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let recorded = tools::procs::read_pid_file(&self.dir.path().join("pids")).ok().flatten();
        for proc_id in recorded.unwrap_or_default().values() {
            proc_id.signal(libc::SIGKILL);
        }
    }
}

/// Runs `command` (feeding it `stdin`), killing it if it outlives [`COMMAND_TIMEOUT`].
pub fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.unwrap_or_default().to_owned();
    std::thread::spawn(move || {
        let mut input = input;
        let _ = input.write_all(stdin.as_bytes());
    });
    finish(child, &format!("{command:?}"))
}

/// Waits for `child` (at most [`COMMAND_TIMEOUT`]) and collects its output.
pub fn finish(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match output.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => output.expect("wait for the child"),
        Err(_) => {
            // SAFETY: kill(2) of the child this test spawned and has not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} took longer than {COMMAND_TIMEOUT:?}");
        }
    }
}

/// stdout and stderr, for messages.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
