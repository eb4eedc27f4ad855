//! `borealis nbd`: the NBD gateway's driver. It serves one Borealis volume as a Network Block
//! Device over TCP or a Unix socket, moving bytes between sockets and the `nbd` crate's sans-IO
//! core (handshake, request decoding, block-to-page mapping) and the client's `Writer`.
//!
//! One `Writer` and one overlay serve every connection (the gateway is the volume's only
//! writer): a write is answered once appended and read back through the overlay until durable,
//! and a FLUSH waits for VDL to cover every write answered on any connection, so
//! `NBD_FLAG_CAN_MULTI_CONN` holds. A connection that disconnects is flushed before it closes. Requests run concurrently (at most
//! `REQUESTS_IN_FLIGHT_MAX` per connection, replies in completion order); a bad request gets
//! its NBD error from the core; a malformed handshake or stream closes only its connection.

pub mod metrics;
pub mod volume;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use client::{VolumeGeometry, Writer};
use nbd::{
    simple_reply, Command, Event, Export, Handshake, Outcome, Request, RequestDecoder, FEED_BYTES_MAX,
};
use protocol::VolumeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::local::LocalCluster;
use metrics::{CommandLabel, GatewayMetrics};
use volume::{nbd_error, BlockVolume, VolumeError};

/// The volume's page size, and the device's preferred block size.
pub const PAGE_BYTES: u32 = 4096;
/// Volume pages per PG: 64 MiB of device per PG.
pub const PAGES_PER_PG: u64 = 16_384;
/// Requests of one connection being served at once; beyond it the socket is not read.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// Replies waiting to be written to one connection.
pub const REPLIES_QUEUED_MAX: usize = 2 * REQUESTS_IN_FLIGHT_MAX;
/// The port NBD clients try by default.
pub const NBD_PORT: u16 = 10809;

/// What `borealis nbd` serves, and where.
#[derive(Clone, Debug)]
pub struct NbdOptions {
    /// A `borealis dev` / `cluster` directory: its cluster map and client certificate.
    pub dir: PathBuf,
    pub volume: u64,
    /// The device's size; needed the first time, checked against the volume after.
    pub size: Option<u64>,
    pub listen: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    pub export: String,
    /// Where to serve `GET /metrics` (none: not served).
    pub metrics: Option<SocketAddr>,
}

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("cluster directory: {0}")]
    Cluster(#[from] crate::local::LocalError),
    #[error("cluster map: {0}")]
    Placement(#[from] protocol::placement::PlacementError),
    #[error("volume geometry: {0}")]
    Geometry(#[from] client::GeometryError),
    #[error("opening volume {volume:#x}: {source}")]
    Open { volume: u64, source: client::OpenError },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("export: {0}")]
    Export(#[from] nbd::ConfigError),
    #[error("listening on {what}: {source}")]
    Listen { what: String, source: std::io::Error },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// Serves until the process is stopped.
pub fn run(options: &NbdOptions) -> Result<(), NbdError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(NbdError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(options))
}

async fn serve(options: &NbdOptions) -> Result<(), NbdError> {
    let cluster = LocalCluster::load(&options.dir)?;
    let config = cluster.client_config()?;
    let geometry = VolumeGeometry::new(VolumeId(u128::from(options.volume)), PAGE_BYTES, PAGES_PER_PG)?;
    let writer = Writer::open(config, geometry)
        .await
        .map_err(|source| NbdError::Open { volume: options.volume, source })?;
    let volume = Rc::new(BlockVolume::open(writer, options.size).await?);
    let (metrics, registry) = GatewayMetrics::new();
    if let Some(addr) = options.metrics {
        metrics::serve(addr, registry)?;
        eprintln!("borealis nbd: metrics on http://{addr}/metrics");
    }
    let served = Served { volume, metrics };
    let flags = nbd::export::DEFAULT_FLAGS | nbd::proto::NBD_FLAG_CAN_MULTI_CONN;
    let description = format!("Borealis volume {:#x}", options.volume);
    let export = Export::new(&options.export, &description, served.volume.size_bytes, PAGE_BYTES, flags)?;
    match &options.socket {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            let listen_error = |source| NbdError::Listen { what: path.display().to_string(), source };
            let listener = tokio::net::UnixListener::bind(path).map_err(listen_error)?;
            eprintln!(
                "borealis nbd: serving {} ({} bytes) on nbd+unix:///{}?socket={}",
                export.name(),
                served.volume.size_bytes,
                export.name(),
                path.display()
            );
            loop {
                let (stream, _) = listener.accept().await.map_err(listen_error)?;
                spawn_connection(stream, "unix".into(), &served, &export);
            }
        }
        None => {
            let addr = options.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], NBD_PORT)));
            let listen_error = |source| NbdError::Listen { what: addr.to_string(), source };
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen_error)?;
            eprintln!(
                "borealis nbd: serving {} ({} bytes) on nbd://{addr}/{}",
                export.name(),
                served.volume.size_bytes,
                export.name()
            );
            loop {
                let (stream, peer) = listener.accept().await.map_err(listen_error)?;
                let _ = stream.set_nodelay(true);
                spawn_connection(stream, peer.to_string(), &served, &export);
            }
        }
    }
}

