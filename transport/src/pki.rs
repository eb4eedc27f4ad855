//! A development PKI: one CA and, per name, a certificate usable as both server and client.
//!
//! Tests and a local development cluster need mutual TLS without an operator-run CA. This module
//! writes `ca.pem`/`ca.key` and `<name>.pem`/`<name>.key` into one directory, each leaf signed by
//! the CA with the DNS SAN `<name>` (so [`crate::tls::peer_name`] returns it) and both the server
//! and client auth purposes. It is not for production: the CA key sits next to the certificates.
//! The same directory can take more certificates with a chosen validity window ([`issue_cert`],
//! also one already over, for tests) and a CRL, `crl.pem`, that revokes some ([`revoke_certs`]).
//!
//! Invariants: existing files are reused, never rewritten, except leaves when the CA itself was
//! just created (old leaves could not chain to it); a pair with only one file present is an
//! error, not silently replaced; key files are created with mode 0600; every file appears
//! atomically (written beside it, then renamed), so a crash never leaves a torn PEM file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::crl::{self, CrlContents, RevokedSerial};
use crate::error::TransportError;
use crate::tls::{load_certs, TlsFiles};

/// Longest name: one DNS label.
pub const NAME_BYTES_MAX: usize = 63;
/// File stem of the CA's certificate and key.
pub const CA_STEM: &str = "ca";
/// Suffix of the stem of certificates signed by a throwaway CA (negative tests).
const UNTRUSTED_SUFFIX: &str = ".untrusted";
/// Mode of private key files: owner read/write only.
const KEY_FILE_MODE: u32 = 0o600;
/// Mode of certificate files: public.
const CERT_FILE_MODE: u32 = 0o644;
/// File name of the CRL [`revoke_certs`] keeps beside the CA.
pub const CRL_FILE: &str = "crl.pem";
/// How far ahead a CRL's next-update date is set. Informative only: servers do not enforce it
/// (see [`crate::tls::server_config_with_crls`]), so a CRL stays in force until replaced.
const CRL_NEXT_UPDATE: Duration = Duration::from_secs(365 * SECONDS_PER_DAY);
/// A new certificate is valid from this long before it is issued: hosts' clocks differ.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);
const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// When a certificate is valid. [`issue_cert`] takes any window, even one already over (tests
/// of what a node refuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From a few minutes ago (clocks differ) until `days` days from now.
    pub fn days_from_now(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
            not_after: now + Duration::from_secs(u64::from(days) * SECONDS_PER_DAY),
        }
    }
}

/// What [`revoke_certs`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlUpdate {
    /// The CRL file: `crl.pem` beside the CA.
    pub path: PathBuf,
    /// The new CRL's number: one more than the CRL it replaced, 1 for the first.
    pub number: u64,
    /// Certificates newly listed (one listed already is not listed twice).
    pub added: usize,
    /// Every certificate the new CRL revokes.
    pub revoked_total: usize,
}

/// The files of a development PKI directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

impl DevPki {
    /// The TLS files of `name` (made by [`ensure_dev_pki`]), trusting this PKI's CA.
    pub fn files_for(&self, name: &str) -> TlsFiles {
        TlsFiles {
            ca_cert: self.ca_cert.clone(),
            cert: cert_path(&self.dir, name),
            key: key_path(&self.dir, name),
        }
    }

