//! Rotating the key-encryption key (KEK): every data key of the node is re-wrapped under a new
//! KEK and the node metadata is stored over both of its copies, after which the old KEK opens
//! nothing in the data directory. No data is rewritten: the data keys, and so every sealed
//! journal entry and page image, and the nonce counter stay exactly as they were
//! (`docs/security.md`).
//!
//! One re-wrap ([`rewrap`]) behind three ways in:
//! - at start ([`at_start`]): a node whose stored keys do not open under `key_file` but do
//!   under `key_file_previous` re-wraps them before it opens its keyring;
//! - on SIGHUP ([`on_reload`]): a running node whose `key_file` now holds another KEK
//!   re-wraps under it, the KEK it runs with being the old one (`Keyring::rotate_kek`);
//! - offline ([`rotate_data_dir`], `storaged rotate-kek`): the node stopped, its directory
//!   locked as the node would lock it.
//!
//! Invariants: the metadata is stored only after every key was re-wrapped (all or nothing per
//! copy); a store overwrites both copies (`MetaStore::store_both`), so a crash at any instant
//! leaves copies that each open under the old KEK or the new one, and the next start with both
//! KEKs finishes the rotation; a key that opens under none of the KEKs given is an error, never
//! dropped.

use std::path::{Path, PathBuf};

use protocol::{NodeId, VolumeId};

use crate::config::Config;
use crate::keyring::Keyring;
use crate::meta::{MetaError, MetaStore, NodeMeta, COPY_PATHS};
use crate::seal::{Kek, SealError, WrappedKey};
use crate::storage::Storage;

/// Why a rotation could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    #[error(
        "data key of volume {volume} opens under none of the {tried} KEK(s) given; give the KEK it \
         is wrapped under as the previous key file (key_file_previous, --key-file-previous)"
    )]
    Unopenable { volume: VolumeId, tried: usize },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
}

/// Node metadata with every key wrapped under one KEK.
#[derive(Debug)]
pub(crate) struct Rewrapped {
    pub meta: NodeMeta,
    /// Keys that were wrapped under an old KEK.
    pub count: usize,
}

/// `meta` with every key wrapped under `current`: a key that opens under `current` stays as it
/// is, one that opens under one of `olds` is re-wrapped. Pure but for the random wrap nonces.
pub(crate) fn rewrap(meta: &NodeMeta, current: &Kek, olds: &[&Kek]) -> Result<Rewrapped, RotationError> {
    let mut rewrapped = Rewrapped { meta: meta.clone(), count: 0 };
    for key in &mut rewrapped.meta.keys {
        if current.opens(key) {
            continue;
        }
        let old = olds.iter().find(|old| old.opens(key));
        let old = old.ok_or(RotationError::Unopenable { volume: key.volume, tried: 1 + olds.len() })?;
        *key = current.rewrap(key, old)?;
        rewrapped.count += 1;
    }
    Ok(rewrapped)
}

/// What [`settle`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// The node the directory belongs to (`None`: a fresh directory, nothing to do).
    pub node: Option<NodeId>,
    /// Data keys in the metadata.
    pub keys: usize,
    /// Keys re-wrapped under the current KEK.
    pub rewrapped: usize,
    /// True if the metadata was stored over both copies: keys were re-wrapped, or the older
    /// copy still held a key the current KEK does not open (a rotation a crash interrupted).
    pub stored: bool,
}

