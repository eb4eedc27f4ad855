//! Launching `storaged` processes on this machine: directories, certificates, key files, free
//! ports, start (waiting for the ready line), kill -9, graceful stop.
//!
//! A launcher runs storaged through any executable that accepts storaged's command line after
//! a fixed prefix: the `storaged` binary itself, or a tool binary's hidden `storaged`
//! subcommand (which calls `storaged::cli_main`), so a tool never depends on a separately
//! built binary being present.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use transport::TlsFiles;

/// How long a node may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM before it is killed: its whole drain
/// (`storaged::server::lifecycle`), the acknowledgements' grace, and time for the checkpoint.
pub const STOP_TIMEOUT: Duration =
    Duration::from_secs(storaged::DRAIN_MAX.as_secs() + storaged::ACK_GRACE.as_secs() + 5);

/// Why a node could not be launched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    #[error("cannot start {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("node {node} did not become ready: {detail}")]
    NotReady { node: u32, detail: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

/// How to run storaged: an executable and the arguments that precede storaged's own.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub exe: PathBuf,
    pub prefix: Vec<String>,
}

impl Launcher {
    /// Runs this very executable with `subcommand` first (its hidden storaged entry point).
    pub fn this_exe(subcommand: &str) -> Result<Launcher, LaunchError> {
        let exe =
            std::env::current_exe().map_err(|e| LaunchError::Setup(format!("current executable: {e}")))?;
        Ok(Launcher { exe, prefix: vec![subcommand.to_string()] })
    }
}

/// Everything one node needs on its command line.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub node_id: u32,
    pub az: u16,
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
    pub key_file: PathBuf,
    /// Further storaged flags (limits, journal sizes).
    pub extra: Vec<String>,
}

impl NodeSpec {
    pub fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--node-id".into(),
            self.node_id.to_string(),
            "--az".into(),
            self.az.to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--data-dir".into(),
            path(&self.data_dir),
            "--ca".into(),
            path(&self.tls.ca_cert),
            "--cert".into(),
            path(&self.tls.cert),
            "--key".into(),
            path(&self.tls.key),
            "--key-file".into(),
            path(&self.key_file),
        ];
        if let Some(admin) = self.admin {
            args.extend(["--admin".into(), admin.to_string()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// A running (or stopped) storaged process; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    pub spec: NodeSpec,
    launcher: Launcher,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts the node, its stderr appended to `log`, and waits for its ready line.
    pub fn start(launcher: &Launcher, spec: NodeSpec, log: PathBuf) -> Result<NodeProcess, LaunchError> {
        let mut node = NodeProcess { spec, launcher: launcher.clone(), log, child: None };
        node.restart()?;
        Ok(node)
    }

    /// Starts a stopped node again with the same settings.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        assert!(self.child.is_none(), "node {} is already running", self.spec.node_id);
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&self.log);
        let stderr = stderr.map_err(|e| LaunchError::Setup(format!("log {}: {e}", self.log.display())))?;
        let mut child = Command::new(&self.launcher.exe)
            .args(&self.launcher.prefix)
            .args(self.spec.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| LaunchError::Spawn { exe: self.launcher.exe.display().to_string(), source })?;
        let stdout = child.stdout.take().expect("piped");
        let (ready, line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = ready.send(lines.next().and_then(Result::ok));
            lines.for_each(drop);
        });
        let node = self.spec.node_id;
        crate::interrupt::track(child.id());
        match wait_ready_line(&line) {
            Ok(Some(text)) if text.contains("ready") => {
                self.child = Some(child);
                Ok(())
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                crate::interrupt::untrack(child.id());
                if let Err(interrupted) = other {
                    return Err(interrupted.into());
                }
                let detail = format!("{other:?}; last log line: {}", self.last_log_line());
                Err(LaunchError::NotReady { node, detail })
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            crate::interrupt::untrack(child.id());
        }
    }

    /// SIGTERM, then SIGKILL if the node has not exited within `STOP_TIMEOUT`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                crate::interrupt::untrack(child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        crate::interrupt::untrack(child.id());
    }

    /// The last line the node logged (for error messages).
    pub fn last_log_line(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().last().unwrap_or("").to_string()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits up to [`READY_TIMEOUT`] for the node's first stdout line (`None`: the node closed
/// stdout or the time ran out), giving up early if the user interrupts.
fn wait_ready_line(
    line: &std::sync::mpsc::Receiver<Option<String>>,
) -> Result<Option<String>, crate::interrupt::Interrupted> {
    use std::sync::mpsc::RecvTimeoutError;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        crate::interrupt::check()?;
        let slice = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
        match line.recv_timeout(slice) {
            Ok(text) => return Ok(text),
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => return Ok(None),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// A loopback UDP port free right now, below the ephemeral range.
pub fn free_udp_port() -> Result<u16, LaunchError> {
    transport::ports::bind_listen_port(|p| std::net::UdpSocket::bind(("127.0.0.1", p)))
        .map(|(port, _)| port)
        .map_err(|e| LaunchError::Setup(format!("UDP port: {e}")))
}

/// A loopback TCP port free right now, below the ephemeral range.
pub fn free_tcp_port() -> Result<u16, LaunchError> {
    transport::ports::bind_listen_port(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
        .map(|(port, _)| port)
        .map_err(|e| LaunchError::Setup(format!("TCP port: {e}")))
}

/// Creates a key-encryption key file at `path` unless one exists. The key is written beside
/// `path` and renamed into place, so an interrupted run never leaves a torn key file.
pub fn ensure_key_file(path: &Path) -> Result<(), LaunchError> {
    if path.exists() {
        return Ok(());
    }
    let setup = |e: &dyn std::fmt::Display| LaunchError::Setup(format!("key file {}: {e}", path.display()));
    let temp = crate::files::temp_path(path);
    crate::files::remove_if_exists(&temp).map_err(|e| setup(&e))?;
    storaged::seal::Kek::create_file(&temp).map_err(|e| setup(&e))?;
    std::fs::rename(&temp, path).map_err(|e| setup(&e))?;
    crate::files::sync_parent(path).map_err(|e| setup(&e))
}
