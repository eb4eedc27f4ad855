//! Issue 18's key rotations on a six-node local cluster, with real processes driven through the
//! real CLI (`borealis cluster up`, `borealis keys rotate-kek`, `borealis keys rotate --volume`)
//! and a real writer (`client::Writer`) that keeps writing and reading through both:
//!
//! 1. after `keys rotate-kek`, on every node's data directory, every wrapped data key of both
//!    metadata copies opens under the new KEK and none under the old one (a copy of the key file
//!    kept by the test), and a byte scan of the directory finds nothing the old KEK opens; the
//!    nodes keep serving: every page reads back, and more writes are acknowledged;
//! 2. after `keys rotate --volume` (its `--wait-destroyed-s` wait included), more writes, the
//!    coalescer and recycling: on every node the old data key version is destroyed from both
//!    metadata copies, a scan of every journal and page store file finds no entry of the volume
//!    sealed under it, and every page reads back byte for byte, also after a restart of the
//!    whole cluster.
//!
//! It prints how long each node took from the rotation request to the old version's
//! destruction.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{NewRecord, VolumeGeometry, Writer};
use protocol::patch::PatchEdit;
use protocol::{KeyVersion, Lsn, PageId, RecordKind, VolumeId};
use storaged::data_key_rotation::{stored_versions, REQUEST_FILE};
use storaged::journal::format::{EntryKind, GroupHeader, GROUP_ALIGN, GROUP_HEADER_BYTES};
use storaged::journal::group::find_entries;
use storaged::kek_rotation::stored_keys;
use storaged::seal::{Kek, WrappedKey, KEY_BYTES, NONCE_BYTES, TAG_BYTES};
use support::*;
use tools::local::map::StoragedSettings;
use tools::local::{LocalCluster, LocalNode};

const VOLUME: VolumeId = VolumeId(0x18_e7);
const PAGE_BYTES: u32 = 4096;
const PAGES_PER_PG: u64 = 64;
/// Three PGs' worth of pages (all six nodes hold every PG of a six-node cluster).
const PAGES: u64 = 3 * PAGES_PER_PG;
/// The smallest journal file storaged accepts, so that the writes below fill several.
const JOURNAL_FILE_BYTES: u64 = 16 << 20;
/// Frequent checkpoints (the default is 64 MiB), as a busy node would take them.
const CHECKPOINT_INTERVAL_BYTES: u64 = 4 << 20;
/// Records per `append`.
const RECORDS_PER_APPEND: u64 = 16;
/// Appends not yet known durable, at most (the writer pipelines them).
const APPENDS_IN_FLIGHT: usize = 8;
/// Longest wait for every node to destroy the old data key version, writes going on.
const ROTATION_WAIT: Duration = Duration::from_secs(90);
/// Longest wait for the first page images to reach every node's page store.
const IMAGES_WAIT: Duration = Duration::from_secs(30);

/// Every page as the writer's records make it: its newest record's LSN and its bytes.
struct Model {
    pages: BTreeMap<PageId, (Lsn, Vec<u8>)>,
    /// Records written so far (also what the next record's contents derive from).
    records: u64,
}

impl Model {
    fn new() -> Model {
        Model { pages: BTreeMap::new(), records: 0 }
    }

    /// The next record: mostly whole-page images, every fourth a patch of two edits.
    fn next_record(&mut self) -> NewRecord {
        let n = self.records;
        self.records += 1;
        let page = PageId((n * 7 + n / PAGES) % PAGES);
        let (kind, payload) = if n % 4 == 3 {
            let (first, second) = (format!("patch {n} first;"), format!("patch {n} second;"));
            let edits = [
                PatchEdit { offset: ((n * 97) % 3900) as u32, data: first.as_bytes() },
                PatchEdit { offset: ((n * 31) % 3900) as u32, data: second.as_bytes() },
            ];
            (RecordKind::PagePatch, protocol::patch::encode(&edits).unwrap())
        } else {
            let fill = format!("image {n} of page {};", page.0).into_bytes();
            let bytes: Vec<u8> = fill.iter().copied().cycle().take(PAGE_BYTES as usize).collect();
            (RecordKind::PageImage, Bytes::from(bytes))
        };
        NewRecord { page, kind, payload, cpl: true, lsn: None }
    }

