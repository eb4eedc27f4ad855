//! Writer recovery computations (DESIGN §3), pure: from what a read quorum of every PG holds,
//! decide the new VDL, the truncation range, what to re-replicate and where the new writer's
//! chains continue. The driver gathers the evidence (epoch bump acks, then the headers of the
//! records above `fetch_after` and which segments hold each) and carries out the plan.
//!
//! Why the fetch can start at `fetch_after`: the old writer never allocated above its VDL + LAL,
//! so its VDL is at least H - LAL, where H is the highest LSN any responder holds. Every record
//! at or below H - LAL was therefore durable, i.e. on at least 4 of 6 segments and so on at
//! least one of any 3 responders, and the walk over `prev_volume_lsn` links may start there.
//!
//! What moves: a kept record a write quorum of every set of its PG already holds (durably: a
//! segment lists only records it has flushed) needs nothing. Any other goes, and only its
//! payload, to the members that lack it (`fetches`). So the refill's cost follows what a write
//! quorum lacks, not the window.

use std::collections::BTreeMap;

use protocol::messages::{RecordHeader, BATCH_RECORDS_MAX};
use protocol::quorum::{Membership, WRITE_QUORUM};
use protocol::{Epoch, Lsn, LsnRange, NodeId, PgId, RecordMeta};

/// One record found above the fetch point, with the responders that hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub header: RecordHeader,
    pub holders: Vec<NodeId>,
}

/// What a read quorum of one PG answered.
#[derive(Clone, Debug, Default)]
pub struct PgEvidence {
    /// Highest LSN each responder holds (from its epoch ack).
    pub highest: Vec<Lsn>,
    /// Truncation ranges the responders hold, with the epoch that declared each.
    pub truncations: Vec<(Epoch, LsnRange)>,
    /// The highest VDL a writer told each responder (every record at or below is durable).
    pub vdl_hints: Vec<Lsn>,
    /// Every record the responders hold after `fetch_after`, by LSN.
    pub records: BTreeMap<Lsn, Held>,
    /// Each responder's SCL for the PG (from its epoch ack).
    pub scls: Vec<Lsn>,
    /// True once the records of a `RecoveryPlan::probe` range were read too.
    pub probed: bool,
}

impl PgEvidence {
    /// `node` holds the record `header` describes.
    pub fn add(&mut self, node: NodeId, header: RecordHeader) {
        let held = self.records.entry(header.meta.lsn).or_insert(Held { header, holders: Vec::new() });
        if !held.holders.contains(&node) {
            held.holders.push(node);
        }
    }
}

/// What the new writer does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub vcl: Lsn,
    pub vdl: Lsn,
    /// Records inside it are discarded on every segment, now and when they arrive late.
    pub truncation: LsnRange,
    /// The ranges earlier recoveries declared (newest `TRUNCATIONS_REPORTED_MAX`), each with
    /// its epoch: still binding, and the new writer passes them on to segments that missed
    /// them (a segment holding a record inside one can never chain past it).
    pub earlier_truncations: Vec<(Epoch, LsnRange)>,
    /// The first LSN the new writer allocates.
    pub next_lsn: Lsn,
    /// Each PG with its newest LSN at or below VDL (where its chain continues).
    pub pg_newest: Vec<(PgId, Lsn)>,
    /// Per PG, the LSNs of its records above the complete point and at or below VDL, in
    /// order: each must be on a write quorum before the writer resumes (`fetches` says which
    /// are not yet).
    pub refill: Vec<(PgId, Vec<Lsn>)>,
    /// PGs whose newest LSN at or below VDL the gathered records do not show, with the range
    /// it lies in: the responders' records there must be read too, then the plan made again.
    pub probe: Vec<(PgId, LsnRange)>,
}

/// One read of a segment for records to re-replicate, and where each of them goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub pg: PgId,
    /// Holds exactly the wanted records among those gathered for the PG.
    pub range: LsnRange,
    /// Responders that hold every wanted record, in the order to ask them.
    pub sources: Vec<NodeId>,
    /// The wanted records, each with the members that lack it.
    pub wanted: Vec<(Lsn, Vec<NodeId>)>,
}

