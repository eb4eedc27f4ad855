//! Six storage "hosts" in six network namespaces joined by veth pairs to a bridge, each with
//! its own address and `storaged --config` from a `borealis cluster init --hosts` bundle, and
//! per-packet delays of 0.1 ms inside an AZ and 1 ms between AZs on each namespace's outgoing
//! packets, as `tc netem` on each host's link would add them (the writer, in the root namespace,
//! is an AZ of its own: 1 ms each way to every node). The writer streams records; one whole AZ is
//! cut off (its links down), appends go on, the AZ returns and catches up, and every acknowledged
//! record reads back. Commit latency at one in flight is printed for docs/performance.md. Needs
//! root (namespaces, links, iptables); everything it makes is removed when it ends, pass or fail.
//!
//! The delays are made without netem, which this project's CI kernel lacks
//! (`CONFIG_NET_SCH_NETEM` unset): iptables-legacy rules queue outgoing packets to NFQUEUEs, one
//! per delay class, and a thread of the test holds each packet until its delay has passed
//! (`support/delay.rs`; needs Debian's `iptables`, which `.ci/run` installs). UDP round trips
//! between namespaces, measured before and after, show the delays are there; the test fails if
//! they cannot be made.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use client::{NewRecord, VolumeGeometry, Writer};
use protocol::{Lsn, PageId, RecordKind, VolumeId};
use support::delay::{self, Delays, Rule};
use tools::local::LocalCluster;

const NODES: u32 = 6;
const QUIC_PORT: u16 = 7001;
/// Delay each host adds to its outgoing packets for its AZ peer, and for everyone else.
const IN_AZ_DELAY: Duration = Duration::from_micros(100);
const CROSS_AZ_DELAY: Duration = Duration::from_millis(1);
/// How long the cut-off AZ may take to catch up once it returns.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Round trips per pair in the direct check of the delays, and how far above the delays their
/// median may be (the delay thread's wake-ups, the echo's scheduling).
const ROUND_TRIPS: usize = 50;
const ROUND_TRIP_SLACK: Duration = Duration::from_micros(1500);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The namespaces, links and bridge of one run, removed on drop.
struct Net {
    tag: String,
    subnet: u8,
}

impl Net {
    fn namespace(&self, node: u32) -> String {
        format!("{}n{node}", self.tag)
    }
    /// The root-side end of a node's veth pair.
    fn host_link(&self, node: u32) -> String {
        format!("{}h{node}", self.tag)
    }
    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }
    fn address(&self, node: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, node as u8)
    }

    fn build() -> Net {
        let pid = std::process::id();
        let net = Net { tag: format!("bx{}", pid % 100_000), subnet: (pid % 250) as u8 };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.77.{}.254/24", net.subnet), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for node in 1..=NODES {
            let (namespace, host) = (net.namespace(node), net.host_link(node));
            ip(&["netns", "add", &namespace]);
            ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &namespace]);
            ip(&["link", "set", &host, "master", &bridge]);
            ip(&["link", "set", &host, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &namespace, "ip"];
                all.extend_from_slice(args);
                ip(&all);
            };
            inside(&["addr", "add", &format!("{}/24", net.address(node)), "dev", "eth0"]);
            inside(&["link", "set", "eth0", "up"]);
            inside(&["link", "set", "lo", "up"]);
        }
        net
    }

    /// The writer's address (the bridge's, in the root namespace).
    fn writer_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    /// Nodes 2k-1 and 2k share AZ k-1.
    fn az_peer(node: u32) -> u32 {
        if node % 2 == 1 {
            node + 1
        } else {
            node - 1
        }
    }

    /// Every host's delays, as netem on its link would add them: the writer's packets leave by
    /// the bridge and wait `CROSS_AZ_DELAY`; a node's wait `IN_AZ_DELAY` to its AZ peer and
    /// `CROSS_AZ_DELAY` to anyone else (the writer included).
    fn delays(&self) -> Delays {
        let rule = |dev: &str, to, delay| Rule { dev: dev.to_string(), to, delay };
        let mut namespaces = vec![(None, vec![rule(&self.bridge(), None, CROSS_AZ_DELAY)])];
        for node in 1..=NODES {
            let peer = self.address(Net::az_peer(node));
            let rules = vec![rule("eth0", Some(peer), IN_AZ_DELAY), rule("eth0", None, CROSS_AZ_DELAY)];
            namespaces.push((Some(self.namespace(node)), rules));
        }
        // Queue numbers are per namespace; the root namespace's must not meet another run's.
        let first_queue = 1_000 + (std::process::id() % 60_000) as u16;
        Delays::apply(first_queue, &namespaces).unwrap_or_else(|e| {
            panic!("cannot delay packets ({e}): this test needs the delays (root, NFQUEUE, iptables-legacy)")
        })
    }

    /// Median UDP round trips (writer to node 1, node 1 to its AZ peer, node 1 to node 3 in
    /// another AZ).
    fn round_trips(&self) -> [Duration; 3] {
        let node = |n: u32| (Some(self.namespace(n)), self.address(n));
        let pairs = [((None, self.writer_address()), node(1)), (node(1), node(2)), (node(1), node(3))];
        pairs.map(|((a_ns, a), (b_ns, b))| {
            let times = delay::round_trips((a_ns.as_deref(), a), (b_ns.as_deref(), b), ROUND_TRIPS)
                .unwrap_or_else(|e| panic!("UDP round trips {a} to {b}: {e}"));
            delay::median(&times)
        })
    }

    /// Cuts `node` off (its link on the bridge down) or brings it back.
    fn link(&self, node: u32, up: bool) {
        ip(&["link", "set", &self.host_link(node), if up { "up" } else { "down" }]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth pair; the explicit deletes are for a run that
        // failed half way.
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        };
        for node in 1..=NODES {
            quiet(&["netns", "del", &self.namespace(node)]);
            quiet(&["link", "del", &self.host_link(node)]);
        }
        quiet(&["link", "del", &self.bridge()]);
    }
}

