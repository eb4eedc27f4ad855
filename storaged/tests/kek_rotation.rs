//! Rotating the key-encryption key of a real `storaged`, all three ways (SIGHUP on the running
//! node, at start with `--key-file-previous`, offline with `storaged rotate-kek`): each time the
//! node reports the re-wrap, a byte-by-byte scan of its data directory finds no wrapped key the
//! old KEK opens, and every record still reads back after a restart with only the newest KEK.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use protocol::{Epoch, KeyVersion, Lsn, Message, VolumeId};
use storaged::kek_rotation::stored_keys;
use storaged::seal::{Kek, WrappedKey, KEY_BYTES, NONCE_BYTES, TAG_BYTES};
use support::*;

/// Longest wait for a log line.
const LOG_WAIT: Duration = Duration::from_secs(20);
const RECORDS_PER_STEP: u64 = 100;

fn payload(lsn: u64) -> Vec<u8> {
    format!("record {lsn} sealed at rest;").into_bytes().into_iter().cycle().take(700).collect()
}

fn key_file(node: &TestNode) -> PathBuf {
    node.root.path().join("kek")
}

fn previous_key_file(node: &TestNode) -> PathBuf {
    node.root.path().join("kek.previous")
}

/// The operator's part of a rotation: the key file moves to `kek.previous` and a new random
/// KEK takes its place. Returns (old, new).
fn install_new_kek(node: &TestNode) -> (Kek, Kek) {
    let (current, previous) = (key_file(node), previous_key_file(node));
    std::fs::rename(&current, &previous).unwrap();
    Kek::create_file(&current).unwrap();
    (Kek::load(&previous).unwrap(), Kek::load(&current).unwrap())
}

/// Appends records `first..first + RECORDS_PER_STEP`, acknowledged.
fn append(node: &TestNode, first: u64) {
    let rt = runtime();
    let client = rt.block_on(Client::connect(node, &node.client_files())).unwrap();
    let records = chain(first, RECORDS_PER_STEP, Epoch(1), payload);
    let ack = rt.block_on(client.call(&batch(records, 1))).unwrap();
    let last = Lsn(first + RECORDS_PER_STEP - 1);
    assert!(matches!(ack, Message::AppendAck(a) if a.scl == last), "{ack:?}");
}

/// Waits until the node's log holds a line with every one of `words`; returns that line.
fn log_line(node: &TestNode, words: &[&str]) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let log = node.stderr();
        if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no log line with {words:?} within {LOG_WAIT:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Reads 80 bytes as a wrapped key laid out as the node metadata stores one.
fn wrapped_key_at(bytes: &[u8]) -> WrappedKey {
    let take = |from: usize, len: usize| &bytes[from..from + len];
    WrappedKey {
        volume: VolumeId(u128::from_le_bytes(take(0, 16).try_into().unwrap())),
        version: KeyVersion(u32::from_le_bytes(take(16, 4).try_into().unwrap())),
        nonce: take(20, NONCE_BYTES).try_into().unwrap(),
        sealed: take(20 + NONCE_BYTES, KEY_BYTES).try_into().unwrap(),
        tag: take(20 + NONCE_BYTES + KEY_BYTES, TAG_BYTES).try_into().unwrap(),
    }
}

/// Wrapped keys `kek` opens anywhere in the data directory: every file, every byte offset
/// (skipping only windows inside runs of 4 KiB of zeros: the unwritten part of preallocated
/// journal and page store files).
fn keys_opening_anywhere(data_dir: &Path, kek: &Kek) -> usize {
    const BLOCK: usize = 4096;
    let mut found = 0;
    for path in files_under(data_dir) {
        let bytes = std::fs::read(&path).unwrap();
        let written: Vec<bool> = bytes.chunks(BLOCK).map(|b| b.iter().any(|&x| x != 0)).collect();
        for at in 0..bytes.len().saturating_sub(WrappedKey::BYTES - 1) {
            let end = at + WrappedKey::BYTES - 1;
            if (written[at / BLOCK] || written[end / BLOCK]) && kek.opens(&wrapped_key_at(&bytes[at..])) {
                found += 1;
            }
        }
    }
    found
}

/// The node's metadata copies hold `keys` keys each, all opening under `new`, none under `old`,
/// and nothing anywhere in the directory opens under `old`.
fn assert_rotated(node: &TestNode, old: &Kek, new: &Kek, keys: usize) {
    let copies = stored_keys(&node.data_dir).unwrap();
    assert_eq!(copies.len(), 2, "both metadata copies valid");
    for copy in &copies {
        assert_eq!(copy.keys.len(), keys, "{copy:?}");
        let opening = (copy.opening_under(old), copy.opening_under(new));
        assert_eq!(opening, (0, keys), "{}: keys opening under (old, new)", copy.path.display());
    }
    assert_eq!(keys_opening_anywhere(&node.data_dir, old), 0, "the old KEK opens something on disk");
    assert_eq!(keys_opening_anywhere(&node.data_dir, new), 2 * keys, "the scan sees both copies");
}

fn rotate_offline(node: &TestNode) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_storaged"))
        .args(["rotate-kek", "--data-dir"])
        .arg(&node.data_dir)
        .arg("--old")
        .arg(previous_key_file(node))
        .arg("--new")
        .arg(key_file(node))
        .output()
        .unwrap()
}

