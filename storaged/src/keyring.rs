//! The node's keys in use: the KEK, every volume's unwrapped data key, and the nonce counter,
//! backed by the node metadata (`meta`). Creating a volume's key or extending the nonce
//! reservation stores the metadata durably *before* the key or nonces are used.
//!
//! The journal and the page store seal groups concurrently (two tasks on the node's thread), so
//! a seal holds the metadata lock from its reservation until its nonces are taken: a second
//! seal waits instead of reserving against the same count.

use std::cell::RefCell;
use std::collections::HashMap;

use protocol::{KeyVersion, NodeId, VolumeId};

use crate::meta::{MetaError, MetaStore, NodeMeta};
use crate::seal::{DataKey, Kek, NonceCounter, SealError};
use crate::storage::Storage;

/// Why the keyring could not be opened or extended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("data key of volume {volume}: {source}")]
    Unwrap { volume: VolumeId, source: SealError },
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl KeyringError {
    /// True if the metadata could not be stored because the disk is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, KeyringError::Meta(MetaError::Io { source, .. }) if crate::storage::is_no_space(source))
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Keyring<S> {
    kek: Kek,
    store: tokio::sync::Mutex<MetaStore<S>>,
    state: RefCell<KeyState>,
}

#[derive(Debug)]
struct KeyState {
    meta: NodeMeta,
    keys: HashMap<VolumeId, DataKey>,
    nonces: NonceCounter,
}

impl<S: Storage> Keyring<S> {
    /// Opens (or initialises) the metadata of `node` and unwraps every data key.
    pub async fn open(storage: &S, node: NodeId, kek: Kek) -> Result<Keyring<S>, KeyringError> {
        let (mut store, meta) = MetaStore::open(storage, node).await?;
        let meta = match meta {
            Some(meta) => meta,
            None => {
                let fresh = NodeMeta { node, nonce_reserved_through: 0, keys: Vec::new() };
                store.store(&fresh).await?;
                fresh
            }
        };
        let mut keys = HashMap::new();
        for wrapped in &meta.keys {
            let key = kek
                .unwrap(wrapped)
                .map_err(|source| KeyringError::Unwrap { volume: wrapped.volume, source })?;
            keys.insert(wrapped.volume, key);
        }
        let nonces = NonceCounter::resume(node, meta.nonce_reserved_through);
        let state = RefCell::new(KeyState { meta, keys, nonces });
        Ok(Keyring { kek, store: tokio::sync::Mutex::new(store), state })
    }

    /// Runs `f` with the data keys.
    pub fn with_keys<T>(&self, f: impl FnOnce(&HashMap<VolumeId, DataKey>) -> T) -> T {
        f(&self.state.borrow().keys)
    }

    /// Makes sure every volume in `volumes` has a key and that `nonces` more nonces are
    /// reserved (storing the metadata once if anything changed), then runs `f` with the keys
    /// and the nonce counter.
    pub async fn seal<T>(
        &self,
        volumes: impl Iterator<Item = VolumeId>,
        nonces: u64,
        f: impl FnOnce(&HashMap<VolumeId, DataKey>, &mut NonceCounter) -> T,
    ) -> Result<T, KeyringError> {
        let mut store = self.store.lock().await;
        // Usually nothing is missing: no allocation, no copy of the metadata.
        let (missing, short) = {
            let state = self.state.borrow();
            let mut missing: Vec<VolumeId> = volumes.filter(|v| !state.keys.contains_key(v)).collect();
            missing.sort_unstable();
            missing.dedup();
            (missing, state.nonces.remaining() < nonces)
        };
        if !missing.is_empty() || short {
            let mut meta = self.state.borrow().meta.clone();
            let mut new_keys = Vec::with_capacity(missing.len());
            for volume in missing {
                let (key, wrapped) = self.kek.new_data_key(volume, KeyVersion(1))?;
                meta.keys.push(wrapped);
                new_keys.push((volume, key));
            }
            if short {
                meta.nonce_reserved_through = self.state.borrow().nonces.reservation_after(nonces);
            }
            store.store(&meta).await?;
            let mut state = self.state.borrow_mut();
            state.keys.extend(new_keys);
            state.nonces.reserved(meta.nonce_reserved_through);
            state.meta = meta;
        }
        let state = &mut *self.state.borrow_mut();
        Ok(f(&state.keys, &mut state.nonces))
    }
}
