//! Streaming the [`Orders`] workload through a [`Writer`] for a bounded time, and measuring it:
//! records and payload bytes made durable, commit latency (append to durable, per transaction),
//! the final VDL, and a sample of durable records to read back.
//!
//! How: one task appends transactions while fewer than `in_flight` are outstanding, then waits
//! (at most one [`TICK`]) for VDL to move. Transactions are appended one after another by this
//! one task, so their LSNs increase in queue order; VDL only grows; hence the durable ones are
//! always a prefix of the queue, and settling them is popping that prefix. When the time is up
//! no more are appended and the outstanding ones are waited for (the drain), so every
//! transaction counted was reported durable.
//!
//! Invariants: the interrupt flag is polled at least every [`TICK`]; a transaction not durable
//! within the writer's append timeout ends the run with [`DevError::NotDurable`] (the cluster is
//! not keeping up or has lost its quorum) rather than waiting forever; latency is recorded in
//! microseconds in a histogram bounded by [`LATENCY_US_MAX`], so slow outliers saturate at that
//! bound instead of being lost.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use client::{NewRecord, Writer};
use hdrhistogram::Histogram;
use protocol::Lsn;

use super::live::{LiveLine, Snapshot};
use super::orders::Orders;
use super::sample::{Reservoir, Sampled, SAMPLE_SIZE};
use super::DevError;
use crate::interrupt;

/// Longest wait for VDL to move before the loop checks the clock, the interrupt flag and
/// progress again.
pub const TICK: Duration = Duration::from_millis(50);
/// Upper bound of the latency histogram, in microseconds (one minute).
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits the latency histogram keeps.
const LATENCY_DIGITS: u8 = 3;

/// How to run the workload.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// How long to keep appending (the drain comes after).
    pub duration: Duration,
    /// Transactions appended and not yet durable, at most.
    pub in_flight: usize,
    /// How long one transaction may take to become durable before the run fails.
    pub patience: Duration,
    /// Open loop: transactions are due at this steady rate (per second), and each one's
    /// latency counts from when it was due, not from when the generator got round to it. A
    /// stall then shows in the latency of everything that queued behind it (no coordinated
    /// omission). `None`: closed loop, as fast as `in_flight` allows.
    pub rate: Option<f64>,
}

/// What a run made durable, and how fast.
#[derive(Debug)]
pub struct Measured {
    pub transactions: u64,
    pub records: u64,
    pub payload_bytes: u64,
    /// From the first append to the last transaction reported durable.
    pub elapsed: Duration,
    /// Commit latency per transaction, microseconds.
    pub latency_us: Histogram<u64>,
    pub vdl: Lsn,
    /// Durable records to read back, in LSN order.
    pub sample: Vec<Sampled>,
    /// (seconds since the start, records durable by then), about every [`TIMELINE_EVERY`].
    pub timeline: Vec<(f64, u64)>,
    /// Open loop: transactions that were due before the time was up but never appended
    /// (the in-flight limit held them back). They are in no latency figure; zero if closed.
    pub backlog_at_end: u64,
}

/// Spacing of the points of `Measured::timeline`.
pub const TIMELINE_EVERY: Duration = Duration::from_millis(250);
/// Most points a timeline keeps (an hour at [`TIMELINE_EVERY`]); later points are not kept.
pub const TIMELINE_POINTS_MAX: usize = 14_400;

/// A transaction appended and not yet reported durable.
#[derive(Debug)]
struct Outstanding {
    first: Lsn,
    last: Lsn,
    appended_at: Instant,
    records: Vec<NewRecord>,
    payload_bytes: u64,
}

/// Running totals.
#[derive(Debug)]
struct Tally {
    transactions: u64,
    records: u64,
    payload_bytes: u64,
    latency_us: Histogram<u64>,
    sample: Reservoir,
}