/// Why recovery cannot decide.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error("no consistency point at or above {0}: the segments' records contradict the LAL rule")]
    NoConsistencyPoint(Lsn),
}

/// The highest LSN held anywhere, given every PG's evidence.
pub fn highest(evidence: &BTreeMap<PgId, PgEvidence>) -> Lsn {
    evidence.values().flat_map(|e| e.highest.iter().copied()).max().unwrap_or(Lsn::ZERO)
}

/// Records are fetched in `(fetch_after, ∞)`: the complete point and everything above.
pub fn fetch_after(evidence: &BTreeMap<PgId, PgEvidence>, lal: u64) -> Lsn {
    Lsn(complete_through(evidence, lal).0.saturating_sub(1))
}

/// Every record at or below this is durable (or truncated): the old writer's VDL was at least
/// H - LAL, and at least every VDL it piggybacked on its batches.
fn complete_through(evidence: &BTreeMap<PgId, PgEvidence>, lal: u64) -> Lsn {
    Lsn(highest(evidence).0.saturating_sub(lal)).max(vdl_hint(evidence))
}

fn vdl_hint(evidence: &BTreeMap<PgId, PgEvidence>) -> Lsn {
    evidence.values().flat_map(|e| e.vdl_hints.iter().copied()).max().unwrap_or(Lsn::ZERO)
}

/// Every gathered record's header, by LSN, with its PG.
type Gathered<'a> = BTreeMap<Lsn, (PgId, &'a RecordMeta)>;

/// Decides VCL, VDL, the truncation range and the rest (see the module docs).
pub fn plan(evidence: &BTreeMap<PgId, PgEvidence>, lal: u64) -> Result<RecoveryPlan, RecoveryError> {
    let complete = complete_through(evidence, lal);
    let truncations: Vec<(Epoch, LsnRange)> =
        evidence.values().flat_map(|e| e.truncations.iter().copied()).collect();
    let doomed =
        |m: &RecordMeta| truncations.iter().any(|(epoch, range)| range.contains(m.lsn) && m.epoch < *epoch);
    let mut records: Gathered = BTreeMap::new();
    for (pg, e) in evidence {
        for meta in e.records.values().map(|h| &h.header.meta).filter(|m| !doomed(m)) {
            records.insert(meta.lsn, (*pg, meta));
        }
    }
    // A previous recovery's VDL (the start of its truncation range) bounds VDL from below,
    // even before the writer that followed made a consistency point durable, but only if that
    // recovery finished: it stores its truncation range before it re-replicates the records up
    // to its VDL, so one that died in between leaves a range whose start is not durable. A
    // finished one made every record up to it durable, so the walk reaches it; if the walk
    // does not, that writer never resumed and never reported its VDL.
    let (vcl, walked_vdl) = walk(&records, complete);
    let earlier_vdl = truncations
        .iter()
        .map(|(_, range)| range.after())
        .filter(|after| *after <= vcl)
        .max()
        .unwrap_or(Lsn::ZERO);
    let vdl = walked_vdl.max(earlier_vdl).max(vdl_hint(evidence));
    if vdl == Lsn::ZERO && complete > Lsn::ZERO {
        return Err(RecoveryError::NoConsistencyPoint(complete));
    }
    // The old writer allocated at most LAL beyond the larger of its VDL and the end of its
    // own recovery's range (its window starts there), so the new range must reach that far.
    let earlier_end = truncations.iter().map(|(_, range)| range.through()).max().unwrap_or(Lsn::ZERO);
    let end = vdl.max(earlier_end).0.saturating_add(lal.max(1));
    let truncation = LsnRange::new(vdl, Lsn(end)).expect("lal is at least 1");
    let mut probe = Vec::new();
    let pg_newest = evidence
        .iter()
        .map(|(pg, e)| {
            let newest = newest_at_or_below(*pg, e, &records, vdl, &truncations);
            if newest > vdl {
                // The PG's oldest gathered record links to one above VDL that no responder
                // holds (never durable, truncated now): the PG's newest at or below VDL lies
                // before the gathered range. Every SCL at or below VDL is one of its records;
                // past the highest, only reading the responders' records tells.
                let kept = |s: &Lsn| *s <= vdl && !truncations.iter().any(|(_, range)| range.contains(*s));
                let scl = e.scls.iter().copied().filter(kept).max().unwrap_or(Lsn::ZERO);
                if !e.probed {
                    probe.extend(LsnRange::new(scl, vdl).ok().map(|range| (*pg, range)));
                }
                return (*pg, scl);
            }
            (*pg, newest)
        })
        .collect();
    let mut refill: BTreeMap<PgId, Vec<Lsn>> = BTreeMap::new();
    let above = Lsn(complete.0.saturating_add(1));
    for (lsn, (pg, _)) in records.range(above..).take_while(|(lsn, _)| **lsn <= vdl) {
        refill.entry(*pg).or_default().push(*lsn);
    }
    let mut earlier_truncations = truncations;
    earlier_truncations.sort_by_key(|(epoch, range)| (*epoch, range.after(), range.through()));
    earlier_truncations.dedup();
    let keep = protocol::messages::TRUNCATIONS_REPORTED_MAX;
    earlier_truncations.drain(..earlier_truncations.len().saturating_sub(keep));
    let next_lsn = Lsn(truncation.through().0 + 1);
    let refill = refill.into_iter().collect();
    Ok(RecoveryPlan { vcl, vdl, truncation, earlier_truncations, next_lsn, pg_newest, refill, probe })
}

