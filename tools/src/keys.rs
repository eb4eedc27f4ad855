//! `borealis keys`: the local cluster's encryption keys (`docs/security.md`).
//!
//! `keys rotate-kek --dir DIR` rotates the key-encryption key (KEK). Every data key of every
//! node is re-wrapped under a new KEK; no data is rewritten.
//!
//! Steps: the key file (`kek`) is copied to `kek.previous`, then a new random KEK replaces it
//! (each written beside and renamed into place, so an interruption never tears either); every
//! running node of the background cluster (the pid file) gets SIGHUP and re-wraps under the new
//! KEK, which this command sees in its log (`reload: KEK rotated ... kek=<fingerprint>`); a
//! stopped node's directory is re-wrapped here, through the same `storaged::kek_rotation` code
//! a start uses. Then each node's metadata is read back: the rotation counts as done on a node
//! only once every stored wrapped key opens under the new KEK and none under the old.
//!
//! Invariants: `kek.previous` is removed only once every node is verified, so an interrupted or
//! failed rotation is finished by running the command again (a present `kek.previous` means a
//! rotation under way: no new KEK is made, the nodes are driven to the one in `kek`); the
//! cluster directory's lock is held throughout, so no node starts or stops meanwhile.
//!
//! `keys rotate --volume ID --dir DIR` rotates one volume's data key on every node
//! (`storaged::data_key_rotation`): a running node gets a request file in its data directory
//! and SIGHUP, and answers in its log (`reload: data key rotated rotated=volume=ID version=N`);
//! a stopped node's metadata gets the new version here. Each node then seals the volume's new
//! entries under the new version, re-seals what it holds, and destroys the older versions once
//! no file holds them; `--wait-destroyed-s` waits for that on the running nodes.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use protocol::{KeyVersion, VolumeId};
use storaged::data_key_rotation::{self, Rotated};
use storaged::kek_rotation::{rotate_data_dir, stored_keys};
use storaged::seal::Kek;

use crate::local::{LocalCluster, LocalNode, DEFAULT_DIR};
use crate::procs::ProcId;
use crate::{daemon, files, interrupt};

/// How often a node's log is polled for its answer to SIGHUP.
const POLL: Duration = Duration::from_millis(25);

/// `borealis keys`: the cluster's encryption keys.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Rotates the key-encryption key: a new `kek`, every node's data keys re-wrapped under it
    /// (running nodes on SIGHUP, stopped ones here), then checked: the old KEK opens nothing.
    RotateKek(RotateKekArgs),
    /// Rotates one volume's data key on every node: new entries are sealed under a new data
    /// key version, everything held is re-sealed under it, then the older versions are
    /// destroyed (running nodes on SIGHUP, stopped ones here and at their next run).
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The volume whose data key is rotated (its numeric id).
    #[arg(long, value_name = "ID")]
    pub volume: u128,
    /// The cluster directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// How long a running node gets to answer SIGHUP, in seconds.
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub wait_s: u64,
    /// Then wait this long for every running node to destroy the older versions (0: do not
    /// wait; they go once the node's coalescer and recycling have rewritten what they sealed,
    /// which takes writes to the node: see docs/security.md).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub wait_destroyed_s: u64,
}

#[derive(Debug, clap::Args)]
pub struct RotateKekArgs {
    /// The cluster directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// How long a running node gets to answer SIGHUP, in seconds.
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub wait_s: u64,
}

/// Runs `borealis keys ...`.
pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::RotateKek(args) => rotate_kek(&args),
        KeysCommand::Rotate(args) => rotate_volume(&args),
    }
}

/// How one node took the rotation.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The running node re-wrapped this many keys on SIGHUP (`None`: it ran with the new KEK).
    Reloaded(Option<usize>),
    /// Re-wrapped here, the node stopped.
    Offline(usize),
    /// No metadata yet: the node makes its keys under the new KEK when it first stores.
    NoData,
}

