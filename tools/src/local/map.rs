//! `cluster.toml`: the map of a local development cluster, written once and read by every later
//! command.
//!
//! Why a file: ports are picked free on first use and must stay the same across restarts (the
//! nodes, clients and `status` all need them), and an operator can read or edit one file to see
//! or change the layout. Paths in it are relative to the cluster directory, so the directory can
//! be moved.
//!
//! Invariants: a map that [`ClusterMap::read`] accepted has version [`MAP_VERSION`], at least one
//! node, and unique node ids, names, QUIC addresses and (per host) admin addresses; unknown keys are refused
//! (a typo never silently falls back to a default); the file is replaced atomically.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files;

/// Version of the `cluster.toml` layout this build reads and writes.
pub const MAP_VERSION: u32 = 1;
/// Availability zones of a local cluster: the three every PG spreads over.
pub const LOCAL_AZS: u32 = 3;
/// Fewest nodes per AZ: placement puts two segments of every PG in each of three AZs.
pub const NODES_PER_AZ_MIN: u32 = 2;
/// Most nodes per AZ (24 nodes): every node is a process on this one machine, with its own
/// journal files and memory; beyond this a local cluster only measures the machine's contention.
pub const NODES_PER_AZ_MAX: u32 = 8;
/// Comment at the top of a written map.
const HEADER: &str = "# Borealis local development cluster, written by `borealis` on first use.\n\
# Ports were free when picked; edit them here if another program took one. Paths are relative\n\
# to this file's directory.\n\n";

/// The whole cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMap {
    pub version: u32,
    /// Key-encryption key file shared by the nodes.
    pub key_file: PathBuf,
    /// Development PKI directory (CA, one certificate per node, one for clients).
    pub pki_dir: PathBuf,
    /// Settings passed to every node (unset: storaged's defaults).
    #[serde(default)]
    pub storaged: StoragedSettings,
    /// The map lives in etcd (`cluster init --hosts --etcd`): clients follow it there, and the
    /// `node` list below is the copy taken when this file was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSection>,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

/// Where a cluster's map lives in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// Client URLs of the etcd members, e.g. `http://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix of the map.
    pub prefix: String,
    /// etcd's authentication is on (`cluster init --etcd-auth`): the passwords of its `root`,
    /// node and client users are in `etcd/` of the cluster directory ([`EtcdSection::source`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth: bool,
    /// etcd speaks TLS (`https://` endpoints): the CA of its server certificates, relative to
    /// the cluster directory (`cluster init --etcd-ca` copies it to `etcd/ca.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// Where `cluster init --etcd-ca` keeps etcd's CA, under the cluster directory.
pub const ETCD_CA_FILE: &str = "etcd/ca.pem";

/// Which etcd user to act as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdActor {
    /// An operator: publishes the map, adds hosts, changes ACLs.
    Root,
    /// A storage node: reads the map, claims volumes.
    Node,
    /// A writer or reader: reads the map only.
    Client,
}

impl EtcdActor {
    pub const ALL: [EtcdActor; 3] = [EtcdActor::Root, EtcdActor::Node, EtcdActor::Client];

    /// The etcd user's name.
    pub fn user(self) -> &'static str {
        match self {
            EtcdActor::Root => "root",
            EtcdActor::Node => etcdmap::NODE_ROLE,
            EtcdActor::Client => etcdmap::CLIENT_ROLE,
        }
    }

    /// Where its password is kept, under the cluster directory.
    pub fn password_file(self, dir: &Path) -> PathBuf {
        let name = match self {
            EtcdActor::Root => "root",
            EtcdActor::Node => "node",
            EtcdActor::Client => "client",
        };
        dir.join("etcd").join(format!("{name}.password"))
    }
}

impl EtcdSection {
    /// TLS to etcd, if it speaks TLS: its CA (under `dir`, unless absolute).
    pub fn tls(&self, dir: &Path) -> std::io::Result<Option<etcdmap::EtcdTls>> {
        self.ca.as_ref().map(|ca| etcdmap::EtcdTls::from_files(&dir.join(ca), None)).transpose()
    }

