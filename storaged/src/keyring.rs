//! The node's keys in use: the KEK, every volume's unwrapped data key, and the nonce counter,
//! backed by the node metadata (`meta`). Creating a volume's key or extending the nonce
//! reservation stores the metadata durably *before* the key or nonces are used.
//!
//! The journal and the page store seal groups concurrently (two tasks on the node's thread), so
//! a seal holds the metadata lock from its reservation until its nonces are taken: a second
//! seal waits instead of reserving against the same count. A KEK rotation (`rotate_kek`, on
//! SIGHUP) holds the same lock while it stores the re-wrapped keys.
//!
//! A volume may hold several data key versions while a data key rotation is under way
//! (`rotate_volume`): seals take the newest ([`KeySet::sealing`]), opens take the version the
//! entry's header names ([`KeySet::opening`]). The older versions are destroyed
//! (`destroy_older`) once no file may hold an entry sealed under them (`store::NodeStore`
//! decides). Every version, every volume and every restart draw nonces from the one counter, so
//! no nonce is ever handed out twice under any key (`docs/security.md`).
//!
//! A volume deleted for good is dropped (`drop_volume`): every data key version of it is
//! destroyed and its id kept as a tombstone, both in one metadata body stored over both copies,
//! so every byte of it left in a journal or page store file is unreadable from then on
//! (crypto-shredding), and replay tells its entries from damaged ones by the tombstone
//! (`is_dropped`). No key of a dropped volume is ever made again: an entry of it sealed after
//! the drop (a group the journal or the coalescer had already taken) is sealed under a random
//! key held in memory only and never stored (`KeySet::sealing`), which opens nothing.
//!
//! Invariants: every key in the held metadata is wrapped under the held KEK; the held keys are
//! exactly the held metadata's keys, unwrapped; no held or stored key belongs to a dropped
//! volume.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use protocol::{KeyVersion, NodeId, VolumeId};

use crate::kek_rotation::{rewrap, RotationError};
use crate::meta::{MetaError, MetaStore, NodeMeta, DROPPED_VOLUMES_MAX};
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
    #[error(transparent)]
    Rotation(#[from] RotationError),
    #[error("volume {volume}: data key version {version} is past the last one")]
    VersionsExhausted { volume: VolumeId, version: KeyVersion },
    #[error("volume {volume}: this node already keeps {DROPPED_VOLUMES_MAX} dropped volumes' tombstones")]
    DroppedVolumesFull { volume: VolumeId },
}

/// The key version written in the header of an entry sealed under a shredding key (one made in
/// memory for a dropped volume, never stored): no stored key has it, so nothing opens it.
pub const SHREDDING_KEY_VERSION: KeyVersion = KeyVersion(u32::MAX);

/// The unwrapped data keys of every volume, by version, and the shredding keys of dropped
/// volumes (seal only).
#[derive(Debug, Default)]
pub struct KeySet(HashMap<VolumeId, BTreeMap<KeyVersion, DataKey>>, HashMap<VolumeId, DataKey>);

impl KeySet {
    /// The key new entries of `volume` are sealed under: its newest version (for a dropped
    /// volume, its shredding key, which opens nothing).
    pub fn sealing(&self, volume: VolumeId) -> Option<&DataKey> {
        let newest = self.0.get(&volume).and_then(|versions| versions.values().next_back());
        newest.or_else(|| self.1.get(&volume))
    }

    /// The key an entry of `volume` sealed under `version` opens with.
    pub fn opening(&self, volume: VolumeId, version: KeyVersion) -> Option<&DataKey> {
        self.0.get(&volume).and_then(|versions| versions.get(&version))
    }

    fn contains(&self, volume: VolumeId) -> bool {
        self.0.contains_key(&volume)
    }

    fn insert(&mut self, key: DataKey, volume: VolumeId) {
        self.0.entry(volume).or_default().insert(key.version(), key);
    }
}

impl std::ops::Index<&VolumeId> for KeySet {
    type Output = DataKey;

    /// The sealing key of a volume that has one.
    fn index(&self, volume: &VolumeId) -> &DataKey {
        self.sealing(*volume).expect("the volume has a data key")
    }
}

