//! Packet delays without `tc netem`, for kernels built without `CONFIG_NET_SCH_NETEM` (this
//! project's CI machines): iptables-legacy OUTPUT rules hand each namespace's outgoing packets to
//! an NFQUEUE (one queue number per delay class), and one thread of this process holds each
//! packet in the kernel's queue until its delay has passed, then accepts it (a batch verdict:
//! each class is first in, first out, as a netem qdisc is). The netlink side is written here on
//! `libc` (nfnetlink_queue, metadata only: no packet bytes are copied to user space).
//!
//! Needs root, the kernel's `CONFIG_NETFILTER_NETLINK_QUEUE`, `CONFIG_NETFILTER_XT_TARGET_NFQUEUE`
//! and legacy iptables (`CONFIG_IP_NF_IPTABLES_LEGACY`, `CONFIG_IP_NF_FILTER`), and Debian's
//! `iptables` package for `iptables-legacy` (its default `iptables` uses nftables, whose queue
//! (`CONFIG_NFT_QUEUE`) such a kernel may lack). Everything [`Delays::apply`] adds is removed when
//! the [`Delays`] is dropped.
//!
//! A packet's delay counts from when the thread reads it, so it is the asked delay plus that
//! thread's wake-up latency (tens of µs on a quiet machine); the thread asks for a real-time
//! priority and a 1 ns timer slack to keep that small.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Packets leaving a namespace by `dev` (only those to `to`, if given) wait `delay`. A namespace's
/// rules are tried in order; the first that matches a packet decides its delay.
#[derive(Debug, Clone)]
pub struct Rule {
    pub dev: String,
    pub to: Option<Ipv4Addr>,
    pub delay: Duration,
}

/// The rules of one namespace: `None` is this process's own (the root namespace in tests).
pub type Namespace = (Option<String>, Vec<Rule>);

/// Longest the delay thread sleeps with nothing queued (how soon it sees a stop).
const IDLE: Duration = Duration::from_millis(20);
/// Packets one queue may hold before the kernel drops new ones (netem's default limit is 1000).
const QUEUE_MAX_LEN: u32 = 10_000;
/// Receive buffer of each netlink socket: room for a burst the thread has not read yet.
const SOCKET_BUFFER: libc::c_int = 8 << 20;

// nfnetlink_queue (linux/netfilter/nfnetlink_queue.h, nfnetlink.h).
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
/// Whole GSO packets, as netem would delay them, rather than the kernel segmenting them first.
const NFQA_CFG_F_GSO: u32 = 1 << 2;
const NF_ACCEPT: u32 = 1;
const NLMSG_HDRLEN: usize = 16;

/// Runs `f` in network namespace `namespace` (a name under /run/netns, as `ip netns add` makes),
/// on a thread of its own; `None` runs it here. Sockets it opens stay in that namespace.
pub fn in_namespace<T: Send>(
    namespace: Option<&str>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let Some(name) = namespace else { return f() };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(format!("/run/netns/{name}"))?;
                // SAFETY: setns(2) on an open namespace file; it moves only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .expect("thread in a namespace panicked")
    })
}

/// One delay class: a queue number on one netlink socket.
struct Class {
    socket: usize,
    queue: u16,
    delay: Duration,
    /// Packet ids read and not yet accepted, with when each is due, oldest first.
    pending: VecDeque<(u32, Instant)>,
}

/// What the delay thread tells the test.
struct Shared {
    errors: Mutex<Vec<String>>,
    /// Packets delayed, per class.
    packets: Vec<AtomicU64>,
    labels: Vec<String>,
}

impl Shared {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(what);
        }
    }
}

/// The delays in force: rules, queues and the thread that holds packets. Dropping it removes the
/// rules, accepts every packet still held, and ends the thread.
pub struct Delays {
    /// Each rule added, as (namespace, iptables arguments after `-A`/`-D`).
    rules: Vec<(Option<String>, Vec<String>)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Delays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delays").field("classes", &self.shared.labels).finish()
    }
}

