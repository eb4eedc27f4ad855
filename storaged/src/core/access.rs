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
//! - A volume nobody claimed has no ACL. The first client to ask to write it claims it: the
//!   decision is [`Verdict::Claim`], and the node (not the client, which only reads etcd)
//!   creates the ACL `identity: admin` in etcd if it is still absent, then decides again with
//!   whatever ACL etcd holds. Until then its reads are open (there is nothing to read: nothing
//!   was written without a claim). A node never writes a volume's log.
//! - A cluster whose map is a static file keeps no ACLs (`acls` is `None`): every certificate
//!   the CA signed may use every volume.
//! - `ReplaceNodeAsk` (an operator's request that changes the cluster) needs a client
//!   certificate, and where ACLs are kept, one the cluster's administrators' ACL gives `admin`.
//! - `AclChange` (grant or revoke a role on a volume) and `DeleteVolume` need `admin` on the
//!   claimed volume; the node then writes etcd itself (`server::map_source::change_acl`,
//!   `delete_volume`).
//! - `StatusRequest` names no volume: any caller.
//! - A deleted volume (a tombstone in etcd): every request naming it is refused
//!   `VolumeDeleted`, as the core refuses it once it dropped the volume's segments (before
//!   that, too: the node drops it moments after it sees the tombstone).

use std::collections::{HashMap, HashSet};

use etcdmap::{Acl, Role};

use super::VOLUME_DELETED;
use protocol::messages::{ErrorCode, ErrorReply};
use protocol::{Epochs, Message, NodeId, PgRef, VolumeId};

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A node of the cluster map (by its certificate's name).
    Node(NodeId),
    /// Anyone else, by the identity its certificate carries (`transport::identity`).
    Client(String),
    /// A certificate of the cluster's CA that carries no identity (no `borealis://` URI and no
    /// DNS name): where ACLs are kept, it may use no volume (it could be granted nothing, and
    /// must never claim one for a name every such certificate would share).
    Anonymous,
}

/// The ACLs a node enforces (from the cluster map in etcd).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acls {
    pub volumes: HashMap<VolumeId, Acl>,
    /// The cluster's administrators.
    pub admins: Acl,
    /// Deleted volumes.
    pub deleted: HashSet<VolumeId>,
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
    /// `admin` on a claimed volume (changing its ACL).
    VolumeAdmin(PgRef),
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
        M::AclChange(c) => Need::VolumeAdmin(volume_pg(c.volume)),
        M::DeleteVolume(d) => Need::VolumeAdmin(volume_pg(d.volume)),
        _ => Need::Nothing,
    }
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The `Unauthorized` reply to send.
    Refuse(ErrorReply),
    /// A client asks to write a volume nobody claimed: claim it for `identity` in etcd (if it
    /// is still unclaimed there), take the ACL etcd then holds, and decide again.
    Claim {
        pg: PgRef,
        identity: String,
    },
}

impl Verdict {
    /// `Allow` as `Ok`, a refusal as its reply; a claim still to make is not decided yet.
    pub fn into_result(self) -> Result<(), ErrorReply> {
        match self {
            Verdict::Allow => Ok(()),
            Verdict::Refuse(reply) => Err(reply),
            Verdict::Claim { pg, .. } => Err(ErrorReply {
                code: ErrorCode::Internal,
                pg,
                epochs: Epochs::default(),
                message: format!("volume {:#x} is still unclaimed", pg.volume_id.0),
            }),
        }
    }
}

