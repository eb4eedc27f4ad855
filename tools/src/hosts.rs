//! `borealis cluster init --hosts FILE --out DIR`: a cluster of storage nodes on real hosts,
//! from a TOML list of them (`docs/operations.md`, "Deploying on hosts").
//!
//! ```toml
//! [[host]]
//! name = "storage-1.example.net"  # DNS name: the node's certificate and TLS server name
//! address = "10.0.1.11"           # IP or IP:PORT of its QUIC endpoint (port 7001 by default)
//! az = 0
//! data_dir = "/var/lib/borealis"  # optional (this default)
//! admin = "10.0.1.11:7101"        # optional (default 127.0.0.1:7101: loopback only)
//! ```
//!
//! `DIR` becomes a cluster directory clients use as they use a local one (`cluster.toml`,
//! `pki/`, `kek`: `borealis dev --dir DIR`, `BOREALIS_CLUSTER=DIR` for SQLite, `borealis nbd
//! --dir DIR`), plus one bundle per host in `hosts/NAME/`: `storaged.toml`, `tls/` and `kek`,
//! to copy to `/etc/borealis` on that host, where `storaged --config
//! /etc/borealis/storaged.toml` needs nothing else. `pki/ca.key` signs every certificate: keep
//! it (and `kek`) offline once the hosts have their bundles.
//!
//! Node ids follow the file's order, from 1. The hosts must place every PG: at least two in
//! each of three AZs. `DIR` must not exist yet (or be empty), so a cluster's CA and key are
//! never replaced by accident.
//!
//! With `--etcd URL`, the map is published to etcd (under `--etcd-prefix`, `/borealis/` by
//! default) instead of being written into every bundle as `peers`: nodes and writers read it
//! there and follow it, and `borealis cluster add-host` adds a host to the running cluster (a
//! spare: see `protocol::placement`), with a bundle signed by the same CA.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::ensure_key_file;
use crate::files;
use crate::local::map::{
    ClusterMap, EtcdActor, EtcdSection, NodeEntry, StoragedSettings, ETCD_CA_FILE, MAP_VERSION,
};
use crate::local::CLIENT_NAME;
use crate::local::MAP_FILE;

/// The QUIC port of an address given without one.
pub const DEFAULT_PORT: u16 = 7001;
/// The admin port of a host that names no admin address.
pub const DEFAULT_ADMIN_PORT: u16 = 7101;
/// Where a host keeps its data unless it says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/borealis";

/// Why the hosts file could not become a cluster directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{} exists and is not empty: give a new --out (a cluster's CA and key are never replaced)", .0.display())]
    OutExists(PathBuf),
    #[error("certificates: {0}")]
    Pki(#[from] transport::TransportError),
    #[error(transparent)]
    Map(#[from] crate::local::map::MapError),
    #[error("key-encryption key: {0}")]
    Key(#[from] crate::cluster::LaunchError),
    #[error(transparent)]
    Etcd(#[from] etcdmap::EtcdMapError),
    #[error(
        "{}: this cluster's map is not in etcd; a static map changes only by giving every node the new \
         peers (make the cluster with `cluster init --hosts FILE --etcd URL` to add hosts to it while it runs)",
        .0.display()
    )]
    NoEtcd(PathBuf),
    #[error("etcd client runtime: {0}")]
    Runtime(std::io::Error),
}

/// One etcd request's bound for these commands.
const ETCD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    #[serde(rename = "host", default)]
    hosts: Vec<HostEntry>,
}

/// One host as the hosts file (or `cluster add-host`) gives it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub address: String,
    pub az: u16,
    pub data_dir: Option<PathBuf>,
    pub admin: Option<String>,
}

/// One host, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub id: u32,
    pub name: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub az: u16,
    pub data_dir: PathBuf,
}

/// What `init` wrote.
#[derive(Debug)]
pub struct InitReport {
    pub hosts: Vec<Host>,
    /// Each host's bundle directory, in host order.
    pub bundles: Vec<PathBuf>,
}

/// A host's `storaged.toml`, as storaged reads it (paths relative to the file).
#[derive(Serialize)]
struct BundleConfig {
    node_id: u32,
    az: u16,
    listen: String,
    admin: String,
    data_dirs: Vec<PathBuf>,
    key_file: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<BundleMap>,
    tls: BundleTls,
}

