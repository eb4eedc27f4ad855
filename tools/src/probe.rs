//! Asking running nodes how they are: a QUIC `StatusRequest` (segments and their SCLs) and a
//! GET of the admin port's `/health`.
//!
//! Why both: QUIC is what clients use, so a node that answers there is up for them; `/health`
//! says whether it takes writes (serving, disk full, failed). Either can fail on its own.
//!
//! Invariants: every probe is bounded by its timeout whatever the node does (silent, slow,
//! half-open); all nodes are probed concurrently, so `probe_all` takes about one timeout at
//! worst; a failure is a value ([`ProbeError`]) in the result, never a panic.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::messages::Status;
use protocol::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::{TlsFiles, TransportError, Tuning};

use crate::local::LocalNode;

/// Longest `/health` response read.
const HEALTH_BYTES_MAX: u64 = 4096;

/// Where and how to reach one node.
#[derive(Clone, Debug)]
pub struct Target {
    pub node: u32,
    pub addr: SocketAddr,
    /// TLS server name (the DNS name in the node's certificate).
    pub name: String,
    pub admin: Option<SocketAddr>,
}

impl From<&LocalNode> for Target {
    /// A host's admin port bound to its own loopback (the default of `cluster init --hosts`)
    /// cannot be asked from elsewhere: such a target has none.
    fn from(node: &LocalNode) -> Target {
        let reachable = !node.admin.ip().is_loopback() || node.addr.ip().is_loopback();
        Target {
            node: node.id,
            addr: node.addr,
            name: node.name.clone(),
            admin: reachable.then_some(node.admin),
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("node refused: {0}")]
    Refused(String),
    /// A typed refusal (`Unauthorized`: the certificate may not ask this).
    #[error("{code:?}: {message}")]
    Denied { code: protocol::messages::ErrorCode, message: String },
    #[error("unexpected reply (message type {0})")]
    Unexpected(u8),
    #[error("{0}")]
    Http(String),
}

/// The admin port's answer to `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub code: u16,
    /// First line of the body, e.g. `serving`.
    pub text: String,
}

/// Everything learned about one node.
#[derive(Debug)]
pub struct Probe {
    pub target: Target,
    pub status: Result<Status, ProbeError>,
    /// `None` if the node has no admin port.
    pub health: Option<Result<Health, ProbeError>>,
}

/// Probes every target concurrently, presenting `tls` (a client certificate of the cluster).
/// Results are in the order of `targets`; an error only if no client endpoint can be made.
pub async fn probe_all(
    targets: &[Target],
    tls: &TlsFiles,
    timeout: Duration,
) -> Result<Vec<Probe>, ProbeError> {
    let Some(first) = targets.first() else { return Ok(Vec::new()) };
    let endpoint = transport::client_endpoint(transport::any_addr_for(first.addr), tls, &Tuning::default())?;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, target) in targets.iter().cloned().enumerate() {
        let endpoint = endpoint.clone();
        tasks.spawn(async move {
            let status = status(&endpoint, &target, timeout).await;
            let health = match target.admin {
                Some(admin) => Some(health(admin, timeout).await),
                None => None,
            };
            (index, Probe { target, status, health })
        });
    }
    let mut probes: Vec<(usize, Probe)> = tasks.join_all().await;
    probes.sort_by_key(|(index, _)| *index);
    endpoint.close(0u32.into(), b"status done");
    Ok(probes.into_iter().map(|(_, probe)| probe).collect())
}

/// One QUIC status exchange with one node.
pub async fn status(
    endpoint: &quinn::Endpoint,
    target: &Target,
    timeout: Duration,
) -> Result<Status, ProbeError> {
    let exchange = async {
        let conn = transport::connect(endpoint, target.addr, &target.name, timeout).await?;
        let reply = transport::request(&conn, &Message::StatusRequest).await;
        conn.close(0u32.into(), b"status done");
        reply
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(ProbeError::Timeout(timeout)),
        Ok(Err(error)) => Err(error.into()),
        Ok(Ok(Message::Status(status))) => Ok(status),
        Ok(Ok(Message::Error(reply))) => Err(ProbeError::Refused(reply.message)),
        Ok(Ok(other)) => Err(ProbeError::Unexpected(other.type_code())),
    }
}

