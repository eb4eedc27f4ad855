//! `borealis volume`: an operator's hands on the volumes of a cluster directory, through the
//! client library: list them, claim one, grant and revoke roles on it, write a file's bytes to
//! its pages, read pages back, show its ACL, VDL, PGs and members, and delete it for good. `--as NAME` acts with the client
//! certificate `pki/NAME.pem` (`borealis cert issue --name NAME`), as that identity; a node's
//! refusal ends the command non-zero with the typed error's name (`Unauthorized`) in its message.
//!
//! ACLs and tombstones live in the cluster map in etcd (`etcdmap::acl`), so `create`, `grant`,
//! `revoke`, `delete` and the ACL part of `info` need a cluster made with `cluster init --hosts --etcd`. Whoever may write
//! etcd's prefix administers the cluster: etcd's own access control guards these commands
//! (docs/security.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use client::{ClientConfig, NewRecord, OpenError, Reader, VolumeGeometry, Writer};
use etcdmap::Role;
use protocol::messages::{AclChange, DeleteVolume, ErrorCode};
use protocol::{Message, PageId, RecordKind, VolumeId};

use crate::local::map::EtcdActor;
use crate::local::LocalCluster;

/// Page size of volumes this command writes (the engines' default).
pub const PAGE_BYTES: u32 = 4096;
/// Pages per PG of volumes this command writes.
pub const PAGES_PER_PG: u64 = 1024;
/// Pages appended in one batch by `write`.
const PAGES_PER_BATCH: usize = 64;
/// The largest file `write` takes (it is for checking a cluster by hand, not bulk loads).
pub const WRITE_BYTES_MAX: u64 = 256 << 20;
/// The most pages `read` returns in one command (256 MiB).
pub const READ_PAGES_MAX: u64 = 65_536;
/// etcd requests' bound.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct VolumeArgs {
    /// The cluster directory (cluster.toml, pki/).
    #[arg(long, global = true, value_name = "DIR", default_value = crate::local::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Act as the client NAME (certificate pki/NAME.pem, identity borealis://client/NAME);
    /// default: the cluster's client certificate.
    #[arg(long = "as", global = true, value_name = "NAME")]
    pub as_name: Option<String>,
    #[command(subcommand)]
    pub action: VolumeAction,
}

#[derive(Debug, Subcommand)]
pub enum VolumeAction {
    /// Claims the volume for this identity (ACL: admin), as a writer opening it does.
    Create {
        #[arg(long, value_parser = parse_volume)]
        volume: u128,
    },
    /// Gives NAME (a client name, or a full identity borealis://...) a role: read, write or
    /// admin (admin includes the others, write includes read). --as must be the volume's admin.
    Grant(RoleChange),
    /// Takes a role away from NAME. --as must be the volume's admin.
    Revoke(RoleChange),
    /// Deletes the volume for good: its tombstone goes to etcd, every node drops its segments
    /// and destroys its data keys (a node that is down does so when it returns), and the id is
    /// never used again. --as must be the volume's admin. Waits until no answering node holds
    /// a segment of it.
    Delete {
        #[arg(long, value_parser = parse_volume)]
        volume: u128,
        /// Confirms: the volume's data is gone on every node once this runs.
        #[arg(long)]
        yes: bool,
    },
    /// Lists the volumes the cluster knows: those with an ACL in etcd and those whose segments
    /// the nodes report, with their PG count and, from etcd, their owners.
    Ls,
    /// Shows the volume's ACL and, as its writer sees them, VDL, PGs and members (opens it as
    /// writer, which fences any other: use it on an idle volume).
    Info {
        #[arg(long, value_parser = parse_volume)]
        volume: u128,
    },
    /// Writes FILE's bytes to pages FROM.. (4 KiB pages; the last one zero-padded) as the
    /// volume's writer, and waits until they are durable.
    Write {
        #[arg(long, value_parser = parse_volume)]
        volume: u128,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_name = "PAGE", default_value_t = 0)]
        from: u64,
    },
    /// Reads COUNT pages from FROM as of the newest committed point (a reader beside any
    /// writer) to stdout or --out.
    Read {
        #[arg(long, value_parser = parse_volume)]
        volume: u128,
        #[arg(long, value_name = "PAGE", default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `grant` and `revoke`: who gets or loses which role on which volume.
#[derive(Debug, Args)]
pub struct RoleChange {
    #[arg(long, value_parser = parse_volume)]
    volume: u128,
    #[arg(long, value_name = "NAME")]
    to: String,
    #[arg(long)]
    role: Role,
}

/// A volume id: decimal or 0x-prefixed hex.
fn parse_volume(text: &str) -> Result<u128, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?} is not a volume id (decimal or 0x hex): {e}"))
}

