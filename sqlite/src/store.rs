//! The Borealis side of the VFS: a [`PageStore`] over one `client::Writer` (or, for a
//! read-only open, a `client::Reader` and the snapshot its read transaction sees), driven from
//! SQLite's synchronous calls through one process-wide tokio runtime.
//!
//! The writer is async and spawns a driver task, so it lives on a multi-thread runtime with
//! [`RUNTIME_WORKER_THREADS`] worker that keeps running between SQLite's calls; each VFS call
//! blocks its (SQLite) thread on the future it needs. The writer is opened inside the runtime,
//! so its tasks land there. The runtime is created on first use and lives as long as the
//! process (the extension stays loaded: `SQLITE_OK_LOAD_PERMANENTLY`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use client::{ClientConfig, NewRecord, Reader, Snapshot, VolumeGeometry, Writer};
use protocol::messages::ErrorCode;
use protocol::{Lsn, PageId, VolumeId};
use tokio::runtime::Runtime;
use tools::local::LocalCluster;

use crate::database::{PageStore, StoreError};
use crate::superblock::PAGE_BYTES;

/// Worker threads of the runtime that drives every writer of the process.
pub const RUNTIME_WORKER_THREADS: usize = 1;
/// Volume pages per PG: 64 MiB of database per protection group.
pub const PAGES_PER_PG: u64 = 16_384;
/// How long a commit may take to become durable before it fails (its outcome then unknown).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a page read keeps trying while no segment can serve it yet (on a busy machine a
/// segment may answer "not yet complete" for a while after a large commit) before it fails.
pub const READ_RETRY_FOR: Duration = Duration::from_secs(15);
/// The pause between two tries of such a read.
pub const READ_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why the runtime or a volume's writer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    #[error("tokio runtime: {0}")]
    Runtime(String),
    #[error("cluster directory {}: {source}", dir.display())]
    Cluster { dir: PathBuf, source: Box<tools::local::LocalError> },
    #[error("cluster map: {0}")]
    Placement(#[from] protocol::placement::PlacementError),
    #[error("volume geometry: {0}")]
    Geometry(#[from] client::GeometryError),
    #[error("opening volume {volume}: {source}")]
    Open { volume: u64, source: client::OpenError },
}

/// The process's runtime, created on first use.
fn runtime() -> Result<&'static Runtime, StoreOpenError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKER_THREADS)
            .thread_name("borealis-sqlite")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|e| StoreOpenError::Runtime(e.clone()))
}

/// One volume's writer or reader, used synchronously.
#[derive(Debug)]
pub struct BorealisStore {
    access: Access,
    runtime: &'static Runtime,
}

#[derive(Debug)]
enum Access {
    Write(Writer),
    /// A read-only view: every read at `at`, moved by `refresh` between read transactions and
    /// held (`snapshot`) only while one is open.
    Read {
        reader: Reader,
        at: Lsn,
        snapshot: Option<Snapshot>,
    },
}

impl BorealisStore {
    /// Opens `volume` of the local cluster in `cluster`: takes the volume over, fencing any
    /// writer another process holds.
    pub fn open(cluster: &std::path::Path, volume: u64) -> Result<BorealisStore, StoreOpenError> {
        let (runtime, config, geometry) = setup(cluster, volume)?;
        let writer = runtime
            .block_on(Writer::open(config, geometry))
            .map_err(|source| StoreOpenError::Open { volume, source })?;
        Ok(BorealisStore { access: Access::Write(writer), runtime })
    }

    /// Opens `volume` read-only: reads at VDLs its writer declared, leaving the writer in place.
    pub fn open_read_only(cluster: &std::path::Path, volume: u64) -> Result<BorealisStore, StoreOpenError> {
        let (runtime, config, geometry) = setup(cluster, volume)?;
        let reader = runtime
            .block_on(Reader::open(config, geometry))
            .map_err(|source| StoreOpenError::Open { volume, source })?;
        let snapshot = reader.snapshot();
        let at = snapshot.lsn();
        Ok(BorealisStore { access: Access::Read { reader, at, snapshot: Some(snapshot) }, runtime })
    }