/// The members of `membership` a record held by `holders` must still reach: none if a write
/// quorum of every set holds it, else every member that lacks it.
pub fn lacking(membership: &Membership, holders: &[NodeId]) -> Vec<NodeId> {
    if membership.sets().all(|set| set.count_in(holders) >= WRITE_QUORUM) {
        return Vec::new();
    }
    membership.nodes().into_iter().filter(|n| !holders.contains(n)).collect()
}

/// The reads that bring the plan's refill records a write quorum lacks to the members lacking
/// them. A read covers a run of such records adjacent among the PG's gathered ones (so it
/// returns nothing else), held by a common responder, within `bytes_max` and
/// `BATCH_RECORDS_MAX`; sources rotate from one read to the next to spread the load.
pub fn fetches(
    plan: &RecoveryPlan,
    evidence: &BTreeMap<PgId, PgEvidence>,
    membership: impl Fn(PgId) -> Membership,
    bytes_max: usize,
) -> Vec<Fetch> {
    let mut out: Vec<Fetch> = Vec::new();
    for (pg, lsns) in &plan.refill {
        let (Some(e), Some(first), Some(last)) = (evidence.get(pg), lsns.first(), lsns.last()) else {
            continue;
        };
        let membership = membership(*pg);
        // (fetch, bytes, LSN of its last record) of the read being built.
        let mut open: Option<(Fetch, usize, Lsn)> = None;
        let mut previous = Lsn::ZERO;
        for (lsn, held) in e.records.range(*first..=*last) {
            let wanted = if lsns.binary_search(lsn).is_ok() {
                lacking(&membership, &held.holders)
            } else {
                Vec::new()
            };
            let adjacent = open.as_ref().is_some_and(|(_, _, end)| *end == previous);
            previous = *lsn;
            if wanted.is_empty() {
                out.extend(open.take().map(|(f, _, _)| f));
                continue;
            }
            let bytes = held.header.record_bytes();
            if let Some((fetch, total, end)) = open.as_mut().filter(|_| adjacent) {
                let common: Vec<NodeId> =
                    fetch.sources.iter().copied().filter(|n| held.holders.contains(n)).collect();
                let fits = *total + bytes <= bytes_max && fetch.wanted.len() < BATCH_RECORDS_MAX;
                if fits && !common.is_empty() {
                    fetch.sources = common;
                    fetch.range = LsnRange::new(fetch.range.after(), *lsn).expect("LSNs increase");
                    fetch.wanted.push((*lsn, wanted));
                    (*total, *end) = (*total + bytes, *lsn);
                    continue;
                }
            }
            out.extend(open.take().map(|(f, _, _)| f));
            let mut sources = held.holders.clone();
            sources.sort();
            let turn = out.len() % sources.len().max(1);
            sources.rotate_left(turn);
            let range = LsnRange::new(Lsn(lsn.0 - 1), *lsn).expect("an LSN is above zero");
            open = Some((Fetch { pg: *pg, range, sources, wanted: vec![(*lsn, wanted)] }, bytes, *lsn));
        }
        out.extend(open.take().map(|(f, _, _)| f));
    }
    out
}

