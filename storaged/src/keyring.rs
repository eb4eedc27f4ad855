//! The node's keys in use: the KEK, every volume's unwrapped data key, and the nonce counter,
//! backed by the node metadata (`meta`). Creating a volume's key or extending the nonce
//! reservation stores the metadata durably *before* the key or nonces are used.

use std::collections::HashMap;
use std::path::Path;

use protocol::{KeyVersion, NodeId, VolumeId};

use crate::meta::{MetaError, MetaStore, NodeMeta};
use crate::seal::{DataKey, Kek, NonceCounter, SealError};

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

/// See the module docs.
#[derive(Debug)]
pub struct Keyring {
    kek: Kek,
    store: MetaStore,
    meta: NodeMeta,
    keys: HashMap<VolumeId, DataKey>,
    nonces: NonceCounter,
}

impl Keyring {
    /// Opens (or initialises) the metadata in `dir` for `node` and unwraps every data key.
    pub fn open(dir: &Path, node: NodeId, kek: Kek) -> Result<Keyring, KeyringError> {
        let (mut store, meta) = MetaStore::open(dir, node)?;
        let meta = match meta {
            Some(meta) => meta,
            None => {
                let fresh = NodeMeta { node, nonce_reserved_through: 0, keys: Vec::new() };
                store.store(&fresh)?;
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
        Ok(Keyring { kek, store, meta, keys, nonces })
    }

    /// The data key of `volume`, if one exists.
    pub fn key(&self, volume: VolumeId) -> Option<&DataKey> {
        self.keys.get(&volume)
    }

    /// Makes sure every volume in `volumes` has a key and that `nonces` more nonces are
    /// reserved, storing the metadata once if anything changed.
    pub fn prepare(
        &mut self,
        volumes: impl Iterator<Item = VolumeId>,
        nonces: u64,
    ) -> Result<(), KeyringError> {
        let mut changed = false;
        for volume in volumes {
            if !self.keys.contains_key(&volume) {
                let (key, wrapped) = self.kek.new_data_key(volume, KeyVersion(1))?;
                self.meta.keys.push(wrapped);
                self.keys.insert(volume, key);
                changed = true;
            }
        }
        if self.nonces.remaining() < nonces {
            let through = self.nonces.reservation_after(nonces);
            self.meta.nonce_reserved_through = through;
            changed = true;
        }
        if changed {
            self.store.store(&self.meta)?;
            self.nonces.reserved(self.meta.nonce_reserved_through);
        }
        Ok(())
    }

    /// The keys and the nonce counter, for sealing a group.
    pub fn sealing(&mut self) -> (&HashMap<VolumeId, DataKey>, &mut NonceCounter) {
        (&self.keys, &mut self.nonces)
    }
}
