//! CPU time of processes, from `/proc/PID/stat`: what a run cost, and whether the work it left
//! behind (replicas catching up, coalescing) is done.

use std::time::{Duration, Instant};

/// A process's CPU time, and its reaped children's, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    pub own_s: f64,
    pub children_s: f64,
}

impl CpuTimes {
    /// This process's.
    pub fn now() -> Result<CpuTimes, String> {
        CpuTimes::of("self")
    }

    /// Process `pid`'s (`"self"` for this one).
    pub fn of(pid: &str) -> Result<CpuTimes, String> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        // Fields after the command name (which may hold spaces) start at the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or(format!("{path}: no ')'"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime, stime, cutime, cstime are fields 14-17 of the line, 12-15 after the name.
        let ticks =
            |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or(format!("{path}: short"));
        // SAFETY: sysconf only reads a configuration value.
        let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(CpuTimes {
            own_s: (ticks(11)? + ticks(12)?) / per_s,
            children_s: (ticks(13)? + ticks(14)?) / per_s,
        })
    }
}

/// How often `Settler` samples.
pub const SETTLE_SAMPLE: Duration = Duration::from_millis(500);
/// How long the idle baseline is measured.
pub const SETTLE_BASELINE: Duration = Duration::from_secs(2);
/// Above the baseline by less than this many cores over one sample, the processes are idle.
pub const SETTLE_IDLE_CORES: f64 = 0.05;
/// `settle` gives up after this long.
pub const SETTLE_MAX: Duration = Duration::from_secs(120);

/// Tells when a set of processes is back to idle after a run: an idle cluster still ticks,
/// scrubs and reports its floor, so "idle" is the CPU use measured before the runs, plus a
/// little.
#[derive(Debug)]
pub struct Settler {
    pids: Vec<String>,
    /// Cores the processes use when nothing runs.
    baseline_cores: f64,
}

impl Settler {
    /// Measures the idle baseline of `pids` (a process that exited counts as idle).
    pub fn new(pids: Vec<String>) -> Settler {
        let mut settler = Settler { pids, baseline_cores: 0.0 };
        let before = settler.cpu_s();
        std::thread::sleep(SETTLE_BASELINE);
        settler.baseline_cores = (settler.cpu_s() - before) / SETTLE_BASELINE.as_secs_f64();
        settler
    }

    fn cpu_s(&self) -> f64 {
        self.pids.iter().filter_map(|pid| CpuTimes::of(pid).ok()).map(|t| t.own_s).sum()
    }

    /// Waits until the processes use less than baseline + `SETTLE_IDLE_CORES` over a sample
    /// (or `SETTLE_MAX` passed); returns how long the work left behind took.
    pub fn settle(&self) -> Duration {
        let started = Instant::now();
        let idle = (self.baseline_cores + SETTLE_IDLE_CORES) * SETTLE_SAMPLE.as_secs_f64();
        let mut before = self.cpu_s();
        loop {
            std::thread::sleep(SETTLE_SAMPLE);
            let now = self.cpu_s();
            if now - before < idle || started.elapsed() > SETTLE_MAX {
                return started.elapsed().saturating_sub(SETTLE_SAMPLE);
            }
            before = now;
        }
    }
}
