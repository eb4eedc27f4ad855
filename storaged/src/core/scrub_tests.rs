//! Scenario tests of scrub in the node core: which entries it hands out and how fast, and what
//! a failed entry does (records forgotten and fetched again by gossip; a damaged image never
//! used, fetched from a peer and stored again). The I/O is played by hand.

use protocol::messages::{ErrorCode, Page, ReadPage};
use protocol::{AzId, Lsn, NodeId, PageId, PgRef, Record};

use super::node_tests::{batch, epochs, flush, page_image, PG};
use super::*;

const RATE: u64 = 8192;

fn scrubbing(node: u32, limits: Limits) -> NodeCore {
    NodeCore::new(NodeId(node), AzId(0), Limits { scrub_bytes_per_s: RATE, ..limits })
}

/// Stores each of `chain` as its own journal entry (4 KiB each at the test journal's places).
fn store_each(core: &mut NodeCore, chain: &[(u64, u64)]) {
    for link in chain {
        core.handle_append(RequestId(0), batch(1, &[*link])).unwrap();
        flush(core);
    }
    while core.poll_reply().is_some() {}
}

fn location_of(core: &NodeCore, lsn: u64) -> Location {
    core.segment(&PG).unwrap().get(Lsn(lsn)).unwrap().location
}

fn verified(job: &ScrubJob) -> Vec<((Store, Location), ScrubOutcome)> {
    job.entries.iter().map(|e| (*e, ScrubOutcome::Verified)).collect()
}

#[test]
fn scrub_hands_out_every_stored_entry_once_per_pass_at_the_configured_rate() {
    let mut core = scrubbing(1, Limits::default());
    store_each(&mut core, &[(10, 0), (20, 10), (30, 20)]);
    let job = core.poll_scrub(0).expect("a job at once");
    assert_eq!(job.entries.len(), 3, "three 4 KiB entries fit one job");
    assert!(core.poll_scrub(0).is_none(), "one job out at a time");
    assert_eq!(core.poll_scrub_timeout(), None, "no timer while the job is out");
    core.handle_scrubbed(&verified(&job));
    // 12 KiB at 8 KiB/s: the budget allows the next job 1.5 s later.
    assert_eq!(core.poll_scrub_timeout(), Some(1500));
    assert!(core.poll_scrub(1499).is_none());
    assert!(core.poll_scrub(1500).is_none(), "nothing left: the pass ends");
    let stats = core.scrub_stats();
    assert_eq!((stats.passes_completed, stats.entries_scrubbed, stats.bytes_scrubbed), (1, 3, 3 * 4096));
    assert_eq!(stats.last_pass_ms, 1500);
    let next = core.poll_scrub_timeout().unwrap();
    assert!(next > 1500, "a pause between passes");
    assert_eq!(core.poll_scrub(next).expect("the next pass starts over").entries.len(), 3);
}

#[test]
fn scrub_is_off_at_a_rate_of_zero() {
    let mut core = NodeCore::new(NodeId(1), AzId(0), Limits::default());
    store_each(&mut core, &[(10, 0)]);
    assert!(core.poll_scrub(0).is_none());
    assert_eq!(core.poll_scrub_timeout(), None);
}

#[test]
fn a_read_error_is_not_corruption_and_keeps_the_records_claimed() {
    let mut core = scrubbing(1, Limits::default());
    store_each(&mut core, &[(10, 0), (20, 10)]);
    let job = core.poll_scrub(0).unwrap();
    let outcomes: Vec<_> = job.entries.iter().map(|e| (*e, ScrubOutcome::Unreadable)).collect();
    core.handle_scrubbed(&outcomes);
    assert_eq!(core.segment(&PG).unwrap().scl(), Lsn(20));
    assert_eq!(core.scrub_stats().read_errors, 2);
    assert_eq!(core.scrub_stats().faults_found, 0);
}

