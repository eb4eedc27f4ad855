//! Borealis benchmarks: load generators and the machine's ceilings, reported side by side.
//! `node_ingest` measures one storage node's durable ingest; `fio` measures the disk's flushed
//! sequential writes on the same directory for comparison.

pub mod fio;
pub mod node_ingest;
pub mod page_reads;
pub mod rows;

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
