//! Scenario tests of the node core without any I/O: the journal is played by hand.

use bytes::Bytes;
use protocol::messages::{AppendBatch, EpochBump, ErrorCode, Truncate};
use protocol::{AzId, NodeId, VolumeId};
use protocol::{Epoch, Epochs, Lsn, LsnRange, Message, PageId, PgId, PgRef, Record, RecordKind, RecordMeta};

use super::*;

pub(crate) const PG: PgRef = PgRef { volume_id: VolumeId(9), pg_id: PgId(0) };

fn core() -> NodeCore {
    NodeCore::new(NodeId(1), AzId(0), Limits::default())
}

pub(crate) fn epochs(volume: u64) -> Epochs {
    Epochs { volume: Epoch(volume), ..Epochs::INITIAL }
}

pub(crate) fn record(lsn: u64, prev: u64, epoch: u64) -> Record {
    let meta = RecordMeta {
        epoch: Epoch(epoch),
        ..RecordMeta::after(Lsn(prev), Lsn(lsn), RecordKind::Marker, PageId(1))
    };
    Record::new(meta, Bytes::from_static(b"row")).unwrap()
}

/// A full-page record at epoch 1 of `page`, every byte `fill`, chained after `prev`.
pub(super) fn page_image(lsn: u64, prev: u64, page: u64, fill: u8) -> Record {
    let meta = RecordMeta::after(Lsn(prev), Lsn(lsn), RecordKind::PageImage, PageId(page));
    Record::new(meta, Bytes::from(vec![fill; 4096])).unwrap()
}

pub(crate) fn batch(epoch: u64, chain: &[(u64, u64)]) -> AppendBatch {
    let records = chain.iter().map(|(l, p)| record(*l, *p, epoch)).collect();
    AppendBatch { pg: PG, epochs: epochs(epoch), vdl: Lsn(0), pg_vdl_lsn: Lsn(0), page_bytes: 4096, records }
}

/// Plays a perfect journal: every queued entry becomes durable at a made-up location.
pub(super) fn flush(core: &mut NodeCore) {
    let mut placed = Vec::new();
    while let Some(entry) = core.poll_journal() {
        placed.push((entry.seq, Location { file: 1, offset: entry.seq * 4096, len: 4096 }));
    }
    if let Some((last, _)) = placed.last() {
        core.handle_durable(*last, &placed);
    }
}

fn replies(core: &mut NodeCore) -> Vec<(RequestId, Message)> {
    std::iter::from_fn(|| core.poll_reply()).collect()
}

#[test]
fn an_append_is_acknowledged_only_after_its_entry_is_durable() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0), (20, 10)])).unwrap();
    assert!(replies(&mut core).is_empty(), "no ack before the flush");
    flush(&mut core);
    let got = replies(&mut core);
    let [(RequestId(1), Message::AppendAck(ack))] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!((ack.first_lsn, ack.last_lsn, ack.scl), (Lsn(10), Lsn(20), Lsn(20)));
}

#[test]
fn a_draining_node_acknowledges_what_it_took_and_refuses_new_writes() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    assert!(!core.is_drained(), "an append waits for the journal");
    core.begin_drain();
    let refused = core.handle_append(RequestId(2), batch(1, &[(20, 10)])).unwrap_err();
    assert_eq!(refused.code, ErrorCode::Overloaded, "{refused:?}");
    let bump = EpochBump { pg: PG, epochs: epochs(2) };
    assert_eq!(core.handle_epoch_bump(RequestId(3), bump).unwrap_err().code, ErrorCode::Overloaded);
    assert!(!core.is_drained());
    flush(&mut core);
    assert!(!core.is_drained(), "the ack is not out yet");
    let acks = replies(&mut core);
    assert!(matches!(acks[..], [(RequestId(1), Message::AppendAck(_))]), "{acks:?}");
    assert!(core.is_drained());
}

#[test]
fn scl_counts_only_durable_records() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    assert_eq!(core.segment(&PG).unwrap().scl(), Lsn(0));
    flush(&mut core);
    assert_eq!(core.segment(&PG).unwrap().scl(), Lsn(10));
}