#[test]
fn a_corrupt_journal_entry_is_forgotten_fetched_again_by_gossip_and_only_then_repaired() {
    let gossip = Limits { peer_lease_ms: 1_000, ..Limits::default() };
    let (mut a, mut b) = (scrubbing(1, gossip), scrubbing(2, gossip));
    store_each(&mut a, &[(10, 0), (20, 10), (30, 20)]);
    store_each(&mut b, &[(10, 0), (20, 10), (30, 20)]);
    let bad = location_of(&a, 20);
    let job = a.poll_scrub(0).unwrap();
    let outcomes: Vec<_> = job
        .entries
        .iter()
        .map(|e| (*e, if e.1 == bad { ScrubOutcome::Corrupt } else { ScrubOutcome::Verified }))
        .collect();
    a.handle_scrubbed(&outcomes);
    assert_eq!(a.segment(&PG).unwrap().scl(), Lsn(10), "no longer claims the failed record");
    assert!(a.segment(&PG).unwrap().get(Lsn(20)).is_none(), "never served again");
    assert_eq!((a.scrub_stats().faults_found, a.scrub_faults_open()), (1, 1));
    assert!(a.is_repairing(PG));
    assert_eq!(a.status().segments[0].state, protocol::messages::SegmentState::ScrubRepairing);
    // Gossip: a asks b, sees it complete further, fetches the hole.
    let members = |_: PgRef| vec![NodeId(1), NodeId(2)];
    let summary = a.poll_gossip(0, members).pop().unwrap().1;
    let answer = b.answer_gossip_summary(&summary, 0);
    let fetch = a.handle_gossip_summary(&answer, 0).expect("a fetch for the lost record");
    let plan = b.plan_gossip_fetch(&fetch).unwrap();
    let records: Vec<Record> =
        plan.wanted.iter().map(|(lsn, _)| super::node_tests::record(lsn.0, lsn.0 - 10, 1)).collect();
    let reply = protocol::messages::Records { pg: PG, node: NodeId(2), scl: plan.scl, more: false, records };
    a.handle_gossip_records(reply, 0);
    a.handle_tick(0);
    assert_eq!(a.scrub_stats().faults_repaired, 0, "not repaired before the copy is durable");
    flush(&mut a);
    a.handle_tick(1);
    assert_eq!(a.segment(&PG).unwrap().scl(), Lsn(30));
    assert_ne!(location_of(&a, 20), bad, "claimed again from a new entry");
    assert_eq!((a.scrub_stats().faults_repaired, a.scrub_faults_open()), (1, 0));
    assert!(!a.is_repairing(PG));
    assert_eq!(a.status().segments[0].state, protocol::messages::SegmentState::Serving);
}

#[test]
fn a_fault_in_an_entry_nothing_refers_to_any_more_is_no_fault() {
    let mut core = scrubbing(1, Limits::default());
    store_each(&mut core, &[(10, 0)]);
    core.handle_corrupt_entry(Store::Journal, Location { file: 7, offset: 0, len: 4096 });
    core.handle_corrupt_entry(Store::Pages, location_of(&core, 10));
    assert_eq!(core.scrub_stats().faults_found, 0);
    assert_eq!(core.segment(&PG).unwrap().scl(), Lsn(10));
}

const PAGE: PageId = PageId(1);

fn image_record(lsn: u64, prev: u64, fill: u8) -> Record {
    page_image(lsn, prev, PAGE.0, fill)
}

fn read_at(lsn: u64) -> ReadPage {
    ReadPage {
        pg: PG,
        epochs: epochs(1),
        page_id: PAGE,
        read_lsn: Lsn(lsn),
        pg_newest_lsn: Lsn(lsn),
        page_bytes: 4096,
    }
}

/// A core holding an image of `PAGE` as of LSN 20 in the page store at `stored`.
fn with_image(stored: Location) -> NodeCore {
    let mut core = scrubbing(1, Limits { apply_max: 2, ..Limits::default() });
    let mut append = batch(1, &[]);
    append.records = vec![image_record(10, 0, 1), image_record(20, 10, 2)];
    core.handle_append(RequestId(0), append).unwrap();
    flush(&mut core);
    let jobs = core.poll_coalesce(8);
    assert_eq!(jobs.len(), 1, "two records after no image: a bound job");
    core.handle_coalesced(&jobs[0], Some(stored));
    core
}

fn image_base(core: &mut NodeCore) -> Base {
    match core.plan_read_page(&read_at(20)) {
        Ok(PageAnswer::Build(build)) => build.base,
        other => panic!("expected a build, got {other:?}"),
    }
}