/// A bundle's `[map]`: the cluster map in etcd.
#[derive(Serialize)]
struct BundleMap {
    etcd: Vec<String>,
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<&'static str>,
}

#[derive(Serialize)]
struct BundleTls {
    ca: &'static str,
    cert: &'static str,
    key: &'static str,
}

/// Reads and checks a hosts file.
pub fn read_hosts(path: &Path) -> Result<Vec<Host>, HostsError> {
    let invalid = |reason: String| HostsError::Invalid { path: path.to_owned(), reason };
    let text =
        std::fs::read_to_string(path).map_err(|source| HostsError::Io { path: path.to_owned(), source })?;
    let file: HostsFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
    let mut hosts = Vec::new();
    for (index, entry) in file.hosts.into_iter().enumerate() {
        let id = u32::try_from(index + 1).map_err(|_| invalid("too many hosts".into()))?;
        if entry.name == CLIENT_NAME {
            return Err(invalid(format!(
                "host name {CLIENT_NAME:?} is the clients' certificate name; pick another"
            )));
        }
        hosts.push(host(id, entry).map_err(invalid)?);
    }
    // The map's own rules: unique names, addresses, admin addresses, data directories per host.
    cluster_map(&hosts).check().map_err(invalid)?;
    protocol::placement::ClusterMap::new(hosts.iter().map(node_info).collect())
        .map_err(|e| invalid(format!("{e} (every PG needs six nodes: two in each of three AZs)")))?;
    Ok(hosts)
}

/// Checks one host entry and gives it node id `id`.
fn host(id: u32, entry: HostEntry) -> Result<Host, String> {
    let listen = parse_address(&entry.address, DEFAULT_PORT)
        .map_err(|why| format!("host {:?}: address {:?} {why}", entry.name, entry.address))?;
    let admin = match &entry.admin {
        Some(admin) => parse_address(admin, DEFAULT_ADMIN_PORT)
            .map_err(|why| format!("host {:?}: admin {admin:?} {why}", entry.name))?,
        // Loopback unless the file says otherwise: the port serves /health and /metrics to
        // whoever reaches it, so exposing it is the operator's choice.
        None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)),
    };
    let data_dir = entry.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if !data_dir.is_absolute() {
        return Err(format!("host {:?}: data_dir must be absolute", entry.name));
    }
    Ok(Host { id, name: entry.name, listen, admin, az: entry.az, data_dir })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HostsError {
    let path = path.to_owned();
    move |source| HostsError::Io { path, source }
}

/// Runs an etcd exchange to completion from these synchronous commands.
fn with_etcd<T>(
    source: &etcdmap::EtcdSource,
    work: impl AsyncFnOnce(&mut etcdmap::EtcdMap) -> Result<T, HostsError>,
) -> Result<T, HostsError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(HostsError::Runtime)?;
    runtime.block_on(async {
        let mut map = etcdmap::EtcdMap::open(source, ETCD_TIMEOUT).await?;
        work(&mut map).await
    })
}

fn map_node(host: &Host, spare: bool) -> etcdmap::MapNode {
    etcdmap::MapNode {
        id: host.id,
        az: host.az,
        name: host.name.clone(),
        listen: host.listen,
        admin: Some(host.admin),
        spare,
    }
}

