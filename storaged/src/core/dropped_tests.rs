//! Scenario tests of dropping a deleted volume from a node core, the journal and the peers
//! played by hand: every request naming it is refused, nothing of it comes back (from the
//! journal, a checkpoint, gossip or hydration), and other volumes go on untouched.

use protocol::messages::{
    EpochBump, ErrorCode, ErrorReply, FloorReport, GossipFetch, HydrateFetch, HydratePages, HydratedPage,
    MembershipChange, ReadPage, ReadPageAsOf, ReadRecords, Records, Truncate,
};
use protocol::quorum::{Membership, SegmentSet};
use protocol::{AzId, Epoch, Epochs, Lsn, LsnRange, Message, NodeId, PageId, PgId, PgRef, VolumeId};

use super::node_tests::{batch, epochs, flush, page_image, record, PG};
use super::*;

/// Another volume on the same node.
const OTHER: PgRef = PgRef { volume_id: VolumeId(10), pg_id: PgId(0) };
const LEASE_MS: u64 = 60_000;

fn node(id: u32) -> NodeCore {
    NodeCore::new(NodeId(id), AzId(0), Limits { peer_lease_ms: LEASE_MS, ..Limits::default() })
}

fn members(_: PgRef) -> Vec<NodeId> {
    vec![NodeId(1), NodeId(2)]
}

/// Stores page images 10, 20, .. (`count` of them) in `pg`, durably, with a floor report.
fn store(core: &mut NodeCore, pg: PgRef, count: u64) {
    let mut append = batch(1, &[]);
    append.pg = pg;
    append.records = (1..=count).map(|i| page_image(10 * i, 10 * (i - 1), i % 3, i as u8)).collect();
    append.vdl = Lsn(10 * count);
    append.pg_vdl_lsn = append.vdl;
    core.handle_append(RequestId(0), append).unwrap();
    flush(core);
    while core.poll_reply().is_some() {}
    core.handle_floor_report(&FloorReport { pg, client: 7, floor: Lsn(10), lease_ms: 600_000 }, 0);
}

fn assert_deleted(refused: Result<impl std::fmt::Debug, ErrorReply>, what: &str) {
    let refusal = refused.expect_err(what);
    assert_eq!(refusal.code, ErrorCode::VolumeDeleted, "{what}: {refusal:?}");
    assert!(refusal.message.starts_with(VOLUME_DELETED), "{what}: {}", refusal.message);
    assert_eq!(refusal.pg, PG, "{what}");
}

/// Every kind of request a node takes that names `PG`, each answered by the core.
fn every_request(core: &mut NodeCore) -> Vec<(&'static str, Result<(), ErrorReply>)> {
    let range = LsnRange::new(Lsn(0), Lsn(100)).unwrap();
    let set = SegmentSet::new([1, 2, 3, 4, 5, 6].map(NodeId)).unwrap();
    let membership = Membership::stable(Epoch(2), set);
    let read_page = ReadPage {
        pg: PG,
        epochs: Epochs::INITIAL,
        page_id: PageId(1),
        read_lsn: Lsn(10),
        pg_newest_lsn: Lsn(10),
        page_bytes: 4096,
    };
    let as_of = ReadPageAsOf { pg: PG, page_id: PageId(1), read_lsn: Lsn(10), page_bytes: 4096 };
    let floor = FloorReport { pg: PG, client: 7, floor: Lsn(10), lease_ms: 1_000 };
    let fetch = GossipFetch { pg: PG, epochs: Epochs::INITIAL, ranges: vec![range], bytes_max: 1 << 20 };
    let hydrate = HydrateFetch {
        pg: PG,
        epochs: Epochs::INITIAL,
        read_lsn: Lsn(0),
        from_page: PageId(0),
        bytes_max: 1 << 20,
    };
    let floor_answer = match core.handle_floor_report(&floor, 0) {
        Message::Error(refusal) => Err(refusal),
        _ => Ok(()),
    };
    vec![
        ("append", core.handle_append(RequestId(50), batch(1, &[(60, 50)]))),
        ("epoch bump", core.handle_epoch_bump(RequestId(51), EpochBump { pg: PG, epochs: epochs(2) })),
        ("truncate", core.handle_truncate(RequestId(52), Truncate { pg: PG, epochs: epochs(2), range })),
        (
            "membership change",
            core.handle_membership_change(
                RequestId(53),
                MembershipChange {
                    pg: PG,
                    epochs: Epochs { membership: Epoch(2), ..Epochs::INITIAL },
                    membership,
                },
            ),
        ),
        (
            "read records and headers",
            core.plan_read_records(&ReadRecords {
                pg: PG,
                epochs: Epochs::INITIAL,
                range,
                bytes_max: 1 << 20,
            })
            .map(drop),
        ),
        ("read page", core.plan_read_page(&read_page).map(drop)),
        ("read page as of", core.resolve_read_as_of(&as_of).map(drop)),
        ("floor report", floor_answer),
        ("gossip fetch", core.plan_gossip_fetch(&fetch).map(drop)),
        ("hydrate fetch", core.plan_hydrate(&hydrate, NodeId(2), 0).map(drop)),
    ]
}

