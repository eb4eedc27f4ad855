//! Takeover rounds against scripted answers (no I/O): a round ends as soon as every request is
//! answered or known failed, without waiting for a timer.

use protocol::messages::Status;
use protocol::placement::ClusterMap;
use protocol::{AzId, Message, NodeId, VolumeId};

use super::takeover::{Takeover, TakeoverError};
use super::VolumeGeometry;

fn cluster() -> ClusterMap {
    super::test_cluster(2)
}

fn takeover() -> Takeover {
    Takeover::new(VolumeGeometry::new(VolumeId(1), 4096, 100).unwrap(), cluster(), 1000)
}

fn empty_status(node: NodeId) -> Message {
    Message::Status(Status { node, az: AzId(0), segments: Vec::new() })
}

/// Answers the survey from `answering`, fails it at the others; returns the next round's requests.
fn survey(takeover: &mut Takeover, answering: &[u32]) -> Vec<(NodeId, Message)> {
    let requests: Vec<(NodeId, Message)> = std::iter::from_fn(|| takeover.poll_request()).collect();
    assert_eq!(requests.len(), 6);
    for (node, request) in &requests {
        if answering.contains(&node.0) {
            takeover.handle_reply(*node, empty_status(*node));
        } else {
            takeover.handle_failure(*node, request);
        }
    }
    std::iter::from_fn(|| takeover.poll_request()).collect()
}

#[test]
fn a_round_ends_once_the_nodes_that_did_not_answer_are_known_unreachable() {
    let mut takeover = takeover();
    let bumps = survey(&mut takeover, &[1, 2, 3, 4]);
    assert!(takeover.outcome().is_none());
    assert_eq!(bumps.len(), 6, "every member of PG 0 is sent the new epoch");
    assert!(bumps.iter().all(|(_, m)| matches!(m, Message::EpochBump(_))), "{bumps:?}");
}

#[test]
fn a_round_with_only_some_failures_known_still_waits_for_the_rest() {
    let mut takeover = takeover();
    let requests: Vec<(NodeId, Message)> = std::iter::from_fn(|| takeover.poll_request()).collect();
    for (node, request) in &requests[..5] {
        takeover.handle_failure(*node, request);
    }
    assert!(takeover.is_waiting(), "node 6 has neither answered nor failed");
    assert!(!takeover.has_requests());
}

#[test]
fn a_failure_reported_after_the_answer_changes_nothing() {
    let mut takeover = takeover();
    let requests: Vec<(NodeId, Message)> = std::iter::from_fn(|| takeover.poll_request()).collect();
    let (node, request) = &requests[0];
    takeover.handle_reply(*node, empty_status(*node));
    takeover.handle_failure(*node, request);
    for (node, request) in &requests[1..3] {
        takeover.handle_reply(*node, empty_status(*node));
        takeover.handle_failure(*node, request);
    }
    for (node, request) in &requests[3..] {
        takeover.handle_failure(*node, request);
    }
    assert!(takeover.outcome().is_none(), "three answers are a read quorum: {:?}", takeover.outcome());
    assert!(takeover.has_requests(), "the bump round started");
}

#[test]
fn too_few_answers_and_the_rest_failed_ends_the_takeover_unavailable() {
    let mut takeover = takeover();
    let next = survey(&mut takeover, &[1, 2]);
    assert!(next.is_empty());
    assert!(
        matches!(takeover.outcome(), Some(Err(TakeoverError::Unavailable { .. }))),
        "{:?}",
        takeover.outcome()
    );
}

#[test]
fn a_request_is_waited_for_until_it_is_answered_or_failed() {
    let mut takeover = takeover();
    let requests: Vec<(NodeId, Message)> = std::iter::from_fn(|| takeover.poll_request()).collect();
    let ((first, asked), (second, also_asked)) = (&requests[0], &requests[1]);
    assert!(takeover.is_waiting_for(*first, asked) && takeover.is_waiting_for(*second, also_asked));
    takeover.handle_reply(*first, empty_status(*first));
    takeover.handle_failure(*second, also_asked);
    assert!(!takeover.is_waiting_for(*first, asked), "answered");
    assert!(!takeover.is_waiting_for(*second, also_asked), "failed");
    assert!(takeover.is_waiting_for(requests[2].0, &requests[2].1));
}

mod during_a_change {
    use protocol::messages::{EpochAck, SegmentState, SegmentStatus, Status};
    use protocol::placement::ClusterMap;
    use protocol::quorum::{Membership, SegmentSet};
    use protocol::{AzId, Epoch, Epochs, Lsn, Message, NodeId, PgId, VolumeId};

