//! Picking loopback ports for listeners that start a moment later (local clusters, tests).
//!
//! Ports come from below the kernel's ephemeral range, never from it: between the pick and
//! the listener's bind, any outgoing connection on the machine (a metrics scrape, a QUIC
//! client endpoint) could be given an ephemeral port as its local one, and the bind would
//! then fail with "address in use". Binding port 0 picks exactly from that range.

use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port handed out.
pub const LISTEN_PORTS_FROM: u16 = 10_000;
/// Ports tried before giving up.
const LISTEN_PORT_TRIES: u64 = 1_000;

/// The first port of the kernel's ephemeral range (32768 if it cannot be read).
fn ephemeral_ports_from() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32_768)
}

/// A port below the ephemeral range that `bind` accepts now, and what it bound (hold it to
/// keep several picks distinct). Starts at a point that differs per process and call, so
/// processes picking at once rarely try the same ports.
pub fn bind_listen_port<T>(bind: impl Fn(u16) -> std::io::Result<T>) -> std::io::Result<(u16, T)> {
    let below = ephemeral_ports_from().max(LISTEN_PORTS_FROM + 1_000);
    let span = u64::from(below - LISTEN_PORTS_FROM);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let start = u64::from(nanos) ^ (u64::from(std::process::id()) << 16);
    for i in 0..LISTEN_PORT_TRIES {
        // 7919 is prime and does not divide the span, so the tries visit distinct ports.
        let port = LISTEN_PORTS_FROM + ((start + i * 7919) % span) as u16;
        if let Ok(bound) = bind(port) {
            return Ok((port, bound));
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port below the ephemeral range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_below_the_ephemeral_range_and_bound() {
        let (port, listener) = bind_listen_port(|p| std::net::TcpListener::bind(("127.0.0.1", p))).unwrap();
        assert!(port >= LISTEN_PORTS_FROM && port < ephemeral_ports_from().max(LISTEN_PORTS_FROM + 1_000));
        assert_eq!(listener.local_addr().unwrap().port(), port);
        let (other, _) = bind_listen_port(|p| std::net::TcpListener::bind(("127.0.0.1", p))).unwrap();
        assert_ne!(other, port, "a port held is not handed out again");
    }
}
