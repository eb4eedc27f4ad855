//! `borealis-bench limits`: the machine's ceilings (fio flushed writes, AES-256-GCM, CRC32C and
//! QUIC on loopback), printed as tables.

use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn limits_bench(
    block_bytes: &[usize],
    udp_payload_bytes: &[u16],
    duration: Duration,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    let temp = bench::scratch_dir(dir)?;
    println!("limits on {}: one core for AES-256-GCM and CRC32C", temp.path().display());
    println!(
        "{:>10} | {:>14} {:>12} | {:>14} | {:>14}",
        "block", "fio writes/s", "fio MB/s", "AES-GCM MB/s", "CRC32C MB/s"
    );
    let mut figures = Vec::new();
    for &block in block_bytes {
        let fio = bench::fio::flushed_sequential_write(temp.path(), block, block % 4096 == 0, duration)?;
        let aes = bench::limits::aes_gcm_bytes_per_s(block, duration);
        let crc = bench::limits::crc32c_bytes_per_s(block, duration);
        println!(
            "{block:>10} | {:>14.0} {:>12.1} | {:>14.0} | {:>14.0}",
            fio.writes_per_s,
            fio.bytes_per_s / 1e6,
            aes / 1e6,
            crc / 1e6
        );
        figures.push((format!("fio_{block}B_writes_per_s"), "writes/s", fio.writes_per_s));
        figures.push((format!("fio_{block}B_mb_per_s"), "MB/s", fio.bytes_per_s / 1e6));
        figures.push((format!("aes_gcm_{block}B_mb_per_s"), "MB/s", aes / 1e6));
        figures.push((format!("crc32c_{block}B_mb_per_s"), "MB/s", crc / 1e6));
    }
    println!("{:>10} | {:>14}", "datagram", "QUIC MB/s");
    for &dgram in udp_payload_bytes {
        let rate = bench::quic_ceiling::throughput(temp.path(), dgram, duration)?;
        println!("{dgram:>10} | {:>14.0}", rate / 1e6);
        figures.push((format!("quic_loopback_dgram{dgram}_mb_per_s"), "MB/s", rate / 1e6));
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "limits", "block_bytes": block_bytes, "udp_payload_bytes": udp_payload_bytes,
            "seconds": duration.as_secs(),
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
