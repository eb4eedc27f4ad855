//! [`EtcdMap`]: reads, publishes and grows the cluster map stored under one prefix.
//!
//! Every read is one range request over the whole prefix, so the nodes and the generation come
//! from one revision. Every write is one transaction guarded by a compare, so two writers never
//! interleave: `publish` only into an empty prefix, `add_node` only if the generation key is
//! unchanged since the read its checks were made on (optimistic concurrency, retried a bounded
//! number of times).

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnResponse};
use protocol::placement::ClusterMap;

use crate::acl::{Acl, Role};
use crate::layout::{
    acl_key, acl_value, admins_key, check_clash, check_unique, deleted_key, generation_key, node_key,
    node_value, nodes_prefix, normalize_prefix, parse_entries, Entry, MapNode, Snapshot, Stored,
};
use crate::EtcdMapError;

/// How many times `add_node` reads, checks and tries its transaction before giving up with
/// `Conflict`. Each lost attempt means another writer changed the map in between; the map only
/// changes when an operator adds a host, so a few attempts are plenty.
pub const ADD_NODE_ATTEMPTS_MAX: u32 = 8;

/// A connection to etcd and the prefix the cluster map lives under.
#[derive(Clone)]
pub struct EtcdMap {
    pub(crate) client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMap").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl EtcdMap {
    /// Connects (connect timeout and per-request timeout = `timeout`). The prefix is normalized
    /// to end with '/'.
    ///
    /// etcd-client connects lazily, so this also makes one small request and reports a failure
    /// as `Connect`: an unreachable etcd is found here, not at the first real request.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdMap, EtcdMapError> {
        let options = ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout);
        EtcdMap::connect_with(endpoints, prefix, options).await
    }

    pub(crate) async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        options: ConnectOptions,
    ) -> Result<EtcdMap, EtcdMapError> {
        let connect_error = |source| EtcdMapError::Connect { endpoints: endpoints.to_vec(), source };
        let mut client = Client::connect(endpoints, Some(options)).await.map_err(connect_error)?;
        let prefix = normalize_prefix(prefix);
        let probe = GetOptions::new().with_count_only();
        client.get(generation_key(&prefix), Some(probe)).await.map_err(connect_error)?;
        Ok(EtcdMap { client, prefix })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The map as stored now. `EtcdMapError::NoMap` if nothing was published under the prefix.
    pub async fn load(&mut self) -> Result<Snapshot, EtcdMapError> {
        Ok(self.read().await?.snapshot)
    }

    /// Publishes a new cluster's map: every node, in one transaction, only if no map exists
    /// under the prefix (else `AlreadyPublished`). Checks first that the nodes form a
    /// `ClusterMap` and that ids, names and listen addresses are unique.
    ///
    /// etcd bounds the operations of one transaction (`--max-txn-ops`, 128 by default), so a
    /// map of more than 127 nodes needs that limit raised.
    pub async fn publish(&mut self, nodes: &[MapNode]) -> Result<Snapshot, EtcdMapError> {
        ClusterMap::new(nodes.iter().map(MapNode::info).collect())?;
        check_unique(nodes)?;
        let generation = 1;
        let mut puts = vec![TxnOp::put(generation_key(&self.prefix), generation.to_string(), None)];
        puts.extend(nodes.iter().map(|n| TxnOp::put(node_key(&self.prefix, n.id), node_value(n), None)));
        let txn = Txn::new()
            .when([
                Compare::create_revision(generation_key(&self.prefix), CompareOp::Equal, 0),
                Compare::create_revision(nodes_prefix(&self.prefix), CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then(puts);
        let response = self.client.txn(txn).await?;
        if !response.succeeded() {
            return Err(EtcdMapError::AlreadyPublished { prefix: self.prefix.clone() });
        }
        let mut nodes = nodes.to_vec();
        nodes.sort_by_key(|n| n.id);
        Ok(Snapshot {
            nodes,
            revision: txn_revision(&response)?,
            generation,
            acls: Default::default(),
            admins: Default::default(),
            deleted: Default::default(),
        })
    }

    /// Adds one node, which must be a spare (`NotSpare`), whose id, name and listen address are
    /// new (`Duplicate`), and whose map passes `current.check_change(&next)`.
    ///
    /// Optimistic concurrency: read, check, then a transaction that compares the generation
    /// key's mod_revision and writes the node and generation + 1. A lost race is retried from
    /// the read, up to [`ADD_NODE_ATTEMPTS_MAX`] attempts (then `Conflict`). Returns the new
    /// snapshot, at the revision of the write.
    pub async fn add_node(&mut self, node: MapNode) -> Result<Snapshot, EtcdMapError> {
        if !node.spare {
            return Err(EtcdMapError::NotSpare(node.id));
        }
        for _ in 0..ADD_NODE_ATTEMPTS_MAX {
            let stored = self.read().await?;
            let next = checked_addition(&self.prefix, &stored.snapshot, &node)?;
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(
                        generation_key(&self.prefix),
                        CompareOp::Equal,
                        stored.generation_mod_revision,
                    ),
                    Compare::create_revision(node_key(&self.prefix, node.id), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(node_key(&self.prefix, node.id), node_value(&node), None),
                    TxnOp::put(generation_key(&self.prefix), next.generation.to_string(), None),
                ]);
            let response = self.client.txn(txn).await?;
            if response.succeeded() {
                return Ok(Snapshot { revision: txn_revision(&response)?, ..next });
            }
            tracing::debug!(prefix = %self.prefix, id = node.id, "add_node lost a race; reading the map again");
        }
        Err(EtcdMapError::Conflict)
    }

    /// Claims `volume` for `identity` if nobody has: its ACL becomes `identity: admin` (what a
    /// writer opening a volume does first). Returns the volume's ACL, new or as it was, and the
    /// etcd revision it is known at. A deleted volume is never claimed again (`Deleted`).
    pub async fn claim_volume(&mut self, volume: u128, identity: &str) -> Result<(Acl, i64), EtcdMapError> {
        let key = acl_key(&self.prefix, volume);
        let tombstone = deleted_key(&self.prefix, volume);
        let owned = Acl::owned_by(identity);
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(tombstone.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key.as_str(), acl_value(&owned), None)]);
        let response = self.client.txn(txn).await?;
        if response.succeeded() {
            return Ok((owned, txn_revision(&response)?));
        }
        if self.is_deleted(volume).await? {
            return Err(EtcdMapError::Deleted { volume });
        }
        match self.acl(volume).await? {
            Some((acl, mod_revision)) => Ok((acl, mod_revision)),
            None => Err(EtcdMapError::Conflict),
        }
    }

    /// Deletes `volume` for good: writes its tombstone (`P deleted/VOLUME`, recording `by`),
    /// which every node follows by dropping the volume's segments and refusing every request
    /// naming it. Returns false if it was deleted already. Its ACL stays, as a record of who
    /// had it.
    pub async fn delete_volume(&mut self, volume: u128, by: &str) -> Result<bool, EtcdMapError> {
        let tombstone = deleted_key(&self.prefix, volume);
        let value = serde_json::json!({ "by": by }).to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(tombstone.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(tombstone.as_str(), value, None)]);
        Ok(self.client.txn(txn).await?.succeeded())
    }

    /// Changes `volume`'s ACL for `caller` (a node acting for a client, `AclChange`): checked
    /// against the ACL as etcd holds it in the same compare-and-set, not a cached copy: `caller`
    /// must hold `admin` there (`NotAdmin`), the change must leave an admin (`LastAdmin`), and
    /// the volume must not be deleted (`Deleted`). Returns the ACL written and the revision.
    pub async fn change_acl_as(
        &mut self,
        volume: u128,
        caller: &str,
        change: impl Fn(&mut Acl),
    ) -> Result<(Acl, i64), EtcdMapError> {
        let key = acl_key(&self.prefix, volume);
        let tombstone = deleted_key(&self.prefix, volume);
        for _ in 0..ADD_NODE_ATTEMPTS_MAX {
            let Some((mut acl, mod_revision)) = self.read_acl(&key).await? else {
                if self.is_deleted(volume).await? {
                    return Err(EtcdMapError::Deleted { volume });
                }
                return Err(EtcdMapError::NoAcl { volume });
            };
            if !acl.allows(caller, Role::Admin) {
                return Err(EtcdMapError::NotAdmin { volume, identity: caller.to_owned() });
            }
            change(&mut acl);
            if !acl.grants.values().any(|roles| roles.contains(&Role::Admin)) {
                return Err(EtcdMapError::LastAdmin { volume });
            }
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision),
                    Compare::create_revision(tombstone.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put(key.as_str(), acl_value(&acl), None)]);
            let response = self.client.txn(txn).await?;
            if response.succeeded() {
                return Ok((acl, txn_revision(&response)?));
            }
            if self.is_deleted(volume).await? {
                return Err(EtcdMapError::Deleted { volume });
            }
        }
        Err(EtcdMapError::Conflict)
    }

    /// Deletes `volume` for `caller` (a node acting for a client, `DeleteVolume`): only if the
    /// ACL etcd holds gives `caller` `admin`, checked in the same transaction. Returns false
    /// if it was deleted already.
    pub async fn delete_volume_as(&mut self, volume: u128, caller: &str) -> Result<bool, EtcdMapError> {
        let key = acl_key(&self.prefix, volume);
        let tombstone = deleted_key(&self.prefix, volume);
        for _ in 0..ADD_NODE_ATTEMPTS_MAX {
            if self.is_deleted(volume).await? {
                return Ok(false);
            }
            let Some((acl, mod_revision)) = self.read_acl(&key).await? else {
                return Err(EtcdMapError::NoAcl { volume });
            };
            if !acl.allows(caller, Role::Admin) {
                return Err(EtcdMapError::NotAdmin { volume, identity: caller.to_owned() });
            }
            let value = serde_json::json!({ "by": caller }).to_string();
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision),
                    Compare::create_revision(tombstone.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put(tombstone.as_str(), value, None)]);
            if self.client.txn(txn).await?.succeeded() {
                return Ok(true);
            }
        }
        Err(EtcdMapError::Conflict)
    }

    /// Whether `volume` was deleted.
    pub async fn is_deleted(&mut self, volume: u128) -> Result<bool, EtcdMapError> {
        let key = deleted_key(&self.prefix, volume);
        let response = self.client.get(key, Some(GetOptions::new().with_count_only())).await?;
        Ok(response.count() > 0)
    }

    /// The ACL of `volume` and its key's mod_revision, if it was claimed.
    pub async fn acl(&mut self, volume: u128) -> Result<Option<(Acl, i64)>, EtcdMapError> {
        self.read_acl(&acl_key(&self.prefix, volume)).await
    }

    /// Changes the ACL of a claimed volume (`NoAcl` if none is stored) with `change`. Returns
    /// the ACL written.
    pub async fn change_acl(&mut self, volume: u128, change: impl Fn(&mut Acl)) -> Result<Acl, EtcdMapError> {
        self.compare_and_set(&acl_key(&self.prefix, volume), || Err(EtcdMapError::NoAcl { volume }), change)
            .await
    }

    /// Changes the cluster administrators' ACL with `change` (from an empty one if none is
    /// stored). Returns the ACL written.
    pub async fn change_admins(&mut self, change: impl Fn(&mut Acl)) -> Result<Acl, EtcdMapError> {
        self.compare_and_set(&admins_key(&self.prefix), || Ok(Acl::default()), change).await
    }

    /// The ACL stored at `key` and the key's mod_revision, if there is one.
    async fn read_acl(&mut self, key: &str) -> Result<Option<(Acl, i64)>, EtcdMapError> {
        let response = self.client.get(key, None).await?;
        let Some(kv) = response.kvs().first() else { return Ok(None) };
        let acl = serde_json::from_slice(kv.value())
            .map_err(|e| EtcdMapError::BadEntry { key: key.to_owned(), reason: e.to_string() })?;
        Ok(Some((acl, kv.mod_revision())))
    }

    /// Reads the ACL at `key` (`absent` if there is none), applies `change`, and writes it in a
    /// transaction that compares the key's mod_revision with the one read (0: still absent);
    /// a lost race is retried from the read, as `add_node`.
    async fn compare_and_set(
        &mut self,
        key: &str,
        absent: impl Fn() -> Result<Acl, EtcdMapError>,
        change: impl Fn(&mut Acl),
    ) -> Result<Acl, EtcdMapError> {
        for _ in 0..ADD_NODE_ATTEMPTS_MAX {
            let (mut acl, mod_revision) = match self.read_acl(key).await? {
                Some(found) => found,
                None => (absent()?, 0),
            };
            change(&mut acl);
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
                .and_then([TxnOp::put(key, acl_value(&acl), None)]);
            if self.client.txn(txn).await?.succeeded() {
                return Ok(acl);
            }
        }
        Err(EtcdMapError::Conflict)
    }

    /// Everything under the prefix, in one range request.
    async fn read(&mut self) -> Result<Stored, EtcdMapError> {
        let response = self.client.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        let revision = response.header().ok_or(EtcdMapError::NoHeader("range"))?.revision();
        let entries = response.kvs().iter().map(|kv| Entry {
            key: kv.key(),
            value: kv.value(),
            mod_revision: kv.mod_revision(),
        });
        parse_entries(&self.prefix, entries, revision)
    }
}

/// The map `current` becomes with `node` added (revision left as `current`'s), if every rule
/// allows it.
fn checked_addition(prefix: &str, current: &Snapshot, node: &MapNode) -> Result<Snapshot, EtcdMapError> {
    for existing in &current.nodes {
        check_clash(existing, node)?;
    }
    let mut nodes = current.nodes.clone();
    nodes.push(node.clone());
    nodes.sort_by_key(|n| n.id);
    let generation = current.generation.checked_add(1).ok_or_else(|| EtcdMapError::BadEntry {
        key: generation_key(prefix),
        reason: "the generation is at its maximum".to_owned(),
    })?;
    let next = Snapshot { nodes, generation, ..current.clone() };
    current.cluster_map()?.check_change(&next.cluster_map()?)?;
    Ok(next)
}

fn txn_revision(response: &TxnResponse) -> Result<i64, EtcdMapError> {
    Ok(response.header().ok_or(EtcdMapError::NoHeader("txn"))?.revision())
}
