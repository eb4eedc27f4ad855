//! Transport knobs: datagram size, socket buffers, timeouts and flow-control windows.
//!
//! One [`Tuning`] value configures both ends, so a client and a daemon built from the same
//! defaults agree. Values measured on this project's machines (see ENV-NOTES): the default
//! 208 KiB UDP socket buffers lose packets on loopback, 4 MiB does not; raising the datagram size
//! needs the endpoint's `max_udp_payload_size` *and* the MTU discovery upper bound, and sizes of
//! 8,952 bytes and above can hang the handshake with GSO, so the connect timeout stays mandatory.
//!
//! Invariant: a `Tuning` that passed [`Tuning::validate`] yields quinn configs without error;
//! every limit checked there is a named constant below.

use std::time::Duration;

use quinn::{EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};

use crate::error::TransportError;

/// Smallest UDP payload QUIC allows (RFC 9000 §14).
pub const UDP_PAYLOAD_BYTES_MIN: u16 = 1200;
/// Largest UDP payload quinn accepts.
pub const UDP_PAYLOAD_BYTES_MAX: u16 = 65_527;
/// Smallest socket buffer we ask for: below this the kernel default is better.
pub const SOCKET_BUFFER_BYTES_MIN: usize = 64 * 1024;
/// Largest socket buffer we ask for (the kernel caps it at `net.core.[rw]mem_max` anyway).
pub const SOCKET_BUFFER_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Smallest per-stream receive window: one whole largest frame must fit in flight.
pub const STREAM_WINDOW_BYTES_MIN: u32 = 64 * 1024;
/// Most concurrent bidirectional streams a peer may open.
pub const BIDI_STREAMS_MAX: u32 = 65_536;
/// The connection-wide receive window, in stream windows: bounds what one peer can make us buffer
/// (quinn's default is unbounded) while letting a few streams run at full speed together.
pub const CONNECTION_WINDOW_STREAMS: u64 = 4;

/// Transport parameters shared by servers and clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Largest UDP payload sent or accepted (endpoint limit and MTU discovery upper bound).
    pub max_udp_payload_bytes: u16,
    /// SO_RCVBUF and SO_SNDBUF requested for the UDP socket.
    pub socket_buffer_bytes: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Send a keep-alive after this much silence; must be below `idle_timeout`.
    pub keep_alive: Duration,
    /// Longest wait for a handshake: the timeout callers pass to [`crate::endpoint::connect`].
    pub connect_timeout: Duration,
    /// Bytes a peer may send on one stream before we read them.
    pub stream_receive_window_bytes: u32,
    /// Bidirectional streams a peer may have open at once.
    pub max_concurrent_bidi_streams: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_udp_payload_bytes: 1472,
            socket_buffer_bytes: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            stream_receive_window_bytes: 8 * 1024 * 1024,
            max_concurrent_bidi_streams: 1024,
        }
    }
}

impl Tuning {
    /// Checks every field against its bound.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |what| Err(TransportError::Tuning { what });
        if !(UDP_PAYLOAD_BYTES_MIN..=UDP_PAYLOAD_BYTES_MAX).contains(&self.max_udp_payload_bytes) {
            return bad("max_udp_payload_bytes outside 1200..=65527");
        }
        if !(SOCKET_BUFFER_BYTES_MIN..=SOCKET_BUFFER_BYTES_MAX).contains(&self.socket_buffer_bytes) {
            return bad("socket_buffer_bytes outside 64 KiB..=256 MiB");
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return bad("keep_alive must be non-zero and below idle_timeout");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be non-zero");
        }
        if self.stream_receive_window_bytes < STREAM_WINDOW_BYTES_MIN {
            return bad("stream_receive_window_bytes below 64 KiB");
        }
        if self.max_concurrent_bidi_streams == 0 || self.max_concurrent_bidi_streams > BIDI_STREAMS_MAX {
            return bad("max_concurrent_bidi_streams outside 1..=65536");
        }
        Ok(())
    }

    /// The per-connection quinn transport parameters.
    pub fn transport_config(&self) -> Result<TransportConfig, TransportError> {
        self.validate()?;
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| TransportError::Tuning { what: "idle_timeout too large" })?;
        let stream_window = u64::from(self.stream_receive_window_bytes);
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload_bytes);
        let mut config = TransportConfig::default();
        config
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window_bytes))
            .receive_window(varint(stream_window * CONNECTION_WINDOW_STREAMS)?)
            .send_window(stream_window * CONNECTION_WINDOW_STREAMS)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            // Nothing in Borealis uses peer-initiated unidirectional streams.
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .mtu_discovery_config(Some(mtu));
        Ok(config)
    }

    /// The endpoint-wide quinn parameters (the datagram size limit).
    pub fn endpoint_config(&self) -> Result<EndpointConfig, TransportError> {
        self.validate()?;
        let mut config = EndpointConfig::default();
        config
            .max_udp_payload_size(self.max_udp_payload_bytes)
            .map_err(|_| TransportError::Tuning { what: "max_udp_payload_bytes rejected by quinn" })?;
        Ok(config)
    }
}

fn varint(value: u64) -> Result<VarInt, TransportError> {
    VarInt::from_u64(value).map_err(|_| TransportError::Tuning { what: "window too large" })
}