/// Makes every key in the data directory's metadata, in both copies, open under `current`,
/// re-wrapping those wrapped under `previous`. `node`: the node the directory must belong to
/// (`None`: whichever, for offline tools).
pub(crate) async fn settle<S: Storage>(
    storage: &S,
    node: Option<NodeId>,
    current: &Kek,
    previous: Option<&Kek>,
) -> Result<Settled, RotationError> {
    let (mut store, meta) = match node {
        Some(node) => MetaStore::open(storage, node).await?,
        None => MetaStore::open_as_found(storage).await?,
    };
    let Some(meta) = meta else { return Ok(Settled::default()) };
    let rewrapped = rewrap(&meta, current, &previous.into_iter().collect::<Vec<_>>())?;
    let stale = store.copies().await.iter().any(|copy| copy.keys.iter().any(|key| !current.opens(key)));
    let stored = rewrapped.count > 0 || stale;
    if stored {
        store.store_both(&rewrapped.meta).await?;
    }
    Ok(Settled { node: Some(meta.node), keys: meta.keys.len(), rewrapped: rewrapped.count, stored })
}

/// The start path: settles the metadata under `current` with the configured previous key file
/// (if any) before the keyring opens it, and logs what it did; then takes a data key rotation
/// request, if any (`data_key_rotation::at_start`). A previous key file that cannot
/// be read is only a warning: it matters only if a key needs it, and then `settle` says so.
pub(crate) async fn at_start<S: Storage>(
    storage: &S,
    config: &Config,
    current: &Kek,
) -> Result<(), RotationError> {
    let previous = config.key_file_previous.as_deref().and_then(|path| match Kek::load(path) {
        Ok(kek) => Some(kek),
        Err(error) => {
            tracing::warn!(%error, "previous key file unusable; going on without it");
            None
        }
    });
    let settled = settle(storage, Some(config.node_id), current, previous.as_ref()).await?;
    if settled.stored {
        tracing::info!(
            rewrapped = settled.rewrapped,
            keys = settled.keys,
            kek = %current.fingerprint(),
            "KEK rotated at start: every data key now wrapped under the key file, in both metadata \
             copies; the previous key file is no longer needed"
        );
    } else if previous.is_some() {
        tracing::info!(kek = %current.fingerprint(), "every data key already opens under the key file; the previous key file is not needed");
    }
    crate::data_key_rotation::at_start(storage, config, current).await
}

/// The SIGHUP path: re-reads `key_file` and, if it holds another KEK than the one the node
/// runs with, re-wraps every data key under it (`Keyring::rotate_kek`). Failures are logged
/// and leave the running KEK in use. Then takes a data key rotation request, if any
/// (`data_key_rotation::on_reload`), under whichever KEK is held.
pub(crate) async fn on_reload<S: Storage>(config: &Config, keyring: &Keyring<S>) {
    let current = match Kek::load(&config.key_file) {
        Ok(kek) => kek,
        Err(error) => return tracing::error!(%error, "reload: key file unusable; kept the running KEK"),
    };
    let kek = current.fingerprint();
    match keyring.rotate_kek(current).await {
        Ok(None) => tracing::info!(%kek, "reload: key file re-read; KEK unchanged"),
        Ok(Some(rewrapped)) => tracing::info!(
            rewrapped,
            %kek,
            "reload: KEK rotated: every data key re-wrapped under the key file, in both metadata \
             copies; the previous KEK is no longer needed"
        ),
        Err(error) => tracing::error!(%error, "reload: KEK rotation failed; kept the running KEK"),
    }
    crate::data_key_rotation::on_reload(config, keyring).await;
}

/// The offline path: the node stopped, re-wraps the keys in `data_dir` from `previous` to
/// `current` (the same [`settle`] as a start), holding the directory's lock so that a running
/// node is never touched. Runs its own io_uring runtime: call it outside of one.
pub fn rotate_data_dir(data_dir: &Path, current: &Kek, previous: &Kek) -> Result<Settled, RotationError> {
    let fail = |reason: String| RotationError::DataDir { dir: data_dir.display().to_string(), reason };
    if !COPY_PATHS.iter().any(|copy| data_dir.join(copy).exists()) {
        return Err(fail("no node metadata (node-meta.0 or .1) here".into()));
    }
    let _lock = crate::server::lock_data_dir(data_dir).map_err(|e| fail(e.to_string()))?;
    let storage = crate::storage::uring::UringDir::new(data_dir, false);
    tokio_uring::start(settle(&storage, None, current, Some(previous)))
}

