//! The network ceiling: quinn's throughput on loopback between two processes, one stream, with
//! the same TLS, socket buffers and datagram size as the nodes. `borealis-bench quic-sink`
//! (hidden) is the receiving process; `throughput` starts it, sends for a while, and counts.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes per write on the sending stream.
const CHUNK_BYTES: usize = 64 * 1024;

/// Runs the sink: accepts connections on `listen` and reads every stream to its end, until
/// killed. Prints "ready" once listening.
pub async fn sink(listen: SocketAddr, pki_dir: &Path, udp_payload_bytes: u16) -> Result<(), String> {
    let pki = transport::ensure_dev_pki(pki_dir, &["sink", "client"]).map_err(|e| e.to_string())?;
    let tuning =
        transport::Tuning { max_udp_payload_bytes: udp_payload_bytes, ..transport::Tuning::default() };
    let endpoint =
        transport::server_endpoint(listen, &pki.files_for("sink"), &tuning).map_err(|e| e.to_string())?;
    println!("ready");
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else { return };
            // Bidirectional, as the nodes' streams are (the endpoints allow no unidirectional
            // ones).
            while let Ok((_send, mut recv)) = connection.accept_bi().await {
                while let Ok(Some(_)) = recv.read_chunk(usize::MAX, false).await {}
            }
        });
    }
    Ok(())
}

/// Bytes per second one stream carries from this process to a sink process on loopback.
pub fn throughput(root: &Path, udp_payload_bytes: u16, duration: Duration) -> Result<f64, String> {
    let pki_dir = root.join("quic-pki");
    let pki = transport::ensure_dev_pki(&pki_dir, &["sink", "client"]).map_err(|e| e.to_string())?;
    let port = tools::cluster::free_udp_port().map_err(|e| e.to_string())?;
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = SinkProcess(start_sink(listen, &pki_dir, udp_payload_bytes)?);
    let runtime = crate::current_thread()?;
    let result = runtime.block_on(async {
        let tuning =
            transport::Tuning { max_udp_payload_bytes: udp_payload_bytes, ..transport::Tuning::default() };
        let bind = transport::any_addr_for(listen);
        let endpoint =
            transport::client_endpoint(bind, &pki.files_for("client"), &tuning).map_err(|e| e.to_string())?;
        let connection = transport::connect(&endpoint, listen, "sink", Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, _recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let chunk = bytes::Bytes::from(vec![0x5a; CHUNK_BYTES]);
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            send.write_chunk(chunk.clone()).await.map_err(|e| e.to_string())?;
            sent += CHUNK_BYTES as u64;
        }
        send.finish().map_err(|e| e.to_string())?;
        send.stopped().await.map_err(|e| e.to_string())?;
        let rate = sent as f64 / started.elapsed().as_secs_f64();
        connection.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok::<_, String>(rate)
    });
    child.0.kill().ok();
    result
}

/// Kills the sink when dropped.
struct SinkProcess(Child);

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sink(listen: SocketAddr, pki_dir: &Path, udp_payload_bytes: u16) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["quic-sink", "--listen", &listen.to_string(), "--pki-dir"])
        .arg(pki_dir)
        .args(["--udp-payload-bytes", &udp_payload_bytes.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the QUIC sink: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .map_err(|e| e.to_string())?;
    if !line.contains("ready") {
        let _ = child.kill();
        return Err(format!("the QUIC sink did not start: {line:?}"));
    }
    Ok(child)
}
