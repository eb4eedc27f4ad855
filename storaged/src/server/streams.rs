//! QUIC connections and streams: the thin driver between the network and the core.
//!
//! Every bidirectional stream is a pipeline: a reader submits each request as it arrives, a
//! writer sends the replies in request order. Appends for one PG share one stream, so their
//! acks come back in order without the reader ever waiting for the journal. A malformed frame
//! gets a typed error reply and closes that stream; the connection and every other stream go
//! on.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use protocol::messages::{ErrorCode, ErrorReply, ReadPage, ReadRecordHeaders, ReadRecords, RecordHeaders};
use protocol::Message;
use tokio::sync::{mpsc, oneshot};
use transport::framed::{read_frame, write_frame};

use super::cluster_view::{ClusterView, SharedView};
use super::map_source;
use super::page_read::read_page;
use super::shared::{error_reply, Pending, Shared};
use crate::core::access::{self, Caller, Verdict};
use crate::core::ReadPlan;
use crate::store::reads::read_planned_records;

/// Replies queued on one stream before its reader stops taking requests (backpressure).
pub const STREAM_REPLIES_PENDING_MAX: usize = 4096;
/// QUIC application error code for a stream closed because of a malformed frame.
pub const CLOSE_MALFORMED: u32 = 1;

/// Accepts connections until the endpoint closes.
/// A connection whose certificate names a peer node in `view` (when it connects) speaks for that
/// node in gossip and hydration; any other certificate (a client) may not.
pub async fn accept_loop(endpoint: quinn::Endpoint, shared: Rc<Shared>, view: SharedView) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = Rc::clone(&shared);
        let view = Rc::clone(&view);
        tokio::task::spawn_local(async move {
            match incoming.await {
                Ok(connection) => serve_connection(connection, shared, view).await,
                Err(error) => tracing::info!(%error, "handshake refused"),
            }
        });
    }
}

async fn serve_connection(connection: quinn::Connection, shared: Rc<Shared>, view: SharedView) {
    let name = transport::tls::peer_name(&connection).unwrap_or_else(|| "unknown".into());
    let identity = transport::peer_identity(&connection);
    tracing::debug!(%name, ?identity, remote = %connection.remote_address(), "connection");
    let peer = Rc::new(Peer { name, identity, known: RefCell::new(None) });
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let (shared, view, peer) = (Rc::clone(&shared), Rc::clone(&view), Rc::clone(&peer));
                tokio::task::spawn_local(serve_stream(send, recv, shared, view, peer));
            }
            Err(error) => {
                tracing::debug!(name = %peer.name, %error, "connection closed");
                return;
            }
        }
    }
}

/// Who is on the other end of a connection, as its certificate says.
#[derive(Debug)]
struct Peer {
    /// The first DNS name: a node of the cluster map by that name speaks for that node.
    name: String,
    /// Its identity (`transport::identity`), what volume ACLs name; `None` for a certificate
    /// that carries none.
    identity: Option<String>,
    /// The caller as of the map change it was worked out at (`ClusterView::changes`).
    known: RefCell<Option<(u64, Rc<Caller>)>>,
}

impl Peer {
    /// The caller as the map `view` holds now: a node added since the connection opened is
    /// recognised from its next request on. Worked out again only when the map changed.
    fn caller(&self, view: &ClusterView) -> Rc<Caller> {
        let mut known = self.known.borrow_mut();
        if let Some((_, caller)) = known.as_ref().filter(|(changes, _)| *changes == view.changes()) {
            return Rc::clone(caller);
        }
        let caller = Rc::new(match view.peer_named(&self.name) {
            Some(node) => Caller::Node(node),
            None => match &self.identity {
                Some(identity) => Caller::Client(identity.clone()),
                None => Caller::Anonymous,
            },
        });
        *known = Some((view.changes(), Rc::clone(&caller)));
        caller
    }
}

