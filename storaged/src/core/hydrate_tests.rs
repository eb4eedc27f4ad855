//! Scenario tests of hydration between two node cores, the messages carried by hand: a node
//! without the segment (or below what its peer folded) is rebuilt from the peer's page
//! versions, claims nothing before every page is stored, then catches up the tail by gossip.

use protocol::messages::{FloorReport, GossipSummary, HydratePages, HydratedPage, ReadPage, Records};
use protocol::{AzId, Lsn, NodeId, PageId, PgRef, Record};

use super::node_tests::{batch, epochs, flush, page_image, PG};
use super::*;

const LEASE_MS: u64 = 60_000;
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn node(id: NodeId) -> NodeCore {
    NodeCore::new(id, AzId(0), Limits { peer_lease_ms: LEASE_MS, ..Limits::default() })
}

fn members(_: PgRef) -> Vec<NodeId> {
    vec![A, B]
}

/// A full-page record of `page` whose bytes are all `lsn as u8` (so a version's bytes follow
/// from its LSN).
fn image(lsn: u64, prev: u64, page: u64) -> Record {
    page_image(lsn, prev, page, lsn as u8)
}

/// LSNs 10, 20, .. 10 * count, on pages 0, 1, 2, 0, 1, 2, ...
fn chain(from: u64, count: u64) -> Vec<Record> {
    (from..from + count).map(|i| image(10 * (i + 1), 10 * i, i % 3)).collect()
}

fn append(core: &mut NodeCore, records: Vec<Record>, vdl: u64) {
    let mut append = batch(1, &[]);
    append.records = records;
    append.vdl = Lsn(vdl);
    core.handle_append(RequestId(0), append).unwrap();
    flush(core);
    while core.poll_reply().is_some() {}
}

/// Folds everything at or below `floor` on `core` (the journal moved on to file 2).
fn fold_to(core: &mut NodeCore, floor: u64) {
    core.handle_floor_report(&FloorReport { pg: PG, client: 7, floor: Lsn(floor), lease_ms: 600_000 }, 0);
    core.set_journal_head(2);
    core.handle_tick(0);
    for round in 0..10u64 {
        for (i, job) in core.poll_coalesce(64).iter().enumerate() {
            let at = Location { file: 50, offset: (round * 64 + i as u64) * 8192, len: 4200 };
            core.handle_coalesced(job, Some(at));
        }
    }
}

/// What a source's driver answers: each planned page built (here: made from its version).
fn answer(source: &mut NodeCore, fetch: &protocol::messages::HydrateFetch, asker: NodeId) -> HydratePages {
    let plan = source.plan_hydrate(fetch, asker, 0).expect("a plan");
    let pages = plan
        .pages
        .iter()
        .map(|page| {
            let version_lsn = match source.plan_read_page(&plan.page_read(*page)).unwrap() {
                PageAnswer::Build(build) => build.version_lsn,
                PageAnswer::Ready(page) => page.version_lsn,
                PageAnswer::NotYet => panic!("the source is complete through its floor"),
            };
            HydratedPage { page_id: *page, version_lsn, bytes: vec![version_lsn.0 as u8; 4096].into() }
        })
        .collect();
    plan.answer(source.node(), pages)
}

fn summary(core: &mut NodeCore) -> GossipSummary {
    core.poll_gossip(0, members).pop().expect("one peer").1
}

/// Stores every fetched page the coalescer is handed.
fn store_fetched(core: &mut NodeCore) -> usize {
    let jobs = core.poll_coalesce(64);
    for (i, job) in jobs.iter().enumerate() {
        assert!(job.fetched.is_some(), "only fetched pages to store: {job:?}");
        core.handle_coalesced(job, Some(Location { file: 90, offset: i as u64 * 8192, len: 4200 }));
    }
    jobs.len()
}