#[test]
fn a_resent_batch_is_acknowledged_without_writing_its_records_again() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    flush(&mut core);
    replies(&mut core);
    core.handle_append(RequestId(2), batch(1, &[(10, 0)])).unwrap();
    assert!(core.poll_journal().is_none());
    assert!(matches!(replies(&mut core).as_slice(), [(RequestId(2), Message::AppendAck(_))]));
}

#[test]
fn after_an_epoch_bump_the_old_writer_is_refused_and_the_new_one_waits_for_its_truncation() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    flush(&mut core);
    replies(&mut core);
    core.handle_epoch_bump(RequestId(2), EpochBump { pg: PG, epochs: epochs(2) }).unwrap();
    let stale = core.handle_append(RequestId(3), batch(1, &[(20, 10)])).unwrap_err();
    assert_eq!(stale.code, ErrorCode::StaleEpoch, "fenced before the bump is even durable");
    let early = core.handle_append(RequestId(4), batch(2, &[(200, 10)])).unwrap_err();
    assert_eq!(early.code, ErrorCode::EpochNotOpen);
    let range = LsnRange::new(Lsn(10), Lsn(100)).unwrap();
    core.handle_truncate(RequestId(5), Truncate { pg: PG, epochs: epochs(2), range }).unwrap();
    core.handle_append(RequestId(6), batch(2, &[(200, 10)])).unwrap();
    flush(&mut core);
    let kinds: Vec<_> = replies(&mut core).into_iter().map(|(id, m)| (id.0, m.type_code())).collect();
    assert_eq!(kinds, vec![(2, 10), (5, 12), (6, 2)]);
    assert_eq!(core.segment(&PG).unwrap().scl(), Lsn(200));
}

#[test]
fn a_latched_io_error_fails_waiting_acks_and_refuses_later_writes() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    let _ = core.poll_journal();
    core.handle_io_failed(NodeFailure::io(
        "sync",
        "journal file 1",
        &std::io::Error::from_raw_os_error(libc::EIO),
    ));
    let got = replies(&mut core);
    assert!(matches!(got.as_slice(), [(RequestId(1), Message::Error(e))] if e.code == ErrorCode::NodeFailed));
    let refused = core.handle_append(RequestId(2), batch(1, &[(10, 0)])).unwrap_err();
    assert_eq!(refused.code, ErrorCode::NodeFailed);
    assert_eq!(core.segment(&PG).unwrap().scl(), Lsn(0), "nothing unflushed was indexed");
}

#[test]
fn disk_full_refuses_writes_until_space_returns_and_keeps_what_was_durable() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    flush(&mut core);
    replies(&mut core);
    core.handle_append(RequestId(2), batch(1, &[(20, 10)])).unwrap();
    core.handle_no_space();
    let got = replies(&mut core);
    assert!(matches!(got.as_slice(), [(RequestId(2), Message::Error(e))] if e.code == ErrorCode::DiskFull));
    assert_eq!(
        core.handle_append(RequestId(3), batch(1, &[(20, 10)])).unwrap_err().code,
        ErrorCode::DiskFull
    );
    core.handle_space_available();
    core.handle_append(RequestId(4), batch(1, &[(20, 10)])).unwrap();
    flush(&mut core);
    assert_eq!(core.segment(&PG).unwrap().scl(), Lsn(20));
}

#[test]
fn the_ingest_budget_refuses_a_writer_that_ignores_its_credit() {
    let mut core =
        NodeCore::new(NodeId(1), AzId(0), Limits { ingest_pending_bytes_max: 100, ..Limits::default() });
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    let refused = core.handle_append(RequestId(2), batch(1, &[(20, 10)])).unwrap_err();
    assert_eq!(refused.code, ErrorCode::Overloaded);
    flush(&mut core);
    assert_eq!(core.credit_bytes(), 100);
}

