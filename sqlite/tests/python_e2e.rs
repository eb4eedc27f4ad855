//! Debian's Python (`sqlite3` module, extension loaded with `load_extension`) running a bank
//! (`tests/py/bank.py`) on a Borealis volume of a local six-node cluster: transfers between
//! accounts in transactions, some with multi-page memos that grow the file, some deleting memos
//! (auto-vacuum shrinks the file), some rolled back on purpose, all with a page cache small
//! enough that big transactions spill pages before they commit. Then the same while the
//! workload is killed 50 times, and while two storage nodes are killed and restarted.
//!
//! After every run `bank.py check` proves, in a new process: `PRAGMA integrity_check` is ok,
//! the money is all there, every balance equals what the transfer log says (each transfer is
//! all or nothing), every transfer the workload saw commit is present and none it rolled back.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::*;

const ACCOUNTS: &str = "200";
/// SIGKILLs of the crash test (the figure).
const KILLS: u32 = 50;
/// The crash test's pinned seed (kill moments and workload seeds follow from it).
const CRASH_SEED: u64 = 0x5eed_0000_ba4c;

/// `bank.py check` against the lines in `ids` (what the workload printed); panics on a problem.
fn check(cluster: &Cluster, volume: u64, ids: &std::path::Path) -> String {
    let out = run(&mut cluster.bank(volume, &["check", ACCOUNTS, ids.to_str().expect("UTF-8 path")]), None);
    let said = text(&out);
    assert!(out.status.success() && said.trim_end().ends_with("ok"), "bank check:\n{said}");
    said
}

fn init(cluster: &Cluster, volume: u64) {
    let out = run(&mut cluster.bank(volume, &["init", ACCOUNTS]), None);
    assert!(out.status.success(), "bank init:\n{}", text(&out));
}

/// The whole lines of `text` (a killed writer may leave half a line).
fn whole_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |end| &text[..=end])
}

#[test]
fn a_bank_in_python_keeps_every_committed_transfer_and_all_its_money() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    init(&cluster, 5);
    let out = run(&mut cluster.bank(5, &["run", "1", "400"]), None);
    assert!(out.status.success(), "bank run:\n{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let committed = printed.lines().filter(|l| l.starts_with("committed ")).count();
    assert!(committed > 300, "{committed} of 400 transfers committed:\n{printed}");
    let ids = cluster.path().join("ids");
    std::fs::write(&ids, &printed).unwrap();
    let said = check(&cluster, 5, &ids);
    assert!(said.contains(&format!("committed-seen {committed} ")), "{said}");
}

/// The number after `label` in `bank.py check`'s summary line.
fn count_after(summary: &str, label: &str) -> u64 {
    let rest = summary.split(label).nth(1).unwrap_or_else(|| panic!("no {label:?} in {summary:?}"));
    rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{summary:?}"))
}

/// A tiny deterministic generator for the kill moments.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn a_bank_killed_with_sigkill_50_times_at_random_moments_loses_no_committed_transfer() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    init(&cluster, 6);
    let ids = cluster.path().join("ids");
    let mut state = CRASH_SEED;
    let mut kills_mid_transfers = 0;
    let started = Instant::now();
    // The next transfer id no earlier round printed (committed or rolled back).
    let mut next_id = 1u64;
    for round in 0..KILLS {
        let seed = next(&mut state).to_string();
        let delay = Duration::from_millis(next(&mut state) % 1500);
        let first = next_id.to_string();
        let (mut child, reader) = spawn_bank(&cluster, 6, &["run", &seed, "0", &first]);
        std::thread::sleep(delay);
        let killed = child.kill();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        assert!(
            killed.is_ok() && status.code().is_none(),
            "round {round}: the workload ended by itself ({status}):\n{stderr}"
        );
        let printed = reader.join().unwrap();
        let printed = whole_lines(&printed);
        let printed_ids =
            printed.lines().filter_map(|l| l.split_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()));
        next_id = printed_ids.fold(next_id, |next, id| next.max(id + 1));
        if printed.lines().any(|l| l.starts_with("committed ")) {
            kills_mid_transfers += 1;
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&ids)
            .unwrap()
            .write_all(printed.as_bytes())
            .unwrap();
        let said = check(&cluster, 6, &ids);
        let summary = said.lines().next().unwrap_or("");
        eprintln!("round {round}: killed after {delay:?}: {summary}");
        // A killed run may have committed the transfer it was in without printing it; no more.
        let (present, seen) = (count_after(summary, "transfers "), count_after(summary, "committed-seen "));
        assert!(present - seen <= u64::from(round) + 1, "round {round}: transfers nobody ran: {summary}");
    }
    let committed =
        std::fs::read_to_string(&ids).unwrap().lines().filter(|l| l.starts_with("committed ")).count();
    eprintln!("{KILLS} kills in {:?}: {committed} transfers committed", started.elapsed());
    assert!(kills_mid_transfers >= KILLS / 2, "only {kills_mid_transfers} kills landed while transfers ran");
}