    /// Closes the writer once what it appended is durable (bounded by the append timeout), or
    /// the reader.
    pub fn close(self) {
        match self.access {
            Access::Write(writer) => self.runtime.block_on(writer.close()),
            Access::Read { reader, .. } => reader.close(),
        }
    }

    fn fenced(&self) -> bool {
        match &self.access {
            Access::Write(writer) => writer.watch_vdl().borrow().fenced,
            Access::Read { .. } => false,
        }
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }
}

impl PageStore for BorealisStore {
    /// Every page at one snapshot, read concurrently.
    fn read(&mut self, pages: &[PageId]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if self.fenced() {
            return Err(StoreError::Fenced);
        }
        let versions = match &self.access {
            Access::Write(writer) => self.block_on(async {
                let snapshot = writer.snapshot();
                let at = snapshot.lsn();
                let reads = pages.iter().map(|page| retried(|| writer.read_page(*page, at)));
                futures::future::try_join_all(reads).await
            }),
            Access::Read { reader, snapshot: Some(snapshot), .. } => self.block_on(async {
                let reads = pages.iter().map(|page| retried(|| reader.read_page(*page, snapshot)));
                futures::future::try_join_all(reads).await
            }),
            // SQLite reads only inside a read transaction, which holds the view's point.
            Access::Read { snapshot: None, .. } => return Err(StoreError::NoReadTransaction),
        };
        let versions = versions.map_err(StoreError::Read)?;
        Ok(versions
            .into_iter()
            .map(|v| (v.lsn != Lsn::ZERO && !v.bytes.is_empty()).then_some(v.bytes))
            .collect())
    }

    fn commit(&mut self, records: Vec<NewRecord>) -> Result<(), StoreError> {
        let Access::Write(writer) = &self.access else { return Err(StoreError::ReadOnly) };
        let durable = self.block_on(async { writer.append(records).await?.durable().await });
        match durable {
            Ok(_) => Ok(()),
            Err(client::AppendError::Fenced) => Err(StoreError::Fenced),
            Err(client::AppendError::Closed) => Err(StoreError::Closed),
            Err(other) => Err(StoreError::Append(other)),
        }
    }

    fn refresh(&mut self) -> Result<bool, StoreError> {
        let Access::Read { reader, at, snapshot } = &mut self.access else { return Ok(false) };
        let newer = reader.snapshot();
        let moved = newer.lsn() != *at;
        *at = newer.lsn();
        *snapshot = Some(newer);
        Ok(moved)
    }

    fn release(&mut self) {
        if let Access::Read { snapshot, .. } = &mut self.access {
            *snapshot = None;
        }
    }
}

/// The runtime, the client settings and the geometry every open of `volume` uses.
fn setup(
    cluster: &std::path::Path,
    volume: u64,
) -> Result<(&'static Runtime, ClientConfig, VolumeGeometry), StoreOpenError> {
    let runtime = runtime()?;
    let local = LocalCluster::load(cluster)
        .map_err(|source| StoreOpenError::Cluster { dir: cluster.to_owned(), source: Box::new(source) })?;
    let mut config = local
        .client_config()
        .map_err(|source| StoreOpenError::Cluster { dir: cluster.to_owned(), source: Box::new(source) })?;
    config.append_timeout = COMMIT_TIMEOUT;
    config.requests_dir = Some(local.requests_dir());
    let geometry = VolumeGeometry::new(VolumeId(u128::from(volume)), PAGE_BYTES, PAGES_PER_PG)?;
    Ok((runtime, config, geometry))
}

/// A page read, tried again while no segment can serve it yet, for up to [`READ_RETRY_FOR`].
async fn retried<F, Fut>(read: F) -> Result<client::PageVersion, client::ReadError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<client::PageVersion, client::ReadError>>,
{
    let deadline = tokio::time::Instant::now() + READ_RETRY_FOR;
    loop {
        match read().await {
            // A read point below the floor stays so: only a segment not ready yet is waited for.
            Err(client::ReadError::Unavailable { code, .. })
                if code != Some(ErrorCode::TooOld) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(READ_RETRY_PAUSE).await;
            }
            read => return read,
        }
    }
}
