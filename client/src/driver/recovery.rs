//! Writer recovery over the network: the sans-IO `core::takeover::Takeover` (DESIGN §3) driven
//! over QUIC, with the connections kept by the sans-IO `core::links::Links`.
//!
//! Each round's requests go out at once. A request to a node being dialled is held until the
//! dial's outcome, for at most `silence_max` (after that, requests to it fail at once until
//! the dial ends); to a node waiting out a dial backoff it fails at once, so no round waits on
//! a node known to be gone. A node that turns silent (a process that
//! died behind a live-looking connection) or whose connection closes is dialled again at once;
//! its outstanding requests are sent again on the new connection, or fail if the dial fails.
//! Every request is also bounded by the request timeout.
//!
//! Invariants: every request `Takeover` yields is answered to it (`handle_reply`) or failed
//! (`handle_failure`) exactly once, unless the takeover is over first; an answer arriving on a
//! replaced connection still counts; when recovery ends, its dials still in flight are handed
//! back to `Links` as due again (the writer's driver makes them) and its unanswered requests
//! are no longer awaited.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use protocol::messages::ErrorCode;
use protocol::{Message, NodeId};

use super::error::OpenError;
use super::links::{Connections, Dialer};
use crate::core::links::{Dial, Links, Lost};
use crate::core::takeover::{Takeover, TakeoverError};
use crate::core::writer::WriterStart;
use crate::core::VolumeGeometry;

/// One request with a timeout; `None` if the node is unreachable or slow.
pub async fn ask(
    connections: &Connections,
    node: NodeId,
    message: &Message,
    timeout: Duration,
) -> Option<Message> {
    let connection = connections.get(node)?;
    match tokio::time::timeout(timeout, transport::request(&connection, message)).await {
        Ok(Ok(reply)) => Some(reply),
        Ok(Err(error)) => {
            tracing::debug!(%node, %error, "request failed");
            None
        }
        Err(_) => None,
    }
}

/// What `connection`'s transport has received: it moves with every packet from the peer
/// (acknowledgements included), which a process that died behind the connection never sends.
pub fn received(connection: &quinn::Connection) -> u64 {
    connection.stats().udp_rx.datagrams
}

/// Tells the link core what the transport has received on the connections whose count its
/// next `handle_timeout` needs.
pub fn report_transport(connections: &Connections, links: &mut Links, now: Instant) {
    for node in links.transport_due(now) {
        if let Some(connection) = connections.get(node) {
            links.on_transport(node, received(&connection));
        }
    }
}

/// The driver's clock, as the cores take it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How one request ended: its id, the connection it went out on, and the answer or whether
/// that connection was closed.
type Asked = (u64, usize, Result<Message, bool>);

/// A request sent (or held) and not yet answered or failed.
struct Outstanding {
    node: NodeId,
    message: Message,
    /// The connection it went out on (`None`: held for a dial in flight).
    sent_on: Option<usize>,
}

/// The takeover's requests in flight, the dials in flight, and the connections.
struct Rounds<'a> {
    dialer: &'a Dialer,
    connections: &'a Connections,
    timeout: Duration,
    next_id: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    asks: FuturesUnordered<Boxed<Asked>>,
    dials: FuturesUnordered<Boxed<(NodeId, Option<quinn::Connection>)>>,
    /// A node's `Unauthorized` or `VolumeDeleted` refusal, if one came: what a failed
    /// recovery reports.
    refused: Option<(NodeId, ErrorCode, String)>,
}

/// Runs the `Takeover` state machine over the nodes, dialling them as `links` decides.
pub async fn recover(
    dialer: &Dialer,
    connections: &Connections,
    links: &mut Links,
    geometry: VolumeGeometry,
    lal: u64,
    timeout: Duration,
) -> Result<WriterStart, OpenError> {
    let mut takeover = Takeover::new(geometry, dialer.cluster(), lal);
    let mut rounds = Rounds {
        dialer,
        connections,
        timeout,
        next_id: 0,
        outstanding: BTreeMap::new(),
        asks: FuturesUnordered::new(),
        dials: FuturesUnordered::new(),
        refused: None,
    };
    loop {
        if let Some(outcome) = takeover.outcome() {
            links.abandon_in_flight(now());
            return finish(&takeover, outcome.clone(), rounds.refused);
        }
        rounds.drive_links(links, &mut takeover);
        while let Some((node, message)) = takeover.poll_request() {
            rounds.send(links, &mut takeover, node, message);
        }
        if takeover.outcome().is_none() && !takeover.has_requests() {
            rounds.wait(links, &mut takeover).await;
        }
    }
}

fn finish(
    takeover: &Takeover,
    outcome: Result<WriterStart, TakeoverError>,
    refused: Option<(NodeId, ErrorCode, String)>,
) -> Result<WriterStart, OpenError> {
    if let (Ok(_), Some(plan)) = (&outcome, takeover.plan()) {
        tracing::info!(vdl = %plan.vdl, vcl = %plan.vcl, truncation = ?plan.truncation, epoch = %takeover.epochs().volume, "recovered");
    }
    outcome.map_err(|e| match e {
        // Too few answers because nodes refused this client the volume: say so.
        TakeoverError::Unavailable { .. } if refused.is_some() => {
            let (node, code, detail) = refused.expect("checked");
            OpenError::refused(code, node, detail)
        }
        TakeoverError::Unavailable { pg, answered, needed } => {
            OpenError::Unavailable { pg, answered, needed }
        }
        TakeoverError::Inconsistent(error) => OpenError::Recovery(error),
    })
}

