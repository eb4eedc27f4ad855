//! Scenario tests of gossip between two node cores, the messages carried by hand.

use protocol::messages::{FloorReport, GossipFetch, Records, Truncate};
use protocol::{AzId, Epoch, Lsn, LsnRange, NodeId, PgRef, Record};

use super::node_tests::{batch, epochs, flush, record, PG};
use super::*;

const LEASE_MS: u64 = 1_000;

fn gossiping(node: u32) -> NodeCore {
    let limits = Limits { peer_lease_ms: LEASE_MS, ..Limits::default() };
    NodeCore::new(NodeId(node), AzId(0), limits)
}

fn members(_: PgRef) -> Vec<NodeId> {
    vec![NodeId(1), NodeId(2)]
}

/// Stores `chain` at epoch 1 on `core`, durably.
fn store(core: &mut NodeCore, chain: &[(u64, u64)]) {
    core.handle_append(RequestId(0), batch(1, chain)).unwrap();
    flush(core);
    while core.poll_reply().is_some() {}
}

/// `from`'s summary for the other node.
fn summary_of(from: &mut NodeCore, now: u64) -> protocol::messages::GossipSummary {
    let mut out = from.poll_gossip(now, members);
    assert_eq!(out.len(), 1, "one peer");
    out.pop().unwrap().1
}

/// What a driver sends back for a fetch: the planned records, read (here: made) in order.
fn answer(from: &NodeCore, fetch: &GossipFetch) -> Records {
    let plan = from.plan_gossip_fetch(fetch).unwrap();
    let records: Vec<Record> =
        plan.wanted.iter().map(|(lsn, _)| record(lsn.0, prev_of(from, *lsn), 1)).collect();
    Records { pg: plan.pg, node: from.node(), scl: plan.scl, more: false, records }
}

fn prev_of(core: &NodeCore, lsn: Lsn) -> u64 {
    core.segment(&PG).unwrap().get(lsn).unwrap().prev_pg_lsn.0
}

fn fetch_of(reply: Option<GossipFetch>) -> GossipFetch {
    reply.expect("a fetch")
}

#[test]
fn a_segment_fetches_the_records_it_lacks_from_a_peer_and_its_scl_catches_up() {
    let (mut a, mut b) = (gossiping(1), gossiping(2));
    store(&mut a, &[(10, 0), (20, 10), (30, 20), (40, 30)]);
    store(&mut b, &[(10, 0), (30, 20)]);
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn(10));
    // b asks a; a's answer shows it complete further; b fetches.
    a.poll_gossip(0, members);
    let asked = summary_of(&mut b, 0);
    let answered = a.answer_gossip_summary(&asked, 0);
    assert_eq!(a.segment(&PG).unwrap().peer_need(), Lsn(10), "a now keeps what b lacks");
    let fetch = fetch_of(b.handle_gossip_summary(&answered, 0));
    let records = answer(&a, &fetch);
    let got: Vec<Lsn> = records.records.iter().map(Record::lsn).collect();
    assert_eq!(got, vec![Lsn(20), Lsn(40)], "the hole and the tail, not what b holds");
    assert!(b.handle_gossip_records(records, 0).is_none());
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn(10), "indexed only once durable");
    flush(&mut b);
    assert_eq!(b.segment(&PG).unwrap().scl(), Lsn(40));
    assert!(b.poll_reply().is_none(), "nobody is acknowledged for gossip");
}

#[test]
fn records_move_only_between_open_segments_at_the_same_epochs() {
    let (mut a, mut b) = (gossiping(1), gossiping(2));
    store(&mut a, &[(10, 0), (20, 10)]);
    store(&mut b, &[(10, 0)]);
    // b hears of epoch 2 but not yet its truncation: it may hold records that truncation drops.
    b.handle_epoch_bump(RequestId(1), protocol::messages::EpochBump { pg: PG, epochs: epochs(2) }).unwrap();
    flush(&mut b);
    assert!(b.handle_gossip_summary(&summary_of(&mut a, 0), 0).is_none(), "epochs differ");
    let fetch = GossipFetch { pg: PG, epochs: epochs(2), ranges: vec![range(10, 20)], bytes_max: 1 << 20 };
    assert!(a.plan_gossip_fetch(&fetch).is_err(), "a is behind b's epoch: it must not answer");

    // Both open at epoch 2: now records move, but an answer to a fetch sent before the
    // epochs changed again is dropped.
    let truncate = Truncate { pg: PG, epochs: epochs(2), range: range(20, 100) };
    a.handle_truncate(RequestId(2), truncate).unwrap();
    b.handle_truncate(RequestId(2), truncate).unwrap();
    flush(&mut a);
    flush(&mut b);
    a.handle_append(RequestId(3), batch(2, &[(101, 10)])).unwrap();
    flush(&mut a);
    let fetch = fetch_of(b.handle_gossip_summary(&summary_of(&mut a, 0), 0));
    let records = answer(&a, &fetch);
    b.handle_epoch_bump(RequestId(4), protocol::messages::EpochBump { pg: PG, epochs: epochs(3) }).unwrap();
    flush(&mut b);
    assert!(b.handle_gossip_records(records, 0).is_none());
    flush(&mut b);
    assert_eq!(b.segment(&PG).unwrap().highest_lsn(), Lsn(10), "the answer came after b's epoch changed");
}

