//! `borealis-bench sqlite`: SQLite through the `borealis` VFS next to SQLite on a local file,
//! printed as a table (and JSON).

use std::path::PathBuf;

use bench::sqlite::{Target, RUNS};

pub(crate) fn sqlite_bench(seconds: u64, dir: Option<PathBuf>, json: Option<PathBuf>) -> Result<(), String> {
    let temp = bench::scratch_dir(dir)?;
    eprintln!("borealis-bench: SQLite on a local file (WAL/FULL, DELETE/FULL) and through the borealis VFS, {seconds} s per run");
    let measured = bench::sqlite::measure(temp.path(), seconds)?;
    println!("sqlite: commits/s (p50 / p99 ms); local files on this disk vs a Borealis volume (6 nodes, 4 of 6, flushed, encrypted)");
    println!(
        "{:<8} {:>5} | {:>24} | {:>24} | {:>24} | {:>8}",
        "workload", "conns", "local WAL/FULL", "local DELETE/FULL", "borealis", "vs WAL"
    );
    let mut figures = Vec::new();
    for run in RUNS {
        let of = |target: Target| {
            measured
                .iter()
                .find(|(t, r, _)| {
                    *t == target && r.workload == run.workload && r.connections == run.connections
                })
                .map(|(_, _, m)| *m)
                .unwrap_or_default()
        };
        let (wal, delete, borealis) = (of(Target::LocalWal), of(Target::LocalDelete), of(Target::Borealis));
        let cell = |m: bench::sqlite::Measured| {
            format!("{:.0} ({:.1} / {:.1})", m.commits_per_s, m.p50_ms, m.p99_ms)
        };
        let ratio = borealis.commits_per_s / wal.commits_per_s;
        println!(
            "{:<8} {:>5} | {:>24} | {:>24} | {:>24} | {:>7.2}x",
            run.workload,
            run.connections,
            cell(wal),
            cell(delete),
            cell(borealis),
            ratio
        );
        for (side, m) in [("local_wal", wal), ("local_delete", delete), ("borealis", borealis)] {
            let name = format!("sqlite_{}_{}conn_{side}", run.workload, run.connections);
            figures.push((format!("{name}_commits_per_s"), "commits/s", m.commits_per_s));
            figures.push((format!("{name}_p50"), "ms", m.p50_ms));
            figures.push((format!("{name}_p99"), "ms", m.p99_ms));
            figures.push((format!("{name}_errors"), "errors", m.errors));
        }
        figures.push((format!("sqlite_{}_{}conn_ratio_vs_wal", run.workload, run.connections), "x", ratio));
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({ "command": "sqlite", "seconds": seconds });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
