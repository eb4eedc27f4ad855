//! Who may ask what (issue 18's identities and ACLs): the decision for one request, from the
//! caller a connection's certificate names and the volumes' ACLs the node follows (etcd's map,
//! `server::cluster_view`). Pure: the stream driver asks before it hands a request on.
//!
//! - Gossip and hydration (`GossipSummary`, `GossipFetch`, `HydrateFetch`) come only from a node
//!   of the cluster map, a summary only from the node it names.
//! - A request naming a volume needs a role on it: writing the log (`AppendBatch`, `EpochBump`,
//!   `Truncate`, `MembershipChange`) needs `write`; reading (`ReadRecords`, `ReadRecordHeaders`,
//!   `ReadPage`, `ReadPageAsOf`, `FloorReport`, which holds versions readable) needs `read`.
//!   Nodes may read (scrub's repair reads pages of their peers).
//! - A volume nobody claimed has no ACL and is open to every certificate the CA signed (a
//!   writer claims a volume as it opens it); so is every volume of a cluster whose map is a
//!   static file (no ACLs at all: `acls` is `None`).
//! - `ReplaceNodeAsk` (an operator's request that changes the cluster) needs a client
//!   certificate, and where ACLs are kept, one the cluster's administrators' ACL gives `admin`.
//! - `StatusRequest` names no volume: any caller.

use std::collections::HashMap;

use etcdmap::{Acl, Role};
use protocol::messages::{ErrorCode, ErrorReply};
use protocol::{Epochs, Message, NodeId, PgRef, VolumeId};

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A node of the cluster map (by its certificate's name).
    Node(NodeId),
    /// Anyone else, by the identity its certificate carries (`transport::identity`).
    Client(String),
}

/// The ACLs a node enforces (from the cluster map in etcd).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acls {
    pub volumes: HashMap<VolumeId, Acl>,
    /// The cluster's administrators.
    pub admins: Acl,
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    /// A node; `Some(id)`: that very node.
    Node(Option<NodeId>, PgRef),
    Volume(PgRef, Role),
    /// A cluster administrator.
    Admin,
}

fn need(message: &Message) -> Need {
    use Message as M;
    match message {
        M::AppendBatch(m) => Need::Volume(m.pg, Role::Write),
        M::EpochBump(m) => Need::Volume(m.pg, Role::Write),
        M::Truncate(m) => Need::Volume(m.pg, Role::Write),
        M::MembershipChange(m) => Need::Volume(m.pg, Role::Write),
        M::ReadRecords(m) => Need::Volume(m.pg, Role::Read),
        M::ReadRecordHeaders(m) => Need::Volume(m.pg, Role::Read),
        M::ReadPage(m) => Need::Volume(m.pg, Role::Read),
        M::ReadPageAsOf(m) => Need::Volume(m.pg, Role::Read),
        M::FloorReport(m) => Need::Volume(m.pg, Role::Read),
        M::GossipSummary(m) => Need::Node(Some(m.node), m.pg),
        M::GossipFetch(m) => Need::Node(None, m.pg),
        M::HydrateFetch(m) => Need::Node(None, m.pg),
        M::ReplaceNodeAsk(_) => Need::Admin,
        _ => Need::Nothing,
    }
}