/// A node holding 30 records (LSN 10..300) whose peer B reports holding them all, so it may
/// fold (it keeps what a live peer lacks).
fn source_with_peer_complete() -> NodeCore {
    let mut a = node(A);
    append(&mut a, chain(0, 30), 300);
    a.poll_gossip(0, members);
    let claims_all = GossipSummary {
        pg: PG,
        node: B,
        epochs: epochs(1),
        scl: Lsn(300),
        highest_lsn: Lsn(300),
        folded_through: Lsn(0),
        floor: Lsn(0),
        open: true,
        holes: vec![],
    };
    a.answer_gossip_summary(&claims_all, 0);
    a
}

/// A source holding 30 records (LSN 10..300) folded through 240.
fn folded_source() -> NodeCore {
    let mut a = source_with_peer_complete();
    fold_to(&mut a, 240);
    assert!(a.segment(&PG).unwrap().folded_through() >= Lsn(200), "the source folded");
    a
}

#[test]
fn a_node_without_the_segment_is_rebuilt_from_a_peers_pages_then_catches_up_by_records() {
    let mut a = folded_source();
    let mut b = node(B);
    // A asks B; B has no segment of the PG: it decides to hydrate from A.
    b.answer_gossip_summary(&summary(&mut a), 0);
    assert!(b.hydrating_from(A));
    let fetch = b.poll_hydrate(A, 0).expect("an ask");
    assert_eq!(fetch.read_lsn, Lsn::ZERO, "the source chooses the read point");
    let pages = answer(&mut a, &fetch, B);
    assert_eq!(pages.read_lsn, Lsn(240), "the source's floor");
    assert_eq!(pages.pages.len(), 3);
    b.handle_hydrate_pages(pages, 0);
    flush(&mut b);
    let segment = b.segment(&PG).expect("created from the source's state");
    assert_eq!(segment.scl(), Lsn::ZERO, "nothing claimed before the pages are stored");
    assert_eq!(b.status().segments[0].state, protocol::messages::SegmentState::Hydrating);
    assert_eq!(store_fetched(&mut b), 3);
    let segment = b.segment(&PG).unwrap();
    assert_eq!(segment.scl(), Lsn(240), "claims through the PG's newest LSN at the read point");
    assert_eq!(segment.folded_through(), Lsn(240));
    assert!(b.poll_checkpoint_wanted(), "the new state is checkpointed at once");
    assert_eq!(b.status().segments[0].state, protocol::messages::SegmentState::Serving);
    // Reads of the hydrated versions start from the stored images.
    let read = ReadPage {
        pg: PG,
        epochs: epochs(1),
        page_id: PageId(2),
        read_lsn: Lsn(240),
        pg_newest_lsn: Lsn(240),
        page_bytes: 4096,
    };
    match b.plan_read_page(&read).unwrap() {
        PageAnswer::Build(build) => {
            assert_eq!(build.version_lsn, Lsn(240));
            assert!(matches!(build.base, Base::Image(l) if l.file == 90), "{:?}", build.base);
        }
        other => panic!("{other:?}"),
    }
    // The tail above the read point comes by gossip, as records.
    let fetch = b.handle_gossip_summary(&summary(&mut a), 0).expect("a records fetch for the tail");
    let plan = a.plan_gossip_fetch(&fetch).unwrap();
    let records: Vec<Record> =
        plan.wanted.iter().map(|(lsn, _)| image(lsn.0, lsn.0 - 10, (lsn.0 / 10 - 1) % 3)).collect();
    assert_eq!(records.first().map(Record::lsn), Some(Lsn(250)));
    b.handle_gossip_records(Records { pg: PG, node: A, scl: plan.scl, more: false, records }, 0);
    flush(&mut b);
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn(300));
    assert_eq!(b.hydrate_stats().completed, 1);
}

#[test]
fn a_segment_below_its_peers_folded_point_hydrates_instead_of_fetching_records() {
    let mut a = folded_source();
    let mut b = node(B);
    append(&mut b, chain(0, 2), 20);
    assert!(b.handle_gossip_summary(&summary(&mut a), 0).is_none(), "no records fetch: they are folded");
    assert!(b.hydrating_from(A));
    let fetch = b.poll_hydrate(A, 0).unwrap();
    let pages = answer(&mut a, &fetch, B);
    b.handle_hydrate_pages(pages, 0);
    store_fetched(&mut b);
    let segment = b.segment(&PG).unwrap();
    assert_eq!(segment.scl(), Lsn(240));
    assert!(segment.get(Lsn(10)).is_none(), "its own records below the base give way to the images");
}