impl Delays {
    /// Delays packets as `namespaces` say. Rule `i` of a namespace uses queue number
    /// `first_queue + i` in that namespace (queue numbers are per namespace: pick `first_queue`
    /// so that two runs delaying the root namespace at once do not collide). Fails, leaving
    /// nothing behind, if any part cannot be made.
    pub fn apply(first_queue: u16, namespaces: &[Namespace]) -> Result<Delays, String> {
        let mut sockets = Vec::new();
        let mut classes = Vec::new();
        let mut labels = Vec::new();
        for (namespace, rules) in namespaces {
            let place = namespace.as_deref().unwrap_or("root namespace");
            let socket = in_namespace(namespace.as_deref(), open_socket)
                .map_err(|e| format!("netfilter queue socket in {place}: {e}"))?;
            for (i, rule) in rules.iter().enumerate() {
                let queue = first_queue + i as u16;
                bind_queue(socket.as_raw_fd(), queue).map_err(|e| {
                    format!(
                        "binding netfilter queue {queue} in {place} (CONFIG_NETFILTER_NETLINK_QUEUE?): {e}"
                    )
                })?;
                classes.push(Class {
                    socket: sockets.len(),
                    queue,
                    delay: rule.delay,
                    pending: VecDeque::new(),
                });
                let to = rule.to.map(|to| format!(" to {to}")).unwrap_or_default();
                labels.push(format!("{place} out {}{to} +{:?}", rule.dev, rule.delay));
            }
            sockets.push(socket);
        }
        let shared = Arc::new(Shared {
            errors: Mutex::new(Vec::new()),
            packets: labels.iter().map(|_| AtomicU64::new(0)).collect(),
            labels,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, shared) = (stop.clone(), shared.clone());
            std::thread::Builder::new()
                .name("packet-delay".into())
                .spawn(move || run(sockets, classes, &stop, &shared))
                .map_err(|e| format!("delay thread: {e}"))?
        };
        let mut delays = Delays { rules: Vec::new(), stop, thread: Some(thread), shared };
        // The queues are bound and read before any rule sends packets to them.
        for (namespace, rules) in namespaces {
            for (i, rule) in rules.iter().enumerate() {
                let mut args = vec!["OUTPUT".to_string(), "-o".into(), rule.dev.clone()];
                if let Some(to) = rule.to {
                    args.extend(["-d".into(), format!("{to}/32")]);
                }
                let queue = (first_queue + i as u16).to_string();
                args.extend(["-j".into(), "NFQUEUE".into(), "--queue-num".into(), queue]);
                iptables(namespace.as_deref(), "-A", &args)?;
                delays.rules.push((namespace.clone(), args));
            }
        }
        Ok(delays)
    }

    /// What went wrong in the delay thread so far (netlink errors), if anything.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Packets delayed so far, per class, labelled.
    pub fn packets(&self) -> Vec<(String, u64)> {
        let counts = self.shared.packets.iter().map(|c| c.load(Ordering::Relaxed));
        self.shared.labels.iter().cloned().zip(counts).collect()
    }

    /// The kernel's drop counters for this run's queues, per namespace: (namespace, dropped
    /// because a queue was full, dropped because a socket was full), from
    /// /proc/net/netfilter/nfnetlink_queue.
    pub fn kernel_drops(&self) -> Vec<(String, u64, u64)> {
        let mut namespaces: Vec<&Option<String>> = self.rules.iter().map(|(ns, _)| ns).collect();
        namespaces.dedup();
        namespaces
            .into_iter()
            .map(|ns| {
                let table = in_namespace(ns.as_deref(), || {
                    std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue")
                })
                .unwrap_or_default();
                let ours: Vec<u64> = self
                    .rules
                    .iter()
                    .filter(|(n, _)| n == ns)
                    .filter_map(|(_, args)| args.last()?.parse().ok())
                    .collect();
                let (mut full, mut user) = (0, 0);
                for line in table.lines() {
                    // queue, port id, length, copy mode, copy range, dropped, user dropped, ...
                    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
                    if fields.len() >= 7 && ours.contains(&fields[0]) {
                        full += fields[5];
                        user += fields[6];
                    }
                }
                (ns.clone().unwrap_or_else(|| "root namespace".into()), full, user)
            })
            .collect()
    }
}

