//! `borealis-bench budget`: the time budget of one commit at 1 in flight, from steps measured
//! one by one in the same run (see `bench::budget`).

use std::path::PathBuf;
use std::time::Duration;

use bench::node_ingest::{self, IngestLoad};
use tools::cluster::{ensure_key_file, free_tcp_port, free_udp_port, Launcher, NodeProcess, NodeSpec};

pub(crate) fn budget_bench(record_bytes: usize, seconds: u64, dir: Option<PathBuf>) -> Result<(), String> {
    let temp = bench::scratch_dir(dir)?;
    let root = temp.path();
    let duration = Duration::from_secs(seconds);
    let pki =
        transport::ensure_dev_pki(&root.join("pki"), &["node-1", "client"]).map_err(|e| e.to_string())?;
    ensure_key_file(&root.join("kek")).map_err(|e| e.to_string())?;
    let spec = NodeSpec {
        node_id: 1,
        az: 0,
        listen: ([127, 0, 0, 1], free_udp_port().map_err(|e| e.to_string())?).into(),
        admin: Some(([127, 0, 0, 1], free_tcp_port().map_err(|e| e.to_string())?).into()),
        data_dir: root.join("node"),
        tls: pki.files_for("node-1"),
        key_file: root.join("kek"),
        extra: Vec::new(),
    };
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    eprintln!("borealis-bench: one node: status round trips, then appends at 1 in flight");
    let mut node =
        NodeProcess::start(&launcher, spec.clone(), root.join("node.log")).map_err(|e| e.to_string())?;
    let runtime = bench::current_thread()?;
    let client_tls = pki.files_for("client");
    let measured = runtime.block_on(async {
        let rtt = bench::budget::status_round_trips(spec.listen, "node-1", &client_tls, duration).await?;
        let load = IngestLoad { record_bytes, in_flight: 1, batch_records_max: 1, duration };
        let ingest = node_ingest::run(spec.listen, "node-1", &client_tls, load).await?;
        Ok::<_, String>((rtt, ingest))
    });
    // The node's own write + flush time per group commit, as its metrics sum it.
    let admin = spec.admin.expect("set above");
    let flush_s = bench::metric(admin, "borealis_journal_write_flush_seconds_total");
    let groups = bench::metric(admin, "borealis_journal_groups_written_total");
    node.stop();
    let (rtt, ingest) = measured?;
    let (Some(flush_s), Some(groups)) = (flush_s, groups.filter(|g| *g > 0.0)) else {
        return Err("the node's admin port did not report its journal flush time".into());
    };
    let encode =
        bench::budget::encode_us(&node_ingest::make_batch(1, 1, record_bytes), Duration::from_secs(1))?;
    eprintln!("borealis-bench: six nodes, the dev workload at 1 in flight");
    let load = bench::append::AppendLoad {
        record_bytes,
        in_flight: 1,
        duration,
        udp_payload_bytes: 1472,
        rate: None,
        scrub_bytes_per_s: None,
    };
    let append = bench::append::run(root, load)?;

    let us = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.5) as f64;
    let (rtt_us, node_us) = (us(&rtt), us(&ingest.latency_us));
    let flush_us = flush_s * 1e6 / groups;
    let commit_us = append.summary.commit_p50_ms * 1000.0;
    let node_work_us = node_us - rtt_us - flush_us;
    let encodes_us = 6.0 * encode;
    let quorum_us = commit_us - node_us - encodes_us;
    println!(
        "commit budget at 1 in flight, {record_bytes}-byte records (p50 unless noted; the rest is derived)"
    );
    println!("{:<62} {:>9} {:>7}", "step", "us", "share");
    let rows = [
        ("client: encode the batch frame once per node (6x, CPU)", encodes_us),
        ("network: QUIC round trip to one node (status request)", rtt_us),
        ("disk: the node's group write + flush (io_uring, mean)", flush_us),
        ("node: decode, seal, index, ack (one-node append - RTT - flush)", node_work_us),
        ("quorum: waiting for the 4th of 6 acks, 7 processes on 2 cores", quorum_us),
    ];
    for (step, value) in rows {
        println!("{step:<62} {value:>9.0} {:>6.0}%", 100.0 * value / commit_us);
    }
    println!("{:<62} {commit_us:>9.0} {:>6.0}%", "commit (append -> durable at 4 of 6), measured", 100.0);
    println!("(one-node append at 1 in flight, measured: {node_us:.0} us)");
    Ok(())
}
