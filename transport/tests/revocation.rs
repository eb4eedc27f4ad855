//! Certificates that must be refused, over real QUIC on 127.0.0.1: a client certificate a CRL
//! revokes, an expired one on either side; and the CRL and certificate files behind them (a bad
//! CRL is refused when the config is built, revoking is idempotent and numbered).

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use protocol::Message;
use support::*;
use transport::pki::{crl_path, issue_cert, revoke_certs, Validity};
use transport::tls::{load_certs, server_config_with_crls};
use transport::{any_addr_for, client_endpoint, connect, request, TlsFiles, TransportError};

/// TLS alert `certificate_revoked` (RFC 8446 §6), which QUIC carries as error 0x100 + alert.
const ALERT_CERTIFICATE_REVOKED: u8 = 44;
/// TLS alert `certificate_expired`.
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;

/// A window that closed yesterday.
fn expired() -> Validity {
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 60 * 60);
    Validity { not_before: now - 2 * day, not_after: now - day }
}

/// The client side of a refusal: why the connection ended, from the connect or, since with
/// TLS 1.3 the server judges the client's certificate after the client finished its handshake,
/// from the first request.
async fn client_refusal(files: &TlsFiles, server: &TestServer) -> quinn::ConnectionError {
    let endpoint = client_endpoint(any_addr_for(server.addr), files, &tuning()).expect("client endpoint");
    let conn = match connect(&endpoint, server.addr, SERVER_NAME, TEST_TIMEOUT).await {
        Err(TransportError::Handshake { source, .. }) => return source,
        Err(other) => panic!("expected a handshake refusal, saw {other}"),
        Ok(conn) => conn,
    };
    let reply = tokio::time::timeout(TEST_TIMEOUT, request(&conn, &Message::StatusRequest)).await;
    assert!(matches!(reply, Ok(Err(_))), "a refused client got {reply:?}");
    conn.close_reason().expect("the refused connection is closed")
}

/// The peer closed the connection with TLS alert `alert`, saying `reason`.
fn assert_closed_with_alert(error: &quinn::ConnectionError, alert: u8, reason: &str) {
    match error {
        quinn::ConnectionError::ConnectionClosed(close) => {
            assert_eq!(close.error_code, quinn::TransportErrorCode::crypto(alert), "{error}");
            assert!(String::from_utf8_lossy(&close.reason).contains(reason), "{error}");
        }
        other => panic!("expected a close with TLS alert {alert}, saw {other}"),
    }
}

async fn assert_server_refused(server: &mut TestServer, why_expected: &str) {
    match server.next_event().await {
        Event::HandshakeFailed(why) => assert!(why.contains(why_expected), "{why}"),
        other => panic!("server should refuse the handshake, saw {other:?}"),
    }
}

async fn assert_accepted(files: &TlsFiles, server: &mut TestServer) {
    let endpoint = client_endpoint(any_addr_for(server.addr), files, &tuning()).expect("client endpoint");
    let conn = connect(&endpoint, server.addr, SERVER_NAME, TEST_TIMEOUT).await.expect("connect");
    let reply = tokio::time::timeout(TEST_TIMEOUT, request(&conn, &Message::StatusRequest)).await;
    assert_eq!(reply.expect("in time").expect("status"), Message::Status(status()));
    assert!(matches!(server.next_event().await, Event::Connected { .. }));
}

#[tokio::test]
async fn a_server_with_a_crl_refuses_the_revoked_client_and_accepts_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let revoked = issue_cert(&pki.dir, "revoked", Validity::days_from_now(1)).expect("issue");
    let update = revoke_certs(&pki.dir, &[&revoked.cert]).expect("revoke");
    let config = server_config_with_crls(&pki.files_for(SERVER_NAME), Some(&update.path), &tuning());
    let mut server = start_server_with(config.expect("server config with the CRL"));

    let refused = client_refusal(&revoked, &server).await;
    assert_closed_with_alert(&refused, ALERT_CERTIFICATE_REVOKED, "invalid peer certificate: Revoked");
    assert_server_refused(&mut server, "Revoked").await;
    assert_accepted(&pki.files_for(CLIENT_NAME), &mut server).await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_by_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let old = issue_cert(&pki.dir, "old", expired()).expect("issue");
    let mut server = start_server(&pki);

    let refused = client_refusal(&old, &server).await;
    assert_closed_with_alert(&refused, ALERT_CERTIFICATE_EXPIRED, "certificate expired");
    assert_server_refused(&mut server, "expired").await;
    assert_accepted(&pki.files_for(CLIENT_NAME), &mut server).await;
}

