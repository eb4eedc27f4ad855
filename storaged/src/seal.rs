//! Sealing at rest: AES-256-GCM under per-volume data keys, themselves wrapped by the node's
//! key-encryption key (KEK).
//!
//! - The KEK is 32 random bytes, hex-encoded in a key file the operator provides (mode 0600).
//! - Each volume gets a random data key the first time this node stores its records; the node
//!   keeps it only wrapped (sealed under the KEK, with the volume id and key version as
//!   associated data, so a wrapped key cannot be moved to another volume).
//! - Nonces are 96 bits: this node's id (4 bytes) and a 64-bit counter. The counter never
//!   repeats across restarts because the node durably reserves a block of counter values in its
//!   metadata before using any of them, and restarts from the end of the last reservation
//!   ([`NonceCounter`]). A key is never used by two nodes, and the node id is in the nonce anyway.
//! - Rotating the KEK re-wraps the data keys under the new KEK ([`Kek::rewrap`],
//!   `kek_rotation`); the data keys, the nonce counter and every sealed byte stay as they are.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use protocol::{KeyVersion, NodeId, VolumeId};

/// Bytes of a key (KEK or data key).
pub const KEY_BYTES: usize = 32;
/// Bytes of a GCM nonce.
pub const NONCE_BYTES: usize = 12;
/// Bytes of a GCM tag.
pub const TAG_BYTES: usize = 16;
/// Nonce counter values reserved durably at a time.
pub const NONCE_RESERVATION: u64 = 1 << 32;
/// How far the nonce reservation skips when the metadata copy loaded may not be the newest
/// ever stored (`meta`, `dual::DualFile::proven_newest`). One store moves the reservation end
/// by at most `NONCE_RESERVATION` (from at most the previous end, by `max(count, R)` with a
/// group's count at most `u16::MAX`), and a lost copy is at most one store ahead of the loaded
/// one (the store after it would have overwritten the loaded copy), so one reservation would
/// do; 256 leave a margin for a loaded copy that is itself a restored older one. Each fallback
/// costs 2^-24 of the 64-bit counter space.
pub const NONCE_FALLBACK_SKIP: u64 = 256 * NONCE_RESERVATION;

/// Why sealing or unsealing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("authentication failed: the sealed bytes, their context or the key are wrong")]
    Authentication,
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// The node's key-encryption key.
pub struct Kek(Aes256Gcm);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// Reads a key file: 64 hex digits (surrounding whitespace ignored), readable by its owner
    /// only.
    pub fn load(path: &std::path::Path) -> Result<Kek, SealError> {
        let fail = |reason: String| SealError::KeyFile { path: path.display().to_string(), reason };
        let metadata = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(fail("readable by group or others; chmod 600 it".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let key = parse_hex_key(text.trim()).ok_or_else(|| fail("expected 64 hex digits".into()))?;
        Ok(Kek(Aes256Gcm::new(&key.into())))
    }

    /// Writes a new random key file (mode 0600). Fails if the file exists.
    pub fn create_file(path: &std::path::Path) -> Result<(), SealError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |reason: String| SealError::KeyFile { path: path.display().to_string(), reason };
        let key = random_key()?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| fail(e.to_string()))?;
        file.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| fail(e.to_string()))
    }

    /// A KEK from raw bytes (tests and tools).
    pub fn from_bytes(key: [u8; KEY_BYTES]) -> Kek {
        Kek(Aes256Gcm::new(&key.into()))
    }

    /// Makes a fresh data key for `volume` and returns it with its wrapped form.
    pub fn new_data_key(
        &self,
        volume: VolumeId,
        version: KeyVersion,
    ) -> Result<(DataKey, WrappedKey), SealError> {
        let key = random_key()?;
        let wrapped = self.wrap(volume, version, key)?;
        Ok((DataKey::from_bytes(version, key), wrapped))
    }

    /// Unwraps a stored data key.
    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, SealError> {
        Ok(DataKey::from_bytes(wrapped.version, self.unwrap_bytes(wrapped)?))
    }

    /// True if `wrapped` was wrapped under this KEK (and is intact).
    pub fn opens(&self, wrapped: &WrappedKey) -> bool {
        self.unwrap_bytes(wrapped).is_ok()
    }

    /// The same data key as `wrapped` (wrapped under `old`), wrapped under this KEK instead,
    /// with a fresh random nonce. The data key itself, and so everything sealed with it, is
    /// unchanged: a KEK rotation rewrites no data.
    pub fn rewrap(&self, wrapped: &WrappedKey, old: &Kek) -> Result<WrappedKey, SealError> {
        self.wrap(wrapped.volume, wrapped.version, old.unwrap_bytes(wrapped)?)
    }

    /// A short public name of this KEK, for logs: 4 bytes of a GCM tag over an empty message
    /// under a nonce no wrap uses in practice (wraps take random nonces), so it tells keys
    /// apart without revealing anything about them (a key check value).
    pub fn fingerprint(&self) -> String {
        self.check_value()[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// True if `other` is the same key (compares full 128-bit check values, not fingerprints).
    pub fn same_key(&self, other: &Kek) -> bool {
        self.check_value() == other.check_value()
    }

    fn check_value(&self) -> [u8; TAG_BYTES] {
        let tag =
            self.0.encrypt_inout_detached(&Nonce::from(FINGERPRINT_NONCE), b"BRKEK id", (&mut [][..]).into());
        tag.expect("an empty message is within GCM's length limit").into()
    }

    fn wrap(
        &self,
        volume: VolumeId,
        version: KeyVersion,
        key: [u8; KEY_BYTES],
    ) -> Result<WrappedKey, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let mut sealed = key;
        let tag = self.0.encrypt_inout_detached(
            &Nonce::from(nonce),
            &wrap_ad(volume, version),
            (&mut sealed[..]).into(),
        );
        let tag = tag.map_err(|_| SealError::Authentication)?;
        Ok(WrappedKey { volume, version, nonce, sealed, tag: tag.into() })
    }

    fn unwrap_bytes(&self, wrapped: &WrappedKey) -> Result<[u8; KEY_BYTES], SealError> {
        let mut key = wrapped.sealed;
        let ad = wrap_ad(wrapped.volume, wrapped.version);
        let tag = Tag::from(wrapped.tag);
        self.0
            .decrypt_inout_detached(&Nonce::from(wrapped.nonce), &ad, (&mut key[..]).into(), &tag)
            .map_err(|_| SealError::Authentication)?;
        Ok(key)
    }
}

