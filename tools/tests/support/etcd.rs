//! A cluster of "hosts" on loopback whose map is in a real etcd (Debian's etcd-server, started
//! here): `cluster init --hosts --etcd`, then six nodes started from their bundles.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use etcdmap::LocalEtcd;

use super::{finish, start_storaged, Killed, Run, BOREALIS};

/// One host of the test's hosts file (hosts beyond the first six are spares to add later).
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub address: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
}

/// The running cluster; nodes and etcd are killed when it drops.
pub struct EtcdCluster {
    pub root: tempfile::TempDir,
    pub etcd: LocalEtcd,
    /// The cluster directory `init` wrote.
    pub out: PathBuf,
    pub hosts: Vec<Host>,
    /// Node `i + 1`'s process, while it runs.
    pub nodes: Vec<Option<Killed>>,
    /// What `init` said.
    pub init: Run,
}

/// `count` hosts on loopback, each with its own ports (held together while picked, so distinct).
fn hosts(root: &Path, count: usize) -> Vec<Host> {
    let udp: Vec<std::net::UdpSocket> =
        (0..count).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let tcp: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    (1..=count)
        .zip(udp.iter().zip(&tcp))
        .map(|(i, (udp, tcp))| Host {
            name: format!("host-{i}.test"),
            address: udp.local_addr().unwrap(),
            admin: tcp.local_addr().unwrap(),
            data_dir: root.join(format!("data-{i}")),
        })
        .collect()
}

/// Runs `borealis ARGS`, bounded in time.
pub fn run(args: &[&str]) -> Run {
    let child = Command::new(BOREALIS)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn borealis");
    finish(child, args)
}

/// `borealis cluster init --hosts FILE --out OUT --etcd ENDPOINT [--etcd-auth] [--etcd-ca CA]`.
pub fn init(file: &Path, out: &Path, endpoint: &str, auth: bool) -> Run {
    init_with(file, out, endpoint, auth, None)
}

fn init_with(file: &Path, out: &Path, endpoint: &str, auth: bool, ca: Option<&Path>) -> Run {
    let (file, out) = (file.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["cluster", "init", "--hosts", file, "--out", out, "--etcd", endpoint];
    if auth {
        args.push("--etcd-auth");
    }
    if let Some(ca) = ca {
        args.extend(["--etcd-ca", ca.to_str().unwrap()]);
    }
    run(&args)
}

impl EtcdCluster {
    /// etcd, `init --hosts --etcd` for the first six of `hosts` hosts (two per AZ), and those six
    /// nodes started.
    pub fn start(hosts: usize) -> EtcdCluster {
        EtcdCluster::start_with(hosts, false)
    }

    /// The same, secured: etcd speaks TLS (a server certificate from a CA of its own, given to
    /// `init --etcd-ca`) and its authentication is turned on by `init --etcd-auth`.
    #[allow(dead_code)] // Not every test binary that includes this module uses it.
    pub fn start_with_auth(hosts: usize) -> EtcdCluster {
        EtcdCluster::start_with(hosts, true)
    }

    fn start_with(hosts: usize, secure: bool) -> EtcdCluster {
        let root = tempfile::tempdir().unwrap();
        let etcd_ca = secure.then(|| {
            let leaves = [("etcd".to_owned(), vec!["127.0.0.1".parse().unwrap()])];
            transport::create_cluster_pki(&root.path().join("etcd-pki"), &leaves).expect("etcd's PKI")
        });
        let etcd = match &etcd_ca {
            Some(pki) => {
                let files = pki.files_for("etcd");
                let tls = etcdmap::ServerTls { cert: files.cert, key: files.key, client_ca: None };
                LocalEtcd::start_tls(&root.path().join("etcd"), tls)
            }
            None => LocalEtcd::start(&root.path().join("etcd")),
        }
        .expect("start etcd (Debian's etcd-server)");
        let hosts = self::hosts(root.path(), hosts);
        let hosts_file: String = hosts[..6]
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "[[host]]\nname = \"{}\"\naddress = \"{}\"\naz = {}\nadmin = \"{}\"\ndata_dir = \"{}\"\n\n",
                    h.name,
                    h.address,
                    i / 2,
                    h.admin,
                    h.data_dir.display()
                )
            })
            .collect();
        let (file, out) = (root.path().join("hosts.toml"), root.path().join("cluster"));
        std::fs::write(&file, hosts_file).unwrap();
        let ca = etcd_ca.as_ref().map(|pki| pki.ca_cert.as_path());
        let init = init_with(&file, &out, &etcd.endpoint(), secure, ca);
        assert!(init.code == Some(0), "{init:?}");
        let mut cluster = EtcdCluster { root, etcd, out, hosts, nodes: Vec::new(), init };
        cluster.nodes = (1..=6).map(|i| Some(cluster.start_node(i))).collect();
        cluster
    }

    /// The hosts file `init` read.
    pub fn hosts_file(&self) -> PathBuf {
        self.root.path().join("hosts.toml")
    }

    /// Starts node `i` from its bundle and nothing else.
    pub fn start_node(&self, i: u32) -> Killed {
        let bundle = self.out.join("hosts").join(&self.hosts[i as usize - 1].name);
        let mut command = Command::new(BOREALIS);
        command.arg("storaged").arg("--config").arg(bundle.join("storaged.toml"));
        command.args(["--journal-file-bytes", "16777216"]);
        start_storaged(command, &self.root.path().join(format!("node-{i}.log")))
    }

    /// `borealis ARGS --dir OUT`.
    pub fn borealis(&self, args: &[&str]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--dir", self.out.to_str().unwrap()]);
        run(&all)
    }
}