/// What a data key rotation of one volume did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeRotated {
    pub volume: VolumeId,
    /// The version new entries are sealed under from now on.
    pub version: KeyVersion,
    /// Versions kept, readable, until they are destroyed.
    pub older: usize,
}

/// What dropping a volume did to the keys (`Keyring::drop_volume`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeysDropped {
    /// False if the tombstone was already stored (an earlier call).
    pub tombstoned: bool,
    /// The data key versions destroyed now (none on a repeated call, or for a volume this node
    /// never sealed anything of).
    pub destroyed: Vec<KeyVersion>,
    /// Metadata copies stored (0 if both copies already held the tombstone and no key of it).
    pub copies_stored: usize,
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
    store: tokio::sync::Mutex<MetaStore<S>>,
    state: RefCell<KeyState>,
}

#[derive(Debug)]
struct KeyState {
    kek: Kek,
    meta: NodeMeta,
    keys: KeySet,
    nonces: NonceCounter,
}

impl<S: Storage> Keyring<S> {
    /// Opens (or initialises) the metadata of `node` and unwraps every data key.
    pub async fn open(storage: &S, node: NodeId, kek: Kek) -> Result<Keyring<S>, KeyringError> {
        let (mut store, meta) = MetaStore::open(storage, node).await?;
        let meta = match meta {
            Some(meta) => meta,
            None => {
                let fresh = NodeMeta::new(node);
                // Both copies: from now on a lone copy means a lost one (`dual`).
                store.store_both(&fresh).await?;
                fresh
            }
        };
        let mut keys = KeySet::default();
        for wrapped in &meta.keys {
            let key = kek
                .unwrap(wrapped)
                .map_err(|source| KeyringError::Unwrap { volume: wrapped.volume, source })?;
            keys.insert(key, wrapped.volume);
        }
        let nonces = NonceCounter::resume(node, meta.nonce_reserved_through);
        // A drop stopped between its two stores left the older copy with the volume's keys:
        // shred them now.
        settle_copies(&mut store, &meta).await?;
        let state = RefCell::new(KeyState { kek, meta, keys, nonces });
        Ok(Keyring { store: tokio::sync::Mutex::new(store), state })
    }

    /// True if `volume` was dropped here for good (its tombstone is stored).
    pub fn is_dropped(&self, volume: VolumeId) -> bool {
        self.state.borrow().meta.is_dropped(volume)
    }

    /// Every volume dropped here, ascending.
    pub fn dropped_volumes(&self) -> Vec<VolumeId> {
        self.state.borrow().meta.dropped.clone()
    }

    /// Drops `volume` for good: stores its tombstone and removes every data key version of it
    /// in one metadata body, over both copies, then forgets the keys. From the first store on
    /// the held state has the tombstone (so no seal can make a key of it again); a second call
    /// (after an error, or to check) stores again only if a copy on disk still lacks the
    /// tombstone or still holds a key of the volume. A crash between the two stores leaves the
    /// tombstone in the newest copy and the keys in the older one, which `open` shreds.
    pub async fn drop_volume(&self, volume: VolumeId) -> Result<KeysDropped, KeyringError> {
        let mut store = self.store.lock().await;
        let mut done = KeysDropped::default();
        let dropped = {
            let state = self.state.borrow();
            let held = state.meta.keys.iter().any(|key| key.volume == volume);
            if state.meta.is_dropped(volume) && !held {
                None
            } else if !state.meta.is_dropped(volume) && state.meta.dropped.len() >= DROPPED_VOLUMES_MAX {
                return Err(KeyringError::DroppedVolumesFull { volume });
            } else {
                Some(without_volume(&state.meta, volume))
            }
        };
        if let Some((meta, destroyed)) = dropped {
            store.store(&meta).await?;
            done = KeysDropped { tombstoned: !self.is_dropped(volume), destroyed, copies_stored: 1 };
            let mut state = self.state.borrow_mut();
            state.keys.0.remove(&volume);
            state.meta = meta;
        }
        let meta = self.state.borrow().meta.clone();
        done.copies_stored += settle_copies(&mut store, &meta).await?;
        Ok(done)
    }