    /// The etcd source to act as `actor` with, from the cluster directory `dir`.
    pub fn source(&self, dir: &Path, actor: EtcdActor) -> std::io::Result<etcdmap::EtcdSource> {
        let mut source = etcdmap::EtcdSource::new(self.endpoints.clone(), self.prefix.clone());
        source.tls = self.tls(dir)?;
        if self.auth {
            let file = actor.password_file(dir);
            let user = etcdmap::EtcdUser::from_password_file(actor.user(), &file)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
            source.user = Some(user);
        }
        Ok(source)
    }
}

/// One node of the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: u32,
    pub az: u16,
    /// TLS server name: the DNS name in the node's certificate.
    pub name: String,
    /// UDP address of the node's QUIC endpoint.
    pub listen: SocketAddr,
    /// TCP address of the node's admin port (/health, /metrics).
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    /// Added to a running cluster: holds PGs only by replacing a member (`protocol::placement`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spare: bool,
}

/// Optional storaged settings shared by every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoragedSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_file_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_io: Option<bool>,
    /// Largest UDP payload the nodes send and accept (datagram size; 1472 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_udp_payload_bytes: Option<u16>,
    /// The nodes' background scrub rate in bytes/s (0: off; unset: the daemon's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub_bytes_per_s: Option<u64>,
}

impl StoragedSettings {
    /// The storaged flags these settings stand for.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(bytes) = self.journal_file_bytes {
            args.extend(["--journal-file-bytes".to_string(), bytes.to_string()]);
        }
        if let Some(bytes) = self.checkpoint_interval_bytes {
            args.extend(["--checkpoint-interval-bytes".to_string(), bytes.to_string()]);
        }
        if self.direct_io == Some(false) {
            args.push("--no-direct-io".into());
        }
        if let Some(bytes) = self.max_udp_payload_bytes {
            args.extend(["--max-udp-payload-bytes".to_string(), bytes.to_string()]);
        }
        if let Some(rate) = self.scrub_bytes_per_s {
            args.extend(["--scrub-bytes-per-s".to_string(), rate.to_string()]);
        }
        args
    }
}

/// Why a map could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("picking free loopback ports: {0}")]
    Ports(std::io::Error),
    #[error(
        "{0} nodes per AZ is outside {NODES_PER_AZ_MIN}..={NODES_PER_AZ_MAX} (every PG needs 2 nodes in each \
         of 3 AZs; a local cluster runs every node on this machine)"
    )]
    NodesPerAz(u32),
}

/// How many nodes each of the [`LOCAL_AZS`] zones of a local cluster has, checked to be within
/// [`NODES_PER_AZ_MIN`]..=[`NODES_PER_AZ_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodesPerAz(u32);

impl NodesPerAz {
    /// Two per AZ: six nodes, exactly one PG's worth.
    pub const DEFAULT: NodesPerAz = NodesPerAz(2);

