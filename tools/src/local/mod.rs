//! A local development cluster: storage nodes on loopback in three simulated AZs (two per AZ by
//! default, up to [`map::NODES_PER_AZ_MAX`]), all state under one directory (`./borealis-dev` by
//! default).
//!
//! Layout of the directory, created on first use and reused afterwards:
//! - `cluster.toml`: the cluster map ([`map`]); its presence is what "a cluster exists" means;
//!   the number of nodes is fixed when it is written (a cluster is never resized in place);
//! - `pki/`: a development CA and certificates `node-1`..`node-N` and `client`;
//! - `kek`: the key-encryption key the nodes share;
//! - `node-N/`: each node's data directory; `logs/node-N.log`: its output;
//! - `pids`: the nodes of a background cluster (see [`crate::daemon`]); `lock`: held while a
//!   command creates the cluster or starts or stops its nodes.
//!
//! Nodes run either in the foreground, as children of the command ([`LocalCluster::start_all`],
//! stopped with [`stop_all`] or when dropped), or in the background ([`crate::daemon`]). Both
//! build their command lines with [`LocalCluster::spec`].
//!
//! Invariants: `cluster.toml` is written last and atomically, so an interrupted first run is
//! simply completed by the next one; [`LocalCluster::load`] never creates anything.

pub mod map;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use transport::{DevPki, TlsFiles};

use crate::cluster::{ensure_key_file, LaunchError, Launcher, NodeProcess, NodeSpec, STOP_TIMEOUT};
use crate::files::DirLock;
use map::{ClusterMap, MapError, NodesPerAz};

/// The cluster directory used when none is given.
pub const DEFAULT_DIR: &str = "borealis-dev";
/// Name of the client certificate in the development PKI.
pub const CLIENT_NAME: &str = "client";
pub const MAP_FILE: &str = "cluster.toml";
const LOCK_FILE: &str = "lock";

/// Why a local cluster could not be set up, loaded or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    #[error("no cluster in {}: run `borealis cluster up`", .0.display())]
    NoCluster(PathBuf),
    #[error("another borealis command is using {}", .0.display())]
    Busy(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("development PKI: {0}")]
    Pki(#[from] transport::TransportError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("cluster map: {0}")]
    Placement(#[from] protocol::placement::PlacementError),
    #[error(
        "the cluster in {} has {existing}, not {requested} per AZ: leave out --nodes-per-az to use it, \
         or give another --dir (a cluster is not resized in place)",
        dir.display()
    )]
    LayoutMismatch { dir: PathBuf, existing: String, requested: u32 },
}

/// One node of a local cluster, with every path resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub id: u32,
    pub az: u16,
    /// TLS server name (the DNS name in its certificate).
    pub name: String,
    /// QUIC address.
    pub addr: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    /// Added to a running cluster (see `map::NodeEntry::spare`).
    pub spare: bool,
}

/// A local cluster's directory and map.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    map: ClusterMap,
    nodes: Vec<LocalNode>,
    pki: DevPki,
}

impl LocalCluster {
    /// Loads the cluster in `dir`, first creating a six-node one if there is none.
    pub fn load_or_create(dir: &Path) -> Result<LocalCluster, LocalError> {
        Self::load_or_create_with(dir, None)
    }

    /// Loads the cluster in `dir`, first creating it if there is none (directory, PKI, key file,
    /// and last the map, with freshly picked ports) with `per_az` nodes in each AZ (default
    /// [`NodesPerAz::DEFAULT`]). An existing cluster is used as it is when `per_az` is `None`,
    /// and refused ([`LocalError::LayoutMismatch`]) when it has another layout. Creation holds
    /// the directory's lock, so two first runs cannot mix their certificates.
    pub fn load_or_create_with(dir: &Path, per_az: Option<NodesPerAz>) -> Result<LocalCluster, LocalError> {
        let map_path = dir.join(MAP_FILE);
        std::fs::create_dir_all(dir.join("logs")).map_err(|source| io(dir, source))?;
        if map_path.exists() {
            return Self::load_with_layout(dir, per_az);
        }
        let _lock = lock_dir(dir)?;
        if !map_path.exists() {
            let map = ClusterMap::new_local(per_az.unwrap_or(NodesPerAz::DEFAULT))?;
            let mut names: Vec<&str> = map.nodes.iter().map(|n| n.name.as_str()).collect();
            names.push(CLIENT_NAME);
            transport::ensure_dev_pki(&dir.join(&map.pki_dir), &names)?;
            ensure_key_file(&dir.join(&map.key_file))?;
            map.write(&map_path)?;
        }
        Self::load_with_layout(dir, per_az)
    }

    /// Loads the cluster in `dir`, refusing it if `per_az` is given and differs from its layout.
    fn load_with_layout(dir: &Path, per_az: Option<NodesPerAz>) -> Result<LocalCluster, LocalError> {
        let cluster = Self::load(dir)?;
        match per_az {
            Some(wanted) if !cluster.map.has_layout(wanted) => Err(LocalError::LayoutMismatch {
                dir: cluster.dir.clone(),
                existing: cluster.map.describe_layout(),
                requested: wanted.get(),
            }),
            _ => Ok(cluster),
        }
    }