fn rotate_kek(args: &RotateKekArgs) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(&args.dir)?;
    let _lock = cluster.lock()?;
    let first = cluster.nodes().first().context("the cluster has no node")?;
    let key_file = cluster.spec(first).key_file;
    let previous_file = previous_path(&key_file);
    let resumed = previous_file.exists();
    if resumed {
        println!("{} exists: finishing the rotation under way", previous_file.display());
    } else {
        install_new_kek(&key_file, &previous_file)?;
    }
    let old = Kek::load(&previous_file)?;
    let new = Kek::load(&key_file)?;
    println!("KEK {} -> {}", old.fingerprint(), new.fingerprint());
    let running = daemon::running(&cluster)?;
    let wait = Duration::from_secs(args.wait_s);
    let mut failed = 0;
    for node in cluster.nodes() {
        let outcome = match running.get(&node.id) {
            Some(proc_id) => reload(&cluster, node, proc_id, &new, wait),
            None => offline(node, &old, &new),
        };
        let checked = outcome.and_then(|outcome| Ok((outcome, verify(&node.data_dir, &old, &new)?)));
        match checked {
            Ok((outcome, keys)) => println!("{}: {} {keys}", node.name, describe(&outcome)),
            Err(error) => {
                failed += 1;
                println!("{}: FAILED: {error:#}", node.name);
            }
        }
    }
    if failed > 0 {
        println!("{failed} node(s) not rotated; {} kept: run this again", previous_file.display());
        return Ok(ExitCode::FAILURE);
    }
    files::remove_if_exists(&previous_file).with_context(|| previous_file.display().to_string())?;
    println!(
        "every node's data keys are wrapped under KEK {}; {} removed",
        new.fingerprint(),
        previous_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `kek` → `kek.previous`.
fn previous_path(key_file: &Path) -> PathBuf {
    let mut path = key_file.as_os_str().to_owned();
    path.push(".previous");
    PathBuf::from(path)
}

/// Keeps the current key file as `previous_file`, then puts a new random KEK in its place.
fn install_new_kek(key_file: &Path, previous_file: &Path) -> anyhow::Result<()> {
    let current = std::fs::read(key_file).with_context(|| key_file.display().to_string())?;
    files::write_atomically(previous_file, &current, 0o600)
        .with_context(|| previous_file.display().to_string())?;
    let temp = files::temp_path(key_file);
    files::remove_if_exists(&temp)?;
    Kek::create_file(&temp)?;
    std::fs::rename(&temp, key_file).with_context(|| key_file.display().to_string())?;
    files::sync_parent(key_file)?;
    Ok(())
}

/// SIGHUP to a running node, then its answer from its log.
fn reload(
    cluster: &LocalCluster,
    node: &LocalNode,
    proc_id: &ProcId,
    new: &Kek,
    wait: Duration,
) -> anyhow::Result<Outcome> {
    sighup(cluster, node, proc_id, wait, |log| reload_answer(log, &new.fingerprint()))
}

/// SIGHUP to a running node, then the answer `answer` finds in its log since.
fn sighup<T>(
    cluster: &LocalCluster,
    node: &LocalNode,
    proc_id: &ProcId,
    wait: Duration,
    answer: impl Fn(&str) -> Option<Result<T, String>>,
) -> anyhow::Result<T> {
    let log = cluster.log_path(node);
    let start = std::fs::metadata(&log).map_or(0, |m| m.len());
    anyhow::ensure!(proc_id.signal(libc::SIGHUP), "process {} is gone", proc_id.pid);
    let deadline = Instant::now() + wait;
    loop {
        if let Some(answer) = answer(&log_since(&log, start)) {
            return answer.map_err(anyhow::Error::msg);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no answer to SIGHUP in {} within {wait:?}",
            log.display()
        );
        interrupt::sleep(POLL)?;
    }
}

/// The node's answer to SIGHUP in `log` (its output since the signal), once there is one.
fn reload_answer(log: &str, fingerprint: &str) -> Option<Result<Outcome, String>> {
    let kek = format!("kek={fingerprint}");
    for line in log.lines() {
        if line.contains("reload: KEK rotated") && line.contains(&kek) {
            let count = line.split("rewrapped=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?;
            return Some(Ok(Outcome::Reloaded(Some(count.parse().ok()?))));
        }
        if line.contains("reload: key file re-read; KEK unchanged") && line.contains(&kek) {
            return Some(Ok(Outcome::Reloaded(None)));
        }
        if line.contains("reload: KEK rotation failed") || line.contains("reload: key file unusable") {
            return Some(Err(line.trim().to_string()));
        }
    }
    None
}

fn log_since(path: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(start)).and_then(|_| file.read_to_string(&mut text));
    }
    text
}