/// The volume and the figures every connection shares.
#[derive(Clone, Debug)]
struct Served {
    volume: Rc<BlockVolume>,
    metrics: std::sync::Arc<GatewayMetrics>,
}

fn spawn_connection<S>(stream: S, peer: String, served: &Served, export: &Export)
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let (served, export) = (served.clone(), export.clone());
    tokio::task::spawn_local(async move {
        eprintln!("borealis nbd: {peer} connected");
        served.metrics.connections.inc();
        match connection(stream, served.clone(), export).await {
            Ok(()) => eprintln!("borealis nbd: {peer} disconnected"),
            Err(error) => eprintln!("borealis nbd: {peer} closed: {error}"),
        }
        served.metrics.connections.dec();
    });
}

/// Why one connection closed early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] nbd::HandshakeError),
    #[error("{0}")]
    Stream(#[from] nbd::TransmissionError),
}

async fn connection<S>(stream: S, served: Served, export: Export) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let volume = Rc::clone(&served.volume);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; FEED_BYTES_MAX];
    let Some(ready) = handshake(&mut rd, &mut wr, &mut buf, export).await? else { return Ok(()) };
    let mut decoder = RequestDecoder::after(&ready);
    let (replies, mut queue) = mpsc::channel::<Bytes>(REPLIES_QUEUED_MAX);
    let writer = tokio::task::spawn_local(async move {
        while let Some(reply) = queue.recv().await {
            wr.write_all(&reply).await?;
        }
        wr.shutdown().await
    });
    let permits = std::sync::Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    let mut closing = None;
    'stream: loop {
        if volume.is_fenced() {
            // Another gateway holds the volume: what is in flight is refused, then the client
            // is disconnected.
            break;
        }
        while let Some(event) = decoder.poll_event() {
            match event {
                Ok(Event::Request(request)) => {
                    let permit = std::sync::Arc::clone(&permits).acquire_owned().await.expect("never closed");
                    let (served, replies) = (served.clone(), replies.clone());
                    tokio::task::spawn_local(async move {
                        let reply = measured(&served, request).await;
                        let _ = replies.send(reply).await;
                        drop(permit);
                    });
                }
                Ok(Event::Rejected(rejection)) => {
                    eprintln!(
                        "borealis nbd: refused request {:#x} (type {}): {:?}, {:?}",
                        rejection.handle, rejection.command_type, rejection.error, rejection.reason
                    );
                    let _ = replies.send(rejection.reply()).await;
                }
                Ok(Event::Disconnect) => break 'stream,
                Err(error) => {
                    closing = Some(error);
                    break 'stream;
                }
            }
        }
        let n = tokio::select! {
            read = rd.read(&mut buf) => read?,
            () = volume.fenced_wait() => continue,
        };
        if n == 0 {
            closing = decoder.handle_eof().err();
            break;
        }
        decoder.feed(&buf[..n]);
    }
    // Whatever is in flight is answered before the connection closes, and what it wrote is
    // made durable (as a FLUSH would) so a client that disconnects without one loses nothing.
    let _all = permits.acquire_many(REQUESTS_IN_FLIGHT_MAX as u32).await.expect("never closed");
    if let Err(error) = volume.flush().await {
        eprintln!("borealis nbd: flushing on disconnect: {error}");
    }
    drop(replies);
    writer.await.expect("the reply writer does not panic")?;
    closing.map_or(Ok(()), |error| Err(error.into()))
}