/// The nonce of [`Kek::fingerprint`]; a random wrap nonce equals it with probability 2^-96.
const FINGERPRINT_NONCE: [u8; NONCE_BYTES] = *b"BRKEK-finger";

/// A data key as stored: sealed under the KEK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    pub volume: VolumeId,
    pub version: KeyVersion,
    pub nonce: [u8; NONCE_BYTES],
    pub sealed: [u8; KEY_BYTES],
    pub tag: [u8; TAG_BYTES],
}

impl WrappedKey {
    /// Bytes of the stored form.
    pub const BYTES: usize = 16 + 4 + NONCE_BYTES + KEY_BYTES + TAG_BYTES;
}

/// One volume's data key.
pub struct DataKey {
    version: KeyVersion,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.version)
    }
}

impl DataKey {
    fn from_bytes(version: KeyVersion, key: [u8; KEY_BYTES]) -> DataKey {
        DataKey { version, cipher: Aes256Gcm::new(&key.into()) }
    }

    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// Encrypts `buf` in place and returns the tag. `nonce` must never have been used with this
    /// key (see [`NonceCounter`]).
    pub fn seal(&self, nonce: &[u8; NONCE_BYTES], ad: &[u8], buf: &mut [u8]) -> [u8; TAG_BYTES] {
        let tag = self.cipher.encrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into());
        // Encryption fails only for inputs over 64 GiB; entries are bounded far below that.
        tag.expect("AES-GCM input within its length limit").into()
    }

    /// Decrypts `buf` in place, failing if the bytes, the associated data or the tag differ.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_BYTES],
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_BYTES],
    ) -> Result<(), SealError> {
        let tag = Tag::from(*tag);
        self.cipher
            .decrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into(), &tag)
            .map_err(|_| SealError::Authentication)
    }
}

/// Hands out nonces `node id ‖ counter` from a durably reserved counter range.
#[derive(Clone, Debug)]
pub struct NonceCounter {
    node: NodeId,
    next: u64,
    reserved_through: u64,
}

impl NonceCounter {
    /// Starts at `reserved_through` (the end of the previous run's reservation) with nothing
    /// reserved yet: the caller must store a reservation before the first `next`.
    pub fn resume(node: NodeId, reserved_through: u64) -> NonceCounter {
        NonceCounter { node, next: reserved_through, reserved_through }
    }

    /// Nonces available before a new reservation must be stored.
    pub fn remaining(&self) -> u64 {
        self.reserved_through - self.next
    }

    /// The reservation end to store durably so that at least `count` more nonces are available.
    pub fn reservation_after(&self, count: u64) -> u64 {
        self.next.checked_add(count.max(NONCE_RESERVATION)).expect("nonce space exhausted")
    }

