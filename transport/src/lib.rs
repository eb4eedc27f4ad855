//! Borealis's QUIC transport: mutual-TLS configurations, tuned endpoints, a development PKI and
//! protocol frames over streams.
//!
//! Every connection between Borealis processes is QUIC with TLS 1.3, ALPN
//! [`protocol::frame::ALPN`], and certificates on both sides signed by the cluster CA ([`tls`]).
//! Endpoints get their UDP socket buffers and datagram limits from one [`Tuning`] ([`endpoint`]);
//! streams carry protocol frames read with a bounded buffer and no copy past the first
//! ([`framed`]). [`pki`] makes the CA and certificates for tests and development clusters, and the CRLs
//! that revoke certificates, which [`crl`] reads and checks for servers.
//!
//! Every failure is a [`TransportError`]; nothing a peer sends or a file holds makes this crate
//! panic.

pub mod crl;
pub mod endpoint;
pub mod error;
pub mod framed;
pub mod identity;
pub mod pki;
pub mod ports;
pub mod tls;
pub mod tuning;

pub use endpoint::{any_addr_for, client_endpoint, connect, server_endpoint, server_endpoint_with_config};
pub use error::TransportError;
pub use framed::{read_frame, request, write_frame};
pub use identity::{file_identity, identity, peer_identity, CLIENT_IDENTITY};
pub use pki::{create_cluster_pki, ensure_dev_pki, issue_cert, issue_host_cert, revoke_certs, DevPki};
pub use tls::{client_config, peer_name, server_config, server_config_with_crls, TlsFiles};
pub use tuning::Tuning;
