//! `borealis cluster up | status | down` against real storage nodes, each test in a directory
//! of its own: the nodes outlive `up`, answer `status`, and are gone after `down`; failed and
//! interrupted starts leave nothing running; a nine-node cluster's status says `HEALTH_OK`,
//! then `HEALTH_WARN` with a killed node's members `down`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tools::local::LocalCluster;

#[test]
fn up_status_down_leaves_nothing_running() {
    let dir = ClusterDir::new();
    let up = borealis(&dir.path(), &["cluster", "up"]);
    assert_eq!(up.code, Some(0), "{up:?}");
    let pids = recorded(&dir.path());
    assert_eq!(pids.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert!(pids.values().all(|p| p.is_alive()), "nodes outlive `up`");
    for p in pids.values() {
        assert!(up.stdout.contains(&p.pid.to_string()), "{}", up.stdout);
    }

    let status = borealis(&dir.path(), &["cluster", "status"]);
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(status.stdout.contains("6 of 6 nodes up"), "{}", status.stdout);
    let rows: Vec<&str> = status.stdout.lines().filter(|l| l.contains(" up ")).collect();
    assert_eq!(rows.len(), 6, "{}", status.stdout);
    assert!(rows.iter().all(|r| r.contains("200 serving")), "{}", status.stdout);

    let again = borealis(&dir.path(), &["cluster", "up"]);
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.starts_with("borealis: cluster already running (pids "), "{}", again.stderr);

    let down = borealis(&dir.path(), &["cluster", "down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert!(down.stdout.contains("stopped 6 node(s)"), "{}", down.stdout);
    assert!(pids.values().all(|p| !p.is_alive()), "every node is gone after `down`");
    assert!(!dir.path().join("pids").exists());

    let after = borealis(&dir.path(), &["cluster", "status", "--timeout-ms", "300"]);
    assert_eq!(after.code, Some(2), "no node serves: HEALTH_ERR: {after:?}");
    assert!(after.stdout.contains("0 of 6 nodes up"), "{}", after.stdout);
    assert!(after.stdout.lines().last().unwrap_or("").starts_with("HEALTH_ERR: "), "{}", after.stdout);
}

#[test]
fn up_restarts_a_crashed_node_on_the_same_port() {
    let dir = ClusterDir::new();
    let first = borealis(&dir.path(), &["cluster", "up"]);
    assert_eq!(first.code, Some(0), "{first:?}");
    let before = recorded(&dir.path());
    let victim = before[&3];
    victim.signal(libc::SIGKILL);
    tools::procs::wait_all_exit(&[victim], Duration::from_secs(5));

    let status = borealis(&dir.path(), &["cluster", "status", "--timeout-ms", "500"]);
    assert_eq!(status.code, Some(1), "HEALTH_WARN: {status:?}");
    assert!(status.stdout.contains("5 of 6 nodes up"), "{}", status.stdout);
    assert!(status.stdout.contains("node 3: quic:"), "{}", status.stdout);

    let up = borealis(&dir.path(), &["cluster", "up"]);
    assert_eq!(up.code, Some(0), "{up:?}");
    assert!(up.stdout.contains("nodes 1, 2, 4, 5, 6 were already running"), "{}", up.stdout);
    let after = recorded(&dir.path());
    assert_ne!(after[&3], victim);
    assert_eq!(after[&1], before[&1], "running nodes are left alone");
    assert_eq!(borealis(&dir.path(), &["cluster", "status"]).code, Some(0));
    assert_eq!(borealis(&dir.path(), &["cluster", "down"]).code, Some(0));
    assert!(after.values().all(|p| !p.is_alive()));
}

#[test]
fn a_node_that_cannot_start_fails_up_and_the_others_are_stopped() {
    let dir = ClusterDir::new();
    let cluster = LocalCluster::load_or_create(&dir.path()).unwrap();
    // Another program holds node 4's QUIC port.
    let _squatter = std::net::UdpSocket::bind(cluster.node(4).unwrap().addr).unwrap();
    let up = borealis(&dir.path(), &["cluster", "up"]);
    assert_eq!(up.code, Some(1), "{up:?}");
    assert!(up.stderr.contains("node 4 did not become ready"), "{}", up.stderr);
    assert!(up.stderr.contains("already in use"), "{}", up.stderr);
    assert_eq!(up.stderr.lines().count(), 1, "one-line error: {}", up.stderr);
    assert!(!dir.path().join("pids").exists(), "nothing recorded as running");
    assert_no_node_of(&dir.path());
}

#[test]
fn commands_without_a_cluster_say_how_to_make_one() {
    let dir = ClusterDir::new();
    // `status` exits 3 when it cannot make a verdict (1 and 2 are HEALTH_WARN and HEALTH_ERR).
    for (action, code) in [("status", 3), ("down", 1)] {
        let run = borealis(&dir.path(), &["cluster", action]);
        assert_eq!(run.code, Some(code), "{run:?}");
        let expected =
            format!("borealis: no cluster in {}: run `borealis cluster up`\n", dir.path().display());
        assert_eq!(run.stderr, expected);
    }
}

#[test]
fn interrupting_up_stops_the_nodes_it_started() {
    let dir = ClusterDir::new();
    LocalCluster::load_or_create(&dir.path()).unwrap();
    // The window between spawning the nodes and their ready lines is short: retry until the
    // signal lands inside it. Whatever the timing, the outcome must be all or nothing.
    let mut interrupted = 0;
    for _ in 0..5 {
        let child = Command::new(BOREALIS)
            .args(["cluster", "up", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while !dir.path().join("pids").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let spawned = recorded(&dir.path());
        // SAFETY: signalling the child this test spawned and has not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let run = finish(child, &["cluster", "up"]);
        if run.code == Some(130) {
            interrupted += 1;
            assert!(run.stderr.contains("interrupted; nothing left running"), "{}", run.stderr);
            assert!(!dir.path().join("pids").exists());
            assert!(spawned.values().all(|p| !p.is_alive()), "started nodes were stopped");
            assert_no_node_of(&dir.path());
        } else {
            assert_eq!(run.code, Some(0), "{run:?}");
            assert_eq!(borealis(&dir.path(), &["cluster", "down"]).code, Some(0));
        }
    }
    assert!(interrupted > 0, "no attempt was interrupted while starting");
}

/// No process runs with a data directory under `dir` (whatever the pid file says).
fn assert_no_node_of(dir: &std::path::Path) {
    let needle = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" storaged ") && cmdline.contains(&needle) {
            let alive = tools::procs::ProcId::of(pid).is_some();
            assert!(!alive, "node still running: {pid} {cmdline}");
        }
    }
}

/// Reads a `--json` file.
fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the JSON was written")).expect("JSON")
}

/// Node ids of the members of `pg` (an element of the status JSON's `pgs`).
fn members(pg: &serde_json::Value) -> Vec<u64> {
    pg["members"].as_array().expect("members").iter().map(|m| m["node"].as_u64().expect("node")).collect()
}

#[test]
fn status_of_nine_nodes_is_ok_then_warns_with_a_killed_nodes_members_down() {
    let dir = ClusterDir::new();
    let up = borealis(&dir.path(), &["cluster", "up", "--nodes-per-az", "3"]);
    assert_eq!(up.code, Some(0), "{up:?}");
    let pids = recorded(&dir.path());
    assert_eq!(pids.keys().copied().collect::<Vec<_>>(), (1..=9).collect::<Vec<u32>>());
    // Segments exist once a writer has written: a short workload on the background cluster.
    let dev = borealis(&dir.path(), &["dev", "--duration", "1s"]);
    assert_eq!(dev.code, Some(0), "{dev:?}");

    let ok_path = dir.path().join("ok.json");
    let ok = borealis(&dir.path(), &["cluster", "status", "--json", ok_path.to_str().unwrap()]);
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(ok.stdout.lines().last().unwrap().starts_with("HEALTH_OK: "), "{}", ok.stdout);
    let ok_json = json(&ok_path);
    assert_eq!(ok_json["health"], "HEALTH_OK");
    let pgs = ok_json["pgs"].as_array().expect("pgs").clone();
    assert!(!pgs.is_empty(), "{ok_json}");
    assert_eq!(ok_json["pgs_total"].as_u64(), Some(pgs.len() as u64));
    assert_eq!(ok_json["pgs_fully_replicated"], ok_json["pgs_total"]);
    for pg in &pgs {
        assert_eq!(pg["healthy"], 6, "{pg}");
        let azs: Vec<u64> =
            pg["members"].as_array().unwrap().iter().map(|m| m["az"].as_u64().unwrap()).collect();
        assert_eq!(azs, [0, 0, 1, 1, 2, 2], "two members per AZ: {pg}");
        for member in pg["members"].as_array().unwrap() {
            assert!(["serving", "lagging"].contains(&member["state"].as_str().unwrap()), "{member}");
            assert!(member["scl"].as_u64().unwrap() > 0, "{member}");
        }
    }

    // SIGKILL a member of the first PG: every PG it is a member of drops to 5 of 6.
    let victim = members(&pgs[0])[0];
    let victim_proc = pids[&(victim as u32)];
    victim_proc.signal(libc::SIGKILL);
    tools::procs::wait_all_exit(&[victim_proc], Duration::from_secs(5));
    let warn_path = dir.path().join("warn.json");
    let warn = borealis(
        &dir.path(),
        &["cluster", "status", "--timeout-ms", "500", "--json", warn_path.to_str().unwrap()],
    );
    assert_eq!(warn.code, Some(1), "{warn:?}");
    assert!(warn.stdout.lines().last().unwrap().starts_with("HEALTH_WARN: "), "{}", warn.stdout);
    assert!(warn.stdout.contains(&format!("{victim}:down:-")), "{}", warn.stdout);
    let warn_json = json(&warn_path);
    assert_eq!(warn_json["health"], "HEALTH_WARN");
    let mut degraded = 0;
    for pg in warn_json["pgs"].as_array().unwrap() {
        let holds = members(pg).contains(&victim);
        degraded += usize::from(holds);
        assert_eq!(pg["healthy"], if holds { 5 } else { 6 }, "{pg}");
        for member in pg["members"].as_array().unwrap() {
            let is_victim = member["node"] == victim;
            assert_eq!(member["state"] == "down", is_victim, "{member}");
            assert_eq!(member["scl"].is_null(), is_victim, "{member}");
        }
    }
    assert!(degraded >= 1);
    assert_eq!(warn_json["pgs_total"], ok_json["pgs_total"], "a down node's PGs are still listed");
    assert_eq!(warn_json["pgs_fully_replicated"].as_u64(), Some((pgs.len() - degraded) as u64));
    assert_eq!(borealis(&dir.path(), &["cluster", "down"]).code, Some(0));
}

#[test]
fn nodes_per_az_is_checked_and_an_existing_cluster_keeps_its_size() {
    let dir = ClusterDir::new();
    for bad in ["1", "9", "three"] {
        let run = borealis(&dir.path(), &["cluster", "up", "--nodes-per-az", bad]);
        assert_eq!(run.code, Some(2), "a usage error: {run:?}");
        assert!(run.stderr.contains("--nodes-per-az"), "{}", run.stderr);
    }
    assert!(borealis(&dir.path(), &["cluster", "up", "--nodes-per-az", "1"])
        .stderr
        .contains("outside 2..=8"));
    assert!(!dir.path().join("cluster.toml").exists(), "nothing was created");
    LocalCluster::load_or_create(&dir.path()).unwrap();
    let run = borealis(&dir.path(), &["cluster", "up", "--nodes-per-az", "3"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("has 6 nodes (AZ 0: 2, AZ 1: 2, AZ 2: 2), not 3 per AZ"), "{}", run.stderr);
    assert!(recorded(&dir.path()).is_empty(), "nothing was started");
    // A usage error of `status` is not mistaken for HEALTH_ERR (2).
    assert_eq!(borealis(&dir.path(), &["cluster", "status", "--bogus"]).code, Some(3));
}

#[test]
fn status_help_explains_states_verdicts_and_exit_codes() {
    let help = Command::new(BOREALIS).args(["cluster", "status", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in
        ["--json", "scrub-repairing", "hydrating", "down", "0 HEALTH_OK", "1 HEALTH_WARN", "2 HEALTH_ERR"]
    {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let up = Command::new(BOREALIS).args(["cluster", "up", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&up.stdout).contains("--nodes-per-az"));
}
