//! KEK rotation on the simulated disk: a rotation leaves nothing the old KEK opens and every
//! sealed byte readable, and a rotation a crash interrupts at any store leaves copies that
//! each open under one KEK, which the next start with both KEKs finishes.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use protocol::{NodeId, VolumeId};

use super::*;
use crate::journal::buf::AlignedBuf;
use crate::keyring::{Keyring, KeyringError};
use crate::meta::decode_copy;
use crate::storage::sim::{complete, SimDisk};

const NODE: NodeId = NodeId(1);
const VOLUMES: [VolumeId; 3] = [VolumeId(10), VolumeId(11), VolumeId(12)];

fn old() -> Kek {
    Kek::from_bytes([1; 32])
}

fn new() -> Kek {
    Kek::from_bytes([2; 32])
}

/// Bytes sealed under each volume's data key: (nonce, ciphertext, tag) by volume.
type Sealed = HashMap<VolumeId, ([u8; 12], Vec<u8>, [u8; 16])>;

/// A node's keyring under the old KEK with a key for every volume, and a message sealed
/// under each.
fn node_with_sealed_data(disk: &SimDisk) -> Sealed {
    let keyring = complete(Keyring::open(disk, NODE, old())).unwrap();
    let sealed = keyring.seal(VOLUMES.into_iter(), VOLUMES.len() as u64, |keys, nonces| {
        let seal = |volume: VolumeId| {
            let nonce = nonces.take().unwrap();
            let mut bytes = format!("records of {volume}").into_bytes();
            let tag = keys[&volume].seal(&nonce, b"ad", &mut bytes);
            (volume, (nonce, bytes, tag))
        };
        VOLUMES.into_iter().map(seal).collect()
    });
    complete(sealed).unwrap()
}

fn assert_sealed_data_opens(keyring: &Keyring<SimDisk>, sealed: &Sealed) {
    keyring.with_keys(|keys| {
        for (volume, (nonce, bytes, tag)) in sealed {
            let mut bytes = bytes.clone();
            keys[volume].open(nonce, b"ad", &mut bytes, tag).unwrap();
            assert_eq!(bytes, format!("records of {volume}").into_bytes());
        }
    });
}

/// Every valid metadata copy on `disk`, decoded.
fn copies(disk: &SimDisk) -> Vec<NodeMeta> {
    COPY_PATHS.iter().filter_map(|path| disk.contents(path)).filter_map(|bytes| decode_copy(&bytes)).collect()
}

/// How many keys of `meta` open under the old KEK and under the new.
fn opening(meta: &NodeMeta) -> (usize, usize) {
    let count = |kek: Kek| meta.keys.iter().filter(|key| kek.opens(key)).count();
    (count(old()), count(new()))
}

/// True if every key of `meta` opens under exactly one KEK, the same for all.
fn under_one_kek(meta: &NodeMeta) -> bool {
    let len = meta.keys.len();
    matches!(opening(meta), (o, 0) if o == len) || matches!(opening(meta), (0, n) if n == len)
}

#[test]
fn a_rotated_keyring_leaves_nothing_the_old_kek_opens_and_data_sealed_before_still_opens() {
    let disk = SimDisk::new();
    let sealed = node_with_sealed_data(&disk);
    let keyring = complete(Keyring::open(&disk, NODE, old())).unwrap();
    assert_eq!(complete(keyring.rotate_kek(new())).unwrap(), Some(3));
    assert_eq!(complete(keyring.rotate_kek(new())).unwrap(), None, "the same KEK again: nothing to do");
    // A key made after the rotation is wrapped under the new KEK too.
    complete(keyring.seal([VolumeId(13)].into_iter(), 1, |_, _| ())).unwrap();
    let stored = copies(&disk);
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|copy| opening(copy) == (0, copy.keys.len())), "{stored:?}");
    let refused = complete(Keyring::open(&disk, NODE, old())).unwrap_err();
    assert!(matches!(refused, KeyringError::Unwrap { .. }), "{refused}");
    let reopened = complete(Keyring::open(&disk, NODE, new())).unwrap();
    assert_sealed_data_opens(&reopened, &sealed);
    assert_eq!(reopened.kek_fingerprint(), new().fingerprint());
}