#[test]
fn the_memory_cap_refuses_appends_once_the_index_is_full_until_it_shrinks() {
    let limits = Limits { index_bytes_max: 3 * node::RECORD_INDEX_BYTES, ..Limits::default() };
    let mut core = NodeCore::new(NodeId(1), AzId(0), limits);
    for (lsn, prev) in [(10, 0), (20, 10), (30, 20), (40, 30)] {
        core.handle_append(RequestId(lsn), batch(1, &[(lsn, prev)])).unwrap();
        flush(&mut core);
    }
    let refused = core.handle_append(RequestId(50), batch(1, &[(50, 40)])).unwrap_err();
    assert_eq!(refused.code, ErrorCode::Overloaded, "four records indexed, room for three");
    assert!(refused.message.contains("memory cap"), "{}", refused.message);
    // Markers below the floor (and VDL) fold away; the next tick recounts and appends resume.
    // A heartbeat still gets through, so the node learns VDL (folding stops there).
    let vdl = AppendBatch { vdl: Lsn(40), pg_vdl_lsn: Lsn(40), ..batch(1, &[]) };
    core.handle_append(RequestId(60), vdl).unwrap();
    let report = protocol::messages::FloorReport { pg: PG, client: 1, floor: Lsn(40), lease_ms: 1000 };
    core.handle_floor_report(&report, 0);
    core.set_journal_head(2);
    assert!(core.poll_coalesce(8).is_empty(), "markers fold without building anything");
    core.handle_tick(1);
    core.handle_append(RequestId(70), batch(1, &[(50, 40)])).unwrap();
}

#[test]
fn replay_rebuilds_segments_epochs_and_truncations() {
    let mut live = core();
    live.handle_append(RequestId(1), batch(1, &[(10, 0), (20, 10)])).unwrap();
    live.handle_epoch_bump(RequestId(2), EpochBump { pg: PG, epochs: epochs(2) }).unwrap();
    let range = LsnRange::new(Lsn(10), Lsn(100)).unwrap();
    live.handle_truncate(RequestId(3), Truncate { pg: PG, epochs: epochs(2), range }).unwrap();
    let entries: Vec<_> = std::iter::from_fn(|| live.poll_journal()).collect();
    let mut restarted = core();
    for entry in &entries {
        restarted.replay(entry.pg, &entry.body, Location { file: 1, offset: entry.seq, len: 1 });
    }
    let segment = restarted.segment(&PG).unwrap();
    assert_eq!(segment.epochs(), epochs(2));
    assert_eq!(segment.scl(), Lsn(10), "20 lies in the truncated range");
    assert!(segment.is_open());
}

#[test]
fn a_fenced_writer_cannot_create_a_new_segment_of_the_volume() {
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    flush(&mut core);
    core.handle_epoch_bump(RequestId(2), EpochBump { pg: PG, epochs: epochs(2) }).unwrap();
    let other_pg = PgRef { pg_id: PgId(1), ..PG };
    let create = AppendBatch {
        pg: other_pg,
        epochs: epochs(1),
        vdl: Lsn(0),
        pg_vdl_lsn: Lsn(0),
        page_bytes: 4096,
        records: Vec::new(),
    };
    assert_eq!(core.handle_append(RequestId(3), create).unwrap_err().code, ErrorCode::StaleEpoch);
}

fn set(ids: [u32; 6]) -> protocol::quorum::SegmentSet {
    protocol::quorum::SegmentSet::new(ids.map(NodeId)).unwrap()
}

fn change(
    membership_epoch: u64,
    membership: protocol::quorum::Membership,
) -> protocol::messages::MembershipChange {
    let epochs = Epochs { membership: Epoch(membership_epoch), ..Epochs::INITIAL };
    protocol::messages::MembershipChange { pg: PG, epochs, membership }
}

#[test]
fn a_node_named_by_a_membership_change_gets_an_empty_segment_that_survives_a_restart() {
    use protocol::quorum::Membership;
    // Node 1 joins {2..7} in place of 7's set-mate: it has nothing of the PG yet.
    let joint = Membership::transition(Epoch(5), set([2, 3, 4, 5, 6, 7]), set([2, 3, 4, 5, 6, 1])).unwrap();
    let mut live = core();
    live.handle_membership_change(RequestId(1), change(5, joint)).unwrap();
    assert!(replies(&mut live).is_empty(), "acknowledged once durable");
    let entries: Vec<_> = std::iter::from_fn(|| live.poll_journal()).collect();
    let placed: Vec<_> =
        entries.iter().map(|e| (e.seq, Location { file: 1, offset: e.seq * 4096, len: 1 })).collect();
    live.handle_durable(placed.last().unwrap().0, &placed);
    let got = replies(&mut live);
    let [(RequestId(1), Message::MembershipAck(ack))] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!((ack.membership_epoch, ack.scl), (Epoch(5), Lsn(0)));
    let segment = live.segment(&PG).unwrap();
    assert_eq!((segment.membership(), segment.scl()), (Some(joint), Lsn(0)));
    assert_eq!(live.status().segments[0].membership, Some(joint));

    let mut restarted = core();
    for entry in &entries {
        restarted.replay(entry.pg, &entry.body, Location { file: 1, offset: entry.seq, len: 1 });
    }
    assert_eq!(restarted.segment(&PG).unwrap().membership(), Some(joint));
    assert_eq!(restarted.segment(&PG).unwrap().epochs().membership, Epoch(5));

    // An older membership, or a request at an older membership epoch, is refused.
    let older = Membership::stable(Epoch(4), set([2, 3, 4, 5, 6, 1]));
    let refused = restarted.handle_membership_change(RequestId(2), change(5, older)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::StaleEpoch);
    let stale = restarted.handle_membership_change(RequestId(3), change(4, joint)).unwrap_err();
    assert_eq!(stale.code, ErrorCode::StaleEpoch);
}

