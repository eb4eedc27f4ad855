//! Metrics an operator can alert on: a live node's `/metrics` passes Prometheus' own linter
//! (`promtool check metrics`), and its latency and repair histograms fill as a small cluster
//! takes writes and reads and heals a node that missed records; the alert rules shipped in
//! `packaging/prometheus/` pass `promtool check rules` and their unit tests, and the Grafana
//! dashboard's queries parse.
//!
//! promtool comes with Debian's `prometheus` package (`.ci/run` installs it). Without it these
//! tests fail: they never skip.

mod heal;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use heal::{metric, metrics, one_at_a_time, open_writer, read_all, start_cluster, wait_for, write_rounds};
use protocol::messages::{ErrorCode, GossipSummary};
use protocol::{Lsn, Message, PgId, PgRef, VolumeId};
use tools::local::{stop_all, LocalCluster};

const VOLUME: VolumeId = VolumeId(0x3e7c);
const PAGES: u64 = 8;
/// The node whose metrics are checked after writes, reads and an error reply.
const NODE: u32 = 2;
/// The node that misses records while down and catches up by gossip.
const LAGGING: u32 = 6;
const PROMTOOL: &str = "promtool";

/// `packaging/prometheus`, in the repository.
fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

/// Runs promtool with `args` (and `stdin`), returning whether it succeeded and what it printed.
fn promtool(args: &[&str], dir: &Path, stdin: &str) -> (bool, String) {
    let spawned = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = spawned.unwrap_or_else(|error| {
        panic!(
            "cannot run `{PROMTOOL}` ({error}): install Debian's `prometheus` package \
             (`apt-get install prometheus`, as .ci/run does); this test does not skip without it"
        )
    });
    child.stdin.take().expect("piped stdin").write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The body of an HTTP response, after asserting its status and Prometheus' content type.
fn body(response: &str) -> &str {
    let (head, body) =
        response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "Prometheus text format 0.0.4: {head}");
    body
}

/// The value of the sample `name{labels}` (labels as written, in order), zero if absent.
fn labelled(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// Asserts promtool finds nothing to complain about in `text`.
fn assert_lint_clean(text: &str, node: u32) {
    let (ok, complaints) = promtool(&["check", "metrics"], &rules_dir(), text);
    assert!(
        ok && complaints.trim().is_empty(),
        "promtool check metrics on node {node}:\n{complaints}\n{text}"
    );
}

/// A gossip summary from a client certificate: the node answers `Unauthorized`.
async fn provoke_an_error_reply(cluster: &LocalCluster, node: u32) {
    let info = cluster.node(node).unwrap();
    let endpoint = heal::endpoint(cluster, node);
    let connection =
        transport::connect(&endpoint, info.addr, &info.name, Duration::from_secs(2)).await.unwrap();
    let summary = GossipSummary {
        pg: PgRef { volume_id: VOLUME, pg_id: PgId(0) },
        node: protocol::NodeId(node % 6 + 1),
        epochs: protocol::Epochs::INITIAL,
        scl: Lsn::ZERO,
        highest_lsn: Lsn::ZERO,
        folded_through: Lsn::ZERO,
        floor: Lsn::ZERO,
        open: true,
        holes: Vec::new(),
    };
    let reply = transport::request(&connection, &Message::GossipSummary(summary)).await.unwrap();
    assert!(matches!(&reply, Message::Error(e) if e.code == ErrorCode::Unauthorized), "{reply:?}");
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let (ok, text) = promtool(&["check", "rules", "alerts.yml"], &rules_dir(), "");
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) = promtool(&["test", "rules", "alerts_test.yml"], &rules_dir(), "");
    assert!(ok, "promtool test rules:\n{text}");
}

/// Every query of the Grafana dashboard, with Grafana's variables as a query sees them.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/borealis.json");
    let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    let targets = panels.iter().flat_map(|panel| panel["targets"].as_array().expect("targets"));
    let exprs = targets.map(|target| target["expr"].as_str().expect("expr"));
    exprs.map(|expr| expr.replace("$__rate_interval", "5m").replace("$instance", ".*")).collect()
}