/// The wrapped keys of one valid node metadata copy, as found on disk.
#[derive(Clone, Debug)]
pub struct StoredKeys {
    pub path: PathBuf,
    pub node: NodeId,
    pub keys: Vec<WrappedKey>,
}

impl StoredKeys {
    /// How many of the keys open under `kek`.
    pub fn opening_under(&self, kek: &Kek) -> usize {
        self.keys.iter().filter(|key| kek.opens(key)).count()
    }
}

/// Every valid node metadata copy in `data_dir` with its wrapped keys (read with plain file
/// reads, so a running node's directory can be inspected too). A missing copy is skipped; a
/// damaged one too, since the node never loads it.
pub fn stored_keys(data_dir: &Path) -> std::io::Result<Vec<StoredKeys>> {
    let mut found = Vec::new();
    for copy in COPY_PATHS {
        let path = data_dir.join(copy);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if let Some(meta) = crate::meta::decode_copy(&bytes) {
            found.push(StoredKeys { path, node: meta.node, keys: meta.keys });
        }
    }
    Ok(found)
}

/// `storaged rotate-kek`: re-wraps a stopped node's data keys under a new KEK.
#[derive(Debug, clap::Parser)]
#[command(
    name = "storaged rotate-kek",
    about = "Re-wraps every data key of a stopped node under a new key-encryption key (no data is \
             rewritten). A running node does the same on SIGHUP once its key_file holds the new KEK."
)]
pub struct RotateKekCli {
    /// The node's data directory (the node must be stopped: its lock is taken).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Key file of the KEK the keys are wrapped under now.
    #[arg(long, value_name = "FILE")]
    pub old: PathBuf,
    /// Key file of the new KEK (64 hex digits, mode 0600); make it with `Kek::create_file`
    /// or `(umask 077; openssl rand -hex 32 > FILE)`.
    #[arg(long, value_name = "FILE")]
    pub new: PathBuf,
}

/// Runs `storaged rotate-kek` (`args` without the program and subcommand names) and returns
/// the exit status: 0 once every stored key opens under the new KEK and none under the old.
pub fn cli_main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    use clap::Parser;
    let cli = match RotateKekCli::try_parse_from(std::iter::once("storaged rotate-kek".into()).chain(args)) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    match rotate_command(&cli) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(error) => {
            eprintln!("storaged rotate-kek: {error}");
            1
        }
    }
}

fn rotate_command(cli: &RotateKekCli) -> Result<String, String> {
    let (old, new) =
        (Kek::load(&cli.old).map_err(|e| e.to_string())?, Kek::load(&cli.new).map_err(|e| e.to_string())?);
    if old.same_key(&new) {
        return Err("the old and the new key files hold the same KEK".into());
    }
    let settled = rotate_data_dir(&cli.data_dir, &new, &old).map_err(|e| e.to_string())?;
    let copies = stored_keys(&cli.data_dir).map_err(|e| format!("reading the metadata back: {e}"))?;
    let under_old: usize = copies.iter().map(|c| c.opening_under(&old)).sum();
    let under_new: usize = copies.iter().map(|c| c.opening_under(&new)).sum();
    let stored: usize = copies.iter().map(|c| c.keys.len()).sum();
    if under_old > 0 || under_new != stored {
        return Err(format!("after the re-wrap {under_old} stored keys open under the old KEK, {under_new} of {stored} under the new"));
    }
    let node = settled.node.map_or_else(|| "?".to_string(), |n| n.to_string());
    Ok(format!(
        "{node}: KEK rotated to {}: re-wrapped {} of {} data keys; the old KEK {} opens 0 of the {stored} wrapped keys in {} metadata copies",
        new.fingerprint(),
        settled.rewrapped,
        settled.keys,
        old.fingerprint(),
        copies.len()
    ))
}

#[cfg(test)]
#[path = "kek_rotation_tests.rs"]
mod tests;