#[tokio::test]
async fn a_client_refuses_a_server_whose_certificate_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let old = issue_cert(&pki.dir, "old-node", expired()).expect("issue");
    let mut server = start_server_with(transport::server_config(&old, &tuning()).expect("config"));

    let endpoint = client_endpoint(any_addr_for(server.addr), &pki.files_for(CLIENT_NAME), &tuning());
    let endpoint = endpoint.expect("client endpoint");
    let error = connect(&endpoint, server.addr, "old-node", TEST_TIMEOUT).await.expect_err("expired server");
    match &error {
        TransportError::Handshake { source: quinn::ConnectionError::TransportError(refusal), .. } => {
            assert_eq!(refusal.code, quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_EXPIRED), "{error}");
            assert!(refusal.reason.contains("certificate expired"), "{error}");
        }
        other => panic!("expected this client to refuse the handshake, saw {other}"),
    }
    // The client told the server why it gave up.
    assert_server_refused(&mut server, "handshake failed: error 45").await;
}

#[test]
fn crl_file_problems_are_refused_when_the_config_is_built() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(&dir.path().join("ours"));
    let files = pki.files_for(SERVER_NAME);
    let junk = dir.path().join("junk.pem");
    fs::write(&junk, "not a pem file\n").expect("write");
    let cert_only = pki.files_for(CLIENT_NAME).cert;
    // A CA with another name, and one with our CA's name but another key.
    let other_name = transport::create_cluster_pki(&dir.path().join("cluster"), &[]).expect("other CA");
    let other_key = ensure_other_dev_pki(&dir.path().join("theirs"));
    let cases = [
        (dir.path().join("missing.pem"), "file not found"),
        (junk, "no X509 CRL in file"),
        (cert_only, "no X509 CRL in file"),
        (revoke_certs(&other_name.dir, &[]).expect("crl").path, "which is not a CA of the CA file"),
        (revoke_certs(&other_key, &[]).expect("crl").path, "signature does not verify"),
    ];
    for (crl, problem) in cases {
        let error = server_config_with_crls(&files, Some(&crl), &tuning()).expect_err(problem).to_string();
        assert!(error.contains(problem), "{error}");
        assert!(error.contains(&crl.display().to_string()), "no path in: {error}");
        assert!(!error.contains('\n'), "not one line: {error}");
    }
    let ours = revoke_certs(&pki.dir, &[]).expect("our crl");
    server_config_with_crls(&files, Some(&ours.path), &tuning()).expect("our own CRL is usable");
}

fn ensure_other_dev_pki(dir: &Path) -> std::path::PathBuf {
    transport::ensure_dev_pki(dir, &[]).expect("another dev pki").dir
}

#[test]
fn revoking_is_numbered_idempotent_and_refuses_a_certificate_of_another_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let a = issue_cert(&pki.dir, "a", Validity::days_from_now(1)).expect("a").cert;
    let b = issue_cert(&pki.dir, "b", Validity::days_from_now(1)).expect("b").cert;

    let first = revoke_certs(&pki.dir, &[]).expect("empty CRL");
    assert_eq!((first.number, first.added, first.revoked_total), (1, 0, 0));
    assert_eq!(first.path, crl_path(&pki.dir));
    let second = revoke_certs(&pki.dir, &[&a]).expect("revoke a");
    assert_eq!((second.number, second.added, second.revoked_total), (2, 1, 1));
    let third = revoke_certs(&pki.dir, &[&a, &b]).expect("revoke a again and b");
    assert_eq!((third.number, third.added, third.revoked_total), (3, 1, 2));

    let cas = load_certs(&pki.ca_cert).expect("ca");
    let crls = transport::crl::load_crls(&third.path, &cas).expect("crl");
    let listed = transport::crl::read_crl(&crls[0], &cas).expect("contents");
    let serial = |cert: &Path| {
        transport::crl::serial_issued_by(&load_certs(cert).expect("cert")[0], &cas[0]).expect("ours")
    };
    let serials: Vec<Vec<u8>> = listed.revoked.iter().map(|r| r.serial.clone()).collect();
    assert_eq!((listed.number, serials), (3, vec![serial(&a), serial(&b)]));

    let before = fs::read(&third.path).expect("crl bytes");
    let foreign = pki.untrusted_files_for("rogue").expect("untrusted").cert;
    let error = revoke_certs(&pki.dir, &[&a, &foreign]).expect_err("foreign certificate");
    assert!(matches!(&error, TransportError::ForeignCertificate { cert, .. } if *cert == foreign), "{error}");
    assert_eq!(fs::read(&third.path).expect("crl bytes"), before, "nothing written");
}

#[test]
fn issuing_refuses_a_name_that_has_a_certificate_and_a_dir_without_a_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let client = fs::read(pki.files_for(CLIENT_NAME).cert).expect("client cert");
    let error = issue_cert(&pki.dir, CLIENT_NAME, Validity::days_from_now(1)).expect_err("taken");
    assert!(error.to_string().contains("has a certificate already"), "{error}");
    assert_eq!(fs::read(pki.files_for(CLIENT_NAME).cert).expect("client cert"), client);

    let empty = tempfile::tempdir().expect("tempdir");
    let error = issue_cert(empty.path(), "x", Validity::days_from_now(1)).expect_err("no CA");
    assert!(error.to_string().contains("CA's certificate and key are not here"), "{error}");
    let error = revoke_certs(empty.path(), &[]).expect_err("no CA");
    assert!(error.to_string().contains("CA's certificate and key are not here"), "{error}");
}
