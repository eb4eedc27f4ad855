//! Which durable records `borealis dev` reads back, and reading them back.
//!
//! Why a sample: reading every record would double the run; a uniform sample over the whole run
//! (reservoir sampling, Algorithm R) checks early, middle and late records alike at a fixed
//! cost. Each sampled record is read alone, `(lsn - 1, lsn]` of its page, and must come back as
//! exactly that record with exactly the bytes written; for a page change, the page read as of
//! its LSN must be that version and hold every byte it wrote. (The run pins the floor at its
//! start, so every version it wrote stays readable until the check is done.)
//!
//! Invariants: the reservoir never holds more than its capacity and only records whose
//! durability was reported; the choice of records is deterministic (fixed seed), so two runs
//! with the same counts check the same positions; a failed read is a failure of the check
//! (reported), never a panic.

use bytes::Bytes;
use client::Writer;
use protocol::{Lsn, PageId, RecordKind};

use super::orders::SplitMix;
use crate::interrupt::{self, Interrupted};

/// Records read back after a run.
pub const SAMPLE_SIZE: usize = 200;
/// Failures described in the report (the count is always complete).
const FAILURES_DESCRIBED_MAX: usize = 10;
/// Seed of the reservoir's choices.
const SAMPLE_SEED: u64 = 0x0b0e_a115;

/// A durable record and what it must read back as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sampled {
    pub lsn: Lsn,
    pub page: PageId,
    pub kind: RecordKind,
    pub payload: Bytes,
}

/// A uniform random sample of everything offered.
#[derive(Debug)]
pub struct Reservoir {
    capacity: usize,
    seen: u64,
    kept: Vec<Sampled>,
    random: SplitMix,
}

impl Reservoir {
    pub fn new(capacity: usize) -> Reservoir {
        Reservoir { capacity, seen: 0, kept: Vec::with_capacity(capacity), random: SplitMix(SAMPLE_SEED) }
    }

    /// Offers one record; it is kept with probability capacity / records offered so far.
    pub fn offer(&mut self, record: Sampled) {
        self.seen += 1;
        if self.kept.len() < self.capacity {
            self.kept.push(record);
            return;
        }
        let slot = self.random.below(self.seen);
        if let Some(kept) = self.kept.get_mut(slot as usize) {
            *kept = record;
        }
    }

    /// The sample, in LSN order.
    pub fn into_sorted(mut self) -> Vec<Sampled> {
        self.kept.sort_by_key(|s| s.lsn);
        self.kept
    }
}

/// What reading the sample back found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    pub sampled: usize,
    pub verified: usize,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.verified == self.sampled
    }
}

/// Reads every sampled record back through `writer` and compares it with what was written.
/// Stops early, with an error, if the user interrupts.
pub async fn verify(writer: &Writer, sample: &[Sampled]) -> Result<Verification, Interrupted> {
    let mut verification = Verification { sampled: sample.len(), ..Verification::default() };
    for expected in sample {
        interrupt::check()?;
        match read_back(writer, expected).await {
            Ok(()) => verification.verified += 1,
            Err(why) if verification.failures.len() < FAILURES_DESCRIBED_MAX => verification
                .failures
                .push(format!("LSN {} (page {}): {why}", expected.lsn.get(), expected.page.get())),
            Err(_) => {}
        }
    }
    Ok(verification)
}

/// Reads `expected`'s record alone and checks it; the error says what differed.
async fn read_back(writer: &Writer, expected: &Sampled) -> Result<(), String> {
    let before = Lsn(expected.lsn.get() - 1);
    let records = writer
        .read_records(expected.page, before, expected.lsn)
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    match records.as_slice() {
        [record] if record.lsn() != expected.lsn => Err(format!("read returned LSN {}", record.lsn().get())),
        [record] if record.payload()[..] != expected.payload[..] => Err(format!(
            "payload differs ({} bytes read, {} written)",
            record.payload().len(),
            expected.payload.len()
        )),
        [_] => check_page(writer, expected).await,
        other => Err(format!("read returned {} records instead of 1", other.len())),
    }
}

/// For a page change, the page as of the record's LSN is that version and holds its bytes.
async fn check_page(writer: &Writer, expected: &Sampled) -> Result<(), String> {
    if expected.kind == RecordKind::Marker {
        return Ok(());
    }
    let version =
        writer.read_page(expected.page, expected.lsn).await.map_err(|e| format!("page read failed: {e}"))?;
    if version.lsn != expected.lsn {
        return Err(format!("page read as of its LSN is version {}", version.lsn.get()));
    }
    let mut built = version.bytes.to_vec();
    let applied = match expected.kind {
        RecordKind::PagePatch => protocol::patch::apply(&mut built, &expected.payload).is_ok(),
        _ => return Err(format!("unexpected record kind {:?} in the sample", expected.kind)),
    };
    // Applying the record again to its own version changes nothing.
    if applied && built[..] == version.bytes[..] {
        Ok(())
    } else {
        Err("the page version does not hold the bytes the record wrote".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(lsn: u64) -> Sampled {
        Sampled {
            lsn: Lsn(lsn),
            page: PageId(lsn % 7),
            kind: RecordKind::Marker,
            payload: Bytes::from(lsn.to_string()),
        }
    }

    #[test]
    fn a_small_stream_is_kept_whole() {
        let mut reservoir = Reservoir::new(10);
        (1..=4).for_each(|lsn| reservoir.offer(sampled(lsn)));
        assert_eq!(reservoir.into_sorted(), (1..=4).map(sampled).collect::<Vec<_>>());
    }

    #[test]
    fn a_long_stream_is_sampled_across_its_whole_length() {
        let mut reservoir = Reservoir::new(SAMPLE_SIZE);
        (1..=100_000).for_each(|lsn| reservoir.offer(sampled(lsn)));
        let kept = reservoir.into_sorted();
        assert_eq!(kept.len(), SAMPLE_SIZE);
        assert!(kept.windows(2).all(|w| w[0].lsn < w[1].lsn), "distinct and sorted");
        // Each tenth of the stream holds about a tenth of the sample.
        for tenth in 0..10u64 {
            let range = tenth * 10_000 + 1..=(tenth + 1) * 10_000;
            let count = kept.iter().filter(|s| range.contains(&s.lsn.get())).count();
            assert!((5..=40).contains(&count), "tenth {tenth}: {count}");
        }
    }
}
