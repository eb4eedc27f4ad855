//! Reads: one segment that is complete for the read (no quorum read), hedged to a second one
//! when the first is slower than recent reads, with every record's CRC verified on decode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::messages::{ReadRecords, Records};
use protocol::{Lsn, LsnRange, Message, NodeId, PageId, Record};
use tokio::sync::oneshot;

use super::error::ReadError;
use super::task::Command;
use super::Writer;

/// Record bytes asked for per read request.
const READ_BYTES_MAX: u32 = 1024 * 1024;

/// A smoothed read latency, to decide when to hedge.
#[derive(Debug, Default)]
pub struct ReadLatency {
    ewma_us: AtomicU64,
}

impl ReadLatency {
    fn hedge_after(&self, floor: Duration) -> Duration {
        Duration::from_micros(2 * self.ewma_us.load(Ordering::Relaxed)).max(floor)
    }
    fn observe(&self, took: Duration) {
        let sample = took.as_micros() as u64;
        let old = self.ewma_us.load(Ordering::Relaxed);
        self.ewma_us.store(if old == 0 { sample } else { (old * 7 + sample) / 8 }, Ordering::Relaxed);
    }
}

impl Writer {
    /// The records of `page` in `(after, through]`, oldest first. `through` must be at or below
    /// VDL.
    pub async fn read_records(
        &self,
        page: PageId,
        after: Lsn,
        through: Lsn,
    ) -> Result<Vec<Record>, ReadError> {
        let vdl = self.vdl();
        if through > vdl {
            return Err(ReadError::NotDurable { read_lsn: through, vdl });
        }
        let pg = self.geometry.pg_of(page);
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Route { pg, reply }).await.map_err(|_| ReadError::Closed)?;
        let (candidates, need, epochs) = answer.await.map_err(|_| ReadError::Closed)?;
        let mut records = Vec::new();
        let mut from = after;
        while from < through {
            let range = LsnRange::new(from, through).expect("from < through");
            let read = Message::ReadRecords(ReadRecords {
                pg: self.geometry.pg_ref(pg),
                epochs,
                range,
                bytes_max: READ_BYTES_MAX,
            });
            let got = self
                .hedged(&candidates, &read, need)
                .await
                .map_err(|detail| ReadError::Unavailable { pg, detail })?;
            let more = got.more;
            from = got.records.last().map_or(through, Record::lsn);
            records.extend(got.records.into_iter().filter(|r| r.meta().page_id == page));
            if !more {
                break;
            }
        }
        Ok(records)
    }

    /// Sends `read` to the first candidate, and to the next when the answer is late or not
    /// complete through `need`; returns the first complete answer.
    async fn hedged(&self, candidates: &[NodeId], read: &Message, need: Lsn) -> Result<Records, String> {
        let mut tries = candidates.iter().copied();
        let mut last_error = String::from("no reachable segment");
        let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
        let mut outstanding = 0;
        loop {
            if let Some(node) = tries.next() {
                outstanding += 1;
                let (connections, read, done, timeout) =
                    (self.connections.clone(), read.clone(), done.clone(), self.config.request_timeout);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let reply = super::recovery::ask(&connections, node, &read, timeout).await;
                    let _ = done.send((node, reply, started.elapsed()));
                });
            } else if outstanding == 0 {
                return Err(last_error);
            }
            let wait =
                tokio::time::timeout(self.reads.hedge_after(self.config.hedge_after_min), results.recv())
                    .await;
            let Ok(Some((node, reply, took))) = wait else { continue };
            outstanding -= 1;
            match reply {
                Some(Message::Records(records)) if records.scl >= need => {
                    self.reads.observe(took);
                    return Ok(records);
                }
                Some(Message::Records(records)) => {
                    last_error = format!("{node} is complete only through {}", records.scl)
                }
                Some(other) => last_error = format!("{node} answered {other:?}"),
                None => last_error = format!("{node} did not answer"),
            }
        }
    }
}