#[test]
fn records_a_live_peer_lacks_are_kept_until_its_lease_runs_out() {
    let mut a = gossiping(1);
    let mut chain = batch(1, &[(10, 0), (20, 10), (30, 20)]);
    chain.vdl = Lsn(30);
    a.handle_append(RequestId(0), chain).unwrap();
    flush(&mut a);
    let report = FloorReport { pg: PG, client: 7, floor: Lsn(30), lease_ms: 10 * LEASE_MS as u32 };
    a.handle_floor_report(&report, 0);
    let gc_floor = |a: &NodeCore| a.segment(&PG).unwrap().gc_floor();
    assert_eq!(gc_floor(&a), Lsn(0), "peers not yet named: everything is kept");
    a.poll_gossip(0, members);
    assert_eq!(gc_floor(&a), Lsn(0), "peer 2 not heard from: it may hold nothing");
    let mut b = gossiping(2);
    store(&mut b, &[(10, 0)]);
    a.handle_gossip_summary(&summary_of(&mut b, 0), 0);
    assert_eq!(gc_floor(&a), Lsn(10), "peer 2 holds through 10");
    a.handle_tick(LEASE_MS + 1);
    assert_eq!(gc_floor(&a), Lsn(30), "peer 2 silent past its lease: no longer held for");
    a.poll_gossip(LEASE_MS + 2, members);
    assert_eq!(gc_floor(&a), Lsn(30), "peers are named once: a silent one is not held for again");
}

#[test]
fn a_node_without_the_segment_answers_with_an_empty_summary() {
    let mut a = gossiping(1);
    store(&mut a, &[(10, 0)]);
    let mut c = gossiping(2);
    let empty = c.answer_gossip_summary(&summary_of(&mut a, 0), 0);
    assert_eq!((empty.node, empty.scl), (NodeId(2), Lsn::ZERO));
    assert!(c.segment(&PG).is_none(), "answering creates no segment");
    assert!(a.handle_gossip_summary(&empty, 0).is_none(), "nothing to fetch from it");
    assert_eq!(a.segment(&PG).unwrap().peer_need(), Lsn::ZERO, "a keeps everything for node 2");
}

#[test]
fn an_earlier_epochs_truncation_is_stored_without_reopening_anything() {
    let mut a = gossiping(1);
    store(&mut a, &[(10, 0), (20, 10)]);
    let open = Truncate { pg: PG, epochs: epochs(3), range: range(30, 50) };
    a.handle_truncate(RequestId(1), open).unwrap();
    let earlier = Truncate { pg: PG, epochs: epochs(2), range: range(15, 25) };
    a.handle_truncate(RequestId(2), earlier).unwrap();
    flush(&mut a);
    let segment = a.segment(&PG).unwrap();
    assert_eq!((segment.epochs().volume, segment.scl()), (Epoch(3), Lsn(10)), "20 lay in epoch 2's range");
    assert!(segment.is_open());
}

fn range(after: u64, through: u64) -> LsnRange {
    LsnRange::new(Lsn(after), Lsn(through)).unwrap()
}

#[test]
fn a_node_left_out_of_the_membership_does_not_pin_records() {
    use protocol::quorum::{Membership, SegmentSet};
    let mut a = gossiping(1);
    let mut chain = batch(1, &[(10, 0), (20, 10), (30, 20)]);
    chain.vdl = Lsn(30);
    a.handle_append(RequestId(0), chain).unwrap();
    flush(&mut a);
    let report = FloorReport { pg: PG, client: 7, floor: Lsn(30), lease_ms: 10 * LEASE_MS as u32 };
    a.handle_floor_report(&report, 0);
    // Node 3 was replaced by node 7; node 2 holds everything.
    let set = SegmentSet::new([1, 2, 4, 5, 6, 7].map(NodeId)).unwrap();
    let epochs = protocol::Epochs { membership: Epoch(9), ..protocol::Epochs::INITIAL };
    let change = protocol::messages::MembershipChange {
        pg: PG,
        epochs,
        membership: Membership::stable(Epoch(9), set),
    };
    a.handle_membership_change(RequestId(1), change).unwrap();
    flush(&mut a);
    let peers = a.poll_gossip(0, members);
    assert_eq!(peers.len(), 5, "the stored membership names the peers, not placement: {peers:?}");
    let summary = |node: u32, scl: u64| protocol::messages::GossipSummary {
        pg: PG,
        node: NodeId(node),
        epochs,
        scl: Lsn(scl),
        highest_lsn: Lsn(scl),
        folded_through: Lsn(0),
        floor: Lsn(0),
        open: true,
        holes: Vec::new(),
    };
    for node in [2, 4, 5, 6, 7] {
        a.answer_gossip_summary(&summary(node, 30), 0);
    }
    assert_eq!(a.segment(&PG).unwrap().gc_floor(), Lsn(30));
    a.answer_gossip_summary(&summary(3, 0), 0);
    assert!(a.handle_gossip_summary(&summary(3, 0), 0).is_none());
    assert_eq!(a.segment(&PG).unwrap().gc_floor(), Lsn(30), "the replaced node holds nothing back");
}
