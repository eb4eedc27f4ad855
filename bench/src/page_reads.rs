//! `read_page` on one storage node, hot (the node's page cache holds the version) and cold
//! (neither the node's cache nor the kernel's page cache holds it), next to a plain `pread` of
//! the same size on the same disk, hot and cold, measured in the same run.
//!
//! Setup: `pages` pages of `page_bytes` are written as images, then `patches` patch records per
//! page, then a journal file's worth of commit markers (only records in journal files older
//! than the one being written are folded); a floor report at the newest LSN lets the
//! coalescer fold every page into the page store, and the bench waits until the node's journal
//! is recycled down to the file being written. A read then takes the newest image of its page
//! from the page store (or the node's cache), applying no record.
//! Reads are one at a time (QD1) on one stream: latency, not queue depth, is measured.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use protocol::messages::{AppendBatch, FloorReport, ReadPage};
use protocol::patch::{encode as encode_patch, PatchEdit};
use protocol::{Epochs, Lsn, Message, PageId, PgId, PgRef, Record, RecordKind, RecordMeta, VolumeId};
use transport::TlsFiles;

use crate::node_ingest::LATENCY_US_MAX;

const PG: PgRef = PgRef { volume_id: VolumeId(0x9EAD), pg_id: PgId(0) };
/// Records per append batch while loading.
const LOAD_BATCH: u64 = 64;
/// Journal file size the bench's node uses (the smallest allowed).
pub const JOURNAL_FILE_BYTES: u64 = 16 << 20;
const FILLER_RECORD_BYTES: usize = 16 << 10;

/// What to load and read.
#[derive(Clone, Copy, Debug)]
pub struct ReadLoad {
    pub pages: u64,
    pub page_bytes: u32,
    pub patches: u64,
    /// Pages read over and over in the hot run.
    pub hot_pages: u64,
    pub duration: Duration,
}