    use super::super::takeover::{Takeover, TakeoverError};
    use super::super::VolumeGeometry;

    /// Nine nodes, three per AZ.
    fn cluster() -> ClusterMap {
        super::super::test_cluster(3)
    }

    /// A takeover whose survey found PG 0 half-way through replacing a placement member by a
    /// spare of its AZ (reported by every node of either set); returns it with the two sets.
    fn surveyed() -> (Takeover, SegmentSet, SegmentSet) {
        let geometry = VolumeGeometry::new(VolumeId(1), 4096, 100).unwrap();
        let map = cluster();
        let old = map.place(VolumeId(1), PgId(0));
        let leaving = old.members()[5];
        let joining = map.replacement(VolumeId(1), PgId(0), &old, leaving, &[]).unwrap();
        let new = SegmentSet::new(old.members().map(|n| if n == leaving { joining } else { n })).unwrap();
        let joint = Membership::transition(Epoch((1 << 32) + 1), old, new).unwrap();
        let mut takeover = Takeover::new(geometry, map, 1000);
        let requests: Vec<(NodeId, Message)> = std::iter::from_fn(|| takeover.poll_request()).collect();
        assert_eq!(requests.len(), 9);
        for (node, _) in &requests {
            let mut segments = Vec::new();
            if joint.contains(*node) {
                segments.push(SegmentStatus {
                    pg: geometry.pg_ref(PgId(0)),
                    epochs: Epochs { membership: joint.epoch(), ..Epochs::INITIAL },
                    scl: Lsn(0),
                    highest_lsn: Lsn(0),
                    floor: Lsn(0),
                    state: SegmentState::Serving,
                    membership: Some(joint),
                });
            }
            takeover.handle_reply(*node, Message::Status(Status { node: *node, az: AzId(0), segments }));
        }
        (takeover, old, new)
    }

    fn bump_answers(takeover: &mut Takeover, answering: &[NodeId]) -> Vec<NodeId> {
        let bumps: Vec<(NodeId, Message)> = std::iter::from_fn(|| takeover.poll_request()).collect();
        let mut bumped: Vec<NodeId> = bumps.iter().map(|(n, _)| *n).collect();
        bumped.sort();
        for (node, request) in &bumps {
            let Message::EpochBump(bump) = request else { panic!("{request:?}") };
            if answering.contains(node) {
                let ack = EpochAck {
                    pg: bump.pg,
                    node: *node,
                    epochs: bump.epochs,
                    scl: Lsn(0),
                    highest_lsn: Lsn(0),
                    vdl_hint: Lsn(0),
                    truncations: Vec::new(),
                };
                takeover.handle_reply(*node, Message::EpochAck(ack));
            } else {
                takeover.handle_failure(*node, request);
            }
        }
        bumped
    }

    #[test]
    fn the_new_epoch_goes_to_both_sets_and_a_fence_needs_three_of_each() {
        let (mut takeover, old, new) = surveyed();
        assert_eq!(
            takeover.epochs().membership,
            Epoch((1 << 32) + 1),
            "a takeover raises no membership epoch: one that never finishes must not lock the live writer out"
        );
        let leaving = *old.members().iter().find(|n| !new.contains(**n)).unwrap();
        let joining = *new.members().iter().find(|n| !old.contains(**n)).unwrap();
        // Three of the old set, only two of them in the new one: the old writer might still
        // collect four of the new set.
        let (a, b) = (old.members()[0], old.members()[1]);
        let bumped = bump_answers(&mut takeover, &[a, b, leaving]);
        assert_eq!(bumped.len(), 7, "both sets are bumped");
        assert!(
            matches!(takeover.outcome(), Some(Err(TakeoverError::Unavailable { pg: PgId(0), .. }))),
            "{:?}",
            takeover.outcome()
        );

        let (mut takeover, _, _) = surveyed();
        bump_answers(&mut takeover, &[a, b, leaving, joining]);
        assert!(takeover.outcome().is_none(), "fenced in both sets: {:?}", takeover.outcome());
        assert!(takeover.has_requests(), "the next survey round");
    }
}

/// Whole takeovers of PG 0 against scripted nodes that hold given records: what the gather,
/// the reads and the refill ask for.
mod what_moves {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use protocol::messages::{
        AppendAck, EpochAck, RecordHeader, RecordHeaders, Records, SegmentState, SegmentStatus, Status,
        TruncateAck,
    };
    use protocol::{
        AzId, Epochs, Lsn, Message, NodeId, PageId, PgId, Record, RecordKind, RecordMeta, VolumeId,
    };