/// Serves one stream of a connection from `peer`: each request is first authorized against the
/// map and ACLs `view` holds at that moment (`core::access`), so a revoke applies at once.
async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Rc<Shared>,
    view: SharedView,
    peer: Rc<Peer>,
) {
    // Each reply travels with when its request arrived: the writer times appends and page
    // reads, and counts error replies, as they go out (`NodeMetrics::replied`).
    let (queue, mut replies) = mpsc::channel::<(Pending, Instant)>(STREAM_REPLIES_PENDING_MAX);
    let metrics = Arc::clone(&shared.metrics);
    let reader = async move {
        loop {
            let frame = read_frame(&mut recv).await;
            let arrived = Instant::now();
            let pending = match frame {
                Ok(Some(message)) => {
                    let caller = peer.caller(&view.borrow());
                    match authorize(&view, &caller, &message).await {
                        Ok(()) if matches!(message, Message::DeleteVolume(_)) => {
                            let Message::DeleteVolume(delete) = message else { unreachable!("matched") };
                            let (view, by) = (Rc::clone(&view), peer.identity.clone().unwrap_or_default());
                            spawn_reply(async move { map_source::delete_volume(&view, delete, &by).await })
                        }
                        Ok(()) if matches!(message, Message::AclChange(_)) => {
                            let Message::AclChange(change) = message else { unreachable!("matched") };
                            let (view, by) = (Rc::clone(&view), peer.identity.clone().unwrap_or_default());
                            spawn_reply(async move { map_source::change_acl(&view, change, &by).await })
                        }
                        Ok(()) => {
                            let holds_only = match &message {
                                Message::FloorReport(report) => {
                                    !access::floor_report_raises(&caller, report.pg, view.borrow().acls())
                                }
                                _ => false,
                            };
                            submit(&shared, message, &caller, holds_only)
                        }
                        Err(refusal) => {
                            tracing::info!(?caller, reason = %refusal.message, "request refused");
                            Pending::Ready(Message::Error(refusal))
                        }
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::info!(%error, "closing a stream after a bad frame");
                    let _ = recv.stop(CLOSE_MALFORMED.into());
                    let reply = error_reply(ErrorCode::BadRequest, &format!("bad frame: {error}"));
                    let _ = queue.send((Pending::Ready(reply), arrived)).await;
                    return;
                }
            };
            if queue.send((pending, arrived)).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((pending, arrived)) = replies.recv().await {
            let Some(reply) = pending.resolve().await else { return };
            if write_frame(&mut send, &reply).await.is_err() {
                return;
            }
            metrics.replied(&reply, arrived);
        }
        let _ = send.finish();
    };
    tokio::join!(reader, writer);
}

/// Decides whether `caller` may send `message` (`core::access`); a first write of an unclaimed
/// volume claims it in etcd first, then is decided again against the ACL etcd holds. Only this
/// stream waits for the claim.
async fn authorize(view: &SharedView, caller: &Caller, message: &Message) -> Result<(), ErrorReply> {
    let verdict = access::authorize(caller, message, view.borrow().acls());
    let Verdict::Claim { pg, identity } = verdict else { return verdict.into_result() };
    map_source::claim(view, pg, &identity).await?;
    access::authorize(caller, message, view.borrow().acls()).into_result()
}

/// Hands one request, authorized, to the core (or to a read task) and returns its pending
/// reply. A floor report `holds_only` may not raise the segment's floor (a reader's).
fn submit(shared: &Rc<Shared>, message: Message, caller: &Caller, holds_only: bool) -> Pending {
    match message {
        Message::AppendBatch(batch) => shared.submit(|core, id| core.handle_append(id, batch)),
        Message::EpochBump(bump) => shared.submit(|core, id| core.handle_epoch_bump(id, bump)),
        Message::MembershipChange(change) => {
            shared.submit(|core, id| core.handle_membership_change(id, change))
        }
        Message::Truncate(truncate) => shared.submit(|core, id| core.handle_truncate(id, truncate)),
        Message::StatusRequest => Pending::Ready(Message::Status(shared.with_core(|core| core.status()))),
        Message::ReadRecords(read) => spawn_read(shared, read),
        Message::ReadRecordHeaders(read) => spawn_header_read(shared, read),
        Message::ReadPage(read) => spawn_page_read(shared, read),
        Message::ReadPageAsOf(read) => {
            let shared = Rc::clone(shared);
            spawn_reply(async move { super::page_read::read_page_as_of(&shared, read).await })
        }
        Message::FloorReport(report) => {
            let now = shared.now_ms();
            Pending::Ready(shared.with_core(|core| match holds_only {
                true => core.handle_floor_hold(&report, now),
                false => core.handle_floor_report(&report, now),
            }))
        }
        Message::ReplaceNodeAsk(ask) => {
            let now = shared.now_ms();
            tracing::info!(node = %ask.node, ?caller, "an operator asks to replace a node: passed on to the writer");
            shared.with_core(|core| core.ask_replacement(ask.node, now));
            Pending::Ready(Message::ReplaceNodeAsk(ask))
        }
        Message::GossipSummary(summary) => {
            let now = shared.now_ms();
            Pending::Ready(Message::GossipSummary(
                shared.with_core(|core| core.answer_gossip_summary(&summary, now)),
            ))
        }
        Message::HydrateFetch(fetch) => {
            let Caller::Node(asker) = *caller else {
                return Pending::Ready(error_reply(ErrorCode::Unauthorized, "only nodes hydrate"));
            };
            let now = shared.now_ms();
            match shared.with_core(|core| core.plan_hydrate(&fetch, asker, now)) {
                Ok(plan) => spawn_reply(super::hydrate::answer(Rc::clone(shared), plan)),
                Err(reply) => Pending::Ready(Message::Error(reply)),
            }
        }
        Message::GossipFetch(fetch) => match shared.with_core(|core| core.plan_gossip_fetch(&fetch)) {
            Ok(plan) => {
                let shared = Rc::clone(shared);
                spawn_reply(async move { read_records(&shared, plan).await })
            }
            Err(reply) => Pending::Ready(Message::Error(reply)),
        },
        other => Pending::Ready(error_reply(
            ErrorCode::BadRequest,
            &format!("unexpected message type {}", other.type_code()),
        )),
    }
}

fn spawn_read(shared: &Rc<Shared>, read: ReadRecords) -> Pending {
    let plan = match shared.with_core(|core| core.plan_read_records(&read)) {
        Ok(plan) => plan,
        Err(reply) => return Pending::Ready(Message::Error(reply)),
    };
    let shared = Rc::clone(shared);
    spawn_reply(async move { read_records(&shared, plan).await })
}

/// The records are read (and verified) as for `ReadRecords`; only their headers go back.
fn spawn_header_read(shared: &Rc<Shared>, read: ReadRecordHeaders) -> Pending {
    let plan = match shared.with_core(|core| core.plan_read_records(&read.as_read())) {
        Ok(plan) => plan,
        Err(reply) => return Pending::Ready(Message::Error(reply)),
    };
    let shared = Rc::clone(shared);
    spawn_reply(async move { RecordHeaders::answer(&read, read_records(&shared, plan).await) })
}

/// Runs a read on its own task; its answer is the pending reply.
fn spawn_reply(answer: impl std::future::Future<Output = Message> + 'static) -> Pending {
    let (sender, receiver) = oneshot::channel();
    tokio::task::spawn_local(async move {
        let _ = sender.send(answer.await);
    });
    Pending::Waiting(receiver)
}

async fn read_records(shared: &Shared, plan: ReadPlan) -> Message {
    read_planned_records(&shared.store, shared, plan).await
}

fn spawn_page_read(shared: &Rc<Shared>, read: ReadPage) -> Pending {
    let shared = Rc::clone(shared);
    spawn_reply(async move { read_page(&shared, read).await })
}