#[test]
fn a_start_rewraps_with_the_previous_kek_once_and_refuses_a_key_no_given_kek_opens() {
    let disk = SimDisk::new();
    let sealed = node_with_sealed_data(&disk);
    let other = Kek::from_bytes([3; 32]);
    for previous in [None, Some(&other)] {
        let refused = complete(settle(&disk, Some(NODE), &new(), previous)).unwrap_err();
        assert!(matches!(refused, RotationError::Unopenable { .. }), "{refused}");
    }
    assert!(copies(&disk).iter().all(|copy| opening(copy).1 == 0), "a refusal stores nothing");
    let settled = complete(settle(&disk, Some(NODE), &new(), Some(&old()))).unwrap();
    assert_eq!(settled, Settled { node: Some(NODE), keys: 3, rewrapped: 3, stored: true });
    let again = complete(settle(&disk, Some(NODE), &new(), Some(&old()))).unwrap();
    assert_eq!((again.rewrapped, again.stored), (0, false), "a second start finds nothing to do");
    assert!(copies(&disk).iter().all(|copy| opening(copy) == (0, 3)));
    let wrong_node = complete(settle(&disk, Some(NodeId(2)), &new(), None)).unwrap_err();
    assert!(matches!(wrong_node, RotationError::Meta(MetaError::OtherNode { .. })), "{wrong_node}");
    assert_sealed_data_opens(&complete(Keyring::open(&disk, NODE, new())).unwrap(), &sealed);
}

/// The simulated disk, losing power during the `puts_before_crash + 1`-th metadata store: that
/// copy is left torn (half written) or untouched, and it and every later store fail.
#[derive(Clone, Debug)]
struct PowerCut {
    disk: SimDisk,
    puts_left: Rc<Cell<usize>>,
    tear: bool,
}

impl Storage for PowerCut {
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    async fn create(&self, path: &str, len: u64) -> io::Result<()> {
        self.disk.create(path, len).await
    }
    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.disk.read_at(path, offset, len).await
    }
    async fn read_all(&self, path: &str) -> io::Result<Vec<u8>> {
        self.disk.read_all(path).await
    }
    async fn write_at(&self, path: &str, offset: u64, buf: AlignedBuf) -> io::Result<()> {
        self.disk.write_at(path, offset, buf).await
    }
    async fn sync(&self, path: &str) -> io::Result<()> {
        self.disk.sync(path).await
    }
    async fn remove(&self, path: &str) -> io::Result<()> {
        self.disk.remove(path).await
    }
    async fn put(&self, path: &str, bytes: Vec<u8>) -> io::Result<()> {
        match self.puts_left.get() {
            0 => {
                if self.tear {
                    self.disk.put(path, bytes[..bytes.len() / 2].to_vec()).await?;
                }
                Err(io::Error::other("power lost"))
            }
            left => {
                self.puts_left.set(left - 1);
                self.disk.put(path, bytes).await
            }
        }
    }
}

#[test]
fn a_rotation_cut_at_any_store_leaves_copies_each_under_one_kek_and_the_next_start_finishes_it() {
    for puts_before_crash in 0..=2 {
        for tear in [false, true] {
            let case = format!("{puts_before_crash} stores landed, torn: {tear}");
            let disk = SimDisk::new();
            let sealed = node_with_sealed_data(&disk);
            let cut = PowerCut { disk: disk.clone(), puts_left: Rc::new(Cell::new(puts_before_crash)), tear };
            let keyring = complete(Keyring::open(&cut, NODE, old())).unwrap();
            let rotated = complete(keyring.rotate_kek(new()));
            assert_eq!(rotated.is_ok(), puts_before_crash == 2, "{case}: {rotated:?}");
            // Each whole copy is all-old or all-new, and opens with {old, new} given; a torn
            // one is not loaded (and holds part of the new wrapping, not the old).
            let stored = copies(&disk);
            assert!(!stored.is_empty(), "{case}");
            for copy in &stored {
                assert!(under_one_kek(copy), "{case}: {:?}", opening(copy));
                rewrap(copy, &new(), &[&old()]).unwrap();
            }
            let old_left = stored.iter().any(|copy| opening(copy).0 > 0);
            // Old wrapping survives unless the second store landed or tore the first's target.
            let expect_old_left = puts_before_crash == 0 || (puts_before_crash == 1 && !tear);
            assert_eq!(old_left, expect_old_left, "{case}");
            // The next start, given both KEKs, finishes the rotation over both copies.
            let settled = complete(settle(&disk, Some(NODE), &new(), Some(&old()))).unwrap();
            assert_eq!(settled.stored, old_left, "{case}: {settled:?}");
            let stored = copies(&disk);
            assert!(!stored.is_empty() && stored.iter().all(|copy| opening(copy) == (0, 3)), "{case}");
            assert_sealed_data_opens(&complete(Keyring::open(&disk, NODE, new())).unwrap(), &sealed);
        }
    }
}