    /// Makes `current` the KEK: if the held one differs, re-wraps every data key under
    /// `current` and stores the metadata over both copies (`MetaStore::store_both`) before
    /// using it. The KEK held so far is the old one, so a running node needs no previous key
    /// file. Returns how many keys were re-wrapped, `None` if `current` is the held KEK. On an
    /// error the held KEK and keys stay; the copies on disk then open under one KEK or the
    /// other.
    pub async fn rotate_kek(&self, current: Kek) -> Result<Option<usize>, KeyringError> {
        let mut store = self.store.lock().await;
        let rewrapped = {
            let state = self.state.borrow();
            if state.kek.same_key(&current) {
                return Ok(None);
            }
            rewrap(&state.meta, &current, &[&state.kek])?
        };
        store.store_both(&rewrapped.meta).await?;
        let mut state = self.state.borrow_mut();
        state.kek = current;
        state.meta = rewrapped.meta;
        Ok(Some(rewrapped.count))
    }

    /// The held KEK's fingerprint (`Kek::fingerprint`).
    pub fn kek_fingerprint(&self) -> String {
        self.state.borrow().kek.fingerprint()
    }

    /// Runs `f` with the data keys.
    pub fn with_keys<T>(&self, f: impl FnOnce(&KeySet) -> T) -> T {
        f(&self.state.borrow().keys)
    }

    /// Starts a data key rotation of `volume`: a new random data key, the next version, wrapped
    /// under the KEK and stored durably in the metadata before any seal can pick it; from then
    /// on every seal of the volume takes it, and the older versions stay to open what they
    /// sealed. `None` if this node holds no key of `volume` (it never sealed anything of it;
    /// its first key will be new anyway).
    pub async fn rotate_volume(&self, volume: VolumeId) -> Result<Option<VolumeRotated>, KeyringError> {
        let mut store = self.store.lock().await;
        let (key, meta, older) = {
            let state = self.state.borrow();
            let Some(versions) = state.keys.0.get(&volume) else { return Ok(None) };
            let newest = *versions.keys().next_back().expect("a volume's versions are never empty");
            let next = newest.0.checked_add(1).map(KeyVersion);
            let next = next.ok_or(KeyringError::VersionsExhausted { volume, version: newest })?;
            let (key, wrapped) = state.kek.new_data_key(volume, next)?;
            let mut meta = state.meta.clone();
            meta.keys.push(wrapped);
            (key, meta, versions.len())
        };
        store.store(&meta).await?;
        let version = key.version();
        let mut state = self.state.borrow_mut();
        state.keys.insert(key, volume);
        state.meta = meta;
        Ok(Some(VolumeRotated { volume, version, older }))
    }

    /// Volumes holding more than one data key version, with their newest: rotations whose older
    /// versions wait to be destroyed.
    pub fn rotations_under_way(&self) -> Vec<(VolumeId, KeyVersion)> {
        let state = self.state.borrow();
        let mut found: Vec<_> = state
            .keys
            .0
            .iter()
            .filter(|(_, versions)| versions.len() > 1)
            .map(|(volume, versions)| (*volume, *versions.keys().next_back().expect("not empty")))
            .collect();
        found.sort_unstable();
        found
    }

    /// Destroys every data key version of `volume` older than `newest`: removes them from the
    /// metadata, stored over both copies (`MetaStore::store_both`) so that no copy holds them
    /// any more, then forgets them. The caller guarantees that no file still holds an entry
    /// sealed under them (they could never be opened again). Returns the versions destroyed.
    pub async fn destroy_older(
        &self,
        volume: VolumeId,
        newest: KeyVersion,
    ) -> Result<Vec<KeyVersion>, KeyringError> {
        let mut store = self.store.lock().await;
        let (meta, doomed) = {
            let state = self.state.borrow();
            let doomed: Vec<KeyVersion> = state
                .keys
                .0
                .get(&volume)
                .map(|versions| versions.keys().copied().filter(|v| *v < newest).collect())
                .unwrap_or_default();
            if doomed.is_empty() || state.keys.opening(volume, newest).is_none() {
                return Ok(Vec::new());
            }
            let mut meta = state.meta.clone();
            meta.keys.retain(|key| key.volume != volume || key.version >= newest);
            (meta, doomed)
        };
        store.store_both(&meta).await?;
        let mut state = self.state.borrow_mut();
        if let Some(versions) = state.keys.0.get_mut(&volume) {
            versions.retain(|version, _| *version >= newest);
        }
        state.meta = meta;
        Ok(doomed)
    }

