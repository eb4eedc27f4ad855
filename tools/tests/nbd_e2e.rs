//! The NBD gateway with unmodified programs: `borealis nbd` serves a volume of a local
//! six-node cluster on a Unix socket, and Debian's `qemu-io` and `qemu-img` (package
//! `qemu-utils`) and `nbdinfo` and `nbdcopy` (package `libnbd-bin`), installed by `.ci/run`,
//! write, read, zero, discard, convert, copy and compare through it. The gateway is then restarted: the size kept in the volume is used, a different `--size`
//! is refused, and every byte is still there.

mod heal;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tools::local::stop_all;

/// The image size: 256 MiB, with holes and random data.
const DEVICE_BYTES: u64 = 256 * 1024 * 1024;

/// A gateway process, killed when dropped (so a failing test leaves none behind).
struct Gateway(Child);

impl std::ops::Deref for Gateway {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the gateway on `socket` and waits until it serves.
fn start_gateway(root: &Path, socket: &Path, size: Option<u64>) -> Gateway {
    start_gateway_with(root, socket, size, &[])
}

/// `start_gateway` with more flags.
fn start_gateway_with(root: &Path, socket: &Path, size: Option<u64>, flags: &[&str]) -> Gateway {
    let _ = std::fs::remove_file(socket);
    let mut command = Command::new(env!("CARGO_BIN_EXE_borealis"));
    command.args(["nbd", "--dir"]).arg(root).arg("--socket").arg(socket);
    if let Some(size) = size {
        command.args(["--size", &size.to_string()]);
    }
    command.args(flags);
    let log_path = log_of(socket);
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Gateway(command.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the gateway exited ({status}): {}", std::fs::read_to_string(&log_path).unwrap());
        }
        assert!(Instant::now() < deadline, "the gateway never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The body of an HTTP GET of `path` on `addr`.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The gateway's stderr, beside its socket.
fn log_of(socket: &Path) -> std::path::PathBuf {
    socket.with_extension("log")
}

fn url(socket: &Path) -> String {
    format!("nbd+unix:///borealis?socket={}", socket.display())
}

/// Runs `program` with `args`; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// qemu-io commands in one session; every one must succeed and no pattern check fail.
fn qemu_io(socket: &Path, commands: &[&str]) {
    let target = url(socket);
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(&target);
    let (ok, text) = run("qemu-io", &args);
    assert!(ok && !text.contains("failed"), "qemu-io {commands:?}:\n{text}");
}

/// A raw image of the device's size with holes, random data and unaligned runs.
fn source_image(path: &Path) {
    let mut bytes = vec![0u8; DEVICE_BYTES as usize];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut random = |out: &mut [u8]| {
        for b in out {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    };
    random(&mut bytes[1 << 20..3 << 20]);
    random(&mut bytes[5_000_123..5_100_000]);
    random(&mut bytes[100 << 20..101 << 20]);
    random(&mut bytes[200_000_001..200_300_000]);
    random(&mut bytes[(DEVICE_BYTES as usize) - 4096..]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn qemu_io_and_qemu_img_work_through_the_gateway_and_the_device_survives_a_restart() {
    let _serial = heal::one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let (_cluster, mut nodes) = heal::start_cluster(root.path(), &[]);
    let socket = root.path().join("nbd.sock");
    let (metrics_port, _) =
        transport::ports::bind_listen_port(|p| std::net::TcpListener::bind(("127.0.0.1", p))).unwrap();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut gateway =
        start_gateway_with(root.path(), &socket, Some(DEVICE_BYTES), &["--metrics", &metrics_addr]);

    let (ok, info) = run("qemu-img", &["info", "--output=json", &url(&socket)]);
    assert!(ok && info.contains(&format!("\"virtual-size\": {DEVICE_BYTES}")), "{info}");
    qemu_io(
        &socket,
        &[
            "read -P 0 0 64k",
            "write -P 0xab 0 64k",
            "read -P 0xab 0 64k",
            // Unaligned, across page boundaries, inside what was written.
            "write -P 0xcd 1000 5000",
            "read -P 0xcd 1000 5000",
            "read -P 0xab 0 1000",
            "read -P 0xab 6000 59536",
            // Never written: zeros.
            "read -P 0 10M 64k",
            "write -z 4096 8192",
            "read -P 0 4096 8192",
            "read -P 0xab 12288 4096",
            "discard 32k 32k",
            "read -P 0 32k 32k",
        ],
    );
    // The gateway's /metrics counts what was served, by command.
    let text = http_get(&metrics_addr, "/metrics");
    for line in [
        "borealis_nbd_requests_total{command=\"write\"}",
        "borealis_nbd_requests_total{command=\"read\"}",
        "borealis_nbd_requests_total{command=\"write_zeroes\"}",
        "borealis_nbd_request_seconds_bucket{le=",
        "borealis_nbd_writer_refusals_total{kind=\"overloaded\"}",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    let written = text
        .lines()
        .find_map(|l| l.strip_prefix("borealis_nbd_bytes_total{command=\"write\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(written, Some(65_536 + 5000), "bytes written by qemu-io in:\n{text}");

    // A wrong pattern is reported (the checks above can fail).
    let (_, text) = run("qemu-io", &["-f", "raw", "-c", "read -P 0xee 0 4k", &url(&socket)]);
    assert!(text.contains("Pattern verification failed"), "{text}");

    let source = root.path().join("source.raw");
    source_image(&source);
    let (ok, text) = run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", source.to_str().unwrap(), &url(&socket)],
    );
    assert!(ok, "qemu-img convert: {text}");
    let compare = ["compare", "-f", "raw", "-F", "raw", source.to_str().unwrap()];
    let (ok, text) = run("qemu-img", &[&compare[..], &[url(&socket).as_str()]].concat());
    assert!(ok && text.contains("Images are identical"), "qemu-img compare: {text}");

    // nbdinfo sees the size and the flags advertised; nbdcopy copies both ways (it zeroes the
    // rest of the device in one WRITE_ZEROES far over the maximum block size).
    let (ok, info) = run("nbdinfo", &["--json", &url(&socket)]);
    assert!(ok && info.contains(&format!("\"export-size\": {DEVICE_BYTES}")), "{info}");
    for flag in ["can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"] {
        assert!(info.contains(&format!("\"{flag}\": true")), "{flag} in {info}");
    }
    let copied = root.path().join("copied.raw");
    let (ok, text) = run("nbdcopy", &[&url(&socket), copied.to_str().unwrap()]);
    assert!(ok, "nbdcopy out: {text}");
    assert!(std::fs::read(&copied).unwrap() == std::fs::read(&source).unwrap(), "nbdcopy out differs");
    let other = root.path().join("other.raw");
    source_image(&other);
    let mut bytes = std::fs::read(&other).unwrap();
    bytes[7_000_000..7_300_000].fill(0x5a);
    std::fs::write(&other, &bytes).unwrap();
    let (ok, text) = run("nbdcopy", &[other.to_str().unwrap(), &url(&socket)]);
    assert!(ok, "nbdcopy in: {text}");
    let compare_other = ["compare", "-f", "raw", "-F", "raw", other.to_str().unwrap()];
    let (ok, text) = run("qemu-img", &[&compare_other[..], &[url(&socket).as_str()]].concat());
    assert!(ok && text.contains("Images are identical"), "after nbdcopy in: {text}");

    // Restarted (SIGKILL: whatever was answered is durable): the size comes from the volume;
    // another size is refused.
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_borealis"))
        .args(["nbd", "--dir"])
        .arg(root.path())
        .arg("--socket")
        .arg(root.path().join("other.sock"))
        .args(["--size", "1048576"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("--size 1048576 differs"), "{stderr}");
    let mut gateway = start_gateway(root.path(), &socket, None);
    let (ok, text) = run("qemu-img", &[&compare_other[..], &[url(&socket).as_str()]].concat());
    assert!(ok && text.contains("Images are identical"), "after a restart: {text}");

    gateway.kill().unwrap();
    gateway.wait().unwrap();
    stop_all(&mut nodes);
}

/// Runs fio's `nbd` engine against the gateway with `args` after the common ones.
fn fio(socket: &Path, name: &str, args: &[&str]) -> std::process::Child {
    Command::new("fio")
        // fio leaves verify state files in its working directory: the test's own.
        .current_dir(socket.parent().expect("the socket is in the test's directory"))
        .arg(format!("--name={name}"))
        .args(["--ioengine=nbd", "--output-format=terse"])
        .arg(format!("--uri={}", url(socket)))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fio")
}

/// Waits for a fio job; on failure shows its output and the gateway's log.
fn finished(child: std::process::Child, what: &str, socket: &Path) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let ok = out.status.success() && !text.contains("verify:") && !text.contains("error=");
    if !ok {
        let log = std::fs::read_to_string(log_of(socket)).unwrap_or_default();
        panic!("fio {what}:\n{text}\ngateway log:\n{log}");
    }
}

#[test]
fn fio_verifies_its_writes_also_while_two_storage_nodes_are_killed_and_restarted() {
    let _serial = heal::one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let (_cluster, mut nodes) = heal::start_cluster(root.path(), &[]);
    let socket = root.path().join("nbd.sock");
    let mut gateway = start_gateway(root.path(), &socket, Some(DEVICE_BYTES));

    // 4 KiB random writes, 32 in flight, each block's CRC32C checked in a read pass after.
    let verify = ["--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=16M", "--verify=crc32c"];
    finished(fio(&socket, "randwrite-verify", &verify), "randwrite with verify", &socket);
    let mixed = ["--rw=randrw", "--rwmixread=70", "--bs=4k", "--iodepth=32", "--size=16M"];
    finished(fio(&socket, "randrw-70-30", &mixed), "randrw 70/30", &socket);

    // The same verified job while a node in each of two AZs is killed (SIGKILL) and started
    // again: 4 of 6 segments stay, so writes go on and reads find a complete segment.
    // Paced so that it runs well past the restarts on any machine: 8,192 writes at 3,000/s.
    let longer =
        ["--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=32M", "--rate_iops=3000", "--verify=crc32c"];
    let mut job = fio(&socket, "randwrite-verify-kills", &longer);
    std::thread::sleep(Duration::from_millis(500));
    nodes[0].kill9();
    nodes[2].kill9();
    std::thread::sleep(Duration::from_secs(1));
    nodes[0].restart().unwrap();
    nodes[2].restart().unwrap();
    assert!(job.try_wait().unwrap().is_none(), "fio ended before the nodes came back: lengthen the job");
    finished(job, "randwrite with verify while two nodes restart", &socket);

    gateway.kill().unwrap();
    gateway.wait().unwrap();
    stop_all(&mut nodes);
}

#[test]
fn a_second_gateway_takes_the_volume_over_and_the_first_refuses_from_its_next_write() {
    let _serial = heal::one_at_a_time();
    let root = tempfile::tempdir().unwrap();
    let (_cluster, mut nodes) = heal::start_cluster(root.path(), &[]);
    let (first_socket, second_socket) = (root.path().join("first.sock"), root.path().join("second.sock"));
    let mut first = start_gateway(root.path(), &first_socket, Some(DEVICE_BYTES));
    qemu_io(&first_socket, &["write -P 0x11 0 64k"]);

    // The second gateway opens the volume: a takeover that fences the first writer.
    let mut second = start_gateway(root.path(), &second_socket, None);
    let (ok, text) = run("qemu-io", &["-f", "raw", "-c", "write -P 0x22 0 4k", &url(&first_socket)]);
    assert!(!ok && text.contains("write failed"), "the fenced gateway took a write: {text}");
    // From then on it refuses everything, reads too.
    let (ok, text) = run("qemu-io", &["-f", "raw", "-c", "read -P 0x11 0 4k", &url(&first_socket)]);
    assert!(!ok, "the fenced gateway served a read: {text}");
    let log = std::fs::read_to_string(log_of(&first_socket)).unwrap();
    assert!(log.contains("took the volume over"), "{log}");
    // The second one has every write the first acknowledged, and takes new ones.
    qemu_io(&second_socket, &["read -P 0x11 0 64k", "write -P 0x33 64k 4k", "read -P 0x33 64k 4k"]);

    for gateway in [&mut first, &mut second] {
        gateway.kill().unwrap();
        gateway.wait().unwrap();
    }
    stop_all(&mut nodes);
}
