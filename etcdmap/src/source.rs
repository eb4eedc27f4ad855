//! [`EtcdSource`]: where a cluster map lives (etcd's endpoints and the prefix) and the etcd user
//! to act as; and [`EtcdMap::secure`], which turns on etcd's own access control for a prefix.
//!
//! Who may write what in etcd decides who may change the cluster: the node list (a name
//! written there makes a certificate a "node") and every volume's ACL. So a secured cluster has
//! two etcd users besides `root`:
//!
//! - the nodes' ([`NODE_ROLE`]): read under the prefix, and write only the volumes' ACLs and
//!   tombstones (`P acl/`, `P deleted/`): they claim unclaimed volumes for their first writer,
//!   and change ACLs and delete volumes for the volumes' admins. A node's password cannot add a
//!   node or an administrator;
//! - the clients' ([`CLIENT_ROLE`]): read only (writers and readers follow the map).
//!
//! Operators act as `root` (publishing the map, adding hosts, granting and revoking roles).

use std::time::Duration;

use etcd_client::{ConnectOptions, Permission};

use crate::layout::{normalize_prefix, ACL_DIR, DELETED_DIR};
use crate::{EtcdMap, EtcdMapError};

/// The etcd role of the cluster's nodes: read under the prefix, write `P acl/` and `P deleted/`.
pub const NODE_ROLE: &str = "borealis-node";
/// The etcd role of the cluster's clients: read under the prefix.
pub const CLIENT_ROLE: &str = "borealis-client";

/// An etcd user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUser {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser").field("name", &self.name).finish_non_exhaustive()
    }
}

impl EtcdUser {
    /// The user `name` whose password is the first line of the file at `path`.
    pub fn from_password_file(name: &str, path: &std::path::Path) -> Result<EtcdUser, std::io::Error> {
        let text = std::fs::read_to_string(path)?;
        let password = text.lines().next().unwrap_or("").to_owned();
        if password.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the password file is empty"));
        }
        Ok(EtcdUser { name: name.to_owned(), password })
    }
}

/// TLS to etcd (`https://` endpoints): the CA that signed etcd's server certificates and,
/// where etcd asks for one (`--client-cert-auth`), this side's certificate and key, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// Reads the CA file and, if given, the certificate and key files.
    pub fn from_files(
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<EtcdTls, std::io::Error> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        let identity = match identity {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(EtcdTls { ca: read(ca)?, identity })
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let options =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&self.ca));
        match &self.identity {
            Some((cert, key)) => options.identity(etcd_client::Identity::from_pem(cert, key)),
            None => options,
        }
    }
}

/// Where the cluster map lives, and as whom to read (or write) it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSource {
    /// Client URLs of the etcd members, e.g. `http://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix (`DEFAULT_PREFIX` unless the cluster chose another).
    pub prefix: String,
    /// The etcd user to authenticate as; `None` for an etcd without authentication.
    pub user: Option<EtcdUser>,
    /// TLS, for `https://` endpoints; `None`: plain HTTP/2 (then passwords cross the network
    /// in the clear: keep such an etcd on a trusted network).
    pub tls: Option<EtcdTls>,
}

impl EtcdSource {
    /// A source without authentication.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> EtcdSource {
        EtcdSource { endpoints, prefix: prefix.into(), user: None, tls: None }
    }

    /// `options` with this source's user and TLS, if it has them.
    pub(crate) fn options(&self, options: ConnectOptions) -> ConnectOptions {
        let options = match &self.tls {
            Some(tls) => options.with_tls(tls.options()),
            None => options,
        };
        match &self.user {
            // etcd's tokens expire (after 5 idle minutes by default): a long-lived connection
            // must fetch a new one rather than fail from then on.
            Some(user) => {
                options.with_user(user.name.clone(), user.password.clone()).with_auto_token_refresh(true)
            }
            None => options,
        }
    }
}

impl EtcdMap {
    /// Connects to `source` as its user (connect timeout and per-request timeout = `timeout`).
    pub async fn open(source: &EtcdSource, timeout: Duration) -> Result<EtcdMap, EtcdMapError> {
        let options = ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout);
        EtcdMap::connect_with(&source.endpoints, &source.prefix, source.options(options)).await
    }

    /// Turns on etcd's access control for this prefix: the roles [`NODE_ROLE`] (read and
    /// write under the prefix) and [`CLIENT_ROLE`] (read under it), the users `node` and
    /// `client` holding them, a `root` user with `root_password`, and authentication enabled.
    /// Must be called on a connection made without a user, to an etcd whose authentication is
    /// still off; from then on every connection needs a user.
    pub async fn secure(
        &mut self,
        root_password: &str,
        node: &EtcdUser,
        client: &EtcdUser,
    ) -> Result<(), EtcdMapError> {
        let prefix = normalize_prefix(self.prefix());
        let client_api = &mut self.client;
        let under = |dir: &str| format!("{prefix}{dir}");
        for (role, permission) in [
            (NODE_ROLE, Permission::read(prefix.as_str()).with_prefix()),
            (NODE_ROLE, Permission::read_write(under(ACL_DIR)).with_prefix()),
            (NODE_ROLE, Permission::read_write(under(DELETED_DIR)).with_prefix()),
            (CLIENT_ROLE, Permission::read(prefix.as_str()).with_prefix()),
        ] {
            if client_api.role_get(role).await.is_err() {
                client_api.role_add(role).await?;
            }
            client_api.role_grant_permission(role, permission).await?;
        }
        for (user, role) in [(node, NODE_ROLE), (client, CLIENT_ROLE)] {
            client_api.user_add(user.name.as_str(), user.password.as_str(), None).await?;
            client_api.user_grant_role(user.name.as_str(), role).await?;
        }
        client_api.user_add("root", root_password, None).await?;
        client_api.user_grant_role("root", "root").await?;
        client_api.auth_enable().await?;
        Ok(())
    }
}
