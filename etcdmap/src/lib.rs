//! The Borealis cluster map kept in etcd: its key layout, reading, writing and watching it.
//!
//! The cluster map says which nodes exist, in which availability zone, at which address, and
//! whether each is a spare. Every client and node computes PG placement from it
//! (`protocol::placement`), so every one of them must see the same map, and a change must never
//! move a PG. etcd gives the first (one linearizable store, read at one revision); the rules of
//! the map give the second.
//!
//! # Layout
//!
//! Under a prefix `P` ([`DEFAULT_PREFIX`] is `/borealis/`):
//!
//! - `P generation`: decimal `u64`, 1 after [`EtcdMap::publish`], +1 per [`EtcdMap::add_node`];
//! - `P nodes/<id zero-padded to 10 digits>`: one [`MapNode`] as JSON, so
//!   `etcdctl get --prefix /borealis/` is readable by an operator;
//! - `P acl/<volume id, 32 hex digits>`: the volume's [`Acl`] as JSON (`acl`);
//! - `P admins`: the cluster administrators, an [`Acl`] whose `admin` grants count;
//! - `P deleted/<volume id, 32 hex digits>`: a deleted volume's tombstone (JSON naming who
//!   deleted it, [`EtcdMap::delete_volume`]): never claimed or used again.
//!
//! A read is one range request over `P`, so nodes and generation always come from one revision.
//! A write is one transaction guarded by a compare: publish only into an empty prefix, add a node
//! only if the generation key has not changed since the read its checks were made on.
//!
//! # Why so little is stored
//!
//! The map only grows, and only by spares. Placement never counts spares, so adding one moves no
//! PG of any volume; a node is never removed, moved to another zone or turned from spare to
//! placed (`ClusterMap::check_change`). So the map needs no versioned history and no migration
//! protocol: the latest map is always a superset of every earlier one, and the generation is
//! only a cheap "has anything changed" number and the compare target of writers.
//!
//! Which nodes currently hold each PG (after a spare replaced a failed member) is **not** here:
//! PG membership lives on the segments themselves, changed through their own quorum protocol
//! (`docs/membership.md`). etcd holds only what placement is computed from, which changes
//! rarely (an operator adds a host) and never in a way that invalidates an older copy.

pub mod acl;
mod client;
mod error;
mod layout;
pub mod local;
mod source;
mod watch;

pub use acl::{client_identity, Acl, Role};
pub use client::{EtcdMap, ADD_NODE_ATTEMPTS_MAX};
pub use error::EtcdMapError;
pub use layout::{MapNode, Snapshot};
pub use local::{LocalEtcd, ServerTls};
pub use source::{EtcdSource, EtcdTls, EtcdUser, CLIENT_ROLE, NODE_ROLE};
pub use watch::{watch, watch_with_state, WatchState, WATCH_KEEPALIVE, WATCH_RETRY};

/// The prefix the cluster map lives under unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/borealis/";