#[test]
fn after_a_volume_is_dropped_every_request_naming_it_is_refused_and_other_volumes_are_untouched() {
    let mut core = node(1);
    store(&mut core, PG, 6);
    store(&mut core, OTHER, 6);
    let other_before = core.segment(&OTHER).unwrap().clone();
    let all_before = core.index_bytes();
    let dropped = core.drop_volume(PG.volume_id);
    assert!(dropped.newly_dropped);
    assert_eq!((dropped.segments.as_slice(), dropped.records, dropped.images), ([PG].as_slice(), 6, 0));
    assert!(core.segment(&PG).is_none());
    assert!(core.is_dropped(PG.volume_id) && !core.is_dropped(OTHER.volume_id));
    for (what, answer) in every_request(&mut core) {
        assert_deleted(answer, what);
    }
    assert!(!core.has_unwritten(), "nothing of a refused request was queued");
    assert!(core.status().segments.iter().all(|s| s.pg != PG), "status no longer lists it");
    assert!(core.index_bytes() < all_before, "its index is freed");

    let other = core.segment(&OTHER).unwrap();
    assert_eq!((other.scl(), other.record_count()), (other_before.scl(), other_before.record_count()));
    let mut append = batch(1, &[]);
    append.pg = OTHER;
    append.records = vec![page_image(70, 60, 1, 7)];
    core.handle_append(RequestId(9), append).unwrap();
    flush(&mut core);
    assert!(matches!(core.poll_reply(), Some((RequestId(9), Message::AppendAck(ack))) if ack.scl == Lsn(70)));
}

#[test]
fn a_request_waiting_for_the_journal_is_refused_and_the_entries_not_yet_written_never_are() {
    let mut core = node(1);
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    let mut other = batch(1, &[(10, 0)]);
    other.pg = OTHER;
    core.handle_append(RequestId(2), other).unwrap();
    let credit = core.credit_bytes();

    let dropped = core.drop_volume(PG.volume_id);
    assert_eq!(
        (dropped.requests_refused, dropped.entries_unwritten),
        (1, 2),
        "its segment's Meta and records"
    );
    assert!(core.credit_bytes() > credit, "the dropped records' budget is given back");
    let refused = core.poll_reply();
    let Some((RequestId(1), Message::Error(refusal))) = refused else { panic!("{refused:?}") };
    assert!(refusal.message.starts_with(VOLUME_DELETED), "{refusal:?}");
    let written: Vec<PgRef> = std::iter::from_fn(|| core.poll_journal()).map(|e| e.pg).collect();
    assert_eq!(written, vec![OTHER, OTHER], "only the other volume's entries reach the journal");
}