    /// Fresh files for `name` whose certificate is signed by a throwaway CA that nothing trusts,
    /// while still trusting this PKI's CA: a peer holding them passes its own checks of the
    /// server but must be refused by it. Rewritten on every call.
    pub fn untrusted_files_for(&self, name: &str) -> Result<TlsFiles, TransportError> {
        check_name(name)?;
        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params("Borealis untrusted throwaway CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let stem = format!("{name}{UNTRUSTED_SUFFIX}");
        issue_leaf(&self.dir, &stem, name, &issuer)?;
        let (cert, key) = (cert_path(&self.dir, &stem), key_path(&self.dir, &stem));
        Ok(TlsFiles { ca_cert: self.ca_cert.clone(), cert, key })
    }
}

/// Makes sure `dir` holds a CA and a certificate for each of `names`, creating what is missing.
pub fn ensure_dev_pki(dir: &Path, names: &[&str]) -> Result<DevPki, TransportError> {
    names.iter().try_for_each(|name| check_name(name))?;
    fs::create_dir_all(dir).map_err(|source| TransportError::FileIo { path: dir.to_owned(), source })?;
    let (issuer, fresh_ca) = ensure_ca(dir)?;
    for name in names {
        // A new CA cannot have signed the leaves already there: reissue them all.
        if fresh_ca || !pair_exists(&cert_path(dir, name), &key_path(dir, name))? {
            issue_leaf(dir, name, name, &issuer)?;
        }
    }
    Ok(DevPki { dir: dir.to_owned(), ca_cert: cert_path(dir, CA_STEM), ca_key: key_path(dir, CA_STEM) })
}

/// A cluster's PKI for real hosts (`borealis cluster init --hosts`): a new CA in `dir` and, per
/// `(name, addresses)`, a certificate with the DNS SAN `name` (dotted host names allowed) and
/// an IP SAN per address. Refuses a `dir` that holds a CA already: a cluster's CA is never
/// replaced behind its nodes' backs.
pub fn create_cluster_pki(
    dir: &Path,
    leaves: &[(String, Vec<std::net::IpAddr>)],
) -> Result<DevPki, TransportError> {
    for (name, _) in leaves {
        check_host_name(name)?;
    }
    fs::create_dir_all(dir).map_err(|source| TransportError::FileIo { path: dir.to_owned(), source })?;
    let (cert, key) = (cert_path(dir, CA_STEM), key_path(dir, CA_STEM));
    if exists(&cert)? || exists(&key)? {
        let source = io::Error::new(io::ErrorKind::AlreadyExists, "a CA is already there; not replaced");
        return Err(TransportError::FileIo { path: cert, source });
    }
    let key_pair = KeyPair::generate()?;
    let params = ca_params("Borealis cluster CA");
    let ca_cert = params.self_signed(&key_pair)?;
    write_atomically(&key, key_pair.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_atomically(&cert, ca_cert.pem().as_bytes(), CERT_FILE_MODE)?;
    let issuer = Issuer::new(params, key_pair);
    for (name, addresses) in leaves {
        write_host_leaf(dir, name, addresses, &issuer)?;
    }
    Ok(DevPki { dir: dir.to_owned(), ca_cert: cert, ca_key: key })
}

/// One more host certificate from the CA [`create_cluster_pki`] made in `dir` (a host added to
/// a running cluster): DNS SAN `name`, an IP SAN per address. Refuses a name that has a
/// certificate already, and a `dir` without the CA's key.
pub fn issue_host_cert(
    dir: &Path,
    name: &str,
    addresses: &[std::net::IpAddr],
) -> Result<TlsFiles, TransportError> {
    check_host_name(name)?;
    let issuer = issuer_for_new_leaf(dir, name)?;
    write_host_leaf(dir, name, addresses, &issuer)?;
    Ok(TlsFiles { ca_cert: cert_path(dir, CA_STEM), cert: cert_path(dir, name), key: key_path(dir, name) })
}

/// One more certificate from the CA in `dir` (made by [`ensure_dev_pki`] or
/// [`create_cluster_pki`]), valid during `validity`: DNS SAN `name` (dotted names allowed) and
/// the URI SAN of the client's identity `borealis://client/NAME` (`crate::identity`), server and
/// client auth, written to `<name>.pem`/`<name>.key`. Refuses a name that has a certificate
/// already, and a `dir` without the CA's key.
pub fn issue_cert(dir: &Path, name: &str, validity: Validity) -> Result<TlsFiles, TransportError> {
    check_host_name(name)?;
    let issuer = issuer_for_new_leaf(dir, name)?;
    let mut params = leaf_params(name)?;
    let identity = format!("{}{name}", crate::identity::CLIENT_IDENTITY);
    params.subject_alt_names.push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(identity)?));
    params.not_before = OffsetDateTime::from(validity.not_before);
    params.not_after = OffsetDateTime::from(validity.not_after);
    write_leaf(dir, name, &params, &issuer)?;
    Ok(TlsFiles { ca_cert: cert_path(dir, CA_STEM), cert: cert_path(dir, name), key: key_path(dir, name) })
}

/// The CRL file [`revoke_certs`] writes in `dir`.
pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join(CRL_FILE)
}

