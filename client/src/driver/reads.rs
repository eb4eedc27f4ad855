//! Reads: one segment that is complete for the read (no quorum read), hedged to a second one
//! when the first is slower than recent reads, with every record's and page's CRC verified on
//! decode.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::messages::{ErrorCode, ReadPage, ReadRecords};
use protocol::{Lsn, LsnRange, Message, NodeId, PageId, Record};
use tokio::sync::oneshot;

use super::error::ReadError;
use super::task::Command;
use super::Writer;
use crate::core::floor::ReadPointRefusal;

/// Record bytes asked for per read request.
const READ_BYTES_MAX: u32 = 1024 * 1024;
/// Times a read is routed when segments refuse its membership epoch as stale (a step the
/// writer took meanwhile).
const READ_ROUTE_ATTEMPTS: u32 = 3;

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

/// The read points of the reads in flight and of the snapshots held, shared by the writer
/// handle (which holds and releases them, synchronously and on drop, so a cancelled read
/// releases too) and its driver (which tells the core the oldest at each tick, so the floor the
/// nodes keep versions from never passes a read that is still going).
#[derive(Clone, Debug, Default)]
pub struct ReadsInUse(Arc<Mutex<BTreeMap<Lsn, usize>>>);

impl ReadsInUse {
    /// Keeps `at` readable until the hold is dropped.
    pub fn hold(&self, at: Lsn) -> ReadHold {
        *self.0.lock().expect("never poisoned").entry(at).or_default() += 1;
        ReadHold { reads: self.clone(), at }
    }

    /// The oldest read point held.
    pub fn oldest(&self) -> Option<Lsn> {
        self.0.lock().expect("never poisoned").first_key_value().map(|(lsn, _)| *lsn)
    }

    /// The read point `current` returns, held until the snapshot is dropped. Something at or
    /// below it is held from before it is read until the snapshot's own hold is in place, so
    /// no report moves the floor past it in between (the floor never goes back, so holding
    /// zero for a moment only keeps it where it is).
    pub fn snapshot(&self, current: impl FnOnce() -> Lsn) -> Snapshot {
        let bridge = self.hold(Lsn::ZERO);
        let lsn = current();
        let hold = self.hold(lsn);
        drop(bridge);
        Snapshot { lsn, _hold: hold }
    }
}

/// One read point held (see [`ReadsInUse`]).
#[derive(Debug)]
pub struct ReadHold {
    reads: ReadsInUse,
    at: Lsn,
}

impl Drop for ReadHold {
    fn drop(&mut self) {
        let mut held = self.reads.0.lock().expect("never poisoned");
        let count = held.get_mut(&self.at).expect("a hold is counted until dropped");
        *count -= 1;
        if *count == 0 {
            held.remove(&self.at);
        }
    }
}

/// VDL at one moment, kept readable while held: every [`Writer::read_page`] at
/// [`lsn`](Self::lsn) works until the snapshot is dropped, however far VDL moves meanwhile.
#[derive(Debug)]
pub struct Snapshot {
    lsn: Lsn,
    _hold: ReadHold,
}

impl Snapshot {
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }
}

/// A page as of a read point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageVersion {
    /// LSN of the newest record in this version (zero: no record, the page is zeros).
    pub lsn: Lsn,
    pub bytes: Bytes,
}

impl Writer {
    /// VDL now, held readable until the snapshot is dropped: reads of several pages at one
    /// point in time (a multi-page read, a transaction) all succeed at it.
    pub fn snapshot(&self) -> Snapshot {
        self.reads_in_use.snapshot(|| self.vdl())
    }