    /// Applies `record`, written at `lsn`, to the model.
    fn apply(&mut self, lsn: Lsn, record: &NewRecord) {
        let (version, bytes) =
            self.pages.entry(record.page).or_insert_with(|| (Lsn::ZERO, vec![0; PAGE_BYTES as usize]));
        *version = lsn;
        match record.kind {
            RecordKind::PageImage => bytes.copy_from_slice(&record.payload),
            RecordKind::PagePatch => protocol::patch::apply(bytes, &record.payload).unwrap(),
            other => panic!("the test writes no {other:?}"),
        }
    }

    /// Appends records until about `bytes` of payload were written, all acknowledged durable.
    async fn write(&mut self, writer: &Writer, bytes: u64) {
        let appends = bytes.div_ceil(RECORDS_PER_APPEND * u64::from(PAGE_BYTES));
        let mut in_flight = std::collections::VecDeque::new();
        for _ in 0..appends {
            let records: Vec<NewRecord> = (0..RECORDS_PER_APPEND).map(|_| self.next_record()).collect();
            let appended = writer.append(records.clone()).await.expect("append accepted");
            assert_eq!(appended.last.0 - appended.first.0 + 1, RECORDS_PER_APPEND, "consecutive LSNs");
            for (i, record) in records.iter().enumerate() {
                self.apply(Lsn(appended.first.0 + i as u64), record);
            }
            in_flight.push_back(appended);
            if in_flight.len() > APPENDS_IN_FLIGHT {
                in_flight.pop_front().unwrap().durable().await.expect("append durable");
            }
        }
        for appended in in_flight {
            appended.durable().await.expect("append durable");
        }
    }