/// Re-wraps a stopped node's directory here.
fn offline(node: &LocalNode, old: &Kek, new: &Kek) -> anyhow::Result<Outcome> {
    if stored_keys(&node.data_dir).map_or(true, |copies| copies.is_empty()) {
        return Ok(Outcome::NoData);
    }
    let settled = rotate_data_dir(&node.data_dir, new, old)?;
    Ok(Outcome::Offline(settled.rewrapped))
}

/// Reads the node's metadata back: every stored wrapped key must open under `new`, none under
/// `old`. Returns what was found, for the report.
fn verify(data_dir: &Path, old: &Kek, new: &Kek) -> anyhow::Result<String> {
    let copies = stored_keys(data_dir).with_context(|| data_dir.display().to_string())?;
    let stored: usize = copies.iter().map(|c| c.keys.len()).sum();
    let under_new: usize = copies.iter().map(|c| c.opening_under(new)).sum();
    let under_old: usize = copies.iter().map(|c| c.opening_under(old)).sum();
    anyhow::ensure!(
        under_old == 0 && under_new == stored,
        "of {stored} stored wrapped keys, {under_old} still open under the old KEK, {under_new} under the new"
    );
    let per_copy: Vec<String> = copies.iter().map(|c| c.keys.len().to_string()).collect();
    Ok(format!(
        "(checked: {} metadata copies holding {} wrapped key(s): all open under the new KEK, none under the old)",
        copies.len(),
        per_copy.join(" + ")
    ))
}

