//! Borealis benchmarks: load generators and the machine's ceilings, reported side by side.
//! `append` drives the whole write path on a local six-node cluster; `node_ingest` measures one
//! storage node's durable ingest; `page_reads` measures `read_page`; `fio` and `limits` measure
//! the disk's flushed sequential writes and the CPU's sealing and checksum rates.

/// A scratch directory under `dir` (the system's temporary directory by default), removed
/// when dropped.
pub fn scratch_dir(dir: Option<std::path::PathBuf>) -> Result<tempfile::TempDir, String> {
    tempfile::tempdir_in(dir.unwrap_or_else(std::env::temp_dir)).map_err(|e| e.to_string())
}

/// A current-thread tokio runtime, as every benchmark's client uses.
pub fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
}

/// Writes `--json` output: the parameters and a flat list of `{"name", "unit", "value"}`.
pub fn write_json(
    path: &std::path::Path,
    parameters: serde_json::Value,
    figures: &[(String, &str, f64)],
) -> Result<(), String> {
    let results: Vec<serde_json::Value> = figures
        .iter()
        .map(|(name, unit, value)| serde_json::json!({ "name": name, "unit": unit, "value": value }))
        .collect();
    let json = serde_json::json!({ "parameters": parameters, "results": results });
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}

/// One metric's value from a node's admin port (`None` if it does not answer or lacks it).
pub fn metric(admin: std::net::SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&admin, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let prefix = format!("{name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

pub mod append;
pub mod budget;
pub mod cpu;
pub mod debian;
pub mod etcd;
pub mod fio;
pub mod limits;
pub mod nbd;
pub mod node_ingest;
pub mod page_reads;
pub mod quic_ceiling;
pub mod recovery;
pub mod repair;
pub mod rows;
pub mod sqlite;
pub mod svg;

use std::net::SocketAddr;
use std::time::Duration;

/// A QUIC connection to the node at `addr` (server name `server_name`), and the endpoint that
/// must outlive it.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    tls: &transport::TlsFiles,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let tuning = transport::Tuning::default();
    let endpoint =
        transport::client_endpoint(transport::any_addr_for(addr), tls, &tuning).map_err(|e| e.to_string())?;
    let connection = transport::connect(&endpoint, addr, server_name, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    Ok((endpoint, connection))
}