#[test]
fn a_damaged_image_is_never_read_and_is_replaced_by_a_peers_version() {
    let damaged = Location { file: 3, offset: 0, len: 4200 };
    let mut core = with_image(damaged);
    assert_eq!(image_base(&mut core), Base::Image(damaged));
    core.handle_corrupt_entry(Store::Pages, damaged);
    assert_eq!(core.scrub_stats().faults_found, 1);
    let refused = core.plan_read_page(&read_at(20)).expect_err("never built on a damaged image");
    assert_eq!(refused.code, ErrorCode::ChecksumMismatch, "the client goes to another segment");
    // Only members of the PG are asked, one at a time.
    assert!(core.poll_image_repair(NodeId(9), 0, |_| vec![NodeId(1), NodeId(2)]).is_none());
    let ask = core.poll_image_repair(NodeId(2), 0, |_| vec![NodeId(1), NodeId(2)]).expect("a repair read");
    assert_eq!((ask.page_id, ask.read_lsn, ask.pg_newest_lsn), (PAGE, Lsn(20), Lsn(20)));
    assert!(core.poll_image_repair(NodeId(2), 0, |_| vec![NodeId(1), NodeId(2)]).is_none(), "asked already");
    let page = Page {
        pg: PG,
        page_id: PAGE,
        read_lsn: Lsn(20),
        version_lsn: Lsn(20),
        bytes: vec![2u8; 4096].into(),
    };
    core.handle_image_fetched(page);
    let jobs = core.poll_coalesce(8);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].fetched.as_deref(), Some(&[2u8; 4096][..]), "stored as fetched");
    let repaired = Location { file: 3, offset: 8192, len: 4200 };
    core.handle_coalesced(&jobs[0], Some(repaired));
    assert_eq!(image_base(&mut core), Base::Image(repaired));
    assert_eq!((core.scrub_stats().faults_repaired, core.scrub_faults_open()), (1, 0));
}

#[test]
fn a_repair_refused_below_a_peers_floor_is_asked_again_as_of_the_complete_point() {
    // Found by the simulator (seeds 80, 10677, 10710): a restarted segment's floor stayed
    // below its peers', and its repair read at its own floor was refused by every peer forever.
    let damaged = Location { file: 3, offset: 0, len: 4200 };
    let mut core = with_image(damaged);
    let mut append = batch(1, &[]);
    append.records = vec![image_record(30, 20, 3)];
    core.handle_append(RequestId(1), append).unwrap();
    flush(&mut core);
    core.handle_corrupt_entry(Store::Pages, damaged);
    let members = |_| vec![NodeId(1), NodeId(2), NodeId(3)];
    let first = core.poll_image_repair(NodeId(2), 0, members).expect("a repair read");
    assert_eq!((first.read_lsn, first.pg_newest_lsn), (Lsn(20), Lsn(20)), "first as of the image");
    core.handle_image_fetch_failed(PG, PAGE, NodeId(2));
    assert!(core.poll_image_repair(NodeId(2), 0, members).is_none(), "the other member first");
    let again = core.poll_image_repair(NodeId(3), 0, members).expect("asked again");
    assert_eq!(again.pg_newest_lsn, Lsn(30), "as of what the segment holds completely");
    assert!(again.read_lsn >= Lsn(30));
    let page = Page {
        pg: PG,
        page_id: PAGE,
        read_lsn: again.read_lsn,
        version_lsn: Lsn(30),
        bytes: vec![3u8; 4096].into(),
    };
    core.handle_image_fetched(page);
    let jobs = core.poll_coalesce(8);
    assert_eq!(jobs.len(), 1);
    let repaired = Location { file: 3, offset: 8192, len: 4200 };
    core.handle_coalesced(&jobs[0], Some(repaired));
    assert_eq!((core.scrub_stats().faults_repaired, core.scrub_faults_open()), (1, 0));
    let below = core.plan_read_page(&read_at(25)).expect_err("below the repaired version");
    assert_eq!(below.code, ErrorCode::TooOld, "never built without the records the damaged image held");
    assert!(matches!(core.plan_read_page(&read_at(30)), Ok(PageAnswer::Build(_)) | Ok(PageAnswer::Ready(_))));
}

