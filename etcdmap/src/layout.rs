//! The key layout under a prefix and the pure parts around it: key names, the stored node
//! record, and turning one range read of the prefix into a [`Snapshot`].
//!
//! Under a prefix `P` (ending with `/`):
//!
//! | key                  | value                                        |
//! |----------------------|----------------------------------------------|
//! | `P generation`       | decimal `u64`: 1 after publish, +1 per added node |
//! | `P nodes/<id:010>`   | the [`MapNode`] as JSON                      |
//!
//! Ids are zero-padded to 10 digits (every `u32` fits) so etcd's key order is id order. Other
//! keys under `P` are ignored: they are left for later use. Nothing here does I/O, so every way a
//! stored value can be wrong is tested without etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use protocol::placement::{ClusterMap, NodeInfo, PlacementError};
use protocol::{AzId, NodeId};

use serde::{Deserialize, Serialize};

use crate::acl::Acl;
use crate::EtcdMapError;

/// The key suffix (after the prefix) of the generation counter.
pub(crate) const GENERATION_KEY: &str = "generation";
/// The key suffix (after the prefix) every node key starts with.
pub(crate) const NODES_DIR: &str = "nodes/";
/// Digits of a node id in its key: `u32::MAX` has 10.
const NODE_ID_DIGITS: usize = 10;

/// One node as stored in etcd (`P nodes/<id>`), JSON so `etcdctl get --prefix` is readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapNode {
    pub id: u32,
    pub az: u16,
    /// TLS server name (the first DNS name of the node's certificate).
    pub name: String,
    /// QUIC address.
    pub listen: SocketAddr,
    /// Admin (HTTP) address, when the node serves one.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Holds no PG by placement; joins PGs only by replacing a member.
    #[serde(default)]
    pub spare: bool,
}

impl MapNode {
    /// The node as placement sees it.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: NodeId(self.id),
            az: AzId(self.az),
            addr: self.listen,
            name: self.name.clone(),
            spare: self.spare,
        }
    }
}

impl From<&NodeInfo> for MapNode {
    /// A node as placement sees it (no admin address).
    fn from(info: &NodeInfo) -> MapNode {
        MapNode {
            id: info.id.0,
            az: info.az.0,
            name: info.name.clone(),
            listen: info.addr,
            admin: None,
            spare: info.spare,
        }
    }
}

/// The cluster map as read at one etcd revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every node, sorted by id.
    pub nodes: Vec<MapNode>,
    /// The etcd revision the map was read at (or written at, for a snapshot a write returned).
    pub revision: i64,
    /// 1 after publish, +1 for every node added since.
    pub generation: u64,
    /// Each claimed volume's ACL, by volume id (`crate::acl`).
    pub acls: BTreeMap<u128, Acl>,
    /// The cluster's administrators: identities with `admin` here may ask nodes to change state
    /// (`ReplaceNodeAsk`).
    pub admins: Acl,
    /// Deleted volumes (`P deleted/VOLUME`): every node drops their segments and refuses every
    /// request naming them, for good.
    pub deleted: BTreeSet<u128>,
}

impl Snapshot {
    /// The nodes as a placement map (checks the map can place PGs).
    pub fn cluster_map(&self) -> Result<ClusterMap, PlacementError> {
        ClusterMap::new(self.nodes.iter().map(MapNode::info).collect())
    }
}

/// `prefix` with a trailing `/` added when it has none.
pub(crate) fn normalize_prefix(prefix: &str) -> String {
    let mut normalized = prefix.to_owned();
    if !normalized.ends_with('/') {
        normalized.push('/');
    }
    normalized
}

pub(crate) fn generation_key(prefix: &str) -> String {
    format!("{prefix}{GENERATION_KEY}")
}

pub(crate) fn nodes_prefix(prefix: &str) -> String {
    format!("{prefix}{NODES_DIR}")
}

/// The key suffix every volume ACL key starts with.
pub(crate) const ACL_DIR: &str = "acl/";

/// Where deleted volumes' tombstones live: `P deleted/<volume as 32 hex digits>`.
pub(crate) const DELETED_DIR: &str = "deleted/";

pub(crate) fn deleted_key(prefix: &str, volume: u128) -> String {
    format!("{prefix}{DELETED_DIR}{volume:032x}")
}

/// The key of the cluster administrators' ACL.
pub(crate) const ADMINS_KEY: &str = "admins";