    /// `page` as of `at`, which must lie in [floor, VDL] (see [`Writer::pin_floor`]). One
    /// segment complete for the read answers, hedged to another when it is slow; the page's
    /// CRC32C is verified on receipt. While the read is in flight the floor stays at or below
    /// `at`, so a read at the VDL of the moment it starts always finds its versions.
    pub async fn read_page(&self, page: PageId, at: Lsn) -> Result<PageVersion, ReadError> {
        let vdl = self.vdl();
        if at > vdl {
            return Err(ReadError::NotDurable { read_lsn: at, vdl });
        }
        let _hold = self.reads_in_use.hold(at);
        let pg = self.geometry.pg_of(page);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (reply, answer) = oneshot::channel();
            self.commands.send(Command::RoutePage { pg, at, reply }).await.map_err(|_| ReadError::Closed)?;
            let (route, epochs) = answer.await.map_err(|_| ReadError::Closed)?;
            let (need, candidates) = route.map_err(|refusal| match refusal {
                ReadPointRefusal::BelowFloor { floor } => ReadError::TooOld { read_lsn: at, floor },
            })?;
            let read = Message::ReadPage(ReadPage {
                pg: self.geometry.pg_ref(pg),
                epochs,
                page_id: page,
                read_lsn: at,
                pg_newest_lsn: need,
                page_bytes: self.geometry.page_bytes,
            });
            let answer =
                self.hedged(&candidates, &read, page_answer(page, at, self.geometry.page_bytes)).await;
            match answer {
                Ok(version) => return Ok(version),
                Err(failure) if failure.stale && attempts < READ_ROUTE_ATTEMPTS => continue,
                Err(failure) => return Err(failure.unavailable(pg)),
            }
        }
    }

    /// Keeps every page version from `lsn` on readable until unpinned (`None`); by default
    /// the floor follows VDL, so only reads at the current VDL are sure to work. Refused if
    /// `lsn` is below the floor already reported to the nodes.
    pub async fn pin_floor(&self, lsn: Option<Lsn>) -> Result<(), ReadError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::PinFloor { lsn, reply }).await.map_err(|_| ReadError::Closed)?;
        answer.await.map_err(|_| ReadError::Closed)?.map_err(|refusal| match refusal {
            ReadPointRefusal::BelowFloor { floor } => {
                ReadError::TooOld { read_lsn: lsn.unwrap_or(Lsn::ZERO), floor }
            }
        })
    }

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
        let mut records = Vec::new();
        let mut from = after;
        let mut stale_refusals = 0;
        while from < through {
            // Routed for every request: a membership step taken meanwhile is carried along.
            let (reply, answer) = oneshot::channel();
            self.commands.send(Command::Route { pg, reply }).await.map_err(|_| ReadError::Closed)?;
            let (candidates, need, epochs) = answer.await.map_err(|_| ReadError::Closed)?;
            let range = LsnRange::new(from, through).expect("from < through");
            let read = Message::ReadRecords(ReadRecords {
                pg: self.geometry.pg_ref(pg),
                epochs,
                range,
                bytes_max: READ_BYTES_MAX,
            });
            let got = self
                .hedged(&candidates, &read, |node, reply| match reply {
                    Message::Records(records) if records.scl >= need => Ok(records),
                    Message::Records(records) => {
                        Err(format!("{node} is complete only through {}", records.scl))
                    }
                    other => Err(format!("{node} answered {other:?}")),
                })
                .await;
            let got = match got {
                Ok(got) => got,
                Err(failure) if failure.stale && stale_refusals + 1 < READ_ROUTE_ATTEMPTS => {
                    stale_refusals += 1;
                    continue;
                }
                Err(failure) => return Err(failure.unavailable(pg)),
            };
            let more = got.more;
            from = got.records.last().map_or(through, Record::lsn);
            records.extend(got.records.into_iter().filter(|r| r.meta().page_id == page));
            if !more {
                break;
            }
        }
        Ok(records)
    }

    async fn hedged<T>(
        &self,
        candidates: &[NodeId],
        read: &Message,
        accept: impl Fn(NodeId, Message) -> Result<T, String>,
    ) -> Result<T, HedgeFailure> {
        let ask = Asking { connections: &self.connections, latency: &self.reads, config: &self.config };
        ask.hedged(candidates, read, accept).await
    }
}

/// Accepts a reply that is `page` as of `at`, `page_bytes` long (its CRC32C was checked on
/// decode).
pub(super) fn page_answer(
    page: PageId,
    at: Lsn,
    page_bytes: u32,
) -> impl Fn(NodeId, Message) -> Result<PageVersion, String> {
    move |node, reply| match reply {
        Message::Page(p) if p.page_id == page && p.read_lsn == at && p.bytes.len() == page_bytes as usize => {
            Ok(PageVersion { lsn: p.version_lsn, bytes: p.bytes })
        }
        other => Err(format!("{node} answered {other:?}")),
    }
}

/// What a hedged read needs: where the connections are, how fast reads have been, and the
/// timeouts.
pub(super) struct Asking<'a> {
    pub connections: &'a super::links::Connections,
    pub latency: &'a ReadLatency,
    pub config: &'a super::ClientConfig,
}

impl Asking<'_> {
    /// Sends `read` to the first candidate, and to the next when the answer is late, an error,
    /// or one `accept` refuses; returns the first accepted answer.
    pub async fn hedged<T>(
        &self,
        candidates: &[NodeId],
        read: &Message,
        accept: impl Fn(NodeId, Message) -> Result<T, String>,
    ) -> Result<T, HedgeFailure> {
        let mut tries = candidates.iter().copied();
        let mut last_error = String::from("no reachable segment");
        let mut last_code = None;
        // A membership step the writer took after routing the read may reach a segment first:
        // it then refuses the read's older membership epoch, and the read routed again succeeds.
        let mut stale = false;
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
                return Err(HedgeFailure { detail: last_error, code: last_code, stale });
            }
            let wait =
                tokio::time::timeout(self.latency.hedge_after(self.config.hedge_after_min), results.recv())
                    .await;
            let Ok(Some((node, reply, took))) = wait else { continue };
            outstanding -= 1;
            match reply {
                Some(Message::Error(e)) => {
                    stale |= e.code == ErrorCode::StaleEpoch;
                    last_error = format!("{node}: {:?}: {}", e.code, e.message);
                    last_code = Some(e.code);
                }
                Some(reply) => match accept(node, reply) {
                    Ok(answer) => {
                        self.latency.observe(took);
                        return Ok(answer);
                    }
                    Err(error) => (last_error, last_code) = (error, None),
                },
                None => (last_error, last_code) = (format!("{node} did not answer"), None),
            }
        }
    }
}

/// Why no candidate gave an accepted answer: the last reason, and whether some segment refused
/// the read's membership epoch as stale (routing it again may then succeed).
#[derive(Debug)]
pub(super) struct HedgeFailure {
    /// The last refusal's code, if the last reason was a refusal.
    pub code: Option<ErrorCode>,
    pub detail: String,
    pub stale: bool,
}

impl HedgeFailure {
    pub fn unavailable(self, pg: protocol::PgId) -> ReadError {
        ReadError::Unavailable { pg, code: self.code, detail: self.detail }
    }
}