impl Rounds<'_> {
    /// Silent nodes redialled, requests held for unreachable ones failed, due dials started.
    fn drive_links(&mut self, links: &mut Links, takeover: &mut Takeover) {
        let now = now();
        report_transport(self.connections, links, now);
        links.handle_timeout(now);
        while let Some((node, lost)) = links.poll_lost() {
            match lost {
                Lost::Silent => {
                    tracing::info!(%node, "node silent during recovery; redialling");
                    // Its requests may still be answered on the old connection; they are sent
                    // again on the new one.
                    self.connections.remove(node);
                }
                Lost::Unreachable => self.fail_all(takeover, node),
            }
        }
        while let Some(dial) = links.poll_dial(now) {
            self.dial(dial);
        }
    }

    /// Every request outstanding at `node` fails.
    fn fail_all(&mut self, takeover: &mut Takeover, node: NodeId) {
        let mine: Vec<u64> =
            self.outstanding.iter().filter(|(_, o)| o.node == node).map(|(id, _)| *id).collect();
        for id in mine {
            if let Some(entry) = self.outstanding.remove(&id) {
                takeover.handle_failure(node, &entry.message);
            }
        }
    }

    fn dial(&mut self, dial: Dial) {
        let dialer = self.dialer.clone();
        self.dials.push(Box::pin(async move {
            let connection = dialer.connect_within(dial.node, dial.timeout).await;
            if let Err(error) = &connection {
                tracing::debug!(node = %dial.node, %error, "dial failed");
            }
            (dial.node, connection.ok())
        }));
    }

    fn send(&mut self, links: &mut Links, takeover: &mut Takeover, node: NodeId, message: Message) {
        let id = self.next_id;
        self.next_id += 1;
        if !links.is_connected(node) && !links.may_wait_for(node) {
            takeover.handle_failure(node, &message);
            return;
        }
        self.outstanding.insert(id, Outstanding { node, message, sent_on: None });
        if links.is_connected(node) {
            self.transmit(links, id);
        } else {
            links.on_sent(node, now());
        }
    }

    /// Sends outstanding request `id` on its node's current connection.
    fn transmit(&mut self, links: &mut Links, id: u64) {
        let Some(entry) = self.outstanding.get_mut(&id) else { return };
        let Some(connection) = self.connections.get(entry.node) else { return };
        let generation = connection.stable_id();
        entry.sent_on = Some(generation);
        links.on_sent_counted(entry.node, now(), received(&connection));
        let (message, timeout) = (entry.message.clone(), self.timeout);
        self.asks.push(Box::pin(async move {
            let answer = tokio::time::timeout(timeout, transport::request(&connection, &message)).await;
            match answer {
                Ok(Ok(reply)) => (id, generation, Ok(reply)),
                _ => (id, generation, Err(connection.close_reason().is_some())),
            }
        }));
    }

    /// Waits for the next answer, dial outcome or link timer, and feeds it to the cores.
    async fn wait(&mut self, links: &mut Links, takeover: &mut Takeover) {
        let timer = links.poll_timeout().map(tokio::time::Instant::from_std);
        let sleep = async {
            if let Some(at) = timer {
                tokio::time::sleep_until(at).await;
            }
        };
        tokio::select! {
            Some((id, generation, answer)) = self.asks.next() => {
                self.answered(links, takeover, id, generation, answer)
            }
            Some((node, connection)) = self.dials.next() => self.dialled(links, takeover, node, connection),
            () = sleep, if timer.is_some() => {}
            // Nothing is in flight and nothing is timed: what the round still awaits never comes.
            else => takeover.handle_timeout(),
        }
    }

    fn answered(
        &mut self,
        links: &mut Links,
        takeover: &mut Takeover,
        id: u64,
        generation: usize,
        answer: Result<Message, bool>,
    ) {
        let Some(entry) = self.outstanding.get(&id) else { return };
        let node = entry.node;
        let closed = match answer {
            Ok(reply) => {
                // An answer counts whichever connection it came on.
                self.outstanding.remove(&id);
                links.on_heard(node);
                if let Message::Error(refusal) = &reply {
                    if crate::core::writer::refuses_for_good(refusal.code) {
                        self.refused.get_or_insert((node, refusal.code, refusal.message.clone()));
                    }
                }
                takeover.handle_reply(node, reply);
                return;
            }
            Err(closed) => closed,
        };
        let current = self.connections.get(node).map(|c| c.stable_id());
        if entry.sent_on != Some(generation) || current != Some(generation) {
            // Sent again since, or its connection is being replaced: that decides.
            return;
        }
        if closed {
            if links.handle_closed(node, now()) {
                tracing::info!(%node, "connection closed during recovery; redialling");
                self.connections.remove(node);
            }
            return;
        }
        let entry = self.outstanding.remove(&id).expect("looked up above");
        takeover.handle_failure(node, &entry.message);
    }

    fn dialled(
        &mut self,
        links: &mut Links,
        takeover: &mut Takeover,
        node: NodeId,
        connection: Option<quinn::Connection>,
    ) {
        match connection {
            Some(connection) => {
                links.handle_connected(node, connection.rtt());
                self.connections.set(node, connection);
                let mine: Vec<u64> =
                    self.outstanding.iter().filter(|(_, o)| o.node == node).map(|(id, _)| *id).collect();
                for id in mine {
                    self.transmit(links, id);
                }
            }
            None => {
                links.handle_dial_failed(node, now());
                self.fail_all(takeover, node);
            }
        }
    }
}
