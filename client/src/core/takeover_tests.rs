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