/// `start.sh ID` starts node ID in its namespace, detached, and returns once it is ready;
/// `restart.sh` (with `BOREALIS_NODE_ID`, as `cluster restart --exec` runs it) stops it with
/// SIGTERM, waits for its drain, and starts it again.
struct Scripts {
    start: std::path::PathBuf,
    restart: std::path::PathBuf,
}

impl Scripts {
    fn write(root: &std::path::Path, net: &Net, out: &std::path::Path) -> Scripts {
        let (r, o, ns) = (root.display(), out.display(), format!("{}n", net.tag));
        let start = format!(
            "id=$1\n\
             ip netns exec {ns}$id {exe} storaged --config {o}/hosts/storage-$id.test/storaged.toml \
             --journal-file-bytes 16777216 > {r}/out-$id 2>> {r}/node-$id.log &\n\
             echo $! > {r}/pid-$id\n\
             i=0; while [ $i -lt 300 ]; do grep -q ready {r}/out-$id 2>/dev/null && exit 0; sleep 0.1; i=$((i+1)); done\n\
             echo \"node $id did not start\" >&2; exit 1\n",
            exe = support::BOREALIS
        );
        let restart = format!(
            "id=$BOREALIS_NODE_ID\npid=$(cat {r}/pid-$id)\nkill -TERM $pid\n\
             i=0; while kill -0 $pid 2>/dev/null; do [ $i -lt 300 ] || exit 1; sleep 0.1; i=$((i+1)); done\n\
             exec sh {r}/start.sh $id\n"
        );
        let scripts = Scripts { start: root.join("start.sh"), restart: root.join("restart.sh") };
        std::fs::write(&scripts.start, start).unwrap();
        std::fs::write(&scripts.restart, restart).unwrap();
        scripts
    }
}

/// Kills the nodes recorded in `DIR/pid-N` when the test ends, pass or fail.
struct PidFiles(std::path::PathBuf);