    /// Reads every page at the writer's VDL and compares it with the model: its version (the
    /// LSN of its newest record) and every byte. Returns how many pages were read.
    async fn check(&self, writer: &Writer) -> usize {
        let snapshot = writer.snapshot();
        for page in (0..PAGES).map(PageId) {
            let got = writer.read_page(page, snapshot.lsn()).await.unwrap_or_else(|e| panic!("{page}: {e}"));
            let (version, bytes) =
                self.pages.get(&page).cloned().unwrap_or((Lsn::ZERO, vec![0; PAGE_BYTES as usize]));
            assert_eq!(got.lsn, version, "version of {page}");
            assert!(got.bytes[..] == bytes[..], "bytes of {page} at {}", snapshot.lsn());
        }
        PAGES as usize
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn geometry() -> VolumeGeometry {
    VolumeGeometry::new(VOLUME, PAGE_BYTES, PAGES_PER_PG).unwrap()
}

fn up(dir: &Path) {
    let up = borealis(dir, &["cluster", "up"]);
    assert_eq!(up.code, Some(0), "{up:?}");
}

fn down(dir: &Path) {
    let down = borealis(dir, &["cluster", "down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
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
    files.sort();
    files
}

/// The file's bytes; `None` if it is gone (a running node recycled it since it was listed).
fn read_if_there(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

/// Reads `WrappedKey::BYTES` bytes as a wrapped key laid out as the node metadata stores one.
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

/// True for a journal or page store file (the logs of sealed entries; preallocated, large).
fn is_log_file(data_dir: &Path, path: &Path) -> bool {
    ["journal", "pages"].iter().any(|log| path.starts_with(data_dir.join(log)))
}

/// What a byte scan of a data directory found under one KEK.
#[derive(Debug, Default)]
struct Scan {
    files: usize,
    bytes: u64,
    /// Offsets tried as a wrapped key.
    tried: u64,
    /// Wrapped keys that open.
    opening: usize,
}

/// Wrapped keys `kek` opens anywhere in `data_dir`. Every file other than the journal and page
/// store files is tried at every byte offset (skipping only windows inside 4 KiB runs of
/// zeros). The journal and page store files (tens of MiB of sealed entries per node, which no
/// code path writes a wrapped key into: only `meta.rs` stores them) are tried at every offset
/// where the 16 bytes of a volume id the cluster ever held start: a wrapped key's associated
/// data binds its volume id and version, so a key of `volumes` can open at no other offset.
fn keys_opening_anywhere(data_dir: &Path, kek: &Kek, volumes: &[VolumeId]) -> Scan {
    const BLOCK: usize = 4096;
    let mut scan = Scan::default();
    for path in files_under(data_dir) {
        let Some(bytes) = read_if_there(&path) else { continue };
        scan.files += 1;
        scan.bytes += bytes.len() as u64;
        let last = bytes.len().saturating_sub(WrappedKey::BYTES - 1);
        let mut try_at = |at: usize| {
            scan.tried += 1;
            if kek.opens(&wrapped_key_at(&bytes[at..])) {
                scan.opening += 1;
            }
        };
        if is_log_file(data_dir, &path) {
            let ids: Vec<[u8; 16]> = volumes.iter().map(|v| v.0.to_le_bytes()).collect();
            for at in 0..last {
                if ids.iter().any(|id| bytes[at..at + 16] == id[..]) {
                    try_at(at);
                }
            }
        } else {
            let written: Vec<bool> = bytes.chunks(BLOCK).map(|b| b.iter().any(|&x| x != 0)).collect();
            for at in 0..last {
                let end = at + WrappedKey::BYTES - 1;
                if written[at / BLOCK] || written[end / BLOCK] {
                    try_at(at);
                }
            }
        }
    }
    scan
}

/// On `node`: both metadata copies are valid and hold wrapped keys (a rotation stores over both),
/// each of them opening under `new` and none under `old`, and a scan of the whole data
/// directory finds nothing `old` opens and exactly the copies' keys that `new` opens. Returns a
/// report line.
fn assert_kek_rotated(node: &LocalNode, old: &Kek, new: &Kek) -> String {
    let copies = stored_keys(&node.data_dir).unwrap();
    assert_eq!(copies.len(), 2, "{}: both metadata copies valid: {copies:?}", node.name);
    let keys: usize = copies.iter().map(|c| c.keys.len()).sum();
    assert!(copies.iter().all(|c| !c.keys.is_empty()), "{}: a rotation stores both copies", node.name);
    for copy in &copies {
        let opening = (copy.opening_under(old), copy.opening_under(new));
        assert_eq!(
            opening,
            (0, copy.keys.len()),
            "{}: keys opening under (old, new) KEK",
            copy.path.display()
        );
    }
    let volumes = volumes_held(node);
    let under_old = keys_opening_anywhere(&node.data_dir, old, &volumes);
    assert_eq!(under_old.opening, 0, "{}: the old KEK opens something on disk: {under_old:?}", node.name);
    let under_new = keys_opening_anywhere(&node.data_dir, new, &volumes);
    assert_eq!(under_new.opening, keys, "{}: the scan sees both copies' keys: {under_new:?}", node.name);
    format!(
        "{}: 2 metadata copies, {keys} wrapped key(s) in all: old KEK opens 0, new opens {keys}; \
         byte scan of {} files ({} MiB, {} offsets tried): old KEK opens 0, new opens {}",
        node.name,
        under_old.files,
        under_old.bytes >> 20,
        under_old.tried,
        under_new.opening
    )
}

/// The volumes whose keys `node`'s metadata copies hold (always including the test's volume).
fn volumes_held(node: &LocalNode) -> Vec<VolumeId> {
    let mut volumes = vec![VOLUME];
    for copy in stored_keys(&node.data_dir).unwrap() {
        for key in copy.keys {
            if !volumes.contains(&key.volume) {
                volumes.push(key.volume);
            }
        }
    }
    volumes
}

/// The volume's sealed entries (journal records, page images) in every journal and page store
/// file of `data_dir`, by (log, key version): each file's groups are found at their 4 KiB
/// aligned starts and their entry headers (which carry the key version in the clear,
/// CRC-checked) are read. `strict` (the node stopped): every group found and every entry in it
/// must verify; otherwise (the node running) a group being written is skipped.
fn sealed_entries(data_dir: &Path, strict: bool) -> Vec<(&'static str, KeyVersion)> {
    let mut found = Vec::new();
    for log in ["journal", "pages"] {
        for path in files_under(&data_dir.join(log)) {
            let file = path.file_name().unwrap().to_str().unwrap().to_string();
            let Some(number) = file.split(['-', '.']).nth(1).and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let Some(bytes) = read_if_there(&path) else { continue };
            let mut at = 0;
            while at + GROUP_HEADER_BYTES <= bytes.len() {
                let header = bytes[at..at + GROUP_HEADER_BYTES].try_into().unwrap();
                let Ok(group) = GroupHeader::decode(header) else {
                    at += GROUP_ALIGN;
                    continue;
                };
                assert_eq!(group.file, number, "{}: a group of another file", path.display());
                let (entries, body_ok) = find_entries(&bytes[at..], &group, at as u64);
                if !body_ok || entries.iter().any(|e| e.header.is_err()) {
                    assert!(!strict, "{} at {at}: group or entry checksum: {entries:?}", path.display());
                    at += GROUP_ALIGN;
                    continue;
                }
                for entry in entries {
                    let header = entry.header.unwrap();
                    let sealed = matches!(header.kind, EntryKind::Records | EntryKind::Image);
                    if sealed && header.pg.volume_id == VOLUME {
                        found.push((log, header.key_version));
                    }
                }
                at += group.group_len();
            }
        }
    }
    found
}

/// The file numbers of a log (`journal`, `pages`) in `data_dir`.
fn log_files(data_dir: &Path, log: &str) -> Vec<u64> {
    let names = files_under(&data_dir.join(log));
    let numbers =
        names.iter().filter_map(|p| p.file_name()?.to_str()?.split(['-', '.']).nth(1)?.parse().ok());
    numbers.collect()
}

fn count(entries: &[(&str, KeyVersion)], log: &str, version: u32) -> usize {
    entries.iter().filter(|(l, v)| *l == log && v.0 == version).count()
}

/// The node's log lines holding every one of `words`.
fn log_lines(cluster: &LocalCluster, node: &LocalNode, words: &[&str]) -> Vec<String> {
    let log = std::fs::read_to_string(cluster.log_path(node)).unwrap_or_default();
    log.lines().filter(|l| words.iter().all(|w| l.contains(w))).map(str::to_string).collect()
}

/// When each node was first seen holding the new version, then holding it alone (from the
/// rotation command's start; its metadata is looked at after every 256 KiB of writes, tens of
/// milliseconds apart).
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    rotated: Option<Duration>,
    destroyed: Option<Duration>,
}

#[test]
fn on_six_nodes_the_old_kek_opens_nothing_and_no_file_holds_the_old_data_key_and_every_page_reads_back() {
    let test_started = Instant::now();
    let dir = ClusterDir::new();
    let keys_kept = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::load_or_create(&dir.path()).unwrap();
    cluster
        .set_storaged_settings(StoragedSettings {
            journal_file_bytes: Some(JOURNAL_FILE_BYTES),
            checkpoint_interval_bytes: Some(CHECKPOINT_INTERVAL_BYTES),
            ..StoragedSettings::default()
        })
        .unwrap();
    assert_eq!(cluster.nodes().len(), 6);
    up(&dir.path());
    let rt = runtime();
    let writer = rt.block_on(Writer::open(cluster.client_config().unwrap(), geometry())).unwrap();
    let mut model = Model::new();

    // Records enough to fill more than a journal file on every node (each node holds every PG),
    // and images of them in every node's page store, all under data key version 1.
    let started = Instant::now();
    rt.block_on(model.write(&writer, 24 << 20));
    eprintln!("wrote {} records (24 MiB) in {:?}", model.records, started.elapsed());
    let deadline = Instant::now() + IMAGES_WAIT;
    loop {
        let waiting: Vec<String> = cluster
            .nodes()
            .iter()
            .filter_map(|node| {
                let entries = sealed_entries(&node.data_dir, false);
                let (journal, pages) = (count(&entries, "journal", 1), count(&entries, "pages", 1));
                (journal == 0 || pages == 0)
                    .then(|| format!("{}: journal {journal}, pages {pages}", node.name))
            })
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no version 1 images on every node within {IMAGES_WAIT:?}: {waiting:?}"
        );
        rt.block_on(model.write(&writer, 1 << 20));
    }
    for node in cluster.nodes() {
        let (journal, pages) = (log_files(&node.data_dir, "journal"), log_files(&node.data_dir, "pages"));
        assert!(journal.last() >= Some(&2) && !pages.is_empty(), "{}: {journal:?} {pages:?}", node.name);
        // The copy stored first may predate the volume's key (a store writes one copy).
        let versions = stored_versions(&node.data_dir, VOLUME).unwrap();
        let only_one = versions.iter().all(|v| v.is_empty() || v == &[KeyVersion(1)]);
        let has = versions.contains(&vec![KeyVersion(1)]);
        assert!(versions.len() == 2 && only_one && has, "{}: {versions:?}", node.name);
    }
    rt.block_on(model.check(&writer));

    // 1. rotate-kek. The old key file is kept aside first (the command removes it once done).
    let key_file = dir.path().join("kek");
    let old_file = keys_kept.path().join("kek.old");
    std::fs::copy(&key_file, &old_file).unwrap();
    let old = Kek::load(&old_file).unwrap();
    for node in cluster.nodes() {
        let copies = stored_keys(&node.data_dir).unwrap();
        assert!(
            copies.len() == 2 && copies.iter().all(|c| c.opening_under(&old) == c.keys.len()),
            "{copies:?}"
        );
        let keys: usize = copies.iter().map(|c| c.keys.len()).sum();
        let scan = keys_opening_anywhere(&node.data_dir, &old, &volumes_held(node));
        assert!(keys >= 1 && scan.opening == keys, "{}: the scan finds the {keys} keys: {scan:?}", node.name);
    }
    let started = Instant::now();
    let rotated = borealis(&dir.path(), &["keys", "rotate-kek"]);
    let kek_took = started.elapsed();
    assert_eq!(rotated.code, Some(0), "{rotated:?}");
    for node in cluster.nodes() {
        let line = rotated.stdout.lines().find(|l| l.starts_with(&format!("{}: ", node.name)));
        let line = line.unwrap_or_else(|| panic!("no line for {}: {}", node.name, rotated.stdout));
        assert!(line.contains("running: re-wrapped 1 data key(s) on SIGHUP"), "{line}");
        assert!(line.contains("none under the old"), "{line}");
    }
    assert!(rotated.stdout.contains("removed"), "{}", rotated.stdout);
    assert!(!dir.path().join("kek.previous").exists(), "kek.previous removed once every node passed");
    let new = Kek::load(&key_file).unwrap();
    assert!(!old.same_key(&new), "a new KEK");
    eprintln!("borealis keys rotate-kek took {kek_took:?}:\n{}", rotated.stdout.trim_end());
    for node in cluster.nodes() {
        eprintln!("{}", assert_kek_rotated(node, &old, &new));
    }
    // The nodes keep serving: every page reads back, more writes are acknowledged and read.
    rt.block_on(async {
        model.check(&writer).await;
        model.write(&writer, 4 << 20).await;
        model.check(&writer).await;
    });

    // 2. rotate --volume, with its own wait for the destruction, while the writer goes on.
    for node in cluster.nodes() {
        let entries = sealed_entries(&node.data_dir, false);
        let (journal, pages) = (count(&entries, "journal", 1), count(&entries, "pages", 1));
        assert!(journal > 0 && pages > 0, "{}: {entries:?}", node.name);
        eprintln!(
            "{}: before the rotation, {journal} journal and {pages} page store entries of the volume under \
             version 1 (files {:?}, {:?})",
            node.name,
            log_files(&node.data_dir, "journal"),
            log_files(&node.data_dir, "pages")
        );
    }
    let command_out = keys_kept.path().join("rotate.out");
    let started = Instant::now();
    let mut command = Killed(
        Command::new(BOREALIS)
            .args(["keys", "rotate", "--volume", &VOLUME.0.to_string(), "--wait-destroyed-s"])
            .arg(ROTATION_WAIT.as_secs().to_string())
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&command_out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut progress = vec![Progress::default(); cluster.nodes().len()];
    let mut command_took = None;
    rt.block_on(async {
        loop {
            model.write(&writer, 256 << 10).await;
            let now = started.elapsed();
            for (node, progress) in cluster.nodes().iter().zip(&mut progress) {
                let versions = stored_versions(&node.data_dir, VOLUME).unwrap();
                if progress.rotated.is_none() && versions.iter().any(|v| v.contains(&KeyVersion(2))) {
                    progress.rotated = Some(now);
                }
                if progress.destroyed.is_none() && versions == vec![vec![KeyVersion(2)]; 2] {
                    progress.destroyed = Some(now);
                }
            }
            if command_took.is_none() && command.0.try_wait().unwrap().is_some() {
                command_took = Some(now);
            }
            if progress.iter().all(|p| p.destroyed.is_some()) && command_took.is_some() {
                break;
            }
            if now > ROTATION_WAIT + Duration::from_secs(5) {
                let mut state = String::new();
                for (node, progress) in cluster.nodes().iter().zip(&progress) {
                    let versions = stored_versions(&node.data_dir, VOLUME).unwrap();
                    let lines = log_lines(&cluster, node, &["data key rotat"]);
                    state += &format!(
                        "\n{}: {progress:?} versions {versions:?}\n  {}",
                        node.name,
                        lines.join("\n  ")
                    );
                }
                let said = std::fs::read_to_string(&command_out).unwrap_or_default();
                panic!(
                    "the old data key version was not destroyed on every node within {ROTATION_WAIT:?} of \
                     writes ({} records written):{state}\ncommand ({}): {said}",
                    model.records,
                    if command_took.is_some() { "ended" } else { "still running" }
                );
            }
        }
        model.check(&writer).await;
    });
    let status = command.0.wait().unwrap();
    let said = std::fs::read_to_string(&command_out).unwrap();
    assert!(status.success(), "borealis keys rotate: {status}:\n{said}");
    for node in cluster.nodes() {
        let rotated =
            format!("{}: running: volume {} now sealed under data key version 2", node.name, VOLUME.0);
        assert!(said.contains(&rotated), "{said}");
        let destroyed =
            format!("{}: older versions of volume {} destroyed; only version 2 left", node.name, VOLUME.0);
        assert!(said.contains(&destroyed), "{said}");
        assert!(!node.data_dir.join(REQUEST_FILE).exists(), "{}: the request is taken", node.name);
        let done = log_lines(&cluster, node, &["data key rotation done", "destroyed=[1]"]);
        assert_eq!(done.len(), 1, "{}: {done:?}", node.name);
    }
    eprintln!(
        "borealis keys rotate --volume {} --wait-destroyed-s {}:\n{}",
        VOLUME.0,
        ROTATION_WAIT.as_secs(),
        said.trim_end()
    );
    eprintln!("from the rotation command's start ({} records written by then):", model.records);
    for (node, progress) in cluster.nodes().iter().zip(&progress) {
        let (rotated, destroyed) = (progress.rotated.unwrap(), progress.destroyed.unwrap());
        eprintln!(
            "  {}: version 2 stored after {rotated:?}, version 1 destroyed from both copies after {destroyed:?} \
             ({:?} after its rotation)",
            node.name,
            destroyed.saturating_sub(rotated)
        );
    }
    eprintln!("  the command ended after {:?}", command_took.unwrap());
    rt.block_on(writer.close());

    // The files, the nodes stopped: no entry of the volume under version 1 anywhere, and the
    // metadata (now holding version 2, made under the new KEK) still opens under the new KEK only.
    down(&dir.path());
    for node in cluster.nodes() {
        let entries = sealed_entries(&node.data_dir, true);
        let stale: Vec<_> = entries.iter().filter(|(_, v)| v.0 != 2).collect();
        assert!(stale.is_empty(), "{}: entries under another version than 2: {stale:?}", node.name);
        let (journal, pages) = (count(&entries, "journal", 2), count(&entries, "pages", 2));
        assert!(journal > 0 && pages > 0, "{}: {entries:?}", node.name);
        assert_eq!(stored_versions(&node.data_dir, VOLUME).unwrap(), vec![vec![KeyVersion(2)]; 2]);
        eprintln!(
            "{}: {journal} journal and {pages} page store entries of the volume (files {:?}, {:?}), all under \
             version 2; {}",
            node.name,
            log_files(&node.data_dir, "journal"),
            log_files(&node.data_dir, "pages"),
            assert_kek_rotated(node, &old, &new).split_once(": ").unwrap().1
        );
    }

    // Restarted (under the new KEK alone), a new writer reads every page back.
    up(&dir.path());
    rt.block_on(async {
        let writer = Writer::open(cluster.client_config().unwrap(), geometry()).await.unwrap();
        let pages = model.check(&writer).await;
        eprintln!(
            "after a restart every one of {pages} pages reads back ({} records written)",
            model.records
        );
        writer.close().await;
    });
    down(&dir.path());
    eprintln!("whole test took {:?}", test_started.elapsed());
}
