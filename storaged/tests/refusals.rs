//! Real-process tests of what a node must refuse: a stale writer, a client without a valid
//! certificate, malformed frames (the node keeps serving), bad configuration, and a data
//! directory that is not this node's.

mod support;

use std::process::Command;

use protocol::messages::{EpochBump, ErrorCode, Truncate};
use protocol::{Epoch, Lsn, LsnRange, Message};
use support::*;

#[test]
fn a_stale_epoch_is_refused_and_the_new_writer_proceeds() {
    let mut node = TestNode::new();
    node.start();
    runtime().block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let payload = |_| b"row".to_vec();
        assert!(matches!(client.call(&batch(chain(1, 5, Epoch(1), payload), 1)).await.unwrap(), Message::AppendAck(_)));
        let bump = Message::EpochBump(EpochBump { pg: PG, epochs: epochs(2) });
        assert!(matches!(client.call(&bump).await.unwrap(), Message::EpochAck(a) if a.scl == Lsn(5)));
        let stale = client.call(&batch(chain(6, 1, Epoch(1), payload), 1)).await.unwrap();
        assert!(matches!(&stale, Message::Error(e) if e.code == ErrorCode::StaleEpoch), "{stale:?}");
        let range = LsnRange::new(Lsn(5), Lsn(100)).unwrap();
        let truncate = Message::Truncate(Truncate { pg: PG, epochs: epochs(2), range });
        assert!(matches!(client.call(&truncate).await.unwrap(), Message::TruncateAck(_)));
        let mut resumed = chain(101, 1, Epoch(2), payload);
        resumed = vec![rechain(resumed.remove(0), 5)];
        assert!(matches!(client.call(&batch(resumed, 2)).await.unwrap(), Message::AppendAck(a) if a.scl == Lsn(101)));
    });
    // The fence is durable: after a crash the old writer is still refused.
    node.kill9();
    node.start();
    runtime().block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let stale = client.call(&batch(chain(102, 1, Epoch(1), |_| b"x".to_vec()), 1)).await.unwrap();
        assert!(matches!(&stale, Message::Error(e) if e.code == ErrorCode::StaleEpoch), "{stale:?}");
    });
}

/// The same record with `prev_pg_lsn` (and `prev_volume_lsn`) pointing at `prev`.
fn rechain(record: protocol::Record, prev: u64) -> protocol::Record {
    let meta = protocol::RecordMeta { prev_pg_lsn: Lsn(prev), prev_volume_lsn: Lsn(prev), ..*record.meta() };
    protocol::Record::new(meta, record.payload().clone()).unwrap()
}

#[test]
fn clients_without_a_certificate_from_the_cluster_ca_are_refused() {
    let mut node = TestNode::new();
    node.start();
    let rogue = node.pki.untrusted_files_for("rogue").unwrap();
    runtime().block_on(async {
        // With TLS 1.3 the client may finish its side of the handshake before the server's
        // verdict arrives: either the connect or the first request must fail.
        if let Ok(client) = Client::connect(&node, &rogue).await {
            let reply = client.call(&Message::StatusRequest).await;
            assert!(reply.is_err(), "an untrusted client got {reply:?}");
        }
        let good = Client::connect(&node, &node.client_files()).await.unwrap();
        assert!(matches!(good.call(&Message::StatusRequest).await.unwrap(), Message::Status(_)));
    });
}

#[test]
fn a_malformed_frame_gets_a_typed_error_and_closes_only_its_stream() {
    let mut node = TestNode::new();
    node.start();
    runtime().block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let (mut send, mut recv) = client.connection.open_bi().await.unwrap();
        let mut garbage = b"BRLS".to_vec();
        garbage.extend_from_slice(&[0xff; 60]);
        send.write_all(&garbage).await.unwrap();
        let reply = transport::framed::read_frame(&mut recv).await.unwrap();
        assert!(matches!(&reply, Some(Message::Error(e)) if e.code == ErrorCode::BadRequest), "{reply:?}");
        assert!(transport::framed::read_frame(&mut recv).await.unwrap().is_none(), "the stream is closed");
        // A frame claiming a huge body is refused from its header, before any allocation.
        let (mut send, mut recv) = client.connection.open_bi().await.unwrap();
        let header = *b"BRLS\x01\x01\x00\x00\xff\xff\xff\x7f\0\0\0\0";
        let crc = crc32c::crc32c(&header);
        send.write_all(&header).await.unwrap();
        send.write_all(&crc.to_le_bytes()).await.unwrap();
        let reply = transport::framed::read_frame(&mut recv).await.unwrap();
        assert!(matches!(&reply, Some(Message::Error(e)) if e.message.contains("maximum")), "{reply:?}");
        // The connection and the node go on serving.
        assert!(matches!(client.call(&Message::StatusRequest).await.unwrap(), Message::Status(_)));
    });
}

fn storaged(args: &[String]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_storaged")).args(args).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).trim().to_string())
}

#[test]
fn configuration_mistakes_are_one_line_errors() {
    let mut node = TestNode::new();
    let (ok, err) = storaged(&["--config".into(), "/nonexistent/storaged.toml".into()]);
    assert!(!ok && err.starts_with("storaged: config file /nonexistent/storaged.toml"), "{err}");
    let mut args = node.args();
    let listen = args.iter().position(|a| a == "--listen").unwrap() + 1;
    args[listen] = "not-an-address".into();
    let (ok, err) = storaged(&args);
    assert!(!ok && err.contains("bad address `not-an-address`"), "{err}");
    node.start();
    let (ok, err) = storaged(&node.args());
    assert!(!ok && err.lines().last().unwrap().contains("in use"), "{err}");
}

#[test]
fn a_data_directory_of_another_node_is_refused() {
    let mut node = TestNode::new();
    node.start();
    node.kill9();
    let mut args = node.args();
    let id = args.iter().position(|a| a == "--node-id").unwrap() + 1;
    args[id] = "2".into();
    let (ok, err) = storaged(&args);
    assert!(!ok && err.contains("belongs to node node:1"), "{err}");
}
