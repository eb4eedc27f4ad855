//! `borealis-bench budget`: where the time of one commit goes at 1 in flight. Each step is
//! measured on its own, in the same run and on the same disk, and the table subtracts them:
//!
//! | step | measured by |
//! |---|---|
//! | client encodes one batch frame (header, records, CRC) | `encode_frame` in a loop, in process |
//! | QUIC round trip to a node (no disk) | status requests on one stream, one at a time |
//! | one node takes a batch and acks it once flushed | `node_ingest` at 1 in flight |
//! | the journal's write + flush | the node's own metric, summed over its group commits (mean) |
//! | whole commit, 6 nodes, 4 of 6 acks | the `append` workload at 1 in flight |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use protocol::Message;
use transport::framed::{read_frame, write_frame};
use transport::TlsFiles;

use crate::node_ingest::LATENCY_US_MAX;

/// Status requests on one stream, one at a time, for `duration`: the round-trip latencies.
pub async fn status_round_trips(
    addr: SocketAddr,
    server_name: &str,
    tls: &TlsFiles,
    duration: Duration,
) -> Result<Histogram<u64>, String> {
    let (_endpoint, connection) = crate::connect(addr, server_name, tls).await?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let mut latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())?;
    let started = Instant::now();
    while started.elapsed() < duration {
        let sent = Instant::now();
        write_frame(&mut send, &Message::StatusRequest).await.map_err(|e| e.to_string())?;
        match read_frame(&mut recv).await.map_err(|e| e.to_string())? {
            Some(Message::Status(_)) => latency_us.saturating_record(sent.elapsed().as_micros() as u64),
            other => return Err(format!("status request answered with {other:?}")),
        }
    }
    connection.close(0u32.into(), b"done");
    Ok(latency_us)
}

/// Microseconds of CPU to encode `batch` as a frame (mean over `duration` of repeats).
pub fn encode_us(batch: &Message, duration: Duration) -> Result<f64, String> {
    let mut buf = BytesMut::new();
    let (started, mut count) = (Instant::now(), 0u64);
    while started.elapsed() < duration {
        for _ in 0..100 {
            buf.clear();
            protocol::frame::encode_frame(std::hint::black_box(batch), &mut buf)
                .map_err(|e| e.to_string())?;
            std::hint::black_box(&buf);
        }
        count += 100;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / count as f64)
}