/// Asks `target` to have `node` replaced by the volumes' writers (`ReplaceNodeAsk`),
/// presenting `tls`, which must be a cluster administrator's certificate where ACLs are kept.
pub async fn ask_replacement(
    tls: &TlsFiles,
    target: &Target,
    node: u32,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let ask = Message::ReplaceNodeAsk(protocol::messages::ReplaceNodeAsk { node: protocol::NodeId(node) });
    ask_node(tls, target, &ask, timeout).await
}

/// Sends `ask` to `target` as `tls`'s identity; the node answers a request it carried out with
/// the request itself (`ReplaceNodeAsk`, `AclChange`), a refusal with an error reply.
pub async fn ask_node(
    tls: &TlsFiles,
    target: &Target,
    ask: &Message,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let endpoint = transport::client_endpoint(transport::any_addr_for(target.addr), tls, &Tuning::default())?;
    let exchange = async {
        let conn = transport::connect(&endpoint, target.addr, &target.name, timeout).await?;
        let reply = transport::request(&conn, ask).await;
        conn.close(0u32.into(), b"asked");
        reply
    };
    let answer = tokio::time::timeout(timeout, exchange).await;
    endpoint.close(0u32.into(), b"done");
    match answer {
        Err(_) => Err(ProbeError::Timeout(timeout)),
        Ok(Err(error)) => Err(error.into()),
        Ok(Ok(reply)) if reply == *ask => Ok(()),
        Ok(Ok(Message::Error(refusal))) => {
            Err(ProbeError::Denied { code: refusal.code, message: refusal.message })
        }
        Ok(Ok(other)) => Err(ProbeError::Unexpected(other.type_code())),
    }
}

/// `GET /health` on an admin port.
pub async fn health(admin: SocketAddr, timeout: Duration) -> Result<Health, ProbeError> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        let request = format!("GET /health HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(HEALTH_BYTES_MAX).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(ProbeError::Timeout(timeout)),
        Ok(Err(error)) => return Err(ProbeError::Http(error.to_string())),
        Ok(Ok(response)) => response,
    };
    parse_health(&String::from_utf8_lossy(&response))
}

/// Parses an HTTP response: the status code and the body's first line.
fn parse_health(response: &str) -> Result<Health, ProbeError> {
    let bad = || ProbeError::Http(format!("malformed response {:?}", response.lines().next().unwrap_or("")));
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(Health { code, text: body.lines().next().unwrap_or("").trim().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_responses_parse() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nserving\n";
        assert_eq!(parse_health(ok).unwrap(), Health { code: 200, text: "serving".into() });
        let failed = "HTTP/1.1 503 Service Unavailable\r\n\r\nfailed: disk\n";
        assert_eq!(parse_health(failed).unwrap().code, 503);
        assert!(parse_health("garbage").is_err());
    }

    #[test]
    fn a_silent_node_times_out_quickly() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // A bound UDP socket that never answers, and a TCP listener that never accepts reads.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target {
            node: 1,
            addr: silent.local_addr().unwrap(),
            name: "node-1".into(),
            admin: Some(listener.local_addr().unwrap()),
        };
        let dir = tempfile::tempdir().unwrap();
        let pki = transport::ensure_dev_pki(dir.path(), &["client"]).unwrap();
        let started = std::time::Instant::now();
        let probes = runtime
            .block_on(probe_all(&[target], &pki.files_for("client"), Duration::from_millis(300)))
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(probes[0].status, Err(ProbeError::Timeout(_)) | Err(ProbeError::Transport(_))));
        assert!(matches!(probes[0].health, Some(Err(ProbeError::Timeout(_)))));
    }
}
