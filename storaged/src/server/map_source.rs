//! Where the node's cluster map comes from: the static `peers` of its configuration, or etcd
//! (`[map] etcd = [...]`), read once at start and then followed (`etcdmap::watch`). Every map
//! goes through [`ClusterView::apply`], which refuses one that would move a PG.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use protocol::messages::{AclChange, DeleteVolume, ErrorCode, ErrorReply};
use protocol::{Message, PgRef, VolumeId};

use super::admin::NodeMetrics;
use super::cluster_view::{Applied, ClusterView, SharedView};
use super::shared::Shared;
use super::StartError;
use crate::config::{Config, EtcdSource};
use crate::core::access::{self, Acls};

/// How long a starting node waits for etcd to answer before it gives up (systemd restarts it).
pub const ETCD_WAIT: Duration = Duration::from_secs(30);
/// How soon a drop of a deleted volume that failed (its tombstone not stored) is tried again.
const DROP_RETRY: Duration = Duration::from_secs(5);
/// One etcd request's bound while starting.
const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The map this node starts with, and the etcd snapshot it came from (to follow from).
pub async fn initial(config: &Config) -> Result<(ClusterView, Option<etcdmap::Snapshot>), StartError> {
    let Some(source) = &config.etcd else {
        let map =
            config.static_map().map_err(|e| StartError::Map(format!("this node and its peers: {e}")))?;
        return Ok((ClusterView::new(config.node_id, map, 0), None));
    };
    let (etcd, snapshot) = load_waiting(source).await?;
    let map = snapshot.cluster_map().map_err(|e| map_error(source, e.to_string()))?;
    let me = map.node(config.node_id).ok_or_else(|| {
        map_error(
            source,
            format!("node {} is not in the map (add it with `borealis cluster add-host`)", config.node_id),
        )
    })?;
    if me.az != config.az || me.addr != config.listen {
        return Err(map_error(
            source,
            format!(
                "the map has node {} in AZ {} at {}, but this node's configuration says AZ {} at {}",
                me.id, me.az.0, me.addr, config.az.0, config.listen
            ),
        ));
    }
    let mut view = ClusterView::new(config.node_id, Some(map), snapshot.revision);
    view.set_acls(acls(&snapshot), snapshot.revision);
    view.set_etcd(etcd);
    Ok((view, Some(snapshot)))
}

/// Follows etcd's map from `snapshot` on, applying each change to `view`, and drops the
/// segments of every volume deleted there (at once for those deleted while this node was down).
pub fn follow(view: SharedView, source: &EtcdSource, snapshot: etcdmap::Snapshot, shared: Rc<Shared>) {
    let (mut updates, mut state) = etcdmap::watch_with_state(source.clone(), snapshot);
    let metrics = Arc::clone(&shared.metrics);
    let watched = Arc::clone(&metrics);
    tokio::task::spawn_local(async move {
        loop {
            let now = *state.borrow_and_update();
            watched.map_followed(now.following, now.since);
            if state.changed().await.is_err() {
                return;
            }
        }
    });
    tokio::task::spawn_local(drop_deleted(shared, updates.clone()));
    tokio::task::spawn_local(async move {
        while updates.changed().await.is_ok() {
            let snapshot = updates.borrow_and_update().clone();
            apply(&view, &snapshot, &metrics);
        }
    });
}

