//! Mutual-TLS configurations for QUIC servers and clients, loaded from PEM files.
//!
//! Every Borealis connection is TLS 1.3 with ALPN [`protocol::frame::ALPN`], and both sides
//! prove who they are: a server *requires* a client certificate signed by the cluster CA, and a
//! client trusts nothing but that CA. The rustls `ring` provider is passed explicitly everywhere:
//! with several providers compiled in, rustls's process-level default is ambiguous and panics.
//!
//! Invariants: files are read whole but never beyond [`PEM_FILE_BYTES_MAX`]; every failure names
//! the file and its problem in one line; a key that does not match its certificate is refused
//! when the config is built, not at the first handshake.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::RootCertStore;

use crate::error::TransportError;
use crate::tuning::Tuning;

/// Largest PEM file read: a certificate chain or a key is a few KiB.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The PEM files one node or client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate: the only trust anchor.
    pub ca_cert: PathBuf,
    /// This side's certificate chain, leaf first.
    pub cert: PathBuf,
    /// This side's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// A QUIC server config: TLS 1.3, ALPN, client certificates required and verified against the CA
/// (chain and validity dates), no revocation check.
pub fn server_config(files: &TlsFiles, tuning: &Tuning) -> Result<quinn::ServerConfig, TransportError> {
    server_config_with_crls(files, None, tuning)
}

/// A QUIC server config as [`server_config`] that also refuses client certificates a CRL in
/// `crl_file` revokes (PEM `X509 CRL` sections, each signed by a CA of `files.ca_cert`: see
/// [`crate::crl::load_crls`]); `None`: no revocation check.
///
/// A certificate whose CA has no CRL in the file is not checked for revocation (while a CA file
/// holds an old and a new CA, one CRL is enough), and a CRL's next-update date is not enforced:
/// a CRL stays in force until a newer one replaces it.
pub fn server_config_with_crls(
    files: &TlsFiles,
    crl_file: Option<&Path>,
    tuning: &Tuning,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = provider();
    let roots = Arc::new(load_roots(&files.ca_cert)?);
    let crls = match crl_file {
        Some(path) => crate::crl::load_crls(path, &load_certs(&files.ca_cert)?)?,
        None => Vec::new(),
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls)
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| match (e, crl_file) {
            (VerifierBuilderError::InvalidCrl(e), Some(path)) => {
                TransportError::BadCrl { path: path.to_owned(), detail: format!("{e:?}") }
            }
            (e, _) => tls_config("client verifier", e),
        })?;
    let (chain, key) = load_credentials(files)?;
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_config("protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| credentials_error(files, e))?;
    crypto.alpn_protocols = vec![protocol::frame::ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(crypto).map_err(|e| tls_config("QUIC server", e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(tuning.transport_config()?));
    Ok(config)
}

/// A QUIC client config: TLS 1.3, ALPN, trusts only the CA, presents its own certificate. The
/// server's certificate is verified as webpki does by default: its chain to the CA, its name, and
/// its validity dates (an expired server certificate is refused); there is no revocation check.
pub fn client_config(files: &TlsFiles, tuning: &Tuning) -> Result<quinn::ClientConfig, TransportError> {
    let roots = load_roots(&files.ca_cert)?;
    let (chain, key) = load_credentials(files)?;
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_config("protocol versions", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| credentials_error(files, e))?;
    crypto.alpn_protocols = vec![protocol::frame::ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(crypto).map_err(|e| tls_config("QUIC client", e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(tuning.transport_config()?));
    Ok(config)
}

/// The first DNS subject-alternative name of the peer's leaf certificate: who is on the other
/// end. `None` before the handshake, or if the peer's certificate has no DNS name.
pub fn peer_name(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    first_dns_name(chain.first()?)
}

/// The first DNS SAN of a DER certificate, if it parses and has one.
pub fn first_dns_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    })
}

/// The crypto provider of every config: ring, chosen here rather than process-wide.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a CA file into a root store: every certificate in it becomes a trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TransportError::BadCa { path: path.to_owned(), detail: e.to_string() })?;
    }
    Ok(roots)
}

/// Loads every certificate in a PEM file, in file order; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bytes = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if certs.is_empty() {
        return Err(TransportError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// Loads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let bytes = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TransportError::NoPrivateKey { path: path.to_owned() },
        other => bad_pem(path, other),
    })
}

fn load_credentials(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TransportError> {
    Ok((load_certs(&files.cert)?, load_key(&files.key)?))
}

/// Reads a whole file, refusing anything larger than a PEM file could be.
pub(crate) fn read_pem_file(path: &Path) -> Result<Vec<u8>, TransportError> {
    let file_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => TransportError::MissingFile { path: path.to_owned() },
        _ => TransportError::FileIo { path: path.to_owned(), source },
    };
    let file = File::open(path).map_err(file_error)?;
    let mut bytes = Vec::new();
    // One byte over the bound tells "too large" from "exactly at the bound".
    file.take(PEM_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(file_error)?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(TransportError::FileTooLarge { path: path.to_owned(), max: PEM_FILE_BYTES_MAX });
    }
    Ok(bytes)
}

pub(crate) fn bad_pem(path: &Path, error: pem::Error) -> TransportError {
    // pem::Error's Display prints markers as byte arrays; spell them out.
    let detail = match error {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing \"{}\" line", String::from_utf8_lossy(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(&line))
        }
        other => other.to_string(),
    };
    TransportError::BadPem { path: path.to_owned(), detail }
}

fn credentials_error(files: &TlsFiles, source: rustls::Error) -> TransportError {
    let (cert, key) = (files.cert.clone(), files.key.clone());
    match source {
        rustls::Error::InconsistentKeys(_) => TransportError::KeyMismatch { cert, key },
        source => TransportError::Credentials { cert, key, source },
    }
}

fn tls_config(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::TlsConfig { detail: format!("{what}: {error}") }
}
