//! Real-process durability tests: what a node acknowledged survives kill -9, a torn tail is
//! cut, a damaged record mid-journal is reported missing (never served) while the records after
//! it survive, and no plaintext reaches the disk.

mod support;

use protocol::messages::AppendAck;
use protocol::{Lsn, Message, Record};
use support::*;
use transport::framed::{read_frame, write_frame};

fn payload(lsn: u64) -> Vec<u8> {
    let len = [100, 1024, 5000, 16 * 1024][(lsn % 4) as usize];
    format!("row {lsn} ").into_bytes().into_iter().cycle().take(len).collect()
}

fn encoded(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(&mut out);
    out
}

/// Appends batches of `per_batch` records on one stream, pipelined; returns the records whose
/// batch was acknowledged before the stream broke (the node may be killed meanwhile).
async fn pipelined_appends(
    client: &Client,
    first: u64,
    batches: u64,
    per_batch: u64,
    kill_pid_after_20_acks: Option<u32>,
) -> Vec<Record> {
    let (mut send, mut recv) = client.connection.open_bi().await.unwrap();
    let all: Vec<Vec<Record>> =
        (0..batches).map(|b| chain(first + b * per_batch, per_batch, protocol::Epoch(1), payload)).collect();
    let sender = async {
        for records in &all {
            if write_frame(&mut send, &batch(records.clone(), 1)).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    };
    let receiver = async {
        // Acks on one stream come in batch order, so the last one covers all before it.
        let mut acked_through = Lsn(0);
        let mut acks = 0;
        while let Ok(Ok(Some(reply))) = tokio::time::timeout(CALL_TIMEOUT, read_frame(&mut recv)).await {
            let Message::AppendAck(AppendAck { last_lsn, .. }) = reply else { panic!("refused: {reply:?}") };
            acked_through = last_lsn;
            acks += 1;
            if let Some(pid) = kill_pid_after_20_acks.filter(|_| acks == 20) {
                // SAFETY: sending SIGKILL to our own child process.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                // Acks still in flight may arrive, but nothing after the kill can be acked.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                while let Ok(Ok(Some(Message::AppendAck(ack)))) =
                    tokio::time::timeout(std::time::Duration::from_millis(100), read_frame(&mut recv)).await
                {
                    acked_through = ack.last_lsn;
                }
                break;
            }
            if last_lsn.0 == first + batches * per_batch - 1 {
                break;
            }
        }
        acked_through
    };
    tokio::pin!(sender);
    tokio::pin!(receiver);
    let mut sender_done = false;
    let acked_through = loop {
        tokio::select! {
            () = &mut sender, if !sender_done => sender_done = true,
            acked_through = &mut receiver => break acked_through,
        }
    };
    all.iter().flatten().filter(|r| r.lsn() <= acked_through).cloned().collect()
}

#[test]
fn every_acknowledged_record_survives_kill_9_byte_for_byte() {
    let mut node = TestNode::new();
    node.start();
    let rt = runtime();
    let acked = rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        pipelined_appends(&client, 1, 1000, 8, Some(node.pid())).await
    });
    node.kill9();
    assert!(acked.len() >= 20 * 8, "the node was killed after 20 acks");
    assert!(acked.len() < 1000 * 8, "the node was killed mid-stream");
    node.start();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let (scl, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
        assert!(scl >= acked.last().unwrap().lsn(), "SCL {scl} below the last ack");
        for record in &acked {
            let found = stored
                .iter()
                .find(|s| s.lsn() == record.lsn())
                .unwrap_or_else(|| panic!("{} lost", record.lsn()));
            assert_eq!(encoded(found), encoded(record), "{} changed", record.lsn());
        }
    });
}

#[test]
fn acknowledged_records_survive_kill_9_in_the_middle_of_a_stream() {
    let mut node = TestNode::new();
    node.start();
    let rt = runtime();
    let client = rt.block_on(Client::connect(&node, &node.client_files())).unwrap();
    let (mut send, mut recv) = rt.block_on(client.connection.open_bi()).unwrap();
    let mut acked_through = Lsn(0);
    let mut sent: Vec<Record> = Vec::new();
    rt.block_on(async {
        for b in 0..50u64 {
            let records = chain(1 + b * 10, 10, protocol::Epoch(1), payload);
            sent.extend(records.iter().cloned());
            write_frame(&mut send, &batch(records, 1)).await.unwrap();
            if b % 5 == 4 {
                if let Ok(Some(Message::AppendAck(ack))) = read_frame(&mut recv).await {
                    acked_through = ack.last_lsn;
                }
            }
        }
    });
    node.kill9();
    node.start();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let (_, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
        for record in sent.iter().filter(|r| r.lsn() <= acked_through) {
            let found = stored
                .iter()
                .find(|s| s.lsn() == record.lsn())
                .unwrap_or_else(|| panic!("{} lost", record.lsn()));
            assert_eq!(encoded(found), encoded(record));
        }
    });
}