/// Whether `caller` may send `message`, given the ACLs (`None`: none are kept). A refusal is
/// the `Unauthorized` reply to send.
pub fn authorize(caller: &Caller, message: &Message, acls: Option<&Acls>) -> Result<(), ErrorReply> {
    let refuse = |pg: PgRef, why: String| ErrorReply {
        code: ErrorCode::Unauthorized,
        pg,
        epochs: Epochs::default(),
        message: why,
    };
    match (need(message), caller) {
        (Need::Nothing, _) => Ok(()),
        (Need::Node(None, _), Caller::Node(_)) => Ok(()),
        (Need::Node(Some(named), _), Caller::Node(id)) if named == *id => Ok(()),
        (Need::Node(_, pg), caller) => Err(refuse(
            pg,
            format!("only the cluster's nodes gossip and hydrate, each as itself ({caller:?} may not)"),
        )),
        (Need::Admin, Caller::Node(id)) => {
            Err(refuse(no_pg(), format!("node {id} may not ask for cluster changes")))
        }
        (Need::Admin, Caller::Client(identity)) => match acls {
            Some(acls) if !acls.admins.allows(identity, Role::Admin) => {
                Err(refuse(no_pg(), format!("{identity} is not a cluster administrator")))
            }
            _ => Ok(()),
        },
        (Need::Volume(_, Role::Read), Caller::Node(_)) => Ok(()),
        (Need::Volume(pg, role), caller) => {
            let Some(acl) = acls.and_then(|acls| acls.volumes.get(&pg.volume_id)) else { return Ok(()) };
            let identity = match caller {
                Caller::Client(identity) => identity.as_str(),
                Caller::Node(_) => "a storage node",
            };
            if acl.allows(identity, role) {
                Ok(())
            } else {
                Err(refuse(pg, format!("{identity} has no {role} on volume {:#x}", pg.volume_id.0)))
            }
        }
    }
}

/// The `pg` of a refusal that names none.
fn no_pg() -> PgRef {
    PgRef { volume_id: VolumeId(0), pg_id: protocol::PgId(0) }
}

#[cfg(test)]
mod tests {
    use protocol::messages::{FloorReport, HydrateFetch};
    use protocol::{Lsn, PgId};

    use super::*;

    fn pg(volume: u128) -> PgRef {
        PgRef { volume_id: VolumeId(volume), pg_id: PgId(0) }
    }

    #[test]
    fn a_volume_s_acl_decides_reads_and_writes_and_only_nodes_hydrate() {
        let alice = Caller::Client("borealis://client/alice".into());
        let bob = Caller::Client("borealis://client/bob".into());
        let mut acl = Acl::owned_by("borealis://client/alice");
        acl.grant("borealis://client/bob", Role::Read);
        let acls = Acls {
            volumes: HashMap::from([(VolumeId(7), acl)]),
            admins: Acl::owned_by("borealis://client/ops"),
        };
        let read = Message::FloorReport(FloorReport { pg: pg(7), client: 1, floor: Lsn(0), lease_ms: 1 });
        let write =
            Message::EpochBump(protocol::messages::EpochBump { pg: pg(7), epochs: Epochs::default() });
        assert_eq!(authorize(&alice, &write, Some(&acls)), Ok(()));
        assert_eq!(authorize(&bob, &read, Some(&acls)), Ok(()));
        let refused = authorize(&bob, &write, Some(&acls)).unwrap_err();
        assert_eq!((refused.code, refused.pg.volume_id), (ErrorCode::Unauthorized, VolumeId(7)));
        assert!(refused.message.contains("borealis://client/bob has no write"), "{}", refused.message);
        assert_eq!(authorize(&bob, &write, None), Ok(()), "no ACLs kept: the CA decides alone");
        let unclaimed =
            Message::FloorReport(FloorReport { pg: pg(8), client: 1, floor: Lsn(0), lease_ms: 1 });
        assert_eq!(authorize(&bob, &unclaimed, Some(&acls)), Ok(()));
        let hydrate = Message::HydrateFetch(HydrateFetch {
            pg: pg(7),
            epochs: Epochs::default(),
            read_lsn: Lsn(0),
            from_page: protocol::PageId(0),
            bytes_max: 1,
        });
        assert_eq!(authorize(&alice, &hydrate, Some(&acls)).unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(authorize(&alice, &hydrate, None).unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(authorize(&Caller::Node(NodeId(2)), &hydrate, Some(&acls)), Ok(()));
        assert_eq!(
            authorize(&Caller::Node(NodeId(2)), &write, Some(&acls)).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }
}