    /// Makes sure every volume in `volumes` has a key and that `nonces` more nonces are
    /// reserved (storing the metadata once if anything changed), then runs `f` with the keys
    /// and the nonce counter.
    pub async fn seal<T>(
        &self,
        volumes: impl Iterator<Item = VolumeId>,
        nonces: u64,
        f: impl FnOnce(&KeySet, &mut NonceCounter) -> T,
    ) -> Result<T, KeyringError> {
        let mut store = self.store.lock().await;
        // Usually nothing is missing: no allocation, no copy of the metadata.
        let (missing, short) = {
            let mut state = self.state.borrow_mut();
            let mut missing: Vec<VolumeId> = volumes.filter(|v| !state.keys.contains(*v)).collect();
            missing.sort_unstable();
            missing.dedup();
            let dropped: Vec<VolumeId> =
                missing.iter().copied().filter(|v| state.meta.is_dropped(*v)).collect();
            missing.retain(|v| !state.meta.is_dropped(*v));
            for volume in dropped {
                state.shredding_key(volume)?;
            }
            (missing, state.nonces.remaining() < nonces)
        };
        if !missing.is_empty() || short {
            let mut meta = self.state.borrow().meta.clone();
            let mut new_keys = Vec::with_capacity(missing.len());
            for volume in missing {
                let (key, wrapped) = self.state.borrow().kek.new_data_key(volume, KeyVersion(1))?;
                meta.keys.push(wrapped);
                new_keys.push((volume, key));
            }
            if short {
                meta.nonce_reserved_through = self.state.borrow().nonces.reservation_after(nonces);
            }
            store.store(&meta).await?;
            let mut state = self.state.borrow_mut();
            new_keys.into_iter().for_each(|(volume, key)| state.keys.insert(key, volume));
            state.nonces.reserved(meta.nonce_reserved_through);
            state.meta = meta;
        }
        let state = &mut *self.state.borrow_mut();
        Ok(f(&state.keys, &mut state.nonces))
    }
}

impl KeyState {
    /// Makes sure dropped `volume` has a shredding key (see the module docs).
    fn shredding_key(&mut self, volume: VolumeId) -> Result<(), SealError> {
        if !self.keys.1.contains_key(&volume) {
            // The wrapped form is thrown away: the key is never stored anywhere.
            let (key, _) = self.kek.new_data_key(volume, SHREDDING_KEY_VERSION)?;
            self.keys.1.insert(volume, key);
        }
        Ok(())
    }
}

/// `meta` with `volume` tombstoned and its keys removed, and the key versions removed.
fn without_volume(meta: &NodeMeta, volume: VolumeId) -> (NodeMeta, Vec<KeyVersion>) {
    let mut meta = meta.clone();
    let mut destroyed: Vec<KeyVersion> =
        meta.keys.iter().filter(|key| key.volume == volume).map(|key| key.version).collect();
    destroyed.sort_unstable();
    meta.keys.retain(|key| key.volume != volume);
    if let Err(at) = meta.dropped.binary_search(&volume) {
        meta.dropped.insert(at, volume);
    }
    (meta, destroyed)
}

/// Stores `meta` again while a valid copy on disk lacks one of its tombstones or holds a key of
/// a dropped volume (at most twice: each store overwrites the older copy). Returns the stores.
async fn settle_copies<S: Storage>(store: &mut MetaStore<S>, meta: &NodeMeta) -> Result<usize, MetaError> {
    let stale = |copy: &NodeMeta| {
        meta.dropped.iter().any(|v| !copy.is_dropped(*v))
            || copy.keys.iter().any(|k| meta.is_dropped(k.volume))
    };
    let mut stored = 0;
    while stored < 2 && !meta.dropped.is_empty() && store.copies().await.iter().any(stale) {
        store.store(meta).await?;
        stored += 1;
    }
    Ok(stored)
}

#[cfg(test)]
#[path = "keyring_tests.rs"]
mod tests;
