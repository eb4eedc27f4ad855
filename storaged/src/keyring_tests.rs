//! The keyring's nonce argument on the simulated disk: no nonce is ever handed out twice, across
//! restarts, across data key versions, and when a restart has to fall back to the older
//! metadata copy because the newest was lost.

use std::collections::HashSet;

use protocol::{KeyVersion, NodeId, VolumeId};

use super::*;
use crate::meta::{decode_copy, COPY_PATHS};
use crate::seal::{NONCE_BYTES, NONCE_FALLBACK_SKIP};
use crate::storage::sim::{complete, SimDisk};

const NODE: NodeId = NodeId(4);
const VOLUME: VolumeId = VolumeId(21);

fn kek() -> Kek {
    Kek::from_bytes([5; 32])
}

fn open(disk: &SimDisk) -> Keyring<SimDisk> {
    complete(Keyring::open(disk, NODE, kek())).unwrap()
}

/// A sealed message: the version it names, its nonce, ciphertext and tag.
type Sealed = (KeyVersion, [u8; NONCE_BYTES], Vec<u8>, [u8; 16]);

/// Seals `count` messages of `VOLUME` in one go (one reservation check, as a group does).
fn seal(keyring: &Keyring<SimDisk>, count: u64) -> Vec<Sealed> {
    let sealed = keyring.seal(std::iter::once(VOLUME), count, |keys, nonces| {
        (0..count)
            .map(|i| {
                let key = keys.sealing(VOLUME).unwrap();
                let nonce = nonces.take().unwrap();
                let mut bytes = format!("message {i}").into_bytes();
                let tag = key.seal(&nonce, b"ad", &mut bytes);
                (key.version(), nonce, bytes, tag)
            })
            .collect()
    });
    complete(sealed).unwrap()
}

/// Every message opens under the key its version names.
fn assert_open(keyring: &Keyring<SimDisk>, sealed: &[Sealed]) {
    keyring.with_keys(|keys| {
        for (version, nonce, bytes, tag) in sealed {
            let key = keys.opening(VOLUME, *version).expect("the version is held");
            key.open(nonce, b"ad", &mut bytes.clone(), tag).unwrap();
        }
    });
}

/// The metadata copy with the highest generation, as a path.
fn newest_copy(disk: &SimDisk) -> &'static str {
    let generation = |path: &str| {
        disk.contents(path).and_then(|b| crate::dual::parse_copy(&b, *b"BRNM")).map(|(g, _, _)| g)
    };
    COPY_PATHS.into_iter().max_by_key(|path| generation(path)).unwrap()
}

fn assert_all_new(seen: &mut HashSet<[u8; NONCE_BYTES]>, sealed: &[Sealed], when: &str) {
    for (_, nonce, _, _) in sealed {
        assert!(seen.insert(*nonce), "{when}: nonce {nonce:?} handed out twice");
    }
}

/// Three runs, each storing a reservation and sealing, so the two copies hold consecutive
/// reservations; returns every nonce handed out.
fn three_runs(disk: &SimDisk) -> HashSet<[u8; NONCE_BYTES]> {
    let mut seen = HashSet::new();
    for run in 0..3 {
        let keyring = open(disk);
        let sealed = seal(&keyring, 3);
        assert_all_new(&mut seen, &sealed, &format!("run {run}"));
    }
    seen
}

