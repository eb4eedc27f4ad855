//! Connections to the nodes of the cluster map and one ordered stream per (node, PG).
//!
//! A stream task writes the frames queued for it and reads replies, reporting each reply (and
//! its own failure) as an event to the driver. Each queue is bounded: a node that cannot keep
//! up has frames dropped and is repaired later, rather than growing the writer's memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use protocol::placement::ClusterMap;
use protocol::{Message, NodeId, PgId};
use tokio::sync::mpsc;
use transport::framed::{read_frame, write_frame_bytes};
use transport::{TlsFiles, Tuning};

/// Frames queued for one (node, PG) stream before further ones are dropped.
pub const STREAM_QUEUE_MAX: usize = 1024;

/// The round-trip estimate a handshake starts from (quinn's default is 333 ms). A dial's first
/// packet sent while the node is down is lost; QUIC sends it again after about three of these,
/// doubling, so with quinn's default a node that returns a moment after a dial began is
/// reached only a second later, and within a dial attempt of `core::links` not at all. A
/// low estimate only costs a few early resends on a slow path.
pub const HANDSHAKE_RTT_INITIAL: Duration = Duration::from_millis(10);

/// What stream and connection tasks tell the driver.
#[derive(Debug)]
pub enum Event {
    Reply(NodeId, Message),
    /// A stream of the connection with this `stable_id` failed.
    Failed(NodeId, usize, String),
    Connected(NodeId, quinn::Connection),
    /// A dial of this node failed or timed out.
    DialFailed(NodeId),
    RepairDone(PgId, NodeId),
}

/// The live connection of every reachable node, shared with readers.
#[derive(Clone, Debug, Default)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<NodeId, quinn::Connection>>>,
}

impl Connections {
    pub fn get(&self, node: NodeId) -> Option<quinn::Connection> {
        self.inner.lock().expect("connections lock").get(&node).cloned()
    }
    pub fn set(&self, node: NodeId, connection: quinn::Connection) {
        self.inner.lock().expect("connections lock").insert(node, connection);
    }
    pub fn remove(&self, node: NodeId) {
        self.inner.lock().expect("connections lock").remove(&node);
    }
}

/// The client's QUIC endpoint and the addresses it dials (the cluster map, which a writer
/// following etcd updates while dials run).
#[derive(Clone, Debug)]
pub struct Dialer {
    pub endpoint: quinn::Endpoint,
    cluster: Arc<RwLock<ClusterMap>>,
}

impl Dialer {
    pub fn new(
        cluster: ClusterMap,
        tls: &TlsFiles,
        tuning: &Tuning,
    ) -> Result<Dialer, transport::TransportError> {
        let any = cluster.nodes().first().map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |n| n.addr);
        let mut endpoint = transport::client_endpoint(transport::any_addr_for(any), tls, tuning)?;
        endpoint.set_default_client_config(dial_config(tls, tuning)?);
        Ok(Dialer { endpoint, cluster: Arc::new(RwLock::new(cluster)) })
    }

    /// The map dials use now.
    pub fn cluster(&self) -> ClusterMap {
        self.cluster.read().expect("cluster map lock").clone()
    }

    /// Dials from now on use `cluster`.
    pub fn set_cluster(&self, cluster: ClusterMap) {
        *self.cluster.write().expect("cluster map lock") = cluster;
    }

    /// Connects to `node`, giving up after `timeout` (one attempt of `core::links`'s policy).
    pub async fn connect_within(&self, node: NodeId, timeout: Duration) -> Result<quinn::Connection, String> {
        let (addr, name) = {
            let cluster = self.cluster.read().expect("cluster map lock");
            let info = cluster.node(node).ok_or_else(|| format!("node {node} is not in the cluster map"))?;
            (info.addr, info.name.clone())
        };
        transport::connect(&self.endpoint, addr, &name, timeout).await.map_err(|e| e.to_string())
    }
}

/// The client side's connection settings: the shared tuning, with the handshake's first
/// round-trip estimate lowered to `HANDSHAKE_RTT_INITIAL`.
fn dial_config(tls: &TlsFiles, tuning: &Tuning) -> Result<quinn::ClientConfig, transport::TransportError> {
    let mut config = transport::client_config(tls, tuning)?;
    let mut transport_config = tuning.transport_config()?;
    transport_config.initial_rtt(HANDSHAKE_RTT_INITIAL);
    config.transport_config(Arc::new(transport_config));
    Ok(config)
}

/// Reports `connection` as failed to the driver once the transport closes it (the peer closed
/// it, its idle timeout passed, or this side dropped it as silent), so it is replaced at once.
pub fn watch_closed(connection: quinn::Connection, node: NodeId, events: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        let generation = connection.stable_id();
        let reason = tokio::select! {
            reason = connection.closed() => reason,
            () = events.closed() => return,
        };
        let _ = events.send(Event::Failed(node, generation, format!("connection closed: {reason}")));
    });
}

/// Opens the stream for (node, PG) and returns the queue feeding it encoded frames.
pub fn open_stream(
    connection: quinn::Connection,
    node: NodeId,
    pg: PgId,
    events: mpsc::UnboundedSender<Event>,
) -> mpsc::Sender<Bytes> {
    let (queue, mut frames) = mpsc::channel::<Bytes>(STREAM_QUEUE_MAX);
    let generation = connection.stable_id();
    tokio::spawn(async move {
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(halves) => halves,
            Err(error) => {
                let _ =
                    events.send(Event::Failed(node, generation, format!("open stream for {pg}: {error}")));
                return;
            }
        };
        let replies = events.clone();
        let reader = tokio::spawn(async move {
            loop {
                match read_frame(&mut recv).await {
                    Ok(Some(message)) => {
                        if replies.send(Event::Reply(node, message)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ =
                            replies.send(Event::Failed(node, generation, "stream closed by the node".into()));
                        return;
                    }
                    Err(error) => {
                        let _ = replies.send(Event::Failed(node, generation, error.to_string()));
                        return;
                    }
                }
            }
        });
        while let Some(frame) = frames.recv().await {
            if let Err(error) = write_frame_bytes(&mut send, frame).await {
                let _ = events.send(Event::Failed(node, generation, error.to_string()));
                break;
            }
        }
        let _ = send.finish();
        let _ = reader.await;
    });
    queue
}