/// The identity NAME stands for: itself if it is one already, else the client NAME's.
fn identity_of(name: &str) -> String {
    if name.contains("://") {
        name.to_owned()
    } else {
        etcdmap::client_identity(name)
    }
}

pub fn run(args: VolumeArgs) -> anyhow::Result<ExitCode> {
    let cluster = LocalCluster::load(&args.dir)?;
    let mut config = cluster.client_config()?;
    if let Some(name) = &args.as_name {
        config.tls = cluster.client_tls_as(name);
        if !config.tls.cert.exists() {
            bail!(
                "no certificate for {name:?} ({}): make one with `borealis cert issue --name {name}`",
                config.tls.cert.display()
            );
        }
    }
    config.replace_after = None;
    config.requests_dir = None;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match args.action {
            VolumeAction::Create { volume } => {
                let identity = transport::file_identity(&config.tls.cert)?;
                let (acl, _) = etcd(&cluster).await?.claim_volume(volume, &identity).await?;
                print_acl(volume, &acl);
                if !acl.allows(&identity, Role::Admin) {
                    bail!("volume {volume:#x} was claimed already; {identity} is not its admin");
                }
            }
            VolumeAction::Grant(change) => change_role(&cluster, &config, change, true).await?,
            VolumeAction::Revoke(change) => change_role(&cluster, &config, change, false).await?,
            VolumeAction::Info { volume } => info(&cluster, config, volume).await?,
            VolumeAction::Ls => ls(&cluster, &config).await?,
            VolumeAction::Delete { volume, yes } => delete(&cluster, &config, volume, yes).await?,
            VolumeAction::Write { volume, file, from } => write(config, volume, &file, from).await?,
            VolumeAction::Read { volume, from, count, out } => {
                read(config, volume, from, count, out.as_deref()).await?
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn etcd(cluster: &LocalCluster) -> anyhow::Result<etcdmap::EtcdMap> {
    etcd_as(cluster, EtcdActor::Root).await
}

/// etcd, as `actor`'s etcd user.
async fn etcd_as(cluster: &LocalCluster, actor: EtcdActor) -> anyhow::Result<etcdmap::EtcdMap> {
    let Some(source) = cluster.etcd_source(actor)? else {
        bail!(
            "{}: this cluster keeps no ACLs (its map is not in etcd: `cluster init --hosts FILE --etcd URL`)",
            cluster.dir().display()
        );
    };
    Ok(etcdmap::EtcdMap::open(&source, ETCD_TIMEOUT).await?)
}

/// Grants (or revokes) a role: asked of a node as the `--as` identity (`AclChange`), which
/// checks that identity holds `admin` on the volume and writes the ACL in etcd itself, so a
/// volume's admin needs no etcd credentials. The nodes are tried in turn until one answers; a
/// refusal ends it.
async fn change_role(
    cluster: &LocalCluster,
    config: &ClientConfig,
    RoleChange { volume, to, role }: RoleChange,
    grant: bool,
) -> anyhow::Result<()> {
    let ask = Message::AclChange(AclChange {
        volume: VolumeId(volume),
        role: role.to_wire(),
        grant,
        identity: identity_of(&to),
    });
    ask_a_node(cluster, config, &ask).await?;
    let acl = etcd_as(cluster, EtcdActor::Client).await?.acl(volume).await?;
    print_acl(volume, &acl.map(|(acl, _)| acl).unwrap_or_default());
    Ok(())
}

/// A node's refusal of a request `ask_a_node` sent.
#[derive(Debug, thiserror::Error)]
#[error("{}: node {node} refused: {message}", kind(*code))]
struct Refused {
    node: u32,
    code: ErrorCode,
    message: String,
}

/// The name a refusal is reported under: the typed error's.
fn kind(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unauthorized => "Unauthorized",
        ErrorCode::VolumeDeleted => "VolumeDeleted",
        other => other.name(),
    }
}

/// Sends `ask` (a request a node answers with itself once done: `AclChange`, `DeleteVolume`)
/// as this command's identity to the cluster's nodes in turn, until one answers; a refusal ends
/// it. The node checks the identity's rights and writes etcd itself.
async fn ask_a_node(cluster: &LocalCluster, config: &ClientConfig, ask: &Message) -> Result<(), AskError> {
    let mut unreachable = Vec::new();
    for node in cluster.nodes() {
        let target = crate::probe::Target::from(node);
        match crate::probe::ask_node(&config.tls, &target, ask, STATUS_TIMEOUT).await {
            Ok(()) => return Ok(()),
            Err(crate::probe::ProbeError::Denied { code, message }) => {
                return Err(AskError::Refused(Refused { node: node.id, code, message }))
            }
            Err(error) => unreachable.push(format!("node {}: {error}", node.id)),
        }
    }
    Err(AskError::NoNode(unreachable.join("; ")))
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error(transparent)]
    Refused(Refused),
    #[error("no node answered: {0}")]
    NoNode(String),
}

fn print_acl(volume: u128, acl: &etcdmap::Acl) {
    println!("volume {volume:#x} ACL:");
    for (identity, roles) in &acl.grants {
        let roles: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        println!("  {identity}: {}", roles.join(", "));
    }
}

fn geometry(volume: u128) -> anyhow::Result<VolumeGeometry> {
    Ok(VolumeGeometry::new(VolumeId(volume), PAGE_BYTES, PAGES_PER_PG)?)
}

/// Opens the volume as writer; a node's refusal is named.
async fn open_writer(config: ClientConfig, volume: u128) -> anyhow::Result<Writer> {
    Writer::open(config, geometry(volume)?).await.map_err(|e| refusal(e, volume))
}

fn refusal(error: OpenError, volume: u128) -> anyhow::Error {
    match error {
        OpenError::Unauthorized { node, detail } => {
            anyhow::anyhow!("Unauthorized: {node} refused volume {volume:#x}: {detail}")
        }
        other => anyhow::Error::new(other).context(format!("opening volume {volume:#x}")),
    }
}

async fn info(cluster: &LocalCluster, config: ClientConfig, volume: u128) -> anyhow::Result<()> {
    if cluster.etcd().is_some() {
        match etcd(cluster).await?.acl(volume).await? {
            Some((acl, _)) => print_acl(volume, &acl),
            None => {
                println!("volume {volume:#x}: no ACL (unclaimed: its first writer claims it)")
            }
        }
    }
    let writer = open_writer(config, volume).await?;
    println!("VDL {}", writer.vdl());
    for (pg, (sets, change)) in writer.memberships().await? {
        let members: Vec<String> = sets.current().members().iter().map(|n| n.to_string()).collect();
        let change =
            change.map(|c| format!(" (changing: {} -> {})", c.leaving, c.joining)).unwrap_or_default();
        println!("PG {}: members {}{change}", pg.0, members.join(" "));
    }
    writer.close().await;
    Ok(())
}

/// How long `ls` waits for each node's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `delete` waits for the answering nodes to drop the volume's segments.
const DELETE_WAIT: Duration = Duration::from_secs(60);

async fn delete(
    cluster: &LocalCluster,
    config: &ClientConfig,
    volume: u128,
    yes: bool,
) -> anyhow::Result<()> {
    if !yes {
        bail!("deleting volume {volume:#x} destroys its data on every node, for good: add --yes");
    }
    match ask_a_node(cluster, config, &Message::DeleteVolume(DeleteVolume { volume: VolumeId(volume) })).await
    {
        Ok(()) => println!("volume {volume:#x}: deleted (its tombstone is in etcd)"),
        Err(AskError::Refused(Refused { code: ErrorCode::VolumeDeleted, .. })) => {
            println!("volume {volume:#x}: was deleted already")
        }
        Err(error) => return Err(error.into()),
    }
    let targets: Vec<crate::probe::Target> = cluster.nodes().iter().map(crate::probe::Target::from).collect();
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    let mut told = tokio::time::Instant::now();
    loop {
        let probes = crate::probe::probe_all(&targets, &config.tls, STATUS_TIMEOUT).await?;
        let answered = probes.iter().filter(|p| p.status.is_ok()).count();
        let holding: Vec<u32> = probes
            .iter()
            .filter(|p| {
                p.status.as_ref().is_ok_and(|s| s.segments.iter().any(|seg| seg.pg.volume_id.0 == volume))
            })
            .map(|p| p.target.node)
            .collect();
        if holding.is_empty() {
            let away = probes.len() - answered;
            let rest = match away {
                0 => String::new(),
                n => format!("; the {n} that did not drop it when they see the tombstone"),
            };
            println!(
                "no node holds a segment of it any more ({answered} of {} answered{rest})",
                probes.len()
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "nodes {holding:?} still hold segments of volume {volume:#x} after {DELETE_WAIT:?}; they drop \
                 them when they see the tombstone (is their etcd watch broken? see borealis_cluster_map_stale_seconds)"
            );
        }
        if told.elapsed() >= Duration::from_secs(1) {
            println!("waiting for nodes {holding:?} to drop it");
            told = tokio::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ls(cluster: &LocalCluster, config: &ClientConfig) -> anyhow::Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    let targets: Vec<crate::probe::Target> = cluster.nodes().iter().map(crate::probe::Target::from).collect();
    let probes = crate::probe::probe_all(&targets, &config.tls, STATUS_TIMEOUT).await?;
    // Per volume: its PGs, and the nodes that hold a segment of it.
    let mut seen: BTreeMap<u128, (BTreeSet<u32>, BTreeSet<u32>)> = BTreeMap::new();
    let mut answered = 0;
    for probe in &probes {
        let Ok(status) = &probe.status else { continue };
        answered += 1;
        for segment in &status.segments {
            let entry = seen.entry(segment.pg.volume_id.0).or_default();
            entry.0.insert(segment.pg.pg_id.0);
            entry.1.insert(probe.target.node);
        }
    }
    let (acls, deleted) = match cluster.etcd() {
        Some(_) => {
            let snapshot = etcd(cluster).await?.load().await?;
            (snapshot.acls, snapshot.deleted)
        }
        None => (BTreeMap::new(), BTreeSet::new()),
    };
    let volumes: BTreeSet<u128> = seen.keys().chain(acls.keys()).chain(&deleted).copied().collect();
    println!("{answered} of {} nodes answered", probes.len());
    for volume in volumes {
        let (pgs, nodes) = seen.get(&volume).map(|(p, n)| (p.len(), n.len())).unwrap_or_default();
        let admins: Vec<&str> = acls.get(&volume).map_or_else(Vec::new, |acl| {
            acl.grants
                .iter()
                .filter(|(_, roles)| roles.contains(&Role::Admin))
                .map(|(who, _)| who.as_str())
                .collect()
        });
        let owners = if cluster.etcd().is_none() {
            String::new()
        } else if deleted.contains(&volume) {
            "  DELETED".into()
        } else if admins.is_empty() {
            "  (unclaimed: its first writer claims it)".into()
        } else {
            format!("  admin: {}", admins.join(", "))
        };
        println!("volume {volume:#x}: {pgs} PG(s) on {nodes} node(s){owners}");
    }
    Ok(())
}

async fn write(config: ClientConfig, volume: u128, file: &Path, from: u64) -> anyhow::Result<()> {
    let size = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?.len();
    if size > WRITE_BYTES_MAX {
        bail!("{} is {size} bytes; `volume write` takes at most {WRITE_BYTES_MAX}", file.display());
    }
    let bytes = std::fs::read(file).with_context(|| format!("{}", file.display()))?;
    if from.checked_add(size.div_ceil(u64::from(PAGE_BYTES))).is_none() {
        bail!("--from {from} leaves no room for {size} bytes of pages");
    }
    let writer = open_writer(config, volume).await?;
    let pages: Vec<Vec<u8>> = bytes
        .chunks(PAGE_BYTES as usize)
        .map(|chunk| {
            let mut page = chunk.to_vec();
            page.resize(PAGE_BYTES as usize, 0);
            page
        })
        .collect();
    let mut last = None;
    for (batch, chunk) in pages.chunks(PAGES_PER_BATCH).enumerate() {
        let first_page = from + (batch * PAGES_PER_BATCH) as u64;
        let records = chunk
            .iter()
            .enumerate()
            .map(|(i, page)| NewRecord {
                page: PageId(first_page + i as u64),
                kind: RecordKind::PageImage,
                payload: page.clone().into(),
                cpl: true,
                lsn: None,
            })
            .collect();
        last =
            Some(writer.append(records).await.with_context(|| format!("appending to volume {volume:#x}"))?);
    }
    if let Some(appended) = last {
        appended.durable().await.with_context(|| format!("volume {volume:#x}"))?;
    }
    println!("wrote {} pages ({size} bytes) from page {from}; VDL {}", pages.len(), writer.vdl());
    writer.close().await;
    Ok(())
}

async fn read(
    config: ClientConfig,
    volume: u128,
    from: u64,
    count: u64,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let reader = Reader::open(config, geometry(volume)?).await.map_err(|e| refusal(e, volume))?;
    let snapshot = reader.snapshot();
    let mut bytes = Vec::with_capacity((count * u64::from(PAGE_BYTES)) as usize);
    for page in from..from + count {
        let version = reader.read_page(PageId(page), &snapshot).await.map_err(|e| match e {
            client::ReadError::Unavailable {
                code: Some(protocol::messages::ErrorCode::Unauthorized),
                detail,
                ..
            } => {
                anyhow::anyhow!("Unauthorized: reading page {page} of volume {volume:#x}: {detail}")
            }
            other => anyhow::Error::new(other).context(format!("reading page {page} of volume {volume:#x}")),
        })?;
        bytes.extend_from_slice(&version.bytes);
    }
    drop(snapshot);
    reader.close();
    match out {
        Some(path) => std::fs::write(path, &bytes).with_context(|| format!("{}", path.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}