#[test]
fn records_the_journal_had_taken_when_their_volume_was_dropped_are_written_but_never_indexed() {
    let mut core = node(1);
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    let taken: Vec<JournalEntry> = std::iter::from_fn(|| core.poll_journal()).collect();
    let dropped = core.drop_volume(PG.volume_id);
    assert_eq!((dropped.requests_refused, dropped.entries_unwritten), (1, 0), "already taken");
    let placed: Vec<(u64, Location)> =
        taken.iter().map(|e| (e.seq, Location { file: 1, offset: e.seq * 4096, len: 4096 })).collect();
    core.handle_durable(placed.last().unwrap().0, &placed);
    assert!(core.segment(&PG).is_none());
    assert_eq!(core.credit_bytes(), u32::try_from(Limits::default().ingest_pending_bytes_max).unwrap());
    assert!(matches!(core.poll_reply(), Some((RequestId(1), Message::Error(_)))), "refused at the drop");
    assert!(core.is_drained());
}

#[test]
fn a_dropped_volume_no_longer_pins_journal_files_nor_takes_coalescing_or_scrub_work() {
    let limits = Limits { apply_max: 1, scrub_bytes_per_s: 1 << 30, ..Limits::default() };
    let mut core = NodeCore::new(NodeId(1), AzId(0), limits);
    store(&mut core, PG, 3);
    assert_eq!(core.oldest_journal_file_in_use(), Some(1));
    let jobs = core.poll_coalesce(64);
    assert!(!jobs.is_empty() && jobs.iter().all(|job| job.pg == PG), "{jobs:?}");
    let scrub = core.poll_scrub(0).expect("a scrub job");
    core.handle_corrupt_entry(Store::Journal, scrub.entries[0].1);
    assert_eq!(core.scrub_faults_open(), 1);

    core.drop_volume(PG.volume_id);
    assert_eq!(core.scrub_faults_open(), 0, "no fault of it is repaired");
    assert_eq!(core.oldest_journal_file_in_use(), None, "its records pin no journal file");
    let plan = core.plan_recycle(&[1, 2], 2, &[], 1, &core.image_bytes_by_file());
    assert_eq!(plan.journal, vec![1]);
    // The coalescer's jobs out when it was dropped come back, and store nothing.
    for (i, job) in jobs.iter().enumerate() {
        core.handle_coalesced(job, Some(Location { file: 3, offset: i as u64 * 8192, len: 4200 }));
    }
    assert!(core.image_bytes_by_file().is_empty(), "no image of it is live");
    assert!(core.poll_coalesce(64).is_empty());
    core.handle_scrubbed(&[(scrub.entries[0], ScrubOutcome::Corrupt)]);
    assert_eq!(core.scrub_faults_open(), 0);
    assert!(core.poll_scrub(10_000).is_none(), "nothing of it is scrubbed");
}

#[test]
fn gossip_and_hydration_from_a_peer_that_still_holds_the_volume_bring_nothing_back() {
    let (mut a, mut b) = (node(1), node(2));
    store(&mut a, PG, 6);
    store(&mut b, PG, 2);
    // b asks a, which shows more: b fetches; then b's volume is dropped before the answer.
    let asked = b.poll_gossip(0, members).pop().unwrap().1;
    let answered = a.answer_gossip_summary(&asked, 0);
    let fetch = b.handle_gossip_summary(&answered, 0).expect("a fetch");
    b.drop_volume(PG.volume_id);
    let plan = a.plan_gossip_fetch(&fetch).unwrap();
    let records =
        plan.wanted.iter().map(|(lsn, _)| page_image(lsn.0, lsn.0 - 10, lsn.0 / 10 % 3, 1)).collect();
    let offered = Records { pg: PG, node: NodeId(1), scl: plan.scl, more: false, records };
    assert!(b.handle_gossip_records(offered, 0).is_none());
    assert!(!b.has_unwritten(), "the offered records are not taken");

    // From now on: no summary of it leaves b, a's summary gets an empty answer and starts no
    // rebuild, and b asks nothing of it.
    assert!(b.poll_gossip(LEASE_MS, members).is_empty());
    let asked = a.poll_gossip(0, members).pop().unwrap().1;
    let answered = b.answer_gossip_summary(&asked, 0);
    assert_eq!((answered.scl, answered.open, answered.holes.len()), (Lsn::ZERO, false, 0));
    assert!(b.handle_gossip_summary(&asked, 0).is_none());
    assert!(!b.hydrating_from(NodeId(1)));
    assert!(b.poll_hydrate(NodeId(1), 0).is_none());
    // Pages a peer sends anyway make no segment.
    let pages = HydratePages {
        pg: PG,
        node: NodeId(1),
        epochs: Epochs::INITIAL,
        read_lsn: Lsn(60),
        pg_newest_lsn: Lsn(60),
        next_page: PageId(1),
        page_bytes: 4096,
        more: false,
        truncations: Vec::new(),
        pages: vec![HydratedPage { page_id: PageId(0), version_lsn: Lsn(60), bytes: vec![1; 4096].into() }],
    };
    b.handle_hydrate_pages(pages, 0);
    assert!(b.segment(&PG).is_none() && !b.has_unwritten() && b.poll_coalesce(64).is_empty());
    assert!(b.status().segments.is_empty());
}

