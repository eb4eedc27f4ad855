//! A node whose disk fills up refuses new writes with a typed error, keeps serving reads, loses
//! no acknowledged record, and takes writes again once space returns. The data directory sits
//! on a small tmpfs that the test mounts (and grows), so it needs root, as CI has.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use protocol::messages::ErrorCode;
use protocol::{Epoch, Lsn, Message};
use support::*;

const RECORDS_PER_BATCH: u64 = 64;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test mounts a tmpfs and must run as root (CI does)");
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", path.display());
        Tmpfs(path.to_path_buf())
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn payload(lsn: u64) -> Vec<u8> {
    format!("record {lsn} ").into_bytes().into_iter().cycle().take(16 * 1024).collect()
}

#[test]
fn a_full_disk_refuses_writes_keeps_every_ack_and_recovers_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&root.path().join("small"), "40m");
    let mut node = TestNode::in_dir(root, Some(fs.0.join("data")));
    node.start();
    let rt = runtime();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let mut next = 1;
        let refusal = loop {
            assert!(next < 100_000, "the disk never filled");
            match client.call(&batch(chain(next, RECORDS_PER_BATCH, Epoch(1), payload), 1)).await.unwrap() {
                Message::AppendAck(ack) => {
                    assert_eq!(ack.scl, Lsn(next + RECORDS_PER_BATCH - 1));
                    next += RECORDS_PER_BATCH;
                }
                Message::Error(error) => break error,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(refusal.code, ErrorCode::DiskFull, "{refusal:?}");
        let acked_through = Lsn(next - 1);
        let (scl, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
        assert_eq!((scl, stored.len() as u64), (acked_through, next - 1), "reads are served while full");
        fs.grow("100m");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply =
                client.call(&batch(chain(next, RECORDS_PER_BATCH, Epoch(1), payload), 1)).await.unwrap();
            match reply {
                Message::AppendAck(ack) if ack.scl == Lsn(next + RECORDS_PER_BATCH - 1) => break,
                Message::Error(e) if e.code == ErrorCode::DiskFull && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("writes did not resume: {other:?}"),
            }
        }
    });
    node.kill9();
    node.start();
    rt.block_on(async {
        let client = Client::connect(&node, &node.client_files()).await.unwrap();
        let (_, stored) = client.read_all(PG, epochs(1), Lsn(0), Lsn(u64::MAX)).await;
        let lsns: Vec<u64> = stored.iter().map(|r| r.lsn().0).collect();
        assert_eq!(
            lsns,
            (1..=lsns.len() as u64).collect::<Vec<_>>(),
            "every acked record, no hole, after restart"
        );
    });
    drop(node);
}