impl Drop for Delays {
    fn drop(&mut self) {
        // Rules first, so that no packet is sent to a queue nobody reads any more.
        for (namespace, args) in self.rules.drain(..).rev() {
            let _ = iptables(namespace.as_deref(), "-D", &args);
        }
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `iptables-legacy -w ACTION ARGS` in `namespace`.
fn iptables(namespace: Option<&str>, action: &str, args: &[String]) -> Result<(), String> {
    let mut command = match namespace {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "iptables-legacy"]);
            c
        }
        None => Command::new("iptables-legacy"),
    };
    let out = command
        .args(["-w", action])
        .args(args)
        .output()
        .map_err(|e| format!("iptables-legacy (Debian's iptables package): {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "iptables-legacy {action} {} in {}: {}",
            args.join(" "),
            namespace.unwrap_or("root namespace"),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A netlink socket for netfilter queues in the calling thread's namespace.
fn open_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid (the kernel picks the port id).
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: bind(2) with a sockaddr_nl of the size given.
    let bound = unsafe {
        libc::bind(
            fd,
            &address as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    set_option(fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1)?;
    // Root may exceed rmem_max; fall back to the ordinary option.
    if set_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
        set_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER)?;
    }
    Ok(socket)
}

fn set_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt(2) with a c_int value of the size given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match set {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// An nfnetlink_queue message: netlink header, nfgenmsg (with `queue` as its resource id), and
/// attributes.
fn message(kind: u16, flags: u16, queue: u16, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    m.extend_from_slice(&queue.to_be_bytes());
    for (kind, data) in attributes {
        m.extend_from_slice(&(4 + data.len() as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let length = m.len() as u32;
    m[0..4].copy_from_slice(&length.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m
}

fn send(fd: RawFd, message: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sendto(2) of a live buffer of the length given, to a sockaddr_nl of its size.
    let sent = unsafe {
        libc::sendto(
            fd,
            message.as_ptr() as *const libc::c_void,
            message.len(),
            0,
            &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    match sent < 0 {
        true => Err(io::Error::last_os_error()),
        false => Ok(()),
    }
}

fn receive(fd: RawFd, buffer: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: recv(2) into a live buffer of the length given.
    let got = unsafe { libc::recv(fd, buffer.as_mut_ptr() as *mut libc::c_void, buffer.len(), flags) };
    match got < 0 {
        true => Err(io::Error::last_os_error()),
        false => Ok(got as usize),
    }
}

/// Each netlink message in `buffer[..length]`: (type, body after the netlink header).
fn messages(buffer: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buffer.get(at..at + NLMSG_HDRLEN)?;
        let length = u32::from_ne_bytes(header[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(header[4..6].try_into().unwrap());
        let body = buffer.get(at + NLMSG_HDRLEN..at + length.max(NLMSG_HDRLEN))?;
        at += length.max(NLMSG_HDRLEN).next_multiple_of(4);
        Some((kind, body))
    })
}

/// The errno of an NLMSG_ERROR body (0 for an acknowledgement).
fn error_of(body: &[u8]) -> i32 {
    body.get(0..4).map_or(libc::EPROTO, |e| -i32::from_ne_bytes(e.try_into().unwrap()))
}

/// Binds `queue` to the socket: metadata only, whole GSO packets, a long queue.
fn bind_queue(fd: RawFd, queue: u16) -> io::Result<()> {
    let command = [NFQNL_CFG_CMD_BIND, 0, 0, libc::AF_INET as u8];
    let mut params = 0u32.to_be_bytes().to_vec(); // copy range
    params.push(NFQNL_COPY_META);
    let message = message(
        NFQNL_MSG_CONFIG,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        queue,
        &[
            (NFQA_CFG_CMD, &command),
            (NFQA_CFG_PARAMS, &params),
            (NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAX_LEN.to_be_bytes()),
            (NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes()),
            (NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes()),
        ],
    );
    send(fd, &message)?;
    let mut buffer = vec![0u8; 8192];
    loop {
        let length = receive(fd, &mut buffer, 0)?;
        for (kind, body) in messages(&buffer[..length]) {
            if kind == libc::NLMSG_ERROR as u16 {
                return match error_of(body) {
                    0 => Ok(()),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                };
            }
        }
    }
}

/// Accepts every packet of `queue` up to and including `id`.
fn accept_through(fd: RawFd, queue: u16, id: u32) -> io::Result<()> {
    let mut header = NF_ACCEPT.to_be_bytes().to_vec();
    header.extend_from_slice(&id.to_be_bytes());
    send(
        fd,
        &message(NFQNL_MSG_VERDICT_BATCH, libc::NLM_F_REQUEST as u16, queue, &[(NFQA_VERDICT_HDR, &header)]),
    )
}

/// The delay thread: reads packets as they are queued and accepts each class's oldest ones as
/// they fall due, until `stop`; then accepts everything still held.
fn run(sockets: Vec<OwnedFd>, mut classes: Vec<Class>, stop: &AtomicBool, shared: &Shared) {
    // Best effort: precise wake-ups even when the machine is busy (a netem qdisc's hrtimer fires
    // in the kernel, ahead of any process).
    // SAFETY: prctl(2) and sched_setscheduler(2) on this thread, with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &libc::sched_param { sched_priority: 1 });
    }
    let mut polls: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if stopping {
            for socket in 0..sockets.len() {
                read(&sockets, socket, &mut classes, &mut buffer, shared);
            }
        }
        let now = Instant::now();
        for (index, class) in classes.iter_mut().enumerate() {
            let mut last = None;
            while let Some(&(id, due)) = class.pending.front() {
                if due > now && !stopping {
                    break;
                }
                class.pending.pop_front();
                last = Some(id);
            }
            if let Some(id) = last {
                if let Err(e) = accept_through(sockets[class.socket].as_raw_fd(), class.queue, id) {
                    shared.error(format!("verdict for {}: {e}", shared.labels[index]));
                }
            }
        }
        if stopping {
            return;
        }
        let next = classes.iter().filter_map(|c| c.pending.front().map(|&(_, due)| due)).min();
        let wait = next.map_or(IDLE, |due| due.saturating_duration_since(now)).min(IDLE);
        let timeout = libc::timespec { tv_sec: 0, tv_nsec: wait.as_nanos() as libc::c_long };
        for poll in &mut polls {
            poll.revents = 0;
        }
        // SAFETY: ppoll(2) over a live pollfd array of the length given.
        let ready = unsafe {
            libc::ppoll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, &timeout, std::ptr::null())
        };
        if ready > 0 {
            for (socket, poll) in polls.iter().enumerate() {
                if poll.revents != 0 {
                    read(&sockets, socket, &mut classes, &mut buffer, shared);
                }
            }
        }
    }
}

/// Reads every message waiting on `sockets[socket]`: each packet joins its class's queue, due
/// its delay from now.
fn read(sockets: &[OwnedFd], socket: usize, classes: &mut [Class], buffer: &mut [u8], shared: &Shared) {
    let fd = sockets[socket].as_raw_fd();
    loop {
        let length = match receive(fd, buffer, libc::MSG_DONTWAIT) {
            Ok(length) => length,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared.error(format!("reading queued packets: {e}"));
                return;
            }
        };
        let now = Instant::now();
        for (kind, body) in messages(&buffer[..length]) {
            if kind == libc::NLMSG_ERROR as u16 {
                shared.error(format!("netlink error {}", io::Error::from_raw_os_error(error_of(body))));
                continue;
            }
            if kind != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET) || body.len() < 4 {
                continue;
            }
            let queue = u16::from_be_bytes([body[2], body[3]]);
            let Some(id) = packet_id(&body[4..]) else {
                shared.error("a queued packet without its header".into());
                continue;
            };
            match classes.iter().position(|c| c.socket == socket && c.queue == queue) {
                Some(index) => {
                    let class = &mut classes[index];
                    class.pending.push_back((id, now + class.delay));
                    shared.packets[index].fetch_add(1, Ordering::Relaxed);
                }
                None => shared.error(format!("a packet from queue {queue}, which is not ours")),
            }
        }
    }
}

/// The packet id in a packet message's attributes (NFQA_PACKET_HDR: big-endian id first).
fn packet_id(mut attributes: &[u8]) -> Option<u32> {
    while attributes.len() >= 4 {
        let length = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == NFQA_PACKET_HDR && length >= 8 {
            return Some(u32::from_be_bytes(attributes[4..8].try_into().unwrap()));
        }
        attributes = attributes.get(length.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// Round trips of one small UDP datagram from `from` to an echo on `to` and back, `count` of
/// them after a few unmeasured ones (the first waits for ARP); each side is (namespace, address
/// to bind). A datagram unanswered for a second is an error.
pub fn round_trips(
    from: (Option<&str>, Ipv4Addr),
    to: (Option<&str>, Ipv4Addr),
    count: usize,
) -> io::Result<Vec<Duration>> {
    const WARM_UP: usize = 3;
    let echo = in_namespace(to.0, || UdpSocket::bind((to.1, 0)))?;
    let client = in_namespace(from.0, || UdpSocket::bind((from.1, 0)))?;
    let target = echo.local_addr()?;
    echo.set_read_timeout(Some(Duration::from_secs(2)))?;
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buffer = [0u8; 64];
            while let Ok((length, peer)) = echo.recv_from(&mut buffer) {
                if &buffer[..length] == b"stop" {
                    break;
                }
                let _ = echo.send_to(&buffer[..length], peer);
            }
        });
        let measure = || {
            let (mut times, mut buffer) = (Vec::with_capacity(count), [0u8; 64]);
            for i in 0..count + WARM_UP {
                let sequence = (i as u64).to_be_bytes();
                let started = Instant::now();
                client.send_to(&sequence, target)?;
                while client.recv(&mut buffer)? != 8 || buffer[..8] != sequence {}
                if i >= WARM_UP {
                    times.push(started.elapsed());
                }
            }
            Ok(times)
        };
        let times = measure();
        let _ = client.send_to(b"stop", target);
        times
    })
}

/// The median of `times`.
pub fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}
