//! WriterCore scenarios against scripted segment replies (no I/O).

use bytes::Bytes;
use protocol::messages::{AppendAck, EpochAck, ErrorCode, ErrorReply};
use protocol::placement::ClusterMap;
use protocol::{Epochs, Lsn, Message, NodeId, PageId, PgId, RecordKind, VolumeId};

use super::repair::RepairJob;
use super::writer::{AppendRefusal, NewRecord, Transmit, WriterCore, WriterLimits, WriterStart};
use super::VolumeGeometry;

fn cluster() -> ClusterMap {
    super::test_cluster(2)
}

fn writer(limits: WriterLimits) -> WriterCore {
    let geometry = VolumeGeometry::new(VolumeId(1), 4096, 100).unwrap();
    WriterCore::new(geometry, cluster(), limits, WriterStart::fresh())
}

fn record(page: u64, cpl: bool) -> NewRecord {
    NewRecord {
        page: PageId(page),
        kind: RecordKind::PageImage,
        payload: Bytes::from_static(b"row"),
        cpl,
        lsn: None,
    }
}

fn drain(w: &mut WriterCore) -> Vec<Transmit> {
    std::iter::from_fn(|| w.poll_transmit()).collect()
}

/// Answers every append batch in `sent` from the given nodes with an ack.
fn ack_from(w: &mut WriterCore, sent: &[Transmit], nodes: &[u32]) {
    for t in sent {
        if let Message::AppendBatch(b) = &t.message {
            if nodes.contains(&t.node.0) {
                let (first, last) = (
                    b.records.first().map_or(Lsn(0), |r| r.lsn()),
                    b.records.last().map_or(Lsn(0), |r| r.lsn()),
                );
                let ack = AppendAck {
                    pg: b.pg,
                    node: t.node,
                    epochs: b.epochs,
                    first_lsn: first,
                    last_lsn: last,
                    scl: last,
                    credit_bytes: 1 << 20,
                };
                w.handle_reply(t.node, Message::AppendAck(ack));
            }
        }
    }
}

/// Opens PG 0 by acking its creation heartbeats from every node.
fn opened() -> WriterCore {
    let mut w = writer(WriterLimits::default());
    w.append(vec![record(1, false)]).unwrap();
    let opening = drain(&mut w);
    assert_eq!(opening.len(), 6, "one creating heartbeat per segment, records wait");
    ack_from(&mut w, &opening, &[1, 2, 3, 4, 5, 6]);
    w
}

#[test]
fn a_record_is_durable_at_four_distinct_acks_and_vdl_follows_cpls() {
    let mut w = opened();
    let first = drain(&mut w);
    assert_eq!(first.len(), 6, "the queued record goes to all six segments once the PG is open");
    w.append(vec![record(2, true)]).unwrap();
    assert!(drain(&mut w).is_empty(), "the second record waits while the first batch is in flight");
    ack_from(&mut w, &first, &[1, 2, 3]);
    ack_from(&mut w, &first, &[3]);
    assert_eq!(w.vcl(), Lsn(0), "three distinct acks, one repeated, are not a quorum");
    ack_from(&mut w, &first, &[4]);
    assert_eq!((w.vcl(), w.vdl()), (Lsn(1), Lsn(0)), "durable, but no CPL yet");
    let second = drain(&mut w);
    assert_eq!(second.len(), 6, "the grown batch leaves once the previous one is durable");
    ack_from(&mut w, &second, &[2, 4, 5, 6]);
    assert_eq!(w.vdl(), Lsn(2));
}

#[test]
fn records_append_to_the_lal_window_and_no_further() {
    let mut w = writer(WriterLimits { lal: 3, ..WriterLimits::default() });
    w.append(vec![record(1, false), record(1, false), record(1, true)]).unwrap();
    assert_eq!(w.append(vec![record(1, true)]), Err(AppendRefusal::WindowFull));
    let opening = drain(&mut w);
    ack_from(&mut w, &opening, &[1, 2, 3, 4, 5, 6]);
    let batch = drain(&mut w);
    ack_from(&mut w, &batch, &[1, 2, 3, 4]);
    assert_eq!(w.vdl(), Lsn(3));
    assert_eq!(w.append(vec![record(1, true)]), Ok((Lsn(4), Lsn(4))));
}