#[test]
fn the_source_holds_its_floor_for_the_hydration_and_refuses_a_read_point_below_it() {
    let mut a = folded_source();
    let fetch = protocol::messages::HydrateFetch {
        pg: PG,
        epochs: epochs(1),
        read_lsn: Lsn(100),
        from_page: PageId(0),
        bytes_max: 1 << 20,
    };
    let refused = a.plan_hydrate(&fetch, B, 0).expect_err("below the floor");
    assert_eq!(refused.code, protocol::messages::ErrorCode::TooOld);
    let first = protocol::messages::HydrateFetch { read_lsn: Lsn::ZERO, ..fetch };
    let plan = a.plan_hydrate(&first, B, 0).unwrap();
    // The client that set the floor moves on; the hydration's report keeps it where it was.
    a.handle_floor_report(&FloorReport { pg: PG, client: 7, floor: Lsn(300), lease_ms: 600_000 }, 1);
    a.handle_tick(1);
    assert_eq!(a.segment(&PG).unwrap().floor(), plan.read_lsn);
    // Once the hold lapses the floor follows the client again.
    a.handle_tick(node::hydrate::HYDRATE_HOLD_MS + 1);
    assert_eq!(a.segment(&PG).unwrap().floor(), Lsn(300));
}

#[test]
fn pages_come_in_bounded_answers_and_a_changed_read_point_abandons_the_hydration() {
    let mut a = folded_source();
    let mut b = node(B);
    b.answer_gossip_summary(&summary(&mut a), 0);
    let fetch = b.poll_hydrate(A, 0).unwrap();
    let small = protocol::messages::HydrateFetch { bytes_max: 4096, ..fetch };
    let first = answer(&mut a, &small, B);
    assert_eq!((first.pages.len(), first.more), (1, true));
    b.handle_hydrate_pages(first, 0);
    store_fetched(&mut b);
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn::ZERO, "two pages still to come");
    let next = b.poll_hydrate(A, 10_000).expect("the next range");
    assert_eq!(next.from_page, PageId(1));
    let mut moved = answer(&mut a, &next, B);
    moved.read_lsn = Lsn(250);
    b.handle_hydrate_pages(moved, 10_000);
    assert!(!b.is_hydrating(PG));
    assert_eq!(b.hydrate_stats().abandoned, 1);
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn::ZERO);
}

#[test]
fn an_idle_pg_whose_scl_is_below_the_volume_floor_is_still_a_source() {
    let mut a = folded_source();
    // The writer's floor follows the volume's VDL, past this PG's newest record (300).
    a.handle_floor_report(&FloorReport { pg: PG, client: 7, floor: Lsn(500), lease_ms: 600_000 }, 1);
    a.handle_tick(1);
    let mut b = node(B);
    b.answer_gossip_summary(&summary(&mut a), 1);
    let fetch = b.poll_hydrate(A, 1).unwrap();
    let pages = answer(&mut a, &fetch, B);
    assert_eq!((pages.read_lsn, pages.pg_newest_lsn), (Lsn(500), Lsn(300)));
    b.handle_hydrate_pages(pages, 1);
    store_fetched(&mut b);
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn(300), "whole through the PG's newest record");
}

#[test]
fn no_rebuild_starts_from_a_segment_that_is_not_open() {
    // Found by the simulator (seed 202310): the joining node of a change a takeover reverted
    // kept its segment, never opened at the new writer's epoch, and its gossip made a node
    // that had come back empty hydrate from it forever, each ask refused `EpochNotOpen`.
    let mut a = folded_source();
    let mut b = node(B);
    let mut not_open = summary(&mut a);
    not_open.open = false;
    b.answer_gossip_summary(&not_open, 0);
    assert!(!b.hydrating_from(A) && b.poll_hydrate(A, 0).is_none(), "it would refuse every ask");
    b.answer_gossip_summary(&summary(&mut a), 0);
    assert!(b.hydrating_from(A), "once open, it is a source");
}