    /// Records that `through` is durably reserved.
    pub fn reserved(&mut self, through: u64) {
        assert!(through >= self.reserved_through, "a reservation never shrinks");
        self.reserved_through = through;
    }

    /// The next nonce, or `None` until a new reservation is stored.
    pub fn take(&mut self) -> Option<[u8; NONCE_BYTES]> {
        if self.next >= self.reserved_through {
            return None;
        }
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..4].copy_from_slice(&self.node.0.to_le_bytes());
        nonce[4..].copy_from_slice(&self.next.to_le_bytes());
        self.next += 1;
        Some(nonce)
    }
}

fn wrap_ad(volume: VolumeId, version: KeyVersion) -> [u8; 24] {
    let mut ad = [0u8; 24];
    ad[..4].copy_from_slice(b"BRKW");
    ad[4..20].copy_from_slice(&volume.0.to_le_bytes());
    ad[20..].copy_from_slice(&version.0.to_le_bytes());
    ad
}

fn random_key() -> Result<[u8; KEY_BYTES], SealError> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(key)
}

fn parse_hex_key(text: &str) -> Option<[u8; KEY_BYTES]> {
    if text.len() != 2 * KEY_BYTES || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_BYTES];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_unwraps_only_for_its_volume() {
        let kek = Kek::from_bytes([7; 32]);
        let (key, mut wrapped) = kek.new_data_key(VolumeId(1), KeyVersion(1)).unwrap();
        let nonce = [1; 12];
        let mut buf = *b"page bytes";
        let tag = key.seal(&nonce, b"ad", &mut buf);
        let again = kek.unwrap(&wrapped).unwrap();
        again.open(&nonce, b"ad", &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"page bytes");
        wrapped.volume = VolumeId(2);
        assert!(kek.unwrap(&wrapped).is_err(), "moved to another volume");
    }

    #[test]
    fn sealed_bytes_fail_to_open_with_other_associated_data() {
        let kek = Kek::from_bytes([7; 32]);
        let (key, _) = kek.new_data_key(VolumeId(1), KeyVersion(1)).unwrap();
        let mut buf = *b"secret";
        let tag = key.seal(&[0; 12], b"volume 1 pg 0 lsn 1-9", &mut buf);
        assert_ne!(&buf, b"secret");
        assert!(key.open(&[0; 12], b"volume 1 pg 1 lsn 1-9", &mut buf.clone(), &tag).is_err());
    }

    #[test]
    fn nonces_never_repeat_across_a_restart() {
        let mut counter = NonceCounter::resume(NodeId(3), 0);
        assert!(counter.take().is_none(), "nothing before a reservation");
        let through = counter.reservation_after(1);
        counter.reserved(through);
        let first = counter.take().unwrap();
        let mut restarted = NonceCounter::resume(NodeId(3), through);
        restarted.reserved(restarted.reservation_after(1));
        assert_ne!(restarted.take().unwrap(), first);
        assert_eq!(&first[..4], &3u32.to_le_bytes());
    }

    #[test]
    fn a_rewrapped_key_opens_only_under_the_new_kek_and_still_opens_what_it_sealed() {
        let (old, new) = (Kek::from_bytes([1; 32]), Kek::from_bytes([2; 32]));
        let (key, wrapped) = old.new_data_key(VolumeId(4), KeyVersion(1)).unwrap();
        let mut buf = *b"sealed before the rotation";
        let tag = key.seal(&[5; 12], b"ad", &mut buf);
        let rewrapped = new.rewrap(&wrapped, &old).unwrap();
        assert!((new.opens(&rewrapped), old.opens(&rewrapped)) == (true, false));
        assert_ne!(rewrapped.nonce, wrapped.nonce, "a fresh wrap nonce");
        new.unwrap(&rewrapped).unwrap().open(&[5; 12], b"ad", &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"sealed before the rotation");
        assert!(new.rewrap(&wrapped, &new).is_err(), "the old wrap does not open under the new KEK");
        assert_ne!(old.fingerprint(), new.fingerprint());
        assert!(!old.same_key(&new) && old.same_key(&Kek::from_bytes([1; 32])));
        assert_eq!((old.fingerprint(), old.fingerprint().len()), (Kek::from_bytes([1; 32]).fingerprint(), 8));
    }

    #[test]
    fn key_files_must_be_private_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        Kek::create_file(&path).unwrap();
        Kek::load(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Kek::load(&path).unwrap_err().to_string().contains("chmod 600"));
        std::fs::write(dir.path().join("bad"), "xyz").unwrap();
        std::fs::set_permissions(dir.path().join("bad"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Kek::load(&dir.path().join("bad")).is_err());
    }
}
