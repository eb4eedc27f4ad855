//! The volumes this process has open, shared by every connection that opens the same one: two
//! connections on one volume must use one writer (a second `Writer::open` would fence the
//! first), one page cache and one lock table. An entry lives while a connection has it open;
//! the last close closes the writer. An entry whose database latched a failure is closed by its
//! last connection the same way, but a new open no longer finds it and starts afresh (taking
//! the volume over again).
//!
//! A database name stands for one volume per process: SQLite names a database's journal after
//! it, and the journals live in memory by name, so two volumes opened under one name at once
//! would share a journal. Such an open is refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use crate::database::{Database, OpenFailure};
use crate::store::{BorealisStore, StoreOpenError};

/// An open volume, locked while a call uses it.
pub type SharedDatabase = Arc<Mutex<Database<BorealisStore>>>;

/// Which volume: the cluster directory (absolute) and the volume number; and whether it is
/// open read-only (`mode=ro`: a reader, shared by the process's read-only connections, apart
/// from a writer the process may also hold).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeKey {
    pub cluster: PathBuf,
    pub volume: u64,
    pub read_only: bool,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no volume: open `file:NAME?vfs=borealis&volume=N`")]
    NoVolume,
    #[error("volume={0:?} is not a volume number (a u64, decimal or 0x-hex)")]
    BadVolume(String),
    #[error("no cluster: set BOREALIS_CLUSTER=DIR or add `&cluster=DIR` to the URI")]
    NoCluster,
    #[error(transparent)]
    Store(#[from] StoreOpenError),
    #[error("volume {volume}: {source}")]
    Database { volume: u64, source: OpenFailure },
    #[error(
        "the name {name:?} is in use for volume {volume} in this process: give each volume its own name"
    )]
    NameInUse { name: String, volume: u64 },
}

impl VolumeKey {
    /// The key from the URI's `volume` and `cluster` parameters (`BOREALIS_CLUSTER` when the
    /// URI has none).
    pub fn new(volume: Option<&str>, cluster: Option<&str>, read_only: bool) -> Result<VolumeKey, OpenError> {
        let volume = volume.ok_or(OpenError::NoVolume)?;
        let parsed = match volume.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => volume.parse(),
        };
        let volume = parsed.map_err(|_| OpenError::BadVolume(volume.to_owned()))?;
        let cluster = match cluster {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("BOREALIS_CLUSTER").map(PathBuf::from).ok_or(OpenError::NoCluster)?,
        };
        let cluster = std::path::absolute(&cluster).unwrap_or(cluster);
        Ok(VolumeKey { cluster, volume, read_only })
    }
}

struct Entry {
    database: SharedDatabase,
    /// The name of each connection that has it open.
    names: Vec<String>,
}

fn open_volumes() -> MutexGuard<'static, HashMap<VolumeKey, Entry>> {
    static OPEN: LazyLock<Mutex<HashMap<VolumeKey, Entry>>> = LazyLock::new(Mutex::default);
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The volume's database for a connection that names it `name`: opened now, or shared with
/// the connections that have it open.
pub fn open(key: &VolumeKey, name: &str) -> Result<SharedDatabase, OpenError> {
    let mut open = open_volumes();
    // The same volume read-only and read-write may share a name: a read-only view has no journal.
    let other_volume = |k: &VolumeKey| (&k.cluster, k.volume) != (&key.cluster, key.volume);
    if let Some((other, _)) = open.iter().find(|(k, e)| other_volume(k) && e.names.iter().any(|n| n == name))
    {
        return Err(OpenError::NameInUse { name: name.to_owned(), volume: other.volume });
    }
    if let Some(entry) = open.get_mut(key) {
        entry.names.push(name.to_owned());
        return Ok(Arc::clone(&entry.database));
    }
    let store = match key.read_only {
        true => BorealisStore::open_read_only(&key.cluster, key.volume)?,
        false => BorealisStore::open(&key.cluster, key.volume)?,
    };
    let database =
        Database::open(store).map_err(|source| OpenError::Database { volume: key.volume, source })?;
    let database = Arc::new(Mutex::new(database));
    open.insert(key.clone(), Entry { database: Arc::clone(&database), names: vec![name.to_owned()] });
    Ok(database)
}

/// The connection that opened `database` as `name` closed it; the last one closes the writer.
pub fn close(key: &VolumeKey, name: &str, database: SharedDatabase) {
    let last = {
        let mut open = open_volumes();
        match open.get_mut(key) {
            Some(entry) if Arc::ptr_eq(&entry.database, &database) => {
                if let Some(at) = entry.names.iter().position(|n| n == name) {
                    entry.names.swap_remove(at);
                }
                entry.names.is_empty() && open.remove(key).is_some()
            }
            // Forgotten after a failure: dropping the last `Arc` drops the writer.
            _ => false,
        }
    };
    if !last {
        return;
    }
    let Ok(database) = Arc::try_unwrap(database) else { return };
    let database = database.into_inner().unwrap_or_else(PoisonError::into_inner);
    match database.failure() {
        // Fenced or unsure: nothing of ours to wait for.
        Some(_) => drop(database),
        None => database.into_store().close(),
    }
}

/// Forgets `database` after its first failure, so a new open takes the volume over afresh.
pub fn forget_failed(key: &VolumeKey, database: &SharedDatabase) {
    let mut open = open_volumes();
    if open.get(key).is_some_and(|e| Arc::ptr_eq(&e.database, database)) {
        open.remove(key);
    }
}

impl std::fmt::Display for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.read_only { " (read-only)" } else { "" };
        write!(f, "volume {} of {}{mode}", self.volume, self.cluster.display())
    }
}
