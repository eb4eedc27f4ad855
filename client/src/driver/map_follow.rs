//! A writer following the cluster map in etcd (`ClientConfig::etcd`): every newer map goes to
//! the writer's core (`WriterCore::handle_map`), which takes it only if it moves no PG. A node
//! added to the cluster (a spare, `borealis cluster add-host`) is then dialled and may be
//! chosen to replace a member, without reopening the volume.
//!
//! A writer only reads etcd. The volume's ACL is claimed by the nodes: the first node asked
//! to write an unclaimed volume claims it for this client's identity (`storaged`'s
//! `core::access`), so clients need no etcd write access.

use protocol::placement::ClusterMap;
use tokio::sync::{mpsc, oneshot};

use super::task::Command;

/// Where the cluster map lives in etcd, and the (read-only) etcd user to read it as.
pub use etcdmap::EtcdSource;

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
        deleted: Default::default(),
    };
    let mut updates = etcdmap::watch(source, initial);
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
