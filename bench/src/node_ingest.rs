//! One storage node's durable ingest: a client keeps `in_flight` records outstanding on one
//! PG stream (batches of up to `batch_records`), and every ack means "flushed".

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use protocol::messages::AppendBatch;
use protocol::{Epochs, Lsn, Message, PageId, PgId, PgRef, Record, RecordKind, RecordMeta, VolumeId};
use transport::framed::{read_frame, write_frame};
use transport::TlsFiles;

use crate::rows::row_payload;

/// The load to offer.
#[derive(Clone, Copy, Debug)]
pub struct IngestLoad {
    pub record_bytes: usize,
    pub in_flight: usize,
    pub batch_records_max: usize,
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug)]
pub struct IngestResult {
    pub records: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// Per-batch send-to-ack latency, microseconds.
    pub latency_us: Histogram<u64>,
}

impl IngestResult {
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    pub fn payload_bytes_per_s(&self) -> f64 {
        self.payload_bytes as f64 / self.elapsed.as_secs_f64()
    }
}

/// Latencies above this (one minute) are recorded as this.
pub const LATENCY_US_MAX: u64 = 60_000_000;

const PG: PgRef = PgRef { volume_id: VolumeId(0xBE7C), pg_id: PgId(0) };

/// Runs the load against the node at `addr` (server name `server_name`).
pub async fn run(
    addr: SocketAddr,
    server_name: &str,
    tls: &TlsFiles,
    load: IngestLoad,
) -> Result<IngestResult, String> {
    let (_endpoint, connection) = crate::connect(addr, server_name, tls).await?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let batch_records = load.batch_records_max.min(load.in_flight).max(1);
    let mut outstanding: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut outstanding_records = 0;
    let mut next_lsn = 1u64;
    let mut latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())?;
    let (mut records, mut payload_bytes) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < load.duration || !outstanding.is_empty() {
        while started.elapsed() < load.duration && outstanding_records + batch_records <= load.in_flight {
            let batch = make_batch(next_lsn, batch_records, load.record_bytes);
            next_lsn += batch_records as u64;
            write_frame(&mut send, &batch).await.map_err(|e| e.to_string())?;
            outstanding.push_back((Instant::now(), batch_records));
            outstanding_records += batch_records;
        }
        match read_frame(&mut recv).await.map_err(|e| e.to_string())? {
            Some(Message::AppendAck(_)) => {
                let (sent, count) = outstanding.pop_front().ok_or("an ack for nothing sent")?;
                latency_us.saturating_record(sent.elapsed().as_micros() as u64);
                outstanding_records -= count;
                records += count as u64;
                payload_bytes += (count * load.record_bytes) as u64;
            }
            other => return Err(format!("node refused: {other:?}")),
        }
    }
    let elapsed = started.elapsed();
    connection.close(0u32.into(), b"done");
    Ok(IngestResult { records, payload_bytes, elapsed, latency_us })
}

/// `count` records from LSN `first` on one PG, each `record_bytes` of row payload, as one batch.
pub fn make_batch(first: u64, count: usize, record_bytes: usize) -> Message {
    let records = (first..first + count as u64)
        .map(|lsn| {
            let meta = RecordMeta::after(Lsn(lsn - 1), Lsn(lsn), RecordKind::Marker, PageId(lsn % 1024));
            Record::new(meta, Bytes::from(row_payload(lsn, record_bytes))).expect("valid record")
        })
        .collect();
    Message::AppendBatch(AppendBatch {
        pg: PG,
        epochs: Epochs::INITIAL,
        vdl: Lsn(0),
        pg_vdl_lsn: Lsn(0),
        page_bytes: 4096,
        records,
    })
}
