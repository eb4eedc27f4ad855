//! Membership changes in the writer core (`writer::membership`), against scripted replies on a
//! nine-node cluster (three per AZ, so each AZ has one spare for any PG).

use bytes::Bytes;
use protocol::messages::{AppendAck, MembershipAck};
use protocol::placement::ClusterMap;
use protocol::quorum::Membership;
use protocol::{Lsn, Message, NodeId, PageId, PgId, RecordKind, VolumeId};

use super::writer::{NewRecord, Transmit, WriterCore, WriterLimits, WriterStart};
use super::VolumeGeometry;

fn cluster() -> ClusterMap {
    super::test_cluster(3)
}

fn record(cpl: bool) -> NewRecord {
    NewRecord {
        page: PageId(1),
        kind: RecordKind::PageImage,
        payload: Bytes::from_static(b"row"),
        cpl,
        lsn: None,
    }
}

fn drain(w: &mut WriterCore) -> Vec<Transmit> {
    std::iter::from_fn(|| w.poll_transmit()).collect()
}

/// Acks every append batch in `sent` to one of `nodes`, each reporting `scl` (or the batch's
/// last LSN).
fn ack(w: &mut WriterCore, sent: &[Transmit], nodes: &[NodeId], scl: Option<Lsn>) {
    for t in sent.iter().filter(|t| nodes.contains(&t.node)) {
        if let Message::AppendBatch(b) = &t.message {
            let last = b.records.last().map_or(Lsn(0), |r| r.lsn());
            let first = b.records.first().map_or(Lsn(0), |r| r.lsn());
            let scl = scl.unwrap_or(last);
            let ack = AppendAck {
                pg: b.pg,
                node: t.node,
                epochs: b.epochs,
                first_lsn: first,
                last_lsn: last,
                scl,
                credit_bytes: 1 << 20,
            };
            w.handle_reply(t.node, Message::AppendAck(ack));
        }
    }
}

/// Stores every membership step in `sent` at `nodes` (with SCL `scl`).
fn store_step(w: &mut WriterCore, sent: &[Transmit], nodes: &[NodeId], scl: Lsn) -> Option<Membership> {
    let mut stored = None;
    for t in sent.iter().filter(|t| nodes.contains(&t.node)) {
        if let Message::MembershipChange(c) = &t.message {
            stored = Some(c.membership);
            let ack = MembershipAck {
                pg: c.pg,
                node: t.node,
                epochs: c.epochs,
                membership_epoch: c.membership.epoch(),
                scl,
            };
            w.handle_reply(t.node, Message::MembershipAck(ack));
        }
    }
    stored
}

struct Opened {
    w: WriterCore,
    members: Vec<NodeId>,
}

/// A writer with PG 0 open and one record durable at every member.
fn opened(limits: WriterLimits) -> Opened {
    let geometry = VolumeGeometry::new(VolumeId(1), 4096, 100).unwrap();
    let mut w = WriterCore::new(geometry, cluster(), limits, WriterStart::fresh());
    let members = w.members(PgId(0));
    assert_eq!(members.len(), 6);
    w.append(vec![record(true)]).unwrap();
    let opening = drain(&mut w);
    ack(&mut w, &opening, &members, None);
    let first = drain(&mut w);
    ack(&mut w, &first, &members, None);
    assert_eq!(w.vdl(), Lsn(1));
    Opened { w, members }
}

fn ids(t: &[Transmit], pred: impl Fn(&Message) -> bool) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = t.iter().filter(|t| pred(&t.message)).map(|t| t.node).collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

#[test]
fn during_a_change_a_batch_is_durable_only_at_four_of_each_set() {
    let Opened { mut w, members } = opened(WriterLimits::default());
    let leaving = members[0];
    assert_eq!(w.replace_node(leaving), vec![PgId(0)]);
    let change = w.change(PgId(0)).expect("a change started");
    let joining = change.joining;
    assert!(!members.contains(&joining));
    let steps = drain(&mut w);
    assert_eq!(
        ids(&steps, |m| matches!(m, Message::MembershipChange(_))).len(),
        7,
        "both sets hear the step"
    );
    w.append(vec![record(true)]).unwrap();
    let batch = drain(&mut w);
    assert_eq!(ids(&batch, |m| matches!(m, Message::AppendBatch(b) if !b.records.is_empty())).len(), 7);
    // The leaving node and three others: four of the old set, three of the new.
    let old_only = [leaving, members[1], members[2], members[3]];
    ack(&mut w, &batch, &old_only, None);
    assert_eq!(w.vdl(), Lsn(1), "four of the old set alone are not enough");
    ack(&mut w, &batch, &[joining], None);
    assert_eq!(w.vdl(), Lsn(2), "now four of the new set too");
}

#[test]
fn the_planted_bug_counts_the_new_set_alone() {
    let limits = WriterLimits { plant_change_counts_new_set_only: true, ..WriterLimits::default() };
    let Opened { mut w, members } = opened(limits);
    w.replace_node(members[0]);
    let joining = w.change(PgId(0)).unwrap().joining;
    drain(&mut w);
    w.append(vec![record(true)]).unwrap();
    let batch = drain(&mut w);
    ack(&mut w, &batch, &[joining, members[1], members[2], members[3]], None);
    assert_eq!(w.vdl(), Lsn(2), "three of the old set: a real writer would wait");
}