#[test]
fn a_rotated_kek_leaves_nothing_the_old_one_opens_and_every_record_reads_back_under_the_new_one_alone() {
    let mut node = TestNode::new();
    node.start();
    append(&node, 1);
    let first = Kek::load(&key_file(&node)).unwrap();
    assert!(keys_opening_anywhere(&node.data_dir, &first) >= 1, "the scan finds the wrapped key");

    // 1. A running node: a new key file, then SIGHUP; the KEK it runs with is the old one.
    let (old, second) = install_new_kek(&node);
    // SAFETY: kill(2) on the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) }, 0);
    let kek = format!("kek={}", second.fingerprint());
    let line = log_line(&node, &["reload: KEK rotated", "rewrapped=1", &kek]);
    assert!(line.contains("no longer needed"), "{line}");
    let refused = rotate_offline(&node);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("in use by another storaged"), "{said}");
    append(&node, 1 + RECORDS_PER_STEP);
    node.kill9();
    assert_rotated(&node, &old, &second, 1);

    // 2. A stopped node, started with the new key file and the previous one.
    let (old, third) = install_new_kek(&node);
    node.push_arg("--key-file-previous");
    node.push_arg(previous_key_file(&node).to_str().unwrap());
    node.start();
    let kek = format!("kek={}", third.fingerprint());
    log_line(&node, &["KEK rotated at start", "rewrapped=1", &kek]);
    append(&node, 1 + 2 * RECORDS_PER_STEP);
    node.kill9();
    assert_rotated(&node, &old, &third, 1);

    // 3. Offline, the node stopped.
    let (old, fourth) = install_new_kek(&node);
    let done = rotate_offline(&node);
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{said}{}", String::from_utf8_lossy(&done.stderr));
    assert!(said.contains("re-wrapped 1 of 1 data keys") && said.contains(&fourth.fingerprint()), "{said}");
    assert_rotated(&node, &old, &fourth, 1);
    for retired in [&first, &second, &third] {
        assert_eq!(keys_opening_anywhere(&node.data_dir, retired), 0);
    }

    // Only the newest KEK from here on: every record of every step reads back.
    std::fs::remove_file(previous_key_file(&node)).unwrap();
    node.clear_args();
    node.start();
    let total = 3 * RECORDS_PER_STEP;
    let rt = runtime();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let (scl, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
        assert_eq!((scl, stored.len() as u64), (Lsn(total), total));
        assert!(stored.iter().all(|r| r.payload()[..] == payload(r.lsn().0)[..]));
    });
    node.kill9();
}
