//! Where the node's cluster map comes from: the static `peers` of its configuration, or etcd
//! (`[map] etcd = [...]`), read once at start and then followed (`etcdmap::watch`). Every map
//! goes through [`ClusterView::apply`], which refuses one that would move a PG.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use protocol::messages::{AclChange, ErrorCode, ErrorReply};
use protocol::{Message, PgRef, VolumeId};

use super::admin::NodeMetrics;
use super::cluster_view::{Applied, ClusterView, SharedView};
use super::shared::Shared;
use super::StartError;
use crate::config::{Config, EtcdSource};
use crate::core::access::Acls;

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
    view.set_acls(acls(&snapshot));
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
/// restart) are not dropped again.
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
/// for the watch. The node, not the client, writes the claim: clients only read etcd.
pub async fn claim(view: &SharedView, volume: VolumeId, identity: &str) -> Result<(), String> {
    let Some(mut etcd) = view.borrow().etcd() else {
        return Err("this node keeps no ACLs in etcd".to_owned());
    };
    let acl = etcd.claim_volume(volume.0, identity).await.map_err(|e| e.to_string())?;
    if acl.allows(identity, etcdmap::Role::Admin) {
        tracing::info!(volume = %format!("{:#x}", volume.0), %identity, "volume claimed for its first writer");
    }
    view.borrow_mut().note_acl(volume, acl);
    Ok(())
}

/// A volume admin's `AclChange`, authorized (`core::access`): the node changes the ACL in
/// etcd (a compare-and-set on its revision, as its etcd user) and takes the result into `view`
/// at once. Answers the request itself, or an error reply.
pub async fn change_acl(view: &SharedView, change: AclChange) -> Message {
    let pg = PgRef { volume_id: change.volume, pg_id: protocol::PgId(0) };
    let fail =
        |code, message: String| Message::Error(ErrorReply { code, pg, epochs: Default::default(), message });
    let role = match change.role {
        AclChange::ROLE_READ => etcdmap::Role::Read,
        AclChange::ROLE_WRITE => etcdmap::Role::Write,
        _ => etcdmap::Role::Admin,
    };
    let Some(mut etcd) = view.borrow().etcd() else {
        return fail(ErrorCode::BadRequest, "this node keeps no ACLs in etcd".to_owned());
    };
    let last_admin = |acl: &etcdmap::Acl| {
        let admins = acl.grants.iter().filter(|(_, roles)| roles.contains(&etcdmap::Role::Admin));
        admins.map(|(who, _)| who.as_str()).eq([change.identity.as_str()])
    };
    let orphans = |acls: Option<&crate::core::access::Acls>| {
        acls.and_then(|acls| acls.volumes.get(&change.volume)).is_some_and(last_admin)
    };
    if !change.grant && role == etcdmap::Role::Admin && orphans(view.borrow().acls()) {
        let message = format!("{} is volume {:#x}'s last admin", change.identity, change.volume.0);
        return fail(ErrorCode::BadRequest, message);
    }
    let identity = change.identity.clone();
    let changed = etcd
        .change_acl(change.volume.0, |acl| match change.grant {
            true => acl.grant(&identity, role),
            false => acl.revoke(&identity, role),
        })
        .await;
    match changed {
        Ok(acl) => {
            tracing::info!(volume = %format!("{:#x}", change.volume.0), identity = %change.identity, %role, grant = change.grant, "volume ACL changed");
            view.borrow_mut().note_acl(change.volume, acl);
            Message::AclChange(change)
        }
        Err(error) => fail(ErrorCode::Internal, format!("changing the ACL in etcd: {error}")),
    }
}

/// Takes `snapshot` into `view` if its map is whole and moves no PG; logs what happened. Its
/// ACLs are taken in any case.
pub fn apply(view: &SharedView, snapshot: &etcdmap::Snapshot, metrics: &NodeMetrics) {
    view.borrow_mut().set_acls(acls(snapshot));
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