#[test]
fn rebuilds_of_several_pgs_are_spread_over_the_peers_that_can_serve_them() {
    let mut b = node(B);
    let pg = |n: u32| PgRef { volume_id: PG.volume_id, pg_id: protocol::PgId(n) };
    let summary_from = |node: NodeId, pg: PgRef| GossipSummary {
        pg,
        node,
        epochs: epochs(1),
        scl: Lsn(100),
        highest_lsn: Lsn(100),
        folded_through: Lsn(50),
        floor: Lsn(0),
        open: true,
        holes: vec![],
    };
    // A's summaries of both PGs arrive first, then C's.
    let c = NodeId(3);
    for p in [pg(0), pg(1)] {
        b.answer_gossip_summary(&summary_from(A, p), 0);
    }
    for p in [pg(0), pg(1)] {
        b.answer_gossip_summary(&summary_from(c, p), 0);
    }
    assert!(b.hydrating_from(A) && b.hydrating_from(c), "one PG from each");
    let first = b.poll_hydrate(A, 0).expect("A serves one");
    assert!(b.poll_hydrate(A, 0).is_none(), "and only one at a time");
    let second = b.poll_hydrate(c, 0).expect("C serves the other");
    assert_ne!(first.pg, second.pg);
}

#[test]
fn a_segment_being_rebuilt_is_no_source() {
    let mut a = folded_source();
    let mut b = node(B);
    b.answer_gossip_summary(&summary(&mut a), 0);
    let fetch = b.poll_hydrate(A, 0).unwrap();
    b.handle_hydrate_pages(answer(&mut a, &fetch, B), 0);
    let asks_b = protocol::messages::HydrateFetch { read_lsn: Lsn::ZERO, ..fetch };
    let refused = b.plan_hydrate(&asks_b, NodeId(3), 0).expect_err("b is hydrating");
    assert_eq!(refused.code, protocol::messages::ErrorCode::NotYet);
}

#[test]
fn a_rebuild_resumes_at_the_same_read_point_after_its_source_went_silent() {
    use node::hydrate::{HYDRATE_RESUME_MS, HYDRATE_RETRY_MS};
    let mut a = folded_source();
    let mut b = node(B);
    b.answer_gossip_summary(&summary(&mut a), 0);
    let fetch = b.poll_hydrate(A, 0).unwrap();
    let first = answer(&mut a, &protocol::messages::HydrateFetch { bytes_max: 4096, ..fetch }, B);
    b.handle_hydrate_pages(first, 0);
    store_fetched(&mut b);
    // The next ask goes unanswered: the source crashed.
    let lost = b.poll_hydrate(A, 100).unwrap();
    b.handle_hydrate_unanswered(PG, A, 200);
    assert!(b.is_hydrating(PG), "what was stored is kept");
    assert!(b.poll_hydrate(A, 200 + HYDRATE_RETRY_MS - 1).is_none(), "not asked again at once");
    let again = b.poll_hydrate(A, 200 + HYDRATE_RETRY_MS).expect("asked again");
    assert_eq!((again.read_lsn, again.from_page), (lost.read_lsn, lost.from_page), "where it stopped");
    // The source is back and still holds the read point: the rebuild completes.
    let rest = answer(&mut a, &again, B);
    b.handle_hydrate_pages(rest, 2_000);
    store_fetched(&mut b);
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn(240));
    assert_eq!(b.hydrate_stats().abandoned, 0);
    // A source silent for too long is given up.
    let mut c = node(B);
    c.answer_gossip_summary(&summary(&mut a), 0);
    let fetch = c.poll_hydrate(A, 0).unwrap();
    c.handle_hydrate_pages(
        answer(&mut a, &protocol::messages::HydrateFetch { bytes_max: 4096, ..fetch }, B),
        0,
    );
    c.poll_hydrate(A, 1).unwrap();
    c.handle_hydrate_unanswered(PG, A, HYDRATE_RESUME_MS);
    assert!(!c.is_hydrating(PG));
}