    use super::super::takeover::Takeover;
    use super::super::writer::WriterStart;
    use super::super::VolumeGeometry;

    fn geometry() -> VolumeGeometry {
        VolumeGeometry::new(VolumeId(1), 4096, 100).unwrap()
    }

    /// Record `lsn` of PG 0, chained to `lsn - 1`, a CPL.
    fn record(lsn: u64) -> Record {
        let meta = RecordMeta::after(Lsn(lsn - 1), Lsn(lsn), RecordKind::Marker, PageId(0));
        Record::new(meta, Bytes::new()).unwrap()
    }

    fn drain(takeover: &mut Takeover) -> Vec<(NodeId, Message)> {
        std::iter::from_fn(|| takeover.poll_request()).collect()
    }

    /// The requests of the refill round, each answered from `held` (LSNs per node), until the
    /// takeover ends; returns its outcome and every request made after the truncation.
    fn run(held: &BTreeMap<u32, Vec<u64>>) -> (WriterStart, Vec<(NodeId, Message)>) {
        run_failing_reads_at(held, None)
    }

    /// As `run`, but `failing` never answers a read of records (`handle_failure`).
    fn run_failing_reads_at(
        held: &BTreeMap<u32, Vec<u64>>,
        failing: Option<u32>,
    ) -> (WriterStart, Vec<(NodeId, Message)>) {
        let geometry = geometry();
        let pg = geometry.pg_ref(PgId(0));
        let mut takeover = Takeover::new(geometry, super::cluster(), 1000);
        let holds = |node: NodeId| held.get(&node.0).cloned().unwrap_or_default();
        let status = |node: NodeId| {
            let highest = Lsn(holds(node).last().copied().unwrap_or(0));
            let segment = SegmentStatus {
                pg,
                epochs: Epochs::INITIAL,
                scl: highest,
                highest_lsn: highest,
                floor: Lsn(0),
                state: SegmentState::Serving,
                membership: None,
            };
            Message::Status(Status { node, az: AzId(0), segments: vec![segment] })
        };
        let mut after_truncate = Vec::new();
        let mut truncated = false;
        let mut requests = drain(&mut takeover);
        while !requests.is_empty() {
            for (node, request) in requests {
                if truncated && !matches!(request, Message::Truncate(_)) {
                    after_truncate.push((node, request.clone()));
                }
                if matches!(request, Message::ReadRecords(_)) && Some(node.0) == failing {
                    takeover.handle_failure(node, &request);
                    continue;
                }
                let reply = match request {
                    Message::StatusRequest => status(node),
                    Message::EpochBump(b) => {
                        let highest = Lsn(holds(node).last().copied().unwrap_or(0));
                        Message::EpochAck(EpochAck {
                            pg,
                            node,
                            epochs: b.epochs,
                            scl: highest,
                            highest_lsn: highest,
                            vdl_hint: Lsn(0),
                            truncations: Vec::new(),
                        })
                    }
                    Message::ReadRecordHeaders(r) => {
                        let in_range = holds(node).into_iter().filter(|l| r.range.contains(Lsn(*l)));
                        let headers = in_range.map(|l| RecordHeader::of(&record(l))).collect();
                        Message::RecordHeaders(RecordHeaders {
                            pg,
                            node,
                            scl: Lsn(0),
                            range: r.range,
                            more: false,
                            headers,
                        })
                    }
                    Message::Truncate(t) => {
                        truncated = true;
                        Message::TruncateAck(TruncateAck { pg, node, epochs: t.epochs, range: t.range })
                    }
                    Message::ReadRecords(r) => {
                        let in_range = holds(node).into_iter().filter(|l| r.range.contains(Lsn(*l)));
                        let records = in_range.map(record).collect();
                        Message::Records(Records { pg, node, scl: Lsn(0), more: false, records })
                    }
                    Message::AppendBatch(b) => Message::AppendAck(AppendAck {
                        pg,
                        node,
                        epochs: b.epochs,
                        first_lsn: b.records[0].lsn(),
                        last_lsn: b.records.last().unwrap().lsn(),
                        scl: Lsn(0),
                        credit_bytes: 0,
                    }),
                    other => panic!("unexpected {other:?}"),
                };
                takeover.handle_reply(node, reply);
            }
            requests = drain(&mut takeover);
        }
        let start = takeover.outcome().expect("the takeover ended").clone().expect("recovered");
        (start, after_truncate)
    }

