//! The gossip driver: carries the core's gossip (`core/node/gossip.rs`) to the other nodes over
//! QUIC, as a client of each peer with this node's own certificate.
//!
//! When the core's gossip timer is due it names a summary per (peer, segment); one task per peer asks
//! the peer with each (a request on its own stream), hands the answer to the core, and runs the
//! fetches the core decides on, storing what they bring through the journal task. A peer that
//! cannot be reached is skipped this round and dialled again the next; a peer with an exchange
//! still running is skipped too, so a slow peer never piles up work. The same exchange then
//! asks the peer for the page versions the core's scrub wants to repair, and runs the
//! hydrations the core wants from this peer (also when this node holds no segment yet).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use protocol::messages::GossipSummary;
use protocol::placement::ClusterMap;
use protocol::{Message, NodeId};

use super::admin::PeerFetch;
use super::cluster_view::SharedView;
use super::shared::Shared;

/// Longest wait for one gossip request's answer (or a connection) before the peer is skipped.
pub const GOSSIP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The peers (as the cluster view knows them now), and the client side that reaches them.
struct Peers {
    endpoint: quinn::Endpoint,
    view: SharedView,
    connections: RefCell<HashMap<NodeId, quinn::Connection>>,
    busy: RefCell<HashSet<NodeId>>,
}

/// Runs gossip rounds until the node stops, with the peers `view` holds at each round (a node
/// added to the map is gossiped with from the next round on).
pub async fn run(shared: Rc<Shared>, view: SharedView, endpoint: quinn::Endpoint) {
    let peers = Rc::new(Peers {
        endpoint,
        view,
        connections: RefCell::new(HashMap::new()),
        busy: RefCell::new(HashSet::new()),
    });
    loop {
        // The core says when the next round is due (`Limits::gossip_interval_ms`).
        let Some(due) = shared.with_core(|core| core.poll_gossip_timeout()) else { return };
        let wait = due.saturating_sub(shared.now_ms()).max(1);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let Some(cluster) = peers.view.borrow().map().cloned() else { continue };
        let known: Vec<NodeId> = peers.view.borrow().peers().map(|p| p.id).collect();
        let now = shared.now_ms();
        let summaries = shared.with_core(|core| core.poll_gossip(now, members_of(&cluster)));
        let mut by_peer: BTreeMap<NodeId, Vec<GossipSummary>> = BTreeMap::new();
        for (peer, summary) in summaries {
            by_peer.entry(peer).or_default().push(summary);
        }
        // A node rebuilding a segment it does not hold yet has no summary of it to send, but
        // still runs an exchange with the peer it hydrates from.
        for peer in &known {
            if shared.with_core(|core| core.hydrating_from(*peer)) {
                by_peer.entry(*peer).or_default();
            }
        }
        for (peer, summaries) in by_peer {
            if !known.contains(&peer) || !peers.busy.borrow_mut().insert(peer) {
                continue;
            }
            let (shared, peers, cluster) = (Rc::clone(&shared), Rc::clone(&peers), cluster.clone());
            tokio::task::spawn_local(async move {
                let result = exchange(&shared, &peers, peer, summaries, &cluster).await;
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "gossip round cut short");
                    peers.connections.borrow_mut().remove(&peer);
                }
                peers.busy.borrow_mut().remove(&peer);
            });
        }
    }
}

/// One round with `peer`: the summaries and the record fetches their answers call for, then
/// the repairs of damaged images and the hydrations the core wants from this peer.
async fn exchange(
    shared: &Shared,
    peers: &Peers,
    peer: NodeId,
    summaries: Vec<GossipSummary>,
    cluster: &ClusterMap,
) -> Result<(), String> {
    let connection = connection(peers, peer).await?;
    exchange_summaries(shared, &connection, peer, summaries).await?;
    repair_images(shared, &connection, peer, cluster).await?;
    super::hydrate::run_from(shared, &connection, peer, GOSSIP_REQUEST_TIMEOUT).await
}

/// Asks `peer` with each summary and runs the fetches its answers call for.
async fn exchange_summaries(
    shared: &Shared,
    connection: &quinn::Connection,
    peer: NodeId,
    summaries: Vec<GossipSummary>,
) -> Result<(), String> {
    for summary in summaries {
        let Message::GossipSummary(answer) = ask(connection, Message::GossipSummary(summary)).await? else {
            continue;
        };
        let mut fetch = shared.with_core(|core| core.handle_gossip_summary(&answer, shared.now_ms()));
        while let Some(request) = fetch.take() {
            let pg = request.pg;
            let failed = || shared.with_core(|core| core.handle_gossip_fetch_failed(pg, peer));
            let records = match ask(connection, Message::GossipFetch(request)).await {
                Ok(Message::Records(records)) => {
                    let bytes = records.records.iter().map(protocol::Record::encoded_len).sum();
                    shared.metrics.fetched(PeerFetch::GossipRecords, bytes);
                    records
                }
                Ok(_) => {
                    failed();
                    break;
                }
                Err(error) => {
                    failed();
                    return Err(error);
                }
            };
            fetch = shared.with_core(|core| core.handle_gossip_records(records, shared.now_ms()));
            shared.journal_wake.notify_one();
        }
    }
    Ok(())
}

/// Asks `peer` for the page versions that replace this node's damaged images, as the core's
/// scrubber decides (`poll_image_repair`); the coalescer stores what arrives.
async fn repair_images(
    shared: &Shared,
    connection: &quinn::Connection,
    peer: NodeId,
    cluster: &ClusterMap,
) -> Result<(), String> {
    while let Some(read) =
        shared.with_core(|core| core.poll_image_repair(peer, shared.now_ms(), members_of(cluster)))
    {
        let (pg, page) = (read.pg, read.page_id);
        match ask(connection, Message::ReadPage(read)).await {
            Ok(Message::Page(answer)) => {
                shared.metrics.fetched(PeerFetch::ImageRepair, answer.bytes.len());
                shared.with_core(|core| core.handle_image_fetched(answer));
                shared.coalesce_wake.notify_one();
            }
            Ok(other) => {
                tracing::debug!(%peer, ?other, "peer could not supply a page version for repair");
                shared.with_core(|core| core.handle_image_fetch_failed(pg, page, peer));
                return Ok(());
            }
            Err(error) => {
                shared.with_core(|core| core.handle_image_fetch_failed(pg, page, peer));
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The members of a PG, by placement over the cluster map.
fn members_of(cluster: &ClusterMap) -> impl Fn(protocol::PgRef) -> Vec<NodeId> + '_ {
    |pg| cluster.place(pg.volume_id, pg.pg_id).members().to_vec()
}

async fn ask(connection: &quinn::Connection, message: Message) -> Result<Message, String> {
    match tokio::time::timeout(GOSSIP_REQUEST_TIMEOUT, transport::framed::request(connection, &message)).await
    {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {GOSSIP_REQUEST_TIMEOUT:?}")),
    }
}

/// The open connection to `peer`, dialled if there is none.
async fn connection(peers: &Peers, peer: NodeId) -> Result<quinn::Connection, String> {
    if let Some(connection) = peers.connections.borrow().get(&peer).filter(|c| c.close_reason().is_none()) {
        return Ok(connection.clone());
    }
    let (addr, name): (SocketAddr, String) = match peers.view.borrow().peer(peer) {
        Some(info) => (info.addr, info.name.clone()),
        None => return Err(format!("node {peer} is not in the cluster map")),
    };
    let connection = transport::connect(&peers.endpoint, addr, &name, GOSSIP_REQUEST_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    peers.connections.borrow_mut().insert(peer, connection.clone());
    Ok(connection)
}
