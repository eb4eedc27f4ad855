//! Real-process tests of the certificates a node must refuse: one from another cluster's CA, an
//! expired one, and one its CRL revokes (from the SIGHUP that loads the CRL on; a connection
//! made before goes on). Each is refused at the handshake with the TLS alert that says why, and
//! nothing its holder tried to write reaches the node; a valid certificate still connects.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use protocol::{Epoch, Lsn, Message, PgId, PgRef, VolumeId};
use support::*;
use transport::pki::{issue_cert, revoke_certs, Validity};
use transport::{TlsFiles, TransportError};

/// The volume a refused client tries to write.
const REFUSED_PG: PgRef = PgRef { volume_id: VolumeId(0xDEAD), pg_id: PgId(0) };
/// TLS alerts (RFC 8446 §6); QUIC closes with error 0x100 + alert.
const ALERT_CERTIFICATE_REVOKED: u8 = 44;
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;
const ALERT_UNKNOWN_CA: u8 = 48;
/// Longest wait for a line in the node's log.
const LOG_WAIT: Duration = Duration::from_secs(20);

/// An append of four records to `REFUSED_PG`.
fn append_to_refused_pg() -> Message {
    match batch(chain(1, 4, Epoch(1), |_| b"must not land".to_vec()), 1) {
        Message::AppendBatch(mut append) => {
            append.pg = REFUSED_PG;
            Message::AppendBatch(append)
        }
        other => panic!("batch() made {other:?}"),
    }
}

/// How the node refused a client holding `files` that tried to append to `REFUSED_PG`: the
/// close of its connection, seen at the connect or, since with TLS 1.3 the node judges the
/// client's certificate after the client finished its handshake, at the first request.
async fn refusal(node: &TestNode, files: &TlsFiles) -> quinn::ConnectionError {
    let client = match Client::connect(node, files).await {
        Err(TransportError::Handshake { source, .. }) => return source,
        Err(other) => panic!("expected a refused handshake, saw {other}"),
        Ok(client) => client,
    };
    let reply = client.call(&append_to_refused_pg()).await;
    assert!(reply.is_err(), "a refused certificate got an answer: {reply:?}");
    client.connection.close_reason().expect("the refused connection is closed")
}

/// The node closed the connection with TLS alert `alert`, saying `reason`.
fn assert_alert(error: &quinn::ConnectionError, alert: u8, reason: &str) {
    match error {
        quinn::ConnectionError::ConnectionClosed(close) => {
            assert_eq!(close.error_code, quinn::TransportErrorCode::crypto(alert), "{error}");
            assert!(String::from_utf8_lossy(&close.reason).contains(reason), "{error}");
        }
        other => panic!("expected the node to close with TLS alert {alert}, saw {other}"),
    }
}

/// Every file under `dir` with its size, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                files.push((entry.path(), meta.len()));
            }
        }
    }
    files.sort();
    files
}

/// Refuses `files` with `alert`/`reason` (also in the node's log as `logged`), and shows that
/// nothing changed: the data directory holds the same files, and the node, asked by a valid
/// client, has no segment of `REFUSED_PG`.
async fn assert_refused_and_nothing_stored(node: &TestNode, files: &TlsFiles, alert: u8, reason: &str) {
    let before = listing(&node.data_dir);
    let error = refusal(node, files).await;
    assert_alert(&error, alert, reason);
    wait_for_log(node, reason, 1);
    assert_eq!(listing(&node.data_dir), before, "the data directory changed");
    let segments = segments(node).await;
    assert!(segments.iter().all(|(pg, _)| *pg != REFUSED_PG), "{segments:?}");
}

/// Each segment the node holds and its SCL, as a valid client sees them.
async fn segments(node: &TestNode) -> Vec<(PgRef, Lsn)> {
    let client = Client::connect(node, &node.client_files()).await.expect("a valid client connects");
    match client.call(&Message::StatusRequest).await.expect("status") {
        Message::Status(status) => status.segments.iter().map(|s| (s.pg, s.scl)).collect(),
        other => panic!("expected a status, saw {other:?}"),
    }
}

