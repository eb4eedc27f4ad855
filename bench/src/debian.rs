//! The third-party programs the benchmarks run (etcd, fio) come from Debian packages: a missing
//! one is installed with apt-get when we are root, as a fresh machine of this kind needs.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `program` on PATH, if it is there.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `program`, installed first from Debian's `package` (`apt-get install -y`, then after an
/// `apt-get update` if that failed) when it is missing and we are root.
pub fn ensure_installed(program: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(path) = on_path(program) {
        return Ok(path);
    }
    let install = format!("apt-get install -y {package}");
    if !is_root() {
        return Err(format!("{program} is not installed: install it as root with `{install}`"));
    }
    eprintln!("{program} is not installed: running `{install}`");
    if let Err(first) = apt_get(&["install", "-y", package]) {
        eprintln!("{first}; running `apt-get update` and trying again");
        apt_get(&["update"])?;
        apt_get(&["install", "-y", package])?;
    }
    on_path(program).ok_or_else(|| format!("`{install}` succeeded but {program} is still not on PATH"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("apt-get {}: {e}", args.join(" ")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("apt-get {} failed ({}): {}", args.join(" "), output.status, tail(&stderr, 1000)))
}

/// The last `max_bytes` of `text` (at a character boundary), trimmed: a log's end for an error.
pub(crate) fn tail(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim()
}