#[test]
fn a_change_completes_once_the_joining_segment_is_complete() {
    let Opened { mut w, members } = opened(WriterLimits::default());
    let leaving = members[5];
    w.replace_node(leaving);
    let joining = w.change(PgId(0)).unwrap().joining;
    let steps = drain(&mut w);
    let mut everyone = members.clone();
    everyone.push(joining);
    let joint = store_step(&mut w, &steps, &everyone, Lsn(0)).expect("a step was sent");
    assert!(joint.is_joint());
    assert!(w.change(PgId(0)).unwrap().joint_counted);
    // The joining segment has nothing yet: the change waits for it (and asks it where it is).
    for _ in 0..WriterLimits::default().resend_after_ticks {
        w.handle_tick();
    }
    let asked = drain(&mut w);
    assert!(ids(&asked, |m| matches!(m, Message::AppendBatch(_))).contains(&joining));
    assert!(!asked
        .iter()
        .any(|t| matches!(&t.message, Message::MembershipChange(c) if !c.membership.is_joint())));
    // Hydrated through the PG's last LSN: the final step goes out.
    ack(&mut w, &asked, &[joining], Some(Lsn(1)));
    w.handle_tick();
    let final_step = drain(&mut w);
    let new_set: Vec<NodeId> = members.iter().copied().filter(|n| *n != leaving).chain([joining]).collect();
    let stored = store_step(&mut w, &final_step, &new_set[..4], Lsn(1)).expect("the final step");
    assert!(!stored.is_joint() && stored.epoch() > joint.epoch());
    assert_eq!(w.change(PgId(0)), None);
    let mut now: Vec<NodeId> = w.members(PgId(0));
    now.sort();
    let mut expect = new_set.clone();
    expect.sort();
    assert_eq!(now, expect);
    w.append(vec![record(true)]).unwrap();
    let batch = drain(&mut w);
    assert!(!batch.iter().any(|t| t.node == leaving), "the replaced node is written no more");
    ack(&mut w, &batch, &new_set[..4], None);
    assert_eq!(w.vdl(), Lsn(2));
    // The replaced node never stored the final step: when it answers again it is told.
    w.handle_node_down(leaving);
    w.handle_node_up(leaving);
    let told = drain(&mut w);
    let to_it: Vec<&Transmit> = told.iter().filter(|t| t.node == leaving).collect();
    assert!(
        matches!(to_it.as_slice(), [Transmit { message: Message::MembershipChange(c), .. }] if c.membership == stored),
        "{to_it:?}"
    );
    store_step(&mut w, &told, &[leaving], Lsn(0));
    w.handle_node_down(leaving);
    w.handle_node_up(leaving);
    assert!(drain(&mut w).iter().all(|t| t.node != leaving), "told once it stored it");
}

#[test]
fn a_node_down_too_long_is_replaced_and_the_change_reversed_when_it_returns() {
    let limits = WriterLimits { replace_after_ticks: Some(3), ..WriterLimits::default() };
    let Opened { mut w, members } = opened(limits);
    let leaving = members[2];
    w.handle_node_down(leaving);
    w.handle_tick();
    assert_eq!(w.change(PgId(0)), None, "not down long enough yet");
    for _ in 0..3 {
        w.handle_tick();
    }
    let change = w.change(PgId(0)).expect("replaced after three ticks");
    assert_eq!(change.leaving, leaving);
    let steps = drain(&mut w);
    let mut others = members.clone();
    others.retain(|n| *n != leaving);
    store_step(&mut w, &steps, &[change.joining], Lsn(0));
    let joint = store_step(&mut w, &steps, &others, Lsn(1)).unwrap();
    assert!(joint.is_joint());
    // The node answers again before the joining segment is complete: back to the old set.
    w.handle_node_up(leaving);
    drain(&mut w);
    w.handle_tick();
    let back = drain(&mut w);
    let reverse = store_step(&mut w, &back, &members[..4], Lsn(1)).expect("the reversing step");
    assert_eq!(reverse.current(), joint.current());
    assert!(!reverse.is_joint());
    assert_eq!(w.change(PgId(0)), None);
    let mut now = w.members(PgId(0));
    now.sort();
    let mut expect = members.clone();
    expect.sort();
    assert_eq!(now, expect);
}

#[test]
fn an_operators_replacement_is_not_reversed() {
    let Opened { mut w, members } = opened(WriterLimits::default());
    w.replace_node(members[1]);
    let joining = w.change(PgId(0)).unwrap().joining;
    let steps = drain(&mut w);
    store_step(&mut w, &steps, &[joining], Lsn(0));
    store_step(&mut w, &steps, &members, Lsn(1));
    w.handle_tick();
    let later = drain(&mut w);
    assert!(
        !later.iter().any(|t| matches!(&t.message, Message::MembershipChange(c) if !c.membership.is_joint())),
        "the leaving node never went down, yet nothing is reversed"
    );
    assert!(w.change(PgId(0)).is_some_and(|c| !c.reversing));
}

