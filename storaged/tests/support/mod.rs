//! Real `storaged` processes on loopback for integration tests: a temporary data directory,
//! development certificates and key file, start / kill -9 / restart, and a QUIC client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use protocol::messages::{AppendBatch, ReadRecords, Records};
use protocol::{
    Epoch, Epochs, Lsn, LsnRange, Message, PageId, PgId, PgRef, Record, RecordFlags, RecordKind, RecordMeta,
    VolumeId,
};
use transport::{DevPki, TlsFiles, Tuning};

pub const PG: PgRef = PgRef { volume_id: VolumeId(0xB0BE), pg_id: PgId(0) };
const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One storaged process and the directory it keeps across restarts.
pub struct TestNode {
    pub root: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub pki: DevPki,
    pub addr: SocketAddr,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl TestNode {
    /// Prepares certificates and a key file; does not start the process.
    pub fn new() -> TestNode {
        let root = tempfile::tempdir().unwrap();
        Self::in_dir(root, None)
    }

    /// Like `new`, with the data directory at `data_dir` (e.g. on a small file system).
    pub fn in_dir(root: tempfile::TempDir, data_dir: Option<PathBuf>) -> TestNode {
        let pki = transport::ensure_dev_pki(&root.path().join("pki"), &["node-1", "client"]).unwrap();
        storaged::seal::Kek::create_file(&root.path().join("kek")).unwrap();
        let (port, _) =
            transport::ports::bind_listen_port(|p| std::net::UdpSocket::bind(("127.0.0.1", p))).unwrap();
        let data_dir = data_dir.unwrap_or_else(|| root.path().join("data"));
        TestNode {
            data_dir,
            pki,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            root,
            child: None,
            extra_args: Vec::new(),
        }
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// Starts the process and waits for its ready line.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("stderr.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_storaged"))
            .args(self.args())
            .env("BOREALIS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready, line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = ready.send(lines.next().and_then(Result::ok));
            lines.for_each(drop);
        });
        match line.recv_timeout(READY_TIMEOUT) {
            Ok(Some(text)) if text.contains("ready") => {}
            other => panic!("storaged did not start ({other:?}); stderr:\n{}", self.stderr()),
        }
        self.child = Some(child);
    }

    pub fn args(&self) -> Vec<String> {
        let files = self.pki.files_for("node-1");
        let mut args: Vec<String> = [
            "--node-id",
            "1",
            "--az",
            "0",
            "--listen",
            &self.addr.to_string(),
            "--data-dir",
            self.data_dir.to_str().unwrap(),
            "--ca",
            files.ca_cert.to_str().unwrap(),
            "--cert",
            files.cert.to_str().unwrap(),
            "--key",
            files.key.to_str().unwrap(),
            "--key-file",
            self.root.path().join("kek").to_str().unwrap(),
            "--journal-file-bytes",
            "16777216",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra_args.iter().cloned());
        args
    }

    pub fn push_arg(&mut self, arg: &str) {
        self.extra_args.push(arg.to_string());
    }

    /// Forgets every argument `push_arg` added (for the next start).
    pub fn clear_args(&mut self) {
        self.extra_args.clear();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash (harmless if it already died).
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        child.wait().unwrap();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.root.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn client_files(&self) -> TlsFiles {
        self.pki.files_for("client")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A QUIC client of one node.
pub struct Client {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
}

impl Client {
    pub async fn connect(node: &TestNode, files: &TlsFiles) -> Result<Client, transport::TransportError> {
        let tuning = Tuning::default();
        let endpoint = transport::client_endpoint(transport::any_addr_for(node.addr), files, &tuning)?;
        let connection = transport::connect(&endpoint, node.addr, "node-1", CALL_TIMEOUT).await?;
        Ok(Client { endpoint, connection })
    }

    /// One request on its own stream, with a timeout.
    pub async fn call(&self, message: &Message) -> Result<Message, String> {
        let reply = tokio::time::timeout(CALL_TIMEOUT, transport::request(&self.connection, message)).await;
        reply.map_err(|_| "timed out".to_string())?.map_err(|e| e.to_string())
    }

    /// Every record the node holds for `pg` in `(after, through]`, following `more`.
    pub async fn read_all(&self, pg: PgRef, epochs: Epochs, after: Lsn, through: Lsn) -> (Lsn, Vec<Record>) {
        let mut records = Vec::new();
        let mut from = after;
        loop {
            let range = LsnRange::new(from, through).unwrap();
            let read = Message::ReadRecords(ReadRecords { pg, epochs, range, bytes_max: 1 << 20 });
            let Message::Records(Records { scl, more, records: got, .. }) = self.call(&read).await.unwrap()
            else {
                panic!("expected records")
            };
            from = got.last().map_or(from, |r| r.lsn());
            records.extend(got);
            if !more || from >= through {
                return (scl, records);
            }
        }
    }
}

/// Records `first..first+count` of `PG`, chained, each with `payload(lsn)`.
pub fn chain(first: u64, count: u64, epoch: Epoch, payload: impl Fn(u64) -> Vec<u8>) -> Vec<Record> {
    (first..first + count)
        .map(|lsn| {
            let meta = RecordMeta {
                flags: if lsn % 4 == 0 { RecordFlags::CPL } else { RecordFlags::empty() },
                epoch,
                ..RecordMeta::after(Lsn(lsn - 1), Lsn(lsn), RecordKind::Marker, PageId(lsn % 16))
            };
            Record::new(meta, Bytes::from(payload(lsn))).unwrap()
        })
        .collect()
}

pub fn epochs(volume: u64) -> Epochs {
    Epochs { volume: Epoch(volume), ..Epochs::INITIAL }
}

pub fn batch(records: Vec<Record>, epoch: u64) -> Message {
    Message::AppendBatch(AppendBatch {
        pg: PG,
        epochs: epochs(epoch),
        vdl: Lsn(0),
        pg_vdl_lsn: Lsn(0),
        page_bytes: 4096,
        records,
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Every journal file's bytes, concatenated with their paths.
pub fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}
