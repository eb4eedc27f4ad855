//! `Links`: the writer's view of its connection to each node, and every decision about it —
//! when a node counts as silent, when to dial it again and how long a dial may take — without
//! I/O and without a clock, so the QUIC drivers (recovery and appends) and the simulator run
//! the same policy.
//!
//! Calling contract (quinn-proto style): the driver reports what happened — `on_sent` when a
//! request or frame that expects an answer leaves for a node (`on_sent_counted` and
//! `on_transport` where it can also tell what its transport received), `on_heard` for any
//! answer from it, `handle_connected` / `handle_dial_failed` for the outcome of a dial,
//! `handle_closed` when the transport reports the connection gone — and carries out what the
//! core asks: `poll_dial` yields a node to dial with the attempt's time limit, `poll_lost` a
//! node that went silent (drop its connection, stop its traffic) or stayed unreachable while
//! something waited for it (stop waiting). `poll_timeout` says when `handle_timeout(now)` must
//! be called next.
//!
//! Invariants: every node of the map is in exactly one state; a node is dialled only from
//! `Waiting`, at most one dial per node at a time; nothing waits on a node longer than
//! `silence_max` without a `Lost` being reported, nor longer than `unacked_max` on one whose
//! transport received nothing since; dials of an unreachable node are spaced by a
//! backoff doubling from `dial_backoff_min` to `dial_backoff_max`, starting over once a dial
//! succeeds.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use protocol::NodeId;

/// Named bounds of the link policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLimits {
    /// Longest wait for an answer from a node before it counts as silent: a process that died
    /// (or restarted) behind a connection looks alive until QUIC's idle timeout.
    pub silence_max: Duration,
    /// Longest wait, where the driver reports its transport's receive count, for any packet at
    /// all from a node after a send to it: a live peer acknowledges within its ack delay
    /// (25 ms) and a round trip however busy its application is; a process that died or
    /// restarted behind the connection never does.
    pub unacked_max: Duration,
    /// Wait after the first failed dial; doubles with each further failure.
    pub dial_backoff_min: Duration,
    /// Longest wait between dials of a node that stays unreachable. A dial of a node that is
    /// down costs one packet, so this stays short: a node that returns is found quickly.
    pub dial_backoff_max: Duration,
    /// Shortest time limit of one dial attempt. A handshake whose first packet met a closed
    /// port is retried by QUIC only after about a second, so a node that returns is reached
    /// sooner by a fresh attempt than by waiting on an old one.
    pub dial_attempt_min: Duration,
    /// Longest time limit of one dial attempt (the configured connect timeout).
    pub dial_attempt_max: Duration,
}

/// Round trips (of the node's last measured RTT) one dial attempt may take.
pub const DIAL_ATTEMPT_RTTS: u32 = 8;

/// Defaults sized for one data centre: a node's fsync and a read of a few MiB answer well
/// within `silence_max`, and a node that returns is dialled within half a second.
pub const LINK_LIMITS_DEFAULT: LinkLimits = LinkLimits {
    silence_max: Duration::from_millis(500),
    unacked_max: Duration::from_millis(150),
    dial_backoff_min: Duration::from_millis(50),
    dial_backoff_max: Duration::from_millis(250),
    dial_attempt_min: Duration::from_millis(250),
    dial_attempt_max: Duration::from_secs(5),
};

impl Default for LinkLimits {
    fn default() -> Self {
        LINK_LIMITS_DEFAULT
    }
}

/// One node's connection, as the core sees it. `failures` counts dials failed in a row;
/// `awaiting_since` is when the oldest send still unanswered went out (or was held back);
/// `unacked_since` when the oldest send the transport has heard nothing after went out, with
/// the transport's receive count then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Connected {
        awaiting_since: Option<Instant>,
        unacked_since: Option<(Instant, u64)>,
    },
    /// No connection; the next dial may start at `next_at`.
    Waiting {
        next_at: Instant,
        failures: u32,
    },
    /// A dial is in flight (the driver bounds it by the attempt's time limit); `waited_out` once
    /// something waited `silence_max` for it: nothing more waits until the dial's outcome.
    Dialing {
        failures: u32,
        awaiting_since: Option<Instant>,
        waited_out: bool,
    },
}

