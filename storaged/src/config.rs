//! `storaged` configuration: a TOML file, with command-line flags overriding it.
//!
//! Every error names what is wrong in one line (a missing file, a bad address, an unknown
//! key), so an operator can fix it without reading code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use protocol::placement::{ClusterMap, NodeInfo, PlacementError};
use protocol::{AzId, NodeId};
use serde::Deserialize;
use transport::{TlsFiles, Tuning};

use crate::core::Limits;
use crate::journal::writer::JOURNAL_FILE_BYTES_MIN;

/// Default journal bytes between checkpoints.
pub const CHECKPOINT_INTERVAL_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default size of a journal file.
pub const JOURNAL_FILE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default memory for indexes and caches.
pub const MEMORY_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Smallest memory setting.
pub const MEMORY_BYTES_MIN: u64 = 64 * 1024 * 1024;

/// The Borealis storage daemon: stores six-way replicated redo-log segments, durably and
/// encrypted, and serves them over QUIC with mutual TLS.
#[derive(Debug, Parser)]
#[command(
    name = "storaged",
    version,
    after_help = "Example: storaged --config /etc/borealis/storaged.toml (see docs/operations.md for every setting)"
)]
pub struct Cli {
    /// TOML configuration file; flags below override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (unique in the cluster; recorded in the data directory on first start).
    #[arg(long)]
    pub node_id: Option<u32>,
    /// This node's availability zone (0, 1, 2, ...).
    #[arg(long)]
    pub az: Option<u16>,
    /// UDP address for QUIC, e.g. 127.0.0.1:7001.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// HTTP address for /health and /metrics, e.g. 127.0.0.1:7101 (none if unset).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Data directory (journal, metadata). Created if missing; must belong to this node.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM file of the cluster CA that signs every node and client certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM file of this node's certificate.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM file of this node's private key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// PEM file of certificate revocation lists signed by the cluster CA (`borealis cert
    /// revoke`): client and peer certificates they list are refused at their next handshake.
    /// Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// Key-encryption key file: 64 hex digits, mode 0600. Wraps the per-volume data keys.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The KEK `key_file` replaced, kept readable while a rotation is under way: at start, keys
    /// wrapped under it are re-wrapped under `key_file` (docs/security.md). Not needed on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub key_file_previous: Option<PathBuf>,
    /// Size each journal file is preallocated to, in bytes (at least 16 MiB).
    #[arg(long, value_name = "BYTES")]
    pub journal_file_bytes: Option<u64>,
    /// Journal bytes written between checkpoints; restart replays at most about this much.
    #[arg(long, value_name = "BYTES")]
    pub checkpoint_interval_bytes: Option<u64>,
    /// Bytes of records accepted but not yet durable before appends are refused as overloaded.
    #[arg(long, value_name = "BYTES")]
    pub ingest_pending_bytes_max: Option<u64>,
    /// Memory for the record and page indexes and the caches, in bytes (at least 64 MiB): an
    /// eighth caches built pages, a sixteenth caches decoded journal entries, the rest bounds
    /// the indexes (appends are refused as overloaded beyond it).
    #[arg(long, value_name = "BYTES")]
    pub memory_bytes_max: Option<u64>,
    /// Bytes of decoded journal entries kept in memory, taken out of `--memory-bytes-max`
    /// (default: a sixteenth of it): every entry made durable goes in, so the coalescer and
    /// readers of recent records need no disk read. 0 turns the cache off (every read of a
    /// record goes to the disk).
    #[arg(long, value_name = "BYTES")]
    pub entry_cache_bytes: Option<u64>,
    /// Most records a page read applies once the coalescer caught up: a page gets a new image
    /// when this many records follow its newest one.
    #[arg(long, value_name = "N")]
    pub apply_max: Option<usize>,
    /// Largest UDP payload QUIC may use (1200-65527; larger needs a network that carries it).
    #[arg(long, value_name = "BYTES")]
    pub max_udp_payload_bytes: Option<u16>,
    /// Stored bytes the background scrub re-reads and verifies per second (0 turns it off).
    /// The default (256 KiB/s) checks a 10 GiB node in about 11 hours.
    #[arg(long, value_name = "BYTES")]
    pub scrub_bytes_per_s: Option<u64>,
    /// Page bytes per second a segment being rebuilt (hydrated) fetches from its peer; bounds
    /// what a rebuild takes from the foreground (default 256 MiB/s).
    #[arg(long, value_name = "BYTES")]
    pub hydrate_bytes_per_s: Option<u64>,
    /// Write the journal with buffered I/O instead of O_DIRECT (both flush before acking).
    #[arg(long)]
    pub no_direct_io: bool,
    /// Another node of the cluster, to gossip with: ID:AZ:NAME@IP:PORT (NAME is the name in
    /// its certificate), e.g. 2:0:node-2@127.0.0.1:7002. Repeat for every other node; none:
    /// no gossip (the writer's repair still fills lagging segments).
    #[arg(long = "peer", value_name = "SPEC")]
    pub peers: Vec<String>,
    /// Read the cluster map from etcd instead of `--peer`s, and follow its changes: an etcd
    /// endpoint such as http://10.0.0.5:2379 (repeat for each member of the etcd cluster).
    #[arg(long = "etcd", value_name = "URL", conflicts_with = "peers")]
    pub etcd: Vec<String>,
    /// The etcd key prefix the map lives under (default /borealis/).
    #[arg(long, value_name = "PREFIX", requires = "etcd")]
    pub etcd_prefix: Option<String>,
    /// The etcd user to act as, where etcd's authentication is on (else the file's `[map]
    /// user`), with --etcd-password-file.
    #[arg(long, value_name = "NAME", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// The file whose first line is --etcd-user's password.
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// Log filter, e.g. `info` or `storaged=debug,info` (default: $BOREALIS_LOG, else `info`);
    /// SIGHUP re-reads it from the config file.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

/// How long a segment keeps the records a peer lacks after last hearing from it (gossip on).
pub const PEER_LEASE_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u32>,
    az: Option<u16>,
    listen: Option<String>,
    admin: Option<String>,
    data_dirs: Option<Vec<PathBuf>>,
    key_file: Option<PathBuf>,
    key_file_previous: Option<PathBuf>,
    tls: Option<TlsSection>,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    journal: JournalSection,
    /// Other nodes, as `--peer` specs.
    peers: Option<Vec<String>>,
    /// The cluster map in etcd (instead of `peers`).
    map: Option<MapSection>,
    log: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapSection {
    etcd: Vec<String>,
    prefix: Option<String>,
    /// The etcd user to act as (where etcd's authentication is on: `borealis cluster init
    /// --etcd-auth`), with `password_file`.
    user: Option<String>,
    password_file: Option<PathBuf>,
    /// TLS to etcd (`https://` endpoints): the CA of etcd's server certificates, and this
    /// node's client certificate and key where etcd asks for one (`--client-cert-auth`).
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The default etcd key prefix of the cluster map.
pub const ETCD_PREFIX_DEFAULT: &str = "/borealis/";

/// Where to read the cluster map and follow its changes: etcd, as which etcd user.
pub use etcdmap::EtcdSource;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    crl: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    ingest_pending_bytes_max: Option<u64>,
    memory_bytes_max: Option<u64>,
    entry_cache_bytes: Option<u64>,
    apply_max: Option<usize>,
    max_udp_payload_bytes: Option<u16>,
    scrub_bytes_per_s: Option<u64>,
    hydrate_bytes_per_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalSection {
    file_bytes: Option<u64>,
    checkpoint_interval_bytes: Option<u64>,
    direct_io: Option<bool>,
}

/// A complete, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub az: AzId,
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
    /// CRLs of the cluster CA: the certificates they list are refused (none: no revocation check).
    pub crl: Option<PathBuf>,
    pub key_file: PathBuf,
    /// The KEK `key_file` replaced, during a rotation (`kek_rotation`).
    pub key_file_previous: Option<PathBuf>,
    pub limits: Limits,
    /// Bytes of decoded journal entries cached (see `memory_bytes_max`).
    pub entry_cache_bytes: usize,
    pub journal_file_bytes: u64,
    pub checkpoint_interval_bytes: u64,
    pub direct_io: bool,
    pub tuning: Tuning,
    /// The other nodes of the cluster (gossip peers); empty: no gossip, unless `etcd` is set.
    pub peers: Vec<NodeInfo>,
    /// The cluster map lives in etcd (then `peers` is empty): read at start, followed after.
    pub etcd: Option<EtcdSource>,
    /// The log filter (`tracing_subscriber::EnvFilter` syntax, e.g. `info` or
    /// `storaged=debug`): `--log`, else the file's `log`, else `BOREALIS_LOG`, else `info`.
    pub log: String,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("missing setting `{0}`: give it in the config file or as --{flag}", flag = .0.replace('_', "-"))]
    Missing(&'static str),
    #[error("bad address `{value}` for `{what}`: {reason}")]
    Address { what: &'static str, value: String, reason: String },
    #[error("`data_dirs` lists {0} directories; this version stores everything in exactly one")]
    DataDirs(usize),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads the file named by `--config` (if any) and applies the flags over it.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dirs = file.data_dirs.unwrap_or_default();
        if data_dirs.len() > 1 {
            return Err(ConfigError::DataDirs(data_dirs.len()));
        }
        let tls = file.tls.unwrap_or_default();
        let listen = cli.listen.clone().or(file.listen).ok_or(ConfigError::Missing("listen"))?;
        let mut tuning = Tuning::default();
        if let Some(bytes) = cli.max_udp_payload_bytes.or(file.limits.max_udp_payload_bytes) {
            tuning.max_udp_payload_bytes = bytes;
        }
        tuning.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let journal_file_bytes =
            cli.journal_file_bytes.or(file.journal.file_bytes).unwrap_or(JOURNAL_FILE_BYTES_DEFAULT);
        if journal_file_bytes < JOURNAL_FILE_BYTES_MIN {
            return Err(ConfigError::Invalid(format!(
                "journal file_bytes {journal_file_bytes} is below the minimum {JOURNAL_FILE_BYTES_MIN}"
            )));
        }
        let mut limits = Limits::default();
        if let Some(bytes) = cli.ingest_pending_bytes_max.or(file.limits.ingest_pending_bytes_max) {
            limits.ingest_pending_bytes_max = bytes;
        }
        let memory = cli.memory_bytes_max.or(file.limits.memory_bytes_max).unwrap_or(MEMORY_BYTES_DEFAULT);
        if memory < MEMORY_BYTES_MIN {
            return Err(ConfigError::Invalid(format!(
                "memory_bytes_max {memory} is below the minimum {MEMORY_BYTES_MIN}"
            )));
        }
        let entry_cache_bytes =
            cli.entry_cache_bytes.or(file.limits.entry_cache_bytes).unwrap_or(memory / 16);
        if entry_cache_bytes > memory / 4 {
            return Err(ConfigError::Invalid(format!(
                "entry_cache_bytes {entry_cache_bytes} is above a quarter of memory_bytes_max {memory}"
            )));
        }
        limits.page_cache_bytes = (memory / 8) as usize;
        limits.index_bytes_max = memory - memory / 8 - entry_cache_bytes;
        limits.apply_max = cli.apply_max.or(file.limits.apply_max).unwrap_or(limits.apply_max);
        if limits.apply_max == 0 {
            return Err(ConfigError::Invalid("apply_max must be at least 1".into()));
        }
        set_healing_rates(&mut limits, cli, &file.limits)?;
        let peer_specs =
            if cli.peers.is_empty() { file.peers.unwrap_or_default() } else { cli.peers.clone() };
        let peers = peer_specs.iter().map(|s| parse_peer(s)).collect::<Result<Vec<_>, _>>()?;
        let etcd = etcd_source(cli, file.map)?;
        if etcd.is_some() && !peers.is_empty() {
            return Err(ConfigError::Invalid(
                "give the other nodes either as `peers` or through the etcd `map`, not both".into(),
            ));
        }
        if !peers.is_empty() || etcd.is_some() {
            limits.peer_lease_ms = PEER_LEASE_MS;
            limits.gossip_interval_ms = crate::core::GOSSIP_INTERVAL_MS_DEFAULT;
        }
        let node_id = NodeId(cli.node_id.or(file.node_id).ok_or(ConfigError::Missing("node_id"))?);
        let az = AzId(cli.az.or(file.az).ok_or(ConfigError::Missing("az"))?);
        let listen = parse_addr("listen", &listen)?;
        static_map(node_id, az, listen, &peers)
            .map_err(|e| ConfigError::Invalid(format!("this node and its peers: {e}")))?;
        Ok(Config {
            entry_cache_bytes: entry_cache_bytes as usize,
            node_id,
            az,
            listen,
            admin: cli.admin.clone().or(file.admin).map(|a| parse_addr("admin", &a)).transpose()?,
            data_dir: cli
                .data_dir
                .clone()
                .or(data_dirs.into_iter().next())
                .ok_or(ConfigError::Missing("data_dir"))?,
            tls: TlsFiles {
                ca_cert: cli.ca.clone().or(tls.ca).ok_or(ConfigError::Missing("ca"))?,
                cert: cli.cert.clone().or(tls.cert).ok_or(ConfigError::Missing("cert"))?,
                key: cli.key.clone().or(tls.key).ok_or(ConfigError::Missing("key"))?,
            },
            crl: cli.crl.clone().or(tls.crl),
            key_file: cli.key_file.clone().or(file.key_file).ok_or(ConfigError::Missing("key_file"))?,
            key_file_previous: cli.key_file_previous.clone().or(file.key_file_previous),
            limits,
            journal_file_bytes,
            checkpoint_interval_bytes: cli
                .checkpoint_interval_bytes
                .or(file.journal.checkpoint_interval_bytes)
                .unwrap_or(CHECKPOINT_INTERVAL_BYTES_DEFAULT),
            direct_io: !cli.no_direct_io && file.journal.direct_io.unwrap_or(true),
            tuning,
            peers,
            etcd,
            log: cli
                .log
                .clone()
                .or(file.log)
                .or_else(|| std::env::var("BOREALIS_LOG").ok())
                .unwrap_or_else(|| "info".into()),
        })
    }
}

/// The background scrub and hydration rates, from the flags over the file.
fn set_healing_rates(limits: &mut Limits, cli: &Cli, file: &LimitsSection) -> Result<(), ConfigError> {
    limits.scrub_bytes_per_s =
        cli.scrub_bytes_per_s.or(file.scrub_bytes_per_s).unwrap_or(crate::core::SCRUB_BYTES_PER_S_DEFAULT);
    limits.hydrate_bytes_per_s = cli
        .hydrate_bytes_per_s
        .or(file.hydrate_bytes_per_s)
        .unwrap_or(crate::core::HYDRATE_BYTES_PER_S_DEFAULT);
    if limits.hydrate_bytes_per_s == 0 {
        return Err(ConfigError::Invalid("hydrate_bytes_per_s must be at least 1".into()));
    }
    Ok(())
}

/// Reads the config file. Relative paths in it are relative to the file's own directory, so a
/// host's bundle (`borealis cluster init --hosts`) works wherever it is unpacked; paths given
/// as flags stay relative to the working directory.
fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let fail = |reason: String| ConfigError::File { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut file: FileConfig = toml::from_str(&text).map_err(|e| fail(e.message().to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let anchor = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    file.data_dirs.iter_mut().flatten().for_each(anchor);
    file.key_file.iter_mut().for_each(anchor);
    file.key_file_previous.iter_mut().for_each(anchor);
    if let Some(map) = &mut file.map {
        [&mut map.password_file, &mut map.ca, &mut map.cert, &mut map.key]
            .into_iter()
            .flatten()
            .for_each(anchor);
    }
    if let Some(tls) = &mut file.tls {
        [&mut tls.ca, &mut tls.cert, &mut tls.key, &mut tls.crl].into_iter().flatten().for_each(anchor);
    }
    Ok(file)
}

impl Config {
    /// This node and its static `peers` as a cluster map (`None` without peers; `load` checked
    /// that it places PGs).
    pub fn static_map(&self) -> Result<Option<ClusterMap>, PlacementError> {
        static_map(self.node_id, self.az, self.listen, &self.peers)
    }
}

/// This node and `peers` as a cluster map, `None` without peers.
fn static_map(
    node_id: NodeId,
    az: AzId,
    listen: SocketAddr,
    peers: &[NodeInfo],
) -> Result<Option<ClusterMap>, PlacementError> {
    if peers.is_empty() {
        return Ok(None);
    }
    let me = NodeInfo { id: node_id, az, addr: listen, name: String::new(), spare: false };
    ClusterMap::new(peers.iter().cloned().chain([me]).collect()).map(Some)
}

/// The etcd map source from the flags, else the file's `[map]`.
fn etcd_source(cli: &Cli, file: Option<MapSection>) -> Result<Option<EtcdSource>, ConfigError> {
    let (endpoints, prefix, file_user, tls) = match file {
        _ if !cli.etcd.is_empty() => (cli.etcd.clone(), cli.etcd_prefix.clone(), (None, None), None),
        Some(map) => {
            let tls = match (map.ca, map.cert, map.key) {
                (None, None, None) => None,
                (Some(ca), cert, key) => {
                    let identity = match (cert, key) {
                        (Some(cert), Some(key)) => Some((cert, key)),
                        (None, None) => None,
                        _ => return Err(ConfigError::Invalid("`map.cert` and `map.key` go together".into())),
                    };
                    let files = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
                    Some(
                        etcdmap::EtcdTls::from_files(&ca, files)
                            .map_err(|e| ConfigError::Invalid(format!("`map` TLS files: {e}")))?,
                    )
                }
                _ => return Err(ConfigError::Invalid("`map.cert` and `map.key` need `map.ca`".into())),
            };
            (map.etcd, cli.etcd_prefix.clone().or(map.prefix), (map.user, map.password_file), tls)
        }
        None if cli.etcd_user.is_some() => {
            return Err(ConfigError::Invalid("--etcd-user needs the map in etcd (--etcd or [map])".into()))
        }
        None => return Ok(None),
    };
    let user = match (cli.etcd_user.clone(), cli.etcd_password_file.clone()) {
        (Some(name), Some(file)) => Some((name, file)),
        _ => match file_user {
            (Some(name), Some(file)) => Some((name, file)),
            (None, None) => None,
            _ => return Err(ConfigError::Invalid("`map.user` and `map.password_file` go together".into())),
        },
    };
    let user = user
        .map(|(name, file)| {
            etcdmap::EtcdUser::from_password_file(&name, &file)
                .map_err(|e| ConfigError::Invalid(format!("etcd password file {}: {e}", file.display())))
        })
        .transpose()?;
    if endpoints.is_empty() {
        return Err(ConfigError::Invalid("`map.etcd` lists no endpoint".into()));
    }
    if let Some(bad) = endpoints.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
        return Err(ConfigError::Invalid(format!(
            "etcd endpoint `{bad}` is not a URL (expected e.g. http://10.0.0.5:2379)"
        )));
    }
    if tls.is_none() && endpoints.iter().any(|e| e.starts_with("https://")) {
        return Err(ConfigError::Invalid("an https:// etcd endpoint needs `map.ca`".into()));
    }
    let prefix = prefix.unwrap_or_else(|| ETCD_PREFIX_DEFAULT.into());
    Ok(Some(EtcdSource { endpoints, prefix, user, tls }))
}

/// A `--peer` spec: `ID:AZ:NAME@IP:PORT`.
fn parse_peer(spec: &str) -> Result<NodeInfo, ConfigError> {
    let bad = |reason: &str| {
        ConfigError::Invalid(format!(
            "bad peer `{spec}`: {reason} (expected ID:AZ:NAME@IP:PORT, e.g. 2:0:node-2@127.0.0.1:7002)"
        ))
    };
    let (head, addr) = spec.split_once('@').ok_or_else(|| bad("no `@`"))?;
    let mut parts = head.splitn(3, ':');
    let id = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("the node id is not a number"))?;
    let az = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("the AZ is not a number"))?;
    let name = parts.next().filter(|s| !s.is_empty()).ok_or_else(|| bad("no certificate name"))?;
    let addr = parse_addr("peer", addr)?;
    Ok(NodeInfo { id: NodeId(id), az: AzId(az), addr, name: name.to_string(), spare: false })
}

