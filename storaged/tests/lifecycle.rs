//! `storaged` under a service manager, as systemd drives it (`packaging/systemd/`): a fake
//! `NOTIFY_SOCKET` receives `READY=1` once the node serves, `WATCHDOG=1` pings at half of
//! `WATCHDOG_USEC`, `RELOADING=1` then `READY=1` on SIGHUP, and `STOPPING=1` on SIGTERM; the
//! node then drains (the append it took is acknowledged), writes a checkpoint and exits 0.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::{Epoch, Lsn, Message};
use support::*;

/// Longest wait for one notification.
const NOTIFY_WAIT: Duration = Duration::from_secs(20);

/// Notifications until one contains `want`; returns everything received up to it.
fn until(socket: &UnixDatagram, want: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + NOTIFY_WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(len) = socket.recv(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        seen.push_str(&text);
        seen.push('|');
        if text.lines().any(|l| l == want) {
            return seen;
        }
    }
    panic!("no {want} within {NOTIFY_WAIT:?}; received: {seen}");
}

struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

#[test]
fn storaged_notifies_ready_watchdog_reload_and_stopping_and_drains_to_exit_zero() {
    let node = TestNode::new();
    let path = node.root.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let stderr = std::fs::File::create(node.root.path().join("stderr.log")).unwrap();
    // systemd names the watched process in WATCHDOG_PID: `exec` keeps the shell's pid.
    let child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_storaged")])
        .args(node.args())
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let pid = child.id();
    // Killed if the test fails half way, so no storaged outlives it.
    let mut child = Reaped(child);
    let ready = until(&socket, "READY=1");
    assert!(ready.contains("STATUS=storaged node:1 ready on"), "{ready}");
    until(&socket, "WATCHDOG=1");

    signal(pid, libc::SIGHUP);
    let reloaded = until(&socket, "READY=1");
    assert!(reloaded.contains("RELOADING=1"), "{reloaded}");
    let log = node.stderr();
    assert!(log.contains("TLS files re-read"), "{log}");

    // An append taken before SIGTERM is acknowledged; the node then drains and exits 0.
    let rt = runtime();
    let client = rt.block_on(Client::connect(&node, &node.client_files())).unwrap();
    let records = chain(1, 20, Epoch(1), |i| vec![i as u8; 512]);
    let ack = rt.block_on(client.call(&batch(records, 1))).unwrap();
    assert!(matches!(ack, Message::AppendAck(a) if a.scl == Lsn(20)), "{ack:?}");
    signal(pid, libc::SIGTERM);
    until(&socket, "STOPPING=1");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "storaged did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = node.stderr();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("drained") && log.contains("drained=true checkpointed=true"), "{log}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_complaint() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/systemd/storaged.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="), "{unit}");
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storaged.service");
    std::fs::write(&path, unit.replace("/usr/bin/storaged", env!("CARGO_BIN_EXE_storaged"))).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // It reports a bad setting on stderr and still exits 0: any line about the unit fails.
    let complaints: Vec<&str> = said.lines().filter(|l| l.contains("storaged.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "{said}");
}
