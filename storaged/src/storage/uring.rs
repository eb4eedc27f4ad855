//! The real disk: a data directory driven through io_uring (`tokio-uring`), so no read, write,
//! flush, create or delete blocks the node's one thread.
//!
//! Each file keeps a buffered read descriptor and, once written, a write descriptor opened
//! with O_DIRECT when the file system allows it (4 KiB-aligned buffers and offsets), buffered
//! otherwise; either way `sync` is `fdatasync`. Files are preallocated whole (`fallocate`) at
//! `create`, so a full disk shows up there, never halfway through a group.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tokio_uring::fs::{File, OpenOptions};

use super::Storage;
use crate::journal::buf::AlignedBuf;

/// See the module docs.
#[derive(Clone)]
pub struct UringDir {
    inner: Rc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Try O_DIRECT for writes; cleared the first time the file system refuses it.
    direct: Cell<bool>,
    open: RefCell<HashMap<String, Handles>>,
}

#[derive(Default)]
struct Handles {
    read: Option<Rc<File>>,
    write: Option<Rc<File>>,
}

impl std::fmt::Debug for UringDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UringDir({})", self.inner.root.display())
    }
}

impl UringDir {
    /// The data directory at `root` (which must exist), writing with O_DIRECT if `direct_io`.
    pub fn new(root: impl Into<PathBuf>, direct_io: bool) -> UringDir {
        let inner = Inner { root: root.into(), direct: Cell::new(direct_io), open: RefCell::default() };
        UringDir { inner: Rc::new(inner) }
    }

    /// True while writes go through O_DIRECT.
    pub fn direct_io(&self) -> bool {
        self.inner.direct.get()
    }

    fn path(&self, path: &str) -> PathBuf {
        self.inner.root.join(path)
    }

    async fn reader(&self, path: &str) -> io::Result<Rc<File>> {
        if let Some(file) = self.inner.open.borrow().get(path).and_then(|h| h.read.clone()) {
            return Ok(file);
        }
        let file = Rc::new(File::open(self.path(path)).await?);
        let mut open = self.inner.open.borrow_mut();
        Ok(Rc::clone(open.entry(path.to_string()).or_default().read.get_or_insert(file)))
    }

    async fn writer(&self, path: &str) -> io::Result<Rc<File>> {
        if let Some(file) = self.inner.open.borrow().get(path).and_then(|h| h.write.clone()) {
            return Ok(file);
        }
        let full = self.path(path);
        let mut file = None;
        if self.inner.direct.get() {
            match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&full).await {
                Ok(f) => file = Some(f),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(path = %full.display(), "file system refuses O_DIRECT; writes are buffered");
                    self.inner.direct.set(false);
                }
                Err(e) => return Err(e),
            }
        }
        let file = match file {
            Some(file) => file,
            None => OpenOptions::new().write(true).open(&full).await?,
        };
        let file = Rc::new(file);
        let mut open = self.inner.open.borrow_mut();
        Ok(Rc::clone(open.entry(path.to_string()).or_default().write.get_or_insert(file)))
    }

    async fn sync_parent(&self, path: &str) -> io::Result<()> {
        let full = self.path(path);
        sync_dir(full.parent().unwrap_or(&self.inner.root)).await
    }
}

/// Makes a directory's entries (a new, renamed or deleted file) durable.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = File::open(dir).await?;
    let synced = dir.sync_all().await;
    let closed = dir.close().await;
    synced.and(closed)
}

impl Storage for UringDir {
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.path(dir))? {
            names.extend(entry?.file_name().into_string().ok());
        }
        Ok(names)
    }

    async fn create(&self, path: &str, len: u64) -> io::Result<()> {
        let full = self.path(path);
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&full).await?;
        let made = match file.fallocate(0, len, 0).await {
            Ok(()) => file.sync_all().await,
            Err(error) => Err(error),
        };
        let _ = file.close().await;
        if let Err(error) = made {
            let _ = tokio_uring::fs::remove_file(&full).await;
            return Err(error);
        }
        self.sync_parent(path).await
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.reader(path).await?;
        let (result, buf) = file.read_exact_at(vec![0u8; len], offset).await;
        result.map(|()| buf)
    }

    async fn read_all(&self, path: &str) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(path)).await?;
        let len = file.statx().await?.stx_size as usize;
        let (result, buf) = file.read_exact_at(vec![0u8; len], 0).await;
        let _ = file.close().await;
        result.map(|()| buf)
    }

    async fn write_at(&self, path: &str, offset: u64, buf: AlignedBuf) -> io::Result<()> {
        let file = self.writer(path).await?;
        file.write_all_at(buf, offset).await.0
    }

    async fn sync(&self, path: &str) -> io::Result<()> {
        self.writer(path).await?.sync_data().await
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        // Reads already holding a descriptor finish; later ones find no file.
        self.inner.open.borrow_mut().remove(path);
        match tokio_uring::fs::remove_file(self.path(path)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.sync_parent(path).await
    }

    async fn put(&self, path: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.inner.open.borrow_mut().remove(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.path(path))
            .await?;
        let written = match file.write_all_at(bytes, 0).await.0 {
            Ok(()) => file.sync_all().await,
            Err(error) => Err(error),
        };
        let closed = file.close().await;
        written.and(closed)?;
        self.sync_parent(path).await
    }
}
