//! `borealis-bench recovery`: node restart and writer takeover times, printed as tables.

use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn recovery_bench(
    record_bytes: usize,
    ingest_seconds: &[u64],
    windows: &[u64],
    full_lal_window: u64,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    let temp = bench::scratch_dir(dir)?;
    let durations: Vec<Duration> = ingest_seconds.iter().map(|s| Duration::from_secs(*s)).collect();
    eprintln!("borealis-bench: node restarts after {ingest_seconds:?} s of ingest");
    let restarts = bench::recovery::node_restarts(temp.path(), record_bytes, &durations)?;
    // Each window with the LAL equal to it, then the full-LAL run (the writer's default LAL).
    let full_lal = client::WriterLimits::default().lal;
    let runs = windows
        .iter()
        .map(|w| (*w, None))
        .chain((full_lal_window > 0).then_some((full_lal_window, Some(full_lal))));
    let mut takeovers = Vec::new();
    for (i, (window, lal)) in runs.enumerate() {
        eprintln!(
            "borealis-bench: writer crash with {window} records appended (LAL {}), then a new writer",
            lal.unwrap_or(window)
        );
        let root = temp.path().join(format!("takeover-{i}"));
        takeovers.push(bench::recovery::writer_takeover(&root, record_bytes, window, lal)?);
    }
    let mut figures = Vec::new();
    println!("node restart (SIGKILL, no checkpoint: replay the whole journal), {record_bytes}-byte records");
    println!("{:>12} {:>12} {:>12} {:>14}", "records", "payload MiB", "restart ms", "MiB/s replayed");
    for (r, seconds) in restarts.iter().zip(ingest_seconds) {
        let mib = r.tail_payload_bytes as f64 / (1 << 20) as f64;
        let ms = r.restart.as_secs_f64() * 1e3;
        println!("{:>12} {mib:>12.1} {ms:>12.0} {:>14.0}", r.records, mib / r.restart.as_secs_f64());
        figures.push((format!("node_restart_after_{seconds}s_ingest_ms"), "ms", ms));
        figures.push((format!("node_restart_after_{seconds}s_ingest_payload_mib"), "MiB", mib));
    }
    println!("writer takeover on 6 local nodes: Writer::open after the old writer crashed");
    println!("{:>14} {:>12} {:>12}", "window records", "LAL", "open ms");
    for t in &takeovers {
        let ms = t.open.as_secs_f64() * 1e3;
        println!("{:>14} {:>12} {ms:>12.0}", t.window_records, t.lal);
        let name = if t.lal == t.window_records {
            format!("writer_takeover_{}_records_ms", t.window_records)
        } else {
            format!("writer_takeover_{}_records_lal_{}_ms", t.window_records, t.lal)
        };
        figures.push((name, "ms", ms));
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "recovery", "record_bytes": record_bytes,
            "ingest_seconds": ingest_seconds, "window": windows,
            "full_lal_window": full_lal_window, "full_lal": full_lal,
        });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