/// Revokes the certificates in the PEM files `certs` (the first of each file): writes
/// `dir/crl.pem` anew, signed by the CA in `dir`, listing what it listed before and their
/// serials, with a CRL number one higher. With `certs` empty it signs the same list again (or a
/// first CRL revoking nothing, to give nodes before any revocation). Refuses a certificate the
/// CA did not issue and a `crl.pem` the CA did not sign before writing anything; the file is
/// replaced atomically.
pub fn revoke_certs(dir: &Path, certs: &[&Path]) -> Result<CrlUpdate, TransportError> {
    let issuer = load_ca(dir)?;
    let ca_file = cert_path(dir, CA_STEM);
    let ca = first_cert(&ca_file)?;
    let path = crl_path(dir);
    let mut contents = existing_crl(&path, &ca)?;
    let now = SystemTime::now();
    let mut added = 0;
    for &cert_file in certs {
        let serial = crl::serial_issued_by(&first_cert(cert_file)?, &ca).map_err(|_| {
            TransportError::ForeignCertificate { cert: cert_file.to_owned(), ca: ca_file.clone() }
        })?;
        if !contents.revoked.iter().any(|r| r.serial == serial) {
            contents.revoked.push(RevokedSerial { serial, revoked_at_unix_s: unix_s(now) });
            added += 1;
        }
    }
    let number = contents.number.saturating_add(1);
    let crl =
        crl_params(&contents, number, now).map_err(|detail| bad_crl(&path, detail))?.signed_by(&issuer)?;
    write_atomically(&path, crl.pem()?.as_bytes(), CERT_FILE_MODE)?;
    Ok(CrlUpdate { path, number, added, revoked_total: contents.revoked.len() })
}

/// What the CRL file at `path` lists (every CRL in it, merged), checked to be signed by `ca`;
/// nothing if there is no file.
fn existing_crl(path: &Path, ca: &CertificateDer<'static>) -> Result<CrlContents, TransportError> {
    let mut merged = CrlContents { number: 0, revoked: Vec::new() };
    if !exists(path)? {
        return Ok(merged);
    }
    let cas = std::slice::from_ref(ca);
    for der in crl::load_crls(path, cas)? {
        let one = crl::read_crl(&der, cas).map_err(|detail| bad_crl(path, detail))?;
        merged.number = merged.number.max(one.number);
        for entry in one.revoked {
            if !merged.revoked.iter().any(|r| r.serial == entry.serial) {
                merged.revoked.push(entry);
            }
        }
    }
    Ok(merged)
}

/// The parameters of a CRL listing `contents.revoked`, numbered `number`, issued at `now`.
fn crl_params(
    contents: &CrlContents,
    number: u64,
    now: SystemTime,
) -> Result<CertificateRevocationListParams, String> {
    let revoked_certs = contents
        .revoked
        .iter()
        .map(|entry| {
            let revocation_time = OffsetDateTime::from_unix_timestamp(entry.revoked_at_unix_s)
                .map_err(|e| format!("revocation time {}: {e}", entry.revoked_at_unix_s))?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&entry.serial),
                revocation_time,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let this_update = OffsetDateTime::from(now);
    Ok(CertificateRevocationListParams {
        this_update,
        next_update: this_update + CRL_NEXT_UPDATE,
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    })
}

/// The CA in `dir` as an issuer, for a new certificate `name`: refuses a `dir` without the CA's
/// certificate and key, and a name that has a certificate already.
fn issuer_for_new_leaf(dir: &Path, name: &str) -> Result<Issuer<'static, KeyPair>, TransportError> {
    let issuer = load_ca(dir)?;
    if exists(&cert_path(dir, name))? || exists(&key_path(dir, name))? {
        let source = io::Error::new(io::ErrorKind::AlreadyExists, "this name has a certificate already");
        return Err(TransportError::FileIo { path: cert_path(dir, name), source });
    }
    Ok(issuer)
}

/// The CA in `dir` (certificate and key) as an issuer.
fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, TransportError> {
    let (cert, key) = (cert_path(dir, CA_STEM), key_path(dir, CA_STEM));
    if !pair_exists(&cert, &key)? {
        let source =
            io::Error::new(io::ErrorKind::NotFound, "the cluster CA's certificate and key are not here");
        return Err(TransportError::FileIo { path: cert, source });
    }
    Ok(Issuer::from_ca_cert_pem(&read_text(&cert)?, KeyPair::from_pem(&read_text(&key)?)?)?)
}

fn first_cert(path: &Path) -> Result<CertificateDer<'static>, TransportError> {
    let first = load_certs(path)?.into_iter().next();
    first.ok_or_else(|| TransportError::NoCertificate { path: path.to_owned() })
}

