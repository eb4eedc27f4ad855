//! `borealis cluster init --hosts`: six hosts' bundles, each started as `storaged --config
//! BUNDLE/storaged.toml` and nothing else (here all "hosts" share loopback, so each names its
//! own ports and data directory), and a client using the output directory as its cluster.

mod support;

use std::process::Command;

use client::{NewRecord, VolumeGeometry, Writer};
use protocol::{Lsn, PageId, RecordKind, VolumeId};
use support::*;
use tools::cluster::free_udp_port;
use tools::local::LocalCluster;

/// Starts storaged from `bundle`'s config and nothing else.
fn start(bundle: &std::path::Path, log: &std::path::Path) -> Killed {
    let mut command = Command::new(BOREALIS);
    command.arg("storaged").arg("--config").arg(bundle.join("storaged.toml"));
    command.args(["--journal-file-bytes", "16777216"]);
    start_storaged(command, log)
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
    let (out, init) = init_hosts(root.path(), &hosts);
    assert!(init.code == Some(0) && init.stdout.contains("cluster of 6 hosts"), "{init:?}");
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
        writer.pin_floor(Some(writer.vdl())).await.unwrap();
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
    let (_, again) = init_hosts(root.path(), &hosts);
    assert!(again.code != Some(0) && again.stderr.contains("never replaced"), "{again:?}");
}
