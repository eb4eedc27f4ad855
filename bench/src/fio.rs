//! The disk's ceiling: `fio` flushed sequential writes (each write followed by `fdatasync`) of
//! a given block size, on a given directory, for a given time. fio comes from Debian's package,
//! installed here when it is missing and we are root.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What fio measured.
#[derive(Clone, Copy, Debug)]
pub struct FioResult {
    pub writes_per_s: f64,
    pub bytes_per_s: f64,
}

/// Runs fio; `direct` uses O_DIRECT (block sizes of 4 KiB and up).
pub fn flushed_sequential_write(
    dir: &Path,
    block_bytes: usize,
    direct: bool,
    runtime: Duration,
) -> Result<FioResult, String> {
    let fio = crate::debian::ensure_installed("fio", "fio")?;
    let output = Command::new(fio)
        .args([
            "--name=borealis-ceiling",
            "--rw=write",
            "--ioengine=psync",
            "--fdatasync=1",
            "--size=256M",
            "--time_based",
        ])
        .arg(format!("--directory={}", dir.display()))
        .arg(format!("--bs={block_bytes}"))
        .arg(format!("--direct={}", u8::from(direct)))
        .arg(format!("--runtime={}", runtime.as_secs().max(1)))
        .arg("--output-format=json")
        .output()
        .map_err(|e| format!("fio: {e}"))?;
    if !output.status.success() {
        return Err(format!("fio failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("fio output: {e}"))?;
    let write = &json["jobs"][0]["write"];
    let number = |key: &str| write[key].as_f64().ok_or_else(|| format!("fio output lacks write.{key}"));
    let _ = std::fs::remove_file(dir.join("borealis-ceiling.0.0"));
    Ok(FioResult { writes_per_s: number("iops")?, bytes_per_s: number("bw_bytes")? })
}