fn parse_addr(what: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e: std::net::AddrParseError| ConfigError::Address {
        what,
        value: value.to_string(),
        reason: format!("{e} (expected IP:PORT, e.g. 127.0.0.1:7001)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("storaged").chain(args.iter().copied()))
    }

    #[test]
    fn flags_override_the_file_and_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storaged.toml");
        std::fs::write(
            &path,
            "node_id = 3\naz = 1\nlisten = \"127.0.0.1:7003\"\ndata_dirs = [\"/tmp/x\"]\nkey_file = \"k\"\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\ncrl = \"crl.pem\"\n",
        )
        .unwrap();
        let config =
            Config::load(&cli(&["--config", path.to_str().unwrap(), "--listen", "127.0.0.1:9000"])).unwrap();
        assert_eq!((config.node_id, config.listen.port()), (NodeId(3), 9000));
        // The file's relative paths are the file's directory's; absolute ones and flags stay.
        assert_eq!((config.key_file, config.tls.ca_cert), (dir.path().join("k"), dir.path().join("ca.pem")));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.crl, Some(dir.path().join("crl.pem")));
        let flagged =
            Config::load(&cli(&["--config", path.to_str().unwrap(), "--key-file", "k2", "--crl", "r.pem"]))
                .unwrap();
        assert_eq!((flagged.key_file, flagged.crl), (PathBuf::from("k2"), Some(PathBuf::from("r.pem"))));
        let bad =
            Config::load(&cli(&["--config", path.to_str().unwrap(), "--listen", "localhost"])).unwrap_err();
        assert!(bad.to_string().contains("bad address `localhost`"), "{bad}");
        let missing = Config::load(&cli(&["--listen", "127.0.0.1:1"])).unwrap_err();
        assert!(missing.to_string().contains("--node-id"), "{missing}");
        let nofile = Config::load(&cli(&["--config", "/nonexistent.toml"])).unwrap_err();
        assert!(nofile.to_string().starts_with("config file /nonexistent.toml"), "{nofile}");
        std::fs::write(&path, "node_idd = 1\n").unwrap();
        let unknown = Config::load(&cli(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
    }

    #[test]
    fn peers_turn_gossip_on_and_a_bad_spec_says_what_is_expected() {
        let base = ["--node-id", "1", "--az", "0", "--listen", "127.0.0.1:7001", "--data-dir", "/tmp/x"];
        let keys = ["--key-file", "k", "--ca", "ca.pem", "--cert", "c.pem", "--key", "c.key"];
        let mut args: Vec<&str> = base.iter().chain(&keys).copied().collect();
        let alone = Config::load(&cli(&args)).unwrap();
        assert!(alone.peers.is_empty() && alone.crl.is_none(), "no CRL unless one is named");
        assert_eq!(alone.limits.peer_lease_ms, 0, "no peers: nothing held for them");
        args.extend(["--peer", "2:0:node-2@127.0.0.1:7002", "--peer", "3:1:node-3@127.0.0.1:7003"]);
        let short = Config::load(&cli(&args)).unwrap_err().to_string();
        assert!(short.contains("this node and its peers"), "two AZs short of a placement: {short}");
        let more = ["4:1:node-4@127.0.0.1:7004", "5:2:node-5@127.0.0.1:7005", "6:2:node-6@127.0.0.1:7006"];
        for spec in more {
            args.extend(["--peer", spec]);
        }
        let config = Config::load(&cli(&args)).unwrap();
        let names: Vec<(u32, u16, &str)> =
            config.peers.iter().map(|p| (p.id.0, p.az.0, p.name.as_str())).collect();
        assert_eq!(names[..2], [(2, 0, "node-2"), (3, 1, "node-3")]);
        assert_eq!(config.limits.peer_lease_ms, PEER_LEASE_MS);
        let mut etcd = args.clone();
        etcd.extend(["--etcd", "http://127.0.0.1:2379"]);
        let both = Cli::try_parse_from(std::iter::once("storaged").chain(etcd.iter().copied()));
        assert!(
            both.unwrap_err().to_string().contains("cannot be used with"),
            "peers and etcd together are refused"
        );
        let from_etcd =
            Config::load(&cli(&[&base[..], &keys[..], &["--etcd", "http://127.0.0.1:2379"]].concat()));
        let source = from_etcd.unwrap().etcd.unwrap();
        assert_eq!((source.endpoints.len(), source.prefix.as_str()), (1, ETCD_PREFIX_DEFAULT));
        let not_url = Config::load(&cli(&[&base[..], &keys[..], &["--etcd", "127.0.0.1:2379"]].concat()));
        assert!(not_url.unwrap_err().to_string().contains("is not a URL"));
        args.extend(["--peer", "7:node-7@127.0.0.1:7007"]);
        let bad = Config::load(&cli(&args)).unwrap_err().to_string();
        assert!(
            bad.contains("bad peer `7:node-7@127.0.0.1:7007`") && bad.contains("ID:AZ:NAME@IP:PORT"),
            "{bad}"
        );
    }

    #[test]
    fn healing_rates_default_come_from_flags_and_a_zero_hydration_rate_is_refused() {
        let base = ["--node-id", "1", "--az", "0", "--listen", "127.0.0.1:7001", "--data-dir", "/tmp/x"];
        let keys = ["--key-file", "k", "--ca", "ca.pem", "--cert", "c.pem", "--key", "c.key"];
        let mut args: Vec<&str> = base.iter().chain(&keys).copied().collect();
        let defaults = Config::load(&cli(&args)).unwrap();
        assert_eq!(defaults.limits.scrub_bytes_per_s, crate::core::SCRUB_BYTES_PER_S_DEFAULT);
        assert_eq!(defaults.limits.hydrate_bytes_per_s, crate::core::HYDRATE_BYTES_PER_S_DEFAULT);
        args.extend(["--scrub-bytes-per-s", "0", "--hydrate-bytes-per-s", "1000"]);
        let set = Config::load(&cli(&args)).unwrap();
        assert_eq!((set.limits.scrub_bytes_per_s, set.limits.hydrate_bytes_per_s), (0, 1000));
        let last = args.len() - 1;
        args[last] = "0";
        let refused = Config::load(&cli(&args)).unwrap_err().to_string();
        assert!(refused.contains("hydrate_bytes_per_s must be at least 1"), "{refused}");
    }
}
