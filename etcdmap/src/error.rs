//! The one error type of this crate: each variant says which prefix, endpoints or key it
//! concerns, so a log line or an operator's message is enough to act on.

use protocol::placement::{MapChangeError, PlacementError};

/// Why reading, publishing or changing the cluster map in etcd failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdMapError {
    /// No etcd endpoint answered (or one refused the client) within the timeout.
    #[error("cannot reach etcd at {}: {source}", endpoints.join(","))]
    Connect {
        endpoints: Vec<String>,
        #[source]
        source: etcd_client::Error,
    },
    /// A request to etcd failed after the client had connected.
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// Nothing was published under the prefix.
    #[error("no cluster map in etcd under {prefix:?} (publish one first)")]
    NoMap { prefix: String },
    /// `publish` found a map (or part of one) already stored under the prefix.
    #[error("a cluster map is already published in etcd under {prefix:?}")]
    AlreadyPublished { prefix: String },
    /// A stored value does not parse, or the stored keys contradict each other.
    #[error("bad cluster map entry {key:?} in etcd: {reason}")]
    BadEntry { key: String, reason: String },
    /// The nodes cannot place PGs.
    #[error("the cluster map cannot place PGs: {0}")]
    Placement(#[from] PlacementError),
    /// The change would move a PG.
    #[error("the cluster map may not change that way: {0}")]
    Change(#[from] MapChangeError),
    /// `add_node` of a node that is not a spare.
    #[error("node {0} is not a spare (a node added to a running cluster must be a spare)")]
    NotSpare(u32),
    /// An id, name or listen address used twice.
    #[error("duplicate in the cluster map: {0}")]
    Duplicate(String),
    /// `add_node` lost the race to other writers of the map on every attempt.
    #[error("the cluster map kept changing under add_node; try again")]
    Conflict,
    /// etcd answered without a response header (every etcd version sends one).
    #[error("etcd answered a {0} request without a response header")]
    NoHeader(&'static str),
    /// An ACL change for a volume nobody claimed.
    #[error(
        "volume {volume:#x} has no ACL (nobody claimed it: a writer opening it, or `borealis volume create`)"
    )]
    NoAcl { volume: u128 },
    /// The volume was deleted (`P deleted/VOLUME`): it is never claimed or used again.
    #[error("volume {volume:#x} was deleted")]
    Deleted { volume: u128 },
    /// The caller of an ACL change or a delete holds no `admin` on the volume in etcd.
    #[error("{identity} has no admin on volume {volume:#x}")]
    NotAdmin { volume: u128, identity: String },
    /// The change would leave the volume without an admin.
    #[error("the change would leave volume {volume:#x} without an admin")]
    LastAdmin { volume: u128 },
}