    /// (node, LSNs) of every batch sent.
    fn batches(requests: &[(NodeId, Message)]) -> Vec<(u32, Vec<u64>)> {
        let mut out: Vec<(u32, Vec<u64>)> = requests
            .iter()
            .filter_map(|(node, m)| match m {
                Message::AppendBatch(b) => Some((node.0, b.records.iter().map(|r| r.lsn().0).collect())),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    fn reads(requests: &[(NodeId, Message)]) -> Vec<(u32, Lsn, Lsn)> {
        let reads = requests.iter().filter_map(|(node, m)| match m {
            Message::ReadRecords(r) => Some((node.0, r.range.after(), r.range.through())),
            _ => None,
        });
        reads.collect()
    }

    #[test]
    fn a_record_every_member_holds_is_neither_fetched_nor_refilled() {
        let held: BTreeMap<u32, Vec<u64>> = (1..=6).map(|n| (n, vec![1, 2, 3])).collect();
        let (start, refill) = run(&held);
        assert_eq!(start.vdl, Lsn(3));
        assert!(refill.is_empty(), "nothing moves: {refill:?}");
    }

    #[test]
    fn a_record_a_write_quorum_holds_is_left_to_gossip() {
        let held: BTreeMap<u32, Vec<u64>> =
            (1..=6).map(|n| (n, if n <= 4 { vec![1, 2] } else { vec![1] })).collect();
        let (start, refill) = run(&held);
        assert_eq!(start.vdl, Lsn(2));
        assert!(refill.is_empty(), "2 is on four of six: {refill:?}");
    }

    #[test]
    fn a_record_only_three_members_hold_is_read_once_and_sent_only_to_the_others() {
        // 1 and 2 everywhere; 3 on nodes 1-3; 4 on node 1 only.
        let held: BTreeMap<u32, Vec<u64>> = (1..=6)
            .map(|n| {
                let mut lsns = vec![1, 2];
                lsns.extend((n <= 3).then_some(3));
                lsns.extend((n == 1).then_some(4));
                (n, lsns)
            })
            .collect();
        let (start, refill) = run(&held);
        assert_eq!(start.vdl, Lsn(4));
        assert_eq!(reads(&refill), vec![(1, Lsn(2), Lsn(4))], "one read, of the one node holding both");
        assert_eq!(
            batches(&refill),
            vec![(2, vec![4]), (3, vec![4]), (4, vec![3, 4]), (5, vec![3, 4]), (6, vec![3, 4])],
            "each record goes only to the members lacking it"
        );
    }

    #[test]
    fn records_on_different_members_are_read_from_a_holder_of_each() {
        // 2 on nodes 1-3, 3 on nodes 4-6 (each below a write quorum), chained 1 → 2 → 3.
        let held: BTreeMap<u32, Vec<u64>> =
            (1..=6).map(|n| (n, if n <= 3 { vec![1, 2] } else { vec![1, 3] })).collect();
        let (start, refill) = run(&held);
        assert_eq!(start.vdl, Lsn(3));
        let reads = reads(&refill);
        assert_eq!(reads.len(), 2, "no single node holds both: {reads:?}");
        assert!(
            reads.iter().any(|(n, _, t)| *n <= 3 && *t == Lsn(2))
                && reads.iter().any(|(n, _, t)| *n > 3 && *t == Lsn(3))
        );
        assert_eq!(
            batches(&refill),
            vec![(1, vec![3]), (2, vec![3]), (3, vec![3]), (4, vec![2]), (5, vec![2]), (6, vec![2])]
        );
    }

    #[test]
    fn a_read_that_fails_is_asked_of_another_holder() {
        let held: BTreeMap<u32, Vec<u64>> =
            (1..=6).map(|n| (n, if n <= 3 { vec![1, 2] } else { vec![1] })).collect();
        // The first source asked is node 1 (the lowest holder).
        let (start, refill) = run_failing_reads_at(&held, Some(1));
        assert_eq!(start.vdl, Lsn(2));
        let reads = reads(&refill);
        assert_eq!(reads.len(), 2, "the failed read and its retry: {reads:?}");
        assert_eq!(reads[0].0, 1, "{reads:?}");
        assert!(reads[1].0 == 2 || reads[1].0 == 3, "{reads:?}");
        assert_eq!(batches(&refill), vec![(4, vec![2]), (5, vec![2]), (6, vec![2])]);
    }
}