impl Drop for PidFiles {
    fn drop(&mut self) {
        for n in 1..=NODES {
            let pid = std::fs::read_to_string(self.0.join(format!("pid-{n}"))).ok();
            if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a node this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn record(i: u64) -> NewRecord {
    NewRecord {
        page: PageId(i % 11),
        kind: RecordKind::Marker,
        payload: format!("record {i}").into_bytes().into(),
        cpl: true,
        lsn: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn six_hosts_in_network_namespaces_with_az_delays_lose_an_az_and_catch_up() {
    let net = Net::build();
    // The delays, checked directly: UDP round trips without and with them.
    let before = net.round_trips();
    let delays = net.delays();
    let after = net.round_trips();
    let names = ["writer-node 1", "node 1-node 2 (same AZ)", "node 1-node 3 (other AZ)"];
    let expected = [2 * CROSS_AZ_DELAY, 2 * IN_AZ_DELAY, 2 * CROSS_AZ_DELAY];
    for (((name, before), after), expected) in names.iter().zip(before).zip(after).zip(expected) {
        eprintln!(
            "UDP round trip {name}: median {before:?} without delays, {after:?} with (delays {expected:?})"
        );
        assert!(
            after >= expected && after <= expected + ROUND_TRIP_SLACK,
            "round trip {name} {after:?} with delays of {expected:?}: delays not applied as asked"
        );
    }
    assert!(after[1] < CROSS_AZ_DELAY, "same-AZ round trip {:?} is not below the cross-AZ delay", after[1]);
    let root = tempfile::tempdir().unwrap();
    let hosts: String = (1..=NODES)
        .map(|n| {
            format!(
                "[[host]]\nname = \"storage-{n}.test\"\naddress = \"{}:{QUIC_PORT}\"\naz = {}\ndata_dir = \"{}\"\n\n",
                net.address(n),
                (n - 1) / 2,
                root.path().join(format!("data-{n}")).display()
            )
        })
        .collect();
    let (out, init) = support::init_hosts(root.path(), &hosts);
    assert_eq!(init.code, Some(0), "{init:?}");
    // Nodes are started (and restarted) by scripts, as an operator's tooling would: detached
    // from this process, recorded in pid files that `_nodes` kills at the end.
    let scripts = Scripts::write(root.path(), &net, &out);
    let _nodes = PidFiles(root.path().to_owned());
    for n in 1..=NODES {
        let started = Command::new("sh").arg(&scripts.start).arg(n.to_string()).status().unwrap();
        assert!(
            started.success(),
            "node {n}: {}",
            std::fs::read_to_string(root.path().join(format!("node-{n}.log"))).unwrap_or_default()
        );
    }
    let cluster = LocalCluster::load(&out).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let geometry = VolumeGeometry::new(VolumeId(0x4e75), 4096, 64).unwrap();
    let writer = runtime.block_on(Writer::open(cluster.client_config().unwrap(), geometry)).unwrap();
    // Every record stays readable as a record (not folded into images) for the final check.
    runtime.block_on(writer.pin_floor(Some(writer.vdl()))).unwrap();
    let mut written = Vec::new();
    let mut append = |i: u64, latencies: Option<&mut Vec<Duration>>| {
        let started = Instant::now();
        let appended = runtime.block_on(writer.append(vec![record(i)])).unwrap();
        runtime.block_on(appended.durable()).unwrap_or_else(|e| panic!("append {i}: {e}"));
        if let Some(latencies) = latencies {
            latencies.push(started.elapsed());
        }
        written.push((appended.first, i));
    };
    // Commit latency at one in flight, all six nodes up.
    let mut latencies = Vec::new();
    for i in 0..400 {
        append(i, Some(&mut latencies));
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    eprintln!(
        "commit latency at 1 in flight, 6 hosts in namespaces, {IN_AZ_DELAY:?} in-AZ / {CROSS_AZ_DELAY:?} \
         cross-AZ delays: p50 {p50:?}, p99 {p99:?}"
    );
    // The writer is 1 ms from every node and each ack comes back 1 ms late: a commit waits at
    // least that round trip.
    assert!(p50 >= 2 * CROSS_AZ_DELAY, "p50 {p50:?} is below the writer's round trip: delays not applied?");
    // AZ 1 (nodes 3 and 4) is cut off; appends go on with the four others.
    net.link(3, false);
    net.link(4, false);
    for i in 400..800 {
        append(i, None);
    }
    net.link(3, true);
    net.link(4, true);
    for i in 800..900 {
        append(i, None);
    }
    tools::rolling::wait_whole(&cluster, &runtime, CATCH_UP_TIMEOUT, "after the AZ returned").unwrap();
    // The same cluster restarted one AZ at a time, each node by the operator's command, while
    // appends go on: none may fail.
    let roll = {
        let (dir, restart) = (out.clone(), scripts.restart.clone());
        std::thread::spawn(move || {
            Command::new(support::BOREALIS)
                .args(["cluster", "restart", "--rolling", "--exec"])
                .arg(format!("sh {}", restart.display()))
                .arg("--dir")
                .arg(&dir)
                .output()
                .unwrap()
        })
    };
    let mut i = 900;
    while !roll.is_finished() {
        append(i, None);
        i += 1;
    }
    for _ in 0..50 {
        append(i, None);
        i += 1;
    }
    let rolled = roll.join().unwrap();
    let said = String::from_utf8_lossy(&rolled.stdout);
    assert!(rolled.status.success(), "{said}{}", String::from_utf8_lossy(&rolled.stderr));
    assert!((0..3).all(|az| said.contains(&format!("AZ {az}: whole again"))), "{said}");
    eprintln!("rolling restart with {} appends running, none failed:\n{said}", i - 900);
    runtime.block_on(async {
        for (lsn, i) in &written {
            let got = writer.read_records(PageId(i % 11), Lsn(lsn.0 - 1), *lsn).await.unwrap();
            assert_eq!(got.len(), 1, "record {i} at {lsn}");
            assert_eq!(got[0].payload()[..], format!("record {i}").into_bytes()[..], "record {i} at {lsn}");
        }
    });
    eprintln!("{} records acknowledged and read back across the AZ's absence and the roll", written.len());
    runtime.block_on(writer.close());
    for (class, packets) in delays.packets() {
        eprintln!("delayed {packets} packets: {class}");
    }
    for (namespace, full, user) in delays.kernel_drops() {
        if full + user > 0 {
            eprintln!(
                "{namespace}: the kernel dropped {full} packets on a full queue, {user} on a full socket"
            );
        }
    }
    let errors = delays.errors();
    assert!(errors.is_empty(), "the delay thread: {errors:?}");
}
