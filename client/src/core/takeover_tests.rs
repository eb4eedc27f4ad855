//! Takeover rounds against scripted answers (no I/O): a round ends as soon as every request is
//! answered or known failed, without waiting for a timer.

use protocol::messages::Status;
use protocol::placement::{ClusterMap, NodeInfo};
use protocol::{AzId, Message, NodeId, VolumeId};

use super::takeover::{Takeover, TakeoverError};
use super::VolumeGeometry;

fn cluster() -> ClusterMap {
    let nodes = (1..=6)
        .map(|id| NodeInfo {
            id: NodeId(id),
            az: AzId(((id - 1) / 2) as u16),
            addr: ([127, 0, 0, 1], 7000).into(),
            name: format!("node-{id}"),
        })
        .collect();
    ClusterMap::new(nodes).unwrap()
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
