//! `borealis cluster restart --rolling` while a writer appends: one AZ at a time, every node
//! drained and restarted, and not one append fails or is lost.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{NewRecord, VolumeGeometry, Writer};
use protocol::{Lsn, PageId, RecordKind, VolumeId};
use support::*;
use tools::local::LocalCluster;

/// Longest the whole roll may take on a busy machine.
const ROLL_TIMEOUT: Duration = Duration::from_secs(180);

fn record(i: u64) -> NewRecord {
    NewRecord {
        page: PageId(i % 13),
        kind: RecordKind::Marker,
        payload: format!("record {i}").into_bytes().into(),
        cpl: true,
        lsn: None,
    }
}

#[test]
fn a_rolling_restart_keeps_every_append_of_a_running_writer() {
    let dir = ClusterDir::new();
    let up = borealis(&dir.path(), &["cluster", "up"]);
    assert_eq!(up.code, Some(0), "{up:?}");
    let before = recorded(&dir.path());
    let config = LocalCluster::load(&dir.path()).unwrap().client_config().unwrap();
    let geometry = VolumeGeometry::new(VolumeId(0x7011), 4096, 64).unwrap();
    let rolled = Arc::new(AtomicBool::new(false));
    let roll = {
        let (path, rolled) = (dir.path(), Arc::clone(&rolled));
        std::thread::spawn(move || {
            // Let the writer get going first.
            std::thread::sleep(Duration::from_secs(1));
            let child = Command::new(BOREALIS)
                .args(["cluster", "restart", "--rolling", "--dir"])
                .arg(&path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let started = Instant::now();
            let output = child.wait_with_output().unwrap();
            rolled.store(true, Ordering::SeqCst);
            (output, started.elapsed())
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let written = runtime.block_on(async {
        let writer = Writer::open(config, geometry).await.unwrap();
        // Every record stays readable as a record (not folded into images) for the final check.
        writer.pin_floor(Some(writer.vdl())).await.unwrap();
        let (mut written, mut i) = (Vec::new(), 0u64);
        let deadline = Instant::now() + ROLL_TIMEOUT;
        // Appends go on through the whole roll, and a little after it.
        let mut after = 0;
        while after < 50 {
            assert!(Instant::now() < deadline, "the roll did not end within {ROLL_TIMEOUT:?}");
            let appended = writer.append(vec![record(i)]).await.expect("append accepted");
            let vdl =
                appended.durable().await.unwrap_or_else(|e| panic!("append {i} failed during the roll: {e}"));
            assert!(vdl >= appended.first);
            written.push((appended.first, i));
            i += 1;
            if rolled.load(Ordering::SeqCst) {
                after += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (lsn, i) in &written {
            let got = writer.read_records(PageId(i % 13), Lsn(lsn.0 - 1), *lsn).await.unwrap();
            assert_eq!(got[0].payload()[..], format!("record {i}").into_bytes()[..], "record {i} at {lsn}");
        }
        writer.close().await;
        written
    });
    let (output, took) = roll.join().unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}{}", String::from_utf8_lossy(&output.stderr));
    for az in 0..3 {
        assert!(said.contains(&format!("AZ {az}: whole again")), "{said}");
    }
    let after = recorded(&dir.path());
    assert!(before.keys().all(|id| after[id] != before[id]), "every node restarted: {before:?} -> {after:?}");
    eprintln!("{} appends, none failed, while every AZ restarted in {took:?}:\n{said}", written.len());
    assert_eq!(borealis(&dir.path(), &["cluster", "down"]).code, Some(0));
}