#[test]
fn a_restart_on_the_older_metadata_copy_hands_out_no_nonce_the_lost_copy_reserved() {
    // The newest copy rots, or is lost (deleted, never landed), after a run used nonces of its
    // reservation: the restart loads the older copy, whose reservation those nonces lie past.
    type Lose = fn(&SimDisk, &str);
    let rot: Lose = |disk, path| {
        let mut bytes = disk.contents(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        complete(disk.put(path, bytes)).unwrap();
    };
    let delete: Lose = |disk, path| complete(disk.remove(path)).unwrap();
    for (how, lose) in [("rotten", rot), ("missing", delete)] {
        let disk = SimDisk::new();
        let mut seen = three_runs(&disk);
        let newest = newest_copy(&disk);
        let older = COPY_PATHS.into_iter().find(|p| *p != newest).unwrap();
        let loaded = decode_copy(&disk.contents(older).unwrap()).unwrap().nonce_reserved_through;
        lose(&disk, newest);
        let keyring = open(&disk);
        let sealed = seal(&keyring, 3);
        assert_all_new(&mut seen, &sealed, how);
        // The skip was stored where the lost copy was: both copies valid again, past the loss.
        let copies: Vec<_> =
            COPY_PATHS.iter().filter_map(|p| disk.contents(p)).filter_map(|b| decode_copy(&b)).collect();
        assert_eq!(copies.len(), 2, "{how}: the lost copy is stored again");
        assert!(copies.iter().any(|c| c.nonce_reserved_through == loaded + NONCE_FALLBACK_SKIP), "{how}");
        // A healthy restart after that does not skip again.
        drop(keyring);
        let before = complete(MetaStore::open(&disk, NODE)).unwrap().1.unwrap().nonce_reserved_through;
        assert_eq!(before, loaded + NONCE_FALLBACK_SKIP + crate::seal::NONCE_RESERVATION, "{how}");
        assert_all_new(&mut seen, &seal(&open(&disk), 2), how);
    }
}

#[test]
fn nonces_never_repeat_across_data_key_versions_and_restarts_and_each_entry_opens_under_its_version() {
    let disk = SimDisk::new();
    let mut seen = HashSet::new();
    let mut sealed = Vec::new();
    let keyring = open(&disk);
    let before = seal(&keyring, 4);
    assert!(before.iter().all(|s| s.0 == KeyVersion(1)));
    let rotated = complete(keyring.rotate_volume(VOLUME)).unwrap().unwrap();
    assert_eq!((rotated.version, rotated.older), (KeyVersion(2), 1));
    assert_eq!(
        complete(keyring.rotate_volume(VolumeId(99))).unwrap(),
        None,
        "no key here: nothing to rotate"
    );
    let after = seal(&keyring, 4);
    assert!(after.iter().all(|s| s.0 == KeyVersion(2)), "seals take the newest version");
    assert_eq!(keyring.rotations_under_way(), vec![(VOLUME, KeyVersion(2))]);
    for batch in [&before, &after] {
        assert_all_new(&mut seen, batch, "first run");
        sealed.extend(batch.iter().cloned());
    }
    // A version is stored before it is used: a restart holds both and keeps sealing under 2.
    drop(keyring);
    let keyring = open(&disk);
    assert_open(&keyring, &sealed);
    let restarted = seal(&keyring, 4);
    assert!(restarted.iter().all(|s| s.0 == KeyVersion(2)));
    assert_all_new(&mut seen, &restarted, "after the restart");
    sealed.extend(restarted);
    // A second rotation, then a restart in the middle of it.
    complete(keyring.rotate_volume(VOLUME)).unwrap();
    let third = seal(&keyring, 2);
    assert_all_new(&mut seen, &third, "version 3");
    drop(keyring);
    let keyring = open(&disk);
    assert_all_new(&mut seen, &seal(&keyring, 2), "version 3 after a restart");
    assert_open(&keyring, &sealed);
    // Destroying the older versions removes them from both copies; version 3 stays.
    let destroyed = complete(keyring.destroy_older(VOLUME, KeyVersion(3))).unwrap();
    assert_eq!(destroyed, vec![KeyVersion(1), KeyVersion(2)]);
    for path in COPY_PATHS {
        let copy = decode_copy(&disk.contents(path).unwrap()).unwrap();
        let versions: Vec<_> = copy.keys.iter().filter(|k| k.volume == VOLUME).map(|k| k.version).collect();
        assert_eq!(versions, vec![KeyVersion(3)], "{path}");
    }
    assert!(keyring.rotations_under_way().is_empty());
    keyring.with_keys(|keys| assert!(keys.opening(VOLUME, KeyVersion(1)).is_none()));
    drop(keyring);
    let keyring = open(&disk);
    let last = seal(&keyring, 2);
    assert!(last.iter().all(|s| s.0 == KeyVersion(3)));
    assert_all_new(&mut seen, &last, "after the destruction and a restart");
}

#[test]
fn metadata_with_several_versions_of_a_volume_is_marked_for_builds_that_know_one() {
    let disk = SimDisk::new();
    let keyring = open(&disk);
    seal(&keyring, 1);
    let format = |disk: &SimDisk| {
        let path = newest_copy(disk);
        crate::dual::parse_copy(&disk.contents(path).unwrap(), *b"BRNM").unwrap().1
    };
    assert_eq!(format(&disk), crate::meta::DATA_FORMAT_VERSION);
    complete(keyring.rotate_volume(VOLUME)).unwrap();
    assert_eq!(format(&disk), crate::meta::MULTI_VERSION_FORMAT);
    complete(keyring.destroy_older(VOLUME, KeyVersion(2))).unwrap();
    assert_eq!(format(&disk), crate::meta::DATA_FORMAT_VERSION);
}

/// The key versions of `volume` and whether it is tombstoned, in each metadata copy on disk.
fn copies_of(disk: &SimDisk, volume: VolumeId) -> Vec<(Vec<KeyVersion>, bool)> {
    COPY_PATHS
        .into_iter()
        .map(|path| {
            let meta = decode_copy(&disk.contents(path).expect("both copies exist")).expect("a valid copy");
            let versions = meta.keys.iter().filter(|k| k.volume == volume).map(|k| k.version).collect();
            (versions, meta.is_dropped(volume))
        })
        .collect()
}

#[test]
fn dropping_a_volume_destroys_every_key_version_in_both_copies_and_no_seal_makes_one_again() {
    let disk = SimDisk::new();
    let keyring = open(&disk);
    let before = seal(&keyring, 2);
    complete(keyring.rotate_volume(VOLUME)).unwrap().expect("a key to rotate");
    let other = VolumeId(22);
    complete(keyring.seal(std::iter::once(other), 1, |_, _| ())).unwrap();
    let dropped = complete(keyring.drop_volume(VOLUME)).unwrap();
    assert_eq!(
        dropped,
        KeysDropped { tombstoned: true, destroyed: vec![KeyVersion(1), KeyVersion(2)], copies_stored: 2 }
    );
    assert_eq!(copies_of(&disk, VOLUME), vec![(vec![], true); 2]);
    assert_eq!(copies_of(&disk, other), vec![(vec![KeyVersion(1)], false); 2], "other volumes keep theirs");
    keyring.with_keys(|keys| {
        for (version, ..) in &before {
            assert!(keys.opening(VOLUME, *version).is_none(), "version {version:?} still opens");
        }
    });
    // A group the journal took before the drop is sealed under a key that is never stored.
    let after = seal(&keyring, 1);
    assert_eq!(after[0].0, SHREDDING_KEY_VERSION);
    keyring.with_keys(|keys| assert!(keys.opening(VOLUME, SHREDDING_KEY_VERSION).is_none()));
    assert_eq!(copies_of(&disk, VOLUME), vec![(vec![], true); 2], "no key of it stored again");
    let again = complete(keyring.drop_volume(VOLUME)).unwrap();
    assert_eq!(again, KeysDropped::default(), "a second drop has nothing left to do");
    let never_held = complete(keyring.drop_volume(VolumeId(99))).unwrap();
    assert_eq!((never_held.tombstoned, never_held.destroyed.len()), (true, 0));
    drop(keyring);
    let reopened = open(&disk);
    assert_eq!(reopened.dropped_volumes(), vec![VOLUME, VolumeId(99)]);
    assert!(reopened.is_dropped(VOLUME) && !reopened.is_dropped(other));
}

#[test]
fn a_drop_cut_short_between_its_two_stores_is_finished_when_the_keyring_opens() {
    let disk = SimDisk::new();
    let keyring = open(&disk);
    seal(&keyring, 1);
    drop(keyring);
    // What the first of the drop's two stores leaves: the newest copy tombstoned, the older
    // one still holding the key.
    let (mut store, meta) = complete(MetaStore::open(&disk, NODE)).unwrap();
    let (tombstoned, _) = without_volume(&meta.unwrap(), VOLUME);
    complete(store.store(&tombstoned)).unwrap();
    let mut found = copies_of(&disk, VOLUME);
    found.sort();
    assert_eq!(found, vec![(vec![], true), (vec![KeyVersion(1)], false)]);
    let keyring = open(&disk);
    assert!(keyring.is_dropped(VOLUME));
    assert_eq!(copies_of(&disk, VOLUME), vec![(vec![], true); 2], "the older copy is shredded");
}