    pub fn new(count: u32) -> Result<NodesPerAz, MapError> {
        if (NODES_PER_AZ_MIN..=NODES_PER_AZ_MAX).contains(&count) {
            Ok(NodesPerAz(count))
        } else {
            Err(MapError::NodesPerAz(count))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Nodes in the whole cluster.
    pub fn nodes(self) -> u32 {
        LOCAL_AZS * self.0
    }
}

impl std::str::FromStr for NodesPerAz {
    type Err = String;

    /// Parses a command-line value, saying what is wrong with it.
    fn from_str(text: &str) -> Result<NodesPerAz, String> {
        let count: u32 = text.trim().parse().map_err(|_| format!("`{text}` is not a number"))?;
        NodesPerAz::new(count).map_err(|e| e.to_string())
    }
}

impl ClusterMap {
    /// A fresh local layout of `per_az` nodes in each of [`LOCAL_AZS`] zones: nodes 1..=N
    /// named `node-N`, AZ (N-1)/per_az, loopback ports free now.
    pub fn new_local(per_az: NodesPerAz) -> Result<ClusterMap, MapError> {
        let (quic, admin) = pick_ports(per_az.nodes() as usize).map_err(MapError::Ports)?;
        let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let nodes = (1..=per_az.nodes())
            .zip(quic.into_iter().zip(admin))
            .map(|(id, (quic, admin))| NodeEntry {
                id,
                az: ((id - 1) / per_az.get()) as u16,
                name: format!("node-{id}"),
                listen: loopback(quic),
                admin: loopback(admin),
                data_dir: PathBuf::from(format!("node-{id}")),
                spare: false,
            })
            .collect();
        Ok(ClusterMap {
            version: MAP_VERSION,
            key_file: "kek".into(),
            pki_dir: "pki".into(),
            storaged: StoragedSettings::default(),
            etcd: None,
            nodes,
        })
    }

    /// True if the map is the local layout of `per_az` nodes in each of zones 0, 1 and 2.
    pub fn has_layout(&self, per_az: NodesPerAz) -> bool {
        let in_zone = |az: u32| self.nodes.iter().filter(|n| u32::from(n.az) == az).count();
        self.nodes.len() == per_az.nodes() as usize
            && (0..LOCAL_AZS).all(|az| in_zone(az) == per_az.get() as usize)
    }

    /// How the map's nodes spread over zones, e.g. `6 nodes (AZ 0: 2, AZ 1: 2, AZ 2: 2)`.
    pub fn describe_layout(&self) -> String {
        let mut zones: Vec<u16> = self.nodes.iter().map(|n| n.az).collect();
        zones.sort_unstable();
        zones.dedup();
        let counts: Vec<String> = zones
            .iter()
            .map(|az| format!("AZ {az}: {}", self.nodes.iter().filter(|n| n.az == *az).count()))
            .collect();
        format!("{} nodes ({})", self.nodes.len(), counts.join(", "))
    }

    /// Reads and checks the map at `path`.
    pub fn read(path: &Path) -> Result<ClusterMap, MapError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| MapError::Io { path: path.to_owned(), source })?;
        let invalid = |reason: String| MapError::Invalid { path: path.to_owned(), reason };
        let map: ClusterMap = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
        map.check().map_err(invalid)?;
        Ok(map)
    }

    /// Writes the map to `path`, replacing any file there atomically.
    pub fn write(&self, path: &Path) -> Result<(), MapError> {
        let invalid = |reason: String| MapError::Invalid { path: path.to_owned(), reason };
        self.check().map_err(invalid)?;
        let body = toml::to_string(self).map_err(|e| invalid(e.to_string()))?;
        files::write_atomically(path, format!("{HEADER}{body}").as_bytes(), 0o644)
            .map_err(|source| MapError::Io { path: path.to_owned(), source })
    }

    /// The consistency rules every map obeys; the error says which one is broken.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.version != MAP_VERSION {
            return Err(format!(
                "version {} is not supported (this build reads {MAP_VERSION})",
                self.version
            ));
        }
        if self.nodes.is_empty() {
            return Err("no [[node]] entries".into());
        }
        unique(self.nodes.iter().map(|n| n.id), "node id")?;
        unique(self.nodes.iter().map(|n| n.name.as_str()), "node name")?;
        unique(self.nodes.iter().map(|n| n.listen), "listen address")?;
        // Per host: a loopback admin port is each host's own.
        unique(self.nodes.iter().map(|n| (n.listen.ip(), n.admin)), "host and admin address")?;
        // Nodes on one host (one IP) need their own directories; on separate hosts the same
        // path is separate disks.
        unique(self.nodes.iter().map(|n| (n.listen.ip(), n.data_dir.as_path())), "host and data directory")
    }
}

fn unique<T: std::hash::Hash + Eq + std::fmt::Debug>(
    items: impl Iterator<Item = T>,
    what: &str,
) -> Result<(), String> {
    let mut seen = HashSet::new();
    for item in items {
        if !seen.insert(format!("{item:?}")) {
            return Err(format!("{what} {item:?} appears twice"));
        }
    }
    Ok(())
}

