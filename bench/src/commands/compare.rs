//! `borealis-bench compare`: Borealis and a 3-member etcd cluster at the same value size and
//! writes in flight, rounds interleaved, with the ratio of the means.

use std::path::PathBuf;
use std::time::Duration;

/// Value records per transaction of the dev workload (its third record is the commit marker).
const VALUES_PER_TRANSACTION: usize = 2;

pub(crate) fn compare_bench(
    value_bytes: usize,
    concurrency: &[usize],
    rounds: usize,
    duration: Duration,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    bench::etcd::ensure_installed()?;
    let temp = bench::scratch_dir(dir)?;
    let runtime = bench::current_thread()?;
    let mut etcd = bench::etcd::EtcdCluster::start(&temp.path().join("etcd"))?;
    let mut figures = Vec::new();
    let mut table = Vec::new();
    for &conc in concurrency {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!(
                "borealis-bench: compare, {value_bytes} bytes, {conc} in flight, round {}: Borealis",
                round + 1
            );
            let load = bench::append::AppendLoad {
                record_bytes: value_bytes,
                in_flight: conc.div_ceil(VALUES_PER_TRANSACTION),
                duration,
                udp_payload_bytes: transport::Tuning::default().max_udp_payload_bytes,
                rate: None,
                scrub_bytes_per_s: None,
            };
            let root = temp.path().join(format!("borealis-{conc}-{round}"));
            let a = bench::append::run(&root, load)?;
            eprintln!(
                "borealis-bench: compare, {value_bytes} bytes, {conc} in flight, round {}: etcd",
                round + 1
            );
            let load = bench::etcd::EtcdLoad { value_bytes, concurrency: conc, duration };
            let b = runtime.block_on(bench::etcd::run_puts(&etcd, load))?;
            let values_per_s = a.summary.transactions_per_s * VALUES_PER_TRANSACTION as f64;
            ours.push((values_per_s, a.summary.commit_p50_ms, a.summary.commit_p99_ms));
            let ms = |us: u64| us as f64 / 1e3;
            theirs.push((
                b.puts_per_s(),
                ms(b.latency_us.value_at_quantile(0.5)),
                ms(b.latency_us.value_at_quantile(0.99)),
            ));
        }
        let mean = |v: &[(f64, f64, f64)]| v.iter().map(|x| x.0).sum::<f64>() / v.len().max(1) as f64;
        let ratio = mean(&ours) / mean(&theirs).max(f64::EPSILON);
        figures.push((
            format!("compare_{value_bytes}B_{conc}_borealis_value_writes_per_s"),
            "writes/s",
            mean(&ours),
        ));
        figures.push((format!("compare_{value_bytes}B_{conc}_etcd_puts_per_s"), "puts/s", mean(&theirs)));
        figures.push((format!("compare_{value_bytes}B_{conc}_ratio"), "x", ratio));
        table.push((conc, ours, theirs, ratio));
    }
    etcd.stop();
    println!("compare: Borealis (6 nodes, 4 of 6, flushed) vs etcd 3.4 (3 members, fsync), {value_bytes}-byte writes, rounds interleaved");
    println!(
        "{:>9} {:>5} | {:>17} {:>7} {:>7} | {:>10} {:>7} {:>7}",
        "in flight", "round", "Borealis writes/s", "p50 ms", "p99 ms", "etcd puts/s", "p50 ms", "p99 ms"
    );
    for (conc, ours, theirs, ratio) in &table {
        for (round, (a, b)) in ours.iter().zip(theirs).enumerate() {
            println!(
                "{conc:>9} {:>5} | {:>17.0} {:>7.2} {:>7.2} | {:>10.0} {:>7.2} {:>7.2}",
                round + 1,
                a.0,
                a.1,
                a.2,
                b.0,
                b.1,
                b.2
            );
        }
        println!("{conc:>9} ratio of the means, Borealis value writes/s over etcd puts/s: {ratio:.1}x");
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "compare", "value_bytes": value_bytes, "concurrency": concurrency,
            "rounds": rounds, "seconds": duration.as_secs(),
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
