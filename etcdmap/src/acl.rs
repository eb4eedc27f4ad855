//! Volume access control lists, kept beside the cluster map (`P acl/<volume>`).
//!
//! An identity is the string a client's certificate carries, `borealis://client/NAME`
//! (`transport::identity`); storage nodes are recognised by the cluster map, not by ACLs. A
//! volume's ACL maps
//! identities to roles; `admin` includes `write` and `read`, and `write` includes `read` (a
//! writer reads the log to recover the volume when it opens it).
//!
//! Why here and not on the segments: every node already follows this prefix, within
//! milliseconds, from one linearizable store, so a grant or a revoke reaches every node of the
//! volume at once and the same way. Kept on the segments, an ACL change would need a quorum
//! write of its own and gossip to converge, and a node that missed a revoke would go on serving
//! the revoked client. A cluster whose map is a static file has no ACLs (every certificate the
//! CA signed may use every volume); see docs/security.md.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What an identity may do with a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read pages and records.
    Read,
    /// Write the log: open the volume as its writer (fencing any other), append, truncate; and
    /// read, which opening needs.
    Write,
    /// Both, and change the volume's ACL.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    /// Whether holding this role allows acting in `other`.
    pub fn includes(self, other: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Write => other != Role::Admin,
            Role::Read => other == Role::Read,
        }
    }

    /// The role's byte in an `AclChange` request.
    pub fn to_wire(self) -> u8 {
        use protocol::messages::AclChange as C;
        match self {
            Role::Read => C::ROLE_READ,
            Role::Write => C::ROLE_WRITE,
            Role::Admin => C::ROLE_ADMIN,
        }
    }

    /// The role an `AclChange` byte names (the frame's checks admit only these three).
    pub fn from_wire(byte: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.to_wire() == byte)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| format!("{text:?} is not a role (read, write or admin)"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity prefix of client certificates.
pub const CLIENT_IDENTITY_PREFIX: &str = "borealis://client/";

/// The identity of the client named `name` (`borealis cert issue --name NAME`).
pub fn client_identity(name: &str) -> String {
    format!("{CLIENT_IDENTITY_PREFIX}{name}")
}

/// One volume's ACL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    pub grants: BTreeMap<String, BTreeSet<Role>>,
}

impl Acl {
    /// The ACL of a volume its creator `identity` claimed: admin.
    pub fn owned_by(identity: &str) -> Acl {
        let mut acl = Acl::default();
        acl.grant(identity, Role::Admin);
        acl
    }

    /// Whether `identity` may act in `role` (admin includes the others, write includes read).
    pub fn allows(&self, identity: &str, role: Role) -> bool {
        self.grants.get(identity).is_some_and(|roles| roles.iter().any(|held| held.includes(role)))
    }

    pub fn grant(&mut self, identity: &str, role: Role) {
        self.grants.entry(identity.to_owned()).or_default().insert(role);
    }

    /// Removes `role` from `identity` (and the identity once it has none).
    pub fn revoke(&mut self, identity: &str, role: Role) {
        if let Some(roles) = self.grants.get_mut(identity) {
            roles.remove(&role);
            if roles.is_empty() {
                self.grants.remove(identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_includes_read_and_write_and_write_includes_read() {
        let mut acl = Acl::owned_by("borealis://client/a");
        acl.grant("borealis://client/b", Role::Write);
        assert!(
            acl.allows("borealis://client/a", Role::Read) && acl.allows("borealis://client/a", Role::Write)
        );
        assert!(
            acl.allows("borealis://client/b", Role::Write) && acl.allows("borealis://client/b", Role::Read)
        );
        assert!(!acl.allows("borealis://client/b", Role::Admin));
        acl.grant("borealis://client/r", Role::Read);
        assert!(!acl.allows("borealis://client/r", Role::Write));
        acl.revoke("borealis://client/r", Role::Read);
        assert!(!acl.allows("borealis://client/c", Role::Read));
        acl.revoke("borealis://client/b", Role::Write);
        assert!(!acl.grants.contains_key("borealis://client/b"));
        let json = serde_json::to_string(&acl).unwrap();
        assert_eq!(json, r#"{"grants":{"borealis://client/a":["admin"]}}"#);
        assert_eq!(serde_json::from_str::<Acl>(&json).unwrap(), acl);
        assert_eq!("write".parse::<Role>(), Ok(Role::Write));
        assert!("owner".parse::<Role>().is_err());
    }
}