/// `count` loopback UDP ports and `count` TCP ports, all distinct: every socket stays bound until
/// all are picked, so the kernel cannot hand out one port twice.
fn pick_ports(count: usize) -> std::io::Result<(Vec<u16>, Vec<u16>)> {
    // Each socket is held until all are picked, so the ports are distinct.
    let udp: Vec<(u16, UdpSocket)> = (0..count)
        .map(|_| transport::ports::bind_listen_port(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p))))
        .collect::<Result<_, _>>()?;
    let tcp: Vec<(u16, TcpListener)> = (0..count)
        .map(|_| transport::ports::bind_listen_port(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p))))
        .collect::<Result<_, _>>()?;
    Ok((udp.into_iter().map(|(p, _)| p).collect(), tcp.into_iter().map(|(p, _)| p).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_layout_has_two_nodes_per_az_and_distinct_ports() {
        let map = ClusterMap::new_local(NodesPerAz::DEFAULT).unwrap();
        let azs: Vec<u16> = map.nodes.iter().map(|n| n.az).collect();
        assert_eq!(azs, [0, 0, 1, 1, 2, 2]);
        assert_eq!(map.nodes[5].name, "node-6");
        assert!(map.has_layout(NodesPerAz::DEFAULT));
        map.check().unwrap();
    }

    #[test]
    fn three_nodes_per_az_make_nine_nodes_that_place_every_pg() {
        let three = NodesPerAz::new(3).unwrap();
        let map = ClusterMap::new_local(three).unwrap();
        let azs: Vec<u16> = map.nodes.iter().map(|n| n.az).collect();
        assert_eq!(azs, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert!(map.has_layout(three) && !map.has_layout(NodesPerAz::DEFAULT));
        assert_eq!(map.describe_layout(), "9 nodes (AZ 0: 3, AZ 1: 3, AZ 2: 3)");
        map.check().unwrap();
        let info = |n: &NodeEntry| protocol::placement::NodeInfo {
            id: protocol::NodeId(n.id),
            az: protocol::AzId(n.az),
            addr: n.listen,
            name: n.name.clone(),
            spare: false,
        };
        let placement = protocol::placement::ClusterMap::new(map.nodes.iter().map(info).collect()).unwrap();
        let used: HashSet<u32> = (0..64)
            .flat_map(|pg| placement.place(protocol::VolumeId(1), protocol::PgId(pg)).members().to_vec())
            .map(|id| id.0)
            .collect();
        assert_eq!(used.len(), 9, "PGs spread over all nine nodes");
    }

    #[test]
    fn nodes_per_az_is_bounded_and_parsed_with_a_reason() {
        assert_eq!(NodesPerAz::new(NODES_PER_AZ_MIN).unwrap().nodes(), 6);
        assert_eq!(NodesPerAz::new(NODES_PER_AZ_MAX).unwrap().get(), NODES_PER_AZ_MAX);
        assert!(matches!(NodesPerAz::new(1), Err(MapError::NodesPerAz(1))));
        assert!(NodesPerAz::new(NODES_PER_AZ_MAX + 1).is_err());
        assert_eq!("3".parse::<NodesPerAz>(), Ok(NodesPerAz(3)));
        assert!("1".parse::<NodesPerAz>().unwrap_err().contains("outside 2..=8"));
        assert!("three".parse::<NodesPerAz>().unwrap_err().contains("not a number"));
    }

    #[test]
    fn written_map_reads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        let mut map = ClusterMap::new_local(NodesPerAz::DEFAULT).unwrap();
        map.storaged.journal_file_bytes = Some(16 << 20);
        map.write(&path).unwrap();
        assert_eq!(ClusterMap::read(&path).unwrap(), map);
    }

    #[test]
    fn duplicates_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        let mut map = ClusterMap::new_local(NodesPerAz::DEFAULT).unwrap();
        map.nodes[1].listen = map.nodes[0].listen;
        assert!(matches!(map.write(&path), Err(MapError::Invalid { .. })));
        map = ClusterMap::new_local(NodesPerAz::DEFAULT).unwrap();
        map.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap().replace("version = 1", "version = 1\nport = 3");
        std::fs::write(&path, text).unwrap();
        let error = ClusterMap::read(&path).unwrap_err().to_string();
        assert!(error.contains("port"), "{error}");
    }
}