pub(crate) fn admins_key(prefix: &str) -> String {
    format!("{prefix}{ADMINS_KEY}")
}

/// `P acl/<volume as 32 hex digits>`.
pub(crate) fn acl_key(prefix: &str, volume: u128) -> String {
    format!("{prefix}{ACL_DIR}{volume:032x}")
}

pub(crate) fn acl_value(acl: &Acl) -> String {
    serde_json::to_string(acl).expect("an Acl always serializes to JSON")
}

pub(crate) fn node_key(prefix: &str, id: u32) -> String {
    format!("{prefix}{NODES_DIR}{id:0width$}", width = NODE_ID_DIGITS)
}

/// The stored form of a node. Serializing a struct of strings, integers and addresses to JSON
/// cannot fail, so a failure is a broken invariant.
pub(crate) fn node_value(node: &MapNode) -> String {
    serde_json::to_string(node).expect("a MapNode always serializes to JSON")
}

/// What one range read of the prefix holds, beyond the [`Snapshot`]: the generation key's
/// `mod_revision`, which an optimistic writer compares in its transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub snapshot: Snapshot,
    pub generation_mod_revision: i64,
}

/// One key-value pair of a range read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub mod_revision: i64,
}

/// Parses every entry of one range read of `prefix` taken at `revision`.
///
/// `NoMap` when neither the generation nor any node is stored; `BadEntry` for a value that does
/// not parse, a node key whose id is not its record's, or nodes stored without a generation.
pub(crate) fn parse_entries<'a>(
    prefix: &str,
    entries: impl IntoIterator<Item = Entry<'a>>,
    revision: i64,
) -> Result<Stored, EtcdMapError> {
    let mut generation = None;
    let mut nodes = Vec::new();
    let mut acls = BTreeMap::new();
    let mut admins = Acl::default();
    let mut deleted = BTreeSet::new();
    for entry in entries {
        let Some(suffix) = entry.key.strip_prefix(prefix.as_bytes()) else { continue };
        if suffix == GENERATION_KEY.as_bytes() {
            generation = Some((parse_generation(&entry)?, entry.mod_revision));
        } else if let Some(id) = suffix.strip_prefix(NODES_DIR.as_bytes()) {
            nodes.push(parse_node(&entry, id)?);
        } else if suffix == ADMINS_KEY.as_bytes() {
            admins = serde_json::from_slice(entry.value).map_err(|e| bad_entry(entry.key, e.to_string()))?;
        } else if let Some(volume) = suffix.strip_prefix(DELETED_DIR.as_bytes()) {
            // A tombstone is one whatever its value says (it only records who deleted it).
            match volume_of(volume) {
                Some(volume) => {
                    deleted.insert(volume);
                }
                None => {
                    tracing::warn!(key = %String::from_utf8_lossy(entry.key), "ignored a key under deleted/ that names no volume")
                }
            }
        } else if let Some(volume) = suffix.strip_prefix(ACL_DIR.as_bytes()) {
            // One bad ACL must not stop the map (and every other ACL) from being followed: a
            // value that does not parse denies everyone (fails closed), a key that names no
            // volume is ignored.
            match parse_acl(&entry, volume) {
                Ok((volume, acl)) => {
                    acls.insert(volume, acl);
                }
                Err((Some(volume), error)) => {
                    tracing::warn!(%error, "unreadable volume ACL: nobody may use the volume until it is fixed");
                    acls.insert(volume, Acl::default());
                }
                Err((None, error)) => tracing::warn!(%error, "ignored a key under acl/ that names no volume"),
            }
        }
    }
    let Some((generation, generation_mod_revision)) = generation else {
        if nodes.is_empty() {
            return Err(EtcdMapError::NoMap { prefix: prefix.to_owned() });
        }
        return Err(bad_entry(
            generation_key(prefix).as_bytes(),
            format!("missing while {} nodes are stored", nodes.len()),
        ));
    };
    nodes.sort_by_key(|n| n.id);
    let snapshot = Snapshot { nodes, revision, generation, acls, admins, deleted };
    Ok(Stored { snapshot, generation_mod_revision })
}

/// The volume a key's last part names (32 hex digits).
fn volume_of(volume_hex: &[u8]) -> Option<u128> {
    std::str::from_utf8(volume_hex)
        .ok()
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| u128::from_str_radix(hex, 16).ok())
}