/// Walks `prev_volume_lsn` links up from the complete point; returns (VCL, VDL). Records at
/// or below `complete` are present by the LAL argument.
fn walk(records: &Gathered, complete: Lsn) -> (Lsn, Lsn) {
    let mut vcl = complete;
    let mut vdl = Lsn::ZERO;
    for (lsn, (_, meta)) in records {
        let linked = if *lsn <= complete || vcl == complete {
            meta.prev_volume_lsn <= complete
        } else {
            meta.prev_volume_lsn == vcl
        };
        if *lsn > complete && !linked {
            break;
        }
        vcl = vcl.max(*lsn);
        if meta.is_cpl() {
            vdl = *lsn;
        }
    }
    (vcl, vdl)
}

/// The newest record of `pg` at or below `vdl` (see the module docs for the three cases).
fn newest_at_or_below(
    pg: PgId,
    evidence: &PgEvidence,
    records: &Gathered,
    vdl: Lsn,
    truncations: &[(Epoch, LsnRange)],
) -> Lsn {
    let mut mine = records.iter().filter(|(_, (p, _))| *p == pg);
    if let Some((lsn, _)) = records.range(..=vdl).rev().find(|(_, (p, _))| *p == pg) {
        return *lsn;
    }
    // A gathered record above VDL that links to one at or below it names the newest there.
    let crossing = records
        .range(Lsn(vdl.0.saturating_add(1))..)
        .filter(|(_, (p, _))| *p == pg)
        .map(|(_, (_, m))| m.prev_pg_lsn)
        .filter(|prev| *prev <= vdl)
        .max();
    if let Some(prev) = crossing {
        return prev;
    }
    match mine.next() {
        // Its oldest gathered record is above VDL and links to one above VDL that no responder
        // holds: the caller looks further (see `plan`).
        Some((_, (_, first))) => first.prev_pg_lsn,
        // Nothing fetched: every record the gathered responders hold lies below the fetch
        // range and is durable or truncated. A responder that missed a truncation may report a
        // doomed LSN, and one whose records were not gathered may report one above VDL (a
        // record the truncation this recovery declares will remove): both are left out.
        None => {
            let kept = |lsn: &Lsn| *lsn <= vdl && !truncations.iter().any(|(_, range)| range.contains(*lsn));
            evidence.highest.iter().chain(&evidence.scls).copied().filter(kept).max().unwrap_or(Lsn::ZERO)
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::messages::RecordHeader;
    use protocol::{Epoch, PageId, RecordFlags, RecordKind, RecordMeta};

    use super::*;

    /// Records 1..=n alternating PG 0 / PG 1, CPL at the LSNs in `cpls`, minus `missing`.
    fn evidence(n: u64, cpls: &[u64], missing: &[u64]) -> BTreeMap<PgId, PgEvidence> {
        let mut map: BTreeMap<PgId, PgEvidence> = BTreeMap::new();
        for lsn in 1..=n {
            let pg = PgId((lsn % 2) as u32);
            let prev_pg = lsn.saturating_sub(2);
            let meta = RecordMeta {
                kind: RecordKind::Marker,
                flags: if cpls.contains(&lsn) { RecordFlags::CPL } else { RecordFlags::empty() },
                lsn: Lsn(lsn),
                prev_volume_lsn: Lsn(lsn - 1),
                prev_pg_lsn: Lsn(prev_pg),
                prev_page_lsn: Lsn(0),
                page_id: PageId(u64::from(pg.0)),
                epoch: Epoch(1),
            };
            let e = map.entry(pg).or_default();
            e.highest = vec![Lsn(lsn)];
            if !missing.contains(&lsn) {
                e.add(NodeId(1), RecordHeader { meta, payload_bytes: 0 });
            }
        }
        map
    }

    #[test]
    fn vdl_is_the_last_cpl_of_the_unbroken_volume_chain() {
        let plan = plan(&evidence(10, &[4, 8], &[]), 100).unwrap();
        assert_eq!((plan.vcl, plan.vdl), (Lsn(10), Lsn(8)));
        assert_eq!(plan.truncation, LsnRange::new(Lsn(8), Lsn(108)).unwrap());
        assert_eq!(plan.next_lsn, Lsn(109));
        assert_eq!(plan.pg_newest, vec![(PgId(0), Lsn(8)), (PgId(1), Lsn(7))]);
        assert_eq!(plan.refill.iter().map(|(_, r)| r.len()).sum::<usize>(), 8);
    }

    #[test]
    fn a_pg_whose_chain_above_vdl_starts_at_a_lost_record_is_probed_below_the_gather() {
        // VDL 11 (a CPL, and every responder was told it). PG 0's record 12 reached no
        // responder; its later records link to it. PG 0's newest record at or below VDL is 10,
        // below the gathered range: the plan must not continue PG 0's chain from 12.
        let mut all = evidence(20, &[11], &[12]);
        let pg0 = all.get_mut(&PgId(0)).unwrap();
        let above = pg0.records.split_off(&Lsn(11));
        let below = std::mem::replace(&mut pg0.records, above);
        pg0.scls = vec![Lsn(6), Lsn(4), Lsn(0)];
        for e in all.values_mut() {
            e.vdl_hints = vec![Lsn(11)];
        }
        let first = plan(&all, 1_000).unwrap();
        assert_eq!(first.vdl, Lsn(11));
        assert_eq!(first.probe, vec![(PgId(0), LsnRange::new(Lsn(6), Lsn(11)).unwrap())]);
        assert_eq!(first.pg_newest[0], (PgId(0), Lsn(6)), "until probed: the highest SCL at or below VDL");
        // The probe reads the responders' PG 0 records in (6, 11].
        let pg0 = all.get_mut(&PgId(0)).unwrap();
        pg0.records.extend(below.into_iter().filter(|(lsn, _)| *lsn > Lsn(6)));
        pg0.probed = true;
        let second = plan(&all, 1_000).unwrap();
        assert!(second.probe.is_empty());
        assert_eq!(second.pg_newest[0], (PgId(0), Lsn(10)));
        assert_eq!((second.vdl, second.truncation), (first.vdl, first.truncation));
    }

    #[test]
    fn a_gathered_record_linking_across_vdl_names_the_newest_below_it() {
        // PG 0's newest below VDL (10) is not gathered, but a gathered record above VDL links
        // to it: no probe needed.
        let mut all = evidence(20, &[11], &[]);
        let pg0 = all.get_mut(&PgId(0)).unwrap();
        pg0.records.retain(|lsn, _| *lsn > Lsn(10));
        for e in all.values_mut() {
            e.vdl_hints = vec![Lsn(11)];
        }
        let plan = plan(&all, 1_000).unwrap();
        assert!(plan.probe.is_empty());
        assert_eq!(plan.pg_newest[0], (PgId(0), Lsn(10)));
    }

    #[test]
    fn a_record_no_responder_holds_stops_the_chain() {
        let plan = plan(&evidence(10, &[4, 8], &[6]), 100).unwrap();
        assert_eq!((plan.vcl, plan.vdl), (Lsn(5), Lsn(4)), "7 and 8 hang off the missing 6");
        assert_eq!(plan.pg_newest, vec![(PgId(0), Lsn(4)), (PgId(1), Lsn(3))]);
    }

    #[test]
    fn a_pg_with_only_truncated_records_continues_from_before_them() {
        let plan = plan(&evidence(6, &[2], &[]), 100).unwrap();
        assert_eq!(plan.vdl, Lsn(2));
        assert_eq!(plan.pg_newest, vec![(PgId(0), Lsn(2)), (PgId(1), Lsn(1))]);
    }

    #[test]
    fn the_walk_starts_at_the_lal_bound_and_fetches_from_just_below_it() {
        let mut e = evidence(20, &[5, 15], &[]);
        assert_eq!(fetch_after(&e, 10), Lsn(9));
        for pg in e.values_mut() {
            pg.records.retain(|lsn, _| *lsn > Lsn(9));
        }
        let plan = plan(&e, 10).unwrap();
        assert_eq!(plan.vdl, Lsn(15));
        assert!(
            plan.refill.iter().flat_map(|(_, r)| r).all(|lsn| *lsn > Lsn(10)),
            "records at or below H - LAL are durable already"
        );
    }

    #[test]
    fn records_inside_an_earlier_truncation_are_ignored_and_its_start_bounds_vdl() {
        // A segment missed the truncation (8, 20] of epoch 2 and still holds the old writer's
        // records 9 and 10; the writer of epoch 2 wrote nothing durable yet.
        let mut e = evidence(10, &[4, 8, 10], &[]);
        let range = LsnRange::new(Lsn(8), Lsn(20)).unwrap();
        for pg in e.values_mut() {
            pg.truncations.push((Epoch(2), range));
        }
        let plan = plan(&e, 100).unwrap();
        assert_eq!(plan.vdl, Lsn(8), "10 is a CPL, but inside the earlier truncation");
        assert_eq!(
            plan.truncation.through(),
            Lsn(120),
            "the writer of epoch 2 could allocate up to 20 + LAL"
        );
        assert!(plan.refill.iter().flat_map(|(_, r)| r).all(|lsn| *lsn <= Lsn(8)));
    }

    #[test]
    fn a_piggybacked_vdl_bounds_the_fetch_so_a_clean_reopen_reads_little() {
        let mut e = evidence(1000, &(1..=250).map(|i| i * 4).collect::<Vec<_>>(), &[]);
        for pg in e.values_mut() {
            pg.vdl_hints = vec![Lsn(1000)];
        }
        assert_eq!(fetch_after(&e, 1_000_000), Lsn(999), "only the last record is fetched");
        let plan = plan(&e, 1_000_000).unwrap();
        assert_eq!(plan.vdl, Lsn(1000));
        assert!(plan.refill.is_empty());
    }

    #[test]
    fn a_pgs_newest_lsn_below_vdl_ignores_a_responder_holding_a_record_above_it() {
        // VDL 10 was piggybacked, so only records above 9 are fetched: PG 1 has none there. A
        // responder whose records were not gathered also holds an uncommitted 13 (above VDL,
        // so the new truncation removes it).
        let mut e = evidence(10, &[4, 10], &[]);
        for pg in e.values_mut() {
            pg.vdl_hints = vec![Lsn(10)];
            pg.records.retain(|lsn, _| *lsn > Lsn(9));
        }
        e.get_mut(&PgId(1)).unwrap().highest = vec![Lsn(9), Lsn(13)];
        let plan = plan(&e, 100).unwrap();
        assert_eq!(plan.vdl, Lsn(10));
        assert_eq!(plan.pg_newest[1], (PgId(1), Lsn(9)), "not 13, which lies above VDL");
    }

    #[test]
    fn an_unfinished_recoverys_vdl_is_not_trusted_when_its_records_are_gone() {
        // A recovery of epoch 2 found records up to 12 (a CPL) on one segment, stored its
        // truncation (12, 112] and died before re-replicating 11 and 12; no responder now holds
        // them. Trusting its VDL would claim two records nobody has.
        let mut e = evidence(10, &[4, 8, 10], &[]);
        let range = LsnRange::new(Lsn(12), Lsn(112)).unwrap();
        for pg in e.values_mut() {
            pg.truncations.push((Epoch(2), range));
        }
        let plan = plan(&e, 100).unwrap();
        assert_eq!(plan.vdl, Lsn(10), "the walk ends at 10");
        assert_eq!(plan.truncation.through(), Lsn(212), "epoch 2 could allocate up to 112 + LAL");
    }

    #[test]
    fn an_empty_volume_recovers_to_zero() {
        let plan = plan(&BTreeMap::new(), 100).unwrap();
        assert_eq!((plan.vdl, plan.next_lsn), (Lsn(0), Lsn(101)));
    }
}
