//! Restart replays only the journal after the last checkpoint, and a node restored from a
//! checkpoint plus that tail holds exactly what it acknowledged.

mod support;

use protocol::{Epoch, Lsn, Message};
use support::*;

const MIB: u64 = 1024 * 1024;

fn payload(lsn: u64) -> Vec<u8> {
    format!("value-{lsn};").into_bytes().into_iter().cycle().take(16 * 1024).collect()
}

fn replayed_bytes(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.contains("journal and page store replayed"))
        .filter_map(|l| l.split("bytes_scanned: ").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

#[test]
fn restart_replays_only_the_tail_after_the_last_checkpoint_and_keeps_every_ack() {
    let mut node = TestNode::new();
    node.push_arg("--checkpoint-interval-bytes");
    node.push_arg(&(4 * MIB).to_string());
    node.start();
    let rt = runtime();
    let total = 64 * 45; // 45 MiB of 16 KiB records: three journal files
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        for first in (1..=total).step_by(64) {
            let reply = client.call(&batch(chain(first, 64, Epoch(1), payload), 1)).await.unwrap();
            assert!(matches!(reply, Message::AppendAck(_)), "{reply:?}");
        }
    });
    node.kill9();
    for _ in 0..2 {
        node.start();
        rt.block_on(async {
            let client = Client::connect(&node, &node.client_files()).await.unwrap();
            let (scl, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
            assert_eq!(scl, Lsn(total));
            assert_eq!(stored.len() as u64, total);
            assert!(stored.iter().all(|r| r.payload()[..] == payload(r.lsn().0)[..]));
        });
        node.kill9();
    }
    let replayed = replayed_bytes(&node.stderr());
    assert_eq!(replayed.len(), 3, "{}", node.stderr());
    let held = 45 * MIB;
    for bytes in &replayed[1..] {
        assert!(*bytes <= 16 * MIB + 4 * MIB, "replayed {bytes} bytes of {held} held: more than the tail");
    }
}
