//! A single-member etcd on loopback, run as a child process: for tests (this crate's and the
//! tools' end-to-end ones) and for trying the etcd map on one machine. It is Debian's
//! `etcd-server` binary, unmodified; nothing here is for production, where etcd is a cluster of
//! its own run by its operators.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`LocalEtcd::start`] waits for etcd to report itself healthy.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a local etcd could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalEtcdError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("starting etcd: {0} (install Debian's etcd-server: apt-get install -y etcd-server)")]
    Spawn(std::io::Error),
    #[error("etcd exited ({status}); its log:\n{log}")]
    Exited { status: std::process::ExitStatus, log: String },
    #[error("etcd not healthy after {READY_TIMEOUT:?}; its log:\n{0}")]
    NotReady(String),
}

/// TLS on etcd's client port: its certificate and key (PEM), and, to require client
/// certificates (`--client-cert-auth`), the CA that must have signed them.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// One etcd process on 127.0.0.1 with its data in a directory, killed on drop.
#[derive(Debug)]
pub struct LocalEtcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` (and metrics), whatever the client port speaks.
    metrics_port: u16,
    tls: Option<ServerTls>,
    child: Option<Child>,
    starts: u32,
}

impl LocalEtcd {
    /// Starts etcd with its data and logs in `dir` on two free loopback ports, and waits until
    /// it answers `/health`.
    pub fn start(dir: &Path) -> Result<LocalEtcd, LocalEtcdError> {
        LocalEtcd::start_with(dir, None)
    }

    /// [`LocalEtcd::start`], with TLS on the client port (`https://` endpoints).
    pub fn start_tls(dir: &Path, tls: ServerTls) -> Result<LocalEtcd, LocalEtcdError> {
        LocalEtcd::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<ServerTls>) -> Result<LocalEtcd, LocalEtcdError> {
        std::fs::create_dir_all(dir).map_err(|source| io(format!("creating {}", dir.display()), source))?;
        let [client_port, peer_port, metrics_port] = free_ports()?;
        let mut etcd = LocalEtcd {
            dir: dir.to_owned(),
            client_port,
            peer_port,
            metrics_port,
            tls,
            child: None,
            starts: 0,
        };
        etcd.spawn()?;
        etcd.wait_ready()?;
        Ok(etcd)
    }

    /// The client URL, e.g. `http://127.0.0.1:2379` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        self.client_url()
    }

    fn client_url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://127.0.0.1:{}", self.client_port),
            None => url(self.client_port),
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data (after [`LocalEtcd::kill`]).
    pub fn restart(&mut self) -> Result<(), LocalEtcdError> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    /// The current run's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("etcd-{}.log", self.starts))
    }

    fn spawn(&mut self) -> Result<(), LocalEtcdError> {
        self.starts += 1;
        let log =
            File::create(self.log()).map_err(|e| io(format!("creating {}", self.log().display()), e))?;
        let stderr = log.try_clone().map_err(|e| io("etcd log".into(), e))?;
        let peer = url(self.peer_port);
        let mut command = Command::new("etcd");
        // ETCD_* variables that repeat a flag make etcd 3.4 refuse to start.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        command
            .args(["--name", "m0"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-metrics-urls", &url(self.metrics_port)])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m0={peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            // Authentication tokens (once a test turns authentication on) expire after 2 s
            // idle, not 5 minutes, so every test using it also proves clients refresh them.
            .args(["--auth-token-ttl", "2"])
            .args(self.tls_args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        self.child = Some(command.spawn().map_err(LocalEtcdError::Spawn)?);
        Ok(())
    }

    fn tls_args(&self) -> Vec<std::ffi::OsString> {
        let Some(tls) = &self.tls else { return Vec::new() };
        let mut args: Vec<std::ffi::OsString> =
            vec!["--cert-file".into(), tls.cert.clone().into(), "--key-file".into(), tls.key.clone().into()];
        if let Some(ca) = &tls.client_ca {
            args.extend(["--client-cert-auth".into(), "--trusted-ca-file".into(), ca.clone().into()]);
        }
        args
    }

    fn wait_ready(&mut self) -> Result<(), LocalEtcdError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(LocalEtcdError::Exited { status, log: self.log_text() });
            }
            if healthy(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LocalEtcdError::NotReady(self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_else(|e| format!("(unreadable: {e})"))
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd's `/health` says `"health":"true"` (it has a leader and serves).
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn io(what: String, source: std::io::Error) -> LocalEtcdError {
    LocalEtcdError::Io { what, source }
}

/// Three ports free now: bound together (so they differ), then released for etcd.
fn free_ports() -> Result<[u16; 3], LocalEtcdError> {
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(|e| io("binding a free port".into(), e));
    let (a, b, c) = (bind()?, bind()?, bind()?);
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| io("a free port".into(), e));
    Ok([port(&a)?, port(&b)?, port(&c)?])
}