fn rotate_volume(args: &RotateArgs) -> anyhow::Result<ExitCode> {
    let volume = VolumeId(args.volume);
    let cluster = LocalCluster::load(&args.dir)?;
    let _lock = cluster.lock()?;
    let running = daemon::running(&cluster)?;
    let wait = Duration::from_secs(args.wait_s);
    let mut failed = 0;
    let mut rotated_running = Vec::new();
    for node in cluster.nodes() {
        let outcome = match running.get(&node.id) {
            Some(proc_id) => data_key_rotation::write_request(&node.data_dir, &[volume])
                .with_context(|| format!("{}: request file", node.data_dir.display()))
                .and_then(|()| sighup(&cluster, node, proc_id, wait, |log| rotation_answer(log, volume))),
            None => rotate_offline(&cluster, node, volume),
        };
        match outcome {
            Ok(rotated) => {
                if let (Rotated::Version { version, .. }, true) = (rotated, running.contains_key(&node.id)) {
                    rotated_running.push((node, version));
                }
                let state = if running.contains_key(&node.id) { "running" } else { "stopped" };
                println!("{}: {state}: {}", node.name, describe_rotation(&rotated));
            }
            Err(error) => {
                failed += 1;
                println!("{}: FAILED: {error:#}", node.name);
            }
        }
    }
    if failed > 0 {
        println!(
            "{failed} node(s) not rotated: run this again (a node that did rotate makes one more version)"
        );
        return Ok(ExitCode::FAILURE);
    }
    if args.wait_destroyed_s > 0 {
        let deadline = Instant::now() + Duration::from_secs(args.wait_destroyed_s);
        for (node, version) in rotated_running {
            loop {
                let copies = data_key_rotation::stored_versions(&node.data_dir, volume)?;
                // No copy read (a file between writes) proves nothing: look again.
                if !copies.is_empty() && copies.iter().all(|versions| versions.iter().all(|v| *v >= version))
                {
                    println!(
                        "{}: older versions of volume {} destroyed; only version {} left",
                        node.name, volume.0, version.0
                    );
                    break;
                }
                if Instant::now() >= deadline {
                    println!(
                        "{}: older versions still held ({copies:?}); they go once its files are rewritten",
                        node.name
                    );
                    failed += 1;
                    break;
                }
                interrupt::sleep(Duration::from_millis(200))?;
            }
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Adds the new version to a stopped node's metadata here (under the cluster's KEK).
fn rotate_offline(cluster: &LocalCluster, node: &LocalNode, volume: VolumeId) -> anyhow::Result<Rotated> {
    if stored_keys(&node.data_dir).map_or(true, |copies| copies.is_empty()) {
        return Ok(Rotated::NoKey { volume });
    }
    let kek = Kek::load(&cluster.spec(node).key_file)?;
    let rotated = data_key_rotation::rotate_data_dir(&node.data_dir, &kek, &[volume])?;
    rotated.into_iter().next().context("no answer for the volume")
}

/// A running node's answer to a data key rotation request in `log` (its output since SIGHUP).
fn rotation_answer(log: &str, volume: VolumeId) -> Option<Result<Rotated, String>> {
    let named = format!("volume={} ", volume.0);
    for line in log.lines() {
        if line.contains("reload: data key rotation failed") || line.contains("rotation request unusable") {
            return Some(Err(line.trim().to_string()));
        }
        if !line.contains("reload: data key rotated") || !line.contains(&named) {
            continue;
        }
        if line.contains("no key here") {
            return Some(Ok(Rotated::NoKey { volume }));
        }
        let number = |field: &str| -> Option<u32> {
            let rest = line.split(&format!(" {field}=")).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        let version = KeyVersion(number("version")?);
        return Some(Ok(Rotated::Version { volume, version, older: number("older")? as usize }));
    }
    None
}

fn describe_rotation(rotated: &Rotated) -> String {
    match rotated {
        Rotated::Version { volume, version, older } => format!(
            "volume {} now sealed under data key version {}; {older} older version(s) kept until no file holds them",
            volume.0, version.0
        ),
        Rotated::NoKey { volume } => format!("holds nothing of volume {}: nothing to rotate", volume.0),
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Reloaded(Some(count)) => format!("running: re-wrapped {count} data key(s) on SIGHUP"),
        Outcome::Reloaded(None) => "running: already under the new KEK".into(),
        Outcome::Offline(count) => format!("stopped: re-wrapped {count} data key(s) offline"),
        Outcome::NoData => "no data yet: its keys will be made under the new KEK".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_answer_to_sighup_is_read_from_its_log_for_the_new_kek_only() {
        let rotated = "INFO storaged::kek_rotation: reload: KEK rotated: every data key re-wrapped rewrapped=3 kek=ab12cd34";
        assert_eq!(reload_answer(rotated, "ab12cd34"), Some(Ok(Outcome::Reloaded(Some(3)))));
        assert_eq!(reload_answer(rotated, "ffffffff"), None, "another KEK's rotation is not the answer");
        let same = "INFO x: reload: key file re-read; KEK unchanged kek=ab12cd34";
        assert_eq!(reload_answer(same, "ab12cd34"), Some(Ok(Outcome::Reloaded(None))));
        let failed = "ERROR x: reload: KEK rotation failed; kept the running KEK error=disk full";
        assert!(matches!(reload_answer(failed, "ab12cd34"), Some(Err(line)) if line.contains("disk full")));
        assert_eq!(reload_answer("INFO x: reload: TLS files re-read", "ab12cd34"), None);
    }

    #[test]
    fn a_nodes_answer_to_a_data_key_rotation_is_read_from_its_log_for_the_volume_only() {
        let line = "2026 INFO storaged::data_key_rotation: reload: data key rotated rotated=volume=45 version=3 older=2";
        let rotated = Rotated::Version { volume: VolumeId(45), version: KeyVersion(3), older: 2 };
        assert_eq!(rotation_answer(line, VolumeId(45)), Some(Ok(rotated)));
        assert_eq!(rotation_answer(line, VolumeId(4)), None, "another volume's answer");
        let none = "INFO x: reload: data key rotated rotated=volume=45 no key here";
        assert_eq!(rotation_answer(none, VolumeId(45)), Some(Ok(Rotated::NoKey { volume: VolumeId(45) })));
        let failed = "ERROR x: reload: data key rotation failed; request kept error=disk full volume=45";
        assert!(
            matches!(rotation_answer(failed, VolumeId(45)), Some(Err(line)) if line.contains("disk full"))
        );
    }

    #[test]
    fn a_new_kek_replaces_the_key_file_and_the_old_one_is_kept_as_previous() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("kek");
        Kek::create_file(&key_file).unwrap();
        let before = std::fs::read(&key_file).unwrap();
        let previous = previous_path(&key_file);
        assert_eq!(previous, dir.path().join("kek.previous"));
        install_new_kek(&key_file, &previous).unwrap();
        assert_eq!(std::fs::read(&previous).unwrap(), before);
        let (old, new) = (Kek::load(&previous).unwrap(), Kek::load(&key_file).unwrap());
        assert!(!old.same_key(&new), "both private (0600) and different");
        assert!(!files::temp_path(&key_file).exists());
    }
}