/// Drops every volume the map says was deleted (`P deleted/VOLUME`), one at a time, as the
/// tombstones appear; a drop whose tombstone could not be stored is tried again every
/// [`DROP_RETRY`]. Volumes this node's store already holds tombstones for (dropped before a
/// restart) are not dropped again, and volumes it holds nothing of get no tombstone on disk.
async fn drop_deleted(shared: Rc<Shared>, mut updates: tokio::sync::watch::Receiver<etcdmap::Snapshot>) {
    let mut done: HashSet<VolumeId> = shared.with_core(|core| core.dropped_volumes().collect());
    loop {
        let deleted: Vec<VolumeId> = updates
            .borrow_and_update()
            .deleted
            .iter()
            .map(|v| VolumeId(*v))
            .filter(|v| !done.contains(v))
            .collect();
        let mut failed = false;
        for volume in deleted {
            // A volume this node holds nothing of needs no tombstone of its own on disk (etcd's
            // is read at every start): the core only refuses it from now on. Tombstones on disk
            // are bounded (`DROPPED_VOLUMES_MAX`), and a cluster deletes volumes it never held.
            let held = shared.with_core(|core| core.segments().any(|s| s.pg().volume_id == volume))
                || shared.store.keyring.with_keys(|keys| keys.sealing(volume).is_some());
            if !held {
                shared.with_core(|core| core.drop_volume(volume));
                done.insert(volume);
                continue;
            }
            match super::shared::drop_volume(&shared, volume).await {
                Ok(_) => {
                    done.insert(volume);
                }
                Err(error) => {
                    tracing::error!(%error, "could not drop a deleted volume durably; trying again");
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(DROP_RETRY).await;
        } else if updates.changed().await.is_err() {
            return;
        }
    }
}

/// The ACLs of a snapshot.
fn acls(snapshot: &etcdmap::Snapshot) -> Acls {
    let volumes = snapshot.acls.iter().map(|(volume, acl)| (VolumeId(*volume), acl.clone())).collect();
    let deleted = snapshot.deleted.iter().map(|volume| VolumeId(*volume)).collect();
    Acls { volumes, admins: snapshot.admins.clone(), deleted }
}

/// Claims `volume` for `identity` in etcd if it is still unclaimed there (`core::access`'s
/// `Verdict::Claim`), and takes the ACL etcd then holds into `view` at once, without waiting
/// for the watch. The node, not the client, writes the claim: clients only read etcd. A
/// refusal is the reply to send.
pub async fn claim(view: &SharedView, pg: PgRef, identity: &str) -> Result<(), ErrorReply> {
    let Some(mut etcd) = view.borrow().etcd() else {
        return Err(refusal(pg, ErrorCode::Internal, "this node keeps no ACLs in etcd".to_owned()));
    };
    let (acl, revision) =
        etcd.claim_volume(pg.volume_id.0, identity).await.map_err(|e| etcd_refusal(pg, e))?;
    if acl.allows(identity, etcdmap::Role::Admin) {
        tracing::info!(volume = %format!("{:#x}", pg.volume_id.0), %identity, "volume claimed for its first writer");
    }
    view.borrow_mut().note_acl(pg.volume_id, acl, revision);
    Ok(())
}

/// A volume admin's `AclChange` from `caller`, authorized against this node's view
/// (`core::access`) and checked again against etcd's ACL in the transaction that changes it
/// (`EtcdMap::change_acl_as`: `caller` must still be admin, an admin must remain), so a stale
/// view grants nothing. Takes the result into `view` at once. Answers the request itself, or
/// an error reply.
pub async fn change_acl(view: &SharedView, change: AclChange, caller: &str) -> Message {
    let pg = access::volume_pg(change.volume);
    let Some(role) = etcdmap::Role::from_wire(change.role) else {
        return Message::Error(refusal(pg, ErrorCode::BadRequest, format!("no role {}", change.role)));
    };
    let Some(mut etcd) = view.borrow().etcd() else {
        return Message::Error(refusal(
            pg,
            ErrorCode::BadRequest,
            "this node keeps no ACLs in etcd".to_owned(),
        ));
    };
    let identity = change.identity.clone();
    let changed = etcd
        .change_acl_as(change.volume.0, caller, |acl| match change.grant {
            true => acl.grant(&identity, role),
            false => acl.revoke(&identity, role),
        })
        .await;
    match changed {
        Ok((acl, revision)) => {
            tracing::info!(volume = %format!("{:#x}", change.volume.0), identity = %change.identity, %role, grant = change.grant, %caller, "volume ACL changed");
            view.borrow_mut().note_acl(change.volume, acl, revision);
            Message::AclChange(change)
        }
        Err(error) => Message::Error(etcd_refusal(pg, error)),
    }
}

/// A volume admin's `DeleteVolume` from `caller`, authorized against this node's view and
/// checked again against etcd's ACL in the transaction that writes the tombstone
/// (`EtcdMap::delete_volume_as`). The node refuses the volume at once; `drop_deleted` drops it
/// when the watch brings the tombstone, here as on every node. Answers the request itself, or
/// an error reply.
pub async fn delete_volume(view: &SharedView, delete: DeleteVolume, caller: &str) -> Message {
    let pg = access::volume_pg(delete.volume);
    let Some(mut etcd) = view.borrow().etcd() else {
        return Message::Error(refusal(
            pg,
            ErrorCode::BadRequest,
            "this node keeps no ACLs in etcd".to_owned(),
        ));
    };
    match etcd.delete_volume_as(delete.volume.0, caller).await {
        Ok(new) => {
            tracing::info!(volume = %format!("{:#x}", delete.volume.0), %caller, new, "volume deleted");
            view.borrow_mut().note_deleted(delete.volume);
            Message::DeleteVolume(delete)
        }
        Err(error) => Message::Error(etcd_refusal(pg, error)),
    }
}

fn refusal(pg: PgRef, code: ErrorCode, message: String) -> ErrorReply {
    ErrorReply { code, pg, epochs: Default::default(), message }
}

/// The reply for an etcd write a node made for a client that failed: typed where the cause is
/// the client's (no admin, deleted, no ACL), `Internal` where it is etcd's.
fn etcd_refusal(pg: PgRef, error: etcdmap::EtcdMapError) -> ErrorReply {
    use etcdmap::EtcdMapError as E;
    let code = match &error {
        E::NotAdmin { .. } => ErrorCode::Unauthorized,
        E::Deleted { .. } => ErrorCode::VolumeDeleted,
        E::NoAcl { .. } | E::LastAdmin { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    if code == ErrorCode::Internal {
        tracing::warn!(%error, volume = %format!("{:#x}", pg.volume_id.0), "an etcd write for a client failed");
    }
    refusal(pg, code, error.to_string())
}

/// Takes `snapshot` into `view` if its map is whole and moves no PG; logs what happened. Its
/// ACLs are taken in any case.
pub fn apply(view: &SharedView, snapshot: &etcdmap::Snapshot, metrics: &NodeMetrics) {
    view.borrow_mut().set_acls(acls(snapshot), snapshot.revision);
    let map = match snapshot.cluster_map() {
        Ok(map) => map,
        Err(error) => {
            tracing::error!(%error, revision = snapshot.revision, "the etcd cluster map cannot place PGs; kept the old one");
            return;
        }
    };
    let nodes = map.nodes().len();
    match view.borrow_mut().apply(map, snapshot.revision) {
        Ok(Applied::Same) => {}
        Ok(Applied::Changed { added }) => {
            tracing::info!(?added, nodes, revision = snapshot.revision, "cluster map changed");
        }
        Err(error) => {
            tracing::error!(%error, revision = snapshot.revision, "refused a cluster map change; kept the old map");
            return;
        }
    }
    metrics.map_known(nodes, snapshot.revision);
}

/// Reads the map, retrying while etcd does not answer, up to `ETCD_WAIT`; returns the
/// connection too (claims go through it).
async fn load_waiting(source: &EtcdSource) -> Result<(etcdmap::EtcdMap, etcdmap::Snapshot), StartError> {
    let deadline = tokio::time::Instant::now() + ETCD_WAIT;
    let mut warned = false;
    loop {
        let attempt = async {
            let mut etcd = etcdmap::EtcdMap::open(source, ETCD_REQUEST_TIMEOUT).await?;
            let snapshot = etcd.load().await?;
            Ok((etcd, snapshot))
        };
        match attempt.await {
            Ok(loaded) => return Ok(loaded),
            Err(error @ etcdmap::EtcdMapError::NoMap { .. }) => {
                return Err(map_error(source, error.to_string()))
            }
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(map_error(source, format!("{error} (gave up after {ETCD_WAIT:?})")));
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(%error, "waiting for etcd to read the cluster map");
                    warned = true;
                }
                tokio::time::sleep(etcdmap::WATCH_RETRY).await;
            }
        }
    }
}

fn map_error(source: &EtcdSource, reason: String) -> StartError {
    StartError::Map(format!(
        "cluster map in etcd {} under {}: {reason}",
        source.endpoints.join(","),
        source.prefix
    ))
}