/// Writes the cluster directory `out` for the hosts in `hosts_file` (see the module docs); with
/// `etcd`, publishes the map there (refused if a map is there already).
pub fn init(hosts_file: &Path, out: &Path, etcd: Option<EtcdSection>) -> Result<InitReport, HostsError> {
    let hosts = read_hosts(hosts_file)?;
    let io = io_error;
    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(HostsError::OutExists(out.to_owned()));
    }
    // Before `--etcd-auth` turns etcd's authentication on, init acts without a user.
    // `etcd.ca` is the operator's file (relative to the working directory) until it is copied.
    let open_source = match &etcd {
        Some(e) => {
            let mut source = etcdmap::EtcdSource::new(e.endpoints.clone(), e.prefix.clone());
            source.tls = e.tls(Path::new(".")).map_err(io(e.ca.as_deref().unwrap_or(Path::new("."))))?;
            Some(source)
        }
        None => None,
    };
    if let Some(source) = &open_source {
        // Before any file is written: a prefix in use is refused with nothing left behind.
        let prefix = source.prefix.clone();
        with_etcd(source, async |map| match map.load().await {
            Err(etcdmap::EtcdMapError::NoMap { .. }) => Ok(()),
            Err(error) => Err(error.into()),
            Ok(_) => Err(etcdmap::EtcdMapError::AlreadyPublished { prefix }.into()),
        })?;
    }
    let mut map = cluster_map(&hosts);
    let pki_dir = out.join("pki");
    let mut leaves: Vec<(String, Vec<IpAddr>)> =
        hosts.iter().map(|h| (h.name.clone(), vec![h.listen.ip()])).collect();
    leaves.push((CLIENT_NAME.to_owned(), Vec::new()));
    let pki = transport::create_cluster_pki(&pki_dir, &leaves)?;
    let kek = out.join("kek");
    ensure_key_file(&kek)?;
    let mut etcd = etcd;
    if let Some(section) = etcd.as_mut() {
        if let Some(ca) = section.ca.take() {
            let to = out.join(ETCD_CA_FILE);
            std::fs::create_dir_all(to.parent().expect("in etcd/")).map_err(io(&to))?;
            let bytes = std::fs::read(&ca).map_err(io(&ca))?;
            files::write_atomically(&to, &bytes, 0o644).map_err(io(&to))?;
            section.ca = Some(PathBuf::from(ETCD_CA_FILE));
        }
    }
    map.etcd = etcd.clone();
    if etcd.as_ref().is_some_and(|e| e.auth) {
        for actor in EtcdActor::ALL {
            let path = actor.password_file(out);
            std::fs::create_dir_all(path.parent().expect("in etcd/")).map_err(io(&path))?;
            let password: String = rand::random::<[u8; 24]>().iter().map(|b| format!("{b:02x}")).collect();
            files::write_atomically(&path, format!("{password}\n").as_bytes(), 0o600).map_err(io(&path))?;
        }
    }
    let mut bundles = Vec::new();
    for host in &hosts {
        let peers = match etcd {
            Some(_) => Vec::new(),
            None => hosts
                .iter()
                .filter(|p| p.id != host.id)
                .map(|p| format!("{}:{}:{}@{}", p.id, p.az, p.name, p.listen))
                .collect(),
        };
        bundles.push(write_bundle(out, host, &pki.files_for(&host.name), &kek, peers, etcd.as_ref())?);
    }
    if let Some(etcd) = &etcd {
        let nodes: Vec<etcdmap::MapNode> = hosts.iter().map(|h| map_node(h, false)).collect();
        // The cluster's client certificate administers it (`ReplaceNodeAsk`; more with `etcdctl`).
        let admin = etcdmap::client_identity(CLIENT_NAME);
        let users = match etcd.auth {
            true => Some(
                EtcdActor::ALL
                    .map(|actor| etcd.source(out, actor).map(|s| s.user.expect("auth: a user")))
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(io(&out.join("etcd")))?,
            ),
            false => None,
        };
        with_etcd(open_source.as_ref().expect("etcd"), async |map| {
            map.publish(&nodes).await?;
            map.change_admins(|acl| acl.grant(&admin, etcdmap::Role::Admin)).await?;
            if let Some([root, node, client]) = users.as_deref() {
                map.secure(&root.password, node, client).await?;
            }
            Ok(())
        })?;
    }
    // Written last: its presence is what makes `out` a cluster directory.
    map.write(&out.join(MAP_FILE))?;
    Ok(InitReport { hosts, bundles })
}

/// What `add_host` did.
#[derive(Debug)]
pub struct AddReport {
    pub host: Host,
    pub bundle: PathBuf,
    /// The etcd map's generation and revision after the addition.
    pub generation: u64,
    pub revision: i64,
}