/// Appends three batches, one group each (each awaited), then kills the node.
fn three_groups(node: &mut TestNode) -> Vec<Record> {
    node.start();
    let rt = runtime();
    let records = rt.block_on(async {
        let client = Client::connect(node, &node.client_files()).await.unwrap();
        let mut all = Vec::new();
        for b in 0..3 {
            let records = chain(1 + b * 10, 10, protocol::Epoch(1), payload);
            let reply = client.call(&batch(records.clone(), 1)).await.unwrap();
            assert!(matches!(reply, Message::AppendAck(_)), "{reply:?}");
            all.extend(records);
        }
        all
    });
    node.kill9();
    records
}

/// Offsets of the groups in the first journal file, found by their magic.
fn group_offsets(node: &TestNode) -> (std::path::PathBuf, Vec<usize>) {
    let path = journal_files(&node.journal_dir()).remove(0);
    let bytes = std::fs::read(&path).unwrap();
    let offsets = (0..bytes.len()).step_by(4096).filter(|at| bytes[*at..].starts_with(b"BRJG")).collect();
    (path, offsets)
}

#[test]
fn a_journal_cut_mid_group_restarts_with_the_scl_before_the_torn_group() {
    let mut node = TestNode::new();
    three_groups(&mut node);
    let (path, offsets) = group_offsets(&node);
    let last_records_group = *offsets.last().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(last_records_group as u64 + 300)
        .unwrap();
    node.start();
    let rt = runtime();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let (scl, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
        assert_eq!(scl, Lsn(20), "the torn group held records 21..=30");
        assert_eq!(stored.len(), 20);
        // The node writes on after the cut: a new record lands and SCL moves.
        let reply = client.call(&batch(chain(21, 5, protocol::Epoch(1), payload), 1)).await.unwrap();
        assert!(matches!(reply, Message::AppendAck(ack) if ack.scl == Lsn(25)));
    });
    assert!(node.stderr().contains("torn_tail_cut: true"), "{}", node.stderr());
}

#[test]
fn a_flipped_byte_mid_journal_is_missing_never_served_and_later_records_survive() {
    let mut node = TestNode::new();
    let records = three_groups(&mut node);
    let (path, offsets) = group_offsets(&node);
    let middle = offsets[offsets.len() - 2];
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[middle + 64 + 80 + 500] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    node.start();
    runtime().block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let (scl, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
        assert_eq!(scl, Lsn(10), "records 11..=20 are missing, so SCL stops at 10");
        let lsns: Vec<u64> = stored.iter().map(|r| r.lsn().0).collect();
        assert_eq!(lsns, (1..=10).chain(21..=30).collect::<Vec<_>>());
        for got in &stored {
            let want = records.iter().find(|r| r.lsn() == got.lsn()).unwrap();
            assert_eq!(encoded(got), encoded(want));
        }
    });
    assert!(node.stderr().contains("corrupt_entries: 1"), "{}", node.stderr());
}

#[test]
fn no_plaintext_payload_byte_reaches_the_data_directory() {
    const CANARY: &[u8] = b"BOREALIS-PLAINTEXT-CANARY-";
    let mut node = TestNode::new();
    node.start();
    runtime().block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let records = chain(1, 20, protocol::Epoch(1), |_| CANARY.repeat(100));
        assert!(matches!(client.call(&batch(records, 1)).await.unwrap(), Message::AppendAck(_)));
    });
    node.kill9();
    let mut searched = 0;
    for entry in walk(&node.data_dir) {
        let bytes = std::fs::read(&entry).unwrap();
        searched += bytes.len();
        assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY), "plaintext found in {}", entry.display());
    }
    assert!(searched > 16 << 20, "the journal was searched");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