impl Tally {
    fn new() -> Tally {
        let latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_DIGITS)
            .expect("constant histogram bounds are valid");
        Tally {
            transactions: 0,
            records: 0,
            payload_bytes: 0,
            latency_us,
            sample: Reservoir::new(SAMPLE_SIZE),
        }
    }

    /// Counts every queued transaction that `vdl` covers, as durable at `now`.
    fn settle(&mut self, queue: &mut VecDeque<Outstanding>, vdl: Lsn, now: Instant) {
        while queue.front().is_some_and(|t| t.last <= vdl) {
            let txn = queue.pop_front().expect("front exists");
            let latency = now.duration_since(txn.appended_at);
            self.latency_us.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
            self.transactions += 1;
            self.records += txn.records.len() as u64;
            self.payload_bytes += txn.payload_bytes;
            for (lsn, record) in (txn.first.get()..).zip(txn.records) {
                self.sample.offer(Sampled {
                    lsn: Lsn(lsn),
                    page: record.page,
                    kind: record.kind,
                    payload: record.payload,
                });
            }
        }
    }

    fn snapshot(&self, vdl: Lsn) -> Snapshot {
        Snapshot { records: self.records, payload_bytes: self.payload_bytes, vdl }
    }
}

/// Runs `orders` through `writer` as `plan` says, showing progress on `live`.
pub async fn drive(
    writer: &Writer,
    orders: &mut Orders,
    plan: &Plan,
    live: &mut LiveLine,
) -> Result<Measured, DevError> {
    let mut progress = writer.watch_vdl();
    let started = Instant::now();
    let stop_appending = started + plan.duration;
    let mut queue = VecDeque::with_capacity(plan.in_flight);
    let mut tally = Tally::new();
    let mut pace = plan.rate.map(|rate| Pace::new(started, rate));
    let mut timeline = vec![(0.0, 0)];
    let mut backlog_at_end = None;
    loop {
        interrupt::check()?;
        let appending = Instant::now() < stop_appending;
        if !appending && backlog_at_end.is_none() {
            backlog_at_end = Some(pace.as_ref().map_or(0, |p| p.backlog(stop_appending)));
        }
        if !appending && queue.is_empty() {
            break;
        }
        if appending {
            fill(writer, orders, plan.in_flight, &mut queue, pace.as_mut()).await?;
        }
        let wait = pace.as_ref().map_or(TICK, |p| p.until_next().min(TICK));
        if let Ok(Err(_)) = tokio::time::timeout(wait, progress.changed()).await {
            return Err(client::AppendError::Closed.into());
        }
        let now = *progress.borrow_and_update();
        if now.fenced {
            return Err(client::AppendError::Fenced.into());
        }
        tally.settle(&mut queue, now.vdl, Instant::now());
        let since = started.elapsed();
        let due =
            timeline.last().is_none_or(|(at, _)| since.as_secs_f64() - at >= TIMELINE_EVERY.as_secs_f64());
        if due && timeline.len() < TIMELINE_POINTS_MAX {
            timeline.push((since.as_secs_f64(), tally.records));
        }
        check_patience(&queue, plan.patience, now.vdl)?;
        live.tick(tally.snapshot(now.vdl));
    }
    live.finish();
    Ok(Measured {
        transactions: tally.transactions,
        records: tally.records,
        payload_bytes: tally.payload_bytes,
        elapsed: started.elapsed(),
        latency_us: tally.latency_us,
        vdl: writer.vdl(),
        sample: tally.sample.into_sorted(),
        timeline,
        backlog_at_end: backlog_at_end.unwrap_or(0),
    })
}

/// The schedule of an open-loop run: transaction `n` is due at `start + n / rate`.
#[derive(Debug)]
struct Pace {
    start: Instant,
    rate: f64,
    next: u64,
}

impl Pace {
    fn new(start: Instant, rate: f64) -> Pace {
        Pace { start, rate: rate.max(f64::MIN_POSITIVE), next: 0 }
    }

    fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_secs_f64(n as f64 / self.rate)
    }

    /// The next transaction's due time if it is due now (and moves on), else `None`.
    fn take_due(&mut self, now: Instant) -> Option<Instant> {
        let due = self.due(self.next);
        (due <= now).then(|| {
            self.next += 1;
            due
        })
    }

    /// Transactions due by `at` and not yet taken.
    fn backlog(&self, at: Instant) -> u64 {
        let due = (at.saturating_duration_since(self.start).as_secs_f64() * self.rate).ceil() as u64;
        due.saturating_sub(self.next)
    }

    fn until_next(&self) -> Duration {
        self.due(self.next).saturating_duration_since(Instant::now())
    }
}

