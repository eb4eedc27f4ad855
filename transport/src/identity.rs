//! Who a certificate speaks for: its identity, a URI such as `borealis://client/NAME`, which
//! volume ACLs name (`etcdmap::acl`).
//!
//! A certificate's identity is its first URI SAN in the `borealis://` scheme. A certificate
//! without one (those the development PKI and `cluster init` made before identities existed)
//! speaks for the client named by its first DNS SAN: `borealis://client/DNS-NAME`. Storage nodes
//! are recognised by the cluster map (their certificate's DNS name), not by this function.

use std::path::Path;

use rustls::pki_types::CertificateDer;

use crate::error::TransportError;
use crate::tls::{first_dns_name, load_certs};

/// The scheme of identity URIs.
pub const IDENTITY_SCHEME: &str = "borealis://";
/// The identity prefix of clients.
pub const CLIENT_IDENTITY: &str = "borealis://client/";

/// The identity of a DER certificate (see the module docs); `None` if it names none at all.
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    uri_identity(cert).or_else(|| first_dns_name(cert).map(|dns| format!("{CLIENT_IDENTITY}{dns}")))
}

/// The certificate's first URI SAN in the `borealis://` scheme, if it has one.
pub fn uri_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(IDENTITY_SCHEME) => {
            Some((*uri).to_owned())
        }
        _ => None,
    })
}

/// The identity of the peer of an established connection.
pub fn peer_identity(conn: &quinn::Connection) -> Option<String> {
    let peer = conn.peer_identity()?;
    let chain = peer.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    identity(chain.first()?)
}

/// The identity of the first certificate in a PEM file (this side's own, for a client that
/// claims a volume).
pub fn file_identity(path: &Path) -> Result<String, TransportError> {
    let certs = load_certs(path)?;
    certs.first().and_then(identity).ok_or_else(|| TransportError::NoCertificate { path: path.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{ensure_dev_pki, issue_cert, Validity};

    #[test]
    fn an_issued_client_certificate_carries_its_uri_identity_and_an_older_one_its_dns_name() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), &["client"]).unwrap();
        let alice = issue_cert(dir.path(), "alice", Validity::days_from_now(1)).unwrap();
        let first = |path: &Path| crate::tls::load_certs(path).unwrap().remove(0);
        assert_eq!(uri_identity(&first(&alice.cert)).as_deref(), Some("borealis://client/alice"));
        assert_eq!(file_identity(&alice.cert).unwrap(), "borealis://client/alice");
        let client = pki.files_for("client").cert;
        assert_eq!(uri_identity(&first(&client)), None, "the development PKI's leaves carry no URI");
        assert_eq!(file_identity(&client).unwrap(), "borealis://client/client");
    }
}
