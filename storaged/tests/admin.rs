//! The admin port reports health and Prometheus metrics that follow what the node stores.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use protocol::{Epoch, Message};
use support::*;

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

#[test]
fn health_and_metrics_follow_the_node() {
    let mut node = TestNode::new();
    let (port, _) =
        transport::ports::bind_listen_port(|p| std::net::TcpListener::bind(("127.0.0.1", p))).unwrap();
    let admin = format!("127.0.0.1:{port}");
    node.push_arg("--admin");
    node.push_arg(&admin);
    node.start();
    runtime().block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let reply = client.call(&batch(chain(1, 7, Epoch(1), |_| b"abc".to_vec()), 1)).await.unwrap();
        assert!(matches!(reply, Message::AppendAck(_)));
    });
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(get(&admin, "/health"), (200, "serving\n".to_string()));
    let (status, metrics) = get(&admin, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("borealis_segment_scl{volume=\"b0be\",pg=\"0\"} 7"), "{metrics}");
    assert!(metrics.contains("borealis_journal_groups_written_total"), "{metrics}");
    assert_eq!(get(&admin, "/nope").0, 404);
}