#[test]
fn a_recovered_writer_stores_its_adopted_memberships_again_above_every_older_step() {
    use protocol::{Epoch, Epochs, LsnRange};
    let geometry = VolumeGeometry::new(VolumeId(1), 4096, 100).unwrap();
    let map = cluster();
    let old = map.place(VolumeId(1), PgId(0));
    let leaving = old.members()[0];
    let joining = map.replacement(VolumeId(1), PgId(0), &old, leaving, &[]).unwrap();
    let new =
        protocol::quorum::SegmentSet::new(old.members().map(|n| if n == leaving { joining } else { n }))
            .unwrap();
    // The old writer (volume epoch 2) finished a change at its third step.
    let found = Membership::stable(Epoch((2 << 32) + 3), new);
    let start = WriterStart {
        epochs: Epochs { volume: Epoch(3), membership: found.epoch(), ..Epochs::INITIAL },
        vdl: Lsn(10),
        next_lsn: Lsn(21),
        truncation: Some(LsnRange::new(Lsn(10), Lsn(20)).unwrap()),
        earlier_truncations: Vec::new(),
        pgs: vec![(PgId(0), Lsn(10))],
        memberships: vec![(PgId(0), found)],
        retired: vec![(PgId(0), leaving)],
    };
    let mut w = WriterCore::new(geometry, map, WriterLimits::default(), start);
    assert_eq!(w.epochs().membership, Epoch((3 << 32) + 1), "above anything a volume-epoch-2 writer stored");
    let adopted = w.membership(PgId(0));
    assert_eq!((adopted.current(), adopted.epoch()), (&new, Epoch((3 << 32) + 1)));
    for _ in 0..WriterLimits::default().resend_after_ticks {
        w.handle_tick();
    }
    let sent = drain(&mut w);
    let told = ids(&sent, |m| matches!(m, Message::MembershipChange(c) if c.membership == adopted));
    let mut members = new.members().to_vec();
    members.sort();
    assert_eq!(told, members, "every member stores it again");
    // Each is told until it stored it, and again when it comes back (perhaps empty).
    store_step(&mut w, &sent, &members, Lsn(10));
    for _ in 0..WriterLimits::default().resend_after_ticks {
        w.handle_tick();
    }
    assert!(!drain(&mut w).iter().any(|t| matches!(t.message, Message::MembershipChange(_))));
    w.handle_node_down(members[2]);
    w.handle_node_up(members[2]);
    let again = drain(&mut w);
    assert_eq!(ids(&again, |m| matches!(m, Message::MembershipChange(_))), vec![members[2]]);
}

#[test]
fn a_change_whose_joining_node_is_lost_goes_back_even_if_an_operator_asked_for_it() {
    let limits = WriterLimits { replace_after_ticks: Some(3), ..WriterLimits::default() };
    let Opened { mut w, members } = opened(limits);
    w.replace_node(members[4]);
    let joining = w.change(PgId(0)).unwrap().joining;
    let steps = drain(&mut w);
    store_step(&mut w, &steps, &members, Lsn(1));
    store_step(&mut w, &steps, &[joining], Lsn(0));
    assert!(w.change(PgId(0)).unwrap().joint_counted);
    w.handle_node_down(joining);
    for _ in 0..2 {
        w.handle_tick();
        assert!(!w.change(PgId(0)).unwrap().reversing, "not lost long enough yet");
    }
    w.handle_tick();
    assert!(w.change(PgId(0)).unwrap().reversing, "the joining node is lost: back to the old set");
    let back = drain(&mut w);
    store_step(&mut w, &back, &members[..4], Lsn(1));
    assert_eq!(w.change(PgId(0)), None);
    let mut now = w.members(PgId(0));
    now.sort();
    let mut expect = members.clone();
    expect.sort();
    assert_eq!(now, expect);
}

#[test]
fn an_operators_request_passed_on_in_a_floor_ack_replaces_the_node_once() {
    use protocol::messages::FloorAck;
    let Opened { mut w, members } = opened(WriterLimits::default());
    let pg = w.geometry().pg_ref(PgId(0));
    let floor_ack =
        |replace| FloorAck { pg, node: members[0], floor: Lsn(0), scl: Lsn(1), vdl: Lsn(1), replace };
    let plain = floor_ack(None);
    w.handle_reply(members[0], Message::FloorAck(plain));
    assert_eq!(w.change(PgId(0)), None);
    let asked = floor_ack(Some(members[3]));
    w.handle_reply(members[0], Message::FloorAck(asked));
    let change = w.change(PgId(0)).expect("the change started");
    assert_eq!(change.leaving, members[3]);
    drain(&mut w);
    // Every floor ack repeats the request for a while: it is done once.
    w.handle_reply(members[1], Message::FloorAck(asked));
    assert!(drain(&mut w).is_empty());
    // A node the cluster map does not name is ignored.
    w.handle_reply(members[1], Message::FloorAck(floor_ack(Some(NodeId(77)))));
    assert!(drain(&mut w).is_empty());
}