/// `bank.py` started in the background, with a thread collecting what it prints.
fn spawn_bank(cluster: &Cluster, volume: u64, args: &[&str]) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = cluster.bank(volume, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    (child, printed)
}

/// Nodes 1 (AZ 0) and 3 (AZ 1): killing both leaves every PG 4 of 6 segments, a write quorum.
const NODES_KILLED: [u32; 2] = [1, 3];

#[test]
fn a_bank_keeps_committing_and_loses_nothing_while_two_storage_nodes_are_killed_and_restarted() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    init(&cluster, 8);
    let (mut child, reader) = spawn_bank(&cluster, 8, &["run", "8", "0"]);
    std::thread::sleep(Duration::from_secs(1));
    let pids =
        tools::procs::read_pid_file(&cluster.path().join("pids")).unwrap().expect("the cluster's pid file");
    for node in NODES_KILLED {
        assert!(pids[&node].signal(libc::SIGKILL), "node {node} was not running");
    }
    std::thread::sleep(Duration::from_secs(2));
    // `cluster up` starts the nodes that are not running and keeps the others.
    let out = run(
        std::process::Command::new(borealis_exe()).args(["cluster", "up", "--dir"]).arg(cluster.path()),
        None,
    );
    assert!(out.status.success() && text(&out).contains("started 2 node(s)"), "restart: {}", text(&out));
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(status.code().is_none(), "the workload stopped by itself ({status}):\n{stderr}");
    let printed = reader.join().unwrap();
    let printed = whole_lines(&printed);
    let committed = printed.lines().filter(|l| l.starts_with("committed ")).count();
    assert!(committed > 100, "only {committed} transfers committed in 5 s with two nodes down and back");
    let ids = cluster.path().join("ids");
    std::fs::write(&ids, printed).unwrap();
    let said = check(&cluster, 8, &ids);
    assert!(said.contains(&format!("committed-seen {committed} ")), "{said}");
}

#[test]
fn a_read_only_process_sees_whole_committed_states_beside_the_writer_and_never_fences_it() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    init(&cluster, 9);
    let (mut writer, printed) = spawn_bank(&cluster, 9, &["run", "9", "0"]);
    std::thread::sleep(Duration::from_secs(1));
    let watched = run(&mut cluster.bank(9, &["watch", ACCOUNTS, "6"]), None);
    let said = text(&watched);
    // The writer is still running and committing: the reader took nothing over.
    std::thread::sleep(Duration::from_secs(1));
    let _ = writer.kill();
    let status = writer.wait().unwrap();
    let mut stderr = String::new();
    let _ = writer.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(status.code().is_none(), "the writer stopped by itself ({status}):\n{stderr}");
    assert!(watched.status.success() && said.trim_end().ends_with("ok"), "watch:\n{said}");
    assert!(said.contains("write refused"), "{said}");
    let snapshots = count_after(&said, "snapshots ");
    assert!(snapshots >= 3, "the read-only view did not move with the writer: {said}");
    let printed = printed.join().unwrap();
    let printed = whole_lines(&printed);
    let committed = printed.lines().filter(|l| l.starts_with("committed ")).count();
    let ids = cluster.path().join("ids");
    std::fs::write(&ids, printed).unwrap();
    let checked = check(&cluster, 9, &ids);
    assert!(checked.contains(&format!("committed-seen {committed} ")), "{checked}");
}

/// Reads one line from `child`'s stdout.
fn line(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_process_takes_the_volume_over_and_the_first_fails_its_next_commit_without_corruption() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    init(&cluster, 7);
    let mut first = Killed(
        cluster
            .bank(7, &["hold"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first_out = BufReader::new(first.0.stdout.take().unwrap());
    let before = line(&mut first_out);
    assert!(before.starts_with("committed "), "{before}");

    let second = run(&mut cluster.bank(7, &["run", "2", "30"]), None);
    assert!(second.status.success(), "the second process:\n{}", text(&second));

    first.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let after = line(&mut first_out);
    assert!(
        after.starts_with("error OperationalError: disk I/O error"),
        "the first process after the takeover: {after}"
    );
    let mut stderr = String::new();
    first.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("another writer took the volume over"), "{stderr}");

    let ids = cluster.path().join("ids");
    std::fs::write(&ids, format!("{before}{}", String::from_utf8_lossy(&second.stdout))).unwrap();
    check(&cluster, 7, &ids);
}

#[test]
fn two_connections_of_one_process_take_turns_on_one_volume() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    init(&cluster, 8);
    let out = run(&mut cluster.bank(8, &["locks"]), None);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("b busy: database is locked"), "{said}");
    let ids = cluster.path().join("ids");
    std::fs::write(&ids, "").unwrap();
    check(&cluster, 8, &ids);
}