#[test]
fn a_rebuild_interrupted_by_a_restart_of_the_target_resumes_from_its_checkpoint() {
    let mut a = folded_source();
    // One 4 KiB page per answer.
    let slow = Limits { peer_lease_ms: LEASE_MS, hydrate_bytes_per_s: 4096, ..Limits::default() };
    let mut b = NodeCore::new(B, AzId(0), slow);
    b.answer_gossip_summary(&summary(&mut a), 0);
    let first = b.poll_hydrate(A, 0).unwrap();
    let pages = answer(&mut a, &first, B);
    assert_eq!(pages.pages.len(), 1);
    b.handle_hydrate_pages(pages, 0);
    flush(&mut b);
    assert_eq!(store_fetched(&mut b), 1, "page 0 is durable");
    let second = b.poll_hydrate(A, 2_000).unwrap();
    b.handle_hydrate_pages(answer(&mut a, &second, B), 2_000);
    // The node crashes with page 1 fetched but not stored: its checkpoint keeps page 0.
    let kept = b.hydration_checkpoints();
    let [rebuild] = kept.as_slice() else { panic!("{kept:?}") };
    assert_eq!((rebuild.source, rebuild.read_lsn, rebuild.resume_from), (A, Lsn(240), PageId(1)));
    assert_eq!(rebuild.stored.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(), vec![PageId(0)]);

    let mut restarted = NodeCore::new(B, AzId(0), slow);
    restarted.restore_segment(b.segment(&PG).unwrap().clone());
    restarted.resume_hydration(rebuild.clone(), 0);
    assert_eq!(restarted.hydrate_stats().resumed, 1);
    assert!(restarted.is_hydrating(PG) && restarted.hydrating_from(A));
    let mut now = 0;
    let mut asked = Vec::new();
    while restarted.is_hydrating(PG) {
        now += 2_000;
        let fetch = restarted.poll_hydrate(A, now).expect("an ask");
        assert_eq!(fetch.read_lsn, Lsn(240), "the same read point");
        asked.push(fetch.from_page);
        restarted.handle_hydrate_pages(answer(&mut a, &fetch, B), now);
        store_fetched(&mut restarted);
    }
    assert_eq!(asked, vec![PageId(1), PageId(2)], "page 0 is not fetched again");
    let segment = restarted.segment(&PG).unwrap();
    assert_eq!(segment.scl(), Lsn(240));
    assert_eq!(segment.page_count(), 3);
}

#[test]
fn a_source_whose_scl_fell_below_a_folded_page_refuses_rather_than_list_it_as_zeros() {
    let mut a = source_with_peer_complete();
    // Fold through 240, except page 0 (LSNs 10, 40, .. 220): its job never completes, so its
    // records stay held while pages 1 and 2 fold past them.
    a.handle_floor_report(&FloorReport { pg: PG, client: 7, floor: Lsn(240), lease_ms: 600_000 }, 0);
    a.set_journal_head(2);
    a.handle_tick(0);
    for (i, job) in a.poll_coalesce(64).iter().enumerate() {
        if job.page_id != PageId(0) {
            a.handle_coalesced(job, Some(Location { file: 50, offset: i as u64 * 8192, len: 4200 }));
        }
    }
    let fetch = protocol::messages::HydrateFetch {
        pg: PG,
        epochs: epochs(1),
        read_lsn: Lsn::ZERO,
        from_page: PageId(0),
        bytes_max: 1 << 20,
    };
    assert!(a.plan_hydrate(&fetch, B, 0).is_ok(), "a whole source serves");
    // Scrub finds page 0's record 220 corrupt: SCL falls below it, under the images of pages
    // 1 (230) and 2 (240), whose earlier versions were folded away.
    a.handle_corrupt_record(PG, Lsn(220));
    let scl = a.segment(&PG).unwrap().scl();
    assert!(scl < Lsn(220), "SCL fell to {scl}");
    let refused = a.plan_hydrate(&fetch, B, 0).expect_err("pages 1 and 2 are unknown at the new SCL");
    assert_eq!(refused.code, protocol::messages::ErrorCode::NotYet);
}