/// Whether `caller` may send `message`, given the ACLs (`None`: none are kept).
pub fn authorize(caller: &Caller, message: &Message, acls: Option<&Acls>) -> Verdict {
    let refuse = |pg: PgRef, why: String| {
        Verdict::Refuse(ErrorReply {
            code: ErrorCode::Unauthorized,
            pg,
            epochs: Epochs::default(),
            message: why,
        })
    };
    let need = need(message);
    if let (Need::Volume(pg, _) | Need::Node(_, pg) | Need::VolumeAdmin(pg), Some(acls)) = (need, acls) {
        if acls.deleted.contains(&pg.volume_id) {
            let message = format!("{VOLUME_DELETED}: volume {:#x} was deleted", pg.volume_id.0);
            return Verdict::Refuse(ErrorReply {
                code: ErrorCode::VolumeDeleted,
                pg,
                epochs: Epochs::default(),
                message,
            });
        }
    }
    match (need, caller) {
        (Need::Nothing, _) => Verdict::Allow,
        (Need::Node(None, _), Caller::Node(_)) => Verdict::Allow,
        (Need::Node(Some(named), _), Caller::Node(id)) if named == *id => Verdict::Allow,
        (Need::Node(_, pg), caller) => refuse(
            pg,
            format!("only the cluster's nodes gossip and hydrate, each as itself ({caller:?} may not)"),
        ),
        (Need::Admin, Caller::Node(id)) => {
            refuse(no_pg(), format!("node {id} may not ask for cluster changes"))
        }
        (Need::Admin | Need::Volume(..) | Need::VolumeAdmin(_), Caller::Anonymous) => match (need, acls) {
            (Need::Admin | Need::Volume(..), None) => Verdict::Allow,
            (Need::Volume(pg, _) | Need::VolumeAdmin(pg), _) => {
                refuse(pg, "a certificate without an identity may use no volume where ACLs are kept".into())
            }
            _ => refuse(no_pg(), "a certificate without an identity is no cluster administrator".into()),
        },
        (Need::Admin, Caller::Client(identity)) => match acls {
            Some(acls) if !acls.admins.allows(identity, Role::Admin) => {
                refuse(no_pg(), format!("{identity} is not a cluster administrator"))
            }
            _ => Verdict::Allow,
        },
        (Need::VolumeAdmin(pg), _) if acls.is_none() => Verdict::Refuse(ErrorReply {
            code: ErrorCode::BadRequest,
            pg,
            epochs: Epochs::default(),
            message: "this cluster keeps no ACLs (its map is not in etcd)".into(),
        }),
        (Need::VolumeAdmin(pg), Caller::Node(id)) => {
            refuse(pg, format!("node {id} may not change volume {:#x}'s ACL", pg.volume_id.0))
        }
        (Need::VolumeAdmin(pg), Caller::Client(identity)) => {
            match acls.and_then(|acls| acls.volumes.get(&pg.volume_id)) {
                Some(acl) if acl.allows(identity, Role::Admin) => Verdict::Allow,
                Some(_) => refuse(pg, format!("{identity} has no admin on volume {:#x}", pg.volume_id.0)),
                None => Verdict::Refuse(ErrorReply {
                    code: ErrorCode::BadRequest,
                    pg,
                    epochs: Epochs::default(),
                    message: format!("volume {:#x} has no ACL: nobody claimed it yet", pg.volume_id.0),
                }),
            }
        }
        (Need::Volume(..), _) if acls.is_none() => Verdict::Allow,
        (Need::Volume(_, Role::Read), Caller::Node(_)) => Verdict::Allow,
        (Need::Volume(pg, _), Caller::Node(id)) => {
            refuse(pg, format!("node {id} may not write volume {:#x}'s log", pg.volume_id.0))
        }
        (Need::Volume(pg, role), Caller::Client(identity)) => {
            match acls.and_then(|acls| acls.volumes.get(&pg.volume_id)) {
                Some(acl) if acl.allows(identity, role) => Verdict::Allow,
                Some(_) => refuse(pg, format!("{identity} has no {role} on volume {:#x}", pg.volume_id.0)),
                None if role == Role::Read => Verdict::Allow,
                None => Verdict::Claim { pg, identity: identity.clone() },
            }
        }
    }
}

/// Whether `caller`'s floor report for `pg` may raise the segment's floor, or only hold it
/// (`segment::floor`): a node's and any report where no ACLs are kept may raise it, and a
/// client's whose ACL gives it `write` (a writer knows the read points it serves); a reader
/// only holds it.
pub fn floor_report_raises(caller: &Caller, pg: PgRef, acls: Option<&Acls>) -> bool {
    match (caller, acls) {
        (Caller::Node(_), _) | (_, None) => true,
        (Caller::Client(identity), Some(acls)) => {
            acls.volumes.get(&pg.volume_id).is_some_and(|acl| acl.allows(identity, Role::Write))
        }
        (Caller::Anonymous, Some(_)) => false,
    }
}

/// The `pg` a reply about a whole volume names (its first PG).
pub fn volume_pg(volume: VolumeId) -> PgRef {
    PgRef { volume_id: volume, pg_id: protocol::PgId(0) }
}

/// The `pg` of a refusal that names none.
fn no_pg() -> PgRef {
    volume_pg(VolumeId(0))
}

#[cfg(test)]
mod tests {
    use protocol::messages::{FloorReport, HydrateFetch};
    use protocol::{Lsn, PgId};

    use super::*;

    fn pg(volume: u128) -> PgRef {
        PgRef { volume_id: VolumeId(volume), pg_id: PgId(0) }
    }