#[test]
fn a_repair_that_failed_at_a_peer_goes_to_the_other_members_before_that_peer_again() {
    // Found by the simulator on the lying disk (seed 295): the repair asked the first member
    // in order, a node lost for good, again after every failure, and no other peer ever.
    let damaged = Location { file: 3, offset: 0, len: 4200 };
    let mut core = with_image(damaged);
    core.handle_corrupt_entry(Store::Pages, damaged);
    let members = |_| vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
    let ask = |core: &mut NodeCore, peer: u32| core.poll_image_repair(NodeId(peer), 0, members).is_some();
    assert!(ask(&mut core, 2));
    core.handle_image_fetch_failed(PG, PAGE, NodeId(2));
    assert!(!ask(&mut core, 2), "not the peer that just failed");
    assert!(ask(&mut core, 3));
    core.handle_image_fetch_failed(PG, PAGE, NodeId(3));
    assert!(!ask(&mut core, 2) && !ask(&mut core, 3), "neither failed peer while one is untried");
    assert!(ask(&mut core, 4));
    core.handle_image_fetch_failed(PG, PAGE, NodeId(4));
    assert!(ask(&mut core, 2), "every other member failed: a new round");
    core.handle_image_fetch_failed(PG, PAGE, NodeId(2));
    assert!(ask(&mut core, 3), "the round goes on");
}

#[test]
fn a_repair_answer_of_the_wrong_size_or_an_older_version_is_refused() {
    let damaged = Location { file: 3, offset: 0, len: 4200 };
    let mut core = with_image(damaged);
    core.handle_corrupt_entry(Store::Pages, damaged);
    let page = |version: u64, len: usize| Page {
        pg: PG,
        page_id: PAGE,
        read_lsn: Lsn(20),
        version_lsn: Lsn(version),
        bytes: vec![2u8; len].into(),
    };
    let members = |_| vec![NodeId(1), NodeId(2), NodeId(3)];
    assert!(core.poll_image_repair(NodeId(2), 0, members).is_some());
    core.handle_image_fetched(page(20, 512));
    assert!(
        core.poll_image_repair(NodeId(3), 0, members).is_some(),
        "an answer that cannot be installed fails the ask at once (not after its timeout)"
    );
    core.handle_image_fetched(page(10, 4096));
    assert!(core.poll_coalesce(8).is_empty(), "nothing to store");
    assert_eq!(core.scrub_faults_open(), 1);
}

#[test]
fn a_refused_repair_reads_at_or_above_the_floor_a_peer_showed_in_gossip() {
    // Found by the simulator (seeds 107017, 113234 of 100000..119999): a segment restarted on
    // an idle PG after the writer stopped never learnt its peers' floor (floor reports reach
    // live members only), and its repair read below that floor was refused for good.
    let damaged = Location { file: 3, offset: 0, len: 4200 };
    let mut core = with_image(damaged);
    core.handle_corrupt_entry(Store::Pages, damaged);
    let mut summary = summary_of_peer(&core, 2);
    summary.floor = Lsn(50);
    core.handle_gossip_summary(&summary, 0);
    let members = |_| vec![NodeId(1), NodeId(2), NodeId(3)];
    let first = core.poll_image_repair(NodeId(2), 0, members).expect("a repair read");
    assert_eq!(first.read_lsn, Lsn(20), "first as of the image: the peer's floor may not matter");
    core.handle_image_fetch_failed(PG, PAGE, NodeId(2));
    let again = core.poll_image_repair(NodeId(3), 0, members).expect("asked again");
    assert_eq!(
        (again.read_lsn, again.pg_newest_lsn),
        (Lsn(50), Lsn(20)),
        "at the peer's floor, as of what it holds"
    );
}

/// A summary from member `node` that matches `core`'s segment of `PG`.
fn summary_of_peer(core: &NodeCore, node: u32) -> protocol::messages::GossipSummary {
    let segment = core.segment(&PG).expect("a segment");
    protocol::messages::GossipSummary {
        pg: PG,
        node: NodeId(node),
        epochs: segment.epochs(),
        scl: segment.scl(),
        highest_lsn: segment.scl(),
        folded_through: Lsn::ZERO,
        floor: Lsn::ZERO,
        open: true,
        holes: Vec::new(),
    }
}

#[test]
fn a_damaged_image_is_not_the_base_of_a_new_one() {
    let damaged = Location { file: 3, offset: 0, len: 4200 };
    let mut core = with_image(damaged);
    core.handle_corrupt_entry(Store::Pages, damaged);
    let mut append = batch(1, &[]);
    append.records = vec![image_record(30, 20, 3), image_record(40, 30, 4)];
    core.handle_append(RequestId(1), append).unwrap();
    flush(&mut core);
    assert!(core.poll_coalesce(8).is_empty(), "the page waits for its repair");
}