    /// Loads the cluster in `dir`; [`LocalError::NoCluster`] if there is none. Creates nothing.
    pub fn load(dir: &Path) -> Result<LocalCluster, LocalError> {
        let map_path = dir.join(MAP_FILE);
        if !map_path.exists() {
            return Err(LocalError::NoCluster(dir.to_owned()));
        }
        let map = ClusterMap::read(&map_path)?;
        // Absolute, so node command lines and printed paths do not depend on the working directory.
        let dir = &std::path::absolute(dir).map_err(|source| io(dir, source))?;
        let nodes = map
            .nodes
            .iter()
            .map(|n| LocalNode {
                id: n.id,
                az: n.az,
                name: n.name.clone(),
                addr: n.listen,
                admin: n.admin,
                data_dir: dir.join(&n.data_dir),
                spare: n.spare,
            })
            .collect();
        let pki_dir = dir.join(&map.pki_dir);
        let pem = |ext: &str| pki_dir.join(format!("{}.{ext}", transport::pki::CA_STEM));
        let pki = DevPki { ca_cert: pem("pem"), ca_key: pem("key"), dir: pki_dir };
        Ok(LocalCluster { dir: dir.to_owned(), map, nodes, pki })
    }

    /// Changes the settings every node starts with, in the cluster's map (for the next start).
    pub fn set_storaged_settings(&mut self, settings: map::StoragedSettings) -> Result<(), LocalError> {
        self.map.storaged = settings;
        self.map.write(&self.dir.join(MAP_FILE))?;
        Ok(())
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    pub fn node(&self, id: u32) -> Option<&LocalNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The cluster map as clients place PGs with it (QUIC addresses and TLS names).
    pub fn placement(&self) -> Result<protocol::placement::ClusterMap, protocol::placement::PlacementError> {
        let info = |n: &LocalNode| protocol::placement::NodeInfo {
            id: protocol::NodeId(n.id),
            az: protocol::AzId(n.az),
            addr: n.addr,
            name: n.name.clone(),
            spare: n.spare,
        };
        protocol::placement::ClusterMap::new(self.nodes.iter().map(info).collect())
    }

    /// How a client reaches this cluster: its placement and the client certificate, with the
    /// client's default timeouts and bounds (callers adjust what they need).
    /// A cluster whose map is in etcd has its writers follow it there.
    /// It reads etcd as the clients' user, which may only read (`cluster init --etcd-auth`).
    pub fn client_config(&self) -> Result<client::ClientConfig, LocalError> {
        let mut config = client::ClientConfig::new(self.placement()?, self.client_tls());
        config.etcd = self.etcd_source(map::EtcdActor::Client)?;
        Ok(config)
    }

    /// Where this cluster's map lives in etcd, to act there as `actor`, if it does.
    pub fn etcd_source(&self, actor: map::EtcdActor) -> Result<Option<etcdmap::EtcdSource>, LocalError> {
        let Some(etcd) = &self.map.etcd else { return Ok(None) };
        let source = etcd
            .source(&self.dir, actor)
            .map_err(|source| LocalError::Io { path: actor.password_file(&self.dir), source })?;
        Ok(Some(source))
    }

    /// Where this cluster's map lives in etcd, if it does.
    pub fn etcd(&self) -> Option<&map::EtcdSection> {
        self.map.etcd.as_ref()
    }

    /// The TLS files a client of this cluster presents.
    /// Where operators' requests to a running writer go (`borealis cluster replace-node`);
    /// writers opened by the local tools watch it (`ClientConfig::requests_dir`).
    pub fn requests_dir(&self) -> PathBuf {
        self.dir.join("requests")
    }

    pub fn client_tls(&self) -> TlsFiles {
        self.pki.files_for(CLIENT_NAME)
    }

    /// The TLS files of the client `name` (`pki/NAME.pem`, `borealis cert issue`).
    pub fn client_tls_as(&self, name: &str) -> TlsFiles {
        self.pki.files_for(name)
    }

    /// Where `node` writes its output.
    pub fn log_path(&self, node: &LocalNode) -> PathBuf {
        self.dir.join("logs").join(format!("{}.log", node.name))
    }

    /// The pid file of a background cluster.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("pids")
    }

    /// Takes the directory's lock, so that two commands never start or stop its nodes at once.
    pub fn lock(&self) -> Result<DirLock, LocalError> {
        lock_dir(&self.dir)
    }

