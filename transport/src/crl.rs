//! Certificate revocation lists: the CRL file a server checks client certificates against, and
//! what a CRL holds (so [`crate::pki::revoke_certs`] can sign the next one).
//!
//! A CRL counts only if a CA of the server's CA file signed it: [`load_crls`] refuses a file that
//! is not PEM, holds no `X509 CRL` section, or holds a CRL no CA there signed, so an operator
//! learns of a bad file when the config is built (at start-up or at a reload), never by a revoked
//! certificate still getting in. rustls then refuses, at the handshake, a certificate whose
//! serial a CRL of its issuer lists.
//!
//! Invariants: CRL files are read with the bound of every PEM file; serial numbers are kept in
//! their minimal big-endian form (no leading zero byte), the value rcgen writes and webpki
//! compares.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::error::TransportError;
use crate::tls::{bad_pem, read_pem_file};

/// One revoked certificate: its serial and when it was revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedSerial {
    /// The serial number, big-endian, without leading zero bytes.
    pub serial: Vec<u8>,
    /// When the CA revoked it, in seconds since the Unix epoch.
    pub revoked_at_unix_s: i64,
}

/// What one CRL holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlContents {
    /// The CRL number, which grows with every CRL the CA signs; 0 if the CRL has none.
    pub number: u64,
    /// Every certificate it revokes, in the CRL's order.
    pub revoked: Vec<RevokedSerial>,
}

/// Reads every CRL in the PEM file `path`, each checked to be signed by one of `cas`; at least
/// one.
pub fn load_crls(
    path: &Path,
    cas: &[CertificateDer<'_>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TransportError> {
    let bytes = read_pem_file(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if crls.is_empty() {
        return Err(bad_crl(path, "no X509 CRL in file".into()));
    }
    for (index, crl) in crls.iter().enumerate() {
        read_crl(crl, cas)
            .map_err(|detail| bad_crl(path, format!("CRL {} of the file: {detail}", index + 1)))?;
    }
    Ok(crls)
}

/// What the DER CRL `der` holds, if one of `cas` signed it.
pub fn read_crl(der: &[u8], cas: &[CertificateDer<'_>]) -> Result<CrlContents, String> {
    let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| format!("does not parse: {e}"))?;
    check_signed_by_one_of(&crl, cas)?;
    let number = match crl.crl_number() {
        None => 0,
        Some(number) => u64::try_from(number).map_err(|_| "its CRL number is beyond 64 bits".to_string())?,
    };
    let revoked = crl
        .iter_revoked_certificates()
        .map(|entry| RevokedSerial {
            serial: minimal(entry.raw_serial()).to_vec(),
            revoked_at_unix_s: entry.revocation_date.timestamp(),
        })
        .collect();
    Ok(CrlContents { number, revoked })
}

/// The serial number of the DER certificate `cert` (minimal big-endian), if the CA certificate
/// `ca` issued it: its issuer is the CA's subject and the CA's key verifies its signature.
pub fn serial_issued_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).map_err(|e| format!("does not parse: {e}"))?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca).map_err(|e| format!("CA does not parse: {e}"))?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(format!("issued by \"{}\", not by \"{}\"", cert.issuer(), ca.subject()));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| "its signature does not verify with the CA's key".to_string())?;
    Ok(minimal(cert.raw_serial()).to_vec())
}

/// Ok if a CA of `cas` with the CRL's issuer name verifies its signature.
fn check_signed_by_one_of(
    crl: &CertificateRevocationList<'_>,
    cas: &[CertificateDer<'_>],
) -> Result<(), String> {
    let mut named = false;
    for ca in cas {
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca) else { continue };
        if !is_issuer_of(&ca, crl) {
            continue;
        }
        named = true;
        if crl.verify_signature(ca.public_key()).is_ok() {
            return Ok(());
        }
    }
    Err(if named {
        "its signature does not verify with the key of the CA it names".to_string()
    } else {
        format!("issued by \"{}\", which is not a CA of the CA file", crl.issuer())
    })
}

fn is_issuer_of(ca: &X509Certificate<'_>, crl: &CertificateRevocationList<'_>) -> bool {
    ca.subject().as_raw() == crl.issuer().as_raw()
}

/// A big-endian integer without its leading zero bytes (DER adds one to keep a number positive).
pub(crate) fn minimal(serial: &[u8]) -> &[u8] {
    let zeros = serial.iter().take_while(|&&b| b == 0).count();
    &serial[zeros..]
}

fn bad_crl(path: &Path, detail: String) -> TransportError {
    TransportError::BadCrl { path: path.to_owned(), detail }
}
