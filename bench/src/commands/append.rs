//! `borealis-bench append`: every combination of the append grid on a local six-node cluster,
//! printed as a table (and written as JSON and SVG when asked).

use std::path::PathBuf;
use std::time::Duration;

/// The append runs to make: every combination.
pub(crate) struct AppendGrid {
    pub(crate) record_bytes: Vec<usize>,
    pub(crate) in_flight: Vec<usize>,
    pub(crate) udp_payload_bytes: Vec<u16>,
    pub(crate) rate: Option<f64>,
    pub(crate) scrub_bytes_per_s: Option<u64>,
}

pub(crate) fn append_bench(
    grid: &AppendGrid,
    duration: Duration,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    let temp = bench::scratch_dir(dir)?;
    let runs = grid.record_bytes.len() * grid.in_flight.len() * grid.udp_payload_bytes.len();
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for &udp_payload_bytes in &grid.udp_payload_bytes {
        for &record_bytes in &grid.record_bytes {
            for &in_flight in &grid.in_flight {
                eprintln!(
                    "borealis-bench: append, {record_bytes}-byte records, {in_flight} in flight, {udp_payload_bytes}-byte datagrams"
                );
                let load = bench::append::AppendLoad {
                    record_bytes,
                    in_flight,
                    duration,
                    udp_payload_bytes,
                    rate: grid.rate,
                    scrub_bytes_per_s: grid.scrub_bytes_per_s,
                };
                let result = bench::append::run(temp.path(), load)?;
                let tag = format!("{record_bytes}B_{in_flight}_dgram{udp_payload_bytes}");
                for (name, unit, value) in result.figures() {
                    figures.push((format!("append_{tag}_{name}"), unit, value));
                }
                if let Some(svg) = &svg {
                    let title = format!(
                        "append: {record_bytes}-byte records, {in_flight} in flight, {udp_payload_bytes}-byte datagrams"
                    );
                    let s = &result.summary;
                    let picture = bench::svg::RunPicture {
                        title,
                        latency_buckets: &s.latency_buckets,
                        timeline: &s.timeline,
                    };
                    bench::svg::draw(&bench::svg::path_for(svg, &tag, runs), &picture)?;
                }
                rows.push((record_bytes, in_flight, udp_payload_bytes, result));
            }
        }
    }
    println!(
        "append: 6 local nodes (3 AZs x 2), write quorum 4 of 6, every ack flushed, AES-256-GCM at rest"
    );
    println!(
        "{:>7} {:>9} {:>6} | {:>10} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>7} | {:>9} {:>9} | {:>8}",
        "bytes",
        "in flight",
        "dgram",
        "records/s",
        "MB/s",
        "p50 ms",
        "p90",
        "p99",
        "p99.9",
        "max",
        "client s/GB",
        "nodes s/GB",
        "verified"
    );
    for (bytes, in_flight, dgram, r) in &rows {
        let s = &r.summary;
        println!(
            "{bytes:>7} {in_flight:>9} {dgram:>6} | {:>10.0} {:>8.2} | {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} | {:>11.1} {:>10.1} | {:>4}/{:<4}",
            s.records_per_s,
            s.payload_mb_per_s,
            s.commit_p50_ms,
            s.commit_p90_ms,
            s.commit_p99_ms,
            s.commit_p999_ms,
            s.commit_max_ms,
            r.cpu_s_per_gb(r.client_cpu_s),
            r.cpu_s_per_gb(r.nodes_cpu_s),
            s.verified,
            s.sampled
        );
        if s.backlog_at_end > 0 {
            println!(
                "{:>24} open loop: {} transactions were due but never appended (the in-flight limit held them); no latency counts them",
                "", s.backlog_at_end
            );
        }
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "append", "record_bytes": grid.record_bytes, "in_flight": grid.in_flight,
            "udp_payload_bytes": grid.udp_payload_bytes, "rate_per_s": grid.rate,
            "seconds": duration.as_secs(), "nodes": 6, "write_quorum": 4,
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