/// Appends transactions until `in_flight` are outstanding (or, paced, until none is due).
async fn fill(
    writer: &Writer,
    orders: &mut Orders,
    in_flight: usize,
    queue: &mut VecDeque<Outstanding>,
    mut pace: Option<&mut Pace>,
) -> Result<(), DevError> {
    while queue.len() < in_flight {
        let appended_at = match pace.as_deref_mut() {
            None => Instant::now(),
            Some(pace) => match pace.take_due(Instant::now()) {
                Some(due) => due,
                None => break,
            },
        };
        let txn = orders.next_transaction();
        // Dropping an `append` half-way may ship records whose LSNs are never learned: only an
        // interrupt does so, and an interrupted run counts nothing more.
        let appended = super::interruptible(writer.append(txn.records.clone())).await??;
        debug_assert_eq!(appended.last.get() - appended.first.get() + 1, txn.records.len() as u64);
        queue.push_back(Outstanding {
            first: appended.first,
            last: appended.last,
            appended_at,
            records: txn.records,
            payload_bytes: txn.payload_bytes,
        });
    }
    Ok(())
}

/// Fails if the oldest outstanding transaction has waited longer than `patience`.
fn check_patience(queue: &VecDeque<Outstanding>, patience: Duration, vdl: Lsn) -> Result<(), DevError> {
    match queue.front() {
        Some(oldest) if oldest.appended_at.elapsed() > patience => {
            Err(DevError::NotDurable { lsn: oldest.last, vdl, waited: patience })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outstanding(first: u64, records: usize, appended_at: Instant) -> Outstanding {
        let mut orders = Orders::new(128).unwrap();
        let txn = orders.next_transaction();
        assert_eq!(txn.records.len(), records);
        Outstanding {
            first: Lsn(first),
            last: Lsn(first + records as u64 - 1),
            appended_at,
            records: txn.records,
            payload_bytes: txn.payload_bytes,
        }
    }

    #[test]
    fn settling_pops_exactly_the_covered_prefix_and_samples_its_records() {
        let t0 = Instant::now();
        let mut queue: VecDeque<Outstanding> = (0..4).map(|i| outstanding(1 + 3 * i, 3, t0)).collect();
        let mut tally = Tally::new();
        tally.settle(&mut queue, Lsn(7), t0 + Duration::from_millis(4));
        assert_eq!((tally.transactions, tally.records, queue.len()), (2, 6, 2));
        assert_eq!(queue.front().unwrap().first, Lsn(7));
        assert_eq!(tally.latency_us.len(), 2);
        assert!((3_990..=4_010).contains(&tally.latency_us.value_at_quantile(0.5)));
        let lsns: Vec<u64> = tally.sample.into_sorted().iter().map(|s| s.lsn.get()).collect();
        assert_eq!(lsns, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn latencies_beyond_the_histogram_saturate_instead_of_vanishing() {
        let mut tally = Tally::new();
        let t0 = Instant::now();
        let mut queue: VecDeque<Outstanding> = [outstanding(1, 3, t0)].into();
        tally.settle(&mut queue, Lsn(3), t0 + Duration::from_secs(3600));
        assert_eq!(tally.latency_us.len(), 1);
        assert!(tally.latency_us.max() >= LATENCY_US_MAX * 99 / 100);
    }

    #[test]
    fn a_paced_run_counts_latency_from_when_each_transaction_was_due() {
        let t0 = Instant::now() - Duration::from_millis(100);
        let mut pace = Pace::new(t0, 100.0);
        let now = Instant::now();
        let due: Vec<Instant> = std::iter::from_fn(|| pace.take_due(now)).collect();
        assert!((10..=11).contains(&due.len()), "100/s for 100 ms: {} due", due.len());
        let off = due[3].duration_since(t0).abs_diff(Duration::from_millis(30));
        assert!(off < Duration::from_micros(1), "a late generator keeps the schedule");
        assert!(pace.take_due(now).is_none());
        assert_eq!(pace.backlog(now), 0, "all due were taken");
        assert!(pace.backlog(t0 + Duration::from_millis(200)) >= 9, "100 ms more at 100/s");
        assert!(pace.until_next() <= Duration::from_millis(10));
    }

    #[test]
    fn a_transaction_waiting_too_long_fails_the_run() {
        let old = Instant::now() - Duration::from_secs(5);
        let queue: VecDeque<Outstanding> = [outstanding(10, 3, old)].into();
        let error = check_patience(&queue, Duration::from_secs(1), Lsn(9)).unwrap_err();
        assert!(matches!(error, DevError::NotDurable { lsn: Lsn(12), vdl: Lsn(9), .. }), "{error}");
        assert!(check_patience(&queue, Duration::from_secs(60), Lsn(9)).is_ok());
    }
}