#[test]
fn a_segment_left_out_of_its_membership_is_retired() {
    use protocol::quorum::Membership;
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    flush(&mut core);
    let placement = |_| vec![NodeId(1), NodeId(2)];
    assert!(!core.poll_gossip(1_000_000, placement).is_empty(), "a member gossips");
    // Node 1 is replaced by node 7.
    let after = Membership::stable(Epoch(6), set([2, 3, 4, 5, 6, 7]));
    core.handle_membership_change(RequestId(2), change(6, after)).unwrap();
    flush(&mut core);
    let got = replies(&mut core);
    assert!(got.iter().any(|(_, m)| matches!(m, Message::MembershipAck(_))), "{got:?}");
    assert_eq!(core.status().segments[0].state, protocol::messages::SegmentState::Retired);
    let mut more = batch(1, &[(20, 10)]);
    more.epochs.membership = Epoch(6);
    assert_eq!(core.handle_append(RequestId(3), more).unwrap_err().code, ErrorCode::StaleEpoch);
    let summaries = core.poll_gossip(2_000_000, placement);
    assert!(summaries.is_empty(), "a retired segment does not gossip: {summaries:?}");
    // Retired, it takes no epoch bump either: its answer would report a stale SCL.
    let bump = EpochBump { pg: PG, epochs: Epochs { membership: Epoch(6), ..epochs(2) } };
    assert_eq!(core.handle_epoch_bump(RequestId(4), bump).unwrap_err().code, ErrorCode::StaleEpoch);
    // Named again later (a reversal, or a newer writer's sets), it is a member again.
    let again = Membership::stable(Epoch(8), set([2, 3, 4, 5, 6, 1]));
    core.handle_membership_change(RequestId(5), change(8, again)).unwrap();
    assert!(!core.segment(&PG).unwrap().is_retired(NodeId(1)));
    // A node that never held the PG and is not named is refused, not given a segment.
    let mut stranger = NodeCore::new(NodeId(9), AzId(0), Limits::default());
    assert_eq!(
        stranger.handle_membership_change(RequestId(1), change(6, after)).unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert!(stranger.segment(&PG).is_none());
}

#[test]
fn an_operators_replacement_request_rides_on_floor_acks_for_a_minute() {
    use protocol::messages::FloorReport;
    let mut core = core();
    core.handle_append(RequestId(1), batch(1, &[(10, 0)])).unwrap();
    flush(&mut core);
    let report = FloorReport { pg: PG, client: 7, floor: Lsn(0), lease_ms: 1000 };
    let replace_in = |core: &mut NodeCore, now| match core.handle_floor_report(&report, now) {
        Message::FloorAck(ack) => ack.replace,
        other => panic!("{other:?}"),
    };
    assert_eq!(replace_in(&mut core, 0), None);
    core.ask_replacement(NodeId(5), 1_000);
    assert_eq!(replace_in(&mut core, 1_000), Some(NodeId(5)));
    assert_eq!(replace_in(&mut core, 1_000 + node::REPLACE_ASK_MS - 1), Some(NodeId(5)));
    assert_eq!(
        replace_in(&mut core, 1_000 + node::REPLACE_ASK_MS),
        None,
        "passed on for a minute, then dropped"
    );
}
