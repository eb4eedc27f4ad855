//! Shared test fixtures: a development PKI in a temp dir, an echo server on 127.0.0.1:0 that
//! reports what happened on its side, and small messages.
//!
//! The server answers `StatusRequest` with a `Status` and echoes every other message, so a test
//! sees both directions of the framing. Everything is bounded by `TEST_TIMEOUT`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use protocol::messages::{AppendBatch, Status};
use protocol::{AzId, Epochs, Lsn, Message, NodeId, PageId, PgId, PgRef, Record, RecordKind};
use protocol::{RecordMeta, VolumeId};
use tokio::sync::mpsc;
use transport::{pki, read_frame, server_endpoint, write_frame, DevPki, TransportError, Tuning};

/// Bound on any one wait in a test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The server's certificate name.
pub const SERVER_NAME: &str = "node-1";
/// The trusted client's certificate name.
pub const CLIENT_NAME: &str = "client";

/// What the server saw.
#[derive(Debug)]
pub enum Event {
    Connected { peer: Option<String> },
    HandshakeFailed(String),
    StreamFailed(TransportError),
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub endpoint: quinn::Endpoint,
    pub events: mpsc::UnboundedReceiver<Event>,
}

impl TestServer {
    /// The next server-side event, or a panic after `TEST_TIMEOUT`.
    pub async fn next_event(&mut self) -> Event {
        let event = tokio::time::timeout(TEST_TIMEOUT, self.events.recv()).await;
        event.expect("no server event in time").expect("server stopped")
    }
}

pub fn tuning() -> Tuning {
    Tuning { connect_timeout: Duration::from_secs(3), ..Tuning::default() }
}

pub fn dev_pki(dir: &std::path::Path) -> DevPki {
    pki::ensure_dev_pki(dir, &[SERVER_NAME, CLIENT_NAME]).expect("dev pki")
}

/// Starts the echo server on 127.0.0.1:0 with `pki`'s server files.
pub fn start_server(pki: &DevPki) -> TestServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let endpoint = server_endpoint(addr, &pki.files_for(SERVER_NAME), &tuning()).expect("server endpoint");
    serve_on(endpoint)
}

/// Starts the echo server on 127.0.0.1:0 with a server config built by the test.
pub fn start_server_with(config: quinn::ServerConfig) -> TestServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let endpoint = transport::server_endpoint_with_config(addr, config, &tuning()).expect("server endpoint");
    serve_on(endpoint)
}

fn serve_on(endpoint: quinn::Endpoint) -> TestServer {
    let addr = endpoint.local_addr().expect("local addr");
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(accept_loop(endpoint.clone(), tx));
    TestServer { addr, endpoint, events }
}

async fn accept_loop(endpoint: quinn::Endpoint, events: mpsc::UnboundedSender<Event>) {
    while let Some(incoming) = endpoint.accept().await {
        let events = events.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => {
                    let _ = events.send(Event::Connected { peer: transport::peer_name(&conn) });
                    serve_connection(conn, events).await;
                }
                Err(error) => {
                    let _ = events.send(Event::HandshakeFailed(error.to_string()));
                }
            }
        });
    }
}

async fn serve_connection(conn: quinn::Connection, events: mpsc::UnboundedSender<Event>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(send, recv, events.clone()));
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        match read_frame(&mut recv).await {
            Ok(Some(message)) => {
                if write_frame(&mut send, &answer(message)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = send.finish();
                return;
            }
            Err(error) => {
                // A broken stream is dropped; the connection and the server carry on.
                let _ = recv.stop(0u32.into());
                let _ = send.reset(0u32.into());
                let _ = events.send(Event::StreamFailed(error));
                return;
            }
        }
    }
}

fn answer(message: Message) -> Message {
    match message {
        Message::StatusRequest => Message::Status(status()),
        other => other,
    }
}

pub fn status() -> Status {
    Status { node: NodeId(1), az: AzId(2), segments: Vec::new() }
}

/// A one-record append batch.
pub fn append_batch() -> Message {
    let meta = RecordMeta::after(Lsn(3), Lsn(7), RecordKind::Marker, PageId(0));
    let record = Record::new(meta, Bytes::from_static(b"commit 42")).expect("record");
    Message::AppendBatch(AppendBatch {
        pg: PgRef { volume_id: VolumeId(9), pg_id: PgId(1) },
        epochs: Epochs::INITIAL,
        vdl: Lsn(7),
        pg_vdl_lsn: Lsn(7),
        page_bytes: 4096,
        records: vec![record],
    })
}
