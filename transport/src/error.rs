//! The one error type every function of this crate returns.
//!
//! Each variant says in one line what failed and where: the file and its problem for TLS material,
//! the address for sockets and connections, the frame part for streams. Nothing a peer sends and
//! nothing read from disk makes this crate panic; it becomes one of these variants instead.
//! Configuration problems (files, tuning, PKI) are told apart from network ones so a daemon can
//! refuse to start with a precise message rather than fail later.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::FormatError;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A TLS or PKI file does not exist.
    #[error("{}: file not found", path.display())]
    MissingFile { path: PathBuf },
    /// A TLS or PKI file could not be read or written.
    #[error("{}: {source}", path.display())]
    FileIo { path: PathBuf, source: io::Error },
    /// A PEM file larger than any certificate or key file could be.
    #[error("{}: larger than {max} bytes, not a PEM certificate or key file", path.display())]
    FileTooLarge { path: PathBuf, max: u64 },
    /// The file parsed as PEM but holds no `CERTIFICATE` section.
    #[error("{}: no certificate in file", path.display())]
    NoCertificate { path: PathBuf },
    /// The file parsed as PEM but holds no private key section.
    #[error("{}: no private key in file", path.display())]
    NoPrivateKey { path: PathBuf },
    /// The file is not well-formed PEM.
    #[error("{}: bad PEM: {detail}", path.display())]
    BadPem { path: PathBuf, detail: String },
    /// The CA certificate cannot serve as a trust anchor.
    #[error("{}: unusable CA certificate: {detail}", path.display())]
    BadCa { path: PathBuf, detail: String },
    /// The private key is not the one the certificate was issued for.
    #[error("{}: private key does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the certificate or key for another reason (unsupported key type, bad DER).
    #[error("{} / {}: {source}", cert.display(), key.display())]
    Credentials { cert: PathBuf, key: PathBuf, source: rustls::Error },
    /// The CRL file cannot be used: not PEM, no CRL in it, or a CRL no CA of the CA file signed.
    #[error("{}: unusable CRL: {detail}", path.display())]
    BadCrl { path: PathBuf, detail: String },
    /// A certificate to revoke that the CA did not issue: its CRL could not revoke it.
    #[error("{}: not issued by the CA {}, so its CRL cannot revoke it", cert.display(), ca.display())]
    ForeignCertificate { cert: PathBuf, ca: PathBuf },
    /// A TLS configuration could not be built (protocol versions, verifier, QUIC cipher suites).
    #[error("TLS configuration: {detail}")]
    TlsConfig { detail: String },
    /// A `Tuning` value outside its bounds.
    #[error("invalid tuning: {what}")]
    Tuning { what: &'static str },
    /// A development PKI name that cannot be a DNS name and a file name.
    #[error("invalid PKI name {name:?}: {why}")]
    PkiName { name: String, why: &'static str },
    /// Only one of a certificate/key pair exists; refusing to overwrite it.
    #[error("{}: exists without {}; remove it or restore the missing file", present.display(), missing.display())]
    PkiIncomplete { present: PathBuf, missing: PathBuf },
    /// Certificate generation or signing failed.
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),
    /// The UDP socket could not be bound (`source.kind()` is `AddrInUse` for a taken port).
    #[error("bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    /// The UDP socket could not be created or configured.
    #[error("UDP socket: {0}")]
    Socket(io::Error),
    /// Endpoints spawn their driver on the current tokio runtime, and there was none.
    #[error("no tokio runtime: endpoints must be created inside one")]
    NoRuntime,
    /// The connection attempt was refused locally (bad server name, endpoint stopping).
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: quinn::ConnectError },
    /// The handshake failed (certificate rejected, ALPN mismatch, peer closed).
    #[error("handshake with {addr}: {source}")]
    Handshake { addr: SocketAddr, source: quinn::ConnectionError },
    /// The handshake did not finish in time.
    #[error("connect to {addr}: no handshake within {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading a stream failed (reset by the peer, connection lost).
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing a stream failed (stopped by the peer, connection lost).
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was already finished or reset by this side.
    #[error("stream: {0}")]
    ClosedStream(#[from] quinn::ClosedStream),
    /// The peer finished the stream in the middle of a frame.
    #[error("stream ended inside the {what}: {read} of {needed} bytes")]
    UnexpectedEnd { what: &'static str, read: usize, needed: usize },
    /// A frame broke the format (bad magic, checksum, length over its bound, bad body).
    #[error("malformed frame: {0}")]
    Format(#[from] FormatError),
    /// The peer finished the stream without a reply frame.
    #[error("peer finished the stream without replying")]
    NoReply,
}

impl TransportError {
    /// True if this is a bind failure because the address is already in use.
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, TransportError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    }
}
