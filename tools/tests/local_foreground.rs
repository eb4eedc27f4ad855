//! The foreground API `borealis dev` builds on: start the six nodes as children, probe them over
//! QUIC, stop them, nothing left running.

mod support;

use std::time::Duration;

use support::*;
use tools::cluster::Launcher;
use tools::local::{stop_all, LocalCluster};
use tools::probe::{probe_all, Target};
use tools::procs::ProcId;

#[test]
fn start_all_probe_and_stop_all() {
    let dir = ClusterDir::new();
    let cluster = LocalCluster::load_or_create(&dir.path()).unwrap();
    let launcher = Launcher { exe: BOREALIS.into(), prefix: vec!["storaged".into()] };
    let mut nodes = cluster.start_all(&launcher).unwrap();
    let procs: Vec<ProcId> = nodes.iter().map(|n| ProcId::of(n.pid().unwrap()).unwrap()).collect();
    assert_eq!(procs.len(), 6);

    let targets: Vec<Target> = cluster.nodes().iter().map(Target::from).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let probes =
        runtime.block_on(probe_all(&targets, &cluster.client_tls(), Duration::from_secs(5))).unwrap();
    for probe in &probes {
        let status = probe.status.as_ref().expect("node answers over QUIC");
        assert_eq!(status.node.get(), probe.target.node);
        assert_eq!(u32::from(status.az.get()), (probe.target.node - 1) / 2);
    }

    stop_all(&mut nodes);
    assert!(nodes.iter().all(|n| !n.is_running()));
    assert!(procs.iter().all(|p| !p.is_alive()));
}