    fn refused(verdict: Verdict) -> ErrorReply {
        match verdict {
            Verdict::Refuse(reply) => reply,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn bump(volume: u128) -> Message {
        Message::EpochBump(protocol::messages::EpochBump { pg: pg(volume), epochs: Epochs::default() })
    }

    fn floor_report(volume: u128) -> Message {
        Message::FloorReport(FloorReport { pg: pg(volume), client: 1, floor: Lsn(0), lease_ms: 1 })
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
            deleted: HashSet::new(),
        };
        let (read, write) = (floor_report(7), bump(7));
        assert_eq!(authorize(&alice, &write, Some(&acls)), Verdict::Allow);
        assert_eq!(authorize(&bob, &read, Some(&acls)), Verdict::Allow);
        let refusal = refused(authorize(&bob, &write, Some(&acls)));
        assert_eq!((refusal.code, refusal.pg.volume_id), (ErrorCode::Unauthorized, VolumeId(7)));
        assert!(refusal.message.contains("borealis://client/bob has no write"), "{}", refusal.message);
        assert_eq!(authorize(&bob, &write, None), Verdict::Allow, "no ACLs kept: the CA decides alone");
        let hydrate = Message::HydrateFetch(HydrateFetch {
            pg: pg(7),
            epochs: Epochs::default(),
            read_lsn: Lsn(0),
            from_page: protocol::PageId(0),
            bytes_max: 1,
        });
        assert_eq!(refused(authorize(&alice, &hydrate, Some(&acls))).code, ErrorCode::Unauthorized);
        assert_eq!(refused(authorize(&alice, &hydrate, None)).code, ErrorCode::Unauthorized);
        assert_eq!(authorize(&Caller::Node(NodeId(2)), &hydrate, Some(&acls)), Verdict::Allow);
        assert_eq!(
            refused(authorize(&Caller::Node(NodeId(2)), &write, Some(&acls))).code,
            ErrorCode::Unauthorized
        );
        // alice writes and may raise the floor; bob, who may only read, only holds it.
        assert!(floor_report_raises(&alice, pg(7), Some(&acls)));
        assert!(!floor_report_raises(&bob, pg(7), Some(&acls)));
        assert!(floor_report_raises(&bob, pg(7), None), "no ACLs kept");
        assert!(floor_report_raises(&Caller::Node(NodeId(2)), pg(7), Some(&acls)));
    }

    #[test]
    fn the_first_client_to_write_an_unclaimed_volume_claims_it_and_reads_stay_open_until_then() {
        let acls = Acls::default();
        let bob = Caller::Client("borealis://client/bob".into());
        assert_eq!(authorize(&bob, &floor_report(8), Some(&acls)), Verdict::Allow);
        assert_eq!(
            authorize(&bob, &bump(8), Some(&acls)),
            Verdict::Claim { pg: pg(8), identity: "borealis://client/bob".into() }
        );
        let node = Caller::Node(NodeId(3));
        assert_eq!(
            refused(authorize(&node, &bump(8), Some(&acls))).code,
            ErrorCode::Unauthorized,
            "a node never claims"
        );
        assert_eq!(authorize(&node, &floor_report(8), Some(&acls)), Verdict::Allow);
    }

    #[test]
    fn only_a_volume_s_admin_changes_its_acl_and_an_unclaimed_volume_has_none_to_change() {
        let mut acls = Acls::default();
        let mut acl = Acl::owned_by("borealis://client/a");
        acl.grant("borealis://client/w", Role::Write);
        acls.volumes.insert(VolumeId(7), acl);
        let change = |volume: u128| {
            Message::AclChange(protocol::messages::AclChange {
                volume: VolumeId(volume),
                role: protocol::messages::AclChange::ROLE_READ,
                grant: true,
                identity: "borealis://client/r".into(),
            })
        };
        let (admin, writer) =
            (Caller::Client("borealis://client/a".into()), Caller::Client("borealis://client/w".into()));
        assert_eq!(authorize(&admin, &change(7), Some(&acls)), Verdict::Allow);
        assert_eq!(refused(authorize(&writer, &change(7), Some(&acls))).code, ErrorCode::Unauthorized);
        assert_eq!(
            refused(authorize(&Caller::Node(NodeId(1)), &change(7), Some(&acls))).code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            refused(authorize(&admin, &change(8), Some(&acls))).code,
            ErrorCode::BadRequest,
            "unclaimed"
        );
        assert_eq!(refused(authorize(&admin, &change(7), None)).code, ErrorCode::BadRequest, "no ACLs kept");
    }

    #[test]
    fn a_certificate_without_an_identity_claims_nothing_and_uses_no_volume_where_acls_are_kept() {
        let acls = Acls::default();
        for message in [bump(8), floor_report(8)] {
            let refusal = refused(authorize(&Caller::Anonymous, &message, Some(&acls)));
            assert_eq!(refusal.code, ErrorCode::Unauthorized);
        }
        assert_eq!(authorize(&Caller::Anonymous, &bump(8), None), Verdict::Allow, "the CA decides alone");
    }

    #[test]
    fn every_request_naming_a_deleted_volume_is_refused_whoever_asks() {
        let mut acls = Acls::default();
        acls.volumes.insert(VolumeId(9), Acl::owned_by("borealis://client/a"));
        acls.deleted.insert(VolumeId(9));
        let owner = Caller::Client("borealis://client/a".into());
        for (caller, message) in
            [(&owner, bump(9)), (&owner, floor_report(9)), (&Caller::Node(NodeId(2)), floor_report(9))]
        {
            let refusal = refused(authorize(caller, &message, Some(&acls)));
            assert_eq!(refusal.code, ErrorCode::VolumeDeleted);
            assert!(refusal.message.starts_with(VOLUME_DELETED), "{}", refusal.message);
        }
        assert_eq!(
            authorize(&owner, &bump(8), Some(&acls)),
            Verdict::Claim { pg: pg(8), identity: "borealis://client/a".into() }
        );
    }
}
