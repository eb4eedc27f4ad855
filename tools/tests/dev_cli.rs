//! `borealis dev`, the real binary against six (or nine) real nodes, each test in a directory of
//! its own:
//! a run streams records, verifies its sample and reports healthy nodes in its JSON, and leaves
//! no process behind; Ctrl-C mid-run stops everything and a later run recovers the volume and
//! verifies again; `--keep-running` leaves a background cluster that the next run uses without
//! stopping it; `--nodes-per-az 3` runs and verifies the workload on nine nodes.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Reads the `--json` summary.
fn summary(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the JSON summary was written");
    serde_json::from_str(&text).expect("the summary is JSON")
}

/// Pids of live processes whose command line mentions `dir` (the nodes name it in --data-dir).
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if pid != std::process::id() && String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(&needle)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Checks the summary of a successful run: records made durable, every sampled record read
/// back, sane latencies, six healthy nodes.
fn assert_good_run(json: &serde_json::Value) {
    let int = |field: &str| json[field].as_u64().unwrap_or_else(|| panic!("{field} in {json}"));
    let float = |field: &str| json[field].as_f64().unwrap_or_else(|| panic!("{field} in {json}"));
    assert!(int("records") > 0, "{json}");
    assert_eq!(int("records"), 3 * int("transactions"), "{json}");
    assert!(int("sampled") > 0 && int("verified") == int("sampled"), "{json}");
    assert!(float("records_per_s") > 0.0 && float("payload_mb_per_s") > 0.0, "{json}");
    assert!(float("commit_p50_ms") > 0.0, "{json}");
    assert!(float("commit_p50_ms") <= float("commit_p99_ms"), "{json}");
    assert!(float("commit_p99_ms") <= float("commit_max_ms"), "{json}");
    assert!(int("vdl") >= int("records"), "{json}");
    let nodes = json["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 6, "{json}");
    assert_eq!(int("nodes_healthy"), 6, "{json}");
    for node in nodes {
        assert_eq!(node["healthy"], true, "{node}");
        assert_eq!(node["health_code"], 200, "{node}");
        assert!(node["segments"].as_u64().unwrap() >= 1, "every node holds a segment of the volume: {node}");
    }
}

#[test]
fn a_run_streams_verifies_reports_and_leaves_nothing_running() {
    let dir = ClusterDir::new();
    let json_path = dir.path().join("summary.json");
    let run = borealis(&dir.path(), &["dev", "--duration", "3s", "--json", json_path.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let json = summary(&json_path);
    assert_good_run(&json);
    assert_eq!(json["nodes_mode"], "foreground");
    assert!(run.stdout.contains("verified") && run.stdout.contains("6 of 6 healthy"), "{}", run.stdout);
    assert!(run.stdout.contains("stopped the 6 nodes this command started"), "{}", run.stdout);
    assert!(run.stderr.contains("records durable"), "progress is shown on stderr: {}", run.stderr);
    assert!(dir.path().join("pki").join("client.pem").exists(), "the dev PKI was created");
    assert_eq!(processes_using(&dir.path()), Vec::<u32>::new(), "no node outlives the run");
    assert!(recorded(&dir.path()).is_empty(), "the pid file is emptied");
}

#[test]
fn ctrl_c_mid_run_stops_everything_and_the_next_run_recovers_and_verifies() {
    let dir = ClusterDir::new();
    // Its own process group, signalled as a whole: what a terminal's Ctrl-C does (the
    // foreground nodes receive SIGINT too).
    let mut child = Command::new(BOREALIS)
        .args(["dev", "--duration", "60s", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn borealis dev");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (progress, progressed) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("records durable") {
                let _ = progress.send(());
            }
            seen.push(line);
        }
        seen
    });
    progressed.recv_timeout(COMMAND_TIMEOUT).expect("the workload reports progress");
    // SAFETY: signalling the process group of the child this test spawned.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let run = finish(child, &["dev", "(interrupted)"]);
    let stderr = reader.join().unwrap().join("\n");
    assert_eq!(run.code, Some(130), "{run:?}\n{stderr}");
    assert!(stderr.contains("interrupted; stopped the 6 nodes"), "{stderr}");
    assert_eq!(processes_using(&dir.path()), Vec::<u32>::new(), "nothing is left running");
    assert!(recorded(&dir.path()).is_empty());

    // Nothing is corrupt: the next run recovers the volume and verifies what it writes.
    let json_path = dir.path().join("after.json");
    let again = borealis(&dir.path(), &["dev", "--duration", "1s", "--json", json_path.to_str().unwrap()]);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_good_run(&summary(&json_path));
    assert_eq!(processes_using(&dir.path()), Vec::<u32>::new());
}

#[test]
fn keep_running_leaves_a_background_cluster_that_the_next_run_uses_and_keeps() {
    let dir = ClusterDir::new();
    let first = borealis(&dir.path(), &["dev", "--duration", "1s", "--keep-running"]);
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(first.stdout.contains("keep running in the background"), "{}", first.stdout);
    let pids = recorded(&dir.path());
    assert_eq!(pids.len(), 6);
    assert!(pids.values().all(|p| p.is_alive()), "--keep-running leaves the nodes running");

    let json_path = dir.path().join("summary.json");
    let second = borealis(&dir.path(), &["dev", "--duration", "1s", "--json", json_path.to_str().unwrap()]);
    assert_eq!(second.code, Some(0), "{second:?}");
    let json = summary(&json_path);
    assert_good_run(&json);
    assert_eq!(json["nodes_mode"], "background, already running");
    let reported: Vec<u64> =
        json["nodes"].as_array().unwrap().iter().map(|n| n["pid"].as_u64().unwrap()).collect();
    assert_eq!(reported, pids.values().map(|p| u64::from(p.pid)).collect::<Vec<_>>());
    assert!(pids.values().all(|p| p.is_alive()), "a cluster found running is not stopped");

    let down = borealis(&dir.path(), &["cluster", "down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    tools::procs::wait_all_exit(&pids.values().copied().collect::<Vec<_>>(), Duration::from_secs(5));
    assert_eq!(processes_using(&dir.path()), Vec::<u32>::new());
}

#[test]
fn help_explains_every_flag() {
    let help = Command::new(BOREALIS).args(["dev", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--dir",
        "--duration",
        "--json",
        "--keep-running",
        "--record-bytes",
        "--in-flight",
        "--nodes-per-az",
        "Ctrl-C",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn nine_nodes_run_the_workload_verify_it_and_hold_six_segments_per_pg() {
    let dir = ClusterDir::new();
    let json_path = dir.path().join("summary.json");
    let run = borealis(
        &dir.path(),
        &["dev", "--nodes-per-az", "3", "--duration", "1s", "--json", json_path.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let json = summary(&json_path);
    let int = |field: &str| json[field].as_u64().unwrap_or_else(|| panic!("{field} in {json}"));
    assert!(int("records") > 0 && int("sampled") > 0 && int("verified") == int("sampled"), "{json}");
    assert_eq!(int("nodes_healthy"), 9, "{json}");
    let nodes = json["nodes"].as_array().expect("nodes");
    let azs: Vec<u64> = nodes.iter().map(|n| n["az"].as_u64().unwrap()).collect();
    assert_eq!(azs, [0, 0, 0, 1, 1, 1, 2, 2, 2], "{json}");
    // Every PG of the volume is on exactly six of the nine nodes.
    let segments: u64 = nodes.iter().map(|n| n["segments"].as_u64().unwrap()).sum();
    assert_eq!(segments, 6 * int("pgs"), "{json}");
    assert!(run.stdout.contains("9 of 9 healthy"), "{}", run.stdout);
    assert!(run.stdout.contains("stopped the 9 nodes this command started"), "{}", run.stdout);
    assert_eq!(processes_using(&dir.path()), Vec::<u32>::new(), "no node outlives the run");
}