/// Adds a host to the running cluster in `dir` (made by `init` with etcd): a certificate from
/// the cluster's CA, a bundle in `dir/hosts/NAME`, the node in etcd as a spare (the running
/// nodes and writers see it within moments), and the node in `dir`'s `cluster.toml`.
pub fn add_host(dir: &Path, entry: HostEntry) -> Result<AddReport, HostsError> {
    let map_path = dir.join(MAP_FILE);
    let mut map = ClusterMap::read(&map_path)?;
    let etcd = map.etcd.clone().ok_or_else(|| HostsError::NoEtcd(map_path.clone()))?;
    let invalid = |reason: String| HostsError::Invalid { path: map_path.clone(), reason };
    let source = etcd.source(dir, EtcdActor::Root).map_err(io_error(&dir.join("etcd")))?;
    let current = with_etcd(&source, async |etcd| Ok(etcd.load().await?))?;
    let id = current.nodes.iter().map(|n| n.id).chain(map.nodes.iter().map(|n| n.id)).max().unwrap_or(0) + 1;
    let host = host(id, entry).map_err(invalid)?;
    // The same checks as etcd's, before a certificate or bundle exists.
    let mut next = map.clone();
    next.nodes.push(node_entry(&host, true));
    next.check().map_err(invalid)?;
    let bundle = dir.join("hosts").join(&host.name);
    if bundle.exists() {
        return Err(invalid(format!("{} exists already", bundle.display())));
    }
    let pki_dir = dir.join(&map.pki_dir);
    let files = transport::issue_host_cert(&pki_dir, &host.name, &[host.listen.ip()])?;
    let written = write_bundle(dir, &host, &files, &dir.join(&map.key_file), Vec::new(), Some(&etcd))
        .and_then(|bundle| {
            let node = map_node(&host, true);
            let added = with_etcd(&source, async |etcd| Ok(etcd.add_node(node).await?))?;
            Ok((bundle, added))
        });
    let (bundle, added) = match written {
        Ok(done) => done,
        Err(error) => {
            // Nothing half-made stays: the name can be added again once the cause is fixed.
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = std::fs::remove_file(&files.cert);
            let _ = std::fs::remove_file(&files.key);
            return Err(error);
        }
    };
    map.nodes.push(node_entry(&host, true));
    map.write(&map_path)?;
    Ok(AddReport { host, bundle, generation: added.generation, revision: added.revision })
}

/// Writes `host`'s bundle in `out/hosts/NAME` (see the module docs): its certificate `files`,
/// the key-encryption key `kek` and a `storaged.toml` naming either `peers` or `etcd`.
fn write_bundle(
    out: &Path,
    host: &Host,
    files: &transport::TlsFiles,
    kek: &Path,
    peers: Vec<String>,
    etcd: Option<&EtcdSection>,
) -> Result<PathBuf, HostsError> {
    let io = io_error;
    let bundle = out.join("hosts").join(&host.name);
    let tls = bundle.join("tls");
    std::fs::create_dir_all(&tls).map_err(io(&tls))?;
    let node_password = EtcdActor::Node.password_file(out);
    let etcd_ca = etcd.and_then(|e| e.ca.as_ref()).map(|ca| out.join(ca));
    for (from, to, mode) in [
        (&files.ca_cert, tls.join("ca.pem"), 0o644),
        (&files.cert, tls.join("node.pem"), 0o644),
        (&files.key, tls.join("node.key"), 0o600),
        (&kek.to_path_buf(), bundle.join("kek"), 0o600),
    ]
    .into_iter()
    .chain(etcd.filter(|e| e.auth).map(|_| (&node_password, bundle.join("etcd.password"), 0o600)))
    .chain(etcd_ca.as_ref().map(|ca| (ca, bundle.join("etcd-ca.pem"), 0o644)))
    {
        let bytes = std::fs::read(from).map_err(io(from))?;
        files::write_atomically(&to, &bytes, mode).map_err(io(&to))?;
    }
    let config = BundleConfig {
        node_id: host.id,
        az: host.az,
        listen: host.listen.to_string(),
        admin: host.admin.to_string(),
        data_dirs: vec![host.data_dir.clone()],
        key_file: "kek",
        peers,
        map: etcd.map(|e| BundleMap {
            etcd: e.endpoints.clone(),
            prefix: e.prefix.clone(),
            user: e.auth.then_some(EtcdActor::Node.user()),
            password_file: e.auth.then_some("etcd.password"),
            ca: e.ca.is_some().then_some("etcd-ca.pem"),
        }),
        tls: BundleTls { ca: "tls/ca.pem", cert: "tls/node.pem", key: "tls/node.key" },
    };
    let body = toml::to_string(&config)
        .map_err(|e| HostsError::Invalid { path: bundle.join("storaged.toml"), reason: e.to_string() })?;
    let header = format!(
        "# storaged on {} (node {}, AZ {}), written by `borealis cluster`.\n\
         # Copy this directory to /etc/borealis on the host: paths are relative to this file.\n\n",
        host.name, host.id, host.az
    );
    let path = bundle.join("storaged.toml");
    files::write_atomically(&path, format!("{header}{body}").as_bytes(), 0o644).map_err(io(&path))?;
    Ok(bundle)
}

