//! Real QUIC over 127.0.0.1: mutual TLS accepts only CA-signed clients, frames round-trip, bad
//! streams are contained, and binding a taken port is a recognisable error.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use protocol::Message;
use support::*;
use transport::{any_addr_for, client_endpoint, connect, peer_name, request, TransportError};

async fn trusted_client(pki: &transport::DevPki, server: SocketAddr) -> quinn::Connection {
    let endpoint = client_endpoint(any_addr_for(server), &pki.files_for(CLIENT_NAME), &tuning())
        .expect("client endpoint");
    connect(&endpoint, server, SERVER_NAME, TEST_TIMEOUT).await.expect("connect")
}

/// A refused client: either the handshake fails, or (TLS 1.3 checks the client's certificate
/// after the client has finished) the first request does; the server says why.
async fn assert_refused(endpoint: &quinn::Endpoint, server: &mut TestServer, why_expected: &str) {
    if let Ok(conn) = connect(endpoint, server.addr, SERVER_NAME, TEST_TIMEOUT).await {
        let reply = tokio::time::timeout(TEST_TIMEOUT, request(&conn, &Message::StatusRequest)).await;
        assert!(matches!(reply, Ok(Err(_))), "refused client got {reply:?}");
    }
    match server.next_event().await {
        Event::HandshakeFailed(why) => assert!(why.contains(why_expected), "{why}"),
        other => panic!("server should refuse the handshake, saw {other:?}"),
    }
}

#[tokio::test]
async fn trusted_client_round_trips_frames_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let mut server = start_server(&pki);
    let conn = trusted_client(&pki, server.addr).await;
    assert_eq!(peer_name(&conn).as_deref(), Some(SERVER_NAME));

    let reply = tokio::time::timeout(TEST_TIMEOUT, request(&conn, &Message::StatusRequest)).await;
    assert_eq!(reply.expect("in time").expect("status"), Message::Status(status()));
    let batch = append_batch();
    let echoed = tokio::time::timeout(TEST_TIMEOUT, request(&conn, &batch)).await;
    assert_eq!(echoed.expect("in time").expect("echo"), batch);

    match server.next_event().await {
        Event::Connected { peer } => assert_eq!(peer.as_deref(), Some(CLIENT_NAME)),
        other => panic!("expected a connection, saw {other:?}"),
    }
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let mut server = start_server(&pki);

    let roots = transport::tls::load_roots(&pki.ca_cert).expect("roots");
    let mut crypto = rustls::ClientConfig::builder_with_provider(transport::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![protocol::frame::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("quic config");
    let mut endpoint = quinn::Endpoint::client(any_addr_for(server.addr)).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));

    assert_refused(&endpoint, &mut server, "peer sent no certificates").await;
}

#[tokio::test]
async fn client_signed_by_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let mut server = start_server(&pki);
    let untrusted = pki.untrusted_files_for(CLIENT_NAME).expect("untrusted files");
    let endpoint = client_endpoint(any_addr_for(server.addr), &untrusted, &tuning()).expect("endpoint");

    assert_refused(&endpoint, &mut server, "UnknownIssuer").await;
}

#[tokio::test]
async fn garbage_stream_is_a_format_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let mut server = start_server(&pki);
    let bad = trusted_client(&pki, server.addr).await;
    assert!(matches!(server.next_event().await, Event::Connected { .. }));

    let (mut send, _recv) = bad.open_bi().await.expect("open stream");
    send.write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n").await.expect("write garbage");
    send.finish().expect("finish");
    match server.next_event().await {
        Event::StreamFailed(TransportError::Format(_)) => {}
        other => panic!("expected a format error, saw {other:?}"),
    }

    let good = trusted_client(&pki, server.addr).await;
    let reply = tokio::time::timeout(TEST_TIMEOUT, request(&good, &Message::StatusRequest)).await;
    assert_eq!(reply.expect("in time").expect("status"), Message::Status(status()));
}

#[tokio::test]
async fn stream_ending_mid_frame_is_unexpected_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let mut server = start_server(&pki);
    let conn = trusted_client(&pki, server.addr).await;
    assert!(matches!(server.next_event().await, Event::Connected { .. }));
    let frame = protocol::frame_bytes(&append_batch()).expect("frame");

    for (cut, part) in [(10, "frame header"), (frame.len() - 1, "frame body")] {
        let (mut send, _recv) = conn.open_bi().await.expect("open stream");
        send.write_all(&frame[..cut]).await.expect("write");
        send.finish().expect("finish");
        match server.next_event().await {
            Event::StreamFailed(TransportError::UnexpectedEnd { what, .. }) => assert_eq!(what, part),
            other => panic!("expected an unexpected end in the {part}, saw {other:?}"),
        }
    }
}

#[tokio::test]
async fn binding_a_taken_port_is_a_bind_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let server = start_server(&pki);
    let files = pki.files_for(SERVER_NAME);

    let error = transport::server_endpoint(server.addr, &files, &tuning()).expect_err("port is taken");
    assert!(error.is_addr_in_use(), "{error}");
    assert!(matches!(&error, TransportError::Bind { addr, .. } if *addr == server.addr));
}

#[test]
fn endpoint_outside_a_runtime_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dev_pki(dir.path());
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let error =
        transport::server_endpoint(addr, &pki.files_for(SERVER_NAME), &tuning()).expect_err("no runtime");
    assert!(matches!(error, TransportError::NoRuntime), "{error}");
}