/// Waits until `needle` appears at least `count` times in the node's log.
fn wait_for_log(node: &TestNode, needle: &str, count: usize) {
    let deadline = Instant::now() + LOG_WAIT;
    while node.stderr().matches(needle).count() < count {
        assert!(Instant::now() < deadline, "no {needle:?} ×{count} in the log:\n{}", node.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGHUP and waits until the node re-read its TLS files or refused them.
fn reload(node: &TestNode, expect: &str) {
    let seen = node.stderr().matches(expect).count();
    // SAFETY: kill(2) on the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) }, 0);
    wait_for_log(node, expect, seen + 1);
}

/// A window that closed yesterday.
fn expired() -> Validity {
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 60 * 60);
    Validity { not_before: now - 2 * day, not_after: now - day }
}

/// Appends records `first..first+count` of `PG` and checks the node acknowledges them all.
async fn append_acked(client: &Client, first: u64, count: u64) {
    let ack = client.call(&batch(chain(first, count, Epoch(1), |i| vec![i as u8; 64]), 1)).await;
    let through = Lsn(first + count - 1);
    assert!(matches!(&ack, Ok(Message::AppendAck(a)) if a.scl == through), "{ack:?}");
}

#[test]
fn a_client_or_node_certificate_from_another_clusters_ca_is_refused_and_nothing_is_stored() {
    let mut node = TestNode::new();
    node.start();
    // A client's name, and a node's name (as another cluster's node would carry): the CA is
    // checked before any name counts.
    for name in ["rogue", "node-2"] {
        let rogue = node.pki.untrusted_files_for(name).unwrap();
        runtime().block_on(async {
            assert_refused_and_nothing_stored(&node, &rogue, ALERT_UNKNOWN_CA, "UnknownIssuer").await;
        });
    }
}

#[test]
fn an_expired_client_certificate_is_refused_and_nothing_is_stored() {
    let mut node = TestNode::new();
    node.start();
    let old = issue_cert(&node.pki.dir, "old", expired()).unwrap();
    runtime().block_on(async {
        assert_refused_and_nothing_stored(&node, &old, ALERT_CERTIFICATE_EXPIRED, "certificate expired")
            .await;
    });
}

#[test]
fn a_revoked_certificate_is_refused_from_the_sighup_that_loads_the_crl_while_its_open_connection_goes_on() {
    let mut node = TestNode::new();
    let writer = issue_cert(&node.pki.dir, "writer", Validity::days_from_now(1)).unwrap();
    let crl = revoke_certs(&node.pki.dir, &[]).unwrap().path;
    node.push_arg("--crl");
    node.push_arg(crl.to_str().unwrap());
    node.start();
    runtime().block_on(async {
        let open = Client::connect(&node, &writer).await.unwrap();
        append_acked(&open, 1, 10).await;

        let update = revoke_certs(&node.pki.dir, &[&writer.cert]).unwrap();
        assert_eq!((update.path, update.added), (crl, 1));
        reload(&node, "TLS files re-read");

        // Established work is not dropped: the connection made before the reload still writes.
        append_acked(&open, 11, 10).await;
        let (scl, records) = open.read_all(PG, epochs(1), Lsn(0), Lsn(20)).await;
        assert_eq!((scl, records.len()), (Lsn(20), 20));
        // A new connection with the same certificate is refused, and writes nothing.
        assert_refused_and_nothing_stored(&node, &writer, ALERT_CERTIFICATE_REVOKED, "Revoked").await;
        assert_eq!(segments(&node).await, vec![(PG, Lsn(20))]);
    });
}

#[test]
fn a_valid_certificate_still_connects_and_writes_while_a_crl_is_in_force() {
    let mut node = TestNode::new();
    let gone = issue_cert(&node.pki.dir, "gone", Validity::days_from_now(1)).unwrap();
    let fresh = issue_cert(&node.pki.dir, "fresh", Validity::days_from_now(1)).unwrap();
    let crl = revoke_certs(&node.pki.dir, &[&gone.cert]).unwrap().path;
    node.push_arg("--crl");
    node.push_arg(crl.to_str().unwrap());
    node.start();
    runtime().block_on(async {
        let client = Client::connect(&node, &fresh).await.unwrap();
        append_acked(&client, 1, 5).await;
        let dev_client = Client::connect(&node, &node.client_files()).await.unwrap();
        append_acked(&dev_client, 6, 5).await;
        assert_eq!(segments(&node).await, vec![(PG, Lsn(10))]);
        assert_alert(&refusal(&node, &gone).await, ALERT_CERTIFICATE_REVOKED, "Revoked");
    });
}

#[test]
fn a_crl_that_breaks_before_a_sighup_is_logged_and_the_one_in_force_stays() {
    let mut node = TestNode::new();
    let gone = issue_cert(&node.pki.dir, "gone", Validity::days_from_now(1)).unwrap();
    let crl = revoke_certs(&node.pki.dir, &[&gone.cert]).unwrap().path;
    node.push_arg("--crl");
    node.push_arg(crl.to_str().unwrap());
    node.start();
    std::fs::write(&crl, "-----BEGIN X509 CRL-----\nMIIB\n").unwrap();
    reload(&node, "TLS files unusable; kept the old ones");
    assert!(node.stderr().contains("unusable CRL") || node.stderr().contains("bad PEM"), "{}", node.stderr());
    runtime().block_on(async {
        assert_refused_and_nothing_stored(&node, &gone, ALERT_CERTIFICATE_REVOKED, "Revoked").await;
        assert!(segments(&node).await.is_empty());
    });
}

/// Runs storaged with `args` until it exits (killed, and the test failed, if it is still
/// running after `LOG_WAIT`): its exit code and stderr.
fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_storaged"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LOG_WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("storaged started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).trim().to_string())
}

#[test]
fn an_unusable_crl_stops_the_start_with_a_one_line_error() {
    let node = TestNode::new();
    let other_ca = transport::create_cluster_pki(&node.root.path().join("other"), &[]).unwrap();
    let cases = [
        (node.root.path().join("missing.pem"), "file not found"),
        (node.pki.files_for("client").cert, "no X509 CRL in file"),
        (revoke_certs(&other_ca.dir, &[]).unwrap().path, "which is not a CA of the CA file"),
    ];
    for (crl, problem) in cases {
        let mut args = node.args();
        args.extend(["--crl".to_string(), crl.to_str().unwrap().to_string()]);
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(1), "{stderr}");
        let want = format!("storaged: {}: ", crl.display());
        assert!(stderr.starts_with(&want) && stderr.contains(problem), "{stderr}");
        assert!(!stderr.contains('\n'), "not one line: {stderr}");
        assert!(!node.journal_dir().exists(), "refused before touching the data directory's logs");
    }
}
