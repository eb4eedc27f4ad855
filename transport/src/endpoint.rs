//! QUIC endpoints on a tuned UDP socket, and a connect that cannot hang.
//!
//! quinn's own constructors bind with the kernel's default socket buffers (about 208 KiB), which
//! lose packets steadily even on loopback; here the socket is made with socket2, given
//! [`Tuning::socket_buffer_bytes`] for SO_RCVBUF/SO_SNDBUF, bound, and only then handed to quinn.
//!
//! Invariants: endpoints are created inside a tokio runtime (checked, a typed error otherwise:
//! quinn would panic); a bind failure is always [`TransportError::Bind`] with the address, so
//! "address in use" is recognisable; [`connect`] returns within its timeout whatever the peer does.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::TransportError;
use crate::tls::{client_config, server_config, TlsFiles};
use crate::tuning::Tuning;

/// A server endpoint on `addr` that accepts mutual-TLS connections (see [`server_config`]).
pub fn server_endpoint(
    addr: SocketAddr,
    files: &TlsFiles,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, TransportError> {
    server_endpoint_with_config(addr, server_config(files, tuning)?, tuning)
}

/// A server endpoint on `addr` with a server config built beforehand (e.g. by
/// [`crate::tls::server_config_with_crls`], so a daemon can check its TLS files before a long
/// start-up and bind only once ready).
pub fn server_endpoint_with_config(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, TransportError> {
    new_endpoint(addr, Some(config), tuning)
}

/// A client endpoint bound to `bind` (usually [`any_addr_for`] the server's address) whose
/// connections present this side's certificate (see [`client_config`]).
pub fn client_endpoint(
    bind: SocketAddr,
    files: &TlsFiles,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, TransportError> {
    let config = client_config(files, tuning)?;
    let mut endpoint = new_endpoint(bind, None, tuning)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The wildcard address with port 0 of the same family as `peer`: what a client binds to.
pub fn any_addr_for(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Connects to `addr`, checking its certificate names `server_name`; gives up after `timeout`.
///
/// In TLS 1.3 the server checks the client's certificate after the client has finished its
/// handshake, so a client the server refuses may get a connection here and learn of the refusal
/// (a closed connection) at its first stream operation.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<quinn::Connection, TransportError> {
    let connecting =
        endpoint.connect(addr, server_name).map_err(|source| TransportError::Connect { addr, source })?;
    // Dropping `connecting` on timeout abandons the handshake, so nothing lingers.
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(TransportError::Handshake { addr, source }),
        Err(_) => Err(TransportError::ConnectTimeout { addr, timeout }),
    }
}

fn new_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, TransportError> {
    // quinn wraps the socket in a tokio reactor, which panics outside a runtime.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TransportError::NoRuntime);
    }
    let config = tuning.endpoint_config()?;
    let socket = bind_udp(addr, tuning.socket_buffer_bytes)?;
    quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))
        .map_err(TransportError::Socket)
}

/// A non-blocking UDP socket bound to `addr` with the requested buffer sizes.
fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> Result<UdpSocket, TransportError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(TransportError::Socket)?;
    if addr.is_ipv6() {
        // Dual-stack where the system allows it, as quinn does; failure just means IPv6 only.
        if let Err(error) = socket.set_only_v6(false) {
            tracing::debug!(%error, "UDP socket stays IPv6-only");
        }
    }
    set_buffers(&socket, buffer_bytes)?;
    socket.bind(&addr.into()).map_err(|source| TransportError::Bind { addr, source })?;
    socket.set_nonblocking(true).map_err(TransportError::Socket)?;
    Ok(socket.into())
}

/// Sets SO_RCVBUF/SO_SNDBUF. The kernel silently caps them at `net.core.[rw]mem_max`, so the
/// granted sizes are read back and a shortfall is logged rather than failing the endpoint.
fn set_buffers(socket: &Socket, bytes: usize) -> Result<(), TransportError> {
    socket.set_recv_buffer_size(bytes).map_err(TransportError::Socket)?;
    socket.set_send_buffer_size(bytes).map_err(TransportError::Socket)?;
    let granted_recv = socket.recv_buffer_size().map_err(TransportError::Socket)?;
    let granted_send = socket.send_buffer_size().map_err(TransportError::Socket)?;
    // Linux reports twice the size asked for (it counts its bookkeeping); below the ask means capped.
    if granted_recv < bytes || granted_send < bytes {
        tracing::warn!(
            requested = bytes,
            granted_recv,
            granted_send,
            "UDP socket buffers capped by the kernel (raise net.core.rmem_max/wmem_max)"
        );
    }
    Ok(())
}
