//! `borealis cluster init --hosts`: six hosts' bundles, each started as `storaged --config
//! BUNDLE/storaged.toml` and nothing else (here all "hosts" share loopback, so each names its
//! own ports and data directory), and a client using the output directory as its cluster.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use client::{NewRecord, VolumeGeometry, Writer};
use protocol::{Lsn, PageId, RecordKind, VolumeId};
use tools::cluster::free_udp_port;
use tools::local::LocalCluster;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts storaged from `bundle` and waits for its ready line.
fn start(bundle: &std::path::Path, log: &std::path::Path) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_borealis"))
        .arg("storaged")
        .arg("--config")
        .arg(bundle.join("storaged.toml"))
        .args(["--journal-file-bytes", "16777216"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next();
    let child = Killed(child);
    match first {
        Some(Ok(line)) if line.contains("ready") => child,
        other => panic!(
            "{} did not start ({other:?}): {}",
            bundle.display(),
            std::fs::read_to_string(log).unwrap()
        ),
    }
}

#[test]
fn bundles_from_a_hosts_file_start_a_cluster_that_a_client_writes_and_reads() {
    let root = tempfile::tempdir().unwrap();
    let hosts: String = (1..=6)
        .map(|i| {
            let port = free_udp_port().unwrap();
            let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            format!(
                "[[host]]\nname = \"host-{i}.test\"\naddress = \"127.0.0.1:{port}\"\naz = {}\nadmin = \"{admin}\"\ndata_dir = \"{}\"\n\n",
                (i - 1) / 2,
                root.path().join(format!("data-{i}")).display()
            )
        })
        .collect();
    std::fs::write(root.path().join("hosts.toml"), hosts).unwrap();
    let out = root.path().join("cluster");
    let init = Command::new(env!("CARGO_BIN_EXE_borealis"))
        .args(["cluster", "init", "--hosts"])
        .arg(root.path().join("hosts.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success() && said.contains("cluster of 6 hosts"),
        "{said}{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let _nodes: Vec<Killed> = (1..=6)
        .map(|i| {
            let bundle = out.join(format!("hosts/host-{i}.test"));
            start(&bundle, &root.path().join(format!("node-{i}.log")))
        })
        .collect();
    let config = LocalCluster::load(&out).unwrap().client_config().unwrap();
    let geometry = VolumeGeometry::new(VolumeId(0x4057), 4096, 64).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let writer = Writer::open(config, geometry).await.unwrap();
        let mut written = Vec::new();
        for i in 0..50u64 {
            let record = NewRecord {
                page: PageId(i % 7),
                kind: RecordKind::Marker,
                payload: format!("record {i}").into_bytes().into(),
                cpl: true,
                lsn: None,
            };
            let appended = writer.append(vec![record]).await.unwrap();
            appended.durable().await.unwrap();
            written.push((appended.first, i));
        }
        for (lsn, i) in written {
            let got = writer.read_records(PageId(i % 7), Lsn(lsn.0 - 1), lsn).await.unwrap();
            assert_eq!(got[0].payload()[..], format!("record {i}").into_bytes()[..]);
        }
        writer.close().await;
    });
    // The same hosts file cannot overwrite the cluster's CA and key.
    let again = Command::new(env!("CARGO_BIN_EXE_borealis"))
        .args(["cluster", "init", "--hosts"])
        .arg(root.path().join("hosts.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && refused.contains("never replaced"), "{refused}");
}
