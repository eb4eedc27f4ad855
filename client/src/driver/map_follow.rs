//! A writer following the cluster map in etcd (`ClientConfig::etcd`): every newer map goes to
//! the writer's core (`WriterCore::handle_map`), which takes it only if it moves no PG. A node
//! added to the cluster (a spare, `borealis cluster add-host`) is then dialled and may be
//! chosen to replace a member, without reopening the volume.

use protocol::placement::ClusterMap;
use tokio::sync::{mpsc, oneshot};

use super::task::Command;
use super::OpenError;

/// Where the cluster map lives in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSource {
    /// Client URLs of the etcd members, e.g. `http://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix (`etcdmap::DEFAULT_PREFIX` unless the cluster chose another).
    pub prefix: String,
}

/// Claims `volume` in etcd for the identity of this client's certificate `cert`, if nobody
/// has: its ACL becomes `identity: admin` (`etcdmap::acl`). Fails if the claim cannot be made
/// (etcd unreachable: an unclaimed volume would stay open to every certificate of the cluster)
/// or the volume's ACL gives this identity no `write` (its owner claimed it first).
pub(super) async fn claim(
    source: &EtcdSource,
    cert: &std::path::Path,
    volume: protocol::VolumeId,
    timeout: std::time::Duration,
) -> Result<(), OpenError> {
    let identity = transport::file_identity(cert)?;
    let claimed = async {
        let mut etcd = etcdmap::EtcdMap::connect(&source.endpoints, &source.prefix, timeout).await?;
        etcd.claim_volume(volume.0, &identity).await
    };
    match claimed.await {
        Ok(acl) if acl.allows(&identity, etcdmap::Role::Write) => Ok(()),
        Ok(_) => Err(OpenError::Unauthorized {
            node: protocol::NodeId(0),
            detail: format!("the volume's ACL in etcd gives {identity} no write on volume {:#x}", volume.0),
        }),
        Err(error) => Err(OpenError::Claim(Box::new(error))),
    }
}

/// Follows the map from `start` (the one the writer opened with) until the writer closes. It
/// holds the command channel weakly: a writer's `close` ends its driver by dropping the last
/// sender.
pub(super) async fn follow(source: EtcdSource, start: &ClusterMap, commands: mpsc::WeakSender<Command>) {
    // Revision 0: the watch reads etcd's map at once and hands over whatever differs.
    let initial = etcdmap::Snapshot {
        nodes: start.nodes().iter().map(etcdmap::MapNode::from).collect(),
        revision: 0,
        generation: 0,
        acls: Default::default(),
        admins: Default::default(),
    };
    let mut updates = etcdmap::watch(source.endpoints, source.prefix, initial);
    while updates.changed().await.is_ok() {
        let snapshot = updates.borrow_and_update().clone();
        let map = match snapshot.cluster_map() {
            Ok(map) => map,
            Err(error) => {
                tracing::error!(%error, revision = snapshot.revision, "the etcd cluster map cannot place PGs; ignored");
                continue;
            }
        };
        let Some(commands) = commands.upgrade() else { return };
        let (reply, answer) = oneshot::channel();
        if commands.send(Command::UpdateMap { map, reply }).await.is_err() {
            return;
        }
        match answer.await {
            Ok(Ok(added)) if !added.is_empty() => {
                tracing::info!(?added, revision = snapshot.revision, "writer took a new cluster map");
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, revision = snapshot.revision, "writer refused a cluster map change");
            }
            Err(_) => return,
        }
    }
}