    /// The storaged command line of `node`: the map's settings, and every other node as a
    /// gossip peer. All of them, not only those sharing a PG with `node`: storaged places PGs
    /// over itself and its peers to find each segment's peers, so it needs the whole map to
    /// place them as clients do (and it refuses a peer list that cannot place a PG).
    pub fn spec(&self, node: &LocalNode) -> NodeSpec {
        let mut extra = self.map.storaged.args();
        for peer in self.nodes.iter().filter(|n| n.id != node.id) {
            extra.extend([
                "--peer".to_string(),
                format!("{}:{}:{}@{}", peer.id, peer.az, peer.name, peer.addr),
            ]);
        }
        NodeSpec {
            node_id: node.id,
            az: node.az,
            listen: node.addr,
            admin: Some(node.admin),
            data_dir: node.data_dir.clone(),
            tls: self.pki.files_for(&node.name),
            key_file: self.dir.join(&self.map.key_file),
            extra,
        }
    }

    /// Starts every node as a child of this process (in parallel) and waits until all are
    /// ready. If one fails, the others are killed and the first error is returned.
    pub fn start_all(&self, launcher: &Launcher) -> Result<Vec<NodeProcess>, LocalError> {
        let started: Vec<Result<NodeProcess, LaunchError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .map(|node| {
                    let (spec, log) = (self.spec(node), self.log_path(node));
                    scope.spawn(move || NodeProcess::start(launcher, spec, log))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("node start thread panicked")).collect()
        });
        // Collecting into a Result drops (and so kills) the nodes that did start if one failed.
        Ok(started.into_iter().collect::<Result<Vec<_>, _>>()?)
    }
}

/// Stops foreground nodes gracefully and in parallel: SIGTERM, then SIGKILL after
/// [`STOP_TIMEOUT`]. Returns when every one has exited.
pub fn stop_all(nodes: &mut [NodeProcess]) {
    std::thread::scope(|scope| {
        for node in nodes.iter_mut() {
            scope.spawn(move || node.stop());
        }
    });
    debug_assert!(nodes.iter().all(|n| !n.is_running()), "stop within {STOP_TIMEOUT:?}");
}

fn lock_dir(dir: &Path) -> Result<DirLock, LocalError> {
    let path = dir.join(LOCK_FILE);
    DirLock::try_lock(&path)
        .map_err(|source| io(&path, source))?
        .ok_or_else(|| LocalError::Busy(dir.to_owned()))
}

fn io(path: &Path, source: std::io::Error) -> LocalError {
    LocalError::Io { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_creates_everything_and_later_uses_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(LocalCluster::load(dir.path()), Err(LocalError::NoCluster(_))));
        let first = LocalCluster::load_or_create(dir.path()).unwrap();
        assert_eq!(first.nodes().len(), 6);
        assert_eq!(first.nodes().iter().map(|n| n.az).collect::<Vec<_>>(), [0, 0, 1, 1, 2, 2]);
        assert_eq!(first.placement().unwrap().nodes().len(), 6);
        assert!(first.client_tls().cert.exists() && dir.path().join("kek").exists());
        let spec = first.spec(&first.nodes()[2]);
        assert!(spec.tls.cert.ends_with("node-3.pem"), "{:?}", spec.tls);
        let ca = std::fs::read(&first.client_tls().ca_cert).unwrap();
        let again = LocalCluster::load_or_create(dir.path()).unwrap();
        assert_eq!(again.nodes(), first.nodes());
        assert_eq!(std::fs::read(&again.client_tls().ca_cert).unwrap(), ca);
    }

    #[test]
    fn a_nine_node_cluster_gives_every_node_the_eight_others_as_peers() {
        let dir = tempfile::tempdir().unwrap();
        let three = NodesPerAz::new(3).unwrap();
        let cluster = LocalCluster::load_or_create_with(dir.path(), Some(three)).unwrap();
        assert_eq!(cluster.nodes().len(), 9);
        assert_eq!(cluster.placement().unwrap().nodes().len(), 9);
        assert!(dir.path().join("pki").join("node-9.pem").exists());
        let spec = cluster.spec(&cluster.nodes()[4]);
        let peers: Vec<&String> = spec
            .extra
            .iter()
            .zip(spec.extra.iter().skip(1))
            .filter(|(f, _)| *f == "--peer")
            .map(|p| p.1)
            .collect();
        assert_eq!(peers.len(), 8, "{peers:?}");
        assert!(peers.iter().all(|p| !p.starts_with("5:")), "not itself: {peers:?}");
        assert!(peers.iter().any(|p| p.starts_with("9:2:node-9@")), "{peers:?}");
        // Loading without a layout uses it; asking for another one is refused, saying why.
        assert_eq!(LocalCluster::load_or_create(dir.path()).unwrap().nodes().len(), 9);
        let refused = LocalCluster::load_or_create_with(dir.path(), Some(NodesPerAz::DEFAULT)).unwrap_err();
        let text = refused.to_string();
        assert!(text.contains("has 9 nodes (AZ 0: 3, AZ 1: 3, AZ 2: 3), not 2 per AZ"), "{text}");
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = LocalCluster::load_or_create(dir.path()).unwrap();
        let _held = cluster.lock().unwrap();
        assert!(matches!(cluster.lock(), Err(LocalError::Busy(_))));
    }
}