/// One measured run.
#[derive(Debug)]
pub struct Measured {
    pub reads: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl Measured {
    pub fn per_s(&self) -> f64 {
        self.reads as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p(&self, quantile: f64) -> u64 {
        self.latency_us.value_at_quantile(quantile)
    }
}

/// A connection to the node and the newest LSN written.
#[derive(Debug)]
pub struct Reader {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    newest: Lsn,
    load: ReadLoad,
}

impl Reader {
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: &TlsFiles,
        load: ReadLoad,
    ) -> Result<Reader, String> {
        let (endpoint, connection) = crate::connect(addr, server_name, tls).await?;
        Ok(Reader { connection, _endpoint: endpoint, newest: Lsn::ZERO, load })
    }

    async fn call(&self, message: &Message) -> Result<Message, String> {
        transport::request(&self.connection, message).await.map_err(|e| e.to_string())
    }

    /// Writes every page's image and patches, then a journal file of markers, and reports the
    /// floor at the newest LSN.
    pub async fn load(&mut self) -> Result<(), String> {
        let mut records = Vec::new();
        for page in 0..self.load.pages {
            records.push((page, None));
        }
        for round in 0..self.load.patches {
            for page in 0..self.load.pages {
                records.push((page, Some(round)));
            }
        }
        let filler = (JOURNAL_FILE_BYTES as usize).div_ceil(FILLER_RECORD_BYTES) + 1;
        records.extend((0..filler).map(|_| (0, Some(u64::MAX))));
        for chunk in records.chunks(LOAD_BATCH as usize) {
            let batch = self.batch(chunk);
            match self.call(&batch).await? {
                Message::AppendAck(_) => {}
                other => return Err(format!("load refused: {other:?}")),
            }
        }
        let report =
            Message::FloorReport(FloorReport { pg: PG, client: 1, floor: self.newest, lease_ms: 600_000 });
        self.call(&report).await?;
        // A heartbeat tells the node VDL (everything is durable), which bounds folding.
        let heartbeat = self.batch(&[]);
        self.call(&heartbeat).await?;
        Ok(())
    }

    /// A batch of `(page, None)` images, `(page, Some(round))` patches and `(_, Some(MAX))`
    /// commit markers.
    fn batch(&mut self, chunk: &[(u64, Option<u64>)]) -> Message {
        let vdl = self.newest;
        let mut out = Vec::with_capacity(chunk.len());
        for (page, patch) in chunk {
            let lsn = Lsn(self.newest.0 + 1);
            let (kind, payload) = match patch {
                Some(u64::MAX) => {
                    (RecordKind::Marker, Bytes::from(crate::rows::row_payload(lsn.0, FILLER_RECORD_BYTES)))
                }
                None => (
                    RecordKind::PageImage,
                    Bytes::from(crate::rows::row_payload(*page, self.load.page_bytes as usize)),
                ),
                Some(round) => {
                    let text = format!("patch {round} of page {page};");
                    let offset = ((round * 509) % u64::from(self.load.page_bytes - 64)) as u32;
                    (
                        RecordKind::PagePatch,
                        encode_patch(&[PatchEdit { offset, data: text.as_bytes() }]).expect("patch"),
                    )
                }
            };
            let meta = RecordMeta::after(
                self.newest,
                lsn,
                kind,
                PageId(if kind == RecordKind::Marker { 0 } else { *page }),
            );
            out.push(Record::new(meta, payload).expect("valid record"));
            self.newest = lsn;
        }
        Message::AppendBatch(AppendBatch {
            pg: PG,
            epochs: Epochs::INITIAL,
            vdl,
            pg_vdl_lsn: vdl,
            page_bytes: self.load.page_bytes,
            records: out,
        })
    }

    /// Status requests, one at a time, for the duration: the round trip every read pays.
    pub async fn run_round_trips(&self) -> Result<Measured, String> {
        self.timed(u64::MAX, |_| Message::StatusRequest, |reply| matches!(reply, Message::Status(_))).await
    }

    /// Reads pages chosen by `pick(i)` at the newest LSN, one at a time, for the duration (or
    /// `limit` reads).
    pub async fn run(&self, limit: u64, pick: impl Fn(u64) -> u64) -> Result<Measured, String> {
        let read = |i| {
            Message::ReadPage(ReadPage {
                pg: PG,
                epochs: Epochs::INITIAL,
                page_id: PageId(pick(i)),
                read_lsn: self.newest,
                pg_newest_lsn: self.newest,
                page_bytes: self.load.page_bytes,
            })
        };
        let page_bytes = self.load.page_bytes as usize;
        self.timed(limit, read, |reply| matches!(reply, Message::Page(p) if p.bytes.len() == page_bytes))
            .await
    }

    /// Sends `request(i)` and waits for its answer, one at a time, for the duration (or `limit`
    /// requests); every answer must satisfy `good`.
    async fn timed(
        &self,
        limit: u64,
        request: impl Fn(u64) -> Message,
        good: impl Fn(&Message) -> bool,
    ) -> Result<Measured, String> {
        let mut latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut reads = 0;
        while started.elapsed() < self.load.duration && reads < limit {
            let message = request(reads);
            let sent = Instant::now();
            let reply = self.call(&message).await?;
            if !good(&reply) {
                return Err(format!("refused: {reply:?}"));
            }
            latency_us.saturating_record(sent.elapsed().as_micros() as u64);
            reads += 1;
        }
        Ok(Measured { reads, elapsed: started.elapsed(), latency_us })
    }
}

/// `len`-byte `pread`s of `file` at `len`-aligned offsets (QD1) for `duration`: the same few
/// slots again and again (`hot` of them), or, with `hot` zero, each slot at most once in a
/// scattered order.
pub fn pread_run(file: &Path, len: usize, duration: Duration, hot: u64) -> Result<Measured, String> {
    let handle = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let slots = handle.metadata().map_err(|e| e.to_string())?.len() / len as u64;
    let mut buf = vec![0u8; len];
    let mut latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut reads = 0;
    while started.elapsed() < duration && (hot > 0 || reads < slots) {
        let slot = if hot > 0 { reads % hot } else { scatter(reads, slots) };
        let sent = Instant::now();
        handle.read_exact_at(&mut buf, slot * len as u64).map_err(|e| e.to_string())?;
        latency_us.saturating_record(sent.elapsed().as_micros() as u64);
        reads += 1;
    }
    Ok(Measured { reads, elapsed: started.elapsed(), latency_us })
}

/// Writes a file of `bytes` for the `pread` baseline, flushed.
pub fn make_pread_file(path: &Path, bytes: u64) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        file.write_all_at(&chunk, written).map_err(|e| e.to_string())?;
        written += chunk.len() as u64;
    }
    file.sync_all().map_err(|e| e.to_string())
}

/// Asks the kernel to drop clean cached pages (needs root); says whether it could.
pub fn drop_kernel_caches() -> bool {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// The `i`-th of `0..n` in a scattered order that visits each exactly once per `n` steps: a
/// stride coprime with `n` and far from small numbers, so neighbours are never read in turn.
pub fn scatter(i: u64, n: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut stride = (n / 2 + 7919) | 1;
    while gcd(stride, n) != 1 {
        stride += 2;
    }
    (i % n) * stride % n
}

#[cfg(test)]
mod tests {
    #[test]
    fn scatter_visits_every_slot_once() {
        for n in [1u64, 2, 10, 4096, 32_768, 1000] {
            let mut seen: Vec<u64> = (0..n).map(|i| super::scatter(i, n)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }
}