#[test]
fn the_dashboard_s_queries_parse() {
    // promtool parses PromQL in rules: each query becomes a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_queries().iter().enumerate() {
        let expr = serde_json::to_string(expr).unwrap();
        rules += &format!("      - record: dashboard:query_{i}\n        expr: {expr}\n");
    }
    std::fs::write(dir.path().join("dashboard.yml"), &rules).unwrap();
    let (ok, text) = promtool(&["check", "rules", "dashboard.yml"], dir.path(), "");
    assert!(ok, "promtool check rules on the dashboard's queries:\n{text}\n{rules}");
}

#[test]
fn a_live_node_s_metrics_pass_promtool_and_its_histograms_fill() {
    let _one = one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let (cluster, mut nodes) = start_cluster(root.path(), &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let writer = open_writer(&cluster, VOLUME).await;
        write_rounds(&writer, PAGES, 2).await;
        nodes[LAGGING as usize - 1].kill9();
        write_rounds(&writer, PAGES, 2).await;
        // No writer is left to repair the lagging node: gossip does.
        writer.close().await;
    });
    nodes[LAGGING as usize - 1].restart().unwrap();
    let lagging_admin = cluster.node(LAGGING).unwrap().admin;
    let gossiped = |text: &str| labelled(text, "borealis_peer_fetch_bytes_count", "kind=\"gossip_records\"");
    wait_for("the restarted node to fetch records by gossip", Duration::from_secs(30), || {
        gossiped(&metrics(lagging_admin)) > 0.0
    });
    let read = runtime.block_on(async {
        provoke_an_error_reply(&cluster, NODE).await;
        read_all(&cluster, NODE, VOLUME, PAGES).await
    });
    assert_eq!(read.len() as u64, PAGES);
    // The segment gauges come from a snapshot the node refreshes every 500 ms.
    let admin = cluster.node(NODE).unwrap().admin;
    let segment = format!("volume=\"{:x}\",pg=\"0\"", VOLUME.0);
    wait_for("the snapshot to list the segment", Duration::from_secs(5), || {
        labelled(body(&metrics(admin)), "borealis_segment_state", &format!("{segment},state=\"serving\""))
            == 1.0
    });
    let response = metrics(admin);
    let lagging = metrics(lagging_admin);
    stop_all(&mut nodes);

    let text = body(&response);
    assert_lint_clean(text, NODE);
    assert_lint_clean(body(&lagging), LAGGING);
    for histogram in
        ["borealis_journal_flush_seconds", "borealis_append_ack_seconds", "borealis_read_page_seconds"]
    {
        assert!(metric(text, &format!("{histogram}_count")) > 0, "{histogram} counted nothing:\n{text}");
        let all = labelled(text, &format!("{histogram}_bucket"), "le=\"+Inf\"");
        assert_eq!(
            all,
            metric(text, &format!("{histogram}_count")) as f64,
            "{histogram}: +Inf bucket = count"
        );
    }
    assert!(metric(text, "borealis_read_page_seconds_count") >= PAGES, "{text}");
    let lagging = body(&lagging);
    assert!(labelled(lagging, "borealis_peer_fetch_bytes_sum", "kind=\"gossip_records\"") > 0.0, "{lagging}");
    assert!(labelled(text, "borealis_error_replies_total", "kind=\"unauthorized\"") >= 1.0, "{text}");
    assert_eq!(labelled(text, "borealis_error_replies_total", "kind=\"internal\""), 0.0, "{text}");
    assert_eq!(
        labelled(text, "borealis_segments_by_state", "state=\"serving\""),
        metric(text, "borealis_segments") as f64
    );
    assert_eq!(labelled(text, "borealis_segment_state", &format!("{segment},state=\"hydrating\"")), 0.0);
    assert_eq!(
        labelled(text, "borealis_segment_scl_lag", &segment),
        0.0,
        "a complete segment trails nothing"
    );
    let (free, size) =
        (metric(text, "borealis_data_dir_free_bytes"), metric(text, "borealis_data_dir_size_bytes"));
    assert!(0 < free && free <= size, "free {free} of {size}");
}