fn parse_acl(entry: &Entry<'_>, volume_hex: &[u8]) -> Result<(u128, Acl), (Option<u128>, EtcdMapError)> {
    let volume = volume_of(volume_hex).ok_or_else(|| {
        (None, bad_entry(entry.key, "the key does not end in a volume id of 32 hex digits".into()))
    })?;
    let acl = serde_json::from_slice(entry.value)
        .map_err(|e| (Some(volume), bad_entry(entry.key, e.to_string())))?;
    Ok((volume, acl))
}

fn parse_generation(entry: &Entry<'_>) -> Result<u64, EtcdMapError> {
    let text = std::str::from_utf8(entry.value).map_err(|e| bad_entry(entry.key, e.to_string()))?;
    match text.parse::<u64>() {
        Ok(0) => Err(bad_entry(entry.key, "generation 0 (a published map starts at 1)".into())),
        Ok(generation) => Ok(generation),
        Err(e) => Err(bad_entry(entry.key, format!("{text:?} is not a decimal u64: {e}"))),
    }
}

fn parse_node(entry: &Entry<'_>, id_digits: &[u8]) -> Result<MapNode, EtcdMapError> {
    let node: MapNode =
        serde_json::from_slice(entry.value).map_err(|e| bad_entry(entry.key, e.to_string()))?;
    let id_in_key = std::str::from_utf8(id_digits).ok().and_then(|d| d.parse::<u32>().ok());
    if id_in_key != Some(node.id) {
        return Err(bad_entry(entry.key, format!("the key does not name the record's id {}", node.id)));
    }
    Ok(node)
}

fn bad_entry(key: &[u8], reason: String) -> EtcdMapError {
    EtcdMapError::BadEntry { key: String::from_utf8_lossy(key).into_owned(), reason }
}

/// Checks that no two nodes share an id, a name or a listen address.
pub(crate) fn check_unique(nodes: &[MapNode]) -> Result<(), EtcdMapError> {
    for (i, node) in nodes.iter().enumerate() {
        for earlier in &nodes[..i] {
            check_clash(earlier, node)?;
        }
    }
    Ok(())
}

