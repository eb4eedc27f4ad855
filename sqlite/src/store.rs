//! The Borealis side of the VFS: a [`PageStore`] over one `client::Writer`, driven from
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
use client::{NewRecord, VolumeGeometry, Writer};
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

/// One volume's writer, used synchronously.
#[derive(Debug)]
pub struct BorealisStore {
    writer: Writer,
    runtime: &'static Runtime,
}

impl BorealisStore {
    /// Opens `volume` of the local cluster in `cluster`: takes the volume over, fencing any
    /// writer another process holds.
    pub fn open(cluster: &std::path::Path, volume: u64) -> Result<BorealisStore, StoreOpenError> {
        let runtime = runtime()?;
        let local = LocalCluster::load(cluster).map_err(|source| StoreOpenError::Cluster {
            dir: cluster.to_owned(),
            source: Box::new(source),
        })?;
        let mut config = local.client_config()?;
        config.append_timeout = COMMIT_TIMEOUT;
        config.requests_dir = Some(local.requests_dir());
        let geometry = VolumeGeometry::new(VolumeId(u128::from(volume)), PAGE_BYTES, PAGES_PER_PG)?;
        let writer = runtime
            .block_on(Writer::open(config, geometry))
            .map_err(|source| StoreOpenError::Open { volume, source })?;
        Ok(BorealisStore { writer, runtime })
    }

    /// Closes the writer once what it appended is durable (bounded by the append timeout).
    pub fn close(self) {
        let BorealisStore { writer, runtime } = self;
        runtime.block_on(writer.close());
    }

    fn fenced(&self) -> bool {
        self.writer.watch_vdl().borrow().fenced
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
        let writer = &self.writer;
        let versions = self.block_on(async {
            let snapshot = writer.snapshot();
            futures::future::try_join_all(pages.iter().map(|page| read_page(writer, *page, snapshot.lsn())))
                .await
        });
        let versions = versions.map_err(StoreError::Read)?;
        Ok(versions
            .into_iter()
            .map(|v| (v.lsn != Lsn::ZERO && !v.bytes.is_empty()).then_some(v.bytes))
            .collect())
    }

    fn commit(&mut self, records: Vec<NewRecord>) -> Result<(), StoreError> {
        let writer = &self.writer;
        let durable = self.block_on(async { writer.append(records).await?.durable().await });
        match durable {
            Ok(_) => Ok(()),
            Err(client::AppendError::Fenced) => Err(StoreError::Fenced),
            Err(client::AppendError::Closed) => Err(StoreError::Closed),
            Err(other) => Err(StoreError::Append(other)),
        }
    }
}

/// `page` at `at`, tried again while no segment can serve it yet, for up to [`READ_RETRY_FOR`].
async fn read_page(writer: &Writer, page: PageId, at: Lsn) -> Result<client::PageVersion, client::ReadError> {
    let deadline = tokio::time::Instant::now() + READ_RETRY_FOR;
    loop {
        match writer.read_page(page, at).await {
            Err(client::ReadError::Unavailable { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(READ_RETRY_PAUSE).await;
            }
            read => return read,
        }
    }
}