/// The clients' map of the hosts (`cluster.toml`).
fn cluster_map(hosts: &[Host]) -> ClusterMap {
    ClusterMap {
        version: MAP_VERSION,
        key_file: "kek".into(),
        pki_dir: "pki".into(),
        storaged: StoragedSettings::default(),
        etcd: None,
        nodes: hosts.iter().map(|h| node_entry(h, false)).collect(),
    }
}

fn node_entry(host: &Host, spare: bool) -> NodeEntry {
    NodeEntry {
        id: host.id,
        az: host.az,
        name: host.name.clone(),
        listen: host.listen,
        admin: host.admin,
        data_dir: host.data_dir.clone(),
        spare,
    }
}

fn node_info(host: &Host) -> protocol::placement::NodeInfo {
    protocol::placement::NodeInfo {
        id: protocol::NodeId(host.id),
        az: protocol::AzId(host.az),
        addr: host.listen,
        name: host.name.clone(),
        spare: false,
    }
}

/// `IP` or `IP:PORT` (IPv6 as `[IP]:PORT`).
fn parse_address(text: &str, default_port: u16) -> Result<SocketAddr, &'static str> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| "is not IP or IP:PORT (a host name needs DNS; give its address)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts_file(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("hosts.toml");
        std::fs::write(&path, body).unwrap();
        path
    }

    fn six() -> String {
        (1..=6)
            .map(|i| {
                format!(
                    "[[host]]\nname = \"s{i}.example.net\"\naddress = \"10.0.0.{i}\"\naz = {}\n",
                    (i - 1) / 2
                )
            })
            .collect()
    }

    #[test]
    fn a_hosts_file_becomes_a_cluster_directory_with_one_bundle_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let report = init(&hosts_file(dir.path(), &six()), &out, None).unwrap();
        assert_eq!(report.hosts[2].listen, "10.0.0.3:7001".parse().unwrap());
        assert_eq!(report.hosts[2].admin, "127.0.0.1:7101".parse().unwrap(), "admin on loopback by default");
        let config = std::fs::read_to_string(report.bundles[0].join("storaged.toml")).unwrap();
        assert!(
            config.contains("node_id = 1") && config.contains("\"2:0:s2.example.net@10.0.0.2:7001\""),
            "{config}"
        );
        let local = crate::local::LocalCluster::load(&out).unwrap();
        assert_eq!(local.placement().unwrap().nodes().len(), 6);
        let again = init(&hosts_file(dir.path(), &six()), &out, None).unwrap_err();
        assert!(matches!(again, HostsError::OutExists(_)), "{again}");
    }

    #[test]
    fn a_hosts_file_that_cannot_place_a_pg_or_repeats_a_host_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let five: String = six().split("[[host]]").skip(1).take(5).map(|h| format!("[[host]]{h}")).collect();
        let short = read_hosts(&hosts_file(dir.path(), &five)).unwrap_err().to_string();
        assert!(short.contains("two in each of three AZs"), "{short}");
        let twice = six().replace("10.0.0.6", "10.0.0.5");
        let repeated = read_hosts(&hosts_file(dir.path(), &twice)).unwrap_err().to_string();
        assert!(repeated.contains("10.0.0.5:7001 appears twice"), "{repeated}");
        let named = six().replace("10.0.0.1\"", "storage-1\"");
        let bad = read_hosts(&hosts_file(dir.path(), &named)).unwrap_err().to_string();
        assert!(bad.contains("is not IP or IP:PORT"), "{bad}");
    }
}