/// The handshake phase: `None` if the client aborted it.
async fn handshake(
    rd: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
    buf: &mut [u8],
    export: Export,
) -> Result<Option<nbd::Ready>, ConnectionError> {
    let mut handshake = Handshake::new(export, Instant::now());
    loop {
        while let Some(out) = handshake.poll_transmit() {
            wr.write_all(&out).await?;
        }
        if let Some(outcome) = handshake.poll_outcome() {
            return match outcome? {
                Outcome::Ready(ready) => Ok(Some(ready)),
                Outcome::Aborted => Ok(None),
            };
        }
        let read = match handshake.poll_timeout() {
            Some(at) => tokio::time::timeout_at(at.into(), rd.read(buf)).await.ok(),
            None => Some(rd.read(buf).await),
        };
        match read {
            None => handshake.handle_timeout(Instant::now()),
            Some(Ok(0)) => handshake.handle_eof(),
            Some(Ok(n)) => handshake.feed(&buf[..n]),
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

/// One request's reply, counted and timed.
async fn measured(served: &Served, request: Request) -> Bytes {
    let metrics = &served.metrics;
    let label = CommandLabel { command: command_name(request.command) };
    let carries_bytes = matches!(request.command, Command::Read | Command::Write);
    let bytes = if carries_bytes { u64::from(request.length) } else { 0 };
    metrics.in_flight.inc();
    let started = Instant::now();
    let reply = serve_request(&served.volume, request).await;
    metrics.in_flight.dec();
    metrics.latency.get_or_create(&label).observe(started.elapsed().as_secs_f64());
    metrics.requests.get_or_create(&label).inc();
    metrics.bytes.get_or_create(&label).inc_by(bytes);
    let header =
        reply.first_chunk::<{ nbd::proto::SIMPLE_REPLY_HEADER_BYTES }>().expect("a reply has its header");
    if nbd::proto::SimpleReplyHeader::decode(header).is_ok_and(|h| h.error.is_some()) {
        metrics.errors.get_or_create(&label).inc();
    }
    let progress = *served.volume.writer.watch_vdl().borrow();
    metrics.vdl.set(i64::try_from(progress.vdl.0).unwrap_or(i64::MAX));
    metrics.pending_records.set(i64::try_from(progress.pending_records).unwrap_or(i64::MAX));
    metrics.overlay_bytes.set(i64::try_from(served.volume.overlay_bytes()).unwrap_or(i64::MAX));
    metrics.set_refusals(&progress.refusals);
    reply
}

fn command_name(command: Command) -> &'static str {
    match command {
        Command::Read => "read",
        Command::Write => "write",
        Command::Flush => "flush",
        Command::Trim => "trim",
        Command::Cache => "cache",
        Command::WriteZeroes => "write_zeroes",
    }
}

/// One request's reply.
async fn serve_request(volume: &BlockVolume, request: Request) -> Bytes {
    if volume.is_fenced() {
        return simple_reply(request.handle, Err(nbd::ErrorCode::Shutdown));
    }
    let geometry = volume.geometry;
    let (handle, offset, length) = (request.handle, request.offset, u64::from(request.length));
    let fua = request.fua();
    let done = match request.command {
        Command::Read => {
            return match volume.read(handle, offset, request.length).await {
                Ok(reply) => reply,
                Err(error) => {
                    eprintln!("borealis nbd: READ {offset}+{length}: {error}");
                    simple_reply(handle, Err(nbd_error(&error)))
                }
            };
        }
        Command::Write => volume.apply(nbd::mapping::write_ops(geometry, offset, request.data), fua).await,
        Command::WriteZeroes => {
            volume.apply(nbd::mapping::write_zeroes_ops(geometry, offset, length), fua).await
        }
        Command::Trim => volume.apply(nbd::mapping::trim_ops(geometry, offset, length), fua).await,
        Command::Flush => volume.flush().await,
        Command::Cache => Ok(()),
    };
    match done {
        Ok(()) => simple_reply(handle, Ok(())),
        Err(error) => {
            eprintln!("borealis nbd: {:?} {offset}+{length}: {error}", request.command);
            simple_reply(handle, Err(nbd_error(&error)))
        }
    }
}