/// Why `poll_lost` reports a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// It was connected and left something unanswered for `silence_max` (or its transport
    /// received nothing for `unacked_max` after a send): drop the connection and stop its
    /// traffic; it is being dialled again.
    Silent,
    /// It is being dialled and something has waited for it for `silence_max`: stop waiting,
    /// and do not wait for it again before the dial's outcome (`may_wait_for`).
    Unreachable,
}

/// A dial the driver must make: connect to `node`, giving up after `timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dial {
    pub node: NodeId,
    pub timeout: Duration,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Links {
    limits: LinkLimits,
    states: BTreeMap<NodeId, LinkState>,
    /// Each node's round-trip time when last connected: how long a dial of it should take.
    rtts: BTreeMap<NodeId, Duration>,
    lost: VecDeque<(NodeId, Lost)>,
}

impl Links {
    /// Every node starts unconnected, to be dialled at once.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>, limits: LinkLimits, now: Instant) -> Links {
        let waiting = LinkState::Waiting { next_at: now, failures: 0 };
        let states = nodes.into_iter().map(|n| (n, waiting)).collect();
        Links { limits, states, rtts: BTreeMap::new(), lost: VecDeque::new() }
    }

    pub fn limits(&self) -> LinkLimits {
        self.limits
    }

    /// A node new to the cluster map: dialled at once, like every node at the start.
    pub fn add_node(&mut self, node: NodeId, now: Instant) {
        self.states.entry(node).or_insert(LinkState::Waiting { next_at: now, failures: 0 });
    }

    pub fn state(&self, node: NodeId) -> Option<LinkState> {
        self.states.get(&node).copied()
    }

    pub fn is_connected(&self, node: NodeId) -> bool {
        matches!(self.state(node), Some(LinkState::Connected { .. }))
    }

    pub fn is_dialing(&self, node: NodeId) -> bool {
        matches!(self.state(node), Some(LinkState::Dialing { .. }))
    }

    /// True if a request for `node` may wait for its dial in flight: not once something has
    /// waited `silence_max` for this dial.
    pub fn may_wait_for(&self, node: NodeId) -> bool {
        matches!(self.state(node), Some(LinkState::Dialing { waited_out: false, .. }))
    }

    /// Something that expects an answer left for `node` (or, while it is being dialled, waits
    /// to leave).
    pub fn on_sent(&mut self, node: NodeId, now: Instant) {
        if let Some(LinkState::Connected { awaiting_since, .. } | LinkState::Dialing { awaiting_since, .. }) =
            self.states.get_mut(&node)
        {
            awaiting_since.get_or_insert(now);
        }
    }

    /// As `on_sent`, from a driver that can tell what its transport has received from the node
    /// (`received`: a count that moves with every packet from it).
    pub fn on_sent_counted(&mut self, node: NodeId, now: Instant, received: u64) {
        self.on_sent(node, now);
        if let Some(LinkState::Connected { unacked_since, .. }) = self.states.get_mut(&node) {
            unacked_since.get_or_insert((now, received));
        }
    }

    /// The nodes whose transport's receive count `handle_timeout(now)` needs (their oldest
    /// unacknowledged send is `unacked_max` old): what the driver reports with `on_transport`.
    pub fn transport_due(&self, now: Instant) -> Vec<NodeId> {
        let unacked_max = self.limits.unacked_max;
        let due = |s: &LinkState| matches!(s, LinkState::Connected { unacked_since: Some((t, _)), .. } if now >= *t + unacked_max);
        self.states.iter().filter(|(_, s)| due(s)).map(|(n, _)| *n).collect()
    }

    /// The transport's receive count for `node` now: if it moved since the oldest send not yet
    /// acknowledged, the node's transport is alive.
    pub fn on_transport(&mut self, node: NodeId, received: u64) {
        if let Some(LinkState::Connected { unacked_since, .. }) = self.states.get_mut(&node) {
            if unacked_since.is_some_and(|(_, then)| then != received) {
                *unacked_since = None;
            }
        }
    }

    /// `node` answered: it is not silent.
    pub fn on_heard(&mut self, node: NodeId) {
        if let Some(LinkState::Connected { awaiting_since, unacked_since }) = self.states.get_mut(&node) {
            *awaiting_since = None;
            *unacked_since = None;
        }
    }

    /// The next dial to make, if one is due.
    pub fn poll_dial(&mut self, now: Instant) -> Option<Dial> {
        let (node, failures) = self.states.iter().find_map(|(node, state)| match state {
            LinkState::Waiting { next_at, failures } if *next_at <= now => Some((*node, *failures)),
            _ => None,
        })?;
        self.states.insert(node, LinkState::Dialing { failures, awaiting_since: None, waited_out: false });
        Some(Dial { node, timeout: self.attempt_timeout(node) })
    }

    /// A node reached before gets a few of its round trips; one never reached gets the whole
    /// connect timeout, as a first handshake over a slow path may need it (what waits for the
    /// dial gives up after `silence_max` all the same).
    fn attempt_timeout(&self, node: NodeId) -> Duration {
        let (min, max) =
            (self.limits.dial_attempt_min, self.limits.dial_attempt_max.max(self.limits.dial_attempt_min));
        self.rtts.get(&node).map_or(max, |rtt| (*rtt * DIAL_ATTEMPT_RTTS).clamp(min, max))
    }

    /// A dial succeeded (its handshake measured `rtt`): the node is connected, and its backoff
    /// starts over.
    pub fn handle_connected(&mut self, node: NodeId, rtt: Duration) {
        if let Some(state) = self.states.get_mut(&node) {
            *state = LinkState::Connected { awaiting_since: None, unacked_since: None };
            self.rtts.insert(node, rtt);
        }
    }

    /// A dial failed or timed out: wait the backoff, then dial again.
    pub fn handle_dial_failed(&mut self, node: NodeId, now: Instant) {
        let limits = self.limits;
        if let Some(state) = self.states.get_mut(&node) {
            if let LinkState::Dialing { failures, .. } = *state {
                let backoff = doubled(limits.dial_backoff_min, failures).min(limits.dial_backoff_max);
                *state = LinkState::Waiting { next_at: now + backoff, failures: failures.saturating_add(1) };
            }
        }
    }

    /// The transport reports the connection to `node` gone: dial again at once. Returns true if
    /// the node was connected (its traffic must stop until it is back).
    pub fn handle_closed(&mut self, node: NodeId, now: Instant) -> bool {
        let Some(state) = self.states.get_mut(&node) else { return false };
        let was_connected = matches!(state, LinkState::Connected { .. });
        if was_connected {
            *state = LinkState::Waiting { next_at: now, failures: 0 };
        }
        was_connected
    }

    /// The driver dropped everything it had in flight (recovery handing over to the writer's
    /// driver): its dials are due again, and nothing it sent is awaited any more.
    pub fn abandon_in_flight(&mut self, now: Instant) {
        for state in self.states.values_mut() {
            match state {
                LinkState::Dialing { failures, .. } => {
                    *state = LinkState::Waiting { next_at: now, failures: *failures }
                }
                LinkState::Connected { awaiting_since, unacked_since } => {
                    *awaiting_since = None;
                    *unacked_since = None;
                }
                LinkState::Waiting { .. } => {}
            }
        }
    }

    /// Finds the nodes something has waited on for `silence_max` (see `poll_lost`).
    pub fn handle_timeout(&mut self, now: Instant) {
        let (silence_max, unacked_max) = (self.limits.silence_max, self.limits.unacked_max);
        let expired = |since: &Option<Instant>| since.is_some_and(|t| now >= t + silence_max);
        let unacked = |since: &Option<(Instant, u64)>| since.is_some_and(|(t, _)| now >= t + unacked_max);
        let mut lost = Vec::new();
        for (node, state) in &mut self.states {
            match state {
                LinkState::Connected { awaiting_since, unacked_since }
                    if expired(awaiting_since) || unacked(unacked_since) =>
                {
                    *state = LinkState::Waiting { next_at: now, failures: 0 };
                    lost.push((*node, Lost::Silent));
                }
                LinkState::Dialing { awaiting_since, waited_out, .. } if expired(awaiting_since) => {
                    *awaiting_since = None;
                    *waited_out = true;
                    lost.push((*node, Lost::Unreachable));
                }
                _ => {}
            }
        }
        self.lost.extend(lost);
    }

    /// A node found silent or unreachable, for the driver to act on.
    pub fn poll_lost(&mut self) -> Option<(NodeId, Lost)> {
        self.lost.pop_front()
    }

    /// When `handle_timeout` must be called next (a silence running out) or `poll_dial` may
    /// yield next (a backoff running out).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (silence_max, unacked_max) = (self.limits.silence_max, self.limits.unacked_max);
        self.states
            .values()
            .filter_map(|state| match state {
                LinkState::Connected { awaiting_since, unacked_since } => {
                    let unacked = unacked_since.map(|(t, _)| t + unacked_max);
                    awaiting_since.map(|t| t + silence_max).into_iter().chain(unacked).min()
                }
                LinkState::Dialing { awaiting_since, .. } => awaiting_since.map(|t| t + silence_max),
                LinkState::Waiting { next_at, .. } => Some(*next_at),
            })
            .min()
    }
}