/// Why `new` cannot join a map holding `existing`: same id, name or listen address.
pub(crate) fn check_clash(existing: &MapNode, new: &MapNode) -> Result<(), EtcdMapError> {
    if existing.id == new.id {
        return Err(EtcdMapError::Duplicate(format!("node id {} is already in the map", new.id)));
    }
    if existing.name == new.name {
        return Err(EtcdMapError::Duplicate(format!(
            "name {:?} of node {} is already used by node {}",
            new.name, new.id, existing.id
        )));
    }
    if existing.listen == new.listen {
        return Err(EtcdMapError::Duplicate(format!(
            "listen address {} of node {} is already used by node {}",
            new.listen, new.id, existing.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "/borealis/";

    fn node(id: u32) -> MapNode {
        MapNode {
            id,
            az: ((id - 1) / 2) as u16,
            name: format!("node-{id}"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
            admin: None,
            spare: false,
        }
    }

    fn entry<'a>(key: &'a str, value: &'a str) -> Entry<'a> {
        Entry { key: key.as_bytes(), value: value.as_bytes(), mod_revision: 5 }
    }

    #[test]
    fn a_node_survives_a_json_round_trip() {
        let mut n = node(3);
        n.admin = Some(SocketAddr::from(([127, 0, 0, 1], 9003)));
        n.spare = true;
        let back: MapNode = serde_json::from_str(&node_value(&n)).expect("parses");
        assert_eq!(back, n);
    }

    #[test]
    fn admin_and_spare_default_when_absent() {
        let json = r#"{"id":1,"az":0,"name":"node-1","listen":"127.0.0.1:7001"}"#;
        let parsed: MapNode = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed, node(1));
    }

    #[test]
    fn node_keys_are_zero_padded_so_key_order_is_id_order() {
        assert_eq!(node_key(PREFIX, 7), "/borealis/nodes/0000000007");
        assert_eq!(node_key(PREFIX, u32::MAX), "/borealis/nodes/4294967295");
        assert!(node_key(PREFIX, 9) < node_key(PREFIX, 10));
        assert_eq!(normalize_prefix("/x"), "/x/");
        assert_eq!(normalize_prefix("/x/"), "/x/");
    }

    #[test]
    fn entries_parse_into_a_snapshot_sorted_by_id() {
        let (k2, k1, g) = (node_key(PREFIX, 2), node_key(PREFIX, 1), generation_key(PREFIX));
        let (v2, v1) = (node_value(&node(2)), node_value(&node(1)));
        let stored = parse_entries(
            PREFIX,
            [entry(&k2, &v2), entry(&g, "4"), entry(&k1, &v1), entry("/borealis/x", "?")],
            9,
        )
        .expect("parses");
        assert_eq!(
            stored.snapshot,
            Snapshot {
                nodes: vec![node(1), node(2)],
                revision: 9,
                generation: 4,
                acls: BTreeMap::new(),
                admins: Acl::default(),
                deleted: BTreeSet::new(),
            }
        );
        assert_eq!(stored.generation_mod_revision, 5);
    }

    #[test]
    fn a_bad_acl_denies_its_volume_and_leaves_the_rest_of_the_map_readable() {
        let (g, good, bad) = (generation_key(PREFIX), acl_key(PREFIX, 7), acl_key(PREFIX, 8));
        let admins = admins_key(PREFIX);
        let owned = acl_value(&Acl::owned_by("borealis://client/a"));
        let entries = [
            entry(&g, "1"),
            entry(&good, &owned),
            entry(&bad, r#"{"grants":{},"owner":"x"}"#),
            entry("/borealis/acl/not-a-volume", "{}"),
            entry(&admins, &owned),
        ];
        let stored = parse_entries(PREFIX, entries, 4).expect("one bad ACL does not break the map");
        assert!(stored.snapshot.acls[&7].allows("borealis://client/a", crate::Role::Write));
        assert_eq!(stored.snapshot.acls[&8], Acl::default(), "an unreadable ACL denies everyone");
        assert_eq!(stored.snapshot.acls.len(), 2);
        assert!(stored.snapshot.admins.allows("borealis://client/a", crate::Role::Admin));
    }

    #[test]
    fn an_empty_prefix_is_no_map() {
        let result = parse_entries(PREFIX, [entry("/borealis/other", "x")], 3);
        assert!(matches!(result, Err(EtcdMapError::NoMap { prefix }) if prefix == PREFIX));
    }

    #[test]
    fn a_value_that_does_not_parse_is_a_bad_entry_naming_its_key() {
        let (k1, g, v1) = (node_key(PREFIX, 1), generation_key(PREFIX), node_value(&node(1)));
        let cases = [
            (entry(&g, "1"), entry(&k1, r#"{"id":1}"#), k1.clone()),
            (entry(&g, "1"), entry(&k1, r#"{"id":1,"az":0,"name":"a","listen":"x:1"}"#), k1.clone()),
            (entry(&g, "one"), entry(&k1, &v1), g.clone()),
            (entry(&g, "0"), entry(&k1, &v1), g.clone()),
        ];
        for (generation, node_entry, bad_key) in cases {
            match parse_entries(PREFIX, [generation, node_entry], 1) {
                Err(EtcdMapError::BadEntry { key, reason }) => {
                    assert_eq!(key, bad_key);
                    let message =
                        EtcdMapError::BadEntry { key: key.clone(), reason: reason.clone() }.to_string();
                    assert!(message.contains(&bad_key), "{message}");
                }
                other => panic!("expected BadEntry for {bad_key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_a_wrong_id_and_a_missing_generation_are_bad_entries() {
        let k1 = node_key(PREFIX, 1);
        let extra = r#"{"id":1,"az":0,"name":"n","listen":"127.0.0.1:1","zone":"x"}"#;
        let wrong_id = node_value(&node(2));
        let g = generation_key(PREFIX);
        for (entries, bad_key) in [
            (vec![entry(&g, "1"), entry(&k1, extra)], &k1),
            (vec![entry(&g, "1"), entry(&k1, &wrong_id)], &k1),
            (vec![entry(&k1, &node_value(&node(1)))], &g),
        ] {
            match parse_entries(PREFIX, entries, 1) {
                Err(EtcdMapError::BadEntry { key, .. }) => assert_eq!(&key, bad_key),
                other => panic!("expected BadEntry for {bad_key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn names_and_listen_addresses_must_be_unique() {
        assert!(check_unique(&[node(1), node(2)]).is_ok());
        let mut same_name = node(2);
        same_name.name = "node-1".into();
        let mut same_listen = node(2);
        same_listen.listen = node(1).listen;
        for clash in [same_name, same_listen] {
            assert!(matches!(check_unique(&[node(1), clash]), Err(EtcdMapError::Duplicate(_))));
        }
    }
}