#[test]
fn backlinks_chain_the_volume_the_pg_and_the_page() {
    let mut w = opened();
    let sent = drain(&mut w);
    ack_from(&mut w, &sent, &[1, 2, 3, 4, 5, 6]);
    w.append(vec![record(150, false), record(1, true)]).unwrap();
    let sent = drain(&mut w);
    let mut metas: Vec<_> = sent
        .iter()
        .filter_map(|t| match &t.message {
            Message::AppendBatch(b) if t.node == NodeId(1) => {
                Some(b.records.iter().map(|r| *r.meta()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    metas.sort_by_key(|m| m.lsn);
    let page1 = metas.iter().find(|m| m.page_id == PageId(1)).unwrap();
    assert_eq!(
        (page1.lsn, page1.prev_volume_lsn, page1.prev_pg_lsn, page1.prev_page_lsn),
        (Lsn(3), Lsn(2), Lsn(1), Lsn(1))
    );
    assert!(
        sent.iter().any(
            |t| matches!(&t.message, Message::AppendBatch(b) if b.pg.pg_id == PgId(1) && b.records.is_empty())
        ),
        "PG 1 is created first"
    );
}

#[test]
fn three_stale_epoch_refusals_fence_the_writer_and_are_counted_by_kind() {
    let mut w = opened();
    let sent = drain(&mut w);
    for t in sent.iter().take(3) {
        let error = ErrorReply {
            code: ErrorCode::StaleEpoch,
            pg: w.geometry().pg_ref(PgId(0)),
            epochs: Epochs { volume: protocol::Epoch(2), ..Epochs::INITIAL },
            message: String::new(),
        };
        // A refusal at this writer's own volume epoch (a retired segment) fences nothing.
        let retired = ErrorReply { epochs: Epochs::INITIAL, ..error.clone() };
        w.handle_reply(t.node, Message::Error(retired));
        assert!(!w.is_fenced());
        w.handle_reply(t.node, Message::Error(error.clone()));
        w.handle_reply(t.node, Message::Error(error));
    }
    assert!(w.is_fenced());
    assert_eq!(w.append(vec![record(1, true)]), Err(AppendRefusal::Fenced));
    // Every refusal is counted by its kind, for the engine's metrics.
    let refusals = w.refusals();
    let stale = refusals.by_kind().find(|(kind, _)| *kind == "stale_epoch").map(|(_, n)| n);
    assert_eq!((stale, refusals.total()), (Some(9), 9));
}

#[test]
fn a_writer_refused_unauthorized_by_three_members_of_a_pg_stops_and_two_do_not_stop_it() {
    let mut w = opened();
    let sent = drain(&mut w);
    let nodes: Vec<NodeId> = {
        let mut nodes: Vec<NodeId> = sent.iter().map(|t| t.node).collect();
        nodes.dedup();
        nodes
    };
    let refusal = ErrorReply {
        code: ErrorCode::Unauthorized,
        pg: w.geometry().pg_ref(PgId(0)),
        epochs: Epochs::INITIAL,
        message: "borealis://client/w has no write on volume 0x1".into(),
    };
    for node in &nodes[..2] {
        // The same node refusing twice counts once.
        w.handle_reply(*node, Message::Error(refusal.clone()));
        w.handle_reply(*node, Message::Error(refusal.clone()));
    }
    assert_eq!(w.refused_by(), None, "two refusals leave a write quorum of four");
    assert!(w.append(vec![record(1, true)]).is_ok());
    w.handle_reply(nodes[2], Message::Error(refusal));
    assert_eq!(w.refused_by(), Some(ErrorCode::Unauthorized));
    assert_eq!(w.append(vec![record(2, true)]), Err(AppendRefusal::Unauthorized));
}

#[test]
fn a_writer_whose_volume_was_deleted_stops_with_that_reason() {
    let mut w = opened();
    let refusal = ErrorReply {
        code: ErrorCode::VolumeDeleted,
        pg: w.geometry().pg_ref(PgId(0)),
        epochs: Epochs::INITIAL,
        message: "volume deleted: volume 0x1 was deleted".into(),
    };
    for node in 1..=3 {
        w.handle_reply(NodeId(node), Message::Error(refusal.clone()));
    }
    assert_eq!(w.refused_by(), Some(ErrorCode::VolumeDeleted));
    assert_eq!(w.append(vec![record(2, true)]), Err(AppendRefusal::VolumeDeleted));
}

#[test]
fn a_returning_node_gets_the_batches_it_missed() {
    let mut w = opened();
    w.handle_node_down(NodeId(6));
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 5, "nothing is sent to a node that is down");
    ack_from(&mut w, &sent, &[1, 2, 3]);
    w.handle_node_up(NodeId(6));
    let resent = drain(&mut w);
    assert_eq!(resent.iter().map(|t| t.node).collect::<Vec<_>>(), vec![NodeId(6)]);
    ack_from(&mut w, &resent, &[6]);
    assert_eq!(w.vcl(), Lsn(1));
}

#[test]
fn a_segment_behind_what_is_durable_for_a_tick_is_repaired_from_a_complete_one_one_repair_at_a_time() {
    let mut w = opened();
    let first = drain(&mut w);
    ack_from(&mut w, &first, &[1, 2, 3, 4]);
    w.handle_tick();
    assert_eq!(w.poll_repair(), None, "behind for one tick only: its batch may be on its way");
    w.handle_tick();
    let jobs: Vec<RepairJob> = std::iter::from_fn(|| w.poll_repair()).collect();
    let mut lagging: Vec<NodeId> = jobs.iter().map(|j| j.node).collect();
    lagging.sort();
    assert_eq!(lagging, vec![NodeId(5), NodeId(6)]);
    for job in &jobs {
        assert!((1..=4).contains(&job.source.0), "{job:?}: the source is complete through the target");
        assert_eq!((job.pg.pg_id, job.from, job.target), (PgId(0), Lsn(0), Lsn(1)));
    }
    w.handle_tick();
    assert_eq!(w.poll_repair(), None, "a running repair is not started again");
    w.handle_repair_done(PgId(0), NodeId(5));
    w.handle_tick();
    assert_eq!(w.poll_repair().map(|j| j.node), Some(NodeId(5)), "still behind once it ended: again");
}

#[test]
fn a_member_that_missed_the_opening_is_repaired_once_its_epoch_ack_tells_where_it_stands() {
    let mut w = writer(WriterLimits::default());
    w.append(vec![record(1, true)]).unwrap();
    let opening = drain(&mut w);
    ack_from(&mut w, &opening, &[1, 2, 3, 4, 5]);
    let first = drain(&mut w);
    ack_from(&mut w, &first, &[1, 2, 3, 4]);
    for _ in 0..3 {
        w.handle_tick();
    }
    let repaired: Vec<NodeId> = std::iter::from_fn(|| w.poll_repair()).map(|j| j.node).collect();
    assert_eq!(repaired, vec![NodeId(5)], "node 6 never answered: where it stands is unknown");
    let ack = EpochAck {
        pg: w.geometry().pg_ref(PgId(0)),
        node: NodeId(6),
        epochs: Epochs::INITIAL,
        scl: Lsn(0),
        highest_lsn: Lsn(0),
        vdl_hint: Lsn(0),
        truncations: Vec::new(),
    };
    w.handle_reply(NodeId(6), Message::EpochAck(ack));
    w.handle_tick();
    w.handle_tick();
    assert_eq!(w.poll_repair().map(|j| (j.node, j.target)), Some((NodeId(6), Lsn(1))));
}

#[test]
fn a_member_that_forgot_the_vdl_it_was_told_is_told_again() {
    let mut w = opened();
    w.append(vec![record(1, true)]).unwrap();
    for _ in 0..2 {
        let sent = drain(&mut w);
        ack_from(&mut w, &sent, &[1, 2, 3, 4, 5, 6]);
    }
    let vdl = w.vdl();
    assert!(vdl > Lsn(0));
    w.handle_tick();
    assert!(
        drain(&mut w).iter().all(|t| matches!(&t.message, Message::AppendBatch(b) if b.records.is_empty())),
        "the idle PG's heartbeats"
    );
    let member = w.membership(PgId(0)).current().members()[0];
    let pg = w.geometry().pg_ref(PgId(0));
    let floor_ack = |told: Lsn| protocol::messages::FloorAck {
        pg,
        node: member,
        floor: Lsn(0),
        scl: vdl,
        vdl: told,
        replace: None,
    };
    // A node that restarted reports no VDL told: it gets a heartbeat with the current one.
    let restarted = floor_ack(Lsn(0));
    w.handle_reply(member, Message::FloorAck(restarted));
    let told: Vec<Transmit> = drain(&mut w);
    assert!(
        matches!(&told[..], [t] if t.node == member
            && matches!(&t.message, Message::AppendBatch(b) if b.records.is_empty() && b.vdl == vdl)),
        "{told:?}"
    );
    // One that knows VDL already is left alone.
    let knowing = floor_ack(vdl);
    w.handle_reply(member, Message::FloorAck(knowing));
    assert!(drain(&mut w).is_empty());
}