#[test]
fn a_rebuild_under_way_stops_when_its_volume_is_dropped() {
    let (mut a, mut b) = (node(1), node(2));
    store(&mut a, PG, 6);
    // b has no segment: a's summary makes it want a rebuild from a, which starts.
    let asked = a.poll_gossip(0, members).pop().unwrap().1;
    b.answer_gossip_summary(&asked, 0);
    assert!(b.hydrating_from(NodeId(1)));
    let ask = b.poll_hydrate(NodeId(1), 0).expect("an ask");
    assert!(b.is_hydrating(PG));
    let dropped = b.drop_volume(PG.volume_id);
    assert_eq!(dropped.hydrations_stopped, 1);
    assert!(!b.is_hydrating(PG) && !b.hydrating_from(NodeId(1)));
    assert!(b.hydration_checkpoints().is_empty(), "no checkpoint resumes it");
    let plan = a.plan_hydrate(&ask, NodeId(2), 0).unwrap();
    let pages = plan.pages.iter().map(|p| HydratedPage {
        page_id: *p,
        version_lsn: Lsn(10),
        bytes: vec![0; 4096].into(),
    });
    b.handle_hydrate_pages(plan.clone().answer(NodeId(1), pages.collect()), 0);
    assert!(b.segment(&PG).is_none() && !b.has_unwritten());
}

#[test]
fn replay_and_checkpoint_restore_skip_a_dropped_volume() {
    let mut before = node(1);
    store(&mut before, PG, 3);
    let kept = before.segment(&PG).unwrap().clone();
    let mut core = node(1);
    core.mark_dropped(PG.volume_id);
    core.restore_segment(kept);
    let at = Location { file: 1, offset: 0, len: 4096 };
    let records = EntryBody::Records { epoch: Epoch(1), page_bytes: 4096, records: vec![record(40, 30, 1)] };
    core.replay(PG, &records, at);
    core.replay(PG, &EntryBody::Meta { epochs: epochs(2), truncation: None }, at);
    core.replay(OTHER, &records, at);
    assert!(core.segment(&PG).is_none(), "neither the checkpoint nor the journal brings it back");
    assert_eq!(core.segments().map(Segment::pg).collect::<Vec<_>>(), vec![OTHER]);
    assert!(core.handle_append(RequestId(1), batch(1, &[(10, 0)])).is_err());
}

#[test]
fn dropping_twice_or_a_volume_never_held_is_fine_and_says_what_it_did() {
    let mut core = node(1);
    store(&mut core, PG, 2);
    assert_eq!(core.drop_volume(PG.volume_id).segments, vec![PG]);
    let again = core.drop_volume(PG.volume_id);
    assert_eq!(again, VolumeDropped::default(), "nothing left to drop");
    let never = core.drop_volume(VolumeId(77));
    assert!(never.newly_dropped && never.segments.is_empty());
    let mut create = batch(1, &[(10, 0)]);
    create.pg = PgRef { volume_id: VolumeId(77), pg_id: PgId(3) };
    let refused = core.handle_append(RequestId(2), create).unwrap_err();
    assert!(refused.message.starts_with(VOLUME_DELETED), "a writer cannot create it again: {refused:?}");
    assert_eq!(core.dropped_volumes().collect::<Vec<_>>(), vec![PG.volume_id, VolumeId(77)]);
}
