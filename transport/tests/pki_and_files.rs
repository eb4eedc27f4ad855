//! The development PKI reuses what exists, writes keys privately, and TLS file errors name the
//! file and the problem.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use support::*;
use transport::pki::ensure_dev_pki;
use transport::tls::{client_config, first_dns_name, load_certs, server_config};
use transport::{TlsFiles, TransportError};

#[test]
fn ensure_dev_pki_twice_reuses_the_ca_and_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ensure_dev_pki(dir.path(), &["node-1"]).expect("first run");
    let ca = fs::read(&first.ca_cert).expect("ca");
    let ca_key = fs::read(&first.ca_key).expect("ca key");
    let leaf = fs::read(first.files_for("node-1").cert).expect("leaf");

    let second = ensure_dev_pki(dir.path(), &["node-1", "node-2"]).expect("second run");
    assert_eq!(second, first);
    assert_eq!(fs::read(&second.ca_cert).expect("ca"), ca);
    assert_eq!(fs::read(&second.ca_key).expect("ca key"), ca_key);
    assert_eq!(fs::read(second.files_for("node-1").cert).expect("leaf"), leaf);
    // The new name is signed by the reused CA: its config builds and names it.
    let node2 = second.files_for("node-2");
    server_config(&node2, &tuning()).expect("node-2 config");
    assert_eq!(first_dns_name(&load_certs(&node2.cert).expect("cert")[0]).as_deref(), Some("node-2"));
}

#[test]
fn key_files_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ensure_dev_pki(dir.path(), &["client"]).expect("pki");
    for key in [pki.ca_key.clone(), pki.files_for("client").key] {
        let mode = fs::metadata(&key).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
}

#[test]
fn bad_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["", "ca", "Node", "1node", "a/b", "../x", "node-", "10.0.0.1"] {
        let result = ensure_dev_pki(dir.path(), &[name]);
        assert!(matches!(result, Err(TransportError::PkiName { .. })), "{name:?}: {result:?}");
    }
}

#[test]
fn half_a_pair_is_an_error_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ensure_dev_pki(dir.path(), &["client"]).expect("pki");
    fs::remove_file(&pki.ca_cert).expect("remove ca cert");
    let error = ensure_dev_pki(dir.path(), &["client"]).expect_err("incomplete");
    assert!(matches!(error, TransportError::PkiIncomplete { .. }), "{error}");
    assert!(pki.ca_key.exists());
}

#[test]
fn tls_file_errors_name_the_file_and_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let good = pki.files_for(CLIENT_NAME);
    let junk = dir.path().join("junk.pem");
    fs::write(&junk, "not a pem file\n").expect("write");
    let torn = dir.path().join("torn.pem");
    fs::write(&torn, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("write");
    let missing = dir.path().join("missing.pem");

    let cases: [(TlsFiles, &str); 5] = [
        (TlsFiles { cert: missing.clone(), ..good.clone() }, "file not found"),
        (TlsFiles { cert: junk.clone(), ..good.clone() }, "no certificate in file"),
        (TlsFiles { key: good.cert.clone(), ..good.clone() }, "no private key in file"),
        (TlsFiles { ca_cert: torn.clone(), ..good.clone() }, "bad PEM"),
        (TlsFiles { key: pki.files_for(SERVER_NAME).key, ..good.clone() }, "does not match"),
    ];
    for (files, problem) in cases {
        let error = client_config(&files, &tuning()).expect_err(problem).to_string();
        assert!(error.contains(problem), "{error}");
        assert!(error.contains(&dir.path().display().to_string()), "no path in: {error}");
        assert!(!error.contains('\n'), "not one line: {error}");
    }
}

#[test]
fn tuning_out_of_bounds_is_refused() {
    let bad = [
        transport::Tuning { max_udp_payload_bytes: 1000, ..tuning() },
        transport::Tuning { keep_alive: tuning().idle_timeout, ..tuning() },
        transport::Tuning { max_concurrent_bidi_streams: 0, ..tuning() },
    ];
    for tuning in bad {
        assert!(matches!(tuning.transport_config(), Err(TransportError::Tuning { .. })), "{tuning:?}");
    }
    transport::Tuning { max_udp_payload_bytes: 4000, ..tuning() }.endpoint_config().expect("4000 bytes");
}