fn unix_s(time: SystemTime) -> i64 {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn bad_crl(path: &Path, detail: String) -> TransportError {
    TransportError::BadCrl { path: path.to_owned(), detail }
}

fn check_host_name(name: &str) -> Result<(), TransportError> {
    name.split('.').try_for_each(check_name).map_err(|_| TransportError::PkiName {
        name: name.to_owned(),
        why: "must be a DNS name: dot-separated labels of lowercase letters, digits and '-'",
    })
}

fn write_host_leaf(
    dir: &Path,
    name: &str,
    addresses: &[std::net::IpAddr],
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), TransportError> {
    let mut params = leaf_params(name)?;
    params.subject_alt_names.extend(addresses.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    write_leaf(dir, name, &params, issuer)
}

/// Loads the CA from `dir`, or creates it. Returns the issuer and whether it was just created.
fn ensure_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, bool), TransportError> {
    let (cert, key) = (cert_path(dir, CA_STEM), key_path(dir, CA_STEM));
    if pair_exists(&cert, &key)? {
        let key_pair = KeyPair::from_pem(&read_text(&key)?)?;
        return Ok((Issuer::from_ca_cert_pem(&read_text(&cert)?, key_pair)?, false));
    }
    let key_pair = KeyPair::generate()?;
    let params = ca_params("Borealis development CA");
    let ca_cert = params.self_signed(&key_pair)?;
    write_atomically(&key, key_pair.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_atomically(&cert, ca_cert.pem().as_bytes(), CERT_FILE_MODE)?;
    Ok((Issuer::new(params, key_pair), true))
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Writes `<stem>.pem`/`<stem>.key`: a new key and a certificate for DNS name `name`.
fn issue_leaf(
    dir: &Path,
    stem: &str,
    name: &str,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), TransportError> {
    write_leaf(dir, stem, &leaf_params(name)?, issuer)
}

/// A leaf's parameters: DNS SAN `name`, both server and client auth.
fn leaf_params(name: &str) -> Result<CertificateParams, TransportError> {
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name = distinguished_name(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Writes `<stem>.key` (a new key) and `<stem>.pem` (its certificate from `params`).
fn write_leaf(
    dir: &Path,
    stem: &str,
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), TransportError> {
    let key_pair = KeyPair::generate()?;
    let cert = params.signed_by(&key_pair, issuer)?;
    write_atomically(&key_path(dir, stem), key_pair.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_atomically(&cert_path(dir, stem), cert.pem().as_bytes(), CERT_FILE_MODE)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Names become a DNS SAN and a file stem: one lowercase DNS label starting with a letter (so it
/// is never taken for an IP address), and not the CA's stem.
fn check_name(name: &str) -> Result<(), TransportError> {
    let why = if name.is_empty() || name.len() > NAME_BYTES_MAX {
        Some("must be 1 to 63 bytes")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        Some("must start with a lowercase letter and not end with '-'")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Some("may hold only lowercase letters, digits and '-'")
    } else if name == CA_STEM {
        Some("is reserved for the CA")
    } else {
        None
    };
    why.map_or(Ok(()), |why| Err(TransportError::PkiName { name: name.to_owned(), why }))
}

/// True if both files exist, false if neither; an error if only one does.
fn pair_exists(cert: &Path, key: &Path) -> Result<bool, TransportError> {
    match (exists(cert)?, exists(key)?) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => {
            Err(TransportError::PkiIncomplete { present: cert.to_owned(), missing: key.to_owned() })
        }
        (false, true) => {
            Err(TransportError::PkiIncomplete { present: key.to_owned(), missing: cert.to_owned() })
        }
    }
}

fn exists(path: &Path) -> Result<bool, TransportError> {
    path.try_exists().map_err(|source| TransportError::FileIo { path: path.to_owned(), source })
}

fn read_text(path: &Path) -> Result<String, TransportError> {
    fs::read_to_string(path).map_err(|source| TransportError::FileIo { path: path.to_owned(), source })
}

/// Writes `contents` to a temporary file beside `path` with `mode`, syncs it, and renames it over
/// `path`: readers see the old file or the whole new one, and a key is never briefly readable.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TransportError> {
    let io_error = |source: io::Error| TransportError::FileIo { path: path.to_owned(), source };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    // A temp file left by a crash is ours to discard.
    match fs::remove_file(&temp) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(io_error(error)),
        _ => {}
    }
    let mut file = create_new_with_mode(&temp, mode).map_err(io_error)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io_error)?;
    fs::rename(&temp, path).map_err(io_error)
}

#[cfg(unix)]
fn create_new_with_mode(path: &Path, mode: u32) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)
}

#[cfg(not(unix))]
fn create_new_with_mode(path: &Path, _mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}

fn cert_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.pem"))
}

fn key_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.key"))
}