/// `base` doubled `times` times, without overflow.
fn doubled(base: Duration, times: u32) -> Duration {
    base.saturating_mul(1u32.checked_shl(times.min(31)).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const LAN_RTT: Duration = Duration::from_micros(200);

    fn links(now: Instant) -> Links {
        Links::new([NodeId(1), NodeId(2)], LinkLimits::default(), now)
    }

    fn connect_all(links: &mut Links, now: Instant) {
        while let Some(dial) = links.poll_dial(now) {
            links.handle_connected(dial.node, LAN_RTT);
        }
    }

    /// Fails dials of node 1 until `until`; returns when each dial started and its time limit.
    fn fail_dials(links: &mut Links, mut now: Instant, until: Instant) -> Vec<(Instant, Duration)> {
        let mut dials = Vec::new();
        while now < until {
            let dial = links.poll_dial(now).expect("due");
            dials.push((now, dial.timeout));
            links.handle_dial_failed(NodeId(1), now + dial.timeout);
            now = links.poll_timeout().expect("waiting");
        }
        dials
    }

    #[test]
    fn every_node_is_dialled_once_at_the_start_and_not_again_while_the_dial_is_in_flight() {
        let t0 = Instant::now();
        let mut links = links(t0);
        let dials: Vec<NodeId> = std::iter::from_fn(|| links.poll_dial(t0)).map(|d| d.node).collect();
        assert_eq!(dials, vec![NodeId(1), NodeId(2)]);
        assert_eq!(links.poll_dial(t0 + 10 * MS), None);
        assert_eq!(links.poll_timeout(), None, "nothing is timed while the dials are in flight");
    }

    #[test]
    fn a_node_that_leaves_a_request_unanswered_for_the_silence_bound_is_lost_and_redialled_at_once() {
        let t0 = Instant::now();
        let mut links = links(t0);
        connect_all(&mut links, t0);
        links.on_sent(NodeId(1), t0);
        links.on_sent(NodeId(1), t0 + 100 * MS);
        let silent_at = t0 + LINK_LIMITS_DEFAULT.silence_max;
        assert_eq!(links.poll_timeout(), Some(silent_at), "the oldest unanswered send sets the clock");
        links.handle_timeout(silent_at - MS);
        assert_eq!(links.poll_lost(), None);
        links.handle_timeout(silent_at);
        assert_eq!(links.poll_lost(), Some((NodeId(1), Lost::Silent)));
        assert_eq!(links.poll_dial(silent_at).map(|d| d.node), Some(NodeId(1)));
        assert!(links.is_connected(NodeId(2)), "a node with nothing outstanding is never silent");
    }

    #[test]
    fn a_node_whose_transport_acknowledges_nothing_after_a_send_is_lost_long_before_the_silence_bound() {
        let t0 = Instant::now();
        let mut links = links(t0);
        connect_all(&mut links, t0);
        links.on_sent_counted(NodeId(1), t0, 40);
        links.on_sent_counted(NodeId(2), t0, 70);
        let unacked_at = t0 + LINK_LIMITS_DEFAULT.unacked_max;
        assert_eq!(links.poll_timeout(), Some(unacked_at));
        assert!(links.transport_due(unacked_at - MS).is_empty(), "nothing to report before");
        assert_eq!(links.transport_due(unacked_at), vec![NodeId(1), NodeId(2)]);
        links.on_transport(NodeId(1), 40);
        links.on_transport(NodeId(2), 71);
        links.handle_timeout(unacked_at);
        assert_eq!(links.poll_lost(), Some((NodeId(1), Lost::Silent)), "a restarted process never acks");
        assert_eq!(links.poll_lost(), None, "node 2 acked: a slow answer is not a dead connection");
        assert_eq!(links.poll_timeout(), Some(unacked_at), "node 1 is dialled again at once");
        links.handle_timeout(t0 + LINK_LIMITS_DEFAULT.silence_max);
        assert_eq!(links.poll_lost(), Some((NodeId(2), Lost::Silent)), "but its silence still counts");
    }

    #[test]
    fn an_answer_resets_the_silence_clock() {
        let t0 = Instant::now();
        let mut links = links(t0);
        connect_all(&mut links, t0);
        links.on_sent(NodeId(1), t0);
        links.on_heard(NodeId(1));
        links.on_sent(NodeId(1), t0 + 400 * MS);
        links.handle_timeout(t0 + 600 * MS);
        assert_eq!(links.poll_lost(), None);
        assert_eq!(links.poll_timeout(), Some(t0 + 900 * MS));
    }

    #[test]
    fn what_waits_on_a_node_being_dialled_is_given_up_after_the_silence_bound() {
        let t0 = Instant::now();
        let mut links = Links::new([NodeId(1)], LinkLimits::default(), t0);
        let dial = links.poll_dial(t0).expect("due");
        assert_eq!(dial.timeout, LINK_LIMITS_DEFAULT.dial_attempt_max, "never reached: the connect timeout");
        assert!(links.may_wait_for(NodeId(1)));
        links.on_sent(NodeId(1), t0 + 10 * MS);
        let give_up = t0 + 10 * MS + LINK_LIMITS_DEFAULT.silence_max;
        assert_eq!(links.poll_timeout(), Some(give_up));
        links.handle_timeout(give_up);
        assert_eq!(links.poll_lost(), Some((NodeId(1), Lost::Unreachable)));
        assert!(links.is_dialing(NodeId(1)), "the dial goes on");
        assert!(!links.may_wait_for(NodeId(1)), "nothing waits for it again before the outcome");
        assert_eq!(links.poll_timeout(), None);
        links.handle_dial_failed(NodeId(1), give_up);
        links.poll_dial(links.poll_timeout().expect("waiting")).expect("due");
        assert!(links.may_wait_for(NodeId(1)), "a new dial may be waited for again");
    }

    #[test]
    fn failed_dials_back_off_doubling_up_to_the_bound_and_a_success_starts_over() {
        let limits = LinkLimits::default();
        let t0 = Instant::now();
        let mut links = Links::new([NodeId(1)], limits, t0);
        connect_all(&mut links, t0);
        assert!(links.handle_closed(NodeId(1), t0));
        let dials = fail_dials(&mut links, t0, t0 + Duration::from_secs(5));
        let waits: Vec<Duration> = dials.windows(2).map(|w| w[1].0 - (w[0].0 + w[0].1)).collect();
        assert_eq!(waits[0], limits.dial_backoff_min);
        assert!(waits.windows(2).all(|w| w[1] == (w[0] * 2).min(limits.dial_backoff_max)), "{waits:?}");
        assert_eq!(*waits.last().expect("several"), limits.dial_backoff_max);
        let now = links.poll_timeout().expect("waiting");
        links.poll_dial(now).expect("due");
        links.handle_connected(NodeId(1), LAN_RTT);
        assert!(links.handle_closed(NodeId(1), now));
        links.poll_dial(now).expect("a closed connection is replaced at once");
        links.handle_dial_failed(NodeId(1), now);
        assert_eq!(links.poll_timeout(), Some(now + limits.dial_backoff_min), "the backoff started over");
    }

    #[test]
    fn a_node_never_reached_gets_the_connect_timeout_and_one_reached_before_a_few_round_trips() {
        let limits = LinkLimits::default();
        let t0 = Instant::now();
        let mut links = Links::new([NodeId(1), NodeId(2)], limits, t0);
        assert_eq!(links.poll_dial(t0).map(|d| d.timeout), Some(limits.dial_attempt_max));
        links.handle_connected(NodeId(1), Duration::from_millis(100));
        assert!(links.handle_closed(NodeId(1), t0));
        let wan = links.poll_dial(t0).expect("due");
        assert_eq!((wan.node, wan.timeout), (NodeId(1), Duration::from_millis(100) * DIAL_ATTEMPT_RTTS));
    }

    #[test]
    fn a_node_reached_before_is_redialled_with_short_attempts_however_long_it_stays_down() {
        let t0 = Instant::now();
        let mut links = Links::new([NodeId(1)], LinkLimits::default(), t0);
        connect_all(&mut links, t0);
        assert!(links.handle_closed(NodeId(1), t0));
        let dials = fail_dials(&mut links, t0, t0 + Duration::from_secs(10));
        assert!(dials.iter().all(|d| d.1 == LINK_LIMITS_DEFAULT.dial_attempt_min), "{dials:?}");
        let gap_max = dials.windows(2).map(|w| w[1].0 - w[0].0).max().expect("several");
        assert!(gap_max <= LINK_LIMITS_DEFAULT.dial_attempt_min + LINK_LIMITS_DEFAULT.dial_backoff_max);
    }

    #[test]
    fn a_close_reported_for_a_node_not_connected_changes_nothing() {
        let t0 = Instant::now();
        let mut links = links(t0);
        let dial = links.poll_dial(t0).expect("due");
        assert!(!links.handle_closed(dial.node, t0));
        assert!(links.is_dialing(dial.node));
    }

    #[test]
    fn what_a_driver_abandons_is_dialled_again_at_once_and_no_longer_awaited() {
        let t0 = Instant::now();
        let mut links = links(t0);
        links.poll_dial(t0).expect("node 1");
        links.handle_connected(NodeId(1), LAN_RTT);
        links.on_sent(NodeId(1), t0);
        links.poll_dial(t0).expect("node 2");
        links.abandon_in_flight(t0 + MS);
        assert_eq!(links.poll_timeout(), Some(t0 + MS), "node 2's dial is due, node 1 awaits nothing");
        assert_eq!(links.poll_dial(t0 + MS).map(|d| d.node), Some(NodeId(2)));
        links.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(links.poll_lost(), None);
    }
}
