//! A peer to compare with: a 3-member etcd cluster on loopback, driven with durable puts.
//!
//! etcd comes from Debian's `etcd-server` (3.4 here); `start` installs it with apt-get when it
//! is missing and we are root. The members keep etcd's default durability: the WAL is fsynced
//! for every committed batch before a put is acknowledged. Puts go through etcd's v3 JSON gRPC
//! gateway (`POST /v3/kv/put`) over HTTP/1.1 with keep-alive, one connection per client.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::node_ingest::LATENCY_US_MAX;

/// How to install etcd, for the user when we cannot.
pub const INSTALL_COMMAND: &str = "apt-get install -y etcd-server";

/// How long `start` waits for every member to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one put or range may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Every key the load writes starts with this.
const KEY_PREFIX: &str = "borealis-bench/";
const MEMBERS: usize = 3;

/// The `etcd` binary, installed with apt-get first if it is missing and we are root.
pub fn ensure_installed() -> Result<PathBuf, String> {
    crate::debian::ensure_installed("etcd", "etcd-server")
}

/// One etcd process.
#[derive(Debug)]
struct Member {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    client: SocketAddr,
}

/// Three etcd members on 127.0.0.1, each with its data dir `dir/m{i}` and log `dir/m{i}.log`.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts 3 members on 127.0.0.1 with free ports, data under `dir` (any old `dir/m{i}` is
    /// removed first), and waits until every member answers a linearizable range (at most 30 s).
    /// Blocks the calling thread while it waits.
    pub fn start(dir: &Path) -> Result<EtcdCluster, String> {
        let etcd = ensure_installed()?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let ports = free_ports(2 * MEMBERS)?;
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let initial_cluster =
            (0..MEMBERS).map(|i| format!("m{i}={}", url(ports[MEMBERS + i]))).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members: Vec::with_capacity(MEMBERS) };
        for i in 0..MEMBERS {
            let name = format!("m{i}");
            let (client_port, peer_port) = (ports[i], ports[MEMBERS + i]);
            let data_dir = dir.join(&name);
            if data_dir.exists() {
                std::fs::remove_dir_all(&data_dir)
                    .map_err(|e| format!("removing old {}: {e}", data_dir.display()))?;
            }
            let log = dir.join(format!("{name}.log"));
            let stdout = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
            let stderr = stdout.try_clone().map_err(|e| e.to_string())?;
            let mut command = Command::new(&etcd);
            // ETCD_* variables that repeat a flag make etcd 3.4 refuse to start.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD_") {
                    command.env_remove(key);
                }
            }
            command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen-client-urls", &url(client_port)])
                .args(["--advertise-client-urls", &url(client_port)])
                .args(["--listen-peer-urls", &url(peer_port)])
                .args(["--initial-advertise-peer-urls", &url(peer_port)])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "borealis-bench"])
                .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "error"])
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            let child = command.spawn().map_err(|e| format!("starting {}: {e}", etcd.display()))?;
            let client = SocketAddr::from(([127, 0, 0, 1], client_port));
            cluster.members.push(Member { name, child: Some(child), log, client });
        }
        // On an error `cluster` is dropped, which kills the members already started.
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// The members' client addresses (HTTP), in member order.
    pub fn client_urls(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.client).collect()
    }

    /// Kills and waits for every member; later calls do nothing.
    pub fn stop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let body = format!(r#"{{"key":"{}"}}"#, BASE64.encode(format!("{KEY_PREFIX}ready")));
        for member in &mut self.members {
            loop {
                if let Some(Ok(Some(status))) = member.child.as_mut().map(Child::try_wait) {
                    return Err(format!(
                        "etcd member {} exited ({status}); {} ends with: {}",
                        member.name,
                        member.log.display(),
                        log_tail(&member.log)
                    ));
                }
                let last = match blocking_post(member.client, "/v3/kv/range", &body) {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    return Err(format!(
                        "etcd member {} at {} not ready after {READY_TIMEOUT:?} ({last}); {} ends with: {}",
                        member.name,
                        member.client,
                        member.log.display(),
                        log_tail(&member.log)
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `count` distinct free ports on 127.0.0.1 (all listeners are held until every port is chosen).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let picked = (0..count)
        .map(|_| {
            transport::ports::bind_listen_port(|p| TcpListener::bind(("127.0.0.1", p)))
                .map_err(|e| format!("finding a free port: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(picked.into_iter().map(|(port, _)| port).collect())
}

fn log_tail(log: &Path) -> String {
    std::fs::read(log)
        .map(|bytes| crate::debian::tail(&String::from_utf8_lossy(&bytes), 2000).to_owned())
        .unwrap_or_default()
}

/// One readiness probe: a blocking `POST` on a fresh connection; Ok on a 200.
fn blocking_post(addr: SocketAddr, path: &str, body: &str) -> Result<(), String> {
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!("answered {status:?}"))
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection (reopened if the server closes it).
#[derive(Debug)]
struct HttpConn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

impl HttpConn {
    fn new(addr: SocketAddr) -> HttpConn {
        HttpConn { addr, stream: None, request: Vec::new() }
    }

    /// POSTs a JSON body; the response body on a 200, an error otherwise.
    async fn post(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream =
                    TcpStream::connect(self.addr).await.map_err(|e| format!("{}: {e}", self.addr))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                self.stream.insert(BufReader::new(stream))
            }
        };
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        self.request.extend_from_slice(body);
        let result = async {
            stream.write_all(&self.request).await.map_err(|e| format!("{}: {e}", self.addr))?;
            read_response(stream).await.map_err(|e| format!("{}: {e}", self.addr))
        }
        .await;
        match result {
            Ok((status, keep_alive, body)) => {
                if !keep_alive {
                    self.stream = None;
                }
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("{} {path}: HTTP {status}: {}", self.addr, String::from_utf8_lossy(&body)))
                }
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// Reads one response: (status, whether the connection stays open, body).
async fn read_response(stream: &mut BufReader<TcpStream>) -> Result<(u16, bool, Vec<u8>), String> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
        return Err("connection closed before a response".into());
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", line.trim_end()))?;
    let mut keep_alive = version == "HTTP/1.1";
    let (mut content_length, mut chunked) = (None, false);
    loop {
        line.clear();
        if stream.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed in the headers".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length =
                Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
            let size = line.trim_end().split(';').next().unwrap_or_default();
            let size =
                usize::from_str_radix(size.trim(), 16).map_err(|_| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await.map_err(|e| e.to_string())? == 0
                        || line.trim_end().is_empty()
                    {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            stream.read_exact(&mut body[start..]).await.map_err(|e| e.to_string())?;
            let mut crlf = [0u8; 2];
            stream.read_exact(&mut crlf).await.map_err(|e| e.to_string())?;
        }
    } else if let Some(length) = content_length {
        body.resize(length, 0);
        stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    } else if !matches!(status, 100..=199 | 204 | 304) {
        // Neither length nor chunks: the body runs to the end of the connection.
        stream.read_to_end(&mut body).await.map_err(|e| e.to_string())?;
        keep_alive = false;
    }
    Ok((status, keep_alive, body))
}

/// The load to offer.
#[derive(Clone, Copy, Debug)]
pub struct EtcdLoad {
    pub value_bytes: usize,
    pub concurrency: usize,
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug)]
pub struct EtcdResult {
    pub puts: u64,
    pub elapsed: Duration,
    /// Per-put send-to-response latency, microseconds.
    pub latency_us: Histogram<u64>,
}

impl EtcdResult {
    pub fn puts_per_s(&self) -> f64 {
        self.puts as f64 / self.elapsed.as_secs_f64()
    }
    /// Value bytes acknowledged per second, in MB (10^6 bytes).
    pub fn payload_mb_per_s(&self, value_bytes: usize) -> f64 {
        self.puts as f64 * value_bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// The key of client `client`'s `seq`th put (distinct within a run; runs reuse keys).
fn put_key(client: usize, seq: u64) -> String {
    format!("{KEY_PREFIX}c{client:05}/{seq:012}")
}

/// The value every put writes.
fn put_value(value_bytes: usize) -> Vec<u8> {
    (0..value_bytes).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Drives `concurrency` closed-loop clients, each with one put outstanding, spread over the
/// members' client URLs, for `duration`; every put is a distinct key with a `value_bytes`
/// value. The first failed put fails the run.
pub async fn run_puts(cluster: &EtcdCluster, load: EtcdLoad) -> Result<EtcdResult, String> {
    if load.concurrency == 0 {
        return Err("concurrency must be at least 1".into());
    }
    let addrs = cluster.client_urls();
    let value_b64 = BASE64.encode(put_value(load.value_bytes));
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..load.concurrency {
        let addr = addrs[client % addrs.len()];
        let value_b64 = value_b64.clone();
        clients.spawn(async move {
            let mut conn = HttpConn::new(addr);
            let mut latency_us =
                Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())?;
            let mut body = Vec::with_capacity(value_b64.len() + 128);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                body.clear();
                body.extend_from_slice(br#"{"key":""#);
                body.extend_from_slice(BASE64.encode(put_key(client, seq)).as_bytes());
                body.extend_from_slice(br#"","value":""#);
                body.extend_from_slice(value_b64.as_bytes());
                body.extend_from_slice(br#""}"#);
                let sent = Instant::now();
                tokio::time::timeout(REQUEST_TIMEOUT, conn.post("/v3/kv/put", &body))
                    .await
                    .map_err(|_| format!("{addr}: a put took over {REQUEST_TIMEOUT:?}"))??;
                latency_us.saturating_record(sent.elapsed().as_micros() as u64);
                seq += 1;
            }
            Ok::<_, String>((seq, latency_us))
        });
    }
    let mut puts = 0;
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())?;
    while let Some(joined) = clients.join_next().await {
        // Returning early drops `clients`, which aborts the rest.
        let (count, histogram) = joined.map_err(|e| format!("etcd client task: {e}"))??;
        puts += count;
        latency_us.add(&histogram).map_err(|e| e.to_string())?;
    }
    Ok(EtcdResult { puts, elapsed: started.elapsed(), latency_us })
}

/// Reads `key` (linearizable) from the member at `addr`: its value, or None if absent.
pub async fn get(addr: SocketAddr, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let response = range(addr, serde_json::json!({ "key": BASE64.encode(key) })).await?;
    let Some(value) = response["kvs"].get(0).map(|kv| kv["value"].as_str().unwrap_or_default()) else {
        return Ok(None);
    };
    BASE64.decode(value).map(Some).map_err(|e| format!("range value: {e}"))
}

/// `POST /v3/kv/range` with the request `request`; the parsed response.
async fn range(addr: SocketAddr, request: serde_json::Value) -> Result<serde_json::Value, String> {
    let mut conn = HttpConn::new(addr);
    let body =
        tokio::time::timeout(REQUEST_TIMEOUT, conn.post("/v3/kv/range", request.to_string().as_bytes()))
            .await
            .map_err(|_| format!("{addr}: a range took over {REQUEST_TIMEOUT:?}"))??;
    serde_json::from_slice(&body).map_err(|e| format!("range response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_on_a_three_member_cluster_are_durable_and_readable() {
        ensure_installed().expect("etcd (`.ci/run` installs it)");
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = EtcdCluster::start(dir.path()).unwrap();
        let addrs = cluster.client_urls();
        assert_eq!(addrs.len(), 3);
        let load = EtcdLoad { value_bytes: 1024, concurrency: 8, duration: Duration::from_secs(1) };
        let result = run_puts(&cluster, load).await.unwrap();
        assert!(result.puts > 0, "{result:?}");
        assert_eq!(result.latency_us.len(), result.puts);
        assert!(result.puts_per_s() > 0.0 && result.payload_mb_per_s(load.value_bytes) > 0.0);

        // Client 0 (on member 0) wrote its first key: read it back from another member.
        let value = get(addrs[1], put_key(0, 0).as_bytes()).await.unwrap();
        assert_eq!(value.as_deref(), Some(&put_value(load.value_bytes)[..]));
        assert_eq!(get(addrs[2], b"borealis-bench/never-written").await.unwrap(), None);
        // And every acknowledged put is there.
        let prefix = KEY_PREFIX.as_bytes();
        let mut range_end = prefix.to_vec();
        *range_end.last_mut().unwrap() += 1;
        let counted = range(
            addrs[2],
            serde_json::json!({
                "key": BASE64.encode(prefix), "range_end": BASE64.encode(&range_end), "count_only": true
            }),
        )
        .await
        .unwrap();
        let count = counted["count"].as_str().and_then(|c| c.parse::<u64>().ok());
        assert_eq!(count, Some(result.puts), "{counted}");

        cluster.stop();
        cluster.stop();
        assert!(dir.path().join("m0/member").is_dir());
        assert!(dir.path().join("m2.log").is_file());
    }
}
